"""dedup quality on planted near-duplicates in real prose, measured against exact Jaccard.

The prose is ../shared/corpora when present, else the project's sample texts (data/sample/text).

- The stage's shingles and signatures are bit-identical to datatrove's MinhashDedupSignature (so its
  clusters are those of datatrove's pipeline, which Lucie ran), including on edge-case text.
- Recall: copies with 1-2 % word edits (5-gram Jaccard ~0.8-0.9, where 14 x 8 LSH catches a pair with
  probability >= 0.92) land in their original's cluster; recall against exact Jaccard >= 0.8 is >= 0.9.
  Copies with 3-5 % edits (Jaccard ~0.62-0.79) are caught with probability 0.3-0.87 by design of
  Lucie's settings, so for them only precision is asserted.
- Precision: every pair put in one cluster has Jaccard >= 0.55, and no unrelated document is removed.
- Determinism: shuffling the input gives the same kept set and the same removal records.
- Per language: the same text under two languages is kept in both; near copies join their own language.
"""
from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

import numpy as np
import pytest

from stages import dedup
from stages.core import files, params

PROJECT = Path(__file__).resolve().parent.parent
LANGS = ["en", "fr", "de"]
# Real prose (../shared/corpora, 1-20 KB per document) when it is there, else the project's own sample texts
CORPORA = PROJECT.parent / "shared" / "corpora"
SOURCE = (CORPORA, "real-{lang}.jsonl") if (CORPORA / "real-en.jsonl").exists() else \
    (PROJECT / "data" / "sample" / "text", "{lang}.jsonl")


def _quality_module():
    spec = importlib.util.spec_from_file_location("dedup_quality", PROJECT / "benchmarks" / "dedup_quality.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


q = _quality_module()


@pytest.fixture(scope="module")
def planted():
    """3 languages x (8 originals + 4 unrelated + 10 copies at 1/2/3/5 % edits) = 66 documents."""
    docs, plants = q.plant(q.load_corpora(SOURCE[0], LANGS, SOURCE[1]), seed=1, per_lang=8,
                           rates=(0.01, 0.02, 0.03, 0.05), background=4)
    return docs, plants


@pytest.fixture(scope="module")
def signer():
    s = dedup.Signer(params.Dedup().minhash)
    yield s
    s.close()


@pytest.fixture(scope="module")
def truth(planted, signer):
    docs, _ = planted
    sets = q.shingle_sets(docs, signer)
    return sets, q.similar_pairs(docs, sets, min_j=0.05)


def write_filtered(root: Path, rows: list[dict]) -> None:
    d = root / "data/filtered"
    d.mkdir(parents=True)
    files.write_manifest(d, files.write_docs(d, rows, rows_per_shard=25))


def read_removed(root: Path) -> list[dict]:
    return [json.loads(x) for x in (root / "data/dedup/removed.jsonl").read_text(encoding="utf-8").splitlines()]


# ---------------------------------------------------------------- same shingles as datatrove
EDGE = [
    "",
    "one two three four",  # fewer words than one 5-gram
    "Don't stop: it's 3.14 o'clock, isn't it? I cannot—won't—go. “Quoted” «guillemets» ‘single’ (parens) [x].",
    "L'homme qu'il voyait aujourd'hui, jusqu'à 12h30 ; c'est-à-dire l’été dernier… Déjà vu, ÇA VA ?",
    "Straße, Maß, Fußgänger-Übergang am 3. Oktober 2023 um 14:05 Uhr (§ 12 Abs. 3) – ‚so‘ „hier“.",
    "¡Qué niño! ¿Cómo estás? Él dijo: «no sé». Pingüino, 1.234,56 €, 50% off, e-mail: a@b.co https://x.org/y?z=1",
    "caffè perché l'amico dell'anno po' però—così (1920-1925) dall’Italia; 3° piano, N° 4, 2ª volta",
    "tabs\tand\nnewlines\r\n  and   spaces\u00a0nbsp\u2009thin \u200bzero-width and combining e\u0301 a\u0308 CAFÉ",
    "def f(x):\n    return {'a': [x + 1, x ** 2]}  # comment with émoji 🙂 and ✓ marks",
]


@pytest.mark.parametrize("lang", ["en", "fr", "de", "es", "it", "code"])
def test_shingles_and_signatures_equal_datatrove(lang, signer, planted, tmp_path):
    from datatrove.pipeline.dedup.minhash import MinhashDedupSignature
    from datatrove.utils.text import simplify_text

    ref = MinhashDedupSignature(output_folder=str(tmp_path), config=signer.config,
                                language=params.WORD_TOKENIZER.get(lang, "eng"))
    docs, _ = planted
    texts = EDGE + [d["text"] for d in docs if d["lang"] == lang][:6]
    sh = signer.shingler(lang)
    for text in texts:
        assert sh.normalise(text) == simplify_text(text, signer.config.norm_config), text[:60]
        ours, theirs = sh.shingles(text), ref.get_shingles(text).ravel()
        assert np.array_equal(ours, theirs), text[:60]
        sig = signer.signature(text, lang)
        if theirs.size == 0:
            assert sig is None
        else:
            assert np.array_equal(sig, np.array(ref.get_signature(theirs.reshape(-1, 1)), dtype=np.uint64).ravel())


def test_short_text_falls_back_to_spacy_for_special_cases(signer):
    # "cannot" is an English tokenizer exception (can + not): the one-token shortcut must not take it
    assert signer.shingler("en").words("I cannot go there now") == ["i", "can", "not", "go", "there", "now"]


def test_chunk_cache_restart_gives_the_same_shingles(planted, signer, monkeypatch):
    docs, _ = planted
    texts = [d["text"] for d in docs if d["lang"] == "de"][:4]
    warm = dedup.Shingler("deu", 5, signer.config)
    expected = [warm.shingles(t) for t in texts]
    monkeypatch.setattr(dedup, "CACHE_MAX", 0)  # the cache starts over at every document
    cold = dedup.Shingler("deu", 5, signer.config)
    assert all(np.array_equal(cold.shingles(t), e) for t, e in zip(texts, expected))
    assert cold.new_chunks > warm.new_chunks and len(cold._cache) < warm.new_chunks


# ---------------------------------------------------------------- recall and precision
def test_planted_copies_are_as_similar_as_planned(planted, truth):
    docs, plants = planted
    sets, _ = truth
    index = {d["id"]: i for i, d in enumerate(docs)}
    for p in plants:
        j = dedup.jaccard(sets[index[p["copy"]]], sets[index[p["original"]]])
        # one edited word breaks <= 5 shingles (<= 6 for an insertion): J ~ (1-r)^5 / (2 - (1-r)^5)
        assert {0.01: 0.85, 0.02: 0.76, 0.03: 0.68, 0.05: 0.58}[p["rate"]] <= j <= 0.97, (p, j)


def test_recall_for_light_edits_and_precision(planted, truth):
    docs, plants = planted
    sets, pairs = truth
    keep_of, _ = q.ours(docs)
    index = {d["id"]: i for i, d in enumerate(docs)}

    light = [p for p in plants if p["rate"] <= 0.02]
    caught = sum(keep_of[index[p["copy"]]] == keep_of[index[p["original"]]] for p in light)
    assert len(light) >= 15 and caught / len(light) >= 0.9, (caught, len(light))
    assert q.pair_scores(keep_of, pairs, 0.8)["recall"] >= 0.9

    # precision: every pair sharing a cluster is truly similar; no unrelated document is removed
    for group in q.partition(keep_of):
        for a in group:
            for b in group:
                if a < b:
                    assert pairs.get((a, b), 0.0) >= 0.55, (docs[a]["id"], docs[b]["id"], pairs.get((a, b)))
    planted_ids = {p["copy"] for p in plants} | {p["original"] for p in plants}
    removed = [docs[i]["id"] for i, k in enumerate(keep_of) if k != i]
    assert removed and set(removed) <= planted_ids
    assert q.doc_scores(keep_of, pairs, 0.5)["unrelated_removed"] == 0


def test_lsh_catch_rate_follows_the_s_curve(planted, truth):
    """Across all planted pairs, the number caught is within a loose binomial band of the S-curve's sum."""
    docs, plants = planted
    sets, _ = truth
    keep_of, _ = q.ours(docs)
    index = {d["id"]: i for i, d in enumerate(docs)}
    probs, caught = [], 0
    for p in plants:
        a, b = index[p["copy"]], index[p["original"]]
        probs.append(q.lsh_probability(dedup.jaccard(sets[a], sets[b])))
        caught += keep_of[a] == keep_of[b]
    mean, sd = sum(probs), sum(x * (1 - x) for x in probs) ** 0.5
    assert abs(caught - mean) <= 3 * sd + 1, (caught, mean, sd)


# ---------------------------------------------------------------- the stage: determinism, records, languages
def test_shuffled_input_keeps_the_same_documents(planted, make_ctx, tmp_path):
    docs, _ = planted
    results = []
    for k, order in enumerate([docs, list(reversed(docs)), random.Random(7).sample(docs, len(docs))]):
        root = tmp_path / f"run{k}"
        write_filtered(root, order)
        dedup.run(make_ctx("dedup", root=root))
        kept = {d["id"] for d in files.read_docs(root / "data/dedup")}
        removed = sorted(read_removed(root), key=lambda r: r["id"])
        results.append((kept, removed, files.read_json(root / "metrics/dedup.json")))
    assert results[0][1], "the planted corpus must produce removals"
    assert results[0] == results[1] == results[2]


def test_removed_records_say_why(planted, truth, make_ctx, tmp_path):
    docs, _ = planted
    sets, _ = truth
    write_filtered(tmp_path, docs)
    dedup.run(make_ctx("dedup"))
    index = {d["id"]: i for i, d in enumerate(docs)}
    kept = {d["id"] for d in files.read_docs(tmp_path / "data/dedup")}
    removed = read_removed(tmp_path)
    sizes: dict[str, int] = {}
    for r in removed:
        sizes[r["cluster"]] = sizes.get(r["cluster"], 1) + 1
    for r in removed:
        assert r["cluster"] in kept and r["id"] not in kept
        assert r["kind"] == "near" and r["lang"] == docs[index[r["id"]]]["lang"]
        assert r["cluster"] == min(r["id"], r["cluster"])  # the smallest id of a cluster is kept
        assert r["cluster_size"] == sizes[r["cluster"]]
        exact = dedup.jaccard(sets[index[r["id"]]], sets[index[r["cluster"]]])
        assert r["jaccard"] == round(exact, 4)
        assert abs(r["minhash_similarity"] - exact) < 0.15  # 112 minhashes: sd of the estimate <= 0.05
    m = files.read_json(tmp_path / "metrics/dedup.json")
    assert m["read"] == len(docs) == m["kept"] + m["dropped_total"]
    assert m["dropped"] == {"near_duplicate": len(removed)} and m["kept"] == len(kept)
    assert sum(c["read"] for c in m["per_language"].values()) == m["read"]
    for lang, c in m["per_language"].items():
        assert c["read"] == c["kept"] + c["exact"] + c["near_duplicate"]
        assert c["near_duplicate"] == sum(1 for r in removed if r["lang"] == lang)


def test_languages_are_deduplicated_separately(planted, make_ctx, tmp_path):
    docs, _ = planted
    text = next(d["text"] for d in docs if d["lang"] == "en" and "~" not in d["id"])
    near = q.edit_words(text, 0.01, random.Random(3), text.split())
    base = {k: "" for k in q.FIELDS} | {"meta": "{}"}
    rows = [
        {**base, "id": "a-en", "lang": "en", "text": text},
        {**base, "id": "b-fr", "lang": "fr", "text": text},  # same text, other language: kept
        {**base, "id": "c-code", "lang": "code", "text": text},  # code shares English word rules, not buckets
        {**base, "id": "d-fr-near", "lang": "fr", "text": near},
        {**base, "id": "e-en-near", "lang": "en", "text": near},
        {**base, "id": "f-en-copy", "lang": "en", "text": text.upper()},  # exact after case folding
    ]
    write_filtered(tmp_path, rows)
    dedup.run(make_ctx("dedup"))
    assert [d["id"] for d in files.read_docs(tmp_path / "data/dedup")] == ["a-en", "b-fr", "c-code"]
    got = {r["id"]: (r["kind"], r["cluster"], r["cluster_size"]) for r in read_removed(tmp_path)}
    assert got == {"d-fr-near": ("near", "b-fr", 2), "e-en-near": ("near", "a-en", 3),
                   "f-en-copy": ("exact", "a-en", 3)}
    m = files.read_json(tmp_path / "metrics/dedup.json")
    assert m["per_language"]["en"] == {"read": 3, "kept": 1, "exact": 1, "near_duplicate": 1}
    assert m["per_language"]["code"] == {"read": 1, "kept": 1, "exact": 0, "near_duplicate": 0}
    assert m["near_duplicate_clusters"] == 2


def test_duplicate_ids_are_a_clear_error(make_ctx, tmp_path):
    from stages.core.runtime import StageError

    base = {k: "" for k in q.FIELDS} | {"meta": "{}", "lang": "en"}
    write_filtered(tmp_path, [{**base, "id": "x", "text": "one text here"}, {**base, "id": "x", "text": "another"}])
    with pytest.raises(StageError, match="duplicate document id 'x'"):
        dedup.run(make_ctx("dedup"))
