"""The MLflow run tree: one parent run per pipeline invocation, its stage runs as children.

An invocation is a `dvc repro` process or one `lucie run` flow run: its id is the `pipeline_run` tag
(tracking.pipeline_run_tag). The parent is created by the first stage that actually runs, and found by
that tag by the next ones, so a no-op invocation leaves no run at all, and plain `dvc repro` nests its
stage runs exactly as `lucie run` does. Each stage run marks the parent RUNNING while it works and
FINISHED (or FAILED) when it ends, so the parent's status and end time are right whenever the
invocation stops. The experiment carries MLflow 3's `mlflow.experimentKind` tag so that the UI opens
on its training runs, not on the GenAI traces page.
"""
from __future__ import annotations

ROLE_TAG = "lucie.role"            # "pipeline" on a parent run, "stage" on a stage run
PIPELINE_TAG = "pipeline_run"      # the invocation id, on both (search by it in the UI: tags.pipeline_run = '...')
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"


def experiment_id(client, name: str) -> str:
    """The experiment's id, created if needed, with the UI's 'training runs' kind set."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return client.create_experiment(name, tags={KIND_TAG: KIND})
    if KIND_TAG not in (exp.tags or {}):
        client.set_experiment_tag(exp.experiment_id, KIND_TAG, KIND)
    return exp.experiment_id


def orchestrator(invocation: str) -> str:
    return "prefect" if invocation.startswith("prefect-") else "dvc"


def parent_run(client, exp_id: str, invocation: str, tags: dict) -> str:
    """The parent run of this invocation, created on first use and marked RUNNING."""
    found = client.search_runs([exp_id], filter_string=f"tags.`{PIPELINE_TAG}` = '{invocation}' and "
                                                       f"tags.`{ROLE_TAG}` = 'pipeline'", max_results=1)
    if found:
        run_id = found[0].info.run_id
        if found[0].info.status != "RUNNING":
            client.update_run(run_id, status="RUNNING")
        return run_id
    kind = orchestrator(invocation)
    all_tags = {**tags, PIPELINE_TAG: invocation, ROLE_TAG: "pipeline", "orchestrator": kind}
    if kind == "prefect":
        all_tags["prefect.flow_run_id"] = invocation.removeprefix("prefect-")
    name = f"pipeline ({'lucie run' if kind == 'prefect' else 'dvc repro'})"
    return client.create_run(exp_id, run_name=name, tags={k: str(v) for k, v in all_tags.items()}).info.run_id


def close_parent(client, run_id: str, failed: bool) -> None:
    client.set_terminated(run_id, "FAILED" if failed else "FINISHED")


def close_orphaned_parent(client, exp_id: str, run_id: str) -> None:
    """A parent run left RUNNING by a killed stage (tracking_guard.reap_stale): KILLED once no child is RUNNING."""
    run = client.get_run(run_id)
    if run.info.status != "RUNNING" or run.data.tags.get(ROLE_TAG) != "pipeline":
        return
    live = client.search_runs([exp_id], filter_string=f"attributes.status = 'RUNNING' and "
                                                      f"tags.`mlflow.parentRunId` = '{run_id}'", max_results=1)
    if not live:
        client.set_terminated(run_id, "KILLED")
