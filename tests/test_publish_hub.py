"""`lucie publish` with the real HfApi over real HTTP, against tests/hub_double.py.

huggingface_hub reads HF_HUB_OFFLINE and HF_HUB_DISABLE_XET once, at import (constants.py), and the
suite sets HF_HUB_OFFLINE=1; so the fixture patches both the environment (for subprocesses) and the
constants module (for this process). With Xet disabled the client takes the LFS path the double serves.
"""
from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from hub_double import HubDouble
from lucie.cli import app
from stages import publish
from test_publish import make_release, seal

TOKEN = "hf_LucieTestTok3n_7c2f9a1e5b8d4630"  # distinctive, so any leak is found by a plain search
ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()
MODEL, INSTRUCT, DATA = "me/m", "me/m-instruct", "me/m-data"


@pytest.fixture
def hub(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with HubDouble(TOKEN) as double:
        yield double


@pytest.fixture
def project(tmp_path):
    """A root with params.yaml (repos me/m, me/m-instruct, me/m-data; tracking off) and a release."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["publish"].update({"model_repo": MODEL, "dataset_repo": DATA, "require": ["nextcloud=green"]})
    raw["tracking"]["enabled"] = False
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    make_release(tmp_path)
    return tmp_path


def cli(root, hub, *args):
    return runner.invoke(app, ["publish", "--root", str(root), "--endpoint", hub.url, *args])


def writes(hub) -> list:
    return [(m, p) for m, p, _ in hub.requests if m in ("POST", "PUT") and not p.endswith(("/preupload/main", "/validate-yaml"))]


def test_push_then_an_unchanged_release_makes_no_commit(project, hub):
    r = project / "release"
    res = cli(project, hub, "--yes")
    assert res.exit_code == 0, res.output
    # main of each repo: the Hub's initial commit + one release commit; each checkpoint branch likewise.
    assert {k: len(hub.history(*k)) for k in hub.repos} == {("models", MODEL): 2, ("models", INSTRUCT): 2, ("datasets", DATA): 2}
    assert len(hub.history("models", MODEL, "step0000075")) == 2
    model = hub.files("models", MODEL)
    assert model["model.safetensors"] == (r / "model/model.safetensors").read_bytes()
    assert model["code/src.tar.gz"] == (r / "code/src.tar.gz").read_bytes()
    assert model["release_manifest.json"] == (r / "MANIFEST.json").read_bytes()
    assert set(hub.files("models", MODEL, "step0000075")) == {".gitattributes", "config.json", "model.safetensors"}
    assert hub.files("models", MODEL, "extension_step0000025")["model.safetensors"] == \
        (r / "checkpoints/extension_step0000025/model.safetensors").read_bytes()
    # Weights went through LFS (PUT, sha256 checked by the double), small text files inline.
    head = hub.repos[("models", MODEL)].commits[hub.history("models", MODEL)[0]]["files"]
    assert head["model.safetensors"].lfs and head["config.json"].lfs is None
    assert ("PUT", f"/lfs-upload/{publish.files.sha256_file(r / 'model/model.safetensors')}") in [(m, p) for m, p, _ in hub.requests]
    for kind, repo in hub.repos:
        assert hub.repos[(kind, repo)].tags == {"release-1f25c805eba6": hub.history(kind, repo)[0]}
        assert hub.repos[(kind, repo)].private  # publish.private: true
    # Every API call carried the token; the LFS PUT to the storage URL did not (the Hub hands out presigned URLs).
    assert {(m, p.startswith("/lfs-upload/")) for m, p, auth in hub.requests if not auth} == {("PUT", True)}
    assert "every file read back with the sha256 of the release" in res.stdout

    n_requests = len(hub.requests)
    again = cli(project, hub, "--yes")
    assert again.exit_code == 0, again.output
    assert {k: len(hub.history(*k)) for k in hub.repos} == {("models", MODEL): 2, ("models", INSTRUCT): 2, ("datasets", DATA): 2}
    assert len(hub.history("models", MODEL, "step0000075")) == 2
    assert {m for m, _, _ in hub.requests[n_requests:]} == {"GET", "HEAD"}  # no create_repo, branch, tag, commit
    assert again.stdout.count("unchanged, no commit") == 5

    dry = cli(project, hub)
    assert dry.exit_code == 0 and "unchanged: no commit" in dry.stdout and "0 commits to make" in dry.stdout


def test_a_new_release_commits_only_what_changed_and_deletes_what_is_gone(project, hub):
    r = project / "release"
    assert cli(project, hub, "--yes").exit_code == 0
    (r / "model/technical_report.md").write_text("# report, revised\n")
    (r / "model/training_logs/pretrain_loss.csv").unlink()
    seal(r)  # a rebuilt release: new manifest and card
    dry = cli(project, hub, "--tag", "release-2")
    assert dry.exit_code == 0, dry.output
    model_block = dry.stdout.split("model me/m @ main")[1].split("\n\n")[0]
    assert "changed" in model_block and "technical_report.md" in model_block and "delete" in model_block
    assert "training_logs/pretrain_loss.csv" in model_block
    res = cli(project, hub, "--yes", "--tag", "release-2")
    assert res.exit_code == 0, res.output
    assert len(hub.history("models", MODEL)) == 3  # one more commit on each repo: every repo carries the
    # release manifest and card (so it audits alone, model_card.published_repo), and only those changed there
    for kind, repo in (("models", INSTRUCT), ("datasets", DATA)):
        assert len(hub.history(kind, repo)) == 3
        old, new = (hub.repos[(kind, repo)].commits[c]["files"] for c in hub.history(kind, repo)[:2][::-1])
        assert {p for p in set(old) | set(new) if old.get(p) != new.get(p)} <= {
            "release_manifest.json", "openness/openness.json", "openness/openness.md"}
    assert "training_logs/pretrain_loss.csv" not in hub.files("models", MODEL)
    assert hub.repos[("models", MODEL)].tags["release-2"] == hub.history("models", MODEL)[0]
    assert hub.repos[("models", INSTRUCT)].tags["release-2"] == hub.history("models", INSTRUCT)[0]
    # Reusing the first tag for the changed release is refused before anything is pushed.
    (r / "model/technical_report.md").write_text("# third\n")
    seal(r)
    before = len(writes(hub))
    clash = cli(project, hub, "--yes", "--tag", "release-2")
    assert clash.exit_code == 1 and "tag: release-2 already names commit" in clash.output
    assert len(writes(hub)) == before


def test_the_dry_run_reads_only_and_shows_the_plan(project, hub):
    res = cli(project, hub)
    assert res.exit_code == 0, res.output
    assert [m for m, _, _ in hub.requests] and {m for m, _, _ in hub.requests} == {"GET"}
    out = res.stdout
    assert "model me/m @ step0000075  [new repo] -> 1 commit: 2 to upload" in out
    assert "dataset me/m-data @ main  [new repo]" in out
    assert "Tag      release-1f25c805eba6" in out and "Dry run: nothing was pushed" in out
    assert "token: HF_TOKEN environment variable" in out
    line = next(x for x in out.splitlines() if x.endswith(" model.safetensors") and "new" in x)
    assert "4.0 KiB" in line and " lfs " in line
    assert next(x for x in out.splitlines() if x.endswith(" config.json")).split()[-2] == "git"


def test_a_tampered_file_is_refused_and_nothing_is_pushed(project, hub):
    with open(project / "release/dataset/data/en/sample-en/part-00000.parquet", "r+b") as f:
        f.write(b"PAR2")
    res = cli(project, hub, "--yes")
    assert res.exit_code == 1
    assert "lineage: dataset/data/en/sample-en/part-00000.parquet has sha256" in res.stderr
    assert "nothing was pushed" in res.stderr and writes(hub) == [] and hub.repos == {}


def test_an_unmet_requirement_is_refused_and_nothing_is_pushed(project, hub):
    res = cli(project, hub, "--yes")  # passes with require [nextcloud=green] ...
    assert res.exit_code == 0
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["publish"]["require"] = ["osaid", "mof-class=1"]
    (project / "params.yaml").write_text(yaml.safe_dump(raw))
    n = len(writes(hub))
    res = cli(project, hub, "--yes", "--tag", "other")
    assert res.exit_code == 1
    assert "publish.require: osaid: not compliant" in res.stderr and "publish.require: mof-class=1" in res.stderr
    assert len(writes(hub)) == n and "other" not in hub.repos[("models", MODEL)].tags


def test_the_read_back_names_a_file_the_hub_serves_wrong(project, hub):
    hub.corrupt.add((MODEL, "model.safetensors"))  # metadata right, bytes wrong (same size)
    res = cli(project, hub, "--yes")
    assert res.exit_code == 1
    assert "read-back sha256 check failed" in res.stderr
    lines = [x.strip() for x in res.stderr.splitlines() if "read back with sha256" in x]
    assert [x.split(" (")[0] for x in lines] == ["me/m@extension_step0000025", "me/m@step0000075", "me/m@main"]
    assert all(x.split(": ", 1)[1].startswith("model.safetensors read back with sha256") for x in lines)


def test_the_dvc_stage_hub_target_fills_published_with_what_was_read_back(project, hub, make_ctx, monkeypatch):
    from huggingface_hub import constants

    # What HF_ENDPOINT sets when huggingface_hub is imported (both names are computed once, from it).
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}")
    ctx = make_ctx("publish", {"publish.target": "hub", "publish.model_repo": MODEL, "publish.dataset_repo": DATA,
                               "publish.require": []}, root=project)
    publish.run(ctx)
    out = project / "published"
    assert (out / "models/me/m/model.safetensors").read_bytes() == (project / "release/model/model.safetensors").read_bytes()
    assert (out / "models/me/m@step0000075/config.json").exists() and (out / "datasets/me/m-data/README.md").exists()
    metrics = json.loads((project / "metrics/publish.json").read_text())
    assert metrics["target"] == "hub" and metrics["repos"]["model"]["new_commit"] is True


def test_offline_or_without_a_token_the_push_is_refused(project, hub, monkeypatch, make_ctx):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(project / "no-token"))
    res = cli(project, hub, "--yes")
    assert res.exit_code == 1 and "--yes needs a token" in res.stderr and writes(hub) == []
    assert {m for m, _, _ in hub.requests} == {"GET"} and not any(auth for _, _, auth in hub.requests)
    n = len(hub.requests)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    dry = cli(project, hub)
    assert dry.exit_code == 0 and "not compared: HF_HUB_OFFLINE is set" in dry.stdout and len(hub.requests) == n
    with pytest.raises(publish.PublishError, match="HF_HUB_OFFLINE"):
        publish.publish_hub(project / "release", make_ctx().params)


def test_hfapi_itself_skips_unchanged_files(tmp_path, hub):
    """What huggingface_hub 2.4.0 does on its own: preupload returns each remote file's oid (sha256 for
    LFS, git blob id otherwise), and create_commit drops adds whose content is unchanged; with nothing
    left it makes no commit. `lucie publish` does not rely on it (it diffs first), but it is the fallback."""
    from huggingface_hub import HfApi

    (tmp_path / "d").mkdir()
    (tmp_path / "d/a.txt").write_text("a")
    (tmp_path / "d/w.safetensors").write_bytes(b"\0" * 100)
    api = HfApi(endpoint=hub.url, token=TOKEN)
    api.create_repo("me/x", exist_ok=True)
    first = api.upload_folder(folder_path=tmp_path / "d", repo_id="me/x", commit_message="one")
    second = api.upload_folder(folder_path=tmp_path / "d", repo_id="me/x", commit_message="two")
    assert first.oid == second.oid and len(hub.history("models", "me/x")) == 2


def test_the_token_appears_nowhere(project, hub, tmp_path):
    """A real `lucie publish --yes` process logging to MLflow: the token must not be in its output, its
    report, the release, the MLflow store; nor in the error of a failed push."""
    db = tmp_path / "mlruns.db"
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["tracking"] = {"enabled": True, "uri": f"sqlite:///{db}", "experiment": "publish-test"}
    (project / "params.yaml").write_text(yaml.safe_dump(raw))
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "MLFLOW_TRACKING_URI")}
    env.update({"HF_TOKEN": TOKEN, "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_DEBUG": "1"})
    report = tmp_path / "report.json"
    args = [sys.executable, "-m", "lucie.cli", "publish", "--root", str(project), "--endpoint", hub.url, "--yes",
            "--report", str(report)]
    run = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert all(auth for m, _, auth in hub.requests if m != "PUT") and hub.requests  # the token was used ...
    assert TOKEN not in run.stdout and TOKEN not in run.stderr  # ... and never shown (even with HF_DEBUG)
    pushed = json.loads(report.read_text())["pushed"]
    assert pushed["tag"] == "release-1f25c805eba6" and len(pushed["trees"]) == 5
    for f in [p for p in tmp_path.rglob("*") if p.is_file()]:  # report, release, MLflow db, published files
        assert TOKEN.encode() not in f.read_bytes(), f
    with sqlite3.connect(db) as con:
        params = dict(con.execute("select key, value from params").fetchall())
        tags = dict(con.execute("select key, value from tags").fetchall())
    assert params["tag"] == "release-1f25c805eba6" and "published_commits" in tags
    assert not [v for v in (*params.values(), *tags.values()) if TOKEN in str(v)]
    # A failed push (the Hub rejects the token) reports the error without the token.
    env["HF_TOKEN"] = TOKEN + "_revoked"
    failed = subprocess.run(args[:-2], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert failed.returncode == 1 and "401 Unauthorized" in failed.stderr and "nothing was pushed" in failed.stderr
    assert TOKEN not in failed.stdout and TOKEN not in failed.stderr


def test_an_unreachable_hub_is_said_once(project, hub):
    """A dry run that cannot reach the Hub says why once, with what it means, not once per tree."""
    import socket

    with socket.socket() as s:  # a port nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = runner.invoke(app, ["publish", "--root", str(project), "--endpoint", f"http://127.0.0.1:{port}"])
    assert res.exit_code == 0, res.output
    assert res.stdout.count("ConnectError") == 1 and res.stdout.count("not compared") == 1
    assert "each tree below lists every file of the release instead of a diff" in res.stdout
    trees = [ln for ln in res.stdout.splitlines() if " @ " in ln and "->" in ln]
    assert len(trees) > 3 and all(re.search(r" -> \d+ files \(", ln) and "[" not in ln for ln in trees), trees
