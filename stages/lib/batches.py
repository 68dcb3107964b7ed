"""Which documents did optimizer step N see? (Pythia and OLMo users ask for exactly this.)

The training order is a pure function of (seed, epoch, position) and step k consumes stream
positions [offset_k, offset_k + G_k), G_k being the global batch of that step (smaller during a
batch-size ramp-up): stages/lib/training/schedule.py `batch_plan`. The token index maps every sample to the
document ranges it holds (stages/lib/tokens.py), so the answer is computed, not logged: no run,
checkpoint or log file is needed, only the params and data/tokens/train. The later phases have their own
batches and tokens (`phase`: extension -> extension.* params, data/tokens/extension/train).
"""
from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from stages.core import files
from stages.core.params import Params
from stages.lib.phases import LAYOUT, phase_of
from stages.lib.training.schedule import batch_plan, sample_order


def phase_hp(p: Params, phase: str):
    """(section name, training hyper-parameters) of a phase; an error for one that does not train."""
    if phase not in LAYOUT:
        raise ValueError(f"unknown phase {phase!r}; phases: {', '.join(LAYOUT)}")
    ph = phase_of(p, phase)
    if ph is None:
        raise ValueError(f"the {phase} phase is absent or disabled in params: it trains no step")
    return ("pretrain" if phase == "main" else phase), ph.hp


def tokens_dir(root: Path, phase: str = "main") -> Path:
    """The packed training samples of a phase."""
    if phase not in LAYOUT:
        raise ValueError(f"unknown phase {phase!r}; phases: {', '.join(LAYOUT)}")
    return Path(root) / LAYOUT[phase].tokens / "train"


def step_samples(p: Params, n_samples: int, step: int, world_size: int | None = None, phase: str = "main") -> list[int]:
    """Global sample ids of optimizer step `step` (1-based, as logged).

    The global batch is pretrain.global_batch_size whatever the number of processes, so the answer
    does not depend on `world_size`; it is only checked (a run with that many processes must be possible).
    """
    section, pre = phase_hp(p, phase)
    if step < 1 or step > pre.steps:
        raise ValueError(f"step must be in 1..{pre.steps} ({section}.steps)")
    if world_size is not None and pre.global_batch_size % (pre.micro_batch_size * world_size):
        raise ValueError(f"{section}.global_batch_size {pre.global_batch_size} cannot be split over {world_size} "
                         f"processes of micro_batch_size {pre.micro_batch_size}")
    offset, size = batch_plan(pre, step - 1)
    return sample_order(p.seed, n_samples, offset, size).tolist()


def documents_of_step(p: Params, tokens_dir: str | Path, step: int, world_size: int | None = None,
                      phase: str = "main") -> list[dict]:
    """One row per (sample, document range) of the step: sample, doc_id, doc_token_start, sample_token_start, length."""
    tokens_dir = Path(tokens_dir)
    n = files.read_json(tokens_dir / files.MANIFEST)["samples"]
    wanted = step_samples(p, n, step, world_size, phase)
    table = pq.read_table(tokens_dir / "index.parquet", filters=[("sample", "in", wanted)])
    rows = table.to_pylist()
    position = {s: i for i, s in enumerate(wanted)}
    return sorted(rows, key=lambda r: (position[r["sample"]], r["sample_token_start"]))
