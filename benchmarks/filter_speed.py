"""Throughput, memory and fidelity of the fast filter rules against datatrove's stock blocks.

Run by hand:  .venv/bin/python benchmarks/filter_speed.py [--corpora DIR] [--max-copies 4] [--no-cold]

Both chains run URL -> Gopher repetition -> Gopher quality -> C4 with the filter params of params.yaml
(language ID, identical fastText call in both, and perplexity are left out) on the same documents:
../shared/corpora/real-{en,fr,de,es,it}.jsonl. Each chain runs in a fresh process, so that its peak RSS
is its own; both loop over the documents one by one in one process (datatrove's executors parallelise
either chain the same way across tasks). Printed: load time, docs/s and MB/s of text (wall and CPU
time: the machine is shared, so the CPU-time ratio is the steadier one), peak RSS, the speed ratio,
the agreement of keep/drop decisions (first failing rule and reason) and every disagreement; then our
chain on the corpus repeated 1x..4x, with the chunk cache as in a real run (warm: repeated text hits the
cache) and with the cache cleared before every document (cold: each document costs what new text does).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
LANGS = ["en", "fr", "de", "es", "it"]
WARMUP = {"en": "The cat sat on the mat.", "fr": "Le chat dort.", "de": "Der Hund schläft.",
          "es": "El perro duerme.", "it": "Il gatto dorme."}


def load_docs(corpora: Path, copies: int) -> list[dict]:
    docs = []
    for lang in LANGS:
        for line in open(corpora / f"real-{lang}.jsonl", encoding="utf-8"):
            d = json.loads(line)
            docs.append({"id": d["id"], "text": d["text"], "lang": d["lang"], "url": d.get("url") or "",
                         "source": lang, "category": "web"})  # web: the rule set that meets every rule
    return [{**d, "id": f"{d['id']}#{k}" if k else d["id"]} for k in range(copies) for d in docs]


def worker(engine: str, copies: int, cold: bool, corpora: Path) -> dict:
    """One chain, one process: build (load), warm up spaCy, then decide every document."""
    from stages import filter as filt
    from stages.core import params

    p = params.load(ROOT / "params.yaml").filter
    p = p.model_copy(update={"engine": engine, "language": p.language.model_copy(update={"enabled": False}),
                             "perplexity": p.perplexity.model_copy(update={"model": None, "sp_model": None})})
    t0, c0 = time.perf_counter(), time.process_time()
    chain = filt.Chain(p, ROOT)
    if engine == "datatrove":
        chain.url.block.download_data()  # datatrove loads its lists on the first document otherwise
        for lang in LANGS:
            for _, rule in chain.text_rules(lang):
                rule.twin = None  # stock blocks only: no value lookup through our rules
    for lang in LANGS:
        filt.decide_full(chain, {"id": "warmup", "text": WARMUP[lang], "lang": lang, "url": "", "category": "web"})
        if cold:
            chain.splitter(lang).use_cache = False
    load_s, load_cpu = time.perf_counter() - t0, time.process_time() - c0
    docs = load_docs(corpora, copies)
    mb = sum(len(d["text"].encode("utf-8")) for d in docs) / 1e6
    t1, c1 = time.perf_counter(), time.process_time()
    decisions = []
    for d in docs:
        x = filt.decide_full(chain, d)
        decisions.append([d["id"], x.verdict, x.rule, x.check, x.value, x.threshold])
    run_s, run_cpu = time.perf_counter() - t1, time.process_time() - c1
    calls = {}
    for s in chain.splitters.values():
        for k, v in s.calls.items():
            calls[k] = calls.get(k, 0) + v
    return {"engine": engine, "copies": copies, "cold": cold, "docs": len(docs), "mb": mb, "load_s": load_s,
            "load_cpu": load_cpu, "run_s": run_s, "run_cpu": run_cpu,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "tokenizer_calls": calls,
            "decisions": decisions}


def spawn(engine: str, copies: int, cold: bool, corpora: Path) -> dict:
    cmd = [sys.executable, __file__, "--worker", engine, "--copies", str(copies), "--corpora", str(corpora)]
    out = subprocess.run(cmd + (["--cold"] if cold else []), check=True, capture_output=True, text=True,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"}).stdout
    return json.loads(out.strip().splitlines()[-1])


def line(r: dict, label: str) -> str:
    return (f"{label:<28} {r['docs']:>6} {r['mb']:>7.1f} {r['load_s']:>7.1f} {r['docs'] / r['run_s']:>8.1f} "
            f"{r['docs'] / r['run_cpu']:>8.1f} {r['mb'] / r['run_s']:>7.2f} {r['mb'] / r['run_cpu']:>7.2f} "
            f"{r['peak_rss_mb']:>8.0f}")


HEADER = (f"{'chain':<28} {'docs':>6} {'MB':>7} {'load s':>7} {'docs/s':>8} {'docs/cpu':>8} {'MB/s':>7} "
          f"{'MB/cpu':>7} {'peak MB':>8}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpora", type=Path, default=ROOT.parent / "shared" / "corpora")
    ap.add_argument("--max-copies", type=int, default=4)
    ap.add_argument("--no-cold", action="store_true", help="skip the cache-cleared scaling runs")
    ap.add_argument("--worker", choices=["fast", "datatrove"])
    ap.add_argument("--copies", type=int, default=1)
    ap.add_argument("--cold", action="store_true")
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(a.worker, a.copies, a.cold, a.corpora)))
        return

    print(f"load average before: {os.getloadavg()}  ({os.cpu_count()} CPUs)")
    ref = spawn("datatrove", 1, False, a.corpora)
    fast = spawn("fast", 1, False, a.corpora)
    print(HEADER)
    print(line(ref, "datatrove stock blocks"))
    print(line(fast, "fast (stages/lib/filter_rules)"))
    print(f"speed ratio fast/datatrove: {ref['run_s'] / fast['run_s']:.1f}x wall, "
          f"{ref['run_cpu'] / fast['run_cpu']:.1f}x CPU; "
          f"end to end incl. load: {(ref['run_s'] + ref['load_s']) / (fast['run_s'] + fast['load_s']):.1f}x")
    print(f"fast tokenizer: {fast['tokenizer_calls']}")

    theirs = {d[0]: d for d in ref["decisions"]}
    diffs = [(d, theirs[d[0]]) for d in fast["decisions"] if tuple(d[1:4]) != tuple(theirs[d[0]][1:4])]
    n = len(fast["decisions"])
    dropped = {}
    for d in ref["decisions"]:
        if d[1] != "keep":
            dropped[f"{d[2]}.{d[3]}"] = dropped.get(f"{d[2]}.{d[3]}", 0) + 1
    print(f"agreement: {n - len(diffs)}/{n} = {100 * (n - len(diffs)) / n:.2f} % identical decisions "
          f"(datatrove dropped {sum(dropped.values())}: {dropped})")
    for mine, their in diffs:
        print(f"  DISAGREE {mine[0]}: datatrove {their[1]} {their[2]}.{their[3]} | "
              f"fast {mine[1]} {mine[2]}.{mine[3]} value={mine[4]} threshold={mine[5]}")

    for cold in ([False] if a.no_cold else [False, True]):
        print(f"\nscaling of the fast chain, cache {'cleared before every document' if cold else 'kept (normal run)'}:")
        print(HEADER + f" {'s/doc vs 1x':>11}")
        base = None
        for k in range(1, a.max_copies + 1):
            r = fast if (k == 1 and not cold) else spawn("fast", k, cold, a.corpora)
            per_doc = r["run_cpu"] / r["docs"]
            base = base or per_doc
            print(line(r, f"fast x{k}") + f" {per_doc / base:>11.2f}")
    print(f"\nload average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
