"""Which documents did optimizer step N see? (Pythia and OLMo users ask for exactly this.)

The training order is a pure function of (seed, epoch, position) (stages/pretrain.py), and the
token index maps every sample to the document ranges it holds (stages/tokenize.py), so the
answer is computed, not logged: no run, checkpoint or log file is needed, only the params and
data/tokens/train.
"""
from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from . import io
from .params import Params
from .pretrain import sample_order


def step_samples(p: Params, n_samples: int, step: int, world_size: int = 1) -> list[int]:
    """Global sample ids of optimizer step `step` (1-based, as logged), whatever the number of processes."""
    if step < 1 or step > p.pretrain.steps:
        raise ValueError(f"step must be in 1..{p.pretrain.steps} (pretrain.steps)")
    g = p.pretrain.micro_batch_size * p.pretrain.grad_accum * world_size
    return sample_order(p.seed, n_samples, (step - 1) * g, g).tolist()


def documents_of_step(p: Params, tokens_dir: str | Path, step: int, world_size: int = 1) -> list[dict]:
    """One row per (sample, document range) of the step: sample, doc_id, doc_token_start, sample_token_start, length."""
    tokens_dir = Path(tokens_dir)
    n = io.read_json(tokens_dir / io.MANIFEST)["samples"]
    wanted = step_samples(p, n, step, world_size)
    table = pq.read_table(tokens_dir / "index.parquet", filters=[("sample", "in", wanted)])
    rows = table.to_pylist()
    position = {s: i for i, s in enumerate(wanted)}
    return sorted(rows, key=lambda r: (position[r["sample"]], r["sample_token_start"]))
