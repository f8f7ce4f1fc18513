#!/usr/bin/env python3
"""TRL's GRPOTrainer on a single-turn version of the MemAgent RULER needle task (issue 17).

Child of compare.py (run it through that). The prompt is the whole needle context in one user
message followed by the question and MemAgent's final-answer instruction (answer in \\boxed{});
SmolLM2's 8k-token window holds the 800-token context, so nothing is truncated unless --max-prompt
-tokens is smaller. Group --group completions per prompt, --prompts prompts per step (one
optimizer step per rollout: per_device_train_batch_size = prompts x group, no gradient
accumulation), at most --max-new-tokens new tokens, plain temperature sampling (top-k / top-p
off), beta 0 (no reference model), LoRA absent (full fine-tune, as MemFactory-Python) unless
--lora-rank R > 0: then peft LoRA of rank R, alpha 2R, on every projection (q k v o gate up
down), the adapters the Rust recipe trains. Reward:
sub-EM of the SQuAD-normalized gold in the last \\boxed{} (else the whole answer) + 0.2 x format,
the same function as the MemFactory-Python patch and the Rust recipe's rewards.

The GGUF is loaded with transformers' `gguf_file=` and dequantized to float32 (CPU). Prints one
line per step: `TRL_STEP {"step", "rollout_s", "update_s"}` where rollout_s is the wall time of
GRPOTrainer._generate_and_score_completions (generation, reward, advantages) and update_s the
rest of the optimizer step (forward, backward, optimizer), from a callback's step begin/end.
"""

from __future__ import annotations

import argparse
import json
import os
import string
import sys
import time
from pathlib import Path

FINAL = ("You are presented with a problem and a section of an article that may contain the answer "
         "to the problem. Please answer the problem based on the section and put the answer in "
         "\\boxed{{}}.\n\n<problem> \n{prompt}\n</problem>\n\n<section>\n{context}\n</section>\n\n"
         "Your answer:\n")


def normalize(s: str) -> str:
    s = "".join(c for c in s.lower() if c not in set(string.punctuation))
    return " ".join(w for w in s.split() if w not in ("a", "an", "the"))


def last_boxed(text: str) -> str | None:
    i = text.rfind("\\boxed")
    if i < 0:
        return None
    j = i + 6
    while j < len(text) and text[j].isspace():
        j += 1
    if j >= len(text) or text[j] != "{":
        return None
    depth = 0
    for k in range(j, len(text)):
        if text[k] == "{":
            depth += 1
        elif text[k] == "}":
            depth -= 1
            if depth == 0:
                return text[j + 1:k]
    return None


def reward(completion: str, answers: list[str]) -> float:
    b = last_boxed(completion)
    pred = normalize(b if b is not None else completion)
    em = max((1.0 if (f" {normalize(g)} " in f" {pred} " if normalize(g) else not pred) else 0.0)
             for g in answers)
    return em + (0.2 if b is not None else 0.0)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--data", required=True, help="compare.py's exported JSON ({context, input, answers})")
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--prompts", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--max-prompt-tokens", type=int, default=4096)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lora-rank", type=int, default=0, help="0: full fine-tune; R: peft LoRA rank R, alpha 2R")
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    gguf = Path(a.gguf)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # transformers marks a GGUF-loaded model as quantized and its Trainer then refuses a full
    # fine-tune, although the weights are already dequantized float32: the same weights in a
    # plain model built from the config.
    cfg_plain = loaded.config
    if hasattr(cfg_plain, "quantization_config"):
        delattr(cfg_plain, "quantization_config")
    model = AutoModelForCausalLM.from_config(cfg_plain, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    assert not unexpected and all("rotary" in k or "lm_head" in k for k in missing), (missing, unexpected)
    model.tie_weights()
    del loaded
    rows = json.loads(Path(a.data).read_text())[: a.prompts]
    prompts, golds = [], []
    for r in rows:
        ids = tok.encode(r["context"], add_special_tokens=False)[: a.max_prompt_tokens]
        ctx = tok.decode(ids)
        prompts.append([{"role": "user", "content": FINAL.format(prompt=r["input"], context=ctx)}])
        golds.append(r["answers"])
    ds = Dataset.from_dict({"prompt": prompts, "answers": golds})

    def accuracy_format(completions, answers, **_):
        out = []
        for c, g in zip(completions, answers):
            text = c[-1]["content"] if isinstance(c, list) else c
            out.append(reward(text, g))
        return out

    cfg = GRPOConfig(
        output_dir=a.out, max_steps=a.steps, per_device_train_batch_size=a.prompts * a.group,
        gradient_accumulation_steps=1, num_generations=a.group, max_completion_length=a.max_new_tokens,
        temperature=a.temperature, top_k=0, top_p=1.0, beta=0.0, num_iterations=1, learning_rate=a.lr,
        max_grad_norm=1.0, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True,
        seed=a.seed, dataloader_num_workers=0, shuffle_dataset=False,
    )

    class Timed(GRPOTrainer):
        rollout_s = 0.0

        def _generate_and_score_completions(self, *args, **kw):
            t = time.perf_counter()
            try:
                return super()._generate_and_score_completions(*args, **kw)
            finally:
                self.rollout_s += time.perf_counter() - t

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()
            trainer.rollout_s = 0.0

        def on_step_end(self, args, state, control, **kw):
            total = time.perf_counter() - self.t0
            print("TRL_STEP " + json.dumps({"step": state.global_step, "rollout_s": trainer.rollout_s,
                                            "update_s": total - trainer.rollout_s}), flush=True)

    peft_config = None
    if a.lora_rank > 0:
        from peft import LoraConfig

        peft_config = LoraConfig(r=a.lora_rank, lora_alpha=2 * a.lora_rank, lora_dropout=0.0, bias="none",
                                 task_type="CAUSAL_LM",
                                 target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                 "down_proj"])
    trainer = Timed(model=model, reward_funcs=accuracy_format, args=cfg, train_dataset=ds,
                    processing_class=tok, callbacks=[StepTimer()], peft_config=peft_config)
    trainer.train()
    return 0


if __name__ == "__main__":
    sys.exit(main())
