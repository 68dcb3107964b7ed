"""The validation loss at the end of a phase: the first 64 samples of the valid split, in batches of 8.

Every rank evaluates the same batches (FSDP needs all ranks in each forward); the number is the same on every rank.
"""
from __future__ import annotations

import numpy as np

MAX_SAMPLES, BATCH = 64, 8


def validation_loss(acc, model, valid: np.ndarray) -> float | None:
    import torch

    if not len(valid):
        return None
    net = acc.unwrap_model(model)
    net.eval()
    with torch.no_grad():
        losses = [net(input_ids=b, labels=b).loss.item() for b in
                  (torch.from_numpy(valid[i : i + BATCH].astype(np.int64)).to(acc.device)
                   for i in range(0, min(len(valid), MAX_SAMPLES), BATCH))]
    net.train()
    return float(np.mean(losses))
