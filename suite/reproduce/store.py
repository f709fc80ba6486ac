"""The reproduction's own store: made fresh (or kept with ``resume``), marked as reproduce's by
a marker file that also lists what finished."""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from suite.reproduce.sweep import ReproduceError
from suite.results import ResultStore, atomic_write_bytes, git_info

log = logging.getLogger(__name__)

MARKER = ".reproduction.json"  # in the store: written by reproduce, lists what it finished
REPO = Path(__file__).resolve().parents[2]
#: the code whose change makes a store's records incomparable with new ones on resume
TRAINING_CODE = "srigl/"


def read_marker(store: Path) -> dict[str, Any] | None:
    path = store / MARKER
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def write_marker(store: Path, marker: Mapping[str, Any]) -> None:
    atomic_write_bytes(store / MARKER, (json.dumps(marker, indent=1) + "\n").encode())


def check_resume_commit(store: Path, marker: Mapping[str, Any], repo: Path = REPO) -> None:
    """Refuse to resume a store made by a commit whose training code (``srigl/``) differs
    from HEAD's: its records and the new ones would come from different code. A marker
    without a commit (made before markers recorded one) or a commit git cannot compare is
    let through with a warning.

    Raises:
        ReproduceError: one line naming both commits.
    """
    old, head = marker.get("commit"), git_info(repo).get("commit")
    if not old or not head:
        log.warning(
            f"resume=1: cannot check that {store} was made by the same training code "
            f"({TRAINING_CODE}): its marker names no commit or this is no git checkout; records "
            "made before and after a code change may be mixed"
        )
        return
    if old == head:
        return
    diff = subprocess.run(
        ["git", "diff", "--quiet", old, head, "--", TRAINING_CODE],
        cwd=repo,
        capture_output=True,
        timeout=30,
    )
    if diff.returncode == 1:
        raise ReproduceError(
            f"resume=1: {store} was made by commit {old[:12]}, whose {TRAINING_CODE} differs from "
            f"HEAD {head[:12]}; start the reproduction afresh (without resume=1) or check out "
            f"{old[:12]}"
        )
    if diff.returncode != 0:
        log.warning(
            f"resume=1: cannot compare {TRAINING_CODE} of commit {old[:12]} (made {store}) with "
            f"HEAD {head[:12]} (git diff: {diff.stderr.decode(errors='replace').strip()}); "
            "records made before and after a code change may be mixed"
        )


def prepare_store(cfg: DictConfig) -> dict[str, Any]:
    """Make ``store_dir`` a fresh store (or keep it with ``resume``); return its marker.

    A fresh start removes only the record files of a previous reproduction (the folder holds
    the marker reproduce writes); a folder reproduce did not make is refused.

    Raises:
        ReproduceError: ``store_dir`` holds files and no marker, or is the published store;
            ``resume`` of a store of another profile, or made by a commit whose training code
            differs from HEAD's (:func:`check_resume_commit`).
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
        check_resume_commit(store, marker)
        log.info(f"resume: continuing the reproduction in {store} ({len(files)} records)")
        marker["finished"] = False
        write_marker(store, marker)
        return marker
    for path in files:  # records of the previous reproduction (the marker says they are ours)
        path.unlink()
    marker = {
        "profile": str(cfg.profile.name),
        "commit": git_info(REPO).get("commit"),
        "bench_done": [],
        "finished": False,
    }
    store.mkdir(parents=True, exist_ok=True)
    write_marker(store, marker)
    return marker
