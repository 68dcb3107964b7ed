"""tokenize: the mixed stream -> packed token shards a training loop can memory-map.

Each document is encoded without BOS and closed with EOS (Megatron's --append-eod, as in
Lucie), documents are concatenated in stream order and cut into samples of `seq_len`
tokens. Samples therefore cross document boundaries; the index says exactly which
documents (and which token ranges of them) each sample holds, so "what did step N
see?" has an answer (Pythia and OLMo users ask for it). The tail shorter than one sample
is dropped and counted.

Splits: train, valid (main phase, tokenize.seq_len) and <phase>/train, <phase>/valid for the extension
and annealing streams at that phase's seq_len (valid = the same held-out documents, packed at that length).
Layout per split:
  tokens.bin      flat uint16 (vocab < 65,536) or uint32 array, samples x seq_len
  index.parquet   sample, doc_id, doc_token_start, sample_token_start, length
  manifest.json   dtype, seq_len, samples, tokens, tokenizer sha256, sha256 per file
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from stages.core import files
from stages.lib.phases import LATER_PHASES
from stages.core.runtime import StageContext, stage, tokenizer_threads
from stages.lib.tokens import INDEX_SCHEMA, dtype_for

IN, TOK, OUT = "data/mixed", "artifacts/tokenizer", "data/tokens"


def pack(docs, tok, seq_len: int, append_eos: bool, out: Path, progress=lambda it, n: it) -> dict:
    """Encode, concatenate and cut; write tokens.bin + index.parquet into `out`; return counts."""
    dtype = dtype_for(tok.get_vocab_size())
    eos = tok.token_to_id("</s>")
    buf: list[int] = []
    index: dict[str, list] = {k: [] for k in INDEX_SCHEMA.names}
    pending: list[tuple[str, int, int]] = []  # (doc_id, doc_token_start, length) inside buf
    n_samples = n_docs = n_tokens = 0
    with open(out / "tokens.bin", "wb") as f:
        def emit():
            nonlocal buf, pending, n_samples
            while len(buf) >= seq_len:
                np.asarray(buf[:seq_len], dtype=dtype).tofile(f)
                pos, rest = 0, []
                for doc_id, start, length in pending:
                    take = min(length, seq_len - pos) if pos < seq_len else 0
                    if take > 0:
                        for k, v in zip(INDEX_SCHEMA.names, (n_samples, doc_id, start, pos, take)):
                            index[k].append(v)
                    if take < length:
                        rest.append((doc_id, start + take, length - take))
                    pos += take
                buf, pending, n_samples = buf[seq_len:], rest, n_samples + 1

        batch: list[dict] = []

        def encode(batch):
            nonlocal n_docs, n_tokens
            for d, enc in zip(batch, tok.encode_batch([d["text"] for d in batch], add_special_tokens=False)):
                ids = enc.ids + ([eos] if append_eos else [])
                pending.append((d["id"], 0, len(ids)))
                buf.extend(ids)
                n_docs, n_tokens = n_docs + 1, n_tokens + len(ids)
                emit()

        for d in progress(docs, None):
            batch.append(d)
            if len(batch) == 256:
                encode(batch)
                batch = []
        encode(batch)
    pq.write_table(pa.table(index, schema=INDEX_SCHEMA), out / "index.parquet", compression="zstd",
                   store_schema=False, write_statistics=False)
    return {"docs": n_docs, "tokens": n_tokens, "samples": n_samples, "tail_tokens_dropped": len(buf),
            "dtype": np.dtype(dtype).name, "seq_len": seq_len}


def run(ctx: StageContext) -> None:
    from tokenizers import Tokenizer

    p = ctx.params.tokenize
    tok_file = ctx.path(TOK) / "tokenizer.json"
    tok = Tokenizer.from_file(str(tok_file))
    tok.no_padding()
    tok.no_truncation()
    results = {}
    # (output split, mixed split, seq_len): the main phase, then each later phase at its own sequence length,
    # with the held-out documents packed at that length for its validation loss.
    jobs = [("train", "train", p.seq_len), ("valid", "valid", p.seq_len)]
    for name in LATER_PHASES:
        cfg = getattr(ctx.params, name)
        seq = cfg.seq_len if cfg is not None else p.seq_len
        jobs += [(f"{name}/train", name, seq), (f"{name}/valid", "valid", seq)]
    with files.atomic_dir(ctx.path(OUT)) as tmp, tokenizer_threads():
        for split, source, seq_len in jobs:
            (tmp / split).mkdir(parents=True)
            src = ctx.path(IN) / source
            counts = pack(files.read_docs(src), tok, seq_len, p.append_eos, tmp / split,
                          lambda it, n: ctx.progress(it, files.count_docs(src), f"tokenizing {split}"))
            listed = [{"path": f, "sha256": files.sha256_file(tmp / split / f)} for f in ("tokens.bin", "index.parquet")]
            files.write_json(tmp / split / files.MANIFEST, {**counts, "files": listed,
                                                        "tokenizer_sha256": files.sha256_file(tok_file)})
            results[split] = counts
    ctx.write_metrics("metrics/tokenize.json", results)
    ctx.dataset(OUT + "/train", "output")
    t = results["train"]
    extra = "".join(f", {n} {results[n + '/train']['samples']} x {results[n + '/train']['seq_len']}" for n in LATER_PHASES)
    ctx.summary(f"train {t['docs']} docs -> {t['tokens']} tokens -> {t['samples']} samples of {p.seq_len}; "
                f"valid {results['valid']['samples']} samples{extra} -> {OUT}")


def main() -> None:
    with stage("tokenize") as ctx:
        run(ctx)


if __name__ == "__main__":
    main()
