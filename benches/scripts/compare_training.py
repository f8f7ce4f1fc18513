#!/usr/bin/env python3
"""Training-step and rollout throughput: MemFactory's burn engine vs an equivalent PyTorch loop,
side by side in one run on the same machine, same model, same batch.

Engines (each mode of each engine runs in its own child process, one after another, so every
peak RSS is that child's own; the helpers come from compare_engines.py):
  hf          PyTorch + HF transformers: the GGUF loaded with `gguf_file=` and dequantized to
              float32, eager attention, torch.set_num_threads(THREADS). LoRA is written by hand
              (no peft): frozen base nn.Linear + A [in, r] ~ U(-1/sqrt(in), 1/sqrt(in)), B = 0,
              scale alpha / r, on the same projections as the Rust side.
  memfactory  --memfactory-bin, the example memfactory-rl/examples/train_bench.rs (release),
              printing JSON lines {"engine", "metric", "value"}.

Training step (modes `lora` = rank 8, alpha 16 on q_proj, v_proj with the base frozen, and `full`
= every weight trained): a batch of --rows rows, each --prompt-tokens random prompt ids followed by
--action-tokens random action ids (the same ids for both engines, written to a JSON batch file
by this script), advantages +1, -1, +0.5, -0.5, ... per row. One step = exactly what the trainer
does per micro-batch + update: forward of prompt ++ action[:-1], log-softmax of the logits at the
action positions only (temperature 1), PPO clipped surrogate (clip 0.2 / 0.2, token-mean,
kl_beta 0, so no reference forward on either side), loss.item(), backward, global grad-norm
clip 1.0, AdamW (lr --lr, betas 0.9/0.999, eps 1e-8, weight decay 0.01). One warm-up step whose
detached log-probs are the "old" log-probs of every later step, then --steps timed steps; the
median is reported. Throughput = rows x (prompt + action tokens) / median step time (the
action-token rate, what the trainer logs as tokens_per_s, is in the JSON too). The median of each
phase is reported too: forward + loss (+ loss.item()), backward (Rust: + GradientsParams +
accumulate), clip + AdamW (Python: + zero_grad); phase medians need not sum to the step median.
step0_logprob_mean (mean action log-prob before any update) must agree between engines: it
checks that both compute the same thing on the same weights.

Alternated pairs (--pairs N, N > 1): each training mode runs N pairs of children, the engine
order reversed every other pair (A B, B A, A B, ...), so a drift of the host's speed over the run
loads both engines alike. Each pair gives one throughput ratio; the report lists every pair and
the median ratio, and the main table shows, per metric, the median over the pairs.

Rollout (group of --group episodes' LM calls: the same ~300-token chat prompt, temperature 1,
top-k/top-p off, at most --new-tokens new tokens, seeds 1..G): all G as one batch vs one at a time;
generated tokens / wall time, best of --rollout-reps. The MemFactory child runs first and prints
its prompt ids; the PyTorch child (explicit KV-cache sampling loop, same stop rule: EOS ends a
row) uses exactly those ids.

Usage (from the repo root; the Python is a venv outside the repo with torch, transformers, gguf):
    cargo build --release -p memfactory-rl --example train_bench
    $REFVENV/bin/python benches/scripts/compare_training.py --nice -15 \
        --memfactory-bin $CARGO_TARGET_DIR/release/examples/train_bench \
        --json-out train_compare.json --markdown-out train_compare.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare_engines as ce  # noqa: E402  (shared child runner, machine info, JSON-lines parsing)

DEFAULT_GGUF = Path("models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf")
ADVANTAGES = [1.0, -1.0, 0.5, -0.5]
LORA_TARGETS = ("q_proj", "v_proj")


# ----------------------------------------------------------------------------- PyTorch worker


def _emit(metric, value, **extra):
    print(json.dumps({"engine": "hf", "metric": metric, "value": value, **extra}), flush=True)


def _load_model(a):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(a.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(
        str(a.gguf.parent), gguf_file=a.gguf.name, dtype=torch.float32, attn_implementation="eager"
    )
    _emit("load_s", round(time.perf_counter() - t0, 2))
    return torch, model


def _add_lora(torch, model, rank: int, alpha: float, seed: int):
    """Freezes every weight and wraps the target projections with a LoRA update (PEFT's layout)."""
    nn = torch.nn

    class LoraLinear(nn.Module):
        def __init__(self, base: nn.Linear, g):
            super().__init__()
            self.base = base
            bound = 1.0 / math.sqrt(base.in_features)
            self.lora_a = nn.Parameter((torch.rand(base.in_features, rank, generator=g) * 2 - 1) * bound)
            self.lora_b = nn.Parameter(torch.zeros(rank, base.out_features))
            self.scale = alpha / rank

        def forward(self, x):
            return self.base(x) + (x @ self.lora_a @ self.lora_b) * self.scale

    for p in model.parameters():
        p.requires_grad_(False)
    g = torch.Generator().manual_seed(seed)
    for layer in model.model.layers:
        for name in LORA_TARGETS:
            setattr(layer.self_attn, name, LoraLinear(getattr(layer.self_attn, name), g))


def hf_train_worker(a) -> int:
    import resource

    torch, model = _load_model(a)
    spec = json.loads(Path(a.batch_file).read_text())
    prompts, actions = spec["prompts"], spec["actions"]
    B, P, A = len(prompts), len(prompts[0]), len(actions[0])
    assert all(len(p) == P for p in prompts) and all(len(q) == A for q in actions), "equal lengths only"
    t0 = time.perf_counter()
    if a.mode == "lora":
        _add_lora(torch, model, rank=8, alpha=16.0, seed=0)
    model.train()  # no dropout in this architecture; train() only for form
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=a.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    _emit("setup_s", round(time.perf_counter() - t0, 3), mode=a.mode)
    _emit("trainable_params", sum(p.numel() for p in params), mode=a.mode)

    inputs = torch.tensor([p + q[:-1] for p, q in zip(prompts, actions)], dtype=torch.long)  # [B, P+A-1]
    targets = torch.tensor(actions, dtype=torch.long)  # [B, A]
    adv = torch.tensor([[spec["advantages"][i % len(spec["advantages"])]] * A for i in range(B)])
    mask = torch.ones(B, A)
    weights = mask / mask.sum()  # token-mean
    tokens = B * (P + A)
    old = None
    times, losses = [], []
    phases = {"fwd": [], "bwd": [], "opt": []}  # forward + loss, backward, clip + AdamW + zero_grad
    for step in range(a.steps + 1):
        t = time.perf_counter()
        # forward: hidden states (final norm applied), logits at the action positions only
        h = model.model(input_ids=inputs, use_cache=False).last_hidden_state[:, P - 1:, :]
        logits = model.lm_head(h)
        lp = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # [B, A]
        if old is None:
            old = lp.detach().clone()
            _emit("step0_logprob_mean", float(old.mean()), mode=a.mode)
        # PPO clipped surrogate (kl_beta 0), token-mean
        ratio = torch.exp((lp - old) * mask)
        clipped = ratio.clamp(1.0 - 0.2, 1.0 + 0.2)
        per_token = -torch.minimum(ratio * adv, clipped * adv)
        loss = (per_token * weights).sum()
        with torch.no_grad():  # the same diagnostics the Rust loss computes on the host
            _clip_frac = (((ratio < 0.8) & (adv < 0)) | ((ratio > 1.2) & (adv > 0))).float().mean().item()
        loss_v = loss.item()
        if not math.isfinite(loss_v):
            raise SystemExit(f"loss is {loss_v}")
        t_fwd = time.perf_counter() - t
        loss.backward()
        t_bwd = time.perf_counter() - t
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t
        print(f"[hf {a.mode}] step {step}: {dt:.2f} s, loss {loss_v:.6f}", file=sys.stderr, flush=True)
        if step > 0:
            times.append(dt)
            phases["fwd"].append(t_fwd)
            phases["bwd"].append(t_bwd - t_fwd)
            phases["opt"].append(dt - t_bwd)
            losses.append(loss_v)
    med = statistics.median(times)
    extra = dict(mode=a.mode, times_s=[round(x, 3) for x in times], losses=losses, rows=B, tokens_per_step=tokens)
    _emit(f"train_{a.mode}_step_s", med, **extra)
    _emit(f"train_{a.mode}_tok_s", tokens / med, **extra)
    _emit(f"train_{a.mode}_action_tok_s", B * A / med, **extra)
    for name, v in phases.items():
        _emit(f"train_{a.mode}_{name}_s", statistics.median(v), mode=a.mode, times_s=[round(x, 3) for x in v])
    _emit("peak_rss_mib", round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1))
    return 0


def hf_rollout_worker(a) -> int:
    import resource

    torch, model = _load_model(a)
    model.eval()
    pids = json.loads(Path(a.batch_file).read_text())["rollout_prompt_ids"]
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    G, N = a.group, a.new_tokens

    @torch.no_grad()
    def run(rows: int, seed: int) -> int:
        """rows copies of the prompt, sampled together; returns tokens generated (EOS included)."""
        g = torch.Generator().manual_seed(seed)
        ids = torch.tensor([pids] * rows, dtype=torch.long)
        out = model(input_ids=ids, use_cache=True)
        past, logits = out.past_key_values, out.logits[:, -1]
        done = torch.zeros(rows, dtype=torch.bool)
        n = 0
        for _ in range(N):
            nxt = torch.multinomial(torch.softmax(logits.float(), -1), 1, generator=g)  # temperature 1
            n += int((~done).sum())
            done |= torch.tensor([int(t) in eos for t in nxt[:, 0]])
            if bool(done.all()):
                break
            out = model(input_ids=nxt, past_key_values=past, use_cache=True)
            past, logits = out.past_key_values, out.logits[:, -1]
        return n

    with torch.no_grad():  # warm-up
        model(input_ids=torch.tensor([pids[:16]]), use_cache=True)
    for name, batched in (("batched", True), ("sequential", False)):
        best, gen, all_t = float("inf"), 0, []
        for _ in range(max(1, a.rollout_reps)):
            t = time.perf_counter()
            gen = run(G, 1) if batched else sum(run(1, 1 + i) for i in range(G))
            dt = time.perf_counter() - t
            all_t.append(round(dt, 3))
            best = min(best, dt)
        extra = dict(group=G, generated=gen, times_s=all_t, prompt_tokens=len(pids))
        _emit(f"rollout_{name}_s", best, **extra)
        _emit(f"rollout_{name}_tok_s", gen / best, **extra)
    _emit("peak_rss_mib", round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1))
    return 0


# ----------------------------------------------------------------------------- parent


def run_child(label: str, cmd: list[str], a) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS=str(a.threads), TOKENIZERS_PARALLELISM="false",
               RAYON_NUM_THREADS=str(a.threads))
    print(f"[{label}] {' '.join(cmd)}", file=sys.stderr, flush=True)
    rc, out, err, rss, wall = ce.run_measured(cmd, env=env, timeout=a.child_timeout, label=label)
    if rc != 0:
        print(f"[{label}] FAILED rc={rc}\n{err[-3000:]}", file=sys.stderr, flush=True)
        return {"_error": f"rc={rc}"}
    res = ce.parse_json_lines(out, label.split()[0])
    # extras (times, prompt ids) of every line, by metric
    res["_lines"] = [json.loads(x) for x in out.splitlines() if x.strip().startswith("{")]
    res.setdefault("peak_rss_mib", round(rss, 1))
    res["_peak_rss_wait4_mib"] = round(rss, 1)
    res["_wall_s"] = round(wall, 1)
    short = {k: v for k, v in res.items() if k != "_lines"}
    print(f"[{label}] {json.dumps(short)}", file=sys.stderr, flush=True)
    return res


def make_batch(a) -> dict:
    r = random.Random(a.seed)
    return {
        "prompts": [[r.randrange(a.vocab) for _ in range(a.prompt_tokens)] for _ in range(a.rows)],
        "actions": [[r.randrange(a.vocab) for _ in range(a.action_tokens)] for _ in range(a.rows)],
        "advantages": ADVANTAGES,
    }


def median_result(rs: list[dict]) -> dict:
    """Per numeric metric, the median over the children that have it."""
    ok = [r for r in rs if "_error" not in r]
    if not ok:
        return dict(rs[0])
    out: dict = {}
    for key in ok[0]:
        vals = [r[key] for r in ok if isinstance(r.get(key), (int, float))]
        if vals and len(vals) == len(ok):
            out[key] = statistics.median(vals)
    return out


def fmt(v, nd=1):
    return "–" if v is None else f"{v:,.{nd}f}"


def render(a, res: dict, machine: dict) -> str:
    tok = a.rows * (a.prompt_tokens + a.action_tokens)
    lines = [f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['mem_gib']} GiB RAM, threads "
             f"{a.threads}, nice {machine.get('nice', 0)}; model {a.gguf.name}; run {machine['when']}", "",
             f"Training step: {a.rows} rows × ({a.prompt_tokens} prompt + {a.action_tokens} action tokens) = "
             f"{tok} tokens per step; median of {a.steps} steps after 1 warm-up", "",
             "| mode | metric | PyTorch (transformers, f32) | MemFactory burn | burn / PyTorch throughput |", "|---|---|---|---|---|"]
    for mode in [m for m in a.modes.split(",") if m != "rollout"]:
        h, m = res.get(("hf", mode), {}), res.get(("memfactory", mode), {})
        rows = [("step time (s)", f"train_{mode}_step_s", 2), ("… forward + loss (s)", f"train_{mode}_fwd_s", 2),
                ("… backward (s)", f"train_{mode}_bwd_s", 2), ("… clip + AdamW (s)", f"train_{mode}_opt_s", 2),
                ("tokens/s", f"train_{mode}_tok_s", 1),
                ("action tokens/s", f"train_{mode}_action_tok_s", 1), ("peak RSS (MiB)", "peak_rss_mib", 0),
                ("step-0 mean action log-prob", "step0_logprob_mean", 5)]
        for label, key, nd in rows:
            hv, mv = h.get(key), m.get(key)
            ratio = f"{mv / hv:.2f}×" if isinstance(hv, (int, float)) and isinstance(mv, (int, float)) and hv and \
                key.endswith("tok_s") else ""
            lines.append(f"| {mode} | {label} | {fmt(hv, nd)} | {fmt(mv, nd)} | {ratio} |")
    for mode in [m for m in a.modes.split(",") if m != "rollout"]:
        hp, mp = res.get(("hf", mode), {}).get("_pairs"), res.get(("memfactory", mode), {}).get("_pairs")
        if not hp or not mp:
            continue
        key = f"train_{mode}_tok_s"
        lines += ["", f"{mode}: {len(hp)} alternated pairs (values above are medians over the pairs)", "",
                  "| pair | order | PyTorch step (s) | burn step (s) | burn / PyTorch throughput |", "|---|---|---|---|---|"]
        ratios = []
        order = a.engines.split(",")
        for i, (h, m) in enumerate(zip(hp, mp)):
            first = (order if i % 2 == 0 else order[::-1])[0]
            hv, mv = h.get(key), m.get(key)
            ratio = mv / hv if isinstance(hv, (int, float)) and isinstance(mv, (int, float)) and hv else None
            if ratio:
                ratios.append(ratio)
            lines.append(f"| {i + 1} | {'burn' if first == 'memfactory' else 'PyTorch'} first | "
                         f"{fmt(h.get(f'train_{mode}_step_s'), 2)} | {fmt(m.get(f'train_{mode}_step_s'), 2)} | "
                         f"{'' if ratio is None else f'{ratio:.2f}×'} |")
        if ratios:
            lines.append(f"| median | | | | **{statistics.median(ratios):.2f}×** (min {min(ratios):.2f}×, "
                         f"max {max(ratios):.2f}×) |")
    if "rollout" in a.modes.split(","):
        lines += ["", f"Rollout: {a.group} requests, same prompt, temperature 1, ≤ {a.new_tokens} new tokens; "
                  f"best of {a.rollout_reps}", "",
                  "| engine | batched: s | batched: gen tok/s | one at a time: s | one at a time: gen tok/s | "
                  "speed-up | generated (b / seq) | peak RSS (MiB) |", "|---|---|---|---|---|---|---|---|"]
        for eng, name in (("memfactory", "MemFactory burn"), ("hf", "PyTorch (transformers)")):
            r = res.get((eng, "rollout"), {})
            if not r or "_error" in r:
                lines.append(f"| {name} | {r.get('_error', 'skipped')} |  |  |  |  |  |  |")
                continue
            gb = next((x.get("generated") for x in r["_lines"] if x["metric"] == "rollout_batched_s"), None)
            gs = next((x.get("generated") for x in r["_lines"] if x["metric"] == "rollout_sequential_s"), None)
            bs, ss = r.get("rollout_batched_s"), r.get("rollout_sequential_s")
            sp = f"{ss / bs:.2f}×" if bs and ss else ""
            lines.append(f"| {name} | {fmt(bs, 2)} | {fmt(r.get('rollout_batched_tok_s'))} | {fmt(ss, 2)} | "
                         f"{fmt(r.get('rollout_sequential_tok_s'))} | {sp} | {gb} / {gs} | {fmt(r.get('peak_rss_mib'), 0)} |")
    if machine.get("foreign_cpu_pct"):
        lines += ["", "CPU used by OTHER processes during each measured child (% of the machine; > 5 % means the "
                  "numbers are disturbed): " + ", ".join(f"{k} {v} %" for k, v in machine["foreign_cpu_pct"])]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__)
    ap.add_argument("--gguf", type=Path, default=DEFAULT_GGUF)
    ap.add_argument("--memfactory-bin", default=None, help="path of the train_bench example binary")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rows", type=int, default=4)
    ap.add_argument("--prompt-tokens", type=int, default=256)
    ap.add_argument("--action-tokens", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5, help="timed steps after one warm-up step")
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--vocab", type=int, default=49152, help="random ids are drawn from [0, vocab)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--modes", default="lora,full,rollout", help="any of lora, full, rollout, in this order")
    ap.add_argument("--engines", default="hf,memfactory", help="order within each training mode")
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--rollout-reps", type=int, default=2)
    ap.add_argument("--skip-hf-rollout", action="store_true")
    ap.add_argument("--pairs", type=int, default=1,
                    help="training children per engine and mode, alternating the engine order each pair")
    ap.add_argument("--child-timeout", type=float, default=1800)
    ap.add_argument("--wait-idle", type=float, default=0.0,
                    help="before each child, wait up to this many seconds for the machine to be idle")
    ap.add_argument("--nice", type=int, default=None,
                    help="renice this script and its session's autogroup (e.g. -15; needs root), as compare_engines.py")
    ap.add_argument("--json-out", type=Path)
    ap.add_argument("--markdown-out", type=Path)
    ap.add_argument("--_worker", choices=["train", "rollout"], help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="lora", help=argparse.SUPPRESS)
    ap.add_argument("--batch-file", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a._worker == "train":
        return hf_train_worker(a)
    if a._worker == "rollout":
        return hf_rollout_worker(a)
    if not a.gguf.is_file():
        print(f"GGUF not found: {a.gguf}", file=sys.stderr)
        return 2
    return ce.with_priority(a.nice, lambda: _main(a))


def _main(a) -> int:
    machine = ce.machine_info()
    machine["nice"] = os.getpriority(os.PRIO_PROCESS, 0)
    spec = make_batch(a)
    res: dict = {}
    me = [sys.executable, os.path.abspath(__file__), "--gguf", str(a.gguf), "--threads", str(a.threads)]
    with tempfile.TemporaryDirectory() as td:
        bf = Path(td) / "batch.json"
        bf.write_text(json.dumps(spec))
        for mode in a.modes.split(","):
            if mode == "rollout":
                continue
            engines = a.engines.split(",")
            runs: dict = {}
            for pair in range(max(1, a.pairs)):
                for eng in engines if pair % 2 == 0 else engines[::-1]:
                    if a.wait_idle > 0:
                        ce.wait_idle(a.wait_idle)
                    common = ["--mode", mode, "--batch-file", str(bf), "--steps", str(a.steps), "--lr", str(a.lr)]
                    tag = f" #{pair + 1}" if a.pairs > 1 else ""
                    if eng == "hf":
                        r = run_child(f"hf {mode}{tag}", me + ["--_worker", "train"] + common, a)
                    elif eng == "memfactory":
                        if not a.memfactory_bin:
                            r = {"_error": "no --memfactory-bin"}
                        else:
                            r = run_child(f"memfactory {mode}{tag}", [a.memfactory_bin, "--gguf", str(a.gguf)] + common, a)
                    else:
                        continue
                    runs.setdefault(eng, []).append(r)
            for eng, rs in runs.items():
                res[(eng, mode)] = median_result(rs) if len(rs) > 1 else rs[0]
                if len(rs) > 1:
                    res[(eng, mode)]["_pairs"] = rs
        if "rollout" in a.modes.split(","):
            roll = ["--group", str(a.group), "--new-tokens", str(a.new_tokens)]
            if a.memfactory_bin:
                if a.wait_idle > 0:
                    ce.wait_idle(a.wait_idle)
                r = run_child("memfactory rollout", [a.memfactory_bin, "--gguf", str(a.gguf), "--mode", "rollout",
                                                     "--reps", str(a.rollout_reps)] + roll, a)
                res[("memfactory", "rollout")] = r
                pids = next((x.get("prompt_ids") for x in r.get("_lines", [])
                             if x["metric"] == "rollout_prompt_tokens"), None)
                if pids and not a.skip_hf_rollout:
                    spec["rollout_prompt_ids"] = pids
                    bf.write_text(json.dumps(spec))
                    if a.wait_idle > 0:
                        ce.wait_idle(a.wait_idle)
                    res[("hf", "rollout")] = run_child(
                        "hf rollout", me + ["--_worker", "rollout", "--batch-file", str(bf),
                                            "--rollout-reps", str(a.rollout_reps)] + roll, a)
    machine["foreign_cpu_pct"] = ce.FOREIGN
    md = render(a, res, machine)
    print(md)
    if a.markdown_out:
        a.markdown_out.write_text(md + "\n")
    if a.json_out:
        a.json_out.write_text(json.dumps({"machine": machine, "args": {k: str(v) for k, v in vars(a).items()},
                                          "results": {f"{e}/{m}": v for (e, m), v in res.items()}}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
