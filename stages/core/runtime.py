"""What every stage does around its own work: validate params, open the MLflow run,
show progress, write metrics, account for every record, print a one-line summary.

A stage module looks like:

    def run(ctx: StageContext) -> None: ...            # the work, reading ctx.params
    def main(): with stage("filter") as ctx: run(ctx)

The params a stage logs to MLflow are exactly the ones its dvc.yaml entry declares, so the
tracking record and DVC's notion of "what this stage depends on" cannot drift apart.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, TypeVar

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from stages.core import files, tracking
from stages.core.params import Params, ParamsError, load
from stages.core.tracking_guard import TrackingUnreachable

T = TypeVar("T")
console = Console(stderr=True, soft_wrap=True)


# Exit codes a stage ends with when the user must change something (`lucie run` does not retry them):
EXIT_PARAMS = 2       # params.yaml is invalid
EXIT_STAGE_ERROR = 3  # a StageError: bad input, missing file, offline


class StageError(Exception):
    """A failure the user can act on (bad input, missing file, offline): printed as one line, exit 3."""


@dataclass
class Ledger:
    """Counts of one data stage. Invariant: read == kept + sum(dropped) + sum(rejected)."""

    read: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)  # rule -> count (data we chose to remove)
    rejected: Counter = field(default_factory=Counter)  # reason -> count (malformed input)

    def drop(self, rule: str) -> None:
        self.dropped[rule] += 1

    def reject(self, reason: str) -> None:
        self.rejected[reason] += 1

    def check(self) -> None:
        total = self.kept + sum(self.dropped.values()) + sum(self.rejected.values())
        if total != self.read:
            raise AssertionError(f"record accounting broken: read {self.read} != kept+dropped+rejected {total}")

    def as_dict(self) -> dict:
        self.check()
        return {
            "read": self.read,
            "kept": self.kept,
            "dropped": dict(sorted(self.dropped.items())),
            "dropped_total": sum(self.dropped.values()),
            "rejected": dict(sorted(self.rejected.items())),
            "rejected_total": sum(self.rejected.values()),
        }

    def summary(self) -> str:
        parts = [f"read {self.read}", f"kept {self.kept}"]
        if self.dropped:
            parts.append(f"dropped {sum(self.dropped.values())} (" + ", ".join(f"{k} {v}" for k, v in sorted(self.dropped.items())) + ")")
        if self.rejected:
            parts.append(f"rejected {sum(self.rejected.values())} (" + ", ".join(f"{k} {v}" for k, v in sorted(self.rejected.items())) + ")")
        return ", ".join(parts)


class StageContext:
    def __init__(self, name: str, root: Path, params: Params, tracker: tracking.Tracker):
        self.name, self.root, self.params, self.tracker = name, root, params, tracker
        self._summary = ""

    def path(self, rel: str | Path) -> Path:
        return self.root / rel

    def write_metrics(self, rel: str, metrics: dict) -> None:
        """metrics/<stage>.json (DVC metric) + the same numbers in MLflow + the file as artifact."""
        files.write_json(self.path(rel), metrics)
        self.tracker.metrics(metrics)
        self.tracker.artifact(self.path(rel))

    def dataset(self, rel: str, context: str) -> None:
        d = self.path(rel)
        manifest = d / files.MANIFEST
        if manifest.exists():
            self.tracker.dataset(d, files.sha256_file(manifest), context)

    def summary(self, text: str) -> None:
        self._summary = text

    def progress(self, items: Iterable[T], total: int | None, what: str) -> Iterator[T]:
        yield from progress(items, total, f"[{self.name}] {what}")


def progress(items: Iterable[T], total: int | None, label: str) -> Iterator[T]:
    """A rich progress bar on a terminal; on a pipe (DVC, CI) nothing but the final summary."""
    if not console.is_terminal:
        yield from items
        return
    cols = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*cols, console=console, transient=True) as bar:
        task = bar.add_task(escape(label), total=total)  # "[filter] ..." is text, not a rich style tag
        for item in items:
            yield item
            bar.advance(task)


def params_path(root: Path) -> Path:
    return root / os.environ.get("LUCIE_PARAMS", "params.yaml")


def declared_params(root: Path, name: str, params: Params) -> dict:
    """The values of the params dvc.yaml lists for stage `name` (dotted keys), e.g. {"pretrain.threads": 2}."""
    import yaml

    dvc_yaml = root / "dvc.yaml"
    if not dvc_yaml.exists():
        return {}
    keys = (yaml.safe_load(dvc_yaml.read_text()).get("stages", {}).get(name) or {}).get("params", [])
    values = params.model_dump(mode="json")
    out = {}
    for key in keys:
        v = values
        for part in str(key).split("."):
            v = v[part]
        out[key] = v
    return out


def quiet_libraries() -> None:
    """The libraries' own bars and advisories drown the stage summary under DVC; keep errors only."""
    for k, v in {"TRANSFORMERS_VERBOSITY": "error", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
                 "HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                 "TOKENIZERS_PARALLELISM": "false"}.items():
        os.environ.setdefault(k, v)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(transformers|trl|torch|lm_eval|datasets)")


@contextlib.contextmanager
def tokenizer_threads() -> Iterator[None]:
    """Let HF tokenizers' encode_batch use its thread pool inside the block (quiet_libraries turns it off: the
    library warns, and disables it, when a process forks after using it). For stages that fork nothing while
    encoding (mix, tokenize): the same ids, ~1.7x faster on 2 cores."""
    before = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = before


@contextlib.contextmanager
def stage(name: str) -> Iterator[StageContext]:
    t0 = time.perf_counter()
    quiet_libraries()
    root = files.root()
    try:
        params = load(params_path(root))
    except ParamsError as err:
        console.print(f"[bold red]{name}: {err}[/]")
        sys.exit(EXIT_PARAMS)
    tp = params.tracking
    try:
        with tracking.stage_run(name, root, tp.uri, tp.experiment, tp.enabled, {"recipe": params.recipe}) as tracker:
            tracker.params(declared_params(root, name, params))
            ctx = StageContext(name, root, params, tracker)
            yield ctx
            dt = time.perf_counter() - t0
            tracker.metrics({"stage_seconds": dt})
    except (StageError, TrackingUnreachable) as err:  # the MLflow run is already marked FAILED; no traceback for a known cause
        console.print(f"[bold red]{name}: {err}[/]")
        sys.exit(EXIT_STAGE_ERROR)
    console.print(f"[bold]\\[{name}][/] {ctx._summary} [dim]({dt:.1f} s)[/]")
