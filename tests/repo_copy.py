"""Build a throw-away git + DVC copy of this project for end-to-end tests.

The copy holds what a clean clone holds (tracked files, plus files not yet committed and
not ignored, so the tests see the working tree) and the inputs git does not hold (the LID
model `make setup` fetched). Commands run with the venv's bin first on PATH and every service
offline and local. The environment and the input copying are `lucie verify`'s (lucie/verify.py),
which builds its scratch copy from HEAD instead of the working tree.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from lucie.verify import BIN, copy_inputs, offline_env, plan

PROJECT = Path(__file__).resolve().parent.parent
__all__ = ["BIN", "PROJECT", "env", "make_copy", "project_files", "run"]


def project_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=PROJECT,
                         capture_output=True, check=True).stdout.decode()
    return [f for f in out.split("\0") if f and (PROJECT / f).is_file()]


def make_copy(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for rel in project_files():  # tests/ too: it is part of the code tree the release archives (a release dep)
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PROJECT / rel, dest / rel)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", "commit", "-qm", "copy"]):
        subprocess.run(cmd, cwd=dest, check=True, capture_output=True)
    copy_inputs(PROJECT, dest, plan(dest)[1])  # e.g. assets/lid/lid.176.ftz; raises naming any that is absent
    return dest


def env(tmp: Path, **extra) -> dict:
    return offline_env(tmp, None, **extra)  # no MLFLOW_TRACKING_URI: the copy's params.yaml decides (sqlite inside it)


def run(cmd: list[str], cwd: Path, env: dict, timeout: int = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc
