"""The evidence record: what a release contains, under which license, and whether we checked it.

One item per component (MOF component names). `verified` means the file is present in the
release and its sha256 equals the one recorded in release/MANIFEST.json, which the release
stage wrote from the DVC-tracked lineage (dvc.lock + git commit). `claimed` items rest on
metadata alone. No framework evaluator reads files: they read this record only.

Record (JSON): {"source": path, "components": [{"component", "type", "released", "location",
"license", "verified", "sha256", "note"}], "lineage": {...}}
"""
from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml


@dataclass
class Item:
    component: str
    type: str  # code | data | document  (MOF content types)
    released: bool
    location: str | None = None
    license: str | None = None
    verified: bool = False
    sha256: str | None = None
    note: str = ""


@dataclass
class Evidence:
    source: str
    components: list[Item] = field(default_factory=list)
    lineage: dict = field(default_factory=dict)

    def get(self, component: str) -> Item | None:
        return next((c for c in self.components if c.component == component), None)

    def to_dict(self) -> dict:
        return {"source": self.source, "components": [asdict(c) for c in self.components], "lineage": self.lineage}


def _sha256(path: Path) -> str:  # model_card must not import stages (auditors install no pipeline deps)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(1 << 20):
            h.update(b)
    return h.hexdigest()


def card_yaml(readme: Path) -> dict:
    """The YAML front matter of an HF card (empty when absent)."""
    if not readme.exists():
        return {}
    text = readme.read_text(encoding="utf-8")
    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    if end < 0:
        return {}
    return yaml.safe_load(text[3:end]) or {}


def collect_release(release: Path, label: str | None = None) -> Evidence:
    """Evidence from a release/ tree written by the release stage; `label` names it in the record
    (default: the path as given), so the same tree gives the same record wherever it is read from."""
    release = Path(release)
    manifest = json.loads((release / "MANIFEST.json").read_text()) if (release / "MANIFEST.json").exists() else {}
    recorded: dict = manifest.get("files", {})
    ev = Evidence(source=label or str(release), lineage=manifest.get("lineage", {}))

    @functools.cache
    def digest(rel: str) -> str:  # the five code components share one archive: hash each file once
        return _sha256(release / rel)

    def item(component, ctype, rel, license, note="", members=None):
        """One component; `members` (all its files) must all match the manifest for it to be verified."""
        path = release / rel if rel else None
        if path is None or not path.exists():
            return Item(component, ctype, released=False, note=note or f"{rel} not in the release")
        files = members or [rel]
        bad = [f for f in files if recorded.get(f) != digest(f)]
        ok = not bad and not note
        why = note or ("sha256 matches the release manifest" + (f" ({len(files)} files)" if members else "")
                       if not bad else f"{len(bad)} of {len(files)} files: sha256 differs from the release manifest or is not listed")
        return Item(component, ctype, True, rel, license, ok, digest(rel), why)

    model_lic = card_yaml(release / "model" / "README.md").get("license")
    data_lic = card_yaml(release / "dataset" / "README.md").get("license")
    code = json.loads((release / "code" / "code.json").read_text()) if (release / "code" / "code.json").exists() else {}
    archive = f"code/{code['archive']}" if code.get("archive") else None
    code_lic = code.get("license")
    # Code from a modified worktree is not the archived commit: released, but only claimed.
    code_note = "no source archive" if not archive else (
        "built from a modified worktree: the archive is not the code that ran" if code.get("dirty_worktree") else "")
    def files(sub: str, pattern: str) -> list[str]:
        return sorted(str(f.relative_to(release)) for f in (release / sub).rglob(pattern)) if (release / sub).exists() else []

    data_files, eval_files, samples = files("dataset/data", "*.parquet"), files("dataset/eval", "*.jsonl"), \
        files("model/eval_samples", "*.jsonl")
    ev.components = [
        item("Model parameters (Final)", "data", "model/model.safetensors", model_lic),
        *(item(c, "code", archive, code_lic, code_note) for c in
          ("Model architecture", "Training code", "Inference code", "Data preprocessing code", "Evaluation code")),
        item("Datasets", "data", data_files[0] if data_files else None, data_lic, members=data_files),
        item("Model card", "document", "model/README.md", model_lic),
        item("Data card", "document", "dataset/README.md", data_lic),
        item("Evaluation results", "document", "model/eval_results.json", model_lic),
        item("Technical report", "document", "model/technical_report.md", model_lic),
        item("Evaluation data", "data", eval_files[0] if eval_files else None, data_lic, members=eval_files),
        item("Sample model outputs", "document", samples[0] if samples else None, model_lic, members=samples),
        item("Model metadata", "data", "model/config.json", model_lic),
    ]
    if code:
        ev.lineage.setdefault("code", {k: code[k] for k in ("repository", "commit") if k in code})
    return ev
