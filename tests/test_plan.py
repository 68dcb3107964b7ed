"""`lucie plan` (stages/lib/plan.py): the arithmetic by hand on small cases, the JSON contract, and the claim the
lucie-7b recipe rests on: its main phase (4,096 tokens) and its 32,000-token phases fit on 80 GB H100s with the
recipe's sharding, while the recipe's previous settings (HSDP 128 x 4, micro-batch 4, no checkpointing) did not.
The memory model against measured CPU peaks: benchmarks/plan_memory.py.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from stages.core.params import Model
from stages.lib.plan import H100_BF16_FLOPS, load_recipe, markdown, phase_memory, plan
from stages.lib.training.model import flops_per_token, param_count

PROJECT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def lucie7b():
    return load_recipe(PROJECT, "lucie-7b")


def with_launch(p, micro=None, ext_micro=None, checkpointing=None, **parallelism):
    launch = p.pretrain.launch
    if parallelism:
        launch = launch.model_copy(update={"parallelism": launch.parallelism.model_copy(update=parallelism)})
    if checkpointing is not None:
        launch = launch.model_copy(update={"activation_checkpointing": checkpointing})
    up = {"pretrain": p.pretrain.model_copy(update={"launch": launch, **({"micro_batch_size": micro} if micro else {})})}
    if ext_micro:
        up |= {k: getattr(p, k).model_copy(update={"micro_batch_size": ext_micro}) for k in ("extension", "annealing")}
    return p.model_copy(update=up)


def test_one_device_fp32_is_16_bytes_per_parameter_plus_counted_activations():
    m = Model(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              max_position_embeddings=64, vocab_size=100)
    n = param_count(m)
    got = phase_memory(m, seq_len=32, micro_batch=2, shard=1, tp=1, bf16=False)
    assert (got["params"], got["grads"], got["optimizer"], got["buffers"]) == (4 * n, 4 * n, 8 * n, 0)
    # per token: layer 6d + 5q + H (sdpa) + 4f, final norm 3d; 64 tokens, fp32
    layer, head = 6 * 64 + 5 * 64 + 4 + 4 * 128, 3 * 64
    assert got["activations"] == 64 * 4 * (2 * layer + head)
    assert got["logits"] == 64 * 100 * 12
    assert got["activations_checkpointed"] < got["activations"]
    eager = phase_memory(m, 32, 2, 1, 1, False, "eager")
    assert eager["activations"] - got["activations"] == 64 * 4 * 2 * (4 * 32 - 64 - 4)  # H*T probabilities, no out/lse
    half = phase_memory(m, 32, 2, shard=2, tp=1, bf16=True)
    assert half["params"] == 2 * n and half["buffers"] > 0 and half["activations"] == got["activations"] // 2


def test_lucie_7b_main_and_32k_phases_fit_on_h100(lucie7b):
    r = plan(lucie7b)
    assert r["params"] == 6_706_958_336 and r["world_size"] == 512 and r["device_memory_gb"] == 80
    assert r["activation_checkpointing"] is True and r["sharding"] == {"dp_replicate": 32, "dp_shard": 4, "tp": 4}
    main, ext = r["phases"]["main"], r["phases"]["extension"]
    assert (main["seq_len"], ext["seq_len"]) == (4096, 32000) and set(r["phases"]) == {"main", "extension", "annealing"}
    for ph in r["phases"].values():
        assert ph["fits"] and ph["memory_gb"]["total"] <= 80 and ph["batch_divides"]
    fpt = flops_per_token(lucie7b.model, 4096)
    assert main["flops_per_step"] == fpt * 1024 * 4096
    assert main["tokens_per_s_at_mfu"] == pytest.approx(0.4 * 9.89e14 * 512 / fpt, rel=1e-6)
    assert ext["flops_per_step"] == flops_per_token(lucie7b.model, 32000) * 128 * 32000


def test_the_recipes_previous_settings_did_not_fit(lucie7b):
    old = with_launch(lucie7b, ext_micro=4, checkpointing=False, dp_replicate_size=128, dp_shard_size=4, tp_size=1)
    r = plan(old)
    assert not r["phases"]["main"]["fits"] and r["phases"]["main"]["memory_gb"]["total"] > 80
    assert not r["phases"]["extension"]["fits"] and not r["phases"]["extension"]["batch_divides"]
    assert r["phases"]["main"]["fits_with_checkpointing"]  # checkpointing alone rescues the main phase
    md = markdown(r)
    assert "**no**" in md and "not a multiple of micro_batch_size x 512 data-parallel ranks" in md


def test_cli_json_and_markdown(tmp_path):
    cmd = [sys.executable, "-m", "lucie.cli", "plan", "--recipe", "lucie-7b", "--root", str(PROJECT)]
    out = subprocess.run([*cmd, "--format", "json", "--mfu", "0.5"], capture_output=True, text=True, check=True).stdout
    r = json.loads(out)
    for name in ("main", "extension", "annealing"):
        ph = r["phases"][name]
        assert {"total", "params", "grads", "optimizer", "activations", "activations_checkpointed"} <= set(ph["memory_gb"])
        assert ph["fits"] is True and ph["flops_per_step"] > 0 and ph["tokens_per_s_at_mfu"] > 0
    assert r["mfu"] == 0.5 and r["peak_flops_per_device"] == H100_BF16_FLOPS
    md = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    assert md.startswith("# Plan for `lucie-7b`") and md.count("| yes |") == 3
    bad = subprocess.run([*cmd[:-4], "--recipe", "nope", "--root", str(PROJECT)], capture_output=True, text=True)
    assert bad.returncode == 2 and "no recipe 'nope'" in bad.stderr and "lucie-7b" in bad.stderr


def test_tiny_recipe_takes_the_tokenizers_vocabulary():
    p = load_recipe(PROJECT, "tiny")
    assert p.model.vocab_size is None
    r = plan(p)
    assert r["params"] == param_count(p.model.model_copy(update={"vocab_size": p.tokenizer.vocab_size}))
    assert all(ph["fits"] for ph in r["phases"].values())
