"""Run a data stage's per-task work on a datatrove executor (local processes, a Slurm array, or Ray).

Why datatrove's executors: they are what Lucie's data pipeline ran on, they already know how to start N
tasks on one machine (LocalPipelineExecutor), as a Slurm job array (SlurmPipelineExecutor: pickles the
pipeline, writes the sbatch script, `launch_pickled_pipeline` per array task) or on a Ray cluster
(RayPipelineExecutor), and they record logs, stats and completions per task in `logging_dir`.

The contract that keeps the output independent of how many processes ran it:
  - the input rows (manifest order) are cut into `executor.tasks` contiguous ranges; task `rank` reads
    rows [N*rank//tasks, N*(rank+1)//tasks) only, so every task has a fixed subset whatever runs it;
  - a task writes its Parquet parts, its records and its counters into its own folder
    (`data/.<out>.tasks/task-NNNNN`, renamed into place only when complete);
  - the stage then merges in the main process, in rank order: parts are renamed (never rewritten) into
    part-00000, part-00001, ... of the usual output folder, records are concatenated, counters summed.
So `workers` (how many tasks run at once, and where) never changes a byte. For filter, whose parts are the
output, `tasks` changes where shards end (each task closes its last shard), not the documents, their order,
the records or the metrics; ingest and dedup write their output after the merge, the same for any `tasks`.

Resume (`executor.skip_completed`): the staging folder carries a fingerprint of the work (stage, tasks, code,
params, input); a failed run keeps it, and a rerun of the same work runs only the unfinished tasks.

    python -m stages.core.executor --sbatch filter     # the sbatch script SlurmPipelineExecutor would submit (or ingest, dedup)
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import inspect
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Callable, Iterator

import pyarrow.parquet as pq

from stages.core import files, owned_dirs, proc_guard
from stages.core.params import Executor, Params, load
from stages.core.runtime import StageError

TASK_RESULT = "task.json"  # written last by a task: its counters; its presence means the task finished
RAY_PIN = "ray==2.60.0"  # pinned in requirements.lock and pyproject.toml (the core wheel is enough for the executor)


class ExecutorError(StageError):
    """The executor cannot run (missing package, failed task); the message says what to do (a StageError: the
    stage prints it as its one-line failure)."""


# ---------------------------------------------------------------- which rows a task owns
def row_range(total: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rows [start, end) of task `rank` out of `world_size`: contiguous, balanced, covering 0..total."""
    return total * rank // world_size, total * (rank + 1) // world_size


def read_rows(in_dir: str | Path, start: int, end: int) -> Iterator[dict]:
    """Rows [start, end) of a document directory in manifest order, reading only the shards that hold them."""
    in_dir = Path(in_dir)
    offset = 0
    for entry in files.read_json(in_dir / files.MANIFEST)["files"]:
        lo, hi = offset, offset + entry["rows"]
        offset = hi
        if hi <= start or entry["rows"] == 0:
            continue
        if lo >= end:
            break
        table = pq.read_table(in_dir / entry["path"], schema=files.DOC_SCHEMA)
        yield from table.slice(max(start - lo, 0), min(end, hi) - max(start, lo)).to_pylist()


# ---------------------------------------------------------------- the step datatrove runs per rank
def staging_dir(out: Path) -> Path:
    """Where the tasks of the stage writing `out` put their results (a sibling, so the same filesystem)."""
    return out.with_name(f".{out.name}.tasks")


def task_dir(staging: Path, rank: int) -> Path:
    return staging / f"task-{rank:05d}"


class TaskStep:
    """A datatrove pipeline entry: `(data, rank, world_size)` -> run `work(rank, world_size, folder)`.

    `work` writes its files into an empty folder and returns its counters (JSON); the folder is renamed to
    task-NNNNN with task.json inside only when the work returned, so the merge never trusts half a task.
    Picklable (dill) for worker processes and Slurm; `work` decides what it keeps when pickled or copied.
    """

    def __init__(self, work: Callable[[int, int, Path], dict], staging: Path):
        self.work, self.staging = work, Path(staging)

    def __call__(self, data, rank: int = 0, world_size: int = 1):
        if os.environ.get("DATATROVE_EXECUTOR") == "RAY":
            # Ray's RankWorker runs the task in a process forked from the actor, which inherits Ray's SIGTERM
            # handler; the pool's terminate() then made it shut Ray down from the fork and hang on a lock. The
            # task's results are written before that; a plain SIGTERM ends the fork at once.
            import signal

            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        final = task_dir(self.staging, rank)
        tmp = final.with_name(final.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        counters = self.work(rank, world_size, tmp)
        files.write_json(tmp / TASK_RESULT, counters)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        return data

    def __repr__(self) -> str:  # datatrove logs the pipeline
        return f"TaskStep({type(self.work).__name__})"


# ---------------------------------------------------------------- executors from params
def logging_dir(root: Path, p: Executor, stage: str) -> Path:
    try:  # confined to the project: this folder is deleted on a fresh run (owned_dirs)
        return owned_dirs.inside(root, str(Path(p.logging_dir) / stage), "executor.logging_dir")
    except owned_dirs.NotOwned as err:
        raise ExecutorError(str(err)) from None


def build(p: Executor, pipeline: list, stage: str, root: Path):
    """The datatrove executor `executor.kind` names, for `pipeline`. Constructing it starts nothing."""
    log_dir = str(logging_dir(root, p, stage))
    # skip_completed: run_tasks keeps datatrove's completion marks only for a resumed run of the same work
    if p.kind == "local":
        from datatrove.executor import LocalPipelineExecutor

        return LocalPipelineExecutor(pipeline, tasks=p.tasks, workers=p.workers, logging_dir=log_dir,
                                     skip_completed=p.skip_completed)
    if p.kind == "slurm":
        from datatrove.executor import SlurmPipelineExecutor

        s = p.slurm
        return SlurmPipelineExecutor(
            pipeline, tasks=p.tasks, workers=p.workers, time=s.time, partition=s.partition,
            cpus_per_task=s.cpus_per_task, mem_per_cpu_gb=s.mem_per_cpu_gb, job_name=f"{s.job_name}-{stage}",
            qos=s.qos, env_command=s.env_command, sbatch_args=dict(s.sbatch_args), max_array_size=s.max_array_size,
            logging_dir=log_dir, skip_completed=p.skip_completed, slurm_logs_folder=str(Path(log_dir) / "slurm_logs"),
            requeue_signals=None)
    if p.kind == "ray":
        from datatrove.executor.ray import RayPipelineExecutor

        r = p.ray
        return RayPipelineExecutor(pipeline, tasks=p.tasks, workers=p.workers, logging_dir=log_dir,
                                   skip_completed=p.skip_completed, cpus_per_task=r.cpus_per_task, mem_per_cpu_gb=r.mem_per_cpu_gb)
    raise ValueError(f"unknown executor kind {p.kind!r}")


def require_ray() -> None:
    if importlib.util.find_spec("ray") is None:
        raise ExecutorError(
            f"executor.kind: ray needs the `ray` package, which is not installed: run `make setup` (requirements.lock "
            f"pins {RAY_PIN}) or `.venv/bin/pip install \"{RAY_PIN}\"`, or set executor.kind: local or slurm.")


def require_sbatch() -> None:
    if shutil.which("sbatch") is None:
        raise ExecutorError("executor.kind: slurm needs `sbatch` on PATH (run the stage on a Slurm login node); "
                            "`python -m stages.core.executor --sbatch <stage>` prints the script without submitting")


def _start(ex, p: Executor) -> None:
    if p.kind == "local":
        proc_guard.children_die_with_me()  # datatrove's Manager process must not outlive a killed stage
        ex.run()
    elif p.kind == "slurm":
        # Outside an allocation, run() writes executor.pik + the sbatch script and submits the array; the stage
        # then waits for every task's completion mark, so `dvc repro` still sees one blocking command.
        # A job that leaves the queue unfinished (scancel, failure) fails the stage instead of a wait forever.
        from stages.core.slurm_jobs import wait_for_ranks

        require_sbatch()
        ex.run()
        wait_for_ranks(ex, p.slurm.poll_seconds, ExecutorError)
    else:
        require_ray()
        import ray

        if not ray.is_initialized():
            ray.init(address=p.ray.address)
        ex.run()


RUN = "run.json"  # in the staging folder: the record of the work its task folders belong to


def work_record(stage: str, p: Executor, work, **inputs) -> dict:
    """The record kept in run.json (readable, compared whole; not a hash, so a refused resume can be read). What a finished task folder's result depends on: the stage, the number of tasks (they fix the row
    ranges), the code of the work and of this module, and what the stage passes (its params, its input)."""
    code = {Path(f).name: files.sha256_file(f) for f in sorted({inspect.getfile(type(work)), __file__})}
    return json.loads(files.dumps_json({"stage": stage, "tasks": p.tasks, "code": code, **inputs}))


def input_manifest(in_dir: Path) -> str:
    """A document directory's identity: the sha256 of its manifest (which lists every shard's sha256)."""
    return files.sha256_file(Path(in_dir) / files.MANIFEST)


def _resumable(staging: Path, fp: dict) -> bool:
    try:
        return files.read_json(staging / RUN) == fp
    except (OSError, ValueError):
        return False


def run_tasks(root: Path, p: Executor, stage: str, work: Callable[[int, int, Path], dict], out: Path,
              inputs: Callable[[], dict] = dict) -> list[Path]:
    """Run `work` for every rank on the configured executor; return the task folders in rank order.

    With `skip_completed`, a staging folder left by a failed run of the same work (same fingerprint:
    `inputs()` gives the stage's params and input identity) is resumed: its finished tasks are kept and
    datatrove runs the others. Anything else starts from empty folders."""
    if p.kind == "ray":  # before any file is touched
        require_ray()
    elif p.kind == "slurm":
        require_sbatch()
    staging, log_dir = staging_dir(out), logging_dir(root, p, stage)
    fp = work_record(stage, p, work, **inputs())
    if p.skip_completed and _resumable(staging, fp):
        done = {r for r in range(p.tasks) if (task_dir(staging, r) / TASK_RESULT).exists()}
        for r in range(p.tasks):  # datatrove's marks must not claim a task whose folder is not there
            mark = log_dir / "completions" / f"{r:05d}"
            if r not in done and mark.exists():
                mark.unlink()
        print(f"[{stage}] resuming: {len(done)} of {p.tasks} tasks already finished in {staging}", file=sys.stderr)
    else:
        shutil.rmtree(staging, ignore_errors=True)  # derived from the output path: the project's own
        try:
            owned_dirs.remove(log_dir)  # never a folder the project did not make
        except owned_dirs.NotOwned as err:
            raise ExecutorError(f"executor.logging_dir: {err}") from None
        owned_dirs.make(log_dir)
        staging.mkdir(parents=True)
        files.write_json(staging / RUN, fp)
    ex = build(p, [TaskStep(work, staging)], stage, root)
    _start(ex, p)
    dirs = [task_dir(staging, r) for r in range(p.tasks)]
    missing = [d.name for d in dirs if not (d / TASK_RESULT).exists()]
    if missing:
        raise ExecutorError(f"{stage}: tasks {missing} did not finish; see {log_dir}/logs")
    return dirs


def merge_parts(dirs: list[Path], dest: Path) -> list[dict]:
    """Move the tasks' Parquet parts (each task's manifest order, tasks in rank order) into `dest` as
    part-00000, part-00001, ...; return the manifest entries. Files are renamed, so their sha256 stands.
    Empty parts are left out, except one when nothing at all was kept (write_docs' rule)."""
    entries: list[dict] = []
    empty: list[tuple[Path, dict]] = []
    for d in dirs:
        for e in files.read_json(d / files.MANIFEST)["files"]:
            if e["rows"] == 0:
                empty.append((d, e))
                continue
            name = f"part-{len(entries):05d}.parquet"
            os.replace(d / e["path"], dest / name)
            entries.append({**e, "path": name})
    if not entries and empty:
        d, e = empty[0]
        os.replace(d / e["path"], dest / "part-00000.parquet")
        entries.append({**e, "path": "part-00000.parquet"})
    return entries


def cleanup(out: Path, p: Executor | None = None, failed: bool = False) -> None:
    """Remove the staging folder; after a failure with `skip_completed`, keep it for the next run to resume."""
    if failed and p is not None and p.skip_completed:
        print(f"finished tasks kept in {staging_dir(out)}: rerun the stage to resume (executor.skip_completed)",
              file=sys.stderr)
        return
    shutil.rmtree(staging_dir(out), ignore_errors=True)


@contextlib.contextmanager
def task_results(root: Path, p: Executor, stage: str, work: Callable[[int, int, Path], dict], out: Path,
                 inputs: Callable[[], dict] = dict) -> Iterator[list[Path]]:
    """`with task_results(...) as dirs:` run_tasks, then the block merges the task folders into `out`. The
    staging folder is removed when the block succeeds, and after a failure too unless skip_completed keeps
    its finished tasks for the next run."""
    with proc_guard.exclusive(root, stage):  # two direct runs would share the staging folder
        try:
            yield run_tasks(root, p, stage, work, out, inputs)
        except BaseException:
            cleanup(out, p, failed=True)
            raise
        cleanup(out, p)


def describe(p: Executor) -> str:
    """The stage summary's note on how the tasks ran ("" for the default: one task, in-process)."""
    return f", {p.tasks} tasks on {p.kind}" if p.tasks > 1 or p.kind != "local" else ""


# ---------------------------------------------------------------- the sbatch script, without submitting
STAGE_OUTPUTS = {"ingest": "data/raw", "filter": "data/filtered", "dedup": "data/dedup"}  # stages whose work runs through the executor


def sbatch_script(params: Params, stage: str, root: Path) -> str:
    """The array script SlurmPipelineExecutor.launch_job would write and submit for `stage`, rendered by
    datatrove's own get_sbatch_args/get_launch_file_contents with launch_job's run line (no sbatch call)."""
    if stage not in STAGE_OUTPUTS:
        raise ValueError(f"stage {stage!r} does not run through the executor; known: {sorted(STAGE_OUTPUTS)}")
    p = params.executor.model_copy(update={"kind": "slurm"})
    ex = build(p, [], stage, root)
    max_array = min(p.tasks, p.slurm.max_array_size)
    pik = ex.logging_dir.resolve_paths("executor.pik")
    return ex.get_launch_file_contents(ex.get_sbatch_args(max_array), f"srun  -l -n {ex.nodes_per_task} launch_pickled_pipeline {pik}")


def main(argv: list[str] | None = None) -> None:
    from stages.core.runtime import params_path

    ap = argparse.ArgumentParser(prog="python -m stages.core.executor", description=__doc__.split("\n")[0])
    ap.add_argument("--sbatch", metavar="STAGE", required=True, help=f"print the Slurm array script for {sorted(STAGE_OUTPUTS)}")
    a = ap.parse_args(argv)
    root = files.root()
    try:
        script = sbatch_script(load(params_path(root)), a.sbatch, root)
    except ValueError as err:
        ap.error(str(err))
    sys.stdout.write(script)


if __name__ == "__main__":
    main()
