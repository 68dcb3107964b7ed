"""Typed schema of params.yaml: one model per stage section, validated before any work.

Every stage calls `load()` first (through stages.core.runtime.stage). An unknown key, a wrong type or an impossible
combination raises `ParamsError` naming the dotted key (e.g. `pretrain.lr`), so a typo
in params.yaml never silently falls back to a default after an hour of compute.

Why one module of ~700 lines: it is the one place that says what params.yaml may hold, section after section in
dvc.yaml's order; cross-section checks (e.g. a phase's seq_len against the model) need every section at hand.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator


def _not_above_lr(cls, v: float, info: ValidationInfo) -> float:
    """A schedule's floor (min_lr) cannot be above its peak (lr); shared by every section with both."""
    if "lr" in info.data and v > info.data["lr"]:
        raise ValueError(f"must be <= lr ({info.data['lr']})")
    return v


def _types(annotation) -> set:
    return {annotation} | {t for a in get_args(annotation) for t in _types(a)}


class Strict(BaseModel):
    # No .inf/.nan anywhere: an infinite lr or eps trains to a NaN model with exit 0 (issue 16).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_as_number(cls, v, info: ValidationInfo):
        """`seed: true` is not the number 1: true/false only where the schema says bool."""
        if isinstance(v, bool) and bool not in _types(cls.model_fields[info.field_name].annotation):
            raise ValueError(f"{str(v).lower()} is a boolean; this key takes a number or text")
        return v


# ---------------------------------------------------------------- data + ingest
class HFSource(Strict):
    dataset: str
    config: str | None = None
    split: str = "train"
    revision: str | None = None
    text_field: str = "text"


class Source(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9._-]+$")
    format: Literal["jsonl", "parquet", "hf"] = "jsonl"
    path: str | None = None  # glob relative to the repo root, for jsonl/parquet
    hf: HFSource | None = None  # for format: hf (streamed, capped by ingest.max_docs_per_source)
    lang: str | None = None  # default when a record has no `lang`
    category: str = "web"  # default when a record has no `category` (Lucie's <lang>--<category>)
    license: str  # SPDX id of the source; a record may carry its own
    # Shown in the source's datasheet and the dataset card when given (never invented).
    description: str | None = None
    citation: str | None = None
    url: str | None = None

    @model_validator(mode="after")
    def _where(self):
        if self.format == "hf" and self.hf is None:
            raise ValueError("format 'hf' needs an `hf` block (dataset, config, split)")
        if self.format != "hf" and not self.path:
            raise ValueError(f"format '{self.format}' needs a `path`")
        return self


# Languages whose text rules (Gopher, C4, MinHash word tokenizer) datatrove can run, by its ISO 639-3 name.
WORD_TOKENIZER = {"en": "eng", "fr": "fra", "de": "deu", "es": "spa", "it": "ita"}


class Data(Strict):
    sources: list[Source] = Field(min_length=1)
    # Every record's language must be one of these (ingest rejects the rest as unknown_lang).
    languages: list[str] = ["en", "fr", "de", "es", "it", "code"]

    @model_validator(mode="after")
    def _unique(self):
        names = [s.name for s in self.sources]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"source names must be unique, repeated: {sorted(dup)}")
        return self


class Ingest(Strict):
    max_docs_per_source: int | None = Field(default=None, gt=0)
    max_doc_bytes: int = Field(default=1_000_000, gt=0)
    rows_per_shard: int = Field(default=50_000, gt=0)


# ---------------------------------------------------------------- filter
class URLRule(Strict):
    enabled: bool = True
    categories: list[str] | None = None  # the categories it applies to; null: all (stages/lib/rule_sets.py)
    extra_domains: list[str] = []
    banned_words: list[str] = []


class GopherQuality(Strict):
    enabled: bool = True
    categories: list[str] | None = None  # the categories it applies to; null: all (stages/lib/rule_sets.py)
    min_doc_words: int = 50
    max_doc_words: int = 100_000
    min_avg_word_length: float = 3
    max_avg_word_length: float = 10
    max_symbol_word_ratio: float = 0.1
    max_bullet_lines_ratio: float = 0.9
    max_ellipsis_lines_ratio: float = 0.3
    min_alpha_words_ratio: float = Field(default=0.7, ge=0, le=1)  # Lucie: drop if > 30 % of words lack a letter
    min_stop_words: int | None = None  # Lucie's RPv2 signals have no stop-word rule


class GopherRepetition(Strict):
    enabled: bool = True
    categories: list[str] | None = None  # the categories it applies to; null: all (stages/lib/rule_sets.py)
    dup_line_frac: float = 0.3
    dup_para_frac: float = 0.3
    dup_line_char_frac: float = 0.2
    dup_para_char_frac: float = 0.2
    top_n_grams: list[tuple[int, float]] = [(2, 0.20), (3, 0.18), (4, 0.16)]
    dup_n_grams: list[tuple[int, float]] = [(5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10)]


class C4(Strict):
    enabled: bool = True
    categories: list[str] | None = None  # the categories it applies to; null: all (stages/lib/rule_sets.py)
    min_num_sentences: int = 3  # Lucie: rps_doc_num_sentences < 3
    min_words_per_line: int = 3
    filter_no_terminal_punct: bool = False
    filter_lorem_ipsum: bool = True
    filter_curly_bracket: bool = True
    filter_javascript: bool = True
    filter_policy: bool = True


class LanguageRule(Strict):
    enabled: bool = True
    categories: list[str] | None = None  # the categories it applies to; null: all (stages/lib/rule_sets.py)
    model: str = "assets/lid/lid.176.ftz"  # fastText lid.176, fetched by `make setup`
    min_score: float = Field(default=0.65, ge=0, le=1)


class Perplexity(Strict):
    """CCNet-style KenLM perplexity (Lucie: drop if < 10 or > 1000). Off while `model` is null."""

    # KenLM model (.arpa or binary): one path for every text language, a path with "{lang}", or {lang: path}.
    model: str | dict[str, str] | None = None
    # CCNet's SentencePiece model, same forms; null scores the normalised whitespace words instead.
    sp_model: str | dict[str, str] | None = None
    categories: list[str] | None = None  # the categories it applies to; null: all (stages/lib/rule_sets.py)
    min: float = Field(default=10, ge=0)
    max: float = Field(default=1000, gt=0)

    @model_validator(mode="after")
    def _range(self):
        if self.min >= self.max:
            raise ValueError(f"min ({self.min}) must be below max ({self.max})")
        if self.sp_model is not None and self.model is None:
            raise ValueError("sp_model is set but model is null")
        return self


class Filter(Strict):
    # fast: stages/lib/filter_rules.py (each document tokenized once); datatrove: datatrove's own blocks.
    # Both take the same decisions (tests/test_filter_rules.py, benchmarks/filter_speed.py).
    engine: Literal["fast", "datatrove"] = "fast"
    text_langs: list[str] = ["en", "fr", "de", "es", "it"]  # text rules apply to these; code gets the URL rule only
    url: URLRule = URLRule()
    gopher_repetition: GopherRepetition = GopherRepetition()
    gopher_quality: GopherQuality = GopherQuality()
    c4: C4 = C4()
    language: LanguageRule = LanguageRule()
    perplexity: Perplexity = Perplexity()

    @model_validator(mode="after")
    def _categories(self):  # rule sets per category: stages/lib/rule_sets.py
        for rule in ("url", "language", "gopher_repetition", "gopher_quality", "c4", "perplexity"):
            cats = getattr(self, rule).categories or []
            bad = sorted({c for c in cats if not c.strip() or c != c.strip()} | {c for c in cats if cats.count(c) > 1})
            if bad:
                raise ValueError(f"{rule}.categories: {bad} (each a category name such as web or book, once)")
        return self


# ---------------------------------------------------------------- dedup + mix
class MinHash(Strict):
    enabled: bool = True
    n_grams: int = Field(default=5, gt=0)
    num_buckets: int = Field(default=14, gt=0)
    hashes_per_bucket: int = Field(default=8, gt=0)
    seed: int = 1


class Dedup(Strict):
    exact: bool = True
    minhash: MinHash = MinHash()


class Mix(Strict):
    # Lucie's dataset_weights.yaml semantics: '<lang>--<category>' -> epochs (fractional allowed).
    weights: dict[str, float] = {}
    default_epochs: float = Field(default=1.0, ge=0)
    lang_weights: dict[str, float] = {}  # multiplies the epochs of every key of that language ("other": the rest)
    source_weights: dict[str, float] = {}  # multiplies the epochs of one source (data.sources name)
    valid_fraction: float = Field(default=0.1, ge=0, lt=1)
    chronological: bool = True  # older years first inside a source group, as Lucie's fork did

    @model_validator(mode="after")
    def _keys(self):
        for k, v in self.weights.items():
            if "--" not in k:
                raise ValueError(f"mix.weights key {k!r} must look like '<lang>--<category>'")
            if v < 0:
                raise ValueError(f"mix.weights.{k} must be >= 0")
        for section in ("lang_weights", "source_weights"):
            for k, v in getattr(self, section).items():
                if v < 0:
                    raise ValueError(f"mix.{section}.{k} must be >= 0")
        return self


# ---------------------------------------------------------------- executor (data stages' scale-out)
class SlurmExecutor(Strict):
    """What datatrove's SlurmPipelineExecutor writes into its sbatch array script (`python -m stages.core.executor
    --sbatch filter` prints it). One array task per datatrove task; `executor.workers` caps how many run at once."""
    partition: str = "cpu"
    time: str = Field(default="04:00:00", pattern=r"^(\d+-)?\d{1,3}:\d{2}:\d{2}$")
    cpus_per_task: int = Field(default=1, gt=0)
    mem_per_cpu_gb: int = Field(default=2, gt=0)
    job_name: str = Field(default="lucie-data", pattern=r"^[A-Za-z0-9._-]+$")  # "-<stage>" is appended
    qos: str | None = None
    env_command: str | None = "source .venv/bin/activate"  # shell line run before the task (relative to the submit dir)
    sbatch_args: dict[str, str | int] = {}  # more #SBATCH options, e.g. {account: my-project}
    max_array_size: int = Field(default=1001, gt=0)  # the cluster's MaxArraySize
    poll_seconds: int = Field(default=60, gt=0)  # the stage waits for the array job, then merges


class RayExecutor(Strict):
    """datatrove's RayPipelineExecutor (`ray` is pinned in requirements.lock). The stage connects
    to `address` (null: a local Ray instance) before running the tasks."""
    address: str | None = None
    cpus_per_task: int = Field(default=1, gt=0)
    mem_per_cpu_gb: float = Field(default=2, gt=0)


class Executor(Strict):
    """Where the per-task work of the data stages (ingest, filter, dedup) runs: datatrove's Local/Slurm/Ray executors.

    The input (files for ingest, rows for filter and dedup) is cut into `tasks` contiguous ranges; each task
    writes its own results, and the stage merges them in task order. The documents, their order, the drop
    records and the metrics do not depend on `tasks` or `workers`; filter's Parquet shard boundaries do depend
    on `tasks` (each task ends its last shard), so `tasks` is part of filter's output contract; `workers` never is.
    """
    kind: Literal["local", "slurm", "ray"] = "local"
    tasks: int = Field(default=1, gt=0)
    workers: int = Field(default=1, ge=-1)  # tasks run at once; -1: all of them
    logging_dir: str = "logs/datatrove"  # datatrove's logs, stats and completions, one folder per stage
    # Resume: a run that fails keeps its finished tasks, and the next run of the same work (same stage, params,
    # tasks and input: a fingerprint) runs only the others. Off: every run starts from nothing.
    skip_completed: bool = False
    slurm: SlurmExecutor = SlurmExecutor()
    ray: RayExecutor = RayExecutor()

    @field_validator("workers")
    @classmethod
    def _workers(cls, v: int) -> int:
        if v == 0:
            raise ValueError("must be >= 1, or -1 for as many as tasks")
        return v

    @field_validator("logging_dir")
    @classmethod
    def _logging_dir(cls, v: str) -> str:
        """Its `<stage>` folders are deleted on a fresh run: a path inside the project only."""
        import posixpath

        norm = posixpath.normpath(v.replace("\\", "/"))
        if v.startswith(("/", "\\", "~")) or (len(v) > 1 and v[1] == ":"):
            raise ValueError(f"{v!r} is absolute; give a path relative to the project (e.g. logs/datatrove)")
        if norm in (".", "") or norm == ".." or norm.startswith("../"):
            raise ValueError(f"{v!r} is not a folder inside the project (e.g. logs/datatrove)")
        return v


# ---------------------------------------------------------------- tokenizer + tokenize
class TokenizerP(Strict):
    from_file: str | None = None  # use a given tokenizer.json (e.g. Lucie's) instead of training
    vocab_size: int = Field(default=2048, ge=400)
    min_frequency: int = Field(default=2, ge=1)
    max_train_docs: int | None = Field(default=None, gt=0)


class Tokenize(Strict):
    seq_len: int = Field(default=128, gt=8)
    append_eos: bool = True


# ---------------------------------------------------------------- model + training
class Model(Strict):
    hidden_size: int = Field(gt=0)
    intermediate_size: int = Field(gt=0)
    num_hidden_layers: int = Field(gt=0)
    num_attention_heads: int = Field(gt=0)
    num_key_value_heads: int = Field(gt=0)
    head_dim: int | None = Field(default=None, gt=0, validate_default=True)  # checked even when unset
    rms_norm_eps: float = Field(default=1e-5, gt=0, le=1)
    rope_theta: float = Field(default=500_000.0, gt=0)
    max_position_embeddings: int = Field(default=4096, gt=0)
    tie_word_embeddings: bool = False
    initializer_range: float = Field(default=0.009, gt=0, le=1)  # transformers refuses more
    vocab_size: int | None = None  # None: take the tokenizer's

    # Cross-field checks are field validators so that errors point at the offending key.
    @field_validator("num_key_value_heads")
    @classmethod
    def _kv_divides(cls, v: int, info: ValidationInfo) -> int:
        heads = info.data.get("num_attention_heads")
        if heads and heads % v:
            raise ValueError(f"must divide num_attention_heads ({heads})")
        return v

    @field_validator("head_dim")
    @classmethod
    def _head_dim(cls, v: int | None, info: ValidationInfo) -> int | None:
        hidden, heads = info.data.get("hidden_size"), info.data.get("num_attention_heads")
        if v is None and hidden and heads and hidden % heads:
            raise ValueError(f"must be set when hidden_size ({hidden}) is not a multiple of num_attention_heads ({heads})")
        return v


class BatchRampup(Strict):
    """Megatron's `--rampup-batch-size <start> <increment> <samples>` (Lucie: 256 64 10000000).

    The global batch starts at `start` samples and grows by `increment` each time another
    `samples / ((global_batch_size - start) / increment)` samples have been consumed, until it reaches
    `pretrain.global_batch_size`. Everything is in samples, so the schedule (and with it which
    samples each step sees) is the same whatever the number of processes.
    """
    start: int = Field(gt=0)
    increment: int = Field(gt=0)
    samples: int = Field(gt=0)


class Parallelism(Strict):
    """The device mesh of sharded training (stages/lib/training/parallel.py, torch's own FSDP2 / DTensor TP):
    FSDP2 sharding over dp_shard_size, HSDP replication of those shards over dp_replicate_size, tensor
    parallelism over tp_size. Runs on gloo (CPU) and nccl (GPU) alike.

    All 1 (the default): plain data parallelism (accelerate's DDP).
    Otherwise dp_replicate_size x dp_shard_size x tp_size must equal the number of processes.
    """
    dp_replicate_size: int = Field(default=1, gt=0)
    dp_shard_size: int = Field(default=1, gt=0)
    tp_size: int = Field(default=1, gt=0)
    # The sharded path even when every size is 1: a sharded (DCP) checkpoint resumes on one process this way.
    sharded: bool = False

    @property
    def enabled(self) -> bool:
        return self.sharded or self.dp_replicate_size * self.dp_shard_size * self.tp_size > 1


class Slurm(Strict):
    """What `python -m stages.launch --sbatch` writes into the #SBATCH header (one task per node)."""
    job_name: str = Field(default="lucie-pretrain", pattern=r"^[A-Za-z0-9._-]+$")
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None  # e.g. h100
    time: str = Field(default="20:00:00", pattern=r"^(\d+-)?\d{1,3}:\d{2}:\d{2}$")  # Lucie's jobs ran <= 20 h, chained
    cpus_per_task: int = Field(default=8, gt=0)  # per node (the single task of a node runs torchrun)
    output: str = "%x-%j.out"  # relative to the submit directory; Slurm needs its directory to exist
    setup: list[str] = []  # shell lines before srun: module load ..., source .venv/bin/activate
    extra_directives: list[str] = []  # more sbatch options, e.g. "--hint=nomultithread"


class Launch(Strict):
    """How many processes train, and where they meet. None of it changes the math (the global batch is
    fixed by pretrain.global_batch_size); it is left out of the checkpoint's config fingerprint."""
    nnodes: int = Field(default=1, gt=0)
    nproc_per_node: int = Field(default=1, gt=0)  # one per GPU; on CPU, cores / pretrain.threads
    rdzv_endpoint: str = Field(default="127.0.0.1:29500", pattern=r"^[A-Za-z0-9._-]+:\d+$")  # node 0 (host:port)
    backend: Literal["auto", "gloo", "nccl"] = "auto"  # auto: nccl when CUDA is there, else gloo (CPU)
    peak_flops_per_device: float | None = Field(default=None, gt=0)  # for MFU; null: measure a matmul here
    parallelism: Parallelism = Parallelism()
    # Recompute each decoder layer's activations in the backward pass (transformers' gradient checkpointing):
    # less memory, about a third more compute, the same losses (tested).
    activation_checkpointing: bool = False
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"  # flash attention is a GPU-only third choice, not here
    slurm: Slurm = Slurm()

    @model_validator(mode="after")
    def _mesh(self):
        pc, world = self.parallelism, self.nnodes * self.nproc_per_node
        size = pc.dp_replicate_size * pc.dp_shard_size * pc.tp_size
        if pc.enabled and size != world:
            raise ValueError(f"parallelism: dp_replicate_size x dp_shard_size x tp_size = {size} must equal "
                             f"nnodes x nproc_per_node = {world}")
        return self


class Pretrain(Strict):
    steps: int = Field(gt=0)
    micro_batch_size: int = Field(gt=0)  # samples per process per forward/backward
    # Samples per optimizer step for the whole job (Megatron's --global-batch-size). Gradient accumulation
    # is derived: global / (micro_batch_size x processes), so the same params train the same batches on
    # 1 CPU process or N GPU nodes. Default: one micro-batch.
    global_batch_size: int | None = Field(default=None, gt=0, validate_default=True)
    batch_rampup: BatchRampup | None = None
    lr: float = Field(gt=0, le=1)
    min_lr: float = Field(ge=0)
    warmup_steps: int = Field(default=0, ge=0)
    # After warmup: cosine to min_lr (main phase), linear to min_lr (annealing: 0), or constant lr (extension).
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (0.9, 0.95)
    eps: float = Field(default=1e-5, gt=0, le=1)
    weight_decay: float = Field(default=0.1, ge=0, le=1)
    grad_clip: float = Field(default=1.0, gt=0)  # max global gradient norm (clipping is always on)
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16: autocast (CPU and GPU), fp32 master weights
    checkpoint_every: int = Field(default=0, ge=0)  # 0: only at the end
    keep_checkpoints: int = Field(default=0, ge=0)  # training-state checkpoints kept (0: all); exports are kept
    export_every: int = Field(default=0, ge=0)  # HF-format revision (step%07d) every N steps and at the end; 0: none
    log_every: int = Field(default=1, gt=0)
    threads: int = Field(default=2, gt=0)  # torch threads per process
    deterministic: bool = True  # torch.use_deterministic_algorithms: bit-exact resume (slower on GPU)
    launch: Launch = Launch()

    @property
    def grad_accum(self) -> int:
        """Micro-batches per optimizer step on one process (N processes do 1/N of them each)."""
        return self.global_batch_size // self.micro_batch_size

    @field_validator("global_batch_size")
    @classmethod
    def _global_batch(cls, v: int | None, info: ValidationInfo) -> int | None:
        micro = info.data.get("micro_batch_size")
        if v is None:
            return micro
        if micro and v % micro:
            raise ValueError(f"must be a multiple of micro_batch_size ({micro})")
        return v

    @field_validator("batch_rampup")
    @classmethod
    def _rampup(cls, v: BatchRampup | None, info: ValidationInfo) -> BatchRampup | None:
        g, micro = info.data.get("global_batch_size"), info.data.get("micro_batch_size")
        if v is None or not g or not micro:
            return v
        if v.start >= g:
            raise ValueError(f"start ({v.start}) must be < global_batch_size ({g})")
        if (g - v.start) % v.increment:
            raise ValueError(f"global_batch_size - start ({g - v.start}) must be a multiple of increment ({v.increment})")
        if v.start % micro or v.increment % micro:
            raise ValueError(f"start and increment must be multiples of micro_batch_size ({micro})")
        return v

    _min_lr = field_validator("min_lr")(_not_above_lr)

    @field_validator("warmup_steps")
    @classmethod
    def _warmup(cls, v: int, info: ValidationInfo) -> int:
        if "steps" in info.data and v >= info.data["steps"]:
            raise ValueError(f"must be < steps ({info.data['steps']})")
        return v


class PhaseTrain(Strict):
    """A training phase after the main one (Lucie's `--finetune` runs, research/lucie_recipe.md §5.1).

    It starts from the previous phase's final weights with a fresh optimizer and schedule, its own sequence
    length and RoPE theta, and no batch ramp-up. Optimizer constants (betas, eps, weight decay, clip),
    precision, threads and the launch come from `pretrain`: Lucie kept them across phases.
    """
    enabled: bool = True  # false: the stage passes the previous phase's weights through unchanged
    steps: int = Field(gt=0)
    seq_len: int = Field(gt=8)  # the phase's packed sample length; also its max_position_embeddings
    rope_theta: float = Field(default=2.0e7, gt=0)
    lr: float = Field(gt=0, le=1)
    min_lr: float = Field(default=0.0, ge=0)
    schedule: Literal["cosine", "linear", "constant"] = "constant"
    warmup_steps: int = Field(default=0, ge=0)
    micro_batch_size: int = Field(gt=0)
    global_batch_size: int | None = Field(default=None, gt=0, validate_default=True)
    checkpoint_every: int = Field(default=0, ge=0)
    keep_checkpoints: int = Field(default=0, ge=0)
    export_every: int = Field(default=0, ge=0)  # revisions <phase>_step%07d every N steps and at the end

    _global_batch = field_validator("global_batch_size")(Pretrain._global_batch.__func__)
    _min_lr = field_validator("min_lr")(_not_above_lr)
    _warmup = field_validator("warmup_steps")(Pretrain._warmup.__func__)

    def training(self, pretrain: Pretrain) -> Pretrain:
        """The phase's full `Pretrain` hyper-parameters: its own keys over the main phase's, no ramp-up."""
        own = {k: getattr(self, k) for k in ("steps", "micro_batch_size", "global_batch_size", "lr", "min_lr",
                                             "schedule", "warmup_steps", "checkpoint_every", "keep_checkpoints",
                                             "export_every")}
        return Pretrain.model_validate({**pretrain.model_dump(), **own, "batch_rampup": None})


def _group_keys(section: str, weights: dict[str, float]) -> None:
    for k, v in weights.items():
        if "--" not in k:
            raise ValueError(f"{section} key {k!r} must look like '<lang>--<category>'")
        if v < 0:
            raise ValueError(f"{section}.{k} must be >= 0")


class Extension(PhaseTrain):
    """Context extension (Lucie §1.6): the main mix, web restricted to each language's newest year (its weight
    moved there), long documents up-weighted inside each source group."""
    schedule: Literal["cosine", "linear", "constant"] = "constant"  # Lucie: 2e-5 constant, no warmup
    # Lucie split its data at 4,096 tokens (dataset_split_short_long_docs.py --tokens_split 4096); mix counts
    # tokens with the project's tokenizer, trained before the mix.
    long_doc_min_tokens: int = Field(gt=0)
    long_doc_weight: float = Field(default=10.0, ge=1)  # prop_short = short / (short + 10 long)
    recent_web: bool = True


class Annealing(PhaseTrain):
    """Annealing (Lucie §1.7, "mix 6"): its own mix, '<lang>--<category>' -> share of the phase's tokens."""
    schedule: Literal["cosine", "linear", "constant"] = "linear"  # Lucie: 3e-5 -> 0 linear
    weights: dict[str, float] = Field(min_length=1)

    @field_validator("weights")
    @classmethod
    def _weights(cls, v: dict[str, float]) -> dict[str, float]:
        _group_keys("annealing.weights", v)
        if not sum(v.values()) > 0:
            raise ValueError("at least one share must be > 0")
        return v


class MixPart(Strict):
    """One component of an instruction mix, as in Lucie's mix files: a data file and its share of the samples."""
    name: str = Field(pattern=r"^[A-Za-z0-9._-]+$")
    path: str
    weight: float = Field(gt=0)


class SFT(Strict):
    mix: list[MixPart] = Field(min_length=1)
    # Conversations whose assistant replies name another assistant are dropped (Lucie's `filter_strings`).
    filter_strings: list[str] = []
    max_steps: int = Field(gt=0)
    batch_size: int = Field(default=4, gt=0)
    lr: float = Field(gt=0, le=1)
    min_lr: float = Field(default=0.0, ge=0)  # cosine from lr down to min_lr (Lucie: 3e-5 -> 3e-6)
    max_length: int = Field(default=256, gt=0)

    @field_validator("mix")
    @classmethod
    def _unique_names(cls, v: list[MixPart]) -> list[MixPart]:
        names = [m.name for m in v]
        if len(set(names)) != len(names):
            raise ValueError(f"mix component names must be unique, got {names}")
        return v

    _min_lr = field_validator("min_lr")(_not_above_lr)


class DPO(Strict):
    data: str
    max_steps: int = Field(gt=0)
    batch_size: int = Field(default=4, gt=0)
    lr: float = Field(gt=0, le=1)
    beta: float = Field(default=0.1, gt=0)
    loss_type: Literal["sigmoid", "ipo", "hinge", "robust", "apo_zero", "apo_down"] = "sigmoid"
    # The frozen reference: the SFT model DPO starts from (standard), or the pretrained base model.
    ref_model: Literal["sft", "base"] = "sft"
    max_length: int = Field(default=256, gt=0)


class Align(Strict):
    sft: SFT
    dpo: DPO


class EvalTask(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_]+$")
    # local tasks: a JSONL file the project ships; harness: one of lm-eval's own tasks (needs HF datasets)
    kind: Literal["multiple_choice", "generate", "harness"] = "multiple_choice"
    path: str | None = None
    lang: str
    num_fewshot: int | None = Field(default=None, ge=0)  # None: evaluate.num_fewshot
    # The headline metric of the results table, as lm-eval names it ("acc", "exact_match,flexible-extract");
    # default acc for multiple choice, exact_match for generation.
    metric: str | None = None
    baseline: str | None = None  # this task's key in the evaluate.baselines file

    @model_validator(mode="after")
    def _path(self):
        if (self.kind == "harness") != (self.path is None):
            raise ValueError(f"task {self.name!r}: local tasks need `path`; harness tasks take none")
        return self


class Evaluate(Strict):
    tasks: list[EvalTask]
    num_fewshot: int = Field(default=0, ge=0)
    batch_size: int = Field(default=8, gt=0)
    ppl_max_docs: int = Field(default=200, gt=0)
    # Intermediate checkpoints to evaluate by revision name (learning curves): a revision exported by
    # a training phase (artifacts/checkpoints/<phase>/hf/<revision>), "all" of them, or "hub:ORG/REPO@REVISION".
    checkpoints: list[str] | Literal["all"] = []
    baselines: str | None = None  # published scores to put beside ours, e.g. data/baselines/lucie-7b.yaml


# ---------------------------------------------------------------- release + publish
class Paper(Strict):
    """A research paper about the model (MOF Class I); stages/lib/release_paper.py puts it into the release."""
    path: str | None = None  # a PDF committed in this repository (e.g. docs/paper.pdf); null = no paper
    license: str | None = None  # the paper's SPDX license id, e.g. CC-BY-4.0 (required with a path)

    @model_validator(mode="after")
    def _paper(self) -> "Paper":
        if self.path is not None:
            if not self.path.lower().endswith(".pdf") or Path(self.path).is_absolute() or ".." in Path(self.path).parts:
                raise ValueError(f"path {self.path!r}: give a .pdf file inside the repository, relative to its root")
            if not self.license:
                raise ValueError("license: give the paper's SPDX license id (e.g. CC-BY-4.0) with its path")
        return self


class Sign(Strict):
    """Signed provenance (stages/lib/provenance.py): a PEM EC private key outside the repo; null = unsigned."""
    private_key: str | None = None


class Release(Strict):
    model_name: str
    organization: str = "lucie-repro"
    license: str = "apache-2.0"
    code_url: str = "https://github.com/lucie-repro/lucie-repro"
    languages: list[str] = ["fr", "en", "de", "es", "it"]
    paper: Paper = Paper()
    sign: Sign = Sign()


class Publish(Strict):
    target: Literal["local", "hub"] = "local"  # `lucie publish --yes` always targets the Hub
    local_dir: str = "published"
    private: bool = True
    # Repo ids; unset = <release.organization>/<release.model_name>, <model_repo>-instruct, <...>-data.
    model_repo: str | None = Field(None, pattern=r"^[\w.-]+/[\w.-]+$")
    instruct_repo: str | None = Field(None, pattern=r"^[\w.-]+/[\w.-]+$")
    dataset_repo: str | None = Field(None, pattern=r"^[\w.-]+/[\w.-]+$")
    tag: str = "release-{code}"  # git tag per release; {code} = 12 hex of the release's code tree, {commit} = of HEAD, {recipe}
    revision_branches: bool = True  # release/checkpoints/<rev>/ -> branch <rev> of the model repo
    require: list[str] = []  # openness gate (model_card.require grammar), checked before anything is published

    @field_validator("tag")
    @classmethod
    def _tag(cls, v: str) -> str:
        import re

        try:
            name = v.format(code="0" * 12, commit="0" * 12, recipe="tiny")
        except (KeyError, IndexError, ValueError) as err:
            raise ValueError(f"only {{code}}, {{commit}} and {{recipe}} can be used ({err})") from None
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
            raise ValueError(f"{v!r} does not make a valid tag name")
        return v

    @field_validator("require")
    @classmethod
    def _require(cls, v: list[str]) -> list[str]:
        from model_card.require import parse  # a typo must not turn the gate into a no-op

        for req in v:
            parse(req)
        return v


class Tracking(Strict):
    enabled: bool = True
    uri: str = "sqlite:///mlflow.db"  # MLFLOW_TRACKING_URI overrides
    experiment: str = "lucie-repro"


class Params(Strict):
    recipe: str
    seed: int = 42
    tracking: Tracking = Tracking()
    data: Data
    ingest: Ingest = Ingest()
    filter: Filter = Filter()
    dedup: Dedup = Dedup()
    executor: Executor = Executor()
    mix: Mix = Mix()
    tokenizer: TokenizerP = TokenizerP()
    tokenize: Tokenize = Tokenize()
    model: Model
    pretrain: Pretrain
    extension: Extension | None = None  # absent: no context extension (the extend stage passes weights through)
    annealing: Annealing | None = None  # absent: no annealing (the anneal stage passes weights through)
    align: Align
    evaluate: Evaluate
    release: Release
    publish: Publish = Publish()

    @model_validator(mode="after")
    def _cross(self):
        unsupported = set(self.filter.text_langs) - set(WORD_TOKENIZER)
        if unsupported:
            raise ValueError(f"filter.text_langs: no word tokenizer for {sorted(unsupported)} (have {sorted(WORD_TOKENIZER)})")
        missing = set(self.filter.text_langs) - set(self.data.languages)
        if missing:
            raise ValueError(f"filter.text_langs lists {sorted(missing)}, which data.languages does not")
        unknown = set(self.mix.source_weights) - {s.name for s in self.data.sources}
        if unknown:
            raise ValueError(f"mix.source_weights names unknown sources {sorted(unknown)}")
        if self.model.max_position_embeddings < self.tokenize.seq_len:
            raise ValueError("model.max_position_embeddings must be >= tokenize.seq_len")
        return self


class ParamsError(ValueError):
    """params.yaml is invalid; the message names every offending key."""


class DuplicateKey(yaml.YAMLError):
    def __init__(self, key, line: int, first: int):
        super().__init__(f"duplicate key {key!r} at line {line} (first at line {first})")
        self.key, self.line, self.first = key, line, first


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader where a repeated mapping key is an error: a second `pretrain:` section would silently
    replace the first and bring its defaults back. Merge keys (`<<:`) may still be overridden."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool, type(None))):
                continue  # an unhashable key: SafeLoader's own error follows
            if key in seen:
                raise DuplicateKey(key, key_node.start_mark.line + 1, seen[key])
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _describe(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        lines.append(f"  {key}: {msg}")
    return "\n".join(lines)


def parse(raw: dict, origin: str = "params.yaml") -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ParamsError(f"{origin} is invalid:\n{_describe(err)}") from None


class _Yaml12Loader(UniqueKeyLoader):
    """YAML 1.2 numbers, as DVC (ruamel) reads params.yaml. `dvc exp run -S` rewrites the file with ruamel,
    which writes `20:00:00` and `1e-05` unquoted: YAML 1.1 (PyYAML) would read 72000 and a string."""


_Yaml12Loader.yaml_implicit_resolvers = {
    c: [(tag, rx) for tag, rx in rs if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")]
    for c, rs in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?[0-9]+|0x[0-9a-fA-F]+)$"),
                                    list("-+0123456789"))
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+.0123456789"))


def load(path: str | Path) -> Params:
    path = Path(path)
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_Yaml12Loader)  # noqa: S506 (a SafeLoader)
    except FileNotFoundError:
        raise ParamsError(f"{path} not found") from None
    except DuplicateKey as err:
        raise ParamsError(f"{path} line {err.line}: duplicate key {err.key!r} (first at line {err.first}); "
                          "the second would silently replace the first: keep one") from None
    except yaml.YAMLError as err:
        raise ParamsError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path} must hold a mapping of sections")
    return parse(raw, str(path))
