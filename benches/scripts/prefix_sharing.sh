#!/usr/bin/env bash
# Prefill of a group of G identical P-token prompts with and without shared prompt prefixes
# (the burn engine's `prefix_sharing`), side by side: the two modes run as separate processes,
# alternated (on, off, on, off, ...), PAIRS pairs; each process prints one JSON line with the
# median of its timed `generate` calls and its peak RSS during them (see
# memfactory-lm/burn/examples/prefix_prefill.rs). Then the medians over the pairs.
#
# Usage (from the repository root):
#   benches/scripts/prefix_sharing.sh MODEL.gguf [P=1024] [G=8] [PAIRS=5] [REPS=3]
# e.g. with SmolLM2-135M-Instruct Q4_1:
#   benches/scripts/prefix_sharing.sh models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf
# Needs cargo and python3 (the summary only; the raw JSON lines are kept in the log).
set -euo pipefail
model=${1:?usage: prefix_sharing.sh MODEL.gguf [P] [G] [PAIRS] [REPS]}
p=${2:-1024}
g=${3:-8}
pairs=${4:-5}
reps=${5:-3}
cargo build --release -q -p memfactory-lm-burn --example prefix_prefill
target_dir=${CARGO_TARGET_DIR:-target}
bin="$target_dir/release/examples/prefix_prefill"
log=$(mktemp -t prefix_sharing.XXXXXX)
for _ in $(seq "$pairs"); do
  for mode in on off; do
    "$bin" "$model" "$mode" "$p" "$g" "$reps" | tee -a "$log"
  done
done
python3 - "$log" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
for on in (True, False):
    r = [x for x in rows if x["sharing"] == on]
    print(f"sharing {'on ' if on else 'off'}: prefill median {statistics.median(x['prefill_s_median'] for x in r):.3f} s "
          f"(runs {min(x['prefill_s_median'] for x in r):.3f}-{max(x['prefill_s_median'] for x in r):.3f}), "
          f"peak RSS during generation median {statistics.median(x['peak_rss_mib'] for x in r):.0f} MiB, "
          f"RSS after loading {statistics.median(x['rss_loaded_mib'] for x in r):.0f} MiB")
on = [x["prefill_s_median"] for x in rows if x["sharing"]]
off = [x["prefill_s_median"] for x in rows if not x["sharing"]]
print(f"pairwise speed-up off/on median {statistics.median(b / a for a, b in zip(on, off)):.2f}x over {len(on)} pairs")
EOF
echo "raw lines: $log"
