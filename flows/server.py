"""A local Prefect API for one `lucie run`, started before anything heavy is imported.

Prefect's own ephemeral mode starts the same server (uvicorn + prefect's app factory) on
the first flow call, after importing its server code in the calling process (about 3.6 s
on 2 cores, under the GIL, on top of the subprocess's own start). Starting the subprocess
ourselves first, with PREFECT_API_URL pointing at it, lets it boot while the flow process
imports DVC and MLflow and prepares the stage list. With PREFECT_API_URL already set (a
Prefect server you run), nothing is started. This module must not import prefect.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Callable, Iterator


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float, what: str = "the Prefect server") -> None:
    """Poll `{url}/health` until it answers 200; fail early, with the exit code, if the server process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer on {url} within {timeout:.0f} s")


def stop_group(proc: subprocess.Popen, grace: float = 10) -> None:
    """SIGTERM the server's process group (it was started in a session of its own); SIGKILL after `grace` s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextlib.contextmanager
def local_prefect_api(timeout: float = 60) -> Iterator[Callable[[], None]]:
    """Yield `wait_ready()`; the server is stopped (whole process group) on exit."""
    if os.environ.get("PREFECT_API_URL"):
        yield lambda: None
        return
    port = free_port()
    env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT_SERVER_UI_ENABLED": "false",
           "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "error", "--lifespan", "on"],
        env=env, stdout=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    os.environ["PREFECT_API_URL"] = url
    try:
        yield lambda: wait_healthy(url, proc, timeout)
    finally:
        os.environ.pop("PREFECT_API_URL", None)
        stop_group(proc)
