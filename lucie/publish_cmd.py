"""`lucie publish`: show the plan for pushing release/ to the Hugging Face Hub, and push it with --yes.

A dry run is the default because a push is public and hard to take back: the plan lists every repo, branch,
file (size, LFS or git, new/changed/unchanged against the remote when it is reachable), deletion and the tag,
and whether each gate passes. The work is done by stages.publish; this module only prints, asks for nothing,
and records a real push in MLflow. The token is shown by its source, never by its value.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


NOT_COMPARED = ("\n         (the Hub could not be asked what it holds: each tree below lists every file of the release "
                "instead of a diff, and --yes pushes nothing until it can compare)")


def format_plan(plan: dict, rel, requirements: list[str], endpoint: str, token_source: str) -> str:
    gate = "ok" if not rel.problems else "FAILED"
    lines = [f"Release  {plan['release']}  (code tree {str(plan.get('code_tree') or plan['git_commit'])[:12]}, {len(rel.sha)} files to publish)",
             f"Gates    lineage + card + publish.require {requirements}: {gate}",
             *[f"  - {p}" for p in rel.problems],
             f"Hub      {endpoint}  (token: {token_source})",
             f"Remote   {'compared' if plan['compared'] else plan['reason'] + NOT_COMPARED}"
             + (" without a token: a private repo looks like a new one" if plan["compared"] and token_source.startswith("none") else ""),
             f"Tag      {plan['tag']}" + (": CONFLICT" if plan["conflicts"] else ""),
             *[f"  - {c}" for c in plan["conflicts"]],
             *[f"  {repo}: already at {c[:12]}" for repo, c in plan["tags"].items() if c],
             ""]
    for t in plan["trees"]:
        changed = [f for f in t["files"] if f["status"] != "unchanged"]
        if t["commit"] is None:
            what = f"{len(t['files'])} files ({human(sum(f['size'] for f in t['files']))})"
        elif t["commit"]:
            what = f"1 commit: {len(changed)} to upload ({human(sum(f['size'] for f in changed))}), {len(t['delete'])} to delete"
        else:
            what = "unchanged: no commit"
        head = f", head {t['head'][:12]}" if t["head"] else ""
        remote = f"  [{t['remote']}{head}]" if plan["compared"] else ""  # else the reason is said once, above
        lines.append(f"{t['repo_type']} {t['repo_id']} @ {t['revision']}{remote} -> {what}")
        lines.append(f"  {'status':<10} {'size':>10}  {'storage':<7}  path")
        for f in t["files"]:
            lines.append(f"  {f['status']:<10} {human(f['size']):>10}  {'lfs' if f['lfs'] else 'git':<7}  {f['path']}")
        lines += [f"  {'delete':<10} {'':>10}  {'':<7}  {p}" for p in t["delete"]]
        lines.append("")
    files = [f for t in plan["trees"] for f in t["files"]]
    repos = {t["repo_id"] for t in plan["trees"]}
    commits = sum(bool(t["commit"]) for t in plan["trees"])
    lines.append(f"{len(repos)} repos, {len(plan['trees'])} trees, {len(files)} files "
                 f"({human(sum(f['size'] for f in files))}, {sum(f['lfs'] for f in files)} via LFS)"
                 + (f"; {commits} commit{'' if commits == 1 else 's'} to make" if plan["compared"] else ""))
    return "\n".join(lines)


def publish(release: Path = typer.Option(Path("release"), help="Release directory (written by the release stage)."),
            yes: bool = typer.Option(False, "--yes", help="Push. Without it, only print the plan."),
            repo_model: Optional[str] = typer.Option(None, help="ORG/NAME of the base model repo (default: params)."),
            repo_instruct: Optional[str] = typer.Option(None, help="ORG/NAME of the instruct repo (default: <model>-instruct)."),
            repo_dataset: Optional[str] = typer.Option(None, help="ORG/NAME of the dataset repo (default: params)."),
            endpoint: Optional[str] = typer.Option(None, help="Hub URL (default: HF_ENDPOINT or huggingface.co)."),
            tag: Optional[str] = typer.Option(None, help="Tag for this release (default: publish.tag)."),
            report: Optional[Path] = typer.Option(None, help="Also write the plan and the push result here (JSON)."),
            root: Path = typer.Option(Path("."), help="Repository root.")):
    """Publish release/ to the Hugging Face Hub: a dry-run plan by default, --yes to push and read back."""
    import re

    from huggingface_hub import constants

    from stages.core import files
    from stages import publish as pub
    from stages.core.params import ParamsError, load
    from stages.lib import hub_client as hub
    from stages.core.runtime import params_path

    for name, value in (("--repo-model", repo_model), ("--repo-instruct", repo_instruct), ("--repo-dataset", repo_dataset)):
        if value is not None and not re.fullmatch(r"[\w.-]+/[\w.-]+", value):
            raise typer.BadParameter(f"{name} must look like ORG/NAME, got {value!r}")
    try:
        p = load(params_path(root))
    except ParamsError as err:
        raise typer.BadParameter(str(err))
    release = release if release.is_absolute() else root / release
    token, source = hub.resolve_token()

    def fail(message: str, code: int = 1):
        typer.echo(hub.redact(message, token), err=True)
        raise typer.Exit(code)

    try:
        rel = pub.check(release, p.publish.require, p.publish.revision_branches, p.release.sign.private_key)
    except pub.PublishError as err:
        fail(f"publish: {err}", 2)
    the_tag = pub.tag_name(tag or p.publish.tag, rel, p.recipe)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", the_tag):
        raise typer.BadParameter(f"--tag {the_tag!r} is not a valid tag name")
    repo_plan = pub.repos(p, repo_model, repo_instruct, repo_dataset)
    api = None if hub.offline() else hub.hub_api(endpoint, token)
    where = hub.safe_endpoint(api.endpoint if api else endpoint or constants.ENDPOINT)
    the_plan = None
    if api is not None:
        try:
            the_plan = pub.plan(rel, repo_plan, the_tag, api)
        except hub.hub_errors() as err:
            reason = hub.redact(f"not compared: {type(err).__name__}: {err}", token)
            the_plan = pub.plan(rel, repo_plan, the_tag, None, reason.splitlines()[0])
    if the_plan is None:
        the_plan = pub.plan(rel, repo_plan, the_tag, None, "not compared: HF_HUB_OFFLINE is set")
    typer.echo(hub.redact(format_plan(the_plan, rel, p.publish.require, where, source), token))
    out = {"plan": the_plan, "pushed": None}

    def write_report():
        if report is not None:
            files.write_json(report, out)

    if the_plan["problems"]:
        write_report()
        fail("publish: refusing to publish; nothing was pushed:\n  " + "\n  ".join(the_plan["problems"]))
    if not yes:
        write_report()
        typer.echo("Dry run: nothing was pushed. Re-run with --yes to publish.")
        return
    if api is None:
        fail("publish: --yes needs the Hub, but HF_HUB_OFFLINE is set; nothing was pushed")
    if token is None:
        fail(f"publish: --yes needs a token: {source}; nothing was pushed")
    if not the_plan["compared"]:
        fail(f"publish: {the_plan['reason']}; nothing was pushed")
    try:
        out["pushed"] = push_tracked(api, rel, the_plan, p, token, root)
    except pub.PublishError as err:
        write_report()
        fail(f"publish: {err}")
    write_report()
    for r in out["pushed"]["trees"]:
        typer.echo(f"{r['repo_id']} @ {r['revision']}: {r['commit'][:12]} "
                   f"({'new commit' if r['new_commit'] else 'unchanged, no commit'}), "
                   f"{r['files']} files read back: {r['read_back']}")
    typer.echo(f"Tagged {the_plan['tag']}; every file read back with the sha256 of the release.")


def push_tracked(api, rel, the_plan: dict, p, token: str, root: Path) -> dict:
    """stages.publish.execute inside an MLflow run, so the published commits sit next to the stage runs."""
    from stages import publish as pub
    from stages.core import tracking
    from stages.lib import hub_client as hub

    t = p.tracking
    trees = the_plan["trees"]
    with tracking.stage_run("publish-hub", root, t.uri, t.experiment, t.enabled, {"recipe": p.recipe}) as tracker:
        tracker.params({"endpoint": hub.safe_endpoint(api.endpoint), "tag": the_plan["tag"], "private": p.publish.private,
                        "repos": sorted({x["repo_id"] for x in trees}), "revisions": [f"{x['repo_id']}@{x['revision']}" for x in trees]})
        result = pub.execute(api, rel, the_plan, p, token)
        tracker.metrics({"trees": len(result["trees"]), "files": sum(r["files"] for r in result["trees"]),
                         "bytes": sum(r["bytes"] for r in result["trees"]),
                         "new_commits": sum(r["new_commit"] for r in result["trees"]),
                         "uploaded_files": sum(r["uploaded"] for r in result["trees"])})
        if tracker.active:  # which commit each tree got; 5000 chars is MLflow's tag value limit
            commits = " ".join(f"{r['repo_id']}@{r['revision']}={r['commit']}" for r in result["trees"])
            tracker.client.set_tag(tracker.run_id, "published_commits", commits[:5000])
    return result
