"""Openness card outputs: JSON (machine), Markdown (goes into the model card), standalone HTML
(for a person, in a browser), SVG badge. The JSON contract is documented in docs/AUDIT.md."""
from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from markupsafe import Markup

from . import limits, mof, mof_export, nextcloud, osai_index, osaid, untrusted
from .evidence import Evidence

TEMPLATES = Path(__file__).parent / "templates"
BADGE_FILL = {"green": "#2e7d32", "yellow": "#f9a825", "orange": "#ef6c00", "red": "#c62828"}


def env(autoescape: bool = False) -> Environment:
    # HTML escapes everything (an audited card's metadata is untrusted text) and strips control characters
    # (ANSI escapes) from it; Markdown is not HTML: its template passes untrusted values through `| cell`.
    e = Environment(loader=FileSystemLoader(TEMPLATES), undefined=StrictUndefined, keep_trailing_newline=True,
                    trim_blocks=True, lstrip_blocks=True, autoescape=autoescape,
                    finalize=(lambda v: v if isinstance(v, Markup) or not isinstance(v, str) else untrusted.plain(v))
                    if autoescape else None)
    # A Markdown table cell holds one line, no bare `|`, no HTML and no control character (untrusted.md).
    e.filters["cell"] = untrusted.md
    return e


def audit(ev: Evidence, mot_record: dict | None = None) -> dict:
    """The JSON contract: one key per framework, each computed from the same evidence record.

    osaid.compliant / osaid.failures; mof.class (0 = unclassified, 3, 2, 1) / mof.progress;
    osai_index.score / osai_index.parameters; nextcloud.color / nextcloud.conditions; evidence.
    The MOF class is computed on the MOT record exported from the evidence (model_card.mof_export),
    or, for a MOF record input, on that record as the tool reads it (`mot_record`).
    """
    # The class algorithm reads no name or date.
    m = mof.evaluate(mot_record if mot_record is not None else mof_export.to_record(ev, ev.source))
    evidence = ev.to_dict()
    return {
        "limits": limits.stated(evidence),
        "osaid": osaid.evaluate(ev),
        "mof": {"class": m["class"], "label": m["label"], "progress": m["progress"],
                "components": m["components"], "warnings": m["warnings"]},
        "osai_index": osai_index.evaluate(ev),
        "nextcloud": nextcloud.rate(ev),
        "evidence": evidence,
    }


def to_json(card: dict) -> str:
    return untrusted.json_text(card)


def to_markdown(card: dict) -> str:
    return env().get_template("openness.md.j2").render(card=card)


def to_html(card: dict) -> str:
    """One self-contained page: inline CSS and badge, no script, nothing fetched."""
    roman = {3: "III", 2: "II", 1: "I"}
    components = [{"name": name, "cls": cls, "roman": roman[cls], "required": req}
                  for _, name, _, cls, req in mof.COMPONENTS]
    included = [n for n, c in card["mof"]["components"].items() if c["status"] == "included"]
    return env(autoescape=True).get_template("openness.html.j2").render(
        card=card, badge=badge_svg(card).strip(), fills=BADGE_FILL, mof_components=components, included=included)


def badge_svg(card: dict) -> str:
    color = card["nextcloud"]["color"]
    label, value = "Nextcloud Ethical AI", f"{color} ({card['nextcloud']['conditions_met']}/3)"
    # One badge, the traffic light Lucie's authors use; the other frameworks are in the card itself.
    lw, vw = 7 * len(label) + 10, 7 * len(value) + 10
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{lw + vw}" height="20" role="img" aria-label="{label}: {value}">'
        f'<title>{label}: {value}</title>'
        f'<rect width="{lw}" height="20" fill="#555"/><rect x="{lw}" width="{vw}" height="20" fill="{BADGE_FILL[color]}"/>'
        f'<g fill="#fff" font-family="Verdana,DejaVu Sans,sans-serif" font-size="11">'
        f'<text x="5" y="14">{label}</text><text x="{lw + 5}" y="14">{value}</text></g></svg>\n'
    )
