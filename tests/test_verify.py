"""`lucie verify`: the comparison on hand-made lock entries (fast), then real reruns of the cheap
stages in scratch clones: HEAD's ingest + filter reproduce; a committed `.dir` listing with one
tampered file md5 is reported as differing at that file; a missing input stops before any run."""
from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from lucie.cli import app
from lucie.verify import compare_stage, first_difference, load_result, summary
from repo_copy import PROJECT

runner = CliRunner()


def listing(**files) -> list:
    return [{"md5": md5, "relpath": rel} for rel, md5 in sorted(files.items())]


def entry(outs: dict, deps: dict | None = None, params: dict | None = None) -> dict:
    return {"cmd": "x", "deps": [{"path": p, "md5": m} for p, m in (deps or {}).items()],
            "params": {"params.yaml": params or {}}, "outs": [{"path": p, "md5": m} for p, m in outs.items()]}


def test_first_difference_is_in_relpath_order_and_counts_one_sided_files():
    a = listing(**{"a.txt": "1", "b/c.bin": "2", "d": "3"})
    b = listing(**{"a.txt": "1", "b/c.bin": "9", "e": "4"})
    assert first_difference(a, b) == {"file": "b/c.bin", "expected": "2", "actual": "9", "files_differing": 3}
    assert first_difference(a, listing(**{"a.txt": "1", "b/c.bin": "2"}))["file"] == "d"
    assert first_difference(a, a) is None


def test_compare_stage_verdicts():
    listings = {"g.dir": listing(x="1", y="2"), "n.dir": listing(x="1", y="5")}
    golden = entry({"data/x": "g.dir", "metrics/x.json": "m1"}, {"stages/x.py": "c1"}, {"x": {"k": 1}})
    same = compare_stage("x", golden, golden, listings.get, listings.get)
    assert same["status"] == "reproduced" and "inputs_changed" not in same
    assert [o["path"] for o in same["outs"]] == ["data/x", "metrics/x.json"]

    new = entry({"data/x": "n.dir", "metrics/x.json": "m1"}, {"stages/x.py": "c2"}, {"x": {"k": 2}})
    res = compare_stage("x", golden, new, listings.get, listings.get)
    assert res["status"] == "differs"
    bad = [o for o in res["outs"] if not o["identical"]]
    assert bad == [{"path": "data/x", "expected": "g.dir", "actual": "n.dir", "identical": False,
                    "first_difference": {"file": "y", "expected": "2", "actual": "5", "files_differing": 1}}]
    assert res["inputs_changed"] == ["stages/x.py", "params.yaml:x"]  # the lock was not made from this code

    no_listing = compare_stage("x", golden, new, lambda oid: None, listings.get)
    assert "first_difference" not in no_listing["outs"][0] and "dvc fetch" in no_listing["outs"][0]["note"]
    missing_out = compare_stage("x", golden, entry({"data/x": "g.dir"}), listings.get, listings.get)
    assert missing_out["status"] == "differs" and missing_out["outs"][1]["actual"] is None
    # release and publish are compared like every stage (their code identity survives a lock-only commit)
    assert compare_stage("release", golden, new, listings.get, listings.get)["status"] == "differs"
    assert compare_stage("publish", golden, golden, listings.get, listings.get)["status"] == "reproduced"
    assert compare_stage("x", None, new, listings.get, listings.get)["status"] == "no_golden"


def test_load_result_rejects_what_is_not_a_result(tmp_path):
    assert load_result(tmp_path / "absent.json") is None
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_result(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"schema": "something-else"}')
    with pytest.raises(ValueError, match="lucie-verify/1"):
        load_result(tmp_path / "other.json")


def test_unknown_stage_is_refused(tmp_path):
    res = runner.invoke(app, ["verify", "nope", "--root", str(PROJECT), "--scratch", str(tmp_path),
                              "--out", str(tmp_path / "v.json")])
    assert res.exit_code == 2 and "nope" in res.output and "filter" in res.output
    assert not (tmp_path / "v.json").exists()
    assert list(tmp_path.iterdir()) == []  # the scratch copy is removed


@pytest.fixture(scope="module")
def verified(tmp_path_factory):
    """`lucie verify filter` on the project: HEAD's ingest and filter rerun in a kept scratch clone."""
    tmp = tmp_path_factory.mktemp("verify")
    res = runner.invoke(app, ["verify", "filter", "--root", str(PROJECT), "--keep-scratch",
                              "--scratch", str(tmp), "--out", str(tmp / "v.json")])
    return {"res": res, "tmp": tmp, "result": load_result(tmp / "v.json")}


@pytest.mark.slow
def test_head_reproduces_ingest_and_filter(verified):
    res, result = verified["res"], verified["result"]
    assert res.exit_code == 0, res.output
    assert "[1/2] ingest     reproduced" in res.output and "[2/2] filter     reproduced" in res.output
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT, capture_output=True, text=True).stdout.strip()
    committed_lock = subprocess.run(["git", "show", "HEAD:dvc.lock"], cwd=PROJECT, capture_output=True).stdout
    assert result["git_commit"] == head
    assert result["dvc_lock_sha256"] == hashlib.sha256(committed_lock).hexdigest()
    assert list(result["stages"]) == ["ingest", "filter"] and result["reproduced"] and not result["all_stages"]
    golden = yaml.safe_load(committed_lock)["stages"]
    for name in ("ingest", "filter"):
        outs = {o["path"]: o["actual"] for o in result["stages"][name]["outs"]}
        assert outs == {o["path"]: o["md5"] for o in golden[name]["outs"]}
        assert "inputs_changed" not in result["stages"][name]
    assert [i["path"] for i in result["inputs"]] == ["assets/lid/lid.176.ftz"]
    env = result["environment"]
    assert env["packages"]["torch"].startswith("2.13.0") and env["cpu_count"] >= 1
    assert len(env["requirements_lock"]["sha256"]) == 64
    text = summary(result)
    assert text.startswith(f"reproduced 2/2 stages byte-for-byte on {result['date'][:10]} with Python ")
    assert text in res.output and "partial" in text


@pytest.mark.slow
def test_stage_runs_are_tracked_in_the_scratch_at_the_real_commit(verified):
    from mlflow import MlflowClient

    scratch = Path(verified["result"]["scratch"])
    client = MlflowClient(f"sqlite:///{scratch.parent}/mlflow.db")  # MLFLOW_TRACKING_URI verify set
    runs = client.search_runs([client.get_experiment_by_name("lucie-repro").experiment_id], "tags.`lucie.role` = 'stage'")
    assert sorted(r.data.tags["dvc_stage"] for r in runs) == ["filter", "ingest"]
    assert {r.data.tags["git_commit"] for r in runs} == {verified["result"]["git_commit"]}


def git(repo, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", *args], cwd=repo, check=True,
                   capture_output=True)


@pytest.mark.slow
def test_tampered_committed_listing_is_reported_at_the_differing_file(verified, tmp_path):
    """A repo whose committed dvc.lock points data/raw at a listing with one file's md5 changed."""
    repo = Path(verified["result"]["scratch"])
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    raw = next(o for o in lock["stages"]["ingest"]["outs"] if o["path"] == "data/raw")
    cache = repo / ".dvc/cache/files/md5"
    files = json.loads((cache / raw["md5"][:2] / raw["md5"][2:]).read_text())
    target = next(f for f in files if f["relpath"].endswith(".parquet"))
    real = target["md5"]
    target["md5"] = "0" * 32
    body = json.dumps(files).encode()
    oid = hashlib.md5(body).hexdigest() + ".dir"
    (cache / oid[:2]).mkdir(exist_ok=True)
    (cache / oid[:2] / oid[2:]).write_bytes(body)
    raw["md5"] = oid
    (repo / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    git(repo, "add", "dvc.lock")
    git(repo, "commit", "-qm", "tampered golden")

    res = runner.invoke(app, ["verify", "ingest", "--root", str(repo), "--scratch", str(tmp_path),
                              "--out", str(tmp_path / "v.json")])
    assert res.exit_code == 1, res.output
    assert f"data/raw (first differing file: {target['relpath']})" in res.output
    result = load_result(tmp_path / "v.json")
    assert not result["reproduced"] and result["counts"]["differs"] == 1
    out = next(o for o in result["stages"]["ingest"]["outs"] if o["path"] == "data/raw")
    assert out["expected"] == oid and not out["identical"]
    assert out["first_difference"] == {"file": target["relpath"], "expected": "0" * 32, "actual": real,
                                       "files_differing": 1}
    assert "not reproduced: ingest (differs)" in summary(result)


@pytest.mark.slow
def test_missing_input_stops_before_running(verified, tmp_path):
    repo = Path(verified["result"]["scratch"])
    (repo / "assets/lid/lid.176.ftz").unlink()
    res = runner.invoke(app, ["verify", "filter", "--root", str(repo), "--scratch", str(tmp_path),
                              "--out", str(tmp_path / "v.json")])
    assert res.exit_code == 2
    assert "assets/lid/lid.176.ftz" in res.output and "make setup" in res.output
    assert "[1/" not in res.output and not (tmp_path / "v.json").exists()
