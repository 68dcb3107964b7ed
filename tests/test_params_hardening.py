"""Impossible hyper-parameters are refused before any work (issue 16.1 params half, 16.6): a matrix of
values that trained to a NaN or diverging model with exit 0, or silently fell back to defaults, each
refused with the dotted key named; duplicate keys in the file are an error naming key and line."""
from __future__ import annotations

import math

import pytest
import yaml

from stages.core import params as P
from test_params import PROJECT, base, error_of, with_value

INF, NAN = math.inf, math.nan

MATRIX = [  # (dotted key, value): each one is refused, and the message names the key
    ("pretrain.lr", INF), ("pretrain.lr", NAN), ("pretrain.lr", 0.0), ("pretrain.lr", 5.0),
    ("pretrain.min_lr", NAN), ("pretrain.min_lr", -1e-5),
    ("pretrain.eps", 0.0), ("pretrain.eps", -1e-8), ("pretrain.eps", INF),
    ("pretrain.grad_clip", -1.0), ("pretrain.grad_clip", 0.0), ("pretrain.grad_clip", NAN),
    ("pretrain.weight_decay", -0.1), ("pretrain.weight_decay", INF),
    ("pretrain.betas", [1.0, 0.95]), ("pretrain.betas", [0.9, -0.1]), ("pretrain.betas", [NAN, 0.95]),
    ("model.rms_norm_eps", -1.0), ("model.rms_norm_eps", 0.0), ("model.rms_norm_eps", NAN),
    ("model.rope_theta", 0.0), ("model.initializer_range", INF),
    ("align.sft.lr", INF), ("align.sft.lr", -1e-4), ("align.sft.min_lr", NAN),
    ("align.dpo.lr", NAN), ("align.dpo.lr", 10.0), ("align.dpo.beta", INF),
    ("mix.weights.en--web", INF), ("mix.weights.en--web", NAN), ("mix.default_epochs", INF),
    ("seed", True), ("seed", False), ("pretrain.steps", True), ("dedup.minhash.seed", True),
]


@pytest.mark.parametrize("key,value", MATRIX, ids=[f"{k}={v}" for k, v in MATRIX])
def test_impossible_value_is_refused_naming_the_key(key, value):
    msg = error_of(with_value(key, value))
    assert key.split(".")[-1] in msg and key.rsplit(".", 1)[0] in msg, msg


def test_phase_lrs_are_checked_too():
    raw = base()
    if not raw.get("annealing"):
        pytest.skip("no annealing section in params.yaml")
    raw["annealing"]["lr"] = INF
    assert "annealing.lr" in error_of(raw)


def test_head_dim_check_runs_when_head_dim_is_unset():
    raw = base()
    raw["model"].pop("head_dim", None)
    raw["model"]["hidden_size"] = raw["model"]["num_attention_heads"] * 10 + 2  # not a multiple
    msg = error_of(raw)
    assert "model.head_dim" in msg and "hidden_size" in msg


def test_booleans_still_work_where_the_schema_says_bool():
    raw = with_value("pretrain.deterministic", False)
    assert P.parse(raw).pretrain.deterministic is False


def test_shipped_recipes_still_validate():
    for path in [PROJECT / "params.yaml", *sorted((PROJECT / "recipes").glob("*.yaml"))]:
        assert P.load(path).recipe


def test_duplicate_section_is_an_error_naming_key_and_line(tmp_path):
    text = (PROJECT / "params.yaml").read_text(encoding="utf-8")
    dup = tmp_path / "params.yaml"
    dup.write_text(text + "\npretrain:\n  steps: 3\n", encoding="utf-8")
    line = len((text + "\n").splitlines()) + 1
    with pytest.raises(P.ParamsError) as exc:
        P.load(dup)
    msg = str(exc.value)
    assert "duplicate key 'pretrain'" in msg and f"line {line}" in msg and "\n" not in msg


def test_duplicate_nested_key_is_an_error(tmp_path):
    raw = base()
    text = yaml.safe_dump(raw, sort_keys=False).replace("  lr:", "  lr: 1.0\n  lr:", 1)
    dup = tmp_path / "p.yaml"
    dup.write_text(text, encoding="utf-8")
    with pytest.raises(P.ParamsError, match="duplicate key 'lr'"):
        P.load(dup)


def test_merge_keys_may_still_be_overridden(tmp_path):
    f = tmp_path / "m.yaml"
    f.write_text("a: &x {k: 1, j: 2}\nb:\n  <<: *x\n  k: 3\n", encoding="utf-8")
    assert yaml.load(f.read_text(), Loader=P.UniqueKeyLoader) == {"a": {"k": 1, "j": 2}, "b": {"k": 3, "j": 2}}
