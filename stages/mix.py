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

The later phases get their own streams from the same train documents (stages/phase_mix.py):
data/mixed/extension (newest web, long documents x10) and data/mixed/annealing (its own shares).

Tokens: as in Lucie's data tables (tokens per dataset, before and after upsampling), metrics/mix.json counts
tokens with the project's tokenizer (artifacts/tokenizer, trained before the mix, as Lucie's was trained on
its own selection before the blend weights were computed): the text's tokens, without BOS/EOS, next to docs,
words and chars, per language and per source; `token_share_*` are the language shares of tokens.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from pathlib import Path

from . import io
from .params import Mix
from .runtime import StageContext, StageError, stage, tokenizer_threads

IN, OUT = "data/dedup", "data/mixed"  # OUT: train, valid, extension, annealing
TOKENIZER = "artifacts/tokenizer/tokenizer.json"  # counts the tokens in metrics/mix.json


def h64(*parts) -> int:
    return int.from_bytes(hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest(), "big")


def epochs_for(p: Mix, lang: str, category: str, source: str = "") -> float:
    lw = p.lang_weights.get(lang, p.lang_weights.get("other", 1.0))
    return p.weights.get(f"{lang}--{category}", p.default_epochs) * lw * p.source_weights.get(source, 1.0)


def check_weights(p: Mix, present: set[tuple[str, str]]) -> None:
    """Every weight must name a (lang, category) group that exists: a typo would silently fall back to
    default_epochs. Shared with `lucie mix-plan` (stages/mix_plan.py)."""
    unmatched = sorted(k for k in p.weights if tuple(k.split("--", 1)) not in present)
    unmatched += sorted(f"lang_weights.{k}" for k in p.lang_weights if k != "other" and k not in {l for l, _ in present})
    if unmatched:
        raise StageError(f"mix weights match no document group: {unmatched}; groups here: "
                         f"{sorted(f'{l}--{c}' for l, c in present)}")


def is_valid(seed: int, doc_id: str, fraction: float) -> bool:
    return h64(seed, "valid", doc_id) < fraction * 2**64


def year(doc: dict) -> int:
    d = doc.get("date") or ""
    return int(d[:4]) if d[:4].isdigit() else 0


def schedule(docs: list[dict], p: Mix, seed: int, chronological: bool) -> list[tuple[dict, int]]:
    """The main phase's training stream: (document, epoch) pairs in order."""
    groups = []
    for source, members in _by_source(docs):
        # Groups of one source can span categories (e.g. web and wiki): epochs are per document key.
        for (lang, cat), group in _by_key(members):
            groups.append((source, group, epochs_for(p, lang, cat, source)))
    return blend(groups, seed, chronological)


def _by_source(docs) -> list[tuple[str, list[dict]]]:
    by_source: dict[str, list[dict]] = defaultdict(list)
    for d in docs:
        by_source[d["source"]].append(d)
    return sorted(by_source.items())


def _by_key(docs) -> list[tuple[tuple[str, str], list[dict]]]:
    by_key: dict[tuple, list[dict]] = defaultdict(list)
    for d in docs:
        by_key[(d["lang"], d["category"])].append(d)
    return sorted(by_key.items())


def blend(groups: list[tuple[str, list[dict], float]], seed: int, chronological: bool,
          phase: str = "main") -> list[tuple[dict, int]]:
    """(source, documents, epochs) groups -> the stream: per-epoch shuffle, hash blend, chronological slots.

    `phase` enters every hash except the main phase's (whose stream predates the phases and stays as it was),
    so each phase has its own order, still a pure function of (seed, phase, epoch, document).
    """
    tag = () if phase == "main" else (phase,)
    items = []  # (key, source, epoch, year, doc)
    for source, members, e in groups:
        members = sorted(members, key=lambda d: d["id"])
        for epoch in range(math.ceil(e)):
            shuffled = sorted(members, key=lambda d: h64(seed, *tag, "epoch", source, epoch, d["id"]))
            take = len(shuffled) if epoch + 1 <= e else round((e - epoch) * len(shuffled))
            for d in shuffled[:take]:
                items.append((h64(seed, *tag, "blend", source, epoch, d["id"]), source, epoch, year(d), d))
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


def words(doc: dict) -> int:
    return len(doc["text"].split())


def stats(rows, tokens: dict[str, int]) -> dict:
    """docs, words, chars and tokens by language and by source; `tokens`: document id -> its token count."""
    out: dict[str, dict] = {"by_lang": defaultdict(lambda: defaultdict(int)), "by_source": defaultdict(lambda: defaultdict(int))}
    for d in rows:
        n_words, chars = words(d), len(d["text"])
        for key, name in (("by_lang", d["lang"]), ("by_source", d["source"])):
            s = out[key][name]
            s["docs"] += 1
            s["words"] += n_words
            s["chars"] += chars
            s["tokens"] += tokens[d["id"]]
    return {k: {n: dict(v) for n, v in sorted(d.items())} for k, d in out.items()}


def shares(st: dict, unit: str = "words") -> dict:
    total = sum(v[unit] for v in st["by_lang"].values()) or 1
    return {lang: round(v[unit] / total, 4) for lang, v in st["by_lang"].items()}


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
    docs = list(io.read_docs(ctx.path(IN)))
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

    with io.atomic_dir(ctx.path(OUT)) as tmp:
        rps = ctx.params.ingest.rows_per_shard
        for name, docs_ in (("train", rows(stream)), ("valid", sorted(valid, key=lambda d: d["id"])),
                            *((name, rows(s)) for name, s in phases.items())):
            (tmp / name).mkdir()
            io.write_manifest(tmp / name, io.write_docs(tmp / name, docs_, rps))
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


PHASES = ("extension", "annealing")


def phase_streams(params, train: list[dict], size) -> dict[str, list[tuple[dict, int]]]:
    """The extension and annealing streams (empty for a phase that is absent or disabled: the DAG stays fixed);
    `size(doc)`: its tokens, the unit of the phases' weights and long-document threshold."""
    from .phase_mix import annealing_groups, extension_groups

    out = {}
    for name in PHASES:
        cfg = getattr(params, name)
        if cfg is None or not cfg.enabled:
            out[name] = []
            continue
        groups = (extension_groups(train, params.mix, cfg, size) if name == "extension"
                  else annealing_groups(train, cfg, size))
        out[name] = blend(groups, params.seed, params.mix.chronological, phase=name)
    return out


def main() -> None:
    with stage("mix") as ctx:
        run(ctx)


if __name__ == "__main__":
    main()
