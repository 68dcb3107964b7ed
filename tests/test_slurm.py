"""Slurm for real: a one-node cluster on localhost (scripts/slurm_cluster.sh: Debian's slurm-wlm + munge, no
cgroups), jobs submitted with the real sbatch.

- The filter stage through datatrove's SlurmPipelineExecutor (a job array of 2 tasks): the same bytes as
  the local run of the same tasks.
- scancel half-way (the array submitted held, task 0 released and done, task 1 cancelled): the stage fails with one line naming the job;
  the resubmission (executor.skip_completed) runs only task 1 and gives the uninterrupted bytes.
- The pretrain script `python -m stages.launch --sbatch` renders (torchrun, 2 processes, gloo): a first job
  is stopped after its step-4 checkpoint and scancelled; a second job, submitted with
  --dependency=afterany on the first, starts when it ends, resumes from the checkpoint, and the result is
  bit-identical to the same launch run locally.

Missing Slurm skips here on a developer's machine, and fails under CI=true (cluster_fixtures.missing).
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from cluster_fixtures import start_slurm, stop_slurm, venv_path_line
from flows.server import free_port
from pretrain_data import child_env, losses, make_repo
from stages import filter as filt
from stages.core import executor, files as io
from stages.core.slurm_jobs import in_queue, job_state, wait_for_job
from test_executor import needs_lid, run_filter, sample_overrides, tree

pytestmark = pytest.mark.slow
FILTER_OUT = ("data/filtered", "metrics/filter.json")


@pytest.fixture(scope="module")
def slurm():
    import os

    state = Path(tempfile.mkdtemp(prefix="lucie-slurm-", dir="/tmp"))  # short: munge's socket path
    env = start_slurm(state)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    try:
        stop_slurm(env)
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        shutil.rmtree(state, ignore_errors=True)


def slurm_keys(**extra) -> dict:
    return {"kind": "slurm", "slurm": {"partition": "cpu", "time": "00:10:00", "cpus_per_task": 1, "mem_per_cpu_gb": 1,
                                       "env_command": venv_path_line(), "poll_seconds": 1}, **extra}


def jobs_named(name: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-n", name, "-o", "%i"], capture_output=True, text=True, check=True).stdout
    return out.split()


def wait_for(cond, timeout: float, what: str, poll: float = 0.2):
    deadline = time.monotonic() + timeout
    while not (got := cond()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)
    return got


# ---------------------------------------------------------------- data: filter as a job array
@needs_lid
def test_slurm_filter_array_gives_the_local_bytes(slurm, make_ctx, tmp_path):
    local = run_filter(make_ctx, tmp_path / "local", tasks=2, workers=2)
    root = run_filter(make_ctx, tmp_path / "slurm", local, tasks=2, workers=2, **slurm_keys())
    assert tree(root, *FILTER_OUT) == tree(local, *FILTER_OUT)
    logs = root / "logs/datatrove/filter"
    script = (logs / "launch_script.slurm").read_text()
    assert "#SBATCH --array=0-1%2" in script and "launch_pickled_pipeline" in script
    outs = sorted(p.name for p in (logs / "slurm_logs").glob("*_[01].out"))
    assert len(outs) == 2, outs  # one log per array task: both ran under Slurm
    assert sorted(p.name for p in (logs / "completions").iterdir()) == ["00000", "00001"]


@needs_lid
def test_slurm_scancel_mid_array_then_resubmission_resumes(slurm, make_ctx, tmp_path):
    # A job name of its own: datatrove's merge-stats job of an earlier test carries the stage's name too and may
    # still be in the queue (held, here).
    keys = slurm_keys(tasks=2, workers=1, skip_completed=True)
    keys["slurm"]["job_name"] = f"lucie-cancel-{tmp_path.name}"
    local = run_filter(make_ctx, tmp_path / "local", tasks=2)
    root = tmp_path / "slurm"
    shutil.copytree(local / "data/raw", root / "data/raw")
    # The array is submitted held (`#SBATCH --hold` through executor.slurm.sbatch_args) and only task 0 is
    # released, so the cancel always lands between the two tasks, however fast or slow the machine is.
    held = {**keys, "slurm": {**keys["slurm"], "sbatch_args": {"hold": ""}}}
    ctx = make_ctx("filter", sample_overrides(**held), root=root)
    failure: list[BaseException] = []

    def stage():
        try:
            filt.run(ctx)
        except BaseException as err:  # noqa: BLE001: the test inspects it
            failure.append(err)

    t = threading.Thread(target=stage)
    t.start()
    name = f"{ctx.params.executor.slurm.job_name}-filter"
    # datatrove submits the array, then a one-task merge-stats array that depends on it: the array is the first id
    job = str(min(int(j.split("_")[0]) for j in wait_for(lambda: jobs_named(name), 60, "the array job in squeue")))
    subprocess.run(["scontrol", "release", f"{job}_0"], check=True, capture_output=True)
    logs = root / "logs/datatrove/filter"
    wait_for(lambda: (logs / "completions/00000").exists(), 120, "task 0's completion")
    assert job_state(f"{job}_1") == "PENDING"
    subprocess.run(["scancel", job], check=True)
    t.join(120)
    assert not t.is_alive()
    assert failure and isinstance(failure[0], executor.ExecutorError), failure
    msg = str(failure[0])
    assert f"Slurm job {job}" in msg and "[1] unfinished" in msg and "rerun the stage" in msg
    staging = root / "data/.filtered.tasks"
    assert (staging / "task-00000" / executor.TASK_RESULT).exists() and not (staging / "task-00001").exists()
    assert not (root / "data/filtered").exists()

    # the resubmission, not held (executor settings are not part of the work's fingerprint): rank 1 only
    filt.run(make_ctx("filter", sample_overrides(**keys), root=root))
    assert io.read_json(logs / "ranks_to_run.json") == [1]
    assert "#SBATCH --array=0-0%1" in (logs / "launch_script.slurm").read_text()
    assert tree(root, *FILTER_OUT) == tree(local, *FILTER_OUT)
    assert not in_queue(job) and "CANCELLED" in job_state(f"{job}_1")
    subprocess.run(["scancel", "-n", name], check=True)  # the first run's merge-stats job, held for good


# ---------------------------------------------------------------- training: the rendered sbatch script
SETUP = {"pretrain.micro_batch_size": 2, "pretrain.global_batch_size": 8, "pretrain.launch.nproc_per_node": 2,
         "pretrain.launch.backend": "gloo", "pretrain.launch.slurm.cpus_per_task": 2,
         "pretrain.launch.slurm.time": "00:10:00", "pretrain.launch.slurm.partition": "cpu",
         "pretrain.launch.slurm.output": "slurm-%j.out", "pretrain.launch.slurm.setup": [venv_path_line()]}


def test_slurm_pretrain_script_scancel_and_afterany_resume_match_local(slurm, tmp_path):
    local = make_repo(tmp_path / "local", {**SETUP, "pretrain.launch.rdzv_endpoint": f"127.0.0.1:{free_port()}"})
    root = tmp_path / "slurm"
    shutil.copytree(local, root)
    env = child_env(root)
    r = subprocess.run([*launcher(), "--run"], cwd=local, env=child_env(local), capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]

    script = subprocess.run([*launcher(), "--sbatch"], cwd=root, env=env, capture_output=True, text=True,
                            check=True).stdout
    assert "srun --kill-on-bad-exit=1 torchrun" in script and "--nproc_per_node 2" in script
    (root / "pretrain.sbatch").write_text(script)
    sbatch = lambda *a, **kw: subprocess.run(["sbatch", "--parsable", *a, "pretrain.sbatch"], cwd=root,  # noqa: E731
                                             env={**env, **kw}, capture_output=True, text=True, check=True).stdout.strip()
    # job A stops itself (both ranks, SIGSTOP) right after its step-4 checkpoint; job B waits for A to end
    first = sbatch("--export=ALL,LUCIE_PRETRAIN_KILL_AFTER=4:SIGSTOP")
    second = sbatch(f"--dependency=afterany:{first}")
    ckpt = root / ".lucie/pretrain/ckpt/step0000004"
    wait_for(lambda: ckpt.exists() and (ckpt / "state.json").exists(), 300, "job A's step-4 checkpoint", poll=0.5)
    assert in_queue(first) and job_state(second) == "PENDING"
    subprocess.run(["scancel", first], check=True)
    wait_for_job(second, timeout=600)
    assert job_state(first) == "CANCELLED"
    assert job_state(second) == "COMPLETED", (root / f"slurm-{second}.out").read_text()[-3000:]
    log = (root / f"slurm-{second}.out").read_text()
    assert "resumed from step 4" in log, log[-3000:]
    assert not (root / "metrics/pretrain.json").read_text() == ""
    assert losses(root) == losses(local) and len(losses(local)) == 8
    for rel in ("plots/pretrain_loss.csv", "artifacts/phases/main/model.safetensors", "metrics/pretrain.json"):
        assert (root / rel).read_bytes() == (local / rel).read_bytes(), rel
    assert tree(root, "artifacts/checkpoints/main") == tree(local, "artifacts/checkpoints/main")


def launcher() -> list[str]:
    import sys

    return [sys.executable, "-m", "stages.launch"]
