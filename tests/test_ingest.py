"""ingest: every malformed record is rejected with a reason and a file:line, never a crash;
read = kept + rejected; kept documents carry the DOC_SCHEMA fields."""
from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stages import ingest
from stages.core import files
from stages.core.runtime import StageError

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
    m = files.read_json(corpus / "metrics/ingest.json")

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
    local, nolang = m["per_source"]["local"], m["per_source"]["nolang"]
    assert (local["read"], local["kept"], local["rejected"]) == (len(records), 4, len(records) - 4)
    assert (nolang["read"], nolang["kept"], nolang["rejected"]) == (3, 1, 2)
    assert nolang["rejected_by_reason"] == {"duplicate_id": 1, "missing_lang": 1}
    assert sum(local["rejected_by_reason"].values()) == local["rejected"]
    assert nolang["words"] == len("This one declares it.".split())

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
    manifest = files.read_json(raw / files.MANIFEST)
    assert manifest["rows"] == 5 and len(manifest["files"]) == 3  # rows_per_shard 2
    for entry in manifest["files"]:
        assert files.sha256_file(raw / entry["path"]) == entry["sha256"]

    docs = list(files.read_docs(raw))
    assert [d["id"] for d in docs] == ["g1", "g2", "local:in/a.jsonl:13", "g4", "n2"]  # input order
    for d in docs:
        assert set(d) == set(files.DOC_SCHEMA.names)
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
    m = files.read_json(corpus / "metrics/ingest.json")
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

    m = files.read_json(tmp_path / "metrics/ingest.json")
    assert (m["read"], m["kept"]) == (5, 3)
    assert m["rejected"] == {"empty_text": 1, "missing_text": 1}
    docs = list(files.read_docs(tmp_path / "data/raw"))
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


# ---------------------------------------------------------------- robustness, one case per test
def ingest_file(tmp_path, make_ctx, data: bytes | None, name="in.jsonl", **params):
    """Ingest one JSONL file (source `s`, lang en; `data` None: already written); return
    (metrics, rejected records, kept docs)."""
    if data is not None:
        (tmp_path / name).write_bytes(data)
    ov = {"data.sources": [{"name": "s", "path": name, "lang": "en", "license": "CC0-1.0"}]}
    ov.update({f"ingest.{k}": v for k, v in params.items()})
    run_ingest(make_ctx, ov)
    m = files.read_json(tmp_path / "metrics/ingest.json")
    rej = [json.loads(x) for x in (tmp_path / "data/raw/rejected.jsonl").read_text(encoding="utf-8").splitlines()]
    assert m["read"] == m["kept"] + m["rejected_total"] == m["per_source"]["s"]["read"]
    assert len(rej) == m["rejected_total"]
    for r in rej:  # every rejection says where and why
        assert set(r) == {"source", "file", "line", "reason", "detail"} and r["source"] == "s" and r["file"] == name
        assert r["detail"].startswith(r["reason"])
    return m, rej, list(files.read_docs(tmp_path / "data/raw"))


GOOD = jsonl_line({"id": "ok", "text": GOOD_TEXT}) + b"\n"


@pytest.mark.parametrize("line, reason", [
    (b'{"id": "x", "text": "no closing brace"', "malformed_json"),
    (b'{"id": "x", "text": "caf\xe9"}', "invalid_utf8"),
    (b'{"id": "x", "text": "\xff\xfe broken bytes"}', "invalid_utf8"),
    (jsonl_line({"id": "x", "lang": "en"}), "missing_text"),
    (jsonl_line({"id": "x", "text": None}), "missing_text"),
    (jsonl_line({"id": "x", "text": ["a", "list"]}), "text_not_string"),
    (jsonl_line({"id": "x", "text": {"a": 1}}), "text_not_string"),
    (jsonl_line({"id": "x", "text": ""}), "empty_text"),
    (jsonl_line({"id": "x", "text": " \u3000\n\t"}), "empty_text"),  # ideographic space is whitespace too
    (b'"a bare string"', "not_an_object"),
    (b'{"id": "x", "text": "trailing comma",}', "malformed_json"),
    (b"[" * 2000 + b"]" * 2000, "malformed_json"),  # nesting deeper than the parser allows: an error, not a crash
])
def test_each_malformed_record_is_rejected_with_its_reason(tmp_path, make_ctx, line, reason):
    m, rej, docs = ingest_file(tmp_path, make_ctx, GOOD + line + b"\n" + GOOD.replace(b'"ok"', b'"ok2"'))
    assert (m["read"], m["kept"]) == (3, 2)
    assert m["rejected"] == {reason: 1}
    assert [(r["line"], r["reason"]) for r in rej] == [(2, reason)]
    assert [d["id"] for d in docs] == ["ok", "ok2"]


def test_a_truncated_last_line_is_rejected_as_truncated(tmp_path, make_ctx):
    m, rej, docs = ingest_file(tmp_path, make_ctx, GOOD + b'{"id": "cut", "text": "the write was interr')
    assert m["rejected"] == {"truncated": 1} and m["kept"] == 1
    assert rej[0]["line"] == 2 and "no newline" in rej[0]["detail"]


def test_a_last_line_without_newline_that_parses_is_kept(tmp_path, make_ctx):
    m, _, docs = ingest_file(tmp_path, make_ctx, GOOD + jsonl_line({"id": "last", "text": "Fine without a newline."}))
    assert m["kept"] == 2 and m["rejected_total"] == 0 and docs[-1]["id"] == "last"


def test_too_large_text_is_rejected_with_its_size(tmp_path, make_ctx):
    text = "é" * 600  # 1200 UTF-8 bytes, 600 characters: the size is in bytes
    m, rej, _ = ingest_file(tmp_path, make_ctx, GOOD + jsonl_line({"id": "big", "text": text}) + b"\n",
                            max_doc_bytes=1000)
    assert m["rejected"] == {"too_large": 1}
    assert rej[0]["detail"] == "too_large: 1200 bytes > ingest.max_doc_bytes 1000"
    # exactly at the cap is fine
    m, _, _ = ingest_file(tmp_path, make_ctx, GOOD + jsonl_line({"id": "cap", "text": "é" * 500}) + b"\n",
                          max_doc_bytes=1000)
    assert m["kept"] == 2


def test_a_50_mb_document_is_rejected_on_its_raw_size_without_being_decoded(tmp_path, make_ctx):
    import tracemalloc

    head, tail = b'{"id": "huge", "text": "', b'"}'
    size = len(head) + 50 * 1024 * 1024 + len(tail)
    with open(tmp_path / "in.jsonl", "wb") as f:
        f.write(GOOD + head)
        for _ in range(50):
            f.write(b"a" * (1024 * 1024))
        f.write(tail + b"\n" + GOOD.replace(b'"ok"', b'"after"'))
    tracemalloc.start()
    try:
        m, rej, docs = ingest_file(tmp_path, make_ctx, None, max_doc_bytes=1_000_000)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert (m["read"], m["kept"], m["rejected"]) == (3, 2, {"too_large": 1})
    assert [d["id"] for d in docs] == ["ok", "after"]  # the line after the huge one is read normally
    assert rej[0]["line"] == 2
    assert rej[0]["detail"].startswith(f"too_large: {size} bytes (raw line, not decoded) > line limit "
                                       f"{ingest.line_limit(1_000_000)}")
    # readline(limit) joins its pieces, so up to twice the line limit (7 MB) is live for a moment;
    # parsing the line (the code before this check) peaked at 734 MB here.
    assert peak < 2 * ingest.line_limit(1_000_000) + 2 * 1024 * 1024, f"peak {peak / 1e6:.0f} MB"


def parquet_source(tmp_path, make_ctx, table, **params):
    (tmp_path / "pq").mkdir(exist_ok=True)
    pq.write_table(table, tmp_path / "pq" / "part-0.parquet")
    ov = {"data.sources": [{"name": "pq", "format": "parquet", "path": "pq/*.parquet", "lang": "en",
                            "license": "CC0-1.0"}]}
    ov.update({f"ingest.{k}": v for k, v in params.items()})
    run_ingest(make_ctx, ov)
    m = files.read_json(tmp_path / "metrics/ingest.json")
    assert m["read"] == m["kept"] + m["rejected_total"]
    rej = [json.loads(x) for x in (tmp_path / "data/raw/rejected.jsonl").read_text().splitlines()]
    return m, rej


def test_a_parquet_file_without_a_text_column_rejects_every_row(tmp_path, make_ctx):
    table = pa.table({"id": ["a", "b", "c"], "content": ["x", "y", "z"]})
    m, rej = parquet_source(tmp_path, make_ctx, table)
    assert (m["read"], m["kept"], m["rejected"]) == (3, 0, {"missing_text": 3})
    assert [r["line"] for r in rej] == [1, 2, 3]
    assert "no 'text' column (columns: id, content)" in rej[0]["detail"]
    assert files.count_docs(tmp_path / "data/raw") == 0


def test_a_parquet_text_column_of_the_wrong_type_or_size(tmp_path, make_ctx):
    m, _ = parquet_source(tmp_path, make_ctx, pa.table({"text": pa.array([1, 2], pa.int64())}))
    assert m["rejected"] == {"text_not_string": 2}
    m, rej = parquet_source(tmp_path, make_ctx, pa.table({"text": ["short enough", "x" * 5000]}), max_doc_bytes=4000)
    assert m["kept"] == 1 and [r["detail"] for r in rej] == ["too_large: 5000 bytes > ingest.max_doc_bytes 4000"]


def test_an_unreadable_parquet_file_is_a_clear_error(tmp_path, make_ctx):
    (tmp_path / "pq").mkdir()
    good = pa.table({"text": ["fine"]})
    pq.write_table(good, tmp_path / "pq" / "a.parquet")
    data = (tmp_path / "pq" / "a.parquet").read_bytes()
    (tmp_path / "pq" / "b.parquet").write_bytes(data[: len(data) // 2])  # a download cut in half
    ctx = make_ctx("ingest", {"data.sources": [{"name": "pq", "format": "parquet", "path": "pq/*.parquet",
                                                 "lang": "en", "license": "CC0-1.0"}]})
    with pytest.raises(StageError, match=r"'pq': pq/b.parquet is not a readable Parquet file"):
        ingest.run(ctx)
    assert not (tmp_path / "data/raw").exists()


def test_an_integer_id_of_zero_is_kept_as_id(tmp_path, make_ctx):
    _, _, docs = ingest_file(tmp_path, make_ctx, jsonl_line({"id": 0, "text": GOOD_TEXT}) + b"\n")
    assert docs[0]["id"] == "0"


# ---------------------------------------------------------------- kill -9 and re-run
def _repo_dir(root, corpus: bytes) -> None:
    """A repo-shaped directory: params.yaml (the project's, tracking off) and one generated source."""
    import yaml

    from repo_copy import PROJECT

    prm = yaml.safe_load((PROJECT / "params.yaml").read_text())
    prm["tracking"]["enabled"] = False
    prm["data"]["sources"] = [{"name": "gen", "format": "jsonl", "path": "in/*.jsonl", "lang": "en", "license": "CC0-1.0"}]
    prm["ingest"]["rows_per_shard"] = 1000
    (root / "in").mkdir(parents=True)
    (root / "params.yaml").write_text(yaml.safe_dump(prm))
    (root / "in" / "gen.jsonl").write_bytes(corpus)


def _generated_corpus(n: int) -> bytes:
    import random

    rng = random.Random(7)
    words = [f"w{i}" for i in range(500)]
    lines = []
    for i in range(n):
        if i % 997 == 0:
            lines.append(b'{"id": "broken-%d", "text": "no end' % i)  # a malformed record now and then
        else:
            lines.append(jsonl_line({"id": f"d{i}", "text": " ".join(rng.choices(words, k=40)),
                                     "url": f"https://site{i % 40}.example/{i}", "date": f"{2010 + i % 14}-06-01"}))
    return b"\n".join(lines) + b"\n"


def _outputs(root) -> dict:
    files = {f"data/raw/{p.name}": p.read_bytes() for p in sorted((root / "data/raw").iterdir())}
    return {**files, "metrics/ingest.json": (root / "metrics/ingest.json").read_bytes()}


def test_a_killed_ingest_rerun_gives_the_uninterrupted_bytes(tmp_path):
    import signal
    import subprocess
    import time

    from repo_copy import BIN, PROJECT, env

    n = 30_000
    corpus = _generated_corpus(n)
    e = env(tmp_path, PYTHONPATH=str(PROJECT))
    e.pop("DVC_ROOT", None)
    cmd = [str(BIN / "python"), "-m", "stages.ingest"]

    def run(root):
        proc = subprocess.run(cmd, cwd=root, env=e, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]

    def run_and_kill(root):
        """Start the stage, SIGKILL it once its temp output holds 2 shards (of 30), return the leftovers."""
        proc = subprocess.Popen(cmd, cwd=root, env=e, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        try:
            while not list((root / "data").glob(".raw.tmp-*/part-00001.parquet")):
                assert proc.poll() is None, "the stage ended before it could be killed (make the input bigger)"
                assert time.monotonic() < deadline, "no shard appeared within 120 s"
                time.sleep(0.005)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(timeout=60)
        assert proc.returncode == -signal.SIGKILL  # killed, not finished
        return list((root / "data").glob(".raw.tmp-*"))

    ref = tmp_path / "uninterrupted"
    _repo_dir(ref, corpus)
    run(ref)
    expected = _outputs(ref)
    assert files.read_json(ref / "metrics/ingest.json")["rejected"] == {"malformed_json": len(range(0, n, 997))}

    # Killed on a first run: nothing at data/raw, only a temp dir; the re-run removes it and matches.
    fresh = tmp_path / "killed"
    _repo_dir(fresh, corpus)
    leftovers = run_and_kill(fresh)
    assert leftovers and not (fresh / "data/raw").exists() and not (fresh / "metrics/ingest.json").exists()
    run(fresh)
    assert _outputs(fresh) == expected
    assert not list((fresh / "data").glob(".raw.tmp-*")), "the killed run's temp output was not cleaned"

    # Killed over a complete output: that output stays as it was, byte for byte.
    assert run_and_kill(ref)
    assert _outputs(ref) == expected
    run(ref)
    assert _outputs(ref) == expected and not list((ref / "data").glob(".raw.tmp-*"))


def test_only_temp_outputs_of_dead_processes_on_this_host_are_removed(tmp_path):
    import socket
    import subprocess

    out = tmp_path / "raw"
    dead = subprocess.Popen(["true"])
    dead.wait()
    host = socket.gethostname()
    stale = tmp_path / f".raw.tmp-{host}-{dead.pid}"
    live = tmp_path / f".raw.tmp-{host}-{os.getppid()}"  # pytest's parent: alive
    remote = tmp_path / f".raw.tmp-other-host-{dead.pid}"  # a shared filesystem: not ours to judge
    for d in (stale, live, remote):
        d.mkdir()
    with files.atomic_dir(out) as tmp:
        (tmp / "x").write_text("x")
    assert not stale.exists() and live.exists() and remote.exists()
    assert sorted(p.name for p in out.iterdir()) == ["x"]


def test_a_killed_run_with_skip_completed_resumes_and_gives_the_uninterrupted_bytes(tmp_path):
    """A preempted job (SIGKILL, no cleanup) with executor.skip_completed: the rerun keeps the finished tasks."""
    import signal
    import subprocess
    import time

    import yaml

    from repo_copy import BIN, PROJECT, env

    corpus = _generated_corpus(24_000)
    lines = corpus.splitlines(keepends=True)
    e = env(tmp_path, PYTHONPATH=str(PROJECT))
    e.pop("DVC_ROOT", None)
    cmd = [str(BIN / "python"), "-m", "stages.ingest"]

    def repo(root):
        _repo_dir(root, b"")
        (root / "in" / "gen.jsonl").unlink()
        for k in range(4):  # four files: one per task
            (root / "in" / f"gen-{k}.jsonl").write_bytes(b"".join(lines[k::4]))
        prm = yaml.safe_load((root / "params.yaml").read_text())
        prm["executor"].update(tasks=4, skip_completed=True)
        (root / "params.yaml").write_text(yaml.safe_dump(prm))

    ref, killed = tmp_path / "ref", tmp_path / "killed"
    for root in (ref, killed):
        repo(root)
    assert subprocess.run(cmd, cwd=ref, env=e, capture_output=True, timeout=300).returncode == 0

    proc = subprocess.Popen(cmd, cwd=killed, env=e, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while not (killed / "data/.raw.tasks/task-00001/task.json").exists():
            assert proc.poll() is None, "the stage ended before it could be killed (make the input bigger)"
            assert time.monotonic() < deadline
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL and not (killed / "data/raw").exists()
    done = sorted(p.parent.name for p in (killed / "data/.raw.tasks").glob("task-*/task.json"))
    assert "task-00000" in done and len(done) < 4

    rerun = subprocess.run(cmd, cwd=killed, env=e, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"[ingest] resuming: {len(done)} of 4 tasks already finished" in rerun.stderr
    assert _outputs(killed) == _outputs(ref)
    assert not (killed / "data/.raw.tasks").exists()


@pytest.mark.parametrize("kind", ["directory", "symlink-loop", "dangling"])
def test_a_source_path_that_is_not_a_file_is_one_line(make_ctx, tmp_path, kind):
    """issue 16.9: a directory or a symlink loop as a JSONL source gave a 178-line traceback."""
    src = tmp_path / "src"
    src.mkdir()
    bad = src / "b.jsonl"
    if kind == "directory":
        bad.mkdir()
    elif kind == "symlink-loop":
        bad.symlink_to(src / "c.jsonl")
        (src / "c.jsonl").symlink_to(bad)
    else:
        bad.symlink_to(src / "nowhere.jsonl")
    ctx = make_ctx("ingest", {"data.sources": [{"name": "s", "path": "src/*.jsonl", "license": "CC0-1.0"}]}, root=tmp_path)
    with pytest.raises(ingest.SourceUnavailable) as exc:
        ingest.run(ctx)
    msg = str(exc.value)
    assert "src/b.jsonl" in msg and "\n" not in msg
    assert {"directory": "is a directory", "symlink-loop": "symbolic links", "dangling": "no such file"}[kind] in msg
