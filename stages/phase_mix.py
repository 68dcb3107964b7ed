"""The data mixes of the phases after main pretraining: context extension and annealing.

Both are built from the main phase's train split (the valid split is never trained on) and turned into a stream
by `mix.blend`, so they keep its properties: per-epoch shuffle, fractional epochs, chronological slots, an
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

from collections import defaultdict
from typing import Callable

from .mix import _by_key, _by_source, epochs_for, year
from .params import Annealing, Extension, Mix
from .runtime import StageError

Group = tuple[str, list[dict], float]  # (source, documents, epochs): mix.blend's input
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
    for source, members in _by_source(docs):
        for (lang, cat), group in _by_key(members):
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
        for source, members in _by_source(by_key[key]):
            out.append((source, members, e))
    return out
