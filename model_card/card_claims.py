"""What a model card's prose states, read as an assessor reads it: claims, each with the sentence it came from.

A Hub card says far more than its YAML front matter: "The training code is available at <repo>", a
BibTeX entry for the paper, the GPUs and the cluster, intermediate checkpoints as linked branches,
training logs, a dataset repo, an evaluation section. The OSAI index's assessors rate Lucie-7B from
exactly these sentences. This module finds them; `hf_snapshot` turns them into *claimed* evidence
(nothing here is checked: a link is not the code), and `doc_facts` reads the card's sections.

Every claim is {"kind", "value", "source"}: `source` is the sentence or line of the card it rests on
(one line, at most 240 characters), so each verdict that counts it can cite the card. HTML comments are
dropped first (a commented-out link is not a statement). Pure function of the text: same card, same claims.
"""
from __future__ import annotations

import re

COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.DOTALL | re.MULTILINE)
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$", re.MULTILINE)
URL = re.compile(r"https?://[^\s)\]>\"'`]+")
CODE_REPO = re.compile(r"^https?://(?:www\.)?(?:github\.com|gitlab\.com|codeberg\.org)/([\w.-]+)/([\w.-]+)", re.I)
ARXIV = re.compile(r"(?:arxiv\.org/(?:abs|pdf)/|arxiv:\s*)(\d{4}\.\d{4,5})(?:v\d+)?", re.I)
DOI = re.compile(r"(?:doi\.org/|doi:\s*)(10\.\d{4,9}/[^\s)\]>\"',;]+)", re.I)
BIBTEX = re.compile(r"@(\w+)\s*\{\s*([^,\s]+)\s*,(.*?)\n\s*\}", re.DOTALL)
HUB_DATASET = re.compile(r"^https?://huggingface\.co/datasets/([\w.-]+/[\w.-]+)", re.I)
HUB_TREE = re.compile(r"^https?://huggingface\.co/(?!datasets/|spaces/)([\w.-]+/[\w.-]+)/tree/([\w.-]+)", re.I)
REVISION_ARG = re.compile(r"revision\s*=\s*[\"']([\w.-]+)[\"']")
# What a sentence says a linked repository is for (first match wins, most specific first).
CODE_ROLES = (
    ("Data preprocessing code", r"data[- ]?(?:processing|preparation|filtering|pipeline|cleaning)|preprocess|dedup"),
    ("Evaluation code", r"evaluation code|evaluat\w* (?:harness|scripts?|code)|benchmark code"),
    ("Training code", r"training code|train\w* (?:scripts?|pipeline|framework|recipes?)|code (?:used )?(?:to|for) "
                      r"(?:pre-?)?train|(?:pre-?)?training (?:is|was) (?:done|performed) with|fine-?tuning code"),
    ("Inference code", r"inference code|serving code"),
)
HARDWARE = re.compile(r"\b(?:[HABV]100|H200|GH200|B200|A10G?|L40S?|MI\d{3}X?|TPU\s?v?\d\w*|GPUs?|TPUs?|"
                      r"supercomputer|cluster|Jean Zay|LUMI|Leonardo|Summit|Frontier|JUWELS)\b", re.I)
SETUP = re.compile(r"\b(?:nodes?|GPU[- ]hours|tensor[- ]parallel\w*|pipeline[- ]parallel\w*|data[- ]parallel\w*|"
                   r"ZeRO|FSDP|DeepSpeed|Megatron|bf16|bfloat16|fp16|mixed precision|parallelized|world size)\b", re.I)
TRAINED = re.compile(r"\b(?:pre-?)?train(?:ed|ing)\b|parallel", re.I)
RESTRICTION = re.compile(r"non-?commercial|research (?:purposes? )?only|not (?:be )?(?:used )?for commercial|"
                         r"acceptable use policy|prohibited uses?", re.I)
LOGS = re.compile(r"training logs?|tensorboard|wandb\.ai|learning curves?|loss curves?", re.I)
EVAL_HEADING = re.compile(r"evaluat|benchmark|results|performance", re.I)
PEER_VENUE = re.compile(r"\b(?:booktitle|journal)\s*=\s*[{\"]\s*(?!arxiv|corr\b)([^}\"]+)", re.I)
MAX_SOURCE = 240


def strip(text: str) -> str:
    """The card body without YAML front matter and HTML comments."""
    text = text.replace("\r\n", "\n").lstrip("\ufeff")
    if text.startswith("---\n") and (end := text.find("\n---", 3)) >= 0:
        text = text[end + 4:].split("\n", 1)[-1] if "\n" in text[end + 4:] else ""
    return COMMENT.sub("", text)


def _one_line(s: str) -> str:
    s = " ".join(s.split())
    return s if len(s) <= MAX_SOURCE else s[:MAX_SOURCE - 1] + "…"


BLOCK_LINE = re.compile(r"^\s*(?:#|\||[*+>-]\s|\d+[.)]\s|<|$)")
SENTENCE = re.compile(r"(?:[^.!?\n]|[.!?](?=[\w/\\,]))+(?:[.!?]+|\n|$)")


def _join_wrapped(text: str) -> str:
    out: list[str] = []
    for line in text.split("\n"):
        if out and not BLOCK_LINE.match(line) and not BLOCK_LINE.match(out[-1]) and not out[-1].startswith("    "):
            out[-1] = out[-1].rstrip() + " " + line.strip()
        else:
            out.append(line)
    return "\n".join(out)


def _sentences(text: str):
    """(sentence, start offset) over the prose, fenced code blocks left out (a line in a code example is not a
    statement about the model); a dot inside a URL or number does not end a sentence."""
    prose = FENCE.sub(lambda m: "\n" * m.group().count("\n"), text)
    # A paragraph wrapped over several lines is one text (Markdown joins them); headings, list items, table
    # rows and quotes keep their own line.
    prose = _join_wrapped(prose)
    for m in SENTENCE.finditer(prose):
        if m.group().strip():
            yield m.group(), m.start()


def headings(text: str) -> list[tuple[int, str, int]]:
    """(level, title, offset) of every Markdown heading outside code fences."""
    fenced = [(m.start(), m.end()) for m in FENCE.finditer(text)]
    return [(len(m.group(1)), m.group(2).strip(), m.start()) for m in HEADING.finditer(text)
            if not any(a <= m.start() < b for a, b in fenced)]


def section_text(text: str, pattern: re.Pattern) -> list[tuple[str, str]]:
    """(title, body) of each section whose heading matches `pattern` (body up to the next heading of the
    same or a higher level)."""
    hs = headings(text)
    out = []
    for i, (level, title, start) in enumerate(hs):
        if pattern.search(title):
            end = next((s for lv, _, s in hs[i + 1:] if lv <= level), len(text))
            out.append((title, text[start:end]))
    return out


def _add(claims: dict, kind: str, value: str, source: str) -> None:
    seen = claims.setdefault(kind, [])
    if not any(c["value"] == value for c in seen):
        seen.append({"value": value, "source": _one_line(source)})


def read(card_text: str, repo_id: str | None = None) -> dict:
    """Claims of a card: {kind: [{"value", "source"}]} for kinds code:<component>, code_reference, paper,
    peer_reviewed, bibtex, dataset, revision, training_logs, hardware, setup, evaluation, use_restriction. `repo_id` (ORG/NAME of the
    card's own repo, when known) keeps only revision links to that repo."""
    text = strip(card_text)
    claims: dict[str, list] = {}
    for sentence, _ in _sentences(text):
        for url in URL.findall(sentence):
            url = url.rstrip(".,;:")
            if m := CODE_REPO.match(url):
                name = re.sub(r"(\.git)?$", "", m.group(2))
                repo = f"https://github.com/{m.group(1)}/{name}" if "github.com" in url.lower() else m.group(0)
                role = next((c for c, pat in CODE_ROLES if re.search(pat, sentence, re.I)), None)
                _add(claims, f"code:{role}" if role else "code_reference", repo, sentence)
            elif m := HUB_DATASET.match(url):
                _add(claims, "dataset", m.group(1), sentence)
            elif (m := HUB_TREE.match(url)) and m.group(2) != "main" and (repo_id is None or m.group(1) == repo_id):
                _add(claims, "revision", m.group(2), sentence)
        for m in ARXIV.finditer(sentence):
            _add(claims, "paper", f"arxiv:{m.group(1)}", sentence)
        for m in DOI.finditer(sentence):
            _add(claims, "paper", f"doi:{m.group(1).rstrip('.')}", sentence)
        if RESTRICTION.search(sentence):
            _add(claims, "use_restriction", _one_line(sentence), sentence)
        if LOGS.search(sentence):
            _add(claims, "training_logs", _one_line(sentence), sentence)
        if HARDWARE.search(sentence) and TRAINED.search(sentence):
            _add(claims, "hardware", _one_line(sentence), sentence)
        if SETUP.search(sentence):
            _add(claims, "setup", _one_line(sentence), sentence)
    for m in REVISION_ARG.finditer(text):
        if m.group(1) != "main":
            _add(claims, "revision", m.group(1), m.group(0))
    for m in BIBTEX.finditer(text):
        entry = f"@{m.group(1)}{{{m.group(2)}, …}}"
        body = m.group(3)
        if a := re.search(r"eprint\s*=\s*[{\"]?(\d{4}\.\d{4,5})", body):
            _add(claims, "paper", f"arxiv:{a.group(1)}", entry)
        if v := PEER_VENUE.search(body):
            _add(claims, "peer_reviewed", v.group(1).strip(), f"{entry} {v.group(0)}")
        _add(claims, "bibtex", m.group(2), entry)
    for title, body in section_text(text, EVAL_HEADING):
        has_table = bool(re.search(r"^\s*\|.*\|\s*$\n^\s*\|[\s:|-]+\|\s*$", body, re.M))
        linked = [u.rstrip(".,;:") for u in re.findall(r"\]\(([^)\s]+\.(?:csv|json|md|jsonl))\)", body)]
        if has_table or linked:
            what = "a results table" if has_table else "linked results " + ", ".join(linked[:3])
            _add(claims, "evaluation", title, f"section '{title}' has {what}")
    return {k: claims[k] for k in sorted(claims)}
