"""One datasheet per source, answering Gebru et al.'s questions with measured facts.

Every number comes from the pipeline's own records (ingest/filter/dedup metrics and the
released rows), never typed by hand, so a datasheet cannot drift from the data it describes.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

TEMPLATES = Path(__file__).parent / "templates"


def source_facts(name: str, rows: list[dict], ingest: dict, filt: dict, dedup_removed: Counter, cfg: dict) -> dict:
    years = sorted(r["date"][:4] for r in rows if r["date"][:4].isdigit())
    f = filt.get("per_source", {}).get(name, {})
    return {
        "name": name,
        "config": cfg,
        "ingest": ingest.get("per_source", {}).get(name, {}),
        "filter_read": f.get("read", 0),
        "filter_kept": f.get("kept", 0),
        "filter_dropped": {k.split(".", 1)[1]: v for k, v in sorted(f.items()) if k.startswith("dropped.")},
        "dedup_removed": dedup_removed.get(name, 0),
        "released_docs": len(rows),
        "released_words": sum(len(r["text"].split()) for r in rows),
        "languages": dict(sorted(Counter(r["lang"] for r in rows).items())),
        "categories": dict(sorted(Counter(r["category"] for r in rows).items())),
        "licenses": dict(sorted(Counter(r["license"] for r in rows).items())),
        "date_range": [years[0], years[-1]] if years else None,
    }


def render(facts: dict) -> str:
    env = Environment(loader=FileSystemLoader(TEMPLATES), undefined=StrictUndefined, trim_blocks=True,
                      lstrip_blocks=True, keep_trailing_newline=True)
    return env.get_template("datasheet.md.j2").render(f=facts)
