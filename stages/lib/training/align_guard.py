"""Stop SFT/DPO on a non-finite loss or gradient norm: exit non-zero naming the step, write no model.

An impossible learning rate (or a broken base model) used to train to NaN and still write
artifacts/models/instruct with exit 0. `NonFiniteGuard` is a transformers TrainerCallback: at every
logged step (align logs every step) it checks `loss` and `grad_norm` and raises `NonFiniteLoss`, a
StageError, so the stage prints one line and exits 1 before the output directory is ever written
(the model is saved only after both phases finish). Trainer's `logging_nan_inf_filter`, which
replaces a NaN/inf step loss by the running mean in the logs, must be off for the guard to see it
(`stages.align.common_args` turns it off).
"""
from __future__ import annotations

import math

from transformers import TrainerCallback

from stages.core.runtime import StageError


class NonFiniteLoss(StageError):
    """Training produced a NaN/inf loss or gradient norm."""


class NonFiniteGuard(TrainerCallback):
    def __init__(self, phase: str, key: str):
        self.phase, self.key = phase, key  # e.g. "SFT", "align.sft" (the params section to look at)

    def on_log(self, args, state, control, logs=None, **kwargs):
        for name in ("loss", "grad_norm"):
            value = (logs or {}).get(name)
            if value is not None and not math.isfinite(float(value)):
                raise NonFiniteLoss(f"{self.phase} {name} is {value} at step {state.global_step}; no model written "
                                    f"(check {self.key}.lr and the base model)")
