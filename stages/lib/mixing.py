"""Lucie's data mixes: the main phase's upsampled, shuffled, chronological stream, and the extension and annealing mixes.

One implementation for every user of the blend: the `mix` stage (on documents) and `lucie mix-plan` (on a
statistics file) both call these functions, so a plan is what a run would do.

Main phase (Lucie's `dataset_weights.yaml`): each document group '<lang>--<category>' is seen
`weights[key] x lang_weights[lang] x source_weights[source]` times (fractional epochs allowed: 2.5 = two full
passes plus the first half of a third shuffled pass); every epoch is shuffled separately and the slots of a
source are ordered chronologically (`blend`).

The phases after main pretraining, context extension and annealing, get their own mixes. Both are built from the main phase's train split (the valid split is never trained on) and turned into a stream
by `blend`, so they keep its properties: per-epoch shuffle, fractional epochs, chronological slots, an
order that is a pure function of (seed, phase, epoch, document).

Sizes are tokens, as Lucie's weights are (blend weight = tokens x epochs): `size(doc)` is the document's token
count from the project's tokenizer, which mix computes (the tokenizer is trained before the mix).

Extension (research/lucie_recipe.md §1.6, Lucie's collect_data_and_weights_extension.py):
  * each source group ('<lang>--<category>' of one source) keeps its main-phase weight (tokens x epochs);
  * web: every language's web weight moves to its newest year ("v1.2-recent-web": RedPajama -> 2023,
    FineWebEdu -> CC-MAIN-2024); older web documents are left out;
  * inside each source group, documents of at least `long_doc_min_tokens` (Lucie: 4,096) weigh
    `long_doc_weight` (10) times as much per token as short ones: prop_short = short / (short + 10 long), the
    group's total unchanged.
Annealing (§1.7, "mix 6"): `annealing.weights` gives each '<lang>--<category>' its share of the phase's tokens.
The stream is as long as the scarcest group allows without repeating any document (the group with the
smallest tokens/share is used exactly once, the others are subsampled); training cycles through it if the
phase needs more samples.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Callable

from stages.core.params import Annealing, Extension, Mix
from stages.core.runtime import StageError
from stages.lib.phases import LATER_PHASES
from stages.lib.split import h64


def epochs_for(p: Mix, lang: str, category: str, source: str = "") -> float:
    lw = p.lang_weights.get(lang, p.lang_weights.get("other", 1.0))
    return p.weights.get(f"{lang}--{category}", p.default_epochs) * lw * p.source_weights.get(source, 1.0)


def check_weights(p: Mix, present: set[tuple[str, str]]) -> None:
    """Every weight must name a (lang, category) group that exists: a typo would silently fall back to
    default_epochs. The mix stage checks its documents' groups, `lucie mix-plan` its statistics' sub-corpora."""
    unmatched = sorted(k for k in p.weights if tuple(k.split("--", 1)) not in present)
    unmatched += sorted(f"lang_weights.{k}" for k in p.lang_weights if k != "other" and k not in {l for l, _ in present})
    if unmatched:
        raise StageError(f"mix weights match no document group: {unmatched}; groups here: "
                         f"{sorted(f'{l}--{c}' for l, c in present)}")


def year(doc: dict) -> int:
    d = doc.get("date") or ""
    return int(d[:4]) if d[:4].isdigit() else 0


def schedule(docs: list[dict], p: Mix, seed: int, chronological: bool) -> list[tuple[dict, int]]:
    """The main phase's training stream: (document, epoch) pairs in order."""
    groups = []
    for source, members in group_by_source(docs):
        # Groups of one source can span categories (e.g. web and wiki): epochs are per document key.
        for (lang, cat), group in group_by_key(members):
            groups.append((source, group, epochs_for(p, lang, cat, source)))
    return blend(groups, seed, chronological)


def group_by_source(docs) -> list[tuple[str, list[dict]]]:
    by_source: dict[str, list[dict]] = defaultdict(list)
    for d in docs:
        by_source[d["source"]].append(d)
    return sorted(by_source.items())


def group_by_key(docs) -> list[tuple[tuple[str, str], list[dict]]]:
    by_key: dict[tuple, list[dict]] = defaultdict(list)
    for d in docs:
        by_key[(d["lang"], d["category"])].append(d)
    return sorted(by_key.items())


def blend(groups: list[tuple[str, list[dict], float]], seed: int, chronological: bool,
          phase: str = "main") -> list[tuple[dict, int]]:
    """(source, documents, epochs) groups -> the stream: per-epoch shuffle, hash blend, chronological slots.

    `phase` enters every hash except the main phase's (whose stream predates the phases and stays as it was),
    so each phase has its own order, still a pure function of (seed, phase, epoch, document).
    """
    tag = () if phase == "main" else (phase,)
    items = []  # (key, source, epoch, year, doc)
    for source, members, e in groups:
        members = sorted(members, key=lambda d: d["id"])
        for epoch in range(math.ceil(e)):
            shuffled = sorted(members, key=lambda d: h64(seed, *tag, "epoch", source, epoch, d["id"]))
            take = len(shuffled) if epoch + 1 <= e else round((e - epoch) * len(shuffled))
            for d in shuffled[:take]:
                items.append((h64(seed, *tag, "blend", source, epoch, d["id"]), source, epoch, year(d), d))
    items.sort(key=lambda t: t[0])
    if chronological:
        slots: dict[str, list[int]] = defaultdict(list)
        for pos, it in enumerate(items):
            slots[it[1]].append(pos)
        reordered = list(items)
        for positions in slots.values():
            members = sorted((items[i] for i in positions), key=lambda t: (t[2], t[3], t[0]))
            for pos, it in zip(positions, members):
                reordered[pos] = it
        items = reordered
    return [(it[4], it[2]) for it in items]


def words(doc: dict) -> int:
    return len(doc["text"].split())


def stats(rows, tokens: dict[str, int]) -> dict:
    """docs, words, chars and tokens by language and by source; `tokens`: document id -> its token count."""
    out: dict[str, dict] = {"by_lang": defaultdict(lambda: defaultdict(int)), "by_source": defaultdict(lambda: defaultdict(int))}
    for d in rows:
        n_words, chars = words(d), len(d["text"])
        for key, name in (("by_lang", d["lang"]), ("by_source", d["source"])):
            s = out[key][name]
            s["docs"] += 1
            s["words"] += n_words
            s["chars"] += chars
            s["tokens"] += tokens[d["id"]]
    return {k: {n: dict(v) for n, v in sorted(d.items())} for k, d in out.items()}


def shares(st: dict, unit: str = "words") -> dict:
    total = sum(v[unit] for v in st["by_lang"].values()) or 1
    return {lang: round(v[unit] / total, 4) for lang, v in st["by_lang"].items()}


Group = tuple[str, list[dict], float]  # (source, documents, epochs): blend's input
Size = Callable[[dict], int]  # a document's length in tokens (unit tests may count words: the logic is unit-free)


def newest_web_year(docs: list[dict]) -> dict[str, int]:
    """lang -> newest year among its web documents (Lucie's most recent snapshot)."""
    newest: dict[str, int] = {}
    for d in docs:
        if d["category"] == "web":
            newest[d["lang"]] = max(newest.get(d["lang"], 0), year(d))
    return newest


def extension_groups(docs: list[dict], mix: Mix, ext: Extension, size: Size) -> list[Group]:
    groups: list[tuple[str, str, list[dict], float]] = []  # (source, lang, members, epochs) after the web rule
    newest = newest_web_year(docs) if ext.recent_web else {}
    web_all: dict[str, float] = defaultdict(float)  # lang -> main-phase web weight (tokens x epochs), all years
    web_recent: dict[str, float] = defaultdict(float)  # ... of the newest year only
    for source, members in group_by_source(docs):
        for (lang, cat), group in group_by_key(members):
            e = epochs_for(mix, lang, cat, source)
            if cat == "web" and ext.recent_web:
                recent = [d for d in group if year(d) == newest[lang]]
                web_all[lang] += e * sum(map(size, group))
                web_recent[lang] += e * sum(map(size, recent))
                group = recent
            if group:
                groups.append((source, cat, group, e))
    out: list[Group] = []
    for source, cat, group, e in groups:
        lang = group[0]["lang"]
        if cat == "web" and ext.recent_web and web_recent[lang]:
            e *= web_all[lang] / web_recent[lang]  # the language's whole web weight, on its newest year
        long = [d for d in group if size(d) >= ext.long_doc_min_tokens]
        short = [d for d in group if size(d) < ext.long_doc_min_tokens]
        n_long, n_short = sum(map(size, long)), sum(map(size, short))
        # Same tokens x epochs for the group, long tokens weighted long_doc_weight times the short ones.
        e_short = e * (n_short + n_long) / (n_short + ext.long_doc_weight * n_long)
        for part, epochs in ((short, e_short), (long, e_short * ext.long_doc_weight)):
            if part and epochs > 0:
                out.append((source, part, epochs))
    return out


def annealing_groups(docs: list[dict], ann: Annealing, size: Size) -> list[Group]:
    total = sum(ann.weights.values())
    share = {k: v / total for k, v in ann.weights.items() if v > 0}
    by_key: dict[str, list[dict]] = defaultdict(list)
    for d in docs:
        key = f"{d['lang']}--{d['category']}"
        if key in share:
            by_key[key].append(d)
    missing = sorted(k for k in share if not by_key[k])
    if missing:
        present = sorted({f"{d['lang']}--{d['category']}" for d in docs})
        raise StageError(f"annealing.weights match no training document: {missing}; groups here: {present}")
    n_tokens = {k: sum(map(size, v)) for k, v in by_key.items()}
    stream_tokens = min(n_tokens[k] / share[k] for k in share)  # no group repeats; the scarcest is used once
    out: list[Group] = []
    for key in sorted(share):
        e = share[key] * stream_tokens / n_tokens[key]
        for source, members in group_by_source(by_key[key]):
            out.append((source, members, e))
    return out


def phase_streams(params, train: list[dict], size) -> dict[str, list[tuple[dict, int]]]:
    """The extension and annealing streams (empty for a phase that is absent or disabled: the DAG stays fixed);
    `size(doc)`: its tokens, the unit of the phases' weights and long-document threshold."""
    out = {}
    for name in LATER_PHASES:
        cfg = getattr(params, name)
        if cfg is None or not cfg.enabled:
            out[name] = []
            continue
        groups = (extension_groups(train, params.mix, cfg, size) if name == "extension"
                  else annealing_groups(train, cfg, size))
        out[name] = blend(groups, params.seed, params.mix.chronological, phase=name)
    return out
