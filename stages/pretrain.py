"""pretrain, extend, anneal: Lucie's three training phases, one DVC stage each, one script.

One script for every scale: one CPU process here, DDP over gloo under torchrun, N GPU nodes
under `srun torchrun` (stages/launch.py builds the command and the Slurm script). What makes
it reproducible:

* the data order is a pure function of (seed, epoch, global sample index): epoch e is a
  permutation of all samples drawn from rng(seed, e), and optimizer step k consumes stream
  positions [offset_k, offset_k + G_k). G_k is pretrain.global_batch_size, or less during a
  batch-size ramp-up (Megatron's rule, in samples). Each rank takes its own slice of the global
  batch, so the samples a step sees do not depend on the number of processes or nodes;
* the recipe (AdamW b1 0.9 / b2 0.95 / eps 1e-5, wd 0.1, clip 1.0, warmup then cosine to
  min LR) and Lucie's init std come from params;
* a checkpoint holds model, optimizer, scheduler and RNG states (accelerate's save_state) plus
  state.json: step, data position, the resolved config and two fingerprints (config, data).
  Checkpoints live in WORK while a run is unfinished; a rerun resumes from the latest one and
  gives bit-identical losses and weights (tests/test_pretrain_resume.py). A different config or
  data is refused, naming the difference, unless --allow-resume-mismatch / LUCIE_RESUME_OVERRIDE=1.

Lucie's three phases are three DVC stages running this module (`--phase`), each with its own outputs
(LAYOUT): `pretrain` (main, random init), `extend` (context extension: longer samples, RoPE theta 2e7) and
`anneal` (its own mix, LR linear to 0). A later phase starts from the previous phase's final weights with a
fresh optimizer and schedule (Megatron's --finetune). The training itself is stages/lib/training/
(Trainer: a step function and components for checkpoints, exports, logs, validation); this module wires a
phase to its outputs.

Outputs per phase: the final weights (artifacts/phases/<phase>; the annealing's are artifacts/models/base, the
base model every later stage reads), artifacts/checkpoints/<phase>/ (training states + hf/<revision>/ HF
exports named as Lucie's Hub revisions + hf/revisions.json), plots/<stage>_loss.csv, metrics/<phase>.json.
Wall-clock numbers (tokens/s, MFU) go to MLflow and metrics/timing/ only: the DVC outputs stay
byte-identical for the same inputs.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import os
import shutil
import signal

from stages.core import files, tracking
from stages.core.params import load
from stages.core.runtime import EXIT_STAGE_ERROR, StageContext, StageError, console, params_path, quiet_libraries, stage
from stages.lib.phases import LAYOUT, PHASES, phase_of
from stages.lib.training.export import save_hf, write_revisions
from stages.lib.training.resume import OVERRIDE_ENV
from stages.lib.training.steplog import LOG_COLUMNS, SPEED_COLUMNS
from stages.lib.training.trainer import TOKENIZER_DIR, Result, Trainer, make_accelerator

# Test hooks: SIGKILL this process right after step N's checkpoint / at a named point of finish.
KILL_ENV, HOOK_ENV = "LUCIE_PRETRAIN_KILL_AFTER", "LUCIE_PRETRAIN_KILL_AT"
CORRUPT_ENV = "LUCIE_PRETRAIN_CORRUPT_AFTER"


def kill_after(step: int, sig: int = signal.SIGKILL):
    """An after_step callback for the resume tests: the process dies (or, with SIGSTOP, stops until a scancel)
    right after step `step` is checkpointed."""
    def callback(trainer, done: int) -> None:
        if done == step:
            os.kill(os.getpid(), sig)
    return callback


def corrupt_after(step: int):
    """An after_step callback for the non-finite guard's test: a NaN lands in the weights after step `step`, as a
    hardware or numerical fault would put it there; the next step's loss is NaN."""
    def callback(trainer, done: int) -> None:
        if done == step:
            import torch

            with torch.no_grad():
                next(trainer.model.parameters()).fill_(float("nan"))
    return callback


def test_hooks() -> tuple:
    """LUCIE_PRETRAIN_KILL_AFTER=N (SIGKILL) or N:SIGSTOP (tests/test_slurm.py scancels the stopped job);
    LUCIE_PRETRAIN_CORRUPT_AFTER=N (tests/test_pretrain_guard.py)."""
    hooks = []
    if os.environ.get(KILL_ENV):
        step, _, sig = os.environ[KILL_ENV].partition(":")
        hooks.append(kill_after(int(step), getattr(signal, sig or "SIGKILL")))
    if os.environ.get(CORRUPT_ENV):
        hooks.append(corrupt_after(int(os.environ[CORRUPT_ENV])))
    return tuple(hooks)


def kill_point(name: str) -> None:
    """SIGKILL here when LUCIE_PRETRAIN_KILL_AT names this point (the crash-safety tests of finish)."""
    if os.environ.get(HOOK_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def finish(ctx: StageContext, res: Result) -> None:
    """Final model + checkpoints + plots + metrics of the phase just trained. Called on every rank.

    Crash-safe at every instruction: the checkpoint output is assembled from hard links to the work directory's
    files, and the work directory stays whole until every output is written; then it is retired in one rename.
    A kill before that leaves the work directory, so the rerun resumes at the last step (it trains nothing) and
    finishes again; a kill after it leaves complete outputs (DVC reruns the stage, which retrains to the same
    bytes). No checkpoint is ever only in a temp directory."""
    acc, name = res.acc, res.phase.name
    lay, work = LAYOUT[name], ctx.path(res.phase.work)
    save_hf(acc, res.model, ctx.path(lay.out), ctx.path(TOKENIZER_DIR),
            {"phase": name, "steps": res.steps, "tokens": res.tokens, "config_fingerprint": res.config_fingerprint,
             "data_fingerprint": res.data_fingerprint})
    if not acc.is_main_process:
        acc.wait_for_everyone()
        return
    log_dir = work / "logs"
    with open(log_dir / f"{name}.loss.csv", newline="") as f:
        loss_rows = list(csv.DictReader(f))
    files.write_bytes_atomic(ctx.path(lay.plot), (log_dir / f"{name}.loss.csv").read_bytes())
    files.write_bytes_atomic(ctx.path(lay.speed), (log_dir / f"{name}.speed.csv").read_bytes())
    revisions = [r["revision"] for r in write_revisions(work / "hf")] if (work / "hf").exists() else []
    with files.atomic_dir(ctx.path(lay.ckpt)) as tmp:
        for d in sorted((work / "ckpt").iterdir()):
            shutil.copytree(d, tmp / d.name, copy_function=os.link)
        if (work / "hf").exists():
            shutil.copytree(work / "hf", tmp / "hf", copy_function=os.link)
        kill_point("finish:checkpoints_linked")
    kill_point("finish:checkpoints_swapped")
    write_phase_metrics(ctx, res, lay, loss_rows, revisions)
    kill_point("finish:metrics_written")
    # Last: the work directory goes away in one rename (a half-deleted one could look resumable), then is deleted.
    trash = work.with_name(f".{work.name}.finished")
    files.remove(trash)
    os.replace(work, trash)
    kill_point("finish:work_retired")
    shutil.rmtree(trash)
    acc.wait_for_everyone()


def write_phase_metrics(ctx: StageContext, res: Result, lay, loss_rows: list[dict], revisions: list[str]) -> None:
    """metrics/<phase>.json (deterministic: a DVC output), timing and MLflow (wall clock), the one-line summary."""
    acc, name, hp = res.acc, res.phase.name, res.phase.hp
    tps = res.trained_tokens / res.seconds if res.seconds else 0.0
    metrics = {
        "steps": res.steps, "samples": res.samples, "tokens": res.tokens, "parameters": res.n_params,
        "first_loss": float(loss_rows[0]["loss"]), "final_loss": float(loss_rows[-1]["loss"]),
        "valid_loss": res.val_loss, "flops_per_token": res.flops_per_token,
        "global_batch_size": hp.global_batch_size, "world_size": acc.num_processes, "revisions": revisions,
    }
    if name != "main":  # what makes the phase a phase
        metrics.update({"phase": name, "init_from": lay.init_from, "optimizer": "reset", "seq_len": res.phase.seq_len,
                        **res.phase.model_overrides,
                        "lr": hp.lr, "schedule": hp.schedule, "final_lr": float(loss_rows[-1]["lr"])})
    # Wall-clock numbers vary run to run: MLflow and untracked files get them, not the DVC outputs
    # (those stay byte-identical for the same inputs, which the golden dvc.lock test checks).
    mfu = tps * res.flops_per_token / (res.peak[0] * acc.num_processes)
    timing = {"tokens_per_s": round(tps, 1), "seconds": round(res.seconds, 2), "mfu": round(mfu, 6),
              "peak_flops_per_device": res.peak[0], "peak_source": res.peak[1], "resumed_from_step": res.resumed_from,
              "resumed_despite": res.mismatch}
    # Whole-run figures under their own names: tokens_per_s and mfu are the per-step series.
    ctx.tracker.metrics({"avg_tokens_per_s": timing["tokens_per_s"], "avg_mfu": timing["mfu"],
                         "train_seconds": timing["seconds"], "peak_flops_per_device": res.peak[0]})
    files.write_json(ctx.path(lay.timing), timing)
    ctx.write_metrics(lay.metrics, metrics)
    ctx.tracker.artifact(ctx.path(lay.plot))
    resumed = f", resumed from step {res.resumed_from}" if res.resumed_from else ""
    ctx.summary(f"{name}: {res.n_params:,} params, {res.steps} steps, {res.tokens:,} tokens, loss "
                f"{metrics['first_loss']:.3f} -> {metrics['final_loss']:.3f} (valid "
                f"{res.val_loss if res.val_loss is None else round(res.val_loss, 3)}), {tps:,.0f} tok/s, MFU {mfu:.1%}, "
                f"{len(revisions)} revisions{resumed} -> {lay.out}")


def pass_through(ctx: StageContext, name: str) -> None:
    """A phase that is absent or disabled: the previous phase's weights become its output, unchanged, and its
    other outputs are empty, so the DAG (and everything downstream) stays the same whatever the recipe."""
    lay = LAYOUT[name]
    src = ctx.path(lay.init_from)
    if not (src / "config.json").exists():
        raise StageError(f"{name} is disabled and passes {lay.init_from} through, but it holds no model")
    with files.atomic_dir(ctx.path(lay.out)) as tmp:
        for f in sorted(src.iterdir()):
            (shutil.copytree if f.is_dir() else shutil.copy)(f, tmp / f.name)
    with files.atomic_dir(ctx.path(lay.ckpt)) as tmp:
        (tmp / "hf").mkdir()
        files.write_json(tmp / "hf" / "revisions.json", {"revisions": []})
    files.write_bytes_atomic(ctx.path(lay.plot), (",".join(LOG_COLUMNS) + "\n").encode())
    files.write_bytes_atomic(ctx.path(lay.speed), (",".join(SPEED_COLUMNS) + "\n").encode())
    files.write_json(ctx.path(lay.timing), {})
    ctx.write_metrics(lay.metrics, {"phase": name, "enabled": False, "steps": 0, "passed_through": lay.init_from,
                                    "revisions": []})
    console.print(f"[yellow]{lay.stage}: {name} is disabled in params: {lay.init_from} passed through unchanged[/]")
    ctx.summary(f"{name} disabled: {lay.init_from} -> {lay.out} unchanged")


def run(ctx: StageContext, phase: str = "main", allow_mismatch: bool = False, fresh: bool = False) -> None:
    ph = phase_of(ctx.params, phase)
    if ph is None:
        if int(os.environ.get("RANK", 0)) == 0:
            pass_through(ctx, phase)
        return
    acc = make_accelerator(ph.hp)
    if fresh and acc.is_main_process:
        shutil.rmtree(ctx.path(ph.work), ignore_errors=True)
    acc.wait_for_everyone()  # no rank looks for a checkpoint before the deletion
    init = LAYOUT[phase].init_from
    if init is not None and not (ctx.path(init) / "config.json").exists():
        raise StageError(f"{phase} starts from {init}, which holds no model: run the previous phase's stage first")
    trainer = Trainer(ctx, ph, ctx.path(init) if init else None, acc=acc, allow_mismatch=allow_mismatch,
                      after_step=test_hooks())
    finish(ctx, trainer.train())


@contextlib.contextmanager
def worker_stage(name: str):
    """Ranks other than 0: same params, no MLflow run (rank 0 logs the global numbers), errors as one line."""
    quiet_libraries()
    root = files.root()
    params = load(params_path(root))
    try:
        yield StageContext(name, root, params, tracking.Tracker())
    except StageError as err:
        console.print(f"[bold red]{name} (rank {os.environ.get('RANK')}): {err}[/]")
        raise SystemExit(EXIT_STAGE_ERROR)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m stages.pretrain", description=__doc__.split("\n")[0])
    ap.add_argument("--phase", choices=PHASES, default="main",
                    help="main (stage pretrain), extension (stage extend) or annealing (stage anneal)")
    ap.add_argument("--allow-resume-mismatch", action="store_true",
                    help=f"resume even if config or data changed since the checkpoint (also {OVERRIDE_ENV}=1)")
    ap.add_argument("--fresh", action="store_true", help="delete the phase's work directory (an unfinished run) "
                                                         "and start from step 0")
    args = ap.parse_args(argv)
    allow = args.allow_resume_mismatch or os.environ.get(OVERRIDE_ENV, "") not in ("", "0")
    name = LAYOUT[args.phase].stage
    with (stage(name) if int(os.environ.get("RANK", 0)) == 0 else worker_stage(name)) as ctx:
        run(ctx, args.phase, allow_mismatch=allow, fresh=args.fresh)


if __name__ == "__main__":
    main()
