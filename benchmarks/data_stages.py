"""Throughput and peak memory of the data stages (ingest, filter, dedup, mix), and how they grow from 1x to 4x.

Run by hand:  .venv/bin/python benchmarks/data_stages.py [--max-copies 4] [--corpora FILE.jsonl ...]
              [--stages ingest,filter,dedup,mix] [--copies swap|exact|split] [--repeat 2] [--keep]

What runs: the stages themselves, `python -m stages.<name>`, unchanged, in a temp project root (nothing is
written into the repo), in the pipeline's order; the tokenizer stage runs too, unmeasured, between dedup and
mix (mix counts tokens with the tokenizer trained on data/dedup). For each k = 1..--max-copies the temp root
gets params.yaml = recipes/real-corpora.yaml with data.sources pointing at k copies of
../shared/corpora/real-{en,fr,de,es,it,code,math}.jsonl (~2,100 documents, 18 MB of text per copy), MLflow
tracking off, the local executor with 1 task and 1 worker (datatrove runs that task in the stage's own
process), and lid.176.ftz read from the repo's assets/ (with a --corpora subset, the mix and annealing
weights keep only the '<lang>--<category>' groups it has: mix refuses a weight that matches nothing).

Copies (--copies): copy 0 is always the corpus as is; copy j >= 1 has ids "<id>#j" and
  swap (default): 20 % of each document's words swapped with other words of the same document (seeded by id
    and j; whitespace and line structure kept). Word counts and lengths are the originals', so the filters
    judge copies much as the originals (a few decisions change: see "out docs"), but a copy shares only ~1/3
    of its 5-grams with any other copy, so dedup keeps it and mix gets k times the documents too.
  exact: the original texts. dedup signs and clusters every copy but removes all but one as exact
    duplicates, so mix sees 1x whatever k is.
  split: no copies: run k reads the first k/--max-copies of each corpus (1x = a quarter of it by default),
    all distinct real text with new words at every size.
swap and exact copies reuse the originals' vocabulary, so the word caches of filter and dedup (spaCy chunks)
make them cheaper than new text: per 1x of data, the first copy costs more than the next ones. split has no
such discount beyond the natural one (a larger corpus repeats more of its words).

Measured: each stage runs in a fresh wrapper process (so its peak RSS is its own) that calls the stage's
main() and at exit records user+system CPU time of itself and of any children it waited for, and the larger
of their ru_maxrss (datatrove's executor forks a small manager process). Wall time is the whole process as
seen from here, interpreter start, imports and model loading included, which is what `dvc repro` pays; the
"startup" row is the same stage on 3 documents per corpus, i.e. that fixed part alone. Input of a stage = the
documents and UTF-8 text bytes it reads: the JSONL records for ingest, the manifest rows and text column of
data/raw, data/filtered and data/dedup for filter, dedup and mix. docs/s and MB/s divide these by wall time,
MB/cpu-s by CPU time. The machine has 2 cores shared with other work, and even CPU time grows when another
process competes for a core (caches, SMT): --repeat rounds (default 2) go over all sizes in turn and each
stage keeps its fastest wall time, CPU time and RSS. Growth: time(k)/time(1) and RSS(k)/RSS(1) against the
data ratio docs(k)/docs(1), the CPU seconds each added 1x cost, and a verdict that compares the CPU cost of
the first 1x (cpu(1) - startup) with that of each further 1x (the slope from 1x to the largest size): linear
within x0.7..x1.3, else SUPERLINEAR or sublinear. The load average is printed before and after.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "real-corpora.yaml"
LID = ROOT / "assets" / "lid" / "lid.176.ftz"
CORPORA = ROOT.parent / "shared" / "corpora"
LANGS = ["en", "fr", "de", "es", "it", "code", "math"]
STAGES = ["ingest", "filter", "dedup", "mix"]
# the pipeline's order (dvc.yaml): mix counts tokens with the tokenizer trained on data/dedup, so the tokenizer
# stage runs too, unmeasured
PIPELINE = ["ingest", "filter", "dedup", "tokenizer", "mix"]
OUTPUT_DIR = {"ingest": "data/raw", "filter": "data/filtered", "dedup": "data/dedup", "mix": "data/mixed/train"}
INPUT_DIR = {"filter": "data/raw", "dedup": "data/filtered", "mix": "data/dedup"}
SWAP_FRACTION = 0.2

# Runs inside the measured process: the stage's own main(), then the process's resource usage as JSON
# (atexit: the stages leave through sys.exit on a known error, and that must still be reported).
WRAPPER = """
import atexit, importlib, json, resource, sys
def _report():
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(sys.argv[2], "w") as f:
        json.dump({"cpu_s": s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime,
                   "rss_kb": max(s.ru_maxrss, c.ru_maxrss), "children_rss_kb": c.ru_maxrss}, f)
atexit.register(_report)
importlib.import_module("stages." + sys.argv[1]).main()
"""


# ---------------------------------------------------------------- corpus copies and the temp project
def shuffle_words(text: str, rng: random.Random, fraction: float) -> str:
    """Swap `fraction` of the words among themselves (a random permutation of the chosen positions)."""
    parts = re.split(r"(\s+)", text)  # odd indices: whitespace, kept in place
    words = [i for i in range(0, len(parts), 2) if parts[i]]
    chosen = [i for i in words if rng.random() < fraction]
    moved = [parts[i] for i in chosen]
    rng.shuffle(moved)
    for i, w in zip(chosen, moved):
        parts[i] = w
    return "".join(parts)


def write_copies(src: Path, dest: Path, k: int, max_k: int, mode: str) -> tuple[int, int]:
    """The input of run k (0: the startup run, 3 documents) from a JSONL corpus, in one file.
    Returns (records, UTF-8 bytes of their text)."""
    docs = [json.loads(line) for line in src.read_text(encoding="utf-8").splitlines() if line.strip()]
    copies = 1 if mode == "split" or k == 0 else k
    docs = docs[:3] if k == 0 else docs[: len(docs) * k // max_k] if mode == "split" else docs
    n = size = 0
    with open(dest, "w", encoding="utf-8") as f:
        for j in range(copies):
            for d in docs:
                if j:
                    d = {**d, "id": f"{d['id']}#{j}"}
                    if mode == "swap":
                        d["text"] = shuffle_words(d["text"], random.Random(d["id"]), SWAP_FRACTION)
                f.write(json.dumps(d, ensure_ascii=False) + "\n")
                n += 1
                size += len(d["text"].encode("utf-8"))
    return n, size


def make_project(base: Path, corpora: list[Path], k: int, max_k: int, mode: str) -> tuple[Path, dict]:
    """A temp project root for run k: its corpus files and params.yaml. Returns (root, ingest input)."""
    root = base / f"x{k}"
    (root / "corpora").mkdir(parents=True)
    by_name = {Path(s["path"]).stem for s in yaml.safe_load(RECIPE.read_text(encoding="utf-8"))["data"]["sources"]}
    docs = size = 0
    for path in corpora:
        if path.stem not in by_name:
            sys.exit(f"--corpora: {path.name} is not a source of {RECIPE.name} (sources: {sorted(by_name)})")
        if not path.exists():
            sys.exit(f"--corpora: {path} is missing")
        n, b = write_copies(path, root / "corpora" / path.name, k, max_k, mode)
        docs, size = docs + n, size + b
    write_params(root)
    return root, {"docs": docs, "bytes": size}


def write_params(root: Path) -> None:
    """params.yaml of a temp project from the recipe, for the corpus files in root/corpora (a --corpora subset
    keeps only the mix and annealing weights of the groups it has: mix refuses a weight that matches nothing)."""
    raw = yaml.safe_load(RECIPE.read_text(encoding="utf-8"))
    files = {p.stem: p for p in (root / "corpora").glob("*.jsonl")}
    sources = [{**s, "path": str(files[Path(s["path"]).stem])} for s in raw["data"]["sources"]
               if Path(s["path"]).stem in files]
    groups = {f"{s['lang']}--{s['category']}" for s in sources}
    raw["data"]["sources"] = sources
    raw["data"]["languages"] = [l for l in raw["data"]["languages"] if l in {s["lang"] for s in sources}]
    raw["tracking"]["enabled"] = False
    raw["executor"].update(kind="local", tasks=1, workers=1)
    raw["filter"]["language"]["model"] = str(LID)
    raw["filter"]["text_langs"] = [l for l in raw["filter"]["text_langs"] if l in raw["data"]["languages"]]
    for section in (raw["mix"], raw["annealing"]):  # weights of absent groups make mix refuse to run
        section["weights"] = {k: v for k, v in section["weights"].items() if k in groups}
    if not raw["annealing"]["weights"]:
        raw["annealing"]["enabled"] = False
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")


def corpus_size(d: Path) -> dict:
    """Rows (from the manifest) and UTF-8 bytes of the text column of a stage's document directory."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    manifest = json.loads((d / "manifest.json").read_text(encoding="utf-8"))
    size = 0
    for e in manifest["files"]:
        col = pq.read_table(d / e["path"], columns=["text"]).column("text")
        size += pc.sum(pc.binary_length(col)).as_py() or 0
    return {"docs": manifest["rows"], "bytes": size}


# ---------------------------------------------------------------- running one stage
class StageFailed(Exception):
    pass


def run_stage(root: Path, stage: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DVC_ROOT", "LUCIE_PARAMS")}
    env.update(PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", DO_NOT_TRACK="1")
    report = root / f".usage-{stage}.json"
    report.unlink(missing_ok=True)
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", WRAPPER, stage, str(report)], cwd=root, env=env,
                       capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode == 0 and report.exists():
        return {"wall_s": wall, **json.loads(report.read_text()), "summary": p.stderr.strip().splitlines()[-1:]}
    tail = "\n    ".join((p.stderr or p.stdout).strip().splitlines()[-8:])
    raise StageFailed(f"{stage} failed in {root} (exit {p.returncode}):\n    {tail}")


# ---------------------------------------------------------------- report
HEADER = (f"{'k':>7} {'docs':>7} {'MB':>7} {'wall s':>7} {'cpu s':>7} {'docs/s':>8} {'MB/s':>7} "
          f"{'MB/cpu-s':>8} {'peak RSS MB':>11} {'out docs':>8}")


def row(k: int, r: dict) -> str:
    mb = r["bytes"] / 1e6
    return (f"{k if k else 'startup':>7} {r['docs']:>7} {mb:>7.1f} {r['wall_s']:>7.2f} {r['cpu_s']:>7.2f} "
            f"{r['docs'] / r['wall_s']:>8.0f} {mb / r['wall_s']:>7.2f} {mb / r['cpu_s']:>8.2f} "
            f"{r['rss_kb'] / 1024:>11.0f} {r['out_docs']:>8}")


def growth(rs: dict[int, dict]) -> list[str]:
    startup = rs.get(0)
    ks = sorted(k for k in rs if k)
    if len(ks) < 2:
        return ["  (one size only: run with --max-copies >= 2 for growth)"]
    b = rs[ks[0]]
    lines = [f"  {'k':>2} {'data x':>7} {'wall x':>7} {'cpu x':>7} {'RSS x':>7} {'RSS +MB':>8} "
             f"{'cpu-s per added 1x':>19}"]
    # CPU against the data ratio (not k: with exact copies mix gets 1x whatever k is)
    xs, cpu = [rs[k]["docs"] / b["docs"] for k in ks], [rs[k]["cpu_s"] for k in ks]
    for i, k in enumerate(ks):
        r = rs[k]
        step = (cpu[i] - cpu[i - 1]) / (xs[i] - xs[i - 1]) if i and xs[i] > xs[i - 1] else None
        lines.append(f"  {k:>2} {xs[i]:>7.2f} {r['wall_s'] / b['wall_s']:>7.2f} {cpu[i] / b['cpu_s']:>7.2f} "
                     f"{r['rss_kb'] / b['rss_kb']:>7.2f} {(r['rss_kb'] - b['rss_kb']) / 1024:>8.0f} "
                     f"{'' if step is None else f'{step:.2f}':>19}")
    last = rs[ks[-1]]
    rss_per = (last["rss_kb"] - b["rss_kb"]) / 1024 / max(xs[-1] - xs[0], 1e-9)
    tail = f"peak RSS x{last['rss_kb'] / b['rss_kb']:.2f} ({rss_per:+.0f} MB per 1x)"
    if xs[-1] <= xs[0] * 1.01:
        return lines + [f"  verdict: the input does not grow with k (dedup removed the copies); {tail}"]
    # The first 1x costs cpu(1) - startup; each further 1x costs the mean slope from 1x to the largest size.
    # Endpoints, not neighbouring steps: one slow round on the shared machine moves a step, rarely the slope.
    further = (cpu[-1] - cpu[0]) / (xs[-1] - xs[0])
    first = b["cpu_s"] - startup["cpu_s"] if startup else (cpu[1] - cpu[0]) / (xs[1] - xs[0])
    ratio = further / first if first > 0 else float("inf")
    if not startup and len(ks) < 3:
        verdict = "undetermined (needs the startup run or 3 sizes)"
    elif ratio > 1.3:
        verdict = "SUPERLINEAR: each further 1x costs more than the first"
    elif ratio < 0.7:
        verdict = "sublinear: further 1x cost less than the first (warm caches, one-off costs)"
    else:
        verdict = "linear"
    return lines + [f"  verdict: cpu x{last['cpu_s'] / b['cpu_s']:.2f}, wall x{last['wall_s'] / b['wall_s']:.2f} for "
                    f"x{xs[-1]:.2f} data; {'startup ' + format(startup['cpu_s'], '.2f') + ' s, ' if startup else ''}"
                    f"first 1x {first:.2f} s, each further 1x {further:.2f} s (x{ratio:.2f}): {verdict}; {tail}"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpora", type=Path, nargs="+", default=[CORPORA / f"real-{n}.jsonl" for n in LANGS],
                    help="JSONL files, each named like a source of recipes/real-corpora.yaml (default: all seven)")
    ap.add_argument("--max-copies", type=int, default=4)
    ap.add_argument("--stages", default=",".join(STAGES), help="a subset of ingest,filter,dedup,mix "
                    "(the earlier stages still run, unmeasured, to make the later ones' input)")
    ap.add_argument("--copies", choices=["swap", "exact", "split"], default="swap",
                    help="how run k gets k x the data (see the module docstring)")
    ap.add_argument("--repeat", type=int, default=2, help="rounds over all sizes; each stage keeps its fastest")
    ap.add_argument("--no-startup", action="store_true", help="skip the startup run (3 documents per corpus)")
    ap.add_argument("--keep", action="store_true", help="keep the temp projects and print where they are")
    a = ap.parse_args()
    wanted = [s.strip() for s in a.stages.split(",") if s.strip()]
    if not wanted or set(wanted) - set(STAGES):
        sys.exit(f"--stages: expected a subset of {STAGES}, got {a.stages!r}")
    if a.max_copies < 1 or a.repeat < 1:
        sys.exit("--max-copies and --repeat must be >= 1")
    if not LID.exists():
        sys.exit(f"{LID} is missing: run `make setup`")
    to_run = PIPELINE[: max(PIPELINE.index(s) for s in wanted) + 1]

    print(f"load average before: {os.getloadavg()}  ({os.cpu_count()} CPUs); copies: {a.copies}"
          f"{f' ({int(SWAP_FRACTION * 100)} % of words swapped)' if a.copies == 'swap' else ''}; "
          f"corpora: {' '.join(p.stem for p in a.corpora)}", flush=True)
    base = Path(tempfile.mkdtemp(prefix="lucie-bench-stages-"))
    results: dict[str, dict[int, dict]] = {s: {} for s in wanted}
    failed = ""
    try:
        ks = range(0 if not a.no_startup else 1, a.max_copies + 1)
        projects: dict[int, tuple[Path, dict]] = {}
        for rnd in range(a.repeat):
            # Rounds go over every size in turn, so that a busy spell of the shared machine hits one round of
            # a size, not all of its repeats; each stage keeps its fastest round. The first round runs the
            # whole pipeline; later rounds rerun only the measured stages (their outputs come out the same).
            for k in ks:
                if rnd == 0:
                    projects[k] = make_project(base, a.corpora, k, a.max_copies, a.copies)
                root, ingest_in = projects[k]
                if (root / ".failed").exists():
                    continue  # the startup run failed in the first round
                for stage in (to_run if rnd == 0 else [s for s in to_run if s in wanted]):
                    size = ({} if stage not in STAGES else ingest_in if stage == "ingest"
                            else corpus_size(root / INPUT_DIR[stage]))
                    try:
                        r = {**size, **run_stage(root, stage)}
                    except StageFailed as err:
                        (root / ".failed").touch()
                        if k:  # report what was measured so far, then fail
                            failed = str(err)
                            break
                        print(f"  startup run skipped: {err}", file=sys.stderr)
                        results = {s: {j: v for j, v in rs.items() if j} for s, rs in results.items()}
                        break
                    if stage in STAGES:
                        r["out_docs"] = json.loads((root / OUTPUT_DIR[stage] / "manifest.json").read_text())["rows"]
                    print(f"  round {rnd + 1} x{k} {stage:<9} {r['wall_s']:6.1f} s  {' '.join(r['summary'])}",
                          file=sys.stderr)
                    if stage in results:
                        best = results[stage].setdefault(k, r)
                        for key in ("wall_s", "cpu_s", "rss_kb"):
                            best[key] = min(best[key], r[key])
                if failed:
                    break
            if failed:
                break
    finally:
        if a.keep:
            print(f"temp projects kept in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)

    for stage in wanted:
        print(f"\n{stage} (input: {'JSONL records' if stage == 'ingest' else INPUT_DIR[stage]}; "
              f"out docs: {'train stream after upsampling' if stage == 'mix' else 'kept'})")
        print(HEADER)
        for k in sorted(results[stage]):
            print(row(k, results[stage][k]))
        print("\n".join(growth(results[stage])))
    print(f"\nload average after: {os.getloadavg()}")
    if failed:
        sys.exit(f"stopped early, the tables above are partial: {failed}")


if __name__ == "__main__":
    main()
