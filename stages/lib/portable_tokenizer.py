"""Released tokenizers load in transformers 4.4x and 5.x, and know the model's context length.

transformers 5 saves a fast tokenizer with `tokenizer_class: TokenizersBackend`, a class 4.x does not
have (`Tokenizer class TokenizersBackend does not exist`), and with `model_max_length` 1e30 when nothing
set it. Both versions load `PreTrainedTokenizerFast` from the same tokenizer.json (5.x maps it to its
TokenizersBackend), so the release stage rewrites each released tokenizer_config.json with that class and
the model's context length (config.json `max_position_embeddings`). Measured with transformers 4.57.1
and 5.23.0: same class of tokenizer, same ids for plain text (with `<s>`) and the same chat template text.
The pipeline's own artifacts keep what transformers wrote (no upstream output changes).
"""
from __future__ import annotations

import json
from pathlib import Path

CLASS = "PreTrainedTokenizerFast"  # exists in transformers 4.x and 5.x
CONFIG = "tokenizer_config.json"


class TokenizerConfigError(ValueError):
    """A released model directory whose tokenizer cannot be made portable."""


def context_length(model_dir: Path) -> int:
    cfg = json.loads((model_dir / "config.json").read_text())
    n = cfg.get("max_position_embeddings")
    if not isinstance(n, int) or n <= 0:
        raise TokenizerConfigError(f"{model_dir}/config.json: max_position_embeddings must be a positive int, got {n!r}")
    return n


def portable(config: dict, context: int) -> dict:
    """The config with the portable class and the context length (other keys as transformers wrote them)."""
    return {**config, "tokenizer_class": CLASS, "model_max_length": context}


def problems(model_dir: Path) -> list[str]:
    """Why transformers 4.x would not load this tokenizer as released ([] = loads); reads files only."""
    cfg_path = model_dir / CONFIG
    if not cfg_path.is_file() or not (model_dir / "tokenizer.json").is_file():
        return [f"{model_dir}: {CONFIG} and tokenizer.json are needed (4.x cannot rebuild a fast tokenizer otherwise)"]
    cfg = json.loads(cfg_path.read_text())
    out = []
    if cfg.get("tokenizer_class") != CLASS:
        out.append(f"{cfg_path}: tokenizer_class {cfg.get('tokenizer_class')!r}, not {CLASS!r} (4.x knows no TokenizersBackend)")
    if cfg.get("model_max_length") != (n := context_length(model_dir)):
        out.append(f"{cfg_path}: model_max_length {cfg.get('model_max_length')!r}, not the context length {n}")
    extra = cfg.get("extra_special_tokens")
    if extra is not None and not isinstance(extra, dict):
        out.append(f"{cfg_path}: extra_special_tokens is a {type(extra).__name__}; 4.x reads a dict")
    return out


def make_portable(model_dir: Path) -> None:
    """Rewrite model_dir/tokenizer_config.json in place (a directory without one is left alone)."""
    path = model_dir / CONFIG
    if not path.is_file():
        return
    cfg = portable(json.loads(path.read_text(encoding="utf-8")), context_length(model_dir))
    path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
