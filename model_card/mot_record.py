"""Evidence from a Model Openness Tool record (the YAML files of lfai/model_openness_tool models/).

Such a record is a producer's self-description: it lists components with licenses and paths but
ships no file, so every listed component is *claimed*, none is present or verified. It is read as
the tool reads it (`mof.load_record`: Symfony's YAML semantics), components are listed as the tool
lists them (`mof.listed_components`: unknown names count as Datasets, the last duplicate wins), and
each license is resolved as the tool resolves it (component, then type, then distribution license).

The MOF class of a record is computed on the record itself, not on an export of this evidence
(`render.audit(ev, mot_record=...)`): the tool matches license ids case-sensitively, and a round
trip through our SPDX normalisation would turn `apache-2.0` (not open for the tool) into
`Apache-2.0` (open). The other three frameworks read the evidence below.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from . import mof
from .evidence import Evidence, Item

# release.* fields kept as lineage: what the record says about itself (the class never reads them).
META = ("name", "version", "date", "type", "architecture", "origin", "producer", "contact", "repository",
        "huggingface")


class RecordError(ValueError):
    """A file that is not a MOT record."""


def load(path: Path) -> dict:
    """The record, or a RecordError naming what is wrong (bad YAML, no `release` mapping...)."""
    try:
        record = mof.load_record(path)
    except (yaml.YAMLError, ValueError) as err:
        raise RecordError(f"{path}: not a readable MOF record: {err}") from None
    release = record.get("release")
    if not isinstance(release, dict):
        raise RecordError(f"{path}: not a MOF record: no `release` mapping (the Model Openness Tool's "
                          "format has `framework` and `release` at the top)")
    if not isinstance(release.get("components", []), list):
        raise RecordError(f"{path}: `release.components` must be a list of components")
    return record


def evidence(record: dict, source: str) -> Evidence:
    """One item per MOF component (all 17), in the framework's order."""
    release = record.get("release") or {}
    global_licenses = release.get("license") or {}
    listed, warnings = mof.listed_components(record)
    items = []
    for _, name, ctype, _, _ in mof.COMPONENTS:
        entry = listed.get(name)
        if entry is None:
            items.append(Item(name, ctype, released=False, note="not listed in the MOF record"))
            continue
        lic = mof.resolve_license(entry, ctype, global_licenses)
        path = entry.get("component_path") or None
        desc = str(entry.get("description") or "").strip()
        note = "listed in the MOF record" + (f": {desc}" if desc else "") + ("" if lic else " (no license)")
        items.append(Item(name, ctype, True, str(path) if path else None, lic, False, None, note))
    lineage = {"mof_record": {k: release[k] for k in META if release.get(k) not in (None, "")}}
    if warnings:
        lineage["warnings"] = warnings
    return Evidence(source=source, components=items, lineage=lineage, kind="mof-record")


def collect(path: Path, label: str | None = None) -> tuple[Evidence, dict]:
    """(evidence, the record as the tool read it): the card's MOF class comes from the record."""
    record = load(Path(path))
    return evidence(record, label or str(path)), record
