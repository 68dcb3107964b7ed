"""filter + dedup on a tiny planted corpus: each noise document is dropped by the rule
meant to catch it (with a drop record), clean text and code survive, the ledger adds up;
dedup removes an exact and a near duplicate into the cluster of its smallest id, and a
rerun writes byte-identical files."""
from __future__ import annotations

import copy
import json
import tarfile
from pathlib import Path

import pytest
import yaml

from stages import dedup, filter as filt
from stages.core import files, params, runtime, tracking

PROJECT = Path(__file__).resolve().parent.parent
SAMPLE = PROJECT / "data" / "sample" / "text"
LID_MODEL = PROJECT / "assets" / "lid" / "lid.176.ftz"
BLOCKLIST = PROJECT / ".venv/lib/python3.11/site-packages/datatrove/assets/url_filterblacklistsv0_3_0.tar.gz"

SPAM = "\n\n".join([
    "Buy now and save up to seventy percent on all of our premium products, today only! "
    "Click here to claim your exclusive free gift before this amazing offer expires tonight! "
    "Stock is limited, so order right away and enjoy free shipping on every single order!"
] * 15)
# One sentence of 30-40 words: under Gopher's 50-word minimum, but long enough not to trip the
# top-4-gram repetition check first (see data/sample/make_noise.py, TOO_SHORT).
TOO_SHORT = ("The small bakery on the corner of our street sells fresh bread, warm croissants and apple pastries "
             "every morning before seven o'clock, and by nine the shelves are usually completely empty again.")

# id -> the filter rule expected to drop it
NOISE = {"spam": "gopher_repetition", "blocked": "url", "wrong-lang": "language", "too-short": "gopher_quality"}
CLEAN = ["en-a", "en-b", "fr-a", "fr-b", "code-a", "en-a-copy", "fr-a-near", "en-b-near"]


def ctx_for(name: str, root: Path, overrides: dict | None = None) -> runtime.StageContext:
    """Module-scoped twin of conftest's make_ctx (that one is bound to a per-test tmp_path)."""
    raw = copy.deepcopy(yaml.safe_load((PROJECT / "params.yaml").read_text(encoding="utf-8")))
    for key, value in (overrides or {}).items():
        *parents, last = key.split(".")
        node = raw
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return runtime.StageContext(name, root, params.parse(raw), tracking.Tracker())


def sample(name: str) -> dict[str, dict]:
    with open(SAMPLE / name, encoding="utf-8") as f:
        return {d["id"]: d for d in map(json.loads, f)}


def first_blocked_domain() -> str:
    with tarfile.open(BLOCKLIST) as tar:
        return tar.extractfile("domains").readline().decode().strip()


def perturb(text: str, rate: float = 0.02, word: str = "banana") -> str:
    """Substitute ~`rate` of the words (every 1/rate-th one), keeping the rest verbatim."""
    words = text.split(" ")
    step = round(1 / rate)
    for i in range(step // 2, len(words), step):
        words[i] = word
    return " ".join(words)


def shingles(text: str, n: int = 5) -> set:
    w = text.lower().split()
    return {tuple(w[i : i + n]) for i in range(len(w) - n + 1)}


def doc(id_, text, lang, url="", category="web", date="2020-01-01"):
    return {"id": id_, "text": text, "lang": lang, "source": f"t-{lang}", "category": category,
            "license": "CC0-1.0", "url": url, "date": date, "meta": "{}"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("filter_dedup")
    en, fr, code = sample("en.jsonl"), sample("fr.jsonl"), sample("code.jsonl")
    rows = [
        doc("en-a", en["en-web-001"]["text"], "en", "https://example.org/garden"),
        doc("en-b", en["en-wiki-001"]["text"], "en"),
        doc("fr-a", fr["fr-web-001"]["text"], "fr", "https://exemple.fr/a"),
        doc("fr-b", fr["fr-book-001"]["text"], "fr"),
        doc("spam", SPAM, "en", "https://example.org/promo"),
        doc("blocked", en["en-web-002"]["text"], "en", f"https://{first_blocked_domain()}/page.html"),
        doc("wrong-lang", fr["fr-wiki-002"]["text"], "en", "https://example.org/borrowed"),
        doc("too-short", TOO_SHORT, "en", "https://example.org/short"),
        doc("code-a", code["code-programming-001"]["text"], "code", "https://example.org/lru.py", "programming"),
        # planted duplicates, after their originals in input order
        doc("en-a-copy", en["en-web-001"]["text"], "en", "https://mirror.example.net/garden"),
        doc("fr-a-near", perturb(fr["fr-web-001"]["text"], word="pomme"), "fr", "https://exemple.fr/a-bis"),
        doc("en-b-near", perturb(en["en-wiki-001"]["text"]), "en"),
    ]
    raw = root / "data/raw"
    raw.mkdir(parents=True)
    files.write_manifest(raw, files.write_docs(raw, rows, rows_per_shard=5))
    return root, {r["id"]: r for r in rows}


@pytest.fixture(scope="module")
def filtered(corpus):
    root, rows = corpus
    filt.run(ctx_for("filter", root, {"filter.language.model": str(LID_MODEL)}))
    return root, rows


@pytest.fixture(scope="module")
def deduped(filtered):
    root, rows = filtered
    dedup.run(ctx_for("dedup", root))
    snapshot = {p.name: p.read_bytes() for p in sorted((root / "data/dedup").iterdir())}
    return root, rows, snapshot


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


# ---------------------------------------------------------------- filter
def test_first_blocklisted_domain_is_read():
    assert "." in first_blocked_domain()


def test_each_noise_doc_is_dropped_by_its_rule(filtered):
    root, rows = filtered
    dropped = read_jsonl(root / "data/filtered/dropped.jsonl")
    by_id = {d["id"]: d for d in dropped}
    assert set(by_id) == set(NOISE), dropped
    for id_, rule in NOISE.items():
        rec = by_id[id_]
        assert (rec["rule"], rec["verdict"]) == (rule, "drop"), rec
        assert rec["source"] == rows[id_]["source"]
        assert rec["detail"]
    assert "declared en" in by_id["wrong-lang"]["detail"] and "fr" in by_id["wrong-lang"]["detail"]


def test_clean_and_code_docs_are_kept_unchanged(filtered):
    root, rows = filtered
    kept = list(files.read_docs(root / "data/filtered"))
    assert [d["id"] for d in kept] == CLEAN  # input order preserved
    for d in kept:
        assert d == rows[d["id"]]  # the C4 block's line edits never leak into the output


def test_code_only_meets_the_url_rule(filtered):
    root, rows = filtered
    chain = filt.Chain(ctx_for("filter", root, {"filter.language.model": str(LID_MODEL)}).params.filter, root)
    code = rows["code-a"]
    assert [name for name, _ in chain.rules_for(code)] == ["url"]
    assert filt.decide(chain, code) == ("keep", None, "")
    # Declared as English it still meets only the programming rule set; declared English web, the text rules drop it.
    assert [name for name, _ in chain.rules_for({**code, "lang": "en"})] == ["url"]
    verdict, rule, _ = filt.decide(chain, {**code, "lang": "en", "category": "web"})
    assert verdict == "drop" and rule in {"language", "gopher_repetition", "gopher_quality", "c4"}
    # And code on a blocklisted domain is dropped by the URL rule.
    assert filt.decide(chain, {**code, "url": rows["blocked"]["url"]})[:2] == ("drop", "url")


def test_filter_ledger_invariant(filtered):
    root, rows = filtered
    m = files.read_json(root / "metrics/filter.json")
    assert m["read"] == len(rows)
    assert m["read"] == m["kept"] + m["dropped_total"] + m["rejected_total"]
    assert m["dropped"] == {rule: 1 for rule in sorted(NOISE.values())}
    assert m["rejected_total"] == 0
    assert files.count_docs(root / "data/filtered") == m["kept"] == len(CLEAN)
    assert len(read_jsonl(root / "data/filtered/dropped.jsonl")) == m["dropped_total"] + m["rejected_total"]
    per = m["per_source"]
    assert sum(c["read"] for c in per.values()) == m["read"]
    assert sum(c.get("kept", 0) for c in per.values()) == m["kept"]


# ---------------------------------------------------------------- dedup
def test_planted_near_duplicates_are_near(corpus):
    _, rows = corpus
    for near, orig in (("fr-a-near", "fr-a"), ("en-b-near", "en-b")):
        a, b = rows[near]["text"], rows[orig]["text"]
        changed = sum(x != y for x, y in zip(a.split(" "), b.split(" ")))
        assert 0.015 <= changed / len(b.split(" ")) <= 0.025
        sa, sb = shingles(a), shingles(b)
        assert len(sa & sb) / len(sa | sb) >= 0.75


def test_exact_key_normalises_case_and_whitespace():
    assert dedup.exact_key("Hello   World\n") == dedup.exact_key("hello world")
    assert dedup.exact_key("Cafe\u0301") == dedup.exact_key("café")  # NFC
    assert dedup.exact_key("hello world") != dedup.exact_key("hello, world")


def test_dedup_removes_exact_and_near_into_first_occurrence(deduped):
    root, _, _ = deduped
    removed = read_jsonl(root / "data/dedup/removed.jsonl")
    got = {r["id"]: (r["kind"], r["cluster"]) for r in removed}
    assert got == {"en-a-copy": ("exact", "en-a"), "fr-a-near": ("near", "fr-a"), "en-b-near": ("near", "en-b")}
    kept = [d["id"] for d in files.read_docs(root / "data/dedup")]
    assert kept == ["en-a", "en-b", "fr-a", "fr-b", "code-a"]

    m = files.read_json(root / "metrics/dedup.json")
    assert m["read"] == len(CLEAN)
    assert m["dropped"] == {"exact": 1, "near_duplicate": 2}
    assert m["read"] == m["kept"] + m["dropped_total"] + m["rejected_total"]
    assert m["near_duplicate_clusters"] == 2


def test_dedup_rerun_is_byte_identical(deduped):
    root, _, first = deduped
    metrics_before = (root / "metrics/dedup.json").read_bytes()
    dedup.run(ctx_for("dedup", root))
    second = {p.name: p.read_bytes() for p in sorted((root / "data/dedup").iterdir())}
    assert sorted(first) == ["manifest.json", "part-00000.parquet", "removed.jsonl"]
    assert first == second
    assert (root / "metrics/dedup.json").read_bytes() == metrics_before


def test_cluster_of_a_copy_of_a_near_duplicate_is_the_kept_representative(make_ctx, tmp_path):
    text = sample("en.jsonl")["en-wiki-002"]["text"]
    near = perturb(text)
    rows = [doc("a-orig", text, "en"), doc("b-near", near, "en"), doc("c-near-copy", near, "en")]
    d = tmp_path / "data/filtered"
    d.mkdir(parents=True)
    files.write_manifest(d, files.write_docs(d, rows))
    dedup.run(make_ctx("dedup"))
    assert [x["id"] for x in files.read_docs(tmp_path / "data/dedup")] == ["a-orig"]
    removed = {r["id"]: r["cluster"] for r in read_jsonl(tmp_path / "data/dedup/removed.jsonl")}
    assert removed["b-near"] == "a-orig"
    assert removed["c-near-copy"] == "a-orig", removed  # the kept document, never another removed one
