#!/bin/bash
# generate-cli.sh: lavinia generate and lavinia chat as a person runs them: stories260K's greedy
# ids from BOS (llama2.c's run.c) from the .bin, its Hugging Face and GGUF conversions; --dump
# logits as a NumPy file; the speed line; seeds; chat turns over standard input with a
# detected template; clear errors for bad ids, a missing tokenizer, a prompt past the context.
set -u
bin="${LV_TOP_BUILDDIR:-.}/src/lavinia"
src="${LV_TOP_SRCDIR:-.}"
conf="${LAVINIA_CONFORMANCE_DIR:-$src/../shared/conformance}"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lv-gen-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
. "$src/tests/testlib.sh"

model="$conf/stories260K.bin"
if [ -f "$model" ]; then
    want=$(cat "$conf/stories260K.greedy-from-bos.txt" | tr -s ' \n' ' ' | sed 's/ $//')
    got=$("$bin" generate -m "$model" --prompt-ids 1 -n 256 --temp 0 --print-ids 2> "$tmp/err")
    check "stories260K: greedy from BOS, 256 ids as llama2.c's run.c" "$got" "$want"
    grep -q "^prompt: 1 tokens, .* tokens/s; decode: 256 tokens, .* tokens/s$" "$tmp/err" &&
        ok "the speed line: $(cat "$tmp/err")" || bad "the speed line: $(cat "$tmp/err")"
    "$bin" convert "$model" "$tmp/hf" > /dev/null 2>&1
    "$bin" convert "$model" "$tmp/s.gguf" > /dev/null 2>&1
    for m in "$tmp/hf" "$tmp/s.gguf"; do
        check "$(basename "$m"): the same 256 ids" \
            "$("$bin" generate -m "$m" --prompt-ids 1 -n 256 --temp 0 --print-ids 2>/dev/null)" \
            "$want"
    done
    "$bin" generate -m "$model" --prompt-ids "1 403" -n 16 --temp 0 --print-ids \
        --dump logits="$tmp/l.npy" > /dev/null 2>&1
    # 2 prompt + 16 generated - 1 = 17 rows of 512 float32, after a 128-byte header
    check "--dump logits: a .npy of 17 x 512 float32" \
        "$(head -c 6 "$tmp/l.npy" | tail -c 5)$(stat -c %s "$tmp/l.npy")" "NUMPY34944"
    grep -a -q "'shape': (17, 512)" "$tmp/l.npy" && ok "--dump logits: shape (17, 512)" ||
        bad "--dump logits: shape"
    a=$("$bin" generate -m "$model" --prompt-ids 1 -n 24 --temp 1 --seed 5 --print-ids 2>/dev/null)
    b=$("$bin" generate -m "$model" --prompt-ids 1 -n 24 --temp 1 --seed 5 --print-ids 2>/dev/null)
    c=$("$bin" generate -m "$model" --prompt-ids 1 -n 24 --temp 1 --seed 6 --print-ids 2>/dev/null)
    [ "$a" = "$b" ] && [ "$a" != "$c" ] && ok "same seed, same ids; another seed, others" ||
        bad "seeds: '$a' '$b' '$c'"
    t1=$("$bin" --threads 1 generate -m "$model" --prompt-ids 1 -n 64 --temp 0 --print-ids 2>/dev/null)
    t2=$("$bin" generate -m "$model" --threads 2 --prompt-ids 1 -n 64 --temp 0 --print-ids 2>/dev/null)
    check "--threads 1 and 2 give the same ids" "$t1" "$t2"
    refused "a malformed --prompt-ids" "not a token id" \
        "$bin" generate -m "$model" --prompt-ids "1 x" --print-ids
    refused "an id outside the vocabulary" "outside the vocabulary" \
        "$bin" generate -m "$model" --prompt-ids "1 512" --print-ids
    refused "text without a tokenizer" "tokenizer" "$bin" generate -m "$model" -p "Once"
    refused "a prompt past the context" "context" \
        "$bin" generate -m "$model" --ctx 4 --prompt-ids "1 2 3 4 5" --print-ids
    "$bin" generate -m "$model" --ctx 4 --prompt-ids "1 2 3 4 5" --print-ids --truncate -n 1 \
        > "$tmp/o" 2> "$tmp/e" && grep -q "warning" "$tmp/e" &&
        ok "--truncate keeps the end with a warning" || bad "--truncate: $(cat "$tmp/e")"
    # 1 prompt position + 7 fed back fill the 8; the 8th id is drawn from the last logits
    check "generation stops at the context end" \
        "$("$bin" generate -m "$model" --ctx 8 --prompt-ids 1 -n 100 --temp 0 --print-ids 2>/dev/null | wc -w)" "8"
else
    echo "# conformance data not found ($conf): stories260K cases not run"
fi

# chat: the reference LM (vocab 96) with a small character tokenizer and a Mistral template
d="$tmp/chat"
chat_fixture "$d"
refused "--chat without a template" "--template" "$bin" generate -m "$d" -p "Hi" --chat
chat_template "$d"
"$bin" generate -m "$d" -p "Hi there" --chat -n 4 --temp 0 --ignore-eos --print-ids \
    > "$tmp/o" 2> "$tmp/e" && [ "$(wc -w < "$tmp/o")" = 4 ] &&
    ok "--chat with the detected template: $(cat "$tmp/o")" || bad "--chat: $(cat "$tmp/e")"
printf 'Hello there\nAnd again?\n' | "$bin" chat -m "$d" -n 5 --temp 0 --ignore-eos \
    > "$tmp/o" 2> "$tmp/e"
rc=$?
check "chat: one answer line per input line" "$rc $(wc -l < "$tmp/o")" "0 2"
check "chat: one speed line per turn" "$(grep -c '^prompt: ' "$tmp/e")" "2"
p2=$(grep '^prompt: ' "$tmp/e" | sed -n 2p | sed 's/prompt: \([0-9]*\) tokens.*/\1/')
[ -n "$p2" ] && [ "$p2" -lt 30 ] && ok "chat keeps the cache: the second turn feeds $p2 tokens" ||
    bad "chat second turn fed '$p2' tokens"
"$bin" generate -m "$d" -p "Hi" --chat --template chatml -n 2 --temp 0 --ignore-eos > /dev/null 2>&1 &&
    ok "--template chatml" || bad "--template chatml"
refused "an unknown --template" "llava-v1, vicuna" \
    "$bin" generate -m "$d" -p "Hi" --chat --template nope
# stop strings: the text before the first occurrence, nothing of the stop string itself
full=$("$bin" generate -m "$d" -p "Hi there" -n 24 --temp 0 --ignore-eos 2>/dev/null)
stop=${full:8:2}
cut=$("$bin" generate -m "$d" -p "Hi there" -n 24 --temp 0 --ignore-eos --stop "$stop" 2>/dev/null)
prefix=${full%%"$stop"*}
if [ ${#full} -ge 12 ] && [ "$cut" = "$prefix" ]; then
    ok "--stop '$stop': '$cut' (of '$full')"
else
    bad "--stop '$stop': got '$cut', want '$prefix' (of '$full')"
fi

# an image: the small random LLaVA of tests/reference/gen_llava.py, its image token 95
lv="$src/tests/reference/llava-tiny"
"$bin" generate -m "$lv" --image "$src/tests/reference/images/photo.jpg" \
    --prompt-ids "1 17 33 95 40 52 8" --print-ids -n 4 --temp 0 --dump pixels="$tmp/px.npy" \
    --dump image_tokens="$tmp/it.npy" --dump logits="$tmp/lg.npy" > "$tmp/o" 2> "$tmp/e"
rc=$?
check "--image: 4 ids after a prompt with the image spliced in" "$rc $(wc -w < "$tmp/o")" "0 4"
grep -q "^prompt: 10 tokens" "$tmp/e" && ok "--image: 7 ids + 3 more for the image = 10 positions" ||
    bad "--image positions: $(cat "$tmp/e")"
for f in "px.npy:(3, 28, 28)" "it.npy:(4, 48)" "lg.npy:(13, 96)"; do
    grep -a -q "'shape': ${f#*:}" "$tmp/${f%%:*}" && ok "--dump ${f%%:*}: shape ${f#*:}" ||
        bad "--dump ${f%%:*}: shape"
done
"$bin" convert "$lv" "$tmp/llava.gguf" > /dev/null 2> "$tmp/e" && [ -f "$tmp/llava-mmproj.gguf" ] &&
    "$bin" info "$tmp/llava.gguf" --mmproj "$tmp/llava-mmproj.gguf" | grep -q "^vision tower: CLIP" &&
    ok "convert LLaVA -> GGUF + mmproj, read back as LLaVA" || bad "LLaVA -> GGUF: $(cat "$tmp/e")"
refused "an image place without an image" "image" \
    "$bin" generate -m "$lv" --prompt-ids "1 95 95" --print-ids --image "$src/tests/reference/images/tiny.png"
refused "a text file as the image" "not an image" \
    "$bin" generate -m "$lv" --prompt-ids "1 95" --print-ids --image "$d/tokenizer.json"

# bench: a random model, a small bandwidth buffer
"$bin" bench --random 64,128,2,4,2,256 --dtype f16 --prompt 8 --gen 4 --bw-size 16 > "$tmp/o" 2> "$tmp/e"
grep -q "^decode bandwidth use: " "$tmp/o" && grep -q "^time to first token: " "$tmp/o" &&
    ok "bench on a random model: $(tr '\n' ';' < "$tmp/o")" || bad "bench: $(cat "$tmp/e")"
# --profile: per token, 2 layers of q and o (64 x 64), k and v (32 x 64), gate and up
# (128 x 64), down (64 x 128), one head (256 x 64), two attentions
"$bin" bench --random 64,128,2,4,2,256 --dtype f16 --prompt 8 --gen 4 --bw-size 16 --profile \
    > "$tmp/o" 2> "$tmp/e"
grep -Eq "^  matmul 64 x 64 F16 +4\.0 " "$tmp/o" &&
    grep -Eq "^  matmul 32 x 64 F16 +4\.0 " "$tmp/o" &&
    grep -Eq "^  matmul 128 x 64 F16 +4\.0 " "$tmp/o" &&
    grep -Eq "^  matmul 64 x 128 F16 +2\.0 " "$tmp/o" &&
    grep -Eq "^  matmul 256 x 64 F16 +1\.0 " "$tmp/o" &&
    grep -Eq "^  attention +2\.0 " "$tmp/o" &&
    grep -Eq "^  outside the kernels +[-0-9.]+ +[-0-9.]+%$" "$tmp/o" &&
    ok "bench --profile: the decode step op by op" ||
    bad "bench --profile: $(cat "$tmp/o" "$tmp/e")"
exit $fail
