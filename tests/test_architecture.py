"""The shape of the code, checked: DVC can only rerun what it knows a stage depends on.

For every stage in dvc.yaml, the import closure of the module its command runs (from the AST: every import,
function-level ones included, project modules only, plus modules a stage starts by name such as launch ->
stages.pretrain) must be covered by the stage's deps (a file, or a folder holding it). There is no import cycle
among project modules, and imports point downward only:
  stages/<stage>.py -> stages/lib -> stages/core;  model_card, datasheets: no stages;  flows -> stages;  lucie -> all.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml

from repo_copy import PROJECT

PACKAGES = ("stages", "model_card", "datasheets", "lucie", "flows")


def module_files() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for f in sorted((PROJECT / pkg).rglob("*.py")):
            rel = f.relative_to(PROJECT).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            out[".".join(parts)] = f
    return out


MODULES = module_files()


def _resolve(name: str) -> str | None:
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _package_of(mod: str) -> str:
    return mod if MODULES[mod].name == "__init__.py" else mod.rpartition(".")[0]


def imports_of(mod: str) -> set[str]:
    """Project modules `mod` imports anywhere in its body, or starts by name (a string that is a module name)."""
    tree = ast.parse(MODULES[mod].read_text())
    found = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = _package_of(mod).split(".")
                base = ".".join(pkg[: len(pkg) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and re.fullmatch(r"[a-z_]+(\.[a-z_]+)+", node.value):
            names = [node.value] if node.value in MODULES else []
        for n in names:
            r = _resolve(n)
            if r and r != mod:
                found.add(r)
    return found


GRAPH = {m: imports_of(m) for m in MODULES}


def has_code(mod: str) -> bool:
    body = ast.parse(MODULES[mod].read_text()).body
    return any(not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant)) for s in body)


def closure(mod: str) -> set[str]:
    seen, todo = set(), [mod]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo.extend(GRAPH[m])
        parts = m.split(".")
        todo.extend(p for p in (".".join(parts[:i]) for i in range(1, len(parts))) if p in MODULES)  # parent packages
    return seen


def dvc_stages() -> dict:
    return yaml.safe_load((PROJECT / "dvc.yaml").read_text())["stages"]


def stage_module(cmd: str) -> str:
    m = re.search(r"\b(stages\.[a-z_]+)\b", cmd)
    assert m, f"cannot tell which module {cmd!r} runs"
    return m.group(1)


def test_every_stage_deps_cover_its_import_closure():
    problems = []
    for name, st in dvc_stages().items():
        deps = [str(d).rstrip("/") for d in st["deps"]]
        for mod in sorted(closure(stage_module(st["cmd"]))):
            rel = MODULES[mod].relative_to(PROJECT).as_posix()
            if MODULES[mod].name == "__init__.py" and not has_code(mod):
                continue  # a docstring-only package marker changes nothing a stage computes
            if not any(rel == d or rel.startswith(d + "/") for d in deps):
                problems.append(f"{name}: imports {rel}, which its deps do not list")
    assert not problems, "\n".join(problems)


def test_the_closure_check_sees_function_level_and_launched_modules():
    # stages.launch starts stages.pretrain by name; pretrain imports the trainer; evaluate imports lm-eval helpers.
    assert "stages.pretrain" in closure("stages.launch")
    assert "stages.lib.training.trainer" in closure("stages.launch")
    assert "stages.lib.eval_tasks" in closure("stages.evaluate")


def test_no_import_cycle():
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def _layer(mod: str) -> str:
    if mod.startswith("stages.core"):
        return "core"
    if mod.startswith("stages.lib"):
        return "lib"
    if mod.startswith("stages.") or mod == "stages":
        return "stage"
    return mod.split(".")[0]


# Which layers each layer may import. A stage module never imports another stage module.
ALLOWED = {
    "core": {"core", "model_card"},  # params validates publish.require with the audit's own grammar
    "lib": {"core", "lib", "model_card", "datasheets"},
    "stage": {"core", "lib", "model_card", "datasheets"},
    "model_card": {"model_card"},
    "datasheets": {"datasheets", "model_card"},
    "flows": {"flows", "core", "lib"},
    "lucie": {"lucie", "flows", "core", "lib", "stage", "model_card", "datasheets"},
}


def test_imports_point_downward_only():
    bad = []
    for mod, deps in GRAPH.items():
        for d in deps:
            if _layer(d) not in ALLOWED[_layer(mod)] and not (_layer(mod) == "stage" and d in ("stages",)):
                if _layer(mod) == "stage" and _layer(d) == "stage" and mod == "stages.launch" and d == "stages.pretrain":
                    continue  # launch starts the training script in new processes; it does not import it
                bad.append(f"{mod} -> {d}")
    assert not bad, "imports against the layering:\n" + "\n".join(sorted(bad))


def test_stages_holds_only_what_dvc_runs():
    run = {stage_module(st["cmd"]) for st in dvc_stages().values()} | {"stages.pretrain"}  # launched by stages.launch
    top = {m for m in MODULES if m.count(".") == 1 and m.startswith("stages.") and m not in ("stages.core", "stages.lib")}
    assert top == run, f"modules in stages/ that DVC does not run: {sorted(top - run)}; run but missing: {sorted(run - top)}"
