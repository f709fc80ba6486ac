"""``publish=1`` (``make publish``): a finished reproduction's records replace the published
ones and the report is regenerated; records made from a dirty working tree are refused. A
published record that a reproduction replaces (same run id, other content) is kept in
``superseded_dir`` (``results/superseded/``), never lost."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from suite.reproduce.store import read_marker
from suite.reproduce.sweep import ReproduceError
from suite.results import InvalidRecordError, ResultStore, atomic_write_bytes

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


@dataclass
class _Step:
    """One record file of a publication: its new bytes, the published bytes it replaces (None:
    added) and where those are kept (None: added)."""

    dest: Path
    new: bytes
    old: bytes | None
    keep: Path | None
    other_metrics: bool


def plan(store: Path, published: Path, superseded: Path) -> tuple[list[_Step], int]:
    """Read, parse and validate everything a publication touches, writing nothing: every
    record of the reproduction ``store``, every file already in ``published`` (the report reads
    them all afterwards) and the published files to be replaced.

    Returns:
        The files that change (added or replaced) and how many are unchanged.

    Raises:
        ReproduceError: one line naming the first file that cannot be read or parsed.
    """
    try:
        ResultStore(store).read()
        ResultStore(published).read()  # a malformed published record stops it here
    except InvalidRecordError as exc:
        raise ReproduceError(f"nothing published: {exc}") from exc
    check_clean(ResultStore(store))
    steps, unchanged = [], 0
    for path in ResultStore(store).files():
        dest, new = published / path.name, path.read_bytes()
        try:
            old = dest.read_bytes() if dest.exists() else None
            old_metrics = json.loads(old).get("metrics") if old is not None else None
        except (OSError, ValueError) as exc:  # ValueError: JSON and Unicode errors
            raise ReproduceError(f"nothing published: {dest}: cannot be read ({exc})") from exc
        if old == new:
            unchanged += 1
            continue
        keep = superseded_path(superseded, path.name, old) if old is not None else None
        other = old is not None and old_metrics != json.loads(new)["metrics"]
        steps.append(_Step(dest, new, old, keep, other))
    return steps, unchanged


def publish(cfg: DictConfig) -> dict[str, int]:
    """Copy the finished reproduction's records into ``published_dir``, regenerate the report.

    A record whose file (``<kind>-<run_id>.json``: same kind, same run id, i.e. the same
    config) is already published with other bytes replaces it (that is the point of
    publishing, e.g. after a change of the training algorithm); the old file is kept in
    ``superseded_dir`` (:func:`superseded_path`), where the report never reads it, so it
    stays recoverable. Files with the same bytes are left as they are.

    Two phases: :func:`plan` reads and validates everything first and writes nothing; then
    every superseded copy is written, then every added or replaced record (each atomically:
    a temp file renamed over it), then the report.

    Returns:
        Counts ``added``, ``replaced`` (of which ``other_metrics``: the metrics changed, not
        only the provenance) and ``unchanged``.

    Raises:
        ReproduceError: no finished reproduction of the profile in ``store_dir``, records
            made from a dirty working tree (``git.dirty`` true; all of them named), or a
            record of either store that cannot be read or parsed (named); nothing is written
            then. Also when the report fails after the records were published (it says so
            and how to regenerate it).
    """
    from suite.report import build_report

    store = Path(cfg.store_dir)
    marker = read_marker(store)
    if marker is None or not marker.get("finished"):
        raise ReproduceError(
            f"{store} holds no finished reproduction of profile {cfg.profile.name!r}; run "
            f"`make reproduce PROFILE={cfg.profile.name}` (RESUME=1 finishes one) first"
        )
    target, superseded = Path(cfg.published_dir), Path(cfg.superseded_dir)
    steps, unchanged = plan(store, target, superseded)
    for step in steps:  # every old file kept before any published file is replaced
        if step.keep is not None and step.old is not None:
            atomic_write_bytes(step.keep, step.old)
    for step in steps:
        atomic_write_bytes(step.dest, step.new)
    replaced = [s for s in steps if s.old is not None]
    counts = {
        "added": len(steps) - len(replaced),
        "replaced": len(replaced),
        "other_metrics": sum(s.other_metrics for s in replaced),
        "unchanged": unchanged,
    }
    log.info(
        f"published {len(steps) + unchanged} records of {store} into {target}: "
        f"{counts['added']} added, {counts['replaced']} replaced ({counts['other_metrics']} with "
        f"other metrics; the replaced files kept in {superseded}), {counts['unchanged']} "
        f"unchanged; {marker.get('last_line', '')}"
    )
    try:
        rep = build_report(cfg.published_dir, cfg.report_out)
    except Exception as exc:
        raise ReproduceError(
            f"records published into {target}, but the report in {cfg.report_out} was not "
            f"regenerated ({type(exc).__name__}: {exc}); fix that and run `make report`"
        ) from exc
    log.info(f"regenerated {rep.path} ({rep.n_other} train records of other settings listed apart)")
    return counts
