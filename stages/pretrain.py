"""pretrain: a Llama (transformers LlamaConfig from params) trained with accelerate.

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
fresh optimizer and schedule (Megatron's --finetune); `train(ctx, phase, init_from)` runs any of them.

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
import hashlib
import io as io_text
import json
import math
import os
import re
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import io
from .params import Model, Pretrain, load
from .runtime import EXIT_STAGE_ERROR, StageContext, StageError, console, params_path, quiet_libraries, stage
from .tokenize import load_tokens

TOKENS, TOK = "data/tokens", "artifacts/tokenizer"


@dataclass(frozen=True)
class Layout:
    """Where one phase reads and writes. DVC forbids overlapping outputs, so every phase has its own."""
    stage: str  # its DVC stage (and MLflow run) name
    work: str  # checkpoints of an unfinished run (resumed from); moved to `ckpt` when the stage ends
    out: str  # final weights, HF format + tokenizer
    ckpt: str  # training states + hf/<revision>/
    plot: str  # loss log (DVC plot)
    metrics: str
    timing: str  # wall-clock numbers (untracked)
    speed: str
    tokens: str  # directory with train/ and valid/
    init_from: str | None  # the previous phase's `out`


LAYOUT = {
    "main": Layout("pretrain", ".lucie/pretrain", "artifacts/phases/main", "artifacts/checkpoints/main",
                   "plots/pretrain_loss.csv", "metrics/pretrain.json", "metrics/timing/pretrain.json",
                   "metrics/timing/pretrain_speed.csv", TOKENS, None),
    "extension": Layout("extend", ".lucie/extension", "artifacts/phases/extension", "artifacts/checkpoints/extension",
                        "plots/extension_loss.csv", "metrics/extension.json", "metrics/timing/extension.json",
                        "metrics/timing/extension_speed.csv", f"{TOKENS}/extension", "artifacts/phases/main"),
    "annealing": Layout("anneal", ".lucie/annealing", "artifacts/models/base", "artifacts/checkpoints/annealing",
                        "plots/annealing_loss.csv", "metrics/annealing.json", "metrics/timing/annealing.json",
                        "metrics/timing/annealing_speed.csv", f"{TOKENS}/annealing", "artifacts/phases/extension"),
}
PHASES = tuple(LAYOUT)  # training order
WORK = LAYOUT["main"].work
OVERRIDE_ENV = "LUCIE_RESUME_OVERRIDE"
KILL_ENV = "LUCIE_PRETRAIN_KILL_AFTER"  # test hook: SIGKILL this process right after step N's checkpoint
LOG_COLUMNS = ["step", "loss", "lr", "grad_norm", "tokens", "batch_size", "samples"]
SPEED_COLUMNS = ["step", "tokens_per_s", "mfu", "step_seconds"]
# Params that change how a run is executed, not what it computes: not part of the config fingerprint.
NOT_MATH = {"launch", "checkpoint_every", "keep_checkpoints", "export_every", "log_every", "threads", "deterministic"}
NAME_RE = re.compile(r"^(?:(?P<phase>[a-z][a-z0-9]*)_)?step(?P<step>\d{7})$")


# ---------------------------------------------------------------- model size and cost
def llama_config(m: Model, vocab_size: int, **overrides):
    """The transformers LlamaConfig of `model` params; `overrides` for a phase (rope_theta, max_position_embeddings)."""
    from transformers import LlamaConfig

    values = {"rope_theta": m.rope_theta, "max_position_embeddings": m.max_position_embeddings, **overrides}
    return LlamaConfig(
        vocab_size=m.vocab_size or vocab_size, hidden_size=m.hidden_size, intermediate_size=m.intermediate_size,
        num_hidden_layers=m.num_hidden_layers, num_attention_heads=m.num_attention_heads,
        num_key_value_heads=m.num_key_value_heads, head_dim=m.head_dim, rms_norm_eps=m.rms_norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": values["rope_theta"]},
        max_position_embeddings=values["max_position_embeddings"], tie_word_embeddings=m.tie_word_embeddings,
        initializer_range=m.initializer_range, hidden_act="silu", attention_bias=False, mlp_bias=False,
        bos_token_id=0, eos_token_id=1, pad_token_id=3,
    )


def _dims(cfg) -> tuple[int, int, int, int, int, int, int]:
    d, heads = cfg.hidden_size, cfg.num_attention_heads
    hd = getattr(cfg, "head_dim", None) or d // heads
    return cfg.vocab_size, d, cfg.num_hidden_layers, heads, cfg.num_key_value_heads, hd, cfg.intermediate_size


def param_count(cfg) -> int:
    """Exact parameter count of a Llama (no biases): V·d embeddings (x2 if untied) + L·layer + d final norm.

    layer = attention d·(H·hd) [q] + 2·d·(K·hd) [k, v] + (H·hd)·d [o] + SwiGLU MLP 3·d·f + 2 RMSNorms 2·d.
    Lucie-7B: 2·65,024·4,096 + 32·192,946,176 + 4,096 = 6,706,958,336 (its model card's number).
    """
    v, d, layers, heads, kv, hd, f = _dims(cfg)
    layer = d * heads * hd + 2 * d * kv * hd + heads * hd * d + 3 * d * f + 2 * d
    return v * d * (1 if cfg.tie_word_embeddings else 2) + layers * layer + d


def matmul_params(cfg) -> int:
    """Parameters that take part in a matrix product: all but the input embedding (a lookup), unless it is
    tied to the output layer (then the same matrix is the LM head's product)."""
    v, d = cfg.vocab_size, cfg.hidden_size
    return param_count(cfg) - (0 if cfg.tie_word_embeddings else v * d)


def flops_per_token(cfg, seq_len: int) -> int:
    """Training FLOPs per token = 6·N + 12·L·(H·hd)·T  (PaLM, appendix B).

    6·N: forward 2·N multiply-adds per token over the N matmul parameters, backward twice that.
    12·L·(H·hd)·T: attention scores QK^T and the weighted sum AV, 2·2·(H·hd)·T per layer forward, x3
    with backward, over a sequence of T tokens (counted without the causal half, as PaLM and Megatron do).
    """
    _, _, layers, heads, _, hd, _ = _dims(cfg)
    return 6 * matmul_params(cfg) + 12 * layers * heads * hd * seq_len


# ---------------------------------------------------------------- data order and batch schedule
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


def global_batch(p: Pretrain, consumed: int) -> int:
    """Samples in the step that starts at stream position `consumed` (Megatron's ramp-up rule, integer arithmetic)."""
    r = p.batch_rampup
    if r is None or consumed >= r.samples:
        return p.global_batch_size
    increments = (p.global_batch_size - r.start) // r.increment
    return min(p.global_batch_size, r.start + (consumed * increments // r.samples) * r.increment)


def batch_plan(p: Pretrain, step: int) -> tuple[int, int]:
    """(first stream position, number of samples) of optimizer step `step` (0-based). Only the ramp-up is
    walked step by step (Lucie: about 20 k steps); after it every step has global_batch_size samples."""
    offset, k = 0, 0
    if p.batch_rampup is not None:
        while k < step and offset < p.batch_rampup.samples:
            offset, k = offset + global_batch(p, offset), k + 1
    offset += (step - k) * p.global_batch_size
    return offset, global_batch(p, offset)


def lr_lambda(p):
    """LR factor of step `step` (0-based): linear warmup, then cosine (main), linear (annealing) to min_lr, or
    constant (extension). The factor after the last step is the floor: Lucie's annealing ends at LR 0."""
    def f(step: int) -> float:
        if p.warmup_steps and step < p.warmup_steps:
            return (step + 1) / p.warmup_steps
        if p.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - p.warmup_steps) / max(1, p.steps - p.warmup_steps))
        floor = p.min_lr / p.lr
        if p.schedule == "linear":
            return floor + (1 - floor) * (1 - progress)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    return f


def revision_name(phase: str, step: int) -> str:
    """Lucie's Hub revision names: step0005000 for the main phase, extension_step0000250 for the others."""
    return f"step{step:07d}" if phase == "main" else f"{phase}_step{step:07d}"


# ---------------------------------------------------------------- fingerprints
def fingerprint(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def math_config(model: dict, hp: Pretrain, seed: int, seq_len: int, phase: str) -> dict:
    """What the run computes: resolved model config, the math of `pretrain`, seed, sequence length, phase."""
    pre = {k: v for k, v in hp.model_dump(mode="json").items() if k not in NOT_MATH}
    return {"phase": phase, "seed": seed, "seq_len": seq_len, "model": model, "pretrain": pre}


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_diff(checkpoint: dict, current: dict) -> list[str]:
    """One line per differing key, e.g. 'pretrain.lr: 0.003 (checkpoint) != 0.001 (params)'."""
    a, b = _flat(checkpoint), _flat(current)
    show = lambda d, k: json.dumps(d[k]) if k in d else "<absent>"  # noqa: E731
    return [f"{k}: {show(a, k)} (checkpoint) != {show(b, k)} (params)" for k in sorted(a.keys() | b.keys())
            if a.get(k, KeyError) != b.get(k, KeyError)]


# ---------------------------------------------------------------- the phase and its result
@dataclass(frozen=True)
class Phase:
    """One training phase. `main` starts from random weights; later phases pass `init_from`."""
    name: str
    hp: Pretrain
    tokens: str = TOKENS  # token directory with train/ and valid/
    index: int = 0  # position in the schedule (orders revisions.json across phases)
    model_overrides: dict = field(default_factory=dict)  # e.g. {"rope_theta": 2.0e7, "max_position_embeddings": 32000}
    work: str = WORK  # its own work directory: a phase never resumes from another phase's files
    seq_len: int | None = None  # the sample length its params ask for (None: whatever the tokens have)


def phase_of(params, name: str) -> Phase | None:
    """The Phase of `name` from params; None for a later phase that is absent or disabled."""
    if name == "main":
        return Phase("main", params.pretrain)
    cfg = getattr(params, name)
    if cfg is None or not cfg.enabled:
        return None
    mpe = max(params.model.max_position_embeddings, cfg.seq_len)
    return Phase(name, cfg.training(params.pretrain), LAYOUT[name].tokens, PHASES.index(name),
                 {"rope_theta": cfg.rope_theta, "max_position_embeddings": mpe}, LAYOUT[name].work, cfg.seq_len)


def load_weights(model, model_dir: Path) -> None:
    """Weights only (Megatron's --finetune): every *.safetensors of an HF directory (large models are sharded)."""
    from safetensors.torch import load_file

    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise StageError(f"{model_dir} holds no *.safetensors weights to start from (did the previous phase run?)")
    sd = {}
    for f in files:
        sd.update(load_file(str(f)))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    tied = {"lm_head.weight"} if model.config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise StageError(f"{model_dir} does not fit the model: missing {sorted(set(missing) - tied)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]}")
    if tied:
        model.tie_weights()


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


def make_accelerator(hp: Pretrain):
    """One Accelerator per process: CPU DDP over gloo here, NCCL on GPUs, FSDP2/TP when launch.parallelism asks."""
    import torch
    from accelerate import Accelerator

    launch = hp.launch
    cuda = torch.cuda.is_available()
    if launch.backend == "nccl" and not cuda:
        raise StageError("pretrain.launch.backend is nccl but this machine has no CUDA device (use gloo or auto)")
    gpu = cuda and launch.backend != "gloo"
    if hp.deterministic and gpu:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before CUDA initialises; needed by cuBLAS
    extra = {}
    if launch.parallelism.enabled:
        if not gpu:
            raise StageError("pretrain.launch.parallelism (FSDP2/TP) needs GPUs: accelerate trains CPU processes "
                             "with DDP only. Set all sizes to 1 here.")
        extra = parallelism_kwargs(launch.parallelism)
    # step_scheduler_with_optimizer=False: accelerate would otherwise step the LR schedule once per process
    # each step (it assumes the global batch grows with the processes; here it is fixed by params).
    acc = Accelerator(cpu=not gpu, mixed_precision="bf16" if hp.precision == "bf16" else "no",
                      step_scheduler_with_optimizer=False, **extra)
    if acc.num_processes != int(os.environ.get("WORLD_SIZE", 1)):
        raise StageError("launched processes do not form one group (set ACCELERATE_USE_CPU=true for CPU DDP; "
                         "`python -m stages.launch` prints a working command)")
    return acc


def parallelism_kwargs(pc) -> dict:
    """Accelerator kwargs for FSDP2 (dp_shard_size) / HSDP (+ dp_replicate_size) / TP (tp_size). GPU only:
    written from accelerate's documented API, not exercised on this CPU machine (see docs/TRAINING.md)."""
    from accelerate import FullyShardedDataParallelPlugin
    from accelerate.parallelism_config import ParallelismConfig

    kwargs = {"parallelism_config": ParallelismConfig(dp_replicate_size=pc.dp_replicate_size,
                                                      dp_shard_size=pc.dp_shard_size, tp_size=pc.tp_size)}
    if pc.dp_shard_size > 1:
        kwargs["fsdp_plugin"] = FullyShardedDataParallelPlugin(
            fsdp_version=2, auto_wrap_policy="transformer_based_wrap",
            transformer_cls_names_to_wrap=["LlamaDecoderLayer"], state_dict_type="SHARDED_STATE_DICT",
            reshard_after_forward=True)
    return kwargs


def check_batches(hp: Pretrain, world: int) -> None:
    """Every global batch of the schedule must split into whole micro-batches on every rank."""
    unit = hp.micro_batch_size * world
    sizes = {hp.global_batch_size}
    if hp.batch_rampup:
        r = hp.batch_rampup
        sizes |= set(range(r.start, hp.global_batch_size, r.increment))
    bad = sorted(s for s in sizes if s % unit)
    if bad:
        raise StageError(f"global batch sizes {bad[:5]} are not multiples of micro_batch_size x processes "
                         f"= {hp.micro_batch_size} x {world}; change pretrain.global_batch_size/batch_rampup or the launch")


def measure_peak_flops(bf16: bool) -> float:
    """FLOP/s of a 1024² matmul on this process's threads: the CPU stand-in for a datasheet peak in MFU.
    The fastest of ~0.3 s of repetitions, so that a neighbour's burst on a shared machine does not lower it."""
    import torch

    dtype = torch.bfloat16 if bf16 else torch.float32
    a = torch.randn(1024, 1024, generator=torch.Generator().manual_seed(0)).to(dtype)
    a @ a  # warm-up
    best, t_end = float("inf"), time.perf_counter() + 0.3
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - t0)
    return 2 * 1024**3 / best


# ---------------------------------------------------------------- work directory: checkpoints, exports, logs
def checkpoints(work: Path, phase: str) -> list[tuple[int, Path]]:
    """Complete training-state checkpoints of `phase` (a directory is complete once state.json is in it)."""
    found = []
    for d in (work / "ckpt").glob("*step*") if (work / "ckpt").exists() else []:
        m = NAME_RE.match(d.name)
        if m and (m["phase"] or "main") == phase and (d / "state.json").exists():
            found.append((int(m["step"]), d))
    return sorted(found)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def write_revisions(hf_dir: Path) -> list[dict]:
    """hf/revisions.json: every exported revision, in training order (phase index, step)."""
    revs = [io.read_json(d / "training_state.json") for d in hf_dir.iterdir()
            if NAME_RE.match(d.name) and (d / "training_state.json").exists()]
    revs.sort(key=lambda r: (r["phase_index"], r["step"]))
    io.write_json(hf_dir / "revisions.json", {"revisions": revs})
    return revs


class StepLog:
    """The phase's loss log (deterministic columns, becomes plots/pretrain_loss.csv) and speed log (wall clock),
    appended line by line in WORK, cut back to the resumed step, mirrored to MLflow in batches."""

    def __init__(self, ctx: StageContext, work: Path, phase: str, active: bool, resume_step: int):
        self.ctx, self.active, self.phase = ctx, active, phase
        self.paths = {"loss": work / "logs" / f"{phase}.loss.csv", "speed": work / "logs" / f"{phase}.speed.csv"}
        self.pending: list[tuple[dict, dict]] = []
        if not active:
            return
        self.paths["loss"].parent.mkdir(parents=True, exist_ok=True)
        for kind, cols in (("loss", LOG_COLUMNS), ("speed", SPEED_COLUMNS)):
            path = self.paths[kind]
            lines = path.read_text().splitlines(keepends=True)[1:] if path.exists() else []
            kept = [line for line in lines if int(line.split(",", 1)[0]) <= resume_step]
            path.write_text(",".join(cols) + "\n" + "".join(kept))
        if resume_step:  # the resumed MLflow run gets the whole curve, not only its own part
            self.pending = list(zip(self.rows("loss"), self.rows("speed")))
            self.flush()

    def rows(self, kind: str = "loss") -> list[dict]:
        with open(self.paths[kind], newline="") as f:
            return list(csv.DictReader(f))

    def add(self, row: dict, speed: dict) -> None:
        if not self.active:
            return
        for kind, values in (("loss", row), ("speed", speed)):
            with open(self.paths[kind], "a", newline="") as f:
                csv.writer(f, lineterminator="\n").writerow(values.values())
        self.pending.append((row, speed))
        if len(self.pending) >= 100:
            self.flush()

    def flush(self) -> None:
        if not (self.active and self.pending):
            return
        name = (lambda n: n) if self.phase == "main" else (lambda n: f"{self.phase}_{n}")
        series = {"train_loss": ("loss", 0), "lr": ("lr", 0), "grad_norm": ("grad_norm", 0),
                  "batch_size": ("batch_size", 0), "tokens_per_s": ("tokens_per_s", 1), "mfu": ("mfu", 1)}
        for metric, (col, which) in series.items():
            self.ctx.tracker.metric_series(name(metric), [(int(r[0]["step"]), float(r[which][col]))
                                                          for r in self.pending])
        self.pending = []


# ---------------------------------------------------------------- one phase
def train(ctx: StageContext, phase: Phase, init_from: Path | None = None, *, acc=None,
          allow_mismatch: bool = False) -> Result:
    """Train `phase` to its last step, resuming from the latest checkpoint of that phase in WORK if any."""
    import torch
    from accelerate.utils import set_seed
    from transformers import LlamaForCausalLM

    hp, seed, name = phase.hp, ctx.params.seed, phase.name
    torch.set_num_threads(hp.threads)
    if hp.deterministic:
        torch.use_deterministic_algorithms(True)
    if acc is None:
        acc = make_accelerator(hp)
    else:
        acc.free_memory()  # the previous phase's model/optimizer must not be saved with this phase's state
    world, rank, main = acc.num_processes, acc.process_index, acc.is_main_process
    check_batches(hp, world)

    tokens_dir = ctx.path(phase.tokens)
    train_set, valid = load_tokens(tokens_dir / "train"), load_tokens(tokens_dir / "valid")
    if len(train_set) == 0:
        raise StageError(f"no training samples ({phase.tokens}/train is empty); lower the phase's seq_len or add data")
    n_samples, seq_len = train_set.shape
    if phase.seq_len is not None and seq_len != phase.seq_len:
        raise StageError(f"{phase.tokens}/train holds samples of {seq_len} tokens but {name}.seq_len is "
                         f"{phase.seq_len}: rerun the tokenize stage")
    data_fp = io.sha256_file(tokens_dir / "train" / io.MANIFEST)
    from tokenizers import Tokenizer
    vocab = Tokenizer.from_file(str(ctx.path(TOK) / "tokenizer.json")).get_vocab_size()
    cfg = llama_config(ctx.params.model, vocab, **phase.model_overrides)
    model_dump = {**ctx.params.model.model_dump(mode="json"), **phase.model_overrides, "vocab_size": cfg.vocab_size}
    resolved = math_config(model_dump, hp, seed, seq_len, name)
    config_fp = fingerprint(resolved)

    work = ctx.path(phase.work)
    found = checkpoints(work, name)
    resume, mismatch, state = (found[-1] if found else (None, None)), [], {}
    if resume[1] is not None:
        state = io.read_json(resume[1] / "state.json")
        mismatch = config_diff(state["config"], resolved)
        if state["data_fingerprint"] != data_fp:
            mismatch.append(f"data ({phase.tokens}/train/manifest.json sha256): {state['data_fingerprint'][:16]} "
                            f"(checkpoint) != {data_fp[:16]} (now)")
        if mismatch and not allow_mismatch:
            raise StageError(f"cannot resume {name} from {resume[1].relative_to(ctx.root)}: it was made with other "
                             "inputs:\n  " + "\n  ".join(mismatch) + f"\nDelete {phase.work} to start over, or resume "
                             f"anyway with --allow-resume-mismatch ({OVERRIDE_ENV}=1).")
        if resume[0] > hp.steps:
            raise StageError(f"checkpoint {resume[1].name} is past the phase's steps ({hp.steps})")
        if mismatch:
            console.print(f"[yellow]pretrain: resuming despite:[/] {'; '.join(mismatch)}")
    start = resume[0] or 0
    if main:  # leftovers of a killed run: partial directories, and anything after the resumed step
        for d in [*(work / "ckpt").glob(".*"), *(work / "hf").glob(".*")] if work.exists() else []:
            _remove(d)
        for d in (work / "hf").glob("*step*") if (work / "hf").exists() else []:
            m = NAME_RE.match(d.name)
            if m and (m["phase"] or "main") == name and int(m["step"]) > start:
                _remove(d)
    acc.wait_for_everyone()

    set_seed(seed)
    model = LlamaForCausalLM(cfg)
    if init_from is not None and resume[1] is None:
        load_weights(model, Path(init_from))  # weights only: the optimizer and schedule start fresh (--finetune)
    n_params = sum(t.numel() for t in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=hp.lr, betas=tuple(hp.betas), eps=hp.eps,
                            weight_decay=hp.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(hp))
    model, opt, sched = acc.prepare(model, opt, sched)
    if resume[1] is not None:
        acc.load_state(str(resume[1]))
    offset, _ = batch_plan(hp, start)
    if state and not mismatch and state["samples_consumed"] != offset:
        raise StageError(f"{resume[1].name}: data position {state['samples_consumed']} != {offset} from the schedule")

    fpt = flops_per_token(cfg, seq_len)
    if hp.launch.peak_flops_per_device:
        peak = (hp.launch.peak_flops_per_device, "params (pretrain.launch.peak_flops_per_device)")
    else:  # only rank 0 writes speed logs; the others skip the measurement
        kind = "bf16" if hp.precision == "bf16" else "fp32"
        peak = (measure_peak_flops(kind == "bf16") if main else 1.0, f"measured {kind} matmul 1024^2, {hp.threads} threads")
    log = StepLog(ctx, work, name, main, start)
    info = {"phase": name, "phase_index": phase.index, "config_fingerprint": config_fp, "data_fingerprint": data_fp}
    if phase.model_overrides:
        info.update(phase.model_overrides)
    if mismatch:
        info["resumed_despite"] = mismatch

    def export(step: int, samples: int) -> None:
        """HF-format revision (safetensors + config + tokenizer), ready for the publish stage."""
        sd = acc.get_state_dict(model)  # every rank: FSDP gathers the full weights here
        if main:
            rev = revision_name(name, step)
            if hp.precision == "bf16":  # Lucie published bf16 weights; training keeps fp32 masters
                sd = {k: v.to(torch.bfloat16) for k, v in sd.items()}
            with io.atomic_dir(work / "hf" / rev) as tmp:
                acc.unwrap_model(model).save_pretrained(str(tmp), state_dict=sd, safe_serialization=True)
                for f in ctx.path(TOK).iterdir():
                    shutil.copy(f, tmp / f.name)
                io.write_json(tmp / "training_state.json", {**info, "revision": rev, "step": step,
                                                            "samples": samples, "tokens": samples * seq_len})
            write_revisions(work / "hf")
        acc.wait_for_everyone()

    def checkpoint(step: int, samples: int) -> Path:
        final = work / "ckpt" / revision_name(name, step)
        tmp = final.with_name(f".{final.name}.partial")
        if main:
            _remove(tmp)
        acc.wait_for_everyone()
        acc.save_state(str(tmp))
        acc.wait_for_everyone()
        if main:
            io.write_json(tmp / "state.json", {**info, "step": step, "samples_consumed": samples,
                                               "tokens": samples * seq_len, "global_batch_size": hp.global_batch_size,
                                               "config": resolved})
            _remove(final)
            os.replace(tmp, final)
            if hp.keep_checkpoints:
                for _, old in checkpoints(work, name)[: -hp.keep_checkpoints]:
                    _remove(old)
            log.flush()
        acc.wait_for_everyone()
        return final

    model.train()
    final_ckpt = resume[1]  # a phase already complete has nothing left to train
    kill_after = int(os.environ.get(KILL_ENV, 0))
    t_start = time.perf_counter()
    for step in ctx.progress(range(start, hp.steps), hp.steps - start, f"training ({name})"):
        t0 = time.perf_counter()
        g = global_batch(hp, offset)
        ids = sample_order(seed, n_samples, offset, g)
        share = g // world
        mine = ids[rank * share : (rank + 1) * share]
        n_micro = share // hp.micro_batch_size
        loss_sum = 0.0
        for micro in range(n_micro):
            chunk = mine[micro * hp.micro_batch_size : (micro + 1) * hp.micro_batch_size]
            x = torch.from_numpy(train_set[chunk].astype(np.int64)).to(acc.device)
            # Gradients are averaged across ranks once, on the last micro-batch (DDP no_sync before it).
            sync = contextlib.nullcontext() if micro == n_micro - 1 else acc.no_sync(model)
            with sync:
                loss = model(input_ids=x, labels=x).loss / n_micro
                acc.backward(loss)
            loss_sum += loss.item()
        grad_norm = acc.clip_grad_norm_(model.parameters(), hp.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        loss_avg = acc.reduce(torch.tensor([loss_sum], device=acc.device), reduction="mean").item()
        offset += g
        done, dt = step + 1, time.perf_counter() - t0
        if step % hp.log_every == 0 or done == hp.steps:
            tps = g * seq_len / dt
            log.add({"step": done, "loss": round(loss_avg, 6), "lr": sched.get_last_lr()[0],
                     "grad_norm": round(float(grad_norm), 6), "tokens": offset * seq_len, "batch_size": g,
                     "samples": offset},
                    {"step": done, "tokens_per_s": round(tps, 1), "mfu": round(tps * fpt / (peak[0] * world), 6),
                     "step_seconds": round(dt, 4)})
        if hp.export_every and (done % hp.export_every == 0 or done == hp.steps):
            export(done, offset)  # before the checkpoint: a resume never skips an export
        if done == hp.steps or (hp.checkpoint_every and done % hp.checkpoint_every == 0):
            final_ckpt = checkpoint(done, offset)
        if done == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
    seconds = time.perf_counter() - t_start
    log.flush()

    val_loss = None
    if len(valid):  # every rank evaluates the same batches (FSDP needs all ranks in each forward)
        net = acc.unwrap_model(model)
        net.eval()
        with torch.no_grad():
            losses = [net(input_ids=b, labels=b).loss.item() for b in
                      (torch.from_numpy(valid[i : i + 8].astype(np.int64)).to(acc.device)
                       for i in range(0, min(len(valid), 64), 8))]
        val_loss = float(np.mean(losses))
        net.train()
    acc.wait_for_everyone()  # nobody reads WORK once rank 0 may move it (finish)
    return Result(phase=phase, acc=acc, model=model, cfg=cfg, checkpoint=final_ckpt,
                  steps=hp.steps, samples=offset, tokens=offset * seq_len, n_params=n_params, flops_per_token=fpt,
                  val_loss=val_loss, data_fingerprint=data_fp, config_fingerprint=config_fp,
                  resumed_from=resume[0], mismatch=mismatch, seconds=seconds,
                  trained_tokens=(offset - batch_plan(hp, start)[0]) * seq_len, peak=peak)


# ---------------------------------------------------------------- the stage
def finish(ctx: StageContext, res: Result) -> None:
    """Final model + checkpoints + plots + metrics of the phase just trained. Called on every rank."""
    acc, name = res.acc, res.phase.name
    lay, work = LAYOUT[name], ctx.path(res.phase.work)
    sd = acc.get_state_dict(res.model)
    if not acc.is_main_process:
        acc.wait_for_everyone()
        return
    with io.atomic_dir(ctx.path(lay.out)) as tmp:
        acc.unwrap_model(res.model).save_pretrained(str(tmp), state_dict=sd, safe_serialization=True)
        for f in ctx.path(TOK).iterdir():
            shutil.copy(f, tmp / f.name)
        io.write_json(tmp / "training_state.json", {"phase": name, "steps": res.steps, "tokens": res.tokens,
                                                    "config_fingerprint": res.config_fingerprint,
                                                    "data_fingerprint": res.data_fingerprint})
    log_dir = work / "logs"
    with open(log_dir / f"{name}.loss.csv", newline="") as f:
        loss_rows = list(csv.DictReader(f))
    io.write_bytes_atomic(ctx.path(lay.plot), (log_dir / f"{name}.loss.csv").read_bytes())
    io.write_bytes_atomic(ctx.path(lay.speed), (log_dir / f"{name}.speed.csv").read_bytes())
    revisions = [r["revision"] for r in write_revisions(work / "hf")] if (work / "hf").exists() else []
    with io.atomic_dir(ctx.path(lay.ckpt)) as tmp:
        for d in sorted((work / "ckpt").iterdir()):
            os.replace(d, tmp / d.name)
        if (work / "hf").exists():
            os.replace(work / "hf", tmp / "hf")
    shutil.rmtree(work)

    tps = res.trained_tokens / res.seconds if res.seconds else 0.0
    hp = res.phase.hp
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
    io.write_json(ctx.path(lay.timing), timing)
    ctx.write_metrics(lay.metrics, metrics)
    ctx.tracker.artifact(ctx.path(lay.plot))
    resumed = f", resumed from step {res.resumed_from}" if res.resumed_from else ""
    ctx.summary(f"{name}: {res.n_params:,} params, {res.steps} steps, {res.tokens:,} tokens, loss "
                f"{metrics['first_loss']:.3f} -> {metrics['final_loss']:.3f} (valid "
                f"{res.val_loss if res.val_loss is None else round(res.val_loss, 3)}), {tps:,.0f} tok/s, MFU {mfu:.1%}, "
                f"{len(revisions)} revisions{resumed} -> {lay.out}")
    acc.wait_for_everyone()


def pass_through(ctx: StageContext, name: str) -> None:
    """A phase that is absent or disabled: the previous phase's weights become its output, unchanged, and its
    other outputs are empty, so the DAG (and everything downstream) stays the same whatever the recipe."""
    lay = LAYOUT[name]
    src = ctx.path(lay.init_from)
    if not (src / "config.json").exists():
        raise StageError(f"{name} is disabled and passes {lay.init_from} through, but it holds no model")
    with io.atomic_dir(ctx.path(lay.out)) as tmp:
        for f in sorted(src.iterdir()):
            (shutil.copytree if f.is_dir() else shutil.copy)(f, tmp / f.name)
    with io.atomic_dir(ctx.path(lay.ckpt)) as tmp:
        (tmp / "hf").mkdir()
        io.write_json(tmp / "hf" / "revisions.json", {"revisions": []})
    io.write_bytes_atomic(ctx.path(lay.plot), (",".join(LOG_COLUMNS) + "\n").encode())
    io.write_bytes_atomic(ctx.path(lay.speed), (",".join(SPEED_COLUMNS) + "\n").encode())
    io.write_json(ctx.path(lay.timing), {})
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
    res = train(ctx, ph, ctx.path(init) if init else None, acc=acc, allow_mismatch=allow_mismatch)
    finish(ctx, res)


@contextlib.contextmanager
def worker_stage(name: str):
    """Ranks other than 0: same params, no MLflow run (rank 0 logs the global numbers), errors as one line."""
    from . import tracking

    quiet_libraries()
    root = io.root()
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
