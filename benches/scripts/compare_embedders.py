#!/usr/bin/env python3
"""Side-by-side CPU throughput of sentence embedders on the same sentences, in one run:
MemFactory's `memfactory-embed-minilm` (burn, flex backend) against sentence-transformers
(PyTorch), both all-MiniLM-L6-v2 from the same model directory, same batch size, same thread
count, each in its own child process, one after the other.

Sentences: dialogue turns of LoCoMo (`--locomo`, default ../shared/data/locomo/*.json relative
to the repository root; CC BY-NC 4.0, Maharana et al. 2024) as "Speaker: text", the first
--n of them (cycled if fewer); without LoCoMo, generated chat-like sentences.

Usage (from the repository root; a venv OUTSIDE the repo with torch and
sentence-transformers, e.g. $REFVENV as BENCHMARKS.md's "How to reproduce" makes it):

    cargo build --release -p memfactory-embed-minilm --example embed_bench
    $REFVENV/bin/python benches/scripts/compare_embedders.py \
        --model models/all-minilm-l6-v2 --n 512 --batch 32 --threads 2

Prints a Markdown table (sentences/s and the ratio memfactory / sentence-transformers) and
writes --json-out if given. Timing, both engines: one warm-up batch, then the whole set three
times, best pass counts; model loading excluded (reported separately). The engines alternate
--rounds times (default 2) and each keeps its best round; on a shared machine add --nice -15
(root), as for compare_engines.py.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_engines import with_priority  # noqa: E402


def locomo_turns(paths: list[Path]) -> list[str]:
    turns = []
    for p in paths:
        for conv in json.loads(p.read_text()):
            c = conv["conversation"]
            sessions = sorted(
                (k for k in c if k.startswith("session_") and isinstance(c[k], list)),
                key=lambda k: int(k.split("_")[1]),
            )
            for k in sessions:
                for t in c[k]:
                    text = " ".join(t.get("text", "").split())
                    if text:
                        turns.append(f"{t['speaker']}: {text}")
    return turns


def generated(n: int) -> list[str]:
    rng = random.Random(0)
    who = ["Alice", "Bob", "Carol", "Dan"]
    acts = ["went hiking", "baked bread", "started a new job", "adopted a cat", "painted the fence",
            "visited her parents", "read a novel about sailors", "fixed the old bike"]
    when = ["yesterday", "last weekend", "in May 2023", "two weeks ago", "this morning"]
    tail = ["and it was great!", "but it rained the whole time.", "— would you like to join next time?",
            "and honestly I'm still tired.", "so we should celebrate soon :)"]
    return [f"{rng.choice(who)}: I {rng.choice(acts)} {rng.choice(when)} {rng.choice(tail)}"
            for _ in range(n)]


ST_WORKER = r'''
import json, sys, time, torch
threads, model_dir, path, n, batch = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(threads)
try:
    torch.set_num_interop_threads(1)
except RuntimeError:
    pass
from sentence_transformers import SentenceTransformer
try:
    from sentence_transformers.sentence_transformer import modules as models
except ImportError:
    from sentence_transformers import models
lines = [l for l in open(path, encoding="utf-8").read().splitlines() if l.strip()]
sentences = [lines[i % len(lines)] for i in range(n)]
t = time.perf_counter()
word = models.Transformer(model_dir, max_seq_length=256)
model = SentenceTransformer(modules=[word, models.Pooling(384, "mean"), models.Normalize()], device="cpu")
model.eval()
load_s = time.perf_counter() - t
with torch.inference_mode():
    model.encode(sentences[:batch], batch_size=batch)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        out = model.encode(sentences, batch_size=batch, show_progress_bar=False)
        best = min(best, time.perf_counter() - t)
        assert len(out) == n
print(json.dumps({"engine": "sentence-transformers", "sentences_per_s": n / best, "n": n,
                  "batch": batch, "threads": threads, "seconds": best, "load_s": load_s,
                  "torch": torch.__version__}))
'''


def last_json(stdout: str, engine: str) -> dict:
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                j = json.loads(line)
            except json.JSONDecodeError:
                continue
            if j.get("engine") == engine:
                return j
    raise SystemExit(f"no JSON result line from {engine}; output was:\n{stdout}")


def run(label: str, cmd: list[str], env: dict) -> tuple[str, float]:
    shown = " ".join(c if "\n" not in c else "<worker script>" for c in cmd)
    print(f"[{label}] {shown}", file=sys.stderr, flush=True)
    t = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"[{label}] failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p.stdout, wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(ROOT / "models" / "all-minilm-l6-v2"))
    ap.add_argument("--n", type=int, default=512, help="sentences per pass")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--locomo", nargs="*", type=Path, default=None,
                    help="LoCoMo JSON files (default: ../shared/data/locomo/*.json)")
    ap.add_argument("--bench-bin", type=Path,
                    default=None, help="the embed_bench example (default: $CARGO_TARGET_DIR or "
                    "target, release/examples/embed_bench)")
    ap.add_argument("--skip-st", action="store_true", help="only run memfactory")
    ap.add_argument("--rounds", type=int, default=2,
                    help="alternate the engines this many times; each engine's best round counts "
                         "(evens out load from other processes on a shared machine)")
    ap.add_argument("--nice", type=int, default=None,
                    help="renice this script and its engines, e.g. -15 (root; see compare_engines.py)")
    ap.add_argument("--json-out", type=Path)
    a = ap.parse_args()

    files = a.locomo if a.locomo is not None else sorted((ROOT.parent / "shared" / "data" / "locomo").glob("*.json"))
    turns = locomo_turns(files) if files else []
    source = f"LoCoMo turns ({', '.join(f.name for f in files)})" if turns else "generated sentences"
    if not turns:
        turns = generated(a.n)
    sentences = [turns[i % len(turns)] for i in range(a.n)]
    words = sum(len(s.split()) for s in sentences) / len(sentences)

    bench = a.bench_bin or Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release" / "examples" / "embed_bench"
    if not bench.exists():
        raise SystemExit(f"{bench} not found: cargo build --release -p memfactory-embed-minilm --example embed_bench")

    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads), OMP_NUM_THREADS=str(a.threads),
               MKL_NUM_THREADS=str(a.threads), TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    best: dict[str, dict] = {}

    def keep(r: dict) -> None:
        e = r["engine"]
        if e not in best or r["sentences_per_s"] > best[e]["sentences_per_s"]:
            best[e] = r

    def rounds() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "sentences.txt"
            path.write_text("\n".join(sentences) + "\n", encoding="utf-8")
            for _ in range(max(1, a.rounds)):
                out, _ = run("memfactory", [str(bench), a.model, str(path), str(a.n), str(a.batch)], env)
                keep(last_json(out, "memfactory"))
                if not a.skip_st:
                    out, _ = run("sentence-transformers",
                                 [sys.executable, "-c", ST_WORKER, str(a.threads), a.model, str(path),
                                  str(a.n), str(a.batch)], env)
                    keep(last_json(out, "sentence-transformers"))

    with_priority(a.nice, rounds)
    results = [best[e] for e in ("memfactory", "sentence-transformers") if e in best]
    ours = results[0]["sentences_per_s"]
    load = os.getloadavg()[0]
    print(f"\nall-MiniLM-L6-v2, {a.n} sentences ({source}, mean {words:.1f} words), batch {a.batch}, "
          f"{a.threads} threads, best of 3 passes x {a.rounds} alternating rounds; {os.cpu_count()} CPUs, load average {load:.1f} at the end\n")
    print("| engine | sentences/s | pass (s) | load (s) | memfactory / engine |")
    print("|---|---:|---:|---:|---:|")
    for r in results:
        ratio = ours / r["sentences_per_s"]
        print(f"| {r['engine']} | {r['sentences_per_s']:.1f} | {r['seconds']:.3f} | {r['load_s']:.2f} | {ratio:.2f}x |")
    if a.json_out:
        a.json_out.write_text(json.dumps({"source": source, "n": a.n, "batch": a.batch,
                                          "threads": a.threads, "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
