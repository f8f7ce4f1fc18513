#!/usr/bin/env python3
"""Golden values for memfactory-reward-sub-em-memagent and the answer extraction of
memfactory_core::reward (strip_think, extract = "answer-is").

Reference: BytedTsinghua-SIA/MemAgent@76b7a658988e4ea53d7388a62de6c0ce79084146,
taskutils/memory_eval/utils/__init__.py (extract_solution, extract_answer,
normalize_answer, sub_exact_match_score; copied below unchanged except that
extract_solution reads FORCE_THINK as unset) and taskutils/memory_eval/ruler_hqa.py:87-94
(the per-sample pipeline: response.strip(), extract_solution, extract_answer on the
stripped text or, when that is empty, on the whole response; gold = answers[0]; score 0
when the extracted answer is empty or None).

Usage (standard library only; writes golden.json next to this script):

    python3 memfactory-rl/rewards/sub-em-memagent/golden/make_golden.py
"""

import json
import os
import re
import string


# --- MemAgent, taskutils/memory_eval/utils/__init__.py -------------------------------
def extract_solution(solution_str):
    if "</think>" not in solution_str:
        # `if not os.environ.get("FORCE_THINK")`: the default, FORCE_THINK unset.
        return solution_str, solution_str
    final_answer = solution_str.split("</think>")[-1].strip()
    return final_answer, solution_str


def extract_answer(response):
    response = response.replace('*', '')

    if "the answer is" in response:
        ans = response.rsplit("the answer is", 1)[-1].strip().replace("<｜Assistant｜>", '').replace("<｜end▁of▁sentence｜>", '').strip().strip('.').strip()
    else:
        ans = None

    return ans


def normalize_answer(s):

    def remove_articles(text):
        return re.sub(r'\b(a|an|the)\b', ' ', text)

    def white_space_fix(text):
        return ' '.join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return ''.join(ch for ch in text if ch not in exclude)

    def lower(text):
        return text.lower()

    return white_space_fix(remove_articles(remove_punc(lower(s))))


def sub_exact_match_score(prediction, ground_truth):
    ground_truth = normalize_answer(ground_truth)
    prediction = normalize_answer(prediction)
    return (ground_truth in prediction) or (prediction in ground_truth)


# --- MemAgent, taskutils/memory_eval/ruler_hqa.py:87-94 (one item) ----------------------
def memagent_item(output, answers):
    response = output.strip()
    pred, _ = extract_solution(response)
    pred = extract_answer(pred) if pred else extract_answer(response)
    answer = answers[0]
    # calc_metrics(...)['sub_em'] of one item is float(sub_exact_match_score) rounded.
    score = float(sub_exact_match_score(pred, answer)) if pred else 0
    return pred, float(score)


# (response as the model wrote it, gold answers, what the case checks)
PIPELINE = [
    ("Therefore, the answer is Paris.", ["Paris, France"], "pred in gold"),
    ("Therefore, the answer is USA", ["US"], "gold in pred, characters"),
    ("Therefore, the answer is Taylor Swift's album", ["Taylor Swift"], "gold in longer pred"),
    ("Therefore, the answer is London", ["Paris", "London"], "first gold only"),
    ("Therefore, the answer is Eiffelish Towers", ["Eiffel Tower"], "substring inside a word"),
    ("The answer is Paris", ["Paris"], "capitalised phrase not found"),
    ("no phrase at all: Paris", ["Paris"], "no phrase: no answer"),
    ("Therefore, the answer is .", ["Paris"], "empty after extraction"),
    ("Therefore, the answer is the", ["Paris"], "article only: normalizes to empty"),
    ("Therefore, the answer is ?!", ["Paris"], "punctuation only"),
    ("Therefore, the answer is **Paris**.", ["Paris"], "markdown bold"),
    ("the answer is A. Wait, the answer is B..", ["B"], "last occurrence, dots"),
    ("Therefore, the answer is 42<｜end▁of▁sentence｜>", ["42"], "DeepSeek end marker"),
    ("<think>the answer is Rome</think>\nTherefore, the answer is Paris", ["Paris"], "think stripped"),
    ("<think>the answer is Rome</think>\nTherefore, the answer is Paris", ["Rome"], "think content not scored"),
    ("<think>the answer is Paris</think>", ["Paris"], "nothing after think: whole response"),
    ("<think>still thinking, the answer is Paris", ["Paris"], "unclosed think kept"),
    ("a</think>b</think>Therefore, the answer is C", ["C"], "last </think>"),
    ("  \n Therefore, the answer is  Café au lait \n", ["cafe au lait"], "accents differ"),
    ("Therefore, the answer is Café au lait", ["café"], "unicode gold in pred"),
    ("Therefore, the answer is Ünïcode Straße", ["ÜNÏCODE STRASSE"], "unicode case"),
    ("Therefore, the answer is 1,000", ["1000"], "thousands separator"),
    ("Therefore, the answer is a€b", ["€b"], "article before a non-word char"),
    ("Therefore, the answer is the 1990s", ["1990s"], "leading article"),
    ("Therefore, the answer is yes", ["no"], "yes/no"),
    ("Therefore, the answer is Paris", [""], "empty gold"),
    ("", ["Paris"], "empty response"),
    ("Therefore, the answer is\tParis\x1f", ["Paris"], "tab and unit separator"),
]


def main() -> None:
    cases = []
    for response, answers, note in PIPELINE:
        pred, score = memagent_item(response, answers)
        cases.append(
            {
                "response": response,
                "golds": answers,
                "pred": pred,
                "norm_pred": normalize_answer(pred) if pred is not None else None,
                "norm_gold": normalize_answer(answers[0]),
                "sub_em": score,
                "note": note,
            }
        )
    out = {
        "generator": "make_golden.py",
        "source": "BytedTsinghua-SIA/MemAgent@76b7a658988e4ea53d7388a62de6c0ce79084146 "
        "taskutils/memory_eval/utils/__init__.py, ruler_hqa.py",
        "cases": cases,
    }
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {len(cases)} cases to {path}")


if __name__ == "__main__":
    main()
