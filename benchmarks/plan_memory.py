"""Does `lucie plan`'s memory model (stages/lib/plan.py) match what training really holds? Measured on CPU.

Why: the planner's answer for a 7B recipe on H100s cannot be checked here, but the same arithmetic for tiny
Llamas can: params + gradients + AdamW state + one micro-batch's activations (+ logits), fp32, one process.
Each configuration trains 2 AdamW steps (the second has the optimizer state in place) in a fresh process
with glibc returning freed blocks to the OS (MALLOC_MMAP_THRESHOLD_, so the peak RSS follows live tensors;
torch's CPU allocator does not cache). Measured = peak RSS - RSS before the model is built (libraries
loaded and a throw-away step done first). Pass: every planned total within 20 % of the measured peak.

    python benchmarks/plan_memory.py        # prints a table; exit 1 if a configuration is off by > 20 %
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stages.core.params import Model  # noqa: E402
from stages.lib.plan import phase_memory  # noqa: E402

TOLERANCE = 0.20
# name, model, seq_len, micro-batch, attention, activation checkpointing
CONFIGS = [
    ("d128-L4-sdpa", dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
                          num_key_value_heads=2, vocab_size=2048), 256, 8, "sdpa", False),
    ("d128-L4-sdpa-ckpt", dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
                               num_key_value_heads=2, vocab_size=2048), 256, 8, "sdpa", True),
    ("d256-L2-eager", dict(hidden_size=256, intermediate_size=768, num_hidden_layers=2, num_attention_heads=8,
                           num_key_value_heads=8, vocab_size=1024), 512, 4, "eager", False),
    ("d64-L8-sdpa-long", dict(hidden_size=64, intermediate_size=192, num_hidden_layers=8, num_attention_heads=4,
                              num_key_value_heads=1, vocab_size=512), 1024, 4, "sdpa", False),
]

CHILD = r"""
import json, resource, sys
import torch
from stages.core.params import Model
from stages.lib.training.model import llama_config
from transformers import LlamaForCausalLM

spec = json.loads(sys.argv[1])
torch.manual_seed(0)
torch.set_num_threads(1)

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()

def train(model_kw, seq, batch, attn, ckpt, steps):
    cfg = llama_config(Model(**model_kw, max_position_embeddings=max(seq, 64)), model_kw["vocab_size"])
    cfg._attn_implementation = attn
    model = LlamaForCausalLM(cfg)
    model.config.use_cache = False
    if ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, model_kw["vocab_size"], (batch, seq))
    for _ in range(steps):
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return model, opt

m, o = train({**spec["model"], "num_hidden_layers": 1}, 16, 1, spec["attn"], spec["ckpt"], 1)  # load kernels
del m, o
base = rss()
peak0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
model, opt = train(spec["model"], spec["seq"], spec["batch"], spec["attn"], spec["ckpt"], 2)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"base": base, "peak": peak, "peak_before": peak0}))
"""


def measure(model: dict, seq: int, batch: int, attn: str, ckpt: bool) -> int:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536",
           "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "TRANSFORMERS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    spec = {"model": model, "seq": seq, "batch": batch, "attn": attn, "ckpt": ckpt}
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return r["peak"] - r["base"]


def planned(model: dict, seq: int, batch: int, attn: str, ckpt: bool) -> int:
    m = phase_memory(Model(**model, max_position_embeddings=max(seq, 64)), seq, batch, 1, 1, False, attn)
    return int(m["params"] + m["grads"] + m["optimizer"] + m["buffers"] + m["logits"]
               + (m["activations_checkpointed"] if ckpt else m["activations"]))


def main() -> None:
    worst = 0.0
    print(f"{'config':<20} {'seq':>5} {'batch':>5} {'planned MB':>11} {'measured MB':>12} {'error':>7}")
    rows = []
    for name, model, seq, batch, attn, ckpt in CONFIGS:
        got, want = measure(model, seq, batch, attn, ckpt), planned(model, seq, batch, attn, ckpt)
        err = (want - got) / got
        worst = max(worst, abs(err))
        rows.append({"config": name, "seq_len": seq, "micro_batch": batch, "planned_bytes": want, "measured_bytes": got,
                     "error": round(err, 4)})
        print(f"{name:<20} {seq:>5} {batch:>5} {want / 1e6:>11.1f} {got / 1e6:>12.1f} {err:>+7.1%}")
    print(json.dumps({"worst_abs_error": round(worst, 4), "tolerance": TOLERANCE, "rows": rows}))
    sys.exit(0 if worst <= TOLERANCE else 1)


if __name__ == "__main__":
    main()
