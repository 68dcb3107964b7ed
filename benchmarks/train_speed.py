"""Training throughput of the pretrain stage against a bare PyTorch loop, and MFU two ways.

Why: the stage wraps the step in accelerate, exact-resume bookkeeping, per-step logging and data-order
code; a reproducibility tool must not pay for that in speed. Both sides train the same model (the active
params' `model` section, same init seed), on the same packed samples of data/tokens/train, with the same
global batch, AdamW settings, LR schedule, grad clipping and torch threads. They run alternately
(ours, bare, ours, bare, ...) in fresh processes so that load on a shared machine hits both alike, and the
median tokens/s over the steady steps (after WARMUP) is compared.

Both tokens/s figures are per optimizer step (forward, backward, clip, optimizer and scheduler step, and for
ours also the data-order lookup and per-step logging), medians over the steady steps; start-up is excluded.

MFU = FLOPs/token (6N + attention, stages.pretrain.flops_per_token) x tokens/s / peak, with two peaks:
  * nominal: cores x max clock x FLOPs/cycle/core from the CPU's vector units (AVX-512: 2 FMA x 16 fp32
    lanes x 2 = 64; AVX2+FMA: 32; otherwise 8) — the datasheet kind of number, rarely reachable on CPU;
  * measured: the best fp32 GEMM FLOP/s on the same threads in the same run — the practical CPU limit.

Needs the pipeline's tokens (run `dvc repro tokenize` first). Usage: python benchmarks/train_speed.py [ROUNDS] [STEPS]
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
WARMUP = 5

BARE = r'''
import json, sys, time
import numpy as np, torch
from stages.core.params import load
from stages.lib.training.model import llama_config
from stages.lib.training.schedule import lr_lambda
from stages.lib.tokens import load_tokens
from transformers import LlamaForCausalLM
p = load("params.yaml"); hp = p.pretrain
torch.set_num_threads(hp.threads); torch.manual_seed(p.seed)
data = load_tokens("data/tokens/train")
vocab = json.load(open("artifacts/tokenizer/tokenizer.json"))["model"]["vocab"]
model = LlamaForCausalLM(llama_config(p.model, len(vocab))); model.train()
opt = torch.optim.AdamW(model.parameters(), lr=hp.lr, betas=tuple(hp.betas), eps=hp.eps, weight_decay=hp.weight_decay)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(hp))
G, mb = hp.global_batch_size, hp.micro_batch_size
rates = []
for step in range(hp.steps):
    t0 = time.perf_counter()
    for k in range(G // mb):
        i = (step * G + k * mb) % (len(data) - mb)
        x = torch.from_numpy(np.asarray(data[i:i + mb], dtype=np.int64))
        loss = model(input_ids=x, labels=x).loss / (G // mb)
        loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), hp.grad_clip)
    opt.step(); sched.step(); opt.zero_grad(set_to_none=True)
    rates.append(G * data.shape[1] / (time.perf_counter() - t0))
print(json.dumps(rates))
'''


def workdir(steps: int) -> Path:
    """A scratch copy with just what the main phase reads, so the benchmark never touches the pipeline's outputs."""
    d = Path(tempfile.mkdtemp(prefix="lucie-train-speed-"))
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["tracking"]["enabled"] = False
    raw["pretrain"].update(steps=steps, checkpoint_every=10**6, export_every=10**6, log_every=1)
    (d / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    for rel in ("data/tokens/train", "data/tokens/valid", "artifacts/tokenizer"):
        if not (ROOT / rel).exists():
            sys.exit(f"{rel} is missing: run `dvc repro tokenize` first")
        shutil.copytree(ROOT / rel, d / rel)
    return d


def env(threads: int) -> dict:
    return {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": str(threads),
            "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def ours(d: Path, threads: int) -> list[float]:
    shutil.rmtree(d / ".lucie", ignore_errors=True)
    subprocess.run([sys.executable, "-m", "stages.pretrain"], cwd=d, env=env(threads), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(d / "metrics/timing/pretrain_speed.csv") as f:
        return [float(r["tokens_per_s"]) for r in csv.DictReader(f)]


def bare(d: Path, threads: int) -> list[float]:
    out = subprocess.run([sys.executable, "-c", BARE], cwd=d, env=env(threads), check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def nominal_peak(threads: int) -> tuple[float, str]:
    info = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    flags = next((l.split(":", 1)[1] for l in info.splitlines() if l.startswith("Flags")), "")
    mhz = [float(l.split(":", 1)[1]) for l in info.splitlines() if l.startswith(("CPU max MHz", "CPU MHz"))]
    per_cycle = 64 if "avx512f" in flags else 32 if ("avx2" in flags and "fma" in flags) else 8
    ghz = (max(mhz) if mhz else 2000.0) / 1000
    clock = f"{ghz:.2f} GHz" if mhz else f"{ghz:.2f} GHz ASSUMED (lscpu reports no clock here)"
    return threads * ghz * 1e9 * per_cycle, f"{threads} cores x {clock} x {per_cycle} FLOP/cycle"


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    sys.path.insert(0, str(ROOT))
    import torch

    from stages.core.params import load
    from stages.lib.training.model import flops_per_token, llama_config, measure_peak_flops

    p = load(ROOT / "params.yaml")
    threads = p.pretrain.threads
    torch.set_num_threads(threads)
    d = workdir(steps)
    vocab = len(json.loads((d / "artifacts/tokenizer/tokenizer.json").read_text())["model"]["vocab"])
    fpt = flops_per_token(llama_config(p.model, vocab), p.tokenize.seq_len)
    ours_runs, bare_runs = [], []
    for r in range(rounds):
        for name, fn, runs in (("ours", ours, ours_runs), ("bare", bare, bare_runs)):
            t0 = time.perf_counter()
            rates = fn(d, threads)
            runs.append(statistics.median(rates[WARMUP:]))
            print(f"round {r + 1} {name}: median {runs[-1]:,.0f} tok/s over steps {WARMUP + 1}-{len(rates)} "
                  f"({time.perf_counter() - t0:.1f} s with start-up)", flush=True)
    gemm = measure_peak_flops(bf16=False)
    peak, how = nominal_peak(threads)
    o, b = statistics.median(ours_runs), statistics.median(bare_runs)
    print(f"\nmodel: {fpt:,} FLOPs/token, global batch {p.pretrain.global_batch_size} x {p.tokenize.seq_len}, "
          f"{threads} threads, load average {os.getloadavg()[0]:.2f}")
    print(f"ours {o:,.0f} tok/s, bare PyTorch {b:,.0f} tok/s: ratio ours/bare = {o / b:.3f}")
    print(f"MFU vs measured fp32 GEMM ({gemm / 1e9:.1f} GFLOP/s): ours {o * fpt / gemm:.1%}, bare {b * fpt / gemm:.1%}")
    print(f"MFU vs nominal peak ({peak / 1e9:.1f} GFLOP/s = {how}): ours {o * fpt / peak:.1%}, bare {b * fpt / peak:.1%}")
    shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
