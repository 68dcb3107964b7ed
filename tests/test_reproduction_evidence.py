"""A `lucie verify` result is evidence for a release only when it covers the outputs the release was built from."""
from model_card.evidence import reproduction

LINEAGE = {"stages": {"ingest": {"data/raw": "a.dir"}, "pretrain": {"artifacts/models/base": "b.dir"}}}


def result(pretrain_md5="b.dir", status="reproduced", reproduced=True):
    return {"date": "2026-11-26T01:00:00Z", "git_commit": "c" * 40, "reproduced": reproduced,
            "environment": {"python": "3.11.7", "packages": {"torch": "2.13.0+cpu"}, "system": "linux", "machine": "x86_64"},
            "stages": {"ingest": {"status": "reproduced", "outs": [{"path": "data/raw", "actual": "a.dir"}]},
                       "pretrain": {"status": status, "outs": [{"path": "artifacts/models/base", "actual": pretrain_md5}]}}}


def test_reproduced_only_when_every_stage_and_md5_match():
    rep = reproduction(result(), LINEAGE)
    assert rep["status"] == "reproduced" and "all 2 pipeline stages" in rep["summary"] and "torch 2.13.0+cpu" in rep["summary"]


def test_a_verification_of_other_outputs_is_stale():
    rep = reproduction(result(pretrain_md5="other.dir"), LINEAGE)
    assert rep["status"] == "stale" and "pretrain: verified outputs differ from this release's (artifacts/models/base)" in rep["summary"]


def test_a_verification_that_saw_a_difference_is_failed_and_none_without_result():
    assert reproduction(result(status="differs", reproduced=False), LINEAGE)["status"] == "failed"
    assert reproduction(None, LINEAGE)["status"] == "none"
    assert reproduction(result(), {})["status"] == "stale"
