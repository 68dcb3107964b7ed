"""Precision and recall of the dedup stage's MinHash LSH against exact Jaccard, next to datatrove's.

Run by hand:  .venv/bin/python benchmarks/dedup_quality.py [--corpora DIR] [--seed 0] [--originals 40]
              [--no-datatrove]

Why: MinHash LSH only estimates "these two documents share most of their 5-grams". This script plants
near-duplicates with known edit rates into real prose (../shared/corpora/real-{en,fr,de,es,it}.jsonl),
computes the exact Jaccard similarity of every same-language pair's 5-gram shingle sets, and scores the
clusters of our stage and of datatrove's 4-stage MinHash pipeline (14 buckets x 8 hashes, 5-grams, run
per language with LocalPipelineExecutor) on the same corpus, in the same run.

Planted corpus (`plant`, deterministic from --seed): in each language, --originals documents drawn at
random get a copy with word-level edits at one of RATES (cycled, so every rate has the same count); every
fourth original gets a second copy at the next rate (clusters of three). An edit at a word position is a
substitution, an insertion after it or a deletion, chosen uniformly; substituted and inserted words are
drawn from the same language's other documents. The remaining documents of each file are the unrelated
background; their natural overlaps (German laws share clauses) count in the ground truth like any pair.

Ground truth: exact Jaccard of the two documents' 5-gram shingle sets, shingled exactly as the stage
shingles (datatrove's normalisation, spaCy word tokenizer, xxhash64 of the space-joined 5-gram; the
stage's shingles equal datatrove's, see tests/test_dedup_quality.py). A pair is a true near-duplicate when
J >= 0.72: (1/14)^(1/8) = 0.719 is the threshold datatrove documents for 14 x 8 (the steepest part of
the S-curve P(s) = 1 - (1 - s^8)^14: P(0.72) = 0.65, P(0.8) = 0.92; P = 0.5 at s = 0.685). Scores at
0.5 / 0.6 / 0.8 / 0.9 are printed too.

Scores: pair level, a predicted pair is two documents in the same cluster (what removal acts on);
document level, redundancy recall = share of the removable documents (sum over true-pair components of
size - 1) that were removed, removal precision = share of removed documents whose Jaccard with the kept
document of their cluster is >= t, and "unrelated removed" = removed documents with no partner at J >= 0.5.
Per edit rate: the share of planted (copy, original) pairs that share a cluster, next to the share the
S-curve predicts from their Jaccard (a check that the banding works as designed).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from stages import dedup  # noqa: E402
from stages.core import params
from stages.core.params import WORD_TOKENIZER  # noqa: E402

LANGS = ["en", "fr", "de", "es", "it"]
RATES = (0.01, 0.02, 0.03, 0.05, 0.08, 0.10, 0.15, 0.20)
TRUTH = 0.72  # ground-truth threshold (see the docstring)
THRESHOLDS = (0.5, 0.6, 0.72, 0.8, 0.9)
FIELDS = ("id", "text", "lang", "source", "category", "license", "url", "date", "meta")


# ---------------------------------------------------------------- corpus
def load_corpora(corpora: Path, langs=LANGS, pattern: str = "real-{lang}.jsonl") -> list[dict]:
    docs = []
    for lang in langs:
        for line in open(corpora / pattern.format(lang=lang), encoding="utf-8"):
            d = json.loads(line)
            docs.append({"id": d["id"], "text": d["text"], "lang": d["lang"], "source": pattern.format(lang=lang),
                         "category": "book", "license": d.get("license", ""), "url": d.get("url", ""),
                         "date": str(d.get("date", "")), "meta": "{}"})
    return docs


def edit_words(text: str, rate: float, rng: random.Random, pool: list[str]) -> str:
    """Edit round(rate * words) distinct word positions: substitute, insert after, or delete, uniformly."""
    parts = re.split(r"(\s+)", text)  # words at even indices, separators kept so the layout survives
    slots = [i for i in range(0, len(parts), 2) if parts[i]]
    for i in rng.sample(slots, max(1, round(rate * len(slots)))):
        op = rng.randrange(3)
        if op == 0:
            parts[i] = rng.choice(pool)
        elif op == 1:
            parts[i] = f"{parts[i]} {rng.choice(pool)}"
        else:
            parts[i] = ""
    return "".join(parts)


def plant(docs: list[dict], seed: int = 0, per_lang: int = 40, rates=RATES, background: int | None = None):
    """(corpus, planted): the documents plus edited copies, shuffled; planted lists (copy, original, rate).

    `background` caps the unrelated documents per language (None: all the others)."""
    rng = random.Random(f"dedup-quality/{seed}")
    out, planted = [], []
    for lang in sorted({d["lang"] for d in docs}):
        mine = sorted((d for d in docs if d["lang"] == lang), key=lambda d: d["id"])
        originals = rng.sample(mine, min(per_lang, len(mine)))
        rest = [d for d in mine if d not in originals]
        if background is not None:
            rest = rng.sample(rest, min(background, len(rest)))
        pool = [w for d in rest for w in d["text"].split()] or [w for d in mine for w in d["text"].split()]
        out += originals + rest
        for k, orig in enumerate(originals):
            copies = [rates[k % len(rates)]] + ([rates[(k + 1) % len(rates)]] if k % 4 == 0 else [])
            for c, rate in enumerate(copies):
                cid = f"{orig['id']}~edit{round(rate * 100):02d}{'ab'[c]}"
                out.append({**orig, "id": cid, "text": edit_words(orig["text"], rate, rng, pool)})
                planted.append({"copy": cid, "original": orig["id"], "rate": rate, "lang": lang})
    rng.shuffle(out)
    return out, planted


# ---------------------------------------------------------------- ground truth
def shingle_sets(docs: list[dict], signer: dedup.Signer) -> list[np.ndarray]:
    return [np.unique(signer.shingler(d["lang"]).shingles(d["text"])) for d in docs]


def similar_pairs(docs: list[dict], sets: list[np.ndarray], min_j: float = 0.3) -> dict[tuple[int, int], float]:
    """Exact Jaccard of every same-language pair with J >= min_j, from a sparse shingle incidence matrix."""
    from scipy import sparse

    out = {}
    for lang in sorted({d["lang"] for d in docs}):
        idx = [i for i, d in enumerate(docs) if d["lang"] == lang and sets[i].size]
        if len(idx) < 2:
            continue
        allsh = np.concatenate([sets[i] for i in idx])
        _, col = np.unique(allsh, return_inverse=True)
        row = np.repeat(np.arange(len(idx)), [sets[i].size for i in idx])
        x = sparse.csr_matrix((np.ones(len(col), dtype=np.int32), (row, col)), shape=(len(idx), col.max() + 1))
        inter = sparse.triu(x @ x.T, k=1).tocoo()
        sizes = np.array([sets[i].size for i in idx])
        j = inter.data / (sizes[inter.row] + sizes[inter.col] - inter.data)
        for a, b, v in zip(inter.row, inter.col, j):
            if v >= min_j:
                out[(min(idx[a], idx[b]), max(idx[a], idx[b]))] = float(v)
    return out


def lsh_probability(s: float, bands: int = 14, rows: int = 8) -> float:
    return 1 - (1 - s**rows) ** bands


# ---------------------------------------------------------------- the two systems
def ours(docs: list[dict], p=None) -> tuple[list[int], list[int]]:
    """(cluster label, kept index) per document from the stage's own scan + plan."""
    p = p or params.Dedup()
    signer = dedup.Signer(p.minhash)
    try:
        pl = dedup.plan(dedup.scan(docs, p, signer), p)
    finally:
        signer.close()
    return pl.keep_of, pl.keep_of


def datatrove_config(p=None):
    from datatrove.pipeline.dedup.minhash import MinhashConfig

    m = (p or params.Dedup()).minhash
    return MinhashConfig(n_grams=m.n_grams, num_buckets=m.num_buckets, hashes_per_bucket=m.hashes_per_bucket,
                         seed=m.seed)


def write_datatrove_input(docs: list[dict], work: Path) -> list[str]:
    """One JSONL file per language under work/input/<lang>/ (datatrove's reader input)."""
    langs = sorted({d["lang"] for d in docs})
    for lang in langs:
        (work / "input" / lang).mkdir(parents=True, exist_ok=True)
        with open(work / "input" / lang / "docs.jsonl", "w", encoding="utf-8") as f:
            for d in docs:
                if d["lang"] == lang:
                    f.write(json.dumps({"id": d["id"], "text": d["text"], "lang": d["lang"]}, ensure_ascii=False) + "\n")
    return langs


def datatrove_stage(stage: int, work: Path, langs: list[str], config) -> None:
    """One of datatrove's four MinHash stages, for every language, with LocalPipelineExecutor in-process."""
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter,
                                                  MinhashDedupSignature)
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    for lang in langs:
        w, inp = work / "dt" / lang, str(work / "input" / lang)
        tasks = 1
        if stage == 1:
            pipe = [JsonlReader(inp), MinhashDedupSignature(output_folder=str(w / "sigs"), config=config,
                                                            language=WORD_TOKENIZER.get(lang, "eng"))]
        elif stage == 2:  # one task per bucket: the stage asserts tasks % num_buckets == 0
            pipe, tasks = [MinhashDedupBuckets(input_folder=str(w / "sigs"), output_folder=str(w / "buckets"),
                                               config=config)], config.num_buckets
        elif stage == 3:
            pipe = [MinhashDedupCluster(input_folder=str(w / "buckets"), output_folder=str(w / "remove"),
                                        config=config, save_cluster_id=True)]
        else:
            pipe = [JsonlReader(inp),
                    MinhashDedupFilter(input_folder=str(w / "remove"), load_cluster_ids=True,
                                       exclusion_writer=JsonlWriter(str(w / "removed"), compression=None)),
                    JsonlWriter(str(w / "kept"), compression=None)]
        LocalPipelineExecutor(pipeline=pipe, tasks=tasks, workers=1, logging_dir=str(w / f"logs{stage}")).run()


def datatrove_result(docs: list[dict], work: Path) -> tuple[list[int], list[int]]:
    """(cluster label, kept index) per document, from stage 4's kept/removed files and cluster ids."""
    index = {d["id"]: i for i, d in enumerate(docs)}
    label, removed = list(range(len(docs))), set()
    by_cluster: dict[tuple, list[int]] = {}
    for lang in sorted({d["lang"] for d in docs}):
        for kind in ("kept", "removed"):
            for f in sorted((work / "dt" / lang / kind).glob("*.jsonl")):
                for line in open(f, encoding="utf-8"):
                    r = json.loads(line)
                    i = index[r["id"]]
                    if kind == "removed":
                        removed.add(i)
                    cid = r["metadata"].get("minhash_cluster_id", -1)
                    if cid != -1:
                        by_cluster.setdefault((lang, cid), []).append(i)
    keep = list(range(len(docs)))
    for members in by_cluster.values():
        kept = [i for i in members if i not in removed]
        assert len(kept) == 1, members
        for i in members:
            label[i], keep[i] = min(members), kept[0]
    return label, keep


def run_datatrove(docs: list[dict], p=None) -> tuple[list[int], list[int], dict]:
    """datatrove's 4 stages in this process, one after the other; its logs and stats tables are discarded."""
    config = datatrove_config(p)
    sink = io.StringIO()
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stderr(sink), contextlib.redirect_stdout(sink):
        work = Path(tmp)
        langs = write_datatrove_input(docs, work)
        times = {}
        for stage in (1, 2, 3, 4):
            t = time.perf_counter()
            datatrove_stage(stage, work, langs, config)
            times[stage] = time.perf_counter() - t
        label, keep = datatrove_result(docs, work)
    return label, keep, times


# ---------------------------------------------------------------- scores
def partition(label: list[int]) -> set[frozenset]:
    groups: dict[int, set] = {}
    for i, c in enumerate(label):
        groups.setdefault(c, set()).add(i)
    return {frozenset(g) for g in groups.values() if len(g) > 1}


def pair_scores(label: list[int], truth: dict, t: float) -> dict:
    pred = {(min(a, b), max(a, b)) for g in partition(label) for a in g for b in g if a < b}
    true = {k for k, v in truth.items() if v >= t}
    tp = len(pred & true)
    return {"pred": len(pred), "true": len(true), "tp": tp,
            "precision": tp / len(pred) if pred else 1.0, "recall": tp / len(true) if true else 1.0}


def doc_scores(keep: list[int], truth: dict, t: float) -> dict:
    removed = [i for i, k in enumerate(keep) if k != i]
    uf = dedup.UnionFind(len(keep))
    for (a, b), v in truth.items():
        if v >= t:
            uf.union(a, b)
    comps: dict[int, list[int]] = {}
    for i in range(len(keep)):
        comps.setdefault(uf.find(i), []).append(i)
    removable = sum(len(c) - 1 for c in comps.values())
    rem = set(removed)
    hit = sum(min(len(rem.intersection(c)), len(c) - 1) for c in comps.values())
    justified = sum(1 for i in removed if truth.get((min(i, keep[i]), max(i, keep[i])), 0.0) >= t)
    related = {x for pair, v in truth.items() if v >= 0.5 for x in pair}
    return {"removed": len(removed), "removable": removable,
            "redundancy_recall": hit / removable if removable else 1.0,
            "removal_precision": justified / len(removed) if removed else 1.0,
            "unrelated_removed": sum(1 for i in removed if i not in related)}


def per_rate(label: list[int], docs: list[dict], planted: list[dict], sets: list[np.ndarray]) -> dict:
    index = {d["id"]: i for i, d in enumerate(docs)}
    out = {}
    for rate in sorted({p["rate"] for p in planted}):
        js, caught, expect = [], 0, 0.0
        for p in planted:
            if p["rate"] != rate:
                continue
            a, b = index[p["copy"]], index[p["original"]]
            j = dedup.jaccard(sets[a], sets[b])
            js.append(j)
            caught += label[a] == label[b]
            expect += lsh_probability(j)
        out[rate] = {"pairs": len(js), "jaccard_mean": float(np.mean(js)), "jaccard_min": float(np.min(js)),
                     "jaccard_max": float(np.max(js)), "caught": caught / len(js), "expected": expect / len(js)}
    return out


# ---------------------------------------------------------------- report
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpora", type=Path, default=ROOT.parent / "shared/corpora")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--originals", type=int, default=40, help="planted originals per language")
    ap.add_argument("--no-datatrove", action="store_true")
    a = ap.parse_args()

    docs, planted = plant(load_corpora(a.corpora), a.seed, a.originals)
    mb = sum(len(d["text"].encode()) for d in docs) / 1e6
    print(f"planted corpus: {len(docs)} docs ({mb:.1f} MB), {len(planted)} planted copies, seed {a.seed}")
    t = time.perf_counter()
    signer = dedup.Signer(params.Dedup().minhash)
    sets = shingle_sets(docs, signer)
    signer.close()
    truth = similar_pairs(docs, sets, min_j=0.3)
    print(f"ground truth: {len(truth)} same-language pairs with J >= 0.3 ({time.perf_counter() - t:.1f} s)")

    t = time.perf_counter()
    systems = {"ours": ours(docs)}
    print(f"ours: {time.perf_counter() - t:.1f} s (spaCy already loaded by the ground truth; for speed see minhash_speed.py)")
    if not a.no_datatrove:
        label, keep, times = run_datatrove(docs)
        systems["datatrove"] = (label, keep)
        print("datatrove 4-stage: " + ", ".join(f"stage {k} {v:.1f} s" for k, v in times.items())
              + f", total {sum(times.values()):.1f} s")
        same = partition(systems["ours"][0]) == partition(label)
        print(f"same clusters as ours: {'yes' if same else 'NO'}")

    print(f"\npair level (pairs in one cluster vs pairs with exact J >= t); ground truth t = {TRUTH}")
    print(f"{'system':<10} {'t':>5} {'true':>6} {'pred':>6} {'tp':>6} {'precision':>10} {'recall':>8}")
    for name, (label, _) in systems.items():
        for th in THRESHOLDS:
            s = pair_scores(label, truth, th)
            print(f"{name:<10} {th:>5} {s['true']:>6} {s['pred']:>6} {s['tp']:>6} {s['precision']:>10.3f} {s['recall']:>8.3f}")
    print("\ndocument level")
    print(f"{'system':<10} {'t':>5} {'removable':>9} {'removed':>8} {'redund. recall':>15} {'removal prec.':>14} {'unrelated removed':>18}")
    for name, (_, keep) in systems.items():
        for th in THRESHOLDS:
            s = doc_scores(keep, truth, th)
            print(f"{name:<10} {th:>5} {s['removable']:>9} {s['removed']:>8} {s['redundancy_recall']:>15.3f} "
                  f"{s['removal_precision']:>14.3f} {s['unrelated_removed']:>18}")
    print("\nplanted pairs by edit rate: share in one cluster, and the S-curve's expectation from their Jaccard")
    print(f"{'rate':>5} {'pairs':>6} {'J mean':>7} {'J min':>6} {'J max':>6} "
          + " ".join(f"{n + ' caught':>16}" for n in systems) + f" {'expected':>9}")
    rates = {n: per_rate(label, docs, planted, sets) for n, (label, _) in systems.items()}
    for rate, r in rates["ours"].items():
        print(f"{rate:>5.2f} {r['pairs']:>6} {r['jaccard_mean']:>7.3f} {r['jaccard_min']:>6.3f} {r['jaccard_max']:>6.3f} "
              + " ".join(f"{rates[n][rate]['caught']:>16.3f}" for n in systems) + f" {r['expected']:>9.3f}")


if __name__ == "__main__":
    main()
