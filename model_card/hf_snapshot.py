"""Evidence from a Hugging Face model snapshot (a directory as `snapshot_download` leaves it).

An auditor points `lucie audit` at any downloaded model, not only at ours. What such a directory
can prove is less than our release: its files are *present* (hashed here), but nothing traces them
to a training run (no dvc.lock, no manifest), so nothing is *verified*. What only the card's YAML
front matter says (the training datasets, a paper, the license of it all) is *claimed*.

Reading rules (docs/AUDIT.md "Hugging Face snapshot"):
- License: `license`, or `license_name` when `license: other` (e.g. `llama3`); without metadata, the
  license a LICENSE/LICENCE/COPYING file identifies itself as (a few well-known headers), else none.
  A LICENSE file that reads as another license than the metadata is reported as a warning.
  The snapshot's license covers every component found in it; a code file's own
  `SPDX-License-Identifier` header wins for that file. Named datasets and papers carry no license
  here (theirs is not in the snapshot), so the frameworks count them as unlicensed.
- Components from file names (first matching rule wins, rules in `RULES`), plus: the architecture
  named in config.json (its code lives in the library, so *claimed*); `datasets:` entries (claimed
  Datasets); `arxiv:` tags (claimed Research paper); a `model-index` (Evaluation results, in README.md).
- A weight file that is a Git LFS pointer (content never downloaded) is not present: claimed.
- Links to code repositories in the README body are kept in `lineage.code_references`: a link
  does not say what the code is nor its license, so it is not a component.
"""
from __future__ import annotations

import re
from datetime import date, datetime
from pathlib import Path

from . import card_claims, doc_facts, safe_read
from .evidence import Evidence, Item, sha256_file, card_yaml
from .licenses import spdx_id
from .mof import COMPONENTS

HIDDEN = (".git", ".cache", ".huggingface")
LICENSE_FILE = re.compile(r"^(licen[cs]e|copying|use[_-]?policy|notice)([._-].*)?$", re.IGNORECASE)
LFS_POINTER = b"version https://git-lfs.github.com/spec/"
WEIGHT_SUFFIXES = {".safetensors", ".bin", ".gguf", ".pt", ".pth", ".ckpt", ".msgpack", ".h5", ".onnx"}
# Trainer state is metadata, not parameters, whatever its suffix.
TRAINING_STATE = re.compile(r"(^|/)(training_args\.bin|optimizer\.(pt|bin)|scheduler\.pt|rng_state[^/]*\.pth|"
                            r"(trainer|training)_state\.json)$")
CHECKPOINT_DIR = re.compile(r"(^|/)(checkpoint|ckpt|step|iter)[-_]?\d+/")
CODE_SUFFIXES = {".py", ".sh", ".ipynb"}

# (component, pattern on the lower-case relative path, suffixes or None for any). First match wins.
RULES: tuple[tuple[str, str, frozenset | None], ...] = (
    ("Model architecture", r"(^|/)(modeling|configuration)_[^/]*$|(^|/)model\.py$", frozenset({".py"})),
    ("Supporting libraries and tools", r"(^|/)tokeni[sz]ation_[^/]*$", frozenset({".py"})),
    ("Data preprocessing code", r"preprocess|prepare|dedup|filter|(^|/)data[^/]*/", frozenset(CODE_SUFFIXES)),
    ("Training code", r"train|finetun|fine_tun|sft|dpo|rlhf", frozenset(CODE_SUFFIXES)),
    ("Evaluation code", r"eval|bench", frozenset(CODE_SUFFIXES)),
    ("Inference code", r"infer|generat|predict|handler|chat|serve", frozenset(CODE_SUFFIXES)),
    ("Technical report", r"tech[^/]*report|(^|/)report[^/]*$", frozenset({".md", ".pdf", ".tex", ".html"})),
    ("Research paper", r"paper|preprint|arxiv", frozenset({".pdf", ".tex"})),
    ("Data card", r"datasheet|data[_-]?card|dataset[_-]?card", frozenset({".md", ".pdf", ".txt"})),
    ("Evaluation results", r"eval[^/]*result|(^|/)results?[^/]*\.json$", frozenset({".json", ".md", ".csv"})),
    ("Sample model outputs", r"sample|generations?[^/]*\.jsonl?$", frozenset({".json", ".jsonl", ".txt", ".md"})),
    ("Evaluation data", r"eval", frozenset({".jsonl", ".parquet", ".csv", ".arrow"})),
    ("Datasets", r"(^|/)(data|dataset)s?/", frozenset({".jsonl", ".parquet", ".csv", ".arrow", ".txt"})),
)
TYPES = {"Model architecture": "code", "Supporting libraries and tools": "code", "Data preprocessing code": "code",
         "Training code": "code", "Evaluation code": "code", "Inference code": "code",
         "Model parameters (Final)": "data", "Model parameters (Intermediate)": "data", "Datasets": "data",
         "Evaluation data": "data", "Model metadata": "data", "Model card": "document", "Data card": "document",
         "Technical report": "document", "Research paper": "document", "Evaluation results": "document",
         "Sample model outputs": "document"}

# A few license headers, normalised to lower case and single spaces. The id is the SPDX id, or the
# Hub's license id where SPDX has none (llama3, gemma...). Unknown text -> None (not guessed).
LICENSE_TEXTS: tuple[tuple[str, str], ...] = (
    (r"llama (\d(?:\.\d)?) community license", "llama{0}"),
    (r"gemma terms of use", "gemma"),
    (r"bigscience rail license|bigscience open rail", "bigscience-bloom-rail-1.0"),
    (r"openrail", "openrail"),
    (r"attribution-noncommercial-sharealike 4\.0", "CC-BY-NC-SA-4.0"),
    (r"attribution-noncommercial 4\.0", "CC-BY-NC-4.0"),
    (r"attribution-sharealike 4\.0", "CC-BY-SA-4.0"),
    (r"creative commons attribution 4\.0", "CC-BY-4.0"),
    (r"apache license,? version 2\.0", "Apache-2.0"),
    (r"permission is hereby granted, free of charge", "MIT"),
    (r"gnu general public license version 3", "GPL-3.0-or-later"),
)
CODE_LINK = re.compile(r"https?://(?:www\.)?(?:github\.com|gitlab\.com|codeberg\.org)/[\w.-]+/[\w.-]+", re.IGNORECASE)
SPDX_HEADER = re.compile(rb"SPDX-License-Identifier:\s*([\w.+-]+)")
ARXIV_TAG = re.compile(r"^arxiv:(\S+)$", re.IGNORECASE)
CARD_KEYS = ("license", "license_name", "license_link", "datasets", "base_model", "language", "library_name",
             "pipeline_tag", "tags")


class SnapshotError(ValueError):
    """A directory that is not a model snapshot."""


def identify_license_text(text: str) -> str | None:
    t = " ".join(text[:4000].lower().split())
    for pattern, lic in LICENSE_TEXTS:
        if m := re.search(pattern, t):
            return lic.format(*m.groups())
    return None


def _jsonable(value):
    """Card metadata into JSON types (YAML gives dates and may give numbers as names)."""
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)


def _as_list(value) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]


def card_license(meta: dict) -> str | None:
    """`license`, with `license: other` resolved to `license_name` (the Hub's convention)."""
    lic = meta.get("license")
    if isinstance(lic, (list, tuple)):  # several licenses: all apply, none is one SPDX id
        lic = " AND ".join(str(x) for x in lic) if lic else None
    lic = str(lic).strip() if lic not in (None, "") else None
    if lic and lic.lower() == "other":
        return str(meta.get("license_name") or "other").strip()
    return lic


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if not any(part in HIDDEN for part in p.relative_to(root).parts) and safe_read.is_file(p))


def lfs_oid(path: Path) -> str | None:
    """The sha256 a Git LFS pointer file names, or None when the file holds real content."""
    if safe_read.size(path) > 1024:
        return None
    head = safe_read.read_head(path, 1025)
    if not head.startswith(LFS_POINTER):
        return None
    m = re.search(rb"oid sha256:([0-9a-f]{64})", head)
    return m.group(1).decode() if m else "unknown"


def classify(rel: str) -> str | None:
    """The MOF component a snapshot file is evidence of, or None."""
    low = rel.lower()
    suffix = Path(low).suffix
    if TRAINING_STATE.search(low) or low in ("config.json", "generation_config.json") or \
            Path(low).name.startswith(("tokenizer", "special_tokens_map", "vocab.", "merges.")):
        return "Model metadata"
    if suffix in WEIGHT_SUFFIXES or re.search(r"\.(safetensors|bin)\.index\.json$", low):
        return "Model parameters (Intermediate)" if CHECKPOINT_DIR.search(low) else "Model parameters (Final)"
    if low == "readme.md":
        return "Model card"
    for component, pattern, suffixes in RULES:
        if (suffixes is None or suffix in suffixes) and re.search(pattern, low):
            return component
    return None


def resolve_root(path: Path) -> Path:
    """A Hub cache repo folder (models--org--name) stands for the snapshot its refs/main names."""
    ref = path / "refs" / "main"
    if ref.is_file() and (path / "snapshots").is_dir():
        snap = path / "snapshots" / safe_read.read_text(ref, 4096).strip()
        if snap.is_dir():
            return snap
    return path


def collect(path: Path, label: str | None = None, repo_id: str | None = None) -> Evidence:
    root = resolve_root(Path(path))
    if not root.is_dir() or not ((root / "README.md").is_file() or (root / "config.json").is_file()):
        raise SnapshotError(f"{path}: not a Hugging Face model snapshot (no README.md or config.json)")
    meta = card_yaml(root / "README.md")
    files = _files(root)
    warnings: list[str] = []

    # Files: hash each once; LFS pointers are recorded with the oid they name, not as content.
    record: dict[str, dict] = {}
    for rel in files:
        p = root / rel
        oid = lfs_oid(p)
        record[rel] = {"bytes": safe_read.size(p), **({"lfs_pointer_sha256": oid} if oid else {"sha256": sha256_file(p)})}

    license_files = {rel: identify_license_text(safe_read.read_text(root / rel, errors="replace"))
                     for rel in files if "/" not in rel and LICENSE_FILE.match(rel)}
    meta_lic = card_license(meta)
    file_lics = sorted({lic for lic in license_files.values() if lic})
    lic = meta_lic or (file_lics[0] if len(file_lics) == 1 else None)
    how = "card metadata" if meta_lic else ("the license file's text" if lic else "none found")
    for f_lic in file_lics:
        if meta_lic and (spdx_id(f_lic) or "").lower() != (spdx_id(meta_lic) or "").lower():
            warnings.append(f"a license file reads as {f_lic} but the card metadata says {meta_lic}")
    if not meta_lic and len(file_lics) > 1:
        warnings.append(f"license files read as {', '.join(file_lics)}; no single license taken")

    # Group the files by component.
    groups: dict[str, list[str]] = {}
    for rel in files:
        if (c := classify(rel)) is not None:
            groups.setdefault(c, []).append(rel)

    def file_license(rel: str) -> str | None:
        if Path(rel).suffix.lower() in CODE_SUFFIXES:
            with safe_read.open_binary(root / rel) as fh:
                if m := SPDX_HEADER.search(fh.read(4096)):
                    return m.group(1).decode()
        return lic

    def present(component: str, members: list[str]) -> Item:
        real = [r for r in members if "sha256" in record[r]]
        main = _main_file(component, real or members)
        n = f"{len(members)} files" if len(members) > 1 else main
        lics = sorted({str(file_license(r)) for r in members})
        item_lic = file_license(main)
        note = f"in the snapshot ({n}); not traced to a training run"
        if len(lics) > 1:
            note += f"; files under different licenses: {', '.join(lics)}"
        if not real:  # only LFS pointers: the content was never downloaded
            return Item(component, TYPES[component], True, main, item_lic, False, None,
                        f"Git LFS pointer only ({n}): content not downloaded; the pointer names sha256 "
                        f"{record[main]['lfs_pointer_sha256']}")
        if len(real) < len(members):
            note += f"; {len(members) - len(real)} of {len(members)} files are Git LFS pointers (not downloaded)"
        return Item(component, TYPES[component], True, main, item_lic, False, record[main]["sha256"], note)

    items: dict[str, Item] = {c: present(c, m) for c, m in groups.items()}

    # Claims from the metadata, for components no file stands for.
    config = _config(root)
    arch = _as_list(config.get("architectures"))
    if "Model architecture" not in items and arch:
        items["Model architecture"] = Item(
            "Model architecture", "code", True, f"config.json: {', '.join(arch)}", lic, False, None,
            f"architecture named in config.json (model_type {config.get('model_type', '?')}); its code is in the "
            f"library that implements it ({meta.get('library_name') or 'not named'}), not in the snapshot")
    datasets = _as_list(meta.get("datasets"))
    if datasets and "Datasets" not in items:
        items["Datasets"] = Item(
            "Datasets", "data", True, ", ".join(f"https://huggingface.co/datasets/{d}" for d in datasets), None,
            False, None, "named in the card metadata (datasets:); their license is not in the snapshot")
    papers = [m.group(1) for t in _as_list(meta.get("tags")) if (m := ARXIV_TAG.match(t.strip()))]
    if papers and "Research paper" not in items:
        items["Research paper"] = Item(
            "Research paper", "document", True, ", ".join(f"https://arxiv.org/abs/{a}" for a in papers), None,
            False, None, "named in the card metadata (arxiv: tag); its license is not in the snapshot")
    if meta.get("model-index") and "Evaluation results" not in items and "README.md" in record:
        items["Evaluation results"] = Item(
            "Evaluation results", "document", True, "README.md", lic, False, record["README.md"].get("sha256"),
            "model-index in the card metadata; not traced to an evaluation run")

    readme = root / "README.md"
    text = safe_read.read_text(readme, errors="replace") if readme.exists() else ""
    claims = card_claims.read(text, repo_id)
    facts = _card_facts(root, text, claims, groups, bool(meta.get("base_model")))
    if datasets and "Data card" not in items:
        items["Data card"] = Item("Data card", "document", True, items["Datasets"].location, None, False, None,
                                  "the card of each dataset named in the card metadata (not in the snapshot, not read)")
    for component, item in _claimed_items(claims, record.get("README.md", {}).get("sha256"), lic).items():
        if component not in items or (component == "Model parameters (Intermediate)" and not items[component].released):
            items[component] = item

    lineage = {
        "card": {k: _jsonable(meta[k]) for k in CARD_KEYS if k in meta},
        "card_claims": claims,
        "facts": facts,
        "license": {"id": lic, "from": how, "files": license_files},
        "files": record,
    }
    if meta.get("base_model"):
        base = _as_list(meta["base_model"])
        lineage["base_model"] = base[0] if len(base) == 1 else base
    # A link ending a sentence keeps its dot in the match; `.git` names the same repository.
    links = sorted({re.sub(r"(\.git)?\.*$", "", u) for u in CODE_LINK.findall(text)})
    if links:
        lineage["code_references"] = links
    for c in claims.get("use_restriction", []):  # a request in prose is not a license term: warned, not scored
        warnings.append(f"the card's prose restricts use beyond its license ({lic}): \"{c['source']}\"")
    if warnings:
        lineage["warnings"] = warnings
    components = [items[c] if c in items else Item(c, TYPES[c], False, note="not found in the snapshot")
                  for c in _mof_order()]
    return Evidence(source=label or str(path), components=components, lineage=lineage, kind="hf-snapshot")


def _claimed_items(claims: dict, readme_sha: str | None, lic: str | None) -> dict[str, Item]:
    """Components the card's prose states (model_card.card_claims), as *claimed* items citing the sentence.
    Linked code, papers and datasets carry no license here: theirs is not in the snapshot."""
    out: dict[str, Item] = {}

    def cite(kind: str) -> str:
        c = claims[kind][0]
        more = f" (and {len(claims[kind]) - 1} more)" if len(claims[kind]) > 1 else ""
        return f'the card states: "{c["source"]}"{more}'

    for kind in claims:
        if kind.startswith("code:"):
            comp = kind[5:]
            out[comp] = Item(comp, "code", True, claims[kind][0]["value"], None, False, None,
                             f"{cite(kind)}; the linked repository and its license are not in the snapshot")
    if "paper" in claims:
        ids = [c["value"] for c in claims["paper"]]
        loc = ", ".join(f"https://arxiv.org/abs/{v[6:]}" if v.startswith("arxiv:") else f"https://doi.org/{v[4:]}"
                        for v in ids)
        out["Research paper"] = Item("Research paper", "document", True, loc, None, False, None,
                                     f"{cite('paper')}; the paper and its license are not in the snapshot")
    if "dataset" in claims:
        loc = ", ".join(f"https://huggingface.co/datasets/{c['value']}" for c in claims["dataset"])
        out["Datasets"] = Item("Datasets", "data", True, loc, None, False, None,
                               f"{cite('dataset')}; the data and its license are not in the snapshot")
        out["Data card"] = Item("Data card", "document", True, loc, None, False, None,
                                "the card of the linked dataset repository (not in the snapshot, not read)")
    if "revision" in claims:
        revs = [c["value"] for c in claims["revision"]]
        out["Model parameters (Intermediate)"] = Item(
            "Model parameters (Intermediate)", "data", True, f"revisions {', '.join(revs[:3])}"
            f"{f' … ({len(revs)} in all)' if len(revs) > 3 else ''}", lic, False, None,
            f"{cite('revision')}; the checkpoints are not in the snapshot")
    if "evaluation" in claims and readme_sha:
        out["Evaluation results"] = Item("Evaluation results", "document", True, "README.md", lic, False, readme_sha,
                                         f"{cite('evaluation')}; not traced to an evaluation run")
    return out


TRAINING_SECTION = re.compile(r"train\w*\s+(?:procedure|details|hyper-?parameters|setup)|hyper-?parameters", re.I)


def _card_facts(root: Path, text: str, claims: dict, groups: dict, fine_tuned: bool) -> dict:
    """doc_facts checks on the documents the snapshot holds (card, technical report, datasheets)."""
    docs = {"README.md": text}
    for rel in groups.get("Technical report", []) + groups.get("Research paper", []):
        if rel.lower().endswith((".md", ".txt", ".tex")):
            docs[rel] = safe_read.read_text(root / rel, errors="replace")
    facts = {"modelcard": doc_facts.modelcard(text, "README.md", fine_tuned),
             "hardware_architecture": doc_facts.hardware(docs)}
    sheets = {rel: safe_read.read_text(root / rel, errors="replace")
              for rel in groups.get("Data card", []) if rel.lower().endswith((".md", ".txt"))}
    if sheets:
        facts["datasheet"] = doc_facts.datasheet(sheets)
    sections = [t for t, _ in card_claims.section_text(card_claims.strip(text), TRAINING_SECTION)]
    if sections:
        facts["training_procedure"] = f"README.md section '{sections[0]}'"
    if claims.get("peer_reviewed"):
        facts["peer_reviewed"] = claims["peer_reviewed"][0]["value"]
    return facts


def _mof_order() -> list[str]:
    return [name for _, name, _, _, _ in COMPONENTS]


def _main_file(component: str, members: list[str]) -> str:
    """The file a component's location points at: config.json for metadata, README.md for the card,
    else the shallowest file, by name (the first shard of sharded weights)."""
    preferred = {"Model metadata": ("config.json",), "Model card": ("README.md",)}.get(component, ())
    for name in preferred:
        if name in members:
            return name
    return sorted(members, key=lambda r: (r.count("/"), r))[0]


def _config(root: Path) -> dict:
    path = root / "config.json"
    if not path.is_file():
        return {}
    try:
        data = safe_read.load_json(path)
    except ValueError as err:
        raise SnapshotError(f"{path}: not valid JSON: {err}") from None
    return data if isinstance(data, dict) else {}
