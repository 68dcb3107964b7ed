"""evaluate: per-language perplexity and lm-eval-harness tasks, for the base and instruct models.

lm-eval is the harness Lucie's authors used. The task definitions are generated here from
`evaluate.tasks` (FR and EN multiple-choice and short-answer sets shipped in
data/sample/eval) with absolute data paths, because lm-eval resolves relative paths
against the process cwd. Everything that decides a number is stored next to it: harness
version, task versions, few-shot count and seeds, batch size, dtype, and the sha256 of the
model weights; per-sample outputs go to artifacts/eval/.
"""
from __future__ import annotations

import math
import tempfile
from collections import defaultdict
from pathlib import Path

import yaml

from . import io
from .mix import h64
from .params import EvalTask
from .runtime import StageContext, StageError, stage

MODELS = {"base": "artifacts/models/base", "instruct": "artifacts/models/instruct"}
VALID, OUT = "data/mixed/valid", "artifacts/eval"


def task_yaml(t: EvalTask, data: Path) -> dict:
    common = {"task": t.name, "dataset_path": "json", "dataset_name": None,
              "dataset_kwargs": {"data_files": {"test": str(data)}}, "test_split": "test",
              "metadata": {"version": 1.0, "lang": t.lang}}
    if t.kind == "multiple_choice":
        return {**common, "output_type": "multiple_choice",
                "doc_to_text": "Question: {{question}}\nAnswer:",
                "doc_to_target": "{{choices.label.index(answerKey)}}", "doc_to_choice": "{{choices.text}}",
                "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                                {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}]}
    return {**common, "output_type": "generate_until", "doc_to_text": "Question: {{question}}\nAnswer:",
            "doc_to_target": "{{answer}}",
            "generation_kwargs": {"until": ["\n"], "max_gen_toks": 16, "do_sample": False},
            "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                             "ignore_case": True, "ignore_punctuation": True}]}


def weights_sha256(model_dir: Path) -> str:
    return io.sha256_file(model_dir / "model.safetensors")


def perplexity(model_dir: Path, docs: list[dict], max_len: int) -> dict:
    """exp(mean token NLL) per language over the held-out documents (BOS + text)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    nll, count = defaultdict(float), defaultdict(int)
    with torch.no_grad():
        for d in docs:
            ids = tok(d["text"], return_tensors="pt").input_ids[0]
            for start in range(0, len(ids), max_len):  # non-overlapping windows of the training length
                window = ids[start : start + max_len]
                if len(window) < 2:
                    break
                loss = model(input_ids=window[None], labels=window[None]).loss.item()
                nll[d["lang"]] += loss * (len(window) - 1)
                count[d["lang"]] += len(window) - 1
    return {lang: round(math.exp(nll[lang] / count[lang]), 4) for lang in sorted(count) if count[lang]}


def lm_eval(model_dir: Path, tasks_dir: Path, names: list[str], p, seed: int) -> dict:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    tm = TaskManager(include_path=str(tasks_dir), include_defaults=False)
    return simple_evaluate(
        model="hf", model_args=f"pretrained={model_dir},dtype=float32", tasks=names, task_manager=tm,
        num_fewshot=p.num_fewshot, device="cpu", batch_size=p.batch_size, log_samples=True,
        random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed,
    )


def sample_rows(samples: list[dict]) -> list[dict]:
    keep = ("doc_id", "target", "filtered_resps", "acc", "acc_norm", "exact_match")
    return [{k: s[k] for k in keep if k in s} for s in sorted(samples, key=lambda s: s["doc_id"])]


def run(ctx: StageContext) -> None:
    import lm_eval as lm_eval_pkg
    import torch

    p, seed = ctx.params.evaluate, ctx.params.seed
    torch.set_num_threads(ctx.params.pretrain.threads)
    for t in p.tasks:
        if not ctx.path(t.path).exists():
            raise StageError(f"task {t.name!r}: data file {t.path} not found")
    # Cap by a hash of the id, not by id order (ids group by language, a prefix would drop languages).
    valid = sorted(io.read_docs(ctx.path(VALID)), key=lambda d: h64(seed, "ppl", d["id"]))[: p.ppl_max_docs]
    results: dict = {"harness": {"name": "lm-eval", "version": lm_eval_pkg.__version__},
                     "settings": {"num_fewshot": p.num_fewshot, "batch_size": p.batch_size, "seed": seed,
                                  "dtype": "float32", "device": "cpu"},
                     "models": {}}
    with tempfile.TemporaryDirectory() as tdir, io.atomic_dir(ctx.path(OUT)) as out:
        for t in p.tasks:
            (Path(tdir) / f"{t.name}.yaml").write_text(yaml.safe_dump(task_yaml(t, ctx.path(t.path).resolve())))
        for name, rel in MODELS.items():
            mdir = ctx.path(rel).resolve()
            res = lm_eval(mdir, Path(tdir), [t.name for t in p.tasks], p, seed)
            scores = {task: {k.split(",")[0]: round(v, 6) for k, v in r.items()
                             if isinstance(v, float) and not k.startswith(("alias",)) and "stderr" not in k}
                      for task, r in sorted(res["results"].items())}
            for task, samples in res["samples"].items():
                io.write_jsonl(out / f"{name}__{task}.jsonl", sample_rows(samples))
            results["models"][name] = {
                "weights_sha256": weights_sha256(mdir),
                "tasks": scores,
                "task_versions": {k: v for k, v in sorted(res["versions"].items())},
                "n_samples": {k: v["effective"] for k, v in sorted(res["n-samples"].items())},
                "perplexity": perplexity(mdir, valid, ctx.params.tokenize.seq_len),
            }
    results["tasks"] = [t.model_dump() for t in p.tasks]
    ctx.write_metrics("metrics/eval.json", results)
    ctx.tracker.artifact(ctx.path(OUT), "eval_samples")
    line = "; ".join(f"{m}: " + ", ".join(f"{t} {s.get('acc', s.get('exact_match', 0)):.2f}" for t, s in r["tasks"].items())
                     for m, r in results["models"].items())
    ctx.summary(f"{line} -> metrics/eval.json")


def main() -> None:
    with stage("evaluate") as ctx:
        run(ctx)


if __name__ == "__main__":
    main()
