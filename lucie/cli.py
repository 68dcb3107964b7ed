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
    """Run the pipeline through the Prefect flow (one task per DVC stage, with retries)."""
    import os

    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    from flows.server import local_prefect_api

    with local_prefect_api() as wait_ready:  # boots while the imports below run
        from flows.pipeline import run_pipeline

        results = run_pipeline(root=str(root), stages=stages or None, wait_ready=wait_ready)
    for r in results:
        typer.echo(f"{r['stage']:<10} {r['status']}")


@app.command()
def recipe(name: str = typer.Argument(..., help="A file recipes/<name>.yaml, e.g. tiny or lucie-7b."),
           root: Path = typer.Option(Path("."), help="Repository root.")):
    """Make recipes/<name>.yaml the active params.yaml (validated first)."""
    from stages.params import ParamsError, load

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
                  world_size: int = typer.Option(1, help="Processes the run used (the batch is global anyway).")):
    """Print which documents (and which token ranges of them) a training step saw."""
    from stages.batches import documents_of_step
    from stages.params import load
    from stages.runtime import params_path

    rows = documents_of_step(load(params_path(root)), root / "data/tokens/train", step, world_size)
    typer.echo(f"{'sample':>8} {'doc_id':<24} {'doc tokens':>14} {'in sample':>12}")
    for r in rows:
        d0, s0 = r["doc_token_start"], r["sample_token_start"]
        typer.echo(f"{r['sample']:>8} {r['doc_id']:<24} {d0:>6}-{d0 + r['length']:<7} {s0:>5}-{s0 + r['length']:<6}")


@app.command()
def audit(path: Path = typer.Argument(..., help="A release directory written by the release stage."),
          format: str = typer.Option("md", help="json or md.")):
    """Compute the openness card of a release from its evidence (no torch needed)."""
    from model_card import render
    from model_card.evidence import collect_release

    if not (path / "MANIFEST.json").exists():
        raise typer.BadParameter(f"{path} is not a release directory (no MANIFEST.json)")
    card = render.audit(collect_release(path))  # `lucie audit release` reproduces the release stage's card
    typer.echo(render.to_json(card) if format == "json" else render.to_markdown(card))


if __name__ == "__main__":
    app()
