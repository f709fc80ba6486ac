"""``python -m suite.reproduce profile=<name>``: reproduce the published results and say so.

Reproduction, not regeneration. For the profile ``suite/conf/profile/<name>.yaml``:

1. **fresh store**: ``store_dir`` (``results/reproduction/<profile>/``, git-ignored) is emptied
   of the records a previous reproduction wrote there (it refuses a folder it did not make);
   ``resume=1`` keeps them and continues an interrupted reproduction instead.
2. **train**: the profile's grid is ONE Hydra multirun of ``suite.train`` (the ``grids``
   sweeper: every sparse method x sparsity x seed, and dense once per seed) started by a Hydra
   launcher: ``pool`` here (parallel worker processes, one progress bar, a failure summary),
   ``slurm`` for the paper's profiles on a cluster (``launcher=slurm``). ``suite.train`` skips a
   job whose record is already in the store, so ``resume=1`` only runs what is missing (and
   continues interrupted jobs from their checkpoints).
3. **bench**: the bench runs of the profile (``bench.runs``), whole models included where the
   profile has them, into the same store.
4. **compare** with the published records (``published_dir``, ``results/runs``): per cell
   (experiment, method, sparsity: one experiment-defining config) the published and the new
   mean ± std and n, how many seeds are bitwise identical (``metrics.hashes`` of both records
   equal), and a verdict: ``identical`` (every reproduced seed bitwise identical), ``within
   noise`` (|difference of means| <= ``noise_se`` standard errors of the difference) or
   ``differs``. Bench speed-ups are compared with a tolerance (``bench.tolerance``) and
   reported; timings move between machines, so they never fail the run. Writes
   ``results/REPRODUCTION.md`` and ``results/figures/reproduction.png``; the last line printed is
   ``reproduced N/M cells (K bitwise identical)``.

Exit status: 0 reproduced, 1 a cell differs or a step failed, 2 could not start.
``publish=1`` (``make publish``) copies the reproduction into ``published_dir`` and regenerates
the report: replacing the published results is explicit, never a side effect. ``dry_run=1``
prints the sweep and the bench commands and runs nothing.

Config: ``suite/conf/reproduce.yaml``; any key can be overridden on the command line, e.g.
``python -m suite.reproduce profile=quick 'profile.train.seeds=[0,1]' workers=1``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from suite.cli import exit_on_sigterm, one_line_errors
from suite.report import frames as rd
from suite.results import ResultStore, atomic_write_bytes, cell_config

log = logging.getLogger(__name__)

CONF_DIR = Path(__file__).resolve().parent / "conf"
CONFIG_NAME = "reproduce"
DENSE = "dense"
MARKER = ".reproduction.json"  # in the store: written by reproduce, lists what it finished
VERDICTS = ("identical", "within noise", "differs", "not published")
SHOWN_COLUMNS = (
    "experiment",
    "method",
    "sparsity",
    "published",
    "published, same seeds",
    "reproduced",
    "difference",
    "2 SE",
    "bitwise",
    "verdict",
    "note",
)


class ReproduceError(RuntimeError):
    """Reproduce cannot start (missing data, no GPU where the profile needs one, bad grid,
    a store folder it did not make)."""


# --------------------------------------------------------------------------- config


def compose(overrides: Sequence[str] = ()) -> DictConfig:
    """The resolved reproduce config (``suite/conf/reproduce.yaml`` + ``overrides``)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.initialize import get_gh_backup, restore_gh_from_backup

    backup = get_gh_backup()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            cfg = hydra_compose(config_name=CONFIG_NAME, overrides=list(overrides))
    finally:
        restore_gh_from_backup(backup)
    OmegaConf.resolve(cfg)
    return cfg


# --------------------------------------------------------------------------- the sweep


def _sweep_value(values: Sequence[Any]) -> str:
    """A grid axis as a Hydra sweep string: ``[0.8, 0.9] -> "0.8,0.9"``."""
    return ",".join(str(v) for v in values)


def sweep_grids(cfg: DictConfig) -> list[dict[str, str]]:
    """The profile's grid as the ``grids`` sweeper's list: the sparse methods at every
    sparsity, and dense once per seed (``sparsity=dense_sparsity``); seed first, so a stopped
    sweep holds whole seeds.

    Raises:
        ReproduceError: an empty grid axis (naming it and the profile).
    """
    grid = cfg.profile.train
    name = cfg.profile.get("name")
    for axis in ("experiments", "methods", "seeds"):
        if not grid.get(axis):
            raise ReproduceError(f"profile {name!r}: train.{axis} is empty; give at least one")
    sparse = [m for m in grid.methods if m != DENSE]
    if sparse and not grid.get("sparsities"):
        raise ReproduceError(
            f"profile {name!r}: train.sparsities is empty but methods {sparse} need one"
        )
    common = {"seed": _sweep_value(grid.seeds), "experiment": _sweep_value(grid.experiments)}
    grids = []
    if sparse:
        grids.append(
            {**common, "trainer": _sweep_value(sparse), "sparsity": _sweep_value(grid.sparsities)}
        )
    if DENSE in grid.methods:
        grids.append({**common, "trainer": DENSE, "sparsity": str(cfg.dense_sparsity)})
    return grids


def grids_override(grids: Sequence[Mapping[str, str]]) -> str:
    """``hydra.sweeper.grids=[{seed:"0,1",...},...]`` (values quoted for Hydra's grammar)."""
    items = ["{" + ",".join(f'{k}:"{v}"' for k, v in g.items()) + "}" for g in grids]
    return "hydra.sweeper.grids=[" + ",".join(items) + "]"


def train_overrides(cfg: DictConfig) -> list[str]:
    """The overrides every job of the sweep gets (store, checkpoints, resume, run length)."""
    out = [
        f"results_dir={cfg.store_dir}",
        f"checkpoint_dir={cfg.checkpoint_dir}",
        f"resume={'true' if cfg.resume else 'false'}",
        # a fresh reproduction starts over: a job's earlier checkpoint is moved aside (without
        # resume or overwrite, suite.train refuses to overwrite it)
        f"overwrite={'false' if cfg.resume else 'true'}",
        "skip_existing=true",
    ]
    if cfg.profile.train.get("epochs") is not None:
        out.append(f"{cfg.epochs_key}={cfg.profile.train.epochs}")
    return out + list(cfg.train_overrides)


def sweep_command(cfg: DictConfig) -> list[str]:
    """The command line of the sweep: ``python -m suite.train -m`` with the launcher."""
    cmd = [
        sys.executable,
        "-m",
        "suite.train",
        "-m",
        f"hydra/launcher={cfg.launcher}",
        "hydra/sweeper=grids",
        grids_override(sweep_grids(cfg)),
        f"hydra.sweep.dir={cfg.sweep_dir}",
    ]
    if cfg.launcher == "pool":
        threads = cfg.threads_per_worker
        cmd += [
            f"hydra.launcher.workers={int(cfg.workers)}",
            f"hydra.launcher.threads_per_worker={'null' if threads is None else int(threads)}",
        ]
    return cmd + list(cfg.launcher_overrides) + train_overrides(cfg)


def expected_jobs(cfg: DictConfig) -> int:
    """How many train jobs the sweep has."""
    grid = cfg.profile.train
    sparse = [m for m in grid.methods if m != DENSE]
    per_seed = len(grid.experiments) * (len(sparse) * len(grid.sparsities or []))
    per_seed += len(grid.experiments) * (DENSE in grid.methods)
    return per_seed * len(grid.seeds)


def bench_runs(cfg: DictConfig) -> list[list[str]]:
    """The bench command lines (``suite.bench`` overrides) of the profile, in order."""
    runs = cfg.bench.runs.get(cfg.profile.name)
    if runs is None:
        runs = [[f"profile={cfg.profile.name}"]]
    return [list(r) for r in runs]


def bench_command(cfg: DictConfig, overrides: Sequence[str]) -> list[str]:
    """One bench run's command line, writing into the store."""
    return [
        sys.executable,
        "-m",
        "suite.bench",
        *overrides,
        f"results_dir={cfg.store_dir}",
        "progress=false",
    ]


def _shell(cmd: Sequence[str]) -> str:
    return "python " + " ".join(shlex.quote(a) for a in cmd[1:])


# --------------------------------------------------------------------------- checks


def check_can_start(cfg: DictConfig) -> None:
    """Fail before any compute when the profile needs a GPU that is not there, or when the
    data of an experiment is missing (the data set's own message says where it looked).

    Raises:
        ReproduceError: with the reason.
    """
    if cfg.require_gpu:
        import torch

        if not torch.cuda.is_available():
            raise ReproduceError(
                f"profile {cfg.profile.name!r} needs a CUDA GPU (require_gpu=true) and there is "
                "none here; run it on a GPU machine, or pass require_gpu=false to train on CPU"
            )
    from suite import train
    from suite.data import DatasetNotFoundError, create_dataset

    extra = [
        o
        for o in train_overrides(cfg)
        if not o.startswith(("resume=", "skip_existing=", "overwrite="))
    ]
    for experiment in cfg.profile.train.experiments:
        tcfg = train.compose([f"experiment={experiment}", *extra])
        dataset = OmegaConf.to_container(tcfg.dataset, resolve=True)
        name = dataset.pop("name")
        try:
            create_dataset(name, seed=tcfg.seed, **dataset)
        except DatasetNotFoundError as exc:
            raise ReproduceError(
                f"experiment {experiment!r} cannot start, nothing was run: {exc}"
            ) from exc


# --------------------------------------------------------------------------- the store


def _read_marker(store: Path) -> dict[str, Any] | None:
    path = store / MARKER
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def _write_marker(store: Path, marker: Mapping[str, Any]) -> None:
    atomic_write_bytes(store / MARKER, (json.dumps(marker, indent=1) + "\n").encode())


def prepare_store(cfg: DictConfig) -> dict[str, Any]:
    """Make ``store_dir`` a fresh store (or keep it with ``resume``); return its marker.

    A fresh start removes only the record files of a previous reproduction (the folder holds
    the marker reproduce writes); a folder reproduce did not make is refused.

    Raises:
        ReproduceError: ``store_dir`` holds files and no marker, or is the published store.
    """
    store = Path(cfg.store_dir)
    if store.resolve() == Path(cfg.published_dir).resolve():
        raise ReproduceError(
            f"store_dir={store} is the published store; a reproduction needs its own folder"
        )
    marker = _read_marker(store)
    files = ResultStore(store).files()
    if marker is None and store.is_dir() and any(store.iterdir()):
        raise ReproduceError(
            f"store_dir={store} holds files that no reproduction wrote (no {MARKER}); "
            "give another store_dir or empty it yourself"
        )
    if cfg.resume and marker is not None:
        if marker.get("profile") != cfg.profile.name:
            raise ReproduceError(
                f"resume=1: {store} holds a reproduction of profile {marker.get('profile')!r}, "
                f"not {cfg.profile.name!r}"
            )
        log.info(f"resume: continuing the reproduction in {store} ({len(files)} records)")
        marker["finished"] = False
        _write_marker(store, marker)
        return marker
    for path in files:  # records of the previous reproduction (the marker says they are ours)
        path.unlink()
    marker = {"profile": str(cfg.profile.name), "bench_done": [], "finished": False}
    store.mkdir(parents=True, exist_ok=True)
    _write_marker(store, marker)
    return marker


# --------------------------------------------------------------------------- comparison


def _hashes(records: Sequence[Mapping[str, Any]], frame: pd.DataFrame) -> dict[Any, Any]:
    out = {}
    for r in frame.itertuples():
        h = records[int(r.record)]["metrics"].get("hashes")
        out[r.seed] = (h.get("state"), h.get("metrics")) if isinstance(h, Mapping) else None
    return out


def _stats(values: pd.Series) -> tuple[float, float, int]:
    n = int(values.count())
    return float(values.mean()), (float(values.std()) if n > 1 else math.nan), n


def difference_se(std_a: float, n_a: int, std_b: float, n_b: int) -> float:
    """Standard error of the difference of two means, sqrt(s_a^2/n_a + s_b^2/n_b). A side with
    one seed has no std of its own: it takes the other side's (same config, same spread); NaN
    when neither side has one."""
    a = std_b if math.isnan(std_a) else std_a
    b = std_a if math.isnan(std_b) else std_b
    if math.isnan(a) or math.isnan(b):
        return math.nan
    return math.sqrt(a * a / n_a + b * b / n_b)


def verdict(diff: float, se: float, n_identical: int, n_new: int, noise_se: float = 2.0) -> str:
    """``identical`` when every reproduced seed is bitwise identical to its published run,
    ``within noise`` when |diff| <= noise_se * se (a zero difference is always within noise),
    else ``differs``."""
    if n_new and n_identical == n_new:
        return "identical"
    if diff == 0 or (not math.isnan(se) and abs(diff) <= noise_se * se):
        return "within noise"
    return "differs"


def compare_cells(
    published: Sequence[Mapping[str, Any]],
    reproduced: Sequence[Mapping[str, Any]],
    noise_se: float = 2.0,
) -> pd.DataFrame:
    """One row per reproduced cell: the published and new accuracy and the verdict.

    Cells are matched by ``cell_id`` (the experiment-defining config without the seed), so a
    published cell of other settings never stands in for the reproduced one. Where every
    reproduced seed was published (a profile with fewer seeds, e.g. quick), the difference is
    taken against the published runs of those seeds, its standard error from the published
    cell's seed-to-seed spread; otherwise against the whole published cell.

    Returns:
        Columns experiment, method, sparsity, published, reproduced, difference, bitwise,
        verdict, note (text) and pub_mean, pub_std, pub_n, new_mean, new_std, new_n, diff,
        se, n_identical (numbers).
    """
    pub = rd.dedupe_latest(rd.train_frame(published), ("cell_id", "seed"))[0]
    new = rd.dedupe_latest(rd.train_frame(reproduced), ("cell_id", "seed"))[0]
    rows = []
    for cid, grp in new.groupby("cell_id", sort=False):
        first = grp.iloc[0]
        old = pub[pub["cell_id"] == cid]
        new_mean, new_std, new_n = _stats(grp["top1"])
        row: dict[str, Any] = {
            "experiment": first["experiment"],
            "method": first["method"],
            "sparsity": float(first["sparsity"]),
            "reproduced": rd.format_mean_std(new_mean, new_std, new_n),
            "new_mean": new_mean,
            "new_std": new_std,
            "new_n": new_n,
            "note": "",
        }
        if old.empty:
            same = pub[
                (pub["experiment"] == first["experiment"])
                & (pub["method"] == first["method"])
                & (pub["sparsity"] == first["sparsity"])
            ]
            if len(same):
                row["note"] = "published only with other settings: " + rd.config_difference(
                    cell_config(published[int(same.iloc[0]["record"])]["config"]),
                    cell_config(reproduced[int(first["record"])]["config"]),
                )
            rows.append({**row, "published": "-", "verdict": "not published", "bitwise": "-"})
            continue
        pub_mean, pub_std, pub_n = _stats(old["top1"])
        h_old, h_new = _hashes(published, old), _hashes(reproduced, grp)
        common = [s for s in h_new if s in h_old]
        n_identical = sum(1 for s in common if h_new[s] is not None and h_new[s] == h_old[s])
        if len(common) == new_n:  # every reproduced seed was published: compare those seeds
            same_mean = float(old[old["seed"].isin(common)]["top1"].mean())
            diff = new_mean - same_mean
            se = difference_se(pub_std, new_n, new_std, new_n)
        else:
            same_mean = math.nan
            diff = new_mean - pub_mean
            se = difference_se(pub_std, pub_n, new_std, new_n)
        row.update(
            {
                "published": rd.format_mean_std(pub_mean, pub_std, pub_n),
                "published, same seeds": f"{same_mean:.2f}" if not math.isnan(same_mean) else "-",
                "difference": f"{diff:+.2f}",
                "2 SE": f"{noise_se * se:.2f}" if not math.isnan(se) else "-",
                "bitwise": f"{n_identical}/{new_n}",
                "verdict": verdict(diff, se, n_identical, new_n, noise_se),
                "pub_mean": pub_mean,
                "pub_std": pub_std,
                "pub_n": pub_n,
                "diff": diff,
                "se": se,
                "n_identical": n_identical,
            }
        )
        if not common:
            row["note"] = "no seed in common with the published cell"
        rows.append(row)
    cols = ["experiment", "method", "sparsity", "published", "published, same seeds"]
    cols += ["reproduced", "difference", "2 SE"]
    cols += ["bitwise", "verdict", "note", "pub_mean", "pub_std", "pub_n", "new_mean"]
    cols += ["new_std", "new_n", "diff", "se", "n_identical"]
    frame = pd.DataFrame(rows, columns=cols)
    if frame.empty:
        return frame
    return rd.sort_methods(frame)


def compare_bench(
    published: Sequence[Mapping[str, Any]],
    reproduced: Sequence[Mapping[str, Any]],
    tolerance: float = 0.5,
) -> pd.DataFrame:
    """Speed-up vs dense of every reproduced layer and whole-model measurement next to the
    published one: ``factor`` = new / published, ``within tolerance`` when
    1/(1+tolerance) <= factor <= 1+tolerance, else ``moved`` (reported, never a failure)."""
    keys = list(rd.BENCH_KEY)
    frames = []
    new_b, _ = rd.bench_frame(reproduced)
    old_b, _ = rd.bench_frame(published)
    if not new_b.empty:
        new_l = new_b[keys + ["speedup_vs_dense"]].assign(kind="layer", what=new_b["shape"])
        old_l = old_b[keys + ["speedup_vs_dense"]] if not old_b.empty else None
        frames.append(_match(new_l, old_l, keys))
    wkeys = ["experiment", "model", "backend", "batch", "sparsity", "structured", "dtype"]
    wkeys += ["threads", "device"]
    new_w, old_w = rd.whole_model_frame(reproduced), rd.whole_model_frame(published)
    if not new_w.empty and "speedup_vs_dense" in new_w:
        wkeys = [k for k in wkeys if k in new_w and (old_w.empty or k in old_w)]
        new_w = new_w[wkeys + ["speedup_vs_dense"]].assign(kind="whole model", what=new_w["model"])
        ok = not old_w.empty and "speedup_vs_dense" in old_w and set(wkeys) <= set(old_w)
        frames.append(_match(new_w, old_w[wkeys + ["speedup_vs_dense"]] if ok else None, wkeys))
    if not frames:
        return pd.DataFrame()
    out = pd.concat(frames, ignore_index=True)
    out["factor"] = out["speedup_new"] / out["speedup_published"]
    low, high = 1.0 / (1.0 + tolerance), 1.0 + tolerance
    out["status"] = [
        "not published" if math.isnan(f) else ("within tolerance" if low <= f <= high else "moved")
        for f in out["factor"]
    ]
    return out


def _match(new: pd.DataFrame, old: pd.DataFrame | None, keys: list[str]) -> pd.DataFrame:
    new = new.rename(columns={"speedup_vs_dense": "speedup_new"})
    if old is None or old.empty:
        return new.assign(speedup_published=math.nan)
    old = old.rename(columns={"speedup_vs_dense": "speedup_published"})
    old = old.drop_duplicates(subset=keys, keep="last")
    return new.merge(old, on=keys, how="left")


def bench_summary(bench: pd.DataFrame) -> pd.DataFrame:
    """Per (kind, mode, backend): measurements, within tolerance, moved, median factor."""
    if bench.empty:
        return bench
    frame = bench.assign(mode=bench.get("mode", pd.Series("-", index=bench.index)).fillna("-"))
    rows = []
    for (kind, mode, backend), grp in frame.groupby(["kind", "mode", "backend"], sort=True):
        rows.append(
            {
                "kind": kind,
                "mode": mode,
                "backend": backend,
                "measurements": len(grp),
                "within tolerance": int((grp["status"] == "within tolerance").sum()),
                "moved": int((grp["status"] == "moved").sum()),
                "not published": int((grp["status"] == "not published").sum()),
                "median new/published": float(grp["factor"].median()),
            }
        )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- the document


@dataclass
class Outcome:
    """What a reproduction found (``cells`` and ``bench`` from the compare functions)."""

    cells: pd.DataFrame
    bench: pd.DataFrame
    failed_steps: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def compared(self) -> pd.DataFrame:
        """The cells that have a published counterpart."""
        if self.cells.empty:
            return self.cells
        return self.cells[self.cells["verdict"] != "not published"]

    @property
    def n_reproduced(self) -> int:
        return int(self.compared["verdict"].isin(["identical", "within noise"]).sum())

    @property
    def n_identical(self) -> int:
        return int((self.compared["verdict"] == "identical").sum()) if len(self.compared) else 0

    @property
    def n_differs(self) -> int:
        return int((self.compared["verdict"] == "differs").sum()) if len(self.compared) else 0

    @property
    def ok(self) -> bool:
        return self.n_differs == 0 and not self.failed_steps

    def last_line(self) -> str:
        """``reproduced N/M cells (K bitwise identical)``."""
        return (
            f"reproduced {self.n_reproduced}/{len(self.compared)} cells "
            f"({self.n_identical} bitwise identical)"
        )


def _fmt_s(seconds: float) -> str:
    return f"{int(seconds // 60)}m{seconds % 60:04.1f}s"


def _sides(published: Sequence[Mapping], reproduced: Sequence[Mapping]) -> list:
    out = []
    for title, table in (
        ("Machine", rd.machine_table),
        ("Library versions", rd.versions_table),
        ("Git commits", rd.git_table),
    ):
        out.append((title, [("published", table(published)), ("reproduction", table(reproduced))]))
    return out


def write_document(
    cfg: DictConfig,
    outcome: Outcome,
    published: Sequence[Mapping[str, Any]],
    reproduced: Sequence[Mapping[str, Any]],
) -> Path:
    """Write ``cfg.out`` (REPRODUCTION.md) and ``cfg.figure`` via temporary files."""
    from suite.report import figures
    from suite.report.render import render

    out, fig = Path(cfg.out), Path(cfg.figure)
    fig_rel = os.path.relpath(fig, out.parent)
    with tempfile.TemporaryDirectory(prefix=".reproduction-", dir=out.parent) as tmp:
        made = figures.reproduction_accuracy(outcome.cells, Path(tmp) / fig.name)
        cells = outcome.cells
        shown = cells
        if len(cells):
            shown = cells.assign(sparsity=cells["sparsity"].map(rd.sparsity_label))
        visible = [c for c in SHOWN_COLUMNS if c in shown]
        text = render(
            "reproduction.md.j2",
            cfg=cfg,
            profile=str(cfg.profile.name),
            command=f"make reproduce PROFILE={cfg.profile.name}",
            sweep=_shell(sweep_command(cfg)),
            bench_commands=[_shell(bench_command(cfg, r)) for r in bench_runs(cfg)]
            if cfg.bench.enabled
            else [],
            seconds={k: _fmt_s(v) for k, v in outcome.seconds.items()},
            cells=shown[visible] if len(shown) else None,
            counts={v: int((cells["verdict"] == v).sum()) if len(cells) else 0 for v in VERDICTS},
            n_seeds=int(cells["new_n"].sum()) if len(cells) else 0,
            n_seed_identical=int(cells["n_identical"].fillna(0).sum()) if len(cells) else 0,
            figure=fig_rel if made else None,
            bench=bench_summary(outcome.bench) if not outcome.bench.empty else None,
            whole=_whole_rows(outcome.bench),
            tolerance=float(cfg.bench.tolerance),
            noise_se=float(cfg.noise_se),
            failed_steps=outcome.failed_steps,
            sides=_sides(published, reproduced),
            last_line=outcome.last_line(),
        )
        if made:
            fig.parent.mkdir(parents=True, exist_ok=True)
            os.replace(made, fig)
        atomic_write_bytes(out, text.encode("utf-8"))
    return out


def _whole_rows(bench: pd.DataFrame) -> pd.DataFrame | None:
    if bench.empty or "whole model" not in set(bench["kind"]):
        return None
    sub = bench[bench["kind"] == "whole model"]
    shown = ("experiment", "model", "backend", "batch", "sparsity", "threads")
    cols = [c for c in shown if c in sub]
    return sub[cols + ["speedup_published", "speedup_new", "factor", "status"]]


# --------------------------------------------------------------------------- steps


def run_sweep(cfg: DictConfig) -> int:
    """Run the train sweep (a Hydra multirun); its exit status."""
    cmd = sweep_command(cfg)
    log.info(f"train: {expected_jobs(cfg)} jobs through hydra/launcher={cfg.launcher}")
    log.info(f"  {_shell(cmd)}")
    return subprocess.run(cmd, check=False).returncode


def run_bench(cfg: DictConfig, marker: dict[str, Any]) -> list[str]:
    """Run the profile's bench runs not done yet (resume); the failed ones' commands."""
    failed = []
    for i, overrides in enumerate(bench_runs(cfg)):
        if i in marker.get("bench_done", []):
            log.info(f"bench {i + 1}: done before (resume)")
            continue
        cmd = bench_command(cfg, overrides)
        log.info(f"bench {i + 1}: {_shell(cmd)}")
        if subprocess.run(cmd, check=False).returncode != 0:
            failed.append(f"bench: {_shell(cmd)}")
            continue
        marker.setdefault("bench_done", []).append(i)
        _write_marker(Path(cfg.store_dir), marker)
    return failed


def compare(cfg: DictConfig, outcome: Outcome) -> Outcome:
    """Compare the store with the published records; write REPRODUCTION.md and the figure."""
    published, bad_pub = ResultStore(cfg.published_dir).read_with_errors()
    reproduced, bad_new = ResultStore(cfg.store_dir).read_with_errors()
    for e in bad_pub + bad_new:
        outcome.failed_steps.append(f"invalid record file {e.path}: {e.error}")
    if not published:
        log.warning(f"no published records in {cfg.published_dir}: nothing to compare with")
    outcome.cells = compare_cells(published, reproduced, float(cfg.noise_se))
    outcome.bench = compare_bench(published, reproduced, float(cfg.bench.tolerance))
    write_document(cfg, outcome, published, reproduced)
    return outcome


def run(cfg: DictConfig) -> Outcome:
    """The whole reproduction: fresh store, sweep, bench, comparison (see the module doc).

    Raises:
        ReproduceError: before any compute, when the run cannot start.
    """
    t0 = time.perf_counter()
    outcome = Outcome(cells=pd.DataFrame(), bench=pd.DataFrame())
    sweep_grids(cfg)  # a bad grid fails here, before anything else
    if cfg.dry_run:
        log.info(
            f"reproduce profile={cfg.profile.name}: {expected_jobs(cfg)} train jobs into "
            f"{cfg.store_dir} (dense once per seed), then the bench, then the comparison"
        )
        log.info(f"train: {_shell(sweep_command(cfg))}")
        for r in bench_runs(cfg) if cfg.bench.enabled else []:
            log.info(f"bench: {_shell(bench_command(cfg, r))}")
        log.info(f"compare with {cfg.published_dir} -> {cfg.out}")
        return outcome
    check_can_start(cfg)
    marker = prepare_store(cfg)
    t = time.perf_counter()
    rc = run_sweep(cfg)
    outcome.seconds["train"] = time.perf_counter() - t
    if rc != 0:
        outcome.failed_steps.append(
            f"train sweep exited with status {rc} (its failure summary is above; job logs under "
            f"{cfg.sweep_dir}; RESUME=1 reruns only what is missing)"
        )
    if cfg.bench.enabled:
        t = time.perf_counter()
        outcome.failed_steps += run_bench(cfg, marker)
        outcome.seconds["bench"] = time.perf_counter() - t
    outcome.seconds["total"] = time.perf_counter() - t0  # up to the comparison (seconds)
    compare(cfg, outcome)
    marker["finished"] = not outcome.failed_steps
    marker["last_line"] = outcome.last_line()
    _write_marker(Path(cfg.store_dir), marker)
    return outcome


def publish(cfg: DictConfig) -> int:
    """Copy the finished reproduction's records into ``published_dir``, regenerate the report.

    Returns:
        The number of record files copied.

    Raises:
        ReproduceError: no finished reproduction of the profile in ``store_dir``.
    """
    from suite.report import build_report

    store = Path(cfg.store_dir)
    marker = _read_marker(store)
    if marker is None or not marker.get("finished"):
        raise ReproduceError(
            f"{store} holds no finished reproduction of profile {cfg.profile.name!r}; run "
            f"`make reproduce PROFILE={cfg.profile.name}` (RESUME=1 finishes one) first"
        )
    records = ResultStore(store).read()  # an invalid file raises, naming it
    target = ResultStore(cfg.published_dir)
    replaced = 0
    for path in ResultStore(store).files():
        dest = target.root / path.name
        replaced += dest.exists()
        atomic_write_bytes(dest, path.read_bytes())
    log.info(
        f"published {len(records)} records of {store} into {target.root} ({replaced} replaced, "
        f"{len(records) - replaced} new); {marker.get('last_line', '')}"
    )
    rep = build_report(cfg.published_dir, cfg.report_out)
    log.info(f"regenerated {rep.path} ({rep.n_other} train records of other settings listed apart)")
    return len(records)


@one_line_errors
def main(argv: Sequence[str] | None = None) -> int:
    """Command line: Hydra-style overrides of ``suite/conf/reproduce.yaml``.

    Exit status: 0 reproduced (or published), 1 a cell differs or a step failed, 2 could not
    start.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        sys.stdout.write(__doc__ + "\n")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    exit_on_sigterm()  # a killed reproduction stops its sweep too (no orphaned training)
    from hydra.errors import HydraException

    try:
        cfg = compose(argv)
    except HydraException as exc:  # a bad override: say which, without Hydra's traceback
        log.error(f"error: {exc}")
        return 2
    try:
        if cfg.publish:
            publish(cfg)
            return 0
        outcome = run(cfg)
    except ReproduceError as exc:
        log.error(f"error: {exc}")
        return 2
    if cfg.dry_run:
        return 0
    for step in outcome.failed_steps:
        log.error(f"FAILED {step}")
    differs = (
        outcome.compared[outcome.compared["verdict"] == "differs"]
        if len(outcome.compared)
        else outcome.compared
    )
    for r in differs.itertuples():
        log.error(
            f"DIFFERS {r.experiment} {r.method} {rd.sparsity_label(r.sparsity)}: published "
            f"{r.published}, reproduced {r.reproduced}"
        )
    times = ", ".join(f"{k} {_fmt_s(v)}" for k, v in outcome.seconds.items())
    log.info(f"wrote {cfg.out} ({times})")
    log.info(outcome.last_line())
    return 0 if outcome.ok else 1


if __name__ == "__main__":
    sys.exit(main())
