"""release: build the exact trees that go to the Hub, with checksums and an openness card.

  release/model/     base model (safetensors, config, tokenizer), model card, eval results, training log
  release/instruct/  the SFT+DPO model, same layout
  release/dataset/   the training corpus as Parquet by language/source, dataset card, datasheets
  release/code/      source archive of the commit that built all this (git archive) + code.json
  release/openness/  openness.json / .md / badge.svg computed from the evidence in this tree
  release/MANIFEST.json  sha256 of every file + lineage (git commit, dvc.lock digest, stage outputs)

The openness card is computed from what the tree actually contains (model_card.evidence),
not from params: a missing or mis-licensed component shows up as such.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter, defaultdict
from pathlib import Path

import yaml

from . import io
from .runtime import StageContext, StageError, stage

OUT = "release"
# release subtree -> (pipeline output, key of its results in metrics/eval.json)
MODELS = {"model": ("artifacts/models/base", "base"), "instruct": ("artifacts/models/instruct", "instruct")}
METRICS = ("ingest", "filter", "dedup", "mix", "tokenizer", "pretrain", "align", "eval")
CARD_TEMPLATE = Path(__file__).resolve().parent.parent / "model_card" / "templates" / "model_card.md.j2"


def eval_results(evals: dict, model_key: str, harness: str):
    from huggingface_hub import EvalResult

    kinds = {t["name"]: t["kind"] for t in evals["tasks"]}
    out = []
    for task, scores in evals["models"][model_key]["tasks"].items():
        task_type = "multiple-choice" if kinds.get(task) == "multiple_choice" else "text-generation"
        for metric, value in sorted(scores.items()):
            out.append(EvalResult(task_type=task_type, task_name=task, dataset_type=f"lucie-repro/{task}",
                                  dataset_name=task, metric_type=metric, metric_value=value, source_name=harness,
                                  source_url="https://github.com/EleutherAI/lm-evaluation-harness"))
    return out


def model_card(p, key: str, metrics: dict, openness_md: str) -> str:
    from huggingface_hub import ModelCard, ModelCardData

    r, evals, eval_key = p.release, metrics["eval"], MODELS[key][1]
    name = r.model_name if key == "model" else f"{r.model_name}-instruct"
    data = ModelCardData(
        language=r.languages, license=r.license, library_name="transformers", pipeline_tag="text-generation",
        datasets=[f"{r.organization}/{r.model_name}-data"], model_name=name,
        base_model=None if key == "model" else f"{r.organization}/{r.model_name}",
        eval_results=eval_results(evals, eval_key, f"{evals['harness']['name']} {evals['harness']['version']}"),
        tags=["lucie-repro", "openness-audit"],
    )
    card = ModelCard.from_template(
        data, template_path=str(CARD_TEMPLATE), model_id=f"{r.organization}/{name}", recipe=p.recipe,
        kind="base" if key == "model" else "instruct (SFT + DPO)", model=p.model.model_dump(),
        pretrain=metrics["pretrain"], align=metrics["align"], evals=evals["models"][eval_key],
        code_url=r.code_url, openness=openness_md,
    )
    return str(card)


def technical_report(p, metrics: dict, commit: str) -> str:
    """A report of this run rendered from the pipeline's own metrics (the MOF's 'Technical report')."""
    from model_card.render import env

    m = metrics
    return env().get_template("technical_report.md.j2").render(
        name=p.release.model_name, commit=commit, recipe=p.recipe, pretrain=m["pretrain"], align=m["align"],
        evals=m["eval"], model=p.model.model_dump(), hp=p.pretrain.model_dump(), ingest=m["ingest"],
        filt=m["filter"], dedup=m["dedup"], mix=m["mix"], tokenizer=m["tokenizer"])


def git_archive(root: Path, out: Path) -> dict:
    def git(*args):
        res = subprocess.run(["git", *args], cwd=root, capture_output=True)
        if res.returncode:
            raise StageError(f"`git {' '.join(args)}` failed ({res.stderr.decode().strip()}); "
                             f"the code reference needs a git checkout with a commit")
        return res.stdout

    commit = git("rev-parse", "HEAD").decode().strip()
    commit_date = git("log", "-1", "--format=%cs", commit).decode().strip()
    name = f"lucie-repro-{commit[:12]}.tar.gz"
    (out / name).write_bytes(git("archive", "--format=tar.gz", f"--prefix=lucie-repro-{commit[:12]}/", commit))
    # A run rewrites dvc.lock and the metrics/plots files it tracks in git; other edits mean the code that
    # ran is not the commit archived here.
    status = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!dvc.lock", ":!metrics", ":!plots")
    return {"commit": commit, "date": commit_date, "archive": name, "sha256": io.sha256_file(out / name),
            "dirty_worktree": bool(status.strip()), "license": project_license(root)}


def project_license(root: Path) -> str:
    """The code's SPDX license, as pyproject.toml declares it (never typed here)."""
    import tomllib

    lic = tomllib.loads((root / "pyproject.toml").read_text())["project"].get("license")
    if not isinstance(lic, str):
        raise StageError("pyproject.toml: project.license must be an SPDX expression string")
    return lic


def write_dataset(ctx: StageContext, out: Path, metrics: dict) -> dict:
    from huggingface_hub import DatasetCard, DatasetCardData

    from datasheets.datasheet import render, source_facts

    rows = list(io.read_docs(ctx.path("data/dedup")))
    groups: dict[tuple, list] = defaultdict(list)
    for r in rows:
        groups[(r["lang"], r["source"])].append(r)
    for (lang, source), members in sorted(groups.items()):
        d = out / "data" / lang / source
        d.mkdir(parents=True)
        io.write_docs(d, members, ctx.params.ingest.rows_per_shard)
    removed = Counter(json.loads(l)["source"] for l in open(ctx.path("data/dedup/removed.jsonl")) if l.strip())
    (out / "datasheets").mkdir()
    by_source = defaultdict(list)
    for r in rows:
        by_source[r["source"]].append(r)
    for src in ctx.params.data.sources:
        facts = source_facts(src.name, by_source.get(src.name, []), metrics["ingest"], metrics["filter"], removed,
                             src.model_dump())
        (out / "datasheets" / f"{src.name}.md").write_text(render(facts), encoding="utf-8")
    licenses = sorted({r["license"] for r in rows})
    langs = sorted({lang for lang, _ in groups} - {"code"})
    r = ctx.params.release
    data = DatasetCardData(
        language=langs, license=licenses[0].lower() if len(licenses) == 1 else "other",
        task_categories=["text-generation"], pretty_name=f"{r.model_name} training data",
        configs=[{"config_name": "default", "data_files": "data/*/*/*.parquet"}]
        + [{"config_name": lang, "data_files": f"data/{lang}/*/*.parquet"} for lang in sorted({l for l, _ in groups})],
    )
    summary = (f"{len(rows)} documents after filtering and deduplication, from {len(by_source)} sources. "
               f"Licenses: {', '.join(licenses)}. Datasheets per source are in `datasheets/`.")
    card = DatasetCard.from_template(data, pretty_name=data.pretty_name, dataset_summary=summary)
    (out / "README.md").write_text(str(card), encoding="utf-8")
    return {"docs": len(rows), "licenses": licenses}


UPSTREAM = ("ingest", "filter", "dedup", "mix", "tokenizer", "tokenize", "pretrain", "align", "evaluate")


def lineage(root: Path, commit: str) -> dict:
    """The DVC-recorded outputs of the stages this release was built from.

    While `dvc repro` runs, dvc.lock is rewritten after every stage; when release runs, the
    upstream entries are final but release/publish still hold the previous run's. So only the
    upstream entries are recorded (no whole-file hash of a lock that is never committed as seen).
    """
    lock = root / "dvc.lock"
    stages = yaml.safe_load(lock.read_text()).get("stages", {}) if lock.exists() else {}
    outs = {name: {o["path"]: o.get("md5") for o in stages[name].get("outs", [])} for name in UPSTREAM if name in stages}
    return {"git_commit": commit, "stages": outs}


def manifest(tree: Path, lin: dict, previous: dict | None = None, changed: tuple[str, ...] = ()) -> dict:
    """sha256 of every file but the manifest and the openness card; with `previous`, only `changed`
    files are hashed again (the second rating pass rewrites just the model cards)."""
    if previous:
        return {"files": {**previous["files"], **{rel: io.sha256_file(tree / rel) for rel in changed}}, "lineage": lin}
    files = {str(f.relative_to(tree)): io.sha256_file(f) for f in sorted(tree.rglob("*"))
             if f.is_file() and f.name != "MANIFEST.json" and f.relative_to(tree).parts[0] != "openness"}
    return {"files": files, "lineage": lin}


def run(ctx: StageContext) -> None:
    from model_card import mof_export
    from model_card import render as orender
    from model_card.evidence import collect_release

    p = ctx.params
    metrics = {k: io.read_json(ctx.path(f"metrics/{k}.json")) for k in METRICS}  # read once, used by every card
    with io.atomic_dir(ctx.path(OUT)) as tmp:
        for key, (src, eval_key) in MODELS.items():
            d = tmp / key
            shutil.copytree(ctx.path(src), d)
            io.write_json(d / "eval_results.json", metrics["eval"]["models"][eval_key])
            shutil.copy(ctx.root / "LICENSE", d / "LICENSE")
            (d / "training_logs").mkdir()
            shutil.copy(ctx.path("plots/pretrain_loss.csv"), d / "training_logs" / "pretrain_loss.csv")
        ds = write_dataset(ctx, tmp / "dataset", metrics)
        (tmp / "dataset" / "eval").mkdir()  # the evaluation data, next to the training data it must not overlap
        for t in p.evaluate.tasks:
            shutil.copy(ctx.path(t.path), tmp / "dataset" / "eval" / f"{t.name}.jsonl")
        shutil.copytree(ctx.path("artifacts/eval"), tmp / "model" / "eval_samples")  # per-sample outputs
        (tmp / "code").mkdir()
        code = {"repository": p.release.code_url, **git_archive(ctx.root, tmp / "code")}
        io.write_json(tmp / "code" / "code.json", code)
        lin = lineage(ctx.root, code["commit"])
        (tmp / "model" / "technical_report.md").write_text(technical_report(p, metrics, code["commit"]))

        # Two passes: the rating cannot depend on the card's own bytes, so rate, write the cards, re-check.
        cards = tuple(f"{key}/README.md" for key in MODELS)

        def rate(previous=None):
            m = manifest(tmp, lin, previous, cards)
            io.write_json(tmp / "MANIFEST.json", m)
            ev = collect_release(tmp, OUT)
            return m, ev, orender.audit(ev)

        for key in MODELS:
            (tmp / key / "README.md").write_text(model_card(p, key, metrics, ""))
        first_manifest, _, first = rate()
        md = orender.to_markdown(first)
        for key in MODELS:
            (tmp / key / "README.md").write_text(model_card(p, key, metrics, md))
        _, ev, card = rate(first_manifest)
        frameworks = ("osaid", "mof", "osai_index", "nextcloud")
        if any(card[f] != first[f] for f in frameworks):
            raise StageError("the openness rating changed when the model cards were written into the release")
        (tmp / "openness").mkdir()
        (tmp / "openness" / "openness.json").write_text(orender.to_json(card))
        (tmp / "openness" / "openness.md").write_text(md)
        (tmp / "openness" / "badge.svg").write_text(orender.badge_svg(card))
        record = mof_export.to_record(ev, p.release.model_name, code["date"],
                                      producer=p.release.organization, repository=p.release.code_url)
        (tmp / "openness" / "mof.yml").write_text(mof_export.to_yaml(record))
    n_files = len(io.read_json(ctx.path(OUT) / "MANIFEST.json")["files"])
    nc = card["nextcloud"]
    ctx.write_metrics("metrics/release.json", {"files": n_files, "dataset_docs": ds["docs"],
                                               "nextcloud_color": nc["color"], "nextcloud_conditions_met": nc["conditions_met"],
                                               "osaid_compliant": card["osaid"]["compliant"], "mof_class": card["mof"]["class"],
                                               "osai_index_score": round(card["osai_index"]["score"], 4),
                                               "verified_components": sum(c["verified"] for c in card["evidence"]["components"])})
    ctx.tracker.artifact(ctx.path(OUT) / "openness", "openness")
    ctx.summary(f"{n_files} files, dataset {ds['docs']} docs, code {code['commit'][:12]}, "
                f"Nextcloud {nc['color']} ({nc['conditions_met']}/3), OSAID "
                f"{'compliant' if card['osaid']['compliant'] else 'not compliant'}, MOF {card['mof']['label']}, "
                f"OSAI index {card['osai_index']['score']:.2f} -> {OUT}")


def main() -> None:
    with stage("release") as ctx:
        run(ctx)


if __name__ == "__main__":
    main()
