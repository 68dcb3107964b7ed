"""Untrusted text (a card's metadata, a MOF record's descriptions, file names) made safe to print.

The HTML card escapes everything through Jinja's autoescape. Markdown is not HTML-escaped by any
template engine, yet a Markdown card is rendered by CommonMark renderers that pass raw HTML through
(a `<script>` in a MOT `description` ran in Chromium), and a newline in a table cell adds a row. A
terminal interprets ANSI escapes. So every string from the input goes through one of these:

- `plain`: ANSI/OSC escape sequences, other control characters (C0 but tab/newline, DEL, C1) and
  bidirectional overrides removed (the terminal and the HTML page);
- `one_line`: `plain`, all whitespace runs (newlines included) as one space (error lines);
- `md`: `one_line`, then `&`, `<`, `>` as HTML entities (CommonMark shows them as text, never as a
  tag) and the Markdown punctuation that could open a link or a table cell (`[`, `]`, `|`)
  backslash-escaped. Backticks stay: a code span shows its content literally, HTML entities included.
"""
from __future__ import annotations

import html
import re

# CSI (ESC [ ... final), OSC (ESC ] ... BEL or ESC \), and two-byte ESC sequences.
ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]?")
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
MD_PUNCT = re.compile(r"([\[\]|])")


def plain(value) -> str:
    return CONTROL.sub("", ANSI.sub("", str(value)))


def one_line(value) -> str:
    return " ".join(plain(value).split())


def md(value) -> str:
    return MD_PUNCT.sub(r"\\\1", html.escape(one_line(value), quote=False))
