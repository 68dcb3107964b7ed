"""release: build the exact trees that go to the Hub, with checksums and an openness card.

  release/model/     base model (safetensors, config, tokenizer), model card, eval results, training log
  release/instruct/  the SFT+DPO model, same layout
  release/dataset/   the training corpus as Parquet by language/source, dataset card, datasheets
  release/code/      source archive of the code tree that built all this (stages/lib/code_tree.py) + code.json
  release/openness/  openness.json / .md / badge.svg computed from the evidence in this tree
  release/paper/     the research paper of release.paper, when given (stages/lib/release_paper.py)
  release/MANIFEST.json  sha256 of every file + lineage (code tree, upstream dvc.lock stage outputs)
  release/provenance/  in-toto statement of every file, signed with release.sign's key (stages/lib/provenance.py)

Nothing in release/ names the git commit (a lock-only commit would change it); MLflow and the summary do.

The openness card is computed from what the tree actually contains (model_card.evidence),
not from params: a missing or mis-licensed component shows up as such.
"""
from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path

import yaml

from model_card import mof_export
from model_card import render as orender
from model_card.evidence import collect_release
from stages.core import files
from stages.lib.gguf_export import export as gguf_export
from stages.lib.phases import list_revisions
from stages.lib.provenance import ProvenanceError, sign, write_statement
from stages.lib.release_paper import PaperError, add_paper
from stages.core.runtime import StageContext, StageError, stage

OUT = "release"
# release subtree -> (pipeline output, key of its results in metrics/eval.json)
MODELS = {"model": ("artifacts/models/base", "base"), "instruct": ("artifacts/models/instruct", "instruct")}
METRICS = ("ingest", "filter", "dedup", "mix", "tokenizer", "pretrain", "align", "eval")
VERIFICATION = "verification.json"
PHASE_PLOTS = ("extension_loss.csv", "annealing_loss.csv")  # context extension and annealing loss logs
CARD_TEMPLATE = Path(__file__).resolve().parent.parent / "model_card" / "templates" / "model_card.md.j2"


def eval_results(evals: dict, model_key: str, harness: str, org: str):
    """huggingface_hub EvalResults -> the card's model-index (the same numbers as metrics/eval.json)."""
    from huggingface_hub import EvalResult

    out = []
    model = evals["models"][model_key]
    for task, scores in model["tasks"].items():
        prov = model["provenance"][task]
        local = prov["dataset"].endswith(".jsonl")  # a shipped file; harness tasks name their Hub dataset
        for metric, value in sorted(scores.items()):
            out.append(EvalResult(
                task_type="multiple-choice" if prov["output_type"] == "multiple_choice" else "text-generation",
                task_name=task, dataset_type=f"{org}/{task}" if local else prov["dataset"], dataset_name=task,
                metric_type=metric, metric_value=value, metric_config=f"{prov['num_fewshot']}-shot",
                source_name=harness, source_url="https://github.com/EleutherAI/lm-evaluation-harness"))
    return out


def model_card(p, key: str, metrics: dict, openness_md: str, results_table: str, revisions: list[str]) -> str:
    from huggingface_hub import ModelCard, ModelCardData

    r, evals, eval_key = p.release, metrics["eval"], MODELS[key][1]
    name = r.model_name if key == "model" else f"{r.model_name}-instruct"
    data = ModelCardData(
        language=r.languages, license=r.license, library_name="transformers", pipeline_tag="text-generation",
        datasets=[f"{r.organization}/{r.model_name}-data"], model_name=name,
        base_model=None if key == "model" else f"{r.organization}/{r.model_name}",
        eval_results=eval_results(evals, eval_key, f"{evals['harness']['name']} {evals['harness']['version']}",
                                  r.organization),
        tags=["lucie-repro", "openness-audit"],
    )
    card = ModelCard.from_template(
        data, template_path=str(CARD_TEMPLATE), model_id=f"{r.organization}/{name}", recipe=p.recipe,
        kind="base" if key == "model" else "instruct (SFT + DPO)", model=p.model.model_dump(),
        pretrain=metrics["pretrain"], align=metrics["align"], evals=evals["models"][eval_key],
        results_table=results_table, revisions=revisions if key == "model" else [],
        code_url=r.code_url, openness=openness_md,
    )
    return str(card)


def technical_report(p, metrics: dict, tree: str) -> str:
    """A report of this run rendered from the pipeline's own metrics (the MOF's 'Technical report')."""
    from model_card.render import env

    m = metrics
    return env().get_template("technical_report.md.j2").render(
        name=p.release.model_name, tree=tree, recipe=p.recipe, pretrain=m["pretrain"], align=m["align"],
        evals=m["eval"], model=p.model.model_dump(), hp=p.pretrain.model_dump(), ingest=m["ingest"],
        filt=m["filter"], dedup=m["dedup"], mix=m["mix"], tokenizer=m["tokenizer"])


def git_archive(root: Path, out: Path) -> dict:
    """The code archive, named by the code tree (stages/lib/code_tree.py), so a lock-only commit changes nothing here."""
    from stages.lib.code_tree import CodeTreeError, write_archive

    try:
        info, name = write_archive(root, out, "lucie-repro")
    except CodeTreeError as err:
        raise StageError(str(err)) from None
    # A modified or untracked code file means the code that ran is not the tree archived here.
    return {"tree": info.tree, "date": info.date, "archive": name, "sha256": files.sha256_file(out / name),
            "files": info.files, "dirty_worktree": bool(info.dirty), "license": project_license(root),
            "_head": info.head, "_dirty": info.dirty}


def portable_tokenizer(model_dir: Path) -> None:
    """Loads in transformers 4.4x and 5.x, with the context length (stages/lib/portable_tokenizer.py)."""
    from stages.lib.portable_tokenizer import TokenizerConfigError, make_portable

    try:
        make_portable(model_dir)
    except TokenizerConfigError as err:
        raise StageError(str(err)) from None


def third_party_licenses(lock: Path) -> dict:
    """name -> {version, license} for every package of requirements.lock, from its installed metadata."""
    from importlib import metadata

    out = {}
    for line in lock.read_text().splitlines():
        if "==" not in line or line.startswith("#"):
            continue
        name, version = line.split("==", 1)
        try:
            meta = metadata.metadata(name)
        except metadata.PackageNotFoundError:
            out[name] = {"version": version, "license": None, "note": "not installed where the release was built"}
            continue
        classifiers = sorted(c.split(" :: ", 1)[1] for c in meta.get_all("Classifier") or [] if c.startswith("License ::"))
        declared = meta.get("License-Expression") or (meta.get("License") or "").strip().splitlines()[0:1]
        out[name] = {"version": version, "license": declared if isinstance(declared, str) else (declared[0] if declared else None),
                     "classifiers": classifiers}
    return out


def project_license(root: Path) -> str:
    """The code's SPDX license, as pyproject.toml declares it (never typed here)."""
    import tomllib

    lic = tomllib.loads((root / "pyproject.toml").read_text())["project"].get("license")
    if not isinstance(lic, str):
        raise StageError("pyproject.toml: project.license must be an SPDX expression string")
    return lic


def write_dataset(ctx: StageContext, out: Path, metrics: dict) -> dict:
    rows = list(files.read_docs(ctx.path("data/dedup")))
    groups: dict[tuple, list] = defaultdict(list)
    for r in rows:
        groups[(r["lang"], r["source"])].append(r)
    for (lang, source), members in sorted(groups.items()):
        d = out / "data" / lang / source
        d.mkdir(parents=True)
        files.write_docs(d, members, ctx.params.ingest.rows_per_shard)
    from datasheets.dataset_card import dataset_card
    from datasheets.datasheet import write_datasheets

    with open(ctx.path("data/dedup/removed.jsonl"), encoding="utf-8") as f:
        removed = [json.loads(line) for line in f if line.strip()]
    sources = [s.model_dump() for s in ctx.params.data.sources]
    release = ctx.params.release.model_dump()
    cap = ctx.params.ingest.max_docs_per_source
    write_datasheets(out / "datasheets", groups, sources, metrics, removed, release, cap)
    evals = [{"file": f"eval/{t.name}.jsonl", "task": t.name, "lang": t.lang, "kind": t.kind,  # copied by run()
              "rows": sum(1 for line in ctx.path(t.path).open(encoding="utf-8") if line.strip())}
             for t in ctx.params.evaluate.tasks if t.path]
    (out / "README.md").write_text(dataset_card(groups, sources, metrics, release, removed, cap, evals), encoding="utf-8")
    return {"docs": len(rows), "licenses": sorted({r["license"] for r in rows})}


UPSTREAM = ("ingest", "filter", "dedup", "tokenizer", "mix", "tokenize", "pretrain", "extend", "anneal", "align",
            "evaluate")


def lineage(root: Path, tree: str) -> dict:
    """The DVC-recorded outputs of the stages this release was built from.

    While `dvc repro` runs, dvc.lock is rewritten after every stage; when release runs, the
    upstream entries are final but release/publish still hold the previous run's. So only the
    upstream entries are recorded (no whole-file hash of a lock that is never committed as seen).
    """
    lock = root / "dvc.lock"
    stages = yaml.safe_load(lock.read_text()).get("stages", {}) if lock.exists() else {}
    outs = {name: {o["path"]: o.get("md5") for o in stages[name].get("outs", [])} for name in UPSTREAM if name in stages}
    return {"code_tree": tree, "stages": outs}


def manifest(tree: Path, lin: dict, previous: dict | None = None, changed: tuple[str, ...] = ()) -> dict:
    """sha256 of every file but the manifest and the openness card; with `previous`, only `changed`
    files are hashed again (the second rating pass rewrites just the model cards)."""
    if previous:
        return {"files": {**previous["files"], **{rel: files.sha256_file(tree / rel) for rel in changed}}, "lineage": lin}
    listed = {str(f.relative_to(tree)): files.sha256_file(f) for f in sorted(tree.rglob("*"))
             if f.is_file() and f.name != "MANIFEST.json" and f.relative_to(tree).parts[0] != "openness"}
    return {"files": listed, "lineage": lin}


def copy_models(ctx: StageContext, tmp: Path, metrics: dict) -> tuple[dict, list[str]]:
    """Base and instruct models (portable tokenizer, eval results, LICENSE, training logs), the instruct model as
    GGUF f16 + Q8_0 with an Ollama Modelfile, and every phase's intermediate checkpoints in training order (one Hub
    branch each at publish time). Returns (the GGUF export's summary, the revision names)."""
    for key, (src, eval_key) in MODELS.items():
        d = tmp / key
        shutil.copytree(ctx.path(src), d)
        portable_tokenizer(d)
        files.write_json(d / "eval_results.json", metrics["eval"]["models"][eval_key])
        shutil.copy(ctx.root / "LICENSE", d / "LICENSE")
        (d / "training_logs").mkdir()
        for plot in ("pretrain_loss.csv", *PHASE_PLOTS, "eval_curve.csv"):
            shutil.copy(ctx.path("plots") / plot, d / "training_logs" / plot)
    r = ctx.params.release
    gguf = gguf_export(ctx.path(MODELS["instruct"][0]), tmp / "instruct" / "gguf", quantize=["Q8_0"],
                       name=f"{r.model_name}-instruct", license=r.license, languages=r.languages,
                       tags=["lucie-repro"], repo_url=r.code_url, license_file=ctx.root / "LICENSE")
    found = list_revisions(ctx.root)
    for rev, src in found.items():
        shutil.copytree(src, tmp / "checkpoints" / rev)
        portable_tokenizer(tmp / "checkpoints" / rev)
    return gguf, list(found)


def copy_code(ctx: StageContext, tmp: Path) -> tuple[dict, str, list[str]]:
    """The code tree's archive and code.json, the lock and every package's license, `lucie verify`'s last result
    and the research paper if params name one. Returns (code.json, HEAD commit, dirty files): the commit stays
    outside the hashed outputs."""
    p = ctx.params
    (tmp / "code").mkdir()
    code = {"repository": p.release.code_url, **git_archive(ctx.root, tmp / "code")}
    head, dirty = code.pop("_head"), code.pop("_dirty")
    files.write_json(tmp / "code" / "code.json", code)
    # Supporting libraries and tools: the exact environment and the license of each package in it.
    shutil.copy(ctx.root / "requirements.lock", tmp / "code" / "requirements.lock")
    files.write_json(tmp / "code" / "third_party_licenses.json", third_party_licenses(ctx.root / "requirements.lock"))
    if (ctx.root / VERIFICATION).exists():  # `lucie verify`'s last result; evidence checks what it covers
        (tmp / "reproducibility").mkdir()
        shutil.copy(ctx.root / VERIFICATION, tmp / "reproducibility" / "verification.json")
    try:  # release.paper: a research paper committed in the repo (MOF Class I)
        add_paper(ctx.root, p.release.paper, tmp)
    except PaperError as err:
        raise StageError(str(err)) from None
    return code, head, dirty


def write_cards(ctx: StageContext, tmp: Path, metrics: dict, revisions: list[str], code: dict) -> dict:
    """Model cards, manifest and the openness card (json, md, badge, html, MOF record). Two passes: the rating
    cannot depend on the card's own bytes, so rate, write the cards, re-check. Returns the card."""
    p = ctx.params
    lin = lineage(ctx.root, code["tree"])
    results_table = ctx.path("artifacts/eval/results.md").read_text(encoding="utf-8")
    cards = tuple(f"{key}/README.md" for key in MODELS)

    def rate(previous=None):
        m = manifest(tmp, lin, previous, cards)
        files.write_json(tmp / "MANIFEST.json", m)
        ev = collect_release(tmp, OUT)
        return m, ev, orender.audit(ev)

    for key in MODELS:
        (tmp / key / "README.md").write_text(model_card(p, key, metrics, "", results_table, revisions))
    first_manifest, _, first = rate()
    md = orender.to_markdown(first)
    for key in MODELS:
        (tmp / key / "README.md").write_text(model_card(p, key, metrics, md, results_table, revisions))
    _, ev, card = rate(first_manifest)
    if any(card[f] != first[f] for f in ("osaid", "mof", "osai_index", "nextcloud")):
        raise StageError("the openness rating changed when the model cards were written into the release")
    (tmp / "openness").mkdir()
    (tmp / "openness" / "openness.json").write_text(orender.to_json(card))
    (tmp / "openness" / "openness.md").write_text(md)
    (tmp / "openness" / "badge.svg").write_text(orender.badge_svg(card))
    (tmp / "openness" / "openness.html").write_text(orender.to_html(card))
    record = mof_export.to_record(ev, p.release.model_name, code["date"],
                                  producer=p.release.organization, repository=p.release.code_url)
    (tmp / "openness" / "mof.yml").write_text(mof_export.to_yaml(record))
    return card


def run(ctx: StageContext) -> None:
    p = ctx.params
    metrics = {k: files.read_json(ctx.path(f"metrics/{k}.json")) for k in METRICS}  # read once, used by every card
    with files.atomic_dir(ctx.path(OUT)) as tmp:
        gguf, revisions = copy_models(ctx, tmp, metrics)
        ds = write_dataset(ctx, tmp / "dataset", metrics)
        (tmp / "dataset" / "eval").mkdir()  # the evaluation data, next to the training data it must not overlap
        for t in p.evaluate.tasks:
            if t.path:  # harness tasks live on the Hub (their provenance names the dataset)
                shutil.copy(ctx.path(t.path), tmp / "dataset" / "eval" / f"{t.name}.jsonl")
        shutil.copytree(ctx.path("artifacts/eval"), tmp / "model" / "eval_samples")  # per-sample outputs
        code, head, dirty = copy_code(ctx, tmp)
        (tmp / "model" / "technical_report.md").write_text(technical_report(p, metrics, code["tree"]))
        card = write_cards(ctx, tmp, metrics, revisions, code)
        write_statement(tmp)  # in-toto statement: every file's sha256 -> code tree, dvc.lock outputs, verify result
    if p.release.sign.private_key:  # signed under its final name (the signed payload names the directory)
        try:
            sign(ctx.path(OUT), p.release.sign.private_key)
        except ProvenanceError as err:
            raise StageError(str(err)) from None
    n_files = len(files.read_json(ctx.path(OUT) / "MANIFEST.json")["files"])
    nc = card["nextcloud"]
    ctx.write_metrics("metrics/release.json", {"files": n_files, "dataset_docs": ds["docs"],
                                               "nextcloud_color": nc["color"], "nextcloud_conditions_met": nc["conditions_met"],
                                               "osaid_compliant": card["osaid"]["compliant"], "mof_class": card["mof"]["class"],
                                               "osai_index_score": round(card["osai_index"]["score"], 4),
                                               "gguf_files": len(gguf["files"]), "checkpoints": len(revisions),
                                               "signed": bool(p.release.sign.private_key),
                                               "reproduction": card["evidence"]["reproduction"]["status"],
                                               "verified_components": sum(c["verified"] for c in card["evidence"]["components"])})
    ctx.tracker.artifact(ctx.path(OUT) / "openness", "openness")
    ctx.tracker.params({"code_tree": code["tree"], "code_head_commit": head, "code_dirty_files": len(dirty)})
    if dirty:
        print(f"release: {len(dirty)} code files differ from HEAD (first: {dirty[0]}); commit them before "
              "`dvc repro`, or the code components are only claimed and a clone cannot reproduce this release")
    ctx.summary(f"{n_files} files, dataset {ds['docs']} docs, code tree {code['tree'][:12]} (HEAD {head[:12]}), "
                f"Nextcloud {nc['color']} ({nc['conditions_met']}/3), OSAID "
                f"{'compliant' if card['osaid']['compliant'] else 'not compliant'}, MOF {card['mof']['label']}, "
                f"OSAI index {card['osai_index']['score']:.2f} -> {OUT}")


def main() -> None:
    with stage("release") as ctx:
        run(ctx)


if __name__ == "__main__":
    main()
