"""executor.logging_dir is confined to the project and the pipeline deletes only folders it made (issue 16.7).
Real ingest runs on datatrove's local executor, with the logging folder pointed outside the project, through a
symlink out of it, and at a folder someone else made: each is refused with one line, nothing outside is touched."""
from __future__ import annotations

import pytest

from stages import ingest
from stages.core import owned_dirs
from stages.core import params as P
from stages.core.executor import ExecutorError
from test_executor import sample_overrides
from test_params import error_of, with_value


@pytest.mark.parametrize("value", ["/tmp/x", "../outside", "logs/../../x", ".", "~/logs"])
def test_params_refuse_a_logging_dir_outside_the_project(value):
    msg = error_of(with_value("executor.logging_dir", value))
    assert "executor.logging_dir" in msg and "\n  " in msg


def test_params_accept_a_relative_logging_dir():
    assert P.parse(with_value("executor.logging_dir", "logs/dt")).executor.logging_dir == "logs/dt"


def precious(d):
    d.mkdir(parents=True)
    (d / "keep.txt").write_text("not the pipeline's")
    return d


def test_a_symlink_out_of_the_project_is_refused_and_nothing_outside_is_deleted(make_ctx, tmp_path):
    outside = precious(tmp_path / "outside" / "ingest")
    root = tmp_path / "proj"
    (root / "logs").mkdir(parents=True)
    (root / "logs" / "dt").symlink_to(tmp_path / "outside")
    ctx = make_ctx("ingest", sample_overrides(**{"logging_dir": "logs/dt"}), root=root)
    with pytest.raises(ExecutorError, match="executor.logging_dir.*outside the project") as exc:
        ingest.run(ctx)
    assert "\n" not in str(exc.value)
    assert (outside / "keep.txt").read_text() == "not the pipeline's"


def test_a_folder_the_project_did_not_make_is_not_deleted(make_ctx, tmp_path):
    root = tmp_path / "proj"
    foreign = precious(root / "logs" / "datatrove" / "ingest")
    ctx = make_ctx("ingest", sample_overrides(), root=root)
    with pytest.raises(ExecutorError, match="not made by this project"):
        ingest.run(ctx)
    assert (foreign / "keep.txt").exists()


def test_the_projects_own_logging_folder_is_replaced_on_a_fresh_run(make_ctx, tmp_path):
    ctx = make_ctx("ingest", sample_overrides(), root=tmp_path)
    ingest.run(ctx)
    log_dir = tmp_path / "logs" / "datatrove" / "ingest"
    assert (log_dir / owned_dirs.MARKER).is_file() and (log_dir / "executor.json").is_file()
    (log_dir / "old-run.txt").write_text("x")
    ingest.run(ctx)
    assert not (log_dir / "old-run.txt").exists() and (log_dir / owned_dirs.MARKER).is_file()
