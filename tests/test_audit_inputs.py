"""The three inputs of `lucie audit`: detection, the Hugging Face snapshot collector and the MOF
record collector (the release collector is in test_openness.py). Snapshots are built here, shaped
as `snapshot_download` leaves them; MOF records are the Model Openness Tool's own test files."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from model_card import hf_snapshot, mot_record, render
from model_card.collect import InputError, collect, detect

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"
MOT_DATA = SHARED / "openness" / "mot_test_data"

APACHE = "\n                                 Apache License\n                           Version 2.0, January 2004\n" \
         "                        http://www.apache.org/licenses/\n\n   TERMS AND CONDITIONS FOR USE...\n"
LLAMA3 = "META LLAMA 3 COMMUNITY LICENSE AGREEMENT\nMeta Llama 3 Version Release Date: April 18, 2024\n..."
MIT = "MIT License\n\nCopyright (c) 2024 Someone\n\nPermission is hereby granted, free of charge, to any person..."
LLAMA_CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
                "num_hidden_layers": 2, "vocab_size": 256}


def write_snapshot(root: Path, front_matter: str, files: dict[str, str | bytes], body: str = "# Model\n") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "README.md").write_text(f"---\n{front_matter.strip()}\n---\n{body}", encoding="utf-8")
    for rel, content in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            (root / rel).write_bytes(content)
        else:
            (root / rel).write_text(content, encoding="utf-8")
    return root


def lucie_like_snapshot(root: Path) -> Path:
    """Shaped like OpenLLM-France/Lucie-7B: Apache-2.0, two weight shards, the training dataset named in
    the metadata, a paper tag, a link to the training code in the card body."""
    return write_snapshot(root, """
license: apache-2.0
language: [fr, en, it, de, es]
tags: [pretrained, llama-3, openllm-france, arxiv:2503.12294]
datasets:
- OpenLLM-France/Lucie-Training-Dataset
pipeline_tag: text-generation
library_name: transformers
""", {
        "LICENSE": APACHE,
        "config.json": json.dumps(LLAMA_CONFIG),
        "generation_config.json": "{}",
        "model-00001-of-00002.safetensors": b"shard one",
        "model-00002-of-00002.safetensors": b"shard two",
        "model.safetensors.index.json": json.dumps({"weight_map": {}}),
        "tokenizer.json": "{}",
        "tokenizer_config.json": "{}",
    }, body="# Lucie-7B\nTraining code: https://github.com/OpenLLM-France/Lucie-Training and "
            "https://github.com/OpenLLM-France/Lucie-Training.\n")


def llama_like_snapshot(root: Path, front_matter: str = "license: other\nlicense_name: llama3\n"
                        "license_link: LICENSE\nbase_model: meta-llama/Meta-Llama-3-8B") -> Path:
    return write_snapshot(root, front_matter, {
        "LICENSE": LLAMA3, "USE_POLICY.md": "Meta Llama 3 Acceptable Use Policy\n",
        "config.json": json.dumps(LLAMA_CONFIG), "model.safetensors": b"llama weights",
    })


# ------------------------------------------------------------------------------------------ detection
def test_detection_by_what_the_path_holds(tmp_path):
    (tmp_path / "rel").mkdir()
    (tmp_path / "rel" / "MANIFEST.json").write_text("{}")
    (tmp_path / "rel" / "README.md").write_text("# a release also has a README")
    assert detect(tmp_path / "rel") == "release"  # the manifest wins over the README
    assert detect(lucie_like_snapshot(tmp_path / "snap")) == "hf-snapshot"
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "config.json").write_text("{}")
    assert detect(tmp_path / "cfg") == "hf-snapshot"
    for name in ("r.yml", "r.YAML"):
        (tmp_path / name).write_text("release: {}\n")
        assert detect(tmp_path / name) == "mof-record"


def test_an_unknown_input_names_what_was_looked_for(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError) as err:
        detect(tmp_path / "empty")
    assert all(s in str(err.value) for s in ("MANIFEST.json", "README.md", "config.json", ".yml"))
    (tmp_path / "card.json").write_text("{}")
    with pytest.raises(InputError, match="not a MOF record"):
        detect(tmp_path / "card.json")
    with pytest.raises(InputError, match="no such file"):
        detect(tmp_path / "missing")


def test_a_file_that_is_not_a_mot_record_is_refused(tmp_path):
    cases = {"list.yml": "- a\n- b\n", "noreleae.yml": "framework: {}\n", "bad.yml": "release: [unclosed\n",
             "dup.yml": "release:\n  name: a\n  name: b\n", "comp.yml": "release:\n  components: nope\n"}
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(InputError) as err:
            collect(tmp_path / name)
        assert str(tmp_path / name) in str(err.value)


def test_broken_front_matter_is_an_input_error(tmp_path):
    write_snapshot(tmp_path / "s", "license: [apache-2.0", {})
    with pytest.raises(InputError, match="front matter"):
        collect(tmp_path / "s")


# ------------------------------------------------------------------------------------------ HF snapshots
def test_lucie_like_snapshot_present_and_claimed_items(tmp_path):
    root = lucie_like_snapshot(tmp_path / "Lucie-7B")
    ev = hf_snapshot.collect(root)
    assert ev.kind == "hf-snapshot" and [c.component for c in ev.components][:2] == [
        "Model architecture", "Model parameters (Final)"]
    weights = ev.get("Model parameters (Final)")
    assert (weights.status, weights.location, weights.license) == ("present", "model-00001-of-00002.safetensors",
                                                                   "apache-2.0")
    assert weights.sha256 == hashlib.sha256(b"shard one").hexdigest() and "3 files" in weights.note
    assert not any(c.verified for c in ev.components)  # no lineage: nothing is verified
    arch = ev.get("Model architecture")
    assert arch.status == "claimed" and "LlamaForCausalLM" in arch.location
    data = ev.get("Datasets")
    assert data.status == "claimed" and data.license is None
    assert data.location == "https://huggingface.co/datasets/OpenLLM-France/Lucie-Training-Dataset"
    assert ev.get("Research paper").location == "https://arxiv.org/abs/2503.12294"
    assert ev.get("Model metadata").location == "config.json" and ev.get("Model card").status == "present"
    for absent in ("Technical report", "Evaluation results"):
        assert ev.get(absent).status == "absent"
    # What the card states is claimed evidence, citing it (issue 17): the training code link, the dataset's card.
    code = ev.get("Training code")
    assert (code.status, code.location, code.license) == ("claimed", "https://github.com/OpenLLM-France/Lucie-Training", None)
    assert "the card states: \"Training code: https://github.com" in code.note
    assert ev.get("Data card").status == "claimed"
    assert ev.lineage["license"] == {"id": "apache-2.0", "from": "card metadata", "files": {"LICENSE": "Apache-2.0"}}
    assert ev.lineage["code_references"] == ["https://github.com/OpenLLM-France/Lucie-Training"]
    assert ev.lineage["files"]["tokenizer.json"] == {"bytes": 2, "sha256": hashlib.sha256(b"{}").hexdigest()}
    assert "warnings" not in ev.lineage and "base_model" not in ev.lineage

    card = render.audit(ev)
    assert [f["element"] for f in card["osaid"]["failures"]] == ["data_information", "code"]
    assert card["osaid"]["elements"]["parameters"]["met"] and card["osaid"]["elements"]["freedoms"]["met"]
    # Class III: architecture, weights, model card included (3 of 6); the named paper has no license.
    assert card["mof"]["class"] == 0 and card["mof"]["progress"]["3"] == 50.0
    assert card["nextcloud"]["color"] == "orange"  # only the weights condition holds
    json.loads(render.to_json(card))  # JSON-serialisable, dates and all


@pytest.mark.parametrize("front_matter, license_id", [
    ("license: other\nlicense_name: llama3\nlicense_link: LICENSE\nbase_model: meta-llama/Meta-Llama-3-8B", "llama3"),
    ("license: cc-by-nc-4.0\nbase_model: meta-llama/Meta-Llama-3-8B", "cc-by-nc-4.0"),
])
def test_llama_or_non_commercial_license_is_restricted_everywhere(tmp_path, front_matter, license_id):
    ev = hf_snapshot.collect(llama_like_snapshot(tmp_path / "m", front_matter))
    assert ev.get("Model parameters (Final)").license == license_id
    assert ev.lineage["base_model"] == "meta-llama/Meta-Llama-3-8B"
    assert set(ev.lineage["license"]["files"]) == {"LICENSE", "USE_POLICY.md"}
    card = render.audit(ev)
    osaid = card["osaid"]
    assert not osaid["compliant"] and not osaid["elements"]["parameters"]["met"]
    assert not osaid["elements"]["freedoms"]["met"] and license_id in osaid["elements"]["freedoms"]["why"]
    assert card["mof"]["components"]["Model parameters (Final)"]["status"] == "invalid" and card["mof"]["class"] == 0
    params = card["osai_index"]["parameters"]
    assert params["licenses"]["level"] == "closed" and params["weights_basemodel"]["level"] == "closed"
    assert params["weights_endmodel"]["level"] == "open"  # shared, whatever the license
    assert card["nextcloud"]["color"] == "orange"  # self-hostable only
    if license_id != "llama3":  # the LICENSE file is Llama's: the disagreement is reported
        assert ev.lineage["warnings"] == [f"a license file reads as llama3 but the card metadata says {license_id}"]
    else:
        assert "warnings" not in ev.lineage


def test_license_from_the_license_file_when_the_card_has_none(tmp_path):
    root = write_snapshot(tmp_path / "s", "language: [en]", {"LICENSE.md": MIT, "model.safetensors": b"w"})
    ev = hf_snapshot.collect(root)
    assert ev.get("Model parameters (Final)").license == "MIT"
    assert ev.lineage["license"]["from"] == "the license file's text"
    bare = hf_snapshot.collect(write_snapshot(tmp_path / "t", "language: [en]", {"model.safetensors": b"w"}))
    assert bare.get("Model parameters (Final)").license is None and bare.lineage["license"]["from"] == "none found"


def test_code_files_and_their_own_spdx_headers(tmp_path):
    root = write_snapshot(tmp_path / "s", "license: apache-2.0", {
        "modeling_tiny.py": "# model\n", "configuration_tiny.py": "# config\n",
        "tokenization_tiny.py": "# tok\n", "scripts/train.py": "# SPDX-License-Identifier: MIT\nprint()\n",
        "eval/run_eval.py": "# eval\n", "inference.py": "# infer\n", "data/prepare_corpus.py": "# prep\n",
        "eval_results.json": "{}", "technical_report.pdf": b"%PDF", "DATASHEET.md": "# data",
        "samples/generations.jsonl": "{}\n", "checkpoint-500/model.safetensors": b"intermediate",
        "training_args.bin": b"pickle", "model.safetensors": b"final", "notes.py": "# unknown role\n",
    })
    ev = hf_snapshot.collect(root)
    where = {c.component: (c.location, c.license, c.status) for c in ev.components}
    assert where["Model architecture"] == ("configuration_tiny.py", "apache-2.0", "present")  # 2 files, first by name
    assert where["Supporting libraries and tools"][0] == "tokenization_tiny.py"
    assert where["Training code"] == ("scripts/train.py", "MIT", "present")  # the file's SPDX header wins
    assert where["Evaluation code"][0] == "eval/run_eval.py"
    assert where["Inference code"][0] == "inference.py"
    assert where["Data preprocessing code"][0] == "data/prepare_corpus.py"
    assert where["Evaluation results"][0] == "eval_results.json"
    assert where["Technical report"][0] == "technical_report.pdf"
    assert where["Data card"][0] == "DATASHEET.md"
    assert where["Sample model outputs"][0] == "samples/generations.jsonl"
    assert where["Model parameters (Intermediate)"][0] == "checkpoint-500/model.safetensors"
    assert where["Model parameters (Final)"][0] == "model.safetensors"
    assert where["Model metadata"][0] == "training_args.bin"  # trainer state is metadata, not weights
    assert "notes.py" in ev.lineage["files"]  # listed, but no component claims an unknown role


def test_lfs_pointers_are_claims_not_files(tmp_path):
    oid = "a" * 64
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize 14000000000\n".encode()
    root = write_snapshot(tmp_path / "s", "license: mit", {"model.safetensors": pointer})
    w = hf_snapshot.collect(root).get("Model parameters (Final)")
    assert w.status == "claimed" and w.sha256 is None and oid in w.note and "not downloaded" in w.note
    assert hf_snapshot.collect(root).lineage["files"]["model.safetensors"]["lfs_pointer_sha256"] == oid


def test_hub_cache_layout_follows_refs_main_and_symlinks(tmp_path):
    repo = tmp_path / "models--OpenLLM-France--Lucie-7B"
    blob = repo / "blobs" / hashlib.sha256(b"weights").hexdigest()
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"weights")
    snap = write_snapshot(repo / "snapshots" / "abc123", "license: apache-2.0", {})
    (snap / "model.safetensors").symlink_to(Path("../../blobs") / blob.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    assert detect(repo) == "hf-snapshot"
    got = collect(repo)
    assert got.kind == "hf-snapshot" and got.evidence.source == str(repo)
    assert got.evidence.get("Model parameters (Final)").sha256 == blob.name


def test_identify_license_text():
    assert hf_snapshot.identify_license_text(APACHE) == "Apache-2.0"
    assert hf_snapshot.identify_license_text("LLAMA 3.1 COMMUNITY LICENSE AGREEMENT") == "llama3.1"
    assert hf_snapshot.identify_license_text("Creative Commons Attribution-NonCommercial 4.0 International") == \
        "CC-BY-NC-4.0"
    assert hf_snapshot.identify_license_text("All rights reserved.") is None


# ------------------------------------------------------------------------------------------ MOF records
needs_mot = pytest.mark.skipif(not MOT_DATA.is_dir(), reason=f"MOT test data not found at {MOT_DATA}")


@needs_mot
def test_a_mot_record_is_all_claims_with_the_tools_license_resolution():
    path = next(MOT_DATA.glob("OnlyGlobalLicense_C1_87*.yml"))
    ev, record = mot_record.collect(path)
    assert ev.kind == "mof-record" and record["release"]["name"].startswith("OnlyGlobalLicense_C1_87")
    assert {c.status for c in ev.components} <= {"claimed", "absent"}
    # No component license in this record: code falls back to the code license, weights (data, no data
    # license) to the distribution license (research note 2.3).
    assert ev.get("Training code").license == "Apache-1.0"
    assert ev.get("Model parameters (Final)").license == "AFL-3.0"
    assert ev.get("Model card").license == "CC-BY-SA-4.0"
    assert ev.get("Research paper").status == "absent"
    assert ev.lineage["mof_record"]["producer"] == "Test2"


def test_mof_class_is_computed_on_the_record_itself(tmp_path):
    """`apache-2.0` is not open for the tool (exact ids); an export of our SPDX-normalised evidence would
    say it is. The card must give the tool's answer."""
    rec = tmp_path / "r.yml"
    comps = "".join(f"  - name: {n}\n    license: apache-2.0\n" for n in (
        "Model architecture", "Model parameters (Final)", "Evaluation results", "Model card", "Data card",
        "Technical report"))
    rec.write_text(f"framework:\n  name: Model Openness Framework\nrelease:\n  name: t\n  components:\n{comps}")
    got = collect(rec)
    card = render.audit(got.evidence, got.mot_record)
    assert card["mof"]["class"] == 0 and card["mof"]["progress"]["3"] == 0.0
    assert render.audit(got.evidence)["mof"]["class"] == 3  # what the export would have said
