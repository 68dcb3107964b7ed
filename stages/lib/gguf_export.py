"""gguf_export: the instruct model as GGUF files (+ an Ollama Modelfile) for local use.

Lucie's authors ship their instruct model for Ollama / LM Studio / llama.cpp (a q4_k_m GGUF and
a Modelfile). This module does the same for our checkpoints, written by us with the `gguf`
package's GGUFWriter (no llama.cpp convert script): one F16 file and one file per requested
quantization (default Q8_0, quantized in numpy by gguf.quants), plus an Ollama Modelfile whose
TEMPLATE and stop tokens are derived from the tokenizer's own chat template.

Decisions (each one explained where it is made below):
* tokenizer.ggml.model "llama" (SentencePiece-style: tokens + scores + types) — see gguf_vocab.tokenizer_kind;
  the chat template and the Modelfile come from gguf_chat.
* q_proj / k_proj rows are permuted from HF's rotate-half layout to llama.cpp's interleaved one —
  see to_interleaved.
* type rule: 1-D tensors (norm weights) F32 in every file; 2-D tensors F16 in the F16 file; in a
  quantized file a 2-D tensor is quantized when its row length (the input dimension, GGML's ne0) is
  a multiple of the type's block size (32 for Q8_0), otherwise it stays F16 — see tensor_type.
* Output is a pure function of the inputs: no timestamps, fixed tensor order, so exporting twice
  gives byte-identical files.
"""
from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import numpy as np

from stages.core.files import sha256_file
from stages.lib.gguf_chat import chat_format, gguf_chat_template, modelfile, stop_strings
from stages.lib.gguf_vocab import Vocab, read_vocab

ARCH = "llama"
# Simple block quantizations that gguf.quants can both quantize and dequantize in numpy (the
# K-quants, e.g. Lucie's q4_k_m, are dequantize-only there: use llama.cpp's llama-quantize on the F16 file).
QUANT_TYPES = ("Q8_0", "Q5_1", "Q5_0", "Q4_1", "Q4_0")


# ----------------------------------------------------------------------------- tensors

def to_interleaved(w: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder the rows of an HF q_proj/k_proj weight into the order llama.cpp's `llama` arch expects.

    RoPE rotates pairs of dimensions of each head. Meta's original Llama code (and llama.cpp's
    "normal" RoPE mode, used for arch `llama`) pairs adjacent dimensions (2i, 2i+1). Hugging Face's
    LlamaAttention uses `rotate_half`, which pairs dimension i with i + head_dim/2; HF's conversion
    script from Meta's checkpoints permuted the q/k rows so the two conventions give the same
    attention scores. An HF-format checkpoint (ours was trained in that layout) must therefore be
    permuted back: within each head, GGUF row 2i = HF row i and GGUF row 2i+1 = HF row i + head_dim/2.
    (K uses the number of key/value heads.) v_proj and o_proj are not rotated and are not touched.
    """
    rows = w.shape[0]
    if rows % n_head or (rows // n_head) % 2:
        raise ValueError(f"cannot split {rows} rows into {n_head} heads of even size")
    d = rows // n_head
    return w.reshape(n_head, 2, d // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def to_rotate_half(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of to_interleaved: GGUF row order back to the HF checkpoint's."""
    d = w.shape[0] // n_head
    return w.reshape(n_head, d // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def tensor_type(name: str, shape: tuple[int, ...], target: str):
    """GGML type of one tensor in a file whose main type is `target` ("F16" or a QUANT_TYPES name)."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    if len(shape) == 1:
        return GGMLQuantizationType.F32  # norm weights: tiny, and llama.cpp keeps them F32 too
    if target == "F16":
        return GGMLQuantizationType.F16
    q = GGMLQuantizationType[target]
    block = GGML_QUANT_SIZES[q][0]
    # Quantization blocks run along a row (the input dimension). A row that does not split into
    # whole blocks cannot be quantized (gguf.quants refuses it; so does llama.cpp): keep it F16.
    return q if shape[-1] % block == 0 else GGMLQuantizationType.F16


def gguf_tensor_names(n_layers: int, tied: bool) -> list[str]:
    """The tensors of an `llama` GGUF, in the order we write them (fixed, for determinism)."""
    from gguf import MODEL_TENSOR, TENSOR_NAMES

    per_layer = [MODEL_TENSOR.ATTN_NORM, MODEL_TENSOR.ATTN_Q, MODEL_TENSOR.ATTN_K, MODEL_TENSOR.ATTN_V,
                 MODEL_TENSOR.ATTN_OUT, MODEL_TENSOR.FFN_NORM, MODEL_TENSOR.FFN_GATE, MODEL_TENSOR.FFN_UP,
                 MODEL_TENSOR.FFN_DOWN]
    names = [TENSOR_NAMES[MODEL_TENSOR.TOKEN_EMBD] + ".weight"]
    names += [TENSOR_NAMES[t].format(bid=i) + ".weight" for i in range(n_layers) for t in per_layer]
    names.append(TENSOR_NAMES[MODEL_TENSOR.OUTPUT_NORM] + ".weight")
    if not tied:  # llama.cpp reuses token_embd when output.weight is absent
        names.append(TENSOR_NAMES[MODEL_TENSOR.OUTPUT] + ".weight")
    return names


class _Weights:
    """HF safetensors weights (single file or sharded), read one tensor at a time as float32."""

    def __init__(self, model_dir: Path):
        from safetensors import safe_open

        index = model_dir / "model.safetensors.index.json"
        if index.exists():
            files = {k: model_dir / v for k, v in json.loads(index.read_text())["weight_map"].items()}
        elif (model_dir / "model.safetensors").exists():
            with safe_open(model_dir / "model.safetensors", framework="pt") as f:
                files = {k: model_dir / "model.safetensors" for k in f.keys()}
        else:
            raise FileNotFoundError(f"{model_dir}: no model.safetensors(.index.json)")
        self.files = files

    def get(self, key: str) -> np.ndarray:
        import torch
        from safetensors import safe_open

        with safe_open(self.files[key], framework="pt") as f:  # torch reads bf16, which numpy cannot
            return f.get_tensor(key).to(torch.float32).numpy()


def _hparams(cfg: dict) -> dict:
    """The llama.* numbers from an HF LlamaConfig dict; anything we would convert wrongly is refused."""
    if cfg.get("model_type") != "llama":
        raise ValueError(f"model_type {cfg.get('model_type')!r}: only HF Llama checkpoints are supported")
    for key in ("attention_bias", "mlp_bias"):
        if cfg.get(key):
            raise ValueError(f"{key}=true is not supported (Lucie has no biases)")
    if cfg.get("hidden_act", "silu") != "silu":
        raise ValueError(f"hidden_act {cfg['hidden_act']!r}: llama.cpp's llama arch is SwiGLU (silu)")
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}  # transformers 5 / 4 spelling
    rope_type = rope.get("rope_type") or rope.get("type") or "default"
    if rope_type != "default":
        raise ValueError(f"RoPE scaling {rope_type!r} is not exported (Lucie uses plain RoPE with a large theta)")
    theta = cfg.get("rope_theta", rope.get("rope_theta"))
    if theta is None:
        raise ValueError("config has no rope_theta")
    n_head = cfg["num_attention_heads"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // n_head
    return {
        "context_length": cfg["max_position_embeddings"], "embedding_length": cfg["hidden_size"],
        "block_count": cfg["num_hidden_layers"], "feed_forward_length": cfg["intermediate_size"],
        "head_count": n_head, "head_count_kv": cfg.get("num_key_value_heads") or n_head,
        "layer_norm_rms_epsilon": float(cfg["rms_norm_eps"]), "rope_freq_base": float(theta),
        "rope_dimension_count": head_dim, "head_dim": head_dim, "vocab_size": cfg["vocab_size"],
        "tied": bool(cfg.get("tie_word_embeddings", False)),
    }


@functools.lru_cache(maxsize=None)
def _hf_names(n_layers: int) -> dict[str, str]:
    """GGUF tensor name -> HF checkpoint key, through gguf's own TensorNameMap (its fact table)."""
    from gguf import MODEL_ARCH, TensorNameMap

    tmap = TensorNameMap(MODEL_ARCH.LLAMA, n_layers)
    hf = ["model.embed_tokens", "model.norm", "lm_head"] + [
        f"model.layers.{i}.{s}" for i in range(n_layers) for s in (
            "input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
            "post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")]
    return {tmap.get_name(h) + ".weight": h + ".weight" for h in hf}


# ----------------------------------------------------------------------------- tokenizer

def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "model"


def _write_metadata(w, hp: dict, vocab: Vocab, *, name: str, file_type: int, license: str | None,
                    languages, tags, repo_url: str | None, chat_template: str | None) -> None:
    from gguf import GGML_QUANT_VERSION

    w.add_type("model")
    w.add_name(name)
    if license:
        w.add_license(license)
    if languages:
        w.add_languages(list(languages))
    if tags:
        w.add_tags(list(tags))
    if repo_url:
        w.add_repo_url(repo_url)
    w.add_quantization_version(GGML_QUANT_VERSION)
    w.add_file_type(file_type)
    w.add_vocab_size(hp["vocab_size"])
    w.add_context_length(hp["context_length"])
    w.add_embedding_length(hp["embedding_length"])
    w.add_block_count(hp["block_count"])
    w.add_feed_forward_length(hp["feed_forward_length"])
    w.add_head_count(hp["head_count"])
    w.add_head_count_kv(hp["head_count_kv"])
    w.add_key_length(hp["head_dim"])
    w.add_value_length(hp["head_dim"])
    w.add_layer_norm_rms_eps(hp["layer_norm_rms_epsilon"])
    w.add_rope_freq_base(hp["rope_freq_base"])
    w.add_rope_dimension_count(hp["rope_dimension_count"])
    w.add_tokenizer_model(vocab.kind)
    w.add_token_list(vocab.tokens)
    w.add_token_scores(vocab.scores)
    w.add_token_types(vocab.types)
    ids = vocab.special_ids
    for key, add in (("bos", w.add_bos_token_id), ("eos", w.add_eos_token_id), ("unk", w.add_unk_token_id),
                     ("pad", w.add_pad_token_id)):
        if key in ids:
            add(ids[key])
    w.add_add_bos_token(vocab.add_bos)
    w.add_add_eos_token(vocab.add_eos)
    w.add_add_space_prefix(vocab.add_space_prefix)
    w.add_remove_extra_whitespaces(False)
    if chat_template:
        w.add_chat_template(chat_template)
        fmt = chat_format(vocab)
        eot = vocab.id(fmt.tail.strip()) if fmt.tail.strip() else None
        if eot is not None and eot != ids.get("eos"):
            w.add_eot_token_id(eot)  # llama.cpp stops on EOS and EOT


def _add_tensors(model_dir: Path, hp: dict, writers: dict) -> tuple[list[str], dict]:
    """Every GGUF tensor, in llama.cpp's order, into every writer at its type; an error for any checkpoint tensor
    left over. Returns (tensor names, per-file counts by type)."""
    import gguf

    weights = _Weights(model_dir)
    names = gguf_tensor_names(hp["block_count"], hp["tied"])
    used = set()
    counts = {t: {} for t in writers}
    for gname in names:
        key = _hf_names(hp["block_count"])[gname]
        if key not in weights.files:
            raise ValueError(f"checkpoint has no {key} (for {gname})")
        used.add(key)
        arr = weights.get(key)
        if gname.endswith("attn_q.weight"):
            arr = to_interleaved(arr, hp["head_count"])
        elif gname.endswith("attn_k.weight"):
            arr = to_interleaved(arr, hp["head_count_kv"])
        for t, w in writers.items():
            ty = tensor_type(gname, arr.shape, t)
            if ty == gguf.GGMLQuantizationType.F32:
                w.add_tensor(gname, np.ascontiguousarray(arr, dtype=np.float32))
            elif ty == gguf.GGMLQuantizationType.F16:
                w.add_tensor(gname, arr.astype(np.float16))
            else:
                w.add_tensor(gname, gguf.quants.quantize(arr, ty), raw_dtype=ty)
            counts[t][ty.name] = counts[t].get(ty.name, 0) + 1
    # Tied checkpoints may still store lm_head (a copy of the embedding); rotary caches are derived.
    extra = sorted(k for k in weights.files if k not in used
                   and not (hp["tied"] and k == "lm_head.weight") and not k.endswith("rotary_emb.inv_freq"))
    if extra:
        raise ValueError(f"checkpoint tensors not exported: {extra[:5]}")
    return names, counts


def _modelfile(model_dir: Path, hp: dict, vocab: Vocab, gguf_file: str, name: str, target: str,
               license: str | None, license_file) -> str:
    """The Ollama Modelfile: sampling defaults from generation_config.json, context from the config."""
    params = {}
    gen_path = model_dir / "generation_config.json"
    gen = json.loads(gen_path.read_text(encoding="utf-8")) if gen_path.exists() else {}
    if gen.get("do_sample"):
        for k in ("temperature", "top_p", "top_k"):
            if gen.get(k) is not None:
                params[k] = gen[k]
    params["num_ctx"] = hp["context_length"]
    lic_path = Path(license_file) if license_file else model_dir / "LICENSE"
    license_text = lic_path.read_text(encoding="utf-8") if lic_path.exists() else license
    return modelfile(gguf_file, vocab, parameters=params, license_text=license_text,
                     comment=f"Ollama Modelfile for {name} ({target}); `ollama create NAME -f Modelfile` in this folder.")


def export(model_dir, out_dir, quantize=("Q8_0",), *, name: str | None = None, license: str | None = None,
           languages=(), tags=(), repo_url: str | None = None, license_file=None) -> dict:
    """Write <name>-F16.gguf, one <name>-<TYPE>.gguf per `quantize` entry and a Modelfile into out_dir.

    model_dir: an HF Llama directory (config.json, model.safetensors[.index.json], tokenizer.json,
    tokenizer_config.json, optional generation_config.json, chat_template.jinja, LICENSE).
    The Modelfile points at the last quantized file (the smallest), or at the F16 file.
    Returns {"files": {label: file name}, "sha256": ..., "bytes": ..., "metadata": summary}.
    """
    import gguf

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    quantize = list(quantize or [])
    for q in quantize:
        if q not in QUANT_TYPES:
            raise ValueError(f"quantization {q!r} not supported here (choose from {', '.join(QUANT_TYPES)})")
    cfg = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    hp = _hparams(cfg)
    vocab = read_vocab(model_dir, hp["vocab_size"])
    template = gguf_chat_template(vocab)
    name = name or model_dir.name
    out_dir.mkdir(parents=True, exist_ok=True)

    targets = ["F16", *quantize]
    files = {t: f"{_slug(name)}-{t}.gguf" for t in targets}
    file_types = {t: gguf.LlamaFileType.MOSTLY_F16 if t == "F16" else gguf.LlamaFileType[f"MOSTLY_{t}"]
                  for t in targets}
    writers = {}
    for t in targets:
        # use_temp_file: each tensor goes to a spooled temp file as soon as it is added, so a 7B
        # export holds one tensor in memory at a time, not the whole model.
        w = gguf.GGUFWriter(out_dir / files[t], ARCH, use_temp_file=True)
        _write_metadata(w, hp, vocab, name=name, file_type=int(file_types[t]), license=license,
                        languages=languages, tags=tags, repo_url=repo_url, chat_template=template)
        writers[t] = w

    names, counts = _add_tensors(model_dir, hp, writers)
    for w in writers.values():
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()

    target = targets[-1]
    mf = _modelfile(model_dir, hp, vocab, files[target], name, target, license, license_file)
    (out_dir / "Modelfile").write_text(mf, encoding="utf-8")
    files["Modelfile"] = "Modelfile"

    fmt = chat_format(vocab) if template else None
    return {
        "files": files,
        "sha256": {k: sha256_file(out_dir / f) for k, f in files.items()},
        "bytes": {k: (out_dir / f).stat().st_size for k, f in files.items()},
        "metadata": {
            "architecture": ARCH, "name": name, "license": license, "tensors": len(names),
            "tensor_types": counts, "vocab_size": len(vocab.tokens), "tokenizer_model": vocab.kind,
            "add_bos_token": vocab.add_bos, "add_space_prefix": vocab.add_space_prefix,
            "special_ids": vocab.special_ids, "chat_template": template is not None,
            "stop": stop_strings(vocab, fmt), "modelfile_from": files[target],
            **{k: hp[k] for k in ("context_length", "embedding_length", "block_count", "head_count",
                                  "head_count_kv", "rope_freq_base")},
        },
    }
