# testlib.sh (sourced by the command-line tests, after they set $tmp and $src):
#   ok WHAT / bad WHAT          one result line (bad sets fail=1)
#   check WHAT GOT WANT         ok when GOT = WANT
#   refused WHAT WORDS CMD...   ok when CMD exits 1 with one line on stderr naming WORDS
#   chat_fixture DIR            a chat-ready model in DIR: the reference LM of
#                               tests/reference/gen_llama_lm.py (vocab 96) with a small
#                               character tokenizer.json
#   chat_template DIR           adds a Mistral-style chat template to it
fail=0
ok() { echo "OK     $1"; }
bad() { echo "NOT OK $1"; fail=1; }
check() { if [ "$2" = "$3" ]; then ok "$1"; else bad "$1: got '$2', want '$3'"; fi; }
refused() {
    local what=$1 words=$2
    shift 2
    "$@" > "$tmp/o" 2> "$tmp/e"
    local rc=$?
    if [ $rc = 1 ] && [ "$(wc -l < "$tmp/e")" = 1 ] && grep -q -- "$words" "$tmp/e"; then
        ok "$what: $(cat "$tmp/e")"
    else
        bad "$what: status $rc: $(cat "$tmp/e")"
    fi
}
chat_fixture() {
    local d=$1 i ch
    mkdir -p "$d"
    cp "$src/tests/reference/llama-lm-f32/config.json" \
        "$src/tests/reference/llama-lm-f32/model.safetensors" "$d/"
    {
        printf '{"model": {"type": "BPE", "unk_token": "<unk>", "vocab": {"<unk>": 0, "<s>": 1, '
        printf '"</s>": 2, "\\u2581": 3'
        i=4
        for ch in a b c d e f g h i j k l m n o p q r s t u v w x y z A B C D E F G H I J K L M N \
            O P Q R S T U V W X Y Z '[' ']' / : . , '?' '!'; do
            printf ', "%s": %d' "$ch" $i
            i=$((i + 1))
        done
        printf '}, "merges": []}, "normalizer": {"type": "Sequence", "normalizers": [{"type": '
        printf '"Prepend", "prepend": "\\u2581"}, {"type": "Replace", "pattern": {"String": " "}, '
        printf '"content": "\\u2581"}]}, "added_tokens": [{"id": 1, "content": "<s>", "special": '
        printf 'true}, {"id": 2, "content": "</s>", "special": true}]}\n'
    } > "$d/tokenizer.json"
}
chat_template() {
    printf '{"chat_template": "{{ bos_token }}{%% for m in messages %%}[INST] {{ m.content }} [/INST]{%% endfor %%}"}\n' \
        > "$1/tokenizer_config.json"
}
