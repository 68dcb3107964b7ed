"""Whether a checkpoint may be resumed: it must have been made by the same computation on the same data.

A checkpoint's state.json holds the resolved config (the math of the run: model, hyperparameters, seed, sequence
length, phase) and the data fingerprint (sha256 of the token manifest). Resuming with anything else would give a
model that no params describe, so it is refused with every difference named, unless the user says otherwise
(--allow-resume-mismatch / LUCIE_RESUME_OVERRIDE=1), and then the differences are recorded.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from stages.core import files
from stages.core.params import Pretrain
from stages.core.runtime import StageError

OVERRIDE_ENV = "LUCIE_RESUME_OVERRIDE"
# Params that change how a run is executed, not what it computes: not part of the config fingerprint.
NOT_MATH = {"launch", "checkpoint_every", "keep_checkpoints", "export_every", "log_every", "threads", "deterministic"}


def math_config(model: dict, hp: Pretrain, seed: int, seq_len: int, phase: str) -> dict:
    """What the run computes: resolved model config, the math of `pretrain`, seed, sequence length, phase."""
    pre = {k: v for k, v in hp.model_dump(mode="json").items() if k not in NOT_MATH}
    return {"phase": phase, "seed": seed, "seq_len": seq_len, "model": model, "pretrain": pre}


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_diff(checkpoint: dict, current: dict) -> list[str]:
    """One line per differing key, e.g. 'pretrain.lr: 0.003 (checkpoint) != 0.001 (params)'."""
    a, b = _flat(checkpoint), _flat(current)
    show = lambda d, k: json.dumps(d[k]) if k in d else "<absent>"  # noqa: E731
    return [f"{k}: {show(a, k)} (checkpoint) != {show(b, k)} (params)" for k in sorted(a.keys() | b.keys())
            if a.get(k, KeyError) != b.get(k, KeyError)]


@dataclass
class Resume:
    """Where a run starts: step 0 (path None) or a checkpoint accepted by `plan`."""
    step: int = 0
    path: Path | None = None
    state: dict = field(default_factory=dict)
    mismatch: list[str] = field(default_factory=list)  # differences accepted by the user


def plan(latest: tuple[int, Path] | None, resolved: dict, data_fp: str, tokens: str, steps: int,
         allow_mismatch: bool, root: Path) -> Resume:
    """Resume from `latest` (step, directory) if it was made by the same computation, else refuse."""
    if latest is None:
        return Resume()
    step, path = latest
    state = files.read_json(path / "state.json")
    mismatch = config_diff(state["config"], resolved)
    if state["data_fingerprint"] != data_fp:
        mismatch.append(f"data ({tokens}/train/manifest.json sha256): {state['data_fingerprint'][:16]} "
                        f"(checkpoint) != {data_fp[:16]} (now)")
    if mismatch and not allow_mismatch:
        work = path.parent.parent.relative_to(root)
        raise StageError(f"cannot resume {resolved['phase']} from {path.relative_to(root)}: it was made with other "
                         "inputs:\n  " + "\n  ".join(mismatch) + f"\nDelete {work} to start over, or resume "
                         f"anyway with --allow-resume-mismatch ({OVERRIDE_ENV}=1).")
    if step > steps:
        raise StageError(f"checkpoint {path.name} is past the phase's steps ({steps})")
    return Resume(step, path, state, mismatch)
