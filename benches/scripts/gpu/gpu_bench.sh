#!/bin/bash
# The native engine on a GPU through burn's wgpu backend (Vulkan), side by side with a
# PyTorch (CUDA, float32) training step on the same shapes and rows. Random weights of each
# model's shape (`BurnLm::random`; off the CPU's quantized host kernels every device computes
# in f32, so speed does not depend on the values), so nothing large has to travel to the GPU
# machine.
#
#   benches/scripts/gpu/gpu_bench.sh prepare   # here: release-build the two benches with
#                                              # `wgpu`, strip + xz them, write model configs
#                                              # (byte-level tokenizer) and batch files into DIR
#   benches/scripts/gpu/gpu_bench.sh all       # on the GPU machine: engine benches
#   benches/scripts/gpu/gpu_bench.sh torch     # on the GPU machine: the PyTorch peer
#
# DIR is $MF_GPU_DIR (default .dev, which must be git-ignored); results go to stdout and to
# $OUT/gpu-PART.log when OUT is set. On the GPU machine, Vulkan loader packages unpacked from
# DIR/../.gl/*.deb (if any) are installed first.
set -u
D=${MF_GPU_DIR:-.dev}
part=${1:?usage: gpu_bench.sh prepare|all|torch}
if [ "$part" = prepare ]; then
  set -e
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/memfactory-target}
  cargo build --release -p memfactory-rl --features memfactory-lm-burn/wgpu --example train_bench \
    -p memfactory-lm-burn --example bench_json
  mkdir -p $D/bin
  for b in bench_json train_bench; do
    strip -o /tmp/$b $CARGO_TARGET_DIR/release/examples/$b && xz -T2 -3 -c /tmp/$b > $D/bin/$b.xz
  done
  cp benches/scripts/gpu/train_step_torch.py $D/
  python3 benches/scripts/gpu/make_inputs.py $D
  exit 0
fi
[ -d .gl ] && { for f in .gl/*.deb; do dpkg -x $f / >/dev/null 2>&1; done; ldconfig; }
if ! ls /usr/share/vulkan/icd.d/*.json /etc/vulkan/icd.d/*.json >/dev/null 2>&1; then
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi
B=/tmp/mfbin; mkdir -p $B
for f in $D/bin/*.xz; do n=$(basename $f .xz); [ -x $B/$n ] || { python3 -c "import lzma,sys; open(sys.argv[2],'wb').write(lzma.open(sys.argv[1]).read())" $f $B/$n && chmod +x $B/$n; }; done
log=${OUT:-/tmp}/gpu-$part.log
inf() { echo "== bench_json $1 batch $2"; MF_BENCH_DEVICE=wgpu MF_BENCH_RANDOM=$D/models/$1 timeout $3 $B/bench_json none 512 128 $2 2>&1 | grep engine; }
trn() { echo "== train_bench $1 $2 $3"; timeout $4 $B/train_bench --device wgpu --random $D/models/$1 --mode $2 --batch-file $D/batch_$3.json --steps 4 2>&1 | grep -v '^\[memfactory' | grep '"metric":"train_[a-z]*_\(tok_s\|step_s\|fwd_s\|bwd_s\|opt_s\)\|setup' | sed 's/"times_s":\[[^]]*\],//; s/"losses":\[[^]]*\],//' | cut -c1-300; }
rol() { echo "== rollout $1 group $2"; timeout $3 $B/train_bench --device wgpu --random $D/models/$1 --mode rollout --group $2 --new-tokens 64 --reps 1 2>&1 | grep '_tok_s\|_s"' | sed 's/"prompt_ids":\[[^]]*\],//' | cut -c1-300; }
tor() { echo "== torch $1 $2 $3"; timeout $4 python3 $D/train_step_torch.py $D/models/$1 $D/batch_$3.json $2 2>&1 | grep '"engine"\|Error' | cut -c1-300; }
{
date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc
case $part in
torch)
  tor smollm2-135m lora smol_4x288 60
  tor smollm2-135m full smol_4x288 60
  tor smollm2-135m full smol_16x576 60
  ;;
all)
  inf smollm2-135m 8 70
  trn smollm2-135m lora smol_4x288 60
  trn smollm2-135m full smol_4x288 60
  inf qwen3-1.7b 8 90
  trn qwen3-1.7b lora qwen_16x576 90
  trn qwen3-1.7b full qwen_16x576 90
  rol smollm2-135m 16 50
  inf qwen2.5-0.5b 8 60
  trn smollm2-135m full smol_16x576 50
  rol qwen3-1.7b 16 60
  ;;
esac
date -u
} 2>&1 | tee $log
