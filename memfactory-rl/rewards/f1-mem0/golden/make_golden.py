#!/usr/bin/env python3
"""Golden values for memfactory-reward-f1-mem0.

Reference: mem0ai/mem0@240dc10a9708c209afa7760c33cfab75e536a6c8,
evaluation/metrics/utils.py (simple_tokenize and the F1 part of calculate_metrics, taken
from A-Mem; copied below), as evaluation/evals.py calls it on the raw prediction and gold.

Usage (standard library only; writes golden.json next to this script):

    python3 memfactory-rl/rewards/f1-mem0/golden/make_golden.py
"""

import json
import os


# --- mem0 evaluation/metrics/utils.py --------------------------------------------------
def simple_tokenize(text):
    """Simple tokenization function."""
    # Convert to string if not already
    text = str(text)
    return text.lower().replace('.', ' ').replace(',', ' ').replace('!', ' ').replace('?', ' ').split()


def calculate_f1(prediction: str, reference: str) -> float:
    """calculate_metrics(prediction, reference)['f1']."""
    # Handle empty or None values
    if not prediction or not reference:
        return 0.0

    # Convert to strings if they're not already
    prediction = str(prediction).strip()
    reference = str(reference).strip()

    # Calculate token-based F1 score
    pred_tokens = set(simple_tokenize(prediction))
    ref_tokens = set(simple_tokenize(reference))
    common_tokens = pred_tokens & ref_tokens

    if not pred_tokens or not ref_tokens:
        f1 = 0.0
    else:
        precision = len(common_tokens) / len(pred_tokens)
        recall = len(common_tokens) / len(ref_tokens)
        f1 = 2 * precision * recall / (precision + recall) if (precision + recall) > 0 else 0.0
    return f1


# (prediction, gold answers, what the case checks)
CASES = [
    ("The 7th of May, 2023", ["7 May 2023"], "review example: 0.50"),
    ("7 May 2023", ["7 May 2023"], "identical"),
    ("Paris", ["paris!"], "case and !"),
    ("cat cat cat", ["cat"], "token sets: repeats count once"),
    ("cat dog", ["cat cat dog dog"], "sets on both sides"),
    ("the cat", ["cat"], "articles stay"),
    ("self-care; yoga", ["self-care yoga"], "other punctuation stays attached"),
    ("Melanie's dog", ["melanie"], "apostrophe stays"),
    ("U.S.A.", ["u s a"], "periods split letters"),
    ("3.5", ["3 5"], "decimal point splits"),
    ("1,000", ["1 000"], "thousands comma splits"),
    ("what?!", ["what"], "? and !"),
    ("", ["Paris"], "empty prediction"),
    ("Paris", [""], "empty gold"),
    ("...", ["..."], "only separators: no tokens"),
    ("   ", ["Paris"], "blank prediction"),
    ("dog", ["cat"], "no overlap"),
    ("Café au lait", ["café"], "unicode"),
    ("ÜBER Straße", ["über strasse"], "unicode lowercase, no folding"),
    ("London", ["Paris", "london."], "several golds: max"),
    ("Caroline went to the LGBTQ support group on 7 May 2023",
     ["7 May 2023"], "long prediction"),
    ("a\tb\x1fc", ["a b c"], "Python whitespace includes U+001F"),
]


def main() -> None:
    cases = []
    for pred, golds, note in CASES:
        cases.append(
            {
                "prediction": pred,
                "golds": golds,
                "pred_tokens": simple_tokenize(pred),
                "per_gold": [calculate_f1(pred, g) for g in golds],
                "note": note,
            }
        )
    out = {
        "generator": "make_golden.py",
        "source": "mem0ai/mem0@240dc10a9708c209afa7760c33cfab75e536a6c8 "
        "evaluation/metrics/utils.py simple_tokenize, calculate_metrics (f1)",
        "cases": cases,
    }
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {len(cases)} cases to {path}")


if __name__ == "__main__":
    main()
