"""Pretraining pieces that need no training run: model size and FLOPs, batch ramp-up, revision names,
config diffs, params checks, inspect-batch under a ramp-up, and the recipes' model sizes."""
from __future__ import annotations


import numpy as np
import pytest
import yaml

from pretrain_data import make_repo
from repo_copy import PROJECT
from stages.core import files
from stages.lib.training import model as training_model
from stages.lib import phases
from stages.lib.training import resume
from stages.lib.training import schedule
from stages.lib.training import trainer
from stages.core.params import Params, ParamsError, Pretrain, load, parse
from stages.core.runtime import StageError

LUCIE_RAMP = {"start": 256, "increment": 64, "samples": 10_000_000}


def hp(**kw) -> Pretrain:
    base = {"steps": 100, "micro_batch_size": 2, "global_batch_size": 16, "lr": 1e-3, "min_lr": 1e-4}
    return Pretrain(**{**base, **kw})


def recipe(name: str) -> Params:
    return load(PROJECT / "recipes" / f"{name}.yaml")


# ---------------------------------------------------------------- parameters and FLOPs
def test_param_count_formula_matches_the_instantiated_tiny_model():
    from transformers import LlamaForCausalLM

    p = recipe("tiny")
    for tied in (False, True):
        cfg = training_model.llama_config(p.model.model_copy(update={"tie_word_embeddings": tied}), 2048)
        model = LlamaForCausalLM(cfg)
        assert training_model.param_count(cfg) == sum(t.numel() for t in model.parameters())
        embedding = model.get_input_embeddings().weight.numel()
        expected = sum(t.numel() for t in model.parameters()) - (0 if tied else embedding)
        assert training_model.matmul_params(cfg) == expected


@pytest.mark.parametrize("name, published", [("lucie-7b", 6_706_958_336), ("lucie-1b", 1_038_157_824)])
def test_param_count_of_the_recipes_matches_the_model_on_the_meta_device(name, published):
    import torch
    from transformers import LlamaForCausalLM

    cfg = training_model.llama_config(recipe(name).model, 65024)
    with torch.device("meta"):  # shapes only: a 7B model without 27 GB of memory
        model = LlamaForCausalLM(cfg)
    assert sum(t.numel() for t in model.parameters()) == training_model.param_count(cfg) == published


def test_flops_per_token_is_6n_plus_the_attention_term():
    cfg = training_model.llama_config(recipe("lucie-7b").model, 65024)
    n = 6_706_958_336 - 65024 * 4096  # everything but the input embedding lookup
    assert training_model.flops_per_token(cfg, 4096) == 6 * n + 12 * 32 * 32 * 128 * 4096
    # The attention term grows with the sequence; at 32k (context extension) it is ~17 % of the total.
    assert training_model.flops_per_token(cfg, 32000) - training_model.flops_per_token(cfg, 4096) == 12 * 32 * 4096 * (32000 - 4096)


def test_lucie_1b_keeps_the_7b_family_ratios_and_only_differs_where_it_says():
    m1, m7 = recipe("lucie-1b").model, recipe("lucie-7b").model
    for m in (m1, m7):
        assert m.head_dim == 128 and m.num_attention_heads // m.num_key_value_heads == 4
        assert m.intermediate_size == 3 * m.hidden_size and m.vocab_size == 65024 and not m.tie_word_embeddings
    raw1 = yaml.safe_load((PROJECT / "recipes/lucie-1b.yaml").read_text())
    raw7 = yaml.safe_load((PROJECT / "recipes/lucie-7b.yaml").read_text())
    for raw in (raw1, raw7):
        for section, key in (("recipe", None), ("model", None), ("tracking", "experiment"), ("release", "model_name"),
                             ("pretrain", "launch")):
            raw.pop(section) if key is None else raw[section].pop(key)
    assert raw1 == raw7, "lucie-1b.yaml must stay a copy of lucie-7b.yaml outside its own keys"


# ---------------------------------------------------------------- batch ramp-up
def test_rampup_follows_megatron_and_reproduces_lucies_step_count():
    p = hp(steps=753_851, global_batch_size=1024, batch_rampup=LUCIE_RAMP)
    per_increment = 10_000_000 / 12  # 12 increments of 64 from 256 to 1,024
    for consumed in (0, 833_333, 833_334, 5_000_000, 9_999_999, 10_000_000, 10**9):
        megatron = 1024 if consumed > 10_000_000 else 256 + int(consumed / per_increment) * 64
        assert schedule.global_batch(p, consumed) == megatron, consumed
    # Lucie trained 762,144,586 samples in 753,851 steps: the last full step of this schedule.
    assert schedule.batch_plan(p, 753_851)[0] <= 762_144_586 < schedule.batch_plan(p, 753_852)[0]


def test_batch_plan_is_the_running_sum_of_batch_sizes():
    p = hp(global_batch_size=16, batch_rampup={"start": 4, "increment": 2, "samples": 100})
    offset = 0
    for step in range(60):
        assert schedule.batch_plan(p, step) == (offset, schedule.global_batch(p, offset)), step
        offset += schedule.global_batch(p, offset)
    sizes = [schedule.batch_plan(p, k)[1] for k in range(60)]
    assert sizes[0] == 4 and sizes[-1] == 16 and sizes == sorted(sizes)
    assert schedule.batch_plan(hp(), 7) == (7 * 16, 16)  # no ramp-up: step k starts at k x G


def test_rampup_params_are_checked_and_name_the_key():
    with pytest.raises(ValueError, match="global_batch_size\n.*multiple of micro_batch_size"):
        hp(global_batch_size=15)
    with pytest.raises(ValueError, match="batch_rampup\n.*multiple of increment"):
        hp(batch_rampup={"start": 4, "increment": 5, "samples": 100})
    with pytest.raises(ValueError, match="batch_rampup\n.*must be < global_batch_size"):
        hp(batch_rampup={"start": 16, "increment": 2, "samples": 100})
    # Every batch of the schedule must split over the processes; 3 ranks cannot split 16 samples.
    schedule.check_batches(hp(batch_rampup={"start": 4, "increment": 4, "samples": 100}), 2)
    with pytest.raises(StageError, match=r"global batch sizes \[4, 12\] .* 2 x 4"):
        schedule.check_batches(hp(batch_rampup={"start": 4, "increment": 4, "samples": 100}), 4)


def test_launch_params_check_the_parallelism_mesh():
    raw = yaml.safe_load((PROJECT / "recipes/lucie-7b.yaml").read_text())
    raw["pretrain"]["launch"]["parallelism"]["dp_shard_size"] = 2
    with pytest.raises(ParamsError, match=r"pretrain.launch: .* = 256 must equal nnodes x nproc_per_node = 512"):
        parse(raw)
    raw = yaml.safe_load((PROJECT / "params.yaml").read_text())
    raw["pretrain"]["launch"]["parallelism"].update(dp_shard_size=2, tp_size=2)
    raw["pretrain"]["launch"].update(nproc_per_node=4, backend="gloo")  # sharding on CPU is allowed now
    assert parse(raw).pretrain.launch.parallelism.enabled


def test_mesh_dims_and_the_sharded_path_on_cpu():
    from stages.lib.training.parallel import mesh_dims

    p7 = recipe("lucie-7b").pretrain
    assert mesh_dims(p7.launch.parallelism) == (("dp_replicate", "dp_shard", "tp"), (32, 4, 4))
    one = p7.launch.parallelism.model_copy(update={"dp_replicate_size": 1, "dp_shard_size": 1, "tp_size": 1, "sharded": True})
    assert one.enabled and mesh_dims(one) == (("dp_shard",), (1,))
    with pytest.raises(StageError, match="no CUDA device"):  # lucie-7b asks for nccl
        trainer.make_accelerator(p7)
    cpu = p7.model_copy(update={"launch": p7.launch.model_copy(update={"backend": "gloo"})})
    with pytest.raises(StageError, match=r"asks for 32 x 4 x 4 processes but 1 were launched"):
        trainer.make_accelerator(cpu)


# ---------------------------------------------------------------- names and fingerprints
def test_revision_names_are_lucies_and_phase_aware():
    assert phases.revision_name("main", 5000) == "step0005000"
    assert phases.revision_name("extension", 250) == "extension_step0000250"
    for name in ("step0005000", "extension_step0000250"):
        assert phases.REVISION.match(name)


def test_config_diff_names_every_difference():
    p = recipe("tiny")
    a = resume.math_config({"hidden_size": 128}, p.pretrain, 42, 128, "main")
    b = resume.math_config({"hidden_size": 128}, p.pretrain.model_copy(update={"lr": 0.001, "threads": 1}), 42, 128, "main")
    assert resume.config_diff(a, b) == ["pretrain.lr: 0.003 (checkpoint) != 0.001 (params)"]  # threads: not math
    c = resume.math_config({"hidden_size": 64}, p.pretrain, 7, 128, "main")
    assert resume.config_diff(a, c) == ["model.hidden_size: 128 (checkpoint) != 64 (params)",
                                    "seed: 42 (checkpoint) != 7 (params)"]
    assert files.fingerprint(a) != files.fingerprint(c) and files.fingerprint(a) == files.fingerprint(dict(a))


# ---------------------------------------------------------------- inspect-batch under a ramp-up
def test_inspect_batch_follows_the_rampup(tmp_path):
    from stages.lib.batches import documents_of_step, step_samples

    ramp = {"start": 4, "increment": 4, "samples": 16}
    root = make_repo(tmp_path / "repo", {"pretrain.batch_rampup": ramp})
    p = load(root / "params.yaml")
    n = len(np.fromfile(root / "data/tokens/train/tokens.bin", dtype=np.uint16)) // 32
    seen = []
    for step in range(1, p.pretrain.steps + 1):
        ids = step_samples(p, n, step)
        offset, size = schedule.batch_plan(p.pretrain, step - 1)
        assert ids == schedule.sample_order(p.seed, n, offset, size).tolist()
        seen += ids
    assert [len(step_samples(p, n, s)) for s in (1, 4, 5, 8)] == [4, 4, 8, 8]
    assert seen == schedule.sample_order(p.seed, n, 0, len(seen)).tolist()  # steps tile the stream, no gap or overlap
    assert step_samples(p, n, 5, world_size=2) == step_samples(p, n, 5)  # the processes do not matter
    with pytest.raises(ValueError, match="cannot be split over 3 processes"):
        step_samples(p, n, 5, world_size=3)
    rows = documents_of_step(p, root / "data/tokens/train", 5)
    per_sample: dict = {}
    for r in rows:
        per_sample[r["sample"]] = per_sample.get(r["sample"], 0) + r["length"]
    assert list(per_sample) == step_samples(p, n, 5) and set(per_sample.values()) == {32}
