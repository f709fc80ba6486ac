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


def publish(cfg: DictConfig) -> int:
    """Copy the finished reproduction's records into ``published_dir``, regenerate the report.

    Returns:
        The number of record files copied.

    Raises:
        ReproduceError: no finished reproduction of the profile in ``store_dir``.
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
