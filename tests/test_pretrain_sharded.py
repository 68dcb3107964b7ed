"""Sharded training on CPU with torch's own APIs (stages/lib/training/parallel.py), launched as users launch it
(`python -m stages.launch --run`, torchrun over gloo): FSDP2 (2 processes), TP (2), HSDP (2 x 2 = 4 processes).

- Same global batches as the 1-process run (accelerate, unsharded): losses and gradient norms within 1e-4 relative
  over 8 steps, and the HF export gathered from the sharded state equals the unsharded export (float tolerance).
- DCP checkpoints: killed after step 4 and resumed at the same world size, the losses and exported weights are
  bit-identical to the uninterrupted sharded run; resumed at another world size (2 -> 1 and 1 -> 2), the losses
  continue within 1e-4.
- Activation checkpointing and the eager attention leave the losses unchanged.

About ten training launches of 10-30 s each: marked slow, run in CI.
"""
from __future__ import annotations

import csv
import shutil
import signal
import subprocess
import sys

import pytest

from pretrain_data import child_env, make_repo, write_params

pytestmark = pytest.mark.slow
REL = 1e-4
KILL_AT = 4
MICRO = {"pretrain.micro_batch_size": 2}  # global batch 8: 4 micro-batches on 1 process, 1 on each of HSDP's 4


def mesh(replicate: int = 1, shard: int = 1, tp: int = 1, sharded: bool = True) -> dict:
    return {"pretrain.launch.nproc_per_node": replicate * shard * tp,
            "pretrain.launch.parallelism": {"dp_replicate_size": replicate, "dp_shard_size": shard, "tp_size": tp,
                                            "sharded": sharded}}


LAYOUTS = {"fsdp2": mesh(shard=2), "tp": mesh(tp=2), "hsdp": mesh(replicate=2, shard=2)}


def launch(root, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stages.launch", "--run"], cwd=root, env=child_env(root, **env),
                          capture_output=True, text=True, timeout=900)


def losses(root, column: str = "loss") -> list[float]:
    with open(root / "plots/pretrain_loss.csv", newline="") as f:
        return [float(r[column]) for r in csv.DictReader(f)]


def weights(root):
    from safetensors.torch import load_file

    return load_file(root / "artifacts/phases/main/model.safetensors")


def close(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) == 8 and all(abs(x - y) <= REL * abs(y) for x, y in zip(a, b))


def variant(base, tmp, name: str, overrides: dict):
    root = tmp / name
    overrides = {**MICRO, **overrides}
    shutil.copytree(base, root, ignore=shutil.ignore_patterns("plots", "metrics", ".lucie", "phases", "checkpoints"))
    write_params(root, overrides)
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sharded")
    base = make_repo(tmp / "one", MICRO)
    out = {"one": launch(base)}
    roots = {"one": base}
    for name, over in LAYOUTS.items():
        roots[name] = variant(base, tmp, name, over)
        out[name] = launch(roots[name])
    return tmp, roots, out


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_each_layout_matches_the_unsharded_run(runs, layout):
    import torch

    _, roots, out = runs
    assert out["one"].returncode == 0, out["one"].stderr[-3000:]
    assert out[layout].returncode == 0, out[layout].stderr[-3000:]
    assert close(losses(roots[layout]), losses(roots["one"])), (losses(roots[layout]), losses(roots["one"]))
    # the global gradient norm (clipped at 1.0, so it steers the update): TP sums it over layouts
    norms = losses(roots[layout], "grad_norm"), losses(roots["one"], "grad_norm")
    assert close(*norms) and max(norms[1]) > 1.0, norms
    a, b = weights(roots[layout]), weights(roots["one"])
    assert a.keys() == b.keys()
    for k in a:  # the export gathered from sharded state is the unsharded model
        assert a[k].shape == b[k].shape and torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-5), k


@pytest.fixture(scope="module")
def killed_at_two(runs):
    """An FSDP2 run (2 processes) killed right after its step-4 checkpoint."""
    tmp, roots, _ = runs
    root = variant(roots["one"], tmp, "fsdp2-killed", LAYOUTS["fsdp2"])
    killed = launch(root, LUCIE_PRETRAIN_KILL_AFTER=str(KILL_AT))
    assert killed.returncode != 0 and not (root / "artifacts/phases/main").exists()
    ckpt = root / ".lucie/pretrain/ckpt/step0000004"
    assert (ckpt / ".metadata").exists() and list(ckpt.glob("*.distcp"))  # a DCP checkpoint, one file per rank
    shutil.copytree(root, tmp / "fsdp2-killed-copy")
    return tmp / "fsdp2-killed-copy"


def test_same_world_resume_is_bit_identical(runs, killed_at_two):
    tmp, roots, _ = runs
    root = tmp / "same-world"
    shutil.copytree(killed_at_two, root)
    resumed = launch(root)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from step 4" in resumed.stdout + resumed.stderr
    assert (root / "plots/pretrain_loss.csv").read_bytes() == (roots["fsdp2"] / "plots/pretrain_loss.csv").read_bytes()
    assert (root / "artifacts/phases/main/model.safetensors").read_bytes() == \
        (roots["fsdp2"] / "artifacts/phases/main/model.safetensors").read_bytes()


def test_resume_at_another_world_size(runs, killed_at_two):
    tmp, roots, _ = runs
    two_to_one = tmp / "two-to-one"
    shutil.copytree(killed_at_two, two_to_one)  # killed at 2 processes, after step 4
    write_params(two_to_one, {**MICRO, **mesh(sharded=True)})
    r = launch(two_to_one)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed from step 4" in r.stdout + r.stderr
    assert close(losses(two_to_one), losses(roots["fsdp2"])), (losses(two_to_one), losses(roots["fsdp2"]))

    one_to_two = variant(roots["one"], tmp, "one-to-two", mesh(sharded=True))  # 1 process, sharded path
    killed = launch(one_to_two, LUCIE_PRETRAIN_KILL_AFTER=str(KILL_AT))
    assert killed.returncode == -signal.SIGKILL or killed.returncode != 0
    write_params(one_to_two, {**MICRO, **LAYOUTS["fsdp2"]})
    r = launch(one_to_two)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed from step 4" in r.stdout + r.stderr
    assert close(losses(one_to_two), losses(roots["one"])), (losses(one_to_two), losses(roots["one"]))


def test_activation_checkpointing_and_eager_attention_leave_losses_unchanged(runs):
    tmp, roots, _ = runs
    root = variant(roots["one"], tmp, "recompute", {"pretrain.launch.activation_checkpointing": True,
                                                    "pretrain.launch.attn_implementation": "eager"})
    r = launch(root)
    assert r.returncode == 0, r.stderr[-3000:]
    assert close(losses(root), losses(roots["one"]))
