"""The MLflow run tree on a real `mlflow server`: one parent per pipeline invocation (dvc repro or lucie run),
its stage runs as children, no run at all for a no-op, and the experiment opening on training runs."""
from __future__ import annotations

import pytest

from repo_copy import BIN, env, make_copy, run
from test_mlflow_server import mlflow_server  # noqa: F401  (the fixture)

pytestmark = pytest.mark.slow


def test_run_tree(tmp_path, mlflow_server):  # noqa: F811
    from mlflow import MlflowClient

    root = make_copy(tmp_path / "repo")
    e = env(tmp_path, MLFLOW_TRACKING_URI=mlflow_server)
    client = MlflowClient(mlflow_server)

    run([str(BIN / "dvc"), "repro", "filter"], root, e)   # ingest, filter: one invocation
    exp = client.get_experiment_by_name("lucie-repro")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = client.search_runs([exp.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("lucie.role") == "pipeline"]
    assert parent.data.tags["orchestrator"] == "dvc" and parent.info.status == "FINISHED"
    assert parent.info.run_name == "pipeline (dvc repro)"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.tags["dvc_stage"] for r in children) == ["filter", "ingest"]
    assert len(runs) == 3 and {r.data.tags["pipeline_run"] for r in runs} == {parent.data.tags["pipeline_run"]}

    run([str(BIN / "dvc"), "repro", "filter"], root, e)   # no-op: no run
    run([str(BIN / "lucie"), "run", "filter"], root, e)   # no-op through Prefect: no run either
    assert len(client.search_runs([exp.experiment_id])) == 3

    params = (root / "params.yaml").read_text()
    (root / "params.yaml").write_text(params.replace("min_score: 0.65", "min_score: 0.6"))
    run([str(BIN / "lucie"), "run", "filter"], root, e)   # filter only is stale
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("lucie.role") == "pipeline"]
    (new,) = [p for p in parents if p.data.tags["orchestrator"] == "prefect"]
    assert new.info.status == "FINISHED" and new.data.tags["prefect.flow_run_id"]
    assert new.data.tags["pipeline_run"] == "prefect-" + new.data.tags["prefect.flow_run_id"]
    (child,) = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == new.info.run_id]
    assert child.data.tags["dvc_stage"] == "filter" and child.data.params["filter.language.min_score"] == "0.6"
    assert len(runs) == 5
