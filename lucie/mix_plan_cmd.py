"""`lucie mix-plan --stats FILE`: a recipe's main-phase blend computed from published token counts.

Why: Lucie computed its blend (share of each sub-corpus before and after weighting, epochs, 762,144,585 samples of
4,096 tokens) from per-sub-corpus statistics and dataset_weights.yaml, before any training. A reproducer needs the
same view of a recipe without holding the corpus, and, on Megatron-DeepSpeed, the `--data-path` string that trains
on exactly that blend. The arithmetic is stages/lib/mix_plan.py, shared with the `mix` stage; this module only reads
the statistics file and renders the plan.

The statistics file is Lucie's stats_datasets.csv format (../shared/lucie/README.md): a header line, then one
comma-separated row per sub-corpus, fields padded with spaces; the columns used are `language`, `name`, `subset`,
`category` and `B tokens` (billions). Rows whose `name` is `---` are totals (overall when `language` is `---`):
they are not sub-corpora, but each must match the sum of its rows up to their rounding. The canonical name of a
sub-corpus is Lucie's: `name` with `.` replaced by `--`, then `--subset` when a subset is given.
"""
from __future__ import annotations

import csv
import json
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path

REQUIRED = ("language", "name", "subset", "category", "B tokens")


class StatsError(ValueError):
    """A statistics file that cannot be read: the message names the file and line."""


def canonical_name(name: str, subset: str = "") -> str:
    """Lucie-Training's `canonical_name`: 'Wikipedia.fr' -> 'Wikipedia--fr'; ('TheStack', 'c++') -> 'TheStack--c++'."""
    return (name.replace(".", "--") + "--" + subset).rstrip("-")


def read_stats(path: Path):
    """The sub-corpora of a statistics file as stages.lib.mix_plan.Part, in file order."""
    from stages.lib.mix_plan import Part

    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StatsError(f"{path}: no such statistics file") from None
    except OSError as err:
        raise StatsError(f"{path}: cannot read it ({err.strerror or err})") from None
    except UnicodeDecodeError as err:
        raise StatsError(f"{path}: not UTF-8 text ({err})") from None
    rows = list(csv.reader(text.splitlines()))
    if not rows or not any(c.strip() for c in rows[0]):
        raise StatsError(f"{path}:1: empty file; expected a header with columns {', '.join(REQUIRED)}")
    header = [c.strip() for c in rows[0]]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise StatsError(f"{path}:1: header lacks column(s) {', '.join(missing)} (has: {', '.join(header)})")
    col = {c: header.index(c) for c in REQUIRED}
    parts, seen, totals = [], {}, {}
    for lineno, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue  # blank line
        if len(row) != len(header):
            raise StatsError(f"{path}:{lineno}: {len(row)} fields, the header has {len(header)}")
        f = {c: row[i].strip() for c, i in col.items()}
        try:
            billions = Decimal(f["B tokens"])
        except InvalidOperation:
            raise StatsError(f"{path}:{lineno}: 'B tokens' is {f['B tokens']!r}, not a number") from None
        if not billions.is_finite() or billions < 0:
            raise StatsError(f"{path}:{lineno}: 'B tokens' is {f['B tokens']!r}; expected a number >= 0")
        if f["name"] == "---":  # a total row: all sub-corpora (language '---') or one language's
            totals[f["language"]] = (lineno, billions)
            continue
        for c in ("language", "name", "category"):
            if not f[c]:
                raise StatsError(f"{path}:{lineno}: empty '{c}'")
        name = canonical_name(f["name"], f["subset"])
        if name in seen:
            raise StatsError(f"{path}:{lineno}: sub-corpus {name} repeats line {seen[name]}")
        seen[name] = lineno
        parts.append(Part(name, f["language"], f["category"], Fraction(billions) * 10**9))
    if not parts:
        raise StatsError(f"{path}: no sub-corpus rows (only a header or totals)")
    check_totals(path, parts, totals)
    return parts


def check_totals(path: Path, parts, totals: dict) -> None:
    """The file's total rows must equal the sum of their sub-corpus rows, up to each row's rounding (half a unit of
    the total's last decimal per row): a deleted or altered row is an error naming the total's line."""
    for lang, (lineno, total) in totals.items():
        members = [p for p in parts if lang in ("---", "") or p.lang == lang]
        label = "overall" if lang in ("---", "") else f"'{lang}'"
        if not members:
            raise StatsError(f"{path}:{lineno}: a {label} total row, but no sub-corpus row of that language")
        summed = sum((Fraction(p.tokens) for p in members), Fraction(0)) / 10**9
        unit = Fraction(1, 10 ** max(0, -total.as_tuple().exponent))
        if abs(summed - Fraction(total)) > unit / 2 * (len(members) + 1):
            raise StatsError(f"{path}:{lineno}: the {label} total says {total} B tokens, but its {len(members)} "
                             f"sub-corpus rows sum to {float(summed):.3f} B: a row is missing or altered")


def to_markdown(result: dict, recipe: str, stats: Path) -> str:
    lines = [f"# Main-phase blend of recipe `{recipe}` from `{stats}`", "",
             f"{result['total_tokens_before_b']:,.3f} B tokens before weighting, "
             f"{result['total_tokens_after_b']:,.3f} B after; {result['samples']:,} samples of "
             f"{result['seq_len']:,} tokens.", "",
             *([f"No weight for (default_epochs): {', '.join(result['default_epochs_for'])}.", ""]
               if result["default_epochs_for"] else []),
             "| language | share before | share after | B tokens after |", "|---|---:|---:|---:|"]
    for lang, v in result["languages"].items():
        lines.append(f"| {lang} | {v['share_before']:.3f} % | {v['share_after']:.3f} % | {v['tokens_after_b']:,.3f} |")
    lines += ["", "| sub-corpus | language | category | share before | share after | B tokens after | epochs "
                  "| Megatron weight |", "|---|---|---|---:|---:|---:|---:|---:|"]
    for name, v in result["subcorpora"].items():  # already by decreasing share after weighting
        lines.append(f"| {name} | {v['language']} | {v['category']} | {v['share_before']:.3f} % | "
                     f"{v['share_after']:.3f} % | {v['tokens_after_b']:,.3f} | {v['epochs']:g} | "
                     f"{v['megatron_weight']:.9f} |")
    return "\n".join(lines) + "\n"


def data_path(result: dict, data_dir: str = "") -> tuple[str, list[str]]:
    """Megatron-DeepSpeed's --data-path: 'weight prefix' per line in plan order; prefixes are preprocess_data.py's
    '<name>_text_document' (under `data_dir`). Parts whose 9-decimal weight is 0 are left out (Megatron cannot
    blend a zero weight; Lucie's script refused one) and returned second."""
    lines, zero = [], []
    for name, v in result["subcorpora"].items():
        if v["megatron_weight"] == 0:
            zero.append(name)
            continue
        prefix = f"{data_dir.rstrip('/')}/{name}_text_document" if data_dir else f"{name}_text_document"
        lines.append(f"{v['megatron_weight']:.9f} {prefix}")
    return "\n".join(lines) + "\n", zero


def main(stats: Path, recipe: str | None, fmt: str, write_data_path: Path | None, data_dir: str,
         root: Path, echo, err) -> int:
    """Exit codes: 0 printed; 2 bad usage (unknown format or recipe, unreadable statistics, weights that match
    nothing in them)."""
    from stages.lib.mix_plan import plan
    from stages.core.params import ParamsError, load
    from stages.core.runtime import StageError

    if fmt not in ("md", "json"):
        err(f"error: unknown format {fmt!r}; use md or json")
        return 2
    if recipe is None:
        params_file = root / "params.yaml"
    else:
        params_file = root / "recipes" / f"{recipe}.yaml"
        if not params_file.exists():
            names = sorted(p.stem for p in (root / "recipes").glob("*.yaml"))
            err(f"error: no recipe {recipe!r} (recipes/{recipe}.yaml); available: {', '.join(names)}")
            return 2
    try:
        params = load(params_file)
        result = plan(read_stats(stats), params.mix, params.tokenize.seq_len)
    except (ParamsError, StatsError, StageError, ValueError) as e:
        err(f"error: {e}")
        return 2
    label = recipe or params.recipe
    echo(json.dumps(result, indent=2) + "\n" if fmt == "json" else to_markdown(result, label, stats))
    if write_data_path is not None:
        text, zero = data_path(result, data_dir)
        try:
            write_data_path.write_text(text, encoding="utf-8")
        except OSError as e:
            err(f"error: --write-data-path {write_data_path}: cannot write it ({e.strerror or e})")
            return 2
        if zero:
            err(f"note: left out of {write_data_path} (weight 0.000000000 at 9 decimals): {', '.join(zero)}")
    return 0
