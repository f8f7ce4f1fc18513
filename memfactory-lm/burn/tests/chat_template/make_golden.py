#!/usr/bin/env python3
"""Golden renders of Qwen3's chat template with and without `enable_thinking`, produced by
the peer implementation: Hugging Face transformers' `apply_chat_template` (jinja2).

Input:  Qwen-Qwen3-0.6B.jinja (next to this script; see README.md for its origin) and the
        tokenizer of ../golden/tiny-qwen3 (only its special tokens matter; the template is
        passed explicitly with `chat_template=`).
Output: qwen3_golden.json next to this script: for each conversation, each
        `add_generation_prompt` and each template-argument set (none, enable_thinking=true,
        enable_thinking=false), the rendered string.

How to run (from the repository root; a venv OUTSIDE the repository, never in CI):

    python3 -m venv $VENV && $VENV/bin/pip install transformers jinja2
    $VENV/bin/python memfactory-lm/burn/tests/chat_template/make_golden.py

Versions used for the committed file: transformers 5.25.0, jinja2 3.1.6 (no PyTorch needed).
"""

import json
import os

import jinja2
import transformers
from transformers import AutoTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))

CONVERSATIONS = {
    "user": [{"role": "user", "content": "What is the capital of France?"}],
    "system_user": [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Name a prime number."},
    ],
    # The template drops the reasoning of earlier assistant turns (before the last user
    # query) and keeps only the text after </think>.
    "multi_turn_with_think": [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "<think>\nadd them\n</think>\n\n4"},
        {"role": "user", "content": "And 3+3?"},
    ],
    # A last assistant turn after the last query keeps its <think> block.
    "ends_with_assistant": [
        {"role": "user", "content": "Say hi."},
        {"role": "assistant", "content": "<think>\nbe nice\n</think>\n\nHi!"},
    ],
}

KWARGS = {
    "none": {},
    "enable_thinking_true": {"enable_thinking": True},
    "enable_thinking_false": {"enable_thinking": False},
}


def main():
    with open(os.path.join(HERE, "Qwen-Qwen3-0.6B.jinja")) as f:
        template = f.read()
    tok = AutoTokenizer.from_pretrained(os.path.join(HERE, "..", "golden", "tiny-qwen3"))
    cases = []
    for conv_name, conv in CONVERSATIONS.items():
        for agp in (True, False):
            for kw_name, kw in KWARGS.items():
                text = tok.apply_chat_template(
                    conv,
                    chat_template=template,
                    tokenize=False,
                    add_generation_prompt=agp,
                    **kw,
                )
                cases.append(
                    {
                        "conversation": conv_name,
                        "messages": conv,
                        "add_generation_prompt": agp,
                        "kwargs": kw,
                        "rendered": text,
                    }
                )
    out = {
        "generator": "make_golden.py (transformers %s, jinja2 %s)"
        % (transformers.__version__, jinja2.__version__),
        "template": "Qwen-Qwen3-0.6B.jinja",
        "cases": cases,
    }
    with open(os.path.join(HERE, "qwen3_golden.json"), "w") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
