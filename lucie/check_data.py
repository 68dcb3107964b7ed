"""`lucie check-data DIR...`: does a document directory still hold exactly what its manifest says?

Every data stage writes `manifest.json` next to its Parquet shards: path, rows and sha256 of each shard, and the
total rows (docs/DATA.md). The manifest is the small thing to keep, publish or track (its sha256 pins every
shard); this command is the other half of that contract, for auditors and for shards kept in object storage or
copied between machines: each listed shard must exist, hash to its sha256 and hold its row count (read from the
Parquet footer), the rows must add up, and no unlisted shard may sit beside them (a reader following the
manifest would silently skip it). Nothing here imports torch: only stages.core.files (pyarrow).
"""
from __future__ import annotations

import json
from pathlib import Path

from stages.core.files import MANIFEST, sha256_file


def problems(directory: Path) -> list[str]:
    """What differs between `directory` and its manifest (empty: it holds exactly what the manifest lists)."""
    import pyarrow.parquet as pq

    mpath = directory / MANIFEST
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
        files = manifest["files"]
    except FileNotFoundError:
        return [f"{mpath}: no manifest"]
    except (ValueError, KeyError, TypeError) as err:
        return [f"{mpath}: not a document manifest ({type(err).__name__}: {err})"]
    out: list[str] = []
    listed, total = set(), 0
    for e in files:
        path = directory / e["path"]
        listed.add(e["path"])
        total += e["rows"]
        if not path.is_file():
            out.append(f"{e['path']}: missing")
            continue
        digest = sha256_file(path)
        if digest != e["sha256"]:
            out.append(f"{e['path']}: sha256 {digest[:12]}... != manifest {e['sha256'][:12]}...")
            continue
        rows = pq.ParquetFile(path).metadata.num_rows
        if rows != e["rows"]:
            out.append(f"{e['path']}: {rows} rows != manifest {e['rows']}")
    if manifest.get("rows") != total:
        out.append(f"{MANIFEST}: total rows {manifest.get('rows')} != sum over shards {total}")
    for stray in sorted(p.name for p in directory.glob("*.parquet") if p.name not in listed):
        out.append(f"{stray}: not in the manifest")
    return out


def main(dirs: list[Path]) -> int:
    """Print a line per directory (and per problem); 0 when every directory matches its manifest, 1 otherwise."""
    bad = 0
    for d in dirs:
        found = problems(d)
        if found:
            bad += 1
            print(f"{d}: {len(found)} problem(s)")
            for p in found:
                print(f"  {p}")
        else:
            m = json.loads((d / MANIFEST).read_text(encoding="utf-8"))
            n = len(m["files"])
            print(f"{d}: ok ({n} shard{'' if n == 1 else 's'}, {m['rows']} rows, every sha256 matches)")
    return 1 if bad else 0
