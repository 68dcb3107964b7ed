"""Lucie's filter rules (URL, Gopher repetition, Gopher quality, C4, KenLM perplexity), fast and exact.

Why not datatrove's blocks: they are the reference, but each one re-derives what it needs from the
raw text — spaCy word tokenization (Gopher), a spaCy sentence split of every kept line (C4) — and the
URL block holds its 4.5 M blocklisted domains as a 500 MB Python set. Here each document is split into
lines and words ONCE (`DocView`) and every rule reads the shared result; the decisions are datatrove's,
computed the same way (same word tokenizer, same formulas, same order of checks, same first-failing
reason), which tests/test_filter_rules.py and benchmarks/filter_speed.py check against datatrove itself.

How the exact speed-ups work (each is a proof, not an approximation):
- Words: spaCy's tokenizer cuts the text at whitespace and tokenizes each whitespace-free chunk on its
  own (`Tokenizer._tokenize_affixes`); only special cases whose key contains a space (Spanish "EE. UU.")
  reach across chunks. So each distinct chunk is tokenized once and cached: a chunk spaCy keeps whole
  (no special case, prefix, suffix or infix, tested with spaCy's own regexes in the order of
  `_split_affixes`/`_attach_tokens`) skips spaCy; the others go through spaCy in one call per document.
  A text holding a cross-chunk key (or "IS_ALPHA", which datatrove special-cases) is tokenized whole by
  datatrove's own call.
- Gopher n-grams: words become integer ids; top-n-gram counts come from exact integer packing, duplicate
  n-grams ("".join semantics) from a polynomial hash of the concatenation that only nominates
  candidates, which are then checked on the real strings in datatrove's sequential order.
- C4 sentences: every kept line holds at least one sentence, so once `min_num_sentences` lines are kept
  the count cannot fail; spaCy's sentencizer only runs on documents with fewer kept lines.
- URL blocklist: the domains are held as two independent 64-bit SipHash values per entry (72 MB instead
  of 500 MB); a false hit needs a 128-bit collision.

Data files (UT1 blocklists, banned words, stop words, punctuation, C4 phrases) are read from the
installed datatrove package, never copied.

Why one module of ~700 lines: the rules share one tokenization (DocView) and its caches, and each proof above
ties a rule to the shared structures; split apart, every rule would import the same private internals.
"""
from __future__ import annotations

import io
import math
import os
import re
import tarfile
import unicodedata
from collections import Counter
from dataclasses import dataclass
from itertools import chain
from typing import Any, NamedTuple

import numpy as np
from spacy.attrs import IDX, LENGTH

MASK = (1 << 64) - 1


class Verdict(NamedTuple):
    """One rule's decision: `check` is datatrove's reason string (e.g. 'top_2_gram') so both engines agree."""

    keep: bool
    rule: str
    check: str = ""
    value: Any = None
    threshold: Any = None

    @property
    def detail(self) -> str:
        if self.keep:
            return ""
        v = f"{self.value:.4g}" if isinstance(self.value, float) else self.value
        return f"{self.check}: {v} (threshold {self.threshold})" if self.value is not None else self.check


def _drop(rule: str, check: str, value, threshold) -> Verdict:
    return Verdict(False, rule, check, value, threshold)


# ---------------------------------------------------------------- words, tokenized once per document
class WordIds:
    """Token string <-> id, with the per-token facts the rules need as numpy arrays (grown by doubling)."""

    # A random odd 64-bit base for the concatenation hash; its inverse exists mod 2**64.
    BASE = 0x9E3779B97F4A7C15
    BASE_INV = pow(BASE, -1, 1 << 64)

    def __init__(self):
        from datatrove.utils.text import PUNCTUATION_SET

        self.punct = PUNCTUATION_SET
        self.ids: dict[str, int] = {}
        self.strings: list[str] = []
        self.length = np.zeros(1024, np.int64)
        self.non_symbol = np.zeros(1024, bool)  # has a char outside datatrove's PUNCTUATION_SET
        self.alpha = np.zeros(1024, bool)  # has an alphabetic char
        self.ghash = np.zeros(1024, np.uint64)  # sum c_t * BASE_INV**(t+1): concatenation hash part
        self._inv = [1]

    def __len__(self) -> int:
        return len(self.strings)

    def add(self, tok: str) -> int:
        i = self.ids.get(tok)
        if i is not None:
            return i
        i = len(self.strings)
        if i == len(self.length):
            for name in ("length", "non_symbol", "alpha", "ghash"):
                old = getattr(self, name)
                new = np.zeros(2 * len(old), old.dtype)
                new[: len(old)] = old
                setattr(self, name, new)
        self.ids[tok] = i
        self.strings.append(tok)
        self.length[i] = len(tok)
        self.non_symbol[i] = any(ch not in self.punct for ch in tok)
        self.alpha[i] = any(ch.isalpha() for ch in tok)
        inv = self._inv
        while len(inv) <= len(tok):
            inv.append(inv[-1] * self.BASE_INV & MASK)
        self.ghash[i] = sum(ord(ch) * inv[t + 1] for t, ch in enumerate(tok)) & MASK
        return i


class Words:
    """A document's words (datatrove's `split_into_words`) as vocab ids."""

    __slots__ = ("ids", "vocab", "has_space")

    def __init__(self, ids: np.ndarray, vocab: WordIds, has_space: bool):
        self.ids, self.vocab, self.has_space = ids, vocab, has_space

    def __len__(self) -> int:
        return len(self.ids)

    def strings(self, a: int = 0, b: int | None = None) -> list[str]:
        s = self.vocab.strings
        return [s[i] for i in self.ids[a:b].tolist()]


class WordSplitter:
    """datatrove's word tokenizer for one language (a spaCy blank model), run once per distinct chunk.

    We build our own `spacy.blank(lang)` exactly as datatrove's SpaCyTokenizer does, minus the lexical
    attribute getters (norm, shape, like_num...: computed for every new lexeme, never used by the
    tokenizer), inside one long-lived memory zone that is closed whenever the cache is reset.
    """

    def __init__(self, dt_lang: str, max_cache: int = 400_000):
        import spacy
        from datatrove.utils.word_tokenizers import SpaCyTokenizer, load_word_tokenizer

        self.dt_lang = dt_lang
        self.dt_tok = load_word_tokenizer(dt_lang)  # the object datatrove's filters use (for fallbacks)
        if type(self.dt_tok) is not SpaCyTokenizer or self.dt_tok.config is not None:
            raise ValueError(f"{dt_lang}: datatrove does not tokenize it with a plain spaCy blank model")
        self.nlp = spacy.blank(self.dt_tok.language)
        self.nlp.vocab.lex_attr_getters = {}
        tok = self.nlp.tokenizer
        self.rules = set(tok.rules or {})
        # Special cases spanning several whitespace-separated chunks: only these break chunk independence.
        self.cross_keys = sorted(k for k in self.rules if any(c.isspace() for c in k) and k.strip())
        self._tm, self._um = tok.token_match, tok.url_match
        self._pre, self._suf, self._inf = tok.prefix_search, tok.suffix_search, tok.infix_finditer
        self.max_cache = max_cache
        self.use_cache = True
        self._zone = None
        self.reset()
        self.calls = Counter()  # how documents and chunks were tokenized, for the benchmark

    def reset(self) -> None:
        if self._zone is not None:
            self._zone.__exit__(None, None, None)
        self._zone = self.nlp.memory_zone()
        self._zone.__enter__()
        self.vocab = WordIds()
        self.cache: dict[str, tuple[int, ...]] = {}

    def _needs_whole_doc(self, text: str) -> bool:
        return "IS_ALPHA" in text or any(k in text for k in self.cross_keys)

    def words(self, text: str) -> Words:
        if not self.use_cache or len(self.cache) > self.max_cache or len(self.vocab) > self.max_cache:
            self.reset()  # bounded memory; results do not depend on what is cached
        if self._needs_whole_doc(text):
            self.calls["whole_doc"] += 1
            toks = self.dt_tok.word_tokenize(text)
            ids = np.fromiter(map(self.vocab.add, toks), np.int64, len(toks))
            return Words(ids, self.vocab, any(" " in t for t in toks))
        self.calls["chunked_doc"] += 1
        chunks = text.split()
        cache = self.cache
        missing = set(chunks).difference(cache)
        if missing:
            self._tokenize_chunks(sorted(missing))
        ids = np.fromiter(chain.from_iterable(map(cache.__getitem__, chunks)), np.int64)
        return Words(ids, self.vocab, False)

    def _single_token(self, w: str) -> bool:
        """True when spaCy's Tokenizer would keep chunk `w` whole (the path through `_split_affixes` and
        `_attach_tokens` with no special case, no prefix, no suffix and no infix, or a token/url match)."""
        if w in self.rules:
            return False
        if self._tm is not None and self._tm(w):
            return True
        for search in (self._pre, self._suf):
            m = search(w) if search is not None else None
            if m is not None and m.end() > m.start():
                return False
        if self._um is not None and self._um(w):
            return True
        return self._inf is None or next(self._inf(w), None) is None

    def _tokenize_chunks(self, chunks: list[str]) -> None:
        """Cache the tokens of new chunks: whole ones directly, the rest through one spaCy call with
        the chunks separated by newlines (a whitespace token that no special case can span)."""
        add, cache = self.vocab.add, self.cache
        hard = []
        for w in chunks:
            if self._single_token(w):
                cache[w] = (add(w),)
            else:
                hard.append(w)
        self.calls["single_chunks"] += len(chunks) - len(hard)
        self.calls["spacy_chunks"] += len(hard)
        if not hard:
            return
        s = "\n".join(hard)
        toks = [s[a: a + n] for a, n in self.nlp.tokenizer(s).to_array([IDX, LENGTH]).tolist()]
        k, cur = 0, []
        for t in toks:
            if t == "\n":
                cache[hard[k]] = tuple(cur)
                k, cur = k + 1, []
            else:
                cur.append(add(t))
        cache[hard[k]] = tuple(cur)
        assert k == len(hard) - 1, "chunk separators were not single tokens"


class DocView:
    """One document as the rules see it: text, url, lines and words, each computed at most once."""

    __slots__ = ("text", "lang", "url", "id", "splitter", "_lines", "_words")

    def __init__(self, text: str, lang: str = "", url: str = "", splitter: WordSplitter | None = None, id: str = ""):
        self.text, self.lang, self.url, self.splitter, self.id = text, lang, url, splitter, id
        self._lines = self._words = None

    @property
    def lines(self) -> list[str]:  # str.splitlines, as Gopher quality and C4 use
        if self._lines is None:
            self._lines = self.text.splitlines()
        return self._lines

    @property
    def words(self) -> Words:
        if self._words is None:
            self._words = self.splitter.words(self.text)
        return self._words


# ---------------------------------------------------------------- URL blocklist (UT1 via datatrove)
_URL_SPLIT = re.compile(r"[^a-zA-Z0-9]+")  # datatrove's url normalizer


def _norm_word(x: str) -> str:
    return _URL_SPLIT.sub("", x).lower()


def _list_entries(lines, normalize: bool) -> set[str]:
    """datatrove's parse_list: every line not starting with '#', stripped (or normalized)."""
    return {(_norm_word(x) if normalize else x.strip()) for x in lines if x and x[0] != "#"}


class HashedSet:
    """Membership in a large string set as two independent 64-bit hashes per entry, sorted."""

    def __init__(self, h1: np.ndarray, h2: np.ndarray):  # both sorted by h1
        self.h1, self.h2 = h1, h2

    @classmethod
    def build(cls, h1_parts: list, h2_parts: list) -> "HashedSet":
        """Concatenate and sort one array at a time, freeing as we go: the peak stays near 4 x 36 MB."""
        h1 = np.concatenate(h1_parts)
        h1_parts.clear()
        order = np.argsort(h1, kind="stable")
        h1 = h1[order]
        h2 = np.concatenate(h2_parts)
        h2_parts.clear()
        return cls(h1, h2[order])

    @staticmethod
    def keys(s: str) -> tuple[int, int]:
        return hash(s), hash(s + "\n")

    def __contains__(self, s: str) -> bool:
        a, b = self.keys(s)
        i = int(np.searchsorted(self.h1, a))
        while i < len(self.h1) and self.h1[i] == a:
            if self.h2[i] == b:
                return True
            i += 1
        return False

    def __len__(self) -> int:
        return len(self.h1)


def load_domain_blocklist(extra: set[str]) -> HashedSet:
    """The `domains` list of datatrove's bundled UT1 archive, streamed (never 500 MB of str at once)."""
    from datatrove.utils._import_utils import ASSETS_PATH

    h1, h2 = [], []
    with tarfile.open(os.path.join(ASSETS_PATH, "url_filterblacklistsv0_3_0.tar.gz")) as tar:
        f = io.TextIOWrapper(tar.extractfile("domains"), encoding="utf-8", newline=None)
        while lines := f.readlines(1 << 20):
            stripped = [x.strip() for x in lines if x[0] != "#"]
            h1.append(np.fromiter(map(hash, stripped), np.int64, len(stripped)))
            h2.append(np.fromiter((hash(s + "\n") for s in stripped), np.int64, len(stripped)))
    for s in extra:
        a, b = HashedSet.keys(s)
        h1.append(np.array([a], np.int64))
        h2.append(np.array([b], np.int64))
    return HashedSet.build(h1, h2)


class URLRule:
    """datatrove's URLFilter: UT1 domain/subdomain/URL lists, hard/soft banned words, banned subwords."""

    name = "url"
    SOFT_WORD_THRESHOLD = 2  # datatrove's default, which Lucie used

    def __init__(self, extra_domains=(), banned_words=()):
        import ahocorasick
        from datatrove.utils._import_utils import ASSETS_PATH
        from tldextract import TLDExtract

        def asset(name: str, normalize: bool, extra=()) -> set[str]:
            with open(os.path.join(ASSETS_PATH, name), encoding="utf-8") as f:
                return _list_entries(f, normalize) | _list_entries(extra, normalize)

        self.tld = TLDExtract(suffix_list_urls=())  # tldextract's bundled public-suffix list: no fetch
        self.domains = load_domain_blocklist(_list_entries(extra_domains, False))
        with tarfile.open(os.path.join(ASSETS_PATH, "url_filterblacklistsv0_3_0.tar.gz")) as tar:
            self.urls = _list_entries(io.TextIOWrapper(tar.extractfile("urls"), encoding="utf-8", newline=None), False)
        self.banned_words = asset("banned_words.txt", True, banned_words)
        self.soft_banned_words = asset("soft_banned_words.txt", True)
        subwords = asset("banned_subwords.txt", True)
        self.subwords = ahocorasick.Automaton(ahocorasick.STORE_ANY)
        for w in sorted(subwords):
            self.subwords.add_word(w, w)
        self.subwords.make_automaton()

    def __call__(self, d: DocView) -> Verdict:
        url = d.url
        info = self.tld(url)
        if info.registered_domain in self.domains:
            return _drop(self.name, "domain", info.registered_domain, "UT1 domain blocklist")
        if info.fqdn in self.domains:
            return _drop(self.name, "subdomain", info.fqdn, "UT1 domain blocklist")
        if url in self.urls:
            return _drop(self.name, "url", url, "UT1 url blocklist")
        url_words = set(_URL_SPLIT.split(url))  # not lower-cased, as datatrove
        hard = sorted(url_words & self.banned_words)
        if hard:
            return _drop(self.name, "hard_blacklisted", hard[0], "banned_words")
        soft = len(url_words & self.soft_banned_words)
        if soft >= self.SOFT_WORD_THRESHOLD:
            return _drop(self.name, "soft_blacklisted", soft, self.SOFT_WORD_THRESHOLD)
        hit = next(self.subwords.iter(_norm_word(url)), None)
        if hit is not None:
            return _drop(self.name, "blacklisted_subword", hit[1], "banned_subwords")
        return Verdict(True, self.name)


# ---------------------------------------------------------------- Gopher repetition
def _duplicates(items: list[str]) -> tuple[int, int]:
    """(duplicate elements, their chars): an element counts from its second occurrence on."""
    seen, n, chars = set(), 0, 0
    for x in items:
        if x in seen:
            n += 1
            chars += len(x)
        else:
            seen.add(x)
    return n, chars


class _Powers:
    """BASE**k and BASE_INV**k mod 2**64 as uint64 tables, grown on demand (numpy wraps uint64 products)."""

    def __init__(self):
        self.b = self._table(WordIds.BASE, 1 << 15)
        self.inv = self._table(WordIds.BASE_INV, 1 << 15)

    @staticmethod
    def _table(base: int, n: int) -> np.ndarray:
        t = np.empty(n, np.uint64)
        v = 1
        for i in range(n):
            t[i] = v
            v = v * base & MASK
        return t

    def ensure(self, n: int) -> None:
        while len(self.b) < n:
            for name, base in (("b", WordIds.BASE), ("inv", WordIds.BASE_INV)):
                t = getattr(self, name)
                step = np.uint64(pow(base, len(t), 1 << 64))
                setattr(self, name, np.concatenate([t, t * step]))


class GopherRepetitionRule:
    """datatrove's GopherRepetitionFilter (Gopher table A1 thresholds)."""

    name = "gopher_repetition"
    _para = re.compile(r"\n{2,}")
    _line = re.compile("\n+")

    def __init__(self, dup_line_frac=0.3, dup_para_frac=0.3, dup_line_char_frac=0.2, dup_para_char_frac=0.2,
                 top_n_grams=((2, 0.2), (3, 0.18), (4, 0.16)),
                 dup_n_grams=((5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10))):
        self.dup_line_frac, self.dup_para_frac = dup_line_frac, dup_para_frac
        self.dup_line_char_frac, self.dup_para_char_frac = dup_line_char_frac, dup_para_char_frac
        self.top_n_grams = [tuple(x) for x in top_n_grams]
        self.dup_n_grams = [tuple(x) for x in dup_n_grams]
        self.pow = _Powers()

    def __call__(self, d: DocView) -> Verdict:
        text = d.text
        if not text:
            return _drop(self.name, "empty", 0, "> 0 chars")
        paragraphs = self._para.split(text.strip())
        n, chars = _duplicates(paragraphs)
        if self.dup_para_frac and n / len(paragraphs) > self.dup_para_frac:
            return _drop(self.name, "dup_para_frac", n / len(paragraphs), self.dup_para_frac)
        if self.dup_para_char_frac and chars / len(text) > self.dup_para_char_frac:
            return _drop(self.name, "dup_para_char_frac", chars / len(text), self.dup_para_char_frac)
        lines = self._line.split(text)
        n, chars = _duplicates(lines)
        if self.dup_line_frac and n / len(lines) > self.dup_line_frac:
            return _drop(self.name, "dup_line_frac", n / len(lines), self.dup_line_frac)
        if self.dup_line_char_frac and chars / len(text) > self.dup_line_char_frac:
            return _drop(self.name, "dup_line_char_frac", chars / len(text), self.dup_line_char_frac)

        grams = NGrams(d.words, self.pow)
        for n, frac in self.top_n_grams:
            if len(d.words) < n:
                continue
            top = grams.top_chars(n)
            if top / len(text) > frac:
                return _drop(self.name, f"top_{n}_gram", top / len(text), frac)
        for n, frac in self.dup_n_grams:
            chars = grams.dup_chars(n)
            if chars / len(text) > frac:
                return _drop(self.name, f"duplicated_{n}_n_grams", chars / len(text), frac)
        return Verdict(True, self.name)


class NGrams:
    """The n-gram statistics of one document's words that Gopher repetition thresholds, computed on ids."""

    def __init__(self, w: Words, powers: _Powers):
        self.w, self.pow = w, powers
        self.offsets = np.zeros(len(w) + 1, np.int64)  # char offset of each word in "".join(words)
        np.cumsum(w.vocab.length[w.ids], out=self.offsets[1:])
        self._grams: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._prefix = None

    def _gram_ids(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(id of the n-gram at each position, first position of each id), by exact integer packing:
        the (n-1)-gram id and the next word id, 32 bits each, re-numbered by np.unique."""
        if n not in self._grams:
            ids = self.w.ids
            prev = ids if n == 2 else self._gram_ids(n - 1)[0]
            packed = (prev[: len(ids) - n + 1] << 32) | ids[n - 1:]
            _, first, inv = np.unique(packed, return_index=True, return_inverse=True)
            self._grams[n] = (inv.astype(np.int64).reshape(-1), first)
        return self._grams[n]

    def top_chars(self, n: int) -> int:
        """datatrove's find_top_duplicate: len(most common ' '-joined n-gram) * its count, ties going
        to the n-gram seen first (Counter order). Requires len(words) >= n."""
        w = self.w
        if w.has_space or n < 2:  # a word with a space inside: ' '.join is not injective, count strings
            s = w.strings()
            top, count = Counter(" ".join(s[i: i + n]) for i in range(len(s) - n + 1)).most_common(1)[0]
            return len(top) * count
        inv, first = self._gram_ids(n)
        counts = np.bincount(inv)
        best = counts.max()
        pos = int(first[counts == best].min())
        return (int(self.offsets[pos + n] - self.offsets[pos]) + n - 1) * int(best)

    def dup_chars(self, n: int) -> int:
        """datatrove's find_all_duplicate: scan the n-grams ("".join) left to right, count the chars of
        each one already seen and jump past it. Only n-grams whose concatenation hash repeats can be
        seen twice; those are replayed in datatrove's order on the real strings."""
        w = self.w
        m = len(w) - n + 1
        if m <= 1:
            return 0
        off = self.offsets
        if self._prefix is None:
            self.pow.ensure(int(off[-1]) + 2)
            self._prefix = np.zeros(len(w) + 1, np.uint64)  # S_k = sum_{i<k} BASE_INV**off_i * g_i
            np.cumsum(self.pow.inv[off[:-1]] * w.vocab.ghash[w.ids], out=self._prefix[1:])
        prefix = self._prefix
        # BASE**end * (S_end - S_start) is the polynomial hash of the characters, wherever they sit.
        h = self.pow.b[off[n:]] * (prefix[n:] - prefix[:m])
        key = h + (off[n:] - off[:m]).astype(np.uint64) * np.uint64(0x2545F4914F6CDD1D)
        _, inv, counts = np.unique(key, return_inverse=True, return_counts=True)
        cand = np.flatnonzero(counts[inv.reshape(-1)] > 1)
        strs, ids = w.vocab.strings, w.ids
        seen, chars, nxt = set(), 0, 0
        for p in cand.tolist():
            if p < nxt:
                continue
            g = "".join([strs[i] for i in ids[p: p + n].tolist()])
            if g in seen:
                chars += len(g)
                nxt = p + n
            else:
                seen.add(g)
        return chars


# ---------------------------------------------------------------- Gopher quality
class GopherQualityRule:
    """datatrove's GopherQualityFilter; `min_alpha_words_ratio` is its `max_non_alpha_words_ratio`."""

    name = "gopher_quality"

    def __init__(self, min_doc_words=50, max_doc_words=100_000, min_avg_word_length=3, max_avg_word_length=10,
                 max_symbol_word_ratio=0.1, max_bullet_lines_ratio=0.9, max_ellipsis_lines_ratio=0.3,
                 min_alpha_words_ratio=0.8, min_stop_words=2, stop_words=None):
        from datatrove.pipeline.filters.gopher_quality_filter import STOP_WORDS

        self.min_doc_words, self.max_doc_words = min_doc_words, max_doc_words
        self.min_avg, self.max_avg = min_avg_word_length, max_avg_word_length
        self.max_symbol = max_symbol_word_ratio
        self.max_bullets, self.max_ellipsis_lines = max_bullet_lines_ratio, max_ellipsis_lines_ratio
        self.min_alpha = min_alpha_words_ratio
        self.min_stop_words = min_stop_words
        self.stop_words = sorted(set(STOP_WORDS if stop_words is None else stop_words))

    def __call__(self, d: DocView) -> Verdict:
        text, w = d.text, d.words
        v = w.vocab
        n_words = len(w)
        non_symbol = v.non_symbol[w.ids]
        n = int(np.count_nonzero(non_symbol))
        if self.min_doc_words and n < self.min_doc_words:
            return _drop(self.name, "gopher_short_doc", n, self.min_doc_words)
        if self.max_doc_words and n > self.max_doc_words:
            return _drop(self.name, "gopher_long_doc", n, self.max_doc_words)
        avg = int(v.length[w.ids][non_symbol].sum()) / n if n else math.nan  # np.mean([]) is nan
        if self.min_avg and avg < self.min_avg:
            return _drop(self.name, "gopher_below_avg_threshold", avg, self.min_avg)
        if self.max_avg and avg > self.max_avg:
            return _drop(self.name, "gopher_above_avg_threshold", avg, self.max_avg)
        if self.max_symbol:
            r = text.count("#") / n_words
            if r > self.max_symbol:
                return _drop(self.name, "gopher_too_many_hashes", r, self.max_symbol)
            r = (text.count("...") + text.count("…")) / n_words
            if r > self.max_symbol:
                return _drop(self.name, "gopher_too_many_ellipsis", r, self.max_symbol)
        lines = d.lines
        if self.max_bullets:
            r = sum(s.lstrip().startswith(("•", "-")) for s in lines) / len(lines)
            if r > self.max_bullets:
                return _drop(self.name, "gopher_too_many_bullets", r, self.max_bullets)
        if self.max_ellipsis_lines:
            r = sum(s.rstrip().endswith(("...", "…")) for s in lines) / len(lines)
            if r > self.max_ellipsis_lines:
                return _drop(self.name, "gopher_too_many_end_ellipsis", r, self.max_ellipsis_lines)
        if self.min_alpha:
            r = int(np.count_nonzero(v.alpha[w.ids])) / n_words
            if r < self.min_alpha:
                return _drop(self.name, "gopher_below_alpha_threshold", r, self.min_alpha)
        if self.min_stop_words:
            present = [v.ids[s] for s in self.stop_words if s in v.ids]
            found = int(np.isin(np.array(present, np.int64), w.ids).sum()) if present else 0
            if found < self.min_stop_words:
                return _drop(self.name, "gopher_enough_stop_words", found, self.min_stop_words)
        return Verdict(True, self.name)


# ---------------------------------------------------------------- C4
class C4Rule:
    """datatrove's C4QualityFilter, deciding only (a kept document keeps its original text)."""

    name = "c4"
    MAX_WORD_LENGTH = 1000  # datatrove's defaults, which Lucie used
    REMOVE_CITATIONS = True

    def __init__(self, dt_lang: str, filter_no_terminal_punct=True, min_num_sentences=5, min_words_per_line=3,
                 filter_lorem_ipsum=True, filter_javascript=True, filter_curly_bracket=True, filter_policy=True):
        from datatrove.pipeline.filters import c4_filters as c4

        self.c4, self.dt_lang = c4, dt_lang
        self.no_terminal_punct, self.min_sentences = filter_no_terminal_punct, min_num_sentences
        self.min_words = min_words_per_line
        self.lorem, self.javascript = filter_lorem_ipsum, filter_javascript
        self.curly, self.policy = filter_curly_bracket, filter_policy

    def __call__(self, d: DocView) -> Verdict:
        c4 = self.c4
        kept = []
        for i, line in enumerate(d.lines):
            line = line.strip()
            words = line.split()
            if len(line) > self.MAX_WORD_LENGTH and any(len(x) > self.MAX_WORD_LENGTH for x in words):
                continue
            if self.REMOVE_CITATIONS:
                line = c4.CITATION_REGEX.sub("", line)
            if self.no_terminal_punct and (not line.endswith(c4.END_PUNCTUATION) or line.endswith(c4.ELLIPSIS)):
                continue
            if len(words) < self.min_words:
                continue
            low = line.lower()
            if self.lorem and "lorem ipsum" in low:
                return _drop(self.name, "lorem_ipsum", f"line {i + 1}", "no 'lorem ipsum'")
            if self.javascript and "javascript" in low:
                continue
            if self.curly and "{" in line:
                return _drop(self.name, "curly_bracket", f"line {i + 1}", "no '{'")
            if self.policy and any(p in low for p in c4.POLICY_SUBSTRINGS):
                continue
            kept.append(line)
        if self.min_sentences != -1 and len(kept) < self.min_sentences:
            # Each kept line has >= 1 sentence, so only now does the count need spaCy's sentencizer.
            from datatrove.utils.text import split_into_sentences

            n = sum(len(split_into_sentences(x, self.dt_lang)) for x in kept)
            if n < self.min_sentences:
                return _drop(self.name, "too_few_sentences", n, self.min_sentences)
        return Verdict(True, self.name)


# ---------------------------------------------------------------- perplexity (CCNet-style, KenLM)
# CCNet's normalisation before scoring: lower case, no accents, digits -> 0, unicode punctuation mapped to
# ASCII, non-printing characters removed (cc_net text_normalizer, described not copied).
_PUNCT_MAP = str.maketrans({
    "，": ",", "。": ". ", "、": ",", "„": '"', "”": '"', "“": '"', "«": '"', "»": '"', "１": '"', "」": '"',
    "「": '"', "《": '"', "》": '"', "´": "'", "∶": ":", "：": ":", "？": "?", "！": "!", "（": "(", "）": ")",
    "；": ";", "–": "-", "—": " - ", "．": ". ", "～": "~", "’": "'", "…": "...", "━": "-", "〈": "<", "〉": ">",
    "【": "[", "】": "]", "％": "%", "►": "-",
})
_NON_PRINTING = re.compile("[" + "".join(map(chr, [*range(0, 32), *range(127, 160)])) + "]")
_DIGITS = re.compile(r"\d")


def ccnet_normalize(line: str) -> str:
    line = line.strip().lower()
    line = "".join(c for c in unicodedata.normalize("NFD", line) if unicodedata.category(c) != "Mn")
    line = _DIGITS.sub("0", line.translate(_PUNCT_MAP))
    return _NON_PRINTING.sub("", line)


@dataclass
class LanguageModel:
    kenlm_model: Any
    sp: Any = None  # sentencepiece.SentencePieceProcessor, as CCNet's models expect; None: whitespace words

    def perplexity(self, text: str) -> float:
        """10 ** (-sum log10 P / sum tokens), every non-empty line scored with <s> </s> (CCNet's pp)."""
        log10, length = 0.0, 0
        for raw in text.splitlines():
            line = ccnet_normalize(raw)
            if not line:
                continue
            toks = self.sp.encode(line, out_type=str) if self.sp is not None else line.split()
            if not toks:
                continue
            log10 += self.kenlm_model.score(" ".join(toks), bos=True, eos=True)
            length += len(toks) + 1
        return round(10.0 ** (-log10 / length), 1) if length else math.nan


def _module(name: str, pip: str, why: str):
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise RuntimeError(f"{why} needs the `{name}` Python module, which is not installed "
                           f"(pip install {pip}).") from err


class PerplexityRule:
    """Keep a document iff min <= CCNet-style KenLM perplexity <= max (Lucie: 10-1000)."""

    name = "perplexity"
    KENLM_PIP = "kenlm-ex==0.2.1  # prebuilt KenLM wheel providing `import kenlm`; PyPI's `kenlm` is source-only"

    def __init__(self, model_path: str, min_pp: float, max_pp: float, sp_path: str | None = None):
        kenlm = _module("kenlm", self.KENLM_PIP, "filter.perplexity.model")
        sp = None
        if sp_path:
            spm = _module("sentencepiece", "sentencepiece", "filter.perplexity.sp_model")
            sp = spm.SentencePieceProcessor(model_file=str(sp_path))
        self.lm = LanguageModel(kenlm.Model(str(model_path)), sp)
        self.min, self.max = min_pp, max_pp

    def __call__(self, d: DocView) -> Verdict:
        pp = self.lm.perplexity(d.text)
        if pp < self.min:
            return _drop(self.name, "perplexity_too_low", pp, self.min)
        if pp > self.max:
            return _drop(self.name, "perplexity_too_high", pp, self.max)
        return Verdict(True, self.name)
