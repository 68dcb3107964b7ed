"""A fresh clone reproduces the committed release (issue 13, point 1), with real DVC in temp git repos.

As a user would: build everything, commit the lock (a lock-only commit: dvc.lock, metrics/, plots/), clone,
restore the upstream outputs from the DVC cache, rebuild release and publish for real (no run cache), and
find `git status --porcelain` empty with dvc.lock, metrics/*.json and plots/ byte-identical. The first build
shares the DVC cache of the session's full `dvc repro` (conftest.reproduced, checked against the committed lock
by tests/test_pipeline_e2e.py), so its stages are restored from DVC's run cache where DVC can; the clone's
release and publish always run (--no-run-cache). LUCIE_TEST_DVC_CACHE=DIR uses another cache instead (e.g. a
worktree's after `dvc repro`).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from lucie.verify import copy_inputs, plan
from repo_copy import PROJECT, env, make_copy, run
from stages.lib import code_tree

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]  # a full repro: 3 min idle, 30 min on a loaded machine
UPSTREAM = ["ingest", "filter", "dedup", "tokenizer", "mix", "tokenize", "pretrain", "extend", "anneal", "align",
            "evaluate"]
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid"]


def rebuild(clone: Path, e: dict) -> str:
    """release and publish really run (not restored from the cache, which holds the committed outputs)."""
    return "".join(run(["dvc", "repro", "--force", "--single-item", "--no-run-cache", stage], clone, e).stdout
                   for stage in ("release", "publish"))


@pytest.fixture(scope="module")
def built(tmp_path_factory, request):
    tmp = tmp_path_factory.mktemp("release-repro")
    root = make_copy(tmp / "repo")
    e = env(tmp)
    cache = os.environ.get("LUCIE_TEST_DVC_CACHE") or str(request.getfixturevalue("reproduced")["cache"])
    run(["dvc", "cache", "dir", "--local", cache], root, e)
    run(["dvc", "repro"], root, e)
    before = code_tree.describe(root)
    run([*GIT, "add", "-A"], root, e)
    changed = run(["git", "diff", "--cached", "--name-only"], root, e).stdout.split()
    run([*GIT, "commit", "-qm", "dvc.lock from make repro", "--allow-empty"], root, e)  # empty if the lock was current
    clone = tmp / "clone"
    run(["git", "clone", "-q", str(root), str(clone)], tmp, e)
    copy_inputs(PROJECT, clone, plan(clone)[1])  # assets/lid (make setup's download, not in git)
    run(["dvc", "cache", "dir", "--local", cache], clone, e)
    run(["dvc", "checkout", *UPSTREAM], clone, e)  # upstream outputs as committed; release is rebuilt below
    proc = rebuild(clone, e)
    return {"root": root, "clone": clone, "env": e, "before": before, "changed": changed, "proc": proc}


def test_the_lock_commit_touches_only_run_records_and_keeps_the_code_tree(built):
    assert all(not code_tree.is_code(p) for p in built["changed"]), built["changed"]
    after = code_tree.describe(built["root"])
    assert after.head != built["before"].head and after.tree == built["before"].tree and not after.dirty


def test_fresh_clone_rebuilds_release_and_publish_with_a_clean_status(built):
    clone, proc = built["clone"], built["proc"]
    assert re.findall(r"Running stage '([a-z]+)'", proc) == ["release", "publish"], proc[-2000:]
    assert run(["git", "status", "--porcelain"], clone, built["env"]).stdout == ""
    for rel in ["dvc.lock", *(f"metrics/{p.name}" for p in (built["root"] / "metrics").glob("*.json")),
                *(f"plots/{p.name}" for p in (built["root"] / "plots").iterdir())]:
        assert (clone / rel).read_bytes() == (built["root"] / rel).read_bytes(), rel


def test_release_names_the_code_tree_not_the_commit(built):
    clone = built["clone"]
    tree = built["before"].tree
    code = json.loads((clone / "release" / "code" / "code.json").read_text())
    assert code["tree"] == tree and code["archive"] == f"lucie-repro-{tree[:12]}.tar.gz" and not code["dirty_worktree"]
    manifest = json.loads((clone / "release" / "MANIFEST.json").read_text())
    assert manifest["lineage"]["code_tree"] == tree
    heads = {code_tree.describe(built["root"]).head, built["before"].head}
    text = subprocess.run(["grep", "-rlF", "-e", min(heads)[:12], "-e", max(heads)[:12], str(clone / "release")],
                          capture_output=True, text=True).stdout
    assert text == "", f"a commit id inside release/: {text}"
    shutil.rmtree(clone / "release")  # what a user deletes by hand is rebuilt the same
    rebuild(clone, built["env"])
    assert run(["git", "status", "--porcelain"], clone, built["env"]).stdout == ""


def card(root: Path) -> dict:
    return json.loads((root / "release" / "openness" / "openness.json").read_text())


def mof_component(c: dict, name: str) -> dict:
    return next(x for x in c["evidence"]["components"] if x["component"] == name)


def test_without_a_paper_the_card_says_what_is_missing(built):
    c = card(built["clone"])
    paper = mof_component(c, "Research paper")
    assert not paper["released"] and "release.paper" in paper["note"] and c["mof"]["class"] == 2


def test_release_paper_gives_mof_class_1_and_signed_release_verifies(built, tmp_path):
    """Runs last: it commits a paper and a signing key path into the clone and rebuilds release + publish there."""
    from test_provenance import keypair
    from test_release_paper import PDF

    clone, e = built["clone"], built["env"]
    key, pub = keypair(tmp_path / "keys")  # outside the repo, as keys must be
    (clone / "docs" / "paper.pdf").write_bytes(PDF)
    params = (clone / "params.yaml").read_text()
    assert "paper: {path: null, license: null}" in params and "sign: {private_key: null}" in params
    (clone / "params.yaml").write_text(params.replace("paper: {path: null, license: null}",
                                                      "paper: {path: docs/paper.pdf, license: CC-BY-4.0}")
                                       .replace("sign: {private_key: null}", f"sign: {{private_key: {key}}}"))
    run([*GIT, "add", "-A"], clone, e)
    run([*GIT, "commit", "-qm", "a paper"], clone, e)
    run(["dvc", "repro"], clone, e)
    c = card(clone)
    paper = mof_component(c, "Research paper")
    assert c["mof"]["class"] == 1, c["mof"]
    assert paper["verified"] and paper["license"] == "CC-BY-4.0" and paper["location"] == "paper/paper.pdf"
    # OSAI index (issue 13.4): >= 0.90 with a paper, 11 of 12 open; peer review stays closed (no venue is named)
    osai = c["osai_index"]
    assert osai["score"] >= 0.90 and [k for k, v in osai["parameters"].items() if v["level"] != "open"] == ["paper"], osai
    audit = run(["lucie", "audit", "release", "--format", "json", "--require", "mof-class=1"], clone, e)
    assert json.loads(audit.stdout)["mof"]["class"] == 1
    model_repo = clone / "published" / "models" / "lucie-repro" / "lucie-repro-tiny"
    assert (model_repo / "paper" / "paper.pdf").read_bytes() == PDF
    # signed by the release stage; the publish stage's gate verified it (it ran with the key set)
    assert (model_repo / "provenance" / "release.sig").read_bytes() == (clone / "release/provenance/release.sig").read_bytes()
    ok = run(["lucie", "verify-release", "release", "--key", str(pub)], clone, e)
    assert "verified" in ok.stdout
    (clone / "release" / "model" / "config.json").write_text("{}")
    bad = subprocess.run(["lucie", "verify-release", "release", "--key", str(pub)], cwd=clone, env=e,
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "model/config.json" in bad.stderr
