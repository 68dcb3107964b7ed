"""OSI Open Source AI Definition (OSAID) 1.0: is the release Open Source AI? (binary)

Rules from the research note /work/shared/research/openness_frameworks.md, §1 (quoted as
"note §x"), §7 where frameworks disagree. Four elements, all must be met, no partial result
(note §1.5: "There is no partial result and no published per-component scoring"):

  data_information  (OSAID-D)  a description of the training data under OSD-compatible terms;
                                raw data is NOT required, but open data must be shared
  code              (OSAID-C)  every code component the definition lists, released under an
                                OSI-approved license
  parameters        (OSAID-P)  final weights released under OSI-approved/open terms
  freedoms          (OSAID-F)  no field-of-use / user / purpose restriction anywhere in the bundle

Pure function of the evidence record: it reads component presence and license strings only.
It cannot read content, so "a complete description" is answered by the presence of the
component that carries it (the data card), never by judging the text.
"""
from __future__ import annotations

from .evidence import Evidence, Item
from .licenses import is_open, is_osi, spdx_id

# OSAID-C (note §1.1 "complete source used to train and run the system ...: data processing and
# filtering code, training code with arguments and settings, validation and testing code,
# supporting libraries (tokenizers, hyper-parameter search), inference code, model architecture";
# §1.5 `e.code[preprocessing, training(+configs), validation/testing, supporting libs, inference,
# architecture].released`; §1.3 checklist: "Code (all required)" + "Model architecture: OSI-approved
# license"). Mapped to MOF component names; "validation and testing" is the MOF "Evaluation code".
CODE_COMPONENTS = (
    "Data preprocessing code",
    "Training code",
    "Evaluation code",
    "Supporting libraries and tools",
    "Inference code",
    "Model architecture",
)
PARAMETERS = "Model parameters (Final)"
DATASETS = "Datasets"
# The carrier of OSAID "data information" in a MOF record: the data card ("dataset source,
# characteristics, preprocessing", note §2.1; the MOF records it as included when the model card
# holds that information). The OSI 1.0 checklist also lists Datasets, research paper and technical
# report as "Data" components, but note §7: "the definition itself only requires data information"
# and §1.3: the checklist is "not an operating manual to evaluate Open Source AI" -> we follow the
# definition: a data card is required, the other three are not.
DATA_CARD = "Data card"


def osd_terms(name: str | None) -> bool:
    """"OSI-approved terms" for parameters and data information (note §1.4): OSI-approved
    licenses or OSD-compatible data/documentation licenses (CC-BY, CC-BY-SA, CDLA-Permissive...).
    Non-commercial (CC-BY-NC-*), research-only and acceptable-use licenses (Llama community
    licenses, RAIL family, Falcon TII) are not on either list and fail the "any purpose" freedom.
    Implemented as licenses.is_open (OSI-approved or FSF-libre in SPDX, or the MOT open-data list)."""
    return is_open(spdx_id(name))


def osi_license(name: str | None) -> bool:
    """Code: "any license on the OSI approved list" (note §1.4)."""
    return is_osi(spdx_id(name))


def _released(ev: Evidence, component: str) -> Item | None:
    item = ev.get(component)
    return item if item is not None and item.released else None


def _element(met: bool, items: list[Item], why: str) -> dict:
    # verified: the element is met AND every item it rests on matched the release manifest.
    return {"met": met, "verified": bool(met and items and all(i.verified for i in items)),
            "evidence": [i.component for i in items], "why": why}


def _data_information(ev: Evidence) -> dict:
    """OSAID-D (note §1.1, §1.2, §1.5).

    - a description of all training data must exist: note §1.1 "complete description of all
      training data, including unshareable data ... list of all publicly available training data +
      where to obtain it ... list of training data obtainable from third parties"; in the record
      that is the data card (content completeness is not readable from the record: presence only);
    - its terms must be OSD-compatible: §1.5 "terms(data_information) are OSD-compatible", §1.1
      "available under OSI-approved terms" (a data card without a license grants nothing);
    - raw data is NOT required (§0, §7: "not required; data information suffices"), EXCEPT open
      data: §1.2 "Open training data ... must be shared", §1.5 "all(open data actually shared)".
      The record says the data is open when the Datasets item carries an open license; if such
      data is not released the element fails. Unreleased data without an open license (public,
      obtainable or unshareable data, §1.2) only has to be described.
    """
    card = _released(ev, DATA_CARD)
    data = ev.get(DATASETS)
    if card is None:
        return _element(False, [], "no data card: no description of the training data (provenance, "
                                   "selection, filtering, sources and where to obtain them)")
    if not osd_terms(card.license):
        return _element(False, [card], f"data card under {card.license or 'no license'}: "
                                       "data information must be under OSI-approved/OSD-compatible terms")
    if data is not None and not data.released and osd_terms(data.license):
        return _element(False, [card, data], f"training data is open data ({data.license}) but not "
                                             "released: open training data must be shared")
    if data is not None and data.released:
        return _element(True, [card, data], f"data card under {card.license}; training data released"
                                            f"{' under ' + data.license if data.license else ''}")
    return _element(True, [card], f"data card under {card.license} describes the training data; "
                                  "raw data not released, which OSAID does not require for non-open data")


def _code(ev: Evidence) -> dict:
    """OSAID-C (note §1.1, §1.3, §1.5): every listed code component released, each under an
    OSI-approved license ("available under OSI-approved licenses")."""
    items = [ev.get(c) for c in CODE_COMPONENTS]
    missing = [c for c, i in zip(CODE_COMPONENTS, items) if i is None or not i.released]
    bad = [f"{i.component} ({i.license or 'no license'})" for i in items
           if i is not None and i.released and not osi_license(i.license)]
    present = [i for i in items if i is not None and i.released]
    if missing or bad:
        why = "; ".join(filter(None, [
            "not released: " + ", ".join(missing) if missing else "",
            "not under an OSI-approved license: " + ", ".join(bad) if bad else ""]))
        return _element(False, present, why)
    lics = sorted({spdx_id(i.license) for i in present})
    return _element(True, present, "all code components released under " + ", ".join(lics))


def _parameters(ev: Evidence) -> dict:
    """OSAID-P (note §1.1): weights released, "available under OSI-approved terms"; intermediate
    checkpoints and optimizer state are examples, not mandatory (§1.1, §7)."""
    w = _released(ev, PARAMETERS)
    if w is None:
        return _element(False, [], "final model parameters not released")
    if not osd_terms(w.license):
        return _element(False, [w], f"parameters under {w.license or 'no license'}: not OSI-approved "
                                    "terms (use, study, modify, share for any purpose)")
    return _element(True, [w], f"parameters released under {spdx_id(w.license)}")


def _freedoms(ev: Evidence) -> dict:
    """OSAID-F (note §1.1 "terms of all the above (and their combination) must not restrict field
    of use, users, or purposes"; §1.5 "no field-of-use / user / purpose restriction anywhere in the
    bundle"; §7: non-commercial data/doc licenses and use-restricted model licenses "fail").
    Checked over every licensed component OSAID assesses: code, parameters, the data card and any
    released training data. A license string that is neither OSI-approved nor an open data/doc
    license is a restriction (copyleft is allowed: GPL, CC-BY-SA are open). Components without a
    license are failures of their own element, not restrictions. Other documents (model card,
    evaluation results, reports) are not assessed (§7 "Documentation licenses: not assessed")."""
    assessed = [*CODE_COMPONENTS, PARAMETERS, DATA_CARD, DATASETS]
    items = [i for i in (_released(ev, c) for c in assessed) if i is not None and i.license]
    restricted = [i for i in items if not osd_terms(i.license)]
    if restricted:
        return _element(False, restricted, "terms restrict use (not OSI-approved/OSD-compatible): " +
                        ", ".join(f"{i.component} ({i.license})" for i in restricted))
    if not items:
        return _element(False, [], "no licensed component: no terms grant the four freedoms")
    return _element(True, items, "no use, user or purpose restriction in the terms of " +
                    ", ".join(sorted({spdx_id(i.license) for i in items})))


def evaluate(ev: Evidence) -> dict:
    elements = {
        "data_information": _data_information(ev),
        "code": _code(ev),
        "parameters": _parameters(ev),
        "freedoms": _freedoms(ev),
    }
    failures = [{"element": k, "why": e["why"]} for k, e in elements.items() if not e["met"]]
    return {"compliant": not failures, "failures": failures, "elements": elements}
