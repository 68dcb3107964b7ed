"""The Hugging Face dataset card (README.md) of the released training data.

Modelled on Lucie's own dataset card (OpenLLM-France/Lucie-Training-Dataset): Dataset
Description, Sample Metadata, Dataset Composition, Configurable Subsets, Details on Data
Sources, Example use in Python, Citation. The YAML header is huggingface_hub's
DatasetCardData, so the Hub (and `datasets.load_dataset`) read the configs from it:

  default            every file                data/*/*/*.parquet
  <lang>             one language              data/<lang>/*/*.parquet
  <source>           one source                data/*/<source>/*.parquet
  <source>-<lang>    one language of a source  data/<lang>/<source>/*.parquet  (only for multilingual sources)

The globs match the release layout `data/<lang>/<source>/*.parquet` (stages/release.py).
As in the datasheets, every number is measured on the released rows or read from the
pipeline's metrics; nothing is typed by hand.
"""
from __future__ import annotations

from collections import Counter
from typing import Iterable

from .datasheet import FIELDS, NOT_RECORDED, dedup_counts, env, source_facts

# Hugging Face license ids that are not the lower-cased SPDX id.
HF_LICENSE = {"gpl-2.0-only": "gpl-2.0", "gpl-2.0-or-later": "gpl-2.0", "gpl-3.0-only": "gpl-3.0",
              "gpl-3.0-or-later": "gpl-3.0", "lgpl-2.1-only": "lgpl-2.1", "lgpl-3.0-only": "lgpl-3.0",
              "agpl-3.0-only": "agpl-3.0", "agpl-3.0-or-later": "agpl-3.0", "odc-by-1.0": "odc-by"}
SIZES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
         (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"),
         (10_000_000_000, "1B<n<10B"), (100_000_000_000, "10B<n<100B"), (1_000_000_000_000, "100B<n<1T")]
# The data files of one group; `data_files` globs are relative to the dataset repo root.
GROUP_GLOB = "data/{lang}/{source}/*.parquet"


def size_category(n: int) -> str:
    return next((label for bound, label in SIZES if n < bound), "n>1T")


def hf_license(licenses: list[str]) -> dict:
    """Card YAML license fields: the Hub's id for one license, else `other` with the list."""
    if len(licenses) == 1:
        spdx = licenses[0].lower()
        return {"license": HF_LICENSE.get(spdx, spdx)}
    # Mixed licenses: each document's own is in its `license` column and per source below.
    return {"license": "other", "license_name": "mixed-per-document",
            "license_details": "Each document carries its license in the `license` column: " + ", ".join(licenses)}


def configs(groups: Iterable[tuple[str, str]]) -> list[dict]:
    """HF `configs` for the released (lang, source) groups; raises if two configs share a name."""
    groups = sorted(set(groups))
    langs = sorted({lang for lang, _ in groups})
    sources = sorted({src for _, src in groups})
    spans = {s: sorted(lang for lang, src in groups if src == s) for s in sources}

    def cfg(name, lang="*", source="*"):
        return {"config_name": name, "data_files": [{"split": "train", "path": GROUP_GLOB.format(lang=lang, source=source)}]}

    out = [cfg("default")] + [cfg(lang, lang=lang) for lang in langs] + [cfg(s, source=s) for s in sources]
    out += [cfg(f"{s}-{lang}", lang, s) for s in sources if len(spans[s]) > 1 for lang in spans[s]]
    names = Counter(c["config_name"] for c in out)
    clash = sorted(n for n, k in names.items() if k > 1)
    if clash:
        raise ValueError(f"dataset card: config names {clash} are both a language and a source (or source-lang); "
                         f"rename the source in params.yaml data.sources")
    return out


def _table(counts: dict[str, dict], total: dict) -> list[dict]:
    return [{"name": k, **v, "share_docs": v["docs"] / total["docs"] if total["docs"] else None,
             "share_words": v["words"] / total["words"] if total["words"] else None} for k, v in sorted(counts.items())]


def composition(rows_by_group: dict[tuple[str, str], list[dict]]) -> dict:
    """docs/words per language, per source, per category, per (lang, category), and the totals."""
    per: dict[str, dict[str, Counter]] = {"language": {}, "source": {}, "category": {}, "lang_category": {}}
    for (lang, source), rows in rows_by_group.items():
        for r in rows:
            w = len(r["text"].split())
            for dim, key in (("language", lang), ("source", source), ("category", r["category"]),
                             ("lang_category", f"{lang}--{r['category']}")):
                c = per[dim].setdefault(key, Counter())
                c["docs"] += 1
                c["words"] += w
    total = {"docs": sum(c["docs"] for c in per["language"].values()),
             "words": sum(c["words"] for c in per["language"].values())}
    return {"total": total, **{dim: _table({k: dict(c) for k, c in d.items()}, total) for dim, d in per.items()}}


def dataset_card(rows_by_group: dict[tuple[str, str], list[dict]], sources: list[dict], metrics: dict,
                 release: dict, removed: Iterable[dict] = (), max_docs: int | None = None,
                 evals: list[dict] | None = None) -> str:
    """`evals`: the evaluation files shipped in the repo's `eval/` ({file, task, lang, kind, rows}), listed in
    their own section: they are in the repository but in no training config."""
    """README.md text of the dataset repo.

    rows_by_group: (lang, source) -> released rows, written to data/<lang>/<source>/*.parquet;
    sources: `Source.model_dump()` of params.yaml data.sources; metrics: stage metrics by name
    (ingest, filter, dedup, mix); release: params.yaml `release` section; removed: the records of
    data/dedup/removed.jsonl; max_docs: ingest.max_docs_per_source.
    """
    from huggingface_hub import DatasetCard, DatasetCardData

    comp = composition(rows_by_group)
    licenses = sorted({r["license"] for rows in rows_by_group.values() for r in rows}) or \
        sorted({s["license"] for s in sources})
    langs = sorted({lang for lang, _ in rows_by_group})
    cfgs = configs(rows_by_group)
    pretty = f"{release['model_name']} training data"
    data = DatasetCardData(
        pretty_name=pretty,
        # "code" is the language tag the Hub's code datasets use (e.g. bigcode/the-stack); Lucie lists it too.
        language=langs, **hf_license(licenses),
        size_categories=[size_category(comp["total"]["docs"])],
        task_categories=["text-generation"], task_ids=["language-modeling"],
        source_datasets=sorted({s["hf"]["dataset"] for s in sources if s.get("format") == "hf"}) or None,
        tags=["lucie-repro", "pretraining"],
        configs=cfgs,
    )
    dd = dedup_counts(removed)
    by_source: dict[str, list[dict]] = {}
    for (_, src), rows in sorted(rows_by_group.items()):
        by_source.setdefault(src, []).extend(rows)
    details = []
    for s in sources:
        f = source_facts(s, by_source.get(s["name"], []), metrics, dd, comp["total"], release, max_docs)
        f["langs"] = sorted(lang for lang, src in rows_by_group if src == s["name"])
        details.append(f)
    body = env().get_template("dataset_card.md.j2").render(
        pretty=pretty, release=release, repo=f"{release.get('organization')}/{release['model_name']}-data",
        comp=comp, licenses=licenses, configs=cfgs, sources=details, metrics=metrics,
        fields=FIELDS,
        not_recorded=NOT_RECORDED,
        example_lang=next((x for x in release.get("languages") or [] if x in langs), langs[0] if langs else "default"),
        evals=evals or [],
    )
    return str(DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{body}"))
