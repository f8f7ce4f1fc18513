#!/usr/bin/env python3
"""Golden BLEU-1 values for memfactory-reward-bleu1, computed with NLTK.

BLEU-1 as in the LoCoMo evaluations of the Mem0 / Memory-R1 line:
``sentence_bleu([gold_tokens], pred_tokens, weights=(1, 0, 0, 0),
smoothing_function=SmoothingFunction().method1)``, maximised over the gold answers.
Tokens are those of memfactory_core::text::normalize_answer (SQuAD/HotpotQA
normalization: lowercase, ASCII punctuation removed, articles a/an/the removed) split on
whitespace; ``normalize`` below mirrors the Rust function.

Usage (writes golden.json next to this script):

    NLTKVENV="${NLTKVENV:-$HOME/.cache/memfactory-nltkvenv}"   # any folder outside the clone
    python3 -m venv "$NLTKVENV" && "$NLTKVENV"/bin/pip install nltk
    "$NLTKVENV"/bin/python memfactory-rl/rewards/bleu1/golden/make_golden.py

No NLTK data download is needed (no word_tokenize).
"""

import json
import math
import os
import string
import warnings

import nltk
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

# (prediction, gold answers, what the case checks)
CASES = [
    ("Paris", ["Paris"], "identical"),
    ("", ["Paris"], "empty prediction"),
    ("   \n\t", ["Paris"], "blank prediction"),
    ("The!", ["Paris"], "prediction of an article and punctuation only"),
    ("Paris", [""], "empty gold"),
    ("", [""], "both empty"),
    ("PARIS", ["paris"], "case"),
    ("Paris.", ["paris"], "trailing punctuation"),
    ("Eiffel", ["Eiffel Tower"], "shorter: brevity penalty"),
    ("the Eiffel Tower in Paris France", ["Eiffel Tower"], "longer: precision only"),
    ("2022", ["2022"], "number"),
    ("in 2022", ["2022"], "number, longer"),
    ("7 May 2023", ["7 May, 2023"], "date with comma in gold"),
    ("May 2023", ["7 May 2023"], "date, shorter"),
    ("the the the", ["the cat"], "repeated articles only"),
    ("cat cat cat", ["cat"], "repeated word: clipping"),
    ("cat cat", ["cat cat dog"], "repeated word, shorter"),
    ("cat dog cat dog", ["cat dog cat"], "repeated words, clipped per word"),
    ("dog", ["cat"], "no overlap"),
    ("Caroline went to the LGBTQ support group", ["7 May 2023"], "no overlap, long"),
    ("tower eiffel", ["Eiffel Tower"], "word order ignored"),
    ("self-care", ["self care"], "hyphen joins words"),
    ("Melanie's", ["melanies"], "apostrophe"),
    ("Café au lait", ["cafe au lait"], "non-ASCII letter"),
    ("Paris", ["London", "Paris, France"], "several golds, best is partial"),
    ("London", ["Paris", "london"], "several golds, one exact"),
    (
        "Psychology and counseling certification programs",
        ["Psychology, counseling certification"],
        "longer with partial overlap",
    ),
    ("red blue", ["blue green"], "same length, half overlap"),
    ("1,000", ["1000"], "thousands separator"),
    ("3.5", ["35"], "decimal point removed by normalization"),
    ("sunset", ["a sunset painting"], "shorter after article removal"),
    ("yes", ["no"], "yes/no mismatch"),
    ("yes", ["Yes."], "yes/no match"),
    ("  Paris \n France ", ["Paris France"], "whitespace"),
    (
        "Melanie",
        ["Melanie painted a sunset over the lake last summer"],
        "very short against long gold",
    ),
]


def normalize(s: str) -> str:
    """memfactory_core::text::normalize_answer."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in string.punctuation)
    return " ".join(w for w in s.split() if w not in ("a", "an", "the"))


def bleu1(pred: str, gold: str) -> float:
    p = normalize(pred).split()
    g = normalize(gold).split()
    smooth = SmoothingFunction().method1
    score = float(sentence_bleu([g], p, weights=(1, 0, 0, 0), smoothing_function=smooth))
    # The smoothing never matters for BLEU-1: check against no smoothing (method0) and
    # against the closed form BP * m / c.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = float(sentence_bleu([g], p, weights=(1, 0, 0, 0)))
    assert abs(score - plain) < 1e-15, (pred, gold, score, plain)
    if p:
        counts = {}
        for t in g:
            counts[t] = counts.get(t, 0) + 1
        m = 0
        for t in p:
            if counts.get(t, 0) > 0:
                counts[t] -= 1
                m += 1
        bp = 1.0 if len(p) > len(g) else math.exp(1 - len(g) / len(p))
        closed = bp * m / len(p)
    else:
        closed = 0.0
    assert abs(score - closed) < 1e-12, (pred, gold, score, closed)
    return score


def main() -> None:
    cases = []
    for pred, golds, note in CASES:
        per_gold = [bleu1(pred, g) for g in golds]
        cases.append(
            {
                "prediction": pred,
                "golds": golds,
                "per_gold": per_gold,
                "bleu1": max(per_gold),
                "note": note,
            }
        )
    out = {
        "generator": "make_golden.py",
        "nltk": nltk.__version__,
        "definition": "max over golds of sentence_bleu([normalize(gold).split()], "
        "normalize(pred).split(), weights=(1,0,0,0), "
        "smoothing_function=SmoothingFunction().method1)",
        "cases": cases,
    }
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {len(cases)} cases to {path}")


if __name__ == "__main__":
    main()
