"""Training states of an unfinished run, in the phase's work directory (WORK/ckpt/<revision>/).

A checkpoint holds model, optimizer, scheduler and RNG states (accelerate's save_state) plus state.json: step,
data position, the resolved config and the two fingerprints. It is written under a dot-name and renamed into place
once complete, so a directory named like a revision with a state.json in it is always whole; a killed run leaves
only dot-names, which the next run removes. Resuming from the latest one gives bit-identical losses and weights
(tests/test_pretrain_resume.py).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from stages.core import files
from stages.lib.phases import REVISION, parse_revision, revision_name


class Checkpointer:
    def __init__(self, acc, work: Path, phase: str, every: int, keep: int):
        self.acc, self.work, self.phase, self.every, self.keep = acc, work, phase, every, keep
        self.dir = work / "ckpt"

    def list(self) -> list[tuple[int, Path]]:
        """Complete checkpoints of this phase, by step."""
        found = []
        for d in self.dir.glob("*step*") if self.dir.exists() else []:
            got = parse_revision(d.name)
            if got and got[0] == self.phase and (d / "state.json").exists():
                found.append((got[1], d))
        return sorted(found)

    def latest(self) -> tuple[int, Path] | None:
        found = self.list()
        return found[-1] if found else None

    def clean_leftovers(self, start: int) -> None:
        """What a killed run left (partial directories, exports after the resumed step). Rank 0 only."""
        hf = self.work / "hf"
        files.remove(self.work.with_name(f".{self.work.name}.finished"))  # a finished run killed while retiring it
        for d in [*self.dir.glob(".*"), *hf.glob(".*")] if self.work.exists() else []:
            files.remove(d)
        for d in hf.glob("*step*") if hf.exists() else []:
            got = parse_revision(d.name)
            if REVISION.match(d.name) and got[0] == self.phase and got[1] > start:
                files.remove(d)

    def due(self, done: int, last: int) -> bool:
        return done == last or bool(self.every and done % self.every == 0)

    def load(self, path: Path) -> None:
        self.acc.load_state(str(path))

    def save(self, step: int, state: dict, on_saved: Callable[[], None] = lambda: None) -> Path:
        """Every rank saves its part; rank 0 adds state.json, renames the directory into place and prunes."""
        acc = self.acc
        final = self.dir / revision_name(self.phase, step)
        tmp = final.with_name(f".{final.name}.partial")
        if acc.is_main_process:
            files.remove(tmp)
        acc.wait_for_everyone()
        acc.save_state(str(tmp))
        acc.wait_for_everyone()
        if acc.is_main_process:
            files.write_json(tmp / "state.json", {**state, "step": step})
            files.remove(final)
            os.replace(tmp, final)
            if self.keep:
                for _, old in self.list()[: -self.keep]:
                    files.remove(old)
            on_saved()
        acc.wait_for_everyone()
        return final
