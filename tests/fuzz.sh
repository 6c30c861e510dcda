#!/bin/sh
# fuzz.sh: replays every fuzz target over its seed corpus (tests/fuzz/NAME/), so a parser
# change that crashes on a known input fails make check. Skipped when configure found no
# libFuzzer compiler. Long runs: make fuzz (FUZZ_SECONDS per target).
set -u
build="${LV_TOP_BUILDDIR:-.}"
src="${LV_TOP_SRCDIR:-.}"
ran=0 fail=0
for seeds in "$src"/tests/fuzz/*/; do
    name=$(basename "$seeds")
    bin="$build/tests/fuzz/fuzz-$name"
    if [ ! -x "$bin" ]; then
        continue
    fi
    ran=$((ran + 1))
    if "$bin" -runs=0 "$seeds" >"$build/tests/fuzz/replay-$name.log" 2>&1; then
        echo "OK     fuzz-$name replays $(ls "$seeds" | wc -l) seeds"
    else
        echo "NOT OK fuzz-$name crashed on a seed:"
        tail -30 "$build/tests/fuzz/replay-$name.log"
        fail=1
    fi
done
if [ $ran = 0 ]; then
    echo "skipped: no fuzz targets built (configure found no libFuzzer compiler)"
    exit 77
fi
exit $fail
