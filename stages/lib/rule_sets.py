"""Which filter rules a document meets: rule sets per source category, as Lucie applied them.

Why: Lucie ran the web-crawl heuristics (URL blocklist, Gopher repetition and quality, C4, CCNet perplexity) on its
web crawl only (RedPajama-V2; FineWebEdu came filtered upstream). Its curated sources kept their own treatment:
books and OCR'd press a language-ID and perplexity gate, Wikipedia, parliamentary and legal text, code and math
nothing of the web heuristics (research/lucie_recipe.md §2). Run on novels and plays, the Gopher repetition rule
drops the speaker names that repeat on their own lines; on laws, the numbered paragraphs: text Lucie kept.

Each rule of the `filter` section says which categories it applies to (`categories`; null: every category, the
behaviour before rule sets existed). A document's category is its record's own `category` when it has one, else
its source's (ingest resolves that into the `category` column), and picks its rule set: the enabled rules that
name it. The text rules (language, Gopher, C4, perplexity) also need a text language (`filter.text_langs`), and
the URL rule a URL. The drop records and metrics/filter.json name the rule set (= the category) a document met.
"""
from __future__ import annotations

from stages.core.params import Filter

RULES = ("url", "language", "gopher_repetition", "gopher_quality", "c4", "perplexity")  # the filter's order


def configured(p: Filter, rule: str) -> bool:
    cfg = getattr(p, rule)
    return cfg.model is not None if rule == "perplexity" else cfg.enabled


def applies(p: Filter, rule: str, category: str) -> bool:
    """Does `rule` apply to documents of `category` (whether or not it is enabled)?"""
    cats = getattr(p, rule).categories
    return cats is None or category in cats


def rule_set(p: Filter, category: str) -> list[str]:
    """The enabled rules a document of `category` meets, in the filter's order."""
    return [r for r in RULES if configured(p, r) and applies(p, r, category)]


def named_categories(p: Filter) -> list[str]:
    """Every category some rule names (for messages and docs)."""
    return sorted({c for r in RULES for c in (getattr(p, r).categories or [])})
