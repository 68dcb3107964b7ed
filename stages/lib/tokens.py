"""The token shard format between `tokenize` (writer) and training / `lucie inspect-batch` (readers).

A split directory holds tokens.bin (samples x seq_len, uint16 when the vocabulary fits, else uint32), index.parquet
(sample -> the documents and token ranges packed into it, INDEX_SCHEMA) and manifest.json (samples, seq_len,
dtype, files with sha256).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from stages.core import files

INDEX_SCHEMA = pa.schema([
    ("sample", pa.int64()), ("doc_id", pa.string()), ("doc_token_start", pa.int64()),
    ("sample_token_start", pa.int32()), ("length", pa.int32()),
])


def dtype_for(vocab_size: int):
    return np.uint16 if vocab_size <= 65_536 else np.uint32


def load_tokens(split_dir: str | Path) -> np.ndarray:
    """Memory-map a split as a (samples, seq_len) array."""
    split_dir = Path(split_dir)
    m = files.read_json(split_dir / files.MANIFEST)
    if m["samples"] == 0:  # numpy cannot map an empty file
        return np.zeros((0, m["seq_len"]), dtype=m["dtype"])
    arr = np.memmap(split_dir / "tokens.bin", dtype=m["dtype"], mode="r")
    return arr.reshape(m["samples"], m["seq_len"])
