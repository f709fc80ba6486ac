"""The reproduction's own store: made fresh (or kept with ``resume``), marked as reproduce's by
a marker file that also lists what finished."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from suite.reproduce.sweep import ReproduceError
from suite.results import ResultStore, atomic_write_bytes

log = logging.getLogger(__name__)

MARKER = ".reproduction.json"  # in the store: written by reproduce, lists what it finished


def read_marker(store: Path) -> dict[str, Any] | None:
    path = store / MARKER
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def write_marker(store: Path, marker: Mapping[str, Any]) -> None:
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
    marker = read_marker(store)
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
        write_marker(store, marker)
        return marker
    for path in files:  # records of the previous reproduction (the marker says they are ours)
        path.unlink()
    marker = {"profile": str(cfg.profile.name), "bench_done": [], "finished": False}
    store.mkdir(parents=True, exist_ok=True)
    write_marker(store, marker)
    return marker
