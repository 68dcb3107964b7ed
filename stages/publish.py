"""publish: push release/ to its target and read every file back.

Three Hub repos receive the release, as Lucie published it: the base model, the instruct model and the
dataset. The model repo also carries the openness card, the release manifest and the source archive, so the
rating travels with the weights and code it rates, and each intermediate checkpoint in
release/checkpoints/<revision>/ becomes branch <revision> of the model repo (Lucie-style names such as
`step0000075`). Every release gets one git tag.

Before anything is published, three gates run (any failure refuses, nothing is pushed):
  lineage   every file's sha256 equals release/MANIFEST.json, which lists every file;
  card      release/openness/openness.json equals the card recomputed from the tree;
  require   the recomputed card meets `publish.require` (model_card.require grammar).

Target `local` (the DVC default, offline) lays the trees out as the Hub would:
  published/models/<org>/<name>/, published/models/<org>/<name>@<revision>/, published/datasets/<org>/<name>-data/
Target `hub` (the DVC stage with `target: hub`, or `lucie publish --yes`) uses the real HfApi: it compares
the local sha256 with the remote tree and commits only what changed (an unchanged release makes no commit),
creates missing branches and the tag, then downloads every file again at the pushed commit and compares
sha256 (Pythia's published branches once served the wrong weights). The token comes from HF_TOKEN or the
huggingface_hub login and is only ever handed to HfApi.
"""
from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from stages.core import files
from stages.lib.hub_client import (hub_api, hub_errors, offline, predicted_lfs, redact, remote_files, remote_refs,
                                   resolve_token, safe_endpoint, unchanged)
from stages.core.runtime import StageContext, StageError, stage

RELEASE = "release"
CHECKPOINTS = "checkpoints"
KEEP_REMOTE = {".gitattributes"}  # written by the Hub at repo creation; never deleted by a publish
REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class PublishError(StageError):
    """A gate refused, the remote disagrees, or the read-back found a wrong file."""


# ------------------------------------------------------------------ what goes where
def repos(p, model_repo: str | None = None, instruct_repo: str | None = None,
          dataset_repo: str | None = None) -> dict[str, tuple[str, str]]:
    """release subtree -> (repo type, repo id); explicit ids win over params, params over the defaults."""
    r, pub = p.release, p.publish
    model = model_repo or pub.model_repo or f"{r.organization}/{r.model_name}"
    return {"model": ("model", model),
            "instruct": ("model", instruct_repo or pub.instruct_repo or f"{model}-instruct"),
            "dataset": ("dataset", dataset_repo or pub.dataset_repo or f"{r.organization}/{r.model_name}-data")}


def _tree(root: Path) -> dict[str, Path]:
    return {f.relative_to(root).as_posix(): f for f in sorted(root.rglob("*")) if f.is_file()}


def repo_files(release: Path, sub: str) -> dict[str, Path]:
    """What one Hub repo's main branch receives: path in the repo -> file in release/."""
    files = _tree(release / sub)
    # Every repo carries the release card and manifest: audited alone, it rates as the release (model_card.published_repo).
    files.update({f"openness/{f.name}": f for f in sorted((release / "openness").iterdir()) if f.is_file()})
    files["release_manifest.json"] = release / "MANIFEST.json"
    if sub == "model":
        if (release / "code").is_dir():  # the source archive the card rates as released
            files.update({f"code/{k}": f for k, f in _tree(release / "code").items()})
        if (release / "paper").is_dir():  # release.paper (stages/lib/release_paper.py)
            files.update({f"paper/{k}": f for k, f in _tree(release / "paper").items()})
        if (release / "provenance").is_dir():  # the signed statement (stages/lib/provenance.py)
            files.update({f"provenance/{k}": f for k, f in _tree(release / "provenance").items()})
    return files


def checkpoint_revisions(release: Path) -> list[str]:
    """Intermediate checkpoints the release carries, one branch each; a name git would refuse is an error."""
    d = release / CHECKPOINTS
    names = sorted(c.name for c in d.iterdir() if c.is_dir()) if d.is_dir() else []
    bad = [n for n in names if not REVISION.match(n) or n == "main"]
    if bad:
        raise PublishError(f"{CHECKPOINTS}/: {bad} cannot be branch names (use letters, digits, '.', '_', '-')")
    return names


def tree_files(release: Path, key: str) -> dict[str, Path]:
    """key is a subtree ("model") or a checkpoint branch of the model repo ("model@step0000075")."""
    sub, _, rev = key.partition("@")
    return _tree(release / CHECKPOINTS / rev) if rev else repo_files(release, sub)


def tree_keys(release: Path, branches: bool = True) -> list[str]:
    # Branches first: on a new repo they start from the initial commit, before main has the release.
    return [f"model@{rev}" for rev in (checkpoint_revisions(release) if branches else [])] + ["model", "instruct", "dataset"]


def layout_name(plan: dict, key: str) -> str:
    """models/<org>/<name>[@<revision>] — where a tree sits in published/ and how the plan names it."""
    sub, _, rev = key.partition("@")
    rtype, repo_id = plan[sub]
    return f"{rtype}s/{repo_id}" + (f"@{rev}" if rev else "")


# ------------------------------------------------------------------ gates
@dataclass
class Release:
    """A release checked against its manifest; `sha` holds the sha256 of every file to publish (hashed once)."""
    path: Path
    keys: list[str]
    files: dict[str, dict[str, Path]]
    sha: dict[Path, str] = field(default_factory=dict)
    card: dict | None = None
    problems: list[str] = field(default_factory=list)
    lineage: dict = field(default_factory=dict)


def check(release: Path, requirements: list[str], branches: bool = True, sign_key: str | None = None) -> Release:
    """Run the gates; problems are collected (not raised) so a dry run can show all of them. With `sign_key`
    (release.sign.private_key) the release must also be signed by it and verify (stages/lib/provenance.py)."""
    from model_card import render
    from model_card.evidence import collect_release
    from model_card.require import failures

    if not (release / "MANIFEST.json").is_file():
        raise PublishError(f"{release} is not a release directory (no MANIFEST.json); run the release stage first")
    try:
        manifest = files.read_json(release / "MANIFEST.json")
        recorded = manifest["files"]
    except (ValueError, KeyError, TypeError):  # corrupted: one line, not a traceback
        raise PublishError(f"{release}/MANIFEST.json is not a release manifest (not JSON with `files`); "
                           "rebuild the release (`dvc repro release`)") from None
    keys = tree_keys(release, branches)
    rel = Release(release, keys, {k: tree_files(release, k) for k in keys}, lineage=manifest.get("lineage", {}))
    for src in sorted({f for listed in rel.files.values() for f in listed.values()}):
        rel.sha[src] = files.sha256_file(src)
        name = src.relative_to(release).as_posix()
        if name == "MANIFEST.json" or name.startswith(("openness/", "provenance/")):
            continue  # derived from the listed files; the card and the signature are checked below
        if name not in recorded:
            rel.problems.append(f"lineage: {name} is not listed in MANIFEST.json")
        elif recorded[name] != rel.sha[src]:
            rel.problems.append(f"lineage: {name} has sha256 {rel.sha[src][:16]}…, MANIFEST.json says {recorded[name][:16]}…")
    missing = [name for name in recorded if not (release / name).is_file()]
    rel.problems += [f"lineage: {name} is listed in MANIFEST.json but missing" for name in sorted(missing)]
    rel.card = render.audit(collect_release(release, RELEASE))
    card_file = release / "openness" / "openness.json"
    if not card_file.is_file():
        rel.problems.append("card: openness/openness.json is missing")
    elif card_file.read_bytes() != render.to_json(rel.card).encode("utf-8"):
        # Byte-equal, so an edited card cannot pass; say whether the ratings themselves moved.
        try:
            shipped = json.loads(card_file.read_bytes())
        except ValueError:
            shipped = None
        moved = [k for k in ("osaid", "mof", "osai_index", "nextcloud")
                 if not isinstance(shipped, dict) or shipped.get(k) != rel.card[k]]
        rel.problems.append("card: openness/openness.json is not a JSON card (corrupted); rebuild the release "
                            "(`dvc repro release`)" if not isinstance(shipped, dict) else
                            "card: openness/openness.json differs from the card recomputed from the release "
                            f"(`lucie audit release`; {'ratings differ: ' + ', '.join(moved) if moved else 'same ratings, other fields differ'}); "
                            "rebuild the release (`dvc repro release`) if the model_card code changed")
    rel.problems += [f"publish.require: {f}" for f in failures(rel.card, requirements)]
    if sign_key:
        rel.problems += signature_problems(release, sign_key)
    return rel


def signature_problems(release: Path, private_key: str) -> list[str]:
    """[] when the release is signed by this key and verifies; else the first failure."""
    from stages.lib.provenance import ProvenanceError, public_key_pem, verify

    try:
        with tempfile.TemporaryDirectory() as d:
            pub = Path(d) / "key.pub"
            pub.write_bytes(public_key_pem(private_key))
            verify(release, pub)
    except (ProvenanceError, OSError, ValueError) as err:
        return [f"signature (release.sign.private_key is set): {err}"]
    return []


def tag_name(template: str, rel: Release, recipe: str) -> str:
    """{code}: 12 hex of the release's code tree; {commit}: of the git commit publishing it (HEAD here)."""
    code = str(rel.lineage.get("code_tree") or "unknown")
    commit = rel.lineage.get("git_commit") or (head_commit() if "{commit}" in template else None) or "unknown"
    return template.format(code=code[:12], commit=commit[:12], recipe=recipe)


def head_commit() -> str | None:
    """The commit being published from: named in Hub tags and commit messages, never inside release/."""
    import subprocess

    res = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True)
    return res.stdout.strip() if res.returncode == 0 else None


# ------------------------------------------------------------------ local target
def stage_tree(files: dict[str, Path], dest: Path) -> None:
    for rel, src in files.items():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)


def publish_local(release: Path, target: Path, plan: dict, branches: bool = True) -> dict[str, Path]:
    out = {}
    for key in tree_keys(release, branches):
        dest = target / layout_name(plan, key)
        with files.atomic_dir(dest) as tmp:
            stage_tree(tree_files(release, key), tmp)
        out[key] = dest
    return out


def verify(release: Path, published: dict[str, Path]) -> dict:
    """Read every published file back. Files listed in the release manifest must match it (the
    lineage); the card and manifest copies must match their release originals."""
    manifest = files.read_json(release / "MANIFEST.json")["files"]
    report = {}
    for key, dest in published.items():
        listed = tree_files(release, key)
        expected = {rel: manifest.get(src.relative_to(release).as_posix()) or files.sha256_file(src) for rel, src in listed.items()}
        bad = [rel for rel, sha in sorted(expected.items())
               if not (dest / rel).exists() or files.sha256_file(dest / rel) != sha]
        report[key] = {"files": len(expected), "mismatched": bad,
                       "bytes": sum((dest / rel).stat().st_size for rel in expected if (dest / rel).exists())}
    return report


# ------------------------------------------------------------------ the Hub (client: stages/lib/hub_client.py)
def diff(files: dict[str, Path], sha: dict[Path, str], remote: dict) -> tuple[dict[str, str], list[str]]:
    """({path: "new" | "changed" | "unchanged"}, remote paths to delete)."""
    status = {p: "new" if p not in remote else "unchanged" if unchanged(src, sha[src], remote[p]) else "changed"
              for p, src in files.items()}
    return status, sorted(set(remote) - set(files) - KEEP_REMOTE)


def plan(rel: Release, repo_plan: dict, tag: str, api=None, reason: str = "") -> dict:
    """The push, file by file. With `api`, each tree is compared with the remote; otherwise statuses are
    unknown and `reason` says why."""
    trees, tags = [], {}
    refs_cache: dict[str, dict | None] = {}
    for key in rel.keys:
        sub, _, rev = key.partition("@")
        rtype, repo_id = repo_plan[sub]
        revision = rev or "main"
        files = rel.files[key]
        t = {"key": key, "repo_type": rtype, "repo_id": repo_id, "revision": revision, "remote": reason or "unknown",
             "head": None, "delete": [], "files": []}
        status: dict[str, str] = {}
        if api is not None:
            if repo_id not in refs_cache:
                refs_cache[repo_id] = remote_refs(api, rtype, repo_id)
            refs = refs_cache[repo_id]
            if refs is None:
                t["remote"], status = "new repo", {p: "new" for p in files}
            elif revision not in refs["branches"]:
                t["remote"], status = "new branch", {p: "new" for p in files}
            else:
                t["remote"], t["head"] = "exists", refs["branches"][revision]
                status, t["delete"] = diff(files, rel.sha, remote_files(api, rtype, repo_id, t["head"]))
            if not rev:
                tags[repo_id] = (refs or {}).get("tags", {}).get(tag)
        for p, src in files.items():
            t["files"].append({"path": p, "size": src.stat().st_size, "sha256": rel.sha[src],
                               "lfs": predicted_lfs(p, src), "status": status.get(p, "unknown")})
        t["commit"] = (any(f["status"] != "unchanged" for f in t["files"]) or bool(t["delete"])) if api is not None else None
        trees.append(t)
    conflicts = []
    for t in trees:
        if t["revision"] == "main" and tags.get(t["repo_id"]) and (t["commit"] or tags[t["repo_id"]] != t["head"]):
            conflicts.append(f"tag: {tag} already names commit {tags[t['repo_id']][:12]} of {t['repo_id']}, "
                             "which is not this release; set another publish.tag (or --tag)")
    return {"release": str(rel.path), "git_commit": rel.lineage.get("git_commit"), "code_tree": rel.lineage.get("code_tree"), "tag": tag,
            "tags": {k: v for k, v in tags.items()}, "compared": api is not None, "reason": reason,
            "conflicts": conflicts, "problems": rel.problems + conflicts, "trees": trees}


def push(api, rel: Release, the_plan: dict, private: bool, message: str, description: str) -> list[dict]:
    """Create repos and branches, commit what changed (parent = the head just listed, so a concurrent
    push fails instead of being overwritten), tag main. Returns one result per tree."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    created = set()
    for t in the_plan["trees"]:  # only repos the plan found missing: an unchanged release makes no write call
        if t["remote"] == "new repo" and t["repo_id"] not in created:
            api.create_repo(t["repo_id"], repo_type=t["repo_type"], private=private, exist_ok=True)
            created.add(t["repo_id"])
    results = []
    for t in the_plan["trees"]:
        rtype, repo_id, revision = t["repo_type"], t["repo_id"], t["revision"]
        refs = remote_refs(api, rtype, repo_id)
        if revision not in refs["branches"]:
            root = api.list_repo_commits(repo_id, repo_type=rtype, revision="main")[-1].commit_id
            api.create_branch(repo_id, branch=revision, revision=root, repo_type=rtype)
            refs = remote_refs(api, rtype, repo_id)
        head = refs["branches"][revision]
        files = rel.files[t["key"]]
        status, delete = diff(files, rel.sha, remote_files(api, rtype, repo_id, head))
        ops = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(files[p])) for p, s in sorted(status.items()) if s != "unchanged"]
        ops += [CommitOperationDelete(path_in_repo=p) for p in delete]
        commit = head
        if ops:
            commit = api.create_commit(repo_id, ops, commit_message=message, commit_description=description,
                                       repo_type=rtype, revision=revision, parent_commit=head).oid
        results.append({"key": t["key"], "repo_type": rtype, "repo_id": repo_id, "revision": revision, "commit": commit,
                        "new_commit": bool(ops), "uploaded": sum(s != "unchanged" for s in status.values()),
                        "deleted": len(delete), "files": len(files), "bytes": sum(f.stat().st_size for f in files.values())})
        if revision == "main" and the_plan["tag"] not in refs["tags"]:
            api.create_tag(repo_id, tag=the_plan["tag"], revision=commit, repo_type=rtype, tag_message=message)
    return results


def read_back(api, rel: Release, results: list[dict], tag: str, token: str | None, dest: Path | None = None) -> list[str]:
    """Download every file of every pushed tree at its commit into an empty directory and compare sha256;
    check that the branch and the tag point at that commit. Returns the problems ([] = all good)."""
    from huggingface_hub import snapshot_download

    problems = []
    for r in results:
        where = f"{r['repo_id']}@{r['revision']} ({r['commit'][:12]})"
        refs = remote_refs(api, r["repo_type"], r["repo_id"]) or {"branches": {}, "tags": {}}
        if refs["branches"].get(r["revision"]) != r["commit"]:
            problems.append(f"{where}: branch {r['revision']} points at {refs['branches'].get(r['revision'])}")
        if r["revision"] == "main" and refs["tags"].get(tag) != r["commit"]:
            problems.append(f"{where}: tag {tag} points at {refs['tags'].get(tag)}")
        listed = rel.files[r["key"]]
        with tempfile.TemporaryDirectory() as tmp:
            got = Path(snapshot_download(r["repo_id"], repo_type=r["repo_type"], revision=r["commit"], token=token,
                                         local_dir=Path(tmp) / "files", cache_dir=Path(tmp) / "cache", endpoint=api.endpoint))
            remote = {k: f for k, f in _tree(got).items() if not k.startswith(".cache/")}
            for p, src in sorted(listed.items()):
                if p not in remote:
                    problems.append(f"{where}: {p} is missing")
                elif (h := files.sha256_file(remote[p])) != rel.sha[src]:
                    problems.append(f"{where}: {p} read back with sha256 {h[:16]}…, expected {rel.sha[src][:16]}…")
            problems += [f"{where}: unexpected file {p}" for p in sorted(set(remote) - set(listed) - KEEP_REMOTE)]
            r["read_back"] = "ok" if not any(x.startswith(where) for x in problems) else "mismatch"
            if dest is not None:
                stage_tree({p: remote[p] for p in listed if p in remote}, dest / f"{r['repo_type']}s/{r['repo_id']}"
                           f"{'' if r['revision'] == 'main' else '@' + r['revision']}")
    return problems


def commit_text(rel: Release, p, tag: str) -> tuple[str, str]:
    manifest = files.sha256_file(rel.path / "MANIFEST.json")
    return (f"lucie-repro release {tag}",
            f"Built by {p.release.code_url} from code tree {rel.lineage.get('code_tree')} (published from commit "
            f"{rel.lineage.get('git_commit') or head_commit()}); release manifest sha256 {manifest}.")


def execute(api, rel: Release, the_plan: dict, p, token: str | None, dest: Path | None = None) -> dict:
    """Push the plan, then read everything back. PublishError on a read-back mismatch or a Hub error
    (one line, token redacted); the returned dict is what the metrics and the report record."""
    try:
        results = push(api, rel, the_plan, p.publish.private, *commit_text(rel, p, the_plan["tag"]))
        problems = read_back(api, rel, results, the_plan["tag"], token, dest)
    except hub_errors() as err:
        raise PublishError(redact(f"Hub error: {type(err).__name__}: {err}", token)) from None
    if problems:
        raise PublishError("read-back sha256 check failed:\n  " + "\n  ".join(problems))
    return {"endpoint": safe_endpoint(api.endpoint), "tag": the_plan["tag"], "trees": results}


def publish_hub(release: Path, p, dest: Path | None = None, endpoint: str | None = None) -> dict:
    """The Hub path without prompts (the DVC stage's `target: hub`); `lucie publish --yes` prints the
    plan around the same calls. Raises PublishError on any refusal or read-back mismatch."""
    token, source = resolve_token()
    if offline():
        raise PublishError("the Hub is needed but HF_HUB_OFFLINE is set; use publish.target: local, "
                           "or run where the Hub is reachable")
    if token is None:
        raise PublishError(f"no Hugging Face token: {source}")
    rel = check(release, p.publish.require, p.publish.revision_branches, p.release.sign.private_key)
    if rel.problems:
        raise PublishError("refusing to publish:\n  " + "\n  ".join(rel.problems))
    api = hub_api(endpoint, token)
    try:
        the_plan = plan(rel, repos(p), tag_name(p.publish.tag, rel, p.recipe), api)
    except hub_errors() as err:
        raise PublishError(redact(f"Hub error: {type(err).__name__}: {err}", token)) from None
    if the_plan["problems"]:
        raise PublishError("refusing to publish:\n  " + "\n  ".join(the_plan["problems"]))
    return execute(api, rel, the_plan, p, token, dest)


# ------------------------------------------------------------------ DVC stage
def run(ctx: StageContext) -> None:
    p = ctx.params
    release = ctx.path(RELEASE)
    repo_plan = repos(p)
    if p.publish.target == "hub":
        out_dir = ctx.path(p.publish.local_dir)
        with files.atomic_dir(out_dir) as tmp:  # published/ = what was read back from the Hub
            result = publish_hub(release, p, dest=tmp)
        ctx.write_metrics("metrics/publish.json", {"target": "hub", "tag": result["tag"], "repos": {
            r["key"]: {k: r[k] for k in ("repo_id", "repo_type", "revision", "commit", "new_commit", "files", "bytes")}
            for r in result["trees"]}})
        ctx.summary(f"{sum(r['files'] for r in result['trees'])} files in {len(result['trees'])} trees on the Hub "
                    f"({sum(r['new_commit'] for r in result['trees'])} new commits), tag {result['tag']}, all read back")
        return
    rel = check(release, p.publish.require, p.publish.revision_branches, p.release.sign.private_key)
    if rel.problems:
        raise PublishError("refusing to publish:\n  " + "\n  ".join(rel.problems))
    published = publish_local(release, ctx.path(p.publish.local_dir), repo_plan, p.publish.revision_branches)
    report = verify(release, published)
    bad = {k: v["mismatched"] or "no files" for k, v in report.items() if v["mismatched"] or not v["files"]}
    ctx.write_metrics("metrics/publish.json", {"target": p.publish.target, "repos": {
        key: {"repo_id": repo_plan[key.partition("@")[0]][1], "type": repo_plan[key.partition("@")[0]][0],
              "revision": key.partition("@")[2] or "main", **report[key]} for key in report}})
    if bad:
        raise StageError(f"read-back sha256 mismatch: {bad}")
    ctx.summary(f"{sum(v['files'] for v in report.values())} files to {len(report)} trees ({p.publish.target}), "
                f"all read back with matching sha256")


def main() -> None:
    with stage("publish") as ctx:
        run(ctx)


if __name__ == "__main__":
    main()
