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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def local_prefect_api(timeout: float = 60) -> Iterator[Callable[[], None]]:
    """Yield `wait_ready()`; the server is stopped (whole process group) on exit."""
    if os.environ.get("PREFECT_API_URL"):
        yield lambda: None
        return
    port = _free_port()
    env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT_SERVER_UI_ENABLED": "false",
           "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "error", "--lifespan", "on"],
        env=env, stdout=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    os.environ["PREFECT_API_URL"] = url

    def wait_ready() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the local Prefect server exited with code {proc.returncode}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"the local Prefect server did not answer on {url} within {timeout:.0f} s")

    try:
        yield wait_ready
    finally:
        os.environ.pop("PREFECT_API_URL", None)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
