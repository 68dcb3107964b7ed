"""A throw-away repo for the pretraining tests: the project's params with a tiny model, a 320-token
tokenizer trained on the sample corpus and packed 32-token samples (real tokenizer + tokenize code,
so `inspect-batch` works on it too). Building it takes about a second.
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from repo_copy import PROJECT

# Small enough that a training step takes milliseconds; same family as Lucie (GQA, SwiGLU, untied).
MODEL = {"hidden_size": 32, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "max_position_embeddings": 64}
PRETRAIN = {"steps": 8, "micro_batch_size": 4, "global_batch_size": 8, "lr": 3.0e-3, "min_lr": 3.0e-4,
            "warmup_steps": 2, "checkpoint_every": 4, "export_every": 4, "threads": 1}


def base_params() -> dict:
    return yaml.safe_load((PROJECT / "params.yaml").read_text())


def with_overrides(raw: dict, overrides: dict) -> dict:
    raw = copy.deepcopy(raw)
    for key, value in overrides.items():
        *parents, last = key.split(".")
        node = raw
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = copy.deepcopy(value)
    return raw


def write_params(root: Path, overrides: dict | None = None, seq_len: int = 32) -> dict:
    raw = base_params()
    raw["tokenize"]["seq_len"] = seq_len
    raw["model"].update(MODEL)
    raw["pretrain"].update(PRETRAIN)
    raw["tracking"]["enabled"] = False
    raw = with_overrides(raw, overrides or {})
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return raw


def make_repo(root: Path, overrides: dict | None = None, seq_len: int = 32) -> Path:
    from tokenizers import Tokenizer

    from stages.tokenizer import save_hf, train

    root.mkdir(parents=True, exist_ok=True)
    write_params(root, overrides, seq_len)
    docs = []
    for lang in ("en", "fr"):
        for i, line in enumerate((PROJECT / f"data/sample/text/{lang}.jsonl").read_text().splitlines()):
            docs.append({"id": f"{lang}-{i}", "text": json.loads(line)["text"]})
    tok = train([d["text"] for d in docs], 320, 2)
    save_hf(tok, root / "artifacts/tokenizer")
    tok = Tokenizer.from_file(str(root / "artifacts/tokenizer/tokenizer.json"))
    for split, part in (("train", docs[8:]), ("valid", docs[:8])):
        write_tokens(root / "data/tokens" / split, part, tok, seq_len)
    return root


def write_tokens(out: Path, docs: list[dict], tok, seq_len: int) -> None:
    from stages.core import files
    from stages.tokenize import pack

    out.mkdir(parents=True)
    counts = pack(iter(docs), tok, seq_len, True, out)
    listed = [{"path": f, "sha256": files.sha256_file(out / f)} for f in ("tokens.bin", "index.parquet")]
    files.write_json(out / files.MANIFEST, {**counts, "files": listed})


def sample_docs(lang: str) -> list[dict]:
    return [{"id": f"{lang}-{i}", "text": json.loads(line)["text"]}
            for i, line in enumerate((PROJECT / f"data/sample/text/{lang}.jsonl").read_text().splitlines())]


def child_env(root: Path, **extra) -> dict:
    """The environment of a training subprocess: offline, one thread, the project importable."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": "1", "PYTHONPATH": str(PROJECT), "DVC_ROOT": str(root),
           "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    env.pop("LUCIE_PARAMS", None)
    env.update(extra)
    return env


def pretrain_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "stages.pretrain", *args]


def run(cmd: list[str], root: Path, env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)


def losses(root: Path) -> list[float]:
    lines = (root / "plots/pretrain_loss.csv").read_text().splitlines()
    col = lines[0].split(",").index("loss")
    return [float(line.split(",")[col]) for line in lines[1:]]
