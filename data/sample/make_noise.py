"""Plant known noise next to the clean sample, so every cleaning rule has a case to catch.

Why: the sample corpus in data/sample/text/ is clean by construction, so on its own it
cannot show that ingest, the filters and dedup actually remove anything. This script
derives, from the clean files, a small set of noisy documents whose fate is known in
advance, and records that expectation in noise_manifest.json. Tests and reviewers can
then compare what the pipeline dropped (data/raw/rejected.jsonl, the filter's drop log,
data/dedup/removed.jsonl) with what was planted, document by document.

Why deterministic: the planted files are committed data and part of the reproducible
recipe; rerunning this script must rewrite them byte for byte. So: inputs are read in
sorted order (files by language, documents by id), every random choice comes from
`random.Random` seeded with a fixed string (string seeds are hashed with SHA-512, so
PYTHONHASHSEED does not matter), nothing reads the clock, and JSON is written with a
fixed key order.

Outputs (all in data/sample/):
  text/<lang>.noise.jsonl   for en, fr, de, es, it, nine documents each:
      exact_duplicate  x2  a clean text copied verbatim under a new id and url    -> dedup / exact
      near_duplicate   x2  a clean text with ~2 % of its words substituted,
                           deleted or inserted; 5-gram word-shingle Jaccard with
                           the original >= 0.80 (asserted here)                    -> dedup / near_duplicate
      spam             x1  three promotional sentences repeated as paragraphs      -> filter / gopher_repetition
      blocklisted_url  x1  a clean text (paragraphs reversed) on a domain from
                           datatrove's bundled URL blocklist                       -> filter / url
      banned_url_word  x1  the same, on example.org with a word from datatrove's
                           banned_words.txt as a path segment                      -> filter / url
      wrong_language   x1  another language's clean text (paragraphs reversed)
                           declared as this file's language                       -> filter / language
      too_short        x1  one sentence of 30-40 words (< Gopher's 50; see TOO_SHORT
                           for why not shorter)                                    -> filter / gopher_quality
  text/en.malformed.jsonl   six lines that ingest must reject, one per reason    -> ingest / <reason>
  noise_manifest.json       {"planted": [...]} sorted by id: id, lang, kind, expected_stage,
                            expected_rule, original_id (plus file and line for malformed lines)

The dedup expectations rely on ingest reading <lang>.jsonl before <lang>.noise.jsonl
(sorted file order), so the clean original is the first of its cluster and is the one kept.

Usage:
  python data/sample/make_noise.py           write the files
  python data/sample/make_noise.py --check   write them, then run datatrove's filters (in the
                                             recipe's order) over clean and planted documents
                                             and report what each rule drops
"""
from __future__ import annotations

import datetime as dt
import json
import random
import re
import sys
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEXT = HERE / "text"
MANIFEST = HERE / "noise_manifest.json"
ROOT = HERE.parent.parent  # the project root (data/sample/ -> .)

SEED = "lucie-repro/data/sample/make_noise/v1"
LANGS = ["de", "en", "es", "fr", "it"]  # sorted: the order of every draw below
# wrong_language: each file borrows a clean text from the next language in this ring.
DONOR = {"en": "fr", "fr": "de", "de": "es", "es": "it", "it": "en"}
NEAR_DUP_EDIT_RATE = 0.02
NEAR_DUP_MIN_JACCARD = 0.80
SHINGLE = 5
NOISE_LICENSE = "CC0-1.0"
NOISE_CATEGORY = "web"
FIELDS = ["id", "text", "lang", "source", "category", "license", "url", "date"]
NOISE_SOURCE = "lucie-sample-noise"

EXPECT = {
    "exact_duplicate": ("dedup", "exact"),
    "near_duplicate": ("dedup", "near_duplicate"),
    "spam": ("filter", "gopher_repetition"),
    "blocklisted_url": ("filter", "url"),
    "banned_url_word": ("filter", "url"),
    "wrong_language": ("filter", "language"),
    "too_short": ("filter", "gopher_quality"),
}

SPAM = {
    "en": [
        "Buy now and save up to seventy percent on all of our premium products, today only!",
        "Click here to claim your exclusive free gift before this amazing offer expires tonight!",
        "Stock is limited, so order right away and enjoy free shipping on every single order!",
    ],
    "fr": [
        "Achetez maintenant et économisez jusqu'à soixante-dix pour cent sur tous nos produits haut de gamme, aujourd'hui seulement !",
        "Cliquez ici pour recevoir votre cadeau exclusif et gratuit avant la fin de cette offre incroyable !",
        "Le stock est limité : commandez tout de suite et profitez de la livraison gratuite sur toutes vos commandes !",
    ],
    "de": [
        "Jetzt kaufen und bis zu siebzig Prozent auf alle unsere hochwertigen Produkte sparen, nur noch heute!",
        "Klicken Sie hier, um sich Ihr exklusives Gratisgeschenk zu sichern, bevor dieses unglaubliche Angebot endet!",
        "Nur noch wenige Stück auf Lager, also bestellen Sie sofort und genießen Sie den kostenlosen Versand für jede Bestellung!",
    ],
    "es": [
        "¡Compra ahora y ahorra hasta un setenta por ciento en todos nuestros productos de calidad, solo por hoy!",
        "¡Haz clic aquí para conseguir tu regalo exclusivo y gratuito antes de que termine esta oferta increíble!",
        "¡Las existencias son limitadas, así que haz tu pedido enseguida y disfruta del envío gratuito en todas tus compras!",
    ],
    "it": [
        "Acquista subito e risparmia fino al settanta per cento su tutti i nostri prodotti di qualità, solo per oggi!",
        "Clicca qui per ricevere il tuo regalo esclusivo e gratuito prima che questa offerta incredibile finisca!",
        "Le scorte sono limitate, quindi ordina immediatamente e approfitta della spedizione gratuita su tutti i tuoi acquisti!",
    ],
}
SPAM_REPEATS = 15

# too_short: ONE sentence, but of ~30-40 words, not 10-20. The recipe runs Gopher repetition before
# Gopher quality, and datatrove's top-n-gram check counts an n-gram seen only once as the "top" one:
# any text under ~25 words has its longest 4-gram above 16 % of its characters and is dropped as
# `top_4_gram` (gopher_repetition) before Gopher quality's min_doc_words (50) can see it.
TOO_SHORT = {
    "en": "The small bakery on the corner of our street sells fresh bread, warm croissants and apple pastries "
          "every morning before seven o'clock, and by nine the shelves are usually completely empty again.",
    "fr": "La petite boulangerie au coin de notre rue vend du pain frais, des croissants chauds et des chaussons "
          "aux pommes tous les matins avant sept heures, et vers neuf heures les étagères sont presque toujours vides.",
    "de": "Die kleine Bäckerei an der Ecke unserer Straße verkauft jeden Morgen vor sieben Uhr frisches Brot, warme "
          "Brötchen und Apfeltaschen, und gegen neun Uhr sind die Regale meistens schon wieder völlig leer.",
    "es": "La pequeña panadería de la esquina de nuestra calle vende pan fresco, cruasanes calientes y empanadas de "
          "manzana todas las mañanas antes de las siete, y hacia las nueve las estanterías suelen estar vacías.",
    "it": "La piccola panetteria all'angolo della nostra strada vende pane fresco, cornetti caldi e sfogliatine di "
          "mele ogni mattina prima delle sette, e verso le nove gli scaffali sono quasi sempre completamente vuoti.",
}
TOO_SHORT_WORDS = (30, 40)  # well above the top-n-gram trap (~25) and below min_doc_words (50)

# en.malformed.jsonl: (id, expected ingest reason, raw line without the newline), in file order.
MALFORMED = [
    ("bad-json-001", "malformed_json", b'{"id": "bad-json-001", "text": "unterminated'),
    ("bad-utf8-001", "invalid_utf8", b'{"id": "bad-utf8-001", "text": "caf\xe9 au lait", "lang": "en"}'),
    ("bad-missing-001", "missing_text",
     b'{"id": "bad-missing-001", "lang": "en", "category": "web", "license": "CC0-1.0", '
     b'"url": "https://example.org/lucie-sample/en/malformed/missing-text", "date": "2020-01-01"}'),
    ("bad-type-001", "text_not_string",
     b'{"id": "bad-type-001", "text": 12345, "lang": "en", "category": "web", "license": "CC0-1.0", '
     b'"url": "https://example.org/lucie-sample/en/malformed/number-text", "date": "2020-01-02"}'),
    ("bad-empty-001", "empty_text",
     b'{"id": "bad-empty-001", "text": "   ", "lang": "en", "category": "web", "license": "CC0-1.0", '
     b'"url": "https://example.org/lucie-sample/en/malformed/empty-text", "date": "2020-01-03"}'),
    ("line-6", "not_an_object", b"[1, 2, 3]"),
]
MALFORMED_FILE = "en.malformed.jsonl"


# ----------------------------------------------------------------------------- helpers
def read_clean(lang: str) -> list[dict]:
    with open(TEXT / f"{lang}.jsonl", encoding="utf-8") as f:
        docs = [json.loads(line) for line in f if line.strip()]
    return sorted(docs, key=lambda d: d["id"])


def shingles(text: str, n: int = SHINGLE) -> set[tuple[str, ...]]:
    words = text.lower().split()
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: str, b: str) -> float:
    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


def reverse_paragraphs(text: str) -> str:
    paras = text.split("\n\n")
    assert len(paras) >= 2, "reverse_paragraphs needs a multi-paragraph text"
    return "\n\n".join(reversed(paras))


def near_duplicate(text: str, rng: random.Random) -> tuple[str, float]:
    """Substitute / delete / insert ~2 % of the words; retry (deterministically) until Jaccard >= bound."""
    tokens = re.split(r"(\s+)", text)  # words at even indices, whitespace runs at odd ones
    word_idx = [i for i in range(0, len(tokens), 2) if tokens[i]]
    n_edits = max(2, round(NEAR_DUP_EDIT_RATE * len(word_idx)))
    # edit only words inside a line (single spaces on both sides), so lines and paragraphs survive,
    # and draw substitutes / insertions from the text's own punctuation-free words
    editable = [i for i in word_idx if 0 < i < len(tokens) - 1 and tokens[i - 1] == tokens[i + 1] == " "]
    vocab = sorted({tokens[i] for i in word_idx if re.fullmatch(r"\w+", tokens[i])})
    best = None
    for _ in range(200):
        toks = list(tokens)
        positions = sorted(rng.sample(editable, n_edits), reverse=True)  # right to left: indices stay valid
        for k, pos in enumerate(positions):
            op = ("substitute", "delete", "insert")[k % 3]
            if op == "substitute":
                toks[pos] = rng.choice([w for w in vocab if w != toks[pos]])
            elif op == "delete":
                del toks[pos:pos + 2]  # the word and the whitespace after it
            else:
                toks[pos:pos] = [rng.choice(vocab), " "]
        candidate = "".join(toks)
        score = jaccard(text, candidate)
        if candidate != text and score >= NEAR_DUP_MIN_JACCARD:
            best = (candidate, score)
            break
    assert best is not None, "no near-duplicate with Jaccard >= bound after 200 draws"
    return best


def random_date(rng: random.Random) -> str:
    start, end = dt.date(2011, 1, 1), dt.date(2023, 12, 31)
    return (start + dt.timedelta(days=rng.randrange((end - start).days + 1))).isoformat()


def datatrove_assets() -> Path:
    import datatrove

    return Path(datatrove.__file__).resolve().parent / "assets"


def _normalize(text: str) -> str:  # datatrove.pipeline.filters.url_filter.normalize
    return re.sub(r"[^a-zA-Z0-9]+", "", text).lower()


def _word_list(name: str) -> set[str]:
    with open(datatrove_assets() / name, encoding="utf-8") as f:
        return {_normalize(x) for x in f if x.strip() and x[0] != "#"}


def _url_words_clean(url: str) -> bool:
    """True iff no banned word, banned subword or soft-banned word (datatrove's lists) is in the url."""
    words = set(re.split(r"[^a-zA-Z0-9]+", url))
    flat = _normalize(url)
    return (not words & _word_list("banned_words.txt")
            and not words & _word_list("soft_banned_words.txt")
            and not any(s and s in flat for s in _word_list("banned_subwords.txt")))


def pick_blocklisted_domain() -> str:
    """First domain, in sorted order, of datatrove's bundled blocklist that is a plain registered domain.

    Plain: one label of ASCII letters under a one-label public suffix (e.g. 'abc.com'), equal to its
    own registered domain per tldextract's bundled suffix list, and with no banned word or subword in
    it, so that the URL rule can only fire on the domain itself.
    """
    from tldextract import TLDExtract

    with tarfile.open(datatrove_assets() / "url_filterblacklistsv0_3_0.tar.gz", "r:gz") as tar:
        raw = tar.extractfile("domains").read().decode("utf-8", "replace")
    plain = re.compile(r"^[a-z]+\.[a-z]+$")
    candidates = sorted({d.strip() for d in raw.splitlines() if plain.match(d.strip())})
    ex = TLDExtract(suffix_list_urls=())
    for d in candidates:
        info = ex(d)
        registered = f"{info.domain}.{info.suffix}" if info.domain and info.suffix else ""
        if registered == d and _url_words_clean(f"https://{d}/"):
            return d
    raise RuntimeError("no plain registered domain in datatrove's URL blocklist")


def pick_banned_word() -> str:
    """First word, in sorted order, of datatrove's banned_words.txt that is plain lowercase letters."""
    with open(datatrove_assets() / "banned_words.txt", encoding="utf-8") as f:
        words = sorted({w.strip() for w in f if w.strip() and w[0] != "#"})
    return next(w for w in words if re.fullmatch(r"[a-z]+", w))


def dump(rec: dict) -> str:
    return json.dumps({k: rec[k] for k in FIELDS}, ensure_ascii=False)


# ----------------------------------------------------------------------------- build
def build() -> tuple[dict[str, list[dict]], list[dict]]:
    clean = {lang: read_clean(lang) for lang in LANGS}
    domain, banned = pick_blocklisted_domain(), pick_banned_word()

    # Per language: 6 distinct originals for its own noise + 1 donated to another file's wrong_language.
    picks = {}
    for lang in LANGS:
        pool = [d for d in clean[lang] if len(d["text"].split("\n\n")) >= 2]
        picks[lang] = random.Random(f"{SEED}:{lang}:pick").sample(pool, 7)

    noise, manifest = {}, []
    for lang in LANGS:
        rng = random.Random(f"{SEED}:{lang}:make")
        exact1, exact2, near1, near2, blocked, banned_doc, _donated = picks[lang]
        donor = picks[DONOR[lang]][6]
        base = f"https://example.org/lucie-sample/{lang}/noise"
        docs = []

        def add(kind, text, url, original=None):
            nid = f"{lang}-noise-{len(docs) + 1:03d}"
            if kind in ("exact_duplicate", "near_duplicate"):
                # dedup keeps a cluster's smallest id: a copy's id extends its original's, so it sorts after it
                nid = f"{original['id']}-{'copy' if kind == 'exact_duplicate' else 'edit'}"
            docs.append({"id": nid, "text": text, "lang": lang, "source": NOISE_SOURCE, "category": NOISE_CATEGORY,
                         "license": NOISE_LICENSE, "url": url, "date": random_date(rng)})
            stage_, rule = EXPECT[kind]
            manifest.append({"id": nid, "lang": lang, "kind": kind, "expected_stage": stage_,
                             "expected_rule": rule, "original_id": original["id"] if original else None})

        for orig in (exact1, exact2):
            add("exact_duplicate", orig["text"], f"https://mirror.example.net/{lang}/copy/{orig['id']}", orig)
        for orig in (near1, near2):
            text, score = near_duplicate(orig["text"], rng)
            assert score >= NEAR_DUP_MIN_JACCARD and text != orig["text"]
            add("near_duplicate", text, f"https://reposts.example.net/{lang}/edited/{orig['id']}", orig)
        spam = "\n\n".join([" ".join(SPAM[lang])] * SPAM_REPEATS)
        add("spam", spam, f"{base}/promo-{lang}")
        add("blocklisted_url", reverse_paragraphs(blocked["text"]),
            f"https://{domain}/lucie-sample/{lang}/{blocked['id']}", blocked)
        add("banned_url_word", reverse_paragraphs(banned_doc["text"]),
            f"https://example.org/{banned}/lucie-sample/{lang}/{banned_doc['id']}", banned_doc)
        add("wrong_language", reverse_paragraphs(donor["text"]), f"{base}/borrowed-{donor['id']}", donor)
        n_words = len(TOO_SHORT[lang].split())
        assert TOO_SHORT_WORDS[0] <= n_words <= TOO_SHORT_WORDS[1], (lang, n_words)
        add("too_short", TOO_SHORT[lang], f"{base}/short-{lang}")
        for d in docs[2:]:  # nothing but the exact duplicates may repeat a clean text verbatim
            assert all(d["text"] != c["text"] for c in clean[lang]), d["id"]
        noise[lang] = docs

    for n, (mid, reason, _raw) in enumerate(MALFORMED, 1):
        manifest.append({"id": mid, "lang": "en", "kind": "malformed", "expected_stage": "ingest",
                         "expected_rule": reason, "original_id": None, "file": MALFORMED_FILE, "line": n})
    manifest.sort(key=lambda m: m["id"])
    assert len({m["id"] for m in manifest}) == len(manifest)
    return noise, manifest


def write(noise: dict[str, list[dict]], manifest: list[dict]) -> list[Path]:
    written = []
    for lang in LANGS:
        path = TEXT / f"{lang}.noise.jsonl"
        path.write_text("".join(dump(d) + "\n" for d in noise[lang]), encoding="utf-8")
        written.append(path)
    path = TEXT / MALFORMED_FILE
    with open(path, "wb") as f:
        for _id, _reason, raw in MALFORMED:
            f.write(raw + b"\n")
    written.append(path)
    MANIFEST.write_text(json.dumps({"planted": manifest}, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    written.append(MANIFEST)
    return written


# ----------------------------------------------------------------------------- --check
def check(noise: dict[str, list[dict]], manifest: list[dict]) -> bool:
    """Run datatrove's filters in the recipe's order over clean and planted docs; report every drop."""
    from datatrove.data import Document
    from datatrove.pipeline.filters import C4QualityFilter, GopherQualityFilter, GopherRepetitionFilter, URLFilter
    from datatrove.utils.lid import FT176LID
    from fasttext.FastText import _FastText
    from tldextract import TLDExtract

    dt_lang = {"en": "eng", "fr": "fra", "de": "deu", "es": "spa", "it": "ita"}
    url = URLFilter()
    url.tldextractor = TLDExtract(suffix_list_urls=())
    lid = FT176LID()
    lid._model = _FastText(str(ROOT / "assets" / "lid" / "lid.176.ftz"))

    def language(doc):
        (top, score), _ = lid.predict(doc)
        if top != doc.metadata["lang"]:
            return False, f"predicted {top} ({score:.2f}), declared {doc.metadata['lang']}"
        return True if score >= 0.65 else (False, f"score {score:.2f} < 0.65")

    def chain(lang):
        dl = dt_lang[lang]
        return [("url", url.filter), ("language", language),
                ("gopher_repetition", GopherRepetitionFilter(language=dl).filter),
                ("gopher_quality", GopherQualityFilter(min_stop_words=None, max_non_alpha_words_ratio=0.7,
                                                       language=dl).filter),
                ("c4", C4QualityFilter(filter_no_terminal_punct=False, min_num_sentences=3, language=dl).filter)]

    def decide(rules, rec):
        d = Document(text=rec["text"], id=rec["id"], metadata={"url": rec["url"], "lang": rec["lang"]})
        for name, fn in rules:
            verdict = fn(d)
            if verdict is not True:
                return name, verdict[1] if isinstance(verdict, tuple) else "rejected"
        return None, None

    expected = {m["id"]: m for m in manifest}
    ok = True
    for lang in LANGS:
        rules = chain(lang)
        clean = read_clean(lang)
        by_id = {d["id"]: d for d in clean}
        print(f"== {lang}")
        for rec in noise[lang]:
            m = expected[rec["id"]]
            rule, detail = decide(rules, rec)
            extra = ""
            if m["kind"] == "exact_duplicate":
                good = rule is None and rec["text"] == by_id[m["original_id"]]["text"]
                extra = f" byte-identical={rec['text'] == by_id[m['original_id']]['text']}"
            elif m["kind"] == "near_duplicate":
                jac = jaccard(by_id[m["original_id"]]["text"], rec["text"])
                good = rule is None and jac >= NEAR_DUP_MIN_JACCARD
                extra = f" jaccard5={jac:.3f}"
            else:
                good = rule == m["expected_rule"]
            ok &= good
            fate = f"dropped by {rule} ({detail})" if rule else "passes filters"
            print(f"  {'ok ' if good else 'BAD'} {rec['id']:<15} {m['kind']:<16} {fate}{extra}")
        drops = [(d["id"], *decide(rules, d)) for d in clean]
        drops = [x for x in drops if x[1]]
        print(f"  clean: {len(clean)} docs, {len(drops)} dropped")
        for did, rule, detail in drops:
            print(f"    {did}: {rule} ({detail})")
    print("check:", "PASS" if ok else "FAIL")
    return ok


def main() -> None:
    noise, manifest = build()
    for path in write(noise, manifest):
        print(f"wrote {path.relative_to(ROOT)}")
    if "--check" in sys.argv[1:] and not check(noise, manifest):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
