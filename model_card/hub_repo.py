"""`lucie audit hf://ORG/NAME[@REV]`: audit a Hub repository through the Hub API, without the weights.

An assessor rates a model from its Hub page: the file listing, the branches, the card, the license and
the config. This reads the same through `huggingface_hub.HfApi` (any Hub-compatible endpoint: the Hub,
a mirror such as olah, tests/hub_double.py): the tree at one commit (sizes, and for LFS files the sha256
the Hub computed), the refs, and only the small regular files (card, LICENSE, configs, code, reports,
datasheets, up to SMALL_FILE bytes). LFS files are never downloaded: each becomes a Git LFS pointer naming
its sha256 and size, which the snapshot collector reports as *claimed*. The result is then read as a local
directory is (`model_card.collect`), labelled with the hf:// address, plus `lineage.hub`: the repo, the
resolved commit, its branches and tags. Branches other than main are the intermediate checkpoints an
assessor sees on the Hub (Lucie-style `step0005000` …): claimed Model parameters (Intermediate).

hf://datasets/ORG/NAME[@REV] reads a dataset repository. The endpoint is `--endpoint`, else HF_ENDPOINT.
"""
from __future__ import annotations

import re
from pathlib import Path

from .evidence import Evidence, Item

SPEC = re.compile(r"^hf://(?:(?P<kind>models|datasets)/)?(?P<repo>[\w.-]+/[\w.-]+)(?:@(?P<rev>[\w./-]+))?$")
SMALL_FILE = 2 * 1024 * 1024
MAIN = "main"


class HubError(ValueError):
    """An hf:// address that does not parse or a repository the endpoint does not serve."""


def parse(spec: str) -> tuple[str, str, str]:
    """hf://[datasets/]ORG/NAME[@REV] -> (repo type, repo id, revision)."""
    m = SPEC.match(spec)
    if not m:
        raise HubError(f"{spec}: not a Hub address; use hf://ORG/NAME, hf://ORG/NAME@REVISION or hf://datasets/ORG/NAME")
    return ("dataset" if m.group("kind") == "datasets" else "model"), m.group("repo"), m.group("rev") or MAIN


def pointer(sha256: str, size: int) -> str:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n"


def fetch(spec: str, dest: Path, endpoint: str | None = None, token: str | bool | None = None) -> dict:
    """Lay the repository out in `dest` (small files downloaded, LFS files as pointers); return lineage.hub."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    from huggingface_hub import constants

    rtype, repo_id, rev = parse(spec)
    if constants.HF_HUB_OFFLINE:
        raise HubError(f"{spec}: reading a Hub repo needs the network, but HF_HUB_OFFLINE is set; unset it "
                       "(`HF_HUB_OFFLINE=0 lucie audit hf://…`), or audit a downloaded snapshot directory")
    api = HfApi(endpoint=endpoint, token=token)
    try:
        info = api.repo_info(repo_id, revision=rev, repo_type=rtype)
        commit = info.sha
        entries = [e for e in api.list_repo_tree(repo_id, revision=commit, repo_type=rtype, recursive=True)
                   if hasattr(e, "size") and not hasattr(e, "tree_id")]
        refs = api.list_repo_refs(repo_id, repo_type=rtype)
        skipped = []
        for e in sorted(entries, key=lambda e: e.path):
            target = dest / e.path
            if target.resolve().parent != dest.resolve() and dest.resolve() not in target.resolve().parents:
                raise HubError(f"{spec}: the tree lists a path outside the repository: {e.path!r}")
            target.parent.mkdir(parents=True, exist_ok=True)
            if e.lfs is not None:
                target.write_text(pointer(e.lfs.sha256, e.lfs.size))
            elif e.size <= SMALL_FILE:
                api.hf_hub_download(repo_id, e.path, revision=commit, repo_type=rtype, local_dir=dest)
            else:
                skipped.append(e.path)
    except (RepositoryNotFoundError, RevisionNotFoundError) as err:
        raise HubError(f"{spec}: {type(err).__name__.replace('NotFoundError', '')} not found at "
                       f"{api.endpoint} (check ORG/NAME, the revision and HF_TOKEN for a private repo)") from None
    except (HfHubHTTPError, OSError) as err:
        raise HubError(f"{spec}: the Hub API at {api.endpoint} failed: {str(err).splitlines()[0]}") from None
    return {"repo_id": repo_id, "repo_type": rtype, "revision": rev, "commit": commit,
            "branches": sorted(b.name for b in refs.branches), "tags": sorted(t.name for t in refs.tags),
            "files_listed": len(entries), "not_downloaded": skipped}


def add_branches(ev: Evidence, hub: dict) -> None:
    """Branches other than main hold the intermediate checkpoints (Lucie's and our naming): a Hub fact, still
    only claimed (not downloaded). They replace a weaker claim from the card's links."""
    revs = [b for b in hub["branches"] if b != MAIN]
    if hub["repo_type"] != "model" or not revs:
        return
    comp = "Model parameters (Intermediate)"
    current = ev.get(comp)
    if current is not None and current.status in ("verified", "present"):
        return
    lic = (ev.get("Model parameters (Final)") or Item(comp, "data", False)).license
    item = Item(comp, "data", True, f"hf://{hub['repo_id']}@{revs[0]}" + (f" … ({len(revs)} branches)" if len(revs) > 1 else ""),
                lic, False, None, f"branches of the Hub repository: {', '.join(revs[:5])}"
                f"{' …' if len(revs) > 5 else ''}; listed by the Hub API, not downloaded")
    ev.components = [item if c.component == comp else c for c in ev.components]
