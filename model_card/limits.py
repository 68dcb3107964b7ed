"""What an assessor judges that this tool cannot: stated in every card, never scored silently (issue 17.4).

The frameworks ask questions of quality and truth ("comprehensive", "peer reviewed", "covering all major
parts") that presence and section checks do not answer. Each limit names the question, what the tool checks
instead, and the parameters or elements whose level rests on that check. Claimed evidence (links, metadata,
files of another repository) adds one more: its content and license were not read.
"""
from __future__ import annotations

# (key, the assessor's question, what is checked instead, what it affects)
LIMITS = (
    ("datasheet", "Is the datasheet comprehensive?", "only the presence of Gebru et al.'s seven section headings",
     "OSAI datasheet"),
    ("modelcard", "Is the model card comprehensive?", "only the presence of sections on architecture, training, "
     "fine-tuning, evaluation and limitations", "OSAI modelcard"),
    ("code_docs", "Is the code comprehensively documented?", "a README, documentation pages and the share of modules "
     "with a docstring; code only linked from a card is not read", "OSAI code"),
    ("hardware", "Is the hardware and training setup documented, and true?", "a sentence stating the hardware and one "
     "stating the training setup; whether they describe the run is not checked", "OSAI hardware_architecture"),
    ("preprint", "Does the paper cover data processing, training and tuning?", "only that a paper or technical report "
     "is there or cited; its content is not read", "OSAI preprint"),
    ("peer_review", "Was the paper peer reviewed?", "only a venue named in a BibTeX entry (booktitle/journal other "
     "than arXiv); the venue is not checked", "OSAI paper"),
    ("data_description", "Is the description of the training data complete (OSAID data information)?",
     "only that a data card is there, under open terms", "OSAID data_information"),
    ("license_text", "Do the license terms restrict use?", "the license identifier (card metadata or a known license "
     "header); the license text and any extra terms in the card's prose are not read", "OSAID freedoms, licenses"),
)


def stated(ev_dict: dict) -> list[dict]:
    """The limits of this card, with the claimed components when there are any."""
    out = [{"key": k, "question": q, "checked": c, "affects": a} for k, q, c, a in LIMITS]
    claimed = [c["component"] for c in ev_dict.get("components", []) if c.get("status") == "claimed"]
    if claimed:
        out.append({"key": "claimed", "question": "Are the claimed components what the card says, under which license?",
                    "checked": "nothing: claimed evidence (links, metadata, files in another repository) is counted as the "
                               "frameworks count claims, but not downloaded", "affects": ", ".join(claimed)})
    return out
