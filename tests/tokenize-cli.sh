#!/bin/bash
# tokenize-cli.sh: lavinia tokenize as scripts use it: one output line per --jsonl input line
# (an empty line for an empty string), nothing else on standard output, --bos only when asked,
# a vocabulary-only GGUF and bare files recognised by content, --decode back to the text,
# one error line naming the file for bad input.
set -u
bin="${LV_TOP_BUILDDIR:-.}/src/lavinia"
src="${LV_TOP_SRCDIR:-.}"
conf="${LAVINIA_CONFORMANCE_DIR:-$src/../shared/conformance}"
json="$src/tests/reference/mistral-tokenizer.json"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lv-tok-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail=0
ok() { echo "OK     $1"; }
bad() { echo "NOT OK $1"; fail=1; }
check() { # WHAT GOT WANT
    if [ "$2" = "$3" ]; then ok "$1"; else bad "$1: got '$2', want '$3'"; fi
}

# tokenizer.json (in the tree)
check "tokenizer.json: Hello world" "$("$bin" tokenize -m "$json" "Hello world")" "22557 1526"
check "TEXT after options and options after TEXT" "$("$bin" tokenize "Hello world" -m "$json")" \
    "22557 1526"
check "--bos" "$("$bin" tokenize -m "$json" --bos "Hello world")" "1 22557 1526"
check "standard input is one string" "$(printf 'Hello world' | "$bin" tokenize -m "$json")" \
    "22557 1526"
printf '"Hello world"\n""\n"a<s>b"\n"\\u00e9\\n"\n' > "$tmp/in.jsonl"
"$bin" tokenize -m "$json" --jsonl < "$tmp/in.jsonl" > "$tmp/out" 2> "$tmp/err"
check "--jsonl: one line per input line, empty for an empty string" \
    "$(tr '\n' '|' < "$tmp/out")" "22557 1526||264 1 287|1233 13|"
check "--jsonl: nothing on standard error" "$(cat "$tmp/err")" ""
check "--no-parse-special" "$("$bin" tokenize -m "$json" --no-parse-special "a<s>b")" \
    "264 28789 28713 28767 28726"
check "--decode" "$("$bin" tokenize -m "$json" --decode "22557 1526")" "Hello world"
printf '22557 1526\n\n' | "$bin" tokenize -m "$json" --decode --jsonl > "$tmp/dec"
check "--decode --jsonl" "$(tr '\n' '|' < "$tmp/dec")" '"Hello world"|""|'

if [ -f "$conf/llama-tokenizer.model" ]; then
    m="$conf/llama-tokenizer.model"
    check "tokenizer.model" "$("$bin" tokenize -m "$m" " Hello world")" "29871 15043 3186"
    check "tokenizer.model: control tokens are text" "$("$bin" tokenize -m "$m" "<s>")" \
        "529 29879 29958"
    check "tokenizer.model: --parse-special" "$("$bin" tokenize -m "$m" --parse-special "<s>Hi")" \
        "1 6324"
    cp "$m" "$tmp/vocabulary"
    check "a bare protobuf is recognised by content" \
        "$("$bin" tokenize -m "$tmp/vocabulary" "Hello")" "15043"
    check "vocabulary-only GGUF" \
        "$("$bin" tokenize -m "$conf/ggml-vocab-llama-spm.gguf" "3333")" \
        "29871 29941 29941 29941 29941"
    mkdir "$tmp/dir"
    cp "$m" "$tmp/dir/tokenizer.model"
    check "a directory with tokenizer.model" "$("$bin" tokenize -m "$tmp/dir" "Hello")" "15043"
    cp "$json" "$tmp/dir/tokenizer.json"
    check "tokenizer.json wins over tokenizer.model" "$("$bin" tokenize -m "$tmp/dir" "Hello")" \
        "22557"
else
    echo "# conformance data not found ($conf): tokenizer.model cases not run"
fi

# bad input: one line naming the file, status below 126
: > "$tmp/empty"
printf '{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a c"]}}' > "$tmp/merge.json"
printf '\n\x05\n\x03abc' > "$tmp/cut.model"
for f in empty merge.json cut.model none; do
    "$bin" tokenize -m "$tmp/$f" "x" > "$tmp/o" 2> "$tmp/e"
    rc=$?
    if [ $rc -ne 0 ] && [ $rc -lt 126 ] && [ "$(wc -l < "$tmp/e")" = 1 ] &&
        grep -q "$tmp/$f" "$tmp/e" && [ ! -s "$tmp/o" ]; then
        ok "$f: $(cat "$tmp/e")"
    else
        bad "$f: status $rc: $(cat "$tmp/e")"
    fi
done
printf '"ok"\nnot json\n' | "$bin" tokenize -m "$json" --jsonl > "$tmp/o" 2> "$tmp/e"
rc=$?
if [ $rc = 1 ] && grep -q "line 2" "$tmp/e"; then ok "a bad --jsonl line is named: $(cat "$tmp/e")"
else bad "a bad --jsonl line: status $rc: $(cat "$tmp/e")"; fi
exit $fail
