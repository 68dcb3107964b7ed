"""Our evidence record as a Model Openness Tool record (lfai/model_openness_tool models/*.yml).

Only released components are listed, each with its own license spelled as an SPDX id (the
MOT matches license ids exactly and case-sensitively: `apache-2.0` from an HF card would
count as not open there). The record is then classified by model_card.mof, so the MOF class
of a release comes from the same algorithm that reproduces the tool's own test results.
"""
from __future__ import annotations

import yaml

from .evidence import Evidence
from .licenses import spdx_id


def to_record(ev: Evidence, name: str, release_date: str = "", version: str = "", producer: str = "",
              repository: str = "", huggingface: str = "") -> dict:
    """`release_date` is metadata only (the class algorithm never reads it); the release stage passes
    the commit date so the exported file is the same bytes for the same commit."""
    components = [
        {"name": i.component, "description": i.note or i.component, "component_path": i.location or "",
         "license": spdx_id(i.license) or "unlicensed", "license_path": ""}
        for i in ev.components if i.released
    ]
    return {
        "framework": {"name": "Model Openness Framework", "version": "1.0", "date": "2024-12-15"},
        "release": {
            "name": name, "version": version, "date": release_date, "type": "language",
            "architecture": "transformer decoder", "origin": name, "producer": producer, "contact": "",
            "repository": repository, "huggingface": huggingface, "license": {}, "components": components,
        },
    }


def to_yaml(record: dict) -> str:
    return yaml.safe_dump(record, sort_keys=False, allow_unicode=True)
