/*
 * fuzz-tokenizer.c: libFuzzer target for the tokenizer readers and the BPE core.
 *
 * The first input byte picks what the rest is:
 *   0  a tokenizer.model (SentencePiece protobuf)     2  text for a SentencePiece-style model
 *   1  a tokenizer.json                               3  text for a tokenizer.json model
 *   4  a llama2.c tokenizer.bin
 * A vocabulary that loads encodes a fixed text and its ids are decoded, whole and streamed;
 * text is encoded (special tokens parsed or not, by the second byte) and decoded back, and
 * the streamed decode must equal the whole one. The two fixed models are built here: a small
 * SentencePiece protobuf with byte fallback, and a small tokenizer.json with merges and added
 * tokens. Seeds: tests/fuzz/tokenizer/.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lavinia/error.h"
#include "text/tokenizer.h"

static const char fixed_json[] =
    "{\"added_tokens\": [{\"id\": 1, \"content\": \"<s>\", \"special\": true},"
    " {\"id\": 2, \"content\": \"</s>\", \"special\": true, \"lstrip\": true},"
    " {\"id\": 9, \"content\": \"<image>\", \"special\": false, \"rstrip\": true}],"
    " \"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Prepend\","
    " \"prepend\": \"\\u2581\"}, {\"type\": \"Replace\", \"pattern\": {\"String\": \" \"},"
    " \"content\": \"\\u2581\"}]},"
    " \"decoder\": {\"type\": \"Strip\", \"content\": \" \", \"start\": 1, \"stop\": 0},"
    " \"model\": {\"type\": \"BPE\", \"unk_token\": \"<unk>\", \"fuse_unk\": true,"
    " \"byte_fallback\": true, \"vocab\": {\"<unk>\": 0, \"<s>\": 1, \"</s>\": 2, \"a\": 3,"
    " \"b\": 4, \"ab\": 5, \"\\u2581\": 6, \"\\u2581ab\": 7, \"<0x41>\": 8, \"<image>\": 9},"
    " \"merges\": [\"a b\", \"\\u2581 ab\"]}}";

static lv_tokenizer *spm_fixed, *json_fixed;

/* a SentencePiece model: <unk> <s> </s>, 256 byte pieces, then a few merges' results */
static size_t build_spm(uint8_t *p)
{
    static const char *const normal[] = { "\xe2\x96\x81", "a", "b", "ab", "\xe2\x96\x81" "a",
                                          "\xe2\x96\x81" "ab", "c", "abc" };
    size_t k = 0;
    for (int i = 0; i < 3 + 256 + 8; i++) {
        char piece[16];
        int type = i == 0 ? 2 : i < 3 ? 3 : i < 259 ? 6 : 1;
        if (i < 3)
            snprintf(piece, sizeof piece, "%s", i == 0 ? "<unk>" : i == 1 ? "<s>" : "</s>");
        else if (i < 259)
            snprintf(piece, sizeof piece, "<0x%02X>", i - 3);
        else
            snprintf(piece, sizeof piece, "%s", normal[i - 259]);
        size_t n = strlen(piece);
        float score = i < 259 ? 0.0f : -(float)(i - 259);
        uint8_t inner[32];
        size_t m = 0;
        inner[m++] = 1 << 3 | 2;
        inner[m++] = (uint8_t)n;
        memcpy(inner + m, piece, n);
        m += n;
        inner[m++] = 2 << 3 | 5;
        memcpy(inner + m, &score, 4);
        m += 4;
        inner[m++] = 3 << 3;
        inner[m++] = (uint8_t)type;
        p[k++] = 1 << 3 | 2;
        p[k++] = (uint8_t)m;
        memcpy(p + k, inner, m);
        k += m;
    }
    /* trainer_spec { model_type: 2, byte_fallback: 1 } (field 35's key is the varint 0x98 0x02) */
    const uint8_t spec[] = { 2 << 3 | 2, 5, 3 << 3, 2, 0x98, 0x02, 1 };
    memcpy(p + k, spec, sizeof spec);
    k += sizeof spec;
    /* normalizer_spec { add_dummy_prefix: 1, remove_extra_whitespaces: 0 } */
    const uint8_t norm[] = { 3 << 3 | 2, 4, 3 << 3, 1, 4 << 3, 0 };
    memcpy(p + k, norm, sizeof norm);
    return k + sizeof norm;
}

static void init(void)
{
    static uint8_t buf[16384];
    size_t n = build_spm(buf);
    if (lv_tok_load_spm(&spm_fixed, buf, n, "fixed.model") != LV_OK ||
        lv_tok_load_json(&json_fixed, fixed_json, strlen(fixed_json), "fixed.json") != LV_OK) {
        fprintf(stderr, "fuzz-tokenizer: fixed model: %s\n", lv_errmsg());
        abort();
    }
}

/* encode, decode whole and streamed; the two decodes must agree */
static void exercise(const lv_tokenizer *tok, const char *text, size_t n, int flags)
{
    lv_tok_ids ids = { 0 };
    if (lv_tok_encode(tok, text, n, flags, &ids) == LV_OK) {
        for (size_t i = 0; i < ids.n; i++)
            if (ids.v[i] < 0 || ids.v[i] >= lv_tok_n_vocab(tok))
                abort();
        char *whole;
        size_t wn;
        if (lv_tok_decode(tok, ids.v, ids.n, &whole, &wn) == LV_OK) {
            lv_tok_stream s;
            char chunk[8192];
            size_t at = 0;
            lv_tok_stream_init(&s, tok);
            for (size_t i = 0; i <= ids.n; i++) {
                int k = i < ids.n ? lv_tok_stream_push(&s, ids.v[i], chunk, sizeof chunk)
                                  : lv_tok_stream_flush(&s, chunk, sizeof chunk);
                if (k < 0 || at + (size_t)k > wn || memcmp(whole + at, chunk, (size_t)k) != 0)
                    abort();
                at += (size_t)k;
            }
            if (at != wn)
                abort();
            free(whole);
        }
    }
    lv_tok_ids_free(&ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!spm_fixed)
        init();
    if (size < 2)
        return 0;
    const char *rest = (const char *)data + 2;
    size_t n = size - 2;
    int flags = (data[1] & 1 ? LV_TOK_PARSE_SPECIAL : LV_TOK_NO_PARSE_SPECIAL) |
                (data[1] & 2 ? LV_TOK_BOS : 0);
    lv_tokenizer *tok = NULL;
    static const char sample[] = "Hello  world\n\t<s>ab <image> \xf0\x9f\x98\x80 abc";
    switch (data[0] % 5) {
    case 0:
        if (lv_tok_load_spm(&tok, rest, n, "fuzz.model") == LV_OK)
            exercise(tok, sample, sizeof sample - 1, flags);
        break;
    case 1:
        if (lv_tok_load_json(&tok, rest, n, "fuzz.json") == LV_OK)
            exercise(tok, sample, sizeof sample - 1, flags);
        break;
    case 2: exercise(spm_fixed, rest, n, flags); break;
    case 3: exercise(json_fixed, rest, n, flags); break;
    case 4:
        if (lv_tok_load_llama2c(&tok, rest, n, "fuzz.bin", 0) == LV_OK)
            exercise(tok, sample, sizeof sample - 1, flags);
        break;
    }
    lv_tok_free(tok);
    return 0;
}
