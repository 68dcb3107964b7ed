"""The pipeline's stage order, read from dvc.yaml by DVC itself: one walk of the DAG for `lucie run` (the Prefect
flow runs one task per stage in this order) and `lucie verify` (which re-runs them in a clean clone)."""
from __future__ import annotations

from pathlib import Path


class UnknownStage(ValueError):
    """A stage name that dvc.yaml does not have."""


def plan(repo: Path, targets: list[str] | None = None) -> tuple[list[str], list[str], list[str]]:
    """(stages to run in dependency order: the targets and everything upstream, or all; the deps
    of those stages that no stage produces and that are absent from `repo`; all stages in order)."""
    import networkx as nx
    from dvc.repo import Repo

    with Repo(str(repo)) as r:
        graph = r.index.graph  # edges go stage -> dependency
        order = [s for s in reversed(list(nx.topological_sort(graph))) if getattr(s, "name", None)]
        everything = [s.name for s in order]
        if targets:
            unknown = sorted(set(targets) - {s.name for s in order})
            if unknown:
                raise UnknownStage(f"unknown stage(s) {', '.join(unknown)}; dvc.yaml has {', '.join(s.name for s in order)}")
            wanted = {s for s in order if s.name in targets}
            wanted |= {d for s in list(wanted) for d in nx.descendants(graph, s)}
            order = [s for s in order if s in wanted]
        root = Path(r.root_dir)
        produced = {Path(o.fs_path) for s in graph for o in getattr(s, "outs", [])}
        missing = set()
        for s in order:
            for d in s.deps:
                p = Path(d.fs_path)
                if not p.exists() and not any(p == o or o in p.parents for o in produced):
                    missing.add(p.relative_to(root).as_posix())
        return [s.name for s in order], sorted(missing), everything
