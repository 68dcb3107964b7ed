"""A data stage's processes and lock (issue 16.9): datatrove's Manager process dies with a SIGKILLed stage, and
two direct runs of the same stage cannot share the staging folder (the second fails at once, one line)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from stages import ingest
from stages.core.proc_guard import StageLocked
from test_executor import sample_overrides

ROOT = Path(__file__).resolve().parent.parent
KILLED = '''
import json, os, signal, sys
from pathlib import Path
import psutil
from stages.core import executor, params

class Work:
    def __call__(self, rank, world_size, out):
        kids = [{"pid": c.pid, "start": c.create_time()} for c in psutil.Process().children()]
        Path(sys.argv[2]).write_text(json.dumps(kids))
        os.kill(os.getpid(), signal.SIGKILL)

root = Path(sys.argv[1])
p = params.Executor()
executor.run_tasks(root, p, "ingest", Work(), root / "data" / "raw")
'''


def alive(kid: dict) -> bool:
    try:
        proc = psutil.Process(kid["pid"])
        return proc.create_time() == kid["start"] and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_datatroves_manager_process_dies_with_a_killed_stage(tmp_path):
    script = tmp_path / "killed_stage.py"
    script.write_text(KILLED)
    kids_file = tmp_path / "kids.json"
    res = subprocess.run([sys.executable, str(script), str(tmp_path), str(kids_file)], cwd=ROOT, capture_output=True,
                         text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == -signal.SIGKILL, res.stderr[-3000:]
    kids = json.loads(kids_file.read_text())
    assert kids, "the stage had no child process (datatrove's Manager): nothing was tested"
    deadline = time.monotonic() + 10
    while any(alive(k) for k in kids) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [k["pid"] for k in kids if alive(k)]
    for pid in left:  # do not leak them from the test either
        os.kill(pid, signal.SIGKILL)
    assert not left, f"children of the killed stage still running: {left}"


HOLD = '''
import sys, time
from pathlib import Path
from stages.core.proc_guard import exclusive
with exclusive(Path(sys.argv[1]), "ingest"):
    print("held", flush=True)
    time.sleep(120)
'''


def test_a_second_run_of_the_same_stage_fails_at_once_in_one_line(make_ctx, tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        ctx = make_ctx("ingest", sample_overrides(), root=tmp_path)
        with pytest.raises(StageLocked) as exc:
            ingest.run(ctx)
        msg = str(exc.value)
        assert f"pid {holder.pid}" in msg and "ingest" in msg and "\n" not in msg
        assert not (tmp_path / "data" / "raw").exists() and not (tmp_path / "data" / ".raw.tasks").exists()
    finally:
        holder.kill()
        holder.wait()
    ingest.run(ctx)  # the kernel released the lock with the process: no stale lock
    assert (tmp_path / "data" / "raw" / "manifest.json").is_file()
