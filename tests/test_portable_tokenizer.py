"""Released tokenizers load in transformers 4.4x and 5.x (stages/lib/portable_tokenizer.py), with the context length.

Built with the project's own tokenizer and align code in a temp dir. transformers 5 (the venv's) loads the
rewritten files in-process; the file check (`problems`) encodes what transformers 4.x needs (it refuses
`TokenizersBackend`, measured with 4.57.1). With LUCIE_TRANSFORMERS4_PYTHON pointing at a Python that has
transformers 4.4x + jinja2 (e.g. `python3.11 -m venv /tmp/tf4 && /tmp/tf4/bin/pip install transformers==4.57.1
jinja2`), the same files are loaded there too and must tokenize exactly as in 5.x.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stages.lib import portable_tokenizer as pt

WORDS = "le chat dort sur le tapis rouge the quick brown fox jumps over the lazy dog der Hund el perro".split()
CONV = [{"role": "user", "content": "Bonjour le chat"}, {"role": "assistant", "content": "the lazy dog"}]
PROBE = r"""
import json, sys
from transformers import AutoTokenizer
import transformers
conv = json.loads(sys.argv[1])
out = {}
for d in sys.argv[2:]:
    t = AutoTokenizer.from_pretrained(d)
    out[d] = {"major": int(transformers.__version__.split(".")[0]), "max": t.model_max_length,
              "plain": t("Bonjour le chat")["input_ids"], "bos_id": t.bos_token_id, "eos": t.eos_token,
              "chat_text": t.apply_chat_template(conv, tokenize=False) if t.chat_template else None,
              "chat_ids": list(t.apply_chat_template(conv, tokenize=True, return_dict=False)) if t.chat_template else None}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    from stages import align, tokenizer as tk

    root = tmp_path_factory.mktemp("tok")
    base = root / "model"
    base.mkdir()
    tk.save_hf(tk.train([" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))] * 5, 400, 1), base)
    instruct = root / "instruct"
    align.instruct_tokenizer(base).save_pretrained(str(instruct))
    for d in (base, instruct):
        (d / "config.json").write_text(json.dumps({"model_type": "llama", "max_position_embeddings": 256}))
    return {"model": base, "instruct": instruct}


def probe(python: str, trees: dict[str, Path]) -> dict[str, dict]:
    """What `python`'s transformers loads from each tree, all in one fresh interpreter (no state carried over
    from this one)."""
    proc = subprocess.run([python, "-c", PROBE, json.dumps(CONV), *map(str, trees.values())], capture_output=True,
                          text=True, env={**os.environ, "TRANSFORMERS_VERBOSITY": "error"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    return {key: got[str(d)] for key, d in trees.items()}


def test_as_transformers_5_writes_it_4x_cannot_load(trees):
    for d in trees.values():
        cfg = json.loads((d / pt.CONFIG).read_text())
        assert cfg["tokenizer_class"] == "TokenizersBackend" and cfg["model_max_length"] > 1e29
        assert any("TokenizersBackend" in p for p in pt.problems(d))


def test_made_portable_loads_the_same_with_the_context_length(trees, tmp_path):
    befores = probe(sys.executable, trees)
    for d in trees.values():
        pt.make_portable(d)
    afters = probe(sys.executable, trees)
    for key, d in trees.items():
        before, after = befores[key], afters[key]
        assert pt.problems(d) == []
        cfg = json.loads((d / pt.CONFIG).read_text())
        assert (cfg["tokenizer_class"], cfg["model_max_length"]) == ("PreTrainedTokenizerFast", 256)
        assert after["max"] == 256 and {**after, "max": None} == {**before, "max": None}, key
        # both tokenizers add <s> to plain text; a chat starts with exactly one <s> (the template writes it)
        assert after["plain"][0] == after["bos_id"]
        if key == "instruct":
            assert after["chat_ids"].count(after["bos_id"]) == 1 and after["chat_ids"][0] == after["bos_id"]
            assert after["eos"] == "<|eot_id|>"


def test_context_length_must_be_in_config(trees, tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    (d / pt.CONFIG).write_text("{}")
    (d / "config.json").write_text("{}")
    with pytest.raises(pt.TokenizerConfigError, match="config.json: max_position_embeddings"):
        pt.make_portable(d)


@pytest.mark.skipif(not os.environ.get("LUCIE_TRANSFORMERS4_PYTHON"),
                    reason="set LUCIE_TRANSFORMERS4_PYTHON to a Python with transformers 4.4x + jinja2")
def test_transformers_4_loads_released_tokenizers_like_5(trees):
    for d in trees.values():
        pt.make_portable(d)
    fours, fives = probe(os.environ["LUCIE_TRANSFORMERS4_PYTHON"], trees), probe(sys.executable, trees)
    for key in trees:
        v4, v5 = fours[key], fives[key]
        assert v4["major"] == 4 and v5["major"] == 5
        assert {**v4, "major": 0} == {**v5, "major": 0}, key
