"""What each optimizer step trains on, and at which learning rate: pure functions of params and the step.

The data order is a function of (seed, epoch, global sample index): epoch e is a permutation of all samples drawn
from rng(seed, e), and optimizer step k consumes stream positions [offset_k, offset_k + G_k). G_k is
pretrain.global_batch_size, or less during a batch-size ramp-up (Megatron's rule, in samples). Each rank takes its
own slice of the global batch, so the samples a step sees do not depend on the number of processes or nodes.
"""
from __future__ import annotations

import math

import numpy as np

from stages.core.params import Pretrain
from stages.core.runtime import StageError


def sample_order(seed: int, n_samples: int, start: int, count: int) -> np.ndarray:
    """Global sample ids at stream positions [start, start+count): epoch e = permutation from rng(seed, e)."""
    out, pos = [], start
    while len(out) < count:
        epoch, offset = divmod(pos, n_samples)
        perm = np.random.default_rng([seed, epoch]).permutation(n_samples)
        take = min(count - len(out), n_samples - offset)
        out.extend(perm[offset : offset + take].tolist())
        pos += take
    return np.asarray(out, dtype=np.int64)


def global_batch(p: Pretrain, consumed: int) -> int:
    """Samples in the step that starts at stream position `consumed` (Megatron's ramp-up rule, integer arithmetic)."""
    r = p.batch_rampup
    if r is None or consumed >= r.samples:
        return p.global_batch_size
    increments = (p.global_batch_size - r.start) // r.increment
    return min(p.global_batch_size, r.start + (consumed * increments // r.samples) * r.increment)


def batch_plan(p: Pretrain, step: int) -> tuple[int, int]:
    """(first stream position, number of samples) of optimizer step `step` (0-based). Only the ramp-up is
    walked step by step (Lucie: about 20 k steps); after it every step has global_batch_size samples."""
    offset, k = 0, 0
    if p.batch_rampup is not None:
        while k < step and offset < p.batch_rampup.samples:
            offset, k = offset + global_batch(p, offset), k + 1
    offset += (step - k) * p.global_batch_size
    return offset, global_batch(p, offset)


def check_batches(hp: Pretrain, world: int) -> None:
    """Every global batch of the schedule must split into whole micro-batches on every rank."""
    unit = hp.micro_batch_size * world
    sizes = {hp.global_batch_size}
    if hp.batch_rampup:
        r = hp.batch_rampup
        sizes |= set(range(r.start, hp.global_batch_size, r.increment))
    bad = sorted(s for s in sizes if s % unit)
    if bad:
        raise StageError(f"global batch sizes {bad[:5]} are not multiples of micro_batch_size x data-parallel processes "
                         f"= {hp.micro_batch_size} x {world}; change pretrain.global_batch_size/batch_rampup or the launch")


def lr_lambda(p):
    """LR factor of step `step` (0-based): linear warmup, then cosine (main), linear (annealing) to min_lr, or
    constant (extension). The factor after the last step is the floor: Lucie's annealing ends at LR 0."""
    def f(step: int) -> float:
        if p.warmup_steps and step < p.warmup_steps:
            return (step + 1) / p.warmup_steps
        if p.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - p.warmup_steps) / max(1, p.steps - p.warmup_steps))
        floor = p.min_lr / p.lr
        if p.schedule == "linear":
            return floor + (1 - floor) * (1 - progress)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    return f
