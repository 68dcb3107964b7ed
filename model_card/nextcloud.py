"""Nextcloud Ethical AI rating: three conditions -> green / yellow / orange / red.

NC-1 software for inference AND training under a free and open-source license;
NC-2 the trained model freely available for self-hosting (license openness not examined);
NC-3 the training data available and free to use. Colour = number met (3 green, 2 yellow,
1 orange, 0 red). Lucie's authors present openness with this traffic light.
"""
from __future__ import annotations

from .evidence import Evidence
from .licenses import is_open, is_osi

COLOURS = {3: "green", 2: "yellow", 1: "orange", 0: "red"}


def rate(ev: Evidence) -> dict:
    def cond(ok: bool, why: str, items: list) -> dict:
        return {"met": ok, "why": why, "verified": all(i is not None and i.verified for i in items) if ok else False}

    train, infer = ev.get("Training code"), ev.get("Inference code")
    code_ok = all(i is not None and i.released and is_osi(i.license) for i in (train, infer))
    code_why = ("training and inference code released under " + ", ".join(sorted({i.license for i in (train, infer)}))
                if code_ok else "training or inference code missing, or not under an OSI-approved license")
    weights = ev.get("Model parameters (Final)")
    w_ok = bool(weights and weights.released)
    data = ev.get("Datasets")
    d_ok = bool(data and data.released and is_open(data.license))
    conditions = {
        "open_source_software": cond(code_ok, code_why, [train, infer]),
        "model_self_hostable": cond(w_ok, f"weights at {weights.location}" if w_ok else "weights not released", [weights]),
        "training_data_open": cond(d_ok, f"training data released under {data.license}" if d_ok
                                   else "training data missing or not under a free license", [data]),
    }
    met = sum(c["met"] for c in conditions.values())
    return {"color": COLOURS[met], "conditions_met": met, "conditions": conditions}
