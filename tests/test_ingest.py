"""ingest: every malformed record is rejected with a reason and a file:line, never a crash;
read = kept + rejected; kept documents carry the DOC_SCHEMA fields."""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stages import ingest, io

GOOD_TEXT = "A short but perfectly valid document about raised garden beds and tomatoes."


def jsonl_line(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


# (raw line, expected reason kind or None for kept) in file order; blank lines are not records.
LINES = [
    (jsonl_line({"id": "g1", "text": GOOD_TEXT, "lang": "en", "url": "https://example.org/g1", "date": "2020-05-01"}), None),
    (b'{"id": "bad-json", "text": "unterminated', "malformed_json"),
    (b'{"id": "bad-utf8", "text": "caf\xe9 au lait", "lang": "en"}', "invalid_utf8"),
    (jsonl_line({"id": "no-text", "lang": "en"}), "missing_text"),
    (jsonl_line({"id": "num-text", "text": 12345}), "text_not_string"),
    (jsonl_line({"id": "empty", "text": "   \n\t "}), "empty_text"),
    (b"[1, 2, 3]", "not_an_object"),
    (b"null", "not_an_object"),
    (jsonl_line({"id": "g1", "text": "Another text reusing the id of the first record."}), "duplicate_id"),
    (jsonl_line({"id": "huge", "text": "word " * 200}), "too_large"),  # 1000 bytes > max_doc_bytes 300
    (b"", None),  # blank line: skipped, not counted
    (jsonl_line({"id": "g2", "text": "Un document en fran\u00e7ais, avec un \u00e9moji \U0001F600.", "lang": "fr",
                 "category": "wiki", "license": "CC-BY-4.0", "extra_field": {"k": [1, 2]}}), None),
    (jsonl_line({"text": "A record without an id gets its location as id."}), None),
    (b'{"id": "g4", "text": "CRLF line endings are fine too."}\r', None),
]


@pytest.fixture
def corpus(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.jsonl").write_bytes(b"\n".join(line for line, _ in LINES) + b"\n")
    # A second source without a default language, to exercise missing_lang, plus an id seen in source 1.
    (tmp_path / "nolang.jsonl").write_bytes(
        jsonl_line({"id": "n1", "text": "No language anywhere."}) + b"\n"
        + jsonl_line({"id": "n2", "text": "This one declares it.", "lang": "de"}) + b"\n"
        + jsonl_line({"id": "g2", "text": "Duplicate id across sources.", "lang": "de"}) + b"\n"
    )
    return tmp_path


def sources(**extra):
    return [
        {"name": "local", "format": "jsonl", "path": "in/*.jsonl", "lang": "en", "license": "CC0-1.0", **extra},
        {"name": "nolang", "format": "jsonl", "path": "nolang.jsonl", "license": "CC0-1.0"},
    ]


def run_ingest(make_ctx, overrides):
    ctx = make_ctx("ingest", overrides)
    ingest.run(ctx)
    return ctx


def test_ingest_accounts_for_every_record(corpus, make_ctx):
    run_ingest(make_ctx, {"data.sources": sources(), "ingest.max_doc_bytes": 300, "ingest.rows_per_shard": 2})
    m = io.read_json(corpus / "metrics/ingest.json")

    records = [(i, reason) for i, (line, reason) in enumerate(LINES, 1) if line.strip()]
    expected = {}
    for _, reason in records:
        if reason:
            expected[reason] = expected.get(reason, 0) + 1
    expected["missing_lang"] = 1
    expected["duplicate_id"] += 1  # g2 again in source 2

    assert m["read"] == len(records) + 3
    assert m["read"] == m["kept"] + m["rejected_total"]
    assert m["dropped_total"] == 0
    assert m["rejected"] == dict(sorted(expected.items()))
    assert m["kept"] == sum(1 for _, r in records if r is None) + 1  # + n2
    assert m["per_source"]["local"] == {"read": len(records), "kept": 4, "rejected": len(records) - 4}
    assert m["per_source"]["nolang"] == {"read": 3, "kept": 1, "rejected": 2}

    # One rejected.jsonl line per rejected record, with the file and the 1-based line number.
    rej = [json.loads(x) for x in (corpus / "data/raw/rejected.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rej) == m["rejected_total"]
    got = {(r["file"], r["line"]): r["reason"] for r in rej}
    for i, reason in records:
        if reason:
            assert got[("in/a.jsonl", i)] == reason
    assert got[("nolang.jsonl", 1)] == "missing_lang"
    assert got[("nolang.jsonl", 3)] == "duplicate_id"
    for r in rej:
        assert r["source"] in {"local", "nolang"}
        assert r["detail"].startswith(r["reason"])
    assert "max_doc_bytes" in next(r["detail"] for r in rej if r["reason"] == "too_large")


def test_kept_docs_follow_the_schema(corpus, make_ctx):
    run_ingest(make_ctx, {"data.sources": sources(), "ingest.max_doc_bytes": 300, "ingest.rows_per_shard": 2})
    raw = corpus / "data/raw"
    manifest = io.read_json(raw / io.MANIFEST)
    assert manifest["rows"] == 5 and len(manifest["files"]) == 3  # rows_per_shard 2
    for entry in manifest["files"]:
        assert io.sha256_file(raw / entry["path"]) == entry["sha256"]

    docs = list(io.read_docs(raw))
    assert [d["id"] for d in docs] == ["g1", "g2", "local:in/a.jsonl:13", "g4", "n2"]  # input order
    for d in docs:
        assert set(d) == set(io.DOC_SCHEMA.names)
        assert all(isinstance(v, str) for v in d.values())
        assert d["text"].strip()
        assert isinstance(json.loads(d["meta"]), dict)
    by_id = {d["id"]: d for d in docs}
    g1, g2 = by_id["g1"], by_id["g2"]
    assert (g1["lang"], g1["source"], g1["category"], g1["license"]) == ("en", "local", "web", "CC0-1.0")
    assert (g1["url"], g1["date"]) == ("https://example.org/g1", "2020-05-01")
    assert (g2["lang"], g2["category"], g2["license"]) == ("fr", "wiki", "CC-BY-4.0")  # record wins over source
    assert "\U0001F600" in g2["text"]
    assert json.loads(g2["meta"]) == {"extra_field": {"k": [1, 2]}}
    assert by_id["n2"]["lang"] == "de" and by_id["n2"]["source"] == "nolang"
    assert by_id["g4"]["url"] == "" and by_id["g4"]["date"] == ""


def test_max_docs_per_source_caps_reading(corpus, make_ctx):
    run_ingest(make_ctx, {"data.sources": sources(), "ingest.max_docs_per_source": 3})
    m = io.read_json(corpus / "metrics/ingest.json")
    assert m["per_source"]["local"]["read"] == 3
    assert m["per_source"]["nolang"]["read"] == 3
    assert m["read"] == m["kept"] + m["rejected_total"] == 6


def test_missing_files_fail_clearly(tmp_path, make_ctx):
    ctx = make_ctx("ingest", {"data.sources": [{"name": "ghost", "path": "nowhere/*.jsonl", "license": "CC0-1.0"}]})
    with pytest.raises(ingest.SourceUnavailable, match="ghost"):
        ingest.run(ctx)
    assert not (tmp_path / "data/raw").exists()  # nothing half-written


def test_hf_source_offline_names_the_dataset(tmp_path, make_ctx):
    dataset = "OpenLLM-France/Lucie-Training-Dataset"
    ctx = make_ctx("ingest", {"data.sources": [{
        "name": "hub", "format": "hf", "hf": {"dataset": dataset, "config": "en", "split": "train"},
        "lang": "en", "license": "CC-BY-NC-SA-4.0"}]})
    with pytest.raises(ingest.SourceUnavailable) as exc:
        ingest.run(ctx)
    assert dataset in str(exc.value)
    assert "hub" in str(exc.value)
    assert not (tmp_path / "data/raw").exists()
    assert not (tmp_path / "metrics/ingest.json").exists()


def test_parquet_source(tmp_path, make_ctx):
    (tmp_path / "pq").mkdir()
    table = pa.table({
        "id": pa.array([1, 2, 3, 4], pa.int64()),
        "text": pa.array(["Parquet document one.", None, "Parquet document three.", ""], pa.string()),
        "date": pa.array(["2019-01-02", "2019-01-03", None, "2019-01-05"], pa.string()),
        "score": pa.array([0.5, 0.1, 0.9, 0.3], pa.float64()),
    })
    pq.write_table(table, tmp_path / "pq" / "part-0.parquet")
    pq.write_table(table.slice(0, 1).set_column(0, "id", pa.array([9], pa.int64())), tmp_path / "pq" / "part-1.parquet")
    run_ingest(make_ctx, {"data.sources": [
        {"name": "pq", "format": "parquet", "path": "pq/*.parquet", "lang": "it", "category": "book", "license": "CC0-1.0"}]})

    m = io.read_json(tmp_path / "metrics/ingest.json")
    assert (m["read"], m["kept"]) == (5, 3)
    assert m["rejected"] == {"empty_text": 1, "missing_text": 1}
    docs = list(io.read_docs(tmp_path / "data/raw"))
    assert [d["id"] for d in docs] == ["1", "3", "9"]
    assert all((d["lang"], d["category"], d["source"]) == ("it", "book", "pq") for d in docs)
    assert docs[0]["date"] == "2019-01-02" and docs[1]["date"] == ""
    assert json.loads(docs[0]["meta"]) == {"score": 0.5}
    rej = [json.loads(x) for x in (tmp_path / "data/raw/rejected.jsonl").read_text().splitlines()]
    assert {(r["file"], r["line"], r["reason"]) for r in rej} == {
        ("pq/part-0.parquet", 2, "missing_text"), ("pq/part-0.parquet", 4, "empty_text")}


def test_rerun_is_byte_identical(corpus, make_ctx):
    ov = {"data.sources": sources(), "ingest.max_doc_bytes": 300}
    run_ingest(make_ctx, ov)
    first = {p.name: p.read_bytes() for p in (corpus / "data/raw").iterdir()}
    run_ingest(make_ctx, ov)
    second = {p.name: p.read_bytes() for p in (corpus / "data/raw").iterdir()}
    assert first == second


def test_a_language_outside_data_languages_is_rejected(make_ctx, tmp_path):
    import json

    from stages import ingest

    (tmp_path / "in.jsonl").write_text(json.dumps({"id": "a", "text": "hallo wereld", "lang": "nl"}) + "\n"
                                       + json.dumps({"id": "b", "text": "hello world", "lang": "en"}) + "\n")
    ctx = make_ctx("ingest", {"data.sources": [{"name": "s", "path": "in.jsonl", "license": "CC0-1.0"}]})
    ingest.run(ctx)
    m = json.loads((tmp_path / "metrics/ingest.json").read_text())
    assert m["rejected"] == {"unknown_lang": 1} and m["kept"] == 1
