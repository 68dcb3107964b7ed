"""The release's code identity (stages/lib/code_tree.py) in real temp git repos: equal to git's own tree id,
unchanged by a lock-only commit, the same archive bytes in a clone, and covered by the release's DVC deps."""
from __future__ import annotations

import gzip
import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from stages.lib import code_tree

PROJECT = Path(__file__).resolve().parent.parent
GIT_ID = ["-c", "user.name=t", "-c", "user.email=t@t.invalid"]


def git(root: Path, *args: str, env: dict | None = None) -> str:
    return subprocess.run(["git", *GIT_ID, *args], cwd=root, check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


def commit(root: Path, msg: str, date: str) -> None:
    env = {**os.environ, "GIT_COMMITTER_DATE": date, "GIT_AUTHOR_DATE": date}
    git(root, "add", "-A", env=env)
    git(root, "commit", "-qm", msg, env=env)


@pytest.fixture
def repo(tmp_path):
    r = tmp_path / "repo"
    files = {"stages/a.py": "print('a')\n", "stages/sub/b.py": "B = 1\n", "params.yaml": "x: 1\n", "dvc.lock": "v1\n",
             "metrics/m.json": "{}\n", "plots/p.csv": "step\n", "verification.json": "{}\n", ".dvc/config": "",
             ".gitignore": "/release\n", "artifacts/.gitignore": "/models\n", "data/sample/d.txt": "doc\n",
             "stages-x.txt": "sorts between stages and stages/\n", "run.sh": "#!/bin/sh\n"}
    for rel, text in files.items():
        (r / rel).parent.mkdir(parents=True, exist_ok=True)
        (r / rel).write_text(text)
    (r / "run.sh").chmod(0o755)
    (r / "link").symlink_to("params.yaml")
    git(r, "init", "-q")
    commit(r, "code", "2026-01-02T10:00:00Z")
    return r


def git_write_tree(root: Path) -> str:
    """git's own answer: an index of HEAD without the run records, written as a tree."""
    env = {**os.environ, "GIT_INDEX_FILE": str(root / ".git" / "test-index")}
    git(root, "read-tree", "HEAD", env=env)
    drop = [p for p in git(root, "ls-files", env=env).splitlines() if not code_tree.is_code(p)]
    git(root, "rm", "--cached", "-q", *drop, env=env)
    return git(root, "write-tree", env=env)


def test_tree_id_is_gits_and_leaves_out_run_records(repo):
    items = code_tree.entries(repo)
    assert {e.path for e in items} == {"stages/a.py", "stages/sub/b.py", "params.yaml", "data/sample/d.txt",
                                       "stages-x.txt", "run.sh", "link"}
    assert code_tree.tree_id(items) == git_write_tree(repo)


def test_lock_only_commit_keeps_identity_and_bytes(repo, tmp_path):
    before = code_tree.describe(repo)
    first = code_tree.archive(repo, code_tree.entries(repo), "p")
    (repo / "dvc.lock").write_text("v2\n")
    (repo / "metrics" / "m.json").write_text('{"a": 1}\n')
    (repo / "artifacts" / ".gitignore").write_text("/models\n/eval\n")  # DVC appends its outs
    commit(repo, "lock", "2026-03-04T10:00:00Z")
    after = code_tree.describe(repo)
    assert after.head != before.head
    assert (after.tree, after.date, after.changed_in) == (before.tree, "2026-01-02", before.head)
    assert code_tree.archive(repo, code_tree.entries(repo), "p") == first
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    assert code_tree.archive(clone, code_tree.entries(clone), "p") == first
    assert code_tree.describe(clone) == after


def test_code_change_changes_identity(repo):
    before = code_tree.describe(repo)
    (repo / "stages" / "a.py").write_text("print('b')\n")
    assert code_tree.dirty(repo) == ["stages/a.py"]
    commit(repo, "code 2", "2026-05-06T10:00:00Z")
    after = code_tree.describe(repo)
    assert after.tree != before.tree and after.date == "2026-05-06" and after.changed_in == after.head


def test_archive_holds_exactly_the_code(repo):
    data = code_tree.archive(repo, code_tree.entries(repo), "proj-1")
    assert gzip.decompress(data)  # a valid gzip stream
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert set(members) == {f"proj-1/{e.path}" for e in code_tree.entries(repo)}
        assert tar.extractfile("proj-1/stages/sub/b.py").read() == b"B = 1\n"
        assert members["proj-1/run.sh"].mode == 0o755 and members["proj-1/params.yaml"].mode == 0o644
        assert members["proj-1/link"].issym() and members["proj-1/link"].linkname == "params.yaml"
        assert {m.mtime for m in members.values()} == {0}


def test_dirty_sees_code_not_run_records(repo):
    (repo / "dvc.lock").write_text("changed\n")
    (repo / "plots" / "p.csv").write_text("changed\n")
    assert code_tree.dirty(repo) == []
    (repo / ".release.tmp-host-1" / "model").mkdir(parents=True)  # the release stage's own temp dir
    (repo / ".release.tmp-host-1" / "model" / "config.json").write_text("{}")
    assert code_tree.dirty(repo) == []
    (repo / "stages" / "new.py").write_text("")
    (repo / "params.yaml").unlink()
    assert code_tree.dirty(repo) == ["params.yaml", "stages/new.py"]


def test_shallow_clone_and_non_git_are_named(repo, tmp_path):
    commit_b = tmp_path / "b"
    (repo / "params.yaml").write_text("x: 2\n")
    commit(repo, "code 2", "2026-05-06T10:00:00Z")
    subprocess.run(["git", "clone", "-q", "--depth", "1", f"file://{repo}", str(commit_b)], check=True)
    with pytest.raises(code_tree.CodeTreeError, match="shallow clone.*git fetch --unshallow"):
        code_tree.describe(commit_b)
    with pytest.raises(code_tree.CodeTreeError, match="needs a git checkout"):
        code_tree.describe(tmp_path)


def test_release_deps_cover_the_code_tree():
    """Every archived file is under a DVC dep of the release stage: DVC re-runs it when the code changes."""
    deps = yaml.safe_load((PROJECT / "dvc.yaml").read_text())["stages"]["release"]["deps"]
    uncovered = [e.path for e in code_tree.entries(PROJECT)
                 if not any(e.path == d or e.path.startswith(d.rstrip("/") + "/") for d in deps)]
    # DVC refuses dvc.yaml as a dep ("DVC file 'dvc.yaml' cannot be a dependency"); docs/VERIFY.md says what follows
    assert uncovered == ["dvc.yaml"], f"add these to the release stage's deps in dvc.yaml: {uncovered[:10]}"
