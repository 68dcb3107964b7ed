"""How much does `lucie run` (Prefect, one task per DVC stage) add over plain `dvc repro`?

Run by hand (about 6 minutes on 2 cores):  .venv/bin/python benchmarks/orchestration_overhead.py
Both runs start from fresh outputs in their own throw-away git+DVC copy of this repo, with
the same offline environment; the baseline is measured in the same run. Prints the wall
times and the ratio. The issue's bar: ratio <= 1.10.
"""
from __future__ import annotations

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


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        e = env(tmp)
        warm = make_copy(tmp / "warm")  # warm the Prefect home once, as a user's second run would
        run(["lucie", "run", "ingest"], warm, e)
        base = timed(["dvc", "repro"], make_copy(tmp / "dvc"), e)
        flow = timed(["lucie", "run"], make_copy(tmp / "prefect"), e)
        noop_dvc = timed(["dvc", "repro"], tmp / "dvc", e)
        noop_flow = timed(["lucie", "run"], tmp / "prefect", e)
    print(f"full pipeline: dvc repro {base:.1f} s, lucie run {flow:.1f} s, ratio {flow / base:.3f}")
    print(f"no-op:         dvc repro {noop_dvc:.1f} s, lucie run {noop_flow:.1f} s, ratio {noop_flow / noop_dvc:.3f}")


if __name__ == "__main__":
    main()
