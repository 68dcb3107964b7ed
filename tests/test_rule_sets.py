"""Filter rule sets per source category (stages/lib/rule_sets.py): Lucie's web heuristics on web documents only.

Real components: the project's recipes, ingest and the filter stage with fastText's lid.176, on hand-made records
and on the real curated text of ../shared/corpora (novels, short stories, German federal law)."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import yaml

from stages import filter as filt, ingest
from stages.core import files as io, params
from stages.lib.rule_sets import RULES, named_categories, rule_set

PROJECT = Path(__file__).resolve().parent.parent
SHARED = Path(__file__).resolve().parents[2] / "shared" / "corpora"
LID = PROJECT / "assets" / "lid" / "lid.176.ftz"
NOISE = PROJECT / "data" / "sample" / "noise_manifest.json"
need_lid = pytest.mark.skipif(not LID.exists(), reason="assets/lid/lid.176.ftz missing: run `make setup`")

# A play: the speaker names repeat on their own lines, as in the German plays Gopher repetition dropped.
SPEECHES = [
    "I have walked the length of the harbour tonight and found no boat that would carry us before the tide turns.",
    "Then we wait for the morning, as my father waited when the soldiers came down from the northern hills.",
    "Your father was a patient man, but patience never fed a family through a winter as long as this one.",
    "You speak as if the winter were my fault, brother, when it was your own pride that sold our last horse.",
    "Pride kept the roof above your head for seven years, and you never once asked where the money came from.",
    "I asked the priest instead, and he told me more about our family than you have told me in my whole life.",
    "The priest knows only what our mother confessed to him, and she confessed only what she wished to be true.",
    "Then tell me the truth yourself, here, before the lamp burns out and we lose the courage to speak at all.",
    "The truth is that the land was never ours; we farmed it on a promise that died with the old count last May.",
    "So the letter from the city was not a mistake, and the men who measured the fields will come back again.",
    "They will come back with papers and with dogs, and we will stand at the gate and watch them take the barn.",
    "Not if we are gone before them, across the water, to the cousins who wrote to us of work in the mills.",
]
PLAY = "\n".join(f"{'MARTHA' if i % 2 else 'JOHANN'}.\n{s}" for i, s in enumerate(SPEECHES))


def recipe(name: str) -> params.Params:
    return params.load(PROJECT / "recipes" / f"{name}.yaml")


def test_lucies_assignment_in_the_lucie_7b_recipe():
    p = recipe("lucie-7b").filter
    web = ["url", "language", "gopher_repetition", "gopher_quality", "c4"]  # perplexity: no KenLM model configured
    assert rule_set(p, "web") == web
    assert rule_set(p, "book") == rule_set(p, "newspaper") == ["language"]
    assert rule_set(p, "programming") == ["url"]
    for curated in ("wiki", "legi_written", "legi_spoken", "legi_dialogue", "technical", "math", "dialogue", "forum",
                    "aligned"):
        assert rule_set(p, curated) == [], curated
    with_kenlm = p.model_copy(update={"perplexity": p.perplexity.model_copy(update={"model": "lm/{lang}.arpa.bin"})})
    assert rule_set(with_kenlm, "web") == [*web, "perplexity"] and rule_set(with_kenlm, "book") == ["language", "perplexity"]
    assert named_categories(p) == ["book", "newspaper", "programming", "web"]


def test_every_recipe_filters_by_lucies_rule_sets():
    lucie = {r: getattr(recipe("lucie-7b").filter, r).categories for r in RULES}
    for name in ("tiny", "lucie-1b", "real-corpora"):
        assert {r: getattr(recipe(name).filter, r).categories for r in RULES} == lucie, name


def test_a_rule_without_categories_applies_to_every_category():
    p = params.Filter()
    assert rule_set(p, "book") == rule_set(p, "anything") == ["url", "language", "gopher_repetition", "gopher_quality", "c4"]
    off = p.model_copy(update={"c4": p.c4.model_copy(update={"enabled": False, "categories": ["book"]})})
    assert "c4" not in rule_set(off, "book")  # a disabled rule is in no rule set


@pytest.mark.parametrize("cats", [["web", "web"], ["web", ""], [" book"]])
def test_a_malformed_category_list_is_a_params_error(cats):
    raw = yaml.safe_load((PROJECT / "params.yaml").read_text())
    raw["filter"]["c4"]["categories"] = cats
    with pytest.raises(params.ParamsError) as err:
        params.parse(raw)
    assert "c4.categories" in str(err.value) and "once" in str(err.value)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@need_lid
def test_a_records_own_category_wins_and_drops_name_the_rule_set(make_ctx, tmp_path):
    """Source declared `book`: its play is kept; the same play in a record that says `web` meets Gopher and is dropped."""
    src = write_jsonl(tmp_path / "plays.jsonl", [
        {"id": "play-1", "text": PLAY},
        {"id": "play-1-as-web", "text": PLAY, "category": "web"},
    ])
    ctx = make_ctx("filter", {"data.sources": [{"name": "plays", "format": "jsonl", "path": str(src), "lang": "en",
                                                "category": "book", "license": "CC0-1.0"}],
                              "filter.language.model": str(LID)})
    ingest.run(ctx)
    filt.run(ctx)
    kept = [d["id"] for d in io.read_docs(tmp_path / "data/filtered")]
    assert kept == ["play-1"]
    (drop,) = [json.loads(x) for x in (tmp_path / "data/filtered/dropped.jsonl").read_text().splitlines()]
    assert drop["id"] == "play-1-as-web" and drop["rule"] == "gopher_repetition" and drop["rule_set"] == "web"
    assert drop["check"] == "dup_line_frac"
    m = io.read_json(tmp_path / "metrics/filter.json")
    assert m["rule_sets"] == {
        "book": {"rules": ["language"], "read": 1, "kept": 1},
        "web": {"rules": ["url", "language", "gopher_repetition", "gopher_quality", "c4"], "read": 1,
                "dropped.gopher_repetition": 1},
    }
    assert sum(c["read"] for c in m["rule_sets"].values()) == m["read"]


@need_lid
def test_the_sample_corpus_planted_noise_is_still_dropped_and_nothing_else(make_ctx, tmp_path):
    """The tiny recipe (rule sets per category) on data/sample: each planted filter noise is dropped by its rule,
    every other document is kept: the same 25 drops as with every rule on every category."""
    ov = {"data.sources": [{**s, "path": str(PROJECT / s["path"])}
                           for s in yaml.safe_load((PROJECT / "params.yaml").read_text())["data"]["sources"]],
          "filter.language.model": str(LID)}
    ctx = make_ctx("filter", ov)
    ingest.run(ctx)
    filt.run(ctx)
    expected = {p["id"]: p["expected_rule"] for p in json.loads(NOISE.read_text())["planted"]
                if p["expected_stage"] == "filter"}
    drops = {r["id"]: r for r in map(json.loads, (tmp_path / "data/filtered/dropped.jsonl").read_text().splitlines())}
    assert {i: r["rule"] for i, r in drops.items()} == expected
    assert {r["rule_set"] for r in drops.values()} == {"web"}
    m = io.read_json(tmp_path / "metrics/filter.json")
    assert set(m["rule_sets"]) == {"web", "book", "wiki", "programming"}
    assert m["rule_sets"]["wiki"]["rules"] == [] and m["rule_sets"]["programming"]["rules"] == ["url"]


@need_lid
@pytest.mark.skipif(not (SHARED / "real-de.jsonl").exists(), reason=f"real corpora not found at {SHARED}")
@pytest.mark.parametrize("category", ["book", "legi_written"])
def test_real_curated_text_is_kept(make_ctx, tmp_path, category):
    """Every document of the real novels, stories and laws (../shared/corpora), declared as curated: >= 98 % kept in
    every language (measured: all 1,277; with every rule on every category, Gopher and C4 drop 12 of 263 German,
    3 Spanish, 2 Italian, 1 English and 1 French document)."""
    langs = ("en", "fr", "de", "es", "it")
    sources = [{"name": f"real-{lang}", "format": "jsonl", "path": str(SHARED / f"real-{lang}.jsonl"), "lang": lang,
                "category": category, "license": "Public-Domain"} for lang in langs]
    ctx = make_ctx("filter", {"data.sources": sources, "filter.language.model": str(LID)})
    ingest.run(ctx)
    filt.run(ctx)
    m = io.read_json(tmp_path / "metrics/filter.json")
    assert m["rejected_total"] == 0
    for lang in langs:
        c = m["per_source"][f"real-{lang}"]
        assert c.get("kept", 0) / c["read"] >= 0.98, (lang, c)
    assert set(m["rule_sets"]) == {category}
    drops = Counter(json.loads(x)["rule"] for x in (tmp_path / "data/filtered/dropped.jsonl").read_text().splitlines())
    assert set(drops) <= {"language"}, drops


@need_lid
@pytest.mark.parametrize("engine", ["fast", "datatrove"])
def test_both_engines_meet_only_the_documents_rule_set(engine):
    p = recipe("tiny").filter.model_copy(update={"engine": engine, "language": recipe("tiny").filter.language.model_copy(
        update={"model": str(LID)})})
    chain = filt.Chain(p, PROJECT)
    doc = {"id": "x", "text": PLAY, "lang": "en", "url": "https://example.org/play", "source": "s"}
    names = {cat: [n for n, _ in chain.rules_for({**doc, "category": cat})] for cat in ("web", "book", "wiki")}
    assert names == {"web": ["url", "language", "gopher_repetition", "gopher_quality", "c4"], "book": ["language"],
                     "wiki": []}
    assert [n for n, _ in chain.rules_for({**doc, "lang": "code", "category": "programming"})] == ["url"]
    assert filt.decide(chain, {**doc, "category": "book"}) == ("keep", None, "")
    assert filt.decide(chain, {**doc, "category": "web"})[:2] == ("drop", "gopher_repetition")
