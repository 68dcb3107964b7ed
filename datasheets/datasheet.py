"""One datasheet per source, answering Gebru et al.'s questions with measured facts.

Gebru et al., *Datasheets for Datasets* (CACM 2021; arXiv:1803.09010) ask their questions
under seven headings: motivation, composition, collection process, preprocessing/cleaning/
labeling, uses, distribution, maintenance. Every answer here is either a number the pipeline
measured (ingest/filter/dedup/mix metrics, the dedup removal log, the released rows) or a
value from params.yaml (the source's configuration, the release section). What the pipeline
cannot know (who funded the data, consent, ethical review) is said to be unknown in those
words (NOT_RECORDED), never guessed, so a datasheet cannot drift from the data it describes.

`source_facts` gathers the facts (a plain dict, tested on its own); `render` fills the
template; `write_datasheets` writes `<source>.md` for every configured source.
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Iterable
from urllib.parse import urlsplit

from jinja2 import Environment, FileSystemLoader, StrictUndefined

TEMPLATES = Path(__file__).parent / "templates"
NOT_RECORDED = "not recorded by the pipeline"
# Columns of every released row (stages/core/files.py DOC_SCHEMA); listed here so the datasheet
# does not import the stages (an auditor installs datasheets/ and model_card/ only).
FIELDS = {
    "id": "the source's id, or `<source>:<file>:<line>` when the record had none",
    "text": "the document text (UTF-8)",
    "lang": "language code (declared by the record or the source, checked by language ID)",
    "source": "name of the source in params.yaml `data.sources`",
    "category": "Lucie's category (web, wiki, book, programming, ...)",
    "license": "license of the document (the record's own, else the source's)",
    "url": "where the document came from, empty when unknown",
    "date": "the record's date as given, empty when unknown",
    "meta": "JSON object of every other field the record carried",
}
DATE = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?")
TOP_DOMAINS = 10
EXAMPLES = 3


def dedup_counts(removed: Iterable[dict]) -> dict[str, dict[str, int]]:
    """source -> {kind: n} from data/dedup/removed.jsonl records (source, kind: exact | near)."""
    out: dict[str, Counter] = {}
    for r in removed:
        out.setdefault(r["source"], Counter())[r.get("kind", "removed")] += 1
    return {s: dict(sorted(c.items())) for s, c in out.items()}


def row_stats(rows: list[dict]) -> dict:
    """What the released rows of one source (or one group) measure."""
    dates = sorted(m.group(0) for r in rows if (m := DATE.match(r.get("date") or "")))
    domains = Counter(h for r in rows if r.get("url") and (h := (urlsplit(r["url"]).hostname or "")))
    return {
        "docs": len(rows),
        "words": sum(len(r["text"].split()) for r in rows),
        "chars": sum(len(r["text"]) for r in rows),
        "languages": dict(sorted(Counter(r["lang"] for r in rows).items())),
        "categories": dict(sorted(Counter(r["category"] for r in rows).items())),
        "licenses": dict(sorted(Counter(r["license"] for r in rows).items())),
        "date_range": [dates[0], dates[-1]] if dates else None,
        "undated": len(rows) - len(dates),
        "no_url": sum(1 for r in rows if not r.get("url")),
        "top_domains": sorted(domains.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_DOMAINS],
        "domains": len(domains),
        "example_ids": [r["id"] for r in rows[:EXAMPLES]],
    }


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None  # rounded when shown, so tables agree with each other


def source_facts(cfg: dict, rows: list[dict], metrics: dict, removed: dict[str, dict[str, int]],
                 totals: dict | None = None, release: dict | None = None, max_docs: int | None = None) -> dict:
    """Everything the datasheet of one source says, as data.

    cfg: the source's params (`Source.model_dump()`); rows: its released rows; metrics: the stage
    metrics by name (ingest, filter, dedup, mix; missing ones are reported as not recorded);
    removed: `dedup_counts(...)`; totals: {"docs", "words"} of the whole release (for shares);
    release: the params' `release` section; max_docs: `ingest.max_docs_per_source`.
    """
    name = cfg["name"]
    ing = (metrics.get("ingest") or {}).get("per_source", {}).get(name)
    flt = (metrics.get("filter") or {}).get("per_source", {}).get(name)
    dd = removed.get(name, {})
    mix = ((metrics.get("mix") or {}).get("after_upsampling") or {}).get("by_source", {}).get(name)
    stats = row_stats(rows)
    facts = {
        "name": name,
        "config": cfg,
        "origin": cfg.get("path") if cfg.get("format") != "hf" else
        f"Hugging Face dataset {cfg['hf']['dataset']} (config {cfg['hf'].get('config')}, split {cfg['hf'].get('split')}"
        f"{', revision ' + cfg['hf']['revision'] if cfg['hf'].get('revision') else ''})",
        "description": cfg.get("description"),
        "citation": cfg.get("citation"),
        "homepage": cfg.get("url") or cfg.get("homepage"),
        "max_docs": max_docs,
        "release": release or {},
        "released": stats,
        "share": {"docs": _ratio(stats["docs"], (totals or {}).get("docs", 0)),
                  "words": _ratio(stats["words"], (totals or {}).get("words", 0))},
        "ingest": None,
        "filter": None,
        "dedup": None,
        "mix": mix,
        "fields": FIELDS,
    }
    if ing:
        facts["ingest"] = {"read": ing["read"], "kept": ing["kept"], "rejected": ing["rejected"],
                           "by_reason": ing.get("rejected_by_reason"), "words": ing.get("words"),
                           "yield": _ratio(ing["kept"], ing["read"])}
    if flt:
        dropped = {k.split(".", 1)[1]: v for k, v in sorted(flt.items()) if k.startswith("dropped.")}
        facts["filter"] = {"read": flt.get("read", 0), "kept": flt.get("kept", 0), "dropped": dropped,
                           "rule_share": {k: _ratio(v, flt.get("read", 0)) for k, v in dropped.items()},
                           "yield": _ratio(flt.get("kept", 0), flt.get("read", 0))}
        # which rules the released documents met: their categories' rule sets (stages/lib/rule_sets.py)
        sets = (metrics.get("filter") or {}).get("rule_sets", {})
        facts["filter"]["rule_sets"] = {c: sets[c]["rules"] for c in stats["categories"] if c in sets}
    if facts["filter"] is not None and "dedup" in metrics:
        before = facts["filter"]["kept"]
        n = sum(dd.values())
        facts["dedup"] = {"read": before, "removed": n, "by_kind": dd, "kept": before - n,
                          "yield": _ratio(before - n, before)}
    if ing:
        facts["overall_yield"] = _ratio(stats["docs"], ing["read"])
    return facts


def _num(v) -> str:
    return f"{v:,}" if isinstance(v, int) else str(v)


def _rule_sets(sets: dict[str, list[str]]) -> str:
    return "; ".join(f"{c}: {', '.join(rules) if rules else 'none'}" for c, rules in sets.items())


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f} %"


def _counts(d: dict | list) -> str:
    """'a 1, b 2': a dict in key order, a list of pairs in its own order (e.g. most frequent first)."""
    items = sorted(d.items()) if isinstance(d, dict) else d
    return ", ".join(f"{k} {_num(v)}" for k, v in items) or "none"


def env() -> Environment:
    e = Environment(loader=FileSystemLoader(TEMPLATES), undefined=StrictUndefined, trim_blocks=True,
                    lstrip_blocks=True, keep_trailing_newline=True)
    e.filters.update(num=_num, pct=_pct, counts=_counts, rule_sets=_rule_sets)
    e.globals.update(NOT_RECORDED=NOT_RECORDED, NR=NOT_RECORDED[0].upper() + NOT_RECORDED[1:])  # NR starts a sentence
    return e


def render(facts: dict) -> str:
    return env().get_template("datasheet.md.j2").render(f=facts)


def write_datasheets(out_dir: str | Path, rows_by_group: dict[tuple[str, str], list[dict]], sources: list[dict],
                     metrics: dict, removed: Iterable[dict], release: dict | None = None,
                     max_docs: int | None = None) -> dict[str, dict]:
    """`<source>.md` in out_dir for every configured source (also one that kept no document);
    returns the facts by source name."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    by_source: dict[str, list[dict]] = {}
    for (_, source), rows in sorted(rows_by_group.items()):
        by_source.setdefault(source, []).extend(rows)
    dd = dedup_counts(removed)
    facts = {cfg["name"]: source_facts(cfg, by_source.get(cfg["name"], []), metrics, dd, None, release, max_docs)
             for cfg in sources}
    total = {k: sum(f["released"][k] for f in facts.values()) for k in ("docs", "words")}
    for name, f in facts.items():  # shares need every source's count first
        f["share"] = {k: _ratio(f["released"][k], total[k]) for k in total}
        (out_dir / f"{name}.md").write_text(render(f), encoding="utf-8")
    return facts
