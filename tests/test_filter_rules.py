"""The fast filter rules (stages/lib/filter_rules.py) against datatrove itself: the same words, the same
n-gram statistics, the same URL verdicts and the same first failing rule and reason on a slice of
the real corpora (../shared/corpora) plus the sample noise files and hand-made edge cases; the
stage's drop records carry value and threshold under both engines; the perplexity rule is off with
a clear line when no model is set, and scores a tiny ARPA model with kenlm when one is."""
from __future__ import annotations

import copy
import io as pyio
import json
import random
import sys
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from stages import filter as filt
from stages.lib import filter_rules as fr
from stages.core import files, params, runtime, tracking

PROJECT = Path(__file__).resolve().parent.parent
CORPORA = PROJECT.parent / "shared" / "corpora"
SAMPLE = PROJECT / "data" / "sample" / "text"
LID_MODEL = PROJECT / "assets" / "lid" / "lid.176.ftz"
LANGS = ["en", "fr", "de", "es", "it"]


def filter_params(overrides: dict | None = None) -> params.Params:
    raw = copy.deepcopy(yaml.safe_load((PROJECT / "params.yaml").read_text(encoding="utf-8")))
    overrides = {"filter.language.model": str(LID_MODEL), **(overrides or {})}
    for key, value in overrides.items():
        *parents, last = key.split(".")
        node = raw
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return params.parse(raw)


def read_jsonl(path: Path) -> list[dict]:
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            d = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(d, dict) and isinstance(d.get("text"), str) and d["text"]:
            out.append(d)
    return out


def edge_docs() -> list[dict]:
    """Hand-made documents at the edges of the rules' semantics."""
    prose = ("The river runs quietly past the old mill, and the children watch the boats go by every single "
             "afternoon while their parents talk about the weather and the price of bread. ")
    docs = {
        # C4: two kept lines holding three sentences (kept) / two sentences (too_few_sentences)
        "c4-two-lines-three-sentences": prose * 2 + "\nIt rained. Then it stopped. " + prose + "\n" + prose,
        "c4-two-lines-two-sentences": (prose * 2).replace(". ", ", ") + "\n" + prose * 2,
        "c4-curly": prose * 3 + "\nfunction f() { return the value of the thing; }\n" + prose,
        "c4-javascript-curly-line": prose * 3 + "\nPlease enable javascript { in your browser now }.\n" + prose + "\n" + prose,
        "c4-lorem": prose * 3 + "\nLorem ipsum dolor sit amet, consectetur.\n" + prose,
        "c4-citation": prose + "[1]\n" + prose + "[edit]\n" + prose + "[citation needed]",
        # "".join collisions: different word tuples with the same concatenation (datatrove counts them)
        "concat-collision": " ".join(["x yz p q r", "xy z p q r"] * 12) + " " + prose * 4,
        "bullets": "\n".join(f"- item number {i} of the list with some words" for i in range(30)) + "\n" + prose,
        "end-ellipsis": "\n".join(f"and then the story went on and on {i}..." for i in range(12)) + "\n" + prose * 3,
        "hashes": prose * 2 + " #tag" * 40,
        "short": "Only a few words here, far too short for Gopher.",
        "symbols": prose * 2 + " ... ... … " * 20,
        "weird-space": prose.replace(" ", "\u00a0", 5).replace("the", "the\u2003", 3) + "\u2028" + prose * 2,
        "es-eeuu": "Los EE. UU. y la UE. firmaron. " * 10 + prose * 2,
    }
    return [{"id": f"edge-{k}", "text": v, "lang": "es" if k == "es-eeuu" else "en", "url": ""} for k, v in docs.items()]


@pytest.fixture(scope="module")
def corpus_slice() -> list[dict]:
    """60 real documents per language (every 4th, cut at a paragraph near 3,000 chars to keep the test
    in seconds), the sample's clean and noise files, edge cases and near-threshold perturbations."""
    if not CORPORA.exists():
        pytest.skip(f"{CORPORA} is not there (the shared real-text corpora)")
    docs = []
    for lang in LANGS:
        real = read_jsonl(CORPORA / f"real-{lang}.jsonl")[::4][:60]
        for d in real:
            text, cut = d["text"], d["text"].find("\n\n", 3000)
            docs.append({**d, "text": text[:cut] if cut > 0 else text})
        for name in (f"{lang}.jsonl", f"{lang}.noise.jsonl"):
            for d in read_jsonl(SAMPLE / name):
                docs.append({"url": "", **d, "lang": d.get("lang", lang)})
    rng = random.Random(7)
    for d in rng.sample(docs[:300], 40):  # word counts around Gopher's 50 and bullet/ellipsis ratios
        words = d["text"].split(" ")
        k = rng.randint(35, 80)
        docs.append({**d, "id": f"{d['id']}-cut{k}", "text": " ".join(words[:k])})
        lines = d["text"].splitlines()
        docs.append({**d, "id": f"{d['id']}-ell", "text": "\n".join(x + "..." if i % 3 == 0 else x for i, x in enumerate(lines))})
    return docs + edge_docs()


@pytest.fixture(scope="module")
def chains(tmp_path_factory):
    """Both engines on the project's filter params (URL lists and LID loaded once for the module)."""
    root = tmp_path_factory.mktemp("filter_rules")
    p = filter_params().filter
    return {"root": root, "fast": filt.Chain(p, root),
            "datatrove": filt.Chain(p.model_copy(update={"engine": "datatrove"}), root)}


# ---------------------------------------------------------------- words and n-grams
def test_words_match_datatrove_tokenizer(corpus_slice):
    from datatrove.utils.word_tokenizers import load_word_tokenizer

    splitters = {lang: fr.WordSplitter(params.WORD_TOKENIZER[lang]) for lang in LANGS}
    extra = ["Los EE. UU. y la UE.", "a\u00a0b\u2003c\u2028d e\x1cf", "  lead\n\n\ttabs  trail  ", "",
             "don't can't gonna", "http://example.com/a?b=c (see: x)", "l'homme aujourd'hui", "z.B. usw. Nr. 5"]
    docs = corpus_slice + [{"text": t, "lang": lang} for t in extra for lang in LANGS]
    for d in docs:
        lang = params.WORD_TOKENIZER[d["lang"]]
        assert splitters[d["lang"]].words(d["text"]).strings() == load_word_tokenizer(lang).word_tokenize(d["text"])
    calls = sum((s.calls for s in splitters.values()), start=Counter())
    assert calls["whole_doc"] >= 2 and calls["single_chunks"] > 0 and calls["spacy_chunks"] > 0, calls


def test_ngram_statistics_match_datatrove_functions():
    """Random word lists over tiny alphabets: many repeats, ties and "".join collisions (a+bc = ab+c)."""
    from datatrove.pipeline.filters.gopher_repetition_filter import find_all_duplicate, find_top_duplicate, get_n_grams

    powers = fr._Powers()
    alphabets = [["a", "b", "ab", "ba", "aa"], ["x", "y"], ["le", "chat", "l", "echat", "a b"], ["é", "e", "ée"]]
    for trial in range(400):
        rng = random.Random(trial)
        words = [rng.choice(alphabets[trial % 4]) for _ in range(rng.randint(1, 50))]
        vocab = fr.WordIds()
        grams = fr.NGrams(fr.Words(np.array([vocab.add(w) for w in words], np.int64), vocab,
                                   any(" " in w for w in words)), powers)
        for n in range(1, 11):
            assert grams.dup_chars(n) == find_all_duplicate(words, n), (words, n)
            if len(words) >= n:
                assert grams.top_chars(n) == find_top_duplicate(get_n_grams(words, n)), (words, n)


# ---------------------------------------------------------------- rule verdicts
def test_url_rule_matches_datatrove(chains):
    from datatrove.utils._import_utils import ASSETS_PATH

    with tarfile.open(Path(ASSETS_PATH) / "url_filterblacklistsv0_3_0.tar.gz") as tar:
        domains = [x.decode().strip() for i, x in enumerate(tar.extractfile("domains")) if i % 500_000 == 0]
        urls = [x.decode().strip() for i, x in enumerate(tar.extractfile("urls")) if i % 5_000 == 0]
    words = {name: [x.strip().replace(" ", "-") for x in (Path(ASSETS_PATH) / f"{name}.txt").read_text().splitlines()
                    if x.strip() and not x.startswith("#")][1:4]
             for name in ("banned_words", "soft_banned_words", "banned_subwords")}
    tests = ["https://example.org/", "http://localhost/x", "http://127.0.0.1:8080/a", "https://example.org/a//",
             "https://en.wikipedia.org/wiki/Cat", "ftp://files.example.co.uk/a", "not a url"]
    for d in domains:
        tests += [f"https://{d}/x", f"http://www.{d}/", f"https://sub.{d}/a?b=c", f"https://{d.upper()}/"]
    tests += [u if "://" in u else f"http://{u}" for u in urls] + urls
    for w in words["banned_words"]:
        tests += [f"https://example.org/{w}/page", f"https://example.org/{w.upper()}", f"https://example.org/x{w}y"]
    soft = words["soft_banned_words"]
    tests += [f"https://example.org/{soft[0]}-{soft[1]}", f"https://example.org/{soft[2]}"]
    tests += [f"https://example.org/aa{w}bb" for w in words["banned_subwords"]]
    seen = set()
    for url in tests:
        view = fr.DocView("", url=url)
        mine, ref = chains["fast"].url(view), chains["datatrove"].url(view)
        assert (mine.keep, mine.check) == (ref.keep, ref.check), url
        seen.add(mine.check)
        if not mine.keep:
            assert mine.value is not None and mine.threshold is not None
    assert seen >= {"", "domain", "subdomain", "url", "hard_blacklisted", "soft_blacklisted", "blacklisted_subword"}


def decide_text(chain: filt.Chain, doc: dict) -> filt.Decision:
    """The chain's decision without language ID (the same fastText call in both engines), so that every
    document of the slice, edge cases included, reaches the text rules."""
    view = chain.view(doc)
    for name, rule in chain.rules_for(doc):
        if name != "language":
            v = rule(view)
            if not v.keep:
                return filt.Decision("drop", name, v.check, v.value, v.threshold, v.detail)
    return filt.Decision("keep")


def test_decisions_match_datatrove_on_corpus_slice(chains, corpus_slice):
    """Every document: the same verdict, the same first failing rule and the same reason, 100 %."""
    checks, diffs = set(), []
    for d in corpus_slice:
        doc = {"url": "", **d, "id": d.get("id", "x"), "category": "web"}  # web: the rule set with every rule
        fast, ref = decide_text(chains["fast"], doc), decide_text(chains["datatrove"], doc)
        if (fast.verdict, fast.rule, fast.check) != (ref.verdict, ref.rule, ref.check):
            diffs.append((doc["id"], fast, ref))
        if fast.verdict == "drop":
            checks.add(f"{fast.rule}.{fast.check}")
            assert fast.value is not None and fast.threshold is not None, fast
            if ref.rule != "url":  # the datatrove engine takes value/threshold from the fast twin
                assert (ref.value, ref.threshold) == (fast.value, fast.threshold)
    assert not diffs, diffs
    assert len(corpus_slice) >= 400
    assert len(checks) >= 10, checks  # the slice exercises many rules, not only keeps


def test_c4_counts_sentences_only_when_lines_are_few(chains):
    """Fewer kept lines than min_num_sentences: the sentencizer decides, as in datatrove."""
    from datatrove.data import Document
    from datatrove.pipeline.filters import C4QualityFilter

    rules = dict(chains["fast"].text_rules("en"))
    ref = C4QualityFilter(filter_no_terminal_punct=False, min_num_sentences=3)
    line = "The river runs past the old mill while the children watch the boats and wave at them"
    for second, n in (("It rained. It stopped. Then it rained again", 4), ("It rained and then it stopped", 2)):
        text = f"{line}\n{second}"
        v = rules["c4"](fr.DocView(text, "en", "", chains["fast"].splitter("en")))
        assert v.keep == (ref.filter(Document(text=text, id="x")) is True) == (n >= 3)
        if not v.keep:
            assert (v.check, v.value, v.threshold) == ("too_few_sentences", n, 3)


# ---------------------------------------------------------------- the stage
def doc(id_, text, lang, url="", source=None):
    return {"id": id_, "text": text, "lang": lang, "source": source or f"s-{lang}", "category": "web",
            "license": "CC0-1.0", "url": url, "date": "2020-01-01", "meta": "{}"}


@pytest.fixture(scope="module")
def planted(chains):
    en, fr_ = {d["id"]: d for d in read_jsonl(SAMPLE / "en.jsonl")}, {d["id"]: d for d in read_jsonl(SAMPLE / "fr.jsonl")}
    from datatrove.utils._import_utils import ASSETS_PATH

    with tarfile.open(Path(ASSETS_PATH) / "url_filterblacklistsv0_3_0.tar.gz") as tar:
        blocked = tar.extractfile("domains").readline().decode().strip()
    spam = "\n\n".join(["Buy now and save up to seventy percent on all of our premium products, today only!"] * 15)
    rows = [
        doc("en-a", en["en-web-001"]["text"], "en", "https://example.org/garden"),
        doc("fr-a", fr_["fr-web-001"]["text"], "fr", "https://exemple.fr/a"),
        doc("blocked", en["en-web-002"]["text"], "en", f"https://{blocked}/page.html"),
        doc("spam", spam, "en"),
        # 30-40 words: under Gopher's 50, long enough not to trip the top-3-gram check first
        doc("short", "Every morning the small bakery at the corner of our street sells warm bread, fresh croissants "
                     "and apple pastries to the neighbours, and by nine o'clock the wooden shelves are usually "
                     "completely empty again.", "en"),
        doc("wrong-lang", fr_["fr-wiki-002"]["text"], "en"),
        doc("curly", en["en-wiki-001"]["text"] + "\nthe value is { x } in this line", "en", source="s-other"),
    ]
    return rows


def run_stage(root: Path, rows: list[dict], chain, overrides: dict | None = None) -> dict:
    raw = root / "data/raw"
    raw.mkdir(parents=True, exist_ok=True)
    files.write_manifest(raw, files.write_docs(raw, rows))
    ctx = runtime.StageContext("filter", root, filter_params(overrides), tracking.Tracker())
    filt.run(ctx, chain)
    return {"metrics": files.read_json(root / "metrics/filter.json"),
            "dropped": {r["id"]: r for r in map(json.loads, (root / "data/filtered/dropped.jsonl").read_text().splitlines())},
            "kept": [d["id"] for d in files.read_docs(root / "data/filtered")]}


EXPECTED = {"blocked": ("url", "domain"), "spam": ("gopher_repetition", "dup_para_frac"),
            "short": ("gopher_quality", "gopher_short_doc"), "wrong-lang": ("language", "language_mismatch"),
            "curly": ("c4", "curly_bracket")}


@pytest.fixture(scope="module")
def fast_run(chains, planted, tmp_path_factory):
    return run_stage(tmp_path_factory.mktemp("fast"), planted, chains["fast"])


def test_drop_records_carry_value_and_threshold(fast_run, planted):
    dropped = fast_run["dropped"]
    assert {k: (r["rule"], r["check"]) for k, r in dropped.items()} == EXPECTED
    source = {r["id"]: r["source"] for r in planted}
    for id_, r in dropped.items():
        assert set(r) == {"id", "source", "verdict", "rule", "check", "value", "threshold", "detail", "rule_set"}
        assert r["rule_set"] == "web"  # the category whose rule set the document met
        assert r["verdict"] == "drop" and r["source"] == source[id_] and r["detail"]
        assert r["value"] is not None and r["threshold"] is not None, r
    assert dropped["short"]["value"] < dropped["short"]["threshold"] == 50
    assert dropped["spam"]["value"] > dropped["spam"]["threshold"] == 0.3
    assert dropped["wrong-lang"]["value"] == "fr" and dropped["wrong-lang"]["threshold"] == "en"
    assert "declared en" in dropped["wrong-lang"]["detail"]
    assert "." in dropped["blocked"]["value"]
    assert fast_run["kept"] == ["en-a", "fr-a"]


def test_metrics_count_per_source_rule_and_check(fast_run, planted):
    m = fast_run["metrics"]
    assert m["read"] == len(planted) == m["kept"] + m["dropped_total"] + m["rejected_total"]
    assert m["engine"] == "fast"
    assert m["dropped"] == {rule: 1 for rule, _ in EXPECTED.values()}
    assert m["dropped_by_check"] == {f"{r}.{c}": 1 for r, c in EXPECTED.values()}
    assert m["per_source"]["s-other"] == {"read": 1, "dropped.c4": 1}
    assert m["per_source"]["s-en"]["read"] == 5 and m["per_source"]["s-en"]["kept"] == 1


def test_perplexity_off_is_said_and_recorded(chains, planted, tmp_path, capsys):
    m = run_stage(tmp_path, planted[:2], chains["fast"])["metrics"]
    assert filt.PERPLEXITY_OFF == "perplexity filter off: no KenLM model configured"
    assert capsys.readouterr().err.count(filt.PERPLEXITY_OFF) == 1
    assert m["perplexity"] == {"enabled": 0, "languages": [], "min": 10, "max": 1000, "note": filt.PERPLEXITY_OFF}


def test_engine_switch_takes_the_same_decisions(chains, planted, fast_run, tmp_path):
    ref = run_stage(tmp_path, planted, chains["datatrove"], {"filter.engine": "datatrove"})
    assert ref["metrics"]["engine"] == "datatrove"
    assert ref["kept"] == fast_run["kept"]
    for id_, r in ref["dropped"].items():
        assert (r["rule"], r["check"]) == EXPECTED[id_]
        if r["rule"] not in ("url", "language"):
            assert (r["value"], r["threshold"]) == (fast_run["dropped"][id_]["value"], fast_run["dropped"][id_]["threshold"])
    with pytest.raises(ValueError, match="other filter params"):
        filt.run(runtime.StageContext("filter", tmp_path, filter_params(), tracking.Tracker()), chains["datatrove"])


def test_engine_param_is_validated():
    with pytest.raises(ValueError, match="filter.engine"):
        filter_params({"filter.engine": "spacy"})
    with pytest.raises(ValueError, match="min"):
        filter_params({"filter.perplexity": {"model": "m.arpa", "min": 1000, "max": 10}})
    with pytest.raises(ValueError, match="sp_model"):
        filter_params({"filter.perplexity": {"sp_model": "x.model"}})


# ---------------------------------------------------------------- perplexity
# A bigram ARPA model (KenLM needs order >= 2) whose one bigram never occurs below, so every word costs its
# unigram log10 probability: known words -1, anything else <unk> -3, end of sentence -1.
ARPA = """\\data\\
ngram 1=6
ngram 2=1

\\1-grams:
-3.0\t<unk>\t0
-99\t<s>\t0
-1.0\t</s>\t0
-1.0\t{a}\t0
-1.0\t{b}\t0
-1.0\t{c}\t0

\\2-grams:
-0.1\t{b} {b}

\\end\\
"""


def write_arpa(path: Path, words=("the", "cat", "sat")) -> Path:
    path.write_text(ARPA.format(a=words[0], b=words[1], c=words[2]), encoding="utf-8")
    return path


def test_ccnet_normalisation():
    assert fr.ccnet_normalize("  Élan, 1984 «Quoted» — Ça!  ") == 'elan, 0000 "quoted"  -  ca!'


def test_perplexity_of_a_tiny_arpa_model(tmp_path):
    pytest.importorskip("kenlm")
    rule = fr.PerplexityRule(write_arpa(tmp_path / "en.arpa"), 10, 100)
    assert rule.lm.perplexity("The CAT sat") == 10.0  # (-1 -1 -1 -1) / 4 tokens
    assert rule.lm.perplexity("The cat sat\n\nle chat") == round(10 ** (11 / 7), 1)  # 2 <unk> at -3
    assert rule(fr.DocView("the cat sat\nthe cat sat")).keep
    v = rule(fr.DocView("le chat est sur le tapis"))
    assert (v.keep, v.rule, v.check, v.threshold) == (False, "perplexity", "perplexity_too_high", 100)
    assert v.value == round(10 ** (19 / 7), 1)


def test_perplexity_with_a_sentencepiece_model(tmp_path):
    pytest.importorskip("kenlm")
    spm = pytest.importorskip("sentencepiece")
    buf = pyio.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(["the cat sat", "the cat", "cat sat the"] * 20),
                                   model_writer=buf, vocab_size=7, model_type="word", minloglevel=2,
                                   hard_vocab_limit=False)
    (tmp_path / "en.sp.model").write_bytes(buf.getvalue())
    rule = fr.PerplexityRule(write_arpa(tmp_path / "en.arpa", ("▁the", "▁cat", "▁sat")), 10, 1000,
                             tmp_path / "en.sp.model")
    assert rule.lm.perplexity("The cat sat") == 10.0  # pieces ▁the ▁cat ▁sat, not whitespace words


def test_stage_drops_by_perplexity_when_a_model_is_set(planted, tmp_path):
    pytest.importorskip("kenlm")
    write_arpa(tmp_path / "lm.en.arpa")
    over = {"filter.url.enabled": False, "filter.perplexity": {"model": {"en": "lm.en.arpa"}, "min": 10, "max": 100}}
    out = run_stage(tmp_path, [planted[0], planted[1]], None, over)
    m = out["metrics"]
    assert m["perplexity"] == {"enabled": 1, "languages": ["en"], "min": 10, "max": 100}
    rec = out["dropped"]["en-a"]  # real English prose is mostly <unk> (-3) to a 3-word model
    assert (rec["rule"], rec["check"], rec["threshold"]) == ("perplexity", "perplexity_too_high", 100)
    assert 100 < rec["value"] < 1000
    assert out["kept"] == ["fr-a"]  # no French model: the rule does not apply


def test_configured_model_without_kenlm_names_the_package(tmp_path, monkeypatch):
    write_arpa(tmp_path / "en.arpa")
    monkeypatch.setitem(sys.modules, "kenlm", None)  # what an environment without the wheel sees
    p = filter_params({"filter.url.enabled": False, "filter.perplexity": {"model": "{lang}.arpa"}}).filter
    with pytest.raises(runtime.StageError, match=r"`kenlm`.*kenlm-ex==0\.2\.1"):
        filt.Chain(p.model_copy(update={"text_langs": ["en"]}), tmp_path)


def test_configured_model_file_must_exist(tmp_path):
    p = filter_params({"filter.url.enabled": False, "filter.perplexity": {"model": "lm/{lang}.arpa"}}).filter
    with pytest.raises(runtime.StageError, match=r"filter.perplexity.model for 'en'.*lm/en.arpa"):
        filt.Chain(p, tmp_path)
