"""`lucie mix-plan`: a recipe's blend from a statistics file, with the mix stage's own weights/epochs code."""
from __future__ import annotations

import json
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from lucie.cli import app
from lucie.mix_plan_cmd import StatsError, canonical_name, read_stats
from repo_copy import PROJECT
from stages.lib.mixing import schedule
from stages.lib.mix_plan import Part, plan, round_half_even
from stages.core.params import Mix

runner = CliRunner()
LUCIE_STATS = PROJECT.parent / "shared/lucie/stats_datasets.csv"
HEADER = ("language ,name          ,subset ,ocr   ,category    ,  M docs, B words, B chars, #words/doc,#chars/word,"
          " B tokens,#tokens/words,#chars/tokens")


def row(lang, name, subset, category, btok):
    return f"{lang:<9},{name:<14},{subset:<7},false ,{category:<12},   1.000,   1.000,   1.000,        10,        6.0,{btok:>9},        1.50,        4.00"


# Hand-made: before 4 + 2 + 1 + 0.5 + 0 = 7.5 B tokens; after (1.5, 2, 2, 3, 2 epochs) 6 + 4 + 2 + 1.5 + 0 = 13.5 B.
SMALL = "\n".join([
    HEADER,
    "---      ,---           ,---    ,      ,            ,   5.000,   5.000,   5.000,        10,        6.0,    7.500,        1.50,        4.00",
    "en       ,---           ,---    ,      ,            ,   1.000,   1.000,   1.000,        10,        6.0,    4.000,        1.50,        4.00",
    row("en", "Web.en", "2020", "web", "4.000"),
    row("fr", "Books", "", "book", "2.000"),
    row("code", "TheStack", "c++", "programming", "1.000"),
    row("fr-en", "Aligned.fr-en", "", "aligned", "0.500"),
    row("fr", "Talk", "", "dialogue", "0.000"),
]) + "\n"
WEIGHTS = {"en--web": 1.5, "fr--book": 2, "code--programming": 2, "fr-en--aligned": 3, "fr--dialogue": 2}


def project(tmp_path: Path, weights=WEIGHTS, seq_len: int = 4096) -> Path:
    """A root with recipes/hand.yaml: the tiny recipe with these mix weights and main-phase sequence length."""
    params = yaml.safe_load((PROJECT / "recipes/tiny.yaml").read_text())
    params["recipe"] = "hand"
    params["mix"]["weights"] = weights
    params["tokenize"]["seq_len"] = seq_len
    params["model"]["max_position_embeddings"] = max(seq_len, params["model"]["max_position_embeddings"])
    (tmp_path / "recipes").mkdir(parents=True)
    (tmp_path / "recipes/hand.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (tmp_path / "stats.csv").write_text(SMALL)
    return tmp_path


def run_plan(root: Path, *extra: str):
    return runner.invoke(app, ["mix-plan", "--stats", str(root / "stats.csv"), "--recipe", "hand", "--root", str(root),
                               *extra])


def test_canonical_names_follow_lucie_training():
    assert canonical_name("Wikipedia.fr") == "Wikipedia--fr"
    assert canonical_name("TheStack", "c++") == "TheStack--c++"
    assert canonical_name("RedPajama--fr--2019") == "RedPajama--fr--2019"
    assert canonical_name("OtherFr", "LEGI") == "OtherFr--LEGI"
    assert canonical_name("EuroparlAligned.fr-en") == "EuroparlAligned--fr-en"


def test_read_stats_skips_totals_and_keeps_exact_token_counts(tmp_path):
    (tmp_path / "s.csv").write_text(SMALL)
    parts = read_stats(tmp_path / "s.csv")
    assert [p.name for p in parts] == ["Web--en--2020", "Books", "TheStack--c++", "Aligned--fr-en", "Talk"]
    assert parts[0] == Part("Web--en--2020", "en", "web", Fraction(4 * 10**9))
    assert parts[3].tokens == 500_000_000 and parts[3].lang == "fr-en"


def test_arithmetic_shares_epochs_weights_and_samples(tmp_path):
    root = project(tmp_path)
    res = run_plan(root, "--format", "json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    sub = out["subcorpora"]
    assert list(sub) == ["Web--en--2020", "Books", "TheStack--c++", "Aligned--fr-en", "Talk"]  # by share after
    assert sub["Web--en--2020"] == {"language": "en", "category": "web", "share_before": 53.333, "share_after": 44.444,
                                    "tokens_after_b": 6.0, "epochs": 1.5, "megatron_weight": 0.444444444}
    assert sub["Books"]["share_after"] == 29.63 and sub["Books"]["megatron_weight"] == 0.296296296
    assert sub["TheStack--c++"]["share_before"] == 13.333 and sub["TheStack--c++"]["share_after"] == 14.815
    assert sub["Aligned--fr-en"]["epochs"] == 3.0 and sub["Aligned--fr-en"]["megatron_weight"] == 0.111111111
    assert sub["Talk"]["megatron_weight"] == 0.0
    assert out["languages"] == {
        "en": {"share_before": 53.333, "share_after": 44.444, "tokens_after_b": 6.0},
        "fr": {"share_before": 26.667, "share_after": 29.63, "tokens_after_b": 4.0},
        "code": {"share_before": 13.333, "share_after": 14.815, "tokens_after_b": 2.0},
        "parallel": {"share_before": 6.667, "share_after": 11.111, "tokens_after_b": 1.5},
    }
    assert out["total_tokens_before_b"] == 7.5 and out["total_tokens_after_b"] == 13.5
    assert out["samples"] == 13_500_000_000 // 4096 == 3_295_898


def test_sub_corpora_without_a_weight_get_default_epochs_and_are_named(tmp_path):
    weights = {k: v for k, v in WEIGHTS.items() if k != "fr--book"}
    root = project(tmp_path, weights=weights)
    out = json.loads(run_plan(root, "-f", "json").output)
    assert out["default_epochs_for"] == ["Books"] and out["subcorpora"]["Books"]["epochs"] == 1.0  # tiny's default
    assert "No weight for (default_epochs): Books." in run_plan(root).output
    assert json.loads(run_plan(project(tmp_path / "w"), "-f", "json").output)["default_epochs_for"] == []


def test_samples_follow_the_recipes_sequence_length(tmp_path):
    res = run_plan(project(tmp_path, seq_len=2048), "--format", "json")
    assert json.loads(res.output)["samples"] == 13_500_000_000 // 2048


def test_rounding_is_half_to_even_on_exact_values():
    assert round_half_even(Fraction(1, 8), 2) == 0.12 and round_half_even(Fraction(3, 8), 2) == 0.38
    assert round_half_even(Fraction(2345, 10**7), 6) == 0.000234  # 0.0002345: a tie, 4 is even
    assert round_half_even(Fraction(2355, 10**7), 6) == 0.000236
    assert round_half_even(Fraction(1, 3), 9) == 0.333333333 and round_half_even(Fraction(2, 3), 9) == 0.666666667
    # exact from the file's decimals: three parts of 0.1 B are 0.3 B, not 0.30000000000000004
    out = plan([Part(n, "en", "web", Fraction(10**8)) for n in "abc"], Mix(weights={"en--web": 1}), 4096)
    assert out["total_tokens_before_b"] == 0.3 and all(v["share_after"] == 33.333 for v in out["subcorpora"].values())


def test_markdown_is_sorted_by_share_after(tmp_path):
    res = run_plan(project(tmp_path))
    assert res.exit_code == 0, res.output
    table = [line for line in res.output.splitlines() if line.startswith("| ") and "--" in line.split("|")[1]
             or line.startswith("| Books")]
    names = [line.split("|")[1].strip() for line in table]
    assert names == ["Web--en--2020", "Books", "TheStack--c++", "Aligned--fr-en"]
    assert "| parallel | 6.667 % | 11.111 % | 1.500 |" in res.output
    assert "3,295,898 samples of 4,096 tokens" in res.output


def test_write_data_path_is_megatrons_weight_prefix_list(tmp_path):
    root = project(tmp_path)
    res = run_plan(root, "--write-data-path", str(tmp_path / "dp.txt"), "--data-dir", "/data/tok/")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "dp.txt").read_text().splitlines() == [
        "0.444444444 /data/tok/Web--en--2020_text_document",
        "0.296296296 /data/tok/Books_text_document",
        "0.148148148 /data/tok/TheStack--c++_text_document",
        "0.111111111 /data/tok/Aligned--fr-en_text_document",
    ]
    assert "Talk" in res.output  # left out (weight 0), and said so


@pytest.mark.parametrize("edit, where, what", [
    (lambda s: s.replace("TheStack      ,c++    ,", "TheStack      ,"), ":6:", "12 fields, the header has 13"),
    (lambda s: s.replace("    2.000,", "     2.0x,"), ":5:", "'B tokens' is '2.0x', not a number"),
    (lambda s: s.replace("    2.000,", "   -2.000,"), ":5:", "expected a number >= 0"),
    (lambda s: s.replace("book        ", "            "), ":5:", "empty 'category'"),
    (lambda s: s.replace("Talk          ,       ", "Web--en       ,2020   "), ":8:", "Web--en--2020 repeats line 4"),
    (lambda s: s.replace(" B tokens,", " tokens,"), ":1:", "header lacks column(s) B tokens"),
    (lambda s: "", ":1:", "empty file"),
    (lambda s: s.replace(row("fr", "Books", "", "book", "2.000") + "\n", ""), ":2:",
     "the overall total says 7.500 B tokens, but its 4 sub-corpus rows sum to 5.500 B"),
    (lambda s: s.replace("    7.500,", "    9.500,").replace(row("en", "Web.en", "2020", "web", "4.000"),
                                                             row("en", "Web.en", "2020", "web", "6.000")),
     ":3:", "the 'en' total says 4.000 B tokens, but its 1 sub-corpus rows sum to 6.000 B"),
    (lambda s: s.replace("    7.500,", "    7.5x0,"), ":2:", "'B tokens' is '7.5x0', not a number"),
])
def test_a_malformed_statistics_file_is_an_error_naming_the_line(tmp_path, edit, where, what):
    root = project(tmp_path)
    (root / "stats.csv").write_text(edit(SMALL))
    with pytest.raises(StatsError) as err:
        read_stats(root / "stats.csv")
    assert f"stats.csv{where}" in str(err.value) and what in str(err.value)
    res = run_plan(root)
    assert res.exit_code == 2 and f"stats.csv{where}" in res.output


def test_unreadable_statistics_or_unwritable_data_path_is_one_line(tmp_path):
    root = project(tmp_path)
    res = runner.invoke(app, ["mix-plan", "--stats", str(root), "--recipe", "hand", "--root", str(root)])
    assert res.exit_code == 2 and f"{root}: cannot read it" in res.output
    res = run_plan(root, "--write-data-path", str(root / "missing-dir" / "dp.txt"))
    assert res.exit_code == 2 and "--write-data-path" in res.output and "cannot write it" in res.output


def test_a_weight_matching_no_sub_corpus_is_an_error(tmp_path):
    res = run_plan(project(tmp_path, weights={**WEIGHTS, "de--web": 1}))
    assert res.exit_code == 2 and "de--web" in res.output and "match no document group" in res.output


def test_without_recipe_the_active_params_yaml_decides(tmp_path):
    root = project(tmp_path)
    (root / "params.yaml").write_text((root / "recipes/hand.yaml").read_text())
    res = runner.invoke(app, ["mix-plan", "--stats", str(root / "stats.csv"), "--root", str(root), "-f", "json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["subcorpora"]["Books"]["epochs"] == 2.0
    assert "recipe `hand`" in runner.invoke(app, ["mix-plan", "--stats", str(root / "stats.csv"), "--root",
                                                  str(root)]).output


def test_unknown_recipe_or_format_is_bad_usage(tmp_path):
    root = project(tmp_path)
    res = runner.invoke(app, ["mix-plan", "--stats", str(root / "stats.csv"), "--recipe", "nope", "--root", str(root)])
    assert res.exit_code == 2 and "hand" in res.output
    assert run_plan(root, "--format", "csv").exit_code == 2


def test_the_plan_is_what_the_mix_stage_streams():
    """Whole epochs: the stage's stream holds each source's tokens x epochs, so its shares are the plan's weights."""
    p = Mix(weights={"en--web": 1, "fr--book": 3, "code--programming": 2}, source_weights={"b": 2.0})
    docs = []
    for source, lang, cat, n in (("a", "en", "web", 7), ("b", "en", "web", 5), ("c", "fr", "book", 4),
                                 ("d", "code", "programming", 6)):
        for i in range(n):
            docs.append({"id": f"{source}{i}", "source": source, "lang": lang, "category": cat, "date": "",
                         "text": "w " * (10 + 3 * i)})
    size = lambda d: len(d["text"].split())
    stream = schedule(docs, p, 42, True)
    got = Counter()
    for d, _ in stream:
        got[d["source"]] += size(d)
    parts = [Part(s, lang, cat, Fraction(sum(size(d) for d in docs if d["source"] == s)))
             for s, lang, cat in (("a", "en", "web"), ("b", "en", "web"), ("c", "fr", "book"), ("d", "code", "programming"))]
    out = plan(parts, p, 4096)
    total = sum(got.values())
    for s, v in out["subcorpora"].items():
        assert v["megatron_weight"] == round_half_even(Fraction(got[s], total), 9)
    assert out["subcorpora"]["b"]["epochs"] == 2.0 and out["subcorpora"]["c"]["epochs"] == 3.0


@pytest.mark.skipif(not LUCIE_STATS.exists(), reason="../shared/lucie/stats_datasets.csv not present")
def test_lucie_7b_reproduces_lucies_published_main_phase_blend(tmp_path):
    res = runner.invoke(app, ["mix-plan", "--stats", str(LUCIE_STATS), "--recipe", "lucie-7b", "--root", str(PROJECT),
                              "--format", "json", "--write-data-path", str(tmp_path / "dp.txt")])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output[res.output.index("{"):res.output.rindex("}") + 1])
    published = {"en": 33.2, "fr": 32.4, "code": 14.7, "de": 6.9, "es": 6.6, "it": 3.8, "parallel": 2.5}
    assert {k: round(v["share_after"], 1) for k, v in out["languages"].items()} == published
    # Lucie-Training chronicles/pretrain/1_pretraining/training_weights.md: before 2320.617 B, after 3121.744 B,
    # 762,144,585.14 samples; the statistics round every sub-corpus to 0.001 B, so the sums differ by < 0.005 B.
    assert abs(out["total_tokens_before_b"] - 2320.617) < 0.005 and abs(out["total_tokens_after_b"] - 3121.744) < 0.005
    assert abs(out["samples"] - 762_144_585) < 0.005e9 / 4096
    sub = out["subcorpora"]
    assert list(sub)[:4] == ["PeS2o", "FineWebEdu--cc-main-2021", "FineWebEdu--cc-main-2019", "RedPajama--fr--2019"]
    for name, share, epochs in (("PeS2o", 5.235, 2.5), ("FineWebEdu--cc-main-2021", 5.013, 1.5),
                                ("RedPajama--fr--2019", 4.329, 1.0), ("TheStack--javascript", 3.755, 2.0),
                                ("Eurovoc--en", 0.082, 1.0), ("Gutenberg--fr", 0.025, 2.0)):
        assert sub[name]["share_after"] == pytest.approx(share, abs=0.001) and sub[name]["epochs"] == epochs
    lines = (tmp_path / "dp.txt").read_text().splitlines()
    assert lines[0].startswith("0.05234") and lines[0].endswith(" PeS2o_text_document")
    assert len(lines) == len(sub) - 1 and "Stac" in res.output  # 0.000 B in the statistics: left out, said so
