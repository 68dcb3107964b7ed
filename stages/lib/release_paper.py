"""release.paper: put a research paper into the release (MOF Class I needs one; the technical report that
the pipeline renders counts for Class II only).

The PDF must be committed in this repository (e.g. docs/paper.pdf): then it is in the code tree the
release archives, under a DVC dep of the release stage (so a new version of the paper re-runs the release),
and a clone rebuilds the same release. It lands in release/paper/paper.pdf, where the audit looks for it
(model_card/evidence.py), with paper/paper.json naming its source path, SPDX license and sha256.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from stages.core import files

from .code_tree import entries

OUT = "paper"


class PaperError(ValueError):
    """release.paper names a file that cannot go into the release."""


def add_paper(root: Path, paper, out: Path) -> dict | None:
    """Copy the paper into out/paper/; returns its record (None when release.paper.path is null)."""
    if paper is None or paper.path is None:
        return None
    src = root / paper.path
    if not src.is_file():
        raise PaperError(f"params.yaml release.paper.path: {paper.path} does not exist (a PDF in the repository)")
    if paper.path not in {e.path for e in entries(root)}:
        raise PaperError(f"params.yaml release.paper.path: {paper.path} is not committed; `git add {paper.path}` and "
                         "commit it, so the code tree and DVC see the paper the release ships")
    if not src.read_bytes()[:5] == b"%PDF-":
        raise PaperError(f"params.yaml release.paper.path: {paper.path} is not a PDF (no %PDF- header)")
    (out / OUT).mkdir()
    shutil.copyfile(src, out / OUT / "paper.pdf")
    record = {"source": paper.path, "license": paper.license, "sha256": files.sha256_file(out / OUT / "paper.pdf")}
    files.write_json(out / OUT / "paper.json", record)
    return record
