"""The suite's one Hydra compose helper and what the config tree lists.

``compose("train", ["trainer=rigl"])`` composes ``suite/conf/<name>.yaml`` the way the Hydra
apps do (one ``version_base``), inside or outside a running Hydra app. The experiments and the
data sets' sample shapes are read from the config tree (``conf/experiment/*.yaml``,
``conf/dataset/*.yaml``), so adding an experiment is adding one file:

- :func:`experiment_names`: every experiment, sorted;
- :data:`PAPER_EXPERIMENTS`: those of the paper, i.e. every experiment on a data set that is not
  embedded in the package (the embedded ``digits`` ships with scikit-learn);
- :data:`DATASET_SHAPES`: ``{data set: (input_shape, num_classes)}`` at each data set's
  configured defaults.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from suite import schema
from suite.data import sample_shape

CONF_DIR = Path(__file__).resolve().parent / "conf"
#: the Hydra ``version_base`` of every app and compose call of the suite
VERSION_BASE = "1.3"
#: data sets that ship with the package (their experiments are the embedded defaults)
EMBEDDED_DATASETS = ("digits",)


def compose(
    config_name: str,
    overrides: Sequence[str] = (),
    resolve: bool = False,
    return_hydra_config: bool = False,
) -> DictConfig:
    """Compose ``suite/conf/<config_name>.yaml`` with Hydra ``overrides``.

    Works inside or outside a running Hydra app (the global Hydra state is restored).
    ``resolve=True`` resolves interpolations in place; ``return_hydra_config=True`` keeps the
    ``hydra`` node (launcher, sweeper) in the result.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.initialize import get_gh_backup, restore_gh_from_backup

    schema.register()  # the typed schemas the configs name (train_schema)
    backup = get_gh_backup()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=VERSION_BASE):
            cfg = hydra_compose(
                config_name, overrides=list(overrides), return_hydra_config=return_hydra_config
            )
    finally:
        restore_gh_from_backup(backup)
    if resolve:
        OmegaConf.resolve(cfg)
    return cfg


def experiment_names() -> list[str]:
    """Every experiment of ``conf/experiment/``, sorted."""
    return sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


def experiment_dataset(name: str) -> str:
    """The data set experiment ``name`` selects (its ``override /dataset`` default).

    Raises:
        ValueError: ``name`` is not an experiment (the known ones listed), or it selects none.
    """
    path = CONF_DIR / "experiment" / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown experiment {name!r}; known: {', '.join(experiment_names())}")
    for entry in OmegaConf.load(path).get("defaults", []):
        if isinstance(entry, DictConfig) and "override /dataset" in entry:
            return str(entry["override /dataset"])
    raise ValueError(f"experiment {name!r} selects no data set ({path} has no override /dataset)")


def dataset_shapes() -> dict[str, tuple[tuple[int, ...], int]]:
    """``{data set: (input_shape, num_classes)}`` of every ``conf/dataset/`` member at its
    configured defaults (interpolations such as ``root`` are not needed and left alone)."""
    out = {}
    for path in sorted((CONF_DIR / "dataset").glob("*.yaml")):
        options = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        assert isinstance(options, dict)
        name = str(options.pop("name"))
        out[name] = sample_shape(name, **options)
    return out


PAPER_EXPERIMENTS: tuple[str, ...] = tuple(
    e for e in experiment_names() if experiment_dataset(e) not in EMBEDDED_DATASETS
)
DATASET_SHAPES: dict[str, tuple[tuple[int, ...], int]] = dataset_shapes()
