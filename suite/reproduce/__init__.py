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
   equal), where the published seeds were made (``machine``: the same machine class as this
   run, another, unknown for records older than the machine identity, or mixed), and a
   verdict: ``identical`` (every reproduced seed bitwise identical), ``differs`` (|difference of
   means| > ``noise_se`` standard errors of the difference), ``not bitwise`` (within noise, but
   a seed published from this machine class hashes differently: bitwise identity was expected,
   a difference to investigate, listed, not a failure) or ``within noise``. Bench speed-ups
   are compared with a tolerance (``bench.tolerance``) and reported; timings move between
   machines, so they never fail the run. Writes
   ``results/REPRODUCTION.md`` and ``results/figures/reproduction.png``; the machine headline
   (e.g. ``same machine class (amd-f25m17-avx512-2c): N/M cells bitwise identical``, or the
   within-noise expectation naming both classes) is printed, and the last line is
   ``reproduced N/M cells (K bitwise identical)``.

Exit status: 0 reproduced, 1 a cell differs or a step failed, 2 could not start.
``publish=1`` (``make publish``) copies the reproduction into ``published_dir`` and regenerates
the report: replacing the published results is explicit, never a side effect; records made
from a dirty working tree (``git.dirty`` true) are refused. A published record with the same
run id and other content is replaced, the old file moved to ``superseded_dir``
(``results/superseded/``) first; it prints how many records were added, replaced and
unchanged. ``dry_run=1``
prints the sweep and the bench commands and runs nothing.

Config: ``suite/conf/reproduce.yaml``; any key can be overridden on the command line, e.g.
``python -m suite.reproduce profile=quick 'profile.train.seeds=[0,1]' workers=1``.

Modules, one step each: ``sweep`` (the config, the sweep and bench command lines, the checks
before any compute), ``store`` (the fresh store and its marker), ``compare`` (cells, verdicts,
bench speed-ups), ``document`` (REPRODUCTION.md and its figure), ``publish`` (``publish=1``)
and ``app`` (the steps in order and the command line).
"""

from __future__ import annotations

from suite.config import CONF_DIR
from suite.reproduce.app import compare, main, run, run_bench, run_sweep
from suite.reproduce.compare import (
    VERDICTS,
    Outcome,
    bench_summary,
    compare_bench,
    compare_cells,
    difference_se,
    machine_class,
    relation,
    verdict,
)
from suite.reproduce.document import SHOWN_COLUMNS, write_document
from suite.reproduce.publish import publish
from suite.reproduce.store import MARKER, prepare_store, read_marker, write_marker
from suite.reproduce.sweep import (
    CONFIG_NAME,
    DENSE,
    ReproduceError,
    bench_command,
    bench_runs,
    check_can_start,
    compose,
    expected_jobs,
    grids_override,
    sweep_command,
    sweep_grids,
    train_overrides,
)

__all__ = [
    "CONFIG_NAME",
    "CONF_DIR",
    "DENSE",
    "MARKER",
    "SHOWN_COLUMNS",
    "VERDICTS",
    "Outcome",
    "ReproduceError",
    "bench_command",
    "bench_runs",
    "bench_summary",
    "check_can_start",
    "compare",
    "compare_bench",
    "compare_cells",
    "compose",
    "difference_se",
    "expected_jobs",
    "grids_override",
    "machine_class",
    "main",
    "prepare_store",
    "publish",
    "read_marker",
    "relation",
    "run",
    "run_bench",
    "run_sweep",
    "sweep_command",
    "sweep_grids",
    "train_overrides",
    "verdict",
    "write_document",
    "write_marker",
]
