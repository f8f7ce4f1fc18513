#!/usr/bin/env python3
"""f32 GEMM throughput on the shapes of the training step (4 × 288 = 1,152 token rows,
SmolLM2-135M's projections), for the peers: PyTorch (MKL) and NumPy (its bundled OpenBLAS),
2 threads each. The burn side is `cargo run --release -p memfactory-lm-burn --example
gemm_probe`. Run both on an idle machine, one after the other:

    OPENBLAS_NUM_THREADS=2 $REFVENV/bin/python benches/scripts/gemm_probe.py
"""
import time

import numpy as np
import torch

torch.set_num_threads(2)
M = 1152
SHAPES = [("q/o", M, 576, 576), ("k/v", M, 576, 192), ("gate/up", M, 576, 1536),
          ("down", M, 1536, 576), ("qkv packed", M, 576, 960), ("gu packed", M, 576, 3072)]


def bench(f, m, k, n, reps=20):
    for _ in range(3):
        f()
    t = time.perf_counter()
    for _ in range(reps):
        f()
    dt = (time.perf_counter() - t) / reps
    return dt * 1e3, 2 * m * k * n / dt / 1e9


for name, m, k, n in SHAPES:
    a, b = torch.randn(m, k), torch.randn(k, n)
    an, bn = a.numpy(), b.numpy()
    tm, tg = bench(lambda: a @ b, m, k, n)
    nm, ng = bench(lambda: an @ bn, m, k, n)
    print(f"{name:12s} {m}x{k}x{n}: torch {tm:.2f} ms {tg:.1f} GFLOP/s | numpy {nm:.2f} ms {ng:.1f} GFLOP/s")
