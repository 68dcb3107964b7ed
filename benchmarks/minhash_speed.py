"""Throughput and peak memory of the dedup stage against datatrove's 4-stage MinHash, and how ours scales.

Run by hand:  .venv/bin/python benchmarks/minhash_speed.py [--corpora DIR] [--max-copies 4] [--no-cold]
              [--datatrove-copies 1]

Corpus: ../shared/corpora/real-{en,fr,de,es,it}.jsonl (1,277 documents, 11.8 MB of text). Both systems use
Lucie's settings (5-grams, 14 buckets x 8 hashes, seed 1), per language, and produce the same clusters
(benchmarks/dedup_quality.py checks that).

datatrove: its four stages (signatures, buckets, clusters, filter) with LocalPipelineExecutor, workers=1,
tasks=1 (buckets: tasks=14, one per bucket, which the stage requires), one executor per language, reading
JSONL and writing uncompressed JSONL, in a temp dir. Ours: the stage's phases, the code path of
`python -m stages.dedup` without MLflow: load (the spaCy tokenizers, which the stage loads at its first
document), signatures (read Parquet + exact keys + MinHash), clusters (LSH + union-find), write (read
again + write Parquet and removed.jsonl, re-shingling near-duplicates and their kept documents for the
exact Jaccard in removed.jsonl).

Each system runs in fresh processes (one per datatrove stage, one for all our phases) so memory is its
own. Peak memory = peak resident set size (VmHWM of /proc/self/status), reset through /proc/self/clear_refs
after the imports and before each stage or phase, so it includes the interpreter and libraries loaded so
far (shown as "base"). docs/s and MB/s divide the corpus (documents, UTF-8 bytes of text) by the wall time
of each stage; CPU time (user + system of the process) is printed too, because the 2-core machine is shared
and CPU time is the steadier number. datatrove loads spaCy inside stage 1, ours in the load phase.

Scaling: the corpus repeated 1x..4x; copy j >= 1 of a document has id "<id>~r<j>" and 2 % of its words
edited (substitution, insertion or deletion; words from the same language), so exact dedup does not remove
it and near dedup (Jaccard ~0.84) mostly does. Copies reuse the originals' vocabulary, so the stage's
chunk cache makes them cheaper than new text; the "cold" rows clear that cache before every document, the
cost of text whose words were never seen.
"""
from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import dedup_quality as dq  # noqa: E402

LANGS = ["en", "fr", "de", "es", "it"]


# ---------------------------------------------------------------- measurement inside a worker process
def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # Linux >= 4.0: resets VmHWM to the current RSS


def rss_kb(field: str = "VmHWM") -> int:
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def measured(fn) -> dict:
    reset_peak()
    base = rss_kb("VmRSS")
    t, c = time.perf_counter(), time.process_time()
    fn()
    return {"wall": time.perf_counter() - t, "cpu": time.process_time() - c, "peak_mb": rss_kb() / 1024,
            "base_mb": base / 1024}


def worker_ours(root: Path, cold: bool) -> dict:
    from stages import dedup
    from stages.core import files, params

    p = params.Dedup()
    src, out = root / "data/filtered", root / "data/dedup"
    if cold:
        dedup.CACHE_MAX = 0  # the chunk cache starts over at every document
    signer = dedup.Signer(p.minhash)
    state = {}
    res = {
        # the stage loads each language's spaCy tokenizer at its first document; here up front, to see it
        "load": measured(lambda: [signer.shingler(lang) for lang in LANGS]),
        "signatures": measured(lambda: state.update(scan=dedup.scan(files.read_docs(src), p, signer))),
        "clusters": measured(lambda: state.update(plan=dedup.plan(state["scan"], p))),
        "write": measured(lambda: dedup.write(state["plan"], src, out, 50_000, signer)),
    }
    pl = state["plan"]
    res["removed"] = {"exact": sum(k == "exact" for k in pl.kind.values()),
                      "near": sum(k == "near" for k in pl.kind.values())}
    sh = {id(s): s for s in signer._by_tok.values()}.values()
    res["chunks"] = {"new": sum(s.new_chunks for s in sh), "spacy": sum(s.spacy_chunks for s in sh)}
    signer.close()
    return res


def worker_datatrove(work: Path, stage: int) -> dict:
    import datatrove.executor  # noqa: F401  (imports before the measurement, as for ours)
    import datatrove.pipeline.dedup.minhash  # noqa: F401
    import datatrove.pipeline.readers  # noqa: F401
    import datatrove.pipeline.writers  # noqa: F401

    langs = sorted(p.name for p in (work / "input").iterdir())
    res = {f"stage{stage}": measured(lambda: dq.datatrove_stage(stage, work, langs, dq.datatrove_config()))}
    if stage == 4:
        removed = sum(1 for lang in langs for f in (work / "dt" / lang / "removed").glob("*.jsonl") for _ in open(f))
        res["removed"] = {"near": removed}
    return res


def spawn(*args) -> dict:
    """Run this script as a worker; its last stdout line is the JSON result."""
    r = subprocess.run([sys.executable, __file__, "--worker", *map(str, args)], capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"worker {args} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- corpus
def scaled(docs: list[dict], copies: int) -> list[dict]:
    out = list(docs)
    for j in range(1, copies):
        for d in docs:
            rng = random.Random(f"minhash-speed/{j}/{d['id']}")
            pool = d["text"].split()
            out.append({**d, "id": f"{d['id']}~r{j}", "text": dq.edit_words(d["text"], 0.02, rng, pool)})
    return out


def prepare(docs: list[dict], work: Path, for_datatrove: bool) -> None:
    from stages.core import files

    d = work / "data/filtered"
    d.mkdir(parents=True)
    files.write_manifest(d, files.write_docs(d, docs, 50_000))
    if for_datatrove:
        dq.write_datatrove_input(docs, work)


# ---------------------------------------------------------------- report
def row(name: str, m: dict, n: int, mb: float) -> str:
    return (f"{name:<28} {m['wall']:>8.2f} {m['cpu']:>8.2f} {n / m['wall']:>9.1f} {mb / m['wall']:>7.2f} "
            f"{m['base_mb']:>8.0f} {m['peak_mb']:>8.0f}")


HEADER = f"{'stage':<28} {'wall s':>8} {'cpu s':>8} {'docs/s':>9} {'MB/s':>7} {'base MB':>8} {'peak MB':>8}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpora", type=Path, default=ROOT.parent / "shared/corpora")
    ap.add_argument("--max-copies", type=int, default=4)
    ap.add_argument("--datatrove-copies", type=int, default=1, help="run datatrove on 1x..N x (default 1x only)")
    ap.add_argument("--no-cold", action="store_true")
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        kind, path, extra = a.worker[0], Path(a.worker[1]), a.worker[2]
        res = worker_ours(path, extra == "cold") if kind == "ours" else worker_datatrove(path, int(extra))
        print(json.dumps(res))
        return

    base = dq.load_corpora(a.corpora, LANGS)
    print(f"corpus: {len(base)} docs, {sum(len(d['text'].encode()) for d in base) / 1e6:.1f} MB of text "
          f"({', '.join(LANGS)}); {Path('/proc/loadavg').read_text().split()[:3]} load average at start")
    results = {}
    for k in range(1, a.max_copies + 1):
        docs = scaled(base, k)
        n, mb = len(docs), sum(len(d["text"].encode()) for d in docs) / 1e6
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            prepare(docs, work, k <= a.datatrove_copies)
            runs = {"ours": spawn("ours", work, "warm")}
            if not a.no_cold and k in (1, a.max_copies):
                runs["ours (cold cache)"] = spawn("ours", work, "cold")
            if k <= a.datatrove_copies:
                dt = {}
                for stage in (1, 2, 3, 4):
                    dt.update(spawn("datatrove", work, stage))
                runs["datatrove"] = dt
        results[k] = (n, mb, runs)
        print(f"\n== {k}x: {n} docs, {mb:.1f} MB")
        print(HEADER)
        for name, r in runs.items():
            phases = {key: v for key, v in r.items() if isinstance(v, dict) and "wall" in v}
            for phase, m in phases.items():
                print(row(f"{name}: {phase}", m, n, mb))
            total = {"wall": sum(m["wall"] for m in phases.values()), "cpu": sum(m["cpu"] for m in phases.values()),
                     "base_mb": min(m["base_mb"] for m in phases.values()),
                     "peak_mb": max(m["peak_mb"] for m in phases.values())}
            r["total"] = total
            print(row(f"{name}: total", total, n, mb))
            extra = {key: r[key] for key in ("removed", "chunks") if key in r}
            print(f"{'':<28} {json.dumps(extra)}")
        if "datatrove" in runs:
            o, d = runs["ours"]["total"], runs["datatrove"]["total"]
            print(f"throughput ours / datatrove: wall {d['wall'] / o['wall']:.2f}x, cpu {d['cpu'] / o['cpu']:.2f}x; "
                  f"peak memory ours / datatrove: {o['peak_mb'] / d['peak_mb']:.2f}")

    print("\nscaling of ours (time and peak memory relative to 1x; linear = the copies column)")
    print(f"{'copies':>6} {'docs':>6} {'wall':>7} {'cpu':>7} {'cpu/x':>6} {'peak MB':>8} {'cold cpu':>9}")
    n1, _, r1 = results[1]
    for k, (n, mb, runs) in results.items():
        o = runs["ours"]["total"]
        cold = runs.get("ours (cold cache)", {}).get("total")
        cold_rel = f"{cold['cpu'] / r1['ours (cold cache)']['total']['cpu']:>9.2f}" if cold and "ours (cold cache)" in r1 else f"{'':>9}"
        print(f"{k:>6} {n:>6} {o['wall'] / r1['ours']['total']['wall']:>7.2f} {o['cpu'] / r1['ours']['total']['cpu']:>7.2f} "
              f"{o['cpu'] / r1['ours']['total']['cpu'] / k:>6.2f} {o['peak_mb']:>8.0f} {cold_rel}")
    print(f"{Path('/proc/loadavg').read_text().split()[:3]} load average at end")


if __name__ == "__main__":
    main()
