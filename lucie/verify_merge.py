"""A partial `lucie verify STAGE` merges into the previous result instead of replacing it.

`lucie verify ingest` after a full `lucie verify` used to overwrite verification.json with the one
stage it ran: the next release then dropped to "stale" (10 verified components instead of 16) and
publish went on. Now a partial run keeps every earlier stage result that still describes the
committed outputs, and replaces the stages it re-ran:

- a full run (`all_stages`) replaces the file: it is the whole answer;
- each stage entry carries the `date` and `git_commit` of the run that produced it;
- an earlier stage entry is kept only when the md5 it compared against (`outs[].expected`) is the one
  the committed dvc.lock records now: a verification of other outputs proves nothing about these
  (dropped ones are listed in `merge.dropped`);
- `counts`, `reproduced` and `all_stages` are recomputed over the merged stages; `merge.runs` lists the
  earlier runs (date, commit, stages requested) that contributed.
"""
from __future__ import annotations

STATUSES = ("reproduced", "differs", "not_compared", "no_golden", "failed", "not_run")


def _stamped(result: dict) -> dict:
    """The stages of `result`, each with the date and commit of the run that produced it."""
    return {name: {"date": result.get("date"), "git_commit": result.get("git_commit"), **res}
            for name, res in result.get("stages", {}).items()}


def _current(res: dict, lock_outs: dict | None, same_lock: bool) -> bool:
    """Does a stage result compare against the outputs the committed lock records now? (A result
    without outs, failed or not run, only when it was made against the very same dvc.lock.)"""
    if lock_outs is None:
        return False
    if res.get("status") == "not_compared" or "outs" not in res:
        return same_lock or res.get("status") == "not_compared"
    return {o["path"]: o.get("expected") for o in res["outs"]} == lock_outs


def merge(previous: dict | None, new: dict, lock: dict) -> dict:
    """`new` with the still-valid stage results of `previous`; `lock` is the committed dvc.lock's
    `stages` mapping ({name: {"outs": [{"path", "md5"}...]}})."""
    if not previous or new.get("all_stages"):
        return new
    lock_outs = {name: {o["path"]: o.get("md5") for o in st.get("outs", [])} for name, st in lock.items()}
    same_lock = previous.get("dvc_lock_sha256") == new.get("dvc_lock_sha256")
    stages, dropped = {}, []
    for name, res in _stamped(previous).items():
        if name in new["stages"]:
            continue
        if _current(res, lock_outs.get(name), same_lock):
            stages[name] = res
        else:
            dropped.append(name)
    stages.update(_stamped(new))
    order = list(lock) + sorted(set(stages) - set(lock))  # pipeline order (dvc.lock follows dvc.yaml)
    stages = {n: stages[n] for n in order if n in stages}
    counts = {s: sum(r["status"] == s for r in stages.values()) for s in STATUSES}
    compared = len(stages) - counts["not_compared"]
    runs = [*previous.get("merge", {}).get("runs", []),
            {"date": previous.get("date"), "git_commit": previous.get("git_commit"),
             "requested": previous.get("requested", [])}]
    return {**new, "stages": stages, "counts": {**counts, "compared": compared},
            "reproduced": compared > 0 and counts["reproduced"] == compared,
            "all_stages": set(lock) <= set(stages),
            "merge": {"runs": runs, "dropped": sorted(dropped)}}
