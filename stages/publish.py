"""publish: push release/ to its target and read every file back.

Target `local` (the default, offline) lays the trees out exactly as the Hub repos would be:
  published/models/<org>/<name>/, published/models/<org>/<name>-instruct/,
  published/datasets/<org>/<name>-data/
Target `hub` uses the real HfApi (create_repo + upload_folder) and needs network and a token
from the environment or the HF login; offline it stops with a message saying so.

Either way, each published file is read back and its sha256 compared with release/MANIFEST.json
(Pythia's published branches once served the wrong weights); any mismatch fails the stage. The model
repo also receives the openness card (openness/) and the release manifest (release_manifest.json).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from . import io
from .runtime import StageContext, StageError, stage

RELEASE = "release"


def repos(p) -> dict[str, tuple[str, str]]:
    """release subtree -> (repo type, repo id)."""
    r = p.release
    return {"model": ("model", f"{r.organization}/{r.model_name}"),
            "instruct": ("model", f"{r.organization}/{r.model_name}-instruct"),
            "dataset": ("dataset", f"{r.organization}/{r.model_name}-data")}


def repo_files(release: Path, sub: str) -> dict[str, Path]:
    """What one Hub repo receives: path in the repo -> file in release/. The model repo also carries
    the openness card and the release manifest, so the rating travels with the weights it rates."""
    files = {str(f.relative_to(release / sub)): f for f in sorted((release / sub).rglob("*")) if f.is_file()}
    if sub == "model":
        files.update({f"openness/{f.name}": f for f in sorted((release / "openness").iterdir()) if f.is_file()})
        files["release_manifest.json"] = release / "MANIFEST.json"
    return files


def stage_tree(release: Path, sub: str, dest: Path) -> None:
    for rel, src in repo_files(release, sub).items():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)


def publish_local(release: Path, target: Path, plan: dict) -> dict[str, Path]:
    out = {}
    for sub, (rtype, repo_id) in plan.items():
        dest = target / f"{rtype}s" / repo_id
        with io.atomic_dir(dest) as tmp:
            stage_tree(release, sub, tmp)
        out[sub] = dest
    return out


def publish_hub(release: Path, plan: dict, private: bool) -> dict[str, Path]:
    import tempfile

    from huggingface_hub import HfApi, snapshot_download

    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise StageError("target 'hub' needs the Hugging Face Hub, but HF_HUB_OFFLINE=1 is set "
                         "(this machine is offline). Use publish.target: local, or run where the Hub is reachable.")
    api = HfApi()
    out = {}
    for sub, (rtype, repo_id) in plan.items():
        api.create_repo(repo_id, repo_type=rtype, private=private, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            stage_tree(release, sub, Path(tmp))
            api.upload_folder(folder_path=tmp, repo_id=repo_id, repo_type=rtype, commit_message="lucie-repro release")
        out[sub] = Path(snapshot_download(repo_id, repo_type=rtype))
    return out


def verify(release: Path, published: dict[str, Path]) -> dict:
    """Read every published file back. Files listed in the release manifest must match it (the
    lineage); the card and manifest copies must match their release originals."""
    manifest = io.read_json(release / "MANIFEST.json")["files"]
    report = {}
    for sub, dest in published.items():
        expected = {rel: manifest.get(f"{sub}/{rel}") or io.sha256_file(src) for rel, src in repo_files(release, sub).items()}
        bad = [rel for rel, sha in sorted(expected.items())
               if not (dest / rel).exists() or io.sha256_file(dest / rel) != sha]
        report[sub] = {"files": len(expected), "mismatched": bad,
                       "bytes": sum((dest / rel).stat().st_size for rel in expected if (dest / rel).exists())}
    return report


def run(ctx: StageContext) -> None:
    p = ctx.params
    release = ctx.path(RELEASE)
    plan = repos(p)
    if p.publish.target == "local":
        published = publish_local(release, ctx.path(p.publish.local_dir), plan)
    else:
        published = publish_hub(release, plan, p.publish.private)
    report = verify(release, published)
    bad = {k: v["mismatched"] or "no files" for k, v in report.items() if v["mismatched"] or not v["files"]}
    ctx.write_metrics("metrics/publish.json", {"target": p.publish.target, "repos": {
        sub: {"repo_id": plan[sub][1], "type": plan[sub][0], **report[sub]} for sub in plan}})
    if bad:
        raise StageError(f"read-back sha256 mismatch: {bad}")
    ctx.summary(f"{sum(v['files'] for v in report.values())} files to {len(plan)} repos ({p.publish.target}), "
                f"all read back with matching sha256")


def main() -> None:
    with stage("publish") as ctx:
        run(ctx)


if __name__ == "__main__":
    main()
