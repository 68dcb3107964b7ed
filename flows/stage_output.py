"""Everything a stage prints, line by line, to a callback, while it still reaches the terminal.

The flow runs DVC in process, and DVC starts the stage command as a child that inherits file
descriptors 1 and 2, so capturing sys.stdout is not enough: for the duration of the block both
descriptors point at a pipe, and a reader thread copies the output to the saved terminal and each
line to `sink` (the Prefect run logger; see flows/pipeline.py). The reader runs in a copy of the
caller's context, so Prefect's settings context is visible to the handler it logs through.

On a terminal the pipe is a pseudo-terminal of the same size instead: the stages see a terminal, so
their progress bars (runtime.progress) draw live, exactly as under a plain `dvc repro`, and the
reader passes every chunk through as soon as it is read. The log gets what a reader wants there:
each line's final text, colours stripped, and no bar frames (LogLines). That holds for one-line bars
(runtime.progress, tqdm); a live display of several lines (several rich tasks at once, nested tqdm) can
leave some of its frames in the log, as telling them from output needs a terminal emulator.
"""
from __future__ import annotations

import contextlib
import contextvars
import errno
import os
import re
import sys
import threading
from typing import Callable, Iterator

SGR = re.compile(rb"\x1b\[[0-9;]*m")                  # colours and styles: stripped from logged lines
REDRAW = re.compile(rb"\x1b\[[0-9;?]*[A-HJKSTfhl]")   # cursor moves, erases, cursor show/hide
UP = re.compile(rb"\x1b\[(\d*)A")                     # cursor up: the lines above are drawn again


def _ups(raw: bytes) -> int:
    return sum(int(n or 1) for n in UP.findall(raw))


def _terminal_pair(terminal_fd: int) -> tuple[int, int]:
    """A pty (master, slave) with the terminal's size, so widths are computed for the real screen."""
    import fcntl
    import termios

    master, slave = os.openpty()
    with contextlib.suppress(OSError):
        fcntl.ioctl(slave, termios.TIOCSWINSZ, fcntl.ioctl(terminal_fd, termios.TIOCGWINSZ, b"\0" * 8))
    return master, slave


class LogLines:
    """The lines a log keeps of terminal output: each line's last drawn text, uncoloured, and not the frames
    of a live display that the program erased afterwards (rich: erase line, cursor up, draw again).

    A line drawn with cursor or erase codes is held back until the next line shows whether it is moved
    over (a frame: dropped) or stays (kept); plain lines pass at once."""

    def __init__(self):
        self.held: list[str] = []

    def feed(self, raw: bytes) -> list[str]:
        out = []
        up = _ups(raw)
        if up:
            del self.held[max(0, len(self.held) - up):]
        out += self.held
        self.held = []
        parts = REDRAW.split(raw)
        redrawn, text = len(parts) > 1, parts[-1]
        text = SGR.sub(b"", text).rstrip(b"\r\n").rsplit(b"\r", 1)[-1].decode("utf-8", errors="replace")
        (self.held if redrawn else out).append(text)
        return out

    def flush(self) -> list[str]:
        out, self.held = self.held, []
        return out


LONG = 1 << 16  # an unfinished line past this size (a bar redrawn for hours, no newline) is compacted


def compact(pending: bytearray) -> bytearray:
    """What LogLines reads of an unfinished line, kept small: its cursor-up count and whether it redraws, as
    codes, then the text from its last carriage return on (where the latest redraw starts). A carriage return
    is never inside an escape sequence, so no code is cut."""
    cut = pending.rfind(b"\r")
    if cut <= 0:
        return pending
    head = bytes(pending[:cut])
    up = _ups(head)
    marks = (b"\x1b[%dA" % up if up else b"") + (b"\x1b[K" if REDRAW.search(head) else b"")
    return bytearray(marks + pending[cut:])


@contextlib.contextmanager
def captured(sink: Callable[[str], None], echo: bool = True) -> Iterator[list[str]]:
    """Yield the list the lines are also appended to (complete once the block has exited)."""
    lines: list[str] = []
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    tty = echo and os.isatty(saved[1])
    read_fd, write_fd = _terminal_pair(saved[1]) if tty else os.pipe()

    log = LogLines()
    stopped = threading.Event()  # set if the block ends while a stray child still writes: no more echo
    failed: list[BaseException] = []

    def keep(texts: list[str]) -> None:
        for line in texts:
            lines.append(line)
            if line.strip() and not failed:
                try:
                    sink(line)
                except Exception as err:  # noqa: BLE001: a log handler's failure must not block the stage
                    failed.append(err)

    def pump() -> None:
        pending, limit = bytearray(), LONG
        try:
            while True:
                try:
                    chunk = os.read(read_fd, 65536)
                except OSError as err:  # a pty's master reads EIO once no writer is left: its end of file
                    if err.errno != errno.EIO:
                        raise
                    chunk = b""
                if not chunk:
                    break
                if echo and not stopped.is_set():
                    os.write(saved[1], chunk)
                if b"\n" in chunk:  # split only when a line ends: a bar's redraws append in linear time
                    *done, rest = (bytes(pending) + chunk).split(b"\n")
                    for raw in done:
                        keep(log.feed(raw))
                    pending, limit = bytearray(rest), LONG
                else:
                    pending += chunk
                    if len(pending) > limit:
                        pending = compact(pending)
                        limit = max(LONG, 2 * len(pending))
            keep((log.feed(bytes(pending)) if pending else []) + log.flush())
        finally:  # also when the sink or the echo failed: the stage must not block on a full pipe
            os.close(read_fd)

    reader = threading.Thread(target=contextvars.copy_context().run, args=(pump,), name="stage-output",
                              daemon=True)
    reader.start()
    try:
        for fd in (1, 2):
            os.dup2(write_fd, fd)
        os.close(write_fd)
        yield lines
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        for fd in (1, 2):  # the pipe's last write ends close here (unless a stray child still holds one)
            os.dup2(saved[fd], fd)
        reader.join(timeout=30)
        if reader.is_alive():  # a stray child still holds the pipe: stop echoing, and leave the saved fds open
            stopped.set()      # (closing them could let the reader write into whatever reuses the numbers)
        else:
            for fd in (1, 2):
                os.close(saved[fd])
        if failed:
            print(f"stage output: the log handler failed ({type(failed[0]).__name__}: {failed[0]}); the rest "
                  "of the output reached the terminal only", file=sys.stderr)
