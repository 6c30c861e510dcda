#!/bin/sh
# cli.sh: the lavinia program starts, answers --help and --version, refuses bad options and
# picks a device (the CPU here, with one line saying why when CUDA is not usable).
set -u
bin="${LV_TOP_BUILDDIR:-.}/src/lavinia"
fail=0
check() { # check NAME COMMAND...: the command must succeed
    name=$1; shift
    if "$@" >/dev/null 2>&1; then echo "OK     $name"; else echo "NOT OK $name"; fail=1; fi
}
refuse() { # refuse NAME COMMAND...: the command must fail
    name=$1; shift
    if "$@" >/dev/null 2>&1; then echo "NOT OK $name"; fail=1; else echo "OK     $name"; fi
}
check "--help" "$bin" --help
"$bin" --help | grep -q "Usage: lavinia" || { echo "NOT OK help text"; fail=1; }
"$bin" --version | grep -q "^lavinia [0-9]" || { echo "NOT OK version"; fail=1; }
refuse "unknown option" "$bin" --no-such-option
refuse "unknown command" "$bin" no-such-command
refuse "bad --threads" "$bin" --threads 0 devices
check "devices --device cpu" "$bin" --device cpu devices
out=$("$bin" --device auto --threads 1 devices 2>&1) || { echo "NOT OK devices auto"; fail=1; }
echo "$out" | grep -q "^cpu: usable, 1 thread" || { echo "NOT OK threads reported: $out"; fail=1; }
echo "$out" | grep -q "^selected: " || { echo "NOT OK selection: $out"; fail=1; }
if echo "$out" | grep -q "^cuda: not usable"; then
    # auto must fall back to the CPU, saying why in exactly one log line
    echo "$out" | grep -q "^selected: cpu" || { echo "NOT OK auto fallback: $out"; fail=1; }
    [ "$(echo "$out" | grep -c '^lavinia: .*using the CPU')" = 1 ] ||
        { echo "NOT OK one fallback line: $out"; fail=1; }
fi
refuse "--device nonsense" "$bin" --device tpu devices
[ $fail = 0 ] && echo "cli: all passed"
exit $fail
