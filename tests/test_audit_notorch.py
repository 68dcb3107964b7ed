"""`lucie audit` needs only the core install: it must never import torch or transformers, and every
third-party module it imports must come from the core dependencies of pyproject.toml (what
`pip install lucie-repro` without the `pipeline` extra brings), not from the pipeline extra."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from test_audit_inputs import MOT_DATA, llama_like_snapshot, lucie_like_snapshot
from test_openness import release_tree

PROJECT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "datasets", "accelerate", "trl", "safetensors", "pyarrow", "dvc", "prefect",
         "mlflow", "datatrove", "lm_eval", "tokenizers", "stages", "flows")

# Runs in a fresh interpreter: audit every input in every format, then report what got imported.
SCRIPT = r"""
import json, sys
before = set(sys.modules)  # what the interpreter and site (.pth files) import before anything of ours
from typer.testing import CliRunner
from lucie.cli import app

runner = CliRunner()
codes = []
for path in sys.argv[1:]:
    for fmt in ("json", "md", "html", "svg"):
        res = runner.invoke(app, ["audit", path, "--format", fmt, "--require", "mof-class=1"])
        codes.append([path, fmt, res.exit_code, res.stderr[-300:]])
new = sorted(set(sys.modules) - before)
print(json.dumps({"codes": codes, "modules": new}))
"""


def core_closure() -> set[str]:
    """Distribution names reachable from pyproject's core `dependencies` (no extras), canonicalised."""
    deps = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]["dependencies"]
    todo, seen = [Requirement(d) for d in deps], set()
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        seen.add(name)
        for sub in metadata.requires(req.name) or []:
            r = Requirement(sub)
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                todo.append(r)
    return seen


def test_audit_imports_no_torch_and_only_core_dependencies(tmp_path):
    inputs = [release_tree(tmp_path), lucie_like_snapshot(tmp_path / "snap"), llama_like_snapshot(tmp_path / "llama")]
    inputs += sorted(MOT_DATA.glob("Class1*.yml"))[:1]
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    res = subprocess.run([sys.executable, "-c", SCRIPT, *map(str, inputs)], capture_output=True, text=True,
                         cwd=tmp_path, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    for path, fmt, code, err in out["codes"]:  # 0 or 1 (mof-class=1 may fail); never a crash or usage error
        assert code in (0, 1), f"{path} --format {fmt}: exit {code}\n{err}"
    assert len(out["codes"]) == 4 * len(inputs)

    top = sorted({m.split(".")[0] for m in out["modules"]})
    heavy = [m for m in HEAVY if m in top]
    assert heavy == [], f"lucie audit imported {heavy}"

    # Every imported third-party module belongs to a core dependency (or to this project).
    dists = metadata.packages_distributions()
    allowed = core_closure() | {"lucie-repro"}
    outside = {m: dists[m] for m in top if m in dists and not {canonicalize_name(d) for d in dists[m]} & allowed}
    assert outside == {}, f"imported from outside the core dependencies: {outside}"
