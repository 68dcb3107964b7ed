"""The Prefect flow: one task per DVC stage, in topological order, with retries.

DVC owns *what* runs (each task is `dvc repro --single-item <stage>` through DVC's Python
API, which saves an interpreter start per stage: DVC decides whether
the stage is stale and caches its outputs); Prefect owns *how* (retries, logs, UI). The
order comes from DVC's own graph. `--single-item` does not look upstream, so the tasks
must run in topological order, one after the other; that is also what 2 cores want.

Tracking: the flow opens one MLflow pipeline run and passes its id to the stages
(LUCIE_PARENT_RUN_ID), so every stage run is a child of it.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE


def stage_order(root: Path, targets: list[str] | None = None) -> list[str]:
    """Stage names of dvc.yaml, dependencies first; with targets, those stages and everything upstream
    of them (what `dvc repro TARGET` would consider). One implementation with `lucie verify`."""
    from stages.core.dag import plan

    return plan(root, targets)[0]


class _DvcLog(logging.Handler):
    """Collects DVC's own log lines for one reproduce call (they say ran / skipped / restored)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@task(retries=2, retry_delay_seconds=2, task_run_name="dvc-{stage}", cache_policy=NO_CACHE, persist_result=False)
def run_stage(stage: str, root: str) -> dict:
    """`dvc repro --single-item <stage>`, in process: DVC's Python API, not a new interpreter per stage."""
    from dvc.repo import Repo

    log = _DvcLog()
    dvc_logger = logging.getLogger("dvc")
    dvc_logger.addHandler(log)
    propagate, dvc_logger.propagate = dvc_logger.propagate, False  # DVC prints its own lines already
    try:
        with Repo(root) as repo:
            ran = repo.reproduce(stage, single_item=True)
    finally:
        dvc_logger.removeHandler(log)
        dvc_logger.propagate = propagate
    text = "\n".join(log.lines)
    # DVC says which of three things happened: nothing changed, outputs restored from its run-cache, or a run.
    if "is cached" in text:
        status = "restored from run-cache"
    elif ran:
        status = "ran"
    else:
        status = "up to date"
    return {"stage": stage, "status": status}


def _parent_run(root: Path):
    from stages.core.params import load
    from stages.core.runtime import params_path
    from stages.core.tracking import resolve_uri

    p = load(params_path(root))
    if not p.tracking.enabled:
        return None, None
    from mlflow import MlflowClient

    client = MlflowClient(resolve_uri(p.tracking.uri, root))
    exp = client.get_experiment_by_name(p.tracking.experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(p.tracking.experiment)
    run = client.create_run(exp_id, run_name="pipeline", tags={"recipe": p.recipe, "orchestrator": "prefect"})
    return client, run.info.run_id


@flow(name="lucie-pipeline", log_prints=False)
def pipeline_flow(root: str, order: list[str]) -> list[dict]:
    return [run_stage(name, root) for name in order]


def run_pipeline(root: str = ".", stages: list[str] | None = None, wait_ready=lambda: None) -> list[dict]:
    """The flow plus its MLflow parent run; the stage runs become its children.

    `wait_ready` blocks until the Prefect API answers (see flows/server.py)."""
    rootp = Path(root).resolve()
    order = stage_order(rootp, stages)
    client, parent = _parent_run(rootp)
    # The stage commands inherit this process's environment: that is how they find their parent run.
    saved = {k: os.environ.get(k) for k in ("LUCIE_PARENT_RUN_ID", "LUCIE_PIPELINE_RUN")}
    if parent:
        os.environ["LUCIE_PARENT_RUN_ID"] = parent
        os.environ["LUCIE_PIPELINE_RUN"] = f"prefect-{parent}"
    status = "FAILED"
    try:
        wait_ready()
        results = pipeline_flow(str(rootp), order)
        status = "FINISHED"
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if client:
            client.set_terminated(parent, status)
    return results
