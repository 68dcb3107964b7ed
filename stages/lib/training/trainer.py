"""One training phase: the accelerator, a step function, and a loop that hands every side effect to a component.

The loop (`Trainer.train`) is short on purpose, as torchtitan's and OLMo-core's are: it asks `train_step` for
the step's loss, then the step log, the exporter and the checkpointer each decide whether the step concerns them,
then the `after_step` callbacks run (the tests' kill hook is one; it never sits in the loop body).
What makes the run reproducible: the data order (schedule.py), the seed set before the model is built, the
recipe's AdamW and LR schedule from params, and exact resume (checkpoint.py, resume.py).

A non-finite loss or gradient norm stops the phase before the optimizer step: no model is written, the last good
checkpoint stays in the work directory, and the error names the step.
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from stages.core import files
from stages.core.params import Pretrain
from stages.core.runtime import StageContext, StageError, console
from stages.lib.phases import Phase
from stages.lib.tokens import load_tokens
from stages.lib.training import resume as resuming
from stages.lib.training.checkpoint import Checkpointer
from stages.lib.training.export import Exporter
from stages.lib.training.parallel import Sharded, data_parallel
from stages.lib.training.model import flops_per_token, llama_config, load_weights, measure_peak_flops
from stages.lib.training.schedule import batch_plan, check_batches, global_batch, lr_lambda, sample_order
from stages.lib.training.steplog import StepLog
from stages.lib.training.validate import validation_loss

TOKENIZER_DIR = "artifacts/tokenizer"


def make_accelerator(hp: Pretrain):
    """One per process: accelerate's Accelerator for plain data parallelism (CPU DDP over gloo, NCCL on GPUs), or
    `Sharded` (FSDP2 / HSDP / TP with torch's own APIs) when pretrain.launch.parallelism asks for a mesh."""
    import torch
    from accelerate import Accelerator

    launch = hp.launch
    cuda = torch.cuda.is_available()
    if launch.backend == "nccl" and not cuda:
        raise StageError("pretrain.launch.backend is nccl but this machine has no CUDA device (use gloo or auto)")
    gpu = cuda and launch.backend != "gloo"
    if hp.deterministic and gpu:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before CUDA initialises; needed by cuBLAS
    if launch.parallelism.enabled:  # accelerate refuses sharding on CPU: torch's own APIs, on CPU and GPU alike
        return Sharded(hp, gpu)
    # step_scheduler_with_optimizer=False: accelerate would otherwise step the LR schedule once per process
    # each step (it assumes the global batch grows with the processes; here it is fixed by params).
    acc = Accelerator(cpu=not gpu, mixed_precision="bf16" if hp.precision == "bf16" else "no",
                      step_scheduler_with_optimizer=False)
    if acc.num_processes != int(os.environ.get("WORLD_SIZE", 1)):
        raise StageError("launched processes do not form one group (set ACCELERATE_USE_CPU=true for CPU DDP; "
                         "`python -m stages.launch` prints a working command)")
    return acc


@dataclass
class Result:
    phase: Phase
    acc: object
    model: object
    cfg: object
    checkpoint: Path  # the phase's final training state (init_from for the next phase)
    steps: int
    samples: int
    tokens: int
    n_params: int
    flops_per_token: int
    val_loss: float | None
    data_fingerprint: str
    config_fingerprint: str
    resumed_from: int | None
    mismatch: list[str]
    seconds: float
    trained_tokens: int  # tokens processed by this process invocation (for tokens/s)
    peak: tuple[float, str]


class Trainer:
    """Trains `phase` to its last step, resuming from the latest checkpoint of that phase in its work directory."""

    def __init__(self, ctx: StageContext, phase: Phase, init_from: Path | None = None, *, acc=None,
                 allow_mismatch: bool = False, after_step: tuple[Callable[[Trainer, int], None], ...] = ()):
        self.ctx, self.phase, self.hp, self.after_step = ctx, phase, phase.hp, after_step
        import torch

        torch.set_num_threads(self.hp.threads)
        if self.hp.deterministic:
            torch.use_deterministic_algorithms(True)
        if acc is None:
            acc = make_accelerator(self.hp)
        else:
            acc.free_memory()  # the previous phase's model/optimizer must not be saved with this phase's state
        self.acc = acc
        check_batches(self.hp, data_parallel(acc)[0])
        self._load_data()
        self._resolve_config()
        self._plan_resume(allow_mismatch)
        self._build(init_from)

    # ------------------------------------------------------------ setup
    def _load_data(self) -> None:
        ph, tokens_dir = self.phase, self.ctx.path(self.phase.tokens)
        self.train_set, self.valid = load_tokens(tokens_dir / "train"), load_tokens(tokens_dir / "valid")
        if len(self.train_set) == 0:
            raise StageError(f"no training samples ({ph.tokens}/train is empty); lower the phase's seq_len or add data")
        self.n_samples, self.seq_len = self.train_set.shape
        if ph.seq_len is not None and self.seq_len != ph.seq_len:
            raise StageError(f"{ph.tokens}/train holds samples of {self.seq_len} tokens but {ph.name}.seq_len is "
                             f"{ph.seq_len}: rerun the tokenize stage")
        self.data_fp = files.sha256_file(tokens_dir / "train" / files.MANIFEST)

    def _resolve_config(self) -> None:
        from tokenizers import Tokenizer

        ph, model_params = self.phase, self.ctx.params.model
        vocab = Tokenizer.from_file(str(self.ctx.path(TOKENIZER_DIR) / "tokenizer.json")).get_vocab_size()
        self.cfg = llama_config(model_params, vocab, **ph.model_overrides)
        model_dump = {**model_params.model_dump(mode="json"), **ph.model_overrides, "vocab_size": self.cfg.vocab_size}
        self.resolved = resuming.math_config(model_dump, self.hp, self.ctx.params.seed, self.seq_len, ph.name)
        self.config_fp = files.fingerprint(self.resolved)

    def _plan_resume(self, allow_mismatch: bool) -> None:
        ph, acc = self.phase, self.acc
        self.work = self.ctx.path(ph.work)
        self.checkpointer = Checkpointer(acc, self.work, ph.name, self.hp.checkpoint_every, self.hp.keep_checkpoints)
        self.resume = resuming.plan(self.checkpointer.latest(), self.resolved, self.data_fp, ph.tokens, self.hp.steps,
                                    allow_mismatch, self.ctx.root)
        if self.resume.mismatch:
            console.print(f"[yellow]pretrain: resuming despite:[/] {'; '.join(self.resume.mismatch)}")
        if acc.is_main_process:
            self.checkpointer.clean_leftovers(self.resume.step)
        acc.wait_for_everyone()

    def _build(self, init_from: Path | None) -> None:
        import torch
        from accelerate.utils import set_seed
        from transformers import LlamaForCausalLM

        hp, acc, ph, res = self.hp, self.acc, self.phase, self.resume
        set_seed(self.ctx.params.seed)
        self.cfg._attn_implementation = hp.launch.attn_implementation
        model = LlamaForCausalLM(self.cfg)
        if hp.launch.activation_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if init_from is not None and res.path is None:
            load_weights(model, Path(init_from))  # weights only: the optimizer and schedule start fresh (--finetune)
        self.n_params = sum(t.numel() for t in model.parameters())
        # The model is prepared first and the optimizer built over the parameters it will step: FSDP2 and TP
        # (parallel.Sharded) replace them with DTensors; accelerate's DDP keeps them (same bytes either way).
        self.model = acc.prepare(model)
        opt = torch.optim.AdamW(self.model.parameters(), lr=hp.lr, betas=tuple(hp.betas), eps=hp.eps,
                                weight_decay=hp.weight_decay)
        self.opt, self.sched = acc.prepare(opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(hp)))
        if res.path is not None:
            self.checkpointer.load(res.path)
        self.offset, _ = batch_plan(hp, res.step)
        if res.state and not res.mismatch and res.state["samples_consumed"] != self.offset:
            raise StageError(f"{res.path.name}: data position {res.state['samples_consumed']} != {self.offset} "
                             "from the schedule")
        self.fpt = flops_per_token(self.cfg, self.seq_len)
        if hp.launch.peak_flops_per_device:
            self.peak = (hp.launch.peak_flops_per_device, "params (pretrain.launch.peak_flops_per_device)")
        else:  # only rank 0 writes speed logs; the others skip the measurement
            kind = "bf16" if hp.precision == "bf16" else "fp32"
            self.peak = (measure_peak_flops(kind == "bf16") if acc.is_main_process else 1.0,
                         f"measured {kind} matmul 1024^2, {hp.threads} threads")
        self.log = StepLog(self.ctx.tracker, self.work, ph.name, acc.is_main_process, res.step)
        self.info = {"phase": ph.name, "phase_index": ph.index, "config_fingerprint": self.config_fp,
                     "data_fingerprint": self.data_fp, **ph.model_overrides}
        if res.mismatch:
            self.info["resumed_despite"] = res.mismatch
        self.exporter = Exporter(acc, self.model, self.work, ph.name, self.ctx.path(TOKENIZER_DIR), hp.export_every,
                                 hp.precision == "bf16")

    # ------------------------------------------------------------ one optimizer step
    def train_step(self, step: int) -> tuple[float, float, int]:
        """Forward/backward over this rank's micro-batches, clip, check, step. Returns (loss, grad norm, samples)."""
        import torch

        hp, acc, model = self.hp, self.acc, self.model
        world, rank = data_parallel(acc)
        g = global_batch(hp, self.offset)
        ids = sample_order(self.ctx.params.seed, self.n_samples, self.offset, g)
        share = g // world
        mine = ids[rank * share : (rank + 1) * share]
        n_micro = share // hp.micro_batch_size
        loss_sum = 0.0
        for micro in range(n_micro):
            chunk = mine[micro * hp.micro_batch_size : (micro + 1) * hp.micro_batch_size]
            x = torch.from_numpy(self.train_set[chunk].astype(np.int64)).to(acc.device)
            # Gradients are averaged across ranks once, on the last micro-batch (DDP no_sync before it).
            sync = contextlib.nullcontext() if micro == n_micro - 1 else acc.no_sync(model)
            with sync:
                loss = model(input_ids=x, labels=x).loss / n_micro
                acc.backward(loss)
            loss_sum += loss.item()
        grad_norm = float(acc.clip_grad_norm_(model.parameters(), hp.grad_clip))
        loss_avg = acc.reduce(torch.tensor([loss_sum], device=acc.device), reduction="mean").item()
        if not (math.isfinite(loss_avg) and math.isfinite(grad_norm)):
            self._stop_non_finite(step + 1, loss_avg, grad_norm)
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        return loss_avg, grad_norm, g

    def _stop_non_finite(self, done: int, loss: float, grad_norm: float) -> None:
        last = self.checkpointer.latest()
        kept = (f"the last good checkpoint, {last[1].relative_to(self.ctx.root)}, is kept" if last
                else "no checkpoint was reached")
        raise StageError(f"{self.phase.name}: non-finite training at step {done} (loss {loss}, grad norm {grad_norm}): "
                         f"stopped before the optimizer step, no model written, {kept}. Check pretrain.lr, eps, "
                         "grad_clip and model.rms_norm_eps in params.yaml")

    # ------------------------------------------------------------ the loop
    def train(self) -> Result:
        hp, ph, acc, seq_len = self.hp, self.phase, self.acc, self.seq_len
        start, final_ckpt = self.resume.step, self.resume.path  # a phase already complete has nothing left to train
        self.model.train()
        t_start = time.perf_counter()
        for step in self.ctx.progress(range(start, hp.steps), hp.steps - start, f"training ({ph.name})"):
            t0 = time.perf_counter()
            loss, grad_norm, g = self.train_step(step)
            self.offset += g
            done, dt = step + 1, time.perf_counter() - t0
            if step % hp.log_every == 0 or done == hp.steps:
                self._log(done, loss, grad_norm, g, dt)
            state = {**self.info, "samples": self.offset, "tokens": self.offset * seq_len}
            if self.exporter.due(done, hp.steps):
                self.exporter.export(done, state)  # before the checkpoint: a resume never skips an export
            if self.checkpointer.due(done, hp.steps):
                final_ckpt = self.checkpointer.save(done, self._checkpoint_state(), on_saved=self.log.flush)
            for callback in self.after_step:
                callback(self, done)
        seconds = time.perf_counter() - t_start
        self.log.flush()
        val_loss = validation_loss(acc, self.model, self.valid)
        acc.wait_for_everyone()  # nobody reads the work directory once rank 0 may move it (finish)
        return Result(phase=ph, acc=acc, model=self.model, cfg=self.cfg, checkpoint=final_ckpt, steps=hp.steps,
                      samples=self.offset, tokens=self.offset * seq_len, n_params=self.n_params,
                      flops_per_token=self.fpt, val_loss=val_loss, data_fingerprint=self.data_fp,
                      config_fingerprint=self.config_fp, resumed_from=self.resume.step or None,
                      mismatch=self.resume.mismatch, seconds=seconds,
                      trained_tokens=(self.offset - batch_plan(hp, start)[0]) * seq_len, peak=self.peak)

    def _log(self, done: int, loss: float, grad_norm: float, g: int, dt: float) -> None:
        tps = g * self.seq_len / dt
        self.log.add({"step": done, "loss": round(loss, 6), "lr": self.sched.get_last_lr()[0],
                      "grad_norm": round(grad_norm, 6), "tokens": self.offset * self.seq_len, "batch_size": g,
                      "samples": self.offset},
                     {"step": done, "tokens_per_s": round(tps, 1),
                      "mfu": round(tps * self.fpt / (self.peak[0] * self.acc.num_processes), 6),
                      "step_seconds": round(dt, 4)})

    def _checkpoint_state(self) -> dict:
        return {**self.info, "samples_consumed": self.offset, "tokens": self.offset * self.seq_len,
                "global_batch_size": self.hp.global_batch_size, "config": self.resolved}
