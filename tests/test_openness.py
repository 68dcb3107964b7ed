"""Evidence collection and the Nextcloud rating, on small release trees built here."""
from __future__ import annotations

import json

from model_card import nextcloud, render
from model_card.evidence import collect_release
from stages.core.files import sha256_file


def release_tree(tmp_path, data_license="cc0-1.0", weights=True, code_license="Apache-2.0", dirty=False):
    r = tmp_path / "release"
    (r / "model").mkdir(parents=True)
    (r / "dataset/data/en/s").mkdir(parents=True)
    (r / "code").mkdir()
    if weights:
        (r / "model/model.safetensors").write_bytes(b"weights")
    (r / "model/README.md").write_text("---\nlicense: apache-2.0\n---\n# card\n")
    (r / "dataset/README.md").write_text(f"---\nlicense: {data_license}\n---\n# data\n")
    (r / "dataset/data/en/s/part-00000.parquet").write_bytes(b"rows")
    (r / "dataset/data/en/s/part-00001.parquet").write_bytes(b"more rows")
    (r / "code/src.tar.gz").write_bytes(b"code")
    (r / "code/code.json").write_text(json.dumps({"archive": "src.tar.gz", "license": code_license, "commit": "abc",
                                                        "dirty_worktree": dirty}))
    files = {str(p.relative_to(r)): sha256_file(p) for p in sorted(r.rglob("*")) if p.is_file()}
    (r / "MANIFEST.json").write_text(json.dumps({"files": files, "lineage": {"git_commit": "abc"}}))
    return r


def test_complete_open_release_is_green_and_verified(tmp_path):
    card = render.audit(collect_release(release_tree(tmp_path)))
    assert card["nextcloud"]["color"] == "green"
    assert all(c["verified"] for c in card["nextcloud"]["conditions"].values())
    assert "GREEN" in render.to_markdown(card) and "<svg" in render.badge_svg(card)


def test_each_missing_condition_lowers_the_colour(tmp_path):
    assert nextcloud.rate(collect_release(release_tree(tmp_path / "a", data_license="cc-by-nc-sa-4.0")))["color"] == "yellow"
    assert nextcloud.rate(collect_release(release_tree(tmp_path / "b", weights=False)))["color"] == "yellow"
    r = release_tree(tmp_path / "c", data_license="cc-by-nc-4.0", weights=False, code_license="LicenseRef-proprietary")
    rating = nextcloud.rate(collect_release(r))
    assert rating["color"] == "red" and rating["conditions_met"] == 0


def test_a_tampered_file_is_released_but_not_verified(tmp_path):
    r = release_tree(tmp_path)
    (r / "model/model.safetensors").write_bytes(b"other weights")
    item = collect_release(r).get("Model parameters (Final)")
    assert item.released and not item.verified and "differs" in item.note
    card = render.audit(collect_release(r))
    assert card["nextcloud"]["conditions"]["model_self_hostable"] == {
        "met": True, "why": "weights at model/model.safetensors", "verified": False}


def test_every_dataset_file_counts(tmp_path):
    r = release_tree(tmp_path)
    (r / "dataset/data/en/s/part-00001.parquet").write_bytes(b"swapped rows")
    item = collect_release(r).get("Datasets")
    assert item.released and not item.verified and item.note.startswith("1 of 2 files")


def test_code_built_from_a_modified_worktree_is_only_claimed(tmp_path):
    ev = collect_release(release_tree(tmp_path, dirty=True))
    code = ev.get("Training code")
    assert code.released and not code.verified and "modified worktree" in code.note
    nc1 = nextcloud.rate(ev)["conditions"]["open_source_software"]
    assert nc1["met"] and not nc1["verified"]


def test_the_audit_covers_all_four_frameworks_and_names_what_is_missing(tmp_path):
    card = render.audit(collect_release(release_tree(tmp_path)))
    assert set(card) == {"limits", "osaid", "mof", "osai_index", "nextcloud", "evidence"}
    # The small tree has no supporting-libraries component: OSAID must say exactly that.
    assert not card["osaid"]["compliant"]
    assert any("Supporting libraries and tools" in f["why"] for f in card["osaid"]["failures"])
    assert card["mof"]["class"] in (0, 1, 2, 3) and set(card["mof"]["progress"]) == {"1", "2", "3"}
    assert len(card["osai_index"]["parameters"]) == 12 and 0 <= card["osai_index"]["score"] <= 1
    md = render.to_markdown(card)
    assert "not compliant" in md and "Supporting libraries and tools" in md


def test_the_mof_export_is_a_valid_mot_record(tmp_path):
    from pathlib import Path

    import jsonschema
    import pytest
    import yaml

    from model_card import mof, mof_export

    schema_path = Path(__file__).resolve().parent.parent.parent / "shared/openness/mof_schema.json"
    if not schema_path.exists():
        pytest.skip(f"MOF schema not found at {schema_path} (CI keeps shared/ beside the clone)")
    record = mof_export.to_record(collect_release(release_tree(tmp_path)), "tiny", "2026-11-25", producer="me")
    jsonschema.validate(yaml.safe_load(mof_export.to_yaml(record)), json.loads(schema_path.read_text()))
    result = mof.evaluate(record)
    assert result["components"]["Model parameters (Final)"]["status"] == "included"
    assert result["components"]["Model parameters (Final)"]["license"] == "Apache-2.0"  # SPDX spelling, not apache-2.0
