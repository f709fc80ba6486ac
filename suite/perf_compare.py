"""The regression gate: instruction counts of BASE against HEAD (``make perf-compare``)::

    python -m suite.perf_compare --base <rev> [--head HEAD] [--threshold 5] [--cases REGEX]

Each side (committed code: uncommitted changes are not measured, and the report says so when
there are some) is checked out into a temporary git worktree (``git worktree add --detach``) and its
cases are counted in ONE valgrind process of this Python (the workload of the checked-out
``suite/asv_benchmarks/instruction_counts.py``, so both sides run the same workload; the code it
measures comes from the worktree, first on ``PYTHONPATH``). Counts are cached per tree, workload
and Python under ``$SRIGL_CACHE_DIR/perf-counts`` (a commit measured once is not measured again).

Prints a table (case, base, head, change %, wall-time ratios) and exits 1 when a count grew by
more than ``--threshold`` percent, else 0 (2: the comparison could not run). The wall-time
columns hold the backend/dense ratio with its 95% interval of each side where a paired-ratio
timer provides one (:func:`wall_ratios`), flagged only where the two intervals do not overlap;
"n/a" where no interval data exists.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from suite.asv_benchmarks import instruction_counts as ic

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 5.0
Interval = tuple[float, float, float]  # (estimate, 95% low, 95% high)


class CompareError(RuntimeError):
    """The comparison could not run (unknown revision, counting failed)."""


@dataclass(frozen=True)
class Row:
    """One case of the comparison: counts of both sides (None = not counted there) and the
    wall-time ratio intervals where known."""

    case: str
    base: int | None
    head: int | None
    base_wall: Interval | None = None
    head_wall: Interval | None = None

    @property
    def change_pct(self) -> float | None:
        """(head - base) / base in percent; None where a side has no count."""
        if self.base is None or self.head is None or self.base == 0:
            return None
        return 100.0 * (self.head - self.base) / self.base

    def regressed(self, threshold: float) -> bool:
        """Whether the count grew by more than ``threshold`` percent."""
        change = self.change_pct
        return change is not None and change > threshold


def intervals_separate(a: Interval | None, b: Interval | None) -> bool:
    """Whether two ``(estimate, low, high)`` intervals do not overlap (False if either is
    unknown): only then is a wall-time change flagged."""
    if a is None or b is None:
        return False
    return a[2] < b[1] or b[2] < a[1]


def _git(repo: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
    if proc.returncode != 0:
        first = (proc.stderr.strip().splitlines() or ["?"])[0]
        raise CompareError(f"git {' '.join(args)} failed in {repo}: {first}")
    return proc.stdout.strip()


def _cache_key(tree: str, python: str, cases: Sequence[str] | None) -> str:
    workload = Path(ic.__file__).read_bytes()
    parts = [tree, python, json.dumps(list(cases) if cases else None), ic.WORKLOAD_VERSION]
    digest = hashlib.sha256(workload + "\0".join(parts).encode())
    return digest.hexdigest()[:20]


def _cache_dir() -> Path:
    from backends.kernels.build import cache_dir

    return cache_dir() / "perf-counts"


def count_revision(
    repo: Path,
    rev: str,
    cases: Sequence[str] | None,
    python: str = sys.executable,
    use_cache: bool = True,
) -> dict[str, Any]:
    """Instruction counts of ``rev`` of ``repo`` (:func:`ic.collect`'s dict, plus ``sha``).

    ``cases`` None: every case the revision's own backends define.

    Raises:
        CompareError: ``rev`` is unknown, or the counting run failed.
    """
    sha = _git(repo, "rev-parse", "--verify", f"{rev}^{{commit}}")
    tree = _git(repo, "rev-parse", f"{sha}^{{tree}}")
    cache = _cache_dir() / f"{_cache_key(tree, python, cases)}.json"
    if use_cache and cache.is_file():
        result = json.loads(cache.read_text(encoding="utf-8"))
        log.info("%s (%s): counts from the cache %s", rev, sha[:8], cache)
        return {**result, "sha": sha}
    with tempfile.TemporaryDirectory(prefix="srigl-perf-") as tmp:
        tree_dir = Path(tmp) / "tree"
        _git(repo, "worktree", "add", "--detach", "--quiet", str(tree_dir), sha)
        try:
            log.info("%s (%s): counting under callgrind in %s", rev, sha[:8], tree_dir)
            names = list(cases) if cases else []
            result = ic.collect(names, python=python, pythonpath=[str(tree_dir)], cwd=tree_dir)
        except ic.CountError as err:
            raise CompareError(f"{rev} ({sha[:8]}): {err}") from None
        finally:
            _git(repo, "worktree", "remove", "--force", str(tree_dir))
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(result, indent=1), encoding="utf-8")
    return {**result, "sha": sha}


def wall_revision(
    repo: Path, rev: str, cases: Sequence[str], python: str = sys.executable
) -> dict[str, Any]:
    """Wall-time speed-ups of ``rev``'s layer cases over their masked dense ``F.linear`` with
    the suite's paired protocol (:func:`ic.wall_ratios`, one thread, run in a temporary
    worktree of ``rev``, never cached: a wall time is not a property of the tree).

    Returns ``{"wall": {case: [speedup, low, high]}, "wall_skipped": {case: reason}}``; a run
    that fails gives every case the reason instead of stopping the comparison.
    """
    cases = [c for c in cases if ic.layer_case(c) is not None]
    if not cases:
        return {"wall": {}, "wall_skipped": {}}
    sha = _git(repo, "rev-parse", "--verify", f"{rev}^{{commit}}")
    with tempfile.TemporaryDirectory(prefix="srigl-wall-") as tmp:
        tree_dir, out = Path(tmp) / "tree", Path(tmp) / "wall.json"
        _git(repo, "worktree", "add", "--detach", "--quiet", str(tree_dir), sha)
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", SRIGL_TUNE="off")
        env["PYTHONPATH"] = os.pathsep.join([str(tree_dir), env.get("PYTHONPATH", "")])
        cmd = [python, str(Path(ic.__file__).resolve()), "--wall", str(out), *cases]
        try:
            proc = subprocess.run(cmd, cwd=tree_dir, env=env, capture_output=True, text=True)
            if proc.returncode == 0 and out.is_file():
                return json.loads(out.read_text(encoding="utf-8"))
            why = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        finally:
            _git(repo, "worktree", "remove", "--force", str(tree_dir))
    return {"wall": {}, "wall_skipped": {c: f"wall timing failed: {why}" for c in cases}}


def wall_ratios(result: Mapping[str, Any]) -> dict[str, Interval]:
    """Wall-time ratio intervals (case -> (ratio, low, high)) of one side.

    ``result["wall"]`` as :func:`wall_revision` writes it (speed-up over masked dense
    ``F.linear`` with its 95% interval, the suite's paired ABBA protocol); cases without one
    (steps, updates, ``--no-wall``) print "n/a".
    """
    return {k: (float(v[0]), float(v[1]), float(v[2])) for k, v in result.get("wall", {}).items()}


def compare(base: Mapping[str, Any], head: Mapping[str, Any]) -> list[Row]:
    """One :class:`Row` per case counted or skipped on either side, in HEAD's order."""
    names = list(dict.fromkeys([*head["counts"], *head["skipped"], *base["counts"]]))
    names += [n for n in base["skipped"] if n not in names]
    base_wall, head_wall = wall_ratios(base), wall_ratios(head)
    return [
        Row(n, base["counts"].get(n), head["counts"].get(n), base_wall.get(n), head_wall.get(n))
        for n in names
    ]


def _fmt_wall(interval: Interval | None) -> str:
    if interval is None:
        return "n/a"
    return f"{interval[0]:.3f} [{interval[1]:.3f}, {interval[2]:.3f}]"


def format_table(rows: Sequence[Row], threshold: float) -> str:
    """The comparison as a Markdown table; ``REGRESSION`` marks counts that grew by more than
    ``threshold`` percent, ``wall changed`` wall-time intervals that separate."""
    head = (
        "| case | base | head | change % | wall ratio base | wall ratio head | flag |\n"
        "|---|---:|---:|---:|---:|---:|---|\n"
    )
    lines = []
    for row in rows:
        change = row.change_pct
        flags = []
        if row.regressed(threshold):
            flags.append(f"REGRESSION (> {threshold:g}%)")
        if intervals_separate(row.base_wall, row.head_wall):
            flags.append("wall changed")
        cells = [
            row.case,
            "n/a" if row.base is None else f"{row.base:,d}",
            "n/a" if row.head is None else f"{row.head:,d}",
            "n/a" if change is None or math.isnan(change) else f"{change:+.2f}",
            _fmt_wall(row.base_wall),
            _fmt_wall(row.head_wall),
            ", ".join(flags),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"


def run(
    repo: Path,
    base: str,
    head: str = "HEAD",
    threshold: float = DEFAULT_THRESHOLD,
    cases: str | None = None,
    python: str = sys.executable,
    use_cache: bool = True,
    case_list: Sequence[str] = (),
    wall: bool = True,
) -> tuple[int, str]:
    """Count ``base`` and ``head`` of ``repo``; returns (exit status, report text).

    ``cases``: a regex over case names (HEAD's list); ``case_list``: case names as they are
    (e.g. ``probe/<module>:<function>``); neither: every case. ``wall``: also time the layer
    cases of both sides (:func:`wall_revision`; the gate itself is the counts).

    Raises:
        CompareError: a revision is unknown, counting failed, or ``cases`` selects nothing.
        ValueError: ``threshold`` is negative or ``cases`` is no regular expression.
    """
    if not threshold >= 0:
        raise ValueError(f"threshold {threshold!r} must be a percentage >= 0")
    names: list[str] | None = list(case_list) or None
    if cases:
        try:
            regex = re.compile(cases)
        except re.error as err:
            raise ValueError(f"--cases {cases!r} is no regular expression: {err}") from None
        names = [n for n in ic.case_names(ic.available_backend_names()) if regex.search(n)]
        names += [n for n in case_list if n not in names]
        if not names:
            raise CompareError(f"--cases {cases!r} selects no case of {ic.case_names([])}")
    base_res = count_revision(repo, base, names, python, use_cache)
    head_res = count_revision(repo, head, names, python, use_cache)
    if wall:
        for rev, res in ((base, base_res), (head, head_res)):
            res.update(wall_revision(repo, rev, list(res["counts"]), python))
    rows = compare(base_res, head_res)
    regressions = [r for r in rows if r.regressed(threshold)]
    text = (
        f"instruction counts (callgrind, one call, one thread): base {base} "
        f"({base_res['sha'][:8]}) vs head {head} ({head_res['sha'][:8]})\n\n"
        + format_table(rows, threshold)
    )
    if _git(repo, "status", "--porcelain", "--untracked-files=no"):
        text += "\nnote: the working tree has uncommitted changes; they are not measured\n"
    skipped = {**base_res["skipped"], **head_res["skipped"]}
    if skipped:
        text += "\nnot counted: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()) + "\n"
    verdict = (
        f"{len(regressions)} case(s) grew by more than {threshold:g}%: "
        + ", ".join(r.case for r in regressions)
        if regressions
        else f"no count grew by more than {threshold:g}%"
    )
    return (1 if regressions else 0), text + "\n" + verdict + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 ok, 1 regression, 2 error)."""
    parser = argparse.ArgumentParser(prog="python -m suite.perf_compare", description=__doc__)
    parser.add_argument("--base", required=True, help="the revision to compare against")
    parser.add_argument("--head", default="HEAD", help="the candidate revision (HEAD)")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, help="percent")
    parser.add_argument("--cases", default=None, help="regex over case names (default: all)")
    parser.add_argument(
        "--case", action="append", default=[], help="a case name as it is (repeatable)"
    )
    parser.add_argument("--repo", type=Path, default=Path("."), help="git repository")
    parser.add_argument("--no-cache", action="store_true", help="count again even if cached")
    parser.add_argument(
        "--no-wall", action="store_true", help="skip the wall-time ratios beside the counts"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        status, text = run(
            args.repo,
            args.base,
            args.head,
            args.threshold,
            args.cases,
            use_cache=not args.no_cache,
            case_list=args.case,
            wall=not args.no_wall,
        )
    except (CompareError, ValueError) as err:
        log.error("error: %s", err)
        return 2
    print(text, end="")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
