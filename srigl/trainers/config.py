"""``SparseConfig``: every trainer option, its default and its check, in one frozen dataclass.

::

    cfg = srigl.SparseConfig(sparsity=0.95, total_steps=10_000, delta_t=50)
    trainer = srigl.create_trainer("srigl", model, optimizer, config=cfg)
    # the same as
    trainer = srigl.create_trainer("srigl", model, optimizer, sparsity=0.95,
                                   total_steps=10_000, delta_t=50)

Adding an option is one field here (its default and, if it needs one, its check in
``_check``) plus the place that reads it. A trainer class states only what differs from these
defaults (``SparseTrainer.defaults``). Each check names the option, the bad value and what is
allowed::

    sparsity='abc' is not a number; allowed: 0 < sparsity < 1
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from srigl.distributions import distribution_names
from srigl.errors import SparsityConfigError, require_int
from srigl.errors import require_real as _real
from srigl.schedule import check_schedule

#: allowed string values of ``grow_init`` (a number is allowed too: a constant)
GROW_INITS = ("zero", "small_random")


@dataclass(frozen=True)
class SparseConfig:
    """Every option of a sparse trainer, with its default (see ``SparseTrainer`` for the rules).

    Attributes:
        sparsity: global sparsity 1 - d, in (0, 1), over all sparse-eligible weights (``dense``
            accepts any number, e.g. 0.0, and ignores it). None (not given): 0.9, or with
            ``fan_in`` / ``n_m`` what they give (the trainer's ``sparsity`` attribute).
        distribution: 'uniform' | 'er' | 'erk' (see ``srigl.distributions``); None (not given):
            'erk', or 'uniform' with ``n_m``.
        total_steps: optimizer steps of the whole run (required by dynamic trainers).
        delta_t, alpha, t_end_fraction, grad_accumulation_n: the update schedule (SPEC.md 2).
        gamma_sal: SRigL's ablation threshold fraction (>= 0); ablation: SRigL ablates neurons.
        dense_layers: fnmatch globs of parameter (or module) names kept dense.
        no_ablation: fnmatch globs of parameter (or module) names whose neurons are never
            ablated.
        attention_layers: fnmatch globs of module (or parameter) names that are attention
            blocks, besides those known by type. Every glob of these three options must match
            an eligible weight or its module (checked when the trainer is built).
        dense_first_layer, dense_classifier: keep the first / last eligible layer dense.
        ablate_classifier: allow ablating the classifier's neurons.
        sparse_attention: make attention projections sparse (False: forced dense).
        constant_fan_in, sparse_init: None selects the trainer's default.
        grad_scaler: the ``torch.amp.GradScaler`` of fp16 training, or None.
        seed: seeds the trainer's own generator (rank 0's seed on every rank).
        erk_power: exponent of the ER/ERK raw densities.
        check_finite: without a GradScaler, raise NonFiniteGradientError on a NaN/inf gradient.
        fan_in: a fixed fan-in: an int (every sparse layer keeps exactly that many inputs per
            active neuron) or a mapping {fnmatch glob over layer names: int} (the first glob
            matching a layer's parameter or module name gives its fan-in; every sparse layer must
            match one, every glob some layer). Layer budgets follow (B_l = fan_in_l * out_l),
            the masks are constant fan-in whatever ``constant_fan_in`` says, ``distribution``
            is not used, and ``sparsity`` must be omitted (None) or agree with the sparsity the
            fan-ins give (within half a weight per sparse neuron). SRigL's ablation keeps the
            fan-in of the surviving neurons (an ablated neuron's budget is not redistributed).
            Stored as an int or a tuple of (glob, int) pairs.
        n_m: ``(N, M)``, 1 <= N < M: every group of M consecutive inputs of a neuron holds
            exactly N non-zeros (a Conv2d's fan-in is flattened in (c, dy, dx) order and cut
            into consecutive groups of M: where M divides kh*kw no group crosses a channel).
            Every sparse layer's fan-in must be a multiple of M (else keep it dense with
            ``dense_layers``). Layer sparsity is 1 - N/M; ``sparsity`` must be omitted or be
            1 - N/M (or the global sparsity with the forced-dense layers); ``distribution``
            defaults to 'uniform' and 'er'/'erk' are refused. Stored as a tuple.
        grow_init: value of a newly grown weight: ``"zero"`` (RigL, Evci et al. 2020: grown
            connections start at 0 so the update does not change the network's output),
            ``"small_random"`` (N(0, sigma^2) with sigma = 1e-2 times the std of the layer's
            kept weights, drawn from the trainer's generator), or a finite number (that
            constant). Its optimizer state starts at 0 in every case.

    The globs are stored as tuples, so a config is hashable and cannot change. Construction
    checks the type and range of every value (one-line ``SparsityConfigError``); what depends
    on the model (globs that must match a layer, budgets) is checked where it is used.
    """

    sparsity: float | None = None
    distribution: str | None = None
    total_steps: int | None = None
    delta_t: int = 100
    alpha: float = 0.3
    t_end_fraction: float = 0.75
    grad_accumulation_n: int = 1
    gamma_sal: float = 0.3
    ablation: bool = True
    dense_layers: tuple[str, ...] = ()
    no_ablation: tuple[str, ...] = ()
    attention_layers: tuple[str, ...] = ()
    dense_first_layer: bool = False
    dense_classifier: bool = False
    ablate_classifier: bool = False
    sparse_attention: bool = True
    constant_fan_in: bool | None = None
    sparse_init: bool | None = None
    grad_scaler: Any = None
    seed: int = 0
    erk_power: float = 1.0
    check_finite: bool = True
    grow_init: str | float = "zero"
    fan_in: int | tuple[tuple[str, int], ...] | None = None
    n_m: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        """Fill ``sparsity`` / ``distribution`` left None, normalise the containers, check."""
        _resolve_topology(self)
        _check(self)
        for name in ("dense_layers", "no_ablation", "attention_layers"):
            object.__setattr__(self, name, tuple(_globs(name, getattr(self, name))))

    @classmethod
    def option_names(cls) -> list[str]:
        """Every option name, in field order."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_options(cls, options: Mapping[str, Any], where: str = "trainer") -> SparseConfig:
        """A config from keyword options; an unknown name raises one line listing the allowed.

        Raises:
            SparsityConfigError: an unknown option or a bad value.
        """
        unknown = sorted(set(options) - set(cls.option_names()))
        if unknown:
            raise SparsityConfigError(
                f"{where}: unknown options {unknown}; allowed: {sorted(cls.option_names())}"
            )
        return cls(**options)


def check_sparsity_range(sparsity: Any) -> None:
    """Refuse a sparsity outside (0, 1): what every trainer with masks needs (None, left to
    ``fan_in`` / ``n_m``, passes).

    Raises:
        SparsityConfigError: naming the value and the allowed range.
    """
    if sparsity is not None and not 0.0 < float(sparsity) < 1.0:
        raise SparsityConfigError(f"sparsity={sparsity!r} is invalid; allowed: 0 < sparsity < 1")


def _flag(name: str, value: Any, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, bool):
        allowed = "True, False or None" if optional else "True or False"
        raise SparsityConfigError(f"{name}={value!r} is not a bool; allowed: {allowed}")


def _globs(name: str, value: Any) -> list[str]:
    """A list of fnmatch globs; a bare string is refused (it would be read letter by letter)."""
    allowed = 'a list of fnmatch globs, e.g. ["head", "*.attn.*"]'
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise SparsityConfigError(f"{name}={value!r} is not a list; allowed: {allowed}")
    items = list(value)
    bad = [v for v in items if not isinstance(v, str)]
    if bad:
        raise SparsityConfigError(f"{name} holds {bad[0]!r}, not a string; allowed: {allowed}")
    return items


#: sparsity of a config that gives neither ``sparsity`` nor ``fan_in`` / ``n_m``
DEFAULT_SPARSITY = 0.9
#: distribution of a config that gives none (``n_m``: uniform)
DEFAULT_DISTRIBUTION = "erk"


def _fan_in_option(value: Any) -> int | tuple[tuple[str, int], ...] | None:
    """``fan_in`` as an int >= 1, a tuple of (glob, int >= 1) pairs, or None."""
    allowed = 'an integer >= 1 or a mapping of fnmatch globs to integers >= 1, e.g. {"fc*": 16}'
    if value is None:
        return None
    if isinstance(value, Mapping):
        pairs = tuple(value.items())
    elif (
        isinstance(value, (tuple, list))
        and value
        and all(isinstance(v, (tuple, list)) and len(v) == 2 for v in value)
    ):
        pairs = tuple((v[0], v[1]) for v in value)
    else:
        if require_int("fan_in", value, allowed) < 1:
            raise SparsityConfigError(f"fan_in={value!r} is invalid; allowed: {allowed}")
        return int(value)
    if not pairs:
        raise SparsityConfigError(f"fan_in={value!r} is empty; allowed: {allowed}")
    for glob, k in pairs:
        if not isinstance(glob, str):
            raise SparsityConfigError(f"fan_in glob {glob!r} is not a string; allowed: {allowed}")
        if require_int(f"fan_in[{glob!r}]", k, allowed) < 1:
            raise SparsityConfigError(f"fan_in[{glob!r}]={k!r} is invalid; allowed: {allowed}")
    return tuple((glob, int(k)) for glob, k in pairs)


def _n_m_option(value: Any) -> tuple[int, int] | None:
    """``n_m`` as a tuple (N, M) of ints with 1 <= N < M, or None."""
    allowed = "(N, M) with integers 1 <= N < M, e.g. (2, 4)"
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise SparsityConfigError(f"n_m={value!r} is not a pair; allowed: {allowed}")
    items = list(value)
    if len(items) != 2:
        raise SparsityConfigError(f"n_m={value!r} is not a pair; allowed: {allowed}")
    n, m = (require_int("n_m", v, allowed) for v in items)
    if not 1 <= n < m:
        raise SparsityConfigError(f"n_m={value!r} is invalid; allowed: {allowed}")
    return (n, m)


def _resolve_topology(cfg: SparseConfig) -> None:
    """Normalise ``fan_in`` / ``n_m``; fill ``sparsity`` and ``distribution`` left None.

    Without ``fan_in`` / ``n_m`` a None sparsity is DEFAULT_SPARSITY; with them it stays None
    (the trainer derives it from the model). A None distribution is 'uniform' with ``n_m``,
    else DEFAULT_DISTRIBUTION.

    Raises:
        SparsityConfigError: a bad ``fan_in`` / ``n_m``, both given, ER/ERK with ``n_m``, or a
            sparsity above 1 - N/M with ``n_m``.
    """
    fan_in = _fan_in_option(cfg.fan_in)
    n_m = _n_m_option(cfg.n_m)
    object.__setattr__(cfg, "fan_in", fan_in)
    object.__setattr__(cfg, "n_m", n_m)
    if fan_in is not None and n_m is not None:
        raise SparsityConfigError(
            f"fan_in={cfg.fan_in!r} and n_m={n_m!r} are both given; allowed: one of them"
        )
    if cfg.sparsity is None and fan_in is None and n_m is None:
        object.__setattr__(cfg, "sparsity", DEFAULT_SPARSITY)
    if cfg.distribution is None:
        object.__setattr__(cfg, "distribution", "uniform" if n_m else DEFAULT_DISTRIBUTION)
    if n_m is None:
        return
    if cfg.distribution in ("er", "erk"):
        raise SparsityConfigError(
            f"distribution={cfg.distribution!r} is invalid with n_m={n_m}: every N:M layer has "
            "density N/M; allowed: 'uniform' (the default with n_m)"
        )
    layer_sparsity = 1.0 - n_m[0] / n_m[1]
    if (
        cfg.sparsity is not None
        and not isinstance(cfg.sparsity, bool)
        and isinstance(cfg.sparsity, (int, float))
        and cfg.sparsity > layer_sparsity + 1e-9
    ):
        raise SparsityConfigError(
            f"sparsity={cfg.sparsity!r} disagrees with n_m={n_m}, which gives sparsity "
            f"1 - N/M = {layer_sparsity:g}; allowed: omit sparsity, or {layer_sparsity:g}"
        )


def _check_grow_init(value: Any) -> None:
    allowed = f"one of {list(GROW_INITS)} or a finite number"
    if isinstance(value, str):
        if value not in GROW_INITS:
            raise SparsityConfigError(f"grow_init={value!r} is invalid; allowed: {allowed}")
        return
    _real("grow_init", value, allowed)


def _check(cfg: SparseConfig) -> None:
    """The type and range of every option (the sparsity range is the trainer's: ``dense``
    ignores it). Raises SparsityConfigError naming the option, its value and what is allowed."""
    if cfg.sparsity is not None:  # None only with fan_in / n_m (see _resolve_topology)
        _real("sparsity", cfg.sparsity, "0 < sparsity < 1")
    if not isinstance(cfg.distribution, str):
        raise SparsityConfigError(
            f"distribution={cfg.distribution!r} is not a string; allowed: {distribution_names()}"
        )
    check_schedule(
        cfg.total_steps, cfg.delta_t, cfg.alpha, cfg.t_end_fraction, cfg.grad_accumulation_n
    )
    if _real("gamma_sal", cfg.gamma_sal, "a finite number >= 0") < 0:
        raise SparsityConfigError(f"gamma_sal={cfg.gamma_sal!r} is invalid; allowed: >= 0")
    for name in (
        "ablation",
        "dense_first_layer",
        "dense_classifier",
        "ablate_classifier",
        "sparse_attention",
        "check_finite",
    ):
        _flag(name, getattr(cfg, name))
    _flag("constant_fan_in", cfg.constant_fan_in, optional=True)
    _flag("sparse_init", cfg.sparse_init, optional=True)
    require_int("seed", cfg.seed, "an integer")
    _real("erk_power", cfg.erk_power, "a finite number")
    if cfg.grad_scaler is not None:
        for attr in ("get_scale", "is_enabled"):
            if not hasattr(cfg.grad_scaler, attr):
                raise SparsityConfigError(
                    f"grad_scaler={cfg.grad_scaler!r} has no {attr}(); allowed: a "
                    "torch.amp.GradScaler or None"
                )
    _check_grow_init(cfg.grow_init)
