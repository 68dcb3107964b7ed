"""A partial `lucie verify STAGE` merges into verification.json instead of overwriting the full result
(issue 16.8), and `publish.require` / `--require` can gate on the reproduction status."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from lucie.cli import app
from lucie.verify import load_result
from lucie.verify_merge import merge
from model_card.require import RequirementError, failures, parse

PROJECT = Path(__file__).resolve().parent.parent
LOCK = {n: {"outs": [{"path": f"out/{n}", "md5": f"md5-{n}"}]} for n in ("ingest", "filter", "dedup", "release")}


def stage(name: str, status: str = "reproduced", md5: str | None = None) -> dict:
    if status == "not_compared":
        return {"status": status, "reason": "x"}
    m = md5 or f"md5-{name}"
    return {"status": status, "outs": [{"path": f"out/{name}", "expected": m, "actual": m, "identical": True}]}


def result(date: str, stages: dict, all_stages: bool, lock_sha: str = "L1") -> dict:
    return {"schema": "lucie-verify/1", "date": date, "git_commit": f"c-{date}", "dvc_lock_sha256": lock_sha,
            "requested": [] if all_stages else list(stages), "all_stages": all_stages, "stages": stages,
            "counts": {}, "reproduced": True}


FULL = result("d1", {"ingest": stage("ingest"), "filter": stage("filter"), "dedup": stage("dedup"),
                     "release": stage("release", "not_compared")}, True)


def test_a_partial_run_keeps_the_other_stages():
    m = merge(FULL, result("d2", {"ingest": stage("ingest")}, False), LOCK)
    assert list(m["stages"]) == ["ingest", "filter", "dedup", "release"]
    assert m["stages"]["ingest"]["date"] == "d2" and m["stages"]["filter"]["date"] == "d1"
    assert m["all_stages"] and m["reproduced"] and m["counts"]["reproduced"] == 3 and m["counts"]["compared"] == 3
    assert m["merge"]["runs"][0]["date"] == "d1" and m["merge"]["dropped"] == []


def test_a_partial_failure_is_not_hidden_by_earlier_successes():
    m = merge(FULL, result("d2", {"ingest": stage("ingest", "differs")}, False), LOCK)
    assert not m["reproduced"] and m["stages"]["ingest"]["status"] == "differs"


def test_stage_results_about_other_outputs_are_dropped():
    lock = {**LOCK, "dedup": {"outs": [{"path": "out/dedup", "md5": "changed"}]}}
    m = merge(FULL, result("d2", {"ingest": stage("ingest")}, False, "L2"), lock)
    assert "dedup" not in m["stages"] and m["merge"]["dropped"] == ["dedup"] and not m["all_stages"]


def test_a_full_run_replaces_the_file():
    new = result("d2", {"ingest": stage("ingest")}, True)
    assert merge(FULL, new, LOCK) is new


@pytest.mark.slow
def test_lucie_verify_ingest_merges_into_the_full_result(tmp_path):
    """The real command: a full result on disk, then `lucie verify ingest` with --out pointing at it."""
    full = load_result(PROJECT / "verification.json")
    if not full or not full.get("all_stages"):
        pytest.skip("the project's verification.json is not a full result")
    out = tmp_path / "v.json"
    shutil.copy(PROJECT / "verification.json", out)
    res = CliRunner().invoke(app, ["verify", "ingest", "--root", str(PROJECT), "--scratch", str(tmp_path),
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    merged = load_result(out)
    lock = yaml.safe_load(subprocess.run(["git", "show", "HEAD:dvc.lock"], cwd=PROJECT, capture_output=True,
                                         text=True).stdout)["stages"]
    still = {n for n, r in full["stages"].items() if n != "ingest" and (
        r["status"] == "not_compared" and n in lock or "outs" in r and
        {o["path"]: o["expected"] for o in r["outs"]} == {o["path"]: o.get("md5") for o in lock.get(n, {}).get("outs", [])})}
    assert set(merged["stages"]) == still | {"ingest"}
    assert merged["stages"]["ingest"]["date"] == merged["date"] != full["date"]
    assert merged["merge"]["runs"][-1]["date"] == full["date"]
    assert sorted(merged["merge"]["dropped"]) == sorted(set(full["stages"]) - still - {"ingest"})


def card(status: str) -> dict:
    return {"evidence": {"reproduction": {"status": status, "summary": "s"}}}


def test_reproduction_requirement():
    assert parse("reproduced") == ("reproduced", None)
    assert failures(card("reproduced"), ["reproduced"]) == []
    for status in ("stale", "failed", "none"):
        (line,) = failures(card(status), ["reproduced"])
        assert line.startswith(f"reproduced: reproduction is {status}")
    with pytest.raises(RequirementError):
        parse("reproduced=yes")


def test_publish_params_accept_the_reproduction_gate():
    from stages.core import params as P
    from test_params import with_value

    assert P.parse(with_value("publish.require", ["reproduced", "osaid"])).publish.require == ["reproduced", "osaid"]
    with pytest.raises(P.ParamsError, match="publish.require"):
        P.parse(with_value("publish.require", ["reproducd"]))
