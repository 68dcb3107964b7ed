"""pretrain: a Llama (transformers LlamaConfig from params) trained with accelerate.

One script for every scale: on this machine it runs as one CPU process; under torchrun
or `accelerate launch` on N GPU nodes the same code trains data-parallel (the launcher
comes with the multi-node work). What makes it reproducible:

* the data order is a pure function of (seed, epoch, global sample index): epoch e is a
  permutation of all samples drawn from rng(seed, e), and optimizer step k consumes global
  positions [k*G, (k+1)*G) of the concatenated epochs, G = micro_batch x grad_accum x
  world size. Each rank takes its own slice of that global batch, so the samples a step
  sees do not depend on the number of processes;
* the recipe (AdamW b1 0.9 / b2 0.95 / eps 1e-5, wd 0.1, clip 1.0, warmup then cosine to
  min LR) and Lucie's init std come from params;
* every checkpoint holds model, optimizer, scheduler and RNG states (accelerate's
  save_state) plus state.json with the step, the data position and the resolved config.

Outputs: artifacts/models/base (HF safetensors + tokenizer), artifacts/checkpoints/,
plots/pretrain_loss.csv, metrics/pretrain.json.
"""
from __future__ import annotations

import csv
import hashlib
import io as io_text
import json
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np

from . import io
from .runtime import StageContext, StageError, stage
from .tokenize import load_tokens

TOKENS, TOK = "data/tokens", "artifacts/tokenizer"
OUT, CKPT, PLOT = "artifacts/models/base", "artifacts/checkpoints", "plots/pretrain_loss.csv"


def llama_config(ctx: StageContext, vocab_size: int):
    from transformers import LlamaConfig

    m = ctx.params.model
    return LlamaConfig(
        vocab_size=m.vocab_size or vocab_size, hidden_size=m.hidden_size, intermediate_size=m.intermediate_size,
        num_hidden_layers=m.num_hidden_layers, num_attention_heads=m.num_attention_heads,
        num_key_value_heads=m.num_key_value_heads, head_dim=m.head_dim, rms_norm_eps=m.rms_norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": m.rope_theta},
        max_position_embeddings=m.max_position_embeddings, tie_word_embeddings=m.tie_word_embeddings,
        initializer_range=m.initializer_range, hidden_act="silu", attention_bias=False, mlp_bias=False,
        bos_token_id=0, eos_token_id=1, pad_token_id=3,
    )


def sample_order(seed: int, n_samples: int, start: int, count: int) -> np.ndarray:
    """Global sample ids at stream positions [start, start+count): epoch e = permutation from rng(seed, e)."""
    out, pos = [], start
    while len(out) < count:
        epoch, offset = divmod(pos, n_samples)
        perm = np.random.default_rng([seed, epoch]).permutation(n_samples)
        take = min(count - len(out), n_samples - offset)
        out.extend(perm[offset : offset + take].tolist())
        pos += take
    return np.asarray(out, dtype=np.int64)


def lr_lambda(p):
    def f(step: int) -> float:
        if p.warmup_steps and step < p.warmup_steps:
            return (step + 1) / p.warmup_steps
        progress = (step - p.warmup_steps) / max(1, p.steps - p.warmup_steps)
        floor = p.min_lr / p.lr
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return f


def fingerprint(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def flops_per_token(cfg) -> float:
    """6N training FLOPs per token over the non-embedding weights (attention scores left out at these lengths)."""
    n = cfg.num_hidden_layers * (4 * cfg.hidden_size**2 + 3 * cfg.hidden_size * cfg.intermediate_size)
    return 6 * n


def run(ctx: StageContext) -> None:
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import LlamaForCausalLM

    p, seed = ctx.params.pretrain, ctx.params.seed
    torch.set_num_threads(p.threads)
    acc = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision="bf16" if p.precision == "bf16" else "no")
    if acc.num_processes != int(os.environ.get("WORLD_SIZE", 1)):
        raise RuntimeError("launched processes do not form one group (set ACCELERATE_USE_CPU=true for CPU DDP)")
    set_seed(seed)

    train = load_tokens(ctx.path(TOKENS) / "train")
    valid = load_tokens(ctx.path(TOKENS) / "valid")
    if len(train) == 0:
        raise StageError("no training samples (data/tokens/train is empty); lower tokenize.seq_len or add data")
    tok_manifest = io.read_json(ctx.path(TOKENS) / "train" / io.MANIFEST)
    from tokenizers import Tokenizer
    vocab = Tokenizer.from_file(str(ctx.path(TOK) / "tokenizer.json")).get_vocab_size()
    cfg = llama_config(ctx, vocab)
    model = LlamaForCausalLM(cfg)
    n_params = sum(t.numel() for t in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=p.lr, betas=tuple(p.betas), eps=p.eps, weight_decay=p.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(p))
    model, opt, sched = acc.prepare(model, opt, sched)

    world, rank = acc.num_processes, acc.process_index
    G = p.micro_batch_size * p.grad_accum * world
    resolved = {"model": ctx.params.model.model_dump(), "pretrain": p.model_dump(), "seed": seed, "vocab": vocab}
    data_fp = tok_manifest["files"][0]["sha256"]
    rows, speed, t_start, tokens_seen = [], [], time.perf_counter(), 0
    ckpt_tmp = ctx.path(CKPT).with_name(f".{Path(CKPT).name}.partial")  # renamed into place at the end
    shutil.rmtree(ckpt_tmp, ignore_errors=True)

    def checkpoint(step: int) -> None:
        d = ckpt_tmp / f"step{step:07d}"
        acc.save_state(str(d))
        if acc.is_main_process:
            io.write_json(d / "state.json", {"step": step, "samples_consumed": step * G, "global_batch": G,
                                             "config": resolved, "config_fingerprint": fingerprint(resolved),
                                             "data_fingerprint": data_fp})

    model.train()
    for step in ctx.progress(range(p.steps), p.steps, "training"):
        t0 = time.perf_counter()
        ids = sample_order(seed, len(train), step * G, G)
        mine = ids[rank * (G // world) : (rank + 1) * (G // world)]
        loss_sum = 0.0
        for micro in range(p.grad_accum):
            chunk = mine[micro * p.micro_batch_size : (micro + 1) * p.micro_batch_size]
            x = torch.from_numpy(train[chunk].astype(np.int64)).to(acc.device)
            loss = model(input_ids=x, labels=x).loss / p.grad_accum
            acc.backward(loss)
            loss_sum += loss.item()
        grad_norm = acc.clip_grad_norm_(model.parameters(), p.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        loss_t = torch.tensor([loss_sum], device=acc.device)
        loss_avg = acc.reduce(loss_t, reduction="mean").item()
        dt = time.perf_counter() - t0
        tokens_seen += G * train.shape[1]
        if step % p.log_every == 0 or step == p.steps - 1:
            rows.append({"step": step + 1, "loss": round(loss_avg, 6), "lr": sched.get_last_lr()[0],
                         "grad_norm": round(float(grad_norm), 6), "tokens": tokens_seen})
            speed.append((step + 1, G * train.shape[1] / dt))
        if p.checkpoint_every and (step + 1) % p.checkpoint_every == 0 and step + 1 < p.steps:
            checkpoint(step + 1)
    checkpoint(p.steps)
    elapsed = time.perf_counter() - t_start

    val_loss = None
    model.eval()
    if len(valid):
        with torch.no_grad():
            batches = [torch.from_numpy(valid[i : i + 8].astype(np.int64)) for i in range(0, min(len(valid), 64), 8)]
            losses = [model(input_ids=b, labels=b).loss.item() for b in batches]
        val_loss = float(np.mean(losses))

    if acc.is_main_process:
        with io.atomic_dir(ctx.path(OUT)) as tmp:
            acc.unwrap_model(model).save_pretrained(str(tmp), safe_serialization=True)
            for f in ctx.path(TOK).iterdir():
                shutil.copy(f, tmp / f.name)
            io.write_json(tmp / "training_state.json", {"steps": p.steps, "tokens": tokens_seen,
                                                        "config_fingerprint": fingerprint(resolved),
                                                        "data_fingerprint": data_fp})
        with io.atomic_dir(ctx.path(CKPT)) as tmp:
            os.replace(ckpt_tmp, tmp)
        plot = ctx.path(PLOT)
        buf = io_text.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        io.write_bytes_atomic(plot, buf.getvalue().encode())
        tps = tokens_seen / elapsed
        metrics = {
            "steps": p.steps, "tokens": tokens_seen, "parameters": n_params, "first_loss": rows[0]["loss"],
            "final_loss": rows[-1]["loss"], "valid_loss": val_loss, "flops_per_token": flops_per_token(cfg),
            "world_size": world,
        }
        # Wall-clock numbers vary run to run: MLflow and an untracked file get them, not the DVC outputs
        # (those stay byte-identical for the same inputs, which the golden dvc.lock test checks).
        timing = {"tokens_per_s": round(tps, 1), "seconds": round(elapsed, 2)}
        ctx.tracker.metrics(timing)
        io.write_json(ctx.path("metrics/timing/pretrain.json"), timing)
        ctx.tracker.metric_series("train_loss", [(r["step"], r["loss"]) for r in rows])
        ctx.tracker.metric_series("lr", [(r["step"], r["lr"]) for r in rows])
        ctx.tracker.metric_series("grad_norm", [(r["step"], r["grad_norm"]) for r in rows])
        ctx.tracker.metric_series("tokens_per_s", speed)
        ctx.write_metrics("metrics/pretrain.json", metrics)
        ctx.tracker.artifact(plot)
        ctx.summary(f"{n_params:,} params, {p.steps} steps, {tokens_seen:,} tokens, loss {rows[0]['loss']:.3f} -> "
                    f"{rows[-1]['loss']:.3f} (valid {val_loss if val_loss is None else round(val_loss, 3)}), "
                    f"{tps:,.0f} tok/s -> {OUT}")


def main() -> None:
    with stage("pretrain") as ctx:
        run(ctx)


if __name__ == "__main__":
    main()
