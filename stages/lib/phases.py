"""Lucie's three training phases: their order, where each reads and writes, and how their revisions are named.

Each phase is its own DVC stage with its own outputs (DVC forbids overlapping outputs): `pretrain` (main, random
init), `extend` (context extension) and `anneal` (annealing, which writes the base model every later stage reads).
The HF revisions of a phase live in artifacts/checkpoints/<phase>/hf/<revision>/; evaluate (learning curves),
release (one Hub branch per revision) and `lucie inspect-batch` all find them here. Revision names are Lucie's:
step0005000 (main), extension_step0000250, annealing_step0000500.

No torch here: the mix, tokenize and the CLI import this module.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

PHASES = ("main", "extension", "annealing")  # training order
LATER_PHASES = PHASES[1:]  # start from the previous phase's weights and have their own mix and token directory
TOKENS = "data/tokens"
CHECKPOINTS = "artifacts/checkpoints"
REVISION = re.compile(r"^(?:(?P<phase>[a-z][a-z0-9]*)_)?step(?P<step>\d{7})$")


@dataclass(frozen=True)
class Layout:
    """Where one phase reads and writes."""
    stage: str  # its DVC stage (and MLflow run) name
    work: str  # checkpoints of an unfinished run (resumed from); moved to `ckpt` when the stage ends
    out: str  # final weights, HF format + tokenizer
    ckpt: str  # training states + hf/<revision>/
    plot: str  # loss log (DVC plot)
    metrics: str
    timing: str  # wall-clock numbers (untracked)
    speed: str
    tokens: str  # directory with train/ and valid/
    init_from: str | None  # the previous phase's `out`


LAYOUT = {
    "main": Layout("pretrain", ".lucie/pretrain", "artifacts/phases/main", f"{CHECKPOINTS}/main",
                   "plots/pretrain_loss.csv", "metrics/pretrain.json", "metrics/timing/pretrain.json",
                   "metrics/timing/pretrain_speed.csv", TOKENS, None),
    "extension": Layout("extend", ".lucie/extension", "artifacts/phases/extension", f"{CHECKPOINTS}/extension",
                        "plots/extension_loss.csv", "metrics/extension.json", "metrics/timing/extension.json",
                        "metrics/timing/extension_speed.csv", f"{TOKENS}/extension", "artifacts/phases/main"),
    "annealing": Layout("anneal", ".lucie/annealing", "artifacts/models/base", f"{CHECKPOINTS}/annealing",
                        "plots/annealing_loss.csv", "metrics/annealing.json", "metrics/timing/annealing.json",
                        "metrics/timing/annealing_speed.csv", f"{TOKENS}/annealing", "artifacts/phases/extension"),
}
assert tuple(LAYOUT) == PHASES


@dataclass(frozen=True)
class Phase:
    """One training phase. `main` starts from random weights; later phases pass `init_from`."""
    name: str
    hp: object  # stages.core.params.Pretrain: the training params of this phase
    tokens: str = TOKENS  # token directory with train/ and valid/
    index: int = 0  # position in the schedule (orders revisions.json across phases)
    model_overrides: dict = field(default_factory=dict)  # e.g. {"rope_theta": 2.0e7, "max_position_embeddings": 32000}
    work: str = LAYOUT["main"].work  # its own work directory: a phase never resumes from another phase's files
    seq_len: int | None = None  # the sample length its params ask for (None: whatever the tokens have)


def phase_of(params, name: str) -> Phase | None:
    """The Phase of `name` from params; None for a later phase that is absent or disabled."""
    if name == "main":
        return Phase("main", params.pretrain)
    cfg = getattr(params, name)
    if cfg is None or not cfg.enabled:
        return None
    mpe = max(params.model.max_position_embeddings, cfg.seq_len)
    return Phase(name, cfg.training(params.pretrain), LAYOUT[name].tokens, PHASES.index(name),
                 {"rope_theta": cfg.rope_theta, "max_position_embeddings": mpe}, LAYOUT[name].work, cfg.seq_len)


def revision_name(phase: str, step: int) -> str:
    """Lucie's Hub revision names: step0005000 for the main phase, extension_step0000250 for the others."""
    return f"step{step:07d}" if phase == "main" else f"{phase}_step{step:07d}"


def parse_revision(name: str) -> tuple[str, int] | None:
    """(phase, step) of a revision name, None if it is not one."""
    m = REVISION.match(name)
    return ((m["phase"] or "main"), int(m["step"])) if m else None


def list_revisions(root: str | Path) -> dict[str, Path]:
    """revision -> its HF directory, over every phase's exports, in training order (phase, then step).

    `root` is the repository root. A revision directory whose name does not match its phase is an error:
    two phases must never be able to publish the same branch name."""
    found: dict[str, Path] = {}
    for phase in PHASES:
        hf = Path(root) / CHECKPOINTS / phase / "hf"
        for d in sorted(hf.iterdir()) if hf.is_dir() else []:
            got = parse_revision(d.name)
            if not d.is_dir() or got is None:
                continue  # revisions.json
            if got[0] != phase:
                raise ValueError(f"{d}: revision {d.name!r} of phase {got[0]!r} under the {phase!r} phase's exports")
            found[d.name] = d
    return dict(sorted(found.items(), key=lambda kv: (PHASES.index(parse_revision(kv[0])[0]),
                                                      parse_revision(kv[0])[1])))
