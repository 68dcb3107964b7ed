"""mix: train/valid split, Lucie's upsampling by '<lang>--<category>' epochs, and the order.

Semantics follow Lucie's `dataset_weights.yaml`: each document group '<lang>--<category>'
is seen `weights[key] x lang_weights[lang] x source_weights[source]` times (fractional epochs allowed: 2.5 =
two full passes plus the first half of a third shuffled pass). On top, Lucie's Megatron
fork (1) shuffles every epoch separately, so an upsampled document never repeats before
its group's previous epoch is exhausted, and (2) orders the slots of a source group
chronologically (older years first). Both are reproduced here:

  position key of (doc, epoch) = hash(seed, source, epoch, doc id)   -> global blend
  then inside the slots a source occupies: sort by (epoch, year, key)  -> curriculum

Every key is a pure function of (seed, epoch, document), never of worker count or input
order, so the stream is reproducible anywhere. The valid split is chosen per document
by hash too (and is never upsampled).

The blend itself lives in stages/lib/mixing.py (shared with `lucie mix-plan`). The later phases get their own
streams from the same train documents:
data/mixed/extension (newest web, long documents x10) and data/mixed/annealing (its own shares).

Tokens: as in Lucie's data tables (tokens per dataset, before and after upsampling), metrics/mix.json counts
tokens with the project's tokenizer (artifacts/tokenizer, trained before the mix, as Lucie's was trained on
its own selection before the blend weights were computed): the text's tokens, without BOS/EOS, next to docs,
words and chars, per language and per source; `token_share_*` are the language shares of tokens.
"""
from __future__ import annotations

import json
from pathlib import Path

from stages.core import files
from stages.core.runtime import StageContext, StageError, stage, tokenizer_threads
from stages.lib.mixing import check_weights, phase_streams, schedule, shares, stats
from stages.lib.split import is_valid

IN, OUT = "data/dedup", "data/mixed"  # OUT: train, valid, extension, annealing
TOKENIZER = "artifacts/tokenizer/tokenizer.json"  # counts the tokens in metrics/mix.json


def count_tokens(path: Path, docs: list[dict], batch: int = 256) -> dict[str, int]:
    """Each document's token count (text only, no BOS/EOS) with the tokenizer at `path`."""
    from tokenizers import Tokenizer

    if not path.exists():
        raise StageError(f"mix counts tokens with {TOKENIZER}, which is missing: run the tokenizer stage first "
                         f"(`dvc repro tokenizer`)")
    tok = Tokenizer.from_file(str(path))
    out = {}
    with tokenizer_threads():
        for i in range(0, len(docs), batch):
            part = docs[i : i + batch]
            for d, enc in zip(part, tok.encode_batch([d["text"] for d in part], add_special_tokens=False)):
                out[d["id"]] = len(enc.ids)
    return out


def run(ctx: StageContext) -> None:
    p, seed = ctx.params.mix, ctx.params.seed
    docs = list(files.read_docs(ctx.path(IN)))
    valid = [d for d in docs if is_valid(seed, d["id"], p.valid_fraction)]
    train = [d for d in docs if not is_valid(seed, d["id"], p.valid_fraction)]
    check_weights(p, {(d["lang"], d["category"]) for d in docs})
    tokens = count_tokens(ctx.path(TOKENIZER), docs)
    stream = schedule(train, p, seed, p.chronological)
    phases = phase_streams(ctx.params, train, lambda d: tokens[d["id"]])

    def rows(stream):
        for d, epoch in stream:
            meta = json.loads(d["meta"])
            meta["mix_epoch"] = epoch
            yield {**d, "meta": json.dumps(meta, sort_keys=True, ensure_ascii=False)}

    with files.atomic_dir(ctx.path(OUT)) as tmp:
        rps = ctx.params.ingest.rows_per_shard
        for name, docs_ in (("train", rows(stream)), ("valid", sorted(valid, key=lambda d: d["id"])),
                            *((name, rows(s)) for name, s in phases.items())):
            (tmp / name).mkdir()
            files.write_manifest(tmp / name, files.write_docs(tmp / name, docs_, rps))
    before, after = stats(train, tokens), stats((d for d, _ in stream), tokens)
    metrics = {
        "docs_in": len(docs), "train_docs": len(train), "valid_docs": len(valid),
        "train_stream_docs": len(stream), "train_stream_tokens": sum(tokens[d["id"]] for d, _ in stream),
        "valid_tokens": sum(tokens[d["id"]] for d in valid),
        "before_upsampling": before, "after_upsampling": after,
        "lang_share_before": shares(before), "lang_share_after": shares(after),
        "token_share_before": shares(before, "tokens"), "token_share_after": shares(after, "tokens"),
    }
    for name, s in phases.items():  # the same figures for each later phase's stream
        st = stats((d for d, _ in s), tokens)
        metrics[name] = {"stream_docs": len(s), **st, "lang_share": shares(st) if s else {},
                         "token_share": shares(st, "tokens") if s else {}}
    if ctx.params.extension is not None and ctx.params.extension.enabled:
        limit = ctx.params.extension.long_doc_min_tokens
        n = [tokens[d["id"]] for d, _ in phases["extension"]]
        metrics["extension"]["long_doc_token_share"] = round(sum(x for x in n if x >= limit) / (sum(n) or 1), 4)
    ctx.write_metrics("metrics/mix.json", metrics)
    ctx.dataset(OUT + "/train", "output")
    extra = "".join(f", {name} {len(s)}" for name, s in phases.items())
    ctx.summary(f"{len(docs)} docs -> train {len(train)} (stream {len(stream)} after upsampling), valid {len(valid)}"
                f"{extra} -> {OUT}")


def main() -> None:
    with stage("mix") as ctx:
        run(ctx)


if __name__ == "__main__":
    main()
