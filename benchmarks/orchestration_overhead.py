"""How much does `lucie run` (Prefect, one task per DVC stage) add over plain `dvc repro`?

Run by hand (about 4 minutes per repeat on 2 cores):
    .venv/bin/python benchmarks/orchestration_overhead.py [REPEATS]
Each repeat runs both from fresh outputs in their own throw-away git+DVC copy of this repo,
with the same offline environment, alternating which goes first; the baseline is measured
in the same run. Prints every wall time and the ratio of the medians. The bar: <= 1.10.
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from repo_copy import env, make_copy, run  # noqa: E402


def timed(cmd: list[str], root: Path, e: dict) -> float:
    t0 = time.perf_counter()
    run(cmd, root, e, timeout=3600)
    return time.perf_counter() - t0


def main(repeats: int) -> None:
    base, flow, noop_dvc, noop_flow = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        e = env(tmp)
        run(["lucie", "run", "ingest"], make_copy(tmp / "warm"), e)  # a user's Prefect home exists after one run
        for i in range(repeats):
            pairs = [("dvc", ["dvc", "repro"], base), ("prefect", ["lucie", "run"], flow)]
            for name, cmd, out in (pairs if i % 2 == 0 else pairs[::-1]):
                out.append(timed(cmd, make_copy(tmp / f"{name}{i}"), e))
            noop_dvc.append(timed(["dvc", "repro"], tmp / f"dvc{i}", e))
            noop_flow.append(timed(["lucie", "run"], tmp / f"prefect{i}", e))
    fmt = lambda xs: ", ".join(f"{x:.1f}" for x in xs)
    print(f"full pipeline: dvc repro [{fmt(base)}] s, lucie run [{fmt(flow)}] s, "
          f"ratio of medians {statistics.median(flow) / statistics.median(base):.3f}")
    print(f"no-op:         dvc repro [{fmt(noop_dvc)}] s, lucie run [{fmt(noop_flow)}] s, "
          f"difference of medians {statistics.median(noop_flow) - statistics.median(noop_dvc):.1f} s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
