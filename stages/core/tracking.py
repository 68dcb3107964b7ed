"""MLflow: one run per stage, children of one pipeline run (stages/core/run_tree.py).

The invocation id (`pipeline_run` tag) is LUCIE_PIPELINE_RUN under `lucie run` (the Prefect flow
run) and, under plain `dvc repro`, derived from the dvc process that launched the stage (its pid and
start time). The first stage run of an invocation creates the parent run; LUCIE_PARENT_RUN_ID, when
set, names a parent the caller manages itself.
"""
from __future__ import annotations

import contextlib
import re
import os
import socket
import subprocess
import warnings
from pathlib import Path
from typing import Iterator

from . import run_tree

PARENT_ENV = "LUCIE_PARENT_RUN_ID"
PIPELINE_ENV = "LUCIE_PIPELINE_RUN"


def resolve_uri(uri: str, root: Path) -> str:
    """MLFLOW_TRACKING_URI wins; a relative sqlite path is anchored at the repo root (never the cwd)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or uri
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        db = root / uri[len(prefix):]
        db.parent.mkdir(parents=True, exist_ok=True)
        uri = prefix + str(db)
    return uri


def git_commit(root: Path) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def pipeline_run_tag() -> str:
    if os.environ.get(PIPELINE_ENV):
        return os.environ[PIPELINE_ENV]
    try:  # the `dvc repro` process that runs all stages of one reproduction
        import psutil

        p = psutil.Process().parent()
        while p is not None:
            argv = p.cmdline()[:3]
            if any(Path(a).name == "dvc" for a in argv[:2]) or argv[1:3] == ["-m", "dvc"]:
                return f"dvc-{socket.gethostname()}-{p.pid}-{int(p.create_time())}"
            p = p.parent()
    except Exception:  # psutil may be unable to read a parent's cmdline; the tag is then per process
        pass
    return f"manual-{socket.gethostname()}-{os.getpid()}"


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


class Tracker:
    """Thin wrapper so stages never import mlflow themselves (and tracking can be off)."""

    def __init__(self, client=None, run_id: str | None = None):
        self.client, self.run_id = client, run_id

    @property
    def active(self) -> bool:
        return self.client is not None

    def params(self, params: dict) -> None:
        if self.active:
            from mlflow.entities import Param

            items = [Param(k, str(v)[:6000]) for k, v in sorted(flatten(params).items())]
            for i in range(0, len(items), 100):
                self.client.log_batch(self.run_id, params=items[i : i + 100])

    def _log_metrics(self, items: list[tuple[str, float, int]]) -> None:
        import time

        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        # MLflow allows [A-Za-z0-9_-. /] in names; lm-eval's 'exact_match,flexible-extract' has a comma.
        batch = [Metric(re.sub(r"[^\w\-. /]", "_", k), float(v), ts, int(step)) for k, v, step in items]
        for i in range(0, len(batch), 500):  # MLflow's log_batch limit is 1000 metrics
            self.client.log_batch(self.run_id, metrics=batch[i : i + 500])

    def metrics(self, metrics: dict, step: int | None = None) -> None:
        """Every numeric leaf of a (nested) dict, under its dotted name."""
        if self.active:
            self._log_metrics([(k, v, step or 0) for k, v in sorted(flatten(metrics).items())
                               if isinstance(v, (int, float)) and not isinstance(v, bool)])

    def metric_series(self, name: str, values: list[tuple[int, float]]) -> None:
        """One metric over steps (loss curve, LR, ...)."""
        if self.active and values:
            self._log_metrics([(name, v, s) for s, v in values])

    def artifact(self, path: str | Path, subdir: str | None = None) -> None:
        if self.active and Path(path).exists():
            if Path(path).is_dir():
                self.client.log_artifacts(self.run_id, str(path), subdir)
            else:
                self.client.log_artifact(self.run_id, str(path), subdir)

    def dataset(self, path: Path, digest: str, context: str) -> None:
        """Record a DVC-tracked directory as an input/output dataset with its manifest digest."""
        if not self.active:
            return
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.entities import DatasetInput, InputTag

        with warnings.catch_warnings():  # "can be interpreted in multiple ways": both are the local source
            warnings.simplefilter("ignore")
            source = resolve_dataset_source(str(path))
        ds = MetaDataset(source=source, name=path.name, digest=digest[:36])
        tag = InputTag("mlflow.data.context", context)
        self.client.log_inputs(self.run_id, datasets=[DatasetInput(ds._to_mlflow_entity(), tags=[tag])])


@contextlib.contextmanager
def stage_run(stage: str, root: Path, uri: str, experiment: str, enabled: bool, tags: dict) -> Iterator[Tracker]:
    if not enabled:
        yield Tracker()
        return
    warnings.filterwarnings("ignore", module="mlflow")
    import mlflow
    from mlflow import MlflowClient

    from stages.core.tracking_guard import check_reachable, own_tags, reap_stale

    uri = resolve_uri(uri, root)
    check_reachable(uri)  # one line in seconds, not MLflow's retries for minutes
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    exp_id = run_tree.experiment_id(client, experiment)
    reap_stale(client, exp_id)  # runs of killed stages: RUNNING -> KILLED
    invocation = pipeline_run_tag()
    all_tags = {
        "dvc_stage": stage,
        "git_commit": git_commit(root),
        "pipeline_run": invocation,
        run_tree.ROLE_TAG: "stage",
        "mlflow.runName": stage,
        **own_tags(),
        **tags,
    }
    parent = os.environ.get(PARENT_ENV) or run_tree.parent_run(client, exp_id, invocation, tags)
    all_tags["mlflow.parentRunId"] = parent
    run = client.create_run(exp_id, run_name=stage, tags={k: str(v) for k, v in all_tags.items()})
    tracker = Tracker(client, run.info.run_id)
    try:
        yield tracker
    except BaseException:
        client.set_terminated(run.info.run_id, "FAILED")
        if not os.environ.get(PARENT_ENV):
            run_tree.close_parent(client, parent, failed=True)
        raise
    client.set_terminated(run.info.run_id, "FINISHED")
    if not os.environ.get(PARENT_ENV):
        run_tree.close_parent(client, parent, failed=False)
