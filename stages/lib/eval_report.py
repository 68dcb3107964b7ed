"""The evaluation at a glance: a results table (base vs instruct, and, when a baselines file is
configured, the published Lucie-7B and baseline scores beside ours), a bar chart of the same numbers, and
the learning curve over intermediate checkpoints. One source of numbers: metrics/eval.json's results.
"""
from __future__ import annotations

import csv
import io as io_text
from pathlib import Path

import yaml

from stages.lib.eval_tasks import headline_metric
from stages.core.runtime import StageError


def load_baselines(path: Path, tasks) -> dict:
    if not path.exists():
        raise StageError(f"evaluate.baselines: {path} not found")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    for t in tasks:
        if t.baseline and t.baseline not in data["tasks"]:
            raise StageError(f"task {t.name!r}: baseline {t.baseline!r} is not in {path}")
    return data


def rows(results: dict, tasks, baselines: dict | None) -> list[dict]:
    """One row per task: our models' headline scores and the published ones for the same task."""
    out = []
    for t in tasks:
        metric = headline_metric(t)
        row = {"task": t.name, "lang": t.lang, "metric": metric,
               "num_fewshot": results["models"]["base"]["provenance"][t.name]["num_fewshot"]}
        for name, r in results["models"].items():
            row[name] = r["tasks"].get(t.name, {}).get(metric)
        published = (baselines or {}).get("tasks", {}).get(t.baseline or "", {})
        if published and published["metric"] != metric:
            raise StageError(f"task {t.name!r}: our metric {metric} vs published {published['metric']}; "
                             "set the task's `metric` to compare like with like")
        row["published"] = published.get("scores", {})
        row["published_shots"] = published.get("num_fewshot")
        out.append(row)
    return out


def markdown(table: list[dict], models: list[str], baselines: dict | None) -> str:
    published = (baselines or {}).get("models", [])
    head = ["task", "metric", "shots"] + models + published
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    fmt = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
    for r in table:
        shots = str(r["num_fewshot"]) + ("" if r["published_shots"] in (None, r["num_fewshot"])
                                         else f" (published: {r['published_shots']})")
        lines.append("| " + " | ".join([r["task"], r["metric"], shots] + [fmt(r.get(m)) for m in models]
                                       + [fmt(r["published"].get(m)) for m in published]) + " |")
    note = f"\nPublished scores: {baselines['source']}.\n" if baselines else ""
    return "\n".join(lines) + "\n" + note


def scores_csv(table: list[dict], models: list[str], baselines: dict | None) -> str:
    buf = io_text.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["task", "metric", "model", "value"])
    for r in table:
        for m in models:
            if r.get(m) is not None:
                w.writerow([r["task"], r["metric"], m, r[m]])
        for m in (baselines or {}).get("models", []):
            if m in r["published"]:
                w.writerow([r["task"], r["metric"], f"published: {m}", r["published"][m]])
    return buf.getvalue()


def phase_offsets(params) -> dict[str, int]:
    """Optimizer steps before each phase starts: a phase's step s is global step offset + s (one x axis)."""
    main = params.pretrain.steps
    ext = params.extension.steps if params.extension.enabled else 0
    return {"main": 0, "extension": main, "annealing": main + ext}


def curve_csv(results: dict, tasks, offsets: dict[str, int] | None = None) -> str:
    """One row per checkpoint and task; `global_step` counts across phases (steps restart in each phase)."""
    buf = io_text.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["revision", "phase", "step", "task", "metric", "value", "global_step"])
    for rev, r in results.get("checkpoints", {}).items():
        for t in tasks:
            value = r["tasks"].get(t.name, {}).get(headline_metric(t))
            if value is not None:
                w.writerow([rev, r["phase"], r["step"], t.name, headline_metric(t), value,
                            (offsets or {}).get(r["phase"], 0) + r["step"]])
    return buf.getvalue()


def bar_chart(table: list[dict], models: list[str], baselines: dict | None, out: Path) -> None:
    """Grouped bars per task: our models, then the released Lucie-7B when the baselines file has it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = [(m, [r.get(m) for r in table]) for m in models]
    if baselines and baselines.get("models"):
        ref = baselines["models"][0]
        series.append((f"{ref} (published)", [r["published"].get(ref) for r in table]))
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(table)), 4))
    width = 0.8 / len(series)
    for k, (label, values) in enumerate(series):
        xs = [i + k * width for i, v in enumerate(values) if v is not None]
        ax.bar(xs, [v for v in values if v is not None], width, label=label)
    ax.set_xticks([i + width * (len(series) - 1) / 2 for i in range(len(table))])
    ax.set_xticklabels([f"{r['task']}\n{r['metric']}" for r in table], fontsize=8)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, format="png", metadata={"Software": None})  # no version string: same bytes across runs
    plt.close(fig)
