"""Lucie's three phases: the extension and annealing mixes (measured on the streams they produce) and the
phase transitions (fresh optimizer, RoPE theta and context length, LR shapes, revision names across phases,
inspect-batch per phase, a disabled phase passing weights through).

The training part runs main (8 steps), extension and annealing (4 steps each) of a 2-layer model in-process:
a few seconds."""
from __future__ import annotations

import json
import random
import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch

from pretrain_data import make_repo, sample_docs, write_tokens
from stages import mix
from stages.lib import mixing, phases
from stages import tokenizer
from stages.core import tracking
from stages import pretrain as pt
from stages.lib.training import schedule
from stages.lib.training import steplog
from stages.core.params import Annealing, Extension, Mix, load
from stages.core.runtime import StageContext, StageError

PHASE = {"steps": 4, "seq_len": 64, "micro_batch_size": 4, "global_batch_size": 4, "export_every": 2,
         "checkpoint_every": 1}


def doc(id_, lang="en", category="web", source="s", date="2020-01-01", n_words=100):
    return {"id": id_, "text": " ".join(["w"] * n_words), "lang": lang, "source": source, "category": category,
            "license": "CC0-1.0", "url": "", "date": date, "meta": "{}"}


# The phase mixes weigh documents by a size the stage gives in tokens; these tests count words (the weighting
# logic does not depend on the unit, and word counts keep the expected numbers readable).
SIZE = mixing.words


def ext(**kw) -> Extension:
    return Extension(**{"steps": 1, "seq_len": 64, "lr": 1e-4, "micro_batch_size": 1, "long_doc_min_tokens": 200, **kw})


def counts(stream) -> Counter:
    return Counter(d["id"] for d, _ in stream)


def weight(stream, pred=lambda d: True) -> int:
    """words x occurrences: what a stream gives to the documents `pred` selects."""
    return sum(mixing.words(d) for d, _ in stream if pred(d))


# ---------------------------------------------------------------- extension mix
def test_recent_web_keeps_each_languages_newest_year_with_its_whole_web_weight():
    docs = ([doc(f"en{y}-{i}", date=f"{y}-05-01") for y in (2020, 2021) for i in range(4)]
            + [doc(f"en2022-{i}", date="2022-05-01") for i in range(2)]
            + [doc(f"fr{y}-{i}", lang="fr", date=f"{y}-01-01") for y in (2019, 2023) for i in range(3)]
            + [doc(f"wiki{i}", category="wiki", date="2010-01-01") for i in range(3)])
    p = Mix(weights={"en--web": 1, "fr--web": 1, "en--wiki": 2})
    main = mixing.schedule(docs, p, 1, True)
    stream = mixing.blend(mixing.extension_groups(docs, p, ext(), SIZE), 1, True, phase="extension")
    web = {(d["lang"], mixing.year(d)) for d, _ in stream if d["category"] == "web"}
    assert web == {("en", 2022), ("fr", 2023)}
    c = counts(stream)
    assert all(c[f"en2022-{i}"] == 5 for i in range(2))  # 10 en web docs' weight on 2 recent ones
    assert all(c[f"fr2023-{i}"] == 2 for i in range(3))
    for lang in ("en", "fr"):  # each language's web share is the main phase's
        sel = lambda d: d["lang"] == lang and d["category"] == "web"  # noqa: E731
        assert weight(stream, sel) == weight(main, sel)
    assert all(c[f"wiki{i}"] == 2 for i in range(3))  # other categories: every year, main-phase epochs
    off = mixing.blend(mixing.extension_groups(docs, p, ext(recent_web=False), SIZE), 1, True, phase="extension")
    assert {mixing.year(d) for d, _ in off if d["lang"] == "en" and d["category"] == "web"} == {2020, 2021, 2022}


def test_long_documents_weigh_ten_times_the_short_ones_inside_a_source_group():
    # 9 short docs of 100 words + 1 long of 300, 3.25 epochs: 3,900 words x epochs in the main phase.
    # Extension: short / (short + 10 long) = 900 / 3,900 of the group -> each short doc once, the long one 10 times.
    docs = [doc(f"s{i}", category="wiki") for i in range(9)] + [doc("long", category="wiki", n_words=300)]
    p = Mix(weights={"en--wiki": 3.25})
    stream = mixing.blend(mixing.extension_groups(docs, p, ext(long_doc_min_tokens=200), SIZE), 7, True, phase="extension")
    c = counts(stream)
    assert c["long"] == 10 and all(c[f"s{i}"] == 1 for i in range(9))
    assert weight(stream) == 3.25 * (900 + 300)  # the group keeps its main-phase words x epochs
    long_words = weight(stream, lambda d: d["id"] == "long") / 300
    short_words = weight(stream, lambda d: d["id"] != "long") / 900
    assert long_words / short_words == pytest.approx(10)  # per word of each class, measured on the stream
    # Weighting is per source group: another source's documents do not change this group's weights.
    more = docs + [doc(f"o{i}", category="wiki", source="other", n_words=500) for i in range(3)]
    again = counts(mixing.blend(mixing.extension_groups(more, p, ext(long_doc_min_tokens=200), SIZE), 7, True, "extension"))
    assert again["long"] == 10 and again["s0"] == 1
    assert sum(again[f"o{i}"] for i in range(3)) == 3 * 3 + round(0.25 * 3)  # all long: its 3.25 epochs, unchanged


def test_phase_streams_have_their_own_order_and_depend_only_on_the_documents():
    docs = [doc(f"d{i:02d}", category="wiki", date=f"{2010 + i % 5}-01-01") for i in range(20)]
    p = Mix(weights={"en--wiki": 2})
    groups = mixing.extension_groups(docs, p, ext(long_doc_min_tokens=1000), SIZE)
    a = [(d["id"], e) for d, e in mixing.blend(groups, 3, False, phase="extension")]
    shuffled = docs[:]
    random.Random(0).shuffle(shuffled)
    b = [(d["id"], e) for d, e in mixing.blend(mixing.extension_groups(shuffled, p, ext(long_doc_min_tokens=1000), SIZE),
                                            3, False, phase="extension")]
    main = [(d["id"], e) for d, e in mixing.schedule(docs, p, 3, False)]
    assert a == b and sorted(a) == sorted(main) and a != main


# ---------------------------------------------------------------- annealing mix
def test_annealing_shares_are_the_params_and_no_document_repeats():
    docs = ([doc(f"c{i}", lang="code", category="programming", n_words=150) for i in range(40)]
            + [doc(f"w{i}", category="wiki", n_words=100) for i in range(10)]
            + [doc(f"b{i}", lang="fr", category="book", source="fb", n_words=200) for i in range(30)]
            + [doc(f"x{i}", category="web", n_words=100) for i in range(50)])  # not in the weights: left out
    ann = Annealing(steps=1, seq_len=64, lr=1e-4, micro_batch_size=1,
                    weights={"code--programming": 3, "en--wiki": 1, "fr--book": 1})  # shares: 0.6, 0.2, 0.2
    stream = mixing.blend(mixing.annealing_groups(docs, ann, SIZE), 1, True, phase="annealing")
    c = counts(stream)
    assert max(c.values()) == 1 and not any(k.startswith("x") for k in c)
    assert all(c[f"w{i}"] == 1 for i in range(10))  # the scarcest group (words / share) is used exactly once
    total = weight(stream)
    shares = {k: weight(stream, lambda d, k=k: d["id"][0] == k) / total for k in "cwb"}
    assert shares == pytest.approx({"c": 0.6, "w": 0.2, "b": 0.2}, abs=0.01)
    with pytest.raises(StageError, match="en--math"):
        mixing.annealing_groups(docs, ann.model_copy(update={"weights": {"en--math": 1, "en--wiki": 1}}), SIZE)


def test_mix_stage_writes_the_phase_streams_and_their_metrics(make_ctx, tmp_path):
    from stages.core import files

    rows = ([doc(f"en-web-{y}-{i}", date=f"{y}-01-01", n_words=120 + 50 * i) for y in (2022, 2023) for i in range(4)]
            + [doc(f"en-wiki-{i}", category="wiki", n_words=300) for i in range(6)]
            + [doc(f"fr-wiki-{i}", lang="fr", category="wiki", n_words=100) for i in range(6)])
    d = tmp_path / "data/dedup"
    d.mkdir(parents=True)
    files.write_manifest(d, files.write_docs(d, rows))
    keys = {"mix.weights": {"en--web": 1, "en--wiki": 1, "fr--wiki": 1}, "mix.valid_fraction": 0.0,
            "annealing.weights": {"en--wiki": 1, "fr--wiki": 1}}
    tokenizer.run(make_ctx("tokenizer", keys))
    # "long" between the shortest and the longest 2023 web document, in the trained tokenizer's tokens
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tmp_path / "artifacts/tokenizer/tokenizer.json"))
    n = sorted(len(tok.encode(r["text"], add_special_tokens=False).ids) for r in rows if r["id"].startswith("en-web-2023"))
    assert n[0] < n[-1]
    ctx = make_ctx("mix", {**keys, "extension.long_doc_min_tokens": n[-1]})
    mix.run(ctx)
    out = {s: list(files.read_docs(tmp_path / "data/mixed" / s)) for s in ("train", "extension", "annealing")}
    assert {mixing.year(r) for r in out["extension"] if r["category"] == "web"} == {2023}
    m = files.read_json(tmp_path / "metrics/mix.json")
    assert m["extension"]["stream_docs"] == len(out["extension"]) and m["annealing"]["stream_docs"] == len(out["annealing"])
    assert m["annealing"]["token_share"] == pytest.approx({"en": 0.5, "fr": 0.5}, abs=0.05)
    assert 0 < m["extension"]["long_doc_token_share"] < 1 and set(m["extension"]["by_source"]) == {"s"}
    mix.run(make_ctx("mix", {"mix.weights": {"en--web": 1, "en--wiki": 1, "fr--wiki": 1}, "mix.valid_fraction": 0.0,
                             "annealing.weights": {"en--wiki": 1, "fr--wiki": 1}, "extension.enabled": False}))
    assert list(files.read_docs(tmp_path / "data/mixed/extension")) == []  # disabled: an empty stream, same layout


# ---------------------------------------------------------------- LR shapes
def test_lr_schedules_constant_and_linear_to_zero():
    p = load(Path(__file__).resolve().parent.parent / "params.yaml")
    e, a = p.extension.training(p.pretrain), p.annealing.training(p.pretrain)
    assert e.warmup_steps == a.warmup_steps == 0 and e.batch_rampup is None
    fe, fa = schedule.lr_lambda(e), schedule.lr_lambda(a)
    assert [fe(s) for s in range(e.steps + 1)] == [1.0] * (e.steps + 1)
    assert [fa(s) for s in range(a.steps + 1)] == pytest.approx([1 - s / a.steps for s in range(a.steps + 1)])
    assert fa(a.steps) == 0.0


# ---------------------------------------------------------------- the three phases, trained
def ctx_for(root: Path, stage: str) -> StageContext:
    return StageContext(stage, root, load(root / "params.yaml"), tracking.Tracker())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from tokenizers import Tokenizer

    root = make_repo(tmp_path_factory.mktemp("phases") / "repo", {
        "extension": {**PHASE, "lr": 2e-4, "long_doc_min_tokens": 600},
        "annealing": {**PHASE, "lr": 3e-4, "schedule": "linear", "weights": {"en--web": 1}}})
    tok = Tokenizer.from_file(str(root / "artifacts/tokenizer/tokenizer.json"))
    docs = sample_docs("en") + sample_docs("fr")
    for phase, part in (("extension", docs[8:]), ("annealing", sample_docs("en")[8:])):
        write_tokens(root / f"data/tokens/{phase}/train", part, tok, 64)
        write_tokens(root / f"data/tokens/{phase}/valid", docs[:8], tok, 64)
    main_ckpt = None
    for phase, stage in (("main", "pretrain"), ("extension", "extend"), ("annealing", "anneal")):
        pt.run(ctx_for(root, stage), phase)
        if phase == "main":  # its optimizer's step count, before the next phase moves on
            main_ckpt = torch.load(root / "artifacts/checkpoints/main/step0000008/optimizer.bin", weights_only=False)
    return {"root": root, "main_optimizer": main_ckpt}


def csv_rows(path: Path) -> list[dict]:
    lines = path.read_text().splitlines()
    return [dict(zip(lines[0].split(","), line.split(","))) for line in lines[1:]]


def test_each_phase_starts_with_a_fresh_optimizer(trained):
    root = trained["root"]
    main_steps = {int(s["step"]) for s in trained["main_optimizer"]["state"].values()}
    assert main_steps == {8}
    for phase in ("extension", "annealing"):
        opt = torch.load(root / f"artifacts/checkpoints/{phase}/{phase}_step0000001/optimizer.bin", weights_only=False)
        assert {int(s["step"]) for s in opt["state"].values()} == {1}, phase  # not 8 + 1: AdamW was reset
        sched = torch.load(root / f"artifacts/checkpoints/{phase}/{phase}_step0000001/scheduler.bin", weights_only=False)
        assert sched["last_epoch"] == 1


def test_phases_continue_from_the_previous_weights(trained):
    root = trained["root"]
    main, ext, ann = (csv_rows(root / f"plots/{n}_loss.csv") for n in ("pretrain", "extension", "annealing"))
    # A fresh model starts near ln(320) = 5.8; the extension's first step already has the main phase's knowledge.
    assert float(ext[0]["loss"]) < float(main[0]["loss"]) - 0.5
    assert float(ann[0]["loss"]) < float(main[0]["loss"]) - 0.5
    from safetensors.torch import load_file

    a = load_file(root / "artifacts/phases/main/model.safetensors")
    b = load_file(root / "artifacts/phases/extension/model.safetensors")
    assert a.keys() == b.keys() and any(not torch.equal(a[k], b[k]) for k in a)  # trained on, not copied


def test_rope_theta_and_context_length_of_the_later_phases(trained):
    root = trained["root"]

    def cfg(rel):
        c = json.loads((root / rel / "config.json").read_text())
        return c.get("rope_theta", (c.get("rope_parameters") or {}).get("rope_theta")), c["max_position_embeddings"]

    assert cfg("artifacts/phases/main") == (500000.0, 64)
    assert cfg("artifacts/phases/extension") == (2.0e7, 64)
    assert cfg("artifacts/models/base") == (2.0e7, 64)  # the annealing's model is the base model
    assert cfg("artifacts/checkpoints/extension/hf/extension_step0000002") == (2.0e7, 64)
    m = json.loads((root / "metrics/extension.json").read_text())
    assert m["optimizer"] == "reset" and m["init_from"] == "artifacts/phases/main" and m["rope_theta"] == 2.0e7


def test_lr_logged_constant_in_extension_and_linear_to_zero_in_annealing(trained):
    root = trained["root"]
    ext = [float(r["lr"]) for r in csv_rows(root / "plots/extension_loss.csv")]
    ann = [float(r["lr"]) for r in csv_rows(root / "plots/annealing_loss.csv")]
    assert ext == [2e-4] * 4
    assert ann == pytest.approx([3e-4 * (1 - s / 4) for s in range(1, 5)]) and ann[-1] == 0.0


def test_revisions_of_every_phase_in_training_order(trained):
    root = trained["root"]
    found = phases.list_revisions(root)
    assert list(found) == ["step0000004", "step0000008", "extension_step0000002", "extension_step0000004",
                           "annealing_step0000002", "annealing_step0000004"]
    for rev, path in found.items():
        state = json.loads((path / "training_state.json").read_text())
        assert (state["phase"], state["step"]) == phases.parse_revision(rev) and path.parent.parent.name == state["phase"]
    assert json.loads((root / "metrics/annealing.json").read_text())["revisions"] == list(found)[-2:]


def test_inspect_batch_per_phase(trained):
    from stages.lib.batches import documents_of_step, tokens_dir

    root = trained["root"]
    p = load(root / "params.yaml")
    rows = documents_of_step(p, tokens_dir(root, "extension"), 1, phase="extension")
    per_sample = Counter()
    for r in rows:
        per_sample[r["sample"]] += r["length"]
    assert len(per_sample) == 4 and set(per_sample.values()) == {64}  # extension batches: 4 samples of 64 tokens
    assert {r["doc_id"][:2] for r in documents_of_step(p, tokens_dir(root, "annealing"), 2, phase="annealing")} == {"en"}
    with pytest.raises(ValueError, match=r"1\.\.4 \(extension\.steps\)"):
        documents_of_step(p, tokens_dir(root, "extension"), 5, phase="extension")


def test_a_disabled_phase_passes_the_weights_through(trained, tmp_path):
    import yaml

    root = tmp_path / "repo"
    shutil.copytree(trained["root"], root)
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["extension"]["enabled"] = False
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    pt.run(ctx_for(root, "extend"), "extension")
    main, ext = root / "artifacts/phases/main", root / "artifacts/phases/extension"
    assert sorted(f.name for f in ext.iterdir()) == sorted(f.name for f in main.iterdir())
    assert (ext / "model.safetensors").read_bytes() == (main / "model.safetensors").read_bytes()
    assert json.loads((root / "metrics/extension.json").read_text())["enabled"] is False
    assert not [r for r in phases.list_revisions(root) if r.startswith("extension_")]
    assert (root / "plots/extension_loss.csv").read_text() == ",".join(steplog.LOG_COLUMNS) + "\n"
