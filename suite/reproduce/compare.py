"""The comparison of a reproduction with the published records: accuracy cells (mean, spread,
bitwise-identical seeds, a verdict) and bench speed-ups (within a tolerance or moved).

What a cell may expect depends on the machines (issue 22 item 4): a reproduced seed whose
published run came from the same machine class (:func:`suite.machine.same_class` of the two
records' ``host``) is expected to be bitwise identical, so differing hashes there are a
difference to investigate (verdict ``not bitwise``); a published run from another class, or
one recorded before records carried the machine identity (class unknown), is expected only
within noise.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from suite import machine
from suite.report import frames as rd
from suite.report.speed import nm_rows
from suite.results import cell_config

log = logging.getLogger(__name__)

VERDICTS = ("identical", "within noise", "not bitwise", "differs", "not published")
#: how a published run's machine relates to its reproduction's (:func:`relation`)
SAME, OTHER, UNKNOWN = "same class", "other class", "unknown class"


def _hashes(records: Sequence[Mapping[str, Any]], frame: pd.DataFrame) -> dict[Any, Any]:
    """Per seed its ``(state, metrics)`` hashes, None unless the record has both (a seed
    without them is never counted as bitwise identical)."""
    out = {}
    for r in frame.itertuples():
        h = records[int(r.record)]["metrics"].get("hashes")
        pair = (h.get("state"), h.get("metrics")) if isinstance(h, Mapping) else (None, None)
        out[r.seed] = pair if None not in pair else None
    return out


def _hosts(records: Sequence[Mapping[str, Any]], frame: pd.DataFrame) -> dict[Any, Any]:
    return {r.seed: records[int(r.record)].get("host") or {} for r in frame.itertuples()}


def machine_class(host: Mapping[str, Any] | None) -> str | None:
    """A record's machine class name (``asv_name``, e.g. ``amd-f25m17-avx512-2c``), None where
    the record predates the machine identity (no vendor/family/model/ISA/cores)."""
    host = host or {}
    if not machine.same_class(host, host):  # an identity is the same class as itself
        return None
    return str(host.get("asv_name") or machine.asv_machine_name(host))


def relation(published: Mapping[str, Any] | None, reproduced: Mapping[str, Any] | None) -> str:
    """How a published record's ``host`` relates to its reproduction's: ``same class``
    (bitwise identity expected), ``other class`` or ``unknown class`` (either side without a
    machine identity): within noise expected."""
    if machine_class(published) is None or machine_class(reproduced) is None:
        return UNKNOWN
    return SAME if machine.same_class(published, reproduced) else OTHER


def _machines(pub_hosts: Mapping[Any, Any], new_hosts: Mapping[Any, Any]) -> dict[str, Any]:
    """The machine side of a cell: per compared seed its :func:`relation`, the relations
    (relation: count), the published classes (name or ``unknown``: count) and the shown text
    (``same class``, ``other class (name)``, ``unknown class``, or ``mixed: ...`` where the
    published seeds of the cell came from several machine classes, or its seeds relate to
    their published runs in several ways)."""
    seeds = [s for s in new_hosts if s in pub_hosts] or list(new_hosts)
    pub_any = next(iter(pub_hosts.values()), {})  # no seed in common: the cell's first
    rel = {s: relation(pub_hosts.get(s, pub_any), new_hosts[s]) for s in seeds}
    used = [pub_hosts[s] for s in seeds if s in pub_hosts] or list(pub_hosts.values())
    classes: dict[str, int] = {}
    for host in used:
        name = machine_class(host) or "unknown"
        classes[name] = classes.get(name, 0) + 1
    relations: dict[str, int] = {}
    for r in rel.values():
        relations[r] = relations.get(r, 0) + 1
    if len(classes) > 1:
        text = "mixed: " + ", ".join(f"{k} ({v})" for k, v in sorted(classes.items()))
    elif len(relations) > 1:
        text = "mixed: " + ", ".join(f"{k} ({v})" for k, v in sorted(relations.items()))
    elif set(relations) == {OTHER}:
        text = f"{OTHER} ({next(iter(classes))})"
    else:
        (text,) = relations
    return {"relation": rel, "relations": relations, "classes": classes, "text": text}


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


def verdict(
    diff: float,
    se: float,
    n_identical: int,
    n_new: int,
    noise_se: float = 2.0,
    n_investigate: int = 0,
) -> str:
    """``identical`` when every reproduced seed is bitwise identical to its published run;
    else ``differs`` when |diff| > noise_se * se (a zero difference is always within noise);
    else ``not bitwise`` when ``n_investigate`` seeds, published from this machine class,
    hash differently (a difference to investigate); else ``within noise``."""
    if n_new and n_identical == n_new:
        return "identical"
    if not (diff == 0 or (not math.isnan(se) and abs(diff) <= noise_se * se)):
        return "differs"
    return "not bitwise" if n_investigate else "within noise"


def _new_side(grp: pd.DataFrame) -> dict[str, Any]:
    """The columns of a reproduced cell's own seeds (``grp``: its train-frame rows)."""
    first = grp.iloc[0]
    new_mean, new_std, new_n = _stats(grp["top1"])
    return {
        "experiment": first["experiment"],
        "method": first["method"],
        "sparsity": float(first["sparsity"]),
        "reproduced": rd.format_mean_std(new_mean, new_std, new_n),
        "new_mean": new_mean,
        "new_std": new_std,
        "new_n": new_n,
        "note": "",
        "machine": "-",
        "investigate": "",
        "n_investigate": 0,
        "pub_classes": {},
        "pub_relations": {},
    }


def _unpublished_row(
    grp: pd.DataFrame,
    pub: pd.DataFrame,
    published: Sequence[Mapping[str, Any]],
    reproduced: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """A reproduced cell without a published counterpart; the note says how a published cell
    of the same experiment, method and sparsity differs in its settings, if there is one."""
    row, first = _new_side(grp), grp.iloc[0]
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
    return {**row, "published": "-", "verdict": "not published", "bitwise": "-"}


def _cell_row(
    grp: pd.DataFrame,
    old: pd.DataFrame,
    published: Sequence[Mapping[str, Any]],
    reproduced: Sequence[Mapping[str, Any]],
    noise_se: float,
) -> dict[str, Any]:
    """A reproduced cell (rows ``grp``) against its published seeds (rows ``old``)."""
    row = _new_side(grp)
    new_mean, new_std, new_n = row["new_mean"], row["new_std"], row["new_n"]
    pub_mean, pub_std, pub_n = _stats(old["top1"])
    h_old, h_new = _hashes(published, old), _hashes(reproduced, grp)
    common = [s for s in h_new if s in h_old]
    same = [s for s in common if h_new[s] is not None and h_new[s] == h_old[s]]
    n_identical = len(same)
    mach = _machines(_hosts(published, old), _hosts(reproduced, grp))
    hashed = [s for s in common if h_new[s] is not None and h_old[s] is not None]
    investigate = [s for s in hashed if s not in same and mach["relation"].get(s) == SAME]
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
            "verdict": verdict(diff, se, n_identical, new_n, noise_se, len(investigate)),
            "machine": mach["text"],
            "investigate": ", ".join(str(x) for x in investigate),
            "n_investigate": len(investigate),
            "pub_classes": mach["classes"],
            "pub_relations": mach["relations"],
            "pub_mean": pub_mean,
            "pub_std": pub_std,
            "pub_n": pub_n,
            "diff": diff,
            "se": se,
            "n_identical": n_identical,
        }
    )
    notes = ["no seed in common with the published cell"] if not common else []
    if investigate:
        notes.append(
            f"seed(s) {row['investigate']} not bitwise identical on the same machine class: "
            "a difference to investigate"
        )
    if len(mach["classes"]) > 1:
        notes.append("published seeds from several machine classes")
    row["note"] = "; ".join(notes)
    return row


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

    Each seed's expectation follows the machines (see the module doc): ``machine`` says how
    the cell's published seeds relate to this machine (``same class``, ``other class (name)``,
    ``unknown class``, ``mixed: ...``), ``investigate`` lists the seeds published from this
    machine class whose hashes differ.

    Returns:
        Columns experiment, method, sparsity, published, reproduced, difference, bitwise,
        machine, verdict, note, investigate (text), pub_mean, pub_std, pub_n, new_mean,
        new_std, new_n, diff, se, n_identical, n_investigate (numbers), pub_classes
        (published machine class -> seeds compared) and pub_relations (:func:`relation` ->
        seeds compared).
    """
    pub = rd.dedupe_latest(rd.train_frame(published), ("cell_id", "seed"))[0]
    new = rd.dedupe_latest(rd.train_frame(reproduced), ("cell_id", "seed"))[0]
    rows = []
    for cid, grp in new.groupby("cell_id", sort=False):
        old = pub[pub["cell_id"] == cid]
        if old.empty:
            rows.append(_unpublished_row(grp, pub, published, reproduced))
        else:
            rows.append(_cell_row(grp, old, published, reproduced, noise_se))
    cols = ["experiment", "method", "sparsity", "published", "published, same seeds"]
    cols += ["reproduced", "difference", "2 SE"]
    cols += ["bitwise", "machine", "verdict", "note", "pub_mean", "pub_std", "pub_n", "new_mean"]
    cols += ["new_std", "new_n", "diff", "se", "n_identical", "n_investigate", "investigate"]
    cols += ["pub_classes", "pub_relations"]
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
    # N:M comparison rows share BENCH_KEY with their constant fan-in partners: not compared here
    new_b = new_b[~nm_rows(new_b)] if not new_b.empty else new_b
    old_b = old_b[~nm_rows(old_b)] if not old_b.empty else old_b
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


def _seeds(counts: dict[str, int]) -> str:
    """``{"a": 2, "b": 1}`` -> ``a (2 seeds), b (1 seeds)`` (sorted by name)."""
    return ", ".join(f"{k} ({v} seeds)" for k, v in sorted(counts.items()))


@dataclass
class Outcome:
    """What a reproduction found (``cells`` and ``bench`` from the compare functions;
    ``machine``: this machine's class name, :func:`machine_class`, None where unknown)."""

    cells: pd.DataFrame
    bench: pd.DataFrame
    failed_steps: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    machine: str | None = None

    @property
    def compared(self) -> pd.DataFrame:
        """The cells that have a published counterpart."""
        if self.cells.empty:
            return self.cells
        return self.cells[self.cells["verdict"] != "not published"]

    def _count(self, *verdicts: str) -> int:
        return int(self.compared["verdict"].isin(verdicts).sum()) if len(self.compared) else 0

    @property
    def n_reproduced(self) -> int:
        """Cells whose numbers agree: identical, within noise, or not bitwise (within noise,
        though the same machine class expected bitwise identity)."""
        return self._count("identical", "within noise", "not bitwise")

    @property
    def n_identical(self) -> int:
        return self._count("identical")

    @property
    def n_investigate(self) -> int:
        """Cells with a seed published from this machine class that is not bitwise identical
        and no difference beyond noise (verdict ``not bitwise``)."""
        return self._count("not bitwise")

    @property
    def n_differs(self) -> int:
        return self._count("differs")

    @property
    def ok(self) -> bool:
        """No cell differs beyond noise and no step failed (``not bitwise`` cells are listed
        as differences to investigate; they do not fail the run)."""
        return self.n_differs == 0 and not self.failed_steps

    def _summed(self, column: str) -> dict[str, int]:
        """The per-cell {name: seeds} mappings of ``column`` summed over the compared cells."""
        out: dict[str, int] = {}
        for counts in self.compared[column] if column in self.compared else []:
            for name, n in (counts or {}).items():
                out[name] = out.get(name, 0) + int(n)
        return out

    def published_classes(self) -> dict[str, int]:
        """Machine class of the compared published seeds (``unknown``: recorded before the
        machine identity) -> how many."""
        return self._summed("pub_classes")

    def published_relations(self) -> dict[str, int]:
        """How the compared seeds relate to their published runs (:func:`relation`, decided by
        :func:`suite.machine.same_class` as for each seed) -> how many."""
        return self._summed("pub_relations")

    def headline(self) -> str:
        """What the machines let the reader expect, and what came of it, e.g. ``same machine
        class (amd-f25m17-avx512-2c): 24/25 cells bitwise identical, 1 not bitwise (a
        difference to investigate)``; for another or an unknown class, the within-noise rule
        naming both classes; ``mixed`` where the seeds relate in several ways. Same or other
        class is :func:`suite.machine.same_class`, as for each seed, never a comparison of
        class names."""
        here = self.machine or "unknown"
        total = len(self.compared)
        classes = self.published_classes()
        relations = self.published_relations()
        if not total:
            return f"no published cell to compare with (this machine: {here})"
        investigate = (
            f", {self.n_investigate} not bitwise (a difference to investigate)"
            if self.n_investigate
            else ""
        )
        if set(relations) == {SAME}:
            bitwise = f"{self.n_identical}/{total} cells bitwise identical"
            return f"same machine class ({here}): {bitwise}{investigate}"
        counts = f"{self.n_reproduced}/{total} cells within noise "
        counts += f"({self.n_identical} bitwise identical{investigate})"
        if len(classes) > 1:
            return (
                f"published records from several machine classes ({_seeds(classes)}), this "
                f"machine {here}: bitwise identity expected only for seeds of {here}, within "
                f"noise for the others: {counts}"
            )
        if len(relations) > 1:
            return (
                f"mixed machine relations ({_seeds(relations)}), published on "
                f"{next(iter(classes))}, this machine {here}: bitwise identity expected only for "
                f"seeds of the same class, within noise for the others: {counts}"
            )
        (only,) = classes
        if only == "unknown":
            return (
                f"machine class of the published records unknown (recorded before the machine "
                f"identity), this machine {here}: within noise is the expectation: {counts}"
            )
        if set(relations) == {UNKNOWN}:
            return (
                f"machine class of the reproduced records unknown, published on {only}: within "
                f"noise is the expectation: {counts}"
            )
        return (
            f"other machine class: published on {only}, reproduced on {here}: within noise is "
            f"the expectation: {counts}"
        )

    def last_line(self) -> str:
        """``reproduced N/M cells (K bitwise identical)``, and ``, D not bitwise: to
        investigate`` where cells of this machine class are not bitwise identical."""
        tail = f", {self.n_investigate} not bitwise: to investigate" if self.n_investigate else ""
        return (
            f"reproduced {self.n_reproduced}/{len(self.compared)} cells "
            f"({self.n_identical} bitwise identical{tail})"
        )
