"""GGUF export: files read back with gguf's own reader, weights and metadata as the HF checkpoint says,
the Q/K permutation right (a llama.cpp-semantics forward pass reproduces HF's logits), and a Modelfile
whose Go template renders like the HF chat template (with Go's real text/template when `go` exists).

The models are tiny random LlamaForCausalLM saved in tmp_path, with tokenizers built by the project's
own tokenizer and align code; one test uses Lucie's real tokenizer.json (../shared/lucie).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
torch = pytest.importorskip("torch")

from stages.lib import gguf_export as ge  # noqa: E402
from stages.lib import gguf_chat, gguf_vocab  # noqa: E402

LUCIE = Path(__file__).resolve().parents[2] / "shared" / "lucie"
WORDS = ("le chat dort sur le tapis rouge pendant que la pluie tombe doucement the quick brown fox jumps over "
         "the lazy dog while it rains der Hund schläft el perro duerme il cane dorme 2024 12,5 % (voir page 3)").split()


def corpus(n=300, seed=0):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=12)) + "." for _ in range(n)]


def make_instruct_dir(root: Path, *, vocab_size=512, hidden=64, inter=80, layers=2, heads=4, kv=2, tied=False,
                      init=0.2, tokenizer_from: Path | None = None) -> tuple[Path, object]:
    """A tiny instruct model directory shaped like artifacts/models/instruct."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from stages import align, tokenizer as tk

    base = root / "base_tok"
    base.mkdir(parents=True)
    if tokenizer_from is None:
        tk.save_hf(tk.train(corpus(), vocab_size, 1), base)
    else:
        for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            shutil.copy(tokenizer_from / f, base / f)
    tok = align.instruct_tokenizer(base)
    out = root / "instruct"
    tok.save_pretrained(str(out))
    n_vocab = len(tok)
    eot = tok.convert_tokens_to_ids("<|eot_id|>")
    cfg = LlamaConfig(vocab_size=n_vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv, head_dim=hidden // heads,
                      max_position_embeddings=64, rope_theta=10000.0, rms_norm_eps=1e-5, initializer_range=init,
                      tie_word_embeddings=tied, bos_token_id=0, eos_token_id=eot, pad_token_id=3)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # norm weights start at 1.0: make them distinct so a mix-up would show
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
    model.generation_config.update(do_sample=True, temperature=0.6, top_p=0.9, eos_token_id=[eot, 1])
    model.save_pretrained(str(out))
    return out, model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("gguf")
    model_dir, model = make_instruct_dir(root)
    res = ge.export(model_dir, root / "out", quantize=["Q8_0"], name="tiny instruct", license="apache-2.0",
                    languages=["fr", "en"], tags=["lucie-repro"])
    return {"root": root, "dir": model_dir, "model": model, "res": res, "out": root / "out"}


def reader(ex, label):
    return gguf.GGUFReader(ex["out"] / ex["res"]["files"][label])


def field(r, key):
    return r.fields[key].contents()


def hf_state(model):
    return {k: v.detach().float().numpy() for k, v in model.state_dict().items()}


def hf_from_gguf(name: str, arr: np.ndarray, cfg) -> np.ndarray:
    """Undo the export's Q/K row permutation (GGUF -> HF layout)."""
    if name.endswith("attn_q.weight"):
        return ge.to_rotate_half(arr, cfg.num_attention_heads)
    if name.endswith("attn_k.weight"):
        return ge.to_rotate_half(arr, cfg.num_key_value_heads)
    return arr


def tensor_values(t) -> np.ndarray:
    if t.tensor_type in (gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.F32):
        return np.array(t.data)
    return gguf.quants.dequantize(np.array(t.data), t.tensor_type)


# ------------------------------------------------------------------ tensors

def test_permutation_is_the_documented_row_order():
    # one head of size 8: HF's rotate_half pairs row i with row i+4; GGUF (llama.cpp NORM RoPE) pairs
    # adjacent rows, so GGUF row 2i is HF row i and GGUF row 2i+1 is HF row i+4
    w = np.arange(8 * 3).reshape(8, 3)
    assert (ge.to_interleaved(w, 1)[:, 0] // 3).tolist() == [0, 4, 1, 5, 2, 6, 3, 7]
    two = np.arange(8 * 2).reshape(8, 2)  # two heads of 4: permuted within each head only
    assert (ge.to_interleaved(two, 2)[:, 0] // 2).tolist() == [0, 2, 1, 3, 4, 6, 5, 7]
    assert np.array_equal(ge.to_rotate_half(ge.to_interleaved(two, 2), 2), two)
    with pytest.raises(ValueError):
        ge.to_interleaved(np.zeros((6, 2)), 4)


def test_every_layer_tensor_present_with_expected_shape_and_type(exported):
    cfg = exported["model"].config
    hf = hf_state(exported["model"])
    names = ge.gguf_tensor_names(cfg.num_hidden_layers, tied=False)
    assert len(names) == 2 + 9 * cfg.num_hidden_layers + 1
    hf_of = ge._hf_names(cfg.num_hidden_layers)
    for label in ("F16", "Q8_0"):
        r = reader(exported, label)
        got = {t.name: t for t in r.tensors}
        assert [t.name for t in r.tensors] == names
        for name in names:
            t, shape = got[name], hf[hf_of[name]].shape
            assert tuple(int(x) for x in t.shape) == tuple(reversed(shape)), name  # GGML lists ne0 (row length) first
            want = "F32" if len(shape) == 1 else "F16" if label == "F16" or shape[1] % 32 else "Q8_0"
            assert t.tensor_type.name == want, (label, name)
        # the rule did both things in this model: 80-wide ffn_down rows are not whole Q8_0 blocks
        if label == "Q8_0":
            assert got["blk.0.ffn_down.weight"].tensor_type.name == "F16"
            assert got["blk.0.attn_q.weight"].tensor_type.name == "Q8_0"


def test_f16_tensors_equal_fp16_cast_and_qk_permutation_inverts_exactly(exported):
    cfg, hf = exported["model"].config, hf_state(exported["model"])
    hf_of = ge._hf_names(cfg.num_hidden_layers)
    r = reader(exported, "F16")
    for t in r.tensors:
        orig = hf[hf_of[t.name]]
        stored = np.array(t.data)
        if orig.ndim == 1:
            assert stored.dtype == np.float32 and np.array_equal(stored, orig), t.name
            continue
        assert stored.dtype == np.float16
        assert np.array_equal(hf_from_gguf(t.name, stored, cfg), orig.astype(np.float16)), t.name
        if t.name.endswith(("attn_q.weight", "attn_k.weight")):
            assert not np.array_equal(stored, orig.astype(np.float16)), "Q/K rows were not permuted"


def test_q8_0_dequantizes_within_one_quantization_step(exported):
    cfg, hf = exported["model"].config, hf_state(exported["model"])
    hf_of = ge._hf_names(cfg.num_hidden_layers)
    r = reader(exported, "Q8_0")
    n_q8 = 0
    for t in r.tensors:
        orig = hf[hf_of[t.name]]
        deq = hf_from_gguf(t.name, tensor_values(t).reshape(orig.shape), cfg)
        if t.tensor_type == gguf.GGMLQuantizationType.Q8_0:
            n_q8 += 1
            blocks = orig.reshape(-1, 32)
            step = np.abs(blocks).max(axis=1, keepdims=True) / 127  # Q8_0: one f16 scale per 32 values
            err = np.abs(deq.reshape(-1, 32) - blocks)
            assert (err <= step + 1e-7).all(), t.name
            assert err.max() > 0  # really quantized, not a copy
        elif t.tensor_type == gguf.GGMLQuantizationType.F16:
            assert np.array_equal(deq, orig.astype(np.float16).astype(np.float32)), t.name
        else:
            assert np.array_equal(deq, orig), t.name
    assert n_q8 == 2 + 6 * cfg.num_hidden_layers  # embd, output, and q k v o gate up per layer (down: F16)


def rms(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def rope_adjacent_pairs(x, base):
    """llama.cpp's RoPE for arch `llama` (mode NORM): dims (2i, 2i+1) rotate by pos * base^(-2i/d)."""
    t, _, d = x.shape
    ang = np.arange(t)[:, None] * base ** (-np.arange(0, d, 2) / d)
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    out = np.empty_like(x)
    out[..., 0::2] = x[..., 0::2] * cos - x[..., 1::2] * sin
    out[..., 1::2] = x[..., 0::2] * sin + x[..., 1::2] * cos
    return out


def forward_llama_cpp(w: dict, meta: dict, ids: list[int]) -> np.ndarray:
    """Logits of a GGUF `llama` model computed the way llama.cpp defines the graph (float64 numpy)."""
    n_head, n_kv, eps = meta["llama.attention.head_count"], meta["llama.attention.head_count_kv"], \
        meta["llama.attention.layer_norm_rms_epsilon"]
    base = meta["llama.rope.freq_base"]
    x = w["token_embd.weight"][ids]
    T = len(ids)
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for b in range(meta["llama.block_count"]):
        p = lambda n: w[f"blk.{b}.{n}.weight"]  # noqa: E731
        h = rms(x, p("attn_norm"), eps)
        q = rope_adjacent_pairs((h @ p("attn_q").T).reshape(T, n_head, -1), base)
        k = rope_adjacent_pairs((h @ p("attn_k").T).reshape(T, n_kv, -1), base)
        v = (h @ p("attn_v").T).reshape(T, n_kv, -1)
        rep = n_head // n_kv
        k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)  # head j reads kv head j // rep
        s = np.einsum("thd,shd->hts", q, k) / np.sqrt(q.shape[-1]) + mask
        a = np.exp(s - s.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        x = x + np.einsum("hts,shd->thd", a, v).reshape(T, -1) @ p("attn_output").T
        h = rms(x, p("ffn_norm"), eps)
        g = h @ p("ffn_gate").T
        x = x + ((g / (1 + np.exp(-g))) * (h @ p("ffn_up").T)) @ p("ffn_down").T
    x = rms(x, w["output_norm.weight"], eps)
    return x @ w.get("output.weight", w["token_embd.weight"]).T


def test_llama_cpp_semantics_forward_reproduces_hf_logits(exported):
    """The strongest check short of running llama.cpp: the F16 GGUF, read by name and run with
    llama.cpp's adjacent-pair RoPE, gives HF's logits (HF run with the same fp16-rounded weights)."""
    r = reader(exported, "F16")
    w = {t.name: np.array(t.data).astype(np.float64) for t in r.tensors}
    meta = {k: field(r, k) for k in ("llama.attention.head_count", "llama.attention.head_count_kv",
                                     "llama.attention.layer_norm_rms_epsilon", "llama.rope.freq_base",
                                     "llama.block_count")}
    ids = [0, 265, 400, 401, 57, 266, 301, 120, 267, 265, 88, 300]
    model = exported["model"]
    half = type(model)(model.config).eval()
    half.load_state_dict({k: v.half().float() if v.ndim == 2 else v for k, v in model.state_dict().items()})
    with torch.no_grad():
        ref = half(torch.tensor([ids])).logits[0].double().numpy()
    got = forward_llama_cpp(w, meta, ids)
    scale = np.abs(ref).max()
    assert np.abs(got - ref).max() < 1e-4 * scale
    # Negative control: the same weights without the permutation do not match.
    cfg = model.config
    unperm = dict(w)
    for b in range(cfg.num_hidden_layers):
        unperm[f"blk.{b}.attn_q.weight"] = ge.to_rotate_half(w[f"blk.{b}.attn_q.weight"], cfg.num_attention_heads)
        unperm[f"blk.{b}.attn_k.weight"] = ge.to_rotate_half(w[f"blk.{b}.attn_k.weight"], cfg.num_key_value_heads)
    assert np.abs(forward_llama_cpp(unperm, meta, ids) - ref).max() > 100 * np.abs(got - ref).max()


def test_tied_embeddings_export_without_output_tensor(exported, tmp_path):
    """A tied checkpoint has no output.weight in GGUF: llama.cpp then uses token_embd, as HF does."""
    from transformers import LlamaForCausalLM

    d = tmp_path / "tied"
    shutil.copytree(exported["dir"], d)
    cfg = exported["model"].config.__class__(**{**exported["model"].config.to_dict(), "tie_word_embeddings": True})
    torch.manual_seed(1)
    model = LlamaForCausalLM(cfg).eval()
    model.save_pretrained(str(d))
    res = ge.export(d, tmp_path / "out", quantize=[])
    r = gguf.GGUFReader(tmp_path / "out" / res["files"]["F16"])
    names = [t.name for t in r.tensors]
    assert "output.weight" not in names and names == ge.gguf_tensor_names(cfg.num_hidden_layers, tied=True)
    w = {t.name: np.array(t.data).astype(np.float64) for t in r.tensors}
    meta = {k: field(r, k) for k in ("llama.attention.head_count", "llama.attention.head_count_kv",
                                     "llama.attention.layer_norm_rms_epsilon", "llama.rope.freq_base",
                                     "llama.block_count")}
    ids = [0, 300, 301, 302, 303]
    model.load_state_dict({k: v.half().float() if v.ndim == 2 else v for k, v in model.state_dict().items()})
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits[0].double().numpy()
    assert np.abs(forward_llama_cpp(w, meta, ids) - ref).max() < 1e-4 * np.abs(ref).max()


# ------------------------------------------------------------------ metadata

def test_metadata_equals_config_and_tokenizer(exported):
    from transformers import AutoTokenizer

    cfg = exported["model"].config
    tok = AutoTokenizer.from_pretrained(str(exported["dir"]))
    for label, ftype in (("F16", gguf.LlamaFileType.MOSTLY_F16), ("Q8_0", gguf.LlamaFileType.MOSTLY_Q8_0)):
        r = reader(exported, label)
        f = lambda k: field(r, k)  # noqa: E731
        assert f("general.architecture") == "llama" and f("general.type") == "model"
        assert f("general.name") == "tiny instruct" and f("general.license") == "apache-2.0"
        assert f("general.languages") == ["fr", "en"] and f("general.tags") == ["lucie-repro"]
        assert f("general.file_type") == int(ftype)
        assert f("general.quantization_version") == gguf.GGML_QUANT_VERSION
        assert f("llama.context_length") == cfg.max_position_embeddings
        assert f("llama.embedding_length") == cfg.hidden_size
        assert f("llama.block_count") == cfg.num_hidden_layers
        assert f("llama.feed_forward_length") == cfg.intermediate_size
        assert f("llama.attention.head_count") == cfg.num_attention_heads
        assert f("llama.attention.head_count_kv") == cfg.num_key_value_heads
        assert f("llama.attention.layer_norm_rms_epsilon") == np.float32(cfg.rms_norm_eps)
        assert f("llama.rope.freq_base") == cfg.rope_parameters["rope_theta"]
        assert f("llama.rope.dimension_count") == cfg.head_dim == f("llama.attention.key_length")
        assert f("llama.vocab_size") == cfg.vocab_size
        tokens = f("tokenizer.ggml.tokens")
        assert len(tokens) == cfg.vocab_size == len(tok) == len(f("tokenizer.ggml.scores")) \
            == len(f("tokenizer.ggml.token_type"))
        assert tokens == tok.convert_ids_to_tokens(list(range(len(tok))))
        assert f("tokenizer.ggml.model") == "llama"
        types = f("tokenizer.ggml.token_type")
        T = gguf.TokenType
        assert types[0] == types[1] == T.CONTROL and types[2] == T.UNKNOWN and types[3] == T.CONTROL
        assert all(types[4 + b] == T.BYTE for b in range(256)) and tokens[4 + 0x41] == "<0x41>"
        assert all(types[i] == T.CONTROL for i in (265, 266, 267))  # the chat markers
        assert types[260] == T.UNUSED and tokens[260] == "<unused0>"
        assert types[tok.convert_tokens_to_ids("▁le")] == T.NORMAL
        scores = f("tokenizer.ggml.scores")
        # merge order replayed: a token made by an earlier merge scores higher
        merges = json.loads((exported["dir"] / "tokenizer.json").read_text())["model"]["merges"]
        first, last = ("".join(merges[0]), "".join(merges[-1]))
        assert scores[tokens.index(first)] == -1.0 > scores[tokens.index(last)] == -float(len(merges))
        assert f("tokenizer.ggml.bos_token_id") == tok.bos_token_id == 0
        assert f("tokenizer.ggml.eos_token_id") == tok.eos_token_id == tok.convert_tokens_to_ids("<|eot_id|>")
        assert f("tokenizer.ggml.unknown_token_id") == tok.unk_token_id
        assert f("tokenizer.ggml.padding_token_id") == tok.pad_token_id
        # add_bos_token says what the HF tokenizer really does to plain text
        assert f("tokenizer.ggml.add_bos_token") == (tok("bonjour").input_ids[0] == tok.bos_token_id)
        assert f("tokenizer.ggml.add_space_prefix") is False  # Metaspace prepend_scheme "first"
        tpl = f("tokenizer.chat_template")
        assert "{% generation %}" in (exported["dir"] / "chat_template.jinja").read_text()
        assert "{% generation %}" not in tpl and "endgeneration" not in tpl  # transformers-only tags removed ...
        msgs = [{"role": "system", "content": "Sois bref."}, {"role": "user", "content": "Bonjour ?"},
                {"role": "assistant", "content": "Salut."}, {"role": "user", "content": "Ça va ?"}]
        vocab = gguf_vocab.read_vocab(exported["dir"])
        assert gguf_chat.render(tpl, msgs, vocab, add_generation_prompt=True) == \
            tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)  # ... same output


def test_end_of_turn_token_recorded_when_it_is_not_eos(exported, tmp_path):
    """llama.cpp stops on EOS and on tokenizer.ggml.eot_token_id: a tokenizer whose EOS is </s> but whose
    turns end with <|eot_id|> gets both; ours (EOS = <|eot_id|>) needs no separate EOT."""
    assert "tokenizer.ggml.eot_token_id" not in reader(exported, "F16").fields
    d = tmp_path / "eos"
    shutil.copytree(exported["dir"], d)
    tcfg = json.loads((d / "tokenizer_config.json").read_text())
    (d / "tokenizer_config.json").write_text(json.dumps({**tcfg, "eos_token": "</s>"}))
    res = ge.export(d, tmp_path / "out", quantize=[])
    r = gguf.GGUFReader(tmp_path / "out" / res["files"]["F16"])
    assert field(r, "tokenizer.ggml.eos_token_id") == 1 and field(r, "tokenizer.ggml.eot_token_id") == 267


def test_export_is_byte_identical_when_repeated(exported):
    again = ge.export(exported["dir"], exported["root"] / "again", quantize=["Q8_0"], name="tiny instruct",
                      license="apache-2.0", languages=["fr", "en"], tags=["lucie-repro"])
    assert again["files"] == exported["res"]["files"]
    for label, name in again["files"].items():
        assert (exported["root"] / "again" / name).read_bytes() == (exported["out"] / name).read_bytes(), label
    assert again["sha256"] == exported["res"]["sha256"]


# ------------------------------------------------------------------ Modelfile

def parse_modelfile(text: str) -> dict:
    out = {"FROM": re.search(r"^FROM (.+)$", text, re.M).group(1),
           "TEMPLATE": re.search(r'^TEMPLATE """(.*?)"""$', text, re.M | re.S).group(1),
           "stop": re.findall(r'^PARAMETER stop "(.*)"$', text, re.M),
           "params": dict(re.findall(r"^PARAMETER (?!stop)(\w+) (.+)$", text, re.M)),
           "LICENSE": re.search(r'^LICENSE """(.*?)"""$', text, re.M | re.S)}
    return out


def test_modelfile_matches_tokenizer_config(exported):
    text = (exported["out"] / "Modelfile").read_text()
    mf = parse_modelfile(text)
    assert mf["FROM"] == "./" + exported["res"]["files"]["Q8_0"]
    assert (exported["out"] / mf["FROM"]).exists()
    tok = json.loads((exported["dir"] / "tokenizer.json").read_text())
    specials = {a["content"]: a["id"] for a in tok["added_tokens"] if a["special"]}
    gen = json.loads((exported["dir"] / "generation_config.json").read_text())
    # end of turn first, then the format's markers, then every EOS of generation_config
    assert mf["stop"] == ["<|eot_id|>", "<s>", "<|start_header_id|>", "<|end_header_id|>", "</s>"]
    assert all(s in specials for s in mf["stop"])  # each stop is one special token of the vocabulary
    vocab = json.loads((exported["dir"] / "tokenizer.json").read_text())["model"]["vocab"]
    assert {vocab[s] for s in mf["stop"]} >= set(gen["eos_token_id"])
    assert "<|start_header_id|>{{ $m.Role }}<|end_header_id|>\n\n{{ $m.Content }}" in mf["TEMPLATE"]
    add_bos = field(reader(exported, "Q8_0"), "tokenizer.ggml.add_bos_token")
    assert mf["TEMPLATE"].startswith("<s>") != add_bos  # BOS written once: by the template or by llama.cpp
    assert float(mf["params"]["temperature"]) == gen["temperature"]
    assert float(mf["params"]["top_p"]) == gen["top_p"]
    assert int(mf["params"]["num_ctx"]) == exported["model"].config.max_position_embeddings
    assert mf["LICENSE"].group(1) == "apache-2.0"


GO_RENDER = """package main

import (
	"encoding/json"
	"os"
	"strings"
	"text/template"
)

type Message struct {
	Role    string
	Content string
}

func main() {
	var in struct {
		Template      string
		Conversations [][]Message
	}
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		panic(err)
	}
	t := template.Must(template.New("m").Parse(in.Template))
	outs := []string{}
	for _, c := range in.Conversations {
		var b strings.Builder
		if err := t.Execute(&b, struct{ Messages []Message }{c}); err != nil {
			panic(err)
		}
		outs = append(outs, b.String())
	}
	json.NewEncoder(os.Stdout).Encode(outs)
}
"""

CONVERSATIONS = [
    [{"role": "user", "content": "Bonjour"}],
    [{"role": "system", "content": "Réponds en français."}, {"role": "user", "content": "Qui es-tu ?"}],
    [{"role": "user", "content": "2+2 ?"}, {"role": "assistant", "content": "4"}, {"role": "user", "content": "Et 3+3 ?"}],
    [{"role": "user", "content": "Complète :"}, {"role": "assistant", "content": "Il était une"}],
]


def go_render(template: str, conversations, tmp: Path) -> list[str]:
    src = tmp / "render.go"
    src.write_text(GO_RENDER)
    env = {"HOME": str(tmp), "GOCACHE": str(tmp / "gocache"), "GOPATH": str(tmp / "gopath"),
           "PATH": "/usr/bin:/bin:/usr/local/go/bin", "GO111MODULE": "off"}
    run = subprocess.run([shutil.which("go"), "run", str(src)], input=json.dumps(
        {"Template": template, "Conversations": conversations}), capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def hf_expected(tok, conv, add_bos: bool) -> str:
    """What Ollama must send: HF's prompt (generation prompt after a user turn, continuation after an
    assistant turn), minus the BOS that llama.cpp adds itself when the GGUF says add_bos_token."""
    ends_with_assistant = conv[-1]["role"] == "assistant"
    text = tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=not ends_with_assistant,
                                   continue_final_message=ends_with_assistant)
    return text[len(tok.bos_token):] if add_bos and text.startswith(tok.bos_token) else text


@pytest.mark.skipif(shutil.which("go") is None and not os.environ.get("CI"),  # in CI a missing Go fails
                    reason="needs Go's text/template (apt-get install golang-go)")
def test_modelfile_template_renders_like_hf_in_go(exported, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(exported["dir"]))
    mf = parse_modelfile((exported["out"] / "Modelfile").read_text())
    add_bos = field(reader(exported, "Q8_0"), "tokenizer.ggml.add_bos_token")
    got = go_render(mf["TEMPLATE"], CONVERSATIONS, tmp_path)
    assert got == [hf_expected(tok, c, add_bos) for c in CONVERSATIONS]


# ------------------------------------------------------------------ Lucie's tokenizer, other inputs

@pytest.mark.skipif(not (LUCIE / "tokenizer.json").exists(), reason="needs ../shared/lucie/tokenizer.json")
@pytest.mark.parametrize("instruct", [False, True], ids=["pretrained", "instruct"])
def test_lucie_tokenizer_metadata(tmp_path, instruct):
    """Lucie's real 65,024-token tokenizer (Prepend normalizer, add_bos_token true, Llama-3 chat template),
    as released and with its instruct chat markers (265-267, as in Lucie-7B-Instruct)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    d = tmp_path / "lucie"
    if instruct:
        from stages import align

        align.instruct_tokenizer(LUCIE).save_pretrained(str(d))
    else:
        d.mkdir()
        for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            shutil.copy(LUCIE / f, d / f)
    lucie_cfg = json.loads((LUCIE / "config.json").read_text())
    cfg = LlamaConfig(vocab_size=lucie_cfg["vocab_size"], hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=32,
                      rope_theta=lucie_cfg["rope_theta"], rms_norm_eps=lucie_cfg["rms_norm_eps"],
                      bos_token_id=0, eos_token_id=267 if instruct else 1, pad_token_id=3)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(str(d))
    res = ge.export(d, tmp_path / "out", quantize=[], name="lucie tiny")  # reading a 65k vocab takes 6 s a file
    r = gguf.GGUFReader(tmp_path / "out" / res["files"]["F16"])
    f = lambda k: field(r, k)  # noqa: E731
    tokens, types = f("tokenizer.ggml.tokens"), f("tokenizer.ggml.token_type")
    spec = json.loads((LUCIE / "tokenizer.json").read_text())
    assert len(tokens) == 65024 == f("llama.vocab_size")
    assert f("tokenizer.ggml.model") == "llama"
    assert f("tokenizer.ggml.add_space_prefix") is True  # Lucie's Prepend(" ") normalizer
    # Lucie's file and the project's instruct tokenizer both add <s> to plain text (chat tokenization adds none)
    assert f("tokenizer.ggml.add_bos_token") is True and f("tokenizer.ggml.bos_token_id") == 0
    T = gguf.TokenType
    assert types[4] == T.BYTE and tokens[4] == "<0x00>" and types[259] == T.BYTE
    assert tokens[260] == "▁INST" and types[260] == T.NORMAL
    assert tokens[300] == "▁" and types[300] == T.NORMAL
    assert types[tokens.index("<unused10>")] == T.UNUSED
    for t, i in spec["model"]["vocab"].items():  # ids preserved except the instruct markers
        assert tokens[i] == t or (instruct and i in (265, 266, 267))
    assert f("tokenizer.ggml.eos_token_id") == (267 if instruct else 1)
    assert f("llama.rope.freq_base") == lucie_cfg["rope_theta"]
    assert "<|start_header_id|>" in f("tokenizer.chat_template")
    mf = parse_modelfile((tmp_path / "out" / "Modelfile").read_text())
    assert not mf["TEMPLATE"].startswith("<s>")  # add_bos_token: llama.cpp writes the BOS, the template must not
    if instruct:
        assert mf["stop"] == ["<|eot_id|>", "<s>", "<|start_header_id|>", "<|end_header_id|>"]
        assert all(types[tokens.index(s)] == T.CONTROL for s in mf["stop"])
    else:  # markers are plain text for the pretrained tokenizer: the end-of-turn text still stops
        assert mf["stop"] == ["<|eot_id|>", "<s>", "</s>"]
    assert mf["FROM"] == "./" + res["files"]["F16"] == "./lucie-tiny-F16.gguf"  # no quantized file asked for
    if shutil.which("go"):  # Go's text/template renders Lucie's format as transformers does
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(d))
        assert go_render(mf["TEMPLATE"], CONVERSATIONS, tmp_path) == \
            [hf_expected(tok, c, f("tokenizer.ggml.add_bos_token")) for c in CONVERSATIONS]


def test_refuses_what_it_would_convert_wrongly(exported, tmp_path):
    with pytest.raises(ValueError, match="Q6_K"):
        ge.export(exported["dir"], tmp_path / "x", quantize=["Q6_K"])
    bad = tmp_path / "scaled"
    shutil.copytree(exported["dir"], bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["rope_parameters"] = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0}
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="yarn"):
        ge.export(bad, tmp_path / "y")
    # a GPT-2 style byte-level tokenizer is recognised as such, and not exported with the wrong model
    assert gguf_vocab.tokenizer_kind({"model": {"type": "BPE"}, "pre_tokenizer": {"type": "ByteLevel"},
                              "decoder": {"type": "ByteLevel"}}) == "gpt2"
