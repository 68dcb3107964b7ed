"""Chat in GGUF and Ollama: the tokenizer's chat template for the GGUF metadata, and the Modelfile's Go TEMPLATE and
stop tokens derived from it (tests render both, the Go one with Go's own text/template)."""
from __future__ import annotations

import re
from dataclasses import dataclass

from stages.lib.gguf_vocab import Vocab

ROLES = ("system", "user", "assistant")
_GEN_TAG = re.compile(r"\{%-?\s*(?:end)?generation\s*-?%\}")  # trl's assistant-mask markers

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
