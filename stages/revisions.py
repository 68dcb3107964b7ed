"""The intermediate checkpoints every training phase exported, found in one place.

Each phase is its own DVC stage with its own output directory (DVC forbids overlapping outputs), so the HF
revisions live in artifacts/checkpoints/<phase>/hf/<revision>/. Evaluate (learning curves) and release (one
Hub branch per revision) both need all of them, in training order; this is the one function that knows the
layout. Revision names are Lucie's: step0005000 (main), extension_step0000250, annealing_step0000500.
"""
from __future__ import annotations

import re
from pathlib import Path

ROOT = "artifacts/checkpoints"
PHASES = ("main", "extension", "annealing")  # training order (stages/pretrain.py LAYOUT)
REVISION = re.compile(r"^(?:(?P<phase>[a-z][a-z0-9]*)_)?step(?P<step>\d{7})$")


def parse(name: str) -> tuple[str, int] | None:
    """(phase, step) of a revision name, None if it is not one."""
    m = REVISION.match(name)
    return ((m["phase"] or "main"), int(m["step"])) if m else None


def list_revisions(root: str | Path) -> dict[str, Path]:
    """revision -> its HF directory, over every phase's exports, in training order (phase, then step).

    `root` is the repository root. A revision directory whose name does not match its phase is an error:
    two phases must never be able to publish the same branch name."""
    found: dict[str, Path] = {}
    for phase in PHASES:
        hf = Path(root) / ROOT / phase / "hf"
        for d in sorted(hf.iterdir()) if hf.is_dir() else []:
            got = parse(d.name)
            if not d.is_dir() or got is None:
                continue  # revisions.json
            if got[0] != phase:
                raise ValueError(f"{d}: revision {d.name!r} of phase {got[0]!r} under the {phase!r} phase's exports")
            found[d.name] = d
    return dict(sorted(found.items(), key=lambda kv: (PHASES.index(parse(kv[0])[0]), parse(kv[0])[1])))
