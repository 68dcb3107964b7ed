"""A phase's step logs: the loss log (deterministic columns; becomes plots/<stage>_loss.csv) and the speed log
(wall clock; metrics/timing/), appended line by line in WORK/logs, cut back to the resumed step, mirrored to MLflow
in batches. Only rank 0 writes."""
from __future__ import annotations

import csv
from pathlib import Path

LOG_COLUMNS = ["step", "loss", "lr", "grad_norm", "tokens", "batch_size", "samples"]
SPEED_COLUMNS = ["step", "tokens_per_s", "mfu", "step_seconds"]


class StepLog:
    def __init__(self, tracker, work: Path, phase: str, active: bool, resume_step: int):
        self.tracker, self.active, self.phase = tracker, active, phase
        self.paths = {"loss": work / "logs" / f"{phase}.loss.csv", "speed": work / "logs" / f"{phase}.speed.csv"}
        self.pending: list[tuple[dict, dict]] = []
        if not active:
            return
        self.paths["loss"].parent.mkdir(parents=True, exist_ok=True)
        for kind, cols in (("loss", LOG_COLUMNS), ("speed", SPEED_COLUMNS)):
            path = self.paths[kind]
            lines = path.read_text().splitlines(keepends=True)[1:] if path.exists() else []
            kept = [line for line in lines if int(line.split(",", 1)[0]) <= resume_step]
            path.write_text(",".join(cols) + "\n" + "".join(kept))
        if resume_step:  # the resumed MLflow run gets the whole curve, not only its own part
            self.pending = list(zip(self.rows("loss"), self.rows("speed")))
            self.flush()

    def rows(self, kind: str = "loss") -> list[dict]:
        with open(self.paths[kind], newline="") as f:
            return list(csv.DictReader(f))

    def add(self, row: dict, speed: dict) -> None:
        if not self.active:
            return
        for kind, values in (("loss", row), ("speed", speed)):
            with open(self.paths[kind], "a", newline="") as f:
                csv.writer(f, lineterminator="\n").writerow(values.values())
        self.pending.append((row, speed))
        if len(self.pending) >= 100:
            self.flush()

    def flush(self) -> None:
        if not (self.active and self.pending):
            return
        name = (lambda n: n) if self.phase == "main" else (lambda n: f"{self.phase}_{n}")
        series = {"train_loss": ("loss", 0), "lr": ("lr", 0), "grad_norm": ("grad_norm", 0),
                  "batch_size": ("batch_size", 0), "tokens_per_s": ("tokens_per_s", 1), "mfu": ("mfu", 1)}
        for metric, (col, which) in series.items():
            self.tracker.metric_series(name(metric), [(int(r[0]["step"]), float(r[which][col]))
                                                      for r in self.pending])
        self.pending = []
