#!/bin/sh
# decode.sh: lavinia bench on a random 110M-parameter LLaMA (dim 768, hidden 2048, 12 layers,
# 12 heads, vocab 32000), every weight dtype: a 256-token prompt (after one untimed warm-up)
# as a share of OpenBLAS's sgemm measured in the same run, and 64 decoded tokens as a share of
# the memory-read bandwidth measured between the decode steps of the same run.
# Usage: bench/decode.sh [BUILD_DIR [BENCH_ARGS...]] (default build/plain); BENCH_ARGS go to
# every run, e.g. --profile.
set -eu
b="${1:-build/plain}/src/lavinia"
[ $# -gt 0 ] && shift
for dt in f32 f16 bf16 q8_0 q4_0 nf4; do
    echo "== $dt"
    "$b" bench --random 768,2048,12,12,12,32000 --dtype "$dt" --prompt 256 --gen 64 "$@"
done
