"""`lucie check-data`: a document directory against its manifest (shards present, sha256, rows, nothing extra)."""
from __future__ import annotations

import json

from typer.testing import CliRunner

from lucie.check_data import problems
from lucie.cli import app
from stages.core import files

ROWS = [{"id": f"d{i}", "text": f"text {i}", "lang": "en", "source": "s", "category": "web", "license": "CC0-1.0",
         "url": "", "date": "", "meta": "{}"} for i in range(7)]


def corpus(tmp_path):
    d = tmp_path / "docs"
    d.mkdir()
    files.write_manifest(d, files.write_docs(d, ROWS, rows_per_shard=3))  # 3 shards: 3, 3, 1 rows
    return d


def test_a_directory_written_by_a_stage_checks_clean(tmp_path):
    d = corpus(tmp_path)
    assert problems(d) == []
    res = CliRunner().invoke(app, ["check-data", str(d)])
    assert res.exit_code == 0 and "ok (3 shards, 7 rows" in res.output


def test_each_kind_of_difference_is_named(tmp_path):
    d = corpus(tmp_path)
    shard = d / "part-00001.parquet"
    shard.write_bytes(shard.read_bytes()[:-1] + b"\x00")  # one byte changed
    (d / "part-00002.parquet").unlink()
    (d / "part-00009.parquet").write_bytes((d / "part-00000.parquet").read_bytes())  # a stray shard
    found = problems(d)
    assert any(p.startswith("part-00001.parquet: sha256") for p in found)
    assert "part-00002.parquet: missing" in found
    assert "part-00009.parquet: not in the manifest" in found
    res = CliRunner().invoke(app, ["check-data", str(d)])
    assert res.exit_code == 1 and "3 problem(s)" in res.output


def test_rows_that_do_not_add_up_are_named(tmp_path):
    d = corpus(tmp_path)
    m = json.loads((d / "manifest.json").read_text())
    m["files"][0]["rows"] = 4  # the listing lies about a shard whose bytes are intact
    m["rows"] = 9
    (d / "manifest.json").write_text(json.dumps(m))
    found = problems(d)
    assert "part-00000.parquet: 3 rows != manifest 4" in found
    assert "manifest.json: total rows 9 != sum over shards 8" in found
    assert problems(tmp_path) == [f"{tmp_path / 'manifest.json'}: no manifest"]
