"""Atomic, deterministic output helpers."""
from __future__ import annotations

import pytest

from stages.core import files


def rows(n):
    return [{"id": f"d{i}", "text": f"text {i}", "lang": "en", "source": "s", "category": "web",
             "license": "CC0-1.0", "url": "", "date": "2020-01-01", "meta": "{}"} for i in range(n)]


def test_a_failed_block_leaves_the_previous_output_untouched(tmp_path):
    out = tmp_path / "data"
    with files.atomic_dir(out) as tmp:
        (tmp / "ok.txt").write_text("first")
    with pytest.raises(RuntimeError):
        with files.atomic_dir(out) as tmp:
            (tmp / "half.txt").write_text("half-written")
            raise RuntimeError("killed")
    assert sorted(p.name for p in out.iterdir()) == ["ok.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".data.tmp")]


def test_docs_roundtrip_in_manifest_order_and_same_bytes(tmp_path):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        files.write_manifest(tmp_path / d, files.write_docs(tmp_path / d, rows(7), rows_per_shard=3))
    assert [r["id"] for r in files.read_docs(tmp_path / "a")] == [f"d{i}" for i in range(7)]
    assert files.count_docs(tmp_path / "a") == 7
    assert (tmp_path / "a/manifest.json").read_bytes() == (tmp_path / "b/manifest.json").read_bytes()
    assert len(files.read_json(tmp_path / "a/manifest.json")["files"]) == 3


def test_an_empty_corpus_still_has_a_shard_and_manifest(tmp_path):
    files.write_manifest(tmp_path, files.write_docs(tmp_path, []))
    assert list(files.read_docs(tmp_path)) == []
