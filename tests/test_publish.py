"""publish: Hub-shaped local target, the gates (lineage, card, publish.require), and a read-back that
catches a wrong file. No network here; tests/test_publish_hub.py drives the real HfApi."""
from __future__ import annotations

import json
import subprocess

import pytest

from model_card import render
from model_card.evidence import collect_release
from stages import publish
from stages.lib import hub_client
from stages.core.files import sha256_file
from stages.core.params import ParamsError

CODE_TREE = "1f25c805eba621ab9bfcb2206c88b173830ccd3b"  # release lineage names the code tree (stages/lib/code_tree.py)
CHECKPOINTS = ("extension_step0000025", "step0000075")


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


def seal(r):
    """What the release stage does last: the manifest of every file, then the card computed from the tree."""
    files = {p.relative_to(r).as_posix(): sha256_file(p) for p in sorted(r.rglob("*"))
             if p.is_file() and p.name != "MANIFEST.json" and p.relative_to(r).parts[0] != "openness"}
    (r / "MANIFEST.json").write_text(json.dumps({"files": files, "lineage": {"code_tree": CODE_TREE}}, indent=1))
    card = render.audit(collect_release(r, "release"))
    (r / "openness").mkdir(exist_ok=True)
    (r / "openness/openness.json").write_text(render.to_json(card))
    (r / "openness/openness.md").write_text(render.to_markdown(card))
    return r


def make_release(tmp_path, checkpoints=CHECKPOINTS):
    """A small but complete release: two models, a dataset, the code archive, checkpoints, card, manifest."""
    r = tmp_path / "release"
    weights = bytes(range(256)) * 16  # 4 KiB, binary: LFS by extension and by content
    for sub, salt in (("model", b"base"), ("instruct", b"inst")):
        (r / sub / "training_logs").mkdir(parents=True)
        (r / sub / "model.safetensors").write_bytes(salt + weights)
        (r / sub / "config.json").write_text(json.dumps({"model_type": "llama", "variant": sub}))
        (r / sub / "README.md").write_text(f"---\nlicense: apache-2.0\nlanguage: [fr, en]\n---\n# {sub}\n")
        (r / sub / "training_logs/pretrain_loss.csv").write_text("step,loss\n1,9.1\n2,8.7\n")
    (r / "model/eval_results.json").write_text('{"arc": 0.3}')
    (r / "model/technical_report.md").write_text("# report\n")
    (r / "dataset/data/en/sample-en").mkdir(parents=True)
    (r / "dataset/README.md").write_text("---\nlicense: cc0-1.0\n---\n# data\n")
    (r / "dataset/data/en/sample-en/part-00000.parquet").write_bytes(b"PAR1" + weights[:500] + b"PAR1")
    (r / "code").mkdir()
    (r / "code/src.tar.gz").write_bytes(b"\x1f\x8b" + weights[:300])
    (r / "code/code.json").write_text(json.dumps({"archive": "src.tar.gz", "license": "Apache-2.0",
                                                  "tree": CODE_TREE, "dirty_worktree": False}))
    for i, rev in enumerate(checkpoints):
        (r / "checkpoints" / rev).mkdir(parents=True)
        (r / "checkpoints" / rev / "model.safetensors").write_bytes(bytes([i]) + weights)
        (r / "checkpoints" / rev / "config.json").write_text(json.dumps({"model_type": "llama", "step": rev}))
    return seal(r)


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


def test_local_target_has_a_tree_per_branch_and_the_code_in_the_model_repo(tmp_path):
    r = make_release(tmp_path)
    plan = {"model": ("model", "me/m"), "instruct": ("model", "me/m-instruct"), "dataset": ("dataset", "me/d")}
    out = publish.publish_local(r, tmp_path / "published", plan)
    assert sorted(out) == ["dataset", "instruct", "model", "model@extension_step0000025", "model@step0000075"]
    branch = tmp_path / "published/models/me/m@step0000075"
    assert sorted(p.name for p in branch.iterdir()) == ["config.json", "model.safetensors"]
    assert (branch / "model.safetensors").read_bytes() == (r / "checkpoints/step0000075/model.safetensors").read_bytes()
    assert (tmp_path / "published/models/me/m/code/src.tar.gz").exists()
    assert not (tmp_path / "published/models/me/m/checkpoints").exists()  # checkpoints go to branches only
    assert all(v["mismatched"] == [] for v in publish.verify(r, out).values())
    # Without revision branches only the three main trees are laid out.
    assert sorted(publish.publish_local(r, tmp_path / "p2", plan, branches=False)) == ["dataset", "instruct", "model"]


def test_a_complete_release_passes_every_gate(tmp_path):
    rel = publish.check(make_release(tmp_path), [])
    assert rel.problems == []
    assert rel.keys == ["model@extension_step0000025", "model@step0000075", "model", "instruct", "dataset"]
    assert rel.sha[tmp_path / "release/model/model.safetensors"] == sha256_file(tmp_path / "release/model/model.safetensors")
    assert publish.tag_name("release-{code}", rel, "tiny") == "release-1f25c805eba6"
    assert publish.tag_name("{recipe}-{code}", rel, "tiny") == "tiny-1f25c805eba6"


def test_the_lineage_gate_names_a_tampered_an_unlisted_and_a_missing_file(tmp_path):
    r = make_release(tmp_path)
    with open(r / "instruct/model.safetensors", "r+b") as f:  # one flipped byte, same size
        f.write(b"X")
    (r / "dataset/data/en/sample-en/extra.parquet").write_bytes(b"smuggled")
    (r / "checkpoints/step0000075/config.json").unlink()
    problems = publish.check(r, []).problems
    assert any("instruct/model.safetensors has sha256" in p and "MANIFEST.json says" in p for p in problems)
    assert "lineage: dataset/data/en/sample-en/extra.parquet is not listed in MANIFEST.json" in problems
    assert "lineage: checkpoints/step0000075/config.json is listed in MANIFEST.json but missing" in problems


def test_an_edited_card_is_refused_and_the_message_says_whether_ratings_moved(tmp_path):
    r = make_release(tmp_path)
    card = json.loads((r / "openness/openness.json").read_text())
    card["nextcloud"]["color"] = "green" if card["nextcloud"]["color"] != "green" else "red"
    (r / "openness/openness.json").write_text(json.dumps(card))
    (msg,) = publish.check(r, []).problems
    assert msg.startswith("card: openness/openness.json differs") and "ratings differ: nextcloud" in msg


def test_the_require_gate_uses_the_recomputed_card(tmp_path):
    r = make_release(tmp_path)
    card = publish.check(r, []).card  # the fixture: MOF Class 3, Nextcloud green, not OSAID (no libraries)
    assert (card["mof"]["class"], card["nextcloud"]["color"], card["osaid"]["compliant"]) == (3, "green", False)
    assert publish.check(r, ["mof-class=3", "nextcloud=green"]).problems == []
    problems = publish.check(r, ["mof-class=2", "nextcloud=green", "osaid"]).problems
    assert [p.split(":")[1].strip() for p in problems] == ["mof-class=2", "osaid"]
    assert problems[0].startswith("publish.require: mof-class=2: release is Class 3")


def test_params_reject_a_requirement_typo_and_a_bad_tag(make_ctx):
    with pytest.raises(ParamsError, match=r"publish.require"):
        make_ctx(overrides={"publish.require": ["mof-clas=1"]})
    with pytest.raises(ParamsError, match=r"publish.tag"):
        make_ctx(overrides={"publish.tag": "v {commit}"})
    with pytest.raises(ParamsError, match=r"publish.tag"):
        make_ctx(overrides={"publish.tag": "release-{version}"})
    with pytest.raises(ParamsError, match=r"publish.model_repo"):
        make_ctx(overrides={"publish.model_repo": "no-slash"})


def test_checkpoint_directories_must_be_branch_names(tmp_path):
    r = make_release(tmp_path, checkpoints=("step0000075", "main"))
    with pytest.raises(publish.PublishError, match="cannot be branch names"):
        publish.check(r, [])


def test_repo_ids_come_from_options_then_params_then_the_release_name(make_ctx):
    p = make_ctx().params
    org, name = p.release.organization, p.release.model_name
    assert publish.repos(p) == {"model": ("model", f"{org}/{name}"), "instruct": ("model", f"{org}/{name}-instruct"),
                                "dataset": ("dataset", f"{org}/{name}-data")}
    p2 = make_ctx(overrides={"publish.model_repo": "a/m", "publish.dataset_repo": "a/d"}).params
    assert publish.repos(p2) == {"model": ("model", "a/m"), "instruct": ("model", "a/m-instruct"), "dataset": ("dataset", "a/d")}
    assert publish.repos(p2, model_repo="b/x")["instruct"] == ("model", "b/x-instruct")


def test_the_dvc_stage_refuses_a_tampered_release_and_publishes_nothing(make_ctx, tmp_path):
    r = make_release(tmp_path)
    ctx = make_ctx("publish", {"publish.require": []}, root=tmp_path)
    publish.run(ctx)
    assert (tmp_path / "published/models").is_dir()
    metrics = json.loads((tmp_path / "metrics/publish.json").read_text())
    assert metrics["repos"]["model@step0000075"]["revision"] == "step0000075"
    assert all(v["mismatched"] == [] for v in metrics["repos"].values())
    import shutil
    shutil.rmtree(tmp_path / "published")
    (r / "model/config.json").write_text("{}")
    with pytest.raises(publish.PublishError, match="model/config.json has sha256"):
        publish.run(make_ctx("publish", {"publish.require": []}, root=tmp_path))
    assert not (tmp_path / "published").exists()


def test_the_lfs_prediction_follows_the_hub_rules(tmp_path):
    (tmp_path / "a.json").write_text("{}")
    (tmp_path / "b.json").write_bytes(b"\0\1binary")
    (tmp_path / "c.txt").write_bytes(b"x")
    assert not hub_client.predicted_lfs("a.json", tmp_path / "a.json")
    assert hub_client.predicted_lfs("b.json", tmp_path / "b.json")  # binary content
    assert hub_client.predicted_lfs("w/model.safetensors", tmp_path / "c.txt")  # pattern on the file name
    assert hub_client.predicted_lfs("code/src.tar.gz", tmp_path / "c.txt")
    with open(tmp_path / "big.txt", "wb") as f:
        f.truncate(hub_client.LFS_MIN_SIZE)  # sparse; size alone decides
    assert hub_client.predicted_lfs("big.txt", tmp_path / "big.txt")


def test_git_blob_id_is_gits(tmp_path):
    import subprocess

    (tmp_path / "f").write_bytes(b"hello\n" * 1000)
    want = subprocess.run(["git", "hash-object", str(tmp_path / "f")], capture_output=True, text=True, check=True).stdout.strip()
    assert hub_client.git_blob_id(tmp_path / "f") == want


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b"\xff\xfe garbage"])
def test_a_corrupted_card_is_one_problem_not_a_traceback(tmp_path, content):
    """issue 16.9: a corrupted openness.json made publish raise JSONDecodeError."""
    r = make_release(tmp_path)
    (r / "openness/openness.json").write_bytes(content)
    (msg,) = publish.check(r, []).problems
    assert msg.startswith("card: openness/openness.json is not a JSON card (corrupted)")


def test_a_corrupted_manifest_is_a_publish_error(tmp_path):
    r = make_release(tmp_path)
    (r / "MANIFEST.json").write_text("{trunc")
    with pytest.raises(publish.PublishError, match="MANIFEST.json is not a release manifest"):
        publish.check(r, [])


def test_publish_can_gate_on_reproduction(tmp_path):
    """issue 16.8: `publish.require: [reproduced]` refuses a release no `lucie verify` result covers."""
    r = make_release(tmp_path)
    (msg,) = publish.check(r, ["reproduced"]).problems
    assert msg.startswith("publish.require: reproduced: reproduction is none")
    assert publish.check(r, []).problems == []


def test_tag_names_the_code_tree_by_default(tmp_path):
    from stages.core.params import Publish

    r = make_release(tmp_path)
    manifest = json.loads((r / "MANIFEST.json").read_text())
    manifest["lineage"] = {"code_tree": "c0de" * 10}
    (r / "MANIFEST.json").write_text(json.dumps(manifest))
    rel = publish.check(r, [])
    assert Publish().tag == "release-{code}"
    assert publish.tag_name(Publish().tag, rel, "tiny") == "release-c0dec0dec0de"
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert publish.tag_name("{recipe}-{commit}", rel, "tiny") == f"tiny-{head[:12]}"  # the commit publishing it
