"""What GGUF and the Ollama Modelfile need to know about a tokenizer directory (stages/lib/gguf_export.py).

llama.cpp's "llama" tokenizer model is SentencePiece-style: tokens + scores + types, with byte-fallback tokens and
a space prefix decided from the tokenizer's own pre-tokenizer and normalizer (see tokenizer_kind).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

_UNUSED = re.compile(r"<unused\d+>")  # Lucie's reserved slots

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


def _ids_in_order(spec: dict, vocab_size: int | None) -> tuple[dict[int, str], dict[int, dict], int, int]:
    """(id -> token, id -> added token, tokenizer size, total with padding), checked for clashes and gaps."""
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
    return by_id, added, n, vocab_size or n


def _token_table(spec: dict, by_id: dict[int, str], added: dict[int, dict], n: int, total: int):
    """(tokens, scores, types, special tokens) for ids 0..total-1.

    Scores: llama.cpp's "llama" tokenizer repeatedly merges the adjacent pair whose concatenation
    is the highest-scoring token; HF BPE applies the lowest-ranked merge first. Giving the token
    produced by merge r the score -(r+1) makes both pick the same merge in the usual case (as in
    SentencePiece BPE models, where a piece's score is minus its creation order). Single characters,
    specials and bytes are never produced by a merge: score 0. A multi-character token that no merge
    produces (HF never emits it) gets the lowest score so it is merged last."""
    from gguf import TokenType

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
    return tokens, scores, types, specials


def _special_ids(model_dir: Path, spec: dict, tcfg: dict, tokens: list[str]) -> tuple[dict, bool, bool, list[int]]:
    """(bos/eos/unk/pad ids, add_bos, add_eos, every EOS id generation stops at)."""
    def tok_id(key: str) -> int | None:
        text = _token_str(tcfg.get(key))
        if text is None:
            return None
        if text not in tokens:
            raise ValueError(f"{key} {text!r} is not in the vocabulary")
        return tokens.index(text)

    unk = spec["model"].get("unk_token")
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
    return {k: v for k, v in ids.items() if v is not None}, bool(add_bos), bool(add_eos), eos_ids


def read_vocab(model_dir: Path, vocab_size: int | None = None) -> Vocab:
    """Tokens, scores and types (llama.cpp's SentencePiece-style vocabulary) from tokenizer.json.

    vocab_size: the model's embedding rows; llama.cpp wants exactly that many tokens, so a
    vocabulary smaller than the embedding is padded with UNUSED "[PADn]" tokens.
    """
    model_dir = Path(model_dir)
    spec = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    cfg_path = model_dir / "tokenizer_config.json"
    tcfg = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.exists() else {}
    kind = tokenizer_kind(spec)
    if kind != "llama":
        raise NotImplementedError("byte-level (gpt2) tokenizers need llama.cpp's pre-tokenizer name; not exported")
    by_id, added, n, total = _ids_in_order(spec, vocab_size)
    tokens, scores, types, specials = _token_table(spec, by_id, added, n, total)
    special_ids, add_bos, add_eos, eos_ids = _special_ids(model_dir, spec, tcfg, tokens)
    return Vocab(kind=kind, tokens=tokens, scores=scores, types=types, special_ids=special_ids, add_bos=add_bos,
                 add_eos=add_eos, add_space_prefix=add_space_prefix(spec), chat_template=read_chat_template(model_dir),
                 special_tokens=specials, eos_ids=eos_ids)


# ----------------------------------------------------------------------------- chat format
