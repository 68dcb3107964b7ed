"""The seeded hash every order in the pipeline is made of, and the train/valid split drawn from it.

A document is in the valid split when its hash is below `fraction` of the range: a pure function of (seed, id),
so the split is the same whatever the order, the workers or the other documents. The tokenizer (trained on the
train split only), the mix, align and evaluate all draw from here.
"""
from __future__ import annotations

import hashlib


def h64(*parts) -> int:
    return int.from_bytes(hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest(), "big")


def is_valid(seed: int, doc_id: str, fraction: float) -> bool:
    return h64(seed, "valid", doc_id) < fraction * 2**64
