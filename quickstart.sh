#!/bin/sh
# quickstart.sh: install what lavinia needs from Debian, build it, and start it or test it.
#
#   ./quickstart.sh run [ARGS...]   build (build/default) and start lavinia (default: --help)
#   ./quickstart.sh check           build and run the whole test suite: a plain build with
#                                   make check, an ASan+UBSan build with make check, every C
#                                   test under valgrind with one thread, each parser's fuzz
#                                   target for FUZZ_SECONDS (default 60), a CUDA build (compile
#                                   and link; its tests skip without a GPU), make distcheck;
#                                   ends with one line "N passed, N failed, N skipped".
#
# Builds are out of tree under build/, so the source directory stays clean.
set -u
top=$(cd "$(dirname "$0")" && pwd)
jobs=$(nproc 2>/dev/null || echo 2)

packages="build-essential autoconf automake libtool pkg-config libncurses-dev libreadline-dev
libyaml-dev libstb-dev libjansson-dev libchafa-dev libglib2.0-dev libopenblas-openmp-dev"
test_packages="valgrind tmux clang libclang-rt-14-dev"

install_packages() {
    missing=
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
            missing="$missing $p"
    done
    [ -z "$missing" ] && return 0
    echo "quickstart: installing$missing"
    if [ "$(id -u)" != 0 ]; then
        echo "quickstart: run as root, or install these Debian packages first:$missing" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends $missing \
        >/dev/null || { echo "quickstart: apt-get install$missing failed" >&2; exit 1; }
}

bootstrap() {
    [ -x "$top/configure" ] && [ "$top/configure" -nt "$top/configure.ac" ] &&
        [ "$top/Makefile.in" -nt "$top/Makefile.am" ] && return 0
    (cd "$top" && autoreconf -fi) || { echo "quickstart: autoreconf failed" >&2; exit 1; }
}

# build DIR CONFIGURE-ARGS...: configure (once) and make in build/DIR
build() {
    dir="$top/build/$1"; shift
    mkdir -p "$dir"
    if [ ! -f "$dir/Makefile" ]; then
        (cd "$dir" && "$top/configure" -q "$@") || return 1
    fi
    make -C "$dir" -s -j"$jobs"
}

# A source tree configured in place (./configure run in it) cannot host out-of-tree builds.
in_place=no
[ -f "$top/config.status" ] && in_place=yes

case "${1:-}" in
run)
    shift
    install_packages $packages
    if [ $in_place = yes ]; then
        make -C "$top" -s -j"$jobs" || exit 1
        bin="$top/src/lavinia"
    else
        bootstrap
        build default || exit 1
        bin="$top/build/default/src/lavinia"
    fi
    [ $# -eq 0 ] && set -- --help
    exec "$bin" "$@"
    ;;
check)
    install_packages $packages $test_packages
    if [ $in_place = yes ]; then
        echo "quickstart: this source tree was configured in place; run 'make distclean' in it" \
             "first (check builds in build/)" >&2
        exit 1
    fi
    bootstrap
    pass=0 fail=0 skip=0
    # tally DIR LOG: add the counts of an automake test-suite log
    tally() {
        log="$top/build/$1/$2"
        if [ ! -f "$log" ]; then
            fail=$((fail + 1))
            return
        fi
        p=$(sed -n 's/^# PASS: *//p' "$log"); f=$(sed -n 's/^# FAIL: *//p' "$log")
        s=$(sed -n 's/^# SKIP: *//p' "$log"); e=$(sed -n 's/^# ERROR: *//p' "$log")
        xp=$(sed -n 's/^# XPASS: *//p' "$log"); xf=$(sed -n 's/^# XFAIL: *//p' "$log")
        pass=$((pass + ${p:-0} + ${xf:-0})); fail=$((fail + ${f:-0} + ${e:-0} + ${xp:-0}))
        skip=$((skip + ${s:-0}))
    }
    stage() { echo "== $*"; }

    stage "plain build: make check"
    if build plain --with-cuda=no; then
        make -C "$top/build/plain" -s -j"$jobs" check || true
    fi
    tally plain test-suite.log

    stage "sanitizer build (ASan + UBSan): make check"
    if build sanitize --enable-sanitizers; then
        ASAN_OPTIONS=detect_leaks=1 make -C "$top/build/sanitize" -s -j"$jobs" check || true
    fi
    tally sanitize test-suite.log

    stage "valgrind memcheck, one thread: make check-valgrind"
    make -C "$top/build/plain" -s -j"$jobs" check-valgrind || true
    tally plain test-suite-valgrind.log

    stage "fuzzing: each parser's fuzz target for ${FUZZ_SECONDS:-60} s"
    if make -C "$top/build/plain" -s fuzz FUZZ_SECONDS="${FUZZ_SECONDS:-60}"; then
        pass=$((pass + 1))
    else
        fail=$((fail + 1))
    fi

    stage "CUDA build (compile and link; no GPU here): make"
    if build cuda --with-cuda=yes; then
        "$top/build/cuda/src/lavinia" --device auto devices || fail=$((fail + 1))
    else
        echo "quickstart: the CUDA build failed"; fail=$((fail + 1))
    fi

    stage "make distcheck"
    if make -C "$top/build/plain" -s distcheck >"$top/build/distcheck.log" 2>&1; then
        echo "distcheck: ok"; pass=$((pass + 1))
    else
        tail -30 "$top/build/distcheck.log"; fail=$((fail + 1))
    fi

    echo "$pass passed, $fail failed, $skip skipped"
    [ "$fail" -eq 0 ]
    ;;
*)
    echo "usage: $0 run [ARGS...] | check" >&2
    exit 2
    ;;
esac
