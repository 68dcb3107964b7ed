"""Signed provenance (stages/lib/provenance.py, `lucie verify-release`) with real model-signing and real EC P-256
keys made here by openssl: intact -> exit 0; a changed byte, an added file, an altered statement, another
key, no signature -> exit 1 naming the first failure; `lucie publish`'s gate refuses what does not verify."""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from typer.testing import CliRunner

from lucie.cli import app
from stages.lib import provenance
from stages.core.files import sha256_file

runner = CliRunner()


def keypair(d):
    d.mkdir(parents=True, exist_ok=True)
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out",
                    str(d / "key.pem")], check=True, capture_output=True)
    subprocess.run(["openssl", "pkey", "-in", str(d / "key.pem"), "-pubout", "-out", str(d / "key.pub")], check=True,
                   capture_output=True)
    return d / "key.pem", d / "key.pub"


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("keys")
    return {"ours": keypair(tmp / "ours"), "other": keypair(tmp / "other")}


def make_release(root):
    r = root / "release"
    for rel, data in {"model/model.safetensors": b"\x00weights" * 100, "model/README.md": b"# card\n",
                      "dataset/data/en/part-00000.parquet": b"rows", "code/lucie-repro-abc.tar.gz": b"code"}.items():
        (r / rel).parent.mkdir(parents=True, exist_ok=True)
        (r / rel).write_bytes(data)
    (r / "code" / "code.json").write_text(json.dumps({"tree": "ab" * 20, "archive": "lucie-repro-abc.tar.gz",
                                                       "sha256": sha256_file(r / "code/lucie-repro-abc.tar.gz"),
                                                       "repository": "https://example.invalid/x"}))
    files = {str(p.relative_to(r)): sha256_file(p) for p in sorted(r.rglob("*")) if p.is_file()}
    (r / "MANIFEST.json").write_text(json.dumps({"files": files, "lineage": {
        "code_tree": "ab" * 20, "stages": {"ingest": {"data/raw": "0" * 32 + ".dir"}}}}))
    (r / "openness").mkdir()
    (r / "openness" / "openness.json").write_text("{}")  # derived, not in the manifest (as the release stage does)
    provenance.write_statement(r)
    return r


def verify_cli(release, pub):
    return runner.invoke(app, ["verify-release", str(release), "--key", str(pub)])


@pytest.fixture
def signed(tmp_path, keys):
    r = make_release(tmp_path)
    provenance.sign(r, keys["ours"][0])
    return r


def test_statement_links_every_file_to_code_tree_and_stage_outputs(signed):
    st = json.loads((signed / provenance.STATEMENT).read_text())
    assert st["_type"] == "https://in-toto.io/Statement/v1"
    assert {s["name"] for s in st["subject"]} == {str(p.relative_to(signed)) for p in signed.rglob("*")
                                                  if p.is_file() and p.parts[-2] != "provenance"}
    assert st["predicate"]["code"]["tree"] == "ab" * 20
    assert st["predicate"]["dvc_stages"] == {"ingest": {"data/raw": "0" * 32 + ".dir"}}
    assert st["predicate"]["verification"]["status"] == "none"


def test_intact_release_verifies_and_the_signature_is_deterministic(signed, keys):
    res = verify_cli(signed, keys["ours"][1])
    assert res.exit_code == 0, res.output
    assert "verified" in res.output and "code tree abababababab" in res.output
    first = (signed / provenance.SIGNATURE).read_bytes()
    provenance.sign(signed, keys["ours"][0])
    assert (signed / provenance.SIGNATURE).read_bytes() == first  # RFC 6979: same key + same files -> same bytes
    bundle = json.loads(first)
    assert bundle["dsseEnvelope"]["payloadType"] == "application/vnd.in-toto+json"


@pytest.mark.parametrize("tamper, named", [
    (lambda r: (r / "model/model.safetensors").write_bytes((r / "model/model.safetensors").read_bytes()[:-1] + b"X"),
     "model/model.safetensors"),
    (lambda r: (r / "model/extra.bin").write_bytes(b"new"), "model/extra.bin"),
    (lambda r: (r / "dataset/data/en/part-00000.parquet").unlink(), "dataset/data/en/part-00000.parquet"),
    (lambda r: (r / provenance.STATEMENT).write_text(
        (r / provenance.STATEMENT).read_text().replace('"status": "none"', '"status": "reproduced"')),
     provenance.STATEMENT),
])
def test_any_change_fails_naming_the_file(signed, keys, tamper, named):
    tamper(signed)
    res = verify_cli(signed, keys["ours"][1])
    assert res.exit_code == 1 and "FAILED" in res.output and named in res.output, res.output


def test_another_key_and_no_signature_fail(signed, keys, tmp_path):
    res = verify_cli(signed, keys["other"][1])
    assert res.exit_code == 1 and "signature" in res.output
    (signed / provenance.SIGNATURE).unlink()
    res = verify_cli(signed, keys["ours"][1])
    assert res.exit_code == 1 and "unsigned" in res.output


def test_a_signed_but_inconsistent_statement_is_caught_by_the_lineage_check(tmp_path, keys):
    r = make_release(tmp_path)
    st = json.loads((r / provenance.STATEMENT).read_text())
    st["predicate"]["dvc_stages"]["ingest"]["data/raw"] = "f" * 32 + ".dir"
    (r / provenance.STATEMENT).write_text(provenance.dumps(st))
    provenance.sign(r, keys["ours"][0])  # validly signed, but not what the release's records say
    res = verify_cli(r, keys["ours"][1])
    assert res.exit_code == 1 and "predicate.dvc_stages disagrees" in res.output


def test_missing_or_bad_private_key_is_named(tmp_path):
    r = make_release(tmp_path)
    with pytest.raises(provenance.ProvenanceError, match="release.sign.private_key: .*does not exist"):
        provenance.sign(r, tmp_path / "absent.pem")
    (tmp_path / "bad.pem").write_text("not a key")
    with pytest.raises(provenance.ProvenanceError, match="not a usable PEM EC private key"):
        provenance.sign(r, tmp_path / "bad.pem")


def test_publish_gate_refuses_unsigned_or_failing_release_when_a_key_is_set(signed, keys, tmp_path):
    from stages.publish import check

    def sig_problems(rel, key):
        return [p for p in check(rel, [], sign_key=str(key) if key else None).problems if p.startswith("signature")]

    assert sig_problems(signed, keys["ours"][0]) == []
    assert sig_problems(signed, None) == []
    assert "release.sign.private_key is set" in sig_problems(signed, keys["other"][0])[0]
    unsigned = make_release(tmp_path / "u")
    assert "unsigned" in sig_problems(unsigned, keys["ours"][0])[0]
    copy = tmp_path / "copy" / "release"
    shutil.copytree(signed, copy)
    (copy / "model/README.md").write_text("# edited\n")
    assert "model/README.md" in sig_problems(copy, keys["ours"][0])[0]
