"""One training script, three launches by `python -m stages.launch --run`: 1 process, 2 processes (torchrun,
gloo DDP) and 2 simulated nodes (two torchrun invocations on 127.0.0.1). Same params, so the same
global batches (with a batch-size ramp-up and gradient accumulation): the loss curves must agree
within float tolerance, and the data columns (batch size, samples, tokens) exactly.
"""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys

import pytest

from flows.server import free_port
from pretrain_data import child_env, make_repo, write_params
from stages import launch
from stages.core.params import load

pytestmark = pytest.mark.slow
# 1 process: 2 then 4 micro-batches of 2 per step; 2 processes: 1 then 2 each. Steps 1-4 have 4 samples, 5-8 have 8.
SETUP = {"pretrain.micro_batch_size": 2, "pretrain.global_batch_size": 8,
         "pretrain.batch_rampup": {"start": 4, "increment": 4, "samples": 16}}
TOLERANCE = 1e-5


def launcher(*args: str) -> list[str]:
    return [sys.executable, "-m", "stages.launch", "--run", *args]


def rows(root) -> list[dict]:
    with open(root / "plots/pretrain_loss.csv", newline="") as f:
        return list(csv.DictReader(f))


def weights(root):
    from safetensors.torch import load_file

    return load_file(root / "artifacts/phases/main/model.safetensors")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    base = make_repo(tmp / "one", SETUP)
    roots = {"one": base}
    for name, over in (("two", {"pretrain.launch.nproc_per_node": 2, "tracking.enabled": True}),
                       ("nodes", {"pretrain.launch.nnodes": 2,
                                  "pretrain.launch.rdzv_endpoint": f"127.0.0.1:{free_port()}"})):
        roots[name] = tmp / name
        shutil.copytree(base, roots[name])
        write_params(roots[name], {**SETUP, **over})
    out = {}
    for name in ("one", "two"):
        env = child_env(roots[name], MLFLOW_TRACKING_URI=f"sqlite:///{roots[name]}/mlflow.db")
        out[name] = subprocess.run(launcher(), cwd=roots[name], env=env, capture_output=True, text=True, timeout=600)
    procs = [subprocess.Popen(launcher("--node-rank", str(r)), cwd=roots["nodes"], env=child_env(roots["nodes"]),
                              text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for r in (0, 1)]
    out["nodes"] = [(pr.wait(timeout=600), pr.stderr.read()) for pr in procs]
    return roots, out


def test_the_launcher_commands_ran(trained):
    roots, out = trained
    for name in ("one", "two"):
        assert out[name].returncode == 0, out[name].stderr[-4000:]
    for code, err in out["nodes"]:
        assert code == 0, err[-4000:]
    assert launch.command(load(roots["one"] / "params.yaml"))[0] == "python"
    assert launch.command(load(roots["two"] / "params.yaml"))[:2] == ["torchrun", "--standalone"]
    sizes = {n: json.loads((roots[n] / "metrics/pretrain.json").read_text())["world_size"] for n in roots}
    assert sizes == {"one": 1, "two": 2, "nodes": 2}


def test_same_global_batches_give_the_same_loss_curve(trained):
    roots, _ = trained
    one, two, nodes = (rows(roots[n]) for n in ("one", "two", "nodes"))
    assert len(one) == len(two) == len(nodes) == 8
    for col in ("step", "lr", "tokens", "batch_size", "samples"):
        assert [r[col] for r in one] == [r[col] for r in two] == [r[col] for r in nodes], col
    assert [int(r["batch_size"]) for r in one] == [4] * 4 + [8] * 4
    diff = max(abs(float(a["loss"]) - float(b["loss"])) for a, b in zip(one, two))
    diff_nodes = max(abs(float(a["loss"]) - float(b["loss"])) for a, b in zip(two, nodes))
    print(f"max |loss(1 process) - loss(2 processes)| = {diff:.2e}; 2 processes vs 2 nodes = {diff_nodes:.2e}")
    assert diff <= TOLERANCE and diff_nodes <= TOLERANCE
    assert float(one[-1]["loss"]) < float(one[0]["loss"])
    w1, w2 = weights(roots["one"]), weights(roots["two"])
    worst = max((w1[k] - w2[k]).abs().max().item() for k in w1)
    print(f"max |weight(1 process) - weight(2 processes)| = {worst:.2e}")
    assert worst < 1e-4


def test_only_rank_0_writes_the_mlflow_run(trained):
    from mlflow import MlflowClient

    roots, _ = trained
    client = MlflowClient(f"sqlite:///{roots['two']}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("lucie-repro").experiment_id], "tags.`lucie.role` = 'stage'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert len(client.get_metric_history(runs[0].info.run_id, "train_loss")) == 8
