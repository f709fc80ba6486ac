"""``publish=1`` (``make publish``): a finished reproduction's records replace the published
ones and the report is regenerated; records made from a dirty working tree are refused. A
published record that a reproduction replaces (same run id, other content) is kept in
``superseded_dir`` (``results/superseded/``), never lost."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from omegaconf import DictConfig

from suite.reproduce.store import read_marker
from suite.reproduce.sweep import ReproduceError
from suite.results import ResultStore, atomic_write_bytes

log = logging.getLogger(__name__)


def check_clean(store: ResultStore) -> None:
    """Refuse records made from a dirty working tree: their code is in no commit, so nobody can
    regenerate them (``git.dirty`` unknown, outside git, is let through).

    Raises:
        ReproduceError: one line naming every such record file.
    """
    dirty = [p.name for p in store.files() if store.load(p)["git"].get("dirty") is True]
    if dirty:
        raise ReproduceError(
            f"{len(dirty)} record(s) of {store.root} were made from a dirty working tree "
            f"(git.dirty true), nothing published: {', '.join(dirty)}; commit the changes and "
            "run the reproduction again"
        )


def superseded_path(folder: Path, name: str, old: bytes) -> Path:
    """Where a replaced published record file ``name`` (content ``old``) is kept:
    ``<folder>/<stem>.<sha256 of old, 12 hex>.json``, so every superseded version of a run id
    has its own file and publishing the same reproduction twice keeps one copy."""
    digest = hashlib.sha256(old).hexdigest()[:12]
    return folder / f"{Path(name).stem}.{digest}.json"


def publish(cfg: DictConfig) -> dict[str, int]:
    """Copy the finished reproduction's records into ``published_dir``, regenerate the report.

    A record whose file (``<kind>-<run_id>.json``: same kind, same run id, i.e. the same
    config) is already published with other bytes replaces it (that is the point of
    publishing, e.g. after a change of the training algorithm); the old file is moved to
    ``superseded_dir`` first (:func:`superseded_path`), where the report never reads it, so it
    stays recoverable. Files with the same bytes are left as they are.

    Returns:
        Counts ``added``, ``replaced`` (of which ``other_metrics``: the metrics changed, not
        only the provenance) and ``unchanged``.

    Raises:
        ReproduceError: no finished reproduction of the profile in ``store_dir``, or records
            made from a dirty working tree (``git.dirty`` true; all of them named); nothing is
            written then.
    """
    from suite.report import build_report

    store = Path(cfg.store_dir)
    marker = read_marker(store)
    if marker is None or not marker.get("finished"):
        raise ReproduceError(
            f"{store} holds no finished reproduction of profile {cfg.profile.name!r}; run "
            f"`make reproduce PROFILE={cfg.profile.name}` (RESUME=1 finishes one) first"
        )
    records = ResultStore(store).read()  # an invalid file raises, naming it
    check_clean(ResultStore(store))
    target, superseded = ResultStore(cfg.published_dir), Path(cfg.superseded_dir)
    counts = {"added": 0, "replaced": 0, "other_metrics": 0, "unchanged": 0}
    for path in ResultStore(store).files():
        dest, new = target.root / path.name, path.read_bytes()
        old = dest.read_bytes() if dest.is_file() else None
        if old == new:
            counts["unchanged"] += 1
            continue
        if old is not None:
            keep = superseded_path(superseded, path.name, old)
            atomic_write_bytes(keep, old)  # kept before the published file is replaced
            counts["replaced"] += 1
            counts["other_metrics"] += json.loads(old).get("metrics") != json.loads(new)["metrics"]
        else:
            counts["added"] += 1
        atomic_write_bytes(dest, new)
    log.info(
        f"published {len(records)} records of {store} into {target.root}: {counts['added']} "
        f"added, {counts['replaced']} replaced ({counts['other_metrics']} with other metrics; "
        f"the replaced files kept in {superseded}), {counts['unchanged']} unchanged; "
        f"{marker.get('last_line', '')}"
    )
    rep = build_report(cfg.published_dir, cfg.report_out)
    log.info(f"regenerated {rep.path} ({rep.n_other} train records of other settings listed apart)")
    return counts
