"""`lucie audit` on hostile input (issue 16.4, 16.5): an alias bomb, a FIFO, /dev/zero, symlinks out of
the input, deep nesting, huge files must each be refused in bounded time with one line and its own
exit code; untrusted metadata must reach neither a Markdown renderer as HTML nor a terminal as an
escape sequence. Each case runs the real CLI in a subprocess with a timeout: a regression hangs or
blows up there, not in the test runner."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from model_card import render, safe_read
from model_card.collect import collect
from test_audit_inputs import LLAMA_CONFIG, write_snapshot

ROOT = Path(__file__).resolve().parent.parent
ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(9))


def lucie_audit(*args, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lucie.cli", "audit", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def assert_refused(res: subprocess.CompletedProcess, code: int, *words: str):
    assert res.returncode == code, (res.returncode, res.stderr[-2000:])
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("refused: "), res.stderr[-2000:]
    for w in words:
        assert w in lines[0], lines[0]
    assert res.stdout == ""


def snapshot(tmp_path: Path, front_matter: str = "license: mit", **files) -> Path:
    return write_snapshot(tmp_path / "snap", front_matter, {"config.json": json.dumps(LLAMA_CONFIG), **files})


def test_exit_codes_are_distinct_and_not_1_or_2():
    codes = [c.exit_code for c in (safe_read.TooLarge, safe_read.NotRegular, safe_read.OutsideInput,
                                   safe_read.YamlAlias, safe_read.TooDeep)]
    assert len(set(codes)) == 5 and not {0, 1, 2} & set(codes)
    doc = (ROOT / "docs" / "AUDIT.md").read_text()
    for c in codes:
        assert f"\n| {c} |" in doc, f"exit code {c} not documented in docs/AUDIT.md"


def test_alias_bomb_in_front_matter_is_refused_fast(tmp_path):
    root = write_snapshot(tmp_path / "snap", ALIAS_BOMB, {})
    t = time.monotonic()
    res = lucie_audit(root, timeout=30)
    assert time.monotonic() - t < 20
    assert_refused(res, safe_read.YamlAlias.exit_code, "README.md", "anchor")


def test_alias_bomb_in_a_mot_record_is_refused_fast(tmp_path):
    record = tmp_path / "bomb.yml"
    record.write_text("framework: {name: x}\nrelease:\n  name: m\n  components: []\n" + ALIAS_BOMB)
    assert_refused(lucie_audit(record, timeout=30), safe_read.YamlAlias.exit_code, "bomb.yml")


def test_a_fifo_readme_is_refused_without_hanging(tmp_path):
    root = snapshot(tmp_path)
    (root / "README.md").unlink()
    os.mkfifo(root / "README.md")
    assert_refused(lucie_audit(root, timeout=30), safe_read.NotRegular.exit_code, "FIFO", "README.md")
    os.mkfifo(tmp_path / "record.yml")  # a FIFO named as PATH itself
    assert_refused(lucie_audit(tmp_path / "record.yml", timeout=30), safe_read.NotRegular.exit_code, "FIFO")


@pytest.mark.parametrize("name,target,code", [
    ("README.md", "/dev/zero", safe_read.OutsideInput.exit_code),
    ("model.safetensors", "/etc/passwd", safe_read.OutsideInput.exit_code),
    ("train.py", "/etc/hostname", safe_read.OutsideInput.exit_code),
    ("LICENSE", "/etc/passwd", safe_read.OutsideInput.exit_code),
])
def test_symlinks_out_of_the_input_are_refused(tmp_path, name, target, code):
    root = snapshot(tmp_path)
    if name == "README.md":
        (root / name).unlink()
    (root / name).symlink_to(target)
    assert_refused(lucie_audit(root, timeout=30), code, name, "outside the audited directory")


def test_a_device_inside_the_input_is_refused(tmp_path):
    """/dev/zero through a symlink chain that stays a special file: refused as one, never read."""
    res = lucie_audit("/dev/zero", timeout=30)
    assert_refused(res, safe_read.NotRegular.exit_code, "character device")


def test_a_symlink_loop_is_refused(tmp_path):
    root = snapshot(tmp_path)
    (root / "a.bin").symlink_to("b.bin")
    (root / "b.bin").symlink_to("a.bin")
    assert_refused(lucie_audit(root, timeout=30), safe_read.NotRegular.exit_code, "symlink loop")


def test_symlinks_inside_the_input_still_count(tmp_path):
    """A Hub cache snapshot links into ../../blobs: inside the cache folder, also when the snapshot
    directory itself is given."""
    repo = tmp_path / "models--org--m"
    (repo / "blobs").mkdir(parents=True)
    (repo / "blobs" / "abc").write_bytes(b"weights")
    snap = write_snapshot(repo / "snapshots" / "r1", "license: mit", {})
    (snap / "model.safetensors").symlink_to("../../blobs/abc")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("r1")
    for path in (repo, snap):
        res = lucie_audit(path, "--format", "json")
        assert res.returncode == 0, res.stderr
        w = next(c for c in json.loads(res.stdout)["evidence"]["components"]
                 if c["component"] == "Model parameters (Final)")
        assert w["status"] == "present"


def test_deep_nesting_is_refused(tmp_path):
    root = write_snapshot(tmp_path / "y", "a: " + "[" * 5000 + "]" * 5000, {})
    assert_refused(lucie_audit(root, timeout=30), safe_read.TooDeep.exit_code, "nested deeper")
    root = write_snapshot(tmp_path / "j", "license: mit", {"config.json": "[" * 100000 + "]" * 100000})
    assert_refused(lucie_audit(root, timeout=30), safe_read.TooDeep.exit_code, "config.json")


def test_a_huge_file_to_parse_is_refused_before_reading(tmp_path):
    root = snapshot(tmp_path)
    with open(root / "README.md", "r+b") as fh:  # sparse: 64 GiB on paper, nothing on disk
        fh.truncate(64 << 30)
    assert_refused(lucie_audit(root, timeout=30), safe_read.TooLarge.exit_code, "README.md", "limit")


def test_a_huge_weight_file_is_only_hashed(tmp_path):
    """Weights are hashed, never parsed: a large regular file is fine (read once, to its size)."""
    root = snapshot(tmp_path)
    with open(root / "model.safetensors", "wb") as fh:
        fh.truncate(9 << 20)  # over MAX_TEXT_BYTES
    w = collect(root).evidence.get("Model parameters (Final)")
    assert w.status == "present" and w.sha256 is not None


# ---------------------------------------------------------------------------------------- output escaping
EVIL = "<script>document.title='pwned'</script>\x1b[31mRED\x1b]0;title\x07"


def test_markdown_and_terminal_output_carry_no_html_newline_or_escape(tmp_path):
    record = tmp_path / "evil.yml"
    record.write_text(json.dumps({"framework": {"name": "Model Openness Framework"}, "release": {
        "name": "m", "license": {"distribution": {"name": "<img src=x onerror=alert(1)>"}},
        "components": [{"name": "Model card", "description": EVIL, "license": "x\n| injected | row |"},
                       {"name": "Training code", "description": "a\nb", "component_path": "[x](javascript:alert(1))"}]}}))
    root = write_snapshot(tmp_path / "s", f"license: other\nlicense_name: {json.dumps(EVIL)}\n"
                          f"library_name: {json.dumps('tf' + chr(10) + '| injected | row |')}",
                          {"config.json": json.dumps(LLAMA_CONFIG)})
    for path in (record, root):
        res = lucie_audit(path, "--format", "md")
        assert res.returncode == 0, res.stderr
        md = res.stdout
        assert "<script" not in md and "<img" not in md and "\x1b" not in md and "\x07" not in md
        assert "&lt;script&gt;" in md or "&lt;img" in md  # shown as text, not dropped
        assert not re.search(r"(?<!\\)\| injected", md), md  # the cell's `|` is escaped: no new column or row
        assert not re.search(r"(?<!\\)\]\(javascript:", md)  # no link
        rows = [l for l in md.splitlines() if l.startswith("| ")]
        assert len([r for r in rows if r.startswith("| Model")]) <= 17  # no row was added
    html = render.to_html(render.audit(collect(root).evidence))
    assert "\x1b" not in html and "<script" not in html


def strings(obj):
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, list):
        return [s for v in obj for s in strings(v)]
    return [obj] if isinstance(obj, str) else []


def test_json_and_diff_output_carry_no_raw_control_and_lose_nothing(tmp_path):
    from model_card import diff

    c1 = "x\x9b2J\u202egnp.exe\x85y"  # C1 CSI, a right-to-left override, C1 NEL
    a = write_snapshot(tmp_path / "a", "license: apache-2.0", {"config.json": json.dumps(LLAMA_CONFIG)})
    b = write_snapshot(tmp_path / "b", f"license: other\nlicense_name: {json.dumps(EVIL + c1)}",
                       {"config.json": json.dumps(LLAMA_CONFIG)})
    res = lucie_audit(b, "--format", "json")
    assert res.returncode == 0, res.stderr
    assert not re.search("[\x7f-\x9f\u202a-\u202e]", res.stdout) and "\x1b" not in res.stdout
    assert any(EVIL + c1 in v for v in strings(json.loads(res.stdout)))  # escaped, not lost
    d = diff.compare(render.audit(collect(a).evidence), render.audit(collect(b).evidence))
    assert any(EVIL + c1 in str(c["b"]) for c in d["changes"]), d  # the value is in the diff, unchanged
    assert json.loads(diff.to_json(d)) == json.loads(json.dumps(d))  # escaping is lossless
    assert not re.search("[\x7f-\x9f\u202a-\u202e]", diff.to_json(d))
    md = diff.to_markdown(d)
    assert "<script" not in md and "\x1b" not in md and not re.search("[\x7f-\x9f\u202a-\u202e]", md)
    assert "&lt;script&gt;" in md


def test_error_lines_are_one_line_without_escapes(tmp_path):
    root = write_snapshot(tmp_path / "s", "license: [unclosed\n\x1b[2J: x", {})
    res = lucie_audit(root)
    assert res.returncode == 2 and "\x1b" not in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_special_files_in_hidden_folders_are_not_even_looked_at(tmp_path):
    root = snapshot(tmp_path)
    (root / ".git").mkdir()
    os.mkfifo(root / ".git" / "fifo")
    (root / ".git" / "out").symlink_to("/etc/passwd")
    res = lucie_audit(root, "--format", "json", timeout=30)
    assert res.returncode == 0, res.stderr
