"""The flow retries only what a rerun can cure: a stage killed by a signal is retried; a stage that exits
with a user error (3: a StageError) fails at once, with its own line, and the flow stops there."""
from __future__ import annotations

import json
import os
import subprocess
import urllib.request

import yaml

from repo_copy import env


def _task_runs(url: str, flow_run_id) -> dict[str, dict]:
    req = urllib.request.Request(f"{url}/task_runs/filter", method="POST", headers={"Content-Type": "application/json"},
                                 data=json.dumps({"flow_runs": {"id": {"any_": [str(flow_run_id)]}}}).encode())
    with urllib.request.urlopen(req, timeout=30) as r:
        return {t["name"]: t for t in json.loads(r.read())}


def test_killed_is_retried_user_error_is_not(tmp_path, monkeypatch):
    e = env(tmp_path)
    for k in ("PREFECT_HOME", "PREFECT_SERVER_ANALYTICS_ENABLED", "PREFECT_LOGGING_LEVEL", "PATH"):
        monkeypatch.setenv(k, e[k])
    repo = tmp_path / "toy"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(["dvc", "init", "-q"], cwd=repo, check=True, env=e)
    stages = {  # killed once (as by the OOM killer), then fine; then a stage that reports a data error
        "flaky": {"cmd": "if [ ! -e tried ]; then touch tried; kill -9 $$; fi; echo ok > a.txt", "outs": ["a.txt"]},
        "bad": {"cmd": "echo 'bad: source x: no file matches y' >&2; exit 3", "deps": ["a.txt"], "outs": ["b.txt"]},
        "never": {"cmd": "echo never > c.txt", "deps": ["b.txt"], "outs": ["c.txt"]},
    }
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))

    from flows.pipeline import PipelineFailed, pipeline_flow
    from flows.server import local_prefect_api

    from prefect.settings import PREFECT_API_URL, temporary_settings

    with local_prefect_api() as wait_ready:
        wait_ready()
        url = os.environ["PREFECT_API_URL"]
        with temporary_settings(updates={PREFECT_API_URL: url}):  # prefect may have read its settings already
            state = pipeline_flow(str(repo), ["flaky", "bad", "never"], return_state=True)
        tasks = _task_runs(url, state.state_details.flow_run_id)
        from prefect.logging.handlers import APILogHandler

        APILogHandler().flush()  # the stage output still queued, before the API stops
    assert state.is_failed()
    failed = state.result(raise_on_failure=False)
    assert isinstance(failed, PipelineFailed) and [r["stage"] for r in failed.results] == ["flaky"]
    assert failed.failure.code == 3 and not failed.failure.transient
    assert str(failed.failure) == "bad: a data or input error: source x: no file matches y"
    assert tasks["dvc-flaky"]["run_count"] == 2 and tasks["dvc-flaky"]["state"]["name"] == "Ran"
    assert tasks["dvc-bad"]["run_count"] == 1 and tasks["dvc-bad"]["state"]["type"] == "FAILED"
    assert "dvc-never" not in tasks and (repo / "a.txt").read_text() == "ok\n"
