#!/usr/bin/env python3
"""Decode speed and peak memory of MemFactory's native engine against llama.cpp on the same
GGUF, side by side in alternated rounds (MemFactory, llama.cpp, then the other way round).

Per round and engine, each figure comes from one child process (peak RSS from `wait4`):
- MemFactory: `bench_json GGUF P N B` (memfactory-lm/burn/examples/bench_json.rs) prints
  `decode_b1_empty_tok_s`, `decode_b1_tok_s` (after a P-token prompt), `decode_b8_tok_s`
  (B rows, each its own P-token prompt, aggregate) and `prefill_tok_s`;
- llama.cpp: `llama-bench -p 0 -n N -d 0,P` (batch 1, empty and after P tokens) and
  `llama-batched-bench -npp P -ntg N -npl B` (`S_TG`, aggregate decode of B sequences).
Peak RSS: MemFactory's one process; llama.cpp's `llama-bench` (b1) and batched-bench (b8)
processes separately.

Prints one JSON object per round and a summary: per metric, each round's ratio
MemFactory / llama.cpp and their median. Usage:

    python3 benches/scripts/decode_vs_llamacpp.py --bench-json target/release/examples/bench_json \
        --llama-bin DIR_WITH_llama-bench --gguf models/.../SmolLM2-135M-Instruct.Q4_1.gguf \
        --rounds 3 [--prompt 512 --new 64 --batch 8 --threads 2]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys


def run(cmd, env=None):
    """Runs `cmd`, returns (stdout, peak RSS MiB)."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    out = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed ({status}): {' '.join(cmd)}")
    return out, ru.ru_maxrss / 1024.0


def memfactory(a):
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
    out, rss = run([a.bench_json, a.gguf, str(a.prompt), str(a.new), str(a.batch)], env)
    r = {"peak_rss_mib": rss}
    for line in out.splitlines():
        j = json.loads(line)
        r[j["metric"]] = j["value"]
    return r


def llamacpp(a):
    out, rss_b1 = run([
        os.path.join(a.llama_bin, "llama-bench"), "-m", a.gguf, "-t", str(a.threads),
        "-r", "2", "-p", "0", "-n", str(a.new), "-d", f"0,{a.prompt}", "-o", "json",
    ])
    r = {"peak_rss_mib_b1": rss_b1}
    for row in json.loads(out):
        key = "decode_b1_empty_tok_s" if row["n_depth"] == 0 else "decode_b1_tok_s"
        r[key] = row["avg_ts"]
    ctx = a.batch * (a.prompt + a.new)
    out, rss_b8 = run([
        os.path.join(a.llama_bin, "llama-batched-bench"), "-m", a.gguf, "-t", str(a.threads),
        "-npp", str(a.prompt), "-ntg", str(a.new), "-npl", str(a.batch), "-c", str(ctx),
        "-b", "2048", "-ub", "512",
    ])
    r["peak_rss_mib_b8"] = rss_b8
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 10 and cells[0] == str(a.prompt):
            r["decode_b8_tok_s"] = float(cells[7])
            r["prefill_b8_tok_s"] = float(cells[5])
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench-json", required=True)
    ap.add_argument("--llama-bin", required=True)
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    rounds = []
    for i in range(a.rounds):
        order = ["memfactory", "llamacpp"] if i % 2 == 0 else ["llamacpp", "memfactory"]
        res = {}
        for e in order:
            res[e] = memfactory(a) if e == "memfactory" else llamacpp(a)
        rounds.append(res)
        print(json.dumps({"round": i + 1, "order": order, **res}), flush=True)
    print("\nmetric | MemFactory per round | llama.cpp per round | MemFactory / llama.cpp per round | median")
    for m in ["decode_b1_empty_tok_s", "decode_b1_tok_s", "decode_b8_tok_s"]:
        mf = [r["memfactory"][m] for r in rounds]
        lc = [r["llamacpp"][m] for r in rounds]
        ratios = [x / y for x, y in zip(mf, lc)]
        print(f"{m} | {' / '.join(f'{x:.1f}' for x in mf)} | {' / '.join(f'{x:.1f}' for x in lc)} | "
              f"{' / '.join(f'{x:.2f}' for x in ratios)} | {statistics.median(ratios):.2f}")
    mf = [r["memfactory"]["peak_rss_mib"] for r in rounds]
    lc = [max(r["llamacpp"]["peak_rss_mib_b1"], r["llamacpp"]["peak_rss_mib_b8"]) for r in rounds]
    ratios = [x / y for x, y in zip(mf, lc)]
    print(f"peak_rss_mib (llama.cpp: larger of its two processes) | {' / '.join(f'{x:.0f}' for x in mf)} | "
          f"{' / '.join(f'{x:.0f}' for x in lc)} | {' / '.join(f'{x:.2f}' for x in ratios)} | "
          f"{statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
