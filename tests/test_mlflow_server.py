"""A stage logs to a real `mlflow server` on 127.0.0.1 (the scale-out tracking path)."""
from __future__ import annotations

import os
import subprocess

import pytest

from flows.server import free_port, stop_group, wait_healthy
from repo_copy import BIN, env, make_copy, run

pytestmark = pytest.mark.slow


@pytest.fixture
def mlflow_server(tmp_path):
    port = free_port()
    e = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{tmp_path}/srv.db",
         "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        env=e, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, timeout=60, what="mlflow server")
        yield url
    finally:
        stop_group(proc, grace=15)  # the server forks workers: the whole group


def test_stage_run_lands_on_the_server(tmp_path, mlflow_server):
    from mlflow import MlflowClient

    root = make_copy(tmp_path / "repo")
    run(["python", "-m", "stages.ingest"], root, env(tmp_path, MLFLOW_TRACKING_URI=mlflow_server))
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("lucie-repro")
    (r,) = client.search_runs([exp.experiment_id], "tags.`lucie.role` = 'stage'")
    assert r.data.tags["dvc_stage"] == "ingest" and r.info.status == "FINISHED"
    assert r.data.params["ingest.max_doc_bytes"] == "1000000"
    assert r.data.metrics["read"] == r.data.metrics["kept"] + r.data.metrics["rejected_total"]
    assert [a.path for a in client.list_artifacts(r.info.run_id)] == ["ingest.json"]
    assert r.inputs.dataset_inputs[0].dataset.name == "raw"
