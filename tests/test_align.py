"""Alignment units: Lucie's instruct tokenizer and chat template, the assistant-only loss mask as trl
computes it, the instruction mix, and chat generation from a saved instruct model."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from stages.align import CHAT_TOKENS, AlignDataError, build_mix, instruct_tokenizer
from stages.core.params import MixPart
from stages.tokenizer import save_hf, train

LUCIE_TOKENIZER = Path(__file__).resolve().parents[2] / "shared" / "lucie" / "tokenizer.json"
CONV = {"messages": [
    {"role": "system", "content": "Tu es un assistant utile."},
    {"role": "user", "content": "Quelle est la capitale de la France ?"},
    {"role": "assistant", "content": "La capitale de la France est Paris."},
    {"role": "user", "content": "Et de l'Italie ?"},
    {"role": "assistant", "content": "C'est Rome."},
]}


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    texts = ["La capitale de la France est Paris. " * 3, "The capital of Italy is Rome. " * 3,
             "Quelle est la capitale ? C'est Rome, et Paris. " * 3] * 20
    out = tmp_path_factory.mktemp("base")
    save_hf(train(texts, vocab_size=400, min_frequency=2), out)
    return out


def test_instruct_tokenizer_renames_reserved_slots_and_renders_lucies_template(base_dir):
    base = json.loads((base_dir / "tokenizer.json").read_text())
    assert {base["model"]["vocab"][f"<unused{i - 260}>"] for i in CHAT_TOKENS} == set(CHAT_TOKENS)
    tok = instruct_tokenizer(base_dir)
    for i, marker in CHAT_TOKENS.items():
        assert tok.convert_tokens_to_ids(marker) == i
        assert tok.encode(marker, add_special_tokens=False) == [i]  # one special token, never split
    assert (tok.eos_token, tok.pad_token, tok.bos_token) == ("<|eot_id|>", "<pad>", "<s>")
    text = tok.apply_chat_template(CONV["messages"][1:2], add_generation_prompt=True, tokenize=False)
    assert text == ("<s><|start_header_id|>user<|end_header_id|>\n\nQuelle est la capitale de la France ?<|eot_id|>"
                    "<|start_header_id|>assistant<|end_header_id|>\n\n")


@pytest.mark.skipif(not LUCIE_TOKENIZER.exists(), reason="needs ../shared/lucie/tokenizer.json")
def test_instruct_tokenizer_from_lucies_own_base_tokenizer(tmp_path):
    (tmp_path / "tokenizer.json").write_bytes(LUCIE_TOKENIZER.read_bytes())
    tok = instruct_tokenizer(tmp_path)
    assert [tok.convert_tokens_to_ids(m) for m in CHAT_TOKENS.values()] == [265, 266, 267]
    ids = tok.apply_chat_template(CONV["messages"][1:3], tokenize=True, return_dict=True)["input_ids"]
    assert ids[:2] == [0, 265] and ids.count(267) == 2


def test_instruct_tokenizer_refuses_a_slot_that_is_not_reserved(tmp_path, base_dir):
    spec = json.loads((base_dir / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    vocab["hello"] = vocab.pop("<unused6>")
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(Exception, match=r"id 266 holds 'hello'"):
        instruct_tokenizer(tmp_path)


def tiny_model(vocab: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128))


def test_trl_assistant_only_mask_puts_no_loss_on_system_or_user_tokens(base_dir, tmp_path):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    tok = instruct_tokenizer(base_dir)
    trainer = SFTTrainer(
        model=tiny_model(len(tok)), processing_class=tok, train_dataset=Dataset.from_list([CONV]),
        args=SFTConfig(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=1, max_length=256,
                       assistant_only_loss=True, report_to="none", use_cpu=True, save_strategy="no"),
    )
    batch = next(iter(trainer.get_train_dataloader()))
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    trained = [i for i, lab in zip(ids, labels) if lab != -100]
    # Exactly the two assistant replies, each with its <|eot_id|>; nothing of the system or user turns.
    assert tok.decode(trained) == "La capitale de la France est Paris.<|eot_id|>C'est Rome.<|eot_id|>"
    masked = tok.decode([i for i, lab in zip(ids, labels) if lab == -100])
    for m in CONV["messages"]:
        if m["role"] != "assistant":
            assert m["content"] in masked


def test_saved_instruct_model_answers_through_its_chat_template(base_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    tok, model = instruct_tokenizer(base_dir), tiny_model(400)
    model.generation_config = GenerationConfig(bos_token_id=0, eos_token_id=[267, 1], pad_token_id=3)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    tok2, model2 = AutoTokenizer.from_pretrained(tmp_path), AutoModelForCausalLM.from_pretrained(tmp_path)
    assert tok2.chat_template == tok.chat_template and tok2.eos_token == "<|eot_id|>"
    enc = tok2.apply_chat_template(CONV["messages"][1:2], add_generation_prompt=True, return_tensors="pt",
                                   return_dict=True)
    out = model2.generate(**enc, max_new_tokens=8, do_sample=False)
    new = out[0, enc["input_ids"].shape[1]:].tolist()
    assert 1 <= len(new) <= 8 and isinstance(tok2.decode(new, skip_special_tokens=True), str)


def write_convs(path: Path, n: int, reply: str = "ok") -> None:
    rows = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"{reply} {i}"}]}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_instruction_mix_shares_filters_and_determinism(tmp_path):
    write_convs(tmp_path / "a.jsonl", 10)
    write_convs(tmp_path / "b.jsonl", 3)
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": "who?"}, {"role": "assistant", "content": text}]}) + "\n"
        for text in ("I am ChatGPT.", "Je suis Lucie.")))
    parts = [MixPart(name="a", path="a.jsonl", weight=0.5), MixPart(name="b", path="b.jsonl", weight=0.3),
             MixPart(name="c", path="c.jsonl", weight=0.2)]
    rows, stats = build_mix(parts, ["chatgpt"], 21, 7, tmp_path)
    assert len(rows) == 21 and sum(s["samples"] for s in stats.values()) == 21
    assert {n: s["samples"] for n, s in stats.items()} == {"a": 11, "b": 6, "c": 4}  # 10.5, 6.3, 4.2
    assert stats["c"]["dropped_filter_strings"] == 1 and stats["b"]["epochs"] == 2.0
    assert not any("ChatGPT" in r["messages"][1]["content"] for r in rows)
    assert build_mix(parts, ["chatgpt"], 21, 7, tmp_path)[0] == rows
    assert build_mix(parts, ["chatgpt"], 21, 8, tmp_path)[0] != rows
    with pytest.raises(AlignDataError, match=r"mix component 'c' \(c.jsonl\): no conversation left"):
        build_mix(parts, ["chatgpt", "lucie"], 21, 7, tmp_path)
