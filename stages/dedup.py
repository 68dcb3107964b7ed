"""dedup: exact duplicates, then MinHash near-duplicates, per language (Lucie: 14 bands x 8 rows, 5-grams).

Signatures are bit-identical to those of datatrove's MinhashDedupSignature, the code Lucie's web
pipeline ran: datatrove's text normalisation, its spaCy word tokenizer for the language, xxhash64
of each space-joined 5-gram, and datatrove's own permutations (`get_signature`, seeded). So the
candidate pairs are exactly those of datatrove's 4-stage pipeline (benchmarks/dedup_quality.py
checks that the clusters agree), only found faster:
  - spaCy tokenizes each whitespace-separated chunk on its own, so each distinct chunk is
    tokenized once per language and cached. A new chunk that no special case, prefix, suffix or
    infix rule of the tokenizer matches is one token by spaCy's algorithm and skips spaCy; the
    rest (about 1 %) go to spaCy, one call per document. spaCy on every word of every document
    (building a Doc and vocabulary entries) was most of the cost of datatrove's signature stage.
  - the normalisation makes fewer passes over the text than datatrove's `simplify_text`
    (same steps, same order; tests compare the two).
  - LSH banding and union-find run in memory: on one machine datatrove's file-based stages 2-4
    (sorted signature files, pair files, remove lists) only add I/O.
The input is read twice: the first pass keeps ids, exact keys and signatures (14 x 8 uint64 per
document), not texts; the second writes the kept documents. Beyond the Parquet shard being read
or written (files.read_docs and files.write_docs hold one shard), memory grows with the number of
documents (1-2 KB each) and the vocabulary (the chunk cache, capped by CACHE_MAX), not with the
length of the texts.

Per language: documents of different languages are never merged, exact or near (Lucie ran the
MinHash per language). Languages without a datatrove word tokenizer here (code) use the English
rules, still in their own buckets.

Determinism: a cluster is a connected component of "same language and (same exact key, or the
same 8 minhashes in one of the 14 bands)". Components do not depend on input order, and the kept
representative is the member with the smallest id (ingest makes ids unique), so the kept set is a
function of the set of input documents; shuffling the input changes only the output order, which
follows the input. Each removed document is recorded in data/dedup/removed.jsonl: its cluster
(the kept document's id), the cluster's size, the kind (exact: same normalised text as the kept
document; near: otherwise) and, for near, the MinHash estimate and the exact Jaccard similarity of
its 5-gram shingle set with the kept document's.
"""
from __future__ import annotations

import hashlib
import re
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.core import executor, files
from stages.core.params import WORD_TOKENIZER, MinHash
from stages.core.runtime import Ledger, StageContext, StageError, progress, stage

IN, OUT = "data/filtered", "data/dedup"
CACHE_MAX = 2_000_000  # distinct chunks cached per language before the cache starts over (bounds memory)


def exact_key(text: str) -> str:
    """Exact duplicate = same text after Unicode NFC, case folding and whitespace collapsing."""
    norm = re.sub(r"\s+", " ", unicodedata.normalize("NFC", text)).strip().casefold()
    return hashlib.sha1(norm.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------- shingles (datatrove's, faster)
class Normaliser:
    """datatrove's simplify_text for its default TextNormConfig, in fewer passes.

    Same steps in the same order: lowercase, digits -> 0, punctuation and whitespace runs -> one
    space, strip, NFD minus combining marks (Mn), strip. Punctuation and whitespace are collapsed
    in one regex instead of a translate + a regex; Mn characters are removed with str.replace for
    the few distinct ones a text contains instead of a Python loop over every character.
    """

    def __init__(self, config):
        from datatrove.utils.text import NUMBERS_PATTERN, PUNCTUATION, TextNormConfig, simplify_text

        self.fast = config == TextNormConfig()
        self.config, self._slow = config, simplify_text
        self._numbers = NUMBERS_PATTERN
        self._sep = re.compile("(?:[" + re.escape(PUNCTUATION) + r"]|\s)+")

    def __call__(self, text: str) -> str:
        if not self.fast:  # a non-default config: datatrove's own code
            return self._slow(text, self.config)
        text = self._sep.sub(" ", self._numbers.sub("0", text.lower())).strip()
        if not text.isascii():
            text = unicodedata.normalize("NFD", text)
            for ch in set(text):
                if unicodedata.category(ch) == "Mn":
                    text = text.replace(ch, "")
        return text.strip()


class Shingler:
    """The MinHash shingles of a text in one language: the uint64 hashes datatrove's get_shingles gives."""

    def __init__(self, language: str, n_grams: int, config):
        import xxhash
        from datatrove.utils.hashing import HashConfig, create_hash_func
        from datatrove.utils.word_tokenizers import load_word_tokenizer

        self.n = n_grams
        self.normalise = Normaliser(config.norm_config)
        # datatrove's default hash is a Python wrapper around xxh64_intdigest; call it directly
        default = config.hash_config == HashConfig(precision=64, hash_fc="xxhash")
        self._hash = xxhash.xxh64_intdigest if default else create_hash_func(config.hash_config)
        self._spacy = load_word_tokenizer(language).tokenizer  # spacy.blank(lang), as datatrove runs it
        tk = self._spacy.tokenizer
        self._special = frozenset(tk.rules)
        self._prefix, self._suffix, self._infix = tk.prefix_search, tk.suffix_search, tk.infix_finditer
        self._cache: dict[str, tuple[str, ...]] = {}
        self.new_chunks = self.spacy_chunks = 0  # distinct chunks tokenized so far / of which by spaCy

    def _one_token(self, chunk: str) -> bool:
        """True when spaCy would keep the chunk whole: no special case, no prefix, suffix or infix match.

        spaCy's tokenizer only splits a whitespace-free string where one of these matches, so such a
        chunk is its own single token; asking the regexes directly skips building a spaCy Doc and a
        vocabulary entry per new word, which was most of the cost. Anything else goes to spaCy.
        """
        return (chunk not in self._special and self._prefix(chunk) is None and self._suffix(chunk) is None
                and next(self._infix(chunk), None) is None)

    def _learn(self, chunks: list[str]) -> None:
        """Cache the tokens of new chunks: one-token chunks directly, the others through spaCy."""
        self.new_chunks += len(chunks)
        hard = []
        for c in chunks:
            if self._one_token(c):
                self._cache[c] = (c,)
            else:
                hard.append(c)
        if hard:
            self.spacy_chunks += len(hard)
            self._spacy_learn(hard)

    def _spacy_learn(self, chunks: list[str]) -> None:
        """Tokenize chunks in one spaCy call; tokens are assigned back to their chunk by offset."""
        text = " ".join(chunks)
        starts, pos = [], 0
        for c in chunks:
            starts.append(pos)
            pos += len(c) + 1
        starts.append(pos)
        out: list[list[str]] = [[] for _ in chunks]
        self._spacy.max_length = len(text) + 10
        with self._spacy.memory_zone():
            k = 0
            for tok in self._spacy.make_doc(text):
                while tok.idx >= starts[k + 1]:
                    k += 1
                t = tok.text.strip()  # datatrove's strip_strings: stripped, empty tokens dropped
                if t:
                    out[k].append(t)
        for c, toks in zip(chunks, out):
            self._cache[c] = tuple(toks)

    def words(self, text: str) -> list[str]:
        norm = self.normalise(text)
        chunks = norm.split(" ") if norm else []
        cache = self._cache
        distinct = dict.fromkeys(chunks)
        new = [c for c in distinct if c not in cache]
        if new and len(cache) + len(new) > CACHE_MAX:  # start over, with this document's chunks
            cache.clear()
            new = list(distinct)
        if new:
            self._learn(new)
        words: list[str] = []
        for c in chunks:
            words.extend(cache[c])
        return words

    def shingles(self, text: str) -> np.ndarray:
        """Hashes of the space-joined word n-grams, in text order (empty when fewer than n words)."""
        w, n = self.words(text), self.n
        grams = [" ".join(w[i : i + n]) for i in range(len(w) - n + 1)]
        return np.fromiter(map(self._hash, grams), dtype=np.uint64, count=len(grams))


class Signer:
    """MinHash signatures per language; the permutations are datatrove's (MinhashDedupSignature)."""

    def __init__(self, p: MinHash):
        from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature

        self.config = MinhashConfig(n_grams=p.n_grams, num_buckets=p.num_buckets,
                                    hashes_per_bucket=p.hashes_per_bucket, seed=p.seed)
        self._tmp = tempfile.TemporaryDirectory()  # datatrove's step wants a folder; nothing is written
        self._sig = MinhashDedupSignature(output_folder=self._tmp.name, config=self.config)
        self._by_tok: dict[str, Shingler] = {}

    def shingler(self, lang: str) -> Shingler:
        tok = WORD_TOKENIZER.get(lang, "eng")  # code and other non-prose languages: English rules
        if tok not in self._by_tok:
            self._by_tok[tok] = Shingler(tok, self.config.n_grams, self.config)
        return self._by_tok[tok]

    def signature(self, text: str, lang: str) -> np.ndarray | None:
        """num_buckets * hashes_per_bucket minhashes, or None when the text has fewer words than one n-gram."""
        sh = self.shingler(lang).shingles(text)
        if sh.size == 0:
            return None
        return np.array(self._sig.get_signature(sh.reshape(-1, 1)), dtype=np.uint64).ravel()

    def close(self) -> None:
        self._tmp.cleanup()


# ---------------------------------------------------------------- clustering
class UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        parent = self.parent
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        a, b = self.find(a), self.find(b)
        if a != b:
            self.parent[max(a, b)] = min(a, b)


@dataclass
class Scan:
    """What the first pass keeps of each document (no text)."""

    ids: list[str]
    langs: list[str]
    sources: list[str]
    group: list[tuple[str, str]]  # (lang, exact key): the document's exact-duplicate group
    group_rep: dict[tuple[str, str], int]  # group -> its member with the smallest id
    sigs: dict[int, np.ndarray]  # group representative -> signature (absent: too few words)


def scan(docs, p, signer: Signer | None, offset: int = 0) -> Scan:
    """Exact keys for every document; a signature for each exact group's smallest-id member only.
    `offset`: the index of the first document in the whole input (a task scans a range of it)."""
    s = Scan([], [], [], [], {}, {})
    for i, d in enumerate(docs):
        s.ids.append(d["id"])
        s.langs.append(d["lang"])
        s.sources.append(d["source"])
        key = (d["lang"], exact_key(d["text"]) if p.exact else f"#{offset + i}")
        s.group.append(key)
        j = s.group_rep.get(key)
        if j is None or d["id"] < s.ids[j]:
            s.group_rep[key] = i
            if j is not None:
                s.sigs.pop(j, None)
            if signer is not None:
                sig = signer.signature(d["text"], d["lang"])
                if sig is not None:
                    s.sigs[i] = sig
    return s


def check_unique(ids: list[str]) -> None:
    seen: set[str] = set()
    for x in ids:
        if x in seen:
            raise StageError(f"duplicate document id {x!r} in the input: a cluster keeps its smallest id, "
                             f"so ids must be unique (ingest rejects duplicates)")
        seen.add(x)


# ---------------------------------------------------------------- scale-out: signatures per task
SCAN = "scan.parquet"  # per task: id, lang, source, exact key and (for its exact groups' kept member) signature


class DedupTask:
    """One executor task: rows [start, end) of data/filtered -> their Scan (ids, exact keys, signatures).

    The signatures are the cost (spaCy, hashing); everything that needs the whole corpus (exact groups across
    tasks, banding, union-find, the second pass that writes) runs in the stage after the merge. A task signs
    the smallest-id member of each of its exact groups; the merge's group representative is the smallest of
    those, so its signature is always there. Picklable: the Signer (spaCy models) is built in each process.
    """

    def __init__(self, p, src: Path, signer: Signer | None = None):
        self.p, self.src, self._signer = p, Path(src), signer

    def __getstate__(self):
        return {**self.__dict__, "_signer": None}

    def __deepcopy__(self, memo):
        return DedupTask(self.p, self.src, self._signer)

    def __call__(self, rank: int, world_size: int, out: Path) -> dict:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._signer is None and self.p.minhash.enabled:
            self._signer = Signer(self.p.minhash)
        start, end = executor.row_range(files.count_docs(self.src), rank, world_size)
        rows = progress(executor.read_rows(self.src, start, end), end - start, f"[dedup] signatures (task {rank})")
        s = scan(rows, self.p, self._signer, offset=start)
        sigs = [s.sigs[i].tobytes() if i in s.sigs else None for i in range(len(s.ids))]
        pq.write_table(pa.table({"id": s.ids, "lang": s.langs, "source": s.sources,
                                 "key": [k for _, k in s.group], "sig": pa.array(sigs, pa.binary())}),
                       out / SCAN, compression="zstd")
        return {"rows": [start, end], "signed": len(s.sigs)}


def merge_scans(dirs: list[Path]) -> Scan:
    """The tasks' scans in rank order as the Scan of the whole input: exact groups re-resolved across tasks
    (each group's smallest id), keeping only the signatures of the groups' representatives."""
    import pyarrow.parquet as pq

    s = Scan([], [], [], [], {}, {})
    for d in dirs:
        t = pq.read_table(d / SCAN)
        offset = len(s.ids)
        s.ids += t.column("id").to_pylist()
        s.langs += t.column("lang").to_pylist()
        s.sources += t.column("source").to_pylist()
        s.group += list(zip(t.column("lang").to_pylist(), t.column("key").to_pylist()))
        for i, sig in enumerate(t.column("sig").to_pylist()):
            if sig is not None:
                s.sigs[offset + i] = np.frombuffer(sig, dtype=np.uint64)
    for i, key in enumerate(s.group):
        j = s.group_rep.get(key)
        if j is None or s.ids[i] < s.ids[j]:
            s.group_rep[key] = i
    reps = set(s.group_rep.values())
    s.sigs = {i: sig for i, sig in s.sigs.items() if i in reps}
    return s


def lsh_union(s: Scan, uf: UnionFind, bands: int, rows: int) -> None:
    """Union documents of one language that share all `rows` minhashes of at least one band."""
    first: dict[tuple, int] = {}
    for i, sig in s.sigs.items():
        lang = s.langs[i]
        for b in range(bands):
            key = (lang, b, sig[b * rows : (b + 1) * rows].tobytes())
            j = first.setdefault(key, i)
            if j != i:
                uf.union(i, j)


def representatives(s: Scan, p) -> list[int]:
    """For each document, the index of its cluster's kept document (the smallest id in the cluster)."""
    n = len(s.ids)
    uf = UnionFind(n)
    for i in range(n):
        uf.union(i, s.group_rep[s.group[i]])
    if p.minhash.enabled:
        lsh_union(s, uf, p.minhash.num_buckets, p.minhash.hashes_per_bucket)
    best: dict[int, int] = {}
    for i in range(n):
        r = uf.find(i)
        if r not in best or s.ids[i] < s.ids[best[r]]:
            best[r] = i
    return [best[uf.find(i)] for i in range(n)]


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.unique(a), np.unique(b)
    inter = np.intersect1d(a, b, assume_unique=True).size
    union = a.size + b.size - inter
    return inter / union if union else 1.0


# ---------------------------------------------------------------- stage
@dataclass
class Plan:
    """Which documents go, why, and into which cluster."""

    scan: Scan
    keep_of: list[int]  # document -> its cluster's kept document
    kind: dict[int, str]  # removed document -> "exact" | "near"
    size: dict[int, int]  # kept document -> cluster size


def plan(s: Scan, p) -> Plan:
    keep_of = representatives(s, p)
    size: dict[int, int] = {}
    for k in keep_of:
        size[k] = size.get(k, 0) + 1
    kind = {i: ("exact" if s.group[i] == s.group[k] else "near") for i, k in enumerate(keep_of) if k != i}
    return Plan(s, keep_of, kind, size)


def write(pl: Plan, src, out, rows_per_shard: int, signer: Signer | None) -> list[dict]:
    """Second pass: write the kept documents and removed.jsonl (one record per removed document)."""
    s, keep_of, kind = pl.scan, pl.keep_of, pl.kind
    # near removals get their exact Jaccard with the kept document, from shingles made in this pass
    need = {i for i, k in kind.items() if k == "near"}
    need |= {keep_of[i] for i in need}
    shingles: dict[int, np.ndarray] = {}
    removed: list[dict] = []

    def kept_rows():
        for i, d in enumerate(files.read_docs(src)):
            if i >= len(s.ids) or d["id"] != s.ids[i]:
                raise RuntimeError(f"{src} changed while dedup was reading it (row {i})")
            if i in need:
                shingles[i] = signer.shingler(d["lang"]).shingles(d["text"])
            if i not in kind:
                yield d
        # all rows consumed: the removal log can be filled (write_corpus writes it after the rows)
        for i in sorted(kind):
            k = keep_of[i]
            rec = {"id": s.ids[i], "source": s.sources[i], "lang": s.langs[i], "kind": kind[i],
                   "cluster": s.ids[k], "cluster_size": pl.size[k]}
            if kind[i] == "near":
                a, b = s.sigs[s.group_rep[s.group[i]]], s.sigs[s.group_rep[s.group[k]]]
                rec["minhash_similarity"] = round(float(np.mean(a == b)), 4)
                rec["jaccard"] = round(jaccard(shingles[i], shingles[k]), 4)
            removed.append(rec)

    files.write_corpus(out, kept_rows(), rows_per_shard, "removed.jsonl", removed)
    return removed


def metrics(pl: Plan, p) -> tuple[dict, Ledger]:
    s, n = pl.scan, len(pl.scan.ids)
    ledger = Ledger(read=n, kept=n - len(pl.kind))
    per_lang: dict[str, dict] = {}
    for i in range(n):
        c = per_lang.setdefault(s.langs[i], {"read": 0, "kept": 0, "exact": 0, "near_duplicate": 0})
        c["read"] += 1
        if i in pl.kind:
            rule = "exact" if pl.kind[i] == "exact" else "near_duplicate"
            ledger.drop(rule)
            c[rule] += 1
        else:
            c["kept"] += 1
    return {
        **ledger.as_dict(),
        "near_duplicate_clusters": len({pl.keep_of[i] for i, k in pl.kind.items() if k == "near"}),
        # exact groups with fewer words than one n-gram: MinHash cannot see them (still exact-deduplicated)
        "not_shingled": sum(1 for r in s.group_rep.values() if r not in s.sigs) if p.minhash.enabled else 0,
        "per_language": dict(sorted(per_lang.items())),
    }, ledger


def run(ctx: StageContext) -> None:
    """Signatures as `executor.tasks` tasks on the configured executor (default: one, in this process), then
    clustering and the second pass here. The output does not depend on tasks or workers (tested)."""
    p, ex = ctx.params.dedup, ctx.params.executor
    src, out = ctx.path(IN), ctx.path(OUT)
    signer = Signer(p.minhash) if p.minhash.enabled else None  # reused by in-process tasks and by the writer
    task = DedupTask(p, src, signer if ex.workers == 1 else None)
    inputs = lambda: {"dedup": p.model_dump(mode="json"), "input": executor.input_manifest(src)}
    try:
        with executor.task_results(ctx.root, ex, "dedup", task, out, inputs) as dirs:
            s = merge_scans(dirs)
            check_unique(s.ids)
            pl = plan(s, p)
            write(pl, src, out, ctx.params.ingest.rows_per_shard, signer)
    finally:
        if signer is not None:
            signer.close()
    m, ledger = metrics(pl, p)
    ctx.write_metrics("metrics/dedup.json", m)
    ctx.dataset(OUT, "output")
    ctx.summary(f"{ledger.summary()}, {m['near_duplicate_clusters']} near-duplicate clusters"
                f"{executor.describe(ex)} -> {OUT}")


def main() -> None:
    with stage("dedup") as ctx:
        run(ctx)


if __name__ == "__main__":
    main()
