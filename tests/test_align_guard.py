"""SFT/DPO stop on a non-finite loss (issue 16.1): the align stage, run for real on a tiny base model whose
weights hold a NaN, exits with one line naming the phase and the step and writes no model; the same stage
on the healthy model trains and writes it (the guard does not fire on finite losses)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from stages import align
from stages.lib.training.align_guard import NonFiniteLoss
from test_align import tiny_model
from stages.tokenizer import save_hf, train

PROJECT = Path(__file__).resolve().parent.parent


def base_model(root: Path, poison: bool) -> None:
    import torch

    out = root / align.BASE
    texts = [line for f in sorted((PROJECT / "data/sample/align").glob("*.jsonl")) for line in f.read_text().splitlines()]
    save_hf(train(texts, vocab_size=1000, min_frequency=2), out)
    model = tiny_model(1000)
    if poison:
        with torch.no_grad():
            model.model.layers[0].mlp.up_proj.weight[0, 0] = float("nan")
    model.save_pretrained(out)
    (out / "training_state.json").write_text(json.dumps({"step": 1}))


def overrides(tmp_path: Path) -> dict:
    import yaml

    a = yaml.safe_load((PROJECT / "params.yaml").read_text())["align"]
    for m in a["sft"]["mix"]:
        m["path"] = str(PROJECT / m["path"])
    a["dpo"]["data"] = str(PROJECT / a["dpo"]["data"])
    a["sft"].update(max_steps=2, batch_size=2)
    a["dpo"].update(max_steps=2, batch_size=2)
    return {"align": a}


def test_a_nan_loss_stops_sft_naming_the_step_and_writes_no_model(make_ctx, tmp_path):
    base_model(tmp_path, poison=True)
    ctx = make_ctx("align", overrides(tmp_path), root=tmp_path)
    with pytest.raises(NonFiniteLoss) as exc:
        align.run(ctx)
    msg = str(exc.value)
    assert msg.startswith("SFT loss is nan at step 1;") and "no model written" in msg and "\n" not in msg
    assert not (tmp_path / align.OUT).exists()
    assert not (tmp_path / "metrics" / "align.json").exists()
    assert list((tmp_path / ".lucie").iterdir()) == []  # the SFT/DPO work directory is gone too


def test_a_healthy_run_passes_the_guard_and_writes_the_model(make_ctx, tmp_path):
    base_model(tmp_path, poison=False)
    ctx = make_ctx("align", overrides(tmp_path), root=tmp_path)
    align.run(ctx)
    assert (tmp_path / align.OUT / "model.safetensors").is_file()
    assert list((tmp_path / ".lucie").iterdir()) == []


KILLED_IN_SCRATCH = """
import os, signal, sys
from stages.core import files
with files.scratch_dir(sys.argv[1]) as work:
    (work / "sft").mkdir()
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_runs_work_directory_is_removed_by_the_next_run(tmp_path):
    """issue 16.9: a killed align left /tmp/tmp*/{sft,dpo}; now its work directory is in the project and swept."""
    from stages.core import files

    where = tmp_path / ".lucie" / "align"
    res = subprocess.run([sys.executable, "-c", KILLED_IN_SCRATCH, str(where)], cwd=PROJECT, timeout=120)
    assert res.returncode < 0
    (left,) = (tmp_path / ".lucie").iterdir()
    assert (left / "sft").is_dir()
    with files.scratch_dir(where) as work:
        assert sorted(p.name for p in (tmp_path / ".lucie").iterdir()) == [work.name]
    assert list((tmp_path / ".lucie").iterdir()) == []
