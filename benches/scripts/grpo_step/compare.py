#!/usr/bin/env python3
"""GRPO step wall time on the CPU MemAgent recipe: MemFactory vs MemFactory-Python vs TRL.

Issue 17 (benchmark part). One "step" = one rollout of 2 RULER niah-single questions x group 8
(MemAgent: 2 memory updates over 400-token chunks + 1 answer per episode) and the policy update
on it. Each system runs in its own child process (peak RSS = that child's own, os.wait4), for
--steps steps; the LAST step's rollout and update seconds are reported (step 1 of a process pays
one-off warm-up costs), plus the child's peak RSS.

Systems:
  memfactory   `memfactory train` (release binary) on configs/memagent_grpo_smollm2_cpu.toml with
               only these keys changed, in a temporary copy: train.steps = --steps, data.train
               samples = 2 (the same 2 questions every step), train.eval_every = 0, the model
               path made absolute. Seconds from the run's metrics.jsonl (rollout_s, update_s).
  memfactory-py  MemTensor/MemFactory@de026d8f1f7a9913a5a9cb42e15c38cbad9544da
               (examples/train_mem_grpo.py, its MemGRPOTrainer + memagent agent + longcontext env)
               with memfactory_py.patch applied (offline: the GGUF dequantized to float32, sub-EM +
               0.2 x format reward instead of its LLM judge, temperature / answer length arguments,
               one JSON line of rollout and update seconds per step). Same 2 questions, exported
               from `memfactory eval` trajectories (see export_data). Its trainer is a FULL
               fine-tune (it has no LoRA), Adam, gradient checkpointing on (its default), beta 0.
  memfactory-noshare  the same with prompt-prefix sharing off in rollouts and update
               ([model] and [train] prefix_sharing = false): what sharing buys.
  trl          trl.GRPOTrainer on a single-turn version of the task (trl_grpo.py): the whole
               needle context in one prompt, group 8, 2 prompts per step, max 32 new tokens,
               full fine-tune.
  trl-lora     the same with peft LoRA of the Rust recipe's rank (16, alpha 32, every projection).
  memfactory-single  `memfactory train` on the same single-turn task: the long-context agent
               (configs/long_context_grpo_smollm2_cpu.toml, LoRA rank 16) with trl_grpo.py's
               prompt as its template file and strip = false, so both send the same prompt; the
               same keys changed as for memfactory. Equal work with trl-lora: one LM call per
               episode, 16 rows per update. Compare the two with --reference memfactory-single.
               MemFactory skips groups whose rewards do not vary (no gradient: the advantage is
               0); TRL computes them anyway. The step reported is the process's last step that
               trained the most rows, and its row count is reported beside it.

Alternated pairs: --pairs N runs the --systems N times, the order reversed
every other round (A B C, C B A, ...), so drift of a noisy machine loads every system alike. Each
round gives one ratio per figure (other / memfactory: > 1 means MemFactory is faster / smaller);
the report gives every round's ratios and their median. Quote ratios, not absolute seconds.

Usage (repo root; release binary; the Python venv outside the repo, see README.md here):
    cargo build --release -p memfactory-cli
    $REFVENV/bin/python benches/scripts/grpo_step/compare.py \
        --memfactory-bin $CARGO_TARGET_DIR/release/memfactory \
        --mfpy-dir $HOME/.cache/memfactory-py --pairs 5 --steps 2 --markdown-out grpo_step.md
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
sys.path.insert(0, str(HERE.parent))
import compare_engines as ce  # noqa: E402  (child runner with per-child peak RSS, machine info)

RECIPE = REPO / "configs" / "memagent_grpo_smollm2_cpu.toml"
SINGLE_RECIPE = REPO / "configs" / "long_context_grpo_smollm2_cpu.toml"
MFPY_COMMIT = "de026d8f1f7a9913a5a9cb42e15c38cbad9544da"


def _sub_once(text: str, pattern: str, repl: str, section: str) -> str:
    """Replace `pattern` (a regex for one line) inside TOML section `section`, exactly once."""
    head, sep, rest = text.partition(f"\n[{section}]\n")
    assert sep, f"recipe has no [{section}]"
    body, nxt, tail = rest.partition("\n[")
    new, n = re.subn(pattern, repl, body, flags=re.M)
    assert n == 1, f"[{section}] {pattern!r} matched {n} times"
    return head + sep + new + nxt + tail


def bench_recipe(a, out_dir: Path, src: Path = RECIPE, name: str = "memagent_grpo_step.toml") -> Path:
    """The compared recipe: `src` with only the step count, train-sample count, dev evals and
    model path changed."""
    t = src.read_text()
    t = _sub_once(t, r"^path = .*$", f'path = "{Path(a.gguf).resolve()}"', "model")
    t = _sub_once(t, r"^steps = \d+", f"steps = {a.steps}", "train")
    t = _sub_once(t, r"^eval_every = \d+", "eval_every = 0", "train")
    t = _sub_once(t, r"^samples = \d+", f"samples = {a.questions}", "data.train")
    p = out_dir / name
    p.write_text(t)
    return p


def single_recipe(a, out_dir: Path) -> Path:
    """SINGLE_RECIPE changed as bench_recipe changes RECIPE, plus trl_grpo.py's prompt as the
    answer template (a file) and no whitespace stripping, as trl_grpo.py builds its prompt."""
    import trl_grpo  # noqa: E402  (stdlib only at import time)

    tpl = out_dir / "trl_final.txt"
    tpl.write_text(trl_grpo.FINAL.format(prompt="{prompt}", context="{context}"))
    p = bench_recipe(a, out_dir, SINGLE_RECIPE, "long_context_grpo_step.toml")
    t = p.read_text()
    t = _sub_once(t, r"^kind = \"long-context\"$", 'kind = "long-context"\nstrip = false', "agent")
    t = _sub_once(t, r"^max_new_tokens = (\d+)$", f'template = "{tpl}"\nmax_new_tokens = \\1', "agent.answer")
    p.write_text(t)
    return p


def noshare_recipe(recipe: Path, out_dir: Path) -> Path:
    """The same recipe with prompt-prefix sharing off in rollouts ([model]) and in the update
    ([train]): what sharing buys, measured in the same run."""
    t = recipe.read_text()
    for section in ("model", "train"):
        head, sep, rest = t.partition(f"\n[{section}]\n")
        assert sep, f"recipe has no [{section}]"
        t = head + sep + "prefix_sharing = false\n" + rest
    p = out_dir / "memagent_grpo_step_noshare.toml"
    p.write_text(t)
    return p


def recipe_values(recipe: Path) -> dict:
    import tomllib

    r = tomllib.loads(recipe.read_text())
    tr = r["train"]
    return {
        "chunk_tokens": r["agent"]["chunk_tokens"],
        "memory_tokens": r["agent"]["update"]["memory_tokens"],
        "answer_tokens": r["agent"]["answer"]["max_new_tokens"],
        "temperature": r["train"]["agent"]["answer"]["temperature"],
        "group": tr["group_size"],
        "samples_per_step": tr["samples_per_step"],
        "lr": tr["lr"],
        "lora_rank": tr["lora"]["rank"],
        "train_seed": r["data"]["train"]["seed"],
        "tokens": r["data"]["train"]["tokens"],
    }


def export_data(a, recipe: Path, work: Path) -> Path:
    """The step's questions as MemFactory-Python's longcontext JSON ({context, input, answers}):
    `memfactory eval` of the recipe on its train split (greedy, --limit = questions); the context is
    the concatenation of the memory-update prompts' <section> texts (the 400-token chunks decoded),
    the question the <problem> text, the answers the run's gold answers."""
    out = work / "export"
    v = recipe_values(recipe)
    cmd = [a.memfactory_bin, "eval", str(recipe), "--out", str(out), "--limit", str(a.questions),
           "--set", f"data.eval.seed={v['train_seed']}", "--set", f"data.eval.tokens={v['tokens']}",
           "--set", 'eval.metrics=["sub-em"]']
    rc, so, se, _, _ = ce.run_measured(cmd, label="export")
    if rc != 0:
        sys.exit(f"export: memfactory eval failed ({rc}):\n{se[-3000:]}")
    gold = {}
    for line in (out / "scores.jsonl").read_text().splitlines():
        d = json.loads(line)
        gold[d["id"]] = d["gold"]
    rows = []
    for line in (out / "trajectories.jsonl").read_text().splitlines():
        d = json.loads(line)
        secs, q = [], None
        for s in d["steps"]:
            if s.get("step") == "lm" and s.get("role") == "memory-update":
                c = s["prompt"]["chat"][-1]["content"]
                secs.append(c.split("<section>\n", 1)[1].rsplit("\n</section>", 1)[0])
                q = c.split("<problem> \n", 1)[1].split("\n</problem>", 1)[0]
        assert secs and q, f"no memory-update prompt in {d['sample_id']}"
        rows.append({"id": d["sample_id"], "context": "".join(secs), "input": q,
                     "answers": gold[d["sample_id"]]})
    p = work / "data.json"
    p.write_text(json.dumps(rows, indent=1))
    return p


def run_memfactory(a, recipe: Path, work: Path, k: int, tag: str = "mf") -> dict:
    out = work / f"{tag}-{k}"
    rc, so, se, rss, wall = ce.run_measured([a.memfactory_bin, "train", str(recipe), "--out", str(out)],
                                            label="memfactory")
    if rc != 0:
        sys.exit(f"memfactory train failed ({rc}):\n{se[-3000:]}")
    m = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    # The last step, or (where a later step skipped groups whose rewards did not vary) the last
    # step that trained the most rows.
    most = max(x.get("rows", 0) for x in m)
    last = [x for x in m if x.get("rows", 0) == most][-1]
    return {"rollout_s": last["rollout_s"], "update_s": last["update_s"], "peak_rss_mib": rss,
            "wall_s": wall, "steps": len(m), "step": last.get("step"), "rows": last.get("rows")}


def run_mfpy(a, data: Path, work: Path, v: dict, k: int) -> dict:
    gguf = Path(a.gguf).resolve()
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(a.mfpy_dir))
    cmd = [sys.executable, str(Path(a.mfpy_dir) / "examples" / "train_mem_grpo.py"),
           "--model_name_or_path", str(gguf.parent), "--gguf_file", gguf.name,
           "--data_path", str(data), "--output_dir", str(work / f"py-{k}"),
           "--agent_type", "memagent", "--env_type", "longcontext",
           "--batch_size", str(v["samples_per_step"]), "--num_generations", str(v["group"]),
           "--chunk_size", str(v["chunk_tokens"]), "--max_chunk_number", "16",
           "--max_generate_length", str(v["memory_tokens"]),
           "--max_answer_length", str(v["answer_tokens"]),
           "--temperature", str(v["temperature"]), "--beta", "0.0", "--lr", str(v["lr"]),
           "--epoch", str(a.steps), "--max_steps", str(a.steps), "--save_steps", "100000000",
           "--seed", str(k)]
    rc, so, se, rss, wall = ce.run_measured(cmd, env=env, label="memfactory-py")
    steps = [json.loads(x.split(" ", 1)[1]) for x in so.splitlines() if x.startswith("MFPY_STEP ")]
    if rc != 0 or not steps:
        sys.exit(f"memfactory-py failed ({rc}):\n{so[-2000:]}\n{se[-3000:]}")
    last = steps[-1]
    if last["trained_rows"] == 0:
        print("[warn] memfactory-py: the last step's groups all had zero reward variance: no update",
              file=sys.stderr)
    return {"rollout_s": last["rollout_s"], "update_s": last["update_s"], "peak_rss_mib": rss,
            "wall_s": wall, "steps": len(steps), "trained_rows": last["trained_rows"]}


def run_trl(a, data: Path, work: Path, v: dict, k: int, lora: bool = False) -> dict:
    cmd = [sys.executable, str(HERE / "trl_grpo.py"), "--gguf", str(Path(a.gguf).resolve()),
           "--data", str(data), "--out", str(work / f"trl-{k}"), "--steps", str(a.steps),
           "--group", str(v["group"]), "--prompts", str(v["samples_per_step"]),
           "--max-new-tokens", str(v["answer_tokens"]), "--temperature", str(v["temperature"]),
           "--lr", str(v["lr"]), "--seed", str(k), "--lora-rank", str(v["lora_rank"] if lora else 0)]
    rc, so, se, rss, wall = ce.run_measured(cmd, env=dict(os.environ, HF_HUB_OFFLINE="1"),
                                            label="trl-lora" if lora else "trl")
    steps = [json.loads(x.split(" ", 1)[1]) for x in so.splitlines() if x.startswith("TRL_STEP ")]
    if rc != 0 or not steps:
        sys.exit(f"trl failed ({rc}):\n{so[-2000:]}\n{se[-3000:]}")
    last = steps[-1]
    return {"rollout_s": last["rollout_s"], "update_s": last["update_s"], "peak_rss_mib": rss,
            "wall_s": wall, "steps": len(steps)}


FIGS = [("rollout_s", "rollout (s)"), ("update_s", "update (s)"), ("peak_rss_mib", "peak RSS (MiB)")]


def render(a, rounds: list[dict], systems: list[str], machine: dict) -> str:
    ref = a.reference
    out = [f"GRPO step, MemAgent on RULER niah-single (SmolLM2-135M-Instruct, group 8, "
           f"{a.questions} questions/step), last of {a.steps} steps per process; "
           f"{machine['cpu']}, {machine['cores']} cores, {machine['when']}.",
           f"Ratio = other / {ref} (> 1: MemFactory faster or smaller).", ""]
    others = [s for s in systems if s != ref]
    hdr = "| round | order | " + " | ".join(f"{o} / {ref} {lab}" for o in others for _, lab in FIGS) + " |"
    out += [hdr, "|" + "---|" * (2 + len(others) * len(FIGS))]
    ratios = {(o, f): [] for o in others for f, _ in FIGS}
    for i, r in enumerate(rounds):
        cells = []
        for o in others:
            for f, _ in FIGS:
                x = r[o][f] / max(r[ref][f], 1e-9)
                ratios[(o, f)].append(x)
                cells.append(f"{x:.2f}")
        out.append(f"| {i + 1} | {' '.join(r['order'])} | " + " | ".join(cells) + " |")
    out.append("| **median** | | " + " | ".join(
        f"**{statistics.median(ratios[(o, f)]):.2f}**" for o in others for f, _ in FIGS) + " |")
    rows = [f"{s} {r[s]['rows']}" for r in rounds for s in systems if "rows" in r[s]]
    if rows:
        out.append("")
        out.append("Rows trained in the reported MemFactory step, per round: " + ", ".join(rows))
    out.append("")
    out.append("Foreign CPU load during each child (% of the machine; high = noisy): " +
               ", ".join(f"{lab} {p}" for lab, p in ce.FOREIGN))
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--memfactory-bin", required=True)
    ap.add_argument("--mfpy-dir", required=True, help=f"MemTensor/MemFactory at {MFPY_COMMIT[:7]} "
                    "with memfactory_py.patch applied")
    ap.add_argument("--gguf", default=os.environ.get(
        "MEMFACTORY_SMOLLM2_GGUF", "models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--systems", default="memfactory,memfactory-py,trl")
    ap.add_argument("--reference", default="memfactory", help="the system every ratio divides by")
    ap.add_argument("--pairs", type=int, default=3, help="rounds of alternated runs")
    ap.add_argument("--steps", type=int, default=2, help="GRPO steps per process (the last is reported)")
    ap.add_argument("--questions", type=int, default=2, help="questions per step (the recipe's samples_per_step)")
    ap.add_argument("--work", default=None, help="working directory (default: a temporary one)")
    ap.add_argument("--json-out")
    ap.add_argument("--markdown-out")
    a = ap.parse_args()
    systems = [s.strip() for s in a.systems.split(",") if s.strip()]
    assert a.reference in systems, f"{a.reference} (--reference) must be one of --systems"
    work = Path(a.work or tempfile.mkdtemp(prefix="grpo-step-"))
    work.mkdir(parents=True, exist_ok=True)
    recipe = bench_recipe(a, work)
    v = recipe_values(recipe)
    assert v["samples_per_step"] == a.questions, "--questions must equal the recipe's samples_per_step"
    data = export_data(a, recipe, work)
    noshare = noshare_recipe(recipe, work)
    single = single_recipe(a, work)
    runners = {"memfactory": lambda k: run_memfactory(a, recipe, work, k),
               "memfactory-noshare": lambda k: run_memfactory(a, noshare, work, k, "mf-noshare"),
               "memfactory-py": lambda k: run_mfpy(a, data, work, v, k),
               "memfactory-single": lambda k: run_memfactory(a, single, work, k, "mf-single"),
               "trl": lambda k: run_trl(a, data, work, v, k),
               "trl-lora": lambda k: run_trl(a, data, work, v, k, lora=True)}
    rounds = []
    for i in range(a.pairs):
        order = systems if i % 2 == 0 else systems[::-1]
        r = {"order": order}
        for s in order:
            r[s] = runners[s](i)
            print(f"[round {i + 1}] {s}: {json.dumps(r[s])}", file=sys.stderr, flush=True)
        rounds.append(r)
    machine = ce.machine_info()
    md = render(a, rounds, systems, machine)
    print(md)
    if a.markdown_out:
        Path(a.markdown_out).write_text(md)
    if a.json_out:
        Path(a.json_out).write_text(json.dumps({"machine": machine, "recipe_values": v, "rounds": rounds,
                                                "foreign_cpu_pct": ce.FOREIGN}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
