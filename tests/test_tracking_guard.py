"""MLflow around a stage (issue 16.9): the run of a SIGKILLed stage is marked KILLED at the next start, with its
invocation's parent run once no child of it is alive; live and foreign runs are left alone; an unreachable tracking server is one line within seconds. Real MLflow (sqlite)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stages.core import tracking
from stages.core.run_tree import ROLE_TAG
from stages.core.tracking_guard import TrackingUnreachable, own_tags

ROOT = Path(__file__).resolve().parent.parent
KILLED_STAGE = """
import os, signal, sys
from pathlib import Path
from stages.core import tracking
with tracking.stage_run("ingest", Path(sys.argv[1]), sys.argv[2], "exp", True, {}) as t:
    os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.fixture(autouse=True)
def no_uri_override(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # tests set one; here the uri argument is under test


def test_the_run_of_a_killed_stage_is_marked_killed_at_the_next_start(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    res = subprocess.run([sys.executable, "-c", KILLED_STAGE, str(tmp_path), uri], cwd=ROOT, capture_output=True,
                         text=True, timeout=300, env={k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"})
    assert res.returncode == -signal.SIGKILL, res.stderr[-2000:]
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("exp").experiment_id
    # the stage's own run (the invocation's parent run, stages/core/run_tree.py, carries no process tags)
    (dead,) = [r for r in client.search_runs([exp]) if r.data.tags.get("lucie_host")]
    assert dead.info.status == "RUNNING"
    parent = dead.data.tags["mlflow.parentRunId"]
    assert client.get_run(parent).info.status == "RUNNING"
    # a run of another host and a run without our tags (older versions, the Prefect parent) stay as they are
    other = client.create_run(exp, tags={"lucie_host": "elsewhere", "lucie_pid": "1", "lucie_pid_start": "0"})
    legacy = client.create_run(exp)
    # a parent with one dead child (pid 1 did not start at time 0) and one live child (this process) stays RUNNING
    busy = client.create_run(exp, tags={ROLE_TAG: "pipeline"}).info.run_id
    gone = client.create_run(exp, tags={"lucie_host": socket.gethostname(), "lucie_pid": "1", "lucie_pid_start": "0",
                                        "mlflow.parentRunId": busy})
    client.create_run(exp, tags={**own_tags(), "mlflow.parentRunId": busy})
    with tracking.stage_run("filter", tmp_path, uri, "exp", True, {}) as t:
        assert client.get_run(dead.info.run_id).info.status == "KILLED"
        assert client.get_run(parent).info.status == "KILLED"  # the killed invocation's parent run, too
        assert client.get_run(gone.info.run_id).info.status == "KILLED"
        assert client.get_run(busy).info.status == "RUNNING"
        assert client.get_run(t.run_id).info.status == "RUNNING"  # our own, live, run is not touched
        assert client.get_run(t.run_id).data.tags["mlflow.parentRunId"] != parent  # another invocation
    assert client.get_run(t.run_id).info.status == "FINISHED"
    assert client.get_run(other.info.run_id).info.status == "RUNNING"
    assert client.get_run(legacy.info.run_id).info.status == "RUNNING"


def test_an_unreachable_tracking_server_fails_fast_in_one_line(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = time.monotonic()
    with pytest.raises(TrackingUnreachable) as exc:
        with tracking.stage_run("ingest", tmp_path, f"http://127.0.0.1:{port}", "exp", True, {}):
            pass
    assert time.monotonic() - t < 15
    msg = str(exc.value)
    assert f"127.0.0.1:{port}" in msg and "tracking.enabled: false" in msg and "\n" not in msg


def test_a_stage_with_an_unreachable_server_prints_one_line_and_exits_3(tmp_path):
    import yaml

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["tracking"]["uri"] = f"http://127.0.0.1:{port}"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    res = subprocess.run([sys.executable, "-m", "stages.ingest"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120, env={**env, "PYTHONPATH": str(ROOT), "COLUMNS": "400"})
    assert res.returncode == 3, res.stderr[-2000:]  # a StageError's exit code
    out = (res.stdout + res.stderr).strip()
    assert "Traceback" not in out and f"127.0.0.1:{port}" in out
    assert len([l for l in out.splitlines() if "tracking.uri" in l]) == 1
