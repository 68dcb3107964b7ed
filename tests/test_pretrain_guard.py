"""A training phase never ends in a silent bad model or a lost checkpoint.

- A non-finite loss or gradient norm stops the phase before the optimizer step: non-zero exit naming the step,
  no model written, the last good checkpoint kept in the work directory.
- `finish` (moving a trained phase into its DVC outputs) is killed at each of its named points; the rerun
  ends with outputs byte-identical to an uninterrupted run, and no checkpoint is ever only in a temp directory.

Training subprocesses of ~10 s each (mostly imports): marked slow.
"""
from __future__ import annotations

import hashlib
import shutil
import signal

import pytest

from pretrain_data import child_env, make_repo, pretrain_cmd, run

pytestmark = pytest.mark.slow


def tree(root) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_non_finite_training_stops_naming_the_step_and_keeps_the_last_checkpoint(tmp_path):
    # Params that could diverge are refused at load time (tests/test_params_hardening.py), so the fault is injected:
    # a NaN lands in the weights after step 1 (LUCIE_PRETRAIN_CORRUPT_AFTER), as a numerical fault would put it.
    root = make_repo(tmp_path / "repo", {"pretrain.checkpoint_every": 1})
    r = run(pretrain_cmd(), root, child_env(root, LUCIE_PRETRAIN_CORRUPT_AFTER="1"))
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert "non-finite training at step 2" in out and "no model written" in out, out[-2000:]
    assert "the last good checkpoint, .lucie/pretrain/ckpt/step0000001, is kept" in out
    assert (root / ".lucie/pretrain/ckpt/step0000001/state.json").exists()
    assert not (root / "artifacts/phases/main").exists() and not (root / "metrics/pretrain.json").exists()


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    root = make_repo(tmp_path_factory.mktemp("finish") / "whole")
    r = run(pretrain_cmd(), root, child_env(root))
    assert r.returncode == 0, r.stderr[-3000:]
    return root


OUTPUTS = ("artifacts/phases/main", "artifacts/checkpoints/main")
FILES = ("plots/pretrain_loss.csv", "metrics/pretrain.json")


@pytest.mark.parametrize("point", ["finish:checkpoints_linked", "finish:metrics_written", "finish:work_retired"])
def test_a_kill_inside_finish_loses_nothing(whole, tmp_path, point):
    root = tmp_path / "repo"
    shutil.copytree(whole, root, ignore=shutil.ignore_patterns("artifacts", "metrics", "plots", ".lucie"))
    shutil.copytree(whole / "artifacts/tokenizer", root / "artifacts/tokenizer")
    killed = run(pretrain_cmd(), root, child_env(root, LUCIE_PRETRAIN_KILL_AT=point))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    if point != "finish:work_retired":  # until the very end, the work directory holds every checkpoint
        assert sorted(p.name for p in (root / ".lucie/pretrain/ckpt").iterdir()) == ["step0000004", "step0000008"]
    rerun = run(pretrain_cmd(), root, child_env(root))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    for out in OUTPUTS:
        assert tree(root / out) == tree(whole / out), out
    for f in FILES:
        assert (root / f).read_bytes() == (whole / f).read_bytes(), f
    assert not (root / ".lucie/pretrain").exists() and not list((root / ".lucie").glob(".pretrain*"))
    assert not list((root / "artifacts/checkpoints").glob(".*"))  # no temp directory left behind
