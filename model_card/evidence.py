"""The evidence record: what a release contains, under which license, and whether we checked it.

One item per component (MOF component names). `verified` means the file is present in the
release and its sha256 equals the one recorded in release/MANIFEST.json, which the release
stage wrote from the DVC-tracked lineage (dvc.lock + git commit). `claimed` items rest on
metadata alone. No framework evaluator reads files: they read this record only.

Record (JSON): {"source": path, "components": [{"component", "type", "released", "location",
"license", "verified", "sha256", "note"}], "lineage": {...}}
"""
from __future__ import annotations

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


def _sha256(path: Path) -> str:
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


def collect_release(release: Path) -> Evidence:
    """Evidence from a release/ tree written by the release stage."""
    release = Path(release)
    manifest = json.loads((release / "MANIFEST.json").read_text()) if (release / "MANIFEST.json").exists() else {}
    recorded: dict = manifest.get("files", {})
    ev = Evidence(source=str(release), lineage=manifest.get("lineage", {}))

    def item(component, ctype, rel, license, note=""):
        path = release / rel if rel else None
        if path is None or not path.exists():
            return Item(component, ctype, released=False, note=note or f"{rel} not in the release")
        digest = _sha256(path)
        ok = recorded.get(rel) == digest
        why = note or ("sha256 matches the release manifest" if ok else "sha256 differs from the release manifest"
                       if rel in recorded else "not listed in the release manifest")
        return Item(component, ctype, True, rel, license, ok, digest, why)

    model_lic = card_yaml(release / "model" / "README.md").get("license")
    data_lic = card_yaml(release / "dataset" / "README.md").get("license")
    code = json.loads((release / "code" / "code.json").read_text()) if (release / "code" / "code.json").exists() else {}
    archive = f"code/{code['archive']}" if code.get("archive") else None
    code_lic = code.get("license")
    ev.components = [
        item("Model parameters (Final)", "data", "model/model.safetensors", model_lic),
        item("Model architecture", "code", archive, code_lic, "" if archive else "no source archive"),
        item("Training code", "code", archive, code_lic, "" if archive else "no source archive"),
        item("Inference code", "code", archive, code_lic, "" if archive else "no source archive"),
        item("Data preprocessing code", "code", archive, code_lic, "" if archive else "no source archive"),
        item("Evaluation code", "code", archive, code_lic, "" if archive else "no source archive"),
        item("Datasets", "data", _first(release, "dataset/data"), data_lic),
        item("Model card", "document", "model/README.md", model_lic),
        item("Data card", "document", "dataset/README.md", data_lic),
        item("Evaluation results", "document", "model/eval_results.json", model_lic),
    ]
    if code:
        ev.lineage.setdefault("code", {k: code[k] for k in ("repository", "commit") if k in code})
    return ev


def _first(release: Path, sub: str) -> str | None:
    files = sorted((release / sub).rglob("*.parquet")) if (release / sub).exists() else []
    return str(files[0].relative_to(release)) if files else None
