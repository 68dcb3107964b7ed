"""MLflow hygiene around a stage run: fail fast on an unreachable server, close the runs of killed stages.

- An unreachable `tracking.uri` (http/https) used to stall ~250 s in MLflow's retries before a
  traceback; `check_reachable` opens one TCP connection with a short timeout first and raises a
  one-line StageError naming the URI and what to do.
- A SIGKILLed stage cannot end its MLflow run, which stayed RUNNING forever. Every stage run is tagged
  with its host, pid and the pid's start time (`own_tags`); `reap_stale`, at the next stage start,
  marks KILLED every RUNNING run of this experiment from this host whose process is gone (or whose pid
  now belongs to another process). Runs without these tags (older ones) and runs from other hosts are
  left alone. The invocation's parent run (run_tree.py) is kept up to date only by its stage runs, so a
  killed stage left it RUNNING too: once none of its children is still RUNNING it is marked KILLED as
  well. (If that invocation goes on, e.g. a Prefect retry, its next stage marks it RUNNING again. Two
  stages of one invocation never run at once, so the one window left, a stage of that invocation
  starting between the reaper's check and its update, only shows the parent KILLED until that stage
  ends and sets its final status.)
"""
from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

from stages.core import run_tree

CONNECT_TIMEOUT_S = 5.0


class TrackingUnreachable(ConnectionError):
    """The MLflow tracking server does not answer (printed by `runtime.stage` as a StageError is: one line, exit 1;
    not a StageError subclass, as runtime imports tracking, which imports this module)."""


def check_reachable(uri: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    u = urlparse(uri)
    if u.scheme not in ("http", "https"):
        return
    port = u.port or (443 if u.scheme == "https" else 80)
    try:
        socket.create_connection((u.hostname, port), timeout=timeout).close()
    except OSError as err:
        raise TrackingUnreachable(
            f"tracking.uri {uri}: cannot connect to {u.hostname}:{port} within {timeout:.0f} s ({err}); start the "
            "MLflow server, fix tracking.uri (or MLFLOW_TRACKING_URI), or set tracking.enabled: false") from None


def _start_time(pid: int) -> str | None:
    import psutil

    try:
        return f"{psutil.Process(pid).create_time():.2f}"
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def own_tags() -> dict:
    return {"lucie_host": socket.gethostname(), "lucie_pid": str(os.getpid()),
            "lucie_pid_start": _start_time(os.getpid()) or ""}


def reap_stale(client, experiment_id: str) -> list[str]:
    """Mark KILLED the RUNNING runs of dead stage processes on this host; return their run ids."""
    host = socket.gethostname()
    runs = client.search_runs([experiment_id], filter_string=f"attributes.status = 'RUNNING' and tags.lucie_host = '{host}'",
                              max_results=1000)
    killed, parents = [], set()
    for r in runs:
        pid = r.data.tags.get("lucie_pid", "")
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        if _start_time(int(pid)) != r.data.tags.get("lucie_pid_start"):  # gone, or the pid was reused
            client.set_terminated(r.info.run_id, "KILLED")
            killed.append(r.info.run_id)
            parents.add(r.data.tags.get("mlflow.parentRunId"))
    for parent in sorted(parents - {None}):
        run_tree.close_orphaned_parent(client, experiment_id, parent)
    return killed
