"""The main-phase blend as arithmetic: each part's tokens x its epochs -> shares, Megatron weights, samples.

Why this module: a recipe's `mix` section (Lucie's dataset_weights.yaml semantics) is what decides the blend,
and a reproducer must be able to see what it does to a corpus *before* a run, from published token counts alone
(`lucie mix-plan --stats`, e.g. Lucie's stats_datasets.csv). The epochs come from `mixing.epochs_for` and the weight
check from `mixing.check_weights`, the functions the `mix` stage schedules its stream with, so the plan is what a
run would do: the stream of `mixing.schedule` holds each part's tokens x its epochs (exactly for whole epochs;
fractional epochs take round(fraction x documents) of a shuffled pass).

Lucie's own computation (Lucie-Training `training/collect_data_and_weights.py`): reweighted = tokens x epochs;
new_ratio = reweighted / total reweighted (the `--data-path` weight, printed with 9 decimals); samples = total
reweighted / 4,096. Parts are the sub-corpora of the statistics (one tokenized dataset each); `source_weights`
apply to a part by its name, as they apply to a data.sources entry in the stage.

Arithmetic is exact (fractions); only the reported figures are rounded, half to even: shares in percent to 3
decimals, tokens in billions to 3 decimals, Megatron weights to 9 decimals; samples are whole (rounded down).
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from math import floor

from stages.core.params import Mix
from stages.lib.mixing import check_weights, epochs_for

PARALLEL = "parallel"  # language pairs (fr-en, de-fr, ...): Lucie's "aligned" row of the per-language table


@dataclass(frozen=True)
class Part:
    """One sub-corpus: its canonical name, language, category and token count (a whole number of tokens or an
    exact fraction)."""

    name: str
    lang: str
    category: str
    tokens: Fraction


def language_group(lang: str) -> str:
    """The per-language row a part counts in: its language, or `parallel` for a language pair."""
    return PARALLEL if "-" in lang else lang


def round_half_even(x: Fraction, decimals: int) -> float:
    q = x * 10**decimals
    n = floor(q)
    rest = q - n
    if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and n % 2):
        n += 1
    return float(Fraction(n, 10**decimals))


def plan(parts: list[Part], mix: Mix, seq_len: int) -> dict:
    """The blend of `parts` under `mix`, as the JSON of `lucie mix-plan`: sub-corpora by decreasing share after
    weighting (the order of the --data-path string; ties by name), languages likewise; `default_epochs_for`
    names the sub-corpora whose '<lang>--<category>' has no weight (they get `mix.default_epochs`, as in the stage)."""
    names = [p.name for p in parts]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"sub-corpus names must be unique; repeated: {dup}")
    check_weights(mix, {(p.lang, p.category) for p in parts})
    epochs = {p.name: Fraction(epochs_for(mix, p.lang, p.category, p.name)) for p in parts}
    after = {p.name: Fraction(p.tokens) * epochs[p.name] for p in parts}
    total_before = sum((Fraction(p.tokens) for p in parts), Fraction(0))
    total_after = sum(after.values(), Fraction(0))
    if total_before <= 0 or total_after <= 0:
        raise ValueError("the parts hold no tokens (before or after weighting): nothing to blend")

    def pct(x: Fraction, total: Fraction) -> float:
        return round_half_even(100 * x / total, 3)

    order = sorted(parts, key=lambda p: (-after[p.name], p.name))
    sub = {}
    for p in order:
        sub[p.name] = {
            "language": p.lang, "category": p.category,
            "share_before": pct(Fraction(p.tokens), total_before), "share_after": pct(after[p.name], total_after),
            "tokens_after_b": round_half_even(after[p.name] / 10**9, 3), "epochs": float(epochs[p.name]),
            "megatron_weight": round_half_even(after[p.name] / total_after, 9),
        }
    by_lang: dict[str, list[Fraction]] = {}
    for p in parts:
        b, a = by_lang.setdefault(language_group(p.lang), [Fraction(0), Fraction(0)])
        by_lang[language_group(p.lang)] = [b + Fraction(p.tokens), a + after[p.name]]
    langs = {lang: {"share_before": pct(b, total_before), "share_after": pct(a, total_after),
                    "tokens_after_b": round_half_even(a / 10**9, 3)}
             for lang, (b, a) in sorted(by_lang.items(), key=lambda kv: (-kv[1][1], kv[0]))}
    unweighted = sorted(p.name for p in parts if f"{p.lang}--{p.category}" not in mix.weights)
    return {"subcorpora": sub, "languages": langs, "default_epochs_for": unweighted,
            "total_tokens_before_b": round_half_even(total_before / 10**9, 3),
            "total_tokens_after_b": round_half_even(total_after / 10**9, 3),
            "samples": floor(total_after / seq_len), "seq_len": seq_len}
