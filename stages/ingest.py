"""ingest: every configured source -> one normalised Parquet corpus in data/raw/.

Why a separate stage: the filters, dedup and mix all want one schema (DESIGN.md: id,
text, lang, source, category, license, url, date, meta) whatever the source looked like,
and the malformed input has to be caught once, at the door, with a reason per record.
Nothing is silently lost: a record that cannot be read is *rejected* and logged to
data/raw/rejected.jsonl (source, file, line, reason), and read = kept + rejected.

Sources (params `data.sources`): local JSONL or Parquet globs, or a Hugging Face dataset
streamed with a document cap (`ingest.max_docs_per_source`). Offline, the HF path fails
with a message naming the dataset; it never falls back to something else.
"""
from __future__ import annotations

import glob
import itertools
import json
import os
from pathlib import Path
from typing import Iterator

import orjson

from . import io
from .params import Ingest, Source
from .runtime import Ledger, StageContext, StageError, stage

OUT = "data/raw"
KNOWN = {"id", "text", "lang", "category", "license", "url", "date"}


class SourceUnavailable(StageError):
    pass


def _files(root: Path, src: Source) -> list[Path]:
    files = sorted(Path(p) for p in glob.glob(str(root / src.path)))
    if not files:
        raise SourceUnavailable(f"source {src.name!r}: no file matches {src.path!r}")
    return files


def _jsonl_records(path: Path) -> Iterator[tuple[int, dict | None, str | None]]:
    """Yield (line number, record or None, reject reason or None) for every non-blank line."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 BOM (files saved on Windows)
                raw = raw[3:]
            if not raw.strip():
                continue
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as err:
                yield lineno, None, f"invalid_utf8: {err.reason} at byte {err.start}"
                continue
            try:
                rec = orjson.loads(raw)
            except orjson.JSONDecodeError as err:
                yield lineno, None, f"malformed_json: {err}"
                continue
            yield lineno, rec, None


def _parquet_records(path: Path) -> Iterator[tuple[int, dict | None, str | None]]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    n = 0
    for batch in pf.iter_batches(batch_size=1024):
        for rec in batch.to_pylist():
            n += 1
            yield n, rec, None


def _hf_records(src: Source) -> Iterator[tuple[int, dict | None, str | None]]:
    """Stream the dataset; the document cap (ingest.max_docs_per_source) is applied by read_source."""
    import datasets

    hf = src.hf
    try:
        ds = datasets.load_dataset(hf.dataset, hf.config, split=hf.split, revision=hf.revision, streaming=True)
        it = iter(ds)
        first = next(it, None)
    except Exception as err:  # offline, missing dataset, auth: all surface as one clear message
        raise SourceUnavailable(
            f"source {src.name!r}: Hugging Face dataset {hf.dataset!r} (config {hf.config!r}, split {hf.split!r}) "
            f"cannot be streamed here: {type(err).__name__}: {err}. This needs network access to the Hub "
            f"(HF_DATASETS_OFFLINE/HF_HUB_OFFLINE must be unset); or download it elsewhere and use a local "
            f"`path` with format parquet."
        ) from None
    n = 0
    stream = itertools.chain([first] if first is not None else [], it)
    for rec in stream:
        n += 1
        if hf.text_field != "text" and isinstance(rec, dict):
            rec = {**rec, "text": rec.get(hf.text_field)}
        yield n, rec, None


def normalise(rec, src: Source, where: str, max_bytes: int, languages: list[str]) -> tuple[dict | None, str | None]:
    """Map one raw record to the document schema, or say why it cannot be."""
    if not isinstance(rec, dict):
        return None, f"not_an_object: got {type(rec).__name__}"
    text = rec.get("text")
    if text is None:
        return None, "missing_text"
    if not isinstance(text, str):
        return None, f"text_not_string: got {type(text).__name__}"
    if not text.strip():
        return None, "empty_text"
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        return None, f"too_large: {size} bytes > ingest.max_doc_bytes {max_bytes}"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return None, "invalid_utf8: lone surrogate in text"
    lang = rec.get("lang") or src.lang
    if not lang:
        return None, "missing_lang: neither the record nor the source gives a language"
    if lang not in languages:
        return None, f"unknown_lang: {str(lang)[:40]!r} is not in data.languages {languages}"
    meta = {k: v for k, v in rec.items() if k not in KNOWN}
    doc = {
        "id": str(rec.get("id") or where),
        "text": text,
        "lang": str(lang),
        "source": src.name,
        "category": str(rec.get("category") or src.category),
        "license": str(rec.get("license") or src.license),
        "url": str(rec.get("url") or ""),
        "date": str(rec.get("date") or ""),
        "meta": json.dumps(meta, sort_keys=True, ensure_ascii=False, default=str),
    }
    return doc, None


def read_source(
    root: Path, src: Source, p: Ingest, languages: list[str], ledger: Ledger, rejects: list, per_source: dict,
    seen_ids: set[str],
) -> Iterator[dict]:
    """Yield the source's valid documents; count and log the rest. `seen_ids` spans all sources."""
    counts = per_source.setdefault(src.name, {"read": 0, "kept": 0, "rejected": 0})
    if src.format == "hf":
        streams = [(f"hf://{src.hf.dataset}", _hf_records(src))]
    else:
        reader = _jsonl_records if src.format == "jsonl" else _parquet_records
        streams = [(os.path.relpath(f, root), reader(f)) for f in _files(root, src)]
    for fname, records in streams:
        for lineno, rec, reason in records:
            if p.max_docs_per_source is not None and counts["read"] >= p.max_docs_per_source:
                return
            ledger.read += 1
            counts["read"] += 1
            where = f"{src.name}:{fname}:{lineno}"
            doc = None
            if reason is None:
                doc, reason = normalise(rec, src, where, p.max_doc_bytes, languages)
            if doc is not None and doc["id"] in seen_ids:
                doc, reason = None, f"duplicate_id: {doc['id']}"
            if doc is None:
                kind = reason.split(":")[0]
                ledger.reject(kind)
                counts["rejected"] += 1
                rejects.append({"source": src.name, "file": fname, "line": lineno, "reason": kind, "detail": reason})
                continue
            seen_ids.add(doc["id"])
            ledger.kept += 1
            counts["kept"] += 1
            yield doc


def run(ctx: StageContext) -> None:
    prm, root = ctx.params, ctx.root
    ledger, rejects, per_source, seen_ids = Ledger(), [], {}, set()
    docs = (
        doc
        for src in prm.data.sources
        for doc in read_source(root, src, prm.ingest, prm.data.languages, ledger, rejects, per_source, seen_ids)
    )
    io.write_corpus(ctx.path(OUT), ctx.progress(docs, None, "reading sources"), prm.ingest.rows_per_shard,
                    "rejected.jsonl", rejects, per_source=per_source)
    ctx.write_metrics("metrics/ingest.json", {**ledger.as_dict(), "per_source": per_source})
    ctx.dataset(OUT, "output")
    ctx.summary(f"{ledger.summary()} from {len(prm.data.sources)} sources -> {OUT}")


def main() -> None:
    with stage("ingest") as ctx:
        run(ctx)


if __name__ == "__main__":
    main()
