"""HF-format revisions of a phase (safetensors + config + tokenizer), named as Lucie's Hub branches.

Written into WORK/hf/<revision>/ while the phase trains, before the checkpoint of the same step (so a resume
never skips an export); hf/revisions.json lists every revision in training order (phase index, step).
"""
from __future__ import annotations

import shutil
from pathlib import Path

from stages.core import files
from stages.lib.phases import REVISION, revision_name


def write_revisions(hf_dir: Path) -> list[dict]:
    """hf/revisions.json: every exported revision, in training order (phase index, step)."""
    revs = [files.read_json(d / "training_state.json") for d in hf_dir.iterdir()
            if REVISION.match(d.name) and (d / "training_state.json").exists()]
    revs.sort(key=lambda r: (r["phase_index"], r["step"]))
    files.write_json(hf_dir / "revisions.json", {"revisions": revs})
    return revs


def save_hf(acc, model, out: Path, tokenizer_dir: Path, state: dict, bf16: bool = False) -> None:
    """The model as an HF directory at `out` (atomically), with the tokenizer and training_state.json.
    Every rank must call it (FSDP gathers the full weights in get_state_dict); rank 0 writes."""
    import torch

    sd = acc.get_state_dict(model)
    if not acc.is_main_process:
        return
    if bf16:  # Lucie published bf16 weights; training keeps fp32 masters
        sd = {k: v.to(torch.bfloat16) for k, v in sd.items()}
    with files.atomic_dir(out) as tmp:
        acc.unwrap_model(model).save_pretrained(str(tmp), state_dict=sd, safe_serialization=True)
        for f in tokenizer_dir.iterdir():
            shutil.copy(f, tmp / f.name)
        files.write_json(tmp / "training_state.json", state)


class Exporter:
    def __init__(self, acc, model, work: Path, phase: str, tokenizer_dir: Path, every: int, bf16: bool):
        self.acc, self.model, self.phase, self.tok, self.every, self.bf16 = acc, model, phase, tokenizer_dir, every, bf16
        self.dir = work / "hf"

    def due(self, done: int, last: int) -> bool:
        return bool(self.every) and (done % self.every == 0 or done == last)

    def export(self, step: int, state: dict) -> None:
        rev = revision_name(self.phase, step)
        save_hf(self.acc, self.model, self.dir / rev, self.tok, {**state, "revision": rev, "step": step}, self.bf16)
        if self.acc.is_main_process:
            write_revisions(self.dir)
        self.acc.wait_for_everyone()
