"""Real local clusters for the scale-out tests: Slurm (scripts/slurm_cluster.sh) and Ray (`ray start --head`).

Both come up once per test module on localhost, with their own state directory and ports, and are torn
down after. A missing piece (slurm-wlm/munge not installed, ray not importable) skips the tests on a
developer's machine with the install line as the reason, and FAILS them under CI=true: CI installs
everything (.ci/run), so a skip there would hide a broken install step.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent
SLURM_SCRIPT = PROJECT / "scripts" / "slurm_cluster.sh"


def missing(what: str) -> None:
    """Fail under CI, skip (with the fix as the reason) elsewhere."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what} (CI installs it in .ci/run: that step is broken)", pytrace=False)
    pytest.skip(what)


def free_port_pair() -> int:
    """A port p with p and p+1 free on 127.0.0.1 (slurmctld, slurmd)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        if p >= 65535:
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", p + 1))
            return p
        except OSError:
            continue
    raise RuntimeError("no two consecutive free ports")


def start_slurm(state_dir: Path) -> dict:
    """Bring up a one-node cluster; return the environment variables that point clients at it."""
    tools = [t for t in ("sbatch", "squeue", "scancel", "slurmctld", "slurmd", "munged") if shutil.which(t) is None]
    if tools:
        missing(f"Slurm is not installed ({', '.join(tools)} missing): apt-get install slurm-wlm munge")
    if os.geteuid() != 0:
        missing("the local Slurm cluster runs its daemons as root (as CI does)")
    env = {**os.environ, "LUCIE_SLURM_DIR": str(state_dir), "LUCIE_SLURM_PORT": str(free_port_pair())}
    up = subprocess.run(["bash", str(SLURM_SCRIPT), "up"], env=env, capture_output=True, text=True, timeout=120)
    if up.returncode != 0:
        subprocess.run(["bash", str(SLURM_SCRIPT), "down"], env=env, capture_output=True, timeout=60)
        pytest.fail(f"scripts/slurm_cluster.sh up failed:\n{up.stderr[-3000:]}", pytrace=False)
    return {"SLURM_CONF": str(state_dir / "slurm.conf"), "LUCIE_SLURM_DIR": str(state_dir),
            "LUCIE_SLURM_PORT": env["LUCIE_SLURM_PORT"]}


def stop_slurm(cluster_env: dict) -> None:
    subprocess.run(["bash", str(SLURM_SCRIPT), "down"], env={**os.environ, **cluster_env}, capture_output=True,
                   timeout=120, check=True)


def venv_path_line() -> str:
    """The shell line a Slurm job runs first: this interpreter's bin (torchrun, launch_pickled_pipeline) on PATH."""
    return f"export PATH={Path(sys.executable).parent}:$PATH"


def start_ray(temp_dir: Path):
    """`ray start --head --block` on 127.0.0.1 with 2 CPUs and a small object store, in its own session.

    Returns (address, process). The head's daemons live under `temp_dir`; stop_ray ends them by pid."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        missing("ray is not installed: run `make setup` (requirements.lock pins ray)")
    port = free_port_pair()
    exe = Path(sys.executable).parent / "ray"
    cmd = [str(exe), "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(port),
           "--num-cpus", "2", "--object-store-memory", str(100 * 1024**2), "--include-dashboard", "false",
           "--disable-usage-stats", "--temp-dir", str(temp_dir)]
    # RAY_worker_niceness=0: Ray starts its workers at nice 15 by default, which on a busy machine starves the
    # tasks next to the local run this test compares them with.
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_worker_niceness": "0"}
    log = open(temp_dir.parent / f"{temp_dir.name}.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"127.0.0.1:{port}"
    import time

    deadline = time.monotonic() + 120
    while True:  # the head answers `ray status` once its GCS is up
        if proc.poll() is not None:
            pytest.fail(f"ray start exited {proc.returncode}:\n{Path(log.name).read_text()[-3000:]}", pytrace=False)
        st = subprocess.run([str(exe), "status", "--address", address], capture_output=True, text=True, env=env)
        if st.returncode == 0:
            return address, proc
        if time.monotonic() > deadline:
            stop_ray(proc, temp_dir)
            pytest.fail(f"the Ray head on {address} did not come up in 120 s:\n{st.stderr[-2000:]}", pytrace=False)
        time.sleep(1)


def ray_pids(temp_dir: Path) -> list[int]:
    """The processes of the head started with --temp-dir `temp_dir` (raylet, gcs_server, workers, ...)."""
    import psutil

    pids = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any(str(temp_dir) in a for a in p.info["cmdline"] or []):
                pids.append(p.info["pid"])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return pids


def stop_ray(proc: subprocess.Popen, temp_dir: Path) -> None:
    """End the head: SIGTERM to `ray start --block` (it stops the daemons it started), then any process of
    this head still alive, by pid (never `ray stop`, which would stop every Ray on the machine)."""
    import signal
    import time

    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    deadline = time.monotonic() + 15
    while (left := [p for p in ray_pids(temp_dir) if p != os.getpid()]) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
