"""Checked facts about a release's documentation, for the four OSAI index parameters that rate documents.

The OSAI index asks whether the code is documented, whether the hardware/training setup is documented,
whether the model card covers architecture, training, fine-tuning and evaluation, and whether a datasheet
follows Gebru et al. (2021). A rating tool cannot judge "comprehensive"; it can check that the parts are
there. Each check here returns {"level": open | partial | closed, "why", "source", "found", "missing"}:
open when every part is found, partial when some are, closed when none. What no check can settle (prose
quality, whether the statements are true) is a stated limit of the card (`limits.py`), not silently scored.

- modelcard: Markdown headings for architecture, training, fine-tuning, evaluation and limitations; a base
  model (the card names no `base_model`) has no fine-tuning, which then counts as not applicable.
- datasheet: headings for Gebru's seven sections (motivation, composition, collection process,
  preprocessing/cleaning/labeling, uses, distribution, maintenance).
- hardware: a statement of the hardware (devices, nodes, processes) and one of the training setup
  (parallelism, precision, batch), in the technical report or card.
- code: a README, documentation pages and the docstring ratio of the Python modules in a source archive
  (open: README + docs + at least DOCSTRING_OPEN of the modules carry a module docstring).
Pure functions of text and bytes; the same inputs give the same facts.
"""
from __future__ import annotations

import ast
import io
import re
import tarfile

from . import card_claims

MODELCARD_SECTIONS = {
    "architecture": r"architect|model (?:details|description)|hyper-?parameters",
    "training": r"train",
    "fine-tuning": r"fine-?tun|align|instruct|sft|dpo|rlhf|post-?train",
    "evaluation": r"evaluat|benchmark|results",
    "limitations": r"limitation|bias|risk|disclaimer|out-of-scope|caveat",
}
GEBRU_SECTIONS = {
    "motivation": r"motivation",
    "composition": r"composition",
    "collection process": r"collection",
    "preprocessing/cleaning/labeling": r"pre-?processing|cleaning|labell?ing",
    "uses": r"\buses?\b",
    "distribution": r"distribution",
    "maintenance": r"maintenance",
}
HARDWARE = re.compile(r"\b(?:GPUs?|TPUs?|CPUs?|[HABV]100|H200|MI\d{3}X?|nodes?|supercomputer|cluster|"
                      r"processes per node|world size)\b", re.I)
SETUP = card_claims.SETUP
DOCSTRING_OPEN = 0.9


def _level(found: list[str], wanted: list[str]) -> str:
    return "open" if found and len(found) == len(wanted) else "partial" if found else "closed"


def _sections(text: str, wanted: dict[str, str]) -> tuple[list[str], list[str]]:
    titles = [t for _, t, _ in card_claims.headings(card_claims.strip(text))]
    found = [k for k, pat in wanted.items() if any(re.search(pat, t, re.I) for t in titles)]
    return found, [k for k in wanted if k not in found]


def modelcard(text: str, source: str, fine_tuned: bool) -> dict:
    wanted = dict(MODELCARD_SECTIONS)
    if not fine_tuned:
        wanted.pop("fine-tuning")
    found, missing = _sections(text, wanted)
    na = "" if fine_tuned else "; fine-tuning not applicable (a base model: the card names no base_model)"
    why = (f"{source} has sections on {', '.join(found) or 'none of the parts'}"
           + (f"; missing: {', '.join(missing)}" if missing else "") + na)
    return {"level": _level(found, list(wanted)), "why": why, "source": source, "found": found, "missing": missing}


def datasheet(texts: dict[str, str]) -> dict:
    """The best of the given datasheets (path -> text): Gebru's seven sections."""
    best = None
    for path, text in sorted(texts.items()):
        found, missing = _sections(text, GEBRU_SECTIONS)
        if best is None or len(found) > len(best["found"]):
            best = {"source": path, "found": found, "missing": missing}
    if best is None:
        return {"level": "closed", "why": "no datasheet in the evidence", "source": None, "found": [], "missing": list(GEBRU_SECTIONS)}
    n = len(texts)
    why = (f"{best['source']}{f' (best of {n} datasheets)' if n > 1 else ''} has {len(best['found'])} of Gebru's 7 sections"
           + (f"; missing: {', '.join(best['missing'])}" if best["missing"] else ""))
    return {"level": _level(best["found"], list(GEBRU_SECTIONS)), "why": why, **best}


def hardware(texts: dict[str, str]) -> dict:
    """Hardware and training-setup statements (the first sentence of each kind, per document in order)."""
    hw = setup = None
    for path, text in texts.items():
        for sentence, _ in card_claims._sentences(card_claims.strip(text)):
            if hw is None and HARDWARE.search(sentence) and card_claims.TRAINED.search(sentence):
                hw = (path, card_claims._one_line(sentence), sentence)
            if setup is None and SETUP.search(sentence):
                setup = (path, card_claims._one_line(sentence), sentence)
    found = [k for k, v in (("hardware", hw), ("training setup", setup)) if v]
    if hw and setup and hw[2] == setup[2]:  # one sentence states both
        parts = [f"hardware and training setup stated in {hw[0]}: \"{hw[1]}\""]
    else:
        parts = [f"{k} stated in {v[0]}: \"{v[1]}\"" for k, v in (("hardware", hw), ("training setup", setup)) if v]
    missing = [k for k in ("hardware", "training setup") if k not in found]
    why = "; ".join(parts) + (f"; not stated: {', '.join(missing)}" if missing else "") if parts else \
        "neither the hardware nor the training setup is stated"
    return {"level": _level(found, ["hardware", "training setup"]), "why": why,
            "source": (hw or setup or (None,))[0], "found": found, "missing": missing}


def code_archive(data: bytes, source: str) -> dict:
    """README, docs/ pages and module docstrings of a .tar.gz source archive (as `git archive` writes it)."""
    readme, docs, modules, documented = False, 0, 0, 0
    try:
        tar = tarfile.open(fileobj=io.BytesIO(data), mode="r:gz")
    except (tarfile.TarError, OSError, EOFError) as err:
        return {"level": "closed", "why": f"{source}: not a readable .tar.gz source archive ({err})", "source": source,
                "found": [], "missing": ["README", "documentation pages", "module docstrings"], "docstring_ratio": 0.0}
    with tar:
        for m in tar:
            if not m.isfile():
                continue
            rel = m.name.split("/", 1)[1] if "/" in m.name else m.name  # drop the archive's prefix folder
            if re.fullmatch(r"README(\.md|\.rst|\.txt)?", rel, re.I):
                readme = True
            elif re.match(r"docs?/.+\.(md|rst|txt)$", rel, re.I):
                docs += 1
            elif rel.endswith(".py") and not rel.startswith(("tests/", "test/")):
                modules += 1
                try:
                    tree = ast.parse(tar.extractfile(m).read())
                except (SyntaxError, ValueError):
                    continue
                documented += ast.get_docstring(tree) is not None
    ratio = documented / modules if modules else 0.0
    found = [k for k, ok in (("README", readme), ("documentation pages", docs > 0),
                             (f"module docstrings (>= {DOCSTRING_OPEN:.0%})", ratio >= DOCSTRING_OPEN)) if ok]
    wanted = ["README", "documentation pages", f"module docstrings (>= {DOCSTRING_OPEN:.0%})"]
    why = (f"{source}: README {'present' if readme else 'absent'}, {docs} documentation pages, "
           f"{documented} of {modules} Python modules with a module docstring ({ratio:.0%})")
    return {"level": _level(found, wanted), "why": why, "source": source, "found": found,
            "missing": [k for k in wanted if k not in found], "docstring_ratio": round(ratio, 4)}
