"""`lucie plan`: per phase and per device, the memory, FLOPs and speed a recipe asks of its GPUs, before renting them.

Why: a recipe that does not fit fails hours into a cluster job. This is arithmetic on the recipe alone (no torch):
  - parameters, gradients, AdamW state: N = pretrain.param_count (exact, Lucie-7B 6,706,958,336); with
    bf16 FSDP2 mixed precision, fp32 master weights + fp32 gradients + 2 fp32 moments = 16 bytes per parameter,
    sharded over dp_shard_size x tp_size (HSDP replicas do not divide it), plus the unsharded bf16 weights and
    gradients of the layer being computed and the one prefetched; fp32 (CPU) is the same without the bf16 copies;
  - activations of one micro-batch (what backward keeps), counted tensor by tensor for the HF Llama decoder layer
    (RMSNorm: input, normalised, weighted = 3d; q, repeated k and v, attention output, o_proj input = 5·H·hd and
    a log-sum-exp per head with SDPA, or the H·T probabilities with eager attention; SwiGLU: gate, silu(gate),
    up, their product = 4f), times layers, plus the final norm and the logits (HF upcasts them to fp32 for the
    loss: logits, log-softmax and its gradient). With activation checkpointing each layer keeps its input only
    (d) and one layer is recomputed at a time. Tensor parallelism divides the head and MLP terms by tp_size;
  - FLOPs per step = flops_per_token(seq_len) x global batch x seq_len (stages.pretrain: 6N + 12·L·H·hd·T);
    tokens/s at an MFU = MFU x peak FLOP/s x devices / flops_per_token.
benchmarks/plan_memory.py checks the memory model against peak memory measured on CPU (within 20 %).

    python -m stages.lib.plan [--recipe lucie-7b] [--format md|json] [--mfu 0.4] [--device-memory-gb 80]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from stages.core.params import Params, load
from stages.lib.training.model import dims, flops_per_token, param_count

GB = 1e9
H100_BF16_FLOPS = 9.89e14  # dense bf16, SXM; used when pretrain.launch.peak_flops_per_device is null


def layer_params(cfg) -> int:
    v, d, layers, heads, kv, hd, f = dims(cfg)
    return d * heads * hd + 2 * d * kv * hd + heads * hd * d + 3 * d * f + 2 * d


def activation_elements(cfg, seq_len: int, tp: int = 1, attention: str = "sdpa") -> tuple[int, int]:
    """Elements kept for backward per token: (one decoder layer, the final norm)."""
    _, d, _, heads, _, hd, f = dims(cfg)
    q = heads * hd
    attn = 5 * q + heads if attention == "sdpa" else 4 * q + heads * seq_len
    return 6 * d + (attn + 4 * f) // tp, 3 * d


def phase_memory(cfg, seq_len: int, micro_batch: int, shard: int, tp: int, bf16: bool, attention: str = "sdpa") -> dict:
    """Bytes per device for one phase, by part; activations with and without checkpointing.

    `shard`: FSDP2's dp_shard_size (1: replicated, DDP). TP splits the decoder layers only (stages/lib/training/
    parallel.py's plan): the embeddings, the LM head and its logits are sharded by FSDP alone."""
    v, d, layers, *_ = dims(cfg)
    n = param_count(cfg)
    act_bytes = 2 if bf16 else 4
    tokens = seq_len * micro_batch
    layer, head = activation_elements(cfg, seq_len, tp, attention)
    logits = tokens * v * ((act_bytes if bf16 else 0) + 4 + 4 + 4)  # logits (+ fp32 copy), log-softmax, grad
    full = tokens * act_bytes * (layers * layer + head)
    # checkpointed: every layer's input, then either one layer recomputed in backward or, before it, the head
    ckpt = tokens * act_bytes * layers * d + max(tokens * act_bytes * layer, tokens * act_bytes * head + logits) - logits
    # FSDP2 gathers one layer's bf16 weights (and reduce-scatters its bf16 gradients) while prefetching the next
    buffers = 2 * layer_params(cfg) * (2 + 2) // tp if bf16 and shard > 1 else 0
    emb = v * d * (1 if cfg.tie_word_embeddings else 2)
    per_device = (n - emb) / (shard * tp) + emb / shard  # parameters each device holds (fp32 master copy)
    return {"params": 4 * per_device, "grads": 4 * per_device, "optimizer": 8 * per_device, "buffers": buffers,
            "activations": full, "activations_checkpointed": ckpt, "logits": logits}




def phases(p: Params) -> dict[str, dict]:
    """Each training phase's shape: seq_len, micro-batch, global batch, steps."""
    out = {"main": {"seq_len": p.tokenize.seq_len, "micro_batch_size": p.pretrain.micro_batch_size,
                    "global_batch_size": p.pretrain.global_batch_size, "steps": p.pretrain.steps}}
    for name in ("extension", "annealing"):
        ph = getattr(p, name, None)
        if ph is not None and getattr(ph, "enabled", True):
            out[name] = {"seq_len": ph.seq_len, "micro_batch_size": ph.micro_batch_size,
                         "global_batch_size": ph.global_batch_size, "steps": ph.steps}
    return out


def model_config(p: Params):
    """The model section, with the vocabulary the tokenizer will have when model.vocab_size is null."""
    return p.model if p.model.vocab_size else p.model.model_copy(update={"vocab_size": p.tokenizer.vocab_size})


def plan(p: Params, device_memory_gb: float = 80.0, mfu: float = 0.4, checkpointing: bool | None = None,
         attention: str | None = None) -> dict:
    """The plan of recipe `p`; checkpointing and attention default to pretrain.launch's settings."""
    cfg = model_config(p)
    launch, pc = p.pretrain.launch, p.pretrain.launch.parallelism
    world = launch.nnodes * launch.nproc_per_node
    tp = pc.tp_size
    shard = pc.dp_shard_size if pc.enabled else 1
    dp = world // tp
    bf16 = p.pretrain.precision == "bf16"
    peak = launch.peak_flops_per_device or H100_BF16_FLOPS
    ckpt = launch.activation_checkpointing if checkpointing is None else checkpointing
    attention = attention or launch.attn_implementation
    out = {"recipe": p.recipe, "params": param_count(cfg), "world_size": world, "device_memory_gb": device_memory_gb,
           "mfu": mfu, "peak_flops_per_device": peak, "precision": p.pretrain.precision, "attention": attention,
           "sharding": {"dp_replicate": pc.dp_replicate_size, "dp_shard": pc.dp_shard_size, "tp": tp},
           "activation_checkpointing": ckpt, "phases": {}}
    for name, ph in phases(p).items():
        m = phase_memory(cfg, ph["seq_len"], ph["micro_batch_size"], shard, tp, bf16, attention)
        static = m["params"] + m["grads"] + m["optimizer"] + m["buffers"] + m["logits"]
        total_full, total_ckpt = static + m["activations"], static + m["activations_checkpointed"]
        total = total_ckpt if ckpt else total_full
        fpt = flops_per_token(cfg, ph["seq_len"])
        tokens_step = ph["global_batch_size"] * ph["seq_len"]
        tps = mfu * peak * world / fpt
        gb = {k: round(v / GB, 3) for k, v in m.items()}
        gb.update(total=round(total / GB, 3), total_without_checkpointing=round(total_full / GB, 3),
                  total_with_checkpointing=round(total_ckpt / GB, 3))
        out["phases"][name] = {
            **ph, "grad_accumulation": max(ph["global_batch_size"] // (ph["micro_batch_size"] * dp), 1),
            # every data-parallel rank (world / tp) takes whole micro-batches of the global batch
            "batch_divides": ph["global_batch_size"] % (ph["micro_batch_size"] * dp) == 0,
            "memory_gb": gb, "fits": total <= device_memory_gb * GB,
            "fits_without_checkpointing": total_full <= device_memory_gb * GB,
            "fits_with_checkpointing": total_ckpt <= device_memory_gb * GB,
            "flops_per_token": fpt, "flops_per_step": fpt * tokens_step, "flops_per_step_per_device": fpt * tokens_step / world,
            "tokens_per_s_at_mfu": round(tps, 1), "tokens_per_s_per_device_at_mfu": round(tps / world, 1),
            "step_seconds_at_mfu": round(tokens_step / tps, 3), "days_at_mfu": round(ph["steps"] * tokens_step / tps / 86400, 2)}
    return out


def markdown(r: dict) -> str:
    s = r["sharding"]
    lines = [f"# Plan for `{r['recipe']}`: {r['params']:,} parameters on {r['world_size']} devices",
             "", f"Per device, {r['precision']}, {r['attention']} attention; sharding dp_replicate {s['dp_replicate']} x "
             f"dp_shard {s['dp_shard']} x tp {s['tp']}; activation checkpointing "
             f"{'on' if r['activation_checkpointing'] else 'off'}; {r['device_memory_gb']:g} GB per device; "
             f"speed at MFU {r['mfu']:g} of {r['peak_flops_per_device']:.3g} FLOP/s.", "",
             "| phase | seq_len | micro-batch | params GB | grads GB | AdamW GB | activations GB (ckpt) | logits GB "
             "| total GB | fits | FLOPs/step | tokens/s | days |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
    for name, ph in r["phases"].items():
        m = ph["memory_gb"]
        lines.append(f"| {name} | {ph['seq_len']:,} | {ph['micro_batch_size']} | {m['params']:.1f} | {m['grads']:.1f} | "
                     f"{m['optimizer']:.1f} | {m['activations']:.1f} ({m['activations_checkpointed']:.1f}) | "
                     f"{m['logits']:.1f} | {m['total']:.1f} | {'yes' if ph['fits'] else '**no**'} | "
                     f"{ph['flops_per_step']:.3g} | {ph['tokens_per_s_at_mfu']:,.0f} | {ph['days_at_mfu']} |")
    bad = [n for n, ph in r["phases"].items() if not ph["batch_divides"]]
    if bad:
        lines += ["", f"**Batch**: in {', '.join(bad)}, global_batch_size is not a multiple of micro_batch_size x "
                  f"{r['world_size'] // s['tp']} data-parallel ranks (world / tp): lower micro_batch_size or raise tp_size."]
    lines += ["", "total = params + grads + AdamW + FSDP buffers + logits + activations (checkpointed if on); "
              "without / with checkpointing: " + ", ".join(
                  f"{n} {ph['memory_gb']['total_without_checkpointing']:.1f} / {ph['memory_gb']['total_with_checkpointing']:.1f} GB"
                  for n, ph in r["phases"].items()), ""]
    return "\n".join(lines)


def load_recipe(root: Path, recipe: str | None) -> Params:
    if recipe is None:
        from stages.core.runtime import params_path

        return load(params_path(root))
    path = root / "recipes" / f"{recipe}.yaml"
    if not path.exists():
        names = ", ".join(sorted(q.stem for q in (root / "recipes").glob("*.yaml")))
        raise FileNotFoundError(f"no recipe {recipe!r} (recipes/{recipe}.yaml); available: {names}")
    return load(path)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="lucie plan", description=__doc__.split("\n")[0])
    ap.add_argument("--recipe", default=None, help="recipes/<NAME>.yaml (default: params.yaml)")
    ap.add_argument("--format", choices=("md", "json"), default="md")
    ap.add_argument("--mfu", type=float, default=0.4)
    ap.add_argument("--device-memory-gb", type=float, default=80.0)
    ap.add_argument("--attention", choices=("sdpa", "eager"), default=None, help="default: pretrain.launch.attn_implementation")
    a = ap.parse_args(argv)
    from stages.core import files as io

    try:
        p = load_recipe(io.root(), a.recipe)
    except FileNotFoundError as err:
        ap.error(str(err))
    r = plan(p, a.device_memory_gb, a.mfu, attention=a.attention)
    sys.stdout.write(json.dumps(r, indent=2) + "\n" if a.format == "json" else markdown(r))


if __name__ == "__main__":
    main()
