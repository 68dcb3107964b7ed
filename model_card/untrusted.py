"""Untrusted text (a card's metadata, a MOF record's descriptions, file names) made safe to print.

The HTML card escapes everything through Jinja's autoescape. Markdown is not HTML-escaped by any
template engine, yet a Markdown card is rendered by CommonMark renderers that pass raw HTML through
(a `<script>` in a MOT `description` ran in Chromium), and a newline in a table cell adds a row. A
terminal interprets ANSI escapes. So every string from the input goes through one of these:

- `plain`: ANSI/OSC escape sequences, other control characters (C0 but tab/newline, DEL, C1) and
  bidirectional overrides removed (the terminal and the HTML page);
- `one_line`: `plain`, all whitespace runs (newlines included) as one space (error lines);
- `json_text`: JSON with every control and bidirectional character escaped as `\\uXXXX` (json.dumps escapes
  only C0): lossless, and `cat card.json` shows no C1 control (U+009B is a CSI to some terminals);
- `md`: `one_line`, then `&`, `<`, `>` as HTML entities (CommonMark shows them as text, never as a
  tag) and the Markdown punctuation that could open a link or a table cell (`[`, `]`, `|`)
  backslash-escaped. Backticks stay: a code span shows its content literally, HTML entities included.
"""
from __future__ import annotations

import html
import json
import re

# CSI (ESC [ ... final), OSC (ESC ] ... BEL or ESC \), and two-byte ESC sequences.
ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]?")
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
MD_PUNCT = re.compile(r"([\[\]|])")
# what json.dumps(ensure_ascii=False) leaves raw: DEL, C1, bidi overrides/isolates, line/paragraph separators
JSON_RAW = re.compile("[\x7f-\x9f\u202a-\u202e\u2066-\u2069\u2028\u2029]")


def plain(value) -> str:
    return CONTROL.sub("", ANSI.sub("", str(value)))


def one_line(value) -> str:
    return " ".join(plain(value).split())


def md(value) -> str:
    return MD_PUNCT.sub(r"\\\1", html.escape(one_line(value), quote=False))


def json_text(obj) -> str:
    """json.dumps(indent=2, sort_keys=True) + newline, non-ASCII text kept readable; controls and bidi escaped
    (they only occur inside strings, where the escape means the same character)."""
    text = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False)
    return JSON_RAW.sub(lambda m: f"\\u{ord(m.group()):04x}", text) + "\n"
