#!/bin/bash
# adapters-cli.sh: --adapter PATH[:SCALE] as a person uses it. lavinia adapters lists what is
# loaded; generate with a PEFT folder changes the logits, scale 0 gives the base's bytes;
# a GGUF LoRA and a folder load side by side; bench runs with an adapter; chat toggles and
# scales between turns; merge writes a loadable directory; an adapter that does not fit the
# model, a missing one and bad adapter_config.json files (r 0, an unknown peft_type, use_dora
# without magnitudes, truncated) are refused with one line.
set -u
bin="${LV_TOP_BUILDDIR:-.}/src/lavinia"
src="${LV_TOP_SRCDIR:-.}"
ref="$src/tests/reference"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lv-adapters-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
. "$src/tests/testlib.sh"

lv="$ref/llava-tiny"
"$bin" adapters -m "$lv" --adapter "$ref/lora-tiny" --adapter "$ref/rslora-tiny:0.5" \
    --adapter "$ref/lora-text.gguf:2" > "$tmp/o" 2> "$tmp/e"
if grep -q "^0: lora-tiny" "$tmp/o" &&
    grep -q "method lora, rank 4, alpha 8, 11712 parameters, scale 1, enabled" "$tmp/o" &&
    grep -q "^  34 sites: llm.0.attn.q, " "$tmp/o" &&
    grep -q "rank 2, alpha 4 (rsLoRA), 1408 parameters, scale 0.5" "$tmp/o" &&
    grep -q "^2: lora-text.gguf" "$tmp/o" && grep -q "^  15 sites: llm.embed, " "$tmp/o"; then
    ok "lavinia adapters lists method, rank, alpha, parameters, scale and sites"
else
    bad "lavinia adapters: $(cat "$tmp/o" "$tmp/e")"
fi
"$bin" adapters --methods | grep -q "^lora: " && ok "lavinia adapters --methods" ||
    bad "adapters --methods"

gen() { # OUT.npy ARGS...
    local out=$1
    shift
    "$bin" generate -m "$lv" --image "$ref/images/photo.jpg" --prompt-ids "1 17 33 95 40 52 8" \
        --print-ids -n 1 --temp 0 --dump logits="$out" "$@" > /dev/null 2> "$tmp/e"
}
gen "$tmp/base.npy" || bad "generate without adapters: $(cat "$tmp/e")"
gen "$tmp/lora.npy" --adapter "$ref/lora-tiny" || bad "generate --adapter: $(cat "$tmp/e")"
gen "$tmp/zero.npy" --adapter "$ref/lora-tiny:0" --adapter "$ref/rslora-tiny:0" ||
    bad "generate --adapter :0: $(cat "$tmp/e")"
gen "$tmp/both.npy" --adapter "$ref/lora-tiny" --adapter "$ref/lora-text.gguf:-1" ||
    bad "generate with a folder and a GGUF: $(cat "$tmp/e")"
if [ -s "$tmp/lora.npy" ] && ! cmp -s "$tmp/base.npy" "$tmp/lora.npy"; then
    ok "generate --image --adapter lora-tiny: the logits change"
else
    bad "--adapter did not change the logits"
fi
cmp -s "$tmp/base.npy" "$tmp/zero.npy" && ok "two adapters at scale 0: the base's logits, byte for byte" ||
    bad "scale 0 differs from the base"
[ -s "$tmp/both.npy" ] && ! cmp -s "$tmp/both.npy" "$tmp/lora.npy" &&
    ok "a PEFT folder and a llama.cpp GGUF LoRA (scale -1) stacked" || bad "folder + GGUF"

"$bin" bench -m "$lv" --adapter "$ref/lora-tiny" --prompt 8 --gen 4 --bw-size 16 > "$tmp/o" 2> "$tmp/e"
grep -q "^0: lora-tiny" "$tmp/o" && grep -q "^decode: 4 tokens" "$tmp/o" &&
    ok "bench --adapter" || bad "bench --adapter: $(cat "$tmp/o" "$tmp/e")"

# chat: /toggle between turns recomputes the conversation with the new adapters
chat_fixture "$tmp/chat"
chat_template "$tmp/chat"
printf 'Hello there\n/adapters\n/toggle 0\nAnd again?\n/scale 0 0.5\nOnce more\n/merge 0\nLast\n' |
    "$bin" chat -m "$tmp/chat" -n 3 --temp 0 --ignore-eos --ctx 128 --adapter "$ref/lora-text.gguf" \
    > "$tmp/o" 2> "$tmp/e"
rc=$?
if [ $rc = 0 ] && [ "$(wc -l < "$tmp/o")" = 4 ] && grep -q "^0: lora-text.gguf" "$tmp/e" &&
    grep -q "lora-text.gguf: disabled, scale 1" "$tmp/e" &&
    grep -q "lora-text.gguf: disabled, scale 0.5" "$tmp/e" &&
    grep -q "lora-text.gguf: merged into the weights" "$tmp/e" &&
    [ "$(grep -c "^adapters changed: recomputed [0-9]* cached positions" "$tmp/e")" = 3 ]; then
    ok "chat: /adapters, /toggle, /scale and /merge; the next turn recomputes the cache and says so"
else
    bad "chat with /toggle: status $rc: $(cat "$tmp/o" "$tmp/e")"
fi

# merge: the chat model with the GGUF LoRA folded in, its tokenizer files copied
"$bin" merge -m "$tmp/chat" --adapter "$ref/lora-text.gguf" -o "$tmp/merged" > "$tmp/o" 2> "$tmp/e"
rc=$?
if [ $rc = 0 ] && [ -f "$tmp/merged/tokenizer.json" ] && [ -f "$tmp/merged/tokenizer_config.json" ] &&
    "$bin" generate -m "$tmp/merged" -p "Hi there" --chat -n 3 --temp 0 --ignore-eos \
        > /dev/null 2>&1; then
    ok "merge: a Hugging Face directory with the tokenizer files, that generates"
else
    bad "merge: status $rc: $(cat "$tmp/o" "$tmp/e")"
fi
refused "merge into the input directory" "input directory" \
    "$bin" merge -m "$tmp/chat" --adapter "$ref/lora-text.gguf" -o "$tmp/chat"

refused "a model file given as an adapter" "PEFT folder" \
    "$bin" generate -m "$lv" --prompt-ids "1 2" -n 1 --adapter "$lv/model.safetensors"
refused "a missing adapter" "no-such" \
    "$bin" generate -m "$lv" --prompt-ids "1 2" -n 1 --adapter "$tmp/no-such"
refused "an adapter for another model (a text LLaMA has no vision tower)" "no module" \
    "$bin" generate -m "$ref/llama-lm-f32" --prompt-ids "1 2" -n 1 --adapter "$ref/lora-tiny"
mkdir -p "$tmp/badcfg"
cp "$ref/lora-tiny/adapter_model.safetensors" "$tmp/badcfg/"
sed 's/"r": 4/"r": 0/' "$ref/lora-tiny/adapter_config.json" > "$tmp/badcfg/adapter_config.json"
refused "r = 0 in adapter_config.json" "'r' = 0 is outside" \
    "$bin" generate -m "$lv" --prompt-ids "1 2" -n 1 --adapter "$tmp/badcfg"
sed 's/"LORA"/"LOHA"/' "$ref/lora-tiny/adapter_config.json" > "$tmp/badcfg/adapter_config.json"
refused "an unknown peft_type" "peft_type 'LOHA'" \
    "$bin" generate -m "$lv" --prompt-ids "1 2" -n 1 --adapter "$tmp/badcfg"
sed 's/"use_dora": false/"use_dora": true/' "$ref/lora-tiny/adapter_config.json" > "$tmp/badcfg/adapter_config.json"
refused "use_dora without magnitude vectors in the file" "lora_magnitude_vector" \
    "$bin" generate -m "$lv" --prompt-ids "1 2" -n 1 --adapter "$tmp/badcfg"
gen "$tmp/skip.npy" --adapter "$ref/lora-tiny" --adapter "$tmp/badcfg"
if grep -q "lora_magnitude_vector.*(adapter skipped)" "$tmp/e" && cmp -s "$tmp/skip.npy" "$tmp/lora.npy"; then
    ok "two adapters, one refused: it is skipped with one line and the run goes on"
else
    bad "skipping a bad adapter: $(cat "$tmp/e")"
fi
printf '{"peft_type": "LORA", "r": 4' > "$tmp/badcfg/adapter_config.json"
refused "a truncated adapter_config.json" "adapter_config.json" \
    "$bin" generate -m "$lv" --prompt-ids "1 2" -n 1 --adapter "$tmp/badcfg"
exit $fail
