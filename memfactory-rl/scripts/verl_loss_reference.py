#!/usr/bin/env python3
"""numpy peer of memfactory-rl's loss variants that follow verl: PPO dual-clip, the clamped
k3 ("low_var_kl") KL term, Dr. GRPO's constant-normaliser aggregation, zero-variance
groups kept with advantage 0, and the +-20 clamp on the log-ratio before exp.

Writes tests/golden/verl_loss_reference.json: fixed inputs (drawn here from a seeded numpy
generator and stored in the file, so the Rust test reads exactly the same numbers) and, per
case, the loss and its gradient w.r.t. the current log-probs, computed in float64 with the
derivative written out by hand (no autodiff framework).

Formulas, from volcengine/verl verl/trainer/ppo/core_algos.py
(@012be9d9dcb7c38499f23616142870d2682757fc: compute_policy_loss_vanilla, kl_penalty,
agg_loss) and Dr. GRPO (arXiv 2503.20783):
  ratio = exp(clip(logp - old, -20, 20))    (verl: negative_approx_kl = torch.clamp(...))
  pg1 = -A * ratio;  pg2 = -A * clip(ratio, 1 - clip_low, 1 + clip_high)
  pg  = max(pg1, pg2)
  dual-clip (clip_ratio_c = c > 0):  pg = min(pg, -A * c)  where A < 0
  k3:  d = clip(ref - logp, -20, 20);  kl = exp(d) - d - 1;  kl = clip(kl, -10, 10)
       (without the clamp: no clip on d nor on kl)
  per_token = pg + beta * kl
  token-mean:              sum(per_token * mask) / sum(mask)
  seq-mean-token-sum-norm: mean over rows of (sum_t per_token * mask) / norm
Advantages are dr-grpo (r - group mean); the zero-variance group is kept with A = 0
(zero_variance = "keep"): its rows count in the token-mean denominator and carry the KL.

The log-ratio clamp never acts on the main inputs (|logp - old| <= 1.6). The extra input
set "log_ratio_clamp" moves a few tokens' current log-probs (and their reference, so the k3
term is unchanged) by 22 to 30 nats, beyond the bound: each of its cases also stores the loss
computed without the clamp, to show that the clamp changes it.

Deviation kept on purpose (see memfactory-rl/src/loss.rs): verl's seq-mean-token-sum-norm
sums over rows where Dr. GRPO (and this script) takes the mean.

Run (numpy only; any recent version):
  python3 -m venv ~/.cache/memfactory-refvenv
  ~/.cache/memfactory-refvenv/bin/pip install numpy
  ~/.cache/memfactory-refvenv/bin/python memfactory-rl/scripts/verl_loss_reference.py
"""
import json
import os

import numpy as np

rng = np.random.default_rng(20250316)

GROUPS = 3  # samples
G = 4  # trajectories per sample
T = 9  # max action length
CLIP_LOW, CLIP_HIGH, BETA = 0.2, 0.28, 0.05
CLIP_C, KL_CLAMP, KL_LOG_CLAMP = 3.0, 10.0, 20.0
LOG_RATIO_CLAMP = 20.0
NORM = 16.0

# Rewards: group 1 is constant (zero variance: kept with A = 0).
rewards = np.array([[1.0, 0.0, 0.5, 0.0], [0.3, 0.3, 0.3, 0.3], [0.1, 0.9, 0.4, 0.0]])
adv_traj = rewards - rewards.mean(axis=1, keepdims=True)
rows = GROUPS * G
lengths = rng.integers(1, T + 1, size=rows)
mask = (np.arange(T)[None, :] < lengths[:, None]).astype(np.float64)
old = -rng.random((rows, T)) * 3.0
# The policy moved by up to ±1.6 nats: some ratios pass clip_ratio_c = 3 (e^1.1 = 3.0).
logp = old + (rng.random((rows, T)) - 0.5) * 3.2
# The reference lies up to 4 nats above or below: some k3 terms exceed the clamp (d > 2.6).
ref = logp + (rng.random((rows, T)) - 0.5) * 8.0
old, logp, ref = old * mask, logp * mask, ref * mask
A = adv_traj.reshape(-1)[:, None] * np.ones((1, T))  # one turn per trajectory


def loss_and_grad(dual, clamp, agg, logp=logp, old=old, ref=ref, ratio_clamp=True):
    nak = (logp - old) * mask  # verl's negative_approx_kl
    dnak = np.ones_like(nak)  # d nak / d logp (masked positions: nak = 0, weight 0)
    n_ratio = 0
    if ratio_clamp:
        out = np.abs(nak) > LOG_RATIO_CLAMP
        n_ratio = int((out & (mask > 0)).sum())
        dnak = np.where(out, 0.0, dnak)
        nak = np.clip(nak, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = np.exp(nak)
    clipped = np.clip(ratio, 1 - CLIP_LOW, 1 + CLIP_HIGH)
    pg1 = -A * ratio
    pg2 = -A * clipped
    pg = np.maximum(pg1, pg2)
    # d pg / d logp: the unclipped branch moves with the ratio; the clipped one only inside
    # the clip range, where it equals the unclipped one.
    inside = (ratio >= 1 - CLIP_LOW) & (ratio <= 1 + CLIP_HIGH)
    dratio = ratio * dnak
    dpg = np.where(pg1 >= pg2, -A * dratio, np.where(inside, -A * dratio, 0.0))
    n_dual = 0
    if dual:
        cap = -A * CLIP_C
        hit = (A < 0) & (pg > cap)
        n_dual = int((hit & (mask > 0)).sum())
        pg = np.where(hit, cap, pg)
        dpg = np.where(hit, 0.0, dpg)
    d = (ref - logp) * mask
    dd = -np.ones_like(d)  # d d / d logp
    if clamp:
        dd = np.where(np.abs(d) > KL_LOG_CLAMP, 0.0, dd)
        d = np.clip(d, -KL_LOG_CLAMP, KL_LOG_CLAMP)
    kl = np.exp(d) - d - 1.0
    dkl = (np.exp(d) - 1.0) * dd
    n_kl = 0
    if clamp:
        out = np.abs(kl) > KL_CLAMP
        n_kl = int((out & (mask > 0)).sum())
        kl = np.clip(kl, -KL_CLAMP, KL_CLAMP)
        dkl = np.where(out, 0.0, dkl)
    per = pg + BETA * kl
    dper = (dpg + BETA * dkl) * mask
    if agg == "token-mean":
        w = mask / mask.sum()
    elif agg == "seq-mean-token-sum-norm":
        w = mask / (NORM * rows)
    else:
        raise ValueError(agg)
    return float((per * w).sum()), (dper * w), n_dual, n_kl, n_ratio


cases = []
for agg in ["token-mean", "seq-mean-token-sum-norm"]:
    for dual in [True, False]:
        for clamp in [True, False]:
            loss, grad, n_dual, n_kl, n_ratio = loss_and_grad(dual, clamp, agg)
            assert n_ratio == 0
            cases.append(
                {
                    "aggregation": agg,
                    "clip_ratio_c": CLIP_C if dual else 0.0,
                    "kl_clamp": KL_CLAMP if clamp else 0.0,
                    "loss": loss,
                    "grad": grad.tolist(),
                    "dual_clipped_tokens": n_dual,
                    "kl_clamped_tokens": n_kl,
                }
            )
            print(f"{agg:24s} dual={dual!s:5} clamp={clamp!s:5} loss {loss:+.7f} "
                  f"dual-clipped {n_dual} kl-clamped {n_kl}")

# Tokens moved beyond the log-ratio bound: (row, column, shift in nats). Rows 1, 3 and 8 have
# A < 0 (without dual-clip the unclipped branch -A * ratio is the active one), row 0 has
# A > 0 and a tiny ratio, row 9 has A > 0 and the clipped branch active.
SHIFTS = [(1, 0, 25.0), (3, 0, 25.0), (8, 2, 30.0), (0, 1, -25.0), (9, 0, 22.0)]
shift = np.zeros_like(logp)
for r, c, v in SHIFTS:
    assert mask[r, c] > 0
    shift[r, c] = v
logp_x, ref_x = logp + shift, ref + shift
ratio_cases = []
for dual in [False, True]:
    kw = dict(logp=logp_x, old=old, ref=ref_x)
    loss, grad, n_dual, n_kl, n_ratio = loss_and_grad(dual, True, "token-mean", **kw)
    loss_raw, _, _, _, _ = loss_and_grad(dual, True, "token-mean", ratio_clamp=False, **kw)
    ratio_cases.append(
        {
            "aggregation": "token-mean",
            "clip_ratio_c": CLIP_C if dual else 0.0,
            "kl_clamp": KL_CLAMP,
            "loss": loss,
            "grad": grad.tolist(),
            "dual_clipped_tokens": n_dual,
            "kl_clamped_tokens": n_kl,
            "log_ratio_clamped_tokens": n_ratio,
            "loss_without_log_ratio_clamp": loss_raw,
        }
    )
    print(f"log-ratio clamp dual={dual!s:5} loss {loss:+.7e} (without the clamp {loss_raw:+.7e}) "
          f"log-ratio-clamped {n_ratio} dual-clipped {n_dual} kl-clamped {n_kl}")

out = {
    "group_size": G,
    "clip_low": CLIP_LOW,
    "clip_high": CLIP_HIGH,
    "kl_beta": BETA,
    "loss_agg_norm": NORM,
    "rewards": rewards.tolist(),
    "advantages": adv_traj.tolist(),
    "mask": mask.tolist(),
    "logprobs": logp.tolist(),
    "old_logprobs": old.tolist(),
    "ref_logprobs": ref.tolist(),
    "cases": cases,
    "log_ratio_clamp": {
        "logprobs": logp_x.tolist(),
        "ref_logprobs": ref_x.tolist(),
        "cases": ratio_cases,
    },
}
path = os.path.join(os.path.dirname(__file__), "..", "tests", "golden", "verl_loss_reference.json")
with open(path, "w") as f:
    json.dump(out, f, indent=1)
    f.write("\n")
print("wrote", os.path.normpath(path))
