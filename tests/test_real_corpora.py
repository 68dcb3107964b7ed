"""The pipeline's data stages, unchanged, on a slice of the real corpora (../shared/corpora, beside the clone):
recipes/real-corpora.yaml validates, and ingest -> filter -> dedup on the first 40 documents of each
language account for every document, keep every language, and explain every drop."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from stages import dedup, filter as filt, ingest
from stages.core import files
from stages import mix
from stages.core import params
from stages import tokenizer

PROJECT = Path(__file__).resolve().parent.parent
SHARED = Path(__file__).resolve().parents[2] / "shared" / "corpora"
LID = PROJECT / "assets" / "lid" / "lid.176.ftz"
RECIPE = PROJECT / "recipes" / "real-corpora.yaml"
PER_SOURCE = 40

pytestmark = [
    pytest.mark.skipif(not (SHARED / "real-en.jsonl").exists(), reason=f"real corpora not found at {SHARED}"),
    pytest.mark.skipif(not LID.exists(), reason="assets/lid/lid.176.ftz missing: run `make setup`"),
]


def test_recipe_validates_and_points_at_the_shared_corpora():
    p = params.load(RECIPE)
    assert p.recipe == "real-corpora"
    for s in p.data.sources:
        assert s.license and (PROJECT / s.path).resolve().parent == SHARED.resolve(), s.name
        assert (SHARED / Path(s.path).name).exists(), s.path
    assert {s.lang for s in p.data.sources} == set(p.data.languages) == {"en", "fr", "de", "es", "it", "code", "math"}


def check_ledger(m: dict) -> None:
    assert m["read"] == m["kept"] + m["dropped_total"] + m["rejected_total"]


def test_ingest_filter_dedup_on_a_slice(make_ctx, tmp_path):
    raw = yaml.safe_load(RECIPE.read_text(encoding="utf-8"))
    sources = raw["data"]["sources"]
    for s in sources:  # the recipe's paths are relative to the repo root; this run is rooted in tmp_path
        s["path"] = str(SHARED / Path(s["path"]).name)
    ov = {**raw, "data": {**raw["data"], "sources": sources}, "ingest.max_docs_per_source": PER_SOURCE,
          "filter.language.model": str(LID)}
    ctx = make_ctx("real", ov)

    ingest.run(ctx)
    m_in = files.read_json(tmp_path / "metrics/ingest.json")
    check_ledger(m_in)
    assert m_in["read"] == PER_SOURCE * len(sources) and m_in["rejected_total"] == 0
    docs = list(files.read_docs(tmp_path / "data/raw"))
    # each record keeps the license it carries in the corpus (the sources of code and math assert none)
    assert "NOASSERTION" not in {d["license"] for d in docs}
    assert {d["license"] for d in docs if d["source"] == "real-it"} == {"CC-BY-SA-4.0"}
    recorded = {}
    for s in sources:
        with open(s["path"], encoding="utf-8") as f:
            for _, line in zip(range(PER_SOURCE), f):
                rec = json.loads(line)
                recorded[rec["id"]] = rec["license"]
    assert {d["id"]: d["license"] for d in docs} == recorded

    filt.run(ctx)
    m_f = files.read_json(tmp_path / "metrics/filter.json")
    check_ledger(m_f)
    assert m_f["read"] == m_in["kept"]
    for name, c in m_f["per_source"].items():
        assert c["read"] == c.get("kept", 0) + c.get("rejected", 0) + sum(
            v for k, v in c.items() if k.startswith("dropped.")), name
        assert c.get("kept", 0) > 0, f"{name}: the filter dropped every document"
    drops = [json.loads(line) for line in (tmp_path / "data/filtered/dropped.jsonl").read_text().splitlines()]
    assert len(drops) == m_f["dropped_total"] + m_f["rejected_total"]
    for r in drops:
        if r["verdict"] == "drop":
            assert r["rule"] and r["check"], r
            if r["rule"] != "language" or r["check"] != "language_mismatch":
                assert r["value"] is not None and r["threshold"] is not None, r

    dedup.run(ctx)
    m_d = files.read_json(tmp_path / "metrics/dedup.json")
    check_ledger(m_d)
    assert m_d["read"] == m_f["kept"]
    assert {d["lang"] for d in files.read_docs(tmp_path / "data/dedup")} == {"en", "fr", "de", "es", "it", "code", "math"}

    # the recipe's mix and annealing weights match these corpora's groups (mix refuses a key that matches nothing)
    tokenizer.run(ctx)
    mix.run(ctx)
    m_m = files.read_json(tmp_path / "metrics/mix.json")
    assert m_m["train_docs"] + m_m["valid_docs"] == m_d["kept"]
    assert set(m_m["after_upsampling"]["by_source"]) == {s["name"] for s in sources}
    assert set(m_m["annealing"]["token_share"]) == {"math", "code", "en", "fr", "de", "es", "it"}
    assert m_m["annealing"]["token_share"]["math"] == pytest.approx(0.5, abs=0.05)  # Lucie's mix 6: math 50 %
