"""`dvc exp run -S KEY=VALUE` must work for every param of every recipe.

DVC applies `-S` with Hydra's override parser and rewrites params.yaml through its own round-trip YAML
modifier (`dvc.utils.serialize.modify_yaml`, ruamel): quotes are dropped and flow mappings stay flow, so a
`time: "04:00:00"` inside `{...}` came back as unreadable YAML, and `20:00:00` as 72000 for PyYAML. Each
param is set to its own value through DVC's code; the rewritten file must read back, in DVC (ruamel) and in
stages.core.params (the schema), as the same parameters.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from stages.core.params import load

PROJECT = Path(__file__).resolve().parent.parent
RECIPES = sorted(p.stem for p in (PROJECT / "recipes").glob("*.yaml"))


def hydra_value(v) -> str:
    """A Python value in Hydra's override grammar (what a user types after `-S key=`)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(v, list):
        return "[" + ",".join(hydra_value(x) for x in v) + "]"
    return "{" + ",".join(f"{k}:{hydra_value(x)}" for k, x in v.items()) + "}"


def leaves(d: dict, prefix: str = ""):
    for k, v in d.items():
        if isinstance(v, dict) and v:
            yield from leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def flat(d: dict) -> dict:
    return dict(leaves(d))


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_param_survives_dvc_set_param(recipe, tmp_path):
    """All params set at once (`-S k1=v1 -S k2=v2 ...`, one rewrite): each value goes through Hydra's
    parser and DVC's YAML dump; the file must read back as the same params, key by key."""
    from dvc.utils.hydra import apply_overrides  # what `dvc exp run -S` calls; it writes with modify_yaml
    from dvc.utils.serialize import load_yaml

    src = PROJECT / "recipes" / f"{recipe}.yaml"
    dvc_view, ours = load_yaml(src), load(src)
    keys = flat(dvc_view)
    assert len(keys) > 100
    dst = tmp_path / "params.yaml"
    shutil.copy(src, dst)
    apply_overrides(dst, [f"{k}={hydra_value(v)}" for k, v in keys.items()])
    back = flat(load_yaml(dst))  # raises YAMLFileCorruptedError on the old flow-mapped times
    assert [f"{k}: {v!r} -> {back.get(k)!r}" for k, v in keys.items() if back.get(k) != v] == []
    again = load(dst).model_dump()
    assert [k for k, v in flat(ours.model_dump()).items() if flat(again).get(k) != v] == []


def test_a_changed_value_lands(tmp_path):
    from dvc.utils.hydra import apply_overrides

    dst = tmp_path / "params.yaml"
    shutil.copy(PROJECT / "recipes" / "lucie-7b.yaml", dst)
    apply_overrides(dst, ["pretrain.lr=1e-3", "pretrain.launch.slurm.time=12:00:00"])
    p = load(dst)
    assert p.pretrain.lr == 1e-3 and p.pretrain.launch.slurm.time == "12:00:00"
    assert yaml.safe_load(dst.read_text())["pretrain"]["lr"] == 1e-3
