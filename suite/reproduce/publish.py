"""``publish=1`` (``make publish``): a finished reproduction's records replace the published
ones and the report is regenerated; records made from a dirty working tree are refused."""

from __future__ import annotations

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


def publish(cfg: DictConfig) -> int:
    """Copy the finished reproduction's records into ``published_dir``, regenerate the report.

    Returns:
        The number of record files copied.

    Raises:
        ReproduceError: no finished reproduction of the profile in ``store_dir``, or records
            made from a dirty working tree (``git.dirty`` true; all of them named).
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
