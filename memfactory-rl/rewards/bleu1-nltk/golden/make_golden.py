#!/usr/bin/env python3
"""Golden values for memfactory-reward-bleu1-nltk, computed with NLTK.

Reference: mem0ai/mem0@240dc10a9708c209afa7760c33cfab75e536a6c8,
evaluation/metrics/utils.py, calculate_bleu_scores (taken from A-Mem), as
evaluation/evals.py calls it on the raw prediction and gold strings:

    pred_tokens = nltk.word_tokenize(prediction.lower())
    ref_tokens = [nltk.word_tokenize(reference.lower())]
    sentence_bleu(ref_tokens, pred_tokens, weights=(1, 0, 0, 0),
                  smoothing_function=SmoothingFunction().method1)

nltk.word_tokenize first splits sentences with the Punkt model, whose data
(punkt / punkt_tab) cannot be downloaded where this was run; the answers here are single
sentences, for which word_tokenize(text) == NLTKWordTokenizer().tokenize(text)
(word_tokenize with preserve_line=True), and that is what this script calls. The Rust crate
does the same and documents the multi-sentence difference.

Usage (writes golden.json next to this script):

    NLTKVENV="${NLTKVENV:-$HOME/.cache/memfactory-nltkvenv}"   # any folder outside the clone
    python3 -m venv "$NLTKVENV" && "$NLTKVENV"/bin/pip install nltk
    "$NLTKVENV"/bin/python memfactory-rl/rewards/bleu1-nltk/golden/make_golden.py
"""

import json
import os

import nltk
from nltk.tokenize import NLTKWordTokenizer
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

TOKENIZER = NLTKWordTokenizer()


def word_tokenize(text):
    """nltk.word_tokenize(text, preserve_line=True)."""
    return TOKENIZER.tokenize(text)


def calculate_bleu1(prediction: str, reference: str) -> float:
    """mem0's calculate_bleu_scores(prediction, reference)['bleu1']."""
    pred_tokens = word_tokenize(prediction.lower())
    ref_tokens = [word_tokenize(reference.lower())]
    smooth = SmoothingFunction().method1
    try:
        score = sentence_bleu(ref_tokens, pred_tokens, weights=(1, 0, 0, 0), smoothing_function=smooth)
    except Exception as e:  # as mem0
        print(f"Error calculating BLEU score: {e}")
        score = 0.0
    return float(score)


# (prediction, gold answers, what the case checks)
CASES = [
    ("The 7th of May, 2023", ["7 May 2023"], "review example (F1 0.50 in mem0)"),
    ("7 May, 2023", ["7 May 2023"], "comma before a digit is split when followed by space"),
    ("1,000 people", ["1000 people"], "comma inside a number stays"),
    ("3.5 hours.", ["3.5 hours"], "decimal point stays, final period split"),
    ("She said \"hello\" to me.", ["hello"], "double quotes become `` and ''"),
    ("'Tis the season", ["the season"], "'tis contraction"),
    ("I can't go; I won't.", ["cannot go"], "n't, semicolon"),
    ("Melanie's kids", ["Melanie"], "possessive 's"),
    ("They're gonna paint, wanna come?", ["painting"], "'re, gonna, wanna, ?"),
    ("Caroline went to the LGBTQ support group", ["LGBTQ support group"], "plain words"),
    ("(psychology) and [counseling]", ["psychology, counseling"], "brackets"),
    ("Wait... what?!", ["what"], "ellipsis, ?!"),
    ("A--B", ["a b"], "double dash"),
    ("email me @ home & #1 for $5 at 50%", ["home"], "symbols ;@#$%&"),
    ("\u201cSmart quotes\u201d and \u2018single\u2019", ["smart quotes"], "unicode quotes"),
    ("\u00abGuillemets\u00bb", ["guillemets"], "chevrons"),
    ("range 1990\u20132000", ["1990 2000"], "en dash"),
    ("self-care is key", ["self care"], "hyphen stays inside a word"),
    ("U.S.A.", ["usa"], "abbreviation: only the final period"),
    ("Mr. Smith went home.", ["smith"], "inner period stays attached (one sentence)"),
    ("time: 10:30, place: park", ["park"], "colon before digit stays"),
    ("ends with colon:", ["colon"], "final colon"),
    ("ends with a comma,", ["comma"], "final comma"),
    ("he'd've done it", ["done"], "'d and 've"),
    ("I'M HERE, Y'ALL", ["i'm here"], "upper-case clitics lowered first"),
    ("rock 'n' roll", ["rock and roll"], "quote before n"),
    ("'quoted' word", ["quoted word"], "starting single quote"),
    ("the books' covers", ["covers"], "plural possessive"),
    ("*bold* answer", ["answer"], "asterisks"),
    ("Café au lait", ["cafe au lait"], "accent"),
    ("Ünïcode Straße", ["ünïcode strasse"], "unicode letters"),
    ("cannot gimme lemme gotta", ["can not"], "MacIntyre contractions"),
    ("", ["Paris"], "empty prediction"),
    ("Paris", [""], "empty gold"),
    ("", [""], "both empty"),
    ("   ", ["Paris"], "blank prediction"),
    ("paris paris paris", ["Paris"], "clipping"),
    ("Paris", ["Paris, France"], "brevity penalty"),
    ("London", ["Paris", "london."], "several golds"),
    ("yes", ["no"], "no overlap"),
    ("It was in Paris\n", ["Paris"], "trailing newline"),
    ("a\tb  c", ["a b c"], "tabs and spaces"),
    ("Good muffins cost $3.88 (roughly 3,36 euros)\nin New York.", ["new york"], "NLTK docstring"),
]


def main() -> None:
    cases = []
    for pred, golds, note in CASES:
        cases.append(
            {
                "prediction": pred,
                "golds": golds,
                "pred_tokens": word_tokenize(pred.lower()),
                "gold_tokens": [word_tokenize(g.lower()) for g in golds],
                "per_gold": [calculate_bleu1(pred, g) for g in golds],
                "note": note,
            }
        )
    out = {
        "generator": "make_golden.py",
        "nltk": nltk.__version__,
        "source": "mem0ai/mem0@240dc10a9708c209afa7760c33cfab75e536a6c8 "
        "evaluation/metrics/utils.py calculate_bleu_scores (bleu1)",
        "cases": cases,
    }
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {len(cases)} cases to {path}")


if __name__ == "__main__":
    main()
