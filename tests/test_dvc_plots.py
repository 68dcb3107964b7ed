"""`dvc plots show` renders offline in a real browser, with axes that read.

DVC's own page loads Vega from a CDN (blank offline); ours (.dvc/plots/page.html, built by lucie/vega_page.py)
inlines it. The page is rendered by headless Chromium with every network request sent to a dead proxy, and the
screenshot must hold the plots' own colours: the evaluation bars (base, instruct) and the learning curve, one
line per task over one global step axis.
"""
from __future__ import annotations

import io
import json
import re

from repo_copy import BIN, PROJECT, env, make_copy, run
from test_audit_html import browse, chromium

TABLEAU = {"base": "4c78a8", "instruct": "f58518", "mcq_en": "e45756", "mcq_fr": "72b7b2"}  # vega-lite's palette order


def test_the_page_inlines_exactly_the_vendored_files():
    from lucie.vega_page import inlined

    html = (PROJECT / ".dvc/plots/page.html").read_text(encoding="utf-8")
    assert "{plot_divs}" in html and not re.search(r"<script[^>]+src=", html)
    listed = (PROJECT / ".dvc/plots/VENDORED.md").read_text(encoding="utf-8")
    scripts = inlined(html)
    assert [s["name"] for s in scripts] == ["vega", "vega-lite", "vega-embed"]
    for s in scripts:
        assert f"| {s['name']} | {s['version']} | BSD-3-Clause |" in listed and s["sha256"] in listed
        assert (PROJECT / f".dvc/plots/licenses/{s['name']}-LICENSE.txt").is_file()


def test_plots_show_renders_offline_in_chromium(tmp_path):
    from PIL import Image

    from stages.lib.eval_report import curve_csv, phase_offsets
    from stages.core.params import load

    exe = chromium()
    root = make_copy(tmp_path / "repo")
    p = load(root / "params.yaml")  # the curve as evaluate writes it, from the committed results
    results = json.loads((root / "metrics/eval.json").read_text())
    (root / "plots/eval_curve.csv").write_text(curve_csv(results, p.evaluate.tasks, phase_offsets(p)))
    run([str(BIN / "dvc"), "plots", "show", "-o", "out"], root, env(tmp_path))
    page = root / "out" / "index.html"
    html = page.read_text(encoding="utf-8")
    assert "cdn.jsdelivr" not in html and "Learning curve" in html

    shot = tmp_path / "plots.png"
    browse(exe, page, tmp_path, f"--screenshot={shot}", "--window-size=1300,2400", "--virtual-time-budget=15000",
           "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>")  # no network at all
    img = Image.open(io.BytesIO(shot.read_bytes())).convert("RGB")
    colours = {c: n for n, c in img.getcolors(img.size[0] * img.size[1])}
    painted = {k: colours.get(tuple(int(h[i:i + 2], 16) for i in (0, 2, 4)), 0) for k, h in TABLEAU.items()}
    assert painted["base"] > 1000 and painted["instruct"] > 1000, painted  # the bars are drawn
    assert painted["mcq_en"] > 300 and painted["mcq_fr"] > 300, painted    # one line per task

    # The curve's x axis is one global step: increasing with training order across the three phases.
    rows = [line.split(",") for line in (root / "plots/eval_curve.csv").read_text().splitlines()[1:]]
    order = {"main": 0, "extension": 1, "annealing": 2}
    by_time = sorted({(order[r[1]], int(r[2]), int(r[6])) for r in rows})
    assert [g for _, _, g in by_time] == sorted(g for _, _, g in by_time) and len({g for *_, g in by_time}) == len(by_time)
