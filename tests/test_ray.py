"""Ray for real: a local head on 127.0.0.1 (`ray start --head`, 2 CPUs, a 100 MB object store), and ingest,
filter and dedup run through datatrove's RayPipelineExecutor (executor.kind: ray, 2 tasks), connected by
executor.ray.address. Every output is byte-identical to the local run of the same tasks. The head is shut
down after (by pid: `ray stop` would end every Ray on the machine).

Missing ray skips here on a developer's machine, and fails under CI=true (cluster_fixtures.missing).
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from cluster_fixtures import ray_pids, start_ray, stop_ray
from stages import dedup, filter as filt, ingest
from stages.core import files as io
from test_executor import needs_lid, run_stage, tree

pytestmark = pytest.mark.slow
OUTPUTS = ("data/raw", "data/filtered", "data/dedup", "metrics/ingest.json", "metrics/filter.json", "metrics/dedup.json")


@pytest.fixture(scope="module")
def ray_head():
    temp = Path(tempfile.mkdtemp(prefix="lucie-ray-", dir="/tmp"))  # short: Ray's socket paths live under it
    address, proc = start_ray(temp)
    yield address, temp
    try:
        import ray

        ray.shutdown()
    finally:
        stop_ray(proc, temp)
        shutil.rmtree(temp, ignore_errors=True)


def run_chain(make_ctx, root: Path, **executor_keys) -> Path:
    for module in (ingest, filt, dedup):
        run_stage(make_ctx, module, root, **executor_keys)
    return root


@needs_lid
def test_ray_ingest_filter_dedup_give_the_local_bytes(ray_head, make_ctx, tmp_path):
    address, temp = ray_head
    local = run_chain(make_ctx, tmp_path / "local", tasks=2, workers=2)
    on_ray = run_chain(make_ctx, tmp_path / "ray", kind="ray", tasks=2, workers=2,
                       ray={"address": address, "cpus_per_task": 1, "mem_per_cpu_gb": 0.25})
    assert tree(on_ray, *OUTPUTS) == tree(local, *OUTPUTS)
    m = io.read_json(on_ray / "metrics/dedup.json")
    assert m["dropped"]["exact"] > 0 and io.read_json(on_ray / "metrics/filter.json")["dropped_total"] > 0
    import ray

    # the tasks ran on this head: the driver is connected to it, and datatrove recorded a Ray run per stage
    assert ray.is_initialized() and ray.get_runtime_context().gcs_address.rsplit(":", 1)[1] == address.rsplit(":", 1)[1]
    for stage in ("ingest", "filter", "dedup"):
        logs = on_ray / "logs/datatrove" / stage
        assert sorted(p.name for p in (logs / "completions").iterdir()) == ["00000", "00001"], stage
        assert '"log_first"' in (logs / "executor.json").read_text(), stage  # an attribute of RayPipelineExecutor only
        assert not (on_ray / "data" / f".{stage}.tasks").exists()
    assert ray_pids(temp)  # the head's daemons are up until the fixture stops them
