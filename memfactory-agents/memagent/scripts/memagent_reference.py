#!/usr/bin/env python3
"""Reference outputs for memfactory-agent-memagent, taken from MemAgent's own code.

MemAgent: BytedTsinghua-SIA/MemAgent@76b7a658988e4ea53d7388a62de6c0ce79084146.

What it does (standard library only, no torch; nothing in CI runs it):

1. `templates`: extracts `TEMPLATE_FINAL` from `taskutils/memory_eval/utils/recurrent.py`
   (the final prompt of MemAgent's published RULER-HotpotQA eval, `method="recurrent"`,
   `run.py:272-288`) and `TEMPLATE_FINAL_BOXED` from `recurrent/impls/memory.py` (training),
   renders each with `str.format(prompt="{prompt}", memory="{memory}")` (what MemAgent's
   eval does, keeping the two placeholders) and checks that `templates/final_answer_is.txt`
   and `templates/final.txt` hold exactly those bytes. Exits 1 on a difference.

2. `golden`: rewrites `tests/golden/centre_truncation.json`: for a set of
   (context tokens n, max_chunks, chunk_tokens) cases, the chunks MemAgent's training data
   path reads, as lists of [start, end) ranges of original token positions. The rule is
   `verl/utils/torch_functional.py:postprocess_data(truncation="center")` with
   `max_length = max_chunks * chunk_size` (`recurrent/impls/memory.py:61-95`): keep
   `ids[:max_length // 2] + ids[-(max_length // 2):]`, then chunk by `chunk_size`
   (`memory.py:188,215`: a chunk is read while `context_length > step * chunk_size`).
   Cases with max_length == 1 are left out: there `max_length // 2 == 0` and Python's
   `ids[-0:]` keeps the whole context (the Rust side keeps the first token instead).

Run from the crate directory (memfactory-agents/memagent), with a MemAgent checkout:

    git clone https://github.com/BytedTsinghua-SIA/MemAgent "$MEMAGENT"   # any directory outside the clone
    git -C "$MEMAGENT" checkout 76b7a658988e4ea53d7388a62de6c0ce79084146
    python3 scripts/memagent_reference.py templates "$MEMAGENT"
    python3 scripts/memagent_reference.py golden
"""

import ast
import json
import pathlib
import sys

CRATE = pathlib.Path(__file__).resolve().parent.parent


def module_string(path, name):
    """The value of the module-level string constant `name` in the Python file `path`."""
    tree = ast.parse(pathlib.Path(path).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            return ast.literal_eval(node.value)
    raise SystemExit(f"{name} not found in {path}")


def check_templates(memagent):
    root = pathlib.Path(memagent)
    pairs = [
        (root / "taskutils/memory_eval/utils/recurrent.py", "TEMPLATE_FINAL", "final_answer_is.txt"),
        (root / "recurrent/impls/memory.py", "TEMPLATE_FINAL_BOXED", "final.txt"),
    ]
    ok = True
    for src, name, ours in pairs:
        want = module_string(src, name).format(prompt="{prompt}", memory="{memory}").encode("utf-8")
        have = (CRATE / "templates" / ours).read_bytes()
        same = want == have
        ok &= same
        print(f"{ours}: {'byte-identical to' if same else 'DIFFERS from'} {name} ({len(want)} bytes)")
    sys.exit(0 if ok else 1)


def centre_chunks(n, max_chunks, chunk_size):
    """MemAgent's training read of an n-token context, as original token positions."""
    ids = list(range(n))
    max_length = max_chunks * chunk_size
    if n > max_length:  # postprocess_data, truncation == 'center'
        max_half = max_length // 2
        ids = ids[:max_half] + ids[-max_half:]
    context_length = len(ids)
    chunks, step = [], 0
    while context_length > step * chunk_size:
        chunks.append(ids[chunk_size * step : chunk_size * (step + 1)])
        step += 1
    return chunks


def ranges(positions):
    """Consecutive runs of positions as [start, end) pairs."""
    out = []
    for p in positions:
        if out and out[-1][1] == p:
            out[-1][1] = p + 1
        else:
            out.append([p, p + 1])
    return out


CASES = [
    # (n, max_chunks, chunk_tokens)
    (100, 2, 10),   # even max_length, splice at a chunk boundary
    (101, 3, 7),    # odd max_length 21: keeps 2 * 10 = 20 tokens, last chunk short
    (57, 3, 5),     # odd max_length 15, splice inside a chunk
    (30, 3, 10),    # exactly max_length: untouched
    (29, 3, 10),    # shorter: untouched, last chunk short
    (1000, 1, 9),   # one chunk of 8 tokens (4 + 4)
    (12, 1, 2),     # smallest even max_length
    (999, 4, 25),
]


def write_golden():
    cases = []
    for n, max_chunks, chunk in CASES:
        cases.append({
            "n": n,
            "max_chunks": max_chunks,
            "chunk_tokens": chunk,
            "chunks": [ranges(c) for c in centre_chunks(n, max_chunks, chunk)],
        })
    out = CRATE / "tests" / "golden" / "centre_truncation.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    head = {
        "source": "BytedTsinghua-SIA/MemAgent@76b7a658988e4ea53d7388a62de6c0ce79084146 "
                  "recurrent/impls/memory.py:61-95,188,215; verl/utils/torch_functional.py:postprocess_data",
        "made_by": "scripts/memagent_reference.py golden",
    }
    lines = [f" {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()]
    lines.append(' "cases": [')
    lines.append(",\n".join("  " + json.dumps(c) for c in cases))
    lines.append(" ]")
    out.write_text("{\n" + "\n".join(lines) + "\n}\n", encoding="utf-8")
    print(f"wrote {out} ({len(cases)} cases)")


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "templates":
        check_templates(sys.argv[2])
    elif len(sys.argv) == 2 and sys.argv[1] == "golden":
        write_golden()
    else:
        raise SystemExit(__doc__)
