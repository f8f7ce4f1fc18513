#!/usr/bin/env python3
"""PyTorch (CUDA, float32) peer of memfactory-rl/examples/train_bench.rs on a GPU (run by gpu_bench.sh torch): the same
training step (forward of prompt ++ action[:-1], log-softmax at the action positions, PPO-clip
loss token-mean, backward, global-norm clip 1.0, AdamW) on a randomly initialised model of the
shape given by a Hugging Face config.json, on the rows of a batch file. Prints JSON lines
{"engine": "pytorch-cuda", "metric", "value"}. Usage: torch_train.py CONFIG_DIR BATCH MODE [STEPS]"""
import json, statistics, sys, time
from pathlib import Path

import torch
import transformers

cfg_dir, batch_file, mode = sys.argv[1], sys.argv[2], sys.argv[3]
steps = int(sys.argv[4]) if len(sys.argv) > 4 else 4
dev = "cuda"
cfg = transformers.AutoConfig.from_pretrained(cfg_dir)
torch.manual_seed(0)
with torch.device(dev):
    model = transformers.AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.float32)
if mode == "lora":
    class LoraLinear(torch.nn.Module):
        def __init__(self, base, rank=8, alpha=16.0):
            super().__init__()
            self.base = base
            self.lora_a = torch.nn.Parameter(torch.randn(base.in_features, rank, device=dev) * 0.01)
            self.lora_b = torch.nn.Parameter(torch.zeros(rank, base.out_features, device=dev))
            self.scale = alpha / rank
        def forward(self, x):
            return self.base(x) + (x @ self.lora_a @ self.lora_b) * self.scale
    for p in model.parameters():
        p.requires_grad_(False)
    for layer in model.model.layers:
        for name in ("q_proj", "v_proj"):
            setattr(layer.self_attn, name, LoraLinear(getattr(layer.self_attn, name)))
params = [p for p in model.parameters() if p.requires_grad]
opt = torch.optim.AdamW(params, lr=1e-5, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
spec = json.loads(Path(batch_file).read_text())
prompts, actions = spec["prompts"], spec["actions"]
B, P, A = len(prompts), len(prompts[0]), len(actions[0])
inputs = torch.tensor([p + q[:-1] for p, q in zip(prompts, actions)], dtype=torch.long, device=dev)
targets = torch.tensor(actions, dtype=torch.long, device=dev)
adv = torch.tensor([[spec["advantages"][i % len(spec["advantages"])]] * A for i in range(B)], device=dev)
weights = torch.ones(B, A, device=dev) / (B * A)
old, times = None, []
for step in range(steps + 1):
    torch.cuda.synchronize()
    t = time.perf_counter()
    h = model.model(input_ids=inputs, use_cache=False).last_hidden_state[:, P - 1:, :]
    lp = torch.log_softmax(model.lm_head(h), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    if old is None:
        old = lp.detach().clone()
    ratio = torch.exp(lp - old)
    loss = (-torch.minimum(ratio * adv, ratio.clamp(0.8, 1.2) * adv) * weights).sum()
    loss.item()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    if step > 0:
        times.append(time.perf_counter() - t)
med = statistics.median(times)
tok = B * (P + A)
for k, v in [(f"train_{mode}_step_s", med), (f"train_{mode}_tok_s", tok / med)]:
    print(json.dumps({"engine": "pytorch-cuda", "metric": k, "value": v, "rows": B,
                      "tokens_per_step": tok, "attn": model.config._attn_implementation,
                      "torch": torch.__version__}))
