"""Waiting for a submitted Slurm job without hanging when the job is gone (scancel, node failure, time limit).

Why a module: datatrove's SlurmPipelineExecutor submits the array and returns; the data stage then waits for
every task's completion mark. A job cancelled half-way never writes its marks, so waiting on marks alone
would wait forever. Here the wait also asks the controller (squeue) whether the job is still queued or
running; once it has left the queue with tasks unfinished, the stage fails with one line naming the job,
its logs and how to resume (executor.skip_completed keeps the finished tasks for the resubmission).
"""
from __future__ import annotations

import subprocess
import time


def in_queue(job_id: str | int) -> bool:
    """True while `job_id` (an array job: any of its tasks) is pending, running, suspended or completing."""
    out = subprocess.run(["squeue", "-h", "-j", str(job_id), "-o", "%i"], capture_output=True, text=True)
    if out.returncode != 0:
        if "Invalid job id" in out.stderr:  # purged from the controller: long gone
            return False
        raise RuntimeError(f"squeue -j {job_id} failed: {out.stderr.strip() or out.returncode}")
    return bool(out.stdout.strip())


def wait_for_ranks(ex, poll_seconds: float, error: type[Exception] = RuntimeError) -> None:
    """Wait until datatrove marks every rank of `ex` (a launched SlurmPipelineExecutor) complete.

    Raises `error` when its job leaves the queue first: cancelled, failed or timed out."""
    job = getattr(ex, "job_id", None)
    while incomplete := ex.get_incomplete_ranks(skip_completed=True):
        if job not in (None, -1) and not in_queue(job):
            if not (incomplete := ex.get_incomplete_ranks(skip_completed=True)):  # finished as it left
                return
            raise error(f"Slurm job {job} ({ex.job_name}) left the queue with tasks {incomplete} unfinished "
                        f"(cancelled, failed or out of time): see {ex.slurm_logs_folder}; rerun the stage to "
                        f"run them again (with executor.skip_completed: true the finished tasks are kept)")
        time.sleep(poll_seconds)


def wait_for_job(job_id: str | int, timeout: float, poll_seconds: float = 0.5) -> None:
    """Wait until `job_id` has left the queue (any end state); TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while in_queue(job_id):
        if time.monotonic() > deadline:
            raise TimeoutError(f"Slurm job {job_id} still queued or running after {timeout:.0f} s")
        time.sleep(poll_seconds)


def job_state(job_id: str | int) -> str:
    """The controller's JobState of a job it still remembers (MinJobAge): COMPLETED, CANCELLED, FAILED, ..."""
    out = subprocess.run(["scontrol", "show", "job", "-o", str(job_id)], capture_output=True, text=True, check=True)
    states = {f.split("=", 1)[1] for line in out.stdout.splitlines() for f in line.split() if f.startswith("JobState=")}
    return ",".join(sorted(states))
