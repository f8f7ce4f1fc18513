#!/usr/bin/env python3
"""Writes the inputs of gpu_bench.sh into DIR: models/<name>/config.json (the published shapes
of SmolLM2-135M, Qwen2.5-0.5B and Qwen3-1.7B) with the byte-level tokenizer of
configs/models/tiny-byte, and batch files of random token ids (the layout of
compare_training.py: prompts, actions, advantages). Usage: make_inputs.py DIR"""
import json, os, random, shutil, sys

d = sys.argv[1]
base = dict(bos_token_id=None, eos_token_id=258, pad_token_id=256, hidden_act="silu", initializer_range=0.02)
models = {
    "smollm2-135m": dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=576, intermediate_size=1536,
                         num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, head_dim=64, vocab_size=49152,
                         max_position_embeddings=8192, rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True,
                         attention_bias=False),
    "qwen2.5-0.5b": dict(architectures=["Qwen2ForCausalLM"], model_type="qwen2", hidden_size=896, intermediate_size=4864,
                         num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
                         max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True),
    "qwen3-1.7b": dict(architectures=["Qwen3ForCausalLM"], model_type="qwen3", hidden_size=2048, intermediate_size=6144,
                       num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8, head_dim=128, vocab_size=151936,
                       max_position_embeddings=40960, rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
                       attention_bias=False),
}
for name, c in models.items():
    m = os.path.join(d, "models", name)
    os.makedirs(m, exist_ok=True)
    json.dump({**base, **c}, open(os.path.join(m, "config.json"), "w"), indent=1)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join("configs/models/tiny-byte", f), m)
r = random.Random(0)
for vocab, tag in ((49152, "smol"), (151936, "qwen")):
    for rows, p, a in ((4, 256, 32), (16, 512, 64)):
        spec = {"prompts": [[r.randrange(vocab) for _ in range(p)] for _ in range(rows)],
                "actions": [[r.randrange(vocab) for _ in range(a)] for _ in range(rows)],
                "advantages": [1.0, -1.0, 0.5, -0.5]}
        json.dump(spec, open(os.path.join(d, f"batch_{tag}_{rows}x{p + a}.json"), "w"))
