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
import stat
from pathlib import Path
from typing import BinaryIO, Iterator

import orjson

from stages.core import executor, files
from stages.core.params import Ingest, Source
from stages.core.runtime import Ledger, StageContext, StageError, progress, stage

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
    for f in files:  # a directory or a symlink loop would fail deep inside a task, as a long traceback
        try:
            mode = os.stat(f).st_mode
        except OSError as err:  # ELOOP (a symlink loop), a dangling link
            mode, why = 0, f"unreadable ({err.strerror.lower()})"
        else:
            why = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        if not stat.S_ISREG(mode):
            raise SourceUnavailable(f"source {src.name!r}: {os.path.relpath(f, root)} is {why}; data.sources[].path "
                                    f"must match files (e.g. {src.path.rstrip('/')}/*.{src.format})")
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


# ---------------------------------------------------------------- units: what one task reads
Unit = tuple[int, str]  # (index in data.sources, file relative to the root; "hf://<dataset>" for a stream)


def units(root: Path, sources: list[Source]) -> list[Unit]:
    """Every file of every source, in the order the corpus lists them (sources as configured, files sorted).
    Missing files fail here, before any task starts."""
    out: list[Unit] = []
    for i, src in enumerate(sources):
        if src.format == "hf":
            out.append((i, f"hf://{src.hf.dataset}"))
        else:
            out.extend((i, os.path.relpath(f, root)) for f in _files(root, src))
    return out


def unit_records(root: Path, src: Source, fname: str, p: Ingest, languages: list[str]) -> Iterator[Record]:
    """(line or row, normalised document or None, reject reason) for the records of one file, in file order.
    A file never gives more than the document cap: nothing after it can be taken."""
    if src.format == "hf":
        raw = _hf_records(src)
    elif src.format == "jsonl":
        raw = _jsonl_records(root / fname, p.max_doc_bytes)
    else:
        raw = _parquet_records(root / fname, fname, src)
    cap = p.max_docs_per_source
    for n, (lineno, rec, reason) in enumerate(raw):
        if cap is not None and n >= cap:
            return
        doc = None
        if reason is None:
            doc, reason = normalise(rec, src, f"{src.name}:{fname}:{lineno}", p.max_doc_bytes, languages)
        yield lineno, doc, reason


# ---------------------------------------------------------------- the accounting, in corpus order
class Accounts:
    """What the stage decides in corpus order, whoever parsed the records: the per-source document cap,
    duplicate ids across all sources, and the counts. Fed the same records in the same order it takes the
    same decisions, so one process reading everything and N tasks replayed in rank order write the same bytes."""

    def __init__(self, sources: list[Source], cap: int | None):
        self.ledger, self.rejects, self.seen_ids, self.cap = Ledger(), [], set(), cap
        self.per_source = {s.name: {"read": 0, "kept": 0, "rejected": 0, "words": 0, "rejected_by_reason": {}}
                           for s in sources}

    def full(self, name: str) -> bool:
        return self.cap is not None and self.per_source[name]["read"] >= self.cap

    def take(self, name: str, fname: str, lineno: int, doc: dict | None, reason: str | None) -> dict | None:
        """Count one record; return the document if it is kept."""
        counts = self.per_source[name]
        self.ledger.read += 1
        counts["read"] += 1
        if doc is not None and doc["id"] in self.seen_ids:
            doc, reason = None, f"duplicate_id: {doc['id']}"
        if doc is None:
            kind = reason.split(":")[0]
            self.ledger.reject(kind)
            by_reason = counts["rejected_by_reason"]
            by_reason[kind] = by_reason.get(kind, 0) + 1
            counts["rejected"] += 1
            self.rejects.append({"source": name, "file": fname, "line": lineno, "reason": kind, "detail": reason})
            return None
        self.seen_ids.add(doc["id"])
        self.ledger.kept += 1
        counts["kept"] += 1
        counts["words"] += len(doc["text"].split())
        return doc

    def metrics(self) -> dict:
        for name, c in self.per_source.items():  # the per-source half of Ledger.check
            if c["read"] != c["kept"] + c["rejected"] or c["rejected"] != sum(c["rejected_by_reason"].values()):
                raise AssertionError(f"record accounting broken for source {name}: {c}")
        return {**self.ledger.as_dict(), "per_source": self.per_source}


# ---------------------------------------------------------------- tasks: parse and normalise a range of files
RECORDS = "records.parquet"  # per task: (unit, line, reason) of every record in order; reason null: a document


class IngestTask:
    """One executor task: the files [start, end) of the unit list -> its normalised documents (Parquet parts)
    and the (unit, line, reason) of every record, in file order. Parsing and normalising is the work that
    scales; the decisions that need the whole corpus (cap, duplicate ids) are the merge's (Accounts)."""

    def __init__(self, root: Path, p: Ingest, sources: list[Source], languages: list[str], all_units: list[Unit]):
        self.root, self.p, self.sources, self.languages, self.units = Path(root), p, sources, languages, all_units

    def __call__(self, rank: int, world_size: int, out: Path) -> dict:
        import pyarrow as pa
        import pyarrow.parquet as pq

        start, end = executor.row_range(len(self.units), rank, world_size)
        cols: dict[str, list] = {"unit": [], "line": [], "reason": []}

        def docs():
            for u in progress(range(start, end), end - start, f"[ingest] files (task {rank})"):
                i, fname = self.units[u]
                for lineno, doc, reason in unit_records(self.root, self.sources[i], fname, self.p, self.languages):
                    cols["unit"].append(u)
                    cols["line"].append(lineno)
                    cols["reason"].append(reason)
                    if doc is not None:
                        yield doc

        files.write_manifest(out, files.write_docs(out, docs(), self.p.rows_per_shard))
        table = pa.table({"unit": pa.array(cols["unit"], pa.int32()), "line": pa.array(cols["line"], pa.int64()),
                          "reason": pa.array(cols["reason"], pa.string())})
        pq.write_table(table, out / RECORDS, compression="zstd")
        return {"units": [start, end], "records": len(cols["unit"])}


def unit_inputs(root: Path, prm, all_units: list[Unit]) -> dict:
    """What a finished ingest task depends on besides the code (for executor.skip_completed): the data and
    ingest params and each file's size and modification time (hashing terabytes to decide a resume is not
    worth it; a rewritten file changes its mtime)."""
    files = []
    for _, fname in all_units:
        st = None if fname.startswith("hf://") else (root / fname).stat()
        files.append([fname, st and st.st_size, st and st.st_mtime_ns])
    return {"data": prm.data.model_dump(mode="json"), "ingest": prm.ingest.model_dump(mode="json"), "files": files}


def replay(dirs: list[Path], all_units: list[Unit], sources: list[Source], acc: Accounts) -> Iterator[dict]:
    """The tasks' records in rank order through Accounts: the kept documents, in corpus order."""
    import pyarrow.parquet as pq

    for d in dirs:
        docs = files.read_docs(d)
        rec = pq.read_table(d / RECORDS)
        for u, lineno, reason in zip(*(rec.column(c).to_pylist() for c in ("unit", "line", "reason"))):
            doc = next(docs) if reason is None else None
            i, fname = all_units[u]
            name = sources[i].name
            if acc.full(name):
                continue
            kept = acc.take(name, fname, lineno, doc, reason)
            if kept is not None:
                yield kept


def run(ctx: StageContext) -> None:
    prm, root = ctx.params, ctx.root
    sources, ex = prm.data.sources, ctx.params.executor
    all_units = units(root, sources)
    acc = Accounts(sources, prm.ingest.max_docs_per_source)
    out = ctx.path(OUT)
    task = IngestTask(root, prm.ingest, sources, prm.data.languages, all_units)
    with executor.task_results(root, ex, "ingest", task, out, lambda: unit_inputs(root, prm, all_units)) as dirs:
        docs = replay(dirs, all_units, sources, acc)
        files.write_corpus(out, ctx.progress(docs, None, "accounting"), prm.ingest.rows_per_shard,
                        "rejected.jsonl", acc.rejects, per_source=acc.per_source)
    ctx.write_metrics("metrics/ingest.json", acc.metrics())
    ctx.dataset(OUT, "output")
    ctx.summary(f"{acc.ledger.summary()} from {len(sources)} sources{executor.describe(ex)} -> {OUT}")


def main() -> None:
    with stage("ingest") as ctx:
        run(ctx)


if __name__ == "__main__":
    main()
