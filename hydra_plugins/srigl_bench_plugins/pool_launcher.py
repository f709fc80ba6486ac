"""``hydra/launcher=pool``: multirun jobs in parallel local worker processes.

::

    python -m suite.train -m hydra/launcher=pool hydra.launcher.workers=2 trainer=dense,srigl

Why not hydra-joblib-launcher: it hands the whole batch to one blocking ``joblib.Parallel``
call, so the parent cannot show progress per job, and the first failed job raises in the
sweeper without a list of the others. This launcher runs the jobs in ``workers`` spawned
processes (each with ``threads_per_worker`` torch/OpenMP threads, set before torch starts),
shows one tqdm bar over the jobs, sends each job's console output to ``console.log`` in its
Hydra output folder, and at the end logs a failure summary: every failed job with its last
error line, its log and the command that reruns it alone. A failed job never stops the others;
the sweeper then raises the first failure, so the multirun exits non-zero.

On a cluster use ``hydra/launcher=slurm`` (hydra-submitit-launcher) instead: same sweep.
"""

# No `from __future__ import annotations`: Hydra loads plugin modules outside sys.modules,
# where dataclasses cannot resolve string annotations.
import contextlib
import logging
import multiprocessing
import os
import shlex
import sys
import traceback
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

log = logging.getLogger(__name__)

#: the per-job file that receives the job's stdout and stderr
CONSOLE_LOG = "console.log"


@dataclass
class PoolLauncherConf:
    """Config of ``hydra/launcher=pool``."""

    _target_: str = "hydra_plugins.srigl_bench_plugins.pool_launcher.PoolLauncher"
    workers: int = 2  # parallel worker processes (1: one process, jobs in turn)
    threads_per_worker: int | None = 1  # torch/OpenMP threads in each worker (null: default)
    progress: bool = True  # one tqdm bar over the jobs (on stderr)


ConfigStore.instance().store(
    group="hydra/launcher", name="pool", node=PoolLauncherConf, provider="srigl-bench"
)


class JobFailedError(RuntimeError):
    """A job of the pool failed; the message holds its traceback (picklable, unlike some
    exceptions a job may raise)."""


# --------------------------------------------------------------------------- worker side

# Hydra's plugin scan may execute this module again in its own namespace (it does in the
# workers, when the job's Hydra state is set): keep the state the worker was given.
_WORKER: dict[str, Any] = globals().get("_WORKER", {})


def _watch_parent(parent_pid: int, interval: float = 1.0) -> None:
    """Exit this worker when ``parent_pid`` is no longer its parent (the launcher was killed:
    SIGKILL or SIGTERM run no clean-up there), instead of training on as an orphan."""
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()


def _init_worker(threads: int | None, payload: bytes, parent_pid: int) -> None:
    """Watch the launcher, set the thread count before torch is imported, then unpickle the
    shared job context."""
    _watch_parent(parent_pid)
    if threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[var] = str(threads)
        import importlib.util

        if importlib.util.find_spec("torch") is not None:
            import torch

            torch.set_num_threads(int(threads))
    import cloudpickle

    _WORKER.update(cloudpickle.loads(payload))


def _job_output_dir(sweep_config: DictConfig) -> Path:
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    HydraConfig.instance().set_config(sweep_config)
    out = Path(str(OmegaConf.select(sweep_config, "hydra.sweep.dir")))
    return out / str(OmegaConf.select(sweep_config, "hydra.sweep.subdir"))


def _run_in_worker(idx: int, overrides: Sequence[str]) -> dict[str, Any]:
    """Run job ``idx`` (Hydra's ``run_job``), its console output in ``<job dir>/console.log``.

    Returns:
        The picklable parts of the job's ``JobReturn`` (its Hydra config holds structured
        config classes that do not pickle) and ``console``, the console log path; a failure's
        exception becomes a :class:`JobFailedError` holding the traceback.
    """
    from hydra.core.singleton import Singleton
    from hydra.core.utils import run_job, setup_globals

    setup_globals()
    Singleton.set_state(_WORKER["singleton_state"])
    hydra_context: HydraContext = _WORKER["hydra_context"]
    sweep_config = hydra_context.config_loader.load_sweep_config(_WORKER["config"], list(overrides))
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{idx}"
        sweep_config.hydra.job.num = idx
    out_dir = _job_output_dir(sweep_config)
    out_dir.mkdir(parents=True, exist_ok=True)
    console = out_dir / CONSOLE_LOG
    with (
        open(console, "w", encoding="utf-8") as fh,
        contextlib.redirect_stdout(fh),
        contextlib.redirect_stderr(fh),
    ):
        ret = run_job(
            hydra_context=hydra_context,
            task_function=_WORKER["task_function"],
            config=sweep_config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )
        if ret.status == JobStatus.FAILED:
            exc = ret._return_value
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            fh.write(text)
            ret.return_value = JobFailedError(text)
    logging.shutdown()  # release the job's log handlers before the file closes
    from omegaconf import OmegaConf

    return {
        "overrides": list(ret.overrides or overrides),
        "cfg": OmegaConf.to_container(ret.cfg) if ret.cfg is not None else None,
        "working_dir": ret.working_dir,
        "task_name": ret.task_name,
        "status": ret.status,
        "value": ret._return_value,
        "console": str(console),
    }


def _job_return(parts: dict[str, Any]) -> JobReturn:
    from omegaconf import OmegaConf

    ret = JobReturn(
        overrides=parts["overrides"],
        cfg=None if parts["cfg"] is None else OmegaConf.create(parts["cfg"]),
        working_dir=parts["working_dir"],
        task_name=parts["task_name"],
        status=parts["status"],
    )
    ret.return_value = parts["value"]
    return ret


# --------------------------------------------------------------------------- parent side


def rerun_command(overrides: Sequence[str]) -> str:
    """The shell command that runs one job of this multirun alone."""
    main = Path(sys.argv[0])
    if main.name == "__main__.py":
        try:
            module = ".".join(main.resolve().parent.relative_to(Path.cwd().resolve()).parts)
            head = f"python -m {module}"
        except ValueError:
            head = f"python {shlex.quote(str(main.parent))}"
    else:
        head = f"python {shlex.quote(str(main))}"
    return " ".join([head, *(shlex.quote(o) for o in filter_overrides(overrides))])


@dataclass
class _Failure:
    idx: int
    overrides: Sequence[str]
    error: str
    log: str | None


class PoolLauncher(Launcher):
    """Runs a multirun's jobs in ``workers`` spawned processes (see the module docstring)."""

    def __init__(self, workers: int = 2, threads_per_worker: int | None = 1, progress=True):
        if int(workers) < 1:
            raise ValueError(f"hydra.launcher.workers={workers} is invalid; allowed: >= 1")
        self.workers = int(workers)
        self.threads = None if threads_per_worker is None else int(threads_per_worker)
        self.progress = bool(progress)
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        """Run every job; return their ``JobReturn`` in the order of ``job_overrides``."""
        import cloudpickle
        from hydra.core.singleton import Singleton
        from hydra.core.utils import configure_log, setup_globals
        from tqdm import tqdm

        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        n = len(job_overrides)
        log.info(
            f"Launching {n} jobs in {self.workers} worker(s) x {self.threads or 'default'} "
            f"thread(s); sweep dir {self.config.hydra.sweep.dir}"
        )
        payload = cloudpickle.dumps(
            {
                "hydra_context": self.hydra_context,
                "task_function": self.task_function,
                "config": self.config,
                "singleton_state": Singleton.get_state(),
            }
        )
        results: dict[int, JobReturn] = {}
        failures: list[_Failure] = []
        bar = tqdm(total=n, unit="job", desc="jobs", disable=not self.progress, file=sys.stderr)

        def record(i: int, ret: JobReturn, console: str | None) -> None:
            results[i] = ret
            if ret.status != JobStatus.COMPLETED:
                last = str(ret._return_value).strip().splitlines()[-1:] or ["(no message)"]
                failures.append(
                    _Failure(initial_job_idx + i, list(job_overrides[i]), last[0], console)
                )
            bar.set_postfix_str(f"failed={len(failures)}", refresh=False)
            bar.update(1)

        try:
            # A worker that dies (out of memory, killed) breaks the whole pool: every job it
            # had not finished raises BrokenProcessPool, whichever job killed it. Those jobs
            # run again in a fresh pool of all the workers while that makes progress; what a
            # round leaves all broken again runs each job alone in a single-worker pool, so
            # only the job that kills its worker fails and the others are unharmed.
            run = partial(
                self._run_pool,
                job_overrides=job_overrides,
                initial_job_idx=initial_job_idx,
                payload=payload,
                record=record,
            )
            broken = run(list(range(n)), self.workers)
            while 1 < len(broken):
                again = run(broken, self.workers)
                if len(again) == len(broken):  # no job finished: isolate them
                    break
                broken = again
            for i in broken:
                for j in run([i], 1):
                    ret = JobReturn(overrides=list(job_overrides[j]), status=JobStatus.FAILED)
                    ret.return_value = JobFailedError(
                        "its worker process died (out of memory or killed), twice"
                    )
                    record(j, ret, None)
        finally:
            bar.close()
        self._summarise(n, failures)
        return [results[i] for i in range(n)]

    def _run_pool(self, indices, workers, job_overrides, initial_job_idx, payload, record):
        """Run jobs ``indices`` in a pool of ``workers`` spawned processes, ``record(i, ret,
        console)`` each finished one; returns the indices lost to a broken pool."""
        ctx = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(workers, ctx, _init_worker, (self.threads, payload, os.getpid()))
        broken: list[int] = []
        try:
            futures = {
                pool.submit(_run_in_worker, initial_job_idx + i, list(job_overrides[i])): i
                for i in indices
            }
            for fut in as_completed(futures):
                i = futures[fut]
                try:
                    parts = fut.result()
                except BrokenProcessPool:
                    broken.append(i)
                    continue
                except Exception:  # a result that does not unpickle: the job failed
                    ret = JobReturn(overrides=list(job_overrides[i]), status=JobStatus.FAILED)
                    ret.return_value = JobFailedError(traceback.format_exc())
                    record(i, ret, None)
                    continue
                record(i, _job_return(parts), parts["console"])
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return sorted(broken)

    def _summarise(self, n: int, failures: list[_Failure]) -> None:
        log.info(f"{n - len(failures)}/{n} jobs completed, {len(failures)} failed")
        for f in sorted(failures, key=lambda f: f.idx):
            log.error(
                f"FAILED job #{f.idx}: {f.error}\n  log: {f.log}\n  rerun: "
                f"{rerun_command(f.overrides)}"
            )
