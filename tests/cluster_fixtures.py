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
