"""The training loop's components, each on its own (no training run): the checkpointer (complete checkpoints
only, leftovers of a killed run, pruning), the resume decision, the step log (cut back to the resumed step) and
the exporter's schedule. A stand-in for the accelerator records the calls; everything else is real files."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from stages.core import files
from stages.core.runtime import StageError
from stages.lib.training.checkpoint import Checkpointer
from stages.lib.training.export import Exporter, write_revisions
from stages.lib.training.resume import plan
from stages.lib.training.steplog import LOG_COLUMNS, StepLog


class OneProcess:
    """What the components ask of an accelerator, for one process: save_state writes a marker file."""
    is_main_process, num_processes, process_index = True, 1, 0

    def __init__(self):
        self.calls = []

    def wait_for_everyone(self):
        self.calls.append("barrier")

    def save_state(self, path):
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "model.safetensors").write_bytes(b"weights")
        self.calls.append(("save", Path(path).name))


class Tracker:
    def __init__(self):
        self.series = {}

    def metric_series(self, name, points):
        self.series.setdefault(name, []).extend(points)


def test_checkpointer_saves_under_a_dot_name_then_renames_and_prunes(tmp_path):
    acc = OneProcess()
    ck = Checkpointer(acc, tmp_path / "work", "main", every=2, keep=2)
    assert [ck.due(s, 7) for s in range(1, 8)] == [False, True, False, True, False, True, True]
    flushed = []
    for step in (2, 4, 6):
        final = ck.save(step, {"samples_consumed": step * 8}, on_saved=lambda: flushed.append(step))
        assert final.name == f"step{step:07d}" and files.read_json(final / "state.json")["step"] == step
        assert ("save", f".step{step:07d}.partial") in acc.calls  # written under a dot-name first
    assert [s for s, _ in ck.list()] == [4, 6] and ck.latest()[0] == 6  # keep=2 pruned step 2
    assert flushed == [2, 4, 6]


def test_checkpointer_ignores_incomplete_and_other_phase_dirs_and_cleans_leftovers(tmp_path):
    work = tmp_path / "work"
    for name in ("step0000004", "step0000008", "extension_step0000002", ".step0000012.partial"):
        (work / "ckpt" / name).mkdir(parents=True)
    for name in ("step0000004", "step0000008", "extension_step0000002"):
        (work / "ckpt" / name / "state.json").write_text("{}")
    (work / "ckpt" / "step0000008" / "state.json").unlink()  # killed before state.json: not a checkpoint
    for name in ("step0000004", "step0000008", ".step0000008.tmp"):
        (work / "hf" / name).mkdir(parents=True)
    (tmp_path / ".work.finished").mkdir()  # a finished run killed while retiring its work directory
    ck = Checkpointer(OneProcess(), work, "main", every=4, keep=0)
    assert ck.list() == [(4, work / "ckpt" / "step0000004")]
    ck.clean_leftovers(start=4)
    assert sorted(p.name for p in (work / "ckpt").iterdir()) == ["extension_step0000002", "step0000004", "step0000008"]
    assert sorted(p.name for p in (work / "hf").iterdir()) == ["step0000004"]  # exports after step 4 and temp dirs go
    assert not (tmp_path / ".work.finished").exists()


def _checkpoint(tmp_path, config: dict, data_fp: str, step: int = 4) -> tuple[int, Path]:
    d = tmp_path / "work" / "ckpt" / f"step{step:07d}"
    d.mkdir(parents=True)
    files.write_json(d / "state.json", {"config": config, "data_fingerprint": data_fp, "samples_consumed": 32})
    return step, d


def test_resume_plan_accepts_the_same_work_and_names_every_difference_otherwise(tmp_path):
    cfg = {"phase": "main", "seed": 1, "pretrain": {"lr": 0.001}}
    latest = _checkpoint(tmp_path, cfg, "abc")
    assert plan(None, cfg, "abc", "data/tokens", 8, False, tmp_path).step == 0
    ok = plan(latest, cfg, "abc", "data/tokens", 8, False, tmp_path)
    assert (ok.step, ok.path, ok.mismatch) == (4, latest[1], [])
    other = {**cfg, "pretrain": {"lr": 0.003}}
    with pytest.raises(StageError) as err:
        plan(latest, other, "xyz", "data/tokens", 8, False, tmp_path)
    msg = str(err.value)
    assert "pretrain.lr: 0.001 (checkpoint) != 0.003 (params)" in msg and "manifest.json sha256" in msg
    assert "--allow-resume-mismatch" in msg
    forced = plan(latest, other, "abc", "data/tokens", 8, True, tmp_path)
    assert forced.step == 4 and forced.mismatch == ["pretrain.lr: 0.001 (checkpoint) != 0.003 (params)"]
    with pytest.raises(StageError, match="past the phase's steps"):
        plan(latest, cfg, "abc", "data/tokens", 3, False, tmp_path)


def test_step_log_is_cut_back_to_the_resumed_step_and_mirrored(tmp_path):
    tracker = Tracker()
    log = StepLog(tracker, tmp_path, "main", True, 0)
    for step in (1, 2, 3, 4):
        log.add(dict(zip(LOG_COLUMNS, (step, 5.0 - step / 10, 0.001, 1.0, step * 64, 8, step * 8))),
                {"step": step, "tokens_per_s": 100.0, "mfu": 0.5, "step_seconds": 0.1})
    log.flush()
    assert [int(r["step"]) for r in log.rows()] == [1, 2, 3, 4]
    assert tracker.series["train_loss"][-1] == (4, 4.6)
    resumed = StepLog(Tracker(), tmp_path, "main", True, 2)  # a rerun resuming at step 2 drops 3 and 4
    assert [int(r["step"]) for r in resumed.rows()] == [1, 2]
    assert [int(r["step"]) for r in resumed.rows("speed")] == [1, 2]
    assert resumed.tracker.series["train_loss"] == [(1, 4.9), (2, 4.8)]  # the resumed run gets the whole curve
    quiet = StepLog(Tracker(), tmp_path / "rank1", "main", False, 0)  # other ranks write nothing
    quiet.add({"step": 1}, {"step": 1})
    assert not (tmp_path / "rank1").exists()


def test_exporter_schedule_and_revision_index(tmp_path):
    ex = Exporter(OneProcess(), None, tmp_path, "extension", tmp_path / "tok", every=4, bf16=False)
    assert [s for s in range(1, 11) if ex.due(s, 10)] == [4, 8, 10]  # every 4 and the last step
    assert not Exporter(OneProcess(), None, tmp_path, "main", tmp_path, every=0, bf16=False).due(10, 10)
    hf = tmp_path / "hf"
    for phase_index, name, step in ((1, "extension_step0000008", 8), (0, "step0000004", 4), (1, "extension_step0000004", 4)):
        (hf / name).mkdir(parents=True)
        files.write_json(hf / name / "training_state.json", {"phase_index": phase_index, "step": step, "revision": name})
    (hf / "not-a-revision").mkdir()
    revs = write_revisions(hf)
    assert [r["revision"] for r in revs] == ["step0000004", "extension_step0000004", "extension_step0000008"]
    assert json.loads((hf / "revisions.json").read_text())["revisions"] == revs
