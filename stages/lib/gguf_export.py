"""gguf_export: the instruct model as GGUF files (+ an Ollama Modelfile) for local use.

Lucie's authors ship their instruct model for Ollama / LM Studio / llama.cpp (a q4_k_m GGUF and
a Modelfile). This module does the same for our checkpoints, written by us with the `gguf`
package's GGUFWriter (no llama.cpp convert script): one F16 file and one file per requested
quantization (default Q8_0, quantized in numpy by gguf.quants), plus an Ollama Modelfile whose
TEMPLATE and stop tokens are derived from the tokenizer's own chat template.

Decisions (each one explained where it is made below):
* tokenizer.ggml.model "llama" (SentencePiece-style: tokens + scores + types) — see tokenizer_kind.
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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stages.core.files import sha256_file

ARCH = "llama"
ROLES = ("system", "user", "assistant")
# Simple block quantizations that gguf.quants can both quantize and dequantize in numpy (the
# K-quants, e.g. Lucie's q4_k_m, are dequantize-only there: use llama.cpp's llama-quantize on the F16 file).
QUANT_TYPES = ("Q8_0", "Q5_1", "Q5_0", "Q4_1", "Q4_0")
_GEN_TAG = re.compile(r"\{%-?\s*(?:end)?generation\s*-?%\}")
_UNUSED = re.compile(r"<unused\d+>")


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

def _parts(node: dict | None, key: str) -> list[dict]:
    """Flatten a tokenizers Sequence (normalizers / pretokenizers / decoders) into its components."""
    if not node:
        return []
    if node.get("type") == "Sequence":
        return [p for sub in node.get(key, []) for p in _parts(sub, key)]
    return [node]


def tokenizer_kind(spec: dict) -> str:
    """Which llama.cpp tokenizer model reproduces this tokenizer.json: "llama" or "gpt2".

    llama.cpp has two BPE flavours. "gpt2" is byte-level BPE: every byte is first mapped to a
    printable character (GPT-2's table, space -> "Ġ"), tokens are strings over that alphabet and
    merges are applied in rank order; in tokenizer.json that is a ByteLevel pre-tokenizer/decoder.
    "llama" is SentencePiece-style: spaces become "▁", text is split into UTF-8 characters and
    adjacent pieces are merged by token score; a character missing from the vocabulary falls back
    to its byte tokens <0xNN> (token type BYTE). Lucie's tokenizer and ours are the latter: BPE with
    byte_fallback, a Metaspace ("▁") pre-tokenizer/normalizer and a ByteFallback + Metaspace
    decoder, tokens stored as raw Unicode with "▁" — a gpt2 reader would look them up in the wrong
    alphabet. So "llama", with scores that replay the merge order (see vocab_arrays).
    """
    model = spec.get("model", {})
    comps = (_parts(spec.get("normalizer"), "normalizers") + _parts(spec.get("pre_tokenizer"), "pretokenizers")
             + _parts(spec.get("decoder"), "decoders"))
    types = {c.get("type") for c in comps}
    if "ByteLevel" in types:
        return "gpt2"
    metaspace = "Metaspace" in types or any(
        c.get("type") == "Replace" and c.get("content") == "▁" for c in _parts(spec.get("normalizer"), "normalizers"))
    if model.get("type") == "BPE" and model.get("byte_fallback") and metaspace:
        return "llama"
    raise ValueError("tokenizer.json is neither a byte-fallback Metaspace BPE nor a ByteLevel BPE")


def add_space_prefix(spec: dict) -> bool:
    """llama.cpp's tokenizer.ggml.add_space_prefix for a SentencePiece-style tokenizer.json.

    llama.cpp's "llama" tokenizer prepends "▁" to every text fragment that starts the input or
    follows a special token. Lucie's tokenizer does exactly that (a `Prepend` normalizer, applied to
    each fragment between special tokens): True. Ours uses a Metaspace pre-tokenizer with
    prepend_scheme "first", which prefixes only the very start of the input and never the text after
    a special token. No llama.cpp setting reproduces both; we choose False, which is exact for chat
    prompts (they always start with <s><|start_header_id|>, so HF adds no "▁" anywhere) and differs
    only for a raw completion prompt's first word.
    """
    for n in _parts(spec.get("normalizer"), "normalizers"):
        if n.get("type") == "Prepend" and n.get("prepend") in (" ", "▁"):
            return True
    for p in _parts(spec.get("pre_tokenizer"), "pretokenizers"):
        if p.get("type") == "Metaspace":
            scheme = p.get("prepend_scheme") or ("always" if p.get("add_prefix_space", True) else "never")
            return scheme == "always"
    return False


def _token_str(value) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value


@dataclass
class Vocab:
    """What GGUF and the Modelfile need to know about a tokenizer directory."""
    kind: str
    tokens: list[str]
    scores: list[float]
    types: list[int]
    special_ids: dict[str, int]          # bos / eos / unk / pad -> id
    add_bos: bool
    add_eos: bool
    add_space_prefix: bool
    chat_template: str | None            # as written in the tokenizer files
    special_tokens: list[str] = field(default_factory=list)  # added tokens with special=True
    eos_ids: list[int] = field(default_factory=list)  # tokenizer EOS, then generation_config's eos_token_id(s)

    def id(self, text: str) -> int | None:
        try:
            return self.tokens.index(text)
        except ValueError:
            return None


def read_chat_template(model_dir: Path) -> str | None:
    """The tokenizer's chat template, wherever transformers 4 or 5 saved it."""
    jinja = model_dir / "chat_template.jinja"
    if jinja.exists():
        return jinja.read_text(encoding="utf-8")
    for name in ("tokenizer_config.json", "chat_template.json"):
        p = model_dir / name
        if p.exists():
            tpl = json.loads(p.read_text(encoding="utf-8")).get("chat_template")
            if isinstance(tpl, list):  # named templates: the "default" one is the chat template
                tpl = next((t["template"] for t in tpl if t.get("name") == "default"), None)
            if tpl:
                return tpl
    return None


def read_vocab(model_dir: Path, vocab_size: int | None = None) -> Vocab:
    """Tokens, scores and types (llama.cpp's SentencePiece-style vocabulary) from tokenizer.json.

    vocab_size: the model's embedding rows; llama.cpp wants exactly that many tokens, so a
    vocabulary smaller than the embedding is padded with UNUSED "[PADn]" tokens.
    """
    from gguf import TokenType

    model_dir = Path(model_dir)
    spec = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    cfg_path = model_dir / "tokenizer_config.json"
    tcfg = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.exists() else {}
    kind = tokenizer_kind(spec)
    if kind != "llama":
        raise NotImplementedError("byte-level (gpt2) tokenizers need llama.cpp's pre-tokenizer name; not exported")

    by_id: dict[int, str] = {i: t for t, i in spec["model"]["vocab"].items()}
    added = {a["id"]: a for a in spec.get("added_tokens", [])}
    for i, a in added.items():
        if by_id.get(i, a["content"]) != a["content"]:
            raise ValueError(f"added token {a['content']!r} clashes with vocab entry {by_id[i]!r} at id {i}")
        by_id[i] = a["content"]
    n = max(by_id) + 1
    if sorted(by_id) != list(range(n)):
        raise ValueError("tokenizer ids are not contiguous from 0")
    if vocab_size is not None and vocab_size < n:
        raise ValueError(f"model vocab_size {vocab_size} < tokenizer size {n}")
    total = vocab_size or n

    # Scores: llama.cpp's "llama" tokenizer repeatedly merges the adjacent pair whose concatenation
    # is the highest-scoring token; HF BPE applies the lowest-ranked merge first. Giving the token
    # produced by merge r the score -(r+1) makes both pick the same merge in the usual case (as in
    # SentencePiece BPE models, where a piece's score is minus its creation order). Single characters,
    # specials and bytes are never produced by a merge: score 0. A multi-character token that no merge
    # produces (HF never emits it) gets the lowest score so it is merged last.
    merges = spec["model"].get("merges", [])
    rank: dict[str, int] = {}
    for r, m in enumerate(merges):
        a, b = m.split(" ", 1) if isinstance(m, str) else m
        rank.setdefault(a + b, r)
    byte_fallback = spec["model"].get("byte_fallback", False)
    unk = spec["model"].get("unk_token")
    tokens, scores, types, specials = [], [], [], []
    for i in range(total):
        t = by_id.get(i, f"[PAD{i}]")
        if i >= n:
            ty, sc = TokenType.UNUSED, 0.0
        elif i in added:
            special = added[i].get("special", False)
            ty = TokenType.UNKNOWN if t == unk else TokenType.CONTROL if special else TokenType.USER_DEFINED
            sc = 0.0
            if special:
                specials.append(t)
        elif t == unk:
            ty, sc = TokenType.UNKNOWN, 0.0
        elif byte_fallback and re.fullmatch(r"<0x[0-9A-F]{2}>", t):
            ty, sc = TokenType.BYTE, 0.0
        elif _UNUSED.fullmatch(t):  # reserved slots (Lucie's <unusedN>): never produced, never shown
            ty, sc = TokenType.UNUSED, 0.0
        else:
            ty = TokenType.NORMAL
            sc = -float(rank[t] + 1) if t in rank else (0.0 if len(t) == 1 else -float(len(merges) + 1))
        tokens.append(t)
        scores.append(sc)
        types.append(int(ty))

    def tok_id(key: str) -> int | None:
        text = _token_str(tcfg.get(key))
        if text is None:
            return None
        if text not in tokens:
            raise ValueError(f"{key} {text!r} is not in the vocabulary")
        return tokens.index(text)

    ids = {k: tok_id(f"{k}_token") for k in ("bos", "eos", "unk", "pad")}
    if ids["unk"] is None and unk in tokens:
        ids["unk"] = tokens.index(unk)
    post = (spec.get("post_processor") or {}).get("single") or []
    bos_in_post = bool(post) and "SpecialToken" in post[0] and ids["bos"] is not None \
        and post[0]["SpecialToken"]["id"] == tokens[ids["bos"]]
    eos_in_post = bool(post) and "SpecialToken" in post[-1] and ids["eos"] is not None \
        and post[-1]["SpecialToken"]["id"] == tokens[ids["eos"]]
    # transformers 5 no longer writes add_bos_token; the post-processor is what actually adds <s>.
    add_bos = tcfg.get("add_bos_token", bos_in_post)
    add_eos = tcfg.get("add_eos_token", eos_in_post)
    gen_path = model_dir / "generation_config.json"
    gen_eos = json.loads(gen_path.read_text(encoding="utf-8")).get("eos_token_id") if gen_path.exists() else None
    gen_eos = gen_eos if isinstance(gen_eos, list) else [] if gen_eos is None else [gen_eos]
    for i in gen_eos:
        if not 0 <= i < len(tokens):
            raise ValueError(f"generation_config eos_token_id {i} is outside the vocabulary")
    eos_ids = list(dict.fromkeys(([ids["eos"]] if ids["eos"] is not None else []) + gen_eos))
    return Vocab(kind=kind, tokens=tokens, scores=scores, types=types,
                 special_ids={k: v for k, v in ids.items() if v is not None}, add_bos=bool(add_bos),
                 add_eos=bool(add_eos), add_space_prefix=add_space_prefix(spec),
                 chat_template=read_chat_template(model_dir), special_tokens=specials, eos_ids=eos_ids)


# ----------------------------------------------------------------------------- chat format

def render(template: str, messages: list[dict], vocab: Vocab, *, add_generation_prompt=False,
           continue_final_message=False) -> str:
    """Render a chat template exactly as transformers' apply_chat_template does."""
    from transformers.utils.chat_template_utils import render_jinja_template

    named = {f"{k}_token": vocab.tokens[i] for k, i in vocab.special_ids.items()}
    out, _ = render_jinja_template([messages], chat_template=template, add_generation_prompt=add_generation_prompt,
                                   continue_final_message=continue_final_message, **named)
    return out[0]


def gguf_chat_template(vocab: Vocab) -> str | None:
    """The template stored in tokenizer.chat_template: the HF one minus `{% generation %}` tags.

    Those tags are a transformers extension (they mark assistant tokens for training masks) and do
    not change the rendered text; llama.cpp's and LM Studio's Jinja engines may not know them. We
    check the stripped template renders identically before using it.
    """
    tpl = vocab.chat_template
    if tpl is None or not _GEN_TAG.search(tpl):
        return tpl
    plain = _GEN_TAG.sub("", tpl)
    probe = [{"role": "system", "content": "s"}, {"role": "user", "content": " u "},
             {"role": "assistant", "content": "a\n"}, {"role": "user", "content": "v"}]
    for gen in (False, True):
        if render(plain, probe, vocab, add_generation_prompt=gen) != render(tpl, probe, vocab, add_generation_prompt=gen):
            raise ValueError("removing {% generation %} tags changes the chat template's output")
    return plain


@dataclass
class ChatFormat:
    """A chat template of the per-message form  prefix (head_pre ROLE head_post CONTENT tail)* gen."""
    prefix: str      # before the first message (e.g. the BOS token)
    head_pre: str    # e.g. "<|start_header_id|>"
    head_post: str   # e.g. "<|end_header_id|>\n\n"
    tail: str        # after each message's content, e.g. "<|eot_id|>"
    generation: str  # the add_generation_prompt suffix


def chat_format(vocab: Vocab) -> ChatFormat:
    """Read the per-message structure off the tokenizer's template by rendering probe conversations.

    Derived, not hard-coded: whatever markers the lead's template (or Lucie's) uses end up in the
    Modelfile. Templates that are not of this form (role-specific formats, system prompt folded
    into the first user turn, ...) are refused rather than translated wrongly.
    """
    tpl = vocab.chat_template
    if not tpl:
        raise ValueError("tokenizer has no chat template")
    mark = {r: f"QQ{r.upper()}CONTENTQQ" for r in ROLES}
    conv = [{"role": r, "content": mark[r]} for r in ROLES]
    full = render(tpl, conv, vocab)
    pieces = re.split("|".join(mark.values()), full)
    if len(pieces) != 4:
        raise ValueError("chat template does not show each message's content exactly once")
    tail = pieces[3]
    heads = {"system": pieces[0]}
    for role, piece in (("user", pieces[1]), ("assistant", pieces[2])):
        if not piece.startswith(tail):
            raise ValueError("chat template closes messages differently")
        heads[role] = piece[len(tail):]
    if heads["user"].count("user") != 1:
        raise ValueError("chat template's user header does not name the role once")
    head_pre, head_post = heads["user"].split("user")
    alone = render(tpl, conv[1:2], vocab)  # a lone user message: preamble + user header + content
    start = alone[: alone.index(mark["user"])]
    prefix = start[: len(start) - len(heads["user"])]
    if not start.endswith(heads["user"]) or not heads["system"].startswith(prefix):
        raise ValueError("chat template's preamble depends on the conversation")
    heads["system"] = heads["system"][len(prefix):]
    for role in ROLES:
        if heads[role] != head_pre + role + head_post:
            raise ValueError(f"chat template's {role} header is not {head_pre!r} + role + {head_post!r}")
    gen = render(tpl, conv[1:2], vocab, add_generation_prompt=True)
    if not gen.startswith(alone):
        raise ValueError("add_generation_prompt does not only append to the prompt")
    fmt = ChatFormat(prefix, head_pre, head_post, tail, gen[len(alone):])
    # Cross-check on a longer conversation: the structure must reassemble HF's rendering exactly.
    conv2 = [{"role": r, "content": f"QQ{i}QQ"} for i, r in enumerate(("user", "assistant", "user", "assistant", "user"))]
    expect = fmt.prefix + "".join(fmt.head_pre + m["role"] + fmt.head_post + m["content"] + fmt.tail for m in conv2)
    if render(tpl, conv2, vocab, add_generation_prompt=True) != expect + fmt.generation:
        raise ValueError("chat template is not a plain per-message format")
    return fmt


def _go_literal(text: str) -> str:
    if "{{" in text or '"""' in text:
        raise ValueError(f"cannot place {text!r} literally in a Go template inside a Modelfile")
    return text


def ollama_template(fmt: ChatFormat, vocab: Vocab) -> str:
    """The chat format as an Ollama (Go text/template) TEMPLATE over .Messages.

    HF semantics it reproduces: a conversation ending with a user (or system) message is rendered
    with add_generation_prompt=True; one ending with an assistant message is left open for the
    model to continue (HF's continue_final_message). The BOS token the HF template writes first is
    left out when the GGUF says add_bos_token: llama.cpp (under Ollama) adds it when tokenizing, and
    writing it here too would give two. Differences: HF strips each message (`| trim`); Go's
    text/template has no trim, so Ollama passes content as typed.
    """
    prefix = fmt.prefix
    bos = vocab.tokens[vocab.special_ids["bos"]] if "bos" in vocab.special_ids else None
    if vocab.add_bos and bos and prefix.startswith(bos):
        prefix = prefix[len(bos):]
    return (
        _go_literal(prefix)
        + "{{ range $i, $m := .Messages }}{{ $last := eq (len (slice $.Messages $i)) 1 }}"
        + _go_literal(fmt.head_pre) + "{{ $m.Role }}" + _go_literal(fmt.head_post) + "{{ $m.Content }}"
        + '{{ if or (not $last) (ne $m.Role "assistant") }}' + _go_literal(fmt.tail) + "{{ end }}"
        + '{{ if and $last (ne $m.Role "assistant") }}' + _go_literal(fmt.generation) + "{{ end }}"
        + "{{ end }}"
    )


def stop_strings(vocab: Vocab, fmt: ChatFormat | None) -> list[str]:
    """Ollama stop strings: the end-of-turn marker, every special token the chat format uses
    (a model that opens a new header has finished its turn), and the EOS token(s) of the tokenizer
    and generation_config — for Lucie's format that is the official Modelfile's list:
    <|eot_id|>, <s>, <|start_header_id|>, <|end_header_id|>, </s>."""
    out: list[str] = []
    if fmt is not None:
        if fmt.tail.strip():
            out.append(fmt.tail.strip())
        used = fmt.prefix + fmt.head_pre + fmt.head_post + fmt.tail + fmt.generation
        out += sorted((t for t in vocab.special_tokens if t in used), key=used.index)
    out += [vocab.tokens[i] for i in vocab.eos_ids]
    return list(dict.fromkeys(out))


def modelfile(gguf_file: str, vocab: Vocab, *, parameters: dict | None = None, license_text: str | None = None,
              comment: str | None = None) -> str:
    """An Ollama Modelfile for `gguf_file` (a path relative to the Modelfile).

    TEMPLATE and stop strings come from the tokenizer's own chat template (see ollama_template,
    stop_strings); a tokenizer without a chat template gets no TEMPLATE (Ollama then sends the raw
    prompt). parameters: extra PARAMETER lines, e.g. {"temperature": 0.6, "num_ctx": 4096}.
    """
    fmt = chat_format(vocab) if vocab.chat_template else None
    lines = [f"# {comment}"] if comment else []
    lines.append(f"FROM ./{gguf_file}")
    if fmt is not None:
        lines.append(f'TEMPLATE """{ollama_template(fmt, vocab)}"""')
    for s in stop_strings(vocab, fmt):
        if '"' in s:
            raise ValueError(f"stop string {s!r} contains a double quote")
        lines.append(f'PARAMETER stop "{s}"')
    for key, value in (parameters or {}).items():
        lines.append(f"PARAMETER {key} {value}")
    if license_text:
        lines.append(f'LICENSE """{_go_literal(license_text.strip())}"""')
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- export

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

    weights = _Weights(model_dir)
    names = gguf_tensor_names(hp["block_count"], hp["tied"])
    used = set()
    counts = {t: {} for t in targets}
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
    for w in writers.values():
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()

    # Modelfile: sampling defaults from generation_config.json, context from the config.
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
    target = targets[-1]
    mf = modelfile(files[target], vocab, parameters=params, license_text=license_text,
                   comment=f"Ollama Modelfile for {name} ({target}); `ollama create NAME -f Modelfile` in this folder.")
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
