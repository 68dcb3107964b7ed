"""`lucie run` against a Prefect server started the README's way: what the UI shows, read from its API.

Each task's final state says what DVC did (Ran / Up to date / Cached) with its duration; the stage's
output is in the flow run's logs; a data error fails once (no retries), with the stage's exit code.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request

import pytest

from flows.server import free_port, stop_group, wait_healthy
from repo_copy import BIN, env, make_copy

pytestmark = pytest.mark.slow


@pytest.fixture
def prefect_server(tmp_path):
    port = free_port()
    e = env(tmp_path)  # PREFECT_HOME under tmp_path: the server's sqlite database is the test's own
    proc = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port),
                             "--analytics-off", "--no-ui"], env=e, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    try:
        wait_healthy(url, proc, timeout=120)
        yield url
    finally:
        stop_group(proc, grace=15)


def _post(url: str, path: str, body: dict) -> list[dict]:
    req = urllib.request.Request(f"{url}{path}", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def _flow_runs(url: str) -> list[dict]:
    return sorted(_post(url, "/flow_runs/filter", {}), key=lambda r: r["created"])


def _tasks(url: str, flow_run_id: str) -> list[dict]:
    return _post(url, "/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}})


def test_task_states_logs_and_no_retry(tmp_path, prefect_server):
    root = make_copy(tmp_path / "repo")
    e = env(tmp_path, PREFECT_API_URL=prefect_server)

    def lucie_run(*args):
        return subprocess.run([str(BIN / "lucie"), "run", *args], cwd=root, env=e, capture_output=True, text=True,
                              timeout=900)

    first = lucie_run("ingest")
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    assert lucie_run("ingest").returncode == 0          # nothing changed
    shutil.rmtree(root / "data" / "raw")
    assert lucie_run("ingest").returncode == 0          # outputs gone: DVC restores them from its run-cache

    runs = _flow_runs(prefect_server)
    assert len(runs) == 3 and all(r["state"]["type"] == "COMPLETED" for r in runs)
    states = []
    for r in runs:
        (t,) = _tasks(prefect_server, r["id"])
        assert t["name"] == "dvc-ingest" and t["state"]["type"] == "COMPLETED"
        states.append((t["state"]["name"], t["state"]["message"]))
    assert [s[0] for s in states] == ["Ran", "Up to date", "Cached"]
    assert states[0][1].startswith("ran in ") and states[0][1].endswith(" s")
    assert states[2][1].startswith("restored from run-cache in ")

    logs = [row["message"] for row in _post(prefect_server, "/logs/filter",
                                            {"logs": {"flow_run_id": {"any_": [runs[0]["id"]]}}, "limit": 200})]
    assert any(m.startswith("[ingest] read ") for m in logs), logs[-20:]   # the stage's own summary line
    assert any(m.startswith("ingest: ran in ") for m in logs)

    params = (root / "params.yaml").read_text()
    (root / "params.yaml").write_text(params.replace('"data/sample/text/en*.jsonl"', '"nowhere/en*.jsonl"'))
    bad = lucie_run("ingest")
    assert bad.returncode == 3  # the stage's own exit code (StageError)
    err = bad.stderr.strip().splitlines()
    assert err == ["lucie run: ingest: a data or input error: source 'sample-en': no file matches "
                   "'nowhere/en*.jsonl' (exit code 3; not retried)"], bad.stderr[-3000:]
    failed = _flow_runs(prefect_server)[-1]
    assert failed["state"]["type"] == "FAILED" and "no file matches" in failed["state"]["message"]
    (t,) = _tasks(prefect_server, failed["id"])
    assert t["state"]["type"] == "FAILED" and t["run_count"] == 1  # not retried

    (root / "params.yaml").write_text(params.replace("max_docs_per_source:", "max_doc_per_source:"))
    typo = lucie_run("ingest")
    assert typo.returncode == 2 and len(typo.stderr.strip().splitlines()) == 1
    assert "ingest.max_doc_per_source: unknown key" in typo.stderr
