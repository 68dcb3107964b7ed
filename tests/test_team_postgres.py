"""A team deployment: the MLflow tracking server and the Prefect server on a real PostgreSQL.

Debian's PostgreSQL 15 is started by the test on 127.0.0.1 (a throw-away cluster, run as the `postgres`
user: initdb refuses root); `mlflow server` and `prefect server start` keep their state in it, and a
`lucie run` selects them by environment only (MLFLOW_TRACKING_URI, PREFECT_API_URL), as README
"A team deployment" says. The rows are then read back from PostgreSQL itself.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from repo_copy import BIN, env, make_copy, run

pytestmark = pytest.mark.slow
PG = Path("/usr/lib/postgresql/15/bin")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(*cmd: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", "postgres", "--", *cmd], capture_output=True, text=True, check=True, **kw)


@pytest.fixture
def postgres():
    if not (PG / "initdb").exists():
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL 15 is not installed (.ci/run installs Debian's `postgresql`)")
        pytest.skip("PostgreSQL 15 is not installed (apt-get install -y postgresql)")
    home = Path(tempfile.mkdtemp(prefix="lucie-pg-"))
    shutil.chown(home, "postgres", "postgres")
    data, port = home / "data", _port()
    _as_postgres(str(PG / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
    _as_postgres(str(PG / "pg_ctl"), "-D", str(data), "-l", str(home / "log"), "-w", "start", "-o",
                 f"-h 127.0.0.1 -p {port} -k {home}")
    try:
        for db in ("mlflow", "prefect"):
            _as_postgres(str(PG / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", db)
        yield f"postgres@127.0.0.1:{port}"
    finally:
        subprocess.run(["runuser", "-u", "postgres", "--", str(PG / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"],
                       capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


def _serve(cmd: list[str], health: str, e: dict, log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=e, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    for _ in range(480):
        try:
            with urllib.request.urlopen(health, timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail(f"{cmd[0]} did not answer on {health}:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def _count(pg: str, db: str, sql: str) -> int:
    host, port = pg.split("@")[1].split(":")
    out = _as_postgres(str(PG / "psql"), "-h", host, "-p", port, "-U", "postgres", "-d", db, "-tAc", sql)
    return int(out.stdout.strip())


def test_lucie_run_lands_in_postgres(tmp_path, postgres):
    base = env(tmp_path)
    ml_port, pf_port = _port(), _port()
    mlflow = _serve([str(BIN / "mlflow"), "server", "--backend-store-uri", f"postgresql+psycopg2://{postgres}/mlflow",
                     "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1",
                     "--port", str(ml_port), "--workers", "1"],
                    f"http://127.0.0.1:{ml_port}/health", {**base, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
                    tmp_path / "mlflow.log")
    prefect = _serve([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(pf_port),
                      "--analytics-off", "--no-ui"], f"http://127.0.0.1:{pf_port}/api/health",
                     {**base, "PREFECT_API_DATABASE_CONNECTION_URL": f"postgresql+asyncpg://{postgres}/prefect"},
                     tmp_path / "prefect.log")
    try:
        root = make_copy(tmp_path / "repo")
        e = env(tmp_path, MLFLOW_TRACKING_URI=f"http://127.0.0.1:{ml_port}",
                PREFECT_API_URL=f"http://127.0.0.1:{pf_port}/api")
        out = run([str(BIN / "lucie"), "run", "filter"], root, e).stdout
        assert "ingest" in out and "filter" in out
    finally:
        _stop(mlflow)
        _stop(prefect)
    assert not (root / "mlflow.db").exists()  # nothing went to the default sqlite store
    # In PostgreSQL itself: one parent and two stage runs; one flow run with its two task runs.
    assert _count(postgres, "mlflow", "select count(*) from runs") == 3
    assert _count(postgres, "mlflow", "select count(*) from tags where key = 'lucie.role' and value = 'stage'") == 2
    assert _count(postgres, "prefect", "select count(*) from flow_run") == 1
    assert _count(postgres, "prefect", "select count(*) from task_run where state_name = 'Ran'") == 2
