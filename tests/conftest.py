"""Shared test setup: an offline, hermetic environment and a StageContext factory."""
from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml


@pytest.fixture(scope="session", autouse=True)
def _offline_env(tmp_path_factory):
    """No network, no telemetry, no writes to the user's HF cache or to the project's MLflow db."""
    base = tmp_path_factory.mktemp("env")
    flags = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "DO_NOT_TRACK", "DVC_NO_ANALYTICS")
    saved = {k: os.environ.get(k) for k in (*flags, "HF_HOME", "MLFLOW_TRACKING_URI")}
    for k in flags:
        os.environ[k] = "1"
    os.environ["HF_HOME"] = str(base / "hf_home")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{base}/mlflow.db"
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def reproduced(tmp_path_factory):
    """One full `dvc repro` of a fresh copy of the project, real DVC in a temp git repo (about two minutes on 2
    cores). tests/test_pipeline_e2e.py checks it and then changes params in it; tests/test_release_repro.py
    builds its own repo from this one's DVC cache and run cache, so the whole DAG runs once per session."""
    from repo_copy import env, make_copy, run

    tmp = tmp_path_factory.mktemp("e2e")
    root = make_copy(tmp / "repo")
    e = env(tmp)
    proc = run(["dvc", "repro"], root, e)
    return {"root": root, "env": e, "first": proc, "tmp": tmp, "cache": root / ".dvc" / "cache"}


@pytest.fixture
def make_ctx(tmp_path):
    """Factory: make_ctx(name="stage", overrides={"filter.language.enabled": False}, root=None).

    Starts from the project's params.yaml, applies the overrides (dotted keys; a value
    replaces what was there), validates with stages.core.params.parse and returns a
    StageContext rooted at `root` (default: this test's tmp_path) with an inactive Tracker.
    """
    from stages.core import params as params_mod, runtime, tracking

    with open(Path(__file__).resolve().parent.parent / "params.yaml", encoding="utf-8") as f:
        base = yaml.safe_load(f)

    def factory(name: str = "stage", overrides: dict | None = None, root: Path | None = None):
        raw = copy.deepcopy(base)
        for key, value in (overrides or {}).items():
            *parents, last = key.split(".")
            node = raw
            for p in parents:
                node = node.setdefault(p, {})
            node[last] = copy.deepcopy(value)
        params = params_mod.parse(raw)
        return runtime.StageContext(name, Path(root or tmp_path), params, tracking.Tracker())

    return factory


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """accelerate's AcceleratorState is a process-wide singleton: a trl Trainer in one test would fix the
    settings every later in-process Accelerator (pretraining) gets. Each test starts from a clean state."""
    yield
    import sys

    if "accelerate.state" in sys.modules:
        sys.modules["accelerate.state"].AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture(autouse=True)
def _no_invocation_env(monkeypatch):
    """The MLflow invocation ids a flow sets in os.environ (flows/pipeline.py: the Prefect flow sets
    LUCIE_PIPELINE_RUN for its stages, and restores it) are unset around every test: a flow run in one test
    must never make another test's stage runs part of its invocation."""
    keys = ("LUCIE_PIPELINE_RUN", "LUCIE_PARENT_RUN_ID")
    for k in keys:
        monkeypatch.delenv(k, raising=False)
    yield
    for k in keys:  # set during the test (monkeypatch restores only what was there before)
        os.environ.pop(k, None)
