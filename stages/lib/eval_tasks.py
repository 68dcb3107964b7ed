"""Evaluation task definitions: the lm-eval YAML written for each shipped task, and the checks that run
before any model is loaded.

Local tasks are JSONL files the project ships (FR/EN multiple choice and short answer); lm-eval resolves
relative data paths against the process cwd, so the YAML gets absolute ones. Harness tasks are lm-eval's
own (arc_challenge, french_bench_*, Okapi arc_fr ...): they need the Hugging Face Hub for their datasets.
A malformed line in a task file is an error naming the file and line, raised before evaluation starts.
"""
from __future__ import annotations

import json
from pathlib import Path

from stages.core.params import EvalTask
from stages.core.runtime import StageError

PROMPT = "Question: {{question}}\nAnswer:"


def task_yaml(t: EvalTask, data: Path) -> dict:
    common = {"task": t.name, "dataset_path": "json", "dataset_name": None,
              "dataset_kwargs": {"data_files": {"test": str(data)}}, "test_split": "test",
              "metadata": {"version": 1.0, "lang": t.lang}}
    if t.kind == "multiple_choice":
        return {**common, "output_type": "multiple_choice", "doc_to_text": PROMPT,
                "doc_to_target": "{{choices.label.index(answerKey)}}", "doc_to_choice": "{{choices.text}}",
                "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                                {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}]}
    return {**common, "output_type": "generate_until", "doc_to_text": PROMPT, "doc_to_target": "{{answer}}",
            "generation_kwargs": {"until": ["\n"], "max_gen_toks": 16, "do_sample": False},
            "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                             "ignore_case": True, "ignore_punctuation": True}]}


def headline_metric(t: EvalTask) -> str:
    return t.metric or ("exact_match" if t.kind == "generate" else "acc")


def _record_problem(rec, kind: str) -> str | None:
    if not isinstance(rec, dict):
        return "expected a JSON object"
    if not isinstance(rec.get("question"), str) or not rec["question"].strip():
        return "'question' must be a non-empty string"
    if kind == "generate":
        return None if isinstance(rec.get("answer"), str) and rec["answer"].strip() else "'answer' must be a non-empty string"
    ch = rec.get("choices")
    if not isinstance(ch, dict) or not isinstance(ch.get("text"), list) or not isinstance(ch.get("label"), list):
        return "'choices' must be an object with lists 'text' and 'label'"
    if len(ch["text"]) < 2 or len(ch["text"]) != len(ch["label"]):
        return f"'choices' needs at least 2 options and as many labels as texts ({len(ch['text'])} vs {len(ch['label'])})"
    if not all(isinstance(x, str) for x in ch["text"] + ch["label"]):
        return "choice texts and labels must be strings"
    if rec.get("answerKey") not in ch["label"]:
        return f"'answerKey' {rec.get('answerKey')!r} is not one of the labels {ch['label']}"
    return None


def check_task_file(path: Path, kind: str) -> int:
    """Number of records in a local task file; StageError 'FILE:LINE: problem' on the first bad one."""
    if not path.exists():
        raise StageError(f"{path}: task file not found")
    n = 0
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise StageError(f"{path}:{lineno}: invalid UTF-8 ({err.reason})") from None
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise StageError(f"{path}:{lineno}: invalid JSON ({err.msg})") from None
            problem = _record_problem(rec, kind)
            if problem:
                raise StageError(f"{path}:{lineno}: {problem}")
            n += 1
    if not n:
        raise StageError(f"{path}: no records")
    return n


def check_harness_tasks(names: list[str], task_manager) -> None:
    unknown = sorted(set(names) - set(task_manager.all_tasks))
    if unknown:
        raise StageError(f"evaluate.tasks: {', '.join(unknown)} not lm-eval tasks (lm-eval {_version()}); "
                         "see `lm_eval ls tasks`")


def _version() -> str:
    import lm_eval

    return lm_eval.__version__
