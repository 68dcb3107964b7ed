"""European Open Source AI Index (osai-index.eu): 12 parameters, each open / partial / closed,
score = mean (open=1, partial=0.5, closed=0).

Rules from the research note /work/shared/research/openness_frameworks.md §3 (quoted as
"note §x"), §7 where frameworks disagree. Parameter keys are the index's YAML keys (note §3.2,
the 12 current ones; `package` and `api` were removed on 2026-03-13).

What the evidence record can and cannot decide. The record holds, per MOF component, whether it
was released and under which license; it does not hold document quality, peer review, gating,
or a base/end model split. Policy (never guess "open"):
- a parameter the record has no component for is "closed" with why "no evidence ...";
- a document parameter whose "open" level needs comprehensiveness the record cannot show
  (model card, datasheet, preprint) is "partial" when the document is present (present proves
  more than "none", nothing proves "comprehensive"), "closed" when absent;
- documentation parameters come from checked facts when the collector recorded them
  (`lineage["facts"]`, model_card.doc_facts: model card sections, Gebru's datasheet sections, a stated
  hardware and training setup, README/docs/docstrings of the source archive); a document only claimed
  (linked from a card) is "partial": it cannot be checked (a stated limit, model_card.limits);
- preprint: an archived research paper (in the release or cited by the card) is "open", a technical
  report alone "partial"; paper (peer review): "open" only for a venue the evidence names;
- licenses: a part claimed by a link carries no license in the evidence: "unknown", neither open nor not;
- the record describes one model: note §3.2 datasources_basemodel "mirrors end model if no
  base/end distinction"; weights are mirrored the same way. When the lineage names an external
  base model (`lineage["base_model"]`), the base-model parameters are "closed" (no evidence).
"""
from __future__ import annotations

from .evidence import Evidence, Item

from .licenses import is_open, spdx_id

# Note §3.2, in the index's order.
PARAMETERS = (
    "datasources_basemodel", "datasources_endmodel", "weights_basemodel", "weights_endmodel",
    "trainingcode", "code", "hardware_architecture", "preprint", "paper", "modelcard", "datasheet",
    "licenses",
)
# Note §3.3: "weight open=1, partial=0.5, closed=0 (missing/empty also 0)".
WEIGHTS = {"open": 1.0, "partial": 0.5, "closed": 0.0, None: 0.0, "": 0.0}

# trainingcode: "source code for data processing, training and tuning" (note §3.2).
TRAINING_CODE = ("Data preprocessing code", "Training code")
NO_EVIDENCE = "no evidence"


def score(levels: dict) -> float:
    """Note §3.3: score = sum(w[class_p] for p in params) / len(params); mean over all applicable
    parameters (all 12 for a text model)."""
    return sum(WEIGHTS[v] for v in levels.values()) / len(levels) if levels else 0.0


def _p(level: str, items: list[Item | None], why: str) -> dict:
    return {"level": level, "evidence": [i.component for i in items if i is not None], "why": why}


def _released(ev: Evidence, component: str) -> Item | None:
    item = ev.get(component)
    return item if item is not None and item.released else None


def _datasources(ev: Evidence) -> dict:
    """open: "all sources open for inspection or shared"; partial: "some sources"; closed: "none".
    Datasets released -> shared -> open. Not released but a data card present -> the sources are
    documented, not made available -> partial (the question is "documented and made available?").
    Neither -> closed. Licenses are judged by the `licenses` parameter, not here."""
    data, card = _released(ev, "Datasets"), _released(ev, "Data card")
    if data is not None:
        return _p("open", [data], f"training data shared at {data.location}")
    if card is not None:
        return _p("partial", [card], "training data not shared; its sources are documented in the data card")
    return _p("closed", [], f"{NO_EVIDENCE}: training data neither shared nor documented")


def _weights(ev: Evidence) -> dict:
    """open: "shared"; partial: "gated/partial"; closed: "not shared". The record has no gating flag:
    released weights are shared."""
    w = _released(ev, "Model parameters (Final)")
    if w is None:
        return _p("closed", [], "model weights not shared")
    return _p("open", [w], f"weights shared at {w.location}")


def _trainingcode(ev: Evidence) -> dict:
    """open: "fully open for inspection"; partial: "sparse code"; closed: "none". Fully = every
    data-processing and training component released; some -> partial."""
    items = [ev.get(c) for c in TRAINING_CODE]
    rel = [i for i in items if i is not None and i.released]
    if len(rel) == len(TRAINING_CODE):
        return _p("open", rel, "data processing and training code released")
    if rel:
        missing = [c for c in TRAINING_CODE if c not in {i.component for i in rel}]
        return _p("partial", rel, "only part of the pipeline code released; missing: " + ", ".join(missing))
    return _p("closed", [], "no data processing or training code released")


def _fact(ev: Evidence, key: str, items: list[Item | None]) -> dict | None:
    """A parameter from a checked fact (model_card.doc_facts), when the collector recorded one."""
    fact = ((ev.lineage or {}).get("facts") or {}).get(key)
    if not fact:
        return None
    return _p(fact["level"], [i for i in items if i is not None], fact["why"])


def _doc(ev: Evidence, components: tuple[str, ...], what: str, fact: str | None = None) -> dict:
    """Document parameters (modelcard, datasheet): the checked sections when a fact was recorded,
    else presence only (see module docstring)."""
    rel = [i for i in (_released(ev, c) for c in components) if i is not None]
    if fact and rel and (checked := _fact(ev, fact, rel)) is not None:
        return checked
    if rel and all(i.status == "claimed" for i in rel):
        return _p("partial", rel, f"{rel[0].component} claimed at {rel[0].location}; not in the audited files, so "
                                  f"whether it is {what} cannot be checked (a stated limit)")
    if rel:
        return _p("partial", rel, f"{' / '.join(i.component for i in rel)} present; whether it is {what} "
                                  "is not in the evidence record, so not open")
    return _p("closed", [], f"{NO_EVIDENCE}: no {' or '.join(components).lower()} in the release")


def _licenses(ev: Evidence) -> dict:
    """Note §3.2 `licenses`: "Are weights, training code and data sources (as available) under open
    licenses?" open: "project fully covered by open licenses incl. data sources and pipeline code";
    partial: "parts under open licenses, at least two (partially or fully) of weights, training
    code, training data"; closed: "unclear or not open". Open = licenses.is_open (OSI-approved,
    FSF-libre, open-data list), so Llama, RAIL, TII and CC-BY-NC are not open (note §7).
    "As available": only released parts are judged; a part with nothing released does not count."""
    parts = {"weights": ("Model parameters (Final)",), "training code": TRAINING_CODE,
             "training data": ("Datasets",)}
    status, items = {}, []
    for part, comps in parts.items():
        rel = [i for i in (_released(ev, c) for c in comps) if i is not None]
        if not rel:
            continue  # not available
        items += rel
        known = [i for i in rel if i.license or i.status != "claimed"]
        if not known:  # only claimed by a link: its license is not in the evidence (a stated limit, not "not open")
            status[part] = "unknown"
            continue
        n_open = sum(is_open(spdx_id(i.license)) for i in known)
        status[part] = "fully" if n_open == len(known) else "partially" if n_open else "not"
    desc = "; ".join(f"{p}: license not in the evidence (claimed at "
                     f"{', '.join(str(i.location) for i in items if i.component in parts[p])})" if s == "unknown" else
                     f"{p}: {s} open ({', '.join(str(i.license) for i in items if i.component in parts[p])})"
                     for p, s in status.items())
    if not status:
        return _p("closed", [], "unclear: no weights, training code or training data released")
    if all(s == "fully" for s in status.values()):
        return _p("open", items, "all available parts under open licenses: " + desc)
    if "unknown" in status.values() and all(s in ("fully", "unknown") for s in status.values()):
        return _p("partial", items, "the parts whose license is in the evidence are open; the license of the linked "
                                    "parts is not (claimed only): " + desc)
    if sum(s in ("fully", "partially") for s in status.values()) >= 2:
        return _p("partial", items, "some parts under open licenses: " + desc)
    return _p("closed", items, "not open: " + desc)


def _code_docs(ev: Evidence) -> dict:
    """"Is that code comprehensively documented?" From the checked source archive (README, docs, docstrings)
    when the collector had one. Code that is only linked from a card: partial when the card documents the
    training procedure ("some steps documented"), the linked repository's own documentation being unread."""
    code = [i for i in (_released(ev, c) for c in TRAINING_CODE) if i is not None]
    if (checked := _fact(ev, "code", code)) is not None:
        return checked
    linked = [i for i in code if i.status == "claimed"]
    training = ((ev.lineage or {}).get("facts") or {}).get("training_procedure")
    if linked and training:
        return _p("partial", linked, f"code linked from the card ({linked[0].location}) and its training procedure "
                                     f"documented ({training}); the linked repository's documentation is not read")
    return _p("closed", code, f"{NO_EVIDENCE}: no documentation of the code was checked")


def _preprint(ev: Evidence, paper: Item | None) -> dict:
    """"Archived preprint(s) covering data processing, training and tuning?" A research paper about this
    model (in the release, or cited by the card as arXiv/DOI) is open: its coverage is a stated limit, not
    checked. A technical report alone (not an archived preprint) is partial."""
    if paper is not None:
        where = "in the release" if paper.status != "claimed" else "cited by the card"
        return _p("open", [paper], f"research paper {where}: {paper.location}" + (f" ({paper.note})" if paper.note else ""))
    report = _released(ev, "Technical report")
    if report is not None:
        return _p("partial", [report], f"a technical report ({report.location}) but no archived preprint: "
                                       "only partly the archived paper the index asks for")
    return _p("closed", [], f"{NO_EVIDENCE}: no research paper or technical report")


def _peer_reviewed(ev: Evidence, paper: Item | None) -> dict:
    """"Peer-reviewed paper(s) covering the whole system?" Only a venue the evidence names counts
    (a BibTeX booktitle/journal that is not arXiv); whether a venue reviewed it is a stated limit."""
    venue = ((ev.lineage or {}).get("facts") or {}).get("peer_reviewed")
    if paper is not None and venue:
        return _p("open", [paper], f"published at {venue}")
    return _p("closed", [paper] if paper else [],
              f"{NO_EVIDENCE}: no peer-reviewed venue is named" + (" (the research paper is a preprint)" if paper else ""))


def evaluate(ev: Evidence) -> dict:
    end_sources, end_weights = _datasources(ev), _weights(ev)
    base = (ev.lineage or {}).get("base_model")
    if base:  # an external base model the record does not describe
        no_base = f"{NO_EVIDENCE}: base model {base} is not in the evidence record"
        base_sources, base_weights = _p("closed", [], no_base), _p("closed", [], no_base)
    else:  # note §3.2: "mirrors end model if no base/end distinction"
        base_sources, base_weights = end_sources, end_weights
    paper = _released(ev, "Research paper")
    params = {
        "datasources_basemodel": dict(base_sources),
        "datasources_endmodel": end_sources,
        "weights_basemodel": dict(base_weights),
        "weights_endmodel": end_weights,
        "trainingcode": _trainingcode(ev),
        "code": _code_docs(ev),
        "hardware_architecture": _fact(ev, "hardware_architecture", []) or _p(
            "closed", [], f"{NO_EVIDENCE}: no statement of the hardware or training setup was found"),
        "preprint": _preprint(ev, paper),
        "paper": _peer_reviewed(ev, paper),
        "modelcard": _doc(ev, ("Model card",), "a comprehensive standardized card "
                          "(architecture, training, fine-tuning, evaluation)", fact="modelcard"),
        "datasheet": _doc(ev, ("Data card",), "a comprehensive datasheet (Gebru et al. 2021) or "
                          "an AI Act Art. 53(1)(d) summary", fact="datasheet"),
        "licenses": _licenses(ev),
    }
    assert tuple(params) == PARAMETERS
    return {"score": score({k: v["level"] for k, v in params.items()}), "parameters": params}
