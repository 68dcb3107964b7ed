"""ingest: every configured source -> one normalised Parquet corpus in data/raw/.

Why a separate stage: the filters, dedup and mix all want one schema (DESIGN.md: id,
text, lang, source, category, license, url, date, meta) whatever the source looked like,
and the malformed input has to be caught once, at the door, with a reason per record.
Nothing is silently lost: a record that cannot be read is *rejected* and logged to
data/raw/rejected.jsonl (source, file, line, reason, detail), and read = kept + rejected,
overall and per source (docs/DATA.md lists the reasons).

Sources (params `data.sources`): local JSONL or Parquet globs, or a Hugging Face dataset
streamed with a document cap (`ingest.max_docs_per_source`). Offline, the HF path fails
with a message naming the dataset; it never falls back to something else.

Size: `ingest.max_doc_bytes` caps a document's text (UTF-8 bytes). A JSONL line is measured
on its raw bytes before anything is decoded, and a line too long to hold an acceptable
document is skipped in 1 MiB pieces, so a 50 MB line costs a few MB of memory, not 100+.
"""
from __future__ import annotations

import glob
import itertools
import json
import os
from collections import Counter
from pathlib import Path
from typing import BinaryIO, Iterator

import orjson

from . import io
from .params import Ingest, Source
from .runtime import Ledger, StageContext, StageError, stage

OUT = "data/raw"
KNOWN = {"id", "text", "lang", "category", "license", "url", "date"}
# JSON may spell one text byte with up to 6 (`\u0041` is "A"), and a record carries fields
# besides its text: a line longer than this cannot be an acceptable document, or only one
# whose other fields outweigh any text we keep. It is rejected without being decoded.
ESCAPE_FACTOR = 6
FIELDS_ALLOWANCE = 1 << 20
SKIP_CHUNK = 1 << 20

Record = tuple[int, "dict | None", "str | None"]  # (line or row number, record, reject reason)


class SourceUnavailable(StageError):
    pass


def line_limit(max_doc_bytes: int) -> int:
    """The longest raw JSONL line that is decoded at all (see ESCAPE_FACTOR)."""
    return ESCAPE_FACTOR * max_doc_bytes + FIELDS_ALLOWANCE


def _files(root: Path, src: Source) -> list[Path]:
    files = sorted(Path(p) for p in glob.glob(str(root / src.path)))
    if not files:
        raise SourceUnavailable(f"source {src.name!r}: no file matches {src.path!r}")
    return files


def _bounded_lines(f: BinaryIO, limit: int) -> Iterator[tuple[int, bytes | None, int, bool]]:
    """Yield (line number, line or None if longer than `limit`, size in bytes, ends with a newline).

    readline(limit + 1) never holds more than limit + 1 bytes; the rest of a longer line is
    read and thrown away piece by piece, only its length is kept.
    """
    lineno = 0
    while chunk := f.readline(limit + 1):
        lineno += 1
        if len(chunk) <= limit or chunk.endswith(b"\n"):
            yield lineno, chunk, len(chunk.rstrip(b"\r\n")), chunk.endswith(b"\n")
            continue
        size, part = len(chunk), b""
        del chunk
        while part := f.readline(SKIP_CHUNK):
            size += len(part)
            if part.endswith(b"\n"):
                break
        yield lineno, None, size - (1 if part.endswith(b"\n") else 0), part.endswith(b"\n")


def _jsonl_records(path: Path, max_doc_bytes: int) -> Iterator[Record]:
    """Every non-blank line of a JSONL file as a record or a reject reason."""
    limit = line_limit(max_doc_bytes)
    with open(path, "rb") as f:
        for lineno, raw, size, newline in _bounded_lines(f, limit):
            if raw is None:
                yield lineno, None, (f"too_large: {size} bytes (raw line, not decoded) > line limit {limit} "
                                     f"(= {ESCAPE_FACTOR} x ingest.max_doc_bytes {max_doc_bytes} + 1 MiB for other fields)")
                continue
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 BOM (files saved on Windows)
                raw = raw[3:]
            if not raw.strip():
                continue
            try:
                rec = orjson.loads(raw)  # validates UTF-8 itself: no decoded copy on the happy path
            except orjson.JSONDecodeError as err:
                yield lineno, None, _why_not_json(raw, err, newline)
                continue
            yield lineno, rec, None


def _why_not_json(raw: bytes, err: Exception, newline: bool) -> str:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as bad:
        return f"invalid_utf8: {bad.reason} at byte {bad.start}"
    if not newline:  # the last line of the file, cut short (an interrupted write or download)
        return f"truncated: last line has no newline and does not parse ({err})"
    return f"malformed_json: {err}"


def _parquet_records(path: Path, fname: str, src: Source) -> Iterator[Record]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        # Without a readable footer the rows cannot even be counted, so they cannot be accounted
        # for one by one: this is an error to fix (re-download, or drop the file from the glob).
        raise StageError(f"source {src.name!r}: {fname} is not a readable Parquet file: {err}") from None
    names = pf.schema_arrow.names
    if "text" not in names:
        reason = f"missing_text: the file has no 'text' column (columns: {', '.join(names) or 'none'})"
        for n in range(1, pf.metadata.num_rows + 1):  # every row is rejected; none needs reading
            yield n, None, reason
        return
    n = 0
    try:
        for batch in pf.iter_batches(batch_size=256):
            for rec in batch.to_pylist():
                n += 1
                yield n, rec, None
    except (pa.ArrowException, OSError) as err:
        raise StageError(f"source {src.name!r}: {fname} is corrupt after row {n}: {err}") from None


def _hf_records(src: Source) -> Iterator[Record]:
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


def _utf8_size(text: str, max_bytes: int) -> int | None:
    """The text's UTF-8 size when it may exceed max_bytes, else None; encodes only when it must
    (a character is 1 to 4 bytes)."""
    if 4 * len(text) <= max_bytes:
        return None
    if len(text) > max_bytes:
        return len(text.encode("utf-8", "surrogatepass"))
    size = len(text.encode("utf-8", "surrogatepass"))
    return size if size > max_bytes else None


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
    size = _utf8_size(text, max_bytes)
    if size is not None:
        return None, f"too_large: {size} bytes > ingest.max_doc_bytes {max_bytes}"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return None, "invalid_utf8: lone surrogate in text"
    lang = rec.get("lang") or src.lang
    if not lang:
        return None, "missing_lang: neither the record nor the source gives a language"
    if not isinstance(lang, str) or lang not in languages:
        return None, f"unknown_lang: {str(lang)[:40]!r} is not in data.languages {languages}"
    rid = rec.get("id")
    meta = {k: v for k, v in rec.items() if k not in KNOWN}
    doc = {
        "id": where if rid is None or rid == "" else str(rid),  # 0 is an id; only absent/empty is not
        "text": text,
        "lang": lang,
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
    counts = per_source.setdefault(src.name, {"read": 0, "kept": 0, "rejected": 0, "words": 0})
    reasons: Counter = Counter()
    if src.format == "hf":
        streams = [(f"hf://{src.hf.dataset}", _hf_records(src))]
    else:
        streams = []
        for f in _files(root, src):
            fname = os.path.relpath(f, root)
            streams.append((fname, _jsonl_records(f, p.max_doc_bytes) if src.format == "jsonl"
                            else _parquet_records(f, fname, src)))
    try:
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
                    reasons[kind] += 1
                    counts["rejected"] += 1
                    rejects.append({"source": src.name, "file": fname, "line": lineno, "reason": kind, "detail": reason})
                    continue
                seen_ids.add(doc["id"])
                ledger.kept += 1
                counts["kept"] += 1
                counts["words"] += len(doc["text"].split())
                yield doc
    finally:  # also on the early return of the document cap
        counts["rejected_by_reason"] = dict(sorted(reasons.items()))


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
    for name, c in per_source.items():  # the per-source half of Ledger.check
        if c["read"] != c["kept"] + c["rejected"] or c["rejected"] != sum(c["rejected_by_reason"].values()):
            raise AssertionError(f"record accounting broken for source {name}: {c}")
    ctx.write_metrics("metrics/ingest.json", {**ledger.as_dict(), "per_source": per_source})
    ctx.dataset(OUT, "output")
    ctx.summary(f"{ledger.summary()} from {len(prm.data.sources)} sources -> {OUT}")


def main() -> None:
    with stage("ingest") as ctx:
        run(ctx)


if __name__ == "__main__":
    main()
