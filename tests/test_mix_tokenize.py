"""mix: Lucie's epoch semantics, an order that depends on nothing but (seed, documents),
chronological curriculum, disjoint splits. tokenizer: Lucie's id layout and byte fallback.
tokenize: packed samples whose index accounts for every token in stream order."""
from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from stages.core import files
from stages import mix
from stages.lib import mixing
from stages.lib import split as train_valid
from stages import tokenize
from stages.lib import tokens as token_shards
from stages import tokenizer
from stages.core.params import Mix
from stages.core.runtime import StageError

PROJECT = Path(__file__).resolve().parent.parent
SAMPLE = PROJECT / "data" / "sample" / "text"


def doc(id_, source="s", lang="en", category="web", date="2020-01-01", text=None):
    return {"id": id_, "text": text or f"text of {id_}", "lang": lang, "source": source, "category": category,
            "license": "CC0-1.0", "url": "", "date": date, "meta": "{}"}


def ids(stream):
    return [(d["id"], e) for d, e in stream]


# ---------------------------------------------------------------- mixing.schedule
@pytest.mark.parametrize("n", [3, 4, 5, 10])
def test_fractional_epochs(n):
    docs = [doc(f"w{i:02d}", source="web", category="web") for i in range(n)]
    p = Mix(weights={"en--web": 2.5})
    stream = mixing.schedule(docs, p, seed=1, chronological=False)
    # Two full passes plus round(0.5 * n) documents of a third one (Python's round: half to even).
    assert len(stream) == 2 * n + round(0.5 * n)
    per_epoch = Counter(e for _, e in stream)
    assert per_epoch == Counter({0: n, 1: n, 2: round(0.5 * n)})
    # Inside an epoch a document appears at most once; full epochs see every document.
    for epoch in (0, 1, 2):
        seen = [d["id"] for d, e in stream if e == epoch]
        assert len(seen) == len(set(seen))
    assert {d["id"] for d, e in stream if e == 0} == {d["id"] for d in docs}


def test_weight_zero_and_defaults():
    docs = ([doc(f"w{i}", source="web", category="web") for i in range(6)]
            + [doc(f"k{i}", source="wiki", category="wiki") for i in range(4)]
            + [doc(f"b{i}", source="books", category="book") for i in range(4)]
            + [doc(f"f{i}", source="fr", lang="fr", category="web") for i in range(4)])
    p = Mix(weights={"en--web": 0, "en--wiki": 1, "en--book": 0.5}, default_epochs=2, lang_weights={"fr": 1.5})
    counts = Counter(d["source"] for d, _ in mixing.schedule(docs, p, seed=7, chronological=True))
    assert "web" not in counts  # weight 0: none at all
    assert counts["wiki"] == 4
    assert counts["books"] == 2  # half an epoch
    assert counts["fr"] == 12  # default 2 epochs x lang weight 1.5 = 3 epochs


def test_mix_epochs_for():
    p = Mix(weights={"fr--web": 2}, default_epochs=0.5, lang_weights={"fr": 1.5, "other": 3})
    assert mixing.epochs_for(p, "fr", "web") == 3
    assert mixing.epochs_for(p, "fr", "book") == 0.75
    assert mixing.epochs_for(p, "de", "web") == 1.5


def _corpus():
    docs = []
    for s, lang, cat in (("en-web", "en", "web"), ("fr-wiki", "fr", "wiki"), ("code", "code", "programming")):
        for i in range(12):
            docs.append(doc(f"{s}-{i:02d}", source=s, lang=lang, category=cat, date=f"{2010 + (i * 7) % 13}-06-01"))
    return docs


@pytest.mark.parametrize("chronological", [True, False])
def test_stream_is_independent_of_input_order(chronological):
    docs = _corpus()
    p = Mix(weights={"en--web": 1.5, "fr--wiki": 3, "code--programming": 0.5})
    ref = ids(mixing.schedule(docs, p, seed=42, chronological=chronological))
    for k in range(3):
        shuffled = docs[:]
        random.Random(k).shuffle(shuffled)
        assert ids(mixing.schedule(shuffled, p, seed=42, chronological=chronological)) == ref
    # ...but it does depend on the seed.
    assert ids(mixing.schedule(docs, p, seed=43, chronological=chronological)) != ref


def test_chronological_order_inside_a_source():
    docs = _corpus()
    p = Mix(weights={"en--web": 1.5, "fr--wiki": 3, "code--programming": 0.5})
    chrono = mixing.schedule(docs, p, seed=42, chronological=True)
    plain = mixing.schedule(docs, p, seed=42, chronological=False)
    assert Counter(ids(chrono)) == Counter(ids(plain))  # same multiset, only reordered
    # Each source keeps the slots it had in the blend...
    assert [d["source"] for d, _ in chrono] == [d["source"] for d, _ in plain]
    # ...and inside them runs epoch by epoch, older years first.
    for source in {d["source"] for d in docs}:
        keys = [(e, mixing.year(d)) for d, e in chrono if d["source"] == source]
        assert keys == sorted(keys), source
    # The blend interleaves sources (it is not source after source).
    srcs = [d["source"] for d, _ in chrono]
    assert sum(a != b for a, b in zip(srcs, srcs[1:])) > 10


def test_year():
    assert mixing.year({"date": "2014-03-01"}) == 2014
    assert mixing.year({"date": ""}) == 0
    assert mixing.year({"date": "n/a"}) == 0


def test_mix_run_splits_are_disjoint(make_ctx, tmp_path):
    docs = _corpus()
    d = tmp_path / "data/dedup"
    d.mkdir(parents=True)
    files.write_manifest(d, files.write_docs(d, docs))
    ctx = make_ctx("mix", {"mix.valid_fraction": 0.25, "mix.weights": {"en--web": 2, "fr--wiki": 1}, "mix.default_epochs": 1,
                           "annealing.weights": {"fr--wiki": 1, "code--programming": 1}})
    with pytest.raises(StageError, match="run the tokenizer stage first"):
        mix.run(ctx)
    tokenizer.run(ctx)  # trained on the train split of data/dedup, before the mix
    mix.run(ctx)

    train = list(files.read_docs(tmp_path / "data/mixed/train"))
    valid = list(files.read_docs(tmp_path / "data/mixed/valid"))
    train_ids, valid_ids = {x["id"] for x in train}, {x["id"] for x in valid}
    assert valid_ids and train_ids
    assert not train_ids & valid_ids
    assert train_ids | valid_ids == {x["id"] for x in docs}
    assert len(valid) == len(valid_ids)  # valid is never upsampled
    assert [x["id"] for x in valid] == sorted(valid_ids)
    for x in valid:
        assert train_valid.is_valid(ctx.params.seed, x["id"], 0.25)
    # The written train stream is schedule() of the train documents, with the epoch in meta.
    expected = mixing.schedule([x for x in docs if x["id"] in train_ids], ctx.params.mix, ctx.params.seed, True)
    assert [(x["id"], json.loads(x["meta"])["mix_epoch"]) for x in train] == ids(expected)
    m = files.read_json(tmp_path / "metrics/mix.json")
    assert m["train_docs"] + m["valid_docs"] == m["docs_in"] == len(docs)
    assert m["train_stream_docs"] == len(train)
    # tokens, as Lucie's tables count them: the text's tokens (no BOS/EOS) with the trained tokenizer
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tmp_path / "artifacts/tokenizer/tokenizer.json"))
    n = {x["id"]: len(tok.encode(x["text"], add_special_tokens=False).ids) for x in docs}
    for stage_rows, key in ((train, "after_upsampling"), ([x for x in docs if x["id"] in train_ids], "before_upsampling")):
        for lang in {x["lang"] for x in stage_rows}:
            assert m[key]["by_lang"][lang]["tokens"] == sum(n[x["id"]] for x in stage_rows if x["lang"] == lang)
    assert m["train_stream_tokens"] == sum(n[x["id"]] for x in train)
    assert m["after_upsampling"]["by_lang"]["en"]["tokens"] > m["before_upsampling"]["by_lang"]["en"]["tokens"]  # 2 epochs
    assert sum(m["token_share_after"].values()) == pytest.approx(1, abs=1e-3)
    # The later phases' streams hold train documents only (tests/test_phases.py checks their weights).
    for phase in ("extension", "annealing"):
        rows = list(files.read_docs(tmp_path / "data/mixed" / phase))
        assert rows and {x["id"] for x in rows} <= train_ids and m[phase]["stream_docs"] == len(rows)


# ---------------------------------------------------------------- tokenizer
def sample_texts(per_file: int = 8) -> list[str]:
    texts = []
    for name in ("en.jsonl", "fr.jsonl", "de.jsonl", "es.jsonl", "it.jsonl", "code.jsonl"):
        with open(SAMPLE / name, encoding="utf-8") as f:
            texts += [json.loads(line)["text"] for line in f][:per_file]
    return texts


@pytest.fixture(scope="module")
def tok():
    return tokenizer.train(sample_texts(), vocab_size=500, min_frequency=2)


def test_tokenizer_id_layout(tok):
    assert tok.get_vocab_size() == 500
    for i, s in enumerate(["<s>", "</s>", "<unk>", "<pad>"]):
        assert tok.token_to_id(s) == i
        assert tok.id_to_token(i) == s
    assert tok.token_to_id("<0x00>") == 4
    assert tok.token_to_id("<0xFF>") == 259
    assert [tok.token_to_id(f"<0x{b:02X}>") for b in range(256)] == list(range(4, 260))
    # Reserved slots as in Lucie's file; the instruct tokenizer turns 265-267 into the chat markers (test_align).
    assert [tok.token_to_id(f"<unused{i}>") for i in range(40)] == list(range(260, 300))
    assert tok.token_to_id("<|eot_id|>") is None
    # Only the 4 specials are "added tokens" (so byte tokens survive skip_special_tokens).
    added = {t["content"] for t in json.loads(tok.to_str())["added_tokens"]}
    assert added == {"<s>", "</s>", "<unk>", "<pad>"}


@pytest.mark.parametrize("text", [
    "Bonjour le monde 🦜 — ǂʘ ∮ «naïve» 1234",
    "Ünïcödé 𝔘 and 中文, tabs\tand\nnewlines",
    "x = f(y) ** 2  # comment with emoji 🚀",
])
def test_byte_fallback_round_trip(tok, text):
    enc = tok.encode(text, add_special_tokens=False)
    assert tok.token_to_id("<unk>") not in enc.ids
    assert any(t.startswith("<0x") for t in enc.tokens)  # rare characters went to bytes
    assert tok.decode(enc.ids) == text


def test_digits_split_and_bos(tok):
    enc = tok.encode("in 2024")
    assert enc.ids[0] == 0  # <s>
    assert [t for t in enc.tokens if t.strip("▁").isdigit()] == ["2", "0", "2", "4"]


def test_save_hf_loads_in_transformers(tok, tmp_path):
    from transformers import PreTrainedTokenizerFast

    tokenizer.save_hf(tok, tmp_path)
    hf = PreTrainedTokenizerFast.from_pretrained(str(tmp_path))
    assert (hf.bos_token_id, hf.eos_token_id, hf.unk_token_id, hf.pad_token_id) == (0, 1, 2, 3)
    ids_ = hf("Un perroquet 🦜")["input_ids"]
    assert ids_[0] == 0
    assert hf.decode(ids_, skip_special_tokens=True) == "Un perroquet 🦜"


# ---------------------------------------------------------------- tokenize.pack
def stream_docs() -> list[dict]:
    texts = sample_texts(per_file=2)
    docs = [doc(f"d{i:02d}", text=t) for i, t in enumerate(texts)]
    docs.insert(3, doc("tiny", text="Oui."))  # shorter than one sample
    docs.append(docs[0])  # an upsampled repeat later in the stream
    return docs


def read_index(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


@pytest.mark.parametrize("append_eos", [True, False])
def test_pack_layout_and_index(tok, tmp_path, append_eos):
    seq_len = 64
    docs = stream_docs()
    counts = tokenize.pack(iter(docs), tok, seq_len, append_eos, tmp_path)

    encoded = [tok.encode(d["text"], add_special_tokens=False).ids + ([1] if append_eos else []) for d in docs]
    flat = [t for e in encoded for t in e]
    n = len(flat) // seq_len
    assert counts["samples"] == n > 5
    assert counts["tokens"] == len(flat)
    assert counts["docs"] == len(docs)
    assert counts["tail_tokens_dropped"] == len(flat) - n * seq_len
    assert counts["dtype"] == "uint16"

    raw = np.fromfile(tmp_path / "tokens.bin", dtype=np.uint16)
    assert raw.size == n * seq_len
    arr = raw.reshape(n, seq_len)
    assert raw.tolist() == flat[: n * seq_len]

    index = read_index(tmp_path / "index.parquet")
    by_sample: dict[int, list[dict]] = {}
    for row in index:
        by_sample.setdefault(row["sample"], []).append(row)
    assert sorted(by_sample) == list(range(n))
    for s, rows in by_sample.items():
        rows.sort(key=lambda r: r["sample_token_start"])
        assert sum(r["length"] for r in rows) == seq_len
        pos = 0
        for r in rows:
            assert r["sample_token_start"] == pos and r["length"] > 0
            pos += r["length"]

    # Walk the index in order: it names the stream's documents in order, each segment holding
    # exactly that document's tokens.
    rows = sorted(index, key=lambda r: (r["sample"], r["sample_token_start"]))
    k, expected_start = 0, 0
    for r in rows:
        if r["doc_token_start"] == 0 and expected_start != 0:  # the previous document ended
            assert expected_start == len(encoded[k])
            k, expected_start = k + 1, 0
        assert r["doc_id"] == docs[k]["id"]
        assert r["doc_token_start"] == expected_start
        seg = arr[r["sample"], r["sample_token_start"] : r["sample_token_start"] + r["length"]].tolist()
        assert seg == encoded[k][r["doc_token_start"] : r["doc_token_start"] + r["length"]]
        expected_start += r["length"]
    seen = [r["doc_id"] for r in rows if r["doc_token_start"] == 0]
    assert seen == [d["id"] for d in docs[: len(seen)]]
    assert "tiny" in seen


def test_pack_eos_closes_every_document(tok, tmp_path):
    docs = stream_docs()
    counts = tokenize.pack(iter(docs), tok, 32, True, tmp_path)
    arr = np.fromfile(tmp_path / "tokens.bin", dtype=np.uint16)
    assert counts["samples"] * 32 == arr.size
    length = {d["id"]: len(tok.encode(d["text"], add_special_tokens=False).ids) + 1 for d in docs}
    # Every EOS in the packed tokens closes a document (the texts never contain "</s>").
    ends = [r for r in read_index(tmp_path / "index.parquet") if r["doc_token_start"] + r["length"] == length[r["doc_id"]]]
    assert int((arr == 1).sum()) == len(ends) > 0
    for r in ends:
        assert arr[r["sample"] * 32 + r["sample_token_start"] + r["length"] - 1] == 1


def test_tokenize_run_and_load_tokens(tok, make_ctx, tmp_path):
    tok_dir = tmp_path / "artifacts/tokenizer"
    tok_dir.mkdir(parents=True)
    tok.save(str(tok_dir / "tokenizer.json"))
    docs = stream_docs()
    for split, rows in (("train", docs), ("valid", docs[:1]), ("extension", docs[1:]), ("annealing", docs[:2])):
        d = tmp_path / "data/mixed" / split
        d.mkdir(parents=True)
        files.write_manifest(d, files.write_docs(d, rows))
    ctx = make_ctx("tokenize", {"tokenize.seq_len": 48})
    tokenize.run(ctx)

    train = token_shards.load_tokens(tmp_path / "data/tokens/train")
    m = files.read_json(tmp_path / "data/tokens/train/manifest.json")
    assert train.shape == (m["samples"], 48) and m["samples"] > 0
    assert m["tokenizer_sha256"] == files.sha256_file(tok_dir / "tokenizer.json")
    for f in m["files"]:
        assert files.sha256_file(tmp_path / "data/tokens/train" / f["path"]) == f["sha256"]
    valid = token_shards.load_tokens(tmp_path / "data/tokens/valid")
    assert valid.shape[1] == 48
    metrics = files.read_json(tmp_path / "metrics/tokenize.json")
    assert metrics["train"]["samples"] == m["samples"]
    assert metrics["train"]["tokens"] == metrics["train"]["samples"] * 48 + metrics["train"]["tail_tokens_dropped"]
    # The later phases: their own stream, at their own sample length; valid = the held-out documents again.
    ext = files.read_json(tmp_path / "data/tokens/extension/train/manifest.json")
    assert ext["seq_len"] == ctx.params.extension.seq_len and ext["docs"] == len(docs) - 1
    assert token_shards.load_tokens(tmp_path / "data/tokens/annealing/valid").shape[1] == ctx.params.annealing.seq_len
    assert metrics["annealing/train"]["docs"] == 2 and metrics["extension/valid"]["docs"] == 1


def test_source_weights_multiply_the_epochs_of_one_source():
    from stages.lib.mixing import schedule
    from stages.core.params import Mix

    docs = [{"id": f"{s}-{i}", "text": "t", "lang": "en", "category": "web", "source": s, "date": "2020-01-01",
             "meta": "{}"} for s in ("a", "b") for i in range(10)]
    stream = schedule(docs, Mix(weights={"en--web": 1}, source_weights={"a": 2.0, "b": 0.5}), 1, True)
    counts = {s: sum(d["source"] == s for d, _ in stream) for s in ("a", "b")}
    assert counts == {"a": 20, "b": 5}


def test_a_weight_key_that_matches_no_group_is_an_error(make_ctx, tmp_path):
    import pytest

    from stages.core import files
    from stages import mix
    from stages.core.runtime import StageError

    ctx = make_ctx("mix", {"mix.weights": {"en--wbe": 2}})
    d = tmp_path / "data/dedup"
    d.mkdir(parents=True)
    rows = [{"id": "x", "text": "t", "lang": "en", "source": "s", "category": "web", "license": "CC0-1.0",
             "url": "", "date": "", "meta": "{}"}]
    files.write_manifest(d, files.write_docs(d, rows))
    with pytest.raises(StageError, match="en--wbe"):
        mix.run(ctx)
