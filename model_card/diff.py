"""`lucie audit diff A B`: what changed in openness between two audited inputs, and whether it regressed.

A and B are any two audit inputs (releases, published repos, snapshots, hf:// repos, MOF records); each is
rated by the same frameworks and the two cards are compared: the four verdicts, the 12 OSAI parameters, the
17 MOF component statuses, and per evidence component its status (verified/present/claimed/absent) and
license. A change is a *regression* when B is less open than A: OSAID compliance lost, a less open MOF class
(unclassified is least), a worse Nextcloud colour, a lower OSAI score or parameter level, a MOF component
no longer included, a component no longer released, or a license that was open and is not. Other changes
are listed without judgement (e.g. verified -> claimed is a loss of evidence, counted as a regression too).
"""
from __future__ import annotations

from . import untrusted
from .licenses import is_open, spdx_id

COLORS = {"red": 0, "orange": 1, "yellow": 2, "green": 3}
LEVELS = {"closed": 0, "partial": 1, "open": 2}
STATUS = {"absent": 0, "claimed": 1, "present": 2, "verified": 3}
MOF_RANK = {0: 0, 3: 1, 2: 2, 1: 3}  # Class I most open


def _change(what: str, a, b, regression: bool) -> dict:
    return {"what": what, "a": a, "b": b, "regression": regression}


def compare(a: dict, b: dict) -> dict:
    """Changes from card `a` to card `b` (render.audit dicts), most important first."""
    out = []
    if a["osaid"]["compliant"] != b["osaid"]["compliant"]:
        out.append(_change("OSAID compliant", a["osaid"]["compliant"], b["osaid"]["compliant"], a["osaid"]["compliant"]))
    ca, cb = a["mof"]["class"], b["mof"]["class"]
    if ca != cb:
        out.append(_change("MOF class", a["mof"]["label"], b["mof"]["label"], MOF_RANK[cb] < MOF_RANK[ca]))
    sa, sb = round(a["osai_index"]["score"], 4), round(b["osai_index"]["score"], 4)
    if sa != sb:
        out.append(_change("OSAI index score", sa, sb, sb < sa))
    na, nb = a["nextcloud"]["color"], b["nextcloud"]["color"]
    if na != nb:
        out.append(_change("Nextcloud colour", na, nb, COLORS[nb] < COLORS[na]))
    for k, pa in a["osai_index"]["parameters"].items():
        pb = b["osai_index"]["parameters"].get(k, {"level": "closed"})
        if pa["level"] != pb["level"]:
            out.append(_change(f"OSAI {k}", pa["level"], pb["level"], LEVELS[pb["level"]] < LEVELS[pa["level"]]))
    for name, ma in a["mof"]["components"].items():
        mb = b["mof"]["components"].get(name, {"status": "missing"})
        if ma["status"] != mb["status"]:
            out.append(_change(f"MOF {name}", ma["status"], mb["status"], ma["status"] == "included"))
    ea = {c["component"]: c for c in a["evidence"]["components"]}
    eb = {c["component"]: c for c in b["evidence"]["components"]}
    for name in sorted(set(ea) | set(eb)):
        x, y = ea.get(name, {"status": "absent", "license": None}), eb.get(name, {"status": "absent", "license": None})
        if x["status"] != y["status"]:
            out.append(_change(f"component {name}", x["status"], y["status"], STATUS[y["status"]] < STATUS[x["status"]]))
        if x.get("license") != y.get("license") and x["status"] != "absent" and y["status"] != "absent":
            lost = is_open(spdx_id(x.get("license"))) and not is_open(spdx_id(y.get("license")))
            out.append(_change(f"license of {name}", x.get("license"), y.get("license"), lost))
    return {"a": a["evidence"]["source"], "b": b["evidence"]["source"], "changes": out,
            "regressions": sum(c["regression"] for c in out)}


def to_json(d: dict) -> str:
    return untrusted.json_text(d)


def to_markdown(d: dict) -> str:
    cell = untrusted.md  # names and licences come from the cards: no HTML, escape, link or extra cell
    lines = [f"## Openness diff: {cell(d['a'])} → {cell(d['b'])}", ""]
    if not d["changes"]:
        return "\n".join(lines + ["No change in verdicts, parameters, components or licenses.", ""])
    lines += [f"{len(d['changes'])} changes, {d['regressions']} regressions.", "",
              "| what | A | B | regression |", "|---|---|---|---|"]
    lines += [f"| {cell(c['what'])} | {cell(c['a'])} | {cell(c['b'])} | {'yes' if c['regression'] else ''} |"
              for c in d["changes"]]
    return "\n".join(lines) + "\n"
