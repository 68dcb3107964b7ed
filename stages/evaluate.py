"""evaluate: lm-eval-harness tasks and per-language perplexity, for the base and instruct models and for
intermediate checkpoints named by their revision (learning curves, as Lucie's authors plot them).

lm-eval is the harness Lucie's authors used (HF backend, add_bos_token=True). Each model is loaded once
and handed to lm-eval as an HFLM instance, so the weights that are hashed are the weights evaluated.
Everything that decides a number is stored next to it, per model and task: harness version, task version,
prompt (doc_to_text) and the sha256 of the whole task config, few-shot count and seed, batch size, dtype,
and the sha256 of the model weights. Per-sample outputs go to artifacts/eval/ (and MLflow).

Outputs: metrics/eval.json, artifacts/eval/ (samples, results.md, scores.png), plots/eval_scores.csv,
plots/eval_curve.csv.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import tempfile
from collections import defaultdict
from itertools import groupby
from pathlib import Path

import yaml

from stages.lib import eval_report
from stages.core import files
from stages.lib.eval_tasks import check_harness_tasks, check_task_file, task_yaml
from stages.lib.split import h64
from stages.lib.phases import PHASES, list_revisions
from stages.core.runtime import StageContext, StageError, stage

MODELS = {"base": "artifacts/models/base", "instruct": "artifacts/models/instruct"}
CHECKPOINTS = "artifacts/checkpoints/<phase>/hf"
VALID, OUT = "data/mixed/valid", "artifacts/eval"
SCORES_PLOT, CURVE_PLOT = "plots/eval_scores.csv", "plots/eval_curve.csv"
REVISION = re.compile(r"^(?:(?P<phase>[a-z]+)_)?step(?P<step>\d+)$")
DTYPE = "float32"


def weights_sha256(model_dir: Path) -> str:
    return files.sha256_file(model_dir / "model.safetensors")


def resolve_checkpoints(ctx: StageContext, wanted) -> dict[str, dict]:
    """revision -> {source, revision (hub only), phase, step}; names are checked before any evaluation."""
    local = list_revisions(ctx.root)  # every phase's exports (stages/lib/phases.py)
    available = list(local)
    names = available if wanted == "all" else list(wanted)
    out = {}
    for name in names:
        hub = re.match(r"^hub:(?P<repo>[\w.-]+/[\w.-]+)@(?P<rev>[\w.-]+)$", name)
        rev = hub["rev"] if hub else name
        m = REVISION.match(rev)
        phase, step = ((m["phase"] or "main"), int(m["step"])) if m else ("?", -1)
        if hub:
            out[name] = {"source": hub["repo"], "revision": rev, "phase": phase, "step": step}
        elif name in local:
            out[name] = {"source": str(local[name]), "revision": None, "phase": phase, "step": step}
        else:
            raise StageError(f"evaluate.checkpoints: no checkpoint {name!r} in {CHECKPOINTS} "
                             f"(available: {', '.join(available) or 'none'}); a Hub checkpoint is 'hub:ORG/REPO@REVISION'")
    return out


def load_lm(source: str, revision: str | None, batch_size: int):
    import torch
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kw = {"revision": revision} if revision else {}
    try:
        tok = AutoTokenizer.from_pretrained(source, **kw)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=getattr(torch, DTYPE), **kw).eval()
    except OSError as err:
        raise StageError(f"cannot load model {source}{'@' + revision if revision else ''}: {str(err).splitlines()[0]}"
                         + (" (the Hub is unreachable offline: HF_HUB_OFFLINE=1)" if revision else "")) from None
    return HFLM(pretrained=model, tokenizer=tok, batch_size=batch_size, device="cpu", add_bos_token=True)


def perplexity(lm, docs: list[dict], max_len: int) -> dict:
    """exp(mean token NLL) per language over the held-out documents (BOS + text)."""
    import torch

    nll, count = defaultdict(float), defaultdict(int)
    with torch.no_grad():
        for d in docs:
            ids = lm.tokenizer(d["text"], return_tensors="pt").input_ids[0]
            for start in range(0, len(ids), max_len):  # non-overlapping windows of the training length
                window = ids[start : start + max_len]
                if len(window) < 2:
                    break
                loss = lm.model(input_ids=window[None], labels=window[None]).loss.item()
                nll[d["lang"]] += loss * (len(window) - 1)
                count[d["lang"]] += len(window) - 1
    return {lang: round(math.exp(nll[lang] / count[lang]), 4) for lang in sorted(count) if count[lang]}


def metric_key(key: str) -> str | None:
    """lm-eval's 'acc,none' -> 'acc'; 'exact_match,flexible-extract' stays whole; stderr/alias -> None."""
    if "," not in key or "stderr" in key:
        return None
    metric, flt = key.split(",", 1)
    return metric if flt == "none" else key


def run_tasks(lm, tasks, fewshot: dict, task_manager, p, seed: int) -> dict:
    """One simple_evaluate call per few-shot count (lm-eval takes one count per call)."""
    from lm_eval import simple_evaluate

    merged = {"results": {}, "versions": {}, "n-samples": {}, "configs": {}, "samples": {}}
    for shots, group in groupby(sorted(tasks, key=lambda t: (fewshot[t.name], t.name)), key=lambda t: fewshot[t.name]):
        group = list(group)
        try:
            res = simple_evaluate(model=lm, tasks=[t.name for t in group], task_manager=task_manager,
                                  num_fewshot=shots, batch_size=p.batch_size, log_samples=True, random_seed=seed,
                                  numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed)
        except Exception as err:  # dataset loading of harness tasks: name what is missing
            if any(t.kind == "harness" for t in group):
                raise StageError(f"lm-eval tasks {', '.join(t.name for t in group)}: {type(err).__name__}: "
                                 f"{str(err).splitlines()[0] if str(err) else ''} — harness tasks download their "
                                 "datasets from the Hugging Face Hub, unreachable offline") from None
            raise
        for key in merged:
            merged[key].update(res.get(key, {}))
    return merged


def config_sha256(cfg: dict, root: Path) -> str:
    """The task config as lm-eval resolved it, minus where this checkout and its temp files happen to be."""
    cfg = {**cfg, "metadata": {k: v for k, v in (cfg.get("metadata") or {}).items() if k != "config_source"}}
    text = json.dumps(cfg, sort_keys=True, default=str).replace(str(root.resolve()) + "/", "")
    return hashlib.sha256(text.encode()).hexdigest()


def evaluate_model(lm, tasks, fewshot, tm, p, seed, harness: str, weights: str, out: Path | None, prefix: str,
                   root: Path) -> dict:
    res = run_tasks(lm, tasks, fewshot, tm, p, seed)
    scores, provenance = {}, {}
    for t in tasks:
        r = res["results"][t.name]
        scores[t.name] = {k: round(v, 6) for key, v in sorted(r.items())
                          if isinstance(v, float) and (k := metric_key(key))}
        cfg = res["configs"][t.name]
        provenance[t.name] = {
            "harness": harness, "task_version": res["versions"][t.name], "output_type": cfg.get("output_type"),
            "dataset": t.path or cfg.get("dataset_path"),
            "prompt": str(cfg.get("doc_to_text")),
            "task_config_sha256": config_sha256(cfg, root),
            "num_fewshot": fewshot[t.name], "fewshot_seed": seed, "batch_size": p.batch_size, "dtype": DTYPE,
            "n_samples": res["n-samples"][t.name]["effective"], "weights_sha256": weights,
        }
        if out is not None:
            files.write_jsonl(out / f"{prefix}__{t.name}.jsonl", sample_rows(res["samples"][t.name]))
    return {"weights_sha256": weights, "tasks": scores, "provenance": provenance}


def sample_rows(samples: list[dict]) -> list[dict]:
    keep = ("doc_id", "target", "filtered_resps", "acc", "acc_norm", "exact_match")
    return [{k: s[k] for k in keep if k in s} for s in sorted(samples, key=lambda s: s["doc_id"])]


def run(ctx: StageContext) -> None:
    import lm_eval as lm_eval_pkg
    import torch
    from lm_eval.tasks import TaskManager

    p, seed = ctx.params.evaluate, ctx.params.seed
    harness = f"lm-eval {lm_eval_pkg.__version__}"
    torch.set_num_threads(ctx.params.pretrain.threads)
    # Everything is checked before the first model is loaded: task files line by line, task names, checkpoints.
    for t in p.tasks:
        if t.kind != "harness":
            check_task_file(ctx.path(t.path), t.kind)
    baselines = eval_report.load_baselines(ctx.path(p.baselines), p.tasks) if p.baselines else None
    checkpoints = resolve_checkpoints(ctx, p.checkpoints)
    fewshot = {t.name: p.num_fewshot if t.num_fewshot is None else t.num_fewshot for t in p.tasks}
    # Cap by a hash of the id, not by id order (ids group by language, a prefix would drop languages).
    valid = sorted(files.read_docs(ctx.path(VALID)), key=lambda d: h64(seed, "ppl", d["id"]))[: p.ppl_max_docs]
    results: dict = {"harness": {"name": "lm-eval", "version": lm_eval_pkg.__version__},
                     "settings": {"num_fewshot": fewshot, "batch_size": p.batch_size, "seed": seed,
                                  "dtype": DTYPE, "device": "cpu", "add_bos_token": True},
                     "models": {}, "checkpoints": {}}
    with tempfile.TemporaryDirectory() as tdir, files.atomic_dir(ctx.path(OUT)) as out:
        for t in p.tasks:
            if t.kind != "harness":
                (Path(tdir) / f"{t.name}.yaml").write_text(yaml.safe_dump(task_yaml(t, ctx.path(t.path).resolve())))
        harness_tasks = [t.name for t in p.tasks if t.kind == "harness"]
        tm = TaskManager(include_path=tdir, include_defaults=bool(harness_tasks))  # lm-eval's index costs ~5 s
        check_harness_tasks(harness_tasks, tm)
        for name, rel in MODELS.items():
            mdir = ctx.path(rel).resolve()
            lm = load_lm(str(mdir), None, p.batch_size)
            results["models"][name] = evaluate_model(lm, p.tasks, fewshot, tm, p, seed, harness,
                                                     weights_sha256(mdir), out, name, ctx.root)
            results["models"][name]["perplexity"] = perplexity(lm, valid, ctx.params.tokenize.seq_len)
        order = lambda kv: (PHASES.index(kv[1]["phase"]) if kv[1]["phase"] in PHASES else len(PHASES),  # noqa: E731
                            kv[1]["step"], kv[0])  # training order: main, extension, annealing
        for rev, c in sorted(checkpoints.items(), key=order):
            lm = load_lm(c["source"], c["revision"], p.batch_size)
            local = Path(c["source"]) / "model.safetensors"
            weights = files.sha256_file(local) if local.exists() else f"hub:{c['source']}@{c['revision']}"
            r = evaluate_model(lm, p.tasks, fewshot, tm, p, seed, harness, weights, None, rev, ctx.root)
            results["checkpoints"][rev] = {"phase": c["phase"], "step": c["step"], **r,
                                           "perplexity": perplexity(lm, valid, ctx.params.tokenize.seq_len)}
        table = eval_report.rows(results, p.tasks, baselines)
        models = list(results["models"])
        (out / "results.md").write_text(eval_report.markdown(table, models, baselines), encoding="utf-8")
        eval_report.bar_chart(table, models, baselines, out / "scores.png")
    results["tasks"] = [t.model_dump() for t in p.tasks]
    results["table"] = table
    ctx.write_metrics("metrics/eval.json", results)
    for rel, text in ((SCORES_PLOT, eval_report.scores_csv(table, models, baselines)),
                      (CURVE_PLOT, eval_report.curve_csv(results, p.tasks, eval_report.phase_offsets(ctx.params)))):
        ctx.path(rel).parent.mkdir(parents=True, exist_ok=True)
        ctx.path(rel).write_text(text, encoding="utf-8")
    ctx.tracker.artifact(ctx.path(OUT), "eval_samples")
    line = "; ".join(f"{m}: " + ", ".join(f"{r['task']} {r[m]:.2f}" for r in table if r.get(m) is not None)
                     for m in models)
    ctx.summary(f"{line}; {len(checkpoints)} checkpoints -> metrics/eval.json, {OUT}/results.md")


def main() -> None:
    with stage("evaluate") as ctx:
        run(ctx)


if __name__ == "__main__":
    main()
