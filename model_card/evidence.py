"""The evidence record: what a release contains, under which license, and whether we checked it.

One item per component (MOF component names). `verified` means the file is present in the
release and its sha256 equals the one recorded in release/MANIFEST.json, which the release
stage wrote from the DVC-tracked lineage (dvc.lock + git commit). `claimed` items rest on
metadata alone. No framework evaluator reads files: they read this record only.

Three collectors fill the same record: `collect_release` (here, our release/ tree),
`hf_snapshot.collect` (a Hugging Face model snapshot) and `mot_record.collect` (a Model
Openness Tool YAML record); `model_card.collect` picks one from the path.

Record (JSON): {"source": path, "kind": "release" | "hf-snapshot" | "mof-record",
"components": [{"component", "type", "released", "location", "license", "verified", "sha256",
"note", "status"}], "lineage": {...}}. `status` is derived (see Item.status).
"""
from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from . import safe_read


@dataclass
class Item:
    component: str
    type: str  # code | data | document  (MOF content types)
    released: bool
    location: str | None = None
    license: str | None = None
    verified: bool = False
    sha256: str | None = None
    note: str = ""

    @property
    def status(self) -> str:
        """verified: present and its sha256 traced to the lineage manifest; present: the file is in
        the audited tree and was hashed, but nothing traces it; claimed: released according to
        metadata only (no file here); absent: not released."""
        if not self.released:
            return "absent"
        if self.verified:
            return "verified"
        return "present" if self.sha256 else "claimed"


@dataclass
class Evidence:
    source: str
    components: list[Item] = field(default_factory=list)
    lineage: dict = field(default_factory=dict)
    kind: str = "release"
    # `lucie verify`'s last result, checked against this lineage: {"status": reproduced | stale | failed |
    # none, "summary": one line, "date", "environment"} (see reproduction()).
    reproduction: dict = field(default_factory=lambda: {"status": "none", "summary": "no verification result"})

    def get(self, component: str) -> Item | None:
        return next((c for c in self.components if c.component == component), None)

    def to_dict(self) -> dict:
        return {"source": self.source, "kind": self.kind, "lineage": self.lineage, "reproduction": self.reproduction,
                "components": [{**asdict(c), "status": c.status} for c in self.components]}


def sha256_file(path: Path) -> str:  # model_card must not import stages (auditors install no pipeline deps)
    return safe_read.sha256(path)  # regular files inside the audited input only


def card_yaml(readme: Path) -> dict:
    """The YAML front matter of an HF card (empty when absent)."""
    if not readme.exists():
        return {}
    # Cards edited on Windows carry a BOM and CRLF line ends; the Hub reads those too.
    text = safe_read.read_text(readme, encoding="utf-8-sig").replace("\r\n", "\n")
    if not text.startswith("---\n"):
        return {}
    end = text.find("\n---", 3)
    if end < 0:
        return {}
    try:
        meta = safe_read.yaml_load(text[4:end], name=str(readme))
    except yaml.YAMLError as err:
        raise ValueError(f"{readme}: the YAML front matter does not parse: {err}") from None
    return meta if isinstance(meta, dict) else {}


def reproduction(result: dict | None, lineage: dict) -> dict:
    """Does a `lucie verify` result vouch for the outputs this release was built from?

    Only when every upstream stage of the lineage was re-run from scratch and reproduced, and the md5
    of each of its outs is the one the lineage records: a verification of other outputs proves nothing here.
    """
    if not result:
        return {"status": "none", "summary": "no verification result (run `lucie verify`)"}
    base = {"date": result.get("date"), "environment": result.get("environment", {}),
            "verified_commit": result.get("git_commit")}
    problems = []
    for name, outs in sorted(lineage.get("stages", {}).items()):
        got = result.get("stages", {}).get(name)
        if not got or got.get("status") != "reproduced":
            problems.append(f"{name}: {got.get('status') if got else 'not run'}")
            continue
        actual = {o["path"]: o["actual"] for o in got.get("outs", [])}
        stale = [path for path, md5 in outs.items() if actual.get(path) != md5]
        if stale:
            problems.append(f"{name}: verified outputs differ from this release's ({', '.join(stale)})")
    if not lineage.get("stages"):
        problems.append("the release records no stage lineage")
    env = base["environment"]
    where = f"Python {env.get('python', '?')}, torch {env.get('packages', {}).get('torch', '?')} ({env.get('system', '?')} {env.get('machine', '?')})"
    if problems:
        status = "failed" if result.get("reproduced") is False else "stale"  # failed: verify itself saw a difference
        return {**base, "status": status, "summary": f"verification of {str(base['verified_commit'])[:12]} on "
                f"{base['date']} does not cover this release: " + "; ".join(problems)}
    n = len(lineage["stages"])
    return {**base, "status": "reproduced", "summary": f"all {n} pipeline stages behind this release were re-run "
            f"from scratch and reproduced byte-for-byte on {base['date']} with {where}"}


def collect_release(release: Path, label: str | None = None) -> Evidence:
    """Evidence from a release/ tree written by the release stage; `label` names it in the record
    (default: the path as given), so the same tree gives the same record wherever it is read from."""
    release = Path(release)
    manifest = safe_read.load_json(release / "MANIFEST.json") if (release / "MANIFEST.json").exists() else {}
    recorded: dict = manifest.get("files", {})
    ev = Evidence(source=label or str(release), lineage=manifest.get("lineage", {}))

    @functools.cache
    def digest(rel: str) -> str:  # the five code components share one archive: hash each file once
        return sha256_file(release / rel)

    def item(component, ctype, rel, license, note="", members=None):
        """One component; `members` (all its files) must all match the manifest for it to be verified."""
        path = release / rel if rel else None
        if path is None or not path.exists():
            return Item(component, ctype, released=False, note=note or f"{rel} not in the release")
        files = members or [rel]
        bad = [f for f in files if recorded.get(f) != digest(f)]
        ok = not bad and not note
        why = note or ("sha256 matches the release manifest" + (f" ({len(files)} files)" if members else "")
                       if not bad else f"{len(bad)} of {len(files)} files: sha256 differs from the release manifest or is not listed")
        return Item(component, ctype, True, rel, license, ok, digest(rel), why)

    model_lic = card_yaml(release / "model" / "README.md").get("license")
    paper_json = release / "paper" / "paper.json"  # release.paper's own license (stages/lib/release_paper.py)
    paper_lic = safe_read.load_json(paper_json).get("license") if paper_json.exists() else None
    data_lic = card_yaml(release / "dataset" / "README.md").get("license")
    code = safe_read.load_json(release / "code" / "code.json") if (release / "code" / "code.json").exists() else {}
    archive = f"code/{code['archive']}" if code.get("archive") else None
    code_lic = code.get("license")
    # Code from a modified worktree is not the archived commit: released, but only claimed.
    code_note = "no source archive" if not archive else (
        "built from a modified worktree: the archive is not the code that ran" if code.get("dirty_worktree") else "")
    def files(sub: str, pattern: str) -> list[str]:
        return sorted(str(f.relative_to(release)) for f in (release / sub).rglob(pattern)) if (release / sub).exists() else []

    data_files, eval_files, samples = files("dataset/data", "*.parquet"), files("dataset/eval", "*.jsonl"), \
        files("model/eval_samples", "*.jsonl")
    checkpoints = files("checkpoints", "*.safetensors")
    # Supporting libraries and tools: our pipeline itself (the archive) with the exact environment it ran in
    # and the license of every third-party package in it.
    tooling = [f for f in (archive, "code/requirements.lock", "code/third_party_licenses.json")
               if f and (release / f).exists()]
    ev.components = [
        item("Model parameters (Final)", "data", "model/model.safetensors", model_lic),
        item("Model parameters (Intermediate)", "data", checkpoints[0] if checkpoints else None, model_lic,
             members=checkpoints),
        item("Supporting libraries and tools", "code", tooling[0] if len(tooling) == 3 else None, code_lic,
             code_note, members=tooling),
        *(item(c, "code", archive, code_lic, code_note) for c in
          ("Model architecture", "Training code", "Inference code", "Data preprocessing code", "Evaluation code")),
        item("Datasets", "data", data_files[0] if data_files else None, data_lic, members=data_files),
        item("Model card", "document", "model/README.md", model_lic),
        item("Data card", "document", "dataset/README.md", data_lic),
        item("Evaluation results", "document", "model/eval_results.json", model_lic),
        item("Technical report", "document", "model/technical_report.md", model_lic),
        item("Evaluation data", "data", eval_files[0] if eval_files else None, data_lic, members=eval_files),
        item("Sample model outputs", "document", samples[0] if samples else None, model_lic, members=samples),
        item("Model metadata", "data", "model/config.json", model_lic),
        item("Research paper", "document", "paper/paper.pdf" if (release / "paper" / "paper.pdf").exists() else None,
             paper_lic or model_lic, note="" if (release / "paper" / "paper.pdf").exists() else
             "no research paper in the release: the technical report (rendered from the run's metrics) counts "
             "for MOF Class II; Class I needs an archived paper about this model (release/paper/paper.pdf, "
             "from params.yaml release.paper: {path: a committed PDF, license: its SPDX id})"),
    ]
    if code:
        ev.lineage.setdefault("code", {k: code[k] for k in ("repository", "tree", "commit") if k in code})
    ev.lineage["facts"] = release_facts(release, archive)
    ver = release / "reproducibility" / "verification.json"
    ev.reproduction = reproduction(safe_read.load_json(ver) if ver.exists() else None, ev.lineage)
    return ev


def release_facts(release: Path, archive: str | None) -> dict:
    """The documentation checks (model_card.doc_facts) on the files of a release tree: the model cards
    (the instruct card for fine-tuning), the datasheets, the technical report and the source archive."""
    from . import doc_facts

    def text(rel: str) -> str | None:
        p = release / rel
        return safe_read.read_text(p) if p.is_file() else None

    facts = {}
    card = text("model/README.md")
    if card is not None:
        facts["modelcard"] = doc_facts.modelcard(card, "model/README.md", fine_tuned=(release / "instruct").is_dir())
    sheets = {str(f.relative_to(release)): safe_read.read_text(f)
              for f in sorted((release / "dataset" / "datasheets").glob("*.md"))} if (release / "dataset").is_dir() else {}
    if sheets:
        facts["datasheet"] = doc_facts.datasheet(sheets)
    docs = {rel: t for rel in ("model/technical_report.md",) if (t := text(rel)) is not None}
    if docs:
        facts["hardware_architecture"] = doc_facts.hardware(docs)
    if archive and (release / archive).is_file():
        facts["code"] = doc_facts.code_archive(safe_read.read_bytes(release / archive, safe_read.MAX_ARCHIVE_BYTES), archive)
    return facts
