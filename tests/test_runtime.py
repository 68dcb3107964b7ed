"""What every stage does around its work: fail before work on bad params, fail in one line on known
errors (and mark the MLflow run FAILED), leave no partial output."""
from __future__ import annotations

import subprocess
import sys

import yaml

from repo_copy import PROJECT, env


def stage_in(tmp_path, params: dict, stage: str = "ingest") -> subprocess.CompletedProcess:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    e = env(tmp_path, PYTHONPATH=str(PROJECT), MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db")
    return subprocess.run([sys.executable, "-m", f"stages.{stage}"], cwd=tmp_path, env=e, capture_output=True,
                          text=True, timeout=120)


def base_params() -> dict:
    return yaml.safe_load((PROJECT / "params.yaml").read_text())


def test_invalid_params_stop_the_stage_before_any_work(tmp_path):
    p = base_params()
    p["ingest"]["max_doc_byte"] = 10
    proc = stage_in(tmp_path, p)
    assert proc.returncode == 2
    assert "ingest.max_doc_byte: unknown key" in proc.stderr
    assert not (tmp_path / "data").exists() and not (tmp_path / "mlflow.db").exists()


def test_a_known_failure_is_one_line_and_a_failed_run(tmp_path):
    from mlflow import MlflowClient

    p = base_params()
    p["data"]["sources"] = [{"name": "missing", "path": "nowhere/*.jsonl", "license": "CC0-1.0", "lang": "en"}]
    proc = stage_in(tmp_path, p)
    assert proc.returncode == 3  # EXIT_STAGE_ERROR: `lucie run` does not retry it
    assert "ingest: source 'missing': no file matches 'nowhere/*.jsonl'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "data/raw").exists()
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("lucie-repro").experiment_id], "tags.`lucie.role` = 'stage'")
    assert run.info.status == "FAILED" and run.data.tags["dvc_stage"] == "ingest"
