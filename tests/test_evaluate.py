"""evaluate on a tiny random model: checks before any model loads, provenance of every number, same
numbers twice, checkpoints by revision name, and the results table beside published baselines."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from stages.lib import eval_report
from stages import evaluate
from stages.core import files
from stages.lib.eval_tasks import check_task_file
from stages.core.runtime import StageError
from stages.tokenizer import save_hf, train

PROJECT = Path(__file__).resolve().parent.parent
MCQ = {"question": "Which is a colour?", "choices": {"text": ["red", "dog"], "label": ["A", "B"]}, "answerKey": "A"}


def flat(d, prefix=""):
    if isinstance(d, dict):
        return {k2: v for k, x in d.items() for k2, v in flat(x, f"{prefix}{k}.").items()}
    if isinstance(d, list):
        return {k2: v for i, x in enumerate(d) for k2, v in flat(x, f"{prefix}{i}.").items()}
    return {prefix: d}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(l) for l in path.read_text(encoding="utf-8").splitlines() if l.strip()]


def write_lines(path: Path, lines: list) -> Path:
    path.write_bytes(b"".join((l if isinstance(l, bytes) else l.encode()) + b"\n" for l in lines))
    return path


@pytest.mark.parametrize("line, kind, problem", [
    (b"{not json", "multiple_choice", r"t.jsonl:2: invalid JSON"),
    (json.dumps({**MCQ, "answerKey": "C"}).encode(), "multiple_choice", r"t.jsonl:2: 'answerKey' 'C' is not one of"),
    (json.dumps({**MCQ, "choices": {"text": ["a", "b"], "label": ["A"]}}).encode(), "multiple_choice",
     r"t.jsonl:2: 'choices' needs at least 2 options and as many labels"),
    (json.dumps({"question": "q"}).encode(), "generate", r"t.jsonl:2: 'answer' must be a non-empty string"),
    (b'{"question": "\xff"}', "generate", r"t.jsonl:2: invalid UTF-8"),
    (b"[1, 2]", "generate", r"t.jsonl:2: expected a JSON object"),
])
def test_malformed_task_line_is_named_by_file_and_line(tmp_path, line, kind, problem):
    good = json.dumps(MCQ if kind == "multiple_choice" else {"question": "q", "answer": "a"}).encode()
    with pytest.raises(StageError, match=problem):
        check_task_file(write_lines(tmp_path / "t.jsonl", [good, line]), kind)


@pytest.fixture(scope="module")
def eval_root(tmp_path_factory):
    """A repo-shaped dir: tiny base/instruct models, a held-out split, the shipped eval files."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("evalroot")
    texts = [d["text"] for d in read_jsonl(PROJECT / "data/sample/text/en.jsonl")][:30]
    tok_dir = root / "tok"
    save_hf(train(texts, vocab_size=512, min_frequency=2), tok_dir)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256))
    for rel in ("artifacts/models/base", "artifacts/models/instruct", "artifacts/checkpoints/main/hf/step0000002"):
        model.save_pretrained(root / rel)
        for f in tok_dir.iterdir():
            shutil.copy(f, root / rel / f.name)
    valid = [{"id": f"v{i}", "text": t, "lang": "en", "source": "s", "category": "web"} for i, t in enumerate(texts[:4])]
    (root / "data/mixed/valid").mkdir(parents=True)
    files.write_manifest(root / "data/mixed/valid", files.write_docs(root / "data/mixed/valid", valid, 100))
    shutil.copytree(PROJECT / "data/sample/eval", root / "data/sample/eval")
    return root


def small(make_ctx, root, **extra):
    return make_ctx("evaluate", {"evaluate.ppl_max_docs": 4, "tokenize.seq_len": 64, **extra}, root=root)


def test_evaluation_is_reproducible_and_every_number_has_its_provenance(make_ctx, eval_root):
    ctx = small(make_ctx, eval_root)
    evaluate.run(ctx)
    first = files.read_json(eval_root / "metrics/eval.json")
    samples = {f.name: f.read_bytes() for f in (eval_root / "artifacts/eval").iterdir()}
    evaluate.run(small(make_ctx, eval_root))
    second = files.read_json(eval_root / "metrics/eval.json")
    diff = {k: (a, b) for k, a in flat(first).items() if (b := flat(second).get(k)) != a}
    assert not diff  # same numbers, same provenance
    assert {f.name: f.read_bytes() for f in (eval_root / "artifacts/eval").iterdir()} == samples

    weights = files.sha256_file(eval_root / "artifacts/models/base/model.safetensors")
    for name in ("base", "instruct"):
        model = first["models"][name]
        assert set(model["tasks"]) == {"mcq_en", "mcq_fr", "gen_en", "gen_fr"}
        for task, scores in model["tasks"].items():
            prov = model["provenance"][task]
            assert prov["harness"].startswith("lm-eval 0.4") and prov["weights_sha256"] == weights
            assert prov["num_fewshot"] == 0 and prov["fewshot_seed"] == 42 and prov["dtype"] == "float32"
            assert prov["batch_size"] == 8 and "{{question}}" in prov["prompt"] and len(prov["task_config_sha256"]) == 64
            assert all(0.0 <= v <= 1.0 for v in scores.values())
            rows = read_jsonl(eval_root / f"artifacts/eval/{name}__{task}.jsonl")
            assert len(rows) == prov["n_samples"] > 0  # per-sample outputs behind every score
        assert set(model["perplexity"]) == {"en"}
    # The checkpoint exported under a revision name is evaluated too: the learning curve has its point.
    assert first["checkpoints"]["step0000002"]["step"] == 2 and first["checkpoints"]["step0000002"]["phase"] == "main"
    curve = (eval_root / "plots/eval_curve.csv").read_text().splitlines()
    assert curve[0] == "revision,phase,step,task,metric,value,global_step" and len(curve) == 1 + 4
    assert all(row.split(",")[2] == row.split(",")[-1] for row in curve[1:])  # main phase: global step = step
    table = (eval_root / "artifacts/eval/results.md").read_text()
    assert table.startswith("| task | metric | shots | base | instruct |")
    assert (eval_root / "artifacts/eval/scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_per_task_fewshot_and_unknown_checkpoint(make_ctx, eval_root):
    tasks = yaml.safe_load((PROJECT / "params.yaml").read_text())["evaluate"]["tasks"][:1]
    ctx = small(make_ctx, eval_root, **{"evaluate.tasks": [{**tasks[0], "num_fewshot": 2}],
                                        "evaluate.checkpoints": ["step0000002"]})
    evaluate.run(ctx)
    out = files.read_json(eval_root / "metrics/eval.json")
    assert out["models"]["base"]["provenance"]["mcq_en"]["num_fewshot"] == 2
    with pytest.raises(StageError, match=r"no checkpoint 'step0000009'.*available: step0000002"):
        evaluate.run(small(make_ctx, eval_root, **{"evaluate.checkpoints": ["step0000009"]}))


def test_bad_task_file_stops_before_any_model_is_loaded(make_ctx, eval_root, tmp_path, monkeypatch):
    bad = write_lines(tmp_path / "bad.jsonl", [json.dumps(MCQ), json.dumps({"question": "x", "choices": {}})])
    monkeypatch.setattr(evaluate, "load_lm", lambda *a: pytest.fail("a model was loaded"))
    ctx = small(make_ctx, eval_root, **{"evaluate.tasks": [{"name": "bad", "path": str(bad), "lang": "en"}]})
    with pytest.raises(StageError, match=r"bad.jsonl:2: 'choices' must be an object"):
        evaluate.run(ctx)


def test_harness_task_offline_fails_naming_the_missing_hub(make_ctx, eval_root):
    ctx = small(make_ctx, eval_root, **{"evaluate.tasks": [
        {"name": "arc_challenge", "kind": "harness", "lang": "en", "num_fewshot": 0, "metric": "acc_norm"}]})
    with pytest.raises(StageError, match=r"lm-eval tasks arc_challenge: .*Hugging Face Hub, unreachable offline"):
        evaluate.run(ctx)
    ctx = small(make_ctx, eval_root, **{"evaluate.tasks": [{"name": "no_such_task", "kind": "harness", "lang": "en"}]})
    with pytest.raises(StageError, match=r"no_such_task not lm-eval tasks"):
        evaluate.run(ctx)


def test_results_table_puts_published_lucie_scores_beside_ours(make_ctx):
    from stages.core.params import EvalTask

    baselines = eval_report.load_baselines(PROJECT / "data/baselines/lucie-7b.yaml", [])
    tasks = [EvalTask(name="arc_challenge", kind="harness", lang="en", metric="acc_norm", baseline="arc_challenge")]
    prov = {"arc_challenge": {"num_fewshot": 25}}
    results = {"models": {"base": {"tasks": {"arc_challenge": {"acc_norm": 0.3}}, "provenance": prov},
                          "instruct": {"tasks": {"arc_challenge": {"acc_norm": 0.31}}, "provenance": prov}}}
    table = eval_report.rows(results, tasks, baselines)
    md = eval_report.markdown(table, ["base", "instruct"], baselines)
    assert "| arc_challenge | acc_norm | 25 | 0.300 | 0.310 | 0.544 | 0.514 | 0.524 | 0.317 | 0.386 |" in md
    assert "published: Llama-3.1-8B,0.582" in eval_report.scores_csv(table, ["base", "instruct"], baselines)
    wrong = [EvalTask(name="arc_challenge", kind="harness", lang="en", metric="acc", baseline="arc_challenge")]
    with pytest.raises(StageError, match="our metric acc vs published acc_norm"):
        eval_report.rows(results, wrong, baselines)


def test_the_curve_has_one_global_step_axis_across_phases():
    from stages.lib.eval_report import curve_csv, phase_offsets
    from stages.core.params import load

    p = load(PROJECT / "params.yaml")
    offsets = phase_offsets(p)
    assert offsets == {"main": 0, "extension": p.pretrain.steps, "annealing": p.pretrain.steps + p.extension.steps}
    task = p.evaluate.tasks[0]
    results = {"checkpoints": {rev: {"phase": ph, "step": st, "tasks": {task.name: {"acc": 0.5}}}
                               for rev, ph, st in (("step0000050", "main", 50), ("step0000150", "main", 150),
                                                   ("extension_step0000010", "extension", 10),
                                                   ("annealing_step0000020", "annealing", 20))}}
    rows = [r.split(",") for r in curve_csv(results, [task], offsets).splitlines()[1:]]
    steps = [int(r[-1]) for r in rows]
    assert steps == [50, 150, p.pretrain.steps + 10, p.pretrain.steps + p.extension.steps + 20]
    assert steps == sorted(steps)
