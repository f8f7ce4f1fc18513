"""Golden values for memfactory-data-ruler-hqa's `shuffle = "memagent"` / `padding = "memagent"`.

Writes memagent_random.json beside this script: CPython's `random` outputs that MemAgent's
data scripts depend on (BytedTsinghua-SIA/MemAgent@76b7a658988e4ea53d7388a62de6c0ce79084146
taskutils/memory_data/processing.py lines 38-74 and 116), and — when the HotpotQA dev file is
given — MemAgent's construction of a few RULER-HotpotQA instances from it.

Run (plain CPython 3, no packages needed), from the repository root:

    python3 memfactory-data/ruler-hqa/tests/golden/memagent_random.py \
        ../shared/data/hotpotqa/hotpot_dev_distractor_0-1999.json

The instance part re-states processing.py's `read_hotpotqa` and `generate_input_output`
(without the tokenizer and pandas imports it does not use for this), with one choice made
explicit: MemAgent runs `generate_input_output` in a fork-based process pool after
`random.seed(42)`, so each worker starts from the seed-42 state and the state a question sees
depends on how many questions its worker handled before. Here every question starts from a
fresh `random.seed(42)` state (a worker's first question) — the Rust side does the same.
"""

import hashlib
import json
import random
import sys
from pathlib import Path


def read_hotpotqa(file):
    # processing.py:38-53
    with open(file) as f:
        data = json.load(f)
    total_docs = [f"{t}\n{''.join(p)}" for d in data for t, p in d['context']]
    total_docs = sorted(list(set(total_docs)))
    total_docs_dict = {c: idx for idx, c in enumerate(total_docs)}
    total_qas = []
    for d in data:
        total_qas.append({
            'id': d['_id'],
            'query': d['question'],
            'outputs': [d['answer']],
            'context': [total_docs_dict[f"{t}\n{''.join(p)}"] for t, p in d['context']],
        })
    return total_qas, total_docs


def generate_input_output(QAS, DOCS, index, num_docs):
    # processing.py:55-74 (the hotpotqa path: no `more_context`)
    curr_docs = QAS[index]['context']
    curr_more = QAS[index].get('more_context', [])
    if num_docs < len(DOCS):
        if (num_docs - len(curr_docs)) > len(curr_more):
            addition_docs = [i for i, d in enumerate(DOCS) if i not in curr_docs + curr_more]
            all_docs = curr_docs + curr_more + random.sample(
                addition_docs, max(0, num_docs - len(curr_docs) - len(curr_more)))
        else:
            all_docs = curr_docs + random.sample(curr_more, num_docs - len(curr_docs))
        all_docs = [DOCS[idx] for idx in all_docs]
    else:
        all_docs = DOCS
    own = set(all_docs[:len(curr_docs)]) if num_docs < len(DOCS) else set()
    random.Random(4).shuffle(all_docs)
    own_positions = [i + 1 for i, d in enumerate(all_docs) if d in own]
    DOCUMENT_PROMPT = "Document {i}:\n{document}"
    context = '\n\n'.join([DOCUMENT_PROMPT.format(i=i + 1, document=d) for i, d in enumerate(all_docs)])
    return context, own_positions


def main():
    out = {"python": sys.version.split()[0]}
    out["getrandbits32"] = {
        str(s): [r.getrandbits(32) for r in [random.Random(s)] for _ in range(700)]
        for s in [0, 4, 42, 2**40 + 3]
    }
    out["shuffle_seed4"] = {}
    for n in [10, 50, 100, 200, 400]:
        x = list(range(n))
        random.Random(4).shuffle(x)
        out["shuffle_seed4"][str(n)] = x
    out["sample_seed42"] = []
    for n, k in [(15, 15), (30, 10), (100, 60), (1000, 5), (20000, 40), (20000, 190), (66635, 190)]:
        random.seed(42)
        out["sample_seed42"].append({"n": n, "k": k, "indices": random.sample(range(n), k)})
    if len(sys.argv) > 1:
        qas, docs = read_hotpotqa(sys.argv[1])
        out["pool_size"] = len(docs)
        inst = []
        for index in [0, 1, 2, 199, 1999]:
            for num_docs in [50, 200]:
                random.seed(42)
                ctx, own_positions = generate_input_output(qas, docs, index, num_docs)
                inst.append({
                    "index": index, "id": qas[index]['id'], "docs": num_docs,
                    "context_sha256": hashlib.sha256(ctx.encode("utf-8")).hexdigest(),
                    "context_len": len(ctx.encode("utf-8")),
                    "own_positions": own_positions,
                })
        out["instances_fresh_seed42"] = inst
    path = Path(__file__).with_name("memagent_random.json")
    path.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
