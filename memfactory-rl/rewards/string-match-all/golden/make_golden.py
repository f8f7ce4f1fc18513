#!/usr/bin/env python3
"""Golden values for memfactory-reward-string-match-all, -string-match-part and
-ruler-string-match.

Reference: NVIDIA/RULER@c3f5e3b, scripts/eval/synthetic/constants.py (string_match_all,
string_match_part; copied below, applied to one sample at a time and divided by 100
without the final rounding, i.e. the per-sample term of RULER's mean) and
scripts/eval/evaluate.py:50-58 (postprocess_pred, copied; task_config unused).

Usage (standard library only; writes golden.json next to this script):

    python3 memfactory-rl/rewards/string-match-all/golden/make_golden.py
"""

import json
import os
import re


# --- RULER scripts/eval/synthetic/constants.py -----------------------------------------
def string_match_part(preds, refs):
    score = sum([max([1.0 if r.lower() in pred.lower() else 0.0 for r in ref]) for pred, ref in zip(preds, refs)]) / len(preds) * 100
    return round(score, 2)


def string_match_all(preds, refs):
    score = sum([sum([1.0 if r.lower() in pred.lower() else 0.0 for r in ref]) / len(ref) for pred, ref in zip(preds, refs)]) / len(preds) * 100
    return round(score, 2)


# The per-sample terms of the two (no rounding), which the Rust crates compute.
def match_all_one(pred, ref):
    return sum([1.0 if r.lower() in pred.lower() else 0.0 for r in ref]) / len(ref)


def match_part_one(pred, ref):
    return max([1.0 if r.lower() in pred.lower() else 0.0 for r in ref])


# --- RULER scripts/eval/evaluate.py ------------------------------------------------------
def postprocess_pred(predict_str: str, task_config: dict = None):

    predict_str = predict_str.strip()

    # Remove all non-printable characters
    np_pattern = re.compile(r'[\x00-\x1f]')
    predict_str = np_pattern.sub('\n', predict_str).strip()

    return predict_str


# (raw prediction, references, what the case checks)
CASES = [
    ("The numbers are 1234567 and 7654321.", ["1234567", "7654321"], "all found"),
    ("only 1234567", ["1234567", "7654321"], "half found"),
    ("ABCDE, FGHIJ", ["abcde", "fghij", "klmno"], "case-insensitive, two of three"),
    ("VAR_A = VAR_B = VAR_C", ["VAR_A", "VAR_B", "VAR_C", "VAR_D", "VAR_E"], "vt, three of five"),
    ("nothing", ["1234567"], "none found"),
    ("x12345678", ["1234567"], "substring inside a number"),
    ("", ["1234567"], "empty prediction"),
    ("anything", [""], "empty reference is always found"),
    ("", [""], "both empty"),
    ("  \n\t 42 \x00", ["42"], "control characters and whitespace"),
    ("a\tb", ["a\tb"], "tab in a reference is not found after postprocess"),
    ("a\tb", ["a\nb"], "tab becomes newline"),
    ("Straße und ÜBER", ["strasse", "über"], "unicode lowercase, no case folding"),
    ("İstanbul", ["i̇stanbul"], "dotted capital I lowercases to two code points"),
    ("ΣΊΣΥΦΟΣ", ["σίσυφος"], "final sigma"),
    ("apple banana apple", ["apple", "apple"], "repeated reference"),
    ("The answer is Paris.", ["London", "Paris"], "part: any reference"),
    ("Berlin", ["London", "Paris"], "part: none"),
    ("1. foo 2. bar 3. baz", ["foo", "bar", "baz", "qux"], "cwe-like list"),
    ("\x1f\x1c", ["x"], "only separators"),
]


def main() -> None:
    cases = []
    for pred, refs, note in CASES:
        post = postprocess_pred(pred)
        # The per-sample terms agree with RULER's corpus functions on a set of one sample.
        assert round(match_all_one(post, refs) * 100, 2) == string_match_all([post], [refs])
        assert round(match_part_one(post, refs) * 100, 2) == string_match_part([post], [refs])
        cases.append(
            {
                "prediction": pred,
                "refs": refs,
                "postprocessed": post,
                "string_match_all": match_all_one(post, refs),
                "string_match_part": match_part_one(post, refs),
                "note": note,
            }
        )
    out = {
        "generator": "make_golden.py",
        "source": "NVIDIA/RULER@c3f5e3b scripts/eval/synthetic/constants.py, "
        "scripts/eval/evaluate.py postprocess_pred",
        "cases": cases,
    }
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {len(cases)} cases to {path}")


if __name__ == "__main__":
    main()
