"""Everything a stage prints, line by line, to a callback, while it still reaches the terminal.

The flow runs DVC in process, and DVC starts the stage command as a child that inherits file
descriptors 1 and 2, so capturing sys.stdout is not enough: for the duration of the block both
descriptors point at a pipe, and a reader thread copies each line to the saved terminal and to
`sink` (the Prefect run logger; see flows/pipeline.py). The reader runs in a copy of the caller's
context, so Prefect's settings context is visible to the handler it logs through.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import sys
import threading
from typing import Callable, Iterator


@contextlib.contextmanager
def captured(sink: Callable[[str], None], echo: bool = True) -> Iterator[list[str]]:
    """Yield the list the lines are also appended to (complete once the block has exited)."""
    lines: list[str] = []
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    read_fd, write_fd = os.pipe()
    saved = {fd: os.dup(fd) for fd in (1, 2)}

    def pump() -> None:
        with os.fdopen(read_fd, "rb") as pipe:
            for raw in pipe:
                if echo:
                    os.write(saved[1], raw)
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                lines.append(line)
                if line.strip():
                    sink(line)

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
        for fd in (1, 2):
            os.close(saved[fd])
