"""Audit requirements: `--require mof-class=1`, `--require osaid`, ... as a CI or publish gate.

One small grammar shared by `lucie audit --require` and the publish stage's `publish.require`:

  osaid                 OSI OSAID 1.0 compliant
  mof-class=N           MOF class N or better (1 is the most open; 0 = unclassified never passes)
  nextcloud=COLOR       Nextcloud traffic light COLOR or better (green > yellow > orange > red)
  osai-index>=X         European Open Source AI Index mean score at least X (0..1)
  reproduced            `lucie verify` re-ran every stage behind the release and reproduced its outputs
                        (evidence.reproduction.status; a stale, failed or missing verification fails)

A requirement that does not parse is an error (a typo must not turn a gate into a no-op).
"""
from __future__ import annotations

import re

NEXTCLOUD_ORDER = ["green", "yellow", "orange", "red"]
_SYNTAX = re.compile(r"^(?P<key>osaid|mof-class|nextcloud|osai-index|reproduced)(?:(?P<op>>=|=)(?P<value>.+))?$")


class RequirementError(ValueError):
    """A requirement string that is not part of the grammar."""


def parse(req: str) -> tuple[str, str | None]:
    m = _SYNTAX.match(req.strip().lower())
    if not m:
        raise RequirementError(f"unknown requirement {req!r}; use osaid, mof-class=N, nextcloud=COLOR, osai-index>=X, "
                               "reproduced")
    key, op, value = m["key"], m["op"], m["value"]
    expected_op = {"osaid": None, "mof-class": "=", "nextcloud": "=", "osai-index": ">=", "reproduced": None}[key]
    if op != expected_op:
        raise RequirementError(f"requirement {req!r}: {key} takes {'no value' if expected_op is None else expected_op + 'VALUE'}")
    if key == "mof-class" and value not in {"1", "2", "3"}:
        raise RequirementError(f"requirement {req!r}: MOF classes are 1, 2 or 3")
    if key == "nextcloud" and value not in NEXTCLOUD_ORDER:
        raise RequirementError(f"requirement {req!r}: colours are {', '.join(NEXTCLOUD_ORDER)}")
    if key == "osai-index":
        try:
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError
        except ValueError:
            raise RequirementError(f"requirement {req!r}: the OSAI index score is a number in [0, 1]") from None
    return key, value


def failures(card: dict, requirements: list[str]) -> list[str]:
    """Each unmet requirement as one line saying what was required and what the card says; [] when all hold."""
    out = []
    for req in requirements:
        key, value = parse(req)
        if key == "osaid" and not card["osaid"]["compliant"]:
            # osaid.failures holds {"element", "why"} records (model_card.osaid.evaluate).
            failing = ", ".join(f["element"] for f in card["osaid"]["failures"])
            out.append(f"osaid: not compliant (failing: {failing})")
        elif key == "mof-class":
            got = card["mof"]["class"]
            if got == 0 or got > int(value):
                label = f" ({card['mof']['label']})" if got and card["mof"].get("label") else ""
                out.append(f"mof-class={value}: release is {'unclassified' if got == 0 else f'Class {got}'}{label}")
        elif key == "nextcloud":
            got = card["nextcloud"]["color"]
            if NEXTCLOUD_ORDER.index(got) > NEXTCLOUD_ORDER.index(value):
                out.append(f"nextcloud={value}: release is {got}")
        elif key == "osai-index":
            got = card["osai_index"]["score"]
            if got < float(value):
                out.append(f"osai-index>={value}: score is {got:.3f}")
        elif key == "reproduced":
            rep = card["evidence"].get("reproduction") or {"status": "none", "summary": "no verification result"}
            if rep["status"] != "reproduced":
                out.append(f"reproduced: reproduction is {rep['status']} ({rep.get('summary', '')})")
    return out
