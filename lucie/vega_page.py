"""The HTML page `dvc plots show` fills, with Vega inlined, so that plots render offline.

DVC's default page loads vega, vega-lite and vega-embed from a CDN: blank without network. DVC takes
any page holding `{plot_divs}` (`.dvc/config`: `plots.html_template`); this module builds ours from the
three npm tarballs (`npm pack vega@5.20.2 vega-lite@5.2.0 vega-embed@6.18.2`: the versions DVC's own page
names), inlining each `build/<name>.min.js` unchanged and recording its version, licence and sha256 in
`.dvc/plots/VENDORED.md`, next to the licence texts (`.dvc/plots/licenses/`). Rebuild:

    python -m lucie.vega_page vega-5.20.2.tgz vega-lite-5.2.0.tgz vega-embed-6.18.2.tgz
"""
from __future__ import annotations

import hashlib
import json
import re
import sys
import tarfile
from pathlib import Path

PLOTS_DIR = Path(__file__).resolve().parent.parent / ".dvc" / "plots"
ORDER = ("vega", "vega-lite", "vega-embed")  # each needs the ones before it as globals
SCRIPT = re.compile(r'<script data-package="(?P<name>[\w-]+)" data-version="(?P<version>[\d.]+)">(?P<js>.*?)</script>',
                    re.S)


def read_tarball(path: Path) -> dict:
    with tarfile.open(path) as tar:
        meta = json.load(tar.extractfile("package/package.json"))
        js = tar.extractfile(f"package/build/{meta['name']}.min.js").read().decode("utf-8")
        licence = tar.extractfile("package/LICENSE").read().decode("utf-8")
    if "</script" in js.lower():
        raise ValueError(f"{path}: the script contains '</script' and cannot be inlined unchanged")
    return {"name": meta["name"], "version": meta["version"], "license": meta["license"], "js": js,
            "license_text": licence, "sha256": hashlib.sha256(js.encode("utf-8")).hexdigest()}


def page(packages: list[dict]) -> str:
    scripts = "\n".join(f'<script data-package="{p["name"]}" data-version="{p["version"]}">{p["js"]}</script>'
                        for p in packages)
    return f"""<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<title>lucie-repro plots</title>
<!-- Vega inlined (no CDN): see .dvc/plots/VENDORED.md for versions, licences and sha256. -->
{scripts}
<style>
body {{ font-family: sans-serif; }}
table {{ border-spacing: 15px; }}
</style>
</head>
<body>
{{plot_divs}}
</body>
</html>
"""


def vendored_md(packages: list[dict]) -> str:
    rows = "\n".join(f"| {p['name']} | {p['version']} | {p['license']} | `build/{p['name']}.min.js` | `{p['sha256']}` |"
                     for p in packages)
    return f"""# Vendored JavaScript in page.html

`page.html` is the page `dvc plots show` fills (`.dvc/config`: `plots.html_template`). It inlines these
files unchanged from their npm tarballs, so the plots render offline; built by `python -m lucie.vega_page`.

| package | version | licence | file | sha256 of the file |
|---|---|---|---|---|
{rows}

The licence texts are in `licenses/`. `vega.min.js` is a bundle: it also contains the d3 modules and other
packages vega {packages[0]['version']} depends on (d3-*: ISC; topojson-client: ISC; vega-* modules: BSD-3-Clause),
as listed in its package.json.
"""


def write(tarballs: list[Path], out: Path = PLOTS_DIR) -> list[dict]:
    packages = sorted((read_tarball(Path(t)) for t in tarballs), key=lambda p: ORDER.index(p["name"]))
    if [p["name"] for p in packages] != list(ORDER):
        raise ValueError(f"need one tarball each of {', '.join(ORDER)}")
    (out / "licenses").mkdir(parents=True, exist_ok=True)
    for p in packages:
        (out / "licenses" / f"{p['name']}-LICENSE.txt").write_text(p["license_text"], encoding="utf-8")
    (out / "page.html").write_text(page(packages), encoding="utf-8")
    (out / "VENDORED.md").write_text(vendored_md(packages), encoding="utf-8")
    return packages


def inlined(html: str) -> list[dict]:
    """The scripts of a built page: name, version, sha256 (what VENDORED.md must list)."""
    return [{"name": m["name"], "version": m["version"], "sha256": hashlib.sha256(m["js"].encode("utf-8")).hexdigest()}
            for m in SCRIPT.finditer(html)]


if __name__ == "__main__":
    for p in write([Path(a) for a in sys.argv[1:]]):
        print(f"{p['name']} {p['version']} {p['sha256']}")
