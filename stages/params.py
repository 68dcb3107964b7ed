"""Typed schema of params.yaml: one model per stage section, validated before any work.

Every stage calls `load()` first (through stages.runtime.stage). An unknown key, a wrong type or an impossible
combination raises `ParamsError` naming the dotted key (e.g. `pretrain.lr`), so a typo
in params.yaml never silently falls back to a default after an hour of compute.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
    extra_domains: list[str] = []
    banned_words: list[str] = []


class GopherQuality(Strict):
    enabled: bool = True
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
    dup_line_frac: float = 0.3
    dup_para_frac: float = 0.3
    dup_line_char_frac: float = 0.2
    dup_para_char_frac: float = 0.2
    top_n_grams: list[tuple[int, float]] = [(2, 0.20), (3, 0.18), (4, 0.16)]
    dup_n_grams: list[tuple[int, float]] = [(5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10)]


class C4(Strict):
    enabled: bool = True
    min_num_sentences: int = 3  # Lucie: rps_doc_num_sentences < 3
    min_words_per_line: int = 3
    filter_no_terminal_punct: bool = False
    filter_lorem_ipsum: bool = True
    filter_curly_bracket: bool = True
    filter_javascript: bool = True
    filter_policy: bool = True


class LanguageRule(Strict):
    enabled: bool = True
    model: str = "assets/lid/lid.176.ftz"  # fastText lid.176, fetched by `make setup`
    min_score: float = Field(default=0.65, ge=0, le=1)


class Filter(Strict):
    text_langs: list[str] = ["en", "fr", "de", "es", "it"]  # text rules apply to these; code gets the URL rule only
    url: URLRule = URLRule()
    gopher_repetition: GopherRepetition = GopherRepetition()
    gopher_quality: GopherQuality = GopherQuality()
    c4: C4 = C4()
    language: LanguageRule = LanguageRule()


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
    head_dim: int | None = None
    rms_norm_eps: float = 1e-5
    rope_theta: float = 500_000.0
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = False
    initializer_range: float = 0.009
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


class Pretrain(Strict):
    steps: int = Field(gt=0)
    micro_batch_size: int = Field(gt=0)
    grad_accum: int = Field(default=1, gt=0)
    lr: float = Field(gt=0)
    min_lr: float = Field(ge=0)
    warmup_steps: int = Field(default=0, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-5
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    precision: Literal["fp32", "bf16"] = "fp32"
    checkpoint_every: int = Field(default=0, ge=0)  # 0: only at the end
    log_every: int = Field(default=1, gt=0)
    threads: int = Field(default=2, gt=0)

    @field_validator("min_lr")
    @classmethod
    def _min_lr(cls, v: float, info: ValidationInfo) -> float:
        if "lr" in info.data and v > info.data["lr"]:
            raise ValueError(f"must be <= lr ({info.data['lr']})")
        return v

    @field_validator("warmup_steps")
    @classmethod
    def _warmup(cls, v: int, info: ValidationInfo) -> int:
        if "steps" in info.data and v >= info.data["steps"]:
            raise ValueError(f"must be < steps ({info.data['steps']})")
        return v


class SFT(Strict):
    data: str
    max_steps: int = Field(gt=0)
    batch_size: int = Field(default=4, gt=0)
    lr: float = Field(gt=0)
    max_length: int = Field(default=256, gt=0)


class DPO(Strict):
    data: str
    max_steps: int = Field(gt=0)
    batch_size: int = Field(default=4, gt=0)
    lr: float = Field(gt=0)
    beta: float = Field(default=0.1, gt=0)
    loss_type: Literal["sigmoid", "ipo", "hinge"] = "sigmoid"
    max_length: int = Field(default=256, gt=0)


class Align(Strict):
    sft: SFT
    dpo: DPO


class EvalTask(Strict):
    name: str = Field(pattern=r"^[a-z0-9_]+$")
    path: str
    lang: str
    kind: Literal["multiple_choice", "generate"] = "multiple_choice"


class Evaluate(Strict):
    tasks: list[EvalTask]
    num_fewshot: int = Field(default=0, ge=0)
    batch_size: int = Field(default=8, gt=0)
    ppl_max_docs: int = Field(default=200, gt=0)


# ---------------------------------------------------------------- release + publish
class Release(Strict):
    model_name: str
    organization: str = "lucie-repro"
    license: str = "apache-2.0"
    code_url: str = "https://github.com/lucie-repro/lucie-repro"
    languages: list[str] = ["fr", "en", "de", "es", "it"]


class Publish(Strict):
    target: Literal["local", "hub"] = "local"
    local_dir: str = "published"
    private: bool = True


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
    mix: Mix = Mix()
    tokenizer: TokenizerP = TokenizerP()
    tokenize: Tokenize = Tokenize()
    model: Model
    pretrain: Pretrain
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


def load(path: str | Path) -> Params:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ParamsError(f"{path} not found") from None
    except yaml.YAMLError as err:
        raise ParamsError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path} must hold a mapping of sections")
    return parse(raw, str(path))
