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
"""
from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict

from . import io
from .params import Mix
from .runtime import StageContext, StageError, stage

IN, OUT = "data/dedup", "data/mixed"


def h64(*parts) -> int:
    return int.from_bytes(hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest(), "big")


def epochs_for(p: Mix, lang: str, category: str, source: str = "") -> float:
    lw = p.lang_weights.get(lang, p.lang_weights.get("other", 1.0))
    return p.weights.get(f"{lang}--{category}", p.default_epochs) * lw * p.source_weights.get(source, 1.0)


def is_valid(seed: int, doc_id: str, fraction: float) -> bool:
    return h64(seed, "valid", doc_id) < fraction * 2**64


def year(doc: dict) -> int:
    d = doc.get("date") or ""
    return int(d[:4]) if d[:4].isdigit() else 0


def schedule(docs: list[dict], p: Mix, seed: int, chronological: bool) -> list[tuple[dict, int]]:
    """The training stream: (document, epoch) pairs in order."""
    by_source: dict[str, list[dict]] = defaultdict(list)
    for d in docs:
        by_source[d["source"]].append(d)
    items = []  # (key, source, epoch, year, doc)
    for source, group in sorted(by_source.items()):
        # Groups of one source can span categories (e.g. web and wiki): epochs are per document key.
        by_key: dict[tuple, list[dict]] = defaultdict(list)
        for d in group:
            by_key[(d["lang"], d["category"])].append(d)
        for (lang, cat), members in sorted(by_key.items()):
            e = epochs_for(p, lang, cat, source)
            members = sorted(members, key=lambda d: d["id"])
            for epoch in range(math.ceil(e)):
                shuffled = sorted(members, key=lambda d: h64(seed, "epoch", source, epoch, d["id"]))
                take = len(shuffled) if epoch + 1 <= e else round((e - epoch) * len(shuffled))
                for d in shuffled[:take]:
                    items.append((h64(seed, "blend", source, epoch, d["id"]), source, epoch, year(d), d))
    items.sort(key=lambda t: t[0])
    if chronological:
        slots: dict[str, list[int]] = defaultdict(list)
        for pos, it in enumerate(items):
            slots[it[1]].append(pos)
        reordered = list(items)
        for positions in slots.values():
            members = sorted((items[i] for i in positions), key=lambda t: (t[2], t[3], t[0]))
            for pos, it in zip(positions, members):
                reordered[pos] = it
        items = reordered
    return [(it[4], it[2]) for it in items]


def stats(rows) -> dict:
    out: dict[str, dict] = {"by_lang": defaultdict(lambda: defaultdict(int)), "by_source": defaultdict(lambda: defaultdict(int))}
    for d in rows:
        words, chars = len(d["text"].split()), len(d["text"])
        for key, name in (("by_lang", d["lang"]), ("by_source", d["source"])):
            s = out[key][name]
            s["docs"] += 1
            s["words"] += words
            s["chars"] += chars
    return {k: {n: dict(v) for n, v in sorted(d.items())} for k, d in out.items()}


def shares(st: dict) -> dict:
    total = sum(v["words"] for v in st["by_lang"].values()) or 1
    return {lang: round(v["words"] / total, 4) for lang, v in st["by_lang"].items()}


def run(ctx: StageContext) -> None:
    p, seed = ctx.params.mix, ctx.params.seed
    docs = list(io.read_docs(ctx.path(IN)))
    valid = [d for d in docs if is_valid(seed, d["id"], p.valid_fraction)]
    train = [d for d in docs if not is_valid(seed, d["id"], p.valid_fraction)]
    present = {(d["lang"], d["category"]) for d in docs}
    unmatched = sorted(k for k in p.weights if tuple(k.split("--", 1)) not in present)
    unmatched += sorted(f"lang_weights.{k}" for k in p.lang_weights if k != "other" and k not in {l for l, _ in present})
    if unmatched:  # a typo would silently fall back to default_epochs
        raise StageError(f"mix weights match no document group: {unmatched}; groups here: "
                         f"{sorted(f'{l}--{c}' for l, c in present)}")
    stream = schedule(train, p, seed, p.chronological)

    def train_rows():
        for d, epoch in stream:
            meta = json.loads(d["meta"])
            meta["mix_epoch"] = epoch
            yield {**d, "meta": json.dumps(meta, sort_keys=True, ensure_ascii=False)}

    with io.atomic_dir(ctx.path(OUT)) as tmp:
        (tmp / "train").mkdir()
        (tmp / "valid").mkdir()
        rps = ctx.params.ingest.rows_per_shard
        io.write_manifest(tmp / "train", io.write_docs(tmp / "train", train_rows(), rps))
        io.write_manifest(tmp / "valid", io.write_docs(tmp / "valid", sorted(valid, key=lambda d: d["id"]), rps))
    before, after = stats(train), stats(d for d, _ in stream)
    metrics = {
        "docs_in": len(docs), "train_docs": len(train), "valid_docs": len(valid),
        "train_stream_docs": len(stream),
        "before_upsampling": before, "after_upsampling": after,
        "lang_share_before": shares(before), "lang_share_after": shares(after),
    }
    ctx.write_metrics("metrics/mix.json", metrics)
    ctx.dataset(OUT + "/train", "output")
    ctx.summary(f"{len(docs)} docs -> train {len(train)} (stream {len(stream)} after upsampling), valid {len(valid)} -> {OUT}")


def main() -> None:
    with stage("mix") as ctx:
        run(ctx)


if __name__ == "__main__":
    main()
