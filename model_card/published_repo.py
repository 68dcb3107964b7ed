"""Evidence from one published Hub repository of our release (model, instruct or dataset).

Auditors check what is on the Hub, not our local release/. Each repository the publish stage writes carries
`release_manifest.json` (the release's MANIFEST: every file's sha256 and the pipeline lineage) and the
release card `openness/openness.json`. That is enough to audit the repo on its own:

- its files are mapped to their release paths (the model repo's root is release/model/ and its code/ is
  release/code/; instruct -> release/instruct/, dataset -> release/dataset/; the subtree is the one most
  of the files match) and hashed: a file whose sha256 equals the manifest's is *verified*;
- components whose files live in another repository of the release (the dataset seen from the model repo,
  the code archive seen from the dataset repo...) are *claimed*, with the reason: listed in
  release_manifest.json with their sha256, published in the other repository, not in this snapshot. The
  frameworks count claims, so the verdicts equal the release card's;
- licenses and the documentation facts (model_card.doc_facts) come from the release card; a fact whose
  source document is in this snapshot is checked again, and the check wins;
- warnings: a file of the repo whose sha256 differs from the manifest or is not listed in it (the Hub's own
  .gitattributes aside), and a card whose lineage is not the manifest's. A Git LFS pointer (what an hf://
  read leaves for LFS files) is compared by the sha256 it names and stays claimed: its content was not read.
"""
from __future__ import annotations

from pathlib import Path

from . import doc_facts, safe_read
from .evidence import Evidence, Item, sha256_file, card_yaml
from .hf_snapshot import lfs_oid

MANIFEST = "release_manifest.json"
CARD = "openness/openness.json"
SUBTREES = ("model", "instruct", "dataset")
HIDDEN = (".git", ".cache", ".huggingface")


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if not any(part in HIDDEN for part in p.relative_to(root).parts)
                  and safe_read.is_file(p))


def release_path(sub: str, rel: str) -> str:
    return rel if sub == "model" and rel.startswith("code/") else f"{sub}/{rel}"


def collect(root: Path, label: str) -> Evidence:
    manifest = safe_read.load_json(root / MANIFEST)
    card = safe_read.load_json(root / CARD)
    recorded: dict = manifest.get("files", {})
    files = [f for f in _files(root) if f not in (MANIFEST, ".gitattributes") and not f.startswith("openness/")]
    # A Git LFS pointer (an hf:// read never downloads LFS files) stands for its content by the sha256 it names.
    pointers = {f: oid for f in files if (oid := lfs_oid(root / f))}
    digests = {f: pointers.get(f) or sha256_file(root / f) for f in files}
    matches = {sub: sum(recorded.get(release_path(sub, f)) == d for f, d in digests.items()) for sub in SUBTREES}
    sub = max(SUBTREES, key=lambda s: (matches[s], -SUBTREES.index(s)))
    local = {release_path(sub, f): d for f, d in digests.items()}
    local_names = {release_path(sub, f): f for f in files}
    warnings = [f"{f}: sha256 differs from {MANIFEST}" for f in files
                if release_path(sub, f) in recorded and recorded[release_path(sub, f)] != digests[f]]
    warnings += [f"{f}: not listed in {MANIFEST}" for f in files if release_path(sub, f) not in recorded]
    card_ev = card.get("evidence", {})
    if card_ev.get("lineage", {}).get("stages") != manifest.get("lineage", {}).get("stages"):
        warnings.append(f"{CARD} records another lineage than {MANIFEST}")

    components = []
    for c in card_ev.get("components", []):
        loc = c.get("location")
        base = dict(component=c["component"], type=c["type"], license=c.get("license"))
        if not c.get("released"):
            components.append(Item(**base, released=False, note=c.get("note", "")))
        elif loc in local and local_names[loc] in pointers:
            ok = recorded.get(loc) == local[loc]
            components.append(Item(**base, released=True, location=loc, note=(
                f"Git LFS pointer in this repository: the sha256 it names {'matches' if ok else 'differs from'} "
                f"{MANIFEST}; content not downloaded")))
        elif loc in local:
            ok = recorded.get(loc) == local[loc]
            components.append(Item(**base, released=True, location=loc, verified=ok and c.get("verified", False),
                                   sha256=local[loc], note=f"in this repository; sha256 {'matches' if ok else 'differs from'} "
                                   f"{MANIFEST}" + ("" if c.get("verified", True) else f" ({c.get('note')})")))
        elif loc in recorded:
            where = loc.split("/", 1)[0]
            components.append(Item(**base, released=True, location=loc, note=(
                f"listed in {MANIFEST} (sha256 {recorded[loc][:16]}…) and published in the {where} part of the release "
                "(another repository or branch); not in this snapshot")))
        else:
            components.append(Item(**base, released=True, location=loc,
                                   note=f"released according to the release card ({CARD}) only; not in this snapshot"))

    lineage = dict(manifest.get("lineage", {}))
    facts = dict(card_ev.get("lineage", {}).get("facts", {}))
    readme = root / "README.md"
    if sub in ("model",) and readme.is_file() and "modelcard" in facts:
        facts["modelcard"] = doc_facts.modelcard(safe_read.read_text(readme), f"{sub}/README.md",
                                                 bool(card_yaml(readme).get("base_model")))
    lineage["facts"] = facts
    lineage["published_repo"] = {"subtree": sub, "files": len(files), "verified_files": matches[sub],
                                 "claimed_from": [CARD, MANIFEST]}
    if warnings:
        lineage["warnings"] = warnings
    ev = Evidence(source=label, components=components, lineage=lineage, kind="published-repo")
    ev.reproduction = card_ev.get("reproduction", ev.reproduction)
    return ev
