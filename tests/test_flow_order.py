"""The flow's stage order comes from DVC's own graph; a target brings its upstream stages."""
from __future__ import annotations

import subprocess

import yaml

from flows.pipeline import stage_order
from repo_copy import env


def test_order_and_targets_follow_the_dvc_graph(tmp_path):
    e = env(tmp_path)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["dvc", "init", "-q"], cwd=tmp_path, check=True, env=e)
    stages = {  # c <- b <- a, d independent; listed out of order on purpose
        "c": {"cmd": "cp b.txt c.txt", "deps": ["b.txt"], "outs": ["c.txt"]},
        "d": {"cmd": "echo d > d.txt", "outs": ["d.txt"]},
        "a": {"cmd": "echo a > a.txt", "outs": ["a.txt"]},
        "b": {"cmd": "cp a.txt b.txt", "deps": ["a.txt"], "outs": ["b.txt"]},
    }
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    order = stage_order(tmp_path)
    assert order.index("a") < order.index("b") < order.index("c") and set(order) == set("abcd")
    assert stage_order(tmp_path, ["b"]) == ["a", "b"]
    try:
        stage_order(tmp_path, ["nope"])
    except ValueError as err:
        assert "nope" in str(err)
    else:
        raise AssertionError("an unknown stage must be refused")
