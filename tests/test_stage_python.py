"""Stage commands find the project's interpreter whatever is on PATH (bin/lucie-python).

`.venv/bin/dvc repro` from a shell without the venv activated used to run `python -m stages.X` with the
system python: ModuleNotFoundError after DVC had already removed the stage's outputs.
"""
from __future__ import annotations

import os
import subprocess
import sys

from repo_copy import BIN, PROJECT, env, make_copy


def _bare_env(tmp):
    """A shell where the venv is not activated: no venv on PATH, no LUCIE_PYTHON."""
    e = env(tmp)
    e.pop("LUCIE_PYTHON", None)
    e.pop("VIRTUAL_ENV", None)
    e["PATH"] = os.pathsep.join(p for p in e["PATH"].split(os.pathsep) if p and ".venv" not in p and p != str(BIN))
    return e


def test_venv_dvc_runs_stages_with_the_project_python(tmp_path):
    root = make_copy(tmp_path / "repo")
    os.symlink(PROJECT / ".venv", root / ".venv")  # as in a clone after `make setup`
    e = _bare_env(tmp_path)
    proc = subprocess.run([str(BIN / "dvc"), "repro", "-f", "-s", "ingest"], cwd=root, env=e, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert (root / "data" / "raw").is_dir() and (root / "metrics" / "ingest.json").is_file()


def test_no_interpreter_is_one_clear_line(tmp_path):
    root = make_copy(tmp_path / "repo")  # no .venv in the copy
    e = _bare_env(tmp_path)
    proc = subprocess.run([str(BIN / "dvc"), "repro", "-s", "ingest"], cwd=root, env=e, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode != 0
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "lucie-python" in ln and "make setup" in ln]
    assert len(lines) == 1 and str(root / ".venv" / "bin" / "python") in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and "ModuleNotFoundError" not in proc.stderr

    bad = subprocess.run([str(root / "bin" / "lucie-python"), "-c", "pass"], env={**e, "LUCIE_PYTHON": "/nonexistent/py"},
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "LUCIE_PYTHON=/nonexistent/py" in bad.stderr
    ok = subprocess.run([str(root / "bin" / "lucie-python"), "-c", "import sys; print(sys.executable)"],
                        env={**e, "LUCIE_PYTHON": sys.executable}, capture_output=True, text=True)
    assert ok.stdout.strip() == sys.executable
