#!/bin/sh
# valgrind.sh: runs one test under valgrind memcheck with one thread; any error or definite
# leak fails it. Used as LOG_COMPILER by `make check-valgrind`. Test programs are libtool
# wrappers, hence --mode=execute.
exec "${LV_TOP_BUILDDIR:-.}/libtool" --mode=execute valgrind --quiet --error-exitcode=1 \
    --leak-check=full --errors-for-leak-kinds=definite \
    --suppressions="${LV_TOP_SRCDIR:-.}/tests/valgrind.supp" "$@" --threads 1
