"""The plan and the read-back against olah, a Hub-compatible mirror we did not write.

olah 0.5.4 serves local git repos (with LFS objects in .git/lfs/objects) through the Hub's read API
(refs, tree, revision, resolve). Here the published state is built with real git from the release, so
the remote comparison meets git's own blob ids and LFS pointers, and the read-back runs
snapshot_download against a server whose answers come from git, not from us. olah has no upload
routes, so pushing is tested against tests/hub_double.py instead (test_publish_hub.py).
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from stages import publish
from stages.lib import hub_client
from test_publish import make_release

pytest.importorskip("olah", reason="olah (test-only Hub mirror) is not installed")

TOKEN = "hf_OlahReadBackTok3n_0a1b2c3d"
TAG = "release-1f25c805eba6"
REPOS = {"model": ("model", "me/m"), "instruct": ("model", "me/m-instruct"), "dataset": ("dataset", "me/m-data")}


def git(cwd, *args) -> str:
    cmd = ["git", "-c", "user.name=lucie", "-c", "user.email=lucie@example.org", "-c", "init.defaultBranch=main", *args]
    return subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def mirror(rel, mirrors) -> dict:
    """One git repo per Hub repo, laid out as the Hub would hold the release: an initial commit with
    .gitattributes, branches from it, main with the release, the tag; LFS files as pointer + object."""
    lfs_objects = {}
    for key in rel.keys:
        sub, _, rev = key.partition("@")
        rtype, repo_id = REPOS[sub]
        repo = mirrors / f"{rtype}s" / repo_id
        if not repo.exists():
            repo.mkdir(parents=True)
            git(repo, "init", "-q")
            (repo / ".gitattributes").write_text("".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in hub_client.LFS_PATTERNS))
            git(repo, "add", ".gitattributes")
            git(repo, "commit", "-qm", "initial commit")
        git(repo, "checkout", "-q", "-b", rev, "main") if rev else git(repo, "checkout", "-q", "main")
        for path, src in rel.files[key].items():
            dest = repo / path
            dest.parent.mkdir(parents=True, exist_ok=True)
            if hub_client.predicted_lfs(path, src):
                sha = rel.sha[src]
                obj = repo / ".git/lfs/objects" / sha[:2] / sha[2:4] / sha
                obj.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(src, obj)
                lfs_objects[(repo_id, path)] = obj
                dest.write_text(f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {src.stat().st_size}\n")
            else:
                shutil.copy(src, dest)
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", f"lucie-repro release {TAG}")
        if not rev:
            git(repo, "tag", TAG)
        git(repo, "checkout", "-q", "main")
    return lfs_objects


@pytest.fixture
def olah(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "mirrors").mkdir()
    cfg = tmp_path / "olah.toml"
    cfg.write_text(f'[basic]\nhost = "127.0.0.1"\nport = {port}\nmirrors-path = ["{tmp_path / "mirrors"}"]\n'
                   f'repos-path = "{tmp_path / "olah-cache"}"\n[accessibility]\noffline = true\n')
    code = f"import sys; from olah.server import cli; sys.argv = ['olah', '-c', {str(cfg)!r}]; cli()"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):  # about 3-5 s on this machine
            try:
                urllib.request.urlopen(f"{url}/api/models/none/none/refs", timeout=1)
            except urllib.error.HTTPError:
                break  # any HTTP answer: the server is up
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("olah did not start")
        yield url, tmp_path / "mirrors"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_plan_and_read_back_against_a_git_backed_mirror(tmp_path, olah):
    from huggingface_hub import HfApi

    url, mirrors = olah
    rel = publish.check(make_release(tmp_path), [])
    assert rel.problems == []
    objects = mirror(rel, mirrors)
    api = HfApi(endpoint=url, token=TOKEN)
    plan = publish.plan(rel, REPOS, TAG, api)
    # git's blob ids and the LFS pointers' sha256 match the release: nothing to commit, the tag is in place.
    assert plan["compared"] and plan["problems"] == []
    assert [(t["key"], t["remote"], t["commit"]) for t in plan["trees"]] == [
        ("model@extension_step0000025", "exists", False), ("model@step0000075", "exists", False),
        ("model", "exists", False), ("instruct", "exists", False), ("dataset", "exists", False)]
    assert {f["status"] for t in plan["trees"] for f in t["files"]} == {"unchanged"}
    results = [{k: t[k] for k in ("key", "repo_type", "repo_id", "revision")} | {"commit": t["head"]} for t in plan["trees"]]
    assert publish.read_back(api, rel, results, TAG, TOKEN) == []
    assert [r["read_back"] for r in results] == ["ok"] * 5

    # The mirror now serves other bytes for the dataset's Parquet file; its metadata (the pointer) is
    # unchanged, so only downloading and hashing can tell.
    obj = objects[("me/m-data", "data/en/sample-en/part-00000.parquet")]
    data = bytearray(obj.read_bytes())
    data[10] ^= 0xFF
    obj.write_bytes(bytes(data))
    assert publish.plan(rel, REPOS, TAG, api)["problems"] == []
    problems = publish.read_back(api, rel, results, TAG, TOKEN)
    assert len(problems) == 1 and problems[0].startswith("me/m-data@main (")
    assert "data/en/sample-en/part-00000.parquet read back with sha256" in problems[0]

    # A file missing from a branch and an extra one on main are both reported.
    repo = mirrors / "models/me/m"
    git(repo, "checkout", "-q", "step0000075")
    git(repo, "rm", "-q", "config.json")
    git(repo, "commit", "-qm", "drop config")
    git(repo, "checkout", "-q", "main")
    (repo / "stray.txt").write_text("x")
    git(repo, "add", "stray.txt")
    git(repo, "commit", "-qm", "stray")
    moved = publish.plan(rel, REPOS, TAG, api)
    by_key = {t["key"]: t for t in moved["trees"]}
    assert by_key["model"]["delete"] == ["stray.txt"]
    assert {f["path"]: f["status"] for f in by_key["model@step0000075"]["files"]}["config.json"] == "new"
    assert any("tag: release-1f25c805eba6 already names commit" in c for c in moved["conflicts"])
