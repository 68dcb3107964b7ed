"""Model Openness Framework (LF AI & Data) class, computed exactly as the Model Openness Tool does.

Reference: research note `shared/research/openness_frameworks.md` §2 (components §2.1, licenses
§2.2 with the 10 implementation quirks, license resolution §2.3, class computation §2.4, record
format §2.5), which describes `lfai/model_openness_tool @ 8b5d30e90a7c` (ModelEvaluator.php,
LicenseHandler.php, mof.settings.yml, mof-licenses.json). This port reproduces all 27 results of
the tool's own test data (`Test_Data/expected_results.json`, see tests/test_mof.py).

Algorithm, for one MOT record (`framework` + `release`, the tool's models/*.yml):

1. Components. 17 components with a content type (code / data / document), a class (III, II, I)
   and a required flag (`COMPONENTS`). A component listed in `release.components` is present;
   one not listed is *missing*.
2. License of a present component: its own `license`; if that is null or absent, the global
   license for its type (`release.license.<type>.name`), then the global
   `release.license.distribution.name`; else none. `unlicensed`, `''`, `'0'` given on the
   component mean "explicitly none" and do not fall back (quirks 3, 4).
3. Status: *included* if the license is open (OSI-approved or FSF-libre in the SPDX list, or one
   of the tool's open-data licenses, OpenMDW-1.0 included), exact case-sensitive id (quirk 5);
   *unlicensed* if there is none; *invalid* otherwise. An open license that is not in the
   type-appropriate list for the component's type only adds a warning (§2.2, quirk 6).
4. Classes are cumulative: III needs its 6 required components, II those plus 4 more (10),
   I those plus 4 more (14). The research paper may stand in for a technical report that is not
   included (quirk 2). Progress(k) = included / total * 100, capped at 100, and 0 unless every
   less open class (III for II; III and II for I) is complete (quirk 1).
5. The class is the most open class (I before II before III) whose progress is exactly 100.0,
   else 0 ("Unclassified") (quirk 9). Optional components never change progress (quirk 8).

Records are read as the tool's Symfony YAML parser reads them (quirk 10): `MotLoader`.
"""
from __future__ import annotations

import re

import yaml

from model_card.licenses import OPEN_DATA, spdx_licenses
from model_card.safe_read import SafeYamlLoader, read_text, yaml_load

# (cid, name, type, class, required) -- mof.settings.yml as described in the research note §2.1.
COMPONENTS: tuple[tuple[int, str, str, int, bool], ...] = (
    (9, "Model architecture", "code", 3, True),
    (10, "Model parameters (Final)", "data", 3, True),
    (12, "Evaluation results", "document", 3, True),
    (13, "Model card", "document", 3, True),
    (14, "Data card", "document", 3, True),
    (11, "Technical report", "document", 3, True),
    (20, "Sample model outputs", "document", 3, False),
    (7, "Training code", "code", 2, True),
    (8, "Inference code", "code", 2, True),
    (18, "Evaluation code", "code", 2, True),
    (19, "Evaluation data", "data", 2, True),
    (22, "Supporting libraries and tools", "code", 2, False),
    (15, "Datasets", "data", 1, True),
    (16, "Data preprocessing code", "code", 1, True),
    (24, "Model parameters (Intermediate)", "data", 1, True),
    (21, "Research paper", "document", 1, True),
    (17, "Model metadata", "data", 1, False),
)
BY_NAME = {name: (cid, ctype, cls, req) for cid, name, ctype, cls, req in COMPONENTS}
TECHNICAL_REPORT, RESEARCH_PAPER, DATASETS = "Technical report", "Research paper", "Datasets"

# Labels as the tool's API reports them (expected_results.json).
LABELS = {0: "Unclassified", 1: "Class I - Open Science Model", 2: "Class II - Open Tooling Model",
          3: "Class III - Open Model"}

# OpenMDW-1.0 is open and type-appropriate for every type (§2.2). licenses.OPEN_DATA (the tool's
# OPEN_DATA_LICENSES) already lists it; keep it explicit here for the type lists.
OPENMDW = "OpenMDW-1.0"

# Type-appropriate licenses: `ContentType` of mof-licenses.json (copied in
# shared/openness/mot_test_data/Test_Scripts/). Quirk 6: CC0-1.0 and CC-PDDC appear twice there,
# first as data then as document, and the importer keeps the last entry -> document only.
# Note: in that file Apache-2.0 is listed once, as code, so it is not type-appropriate for
# documents (the research note's document list names it; the tool's data does not).
TYPE_APPROPRIATE = {
    "code": frozenset({
        "0BSD", "AFL-1.1", "AFL-1.2", "AFL-2.0", "AFL-2.1", "AFL-3.0", "Apache-1.0", "Apache-1.1",
        "Apache-2.0", "ECL-1.0", "ECL-2.0", "ISC", "MIT", "MIT-0", "MulanPSL-1.0", "MulanPSL-2.0",
        "NCSA", "UPL-1.0", OPENMDW}),
    "data": frozenset({"CDLA-Permissive-1.0", "CDLA-Permissive-2.0", "C-UDA-1.0", "PDDL-1.0", OPENMDW}),
    "document": frozenset({
        "CC-BY-4.0", "CC-BY-SA-3.0", "CC-BY-SA-4.0", "FreeBSD-DOC", "CC-PDDC", "CC0-1.0", OPENMDW}),
}

# Quirk 3: these component-level values mean "explicitly no license" (no fallback). Only the
# lower-case `unlicensed`; `Unlicensed` is an ordinary (non-SPDX, hence invalid) license name.
NO_LICENSE = "unlicensed"


# --------------------------------------------------------------------------------------------
# YAML, read as Symfony's parser reads it (quirk 10)
# --------------------------------------------------------------------------------------------
class MotLoader(SafeYamlLoader):
    """SafeLoader (with the audit's guards: no anchors/aliases, bounded nesting) and Symfony semantics: only true/false (any case) are booleans -- `yes`, `no`,
    `on`, `off` stay strings -- and a duplicate mapping key is an error. Dates stay strings
    (Symfony would give a Unix timestamp for an unquoted date; the evaluation never reads them)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


MotLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers
            if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:timestamp")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
MotLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:[Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee])$"),
    list("tTfF"))


def load_record(path) -> dict:
    """Read a MOT model record (models/*.yml) as the tool does."""
    record = yaml_load(read_text(path), MotLoader, str(path))  # bounded, regular file, no aliases
    if not isinstance(record, dict):
        raise ValueError(f"{path}: not a MOT record (top level is not a mapping)")
    return record


def evaluate_file(path) -> dict:
    return evaluate(load_record(path))


# --------------------------------------------------------------------------------------------
# Licenses
# --------------------------------------------------------------------------------------------
def _php_empty(value) -> bool:
    """PHP empty(): null, false, 0, 0.0, '', '0' and empty arrays are empty (quirk 4)."""
    return value is None or value is False or value == 0 or value in ("", "0") or value in ({}, [])


def _php_str(value) -> str:
    if value is True:
        return "1"
    return str(value)


def is_open(license_id: str | None) -> bool:
    """The MOT's open test: exact, case-sensitive id (quirk 5); OSI or FSF-libre, or open data."""
    if not license_id:
        return False
    if license_id in OPEN_DATA or license_id == OPENMDW:
        return True
    lic = spdx_licenses().get(license_id)
    return bool(lic and (lic.osi_approved or lic.fsf_libre))


def is_type_appropriate(license_id: str | None, ctype: str) -> bool:
    return license_id in TYPE_APPROPRIATE.get(ctype, ())


def _global_name(licenses, key):
    entry = licenses.get(key) if isinstance(licenses, dict) else None
    return entry.get("name") if isinstance(entry, dict) else None


def resolve_license(component: dict, ctype: str, global_licenses) -> str | None:
    """§2.3: component license, else the type's global license, else the distribution license."""
    if component.get("license") is not None:
        own = component["license"]
        # Quirk 3: an explicit `unlicensed`, '' or '0' on the component is "no license", no fallback.
        if _php_empty(own) or own == NO_LICENSE:
            return None
        return _php_str(own)
    # Quirk 4: fall back with PHP empty() semantics (a global name '0' counts as absent).
    for key in (ctype, "distribution"):
        name = _global_name(global_licenses, key)
        if not _php_empty(name):
            # A global `unlicensed` is read as "no license" too. Our reading: the research note only
            # describes the component-level value, and the test data never sets it globally.
            return None if name == NO_LICENSE else _php_str(name)
    return None


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------
def _component_status(component: dict | None, name: str, global_licenses) -> dict:
    _, ctype, _, _ = BY_NAME[name]
    if component is None:
        return {"status": "missing", "license": None, "warnings": []}
    lic = resolve_license(component, ctype, global_licenses)
    warnings = []
    if lic is None:
        status = "unlicensed"
    elif is_open(lic):
        status = "included"
        if not is_type_appropriate(lic, ctype):
            warnings.append(f"{name} should have a type-appropriate open license ({ctype}); got {lic}")
    else:
        status = "invalid"
        warnings.append(f"{name}: license {lic!r} is not an open license (exact SPDX id, OSI/FSF, "
                        "or an open-data license)")
    return {"status": status, "license": lic, "warnings": warnings}


def listed_components(record: dict) -> tuple[dict[str, dict], list[str]]:
    """The record's components as the tool stores them: {component name: entry}, plus warnings.
    Shared with the evidence collector for MOT records (model_card.mot_record), so both read the
    same list."""
    release = (record or {}).get("release") or {}
    warnings: list[str] = []
    listed: dict[str, dict] = {}
    for entry in release.get("components") or []:
        entry = entry if isinstance(entry, dict) else {}
        name = entry.get("name")
        if name not in BY_NAME:
            # Quirk 7: an unknown (case-sensitive) component name is stored as Datasets.
            warnings.append(f"unknown component {name!r} counted as {DATASETS}")
            name = DATASETS
        if name in listed:
            # Quirk 7: a component listed twice -- the last entry wins.
            warnings.append(f"component {name!r} listed more than once; the last entry is used")
        listed[name] = entry
    return listed, warnings


def evaluate(record: dict) -> dict:
    """Classify one MOT record. Returns class (0 = unclassified, 1 = Class I, most open), label,
    progress per class, per-component status (all 17) and record-level warnings (component
    warnings stay with their component)."""
    release = (record or {}).get("release") or {}
    global_licenses = release.get("license") or {}
    listed, warnings = listed_components(record)

    components = {name: _component_status(listed.get(name), name, global_licenses)
                  for _, name, _, _, _ in COMPONENTS}
    included = {name for name, c in components.items() if c["status"] == "included"}

    # Cumulative required components per class: III, III+II, III+II+I (sizes 6, 10, 14).
    required = {k: [n for _, n, _, cls, req in COMPONENTS if req and cls >= k] for k in (3, 2, 1)}
    included_count = {k: sum(n in included for n in required[k]) for k in (3, 2, 1)}
    totals = {k: len(required[k]) for k in (3, 2, 1)}

    # Quirk 2: the research paper (whatever its status) stands in for a technical report that is
    # not included, in classes III and II; Class I's total drops to 13 only if the paper is included.
    report_in, paper_listed = TECHNICAL_REPORT in included, RESEARCH_PAPER in listed
    if not report_in and paper_listed:
        for k in (3, 2):
            included_count[k] += RESEARCH_PAPER in included
        if RESEARCH_PAPER in included:
            totals[1] -= 1
        warnings.append(f"{RESEARCH_PAPER} counted in place of the {TECHNICAL_REPORT} for Classes III and II")

    progress = {}
    for k in (3, 2, 1):
        # Quirk 1 (gating): a class only progresses once every less open class is complete.
        gated = any(included_count[j] < totals[j] for j in (3, 2) if j > k)
        progress[str(k)] = 0.0 if gated else min(100.0, included_count[k] / totals[k] * 100)

    # Quirk 9: the most open class whose progress is exactly 100.
    cls = next((k for k in (1, 2, 3) if progress[str(k)] == 100.0), 0)
    # Quirk 8: optional components never count, but their status and warnings are reported.
    return {"class": cls, "label": LABELS[cls], "progress": {k: progress[k] for k in ("1", "2", "3")},
            "components": components, "warnings": warnings}
