"""Build a throw-away git + DVC copy of this project for end-to-end tests.

The copy holds what a clean clone holds (tracked files, plus files not yet committed and
not ignored, so the tests see the working tree) and the LID model `make setup` fetched.
Commands run with the venv's bin first on PATH and every service offline and local.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def project_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=PROJECT,
                         capture_output=True, check=True).stdout.decode()
    return [f for f in out.split("\0") if f and (PROJECT / f).is_file()]


def make_copy(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for rel in project_files():
        if rel.startswith("tests/"):
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PROJECT / rel, dest / rel)
    lid = PROJECT / "assets/lid/lid.176.ftz"
    (dest / "assets/lid").mkdir(parents=True, exist_ok=True)
    shutil.copy2(lid, dest / "assets/lid/lid.176.ftz")
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", "commit", "-qm", "copy"]):
        subprocess.run(cmd, cwd=dest, check=True, capture_output=True)
    return dest


def env(tmp: Path, **extra) -> dict:
    e = {**os.environ}
    e.update({
        "PATH": f"{BIN}:{e.get('PATH', '')}", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1", "DVC_NO_ANALYTICS": "1", "DO_NOT_TRACK": "1", "HF_HOME": str(tmp / "hf_home"),
        "PREFECT_HOME": str(tmp / "prefect_home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING", "TOKENIZERS_PARALLELISM": "false",
    })
    e.pop("MLFLOW_TRACKING_URI", None)  # the copy's params.yaml decides (sqlite inside the copy)
    e.pop("LUCIE_PARAMS", None)
    e.update(extra)
    return e


def run(cmd: list[str], cwd: Path, env: dict, timeout: int = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc
