"""The Prefect flow: one task per DVC stage, in topological order, with retries.

DVC owns *what* runs (each task is `dvc repro --single-item <stage>`: DVC decides whether
the stage is stale and caches its outputs); Prefect owns *how* (retries, logs, UI). The
order comes from DVC's own graph. `--single-item` does not look upstream, so the tasks
must run in topological order, one after the other; that is also what 2 cores want.

Tracking: the flow opens one MLflow pipeline run and passes its id to the stages
(LUCIE_PARENT_RUN_ID), so every stage run is a child of it.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prefect import flow, get_run_logger, task


def stage_order(root: Path) -> list[str]:
    """Stage names of dvc.yaml, dependencies first."""
    import networkx as nx
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        graph = repo.index.graph  # edges go stage -> dependency
        return [s.name for s in reversed(list(nx.topological_sort(graph))) if getattr(s, "name", None)]


@task(retries=2, retry_delay_seconds=2, task_run_name="dvc-{stage}")
def run_stage(stage: str, root: str, env: dict) -> dict:
    logger = get_run_logger()
    proc = subprocess.run([sys.executable, "-m", "dvc", "repro", "--single-item", stage], cwd=root, env=env,
                          capture_output=True, text=True)
    for line in proc.stderr.splitlines():
        if line.startswith("["):
            logger.info(line)
    if proc.returncode:
        raise RuntimeError(f"stage {stage} failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    # DVC says which of three things happened: nothing changed, outputs restored from its run-cache, or a run.
    if "is cached" in proc.stdout:
        status = "restored from run-cache"
    elif "didn't change, skipping" in proc.stdout:
        status = "up to date"
    else:
        status = "ran"
    return {"stage": stage, "status": status}


def _parent_run(root: Path):
    from stages.params import load
    from stages.runtime import params_path
    from stages.tracking import resolve_uri

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
def pipeline(root: str = ".", stages: list[str] | None = None) -> list[dict]:
    rootp = Path(root).resolve()
    order = stage_order(rootp)
    if stages:
        unknown = sorted(set(stages) - set(order))
        if unknown:
            raise ValueError(f"unknown stage(s) {unknown}; dvc.yaml has {order}")
        order = [s for s in order if s in stages]
    client, parent = _parent_run(rootp)
    env = {**os.environ}
    if parent:
        env["LUCIE_PARENT_RUN_ID"] = parent
        env["LUCIE_PIPELINE_RUN"] = f"prefect-{parent}"
    results, status = [], "FAILED"
    try:
        for name in order:
            results.append(run_stage(name, str(rootp), env))
        status = "FINISHED"
    finally:
        if client:
            client.set_terminated(parent, status)
    return results
