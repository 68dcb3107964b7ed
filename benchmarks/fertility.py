"""Fertility (tokens per whitespace word) of Lucie's real tokenizer and of ours, on real text.

Run by hand:  .venv/bin/python benchmarks/fertility.py [CORPORA_DIR] [OUR_TOKENIZER_JSON]
Defaults: ../shared/corpora (real public-domain / open-licensed prose per language) and
artifacts/tokenizer/tokenizer.json (the tiny recipe's 2,048-token BPE). Lucie's published
figures were measured on Wikipedia; these corpora are literary prose, so expect the same
ordering of languages rather than the same numbers.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from tokenizers import Tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from stages.tokenizer import fertility  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PUBLISHED = {"fr": 1.74, "en": 1.70, "de": 2.02, "es": 1.72, "it": 1.88}  # research/lucie_recipe.md §3


def main() -> None:
    corpora = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared/corpora"
    ours = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "artifacts/tokenizer/tokenizer.json"
    docs = [json.loads(l) for lang in PUBLISHED for l in open(corpora / f"real-{lang}.jsonl", encoding="utf-8")]
    lucie = fertility(Tokenizer.from_file(str(ROOT.parent / "shared/lucie/tokenizer.json")), docs)
    mine = fertility(Tokenizer.from_file(str(ours)), docs) if ours.exists() else {}
    words = {lang: sum(len(d["text"].split()) for d in docs if d["lang"] == lang) for lang in PUBLISHED}
    print(f"{'lang':<5} {'words':>9} {'Lucie published (Wikipedia)':>28} {'Lucie tokenizer here':>21} {'ours (' + str(ours.name) + ')':>24}")
    for lang in PUBLISHED:
        print(f"{lang:<5} {words[lang]:>9,} {PUBLISHED[lang]:>28.2f} {lucie[lang]:>21.3f} {mine.get(lang, float('nan')):>24.3f}")


if __name__ == "__main__":
    main()
