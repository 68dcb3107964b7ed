"""Signed provenance of a release: an in-toto statement + an OpenSSF model-signing signature.

release/provenance/statement.json (always written, deterministic) is an in-toto Statement v1 whose
subjects are every released file with its sha256, and whose predicate links them to what made them: the
code tree (stages/lib/code_tree.py) and its archive, the dvc.lock outputs of every upstream stage (the
release manifest's lineage) and the `lucie verify` result the release carries (status, summary, sha256
of reproducibility/verification.json).

With `release.sign.private_key` (a PEM EC key: P-256, P-384 or P-521), release/provenance/release.sig is
a model-signing (sigstore bundle, DSSE envelope, key-based, offline) signature over every file of the
release, the statement included. The ECDSA signature is deterministic (RFC 6979): the same key and the
same release give the same bytes, so a signed release stays reproducible by whoever holds the key.

`verify(DIR, public_key)` (the CLI `lucie verify-release DIR --key PUB`) checks, and names the first
failure: the signature is there and verifies with the key over every file (a changed byte, an added or a
removed file, an altered statement all fail it), then every subject's sha256, then the lineage (the
statement's code tree, stage outputs and verification agree with code/code.json, MANIFEST.json and
reproducibility/verification.json).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

DIR = "provenance"
STATEMENT = f"{DIR}/statement.json"
SIGNATURE = f"{DIR}/release.sig"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://github.com/lucie-repro/lucie-repro/release-provenance/v1"


class ProvenanceError(ValueError):
    """The release cannot be signed (key), or does not verify (the first failure)."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(1 << 20):
            h.update(b)
    return h.hexdigest()


def _files(release: Path) -> dict[str, Path]:
    """Every released file but the provenance itself, in path order."""
    return {f.relative_to(release).as_posix(): f for f in sorted(release.rglob("*"))
            if f.is_file() and f.relative_to(release).parts[0] != DIR}


def _read(release: Path, rel: str) -> dict:
    try:
        return json.loads((release / rel).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProvenanceError(f"{rel}: missing") from None
    except ValueError as err:
        raise ProvenanceError(f"{rel}: not valid JSON ({err})") from None


def predicate(release: Path) -> dict:
    """What made the release, from its own records (code.json, MANIFEST.json, verification.json)."""
    from model_card.evidence import reproduction

    code, lineage = _read(release, "code/code.json"), _read(release, "MANIFEST.json").get("lineage", {})
    ver = release / "reproducibility" / "verification.json"
    result = json.loads(ver.read_text(encoding="utf-8")) if ver.is_file() else None
    rep = reproduction(result, lineage)
    return {
        "code": {"tree": code.get("tree"), "repository": code.get("repository"),
                 "archive": {"name": f"code/{code.get('archive')}", "sha256": code.get("sha256")}},
        "dvc_stages": lineage.get("stages", {}),
        "verification": {"status": rep["status"], "summary": rep["summary"],
                         "sha256": _sha256(ver) if ver.is_file() else None},
    }


def statement(release: Path) -> dict:
    subjects = [{"name": rel, "digest": {"sha256": _sha256(f)}} for rel, f in _files(release).items()]
    return {"_type": STATEMENT_TYPE, "subject": subjects, "predicateType": PREDICATE_TYPE,
            "predicate": predicate(release)}


def dumps(obj: dict) -> str:
    return json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def write_statement(release: Path) -> dict:
    st = statement(release)
    (release / DIR).mkdir(exist_ok=True)
    (release / STATEMENT).write_text(dumps(st), encoding="utf-8")
    return st


def _hashing():
    from model_signing import hashing

    return hashing.Config().set_ignored_paths(paths=[SIGNATURE], ignore_git_paths=False)


def _deterministic_signer(private_key: Path):
    """model-signing's EC key signer, with RFC 6979 ECDSA (its own uses a random nonce)."""
    import base64

    from cryptography.hazmat.primitives.asymmetric import ec
    from google.protobuf import json_format
    from model_signing._signing import sign_ec_key, sign_sigstore_pb, signing
    from sigstore_models import intoto as intoto_pb
    from sigstore_models.bundle import v1 as bundle_pb

    class Signer(sign_ec_key.Signer):
        def sign(self, payload):  # the body of sign_ec_key.Signer.sign (model-signing 1.1.1), deterministic
            raw = json_format.MessageToJson(payload.statement.pb).encode("utf-8")
            algo = ec.ECDSA(sign_ec_key.get_ec_key_hash(self._private_key.public_key()), deterministic_signing=True)
            sig = intoto_pb.Signature(sig=base64.b64encode(self._private_key.sign(sign_sigstore_pb.pae(raw), algo)),
                                      keyid="")
            env = intoto_pb.Envelope(payload=base64.b64encode(raw), payload_type=signing._IN_TOTO_JSON_PAYLOAD_TYPE,
                                     signatures=[sig])
            return sign_sigstore_pb.Signature(bundle_pb.Bundle(
                media_type=sign_sigstore_pb._BUNDLE_MEDIA_TYPE,
                verification_material=self._get_verification_material(), dsse_envelope=env))

    try:
        return Signer(Path(private_key))
    except (ValueError, TypeError) as err:
        raise ProvenanceError(f"params.yaml release.sign.private_key: {private_key} is not a usable PEM EC private key "
                              f"(P-256/384/521, unencrypted): {err}") from None


def sign(release: Path, private_key: str | Path) -> None:
    """Sign every file of `release` (statement first written) into provenance/release.sig."""
    from model_signing import signing

    key = Path(private_key).expanduser()
    if not key.is_file():
        raise ProvenanceError(f"params.yaml release.sign.private_key: {key} does not exist (a PEM EC key, e.g. "
                              "`openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out KEY`)")
    signer = _deterministic_signer(key)
    config = signing.Config().set_hashing_config(_hashing())
    config._signer = signer  # model-signing's Config has no setter for a custom signer
    config.sign(release, release / SIGNATURE)


def public_key_pem(private_key: str | Path) -> bytes:
    """The public half of a private key (what `lucie publish` verifies against when release.sign is set)."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(Path(private_key).expanduser().read_bytes(), None)
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def verify(release: Path, public_key: str | Path) -> dict:
    """Raise ProvenanceError naming the first failure; return a summary when the release is intact."""
    from model_signing import verifying

    release, key = Path(release), Path(public_key).expanduser()
    if not (release / SIGNATURE).is_file():
        raise ProvenanceError(f"{SIGNATURE}: missing (an unsigned release; set release.sign.private_key and rebuild)")
    if not key.is_file():
        raise ProvenanceError(f"--key {key}: no such public key file")
    try:
        config = verifying.Config().use_elliptic_key_verifier(public_key=key).set_hashing_config(_hashing())
        config.verify(release, release / SIGNATURE)
    except Exception as err:  # model-signing raises ValueError (mismatch) and library errors (bad key, bundle)
        raise ProvenanceError(f"signature: {str(err).splitlines()[0][:400]}") from None
    st = _read(release, STATEMENT)
    if st.get("_type") != STATEMENT_TYPE or st.get("predicateType") != PREDICATE_TYPE:
        raise ProvenanceError(f"{STATEMENT}: not a {PREDICATE_TYPE} in-toto statement")
    files = _files(release)
    subjects = {s["name"]: s["digest"]["sha256"] for s in st.get("subject", [])}
    for rel in sorted(files.keys() | subjects.keys()):
        if rel not in subjects:
            raise ProvenanceError(f"{rel}: not a subject of the statement (a file added after the release was built)")
        if rel not in files:
            raise ProvenanceError(f"{rel}: a subject of the statement, missing from the release")
        got = _sha256(files[rel])
        if got != subjects[rel]:
            raise ProvenanceError(f"{rel}: sha256 {got[:16]}…, the statement says {subjects[rel][:16]}…")
    want = predicate(release)
    for key_ in ("code", "dvc_stages", "verification"):
        if st["predicate"].get(key_) != want[key_]:
            raise ProvenanceError(f"{STATEMENT}: predicate.{key_} disagrees with the release's own records "
                                  "(code/code.json, MANIFEST.json lineage, reproducibility/verification.json)")
    return {"files": len(files), "code_tree": want["code"]["tree"], "verification": want["verification"]["status"],
            "stages": len(want["dvc_stages"])}
