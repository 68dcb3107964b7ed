"""Atomic, deterministic file output shared by all stages.

A stage writes every output into a sibling temp path and renames it into place only
when the stage has finished, so a killed stage never leaves a half-written output that
DVC or the next stage would trust; the temp path a killed run leaves behind is removed
by the next write to the same path. Parquet and JSON are written byte-stably (fixed
schema, no timestamps, sorted keys) so that same inputs give the same bytes.
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import socket
from pathlib import Path
from typing import Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from stages.core import dir_swap

# The document schema every data stage reads and writes (DESIGN.md "data contracts").
DOC_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("text", pa.string()),
        ("lang", pa.string()),
        ("source", pa.string()),
        ("category", pa.string()),
        ("license", pa.string()),
        ("url", pa.string()),
        ("date", pa.string()),
        ("meta", pa.string()),  # JSON object: everything else the record carried
    ]
)
MANIFEST = "manifest.json"


def root() -> Path:
    """Repo root: DVC sets DVC_ROOT for stage commands; otherwise the current directory."""
    return Path(os.environ.get("DVC_ROOT") or os.getcwd()).resolve()


def _tmp_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{socket.gethostname()}-{os.getpid()}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_tmp(path: Path) -> list[Path]:
    """Remove the temp siblings of `path` left by killed runs on this host (their pid is gone).

    A SIGKILLed stage cannot clean up after itself; its temp output is never renamed into place,
    so it is harmless, but it can be as large as the output. Temp paths of live processes and of
    other hosts (a shared filesystem) are left alone.
    """
    prefix = f".{path.name}.tmp-{socket.gethostname()}-"
    removed = []
    for p in path.parent.glob(f"{glob.escape(prefix)}*") if path.parent.is_dir() else ():
        pid = p.name[len(prefix):]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            remove(p)
            removed.append(p)
    return removed


def remove(path: Path) -> None:
    """Delete a file, a symlink (never its target) or a directory tree; nothing if absent."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _fresh_tmp(path: Path) -> Path:
    """An empty temp sibling of `path` for this process, after removing those of dead runs."""
    remove_stale_tmp(path)
    tmp = _tmp_sibling(path)
    remove(tmp)
    tmp.mkdir()
    return tmp


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temp directory that replaces `path` only if the block succeeds; the swap keeps a
    complete output (old or new) at every instant, and a failure leaves no temp directory (dir_swap)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dir_swap.recover(path)  # a kill inside an earlier three-rename swap
    tmp = _fresh_tmp(path)
    try:
        yield tmp
    except BaseException:
        remove(tmp)
        raise
    try:
        dir_swap.replace(tmp, path)
    except BaseException:
        remove(tmp)
        raise


@contextlib.contextmanager
def scratch_dir(path: str | Path) -> Iterator[Path]:
    """A private work directory beside `path` (`.NAME.tmp-HOST-PID`), removed after the block; the one a
    killed run left (never removed by /tmp's cleaner in time) is removed by the next run (remove_stale_tmp)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _fresh_tmp(path)
    try:
        yield tmp
    finally:
        remove(tmp)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(path)
    tmp = _tmp_sibling(path)
    tmp.write_bytes(data)
    os.replace(tmp, path)


def dumps_json(obj) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n"


def write_json(path: str | Path, obj) -> None:
    write_bytes_atomic(path, dumps_json(obj).encode("utf-8"))


def read_json(path: str | Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def fingerprint(obj) -> str:
    """16 hex digits identifying a JSON-able value (sorted keys): what a resume compares to refuse other work."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def write_docs(out_dir: Path, rows: Iterable[dict], rows_per_shard: int = 50_000, prefix: str = "part") -> list[dict]:
    """Write document rows as Parquet shards `<prefix>-NNNNN.parquet`; return manifest entries."""
    entries, batch, shard = [], [], 0

    def flush():
        nonlocal batch, shard
        name = f"{prefix}-{shard:05d}.parquet"
        table = pa.Table.from_pylist(batch, schema=DOC_SCHEMA)
        # Fixed writer options and no pandas metadata: the bytes depend on the rows only.
        pq.write_table(table, out_dir / name, compression="zstd", store_schema=False, write_statistics=False)
        entries.append({"path": name, "rows": len(batch), "sha256": sha256_file(out_dir / name)})
        batch, shard = [], shard + 1

    for row in rows:
        batch.append(row)
        if len(batch) >= rows_per_shard:
            flush()
    if batch or not entries:
        flush()
    return entries


def write_manifest(out_dir: Path, entries: list[dict], **extra) -> None:
    write_json(out_dir / MANIFEST, {"files": entries, "rows": sum(e["rows"] for e in entries), **extra})


def write_corpus(out: str | Path, rows: Iterable[dict], rows_per_shard: int, log_name: str, log: list,
                 **manifest_extra) -> None:
    """A data stage's output directory, atomically: Parquet shards + manifest + `log_name` (JSONL), the
    per-document record of what the stage removed. `log` may fill up while `rows` is consumed."""
    with atomic_dir(out) as tmp:
        write_manifest(tmp, write_docs(tmp, rows, rows_per_shard), **manifest_extra)
        write_jsonl(tmp / log_name, log)


def read_docs(in_dir: str | Path) -> Iterator[dict]:
    """Iterate the rows of a document directory in manifest order (the order is part of the contract)."""
    in_dir = Path(in_dir)
    manifest = read_json(in_dir / MANIFEST)
    for entry in manifest["files"]:
        table = pq.read_table(in_dir / entry["path"], schema=DOC_SCHEMA)
        yield from table.to_pylist()


def count_docs(in_dir: str | Path) -> int:
    return read_json(Path(in_dir) / MANIFEST)["rows"]


def write_jsonl(path: Path, rows: Iterable[dict]) -> int:
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n")
            n += 1
    return n
