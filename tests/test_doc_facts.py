"""Card claims and documentation facts on small hand-written inputs: what counts, what does not, and why."""
from __future__ import annotations

import io
import tarfile

from model_card import card_claims, doc_facts, osai_index
from model_card.evidence import Evidence, Item


def archive(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in sorted(files.items()):
            data = text.encode()
            info = tarfile.TarInfo(f"proj-1234/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_code_archive_levels():
    full = {"README.md": "# p", "docs/USE.md": "use", "a.py": '"""Why a."""\n', "b.py": '"""Why b."""\nx = 1\n',
            "tests/test_a.py": "def test(): pass\n"}  # tests do not count towards the docstring ratio
    assert doc_facts.code_archive(archive(full), "code/p.tar.gz")["level"] == "open"
    some = {**full, "c.py": "x = 1\n"}  # 2 of 3 modules documented: below 90 %
    fact = doc_facts.code_archive(archive(some), "code/p.tar.gz")
    assert fact["level"] == "partial" and "2 of 3 Python modules" in fact["why"]
    none = doc_facts.code_archive(archive({"c.py": "x = 1\n"}), "code/p.tar.gz")
    assert none["level"] == "closed"
    broken = doc_facts.code_archive(b"\x1f\x8bnot a tarball", "code/p.tar.gz")
    assert broken["level"] == "closed" and "not a readable .tar.gz" in broken["why"]


def test_modelcard_sections_and_fine_tuning_applicability():
    card = "# M\n## Architecture\n## Training\n## Evaluation\n## Limitations\n"
    assert doc_facts.modelcard(card, "README.md", fine_tuned=False)["level"] == "open"
    tuned = doc_facts.modelcard(card, "README.md", fine_tuned=True)
    assert tuned["level"] == "partial" and tuned["missing"] == ["fine-tuning"]
    assert doc_facts.modelcard(card + "## Fine-tuning\n", "README.md", fine_tuned=True)["level"] == "open"
    # A heading inside a code example is not a section.
    assert doc_facts.modelcard("# M\n```\n## Architecture\n```\n", "README.md", False)["level"] == "closed"


def test_hardware_needs_a_training_statement_and_a_setup():
    inference_only = "Run it on a GPU with 16 GB of memory.\n"
    assert doc_facts.hardware({"README.md": inference_only})["level"] == "closed"
    hw = doc_facts.hardware({"README.md": "It was trained on 8 A100 GPUs.\n"})
    assert hw["level"] == "partial" and hw["missing"] == ["training setup"]
    both = doc_facts.hardware({"README.md": "It was trained on 8 A100 GPUs.\nWe used FSDP in bf16.\n"})
    assert both["level"] == "open" and "8 A100 GPUs" in both["why"] and "FSDP" in both["why"]


def test_datasheet_counts_gebru_sections_of_the_best_sheet():
    seven = "".join(f"## {s}\ntext\n" for s in ("Motivation", "Composition", "Collection process",
                                                 "Preprocessing, cleaning, labeling", "Uses", "Distribution", "Maintenance"))
    fact = doc_facts.datasheet({"a.md": "## Motivation\n", "b.md": seven})
    assert fact["level"] == "open" and fact["source"] == "b.md" and "best of 2" in fact["why"]
    assert doc_facts.datasheet({"a.md": "## Motivation\n"})["level"] == "partial"


def test_card_claims_read_statements_not_comments_or_examples():
    card = """---
license: mit
---
<!-- The training code is available at https://github.com/a/hidden -->
The training code is available at https://github.com/org/train.git.
Our data filtering pipeline is https://github.com/org/filter.
Built on https://github.com/org/lib.
```python
model = load("org/m", revision="step000100")
```
See https://arxiv.org/abs/2401.01234v2 and https://doi.org/10.1145/3571884.3604316.
Checkpoints: https://huggingface.co/org/m/tree/step000200 and https://huggingface.co/other/x/tree/v1.
```bibtex
@inproceedings{k,
  title={T},
  booktitle={Proceedings of ACL},
}
```
"""
    c = card_claims.read(card, "org/m")
    assert [x["value"] for x in c["code:Training code"]] == ["https://github.com/org/train"]
    assert [x["value"] for x in c["code:Data preprocessing code"]] == ["https://github.com/org/filter"]
    assert [x["value"] for x in c["code_reference"]] == ["https://github.com/org/lib"]
    assert {x["value"] for x in c["paper"]} == {"arxiv:2401.01234", "doi:10.1145/3571884.3604316"}
    assert {x["value"] for x in c["revision"]} == {"step000100", "step000200"}  # not other/x's branch
    assert c["peer_reviewed"][0]["value"] == "Proceedings of ACL"
    assert all("hidden" not in x["value"] for k in c for x in c[k])


def test_a_named_venue_makes_the_paper_parameter_open():
    paper = Item("Research paper", "document", True, "https://arxiv.org/abs/1", None, False, None, "")
    ev = Evidence("x", [paper], {"facts": {"peer_reviewed": "Proceedings of ACL"}}, kind="hf-snapshot")
    r = osai_index.evaluate(ev)["parameters"]
    assert r["paper"]["level"] == "open" and "Proceedings of ACL" in r["paper"]["why"]
    assert r["preprint"]["level"] == "open"
    ev.lineage = {}
    assert osai_index.evaluate(ev)["parameters"]["paper"]["level"] == "closed"
