"""Datasheets (Gebru et al.'s seven sections) and the HF dataset card, on a small release fixture.

The fixture is written the way the release stage writes it (data/<lang>/<source>/part-*.parquet
through stages.core.files.write_docs); the card's configs are then checked against the real files, by
glob and by `datasets.load_dataset` on the directory (the library the Hub's users run).
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from huggingface_hub import DatasetCard

from datasheets import datasheet, dataset_card
from stages.core import files

SECTIONS = ["Motivation", "Composition", "Collection process", "Preprocessing, cleaning, labeling", "Uses",
            "Distribution", "Maintenance"]
RELEASE = {"model_name": "tiny", "organization": "org", "license": "apache-2.0",
           "code_url": "https://example.invalid/code", "languages": ["fr", "en", "de", "es", "it"]}
SOURCES = [
    {"name": "webmix", "format": "jsonl", "path": "in/web*.jsonl", "hf": None, "lang": None, "category": "web",
     "license": "CC-BY-4.0", "description": "Crawled pages about gardening."},
    {"name": "wiki", "format": "parquet", "path": "in/wiki/*.parquet", "hf": None, "lang": "de", "category": "wiki",
     "license": "CC0-1.0", "citation": "Wiki authors (2020)."},
    {"name": "hub", "format": "hf", "path": None, "lang": "it", "category": "web", "license": "CC0-1.0",
     "hf": {"dataset": "someone/corpus", "config": "it", "split": "train", "revision": None, "text_field": "text"}},
]


def doc(i, lang, source, category="web", license="CC-BY-4.0", url="", date="", words=5):
    return {"id": f"{source}-{i}", "text": " ".join(f"w{i}x{k}" for k in range(words)), "lang": lang, "source": source,
            "category": category, "license": license, "url": url, "date": date, "meta": "{}"}


def groups() -> dict[tuple[str, str], list[dict]]:
    web_en = [doc(i, "en", "webmix", url=f"https://{'a.org' if i < 3 else 'b.net'}/p{i}", date=f"20{10 + i}-01-0{1 + i}",
                  words=4 + i) for i in range(4)]
    web_fr = [doc(10 + i, "fr", "webmix", url="https://c.fr/x" if i else "", words=6) for i in range(3)]
    web_fr[2]["license"] = "CC-BY-SA-4.0"  # a record that carried its own license
    wiki = [doc(20 + i, "de", "wiki", "wiki", "CC0-1.0", date="2019", words=10) for i in range(2)]
    return {("en", "webmix"): web_en, ("fr", "webmix"): web_fr, ("de", "wiki"): wiki}  # `hub` released nothing


METRICS = {
    "ingest": {"read": 20, "kept": 17, "rejected": {"malformed_json": 2, "empty_text": 1}, "rejected_total": 3,
               "dropped": {}, "dropped_total": 0,
               "per_source": {
                   "webmix": {"read": 12, "kept": 10, "rejected": 2, "rejected_by_reason": {"malformed_json": 2},
                              "words": 80},
                   "wiki": {"read": 4, "kept": 3, "rejected": 1, "rejected_by_reason": {"empty_text": 1}, "words": 30},
                   "hub": {"read": 4, "kept": 4, "rejected": 0, "rejected_by_reason": {}, "words": 20}}},
    "filter": {"read": 17, "kept": 11, "dropped": {"language": 2, "url": 4}, "dropped_total": 6,
               "per_source": {"webmix": {"read": 10, "kept": 8, "dropped.url": 2},
                              "wiki": {"read": 3, "kept": 3},
                              "hub": {"read": 4, "kept": 0, "dropped.language": 2, "dropped.url": 2}},
               "rule_sets": {"web": {"rules": ["url", "language", "c4"], "read": 14, "kept": 8},
                             "wiki": {"rules": [], "read": 3, "kept": 3}}},
    "dedup": {"read": 11, "kept": 9, "dropped": {"exact": 1, "near_duplicate": 1}, "dropped_total": 2},
    "mix": {"after_upsampling": {"by_source": {"webmix": {"docs": 12, "words": 90, "chars": 500}}}},
}
REMOVED = [{"id": "webmix-90", "source": "webmix", "kind": "exact", "cluster": "webmix-1"},
           {"id": "wiki-91", "source": "wiki", "kind": "near", "cluster": "wiki-20"}]


@pytest.fixture
def tree(tmp_path) -> Path:
    """release/dataset as the release stage lays it out, with the card and the datasheets."""
    out = tmp_path / "dataset"
    g = groups()
    for (lang, source), rows in sorted(g.items()):
        d = out / "data" / lang / source
        d.mkdir(parents=True)
        files.write_docs(d, rows, rows_per_shard=2)  # several shards per group
    datasheet.write_datasheets(out / "datasheets", g, SOURCES, METRICS, REMOVED, RELEASE)
    (out / "README.md").write_text(dataset_card.dataset_card(g, SOURCES, METRICS, RELEASE, REMOVED), encoding="utf-8")
    return out


def words(rows):
    return sum(len(r["text"].split()) for r in rows)


# ---------------------------------------------------------------- datasheets
def test_one_datasheet_per_source_with_the_seven_sections_in_order(tree):
    assert sorted(p.name for p in (tree / "datasheets").iterdir()) == ["hub.md", "webmix.md", "wiki.md"]
    for p in (tree / "datasheets").iterdir():
        text = p.read_text()
        heads = re.findall(r"^## (.+)$", text, flags=re.M)
        assert heads == SECTIONS, p.name
        assert "None" not in text and "{{" not in text and "{%" not in text
        assert text.count("**") % 2 == 0


def test_datasheet_numbers_are_the_measured_ones(tree):
    g = groups()
    web = g[("en", "webmix")] + g[("fr", "webmix")]
    total_words = sum(words(rows) for rows in g.values())
    text = (tree / "datasheets/webmix.md").read_text()
    assert f"{len(web)} documents, {words(web)} whitespace-separated words" in text
    assert f"{100 * words(web) / total_words:.1f} % of its words" in text
    assert re.search(r"12 read, 10 accepted, 2 rejected as\s+malformed \(malformed_json 2\)", text)
    assert "10 read, 8 kept (80.0 %)" in text and "- url: 2 (20.0 % of read)" in text
    assert "category (`filter.<rule>.categories`):\n  web: url, language, c4.\n" in text
    assert "category (`filter.<rule>.categories`):\n  wiki: none.\n" in (tree / "datasheets/wiki.md").read_text()
    assert re.search(r"8 read, 1 removed \(exact 1\),\s+7 kept \(87.5 %\)", text)
    assert f"{len(web)} of 12 records read are released ({100 * len(web) / 12:.1f} %)" in text
    assert "**Languages:** en 4, fr 3." in text
    assert "2010-01-01 to 2013-01-04" in text  # dates of the dated documents only
    assert "3 of 7 documents have no date" in text and "1 have no URL" in text
    assert "3 distinct; the most frequent: a.org 3, c.fr 2, b.net 1" in text
    assert "`webmix-0`, `webmix-1`, `webmix-2`" in text
    assert "CC-BY-4.0 (6 documents), CC-BY-SA-4.0 (1 documents)" in text
    assert "12 documents\n  (90 words) of this source" in text  # mix after upsampling
    assert "Crawled pages about gardening." in text  # the source's description from params
    assert "`org/tiny-data`" in text


def test_what_the_pipeline_cannot_know_is_said_so_not_invented(tree):
    wiki = (tree / "datasheets/wiki.md").read_text()
    hub = (tree / "datasheets/hub.md").read_text()
    # No description in params: the purpose of the source is not recorded; funding never is.
    assert "The source itself:\n  not recorded by the pipeline." in wiki
    for text in (wiki, hub):
        assert "**Who funded the creation of the dataset?** Not recorded by the pipeline." in text
        assert "consent?** Not recorded by the pipeline." in text
    assert "**Citation of the source:** Wiki authors (2020)." in wiki and "Citation of the source" not in hub
    # A source that released nothing still gets its datasheet, with the reasons it is empty.
    assert "0 documents, 0 whitespace-separated words" in hub
    assert "Hugging Face dataset someone/corpus (config it, split train)" in hub
    assert "- language: 2 (50.0 % of read)" in hub and "- url: 2 (50.0 % of read)" in hub
    assert "no document carries a date" in hub and "Example ids:** none" in hub


def test_missing_metrics_are_reported_as_not_recorded(tmp_path):
    g = groups()
    datasheet.write_datasheets(tmp_path, g, SOURCES[:1], {"ingest": METRICS["ingest"]}, [], RELEASE, max_docs=12)
    text = (tmp_path / "webmix.md").read_text()
    assert "**Quality filters:** not recorded by the pipeline" in text
    assert "**Deduplication:** not recorded by the pipeline." in text
    assert "at most the first 12 records" in text and "first 12 records in file order" in text


def test_a_datasheet_reports_the_rejections_of_a_real_ingest_run(tmp_path, make_ctx):
    from stages import ingest

    (tmp_path / "in.jsonl").write_bytes(b'{"id": "a", "text": "fine text"}\n{"id": "b", "text": ""}\n{broken\n'
                                        b'{"id": "c", "text": 5}\n')
    ctx = make_ctx("ingest", {"data.sources": [{"name": "s", "path": "in.jsonl", "lang": "en", "license": "MIT"}]})
    ingest.run(ctx)
    metrics = {"ingest": files.read_json(tmp_path / "metrics/ingest.json")}
    rows = list(files.read_docs(tmp_path / "data/raw"))
    facts = datasheet.write_datasheets(tmp_path / "ds", {("en", "s"): rows}, [ctx.params.data.sources[0].model_dump()],
                                       metrics, [], RELEASE)
    assert facts["s"]["ingest"]["by_reason"] == {"empty_text": 1, "malformed_json": 1, "text_not_string": 1}
    text = (tmp_path / "ds/s.md").read_text()
    assert re.search(r"4 read, 1 accepted, 3 rejected as\s+malformed \(empty_text 1, malformed_json 1, "
                     r"text_not_string 1\)", text)


# ---------------------------------------------------------------- dataset card
def card_of(tree) -> DatasetCard:
    return DatasetCard((tree / "README.md").read_text(encoding="utf-8"))


def test_card_yaml_round_trips_with_configs_per_language_and_source(tree):
    card = card_of(tree)
    names = [c["config_name"] for c in card.data.configs]
    assert names == ["default", "de", "en", "fr", "webmix", "wiki", "webmix-en", "webmix-fr"]
    again = DatasetCard(str(card))  # serialise and parse once more: same metadata
    assert again.data.to_dict() == card.data.to_dict()
    meta = yaml.safe_load((tree / "README.md").read_text().split("---")[1])
    assert meta["language"] == ["de", "en", "fr"]
    assert meta["size_categories"] == ["n<1K"] and meta["task_categories"] == ["text-generation"]
    assert meta["license"] == "other" and "CC-BY-4.0" in meta["license_details"]  # 3 licenses in the rows
    assert meta["source_datasets"] == ["someone/corpus"]


def test_config_globs_match_the_files_of_the_tree(tree):
    files = {str(p.relative_to(tree)) for p in tree.glob("data/**/*.parquet")}
    by = {}
    for c in card_of(tree).data.configs:
        (spec,) = c["data_files"]
        assert spec["split"] == "train"
        by[c["config_name"]] = {str(p.relative_to(tree)) for p in tree.glob(spec["path"])}
        assert by[c["config_name"]], f"config {c['config_name']} matches no file"
    assert by["default"] == files and len(files) == 5  # 4 + 3 + 2 rows, 2 rows per shard
    assert by["en"] | by["fr"] | by["de"] == files and not by["en"] & by["fr"]
    assert by["webmix"] == by["webmix-en"] | by["webmix-fr"] and by["wiki"] == by["de"]
    assert all(f.startswith("data/fr/webmix/") for f in by["webmix-fr"])


def test_datasets_loads_every_config_with_the_right_rows(tree):
    from datasets import load_dataset

    g = groups()
    expect = {"default": sum(g.values(), []), "fr": g[("fr", "webmix")], "webmix": g[("en", "webmix")] + g[("fr", "webmix")],
              "webmix-en": g[("en", "webmix")], "wiki": g[("de", "wiki")]}
    for name, rows in expect.items():
        ds = load_dataset(str(tree), name=name, split="train")
        assert sorted(ds["id"]) == sorted(r["id"] for r in rows), name
        assert set(ds.column_names) == set(files.DOC_SCHEMA.names)


def test_card_body_follows_lucies_sections_with_measured_numbers(tree):
    text = (tree / "README.md").read_text()
    body = text.split("---", 2)[2]
    heads = re.findall(r"^## (.+)$", body, flags=re.M)
    assert heads == ["Dataset Description", "Dataset Composition", "Configurable Subsets", "Details on Data Sources",
                     "Example use in Python", "Citation"]
    g = groups()
    en = g[("en", "webmix")]
    total = sum(words(r) for r in g.values())
    assert f"| en | {len(en)} | {words(en)} | {100 * len(en) / 9:.1f} % | {100 * words(en) / total:.1f} % |" in body
    assert f"| **total** | **9** | **{total}** |" in body
    assert "| `webmix-fr` | `data/fr/webmix/*.parquet` |" in body
    assert 'load_dataset("org/tiny-data", name="fr", split="train")' in body  # first of release.languages present
    assert "- **Description:** Crawled pages about gardening." in body
    assert "- **Description:** not recorded by the pipeline" in body  # wiki, hub
    assert "ingest: 12 records read, 2 rejected as malformed (malformed_json 2)" in body
    assert "filter: 10 read, 8 kept; dropped url 2" in body
    assert "dedup: 1 removed (near 1), 2 kept" in body  # wiki
    assert "20 records read, 3 rejected as malformed (empty_text 1, malformed_json 2)" in body
    assert "**Citation:** Wiki authors (2020)." in body
    assert "None" not in body and "{{" not in body


def test_license_fields():
    assert dataset_card.hf_license(["CC0-1.0"]) == {"license": "cc0-1.0"}
    assert dataset_card.hf_license(["GPL-3.0-only"]) == {"license": "gpl-3.0"}
    mixed = dataset_card.hf_license(["CC-BY-4.0", "MIT"])
    assert mixed["license"] == "other" and "CC-BY-4.0, MIT" in mixed["license_details"]


def test_single_license_card_is_read_by_the_openness_evidence(tmp_path):
    from model_card.evidence import card_yaml

    rows = [doc(i, "en", "s", license="CC0-1.0") for i in range(3)]
    src = [{**SOURCES[0], "name": "s", "license": "CC0-1.0"}]
    (tmp_path / "README.md").write_text(dataset_card.dataset_card({("en", "s"): rows}, src, {}, RELEASE))
    meta = card_yaml(tmp_path / "README.md")
    assert meta["license"] == "cc0-1.0" and meta["language"] == ["en"]
    assert [c["config_name"] for c in meta["configs"]] == ["default", "en", "s"]


def test_a_source_named_like_a_language_is_a_clear_error():
    with pytest.raises(ValueError, match=r"\['fr'\]"):
        dataset_card.configs([("fr", "fr"), ("en", "web")])


def test_size_categories():
    assert [dataset_card.size_category(n) for n in (0, 999, 1000, 123_456, 2 * 10**12)] == [
        "n<1K", "n<1K", "1K<n<10K", "100K<n<1M", "n>1T"]


def test_the_card_lists_the_eval_files_it_ships():
    evals = [{"file": "eval/mcq_en.jsonl", "task": "mcq_en", "lang": "en", "kind": "multiple_choice", "rows": 40},
             {"file": "eval/gen_fr.jsonl", "task": "gen_fr", "lang": "fr", "kind": "generate", "rows": 20}]
    card = dataset_card.dataset_card(groups(), SOURCES, METRICS, RELEASE, REMOVED, evals=evals)
    section = card.split("## Evaluation Data", 1)[1].split("\n## ", 1)[0]
    assert "| [`eval/mcq_en.jsonl`](eval/mcq_en.jsonl) | mcq_en | en | multiple_choice | 40 |" in section
    assert "| [`eval/gen_fr.jsonl`](eval/gen_fr.jsonl) | gen_fr | fr | generate | 20 |" in section
    assert "eval/" not in card.split("---", 2)[1]  # in no config of the YAML header
    assert "## Evaluation Data" not in dataset_card.dataset_card(groups(), SOURCES, METRICS, RELEASE, REMOVED)


def test_the_model_card_article_fits_the_kind():
    import jinja2

    from stages.release import CARD_TEMPLATE

    head = CARD_TEMPLATE.read_text().split("## Use", 1)[0]  # the opening sentence, without the body's data
    first = {k: jinja2.Environment().from_string(head).render(kind=k).split("\n\n")[3] for k in
             ("base", "instruct (SFT + DPO)")}
    assert first["base"].startswith("A base model of") and first["instruct (SFT + DPO)"].startswith("An instruct (SFT")
