/*
 * test-tokenizer.c: every tokenizer source against its own reference implementation.
 *
 * 1. llama.cpp's test vectors (conformance ggml-vocab-llama-spm.gguf .inp/.out): the GGUF
 *    vocabulary and llama-tokenizer.model give exactly the expected ids; decode(encode(s)) == s.
 * 2. The generated corpus (tests/reference/tokenizer-corpus.jsonl, 1300 lines): ids equal to
 *    SentencePiece's on llama-tokenizer.model (and from the GGUF vocabulary, and from a
 *    tokenizer.bin exported the way llama2.c exports it), ids equal to transformers.js' on
 *    Mistral's tokenizer.json; decode equal to SentencePiece's; streaming decode, token by
 *    token, concatenates to the full decode and never emits part of a character.
 * 3. Special tokens, added_tokens.json, the Metaspace pre-tokeniser.
 * 4. Hostile input: truncated protobuf, unknown merge tokens, duplicate pieces, GGUF arrays
 *    of different lengths or the wrong type.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/fileutil.h"
#include "io/gguf.h"
#include "lavinia/error.h"
#include "testutil.h"
#include "text/tokenizer.h"

static char conf[1024], ref[1024], tmpdir[256];

static bool read_text(const char *path, char **out, size_t *n)
{
    return lv_read_file(path, (size_t)64 << 20, out, n) == LV_OK;
}

/* lines of a file (the text is modified in place; the last line needs a newline) */
static int split_lines(char *text, size_t n, char ***lines)
{
    int count = 0, cap = 1024;
    *lines = malloc((size_t)cap * sizeof **lines);
    for (size_t i = 0, start = 0; i < n; i++)
        if (text[i] == '\n') {
            text[i] = 0;
            if (count == cap)
                *lines = realloc(*lines, (size_t)(cap *= 2) * sizeof **lines);
            (*lines)[count++] = text + start;
            start = i + 1;
        }
    return count;
}

static bool ids_equal(const lv_tok_ids *ids, const char *want)
{
    size_t k = 0;
    const char *p = want;
    while (*p) {
        while (*p == ' ')
            p++;
        if (!*p)
            break;
        char *end;
        long v = strtol(p, &end, 10);
        if (k >= ids->n || ids->v[k] != v)
            return false;
        k++;
        p = end;
    }
    return k == ids->n;
}

static void print_ids(const char *label, const lv_tok_ids *ids)
{
    printf("# %s:", label);
    for (size_t i = 0; i < ids->n && i < 40; i++)
        printf(" %d", ids->v[i]);
    printf("\n");
}

/* streaming decode equals the whole decode, and no chunk ends inside a character */
static bool stream_matches(const lv_tokenizer *tok, const lv_tok_ids *ids, const char *whole,
                           size_t whole_n)
{
    lv_tok_stream s;
    char chunk[4096], *cat = malloc(whole_n + 4096);
    size_t n = 0;
    bool ok = cat != NULL;
    lv_tok_stream_init(&s, tok);
    for (size_t i = 0; ok && i <= ids->n; i++) {
        int k = i < ids->n ? lv_tok_stream_push(&s, ids->v[i], chunk, sizeof chunk)
                           : lv_tok_stream_flush(&s, chunk, sizeof chunk);
        if (k < 0 || n + (size_t)k > whole_n) {
            ok = false;
            break;
        }
        /* a chunk is whole characters: it ends after a complete UTF-8 sequence */
        for (int j = 0; j < k;) {
            unsigned char c = (unsigned char)chunk[j];
            int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
            if (len == 0 || j + len > k)
                ok = false;
            j += len ? len : 1;
        }
        memcpy(cat + n, chunk, (size_t)k);
        n += (size_t)k;
    }
    ok = ok && n == whole_n && memcmp(cat, whole, n) == 0;
    free(cat);
    return ok;
}

/* ----------------------------------------------------------------------------------------
 * 1. llama.cpp's vectors
 */

static void vectors(const lv_tokenizer *tok, const char *label)
{
    char path[1200], *inp, *out;
    size_t ni, no;
    snprintf(path, sizeof path, "%s/ggml-vocab-llama-spm.gguf.inp", conf);
    if (!read_text(path, &inp, &ni))
        return;
    snprintf(path, sizeof path, "%s/ggml-vocab-llama-spm.gguf.out", conf);
    if (!read_text(path, &out, &no)) {
        free(inp);
        return;
    }
    char **want;
    int n_want = split_lines(out, no, &want);
    static const char sep[] = "\n__ggml_vocab_test__\n";
    int cases = 0, bad = 0, round = 0;
    lv_tok_ids ids = { 0 };
    for (char *p = inp, *q; (q = strstr(p, sep)) != NULL; p = q + strlen(sep), cases++) {
        ids.n = 0;
        if (lv_tok_encode(tok, p, (size_t)(q - p), 0, &ids) != LV_OK || cases >= n_want ||
            !ids_equal(&ids, want[cases])) {
            if (bad++ < 3) {
                printf("# case %d '%.*s' want '%s'\n", cases, (int)(q - p), p,
                       cases < n_want ? want[cases] : "?");
                print_ids("got", &ids);
            }
        }
        char *text;
        size_t tn;
        if (lv_tok_decode(tok, ids.v, ids.n, &text, &tn) == LV_OK) {
            round += tn == (size_t)(q - p) && memcmp(text, p, tn) == 0;
            free(text);
        }
    }
    tu_assert(cases == 46 && bad == 0, "%s: %d llama.cpp cases, %d differ from the .out ids",
              label, cases, bad);
    tu_assert(round == cases, "%s: decode(encode(s)) == s for %d of %d cases", label, round,
              cases);
    lv_tok_ids_free(&ids);
    free(want);
    free(inp);
    free(out);
}

/* ----------------------------------------------------------------------------------------
 * 2. the corpus
 */

struct corpus {
    char **lines;                 /* decoded strings */
    size_t *len;
    int n;
};

static bool load_corpus(struct corpus *c)
{
    char path[1200], *text;
    size_t n;
    snprintf(path, sizeof path, "%s/tokenizer-corpus.jsonl", ref);
    if (!read_text(path, &text, &n))
        return false;
    char **lines;
    c->n = split_lines(text, n, &lines);
    c->lines = calloc((size_t)c->n, sizeof *c->lines);
    c->len = calloc((size_t)c->n, sizeof *c->len);
    for (int i = 0; i < c->n; i++) {
        json_t *s = json_loads(lines[i], JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
        c->len[i] = json_string_length(s);
        c->lines[i] = malloc(c->len[i] + 1);
        memcpy(c->lines[i], json_string_value(s) ? json_string_value(s) : "", c->len[i] + 1);
        json_decref(s);
    }
    free(lines);
    free(text);
    return c->n > 0;
}

static void free_corpus(struct corpus *c)
{
    for (int i = 0; i < c->n; i++)
        free(c->lines[i]);
    free(c->lines);
    free(c->len);
}

/* encodes every line and compares with the reference ids (file in tests/reference);
 * decoded (NULL: skip) holds the reference decodes as JSON lines */
static void corpus_check(const lv_tokenizer *tok, const struct corpus *c, const char *ids_file,
                         const char *decoded, const char *label)
{
    char path[1200], *text, *dtext = NULL;
    size_t n, dn;
    snprintf(path, sizeof path, "%s/%s", ref, ids_file);
    if (!tu_assert(read_text(path, &text, &n), "%s: reference %s", label, ids_file))
        return;
    char **want, **dec = NULL;
    int n_want = split_lines(text, n, &want), n_dec = 0;
    snprintf(path, sizeof path, "%s/%s", ref, decoded ? decoded : "");
    if (decoded && read_text(path, &dtext, &dn))
        n_dec = split_lines(dtext, dn, &dec);
    int bad = 0, bad_dec = 0, bad_stream = 0;
    lv_tok_ids ids = { 0 };
    for (int i = 0; i < c->n && i < n_want; i++) {
        ids.n = 0;
        if (lv_tok_encode(tok, c->lines[i], c->len[i], 0, &ids) != LV_OK ||
            !ids_equal(&ids, want[i])) {
            if (bad++ < 3) {
                printf("# line %d: %.60s\n# want: %.200s\n", i + 1, c->lines[i], want[i]);
                print_ids("got ", &ids);
            }
        }
        char *out;
        size_t on;
        if (lv_tok_decode(tok, ids.v, ids.n, &out, &on) != LV_OK) {
            bad_dec++;
            continue;
        }
        if (i < n_dec) {
            json_t *s = json_loads(dec[i], JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
            if (!s || json_string_length(s) != on || memcmp(json_string_value(s), out, on))
                if (bad_dec++ < 3)
                    printf("# line %d decodes to '%.60s'\n", i + 1, out);
            json_decref(s);
        }
        bad_stream += !stream_matches(tok, &ids, out, on);
        free(out);
    }
    tu_assert(n_want == c->n && bad == 0, "%s: %d corpus lines, %d with other ids than %s",
              label, c->n, bad, ids_file);
    if (decoded)
        tu_assert(n_dec == c->n && bad_dec == 0, "%s: decode equals SentencePiece's on %d "
                  "lines (%d differ)", label, n_dec, bad_dec);
    tu_assert(bad_stream == 0, "%s: streaming decode of every line concatenates to the full "
              "decode, whole characters only (%d differ)", label, bad_stream);
    lv_tok_ids_free(&ids);
    free(want);
    free(dec);
    free(text);
    free(dtext);
}

/* llama-tokenizer.model exported as llama2.c's tokenizer.py does ("▁" -> ' ', BOS/EOS as
 * "\n<s>\n" and "\n</s>\n") */
static void write_tokenizer_bin(const lv_tokenizer *spm, const char *path)
{
    FILE *f = fopen(path, "wb");
    uint32_t maxlen = 0;
    for (int32_t i = 0; i < lv_tok_n_vocab(spm); i++) {
        size_t n;
        lv_tok_piece(spm, i, &n);
        if (n > maxlen)
            maxlen = (uint32_t)n;
    }
    fwrite(&maxlen, 4, 1, f);
    for (int32_t i = 0; i < lv_tok_n_vocab(spm); i++) {
        size_t n;
        const char *p = lv_tok_piece(spm, i, &n);
        char buf[4096];
        int32_t k = 0;
        if (i == 1 || i == 2) {
            k = sprintf(buf, i == 1 ? "\n<s>\n" : "\n</s>\n");
        } else {
            for (size_t j = 0; j < n; j++) {
                if (j + 3 <= n && memcmp(p + j, "\xe2\x96\x81", 3) == 0) {
                    buf[k++] = ' ';
                    j += 2;
                } else {
                    buf[k++] = p[j];
                }
            }
        }
        float score = lv_tok_piece_score(spm, i);
        fwrite(&score, 4, 1, f);
        fwrite(&k, 4, 1, f);
        fwrite(buf, 1, (size_t)k, f);
    }
    fclose(f);
}

/* ----------------------------------------------------------------------------------------
 * 3. special tokens, added tokens, Metaspace
 */

static void encode_is(const lv_tokenizer *tok, const char *text, int flags, const char *want,
                      const char *what)
{
    lv_tok_ids ids = { 0 };
    int rc = lv_tok_encode(tok, text, strlen(text), flags, &ids);
    if (!tu_assert(rc == LV_OK && ids_equal(&ids, want), "%s: '%s' -> %s", what, text, want))
        print_ids("got", &ids);
    lv_tok_ids_free(&ids);
}

static void specials(const lv_tokenizer *spm, const lv_tokenizer *json)
{
    /* SentencePiece: "<s>" in the text is text unless special tokens are parsed */
    encode_is(spm, "<s>Hi", 0, "529 29879 29958 18567", "tokenizer.model, control as text");
    encode_is(spm, "<s>Hi", LV_TOK_PARSE_SPECIAL, "1 6324",
              "tokenizer.model, --parse-special (as llama.cpp: text after a token gets \"▁\")");
    encode_is(spm, "Hi", LV_TOK_BOS | LV_TOK_EOS, "1 6324 2", "tokenizer.model, BOS and EOS");
    /* tokenizer.json: special tokens split out (legacy: each piece of text gets "▁") */
    encode_is(json, "a<s>b", 0, "264 1 287", "tokenizer.json, <s> split out");
    encode_is(json, "a<s>b", LV_TOK_NO_PARSE_SPECIAL, "264 28789 28713 28767 28726",
              "tokenizer.json, --no-parse-special");
    tu_assert(lv_tok_bos(json) == 1 && lv_tok_eos(json) == 2 && lv_tok_unk(json) == 0 &&
                  lv_tok_image(json) == -1, "tokenizer.json: BOS 1, EOS 2, UNK 0, no <image>");
}

static void added_tokens(const char *model_path)
{
    char dir[300], path[400], cmd[2000];
    snprintf(dir, sizeof dir, "%s/llava", tmpdir);
    snprintf(cmd, sizeof cmd, "mkdir -p '%s' && cp '%s' '%s/tokenizer.model'", dir, model_path,
             dir);
    if (system(cmd) != 0)
        return;
    snprintf(path, sizeof path, "%s/added_tokens.json", dir);
    FILE *f = fopen(path, "w");
    fputs("{\"<image>\": 32000, \"<pad>\": 32001}\n", f);
    fclose(f);
    lv_tokenizer *tok;
    if (!tu_assert(lv_tok_open(&tok, dir, NULL) == LV_OK, "a directory with tokenizer.model and "
                   "added_tokens.json opens (%s)", lv_errmsg()))
        return;
    tu_assert(lv_tok_image(tok) == 32000 && lv_tok_n_vocab(tok) == 32002,
              "<image> is 32000, 32002 pieces");
    /* transformers' slow LlamaTokenizer (legacy): "USER: <image>\nWhat" ->
     * sp("USER: ") + [32000] + sp("\nWhat") */
    encode_is(tok, "USER: <image>\nWhat", 0, "3148 1001 29901 29871 32000 29871 13 5618",
              "added token split out");
    lv_tok_free(tok);
    snprintf(path, sizeof path, "%s/added_tokens.json", dir);
    f = fopen(path, "w");
    fputs("{\"<image>\": 31999}\n", f);
    fclose(f);
    tu_assert(lv_tok_open(&tok, dir, NULL) != LV_OK && strstr(lv_errmsg(), "added_tokens.json"),
              "an added token over another piece: %s", lv_errmsg());
}

/* the same vocabulary with the Metaspace pre-tokeniser (transformers' legacy=False form) */
static void metaspace(const char *json_text, size_t n)
{
    char *copy = malloc(n + 256);
    const char *legacy = "\"normalizer\": {", *at = strstr(json_text, legacy);
    const char *end = at ? strstr(at, "\"pre_tokenizer\": null") : NULL;
    if (!at || !end) {
        tu_assert(false, "tokenizer.json has the legacy normaliser");
        free(copy);
        return;
    }
    size_t k = (size_t)(at - json_text);
    memcpy(copy, json_text, k);
    k += (size_t)sprintf(copy + k, "\"normalizer\": null, \"pre_tokenizer\": {\"type\": "
                         "\"Metaspace\", \"replacement\": \"\\u2581\", \"prepend_scheme\": "
                         "\"first\", \"split\": false}");
    const char *rest = end + strlen("\"pre_tokenizer\": null");
    memcpy(copy + k, rest, n - (size_t)(rest - json_text));
    k += n - (size_t)(rest - json_text);
    lv_tokenizer *tok;
    if (tu_assert(lv_tok_load_json(&tok, copy, k, "metaspace.json") == LV_OK,
                  "Metaspace tokenizer.json loads (%s)", lv_errmsg())) {
        encode_is(tok, "Hello world", 0, "22557 1526", "Metaspace: prefix on the first word");
        encode_is(tok, " Hello", 0, "22557", "Metaspace: no second prefix before a space");
        encode_is(tok, "a<s>b", 0, "264 1 28726", "Metaspace \"first\": none after <s>");
        lv_tok_free(tok);
    }
    free(copy);
}

/* ----------------------------------------------------------------------------------------
 * 4. hostile input
 */

static void refused(int rc, const char *name, const char *words, const char *what)
{
    tu_assert(rc != LV_OK && strstr(lv_errmsg(), name) && strstr(lv_errmsg(), words) &&
                  !strchr(lv_errmsg(), '\n'),
              "%s: %s", what, rc != LV_OK ? lv_errmsg() : "accepted");
}

/* protobuf helpers for hand-made tokenizer.model files */
static size_t pb_key(uint8_t *p, int field, int wire)
{
    p[0] = (uint8_t)(field << 3 | wire);
    return 1;
}

static size_t pb_piece(uint8_t *p, const char *s, int type)
{
    size_t n = strlen(s), k = 0;
    uint8_t inner[64];
    k += pb_key(inner + k, 1, 2);
    inner[k++] = (uint8_t)n;
    memcpy(inner + k, s, n);
    k += n;
    k += pb_key(inner + k, 3, 0);
    inner[k++] = (uint8_t)type;
    size_t m = pb_key(p, 1, 2);
    p[m++] = (uint8_t)k;
    memcpy(p + m, inner, k);
    return m + k;
}

static void hostile(const char *model_bytes, size_t model_n, const char *json_text)
{
    lv_tokenizer *tok;
    /* truncated protobuf: at a few places, every one refused */
    size_t cuts[] = { 1, 2, 7, 1000, model_n / 2 + 3, model_n - 1 };
    for (size_t i = 0; model_bytes && i < sizeof cuts / sizeof cuts[0]; i++) {
        int rc = lv_tok_load_spm(&tok, model_bytes, cuts[i], "cut.model");
        if (rc == LV_OK)
            lv_tok_free(tok);
        refused(rc, "cut.model", "", "tokenizer.model cut short");
    }
    /* a piece defined twice */
    uint8_t pb[256];
    size_t k = 0;
    k += pb_piece(pb + k, "<unk>", 2);
    k += pb_piece(pb + k, "ab", 1);
    k += pb_piece(pb + k, "ab", 1);
    pb[k++] = 2 << 3 | 2;         /* trainer_spec { model_type: BPE } */
    pb[k++] = 2;
    pb[k++] = 3 << 3;
    pb[k++] = 2;
    refused(lv_tok_load_spm(&tok, pb, k, "dup.model"), "dup.model", "both 'ab'",
            "tokenizer.model with a duplicate piece");
    /* a unigram model is refused by name */
    pb[k - 1] = 1;
    refused(lv_tok_load_spm(&tok, pb, k, "uni.model"), "uni.model", "unigram",
            "a unigram tokenizer.model");
    /* tokenizer.json: unknown merge token, a merge making no piece, duplicate keys */
    static const char *const bad_json[][3] = {
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":[\"a c\"]}}",
          "names a token", "a merge naming an unknown token" },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},\"merges\":[\"a b\"]}}",
          "not in the vocabulary", "a merge making no piece" },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"a\":1},\"merges\":[]}}",
          "duplicate", "a vocabulary with a duplicate piece" },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":0},\"merges\":[]}}",
          "both", "two pieces with one id" },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":2},\"merges\":[]}}",
          "no piece", "a gap in the ids" },
        { "{\"model\":{\"type\":\"Unigram\",\"vocab\":[]}}", "not supported", "a unigram model" },
        { "{\"pre_tokenizer\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":\"BPE\",\"vocab\":{},"
          "\"merges\":[]}}", "byte-level", "a byte-level BPE" },
        { "[1, 2", "not valid JSON", "truncated JSON" },
    };
    for (size_t i = 0; i < sizeof bad_json / sizeof bad_json[0]; i++)
        refused(lv_tok_load_json(&tok, bad_json[i][0], strlen(bad_json[i][0]), "bad.json"),
                "bad.json", bad_json[i][1], bad_json[i][2]);
    (void)json_text;
    /* GGUF vocabularies: arrays of different lengths, the wrong type, duplicate tokens */
    static const char *const toks[] = { "<unk>", "a", "b" }, *const dups[] = { "<unk>", "a", "a" };
    float scores[3] = { 0, -1, -2 };
    int32_t iscores[3] = { 0, -1, -2 }, types[3] = { 2, 1, 1 };
    for (int c = 0; c < 3; c++) {
        char path[400];
        snprintf(path, sizeof path, "%s/vocab%d.gguf", tmpdir, c);
        lv_gguf_writer *w = lv_gguf_writer_new();
        lv_gguf_writer_add_str(w, "general.architecture", "llama");
        lv_gguf_writer_add_str(w, "tokenizer.ggml.model", "llama");
        lv_gguf_writer_add_str_arr(w, "tokenizer.ggml.tokens", c == 2 ? dups : toks, NULL, 3);
        if (c == 1)
            lv_gguf_writer_add_arr(w, "tokenizer.ggml.scores", LV_GGUF_TYPE_INT32, iscores, 3);
        else
            lv_gguf_writer_add_arr(w, "tokenizer.ggml.scores", LV_GGUF_TYPE_FLOAT32, scores,
                                   c == 0 ? 2 : 3);
        lv_gguf_writer_add_arr(w, "tokenizer.ggml.token_type", LV_GGUF_TYPE_INT32, types, 3);
        lv_gguf_writer_write(w, path);
        lv_gguf_writer_free(w);
        static const char *const words[] = { "2 scores", "INT32", "both 'a'" };
        static const char *const what[] = { "GGUF arrays of different lengths",
                                            "GGUF scores of the wrong type",
                                            "GGUF vocabulary with a duplicate piece" };
        int rc = lv_tok_open(&tok, path, NULL);
        if (rc == LV_OK)
            lv_tok_free(tok);
        refused(rc, path, words[c], what[c]);
    }
}

int main(int argc, char **argv)
{
    tu_init(argc, argv, "tokenizer");
    const char *top = getenv("LV_TOP_SRCDIR"), *cd = getenv("LAVINIA_CONFORMANCE_DIR");
    top = top && *top ? top : ".";
    snprintf(ref, sizeof ref, "%s/tests/reference", top);
    if (cd && *cd)
        snprintf(conf, sizeof conf, "%s", cd);
    else
        snprintf(conf, sizeof conf, "%s/../shared/conformance", top);
    const char *t = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/lv-tok-XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(tmpdir))
        return 99;

    struct corpus c = { 0 };
    if (!tu_assert(load_corpus(&c), "corpus %s/tokenizer-corpus.jsonl", ref))
        return tu_finish();
    tu_assert(c.n >= 1000, "the corpus has %d lines", c.n);

    /* tokenizer.json (in the tree) */
    char path[1200], *json_text;
    size_t json_n;
    lv_tokenizer *json = NULL;
    snprintf(path, sizeof path, "%s/mistral-tokenizer.json", ref);
    if (tu_assert(read_text(path, &json_text, &json_n), "%s", path) &&
        tu_assert(lv_tok_open(&json, path, NULL) == LV_OK, "Mistral tokenizer.json opens (%s)",
                  lv_errmsg())) {
        corpus_check(json, &c, "tokenizer-corpus.mistral.ids", NULL, "tokenizer.json");
        metaspace(json_text, json_n);
    }

    /* the conformance files */
    char model_path[1200], *model_bytes = NULL;
    size_t model_n = 0;
    snprintf(model_path, sizeof model_path, "%s/llama-tokenizer.model", conf);
    if (access(model_path, R_OK) == 0) {
        lv_tokenizer *spm, *gguf, *bin;
        tu_assert(lv_tok_open(&spm, model_path, NULL) == LV_OK, "tokenizer.model opens (%s)",
                  lv_errmsg());
        snprintf(path, sizeof path, "%s/ggml-vocab-llama-spm.gguf", conf);
        tu_assert(lv_tok_open(&gguf, path, NULL) == LV_OK, "GGUF vocabulary opens (%s)",
                  lv_errmsg());
        vectors(gguf, "GGUF vocabulary");
        vectors(spm, "tokenizer.model");
        corpus_check(spm, &c, "tokenizer-corpus.spm.ids", "tokenizer-corpus.spm.decoded.jsonl",
                     "tokenizer.model");
        corpus_check(gguf, &c, "tokenizer-corpus.spm.ids", "tokenizer-corpus.spm.decoded.jsonl",
                     "GGUF vocabulary");
        snprintf(path, sizeof path, "%s/tokenizer.bin", tmpdir);
        write_tokenizer_bin(spm, path);
        if (tu_assert(lv_tok_open(&bin, path, NULL) == LV_OK, "tokenizer.bin opens (%s)",
                      lv_errmsg())) {
            corpus_check(bin, &c, "tokenizer-corpus.spm.ids", NULL, "llama2.c tokenizer.bin");
            lv_tok_free(bin);
        }
        if (json)
            specials(spm, json);
        added_tokens(model_path);
        read_text(model_path, &model_bytes, &model_n);
        lv_tok_free(spm);
        lv_tok_free(gguf);
    } else {
        printf("skipped: conformance data not found (%s)\n", model_path);
    }
    hostile(model_bytes, model_n, json_text);
    free(model_bytes);
    free(json_text);
    lv_tok_free(json);
    free_corpus(&c);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        printf("# could not remove %s\n", tmpdir);
    return tu_finish();
}
