"""The model a phase trains: its transformers config from params, its exact size and cost, its starting weights."""
from __future__ import annotations

import time
from pathlib import Path

from stages.core.params import Model
from stages.core.runtime import StageError


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


def dims(cfg) -> tuple[int, int, int, int, int, int, int]:
    d, heads = cfg.hidden_size, cfg.num_attention_heads
    hd = getattr(cfg, "head_dim", None) or d // heads
    return cfg.vocab_size, d, cfg.num_hidden_layers, heads, cfg.num_key_value_heads, hd, cfg.intermediate_size


def param_count(cfg) -> int:
    """Exact parameter count of a Llama (no biases): V·d embeddings (x2 if untied) + L·layer + d final norm.

    layer = attention d·(H·hd) [q] + 2·d·(K·hd) [k, v] + (H·hd)·d [o] + SwiGLU MLP 3·d·f + 2 RMSNorms 2·d.
    Lucie-7B: 2·65,024·4,096 + 32·192,946,176 + 4,096 = 6,706,958,336 (its model card's number).
    """
    v, d, layers, heads, kv, hd, f = dims(cfg)
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
    _, _, layers, heads, _, hd, _ = dims(cfg)
    return 6 * matmul_params(cfg) + 12 * layers * heads * hd * seq_len


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


def load_weights(model, model_dir: Path) -> None:
    """Weights only (Megatron's --finetune): every *.safetensors of an HF directory (large models are sharded)."""
    from safetensors.torch import load_file

    weight_files = sorted(Path(model_dir).glob("*.safetensors"))
    if not weight_files:
        raise StageError(f"{model_dir} holds no *.safetensors weights to start from (did the previous phase run?)")
    sd = {}
    for f in weight_files:
        sd.update(load_file(str(f)))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    tied = {"lm_head.weight"} if model.config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise StageError(f"{model_dir} does not fit the model: missing {sorted(set(missing) - tied)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]}")
    if tied:
        model.tie_weights()
