"""publish: Hub-shaped local target, and a read-back that catches a wrong file."""
from __future__ import annotations

import json

from stages import publish
from stages.io import sha256_file


def tiny_release(tmp_path):
    r = tmp_path / "release"
    for sub in ("model", "instruct", "dataset", "openness"):
        (r / sub).mkdir(parents=True)
    (r / "model/model.safetensors").write_bytes(b"w")
    (r / "instruct/model.safetensors").write_bytes(b"i")
    (r / "dataset/README.md").write_text("data")
    (r / "openness/openness.json").write_text("{}")
    files = {str(p.relative_to(r)): sha256_file(p) for p in r.rglob("*") if p.is_file() and p.parts[-2] != "openness"}
    (r / "MANIFEST.json").write_text(json.dumps({"files": files}))
    return r


def test_read_back_catches_a_file_that_differs(tmp_path):
    r = tiny_release(tmp_path)
    plan = {"model": ("model", "me/m"), "instruct": ("model", "me/m-instruct"), "dataset": ("dataset", "me/d")}
    out = publish.publish_local(r, tmp_path / "published", plan)
    assert (tmp_path / "published/models/me/m/openness/openness.json").exists()
    assert (tmp_path / "published/models/me/m/release_manifest.json").exists()
    report = publish.verify(r, out)
    assert all(v["mismatched"] == [] for v in report.values()) and report["model"]["files"] == 3
    (out["model"] / "model.safetensors").write_bytes(b"not the released weights")
    assert publish.verify(r, out)["model"]["mismatched"] == ["model.safetensors"]
