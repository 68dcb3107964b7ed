"""release.paper (stages/lib/release_paper.py): a committed PDF goes into release/paper/ with its license;
anything else is refused with one line naming params.yaml release.paper.path. The Class I audit of the real
tiny release with a paper is in tests/test_release_repro.py."""
from __future__ import annotations

import json
import subprocess

import pytest

from stages.core.params import Paper
from stages.lib.release_paper import PaperError, add_paper

PDF = (b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
       b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 200 200]>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n")


@pytest.fixture
def repo(tmp_path):
    r = tmp_path / "repo"
    (r / "docs").mkdir(parents=True)
    (r / "docs" / "paper.pdf").write_bytes(PDF)
    (r / "docs" / "fake.pdf").write_text("not a pdf")
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "x"]):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", *cmd], cwd=r, check=True)
    (r / "docs" / "draft.pdf").write_bytes(PDF)  # not committed
    return r


def test_committed_pdf_goes_into_the_release(repo, tmp_path):
    out = tmp_path / "release"
    out.mkdir()
    rec = add_paper(repo, Paper(path="docs/paper.pdf", license="CC-BY-4.0"), out)
    assert (out / "paper" / "paper.pdf").read_bytes() == PDF
    assert json.loads((out / "paper" / "paper.json").read_text()) == rec
    assert rec["license"] == "CC-BY-4.0" and rec["source"] == "docs/paper.pdf" and len(rec["sha256"]) == 64
    assert add_paper(repo, Paper(), out) is None


@pytest.mark.parametrize("path, message", [("docs/missing.pdf", "does not exist"), ("docs/draft.pdf", "is not committed"),
                                           ("docs/fake.pdf", "is not a PDF")])
def test_what_cannot_be_released_is_named(repo, tmp_path, path, message):
    with pytest.raises(PaperError, match=f"release.paper.path: {path} {message}"):
        add_paper(repo, Paper(path=path, license="CC-BY-4.0"), tmp_path)
    assert not (tmp_path / "paper").exists()


def test_params_need_a_license_and_a_relative_pdf():
    from pydantic import ValidationError

    for bad, why in [({"path": "docs/p.pdf"}, "SPDX license"), ({"path": "/abs.pdf", "license": "MIT"}, "inside the repository"),
                     ({"path": "docs/p.md", "license": "MIT"}, "pdf")]:
        with pytest.raises(ValidationError, match=why):
            Paper(**bad)
