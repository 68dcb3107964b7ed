"""`lucie run` on a terminal (flows/stage_output.py): the stages' rich progress bars draw live, as under a plain
`dvc repro`, while the Prefect log gets each line's final text without colours or bar frames. On a pipe (CI, a
log file) nothing draws and the log gets the same lines.

The terminal is real: the parent runs under a pseudo-terminal (pty.fork), and the stage is a child process
that inherits descriptors 1 and 2, as DVC's stage commands do.
"""
from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGE = r'''
import time
from stages.core import runtime
print("before", flush=True)
for _ in runtime.progress(range(5), 5, "[filter] rows"):
    time.sleep(0.12)
runtime.console.print("[bold]\\[filter][/] kept 5 of 5 [dim](0.8 s)[/]")
print("plain line")
'''
FLOW = r'''
import json, subprocess, sys
from flows.stage_output import captured
logged = []
with captured(logged.append) as lines:
    subprocess.run([sys.executable, "-c", sys.argv[1]], check=True)
print("LOGGED " + json.dumps(logged))
'''
WANT = ["before", "[filter] kept 5 of 5 (0.8 s)", "plain line"]


def run_on_terminal(code: str, *args: str) -> bytes:
    pid, fd = pty.fork()
    if pid == 0:  # the child: its stdin/stdout/stderr are the pty's slave
        os.chdir(ROOT)
        os.execv(sys.executable, [sys.executable, "-c", code, *args])
    out = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, out[-2000:]
    return out


def logged(out: bytes) -> list[str]:
    (line,) = [ln for ln in out.decode().splitlines() if ln.startswith("LOGGED ")]
    return json.loads(line.removeprefix("LOGGED "))


def test_on_a_terminal_the_bars_draw_live_and_the_log_keeps_the_lines():
    screen = run_on_terminal(FLOW, STAGE)
    frames = screen.count(b"\x1b[2K")
    assert frames >= 3 and b"5/5" in screen and b"[filter] rows" in screen, screen[:500]  # drawn, label intact
    assert logged(screen) == WANT


def test_on_a_pipe_nothing_draws_and_the_log_is_the_same():
    res = subprocess.run([sys.executable, "-c", FLOW, STAGE], cwd=ROOT, capture_output=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert b"\x1b[" not in res.stdout + res.stderr and b"5/5" not in res.stdout + res.stderr
    assert logged(res.stdout) == WANT


def test_log_lines_drop_frames_moved_over_and_keep_the_rest():
    from flows.stage_output import LogLines

    log = LogLines()
    got = []
    for raw in (b"\x1b[?25l\r\x1b[2K a \x1b[32m1/2\x1b[0m\r\x1b[2K a 2/2\r",  # a live bar's frames
                b"\x1b[?25h\r\x1b[1A\x1b[2K\x1b[1mdone\x1b[0m\r",            # moved over: the bar goes
                b"50%\r100%",                                                 # a tqdm-style line: last state
                b"\x1b[2Klast"):                                              # held until the end, then kept
        got += log.feed(raw)
    assert got == ["done", "100%"] and log.flush() == ["last"] and log.flush() == []


def test_a_long_unfinished_line_is_compacted_to_what_the_log_reads():
    from flows.stage_output import LogLines, compact

    frames = b"".join(b"\r\x1b[2K rows %d/20000" % i for i in range(20000))
    for line in (b"\x1b[1A" + frames + b"\r\x1b[2K rows done", b"a\r50%\r100%", b"\x1b[31mred\x1b[0m", b"no return"):
        small = compact(bytearray(line))
        assert len(small) < 64 or small == line
        a, b = LogLines(), LogLines()
        a.held, b.held = ["x", "y"], ["x", "y"]  # lines held above: the cursor-up count must survive compaction
        assert (a.feed(line), a.flush()) == (b.feed(bytes(small)), b.flush()), line[:40]


def test_bars_without_newlines_and_a_failing_log_handler_neither_lose_nor_block(capfd):
    """200,000 redraws with no newline (a long bar), then 5,000 lines into a log handler that fails: the block
    ends, every line is still listed, and the terminal is told once that the log stopped."""
    from flows.stage_output import captured

    code = ("import sys\nfor i in range(200000): sys.stdout.write('\\r%d%%' % (i % 100))\n"
            "sys.stdout.write('\\rdone\\n')\nfor i in range(5000): print('line', i)\n")
    calls = []

    def sink(line):
        calls.append(line)
        raise ConnectionError("the API is gone")

    with captured(sink) as lines:
        subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert lines[0] == "done" and lines[-1] == "line 4999" and len(lines) == 5001
    assert calls == ["done"]  # stopped after its first failure
    assert "the log handler failed (ConnectionError: the API is gone)" in capfd.readouterr().err
