"""Pure pieces of pretrain and align: data order, LR schedule, input validation."""
from __future__ import annotations

import json

import numpy as np
import pytest

from stages.align import AlignDataError, load_jsonl
from stages.core.params import Pretrain
from stages.lib.training.schedule import lr_lambda, sample_order


def test_sample_order_is_a_pure_function_of_seed_epoch_and_position():
    whole = sample_order(42, 10, 0, 30)
    assert sorted(whole[:10].tolist()) == list(range(10))  # each epoch is a permutation
    assert sorted(whole[10:20].tolist()) == list(range(10))
    assert not np.array_equal(whole[:10], whole[10:20])  # reshuffled per epoch
    # Any window of the stream, asked for on its own (another rank, a resumed run), is the same.
    assert np.array_equal(sample_order(42, 10, 7, 9), whole[7:16])
    # Two ranks each taking half of a global batch see exactly the one-process batch.
    g = sample_order(42, 10, 4, 8)
    assert np.array_equal(np.concatenate([g[:4], g[4:]]), whole[4:12])
    assert not np.array_equal(sample_order(43, 10, 0, 10), whole[:10])


def test_lr_warms_up_then_decays_to_min():
    p = Pretrain(steps=100, micro_batch_size=1, lr=1e-3, min_lr=1e-4, warmup_steps=10)
    f = lr_lambda(p)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)
    assert f(100) == pytest.approx(0.1)
    assert all(f(s) >= f(s + 1) - 1e-12 for s in range(10, 100))


def write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_alignment_data_errors_name_file_and_line(tmp_path):
    good = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})
    f = write(tmp_path / "sft.jsonl", [good, "{not json"])
    with pytest.raises(AlignDataError, match=r"sft.jsonl:2: invalid JSON"):
        load_jsonl(f, "sft")
    f = write(tmp_path / "sft2.jsonl", [json.dumps({"messages": [{"role": "user", "content": "hi"}]})])
    with pytest.raises(AlignDataError, match=r"sft2.jsonl:1: the last message must be from 'assistant'"):
        load_jsonl(f, "sft")
    pair = {"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", "content": "a"}]}
    f = write(tmp_path / "pref.jsonl", [json.dumps(pair)])
    with pytest.raises(AlignDataError, match=r"pref.jsonl:1: missing 'rejected'"):
        load_jsonl(f, "dpo")
    assert len(load_jsonl(write(tmp_path / "ok.jsonl", [good, good]), "sft")) == 2


def test_step_samples_are_the_pretrain_order():
    import yaml

    from stages.lib.batches import step_samples
    from stages.core.params import parse
    from repo_copy import PROJECT

    p = parse(yaml.safe_load((PROJECT / "params.yaml").read_text()))
    g = p.pretrain.micro_batch_size * p.pretrain.grad_accum
    assert step_samples(p, 1000, 3) == sample_order(p.seed, 1000, 2 * g, g).tolist()
    with pytest.raises(ValueError, match="pretrain.steps"):
        step_samples(p, 1000, p.pretrain.steps + 1)
