#!/bin/sh
# decode.sh: lavinia bench on a 7B-shaped layer stack scaled down to fit any machine: decode
# and prompt speed per weight dtype, each as a share of the memory bandwidth measured in the
# same run. Usage: bench/decode.sh [BUILD_DIR] (default build/plain).
set -eu
b="${1:-build/plain}/src/lavinia"
for dt in f32 f16 bf16; do
    echo "== $dt"
    "$b" bench --random 1024,2816,8,16,16,32000 --dtype "$dt" --prompt 128 --gen 64 --bw-size 2048
done
