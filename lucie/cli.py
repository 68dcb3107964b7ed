"""`lucie` — thin CLI. Each command delegates to a module that does the work."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


@app.command()
def run(stages: Optional[list[str]] = typer.Argument(None, help="These stages and their upstream (default: all)."),
        root: Path = typer.Option(Path("."), help="Repository root.")):
    """Run the pipeline through the Prefect flow (one task per DVC stage; only a killed stage is retried).

    Exit code: 0, or the failed stage's own (2 params, 3 data/input, 1 a crash); see the flow's logs in the
    Prefect UI (README: "Watching a run")."""
    import os

    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    # The stages' output and the table below are the console; Prefect's own lines go to its API (the UI).
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    from flows.server import local_prefect_api

    with local_prefect_api() as wait_ready:  # boots while the imports below run
        from flows.pipeline import PipelineFailed, run_pipeline

        try:
            results, failed = run_pipeline(root=str(root), stages=stages or None, wait_ready=wait_ready), None
        except PipelineFailed as err:
            results, failed = err.results, err.failure
    for r in results:
        typer.echo(f"{r['stage']:<10} {r['status']:<24} {r['seconds']:>6.1f} s")
    if failed:  # one line; the stage's full output is above (and in the Prefect UI's logs)
        code = failed.code if failed.code is not None and 0 < failed.code < 128 else 1
        typer.echo(f"lucie run: {failed} (exit code {failed.code}; not retried)", err=True)
        raise typer.Exit(code)


@app.command()
def recipe(name: str = typer.Argument(..., help="A file recipes/<name>.yaml, e.g. tiny or lucie-7b."),
           root: Path = typer.Option(Path("."), help="Repository root.")):
    """Make recipes/<name>.yaml the active params.yaml (validated first)."""
    from stages.core.params import ParamsError, load

    src = root / "recipes" / f"{name}.yaml"
    if not src.exists():
        names = sorted(p.stem for p in (root / "recipes").glob("*.yaml"))
        raise typer.BadParameter(f"no recipe {name!r}; available: {', '.join(names)}")
    try:
        load(src)
    except ParamsError as err:
        raise typer.BadParameter(str(err))
    shutil.copy(src, root / "params.yaml")
    typer.echo(f"params.yaml <- {src}")


@app.command("inspect-batch")
def inspect_batch(step: int = typer.Argument(..., help="Optimizer step, 1-based as in plots/pretrain_loss.csv."),
                  root: Path = typer.Option(Path("."), help="Repository root."),
                  world_size: int = typer.Option(1, help="Processes the run used (the batch is global anyway)."),
                  phase: str = typer.Option("main", help="main, extension or annealing (steps count from 1 in each).")):
    """Print which documents (and which token ranges of them) a training step saw."""
    from stages.lib.batches import documents_of_step, tokens_dir
    from stages.core.params import load
    from stages.core.runtime import params_path

    try:
        rows = documents_of_step(load(params_path(root)), tokens_dir(root, phase), step, world_size, phase)
    except ValueError as err:
        raise typer.BadParameter(str(err))
    typer.echo(f"{'sample':>8} {'doc_id':<24} {'doc tokens':>14} {'in sample':>12}")
    for r in rows:
        d0, s0 = r["doc_token_start"], r["sample_token_start"]
        typer.echo(f"{r['sample']:>8} {r['doc_id']:<24} {d0:>6}-{d0 + r['length']:<7} {s0:>5}-{s0 + r['length']:<6}")


AUDIT_FORMATS = ("json", "md", "html", "svg")


@app.command()
def audit(path: str = typer.Argument(..., help="A release directory (MANIFEST.json), a published repo (release_manifest.json), "
                                               "a Hugging Face model snapshot directory (README.md / config.json), a MOF YAML "
                                               "record (.yml), or hf://ORG/NAME[@REV] (read through the Hub API). "
                                               "`diff A B` compares two of these."),
          others: Optional[list[str]] = typer.Argument(None, hidden=True),
          format: str = typer.Option("md", "--format", "-f", help="json, md, html (standalone page) or svg (badge); diff: json or md."),
          require: Optional[list[str]] = typer.Option(
              None, "--require", "-r", help="Fail (exit 1) unless this holds; repeatable: osaid, mof-class=N, "
                                            "nextcloud=COLOR, osai-index>=X."),
          output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the card here, not to stdout."),
          endpoint: Optional[str] = typer.Option(None, "--endpoint", help="Hub endpoint for hf:// (default: HF_ENDPOINT or the Hub)."),
          fail_on: Optional[str] = typer.Option(None, "--fail-on", help="diff only: `regression` exits 1 when B is less open than A.")):
    """Compute the openness card of a release, a published repo, a model snapshot, a Hub repo or a MOF record (no torch
    needed); `lucie audit diff A B` lists what changed between two of them.

    Exit codes: 0 the card was computed and every --require holds (diff: no regression asked for, or none); 1 a
    requirement failed (each failure on stderr) or, with --fail-on regression, B regressed; 2 bad usage: unknown
    format or requirement, a path that is none of the inputs; 3-7 a hostile input refused (too large, not a
    regular file, a symlink out of the input, YAML anchors/aliases, nesting too deep: docs/AUDIT.md).
    """
    # model_card only: this command must run where only the core dependencies are installed.
    from model_card import render
    from model_card.collect import InputError, collect
    from model_card.require import RequirementError, failures, parse
    from model_card.safe_read import UnsafeInput
    from model_card.untrusted import one_line

    def usage_error(msg: str):
        typer.echo(f"error: {one_line(msg)}", err=True)  # one line, no escape sequence from the input
        raise typer.Exit(2)

    def card_of(p: str) -> dict:
        try:
            got = collect(p, endpoint=endpoint)
        except InputError as err:
            usage_error(str(err))
        except UnsafeInput as err:  # hostile input: its own exit code (3-7), nothing written
            typer.echo(f"refused: {one_line(err)}", err=True)
            raise typer.Exit(err.exit_code)
        return render.audit(got.evidence, got.mot_record)

    def emit(text: str):
        if output is not None:
            output.write_text(text, encoding="utf-8")
        else:
            typer.echo(text, nl=False)

    if path == "diff":
        from model_card import diff

        if len(others or []) != 2:
            usage_error("`lucie audit diff A B` takes two inputs (paths, MOF records or hf:// addresses)")
        if format not in ("json", "md"):
            usage_error(f"unknown diff format {format!r}; use json or md")
        if fail_on not in (None, "regression"):
            usage_error(f"--fail-on {fail_on!r}: the only value is `regression`")
        d = diff.compare(card_of(others[0]), card_of(others[1]))
        emit(diff.to_json(d) if format == "json" else diff.to_markdown(d))
        if fail_on == "regression" and d["regressions"]:
            typer.echo(f"regression: {d['regressions']} of {len(d['changes'])} changes make B less open than A", err=True)
            raise typer.Exit(1)
        return
    if others:
        usage_error(f"unexpected arguments {others}; audit takes one PATH (or `diff A B`)")
    if fail_on is not None:
        usage_error("--fail-on applies to `lucie audit diff A B` only")
    if format not in AUDIT_FORMATS:
        usage_error(f"unknown format {format!r}; use one of {', '.join(AUDIT_FORMATS)}")
    reqs = require or []
    for r in reqs:  # a typo must stop the gate before any work, not pass it
        try:
            parse(r)
        except RequirementError as err:
            usage_error(str(err))
    card = card_of(path)
    text = {"json": render.to_json, "md": render.to_markdown, "html": render.to_html, "svg": render.badge_svg}[format](card)
    emit(text)
    failed = failures(card, reqs)
    for f in failed:
        typer.echo(f"requirement failed: {f}", err=True)
    if failed:
        raise typer.Exit(1)


@app.command()
def verify(stages: Optional[list[str]] = typer.Argument(None, help="These stages and their upstream (default: all)."),
           root: Path = typer.Option(Path("."), help="Repository root; its HEAD commit is verified."),
           keep_scratch: bool = typer.Option(False, "--keep-scratch", help="Keep the scratch copy (path printed)."),
           out: Optional[Path] = typer.Option(None, help="Result JSON (default: <root>/verification.json)."),
           scratch: Optional[Path] = typer.Option(None, help="Parent directory of the scratch copy (default: temp dir).")):
    """Re-run stages from scratch in a clean copy of HEAD; compare every output with the committed dvc.lock."""
    from lucie.verify import main

    raise typer.Exit(main(stages, root, keep_scratch, out, scratch))


@app.command()
def plan(recipe: Optional[str] = typer.Option(None, help="recipes/<NAME>.yaml (default: the active params.yaml)."),
         format: str = typer.Option("md", "--format", help="md (a table) or json."),
         mfu: float = typer.Option(0.4, help="Model FLOPs utilisation for the speed estimate."),
         device_memory_gb: float = typer.Option(80.0, help="Memory per device (80: H100)."),
         root: Path = typer.Option(Path("."), help="Repository root.")):
    """Per phase and per device: memory (params, grads, AdamW, activations with/without checkpointing), FLOPs, tokens/s."""
    import json

    from stages.core.params import ParamsError
    from stages.lib.plan import load_recipe, markdown, plan as make_plan

    if format not in ("md", "json"):
        raise typer.BadParameter(f"--format {format!r}: use md or json")
    try:
        r = make_plan(load_recipe(root, recipe), device_memory_gb, mfu)
    except (FileNotFoundError, ParamsError) as err:
        raise typer.BadParameter(str(err))
    typer.echo(json.dumps(r, indent=2) if format == "json" else markdown(r))


@app.command("check-data")
def check_data(dirs: list[Path] = typer.Argument(..., help="Document directories (data/raw, data/dedup, data/mixed/train...).")):
    """Check each directory against its manifest.json: every shard present, its sha256 and rows as listed, none extra."""
    from lucie.check_data import main

    raise typer.Exit(main(dirs))


@app.command("mix-plan")
def mix_plan(stats: Path = typer.Option(..., "--stats", help="Per-sub-corpus statistics in Lucie's stats_datasets.csv "
                                                             "format, e.g. ../shared/lucie/stats_datasets.csv."),
             recipe: Optional[str] = typer.Option(None, help="recipes/<NAME>.yaml (default: the active params.yaml)."),
             format: str = typer.Option("md", "--format", "-f", help="md (tables by share after weighting) or json."),
             write_data_path: Optional[Path] = typer.Option(
                 None, "--write-data-path", help="Also write Megatron-DeepSpeed's --data-path ('weight prefix' per line)."),
             data_dir: str = typer.Option("", help="Directory prefixed to each --data-path entry (<name>_text_document)."),
             root: Path = typer.Option(Path("."), help="Repository root.")):
    """A recipe's main-phase blend from published token counts: shares before/after weighting, epochs, samples.

    The same weights/epochs code as the mix stage (stages/lib/mix_plan.py). Exit 2 on bad usage or a malformed file.
    """
    from lucie.mix_plan_cmd import main

    raise typer.Exit(main(stats, recipe, format, write_data_path, data_dir, root,
                          lambda s: typer.echo(s, nl=False), lambda s: typer.echo(s, err=True)))


from lucie import publish_cmd  # noqa: E402  (`lucie publish`: plan by default, --yes pushes)

app.command("publish")(publish_cmd.publish)



@app.command("verify-release")
def verify_release(release: Path = typer.Argument(..., help="A release directory (release/ or a copy of it)."),
                   key: Path = typer.Option(..., "--key", help="The signer's public key (PEM).")):
    """Check a signed release: signature over every file, each file's sha256 in the in-toto statement, lineage.

    Exit 0 when intact, 1 naming the first failure (stages/lib/provenance.py)."""
    from stages.lib.provenance import ProvenanceError, verify

    if not release.is_dir():
        typer.echo(f"{release}: not a directory", err=True)
        raise typer.Exit(2)
    try:
        res = verify(release, key)
    except ProvenanceError as err:
        typer.echo(f"FAILED {release}: {err}", err=True)
        raise typer.Exit(1)
    typer.echo(f"verified {release}: signature, {res['files']} files, code tree {str(res['code_tree'])[:12]}, "
               f"{res['stages']} upstream stage outputs, verification {res['verification']}")

if __name__ == "__main__":
    app()
