"""The Prefect flow: one task per DVC stage, in topological order, with retries.

DVC owns *what* runs (each task is `dvc repro --single-item <stage>` through DVC's Python
API, which saves an interpreter start per stage: DVC decides whether
the stage is stale and caches its outputs); Prefect owns *how* (retries, logs, UI). The
order comes from DVC's own graph. `--single-item` does not look upstream, so the tasks
must run in topological order, one after the other; that is also what 2 cores want.

Tracking: the flow passes its run id to the stages (LUCIE_PIPELINE_RUN); the first stage that runs opens
the MLflow pipeline run and the others become its children (stages/core/run_tree.py).

Prefect shows what DVC did: each task ends `Ran`, `Up to date` or `Cached` (restored from DVC's run-cache),
with its duration; the stage's output is streamed to the task's logs (flows/stage_output.py). A failure
the user must fix (exit 2: params, 3: data/input, 1: a crash with its traceback) stops the flow at once,
not retried; only a killed stage process or a busy DVC lock is retried.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE


def stage_order(root: Path, targets: list[str] | None = None) -> list[str]:
    """Stage names of dvc.yaml, dependencies first; with targets, those stages and everything upstream
    of them (what `dvc repro TARGET` would consider). One implementation with `lucie verify`."""
    from stages.core.dag import plan

    return plan(root, targets)[0]


class _DvcLog(logging.Handler):
    """Collects DVC's own log lines for one reproduce call (they say ran / skipped / restored)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


# Exit codes of a stage command (stages/core/runtime.py) that mean the user must change something:
# retrying cannot help. Anything else a stage command ends with is a crash: retried only when the
# process was killed by a signal (OOM killer, preemption), the one kind of failure a rerun can cure.
USER_ERRORS = {2: "params.yaml is invalid", 3: "a data or input error", 1: "the stage crashed (its traceback is above)"}


class StageFailed(Exception):
    """A stage command failed; `transient` says whether a retry could help."""

    def __init__(self, stage: str, code: int | None, detail: str, transient: bool = False):
        self.stage, self.code, self.detail, self.transient = stage, code, detail, transient
        super().__init__(f"{stage}: {detail}")


def _exit_code(exc: BaseException) -> int | None:
    """The stage command's exit code from DVC's exception chain ('failed to run: ..., exited with N')."""
    import re

    while exc is not None:
        m = re.search(r"exited with (-?\d+)", str(exc))
        if m:
            return int(m.group(1))
        exc = exc.__cause__ or exc.__context__
    return None


def _error_line(lines: list[str]) -> str:
    """The stage's own last words: the last non-empty line it printed before DVC's own error lines."""
    own = [ln.strip() for ln in lines if ln.strip() and not ln.startswith(("ERROR: failed to", "Running stage", "> "))]
    return own[-1] if own else ""


def _retry_transient(task, task_run, state) -> bool:
    exc = state.result(raise_on_failure=False)
    return isinstance(exc, StageFailed) and exc.transient


def _api_logger(stage: str):
    """Stage output goes to the Prefect API only (the terminal gets the raw lines): a logger of its own, with
    Prefect's API handler, independent of PREFECT_LOGGING_LEVEL (which `lucie run` keeps at WARNING so
    that Prefect's console lines do not drown the stages' own output)."""
    from prefect.context import TaskRunContext
    from prefect.logging.handlers import APILogHandler

    log = logging.getLogger(f"lucie.stage.{stage}")
    log.setLevel(logging.INFO)
    log.propagate = False
    if not any(isinstance(h, APILogHandler) for h in log.handlers):
        log.addHandler(APILogHandler())
    run = TaskRunContext.get().task_run
    return logging.LoggerAdapter(log, {"task_run_id": run.id, "flow_run_id": run.flow_run_id})


@task(retries=2, retry_delay_seconds=2, retry_condition_fn=_retry_transient, task_run_name="dvc-{stage}",
      cache_policy=NO_CACHE, persist_result=False)
def run_stage(stage: str, root: str):
    """`dvc repro --single-item <stage>`, in process: DVC's Python API, not a new interpreter per stage.

    The task's final state says what happened: `Ran`, `Up to date` (DVC skipped it) or `Cached` (outputs
    restored from DVC's run-cache), each with its duration; a failure the user must fix ends `Failed` at
    once, with the stage's own error line and exit code; only a killed process is retried."""
    import time

    from dvc.exceptions import DvcException
    from dvc.repo import Repo
    from prefect.states import Completed, Failed

    from flows.stage_output import captured

    api = _api_logger(stage)
    log = _DvcLog()
    dvc_logger = logging.getLogger("dvc")
    dvc_logger.addHandler(log)
    propagate, dvc_logger.propagate = dvc_logger.propagate, False  # DVC prints its own lines already
    t0 = time.perf_counter()
    lines: list[str] = []
    try:
        with captured(api.info) as lines:
            with Repo(root) as repo:
                # addressed by path: DVC resolves a bare stage name against the cwd, not `root`
                ran = repo.reproduce(f"{Path(root) / 'dvc.yaml'}:{stage}", single_item=True)
    except DvcException as err:
        from dvc.lock import LockError

        code = _exit_code(err)
        what = USER_ERRORS.get(code, f"exit code {code}" if code is not None else "DVC")
        killed = code is not None and (code < 0 or code >= 128)  # a signal: OOM killer, preemption
        busy = isinstance(err, LockError)  # another DVC process holds the repo's lock
        said = _error_line(lines).removeprefix(f"{stage}: ")
        failure = StageFailed(stage, code, f"{what}: {said or err}", transient=killed or busy)
        if failure.transient:
            raise failure from None
        api.error(f"{failure} (exit code {code}; not retried: rerunning cannot fix it)")
        return Failed(message=str(failure), data=failure)
    finally:
        dvc_logger.removeHandler(log)
        dvc_logger.propagate = propagate
    seconds = round(time.perf_counter() - t0, 1)
    text = "\n".join(log.lines)
    # DVC says which of three things happened: nothing changed, outputs restored from its run-cache, or a run.
    if "is cached" in text:
        status, name = "restored from run-cache", "Cached"
    elif ran:
        status, name = "ran", "Ran"
    else:
        status, name = "up to date", "Up to date"
    api.info(f"{stage}: {status} in {seconds} s")
    result = {"stage": stage, "status": status, "seconds": seconds}
    return Completed(name=name, message=f"{status} in {seconds} s", data=result)


@flow(name="lucie-pipeline", log_prints=False)
def pipeline_flow(root: str, order: list[str]):
    """The stages one after the other; the first failure stops the flow, which then ends Failed with its line."""
    from prefect.states import Completed, Failed

    from prefect.runtime import flow_run

    # The stage runs' MLflow parent is created by the first stage that runs, keyed by this id
    # (stages/core/run_tree.py): nothing ran, no run; the parent is tagged with the flow run's id.
    saved = os.environ.get("LUCIE_PIPELINE_RUN")
    os.environ["LUCIE_PIPELINE_RUN"] = f"prefect-{flow_run.id}"
    results = []
    try:
        for name in order:
            state = run_stage(name, root, return_state=True)
            if not state.is_completed():
                err = state.result(raise_on_failure=False)
                failure = err if isinstance(err, StageFailed) else StageFailed(name, None, str(err))
                return Failed(message=str(failure), data=PipelineFailed(results, failure))
            results.append(state.result())
    finally:  # the id is this flow run's only: the process may go on (tests, a notebook) with other work
        if saved is None:
            os.environ.pop("LUCIE_PIPELINE_RUN", None)
        else:
            os.environ["LUCIE_PIPELINE_RUN"] = saved
    return Completed(message=", ".join(f"{r['stage']} {r['status']}" for r in results), data=results)


class PipelineFailed(Exception):
    """What `lucie run` reports: the stages that finished, and the one that failed."""

    def __init__(self, results: list[dict], failure: StageFailed):
        self.results, self.failure = results, failure
        super().__init__(str(failure))


def run_pipeline(root: str = ".", stages: list[str] | None = None, wait_ready=lambda: None) -> list[dict]:
    """The flow; raises PipelineFailed (finished stages + the failure) when a stage fails or params.yaml is
    invalid (checked before anything starts). `wait_ready` blocks until the Prefect API answers (flows/server.py)."""
    from stages.core.params import ParamsError, load
    from stages.core.runtime import EXIT_PARAMS, params_path

    rootp = Path(root).resolve()
    try:
        load(params_path(rootp))
    except ParamsError as err:
        detail = str(err).replace(":\n", ": ").replace("\n", "; ").replace("  ", "")
        raise PipelineFailed([], StageFailed("params", EXIT_PARAMS, detail)) from None
    order = stage_order(rootp, stages)
    saved = {k: os.environ.pop(k, None) for k in ("LUCIE_PARENT_RUN_ID", "LUCIE_PIPELINE_RUN")}
    try:
        wait_ready()
        state = pipeline_flow(str(rootp), order, return_state=True)
        results = state.result(raise_on_failure=False)
    finally:
        from prefect.logging.handlers import APILogHandler

        APILogHandler().flush()  # the stage output still queued, before `lucie run` stops its local API
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    if isinstance(results, BaseException):
        raise results
    return results
