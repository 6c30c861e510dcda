#!/bin/bash
# checkpoint-cli.sh: lavinia info and lavinia convert as a person runs them: the conformance
# stories260K.bin shows its hyper-parameters; convert llama2.c -> HF -> GGUF -> HF with
# options after operands; bad input gives one error line naming the file and an exit status
# below 126.
set -u
bin="${LV_TOP_BUILDDIR:-.}/src/lavinia"
conf="${LAVINIA_CONFORMANCE_DIR:-${LV_TOP_SRCDIR:-.}/../shared/conformance}"
model="$conf/stories260K.bin"
if [ ! -f "$model" ]; then
    echo "skipped: conformance data not found ($model)"
    exit 77
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lv-cli-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail=0
ok() { echo "OK     $1"; }
bad() { echo "NOT OK $1"; fail=1; }

out=$("$bin" info "$model" 2>&1) || bad "info exits 0"
for want in "dim: 64" "hidden dim: 172" "layers: 5" "heads: 8" "kv heads: 4" "vocab: 512" \
    "format: llama2.c" "model.layers.4.mlp.down_proj.weight"; do
    if echo "$out" | grep -q "$want"; then ok "info shows '$want'"; else bad "info shows '$want'"; fi
done

# options after operands (GNU argument permutation)
"$bin" convert "$model" "$tmp/hf" 2>"$tmp/err1" >/dev/null && ok "convert to a HF directory" ||
    bad "convert to a HF directory: $(cat "$tmp/err1")"
grep -q "no tokenizer written" "$tmp/err1" && ok "convert says no tokenizer was written" ||
    bad "convert says no tokenizer was written"
"$bin" convert "$tmp/hf" "$tmp/m.bin" --to gguf >/dev/null 2>&1 && ok "convert --to gguf after operands" ||
    bad "convert --to gguf after operands"
"$bin" convert "$tmp/m.bin" "$tmp/hf2" --to hf >/dev/null 2>&1 && ok "convert GGUF -> HF" ||
    bad "convert GGUF -> HF"
cmp -s "$tmp/hf/model.safetensors" "$tmp/hf2/model.safetensors" &&
    ok "llama2.c -> HF -> GGUF -> HF gives the same safetensors bytes" ||
    bad "llama2.c -> HF -> GGUF -> HF gives the same safetensors bytes"
"$bin" info "$tmp/m.bin" | grep -q "format: GGUF" && ok "info reads the GGUF" || bad "info reads the GGUF"

# --- hostile input: files written here, each must give one line naming the file -----------
u8() { printf "\\x$(printf %02x $(($1 & 255)))"; }
u32() { u8 $1; u8 $(($1 >> 8)); u8 $(($1 >> 16)); u8 $(($1 >> 24)); }
u64() { u32 $(($1 & 0xffffffff)); u32 $((($1 >> 32) & 0xffffffff)); }
gstr() { u64 ${#1}; printf '%s' "$1"; }
# safetensors: 8-byte header length, then the JSON header, then DATA bytes of data
st() { # FILE JSON DATA_BYTES
    { u64 ${#2}; printf '%s' "$2"; head -c "$3" /dev/zero; } > "$1"
}
F='"dtype":"F32"'
st "$tmp/oob.safetensors" "{\"a\":{$F,\"shape\":[2],\"data_offsets\":[0,8]}}" 4
st "$tmp/overlap.safetensors" "{\"a\":{$F,\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{$F,\"shape\":[2],\"data_offsets\":[4,12]}}" 12
st "$tmp/gap.safetensors" "{\"a\":{$F,\"shape\":[1],\"data_offsets\":[0,4]},\"b\":{$F,\"shape\":[1],\"data_offsets\":[8,12]}}" 12
st "$tmp/overflow.safetensors" "{\"a\":{$F,\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,4]}}" 4
st "$tmp/dtype.safetensors" '{"a":{"dtype":"F13","shape":[1],"data_offsets":[0,4]}}' 4
st "$tmp/utf8.safetensors" "{\"a$(printf '\377')\":{$F,\"shape\":[1],\"data_offsets\":[0,4]}}" 4
{ u64 1000; printf '{"a":1}'; } > "$tmp/pastend.safetensors"
printf '\010\000\000' > "$tmp/truncated.safetensors"
: > "$tmp/empty.bin"
# GGUF v3: magic, version, tensor count, key/value count, then the pairs and tensor infos
gguf() { printf 'GGUF'; u32 3; u64 $1; u64 $2; }
{ printf 'GGUX'; u32 3; u64 0; u64 0; } > "$tmp/magic.gguf"
gguf 0 0x7fffffffffffffff > "$tmp/kvcount.gguf"
{ gguf 0 1; gstr general.name; u32 8; u64 0x7ffffffffffffff0; printf 'x'; } > "$tmp/string.gguf"
{ gguf 0 1; gstr a; u32 9; u32 4; u64 0x1000000000000000; u32 1; } > "$tmp/array.gguf"
{ gguf 0 1; gstr a; u32 9; u32 9; u64 1; u32 4; u64 1; u32 7; } > "$tmp/nested.gguf"
tensor_gguf() { # FILE TYPE OFFSET
    { gguf 1 1; gstr general.architecture; u32 8; gstr llama
      gstr w; u32 1; u64 32; u32 $2; u64 $3; } > "$1"
    size=$(stat -c %s "$1")
    head -c $(((32 - size % 32) % 32 + 128)) /dev/zero >> "$1"
}
tensor_gguf "$tmp/offset.gguf" 0 4096
tensor_gguf "$tmp/ggmltype.gguf" 99 0
# llama2.c: seven int32 (dim, hidden, layers, heads, kv heads, vocab, seq), then floats
l2c() { # FILE DIM HIDDEN LAYERS HEADS KV VOCAB SEQ FLOATS
    { for v in $2 $3 $4 $5 $6 $7 $8; do u32 $v; done; head -c $((4 * $9)) /dev/zero; } > "$1"
}
l2c "$tmp/heads0.bin" 8 12 1 0 0 10 4 1000
l2c "$tmp/kvheads.bin" 8 12 1 4 3 10 4 1000
l2c "$tmp/negative.bin" -8 12 1 2 2 10 4 1000
l2c "$tmp/huge.bin" 8 2000000000 1 2 2 10 4 1000
l2c "$tmp/truncated.bin" 8 12 2 2 1 10 4 100
# a sharded checkpoint whose index names a shard that is not there
mkdir "$tmp/sharded"
cp "$tmp/hf/config.json" "$tmp/sharded/"
printf '{"metadata":{},"weight_map":{"model.norm.weight":"model-00002-of-00002.safetensors"}}' \
    > "$tmp/sharded/model.safetensors.index.json"
# a config whose shapes disagree with the tensors
cp -r "$tmp/hf" "$tmp/badshape"
sed -i 's/"hidden_size": 64/"hidden_size": 48/' "$tmp/badshape/config.json"
printf 'PK\003\004junkjunkjunkjunkjunkjunkjunk' > "$tmp/pytorch.bin"
printf 'GGUF\003\000\000\000' > "$tmp/short.gguf"
for f in empty.bin truncated.safetensors pastend.safetensors oob.safetensors \
    overlap.safetensors gap.safetensors overflow.safetensors dtype.safetensors \
    utf8.safetensors magic.gguf kvcount.gguf string.gguf array.gguf nested.gguf offset.gguf \
    ggmltype.gguf heads0.bin kvheads.bin negative.bin huge.bin truncated.bin sharded \
    badshape pytorch.bin short.gguf none; do
    "$bin" info "$tmp/$f" >/dev/null 2>"$tmp/err"
    rc=$?
    lines=$(wc -l < "$tmp/err")
    if [ $rc -ne 0 ] && [ $rc -lt 126 ] && [ "$lines" = 1 ] && grep -q "$tmp/$f" "$tmp/err"; then
        ok "info $f: $(cat "$tmp/err")"
    else
        bad "info $f: status $rc, $lines line(s): $(cat "$tmp/err")"
    fi
done
"$bin" info "$tmp/pytorch.bin" 2>&1 | grep -q "safetensors" && ok "a PyTorch file gets advice" ||
    bad "a PyTorch file gets advice"
"$bin" convert "$model" 2>/dev/null; [ $? = 2 ] && ok "convert without OUT is a usage error" ||
    bad "convert without OUT is a usage error"
# LaVIN's layout (tests/reference/gen_lavin.py): its projector in the summary; not GGUF
lavin="${LV_TOP_SRCDIR:-.}/tests/reference/lavin-tiny"
"$bin" info "$lavin" | grep -q "projector: LaVIN's adapter_proj (linear 16, SiLU, linear) over the class token after every 4 blocks (2 image tokens)" &&
    ok "info: LaVIN's projector" || bad "info: LaVIN's projector"
"$bin" convert "$lavin" "$tmp/lavin.gguf" > /dev/null 2> "$tmp/lavin.err"
[ $? = 1 ] && grep -q "GGUF" "$tmp/lavin.err" && ok "LaVIN -> GGUF is refused: $(cat "$tmp/lavin.err")" ||
    bad "LaVIN -> GGUF: $(cat "$tmp/lavin.err")"
"$bin" convert "$lavin" "$tmp/lavin-hf" > /dev/null 2>&1 && "$bin" info "$tmp/lavin-hf" |
    grep -q "projector: LaVIN's adapter_proj" && ok "LaVIN -> Hugging Face directory and back" ||
    bad "LaVIN -> Hugging Face directory"
exit $fail
