"""``CondenseReport``: what :func:`srigl.condense` (and ``fold_batchnorm``) did to a model."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["CondenseReport"]


@dataclass
class CondenseReport:
    """What :func:`srigl.condense` did; attached to the condensed model as ``condense_report``.

    condensed: module names replaced by backend modules; folded: (conv, bn) pairs folded;
    kept: {module name: why it stays masked-dense}; removed: {module name: output channels or
    neurons removed by ``structured=True``}; traced: whether the fx graph was available;
    pools: max-pooling modules now pooled in the channels-last layout (:mod:`srigl.pooling`);
    epilogues: {conv module name: "relu" | "add" | "add+relu"} fused into it
    (:mod:`srigl.epilogues`).
    """

    condensed: list[str] = field(default_factory=list)
    folded: list[tuple[str, str]] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)
    removed: dict[str, int] = field(default_factory=dict)
    traced: bool = False
    pools: list[str] = field(default_factory=list)
    epilogues: dict[str, str] = field(default_factory=dict)
