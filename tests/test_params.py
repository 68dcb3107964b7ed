"""params.yaml schema: the shipped files validate; typos, wrong types and impossible
combinations raise ParamsError naming the dotted key (stages/core/params.py docstring)."""
from __future__ import annotations

import copy
import glob
from pathlib import Path

import pytest
import yaml

from stages.core import params as P

PROJECT = Path(__file__).resolve().parent.parent
RECIPES = sorted(glob.glob(str(PROJECT / "recipes" / "*.yaml")))


def base() -> dict:
    with open(PROJECT / "params.yaml", encoding="utf-8") as f:
        return yaml.safe_load(f)


def with_value(key: str, value) -> dict:
    raw = copy.deepcopy(base())
    *parents, last = key.split(".")
    node = raw
    for p in parents:
        node = node[p]
    node[last] = value
    return raw


def error_of(raw: dict) -> str:
    with pytest.raises(P.ParamsError) as exc:
        P.parse(raw)
    return str(exc.value)


# ---------------------------------------------------------------- the shipped files
def test_params_yaml_validates():
    p = P.load(PROJECT / "params.yaml")
    assert p.recipe
    assert p.data.sources and all(s.name for s in p.data.sources)
    assert p.pretrain.min_lr <= p.pretrain.lr
    assert p.pretrain.warmup_steps < p.pretrain.steps


@pytest.mark.parametrize("recipe", RECIPES, ids=[Path(r).stem for r in RECIPES])
def test_recipe_validates(recipe):
    p = P.load(recipe)
    assert p.recipe


def test_load_errors_are_params_errors(tmp_path):
    with pytest.raises(P.ParamsError, match="not found"):
        P.load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("recipe: [unclosed\n", encoding="utf-8")
    with pytest.raises(P.ParamsError, match="not valid YAML"):
        P.load(bad)
    bad.write_text("- just\n- a list\n", encoding="utf-8")
    with pytest.raises(P.ParamsError, match="mapping"):
        P.load(bad)


# ---------------------------------------------------------------- per-field errors
def test_unknown_key_is_named():
    raw = copy.deepcopy(base())
    raw["filter"]["gopher_quality"]["min_doc_wrds"] = 50
    msg = error_of(raw)
    assert "filter.gopher_quality.min_doc_wrds" in msg
    assert "unknown key" in msg


def test_unknown_section_is_named():
    raw = copy.deepcopy(base())
    raw["pretrian"] = {"steps": 1}
    assert "pretrian" in error_of(raw)


def test_wrong_type_is_named():
    msg = error_of(with_value("pretrain.steps", "many"))
    assert "pretrain.steps" in msg


def test_every_offending_key_is_named():
    raw = with_value("pretrain.steps", "many")
    raw["filter"]["gopher_quality"]["min_doc_wrds"] = 50
    msg = error_of(raw)
    assert "pretrain.steps" in msg and "filter.gopher_quality.min_doc_wrds" in msg


def test_origin_is_named():
    with pytest.raises(P.ParamsError, match="recipes/x.yaml"):
        P.parse(with_value("pretrain.steps", "many"), origin="recipes/x.yaml")


# ---------------------------------------------------------------- impossible combinations
def test_mix_weight_key_without_separator_is_named():
    raw = copy.deepcopy(base())
    raw["mix"]["weights"]["enweb"] = 1.0
    msg = error_of(raw)
    assert "mix.weights" in msg and "enweb" in msg


def test_negative_mix_weight_is_named():
    msg = error_of(with_value("mix.weights.en--web", -1.0))
    assert "mix.weights" in msg


def test_seq_len_longer_than_positions_is_named():
    msg = error_of(with_value("tokenize.seq_len", base()["model"]["max_position_embeddings"] + 1))
    assert "tokenize.seq_len" in msg or "model.max_position_embeddings" in msg


def _min_lr_above_lr(raw):
    raw["pretrain"]["min_lr"] = raw["pretrain"]["lr"] * 10


def _heads_not_divisible(raw):
    raw["model"].update(num_attention_heads=4, num_key_value_heads=3, hidden_size=128)


def _warmup_not_below_steps(raw):
    raw["pretrain"]["warmup_steps"] = raw["pretrain"]["steps"]


IMPOSSIBLE = [
    (_min_lr_above_lr, "pretrain", "min_lr", ("pretrain.min_lr", "pretrain.lr")),
    (_heads_not_divisible, "model", "num_key_value_heads", ("model.num_key_value_heads", "model.num_attention_heads")),
    (_warmup_not_below_steps, "pretrain", "warmup_steps", ("pretrain.warmup_steps", "pretrain.steps")),
]
IMPOSSIBLE_IDS = ["min_lr>lr", "heads%kv_heads", "warmup>=steps"]


def impossible(edit) -> dict:
    raw = copy.deepcopy(base())
    edit(raw)
    return raw


@pytest.mark.parametrize("edit, section, field, named", IMPOSSIBLE, ids=IMPOSSIBLE_IDS)
def test_impossible_values_raise(edit, section, field, named):
    msg = error_of(impossible(edit))
    # What the schema does guarantee today: the section and the field are both mentioned.
    assert section in msg and field in msg.split(section, 1)[1]


@pytest.mark.parametrize("edit, section, field, named", IMPOSSIBLE, ids=IMPOSSIBLE_IDS)
def test_impossible_values_name_the_dotted_key(edit, section, field, named):
    msg = error_of(impossible(edit))
    assert any(k in msg for k in named), msg
