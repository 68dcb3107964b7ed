"""dedup: exact duplicates, then MinHash near-duplicates (Lucie: 14 bands x 8 rows, 5-grams).

Signatures come from datatrove's MinhashDedupSignature (its text normalisation, word
tokenizer, n-gram hashing and permutations, the ones Lucie's web pipeline used), per
language. The LSH banding and clustering run in memory here: on one machine the four
file-based datatrove stages only add I/O; the math of a signature is unchanged.

Determinism: documents are visited in input order, a cluster's kept representative is
its first document in that order, and cluster ids are the representative's id, so the
output is a pure function of the input and params. Every removed document is recorded
in data/dedup/removed.jsonl with its cluster id and the kind (exact or near).
"""
from __future__ import annotations

import hashlib
import re
import tempfile
import unicodedata

from . import io
from .params import WORD_TOKENIZER, MinHash
from .runtime import Ledger, StageContext, stage

IN, OUT = "data/filtered", "data/dedup"


def exact_key(text: str) -> str:
    """Exact duplicate = same text after Unicode NFC, case folding and whitespace collapsing."""
    norm = re.sub(r"\s+", " ", unicodedata.normalize("NFC", text)).strip().casefold()
    return hashlib.sha1(norm.encode("utf-8")).hexdigest()


class Signer:
    def __init__(self, p: MinHash, tmpdir):
        from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature

        self.config = MinhashConfig(n_grams=p.n_grams, num_buckets=p.num_buckets, hashes_per_bucket=p.hashes_per_bucket, seed=p.seed)
        self._make = lambda lang: MinhashDedupSignature(output_folder=str(tmpdir), config=self.config, language=lang)
        self._by_lang: dict[str, object] = {}

    def bands(self, text: str, lang: str) -> list[tuple] | None:
        """The document's LSH band keys, or None when it has fewer words than one n-gram."""
        dl = WORD_TOKENIZER.get(lang, "eng")  # code and other non-text languages: whitespace-like English rules
        if dl not in self._by_lang:
            self._by_lang[dl] = self._make(dl)
        sig = self._by_lang[dl]
        shingles = sig.get_shingles(text)
        if shingles.size == 0:
            return None
        return [tuple(b) for b in sig.get_signature(shingles)]


def near_duplicate_clusters(docs: list[dict], p: MinHash, tmpdir) -> dict[int, int]:
    """Map each document index to the index of its cluster representative (union-find over bands)."""
    signer = Signer(p, tmpdir)
    parent = list(range(len(docs)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    buckets: dict[tuple, int] = {}
    for i, doc in enumerate(docs):
        bands = signer.bands(doc["text"], doc["lang"])
        if bands is None:
            continue
        for b, band in enumerate(bands):
            key = (doc["lang"], b, band)  # per language, as Lucie's pipeline ran per language
            if key in buckets:
                a, c = find(buckets[key]), find(i)
                if a != c:  # the earlier document stays the root: first-seen is the representative
                    parent[max(a, c)] = min(a, c)
            else:
                buckets[key] = i
    return {i: find(i) for i in range(len(docs))}


def run(ctx: StageContext) -> None:
    p = ctx.params.dedup
    docs = list(ctx.progress(io.read_docs(ctx.path(IN)), io.count_docs(ctx.path(IN)), "reading"))
    ledger = Ledger(read=len(docs))
    rep = list(range(len(docs)))  # index of the document that stands for each one
    kind: dict[int, str] = {}

    if p.exact:
        first: dict[str, int] = {}
        for i, d in enumerate(docs):
            k = exact_key(d["text"])
            if k in first:
                rep[i], kind[i] = first[k], "exact"
            else:
                first[k] = i

    n_clusters = 0
    if p.minhash.enabled:
        survivors = [i for i in range(len(docs)) if rep[i] == i]
        with tempfile.TemporaryDirectory() as tmp:  # datatrove's signer wants a folder; nothing is written
            roots = near_duplicate_clusters([docs[i] for i in survivors], p.minhash, tmp)
        n_clusters = len({r for j, r in roots.items() if r != j})
        for j, r in roots.items():
            if r != j:
                rep[survivors[j]], kind[survivors[j]] = survivors[r], "near"

    def final(i: int) -> int:  # an exact copy of a near duplicate belongs to the near cluster's representative
        while rep[i] != i:
            i = rep[i]
        return i

    keep = [rep[i] == i for i in range(len(docs))]
    removed = []
    for i in sorted(kind):
        ledger.drop("exact" if kind[i] == "exact" else "near_duplicate")
        removed.append({"id": docs[i]["id"], "source": docs[i]["source"], "kind": kind[i], "cluster": docs[final(i)]["id"]})

    ledger.kept = sum(keep)

    def kept_rows():
        for i, d in enumerate(docs):
            if keep[i]:
                yield d

    io.write_corpus(ctx.path(OUT), kept_rows(), ctx.params.ingest.rows_per_shard, "removed.jsonl", removed)
    ctx.write_metrics("metrics/dedup.json", {**ledger.as_dict(), "near_duplicate_clusters": n_clusters})
    ctx.dataset(OUT, "output")
    ctx.summary(f"{ledger.summary()}, {n_clusters} near-duplicate clusters -> {OUT}")


def main() -> None:
    with stage("dedup") as ctx:
        run(ctx)


if __name__ == "__main__":
    main()
