/*
 * tok-load.c: the four places a LLaMA-family vocabulary lives, read into one tokenizer.
 *
 * tokenizer.model is a SentencePiece ModelProto (protobuf 2): a small wire-format reader
 * takes the pieces, the trainer fields that change encoding (model type, byte fallback,
 * special ids, unknown surface) and the normaliser flags (FORMATS.md 5.1). tokenizer.json is
 * read with jansson (FORMATS.md 5.3): model BPE, merges as "a b" or ["a", "b"], the legacy
 * Prepend+Replace normaliser or the Metaspace pre-tokeniser, decoder, added tokens. GGUF and
 * tokenizer.bin come through their file readers (io/gguf.h, io/llama2c.h). Everything read
 * is checked; an error names the file and the problem.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "text/tokenizer.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/fileutil.h"
#include "io/gguf.h"
#include "io/llama2c.h"
#include "lavinia/error.h"
#include "text/tok-impl.h"

/* tokenizer files larger than this are not tokenizers */
#define TOK_FILE_MAX ((size_t)256 << 20)

#define SPACE_SYMBOL "\xe2\x96\x81"

static void describe(lv_tokenizer *tok, const char *what)
{
    snprintf(tok->describe, sizeof tok->describe, "%s, %d pieces%s%s", what, tok->n,
             tok->byte_fallback ? ", byte fallback" : "",
             tok->image >= 0 ? ", <image> token" : "");
}

/* the end of every loader: free on failure, else describe and hand out */
static int loaded(lv_tokenizer *tok, int rc, const char *what, lv_tokenizer **out)
{
    if (rc != LV_OK) {
        lv_tok_free(tok);
        return rc;
    }
    describe(tok, what);
    *out = tok;
    return LV_OK;
}

/* ----------------------------------------------------------------------------------------
 * tokenizer.model: SentencePiece's protobuf
 */

struct pb {
    const uint8_t *p, *end;
    const char *name;
};

static int pb_varint(struct pb *b, uint64_t *out)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (b->p >= b->end)
            return lv_error("%s: truncated protobuf (a varint runs past the end)", b->name);
        uint8_t c = *b->p++;
        v |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) {
            *out = v;
            return LV_OK;
        }
    }
    return lv_error("%s: malformed protobuf (a varint longer than 10 bytes)", b->name);
}

/* the next field: its number, wire type, and for wire type 2 the sub-buffer; scalars in *v */
static int pb_field(struct pb *b, uint32_t *field, int *wire, struct pb *sub, uint64_t *v)
{
    uint64_t key;
    int rc;
    if ((rc = pb_varint(b, &key)))
        return rc;
    *field = (uint32_t)(key >> 3);
    *wire = (int)(key & 7);
    if (*field == 0)
        return lv_error("%s: malformed protobuf (field number 0)", b->name);
    switch (*wire) {
    case 0:
        return pb_varint(b, v);
    case 1:
    case 5: {
        size_t k = *wire == 1 ? 8 : 4;
        if ((size_t)(b->end - b->p) < k)
            return lv_error("%s: truncated protobuf (a fixed field runs past the end)",
                            b->name);
        uint64_t x = 0;
        for (size_t i = 0; i < k; i++)
            x |= (uint64_t)b->p[i] << (8 * i);
        b->p += k;
        *v = x;
        return LV_OK;
    }
    case 2: {
        uint64_t n;
        if ((rc = pb_varint(b, &n)))
            return rc;
        if (n > (uint64_t)(b->end - b->p))
            return lv_error("%s: truncated protobuf (a field of %llu bytes runs past the end)",
                            b->name, (unsigned long long)n);
        *sub = (struct pb){ .p = b->p, .end = b->p + n, .name = b->name };
        b->p += n;
        return LV_OK;
    }
    default:
        return lv_error("%s: malformed protobuf (wire type %d)", b->name, *wire);
    }
}

static float f32_of(uint64_t bits)
{
    uint32_t u = (uint32_t)bits;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

struct spm_specs {
    uint64_t model_type, byte_fallback, whitespace_suffix;
    int64_t unk, bos, eos, pad;
    bool add_dummy_prefix, remove_extra_ws, escape_ws;
    char normalizer[64];
    size_t charsmap_len;
};

static int spm_trainer(struct pb b, struct spm_specs *sp, lv_tokenizer *tok)
{
    uint32_t f;
    int w, rc;
    struct pb sub;
    uint64_t v;
    while (b.p < b.end) {
        if ((rc = pb_field(&b, &f, &w, &sub, &v)))
            return rc;
        if (w == 2) {
            if (f == 44) {
                size_t n = (size_t)(sub.end - sub.p);
                if (n >= sizeof tok->unk_surface)
                    return lv_error("%s: unk_surface of %zu bytes is too long", b.name, n);
                memcpy(tok->unk_surface, sub.p, n);
                tok->unk_surface[n] = 0;
            }
            continue;
        }
        switch (f) {
        case 3: sp->model_type = v; break;
        case 24: sp->whitespace_suffix = v; break;
        case 35: sp->byte_fallback = v; break;
        case 40: sp->unk = (int64_t)v; break;
        case 41: sp->bos = (int64_t)v; break;
        case 42: sp->eos = (int64_t)v; break;
        case 43: sp->pad = (int64_t)v; break;
        }
    }
    return LV_OK;
}

static int spm_normalizer(struct pb b, struct spm_specs *sp)
{
    uint32_t f;
    int w, rc;
    struct pb sub;
    uint64_t v;
    while (b.p < b.end) {
        if ((rc = pb_field(&b, &f, &w, &sub, &v)))
            return rc;
        if (f == 1 && w == 2) {
            size_t n = (size_t)(sub.end - sub.p);
            snprintf(sp->normalizer, sizeof sp->normalizer, "%.*s", (int)(n > 60 ? 60 : n),
                     (const char *)sub.p);
        } else if (f == 2 && w == 2) {
            sp->charsmap_len = (size_t)(sub.end - sub.p);
        } else if (w == 0 && f >= 3 && f <= 5) {
            bool on = v != 0;
            if (f == 3)
                sp->add_dummy_prefix = on;
            else if (f == 4)
                sp->remove_extra_ws = on;
            else
                sp->escape_ws = on;
        }
    }
    return LV_OK;
}

static int spm_piece(struct pb b, lv_tokenizer *tok)
{
    uint32_t f;
    int w, rc;
    struct pb sub, text = { 0 };
    uint64_t v;
    float score = 0.0f;
    int type = LV_TOK_NORMAL;
    bool has_text = false;
    while (b.p < b.end) {
        if ((rc = pb_field(&b, &f, &w, &sub, &v)))
            return rc;
        if (f == 1 && w == 2) {
            text = sub;
            has_text = true;
        } else if (f == 2 && w == 5) {
            score = f32_of(v);
        } else if (f == 3 && w == 0) {
            if (v < LV_TOK_NORMAL || v > LV_TOK_BYTE)
                return lv_error("%s: piece %d has type %llu (1..6)", b.name, tok->n,
                                (unsigned long long)v);
            type = (int)v;
        }
    }
    if (!has_text || text.p == text.end)
        return lv_error("%s: piece %d is empty", b.name, tok->n);
    if (!isfinite(score))
        return lv_error("%s: piece %d has a score that is not finite", b.name, tok->n);
    return tok_add_piece(tok, (const char *)text.p, (size_t)(text.end - text.p), score, type,
                         b.name);
}

int lv_tok_load_spm(lv_tokenizer **out, const void *buf, size_t n, const char *name)
{
    lv_tokenizer *tok = tok_new(LV_TOK_SRC_SPM);
    if (!tok)
        return lv_error_status(LV_ENOMEM, "%s: out of memory", name);
    struct pb b = { .p = buf, .end = (const uint8_t *)buf + n, .name = name }, sub;
    struct spm_specs sp = { .model_type = 1, .unk = 0, .bos = 1, .eos = 2, .pad = -1,
                            .add_dummy_prefix = true, .remove_extra_ws = true,
                            .escape_ws = true };
    uint32_t f;
    int w, rc = LV_OK;
    uint64_t v;
    while (rc == LV_OK && b.p < b.end) {
        if ((rc = pb_field(&b, &f, &w, &sub, &v)))
            break;
        if (w != 2)
            continue;
        if (f == 1)
            rc = spm_piece(sub, tok);
        else if (f == 2)
            rc = spm_trainer(sub, &sp, tok);
        else if (f == 3)
            rc = spm_normalizer(sub, &sp);
    }
    if (rc == LV_OK && sp.model_type != 2)
        rc = lv_error("%s: SentencePiece model type %llu is not supported (BPE, type 2, is; "
                      "unigram models are not)", name, (unsigned long long)sp.model_type);
    if (rc == LV_OK && sp.whitespace_suffix)
        rc = lv_error("%s: treat_whitespace_as_suffix is not supported", name);
    if (rc == LV_OK && sp.charsmap_len > 0)
        rc = lv_error("%s: normaliser '%s' (a precompiled character map) is not supported; "
                      "LLaMA's is 'identity'", name, sp.normalizer);
    if (rc == LV_OK) {
        tok->byte_fallback = sp.byte_fallback != 0;
        tok->fuse_unk = true;
        tok->escape_ws = sp.escape_ws;
        tok->remove_extra_ws = sp.remove_extra_ws;
        tok->prefix = sp.add_dummy_prefix ? TOK_PREFIX_TEXT : TOK_PREFIX_NONE;
        tok->strip = sp.add_dummy_prefix ? TOK_STRIP_PIECE : TOK_STRIP_NONE;
        int64_t *ids[4] = { &sp.unk, &sp.bos, &sp.eos, &sp.pad };
        int32_t *dst[4] = { &tok->unk, &tok->bos, &tok->eos, &tok->pad };
        for (int i = 0; i < 4; i++)
            *dst[i] = *ids[i] >= 0 && *ids[i] < tok->n ? (int32_t)*ids[i] : -1;
        rc = tok_finish(tok, name);
    }
    return loaded(tok, rc, "SentencePiece tokenizer.model", out);
}

/* ----------------------------------------------------------------------------------------
 * tokenizer.json
 */

static const char *jstr(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static bool jtrue(const json_t *o, const char *key)
{
    return json_is_true(json_object_get(o, key));
}

/* the normaliser: none, or the legacy Sequence[Prepend "▁", Replace " " -> "▁"] */
static int json_normalizer(lv_tokenizer *tok, const json_t *n, const char *name)
{
    if (!n || json_is_null(n))
        return LV_OK;
    const char *type = jstr(n, "type");
    if (!type)
        return lv_error("%s: normalizer without a type", name);
    if (strcmp(type, "Sequence") == 0) {
        const json_t *list = json_object_get(n, "normalizers");
        size_t i;
        const json_t *item;
        if (!json_is_array(list))
            return lv_error("%s: normalizer Sequence without a list", name);
        json_array_foreach(list, i, item) {
            int rc = json_normalizer(tok, item, name);
            if (rc)
                return rc;
        }
        return LV_OK;
    }
    if (strcmp(type, "Prepend") == 0) {
        const char *p = jstr(n, "prepend");
        if (!p || strcmp(p, SPACE_SYMBOL) != 0)
            return lv_error("%s: normalizer Prepend '%s' is not supported (only \"▁\")", name,
                            p ? p : "?");
        tok->prefix = TOK_PREFIX_SEGMENT;
        return LV_OK;
    }
    if (strcmp(type, "Replace") == 0) {
        const char *pat = jstr(json_object_get(n, "pattern"), "String"),
                   *with = jstr(n, "content");
        if (!pat || !with || strcmp(pat, " ") != 0 || strcmp(with, SPACE_SYMBOL) != 0)
            return lv_error("%s: normalizer Replace is supported for \" \" -> \"▁\" only",
                            name);
        tok->escape_ws = true;
        return LV_OK;
    }
    return lv_error("%s: normalizer '%s' is not supported (LLaMA's Prepend and Replace are)",
                    name, type);
}

static int json_pretokenizer(lv_tokenizer *tok, const json_t *p, const char *name)
{
    if (!p || json_is_null(p))
        return LV_OK;
    const char *type = jstr(p, "type");
    if (type && strcmp(type, "Sequence") == 0) {
        const json_t *list = json_object_get(p, "pretokenizers");
        if (json_is_array(list) && json_array_size(list) == 1)
            return json_pretokenizer(tok, json_array_get(list, 0), name);
    }
    if (!type || strcmp(type, "Metaspace") != 0)
        return lv_error("%s: pre_tokenizer '%s' is not supported (byte-level BPE such as "
                        "GPT-2's or Llama 3's is not; Metaspace is)", name, type ? type : "?");
    const char *rep = jstr(p, "replacement"), *scheme = jstr(p, "prepend_scheme");
    if (rep && strcmp(rep, SPACE_SYMBOL) != 0)
        return lv_error("%s: Metaspace replacement '%s' is not supported", name, rep);
    tok->escape_ws = true;
    const json_t *add = json_object_get(p, "add_prefix_space");
    if (scheme)
        tok->prefix = strcmp(scheme, "first") == 0    ? TOK_PREFIX_FIRST
                      : strcmp(scheme, "always") == 0 ? TOK_PREFIX_ALWAYS
                                                      : TOK_PREFIX_NONE;
    else
        tok->prefix = !add || json_is_true(add) ? TOK_PREFIX_ALWAYS : TOK_PREFIX_NONE;
    const json_t *split = json_object_get(p, "split");
    tok->split_words = !split || json_is_true(split);
    return LV_OK;
}

static void json_decoder(lv_tokenizer *tok, const json_t *d)
{
    const char *type = jstr(d, "type");
    if (!type)
        return;
    if (strcmp(type, "Sequence") == 0) {
        size_t i;
        const json_t *item;
        json_array_foreach(json_object_get(d, "decoders"), i, item)
            json_decoder(tok, item);
    } else if (strcmp(type, "Strip") == 0) {
        const json_t *start = json_object_get(d, "start");
        if (json_is_integer(start) && json_integer_value(start) > 0)
            tok->strip = TOK_STRIP_TEXT;
    } else if (strcmp(type, "Metaspace") == 0) {
        const char *scheme = jstr(d, "prepend_scheme");
        const json_t *add = json_object_get(d, "add_prefix_space");
        bool on = scheme ? strcmp(scheme, "never") != 0 : !add || json_is_true(add);
        tok->strip = on ? TOK_STRIP_PIECE : TOK_STRIP_NONE;
    }
}

/* a merge's two halves, from "a b" or ["a", "b"] */
static int merge_halves(const json_t *m, const char **a, size_t *na, const char **b,
                        size_t *nb)
{
    if (json_is_string(m)) {
        const char *s = json_string_value(m);
        size_t n = json_string_length(m);
        const char *sp = memchr(s, ' ', n);
        if (!sp)
            return LV_ERR;
        *a = s;
        *na = (size_t)(sp - s);
        *b = sp + 1;
        *nb = n - *na - 1;
        return LV_OK;
    }
    if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
        json_is_string(json_array_get(m, 1))) {
        *a = json_string_value(json_array_get(m, 0));
        *na = json_string_length(json_array_get(m, 0));
        *b = json_string_value(json_array_get(m, 1));
        *nb = json_string_length(json_array_get(m, 1));
        return LV_OK;
    }
    return LV_ERR;
}

static int json_model(lv_tokenizer *tok, const json_t *root, const char *name)
{
    const json_t *model = json_object_get(root, "model"), *vocab, *merges, *added, *item;
    const char *type = jstr(model, "type"), *key;
    if (!json_is_object(model))
        return lv_error("%s: no \"model\" object", name);
    if (type && strcmp(type, "BPE") != 0)
        return lv_error("%s: model type '%s' is not supported (BPE is)", name, type);
    const char *cont = jstr(model, "continuing_subword_prefix"),
               *suffix = jstr(model, "end_of_word_suffix");
    if ((cont && *cont) || (suffix && *suffix))
        return lv_error("%s: BPE with subword prefixes or word suffixes is not supported",
                        name);
    const json_t *dropout = json_object_get(model, "dropout");
    if (dropout && !json_is_null(dropout) && json_number_value(dropout) != 0.0)
        return lv_error("%s: BPE dropout is set; lavinia encodes deterministically", name);
    vocab = json_object_get(model, "vocab");
    merges = json_object_get(model, "merges");
    added = json_object_get(root, "added_tokens");
    if (!json_is_object(vocab) || !json_is_array(merges))
        return lv_error("%s: model BPE needs a \"vocab\" object and a \"merges\" array", name);
    if (added && !json_is_array(added))
        return lv_error("%s: \"added_tokens\" is not an array", name);
    /* id -> piece, over the vocabulary and the added tokens */
    int64_t n = 0;
    json_t *v;
    size_t i;
    json_object_foreach((json_t *)vocab, key, v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            json_integer_value(v) >= TOK_MAX_VOCAB)
            return lv_error("%s: vocab entry '%.40s' has no valid id", name, key);
        if (json_integer_value(v) + 1 > n)
            n = json_integer_value(v) + 1;
    }
    json_array_foreach(added, i, item) {
        const json_t *id = json_object_get(item, "id");
        if (!json_is_integer(id) || json_integer_value(id) < 0 ||
            json_integer_value(id) >= TOK_MAX_VOCAB || !jstr(item, "content"))
            return lv_error("%s: added token %zu has no valid id or content", name, i);
        if (json_integer_value(id) + 1 > n)
            n = json_integer_value(id) + 1;
    }
    const char **piece = calloc((size_t)n + 1, sizeof *piece);
    size_t *plen = calloc((size_t)n + 1, sizeof *plen);
    uint8_t *ptype = calloc((size_t)n + 1, 1);
    int rc = piece && plen && ptype ? LV_OK : lv_error_status(LV_ENOMEM, "%s: out of memory",
                                                              name);
    json_object_foreach((json_t *)vocab, key, v) {
        int64_t id = json_integer_value(v);
        if (rc == LV_OK && piece[id])
            rc = lv_error("%s: id %lld is both '%.40s' and '%.40s'", name, (long long)id,
                          piece[id], key);
        if (rc == LV_OK) {
            piece[id] = key;
            plen[id] = strlen(key);
            ptype[id] = LV_TOK_NORMAL;
        }
    }
    json_array_foreach(added, i, item) {
        if (rc != LV_OK)
            break;
        int64_t id = json_integer_value(json_object_get(item, "id"));
        const json_t *content = json_object_get(item, "content");
        const char *c = json_string_value(content);
        size_t cn = json_string_length(content);
        if (piece[id] && (plen[id] != cn || memcmp(piece[id], c, cn) != 0)) {
            rc = lv_error("%s: added token %lld '%.40s' differs from the vocabulary's '%.40s'",
                          name, (long long)id, c, piece[id]);
            break;
        }
        piece[id] = c;
        plen[id] = cn;
        bool special = jtrue(item, "special");
        ptype[id] = special ? LV_TOK_CONTROL : LV_TOK_USER_DEFINED;
        struct tok_special sp = { .id = (int32_t)id, .special = special,
                                  .resets_prefix = true, .lstrip = jtrue(item, "lstrip"),
                                  .rstrip = jtrue(item, "rstrip"),
                                  .single_word = jtrue(item, "single_word") };
        if (cn == 0)
            rc = lv_error("%s: added token %lld is empty", name, (long long)id);
        else
            rc = tok_add_special(tok, &sp);
    }
    tok->byte_fallback = jtrue(model, "byte_fallback");
    tok->fuse_unk = jtrue(model, "fuse_unk");
    tok->ignore_merges = jtrue(model, "ignore_merges");
    const char *unk = jstr(model, "unk_token");
    for (int64_t id = 0; rc == LV_OK && id < n; id++) {
        if (!piece[id]) {
            rc = lv_error("%s: id %lld has no piece (ids must run 0..%lld)", name,
                          (long long)id, (long long)n - 1);
            break;
        }
        int t = ptype[id];
        if (unk && strcmp(piece[id], unk) == 0)
            t = LV_TOK_UNKNOWN;      /* <0xNN> pieces become BYTE in tok_finish */
        rc = tok_add_piece(tok, piece[id], plen[id], 0.0f, t, name);
    }
    free(piece);
    free(plen);
    free(ptype);
    if (rc == LV_OK)
        rc = tok_finish(tok, name);
    if (rc != LV_OK)
        return rc;
    /* merges by rank; each half and the result must be pieces */
    size_t nm = json_array_size(merges);
    uint32_t size = 1;
    while (size < 2 * nm + 2)
        size *= 2;
    tok->merges = malloc(size * sizeof *tok->merges);
    if (!tok->merges)
        return lv_error_status(LV_ENOMEM, "%s: out of memory", name);
    memset(tok->merges, 0xff, size * sizeof *tok->merges);
    tok->merge_mask = size - 1;
    tok->rank_merges = true;
    char joined[2 * TOK_MAX_PIECE + 2];
    json_array_foreach(merges, i, item) {
        const char *a, *b;
        size_t na, nb;
        if (merge_halves(item, &a, &na, &b, &nb) != LV_OK)
            return lv_error("%s: merge %zu is not \"a b\" or [\"a\", \"b\"]", name, i);
        int32_t ia = lv_tok_find(tok, a, na), ib = lv_tok_find(tok, b, nb);
        if (ia < 0 || ib < 0)
            return lv_error("%s: merge %zu '%.*s %.*s' names a token that is not in the "
                            "vocabulary", name, i, (int)(na > 40 ? 40 : na), a,
                            (int)(nb > 40 ? 40 : nb), b);
        memcpy(joined, a, na);
        memcpy(joined + na, b, nb);
        int32_t id = lv_tok_find(tok, joined, na + nb);
        if (id < 0)
            return lv_error("%s: merge %zu makes '%.*s', which is not in the vocabulary", name,
                            i, (int)(na + nb > 80 ? 80 : na + nb), joined);
        if ((rc = tok_add_merge(tok, ia, ib, (int32_t)i, id)))
            return rc;
    }
    return LV_OK;
}

int lv_tok_load_json(lv_tokenizer **out, const void *buf, size_t n, const char *name)
{
    json_error_t err;
    json_t *root = json_loadb(buf, n, JSON_REJECT_DUPLICATES, &err);
    if (!root)
        return lv_error("%s: not valid JSON: %s (line %d, column %d)", name, err.text,
                        err.line, err.column);
    lv_tokenizer *tok = tok_new(LV_TOK_SRC_JSON);
    int rc = tok ? LV_OK : lv_error_status(LV_ENOMEM, "%s: out of memory", name);
    if (rc == LV_OK && !json_is_object(root))
        rc = lv_error("%s: not a tokenizer.json (the top level is not an object)", name);
    if (rc == LV_OK) {
        tok->escape_ws = false;
        tok->parse_special = true;
        if ((rc = json_normalizer(tok, json_object_get(root, "normalizer"), name)) == LV_OK &&
            (rc = json_pretokenizer(tok, json_object_get(root, "pre_tokenizer"), name)) ==
                LV_OK) {
            json_decoder(tok, json_object_get(root, "decoder"));
            rc = json_model(tok, root, name);
        }
    }
    if (rc == LV_OK) {
        tok->bos = lv_tok_find(tok, "<s>", 3);
        tok->eos = lv_tok_find(tok, "</s>", 4);
        const char *unk = jstr(json_object_get(root, "model"), "unk_token");
        tok->unk = unk ? lv_tok_find(tok, unk, strlen(unk)) : -1;
    }
    json_decref(root);
    return loaded(tok, rc, "Hugging Face tokenizer.json", out);
}

/* the chat template of a model directory: tokenizer_config.json's "chat_template" (a string,
 * or a list of {name, template} where "default" counts), chat_template.json, or
 * chat_template.jinja */
static void dir_template(lv_tokenizer *tok, const char *dir, const json_t *config)
{
    const json_t *t = json_object_get(config, "chat_template");
    const char *s = json_is_string(t) ? json_string_value(t) : NULL;
    size_t i;
    const json_t *item;
    json_array_foreach(json_is_array(t) ? t : NULL, i, item) {
        const char *name = jstr(item, "name");
        if (name && strcmp(name, "default") == 0)
            s = jstr(item, "template");
    }
    char path[4200], *text;
    size_t n;
    json_t *root = NULL;
    if (!s) {
        snprintf(path, sizeof path, "%s/chat_template.json", dir);
        if (lv_read_file(path, TOK_FILE_MAX, &text, &n) == LV_OK) {
            root = json_loadb(text, n, 0, NULL);
            free(text);
            s = jstr(root, "chat_template");
        }
    }
    if (s) {
        tok->chat_template = strdup(s);
    } else {
        snprintf(path, sizeof path, "%s/chat_template.jinja", dir);
        if (lv_read_file(path, TOK_FILE_MAX, &text, &n) == LV_OK)
            tok->chat_template = text;
    }
    json_decref(root);
}

/* special ids, flags and the chat template from tokenizer_config.json, when present */
static void json_config(lv_tokenizer *tok, const char *dir)
{
    char path[4200], *text;
    size_t n;
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    if (lv_read_file(path, TOK_FILE_MAX, &text, &n) != LV_OK) {
        dir_template(tok, dir, NULL);
        return;           /* optional: the tokenizer files alone are complete */
    }
    json_t *root = json_loadb(text, n, 0, NULL);
    free(text);
    dir_template(tok, dir, root);
    static const char *const keys[] = { "bos_token", "eos_token", "pad_token" };
    int32_t *ids[] = { &tok->bos, &tok->eos, &tok->pad };
    for (int i = 0; root && i < 3; i++) {
        const json_t *v = json_object_get(root, keys[i]);
        const char *s = json_is_string(v) ? json_string_value(v) : jstr(v, "content");
        int32_t id = s ? lv_tok_find(tok, s, strlen(s)) : -1;
        if (id >= 0)
            *ids[i] = id;
    }
    json_decref(root);
}

int lv_tok_add_tokens_json(lv_tokenizer *tok, const void *buf, size_t n, const char *name)
{
    json_error_t err;
    json_t *root = json_loadb(buf, n, JSON_REJECT_DUPLICATES, &err), *v;
    const char *key;
    if (!root)
        return lv_error("%s: not valid JSON: %s (line %d)", name, err.text, err.line);
    int rc = json_is_object(root) ? LV_OK : lv_error("%s: not an object", name);
    /* in id order: each new id must be the next one */
    for (int32_t want = tok->n; rc == LV_OK;) {
        bool found = false;
        json_object_foreach(root, key, v) {
            if (!json_is_integer(v) || json_integer_value(v) < 0)
                return json_decref(root), lv_error("%s: '%.40s' has no valid id", name, key);
            int64_t id = json_integer_value(v);
            size_t plen;
            const char *have = id < tok->n ? lv_tok_piece(tok, (int32_t)id, &plen) : NULL;
            if (have && (plen != strlen(key) || memcmp(have, key, plen) != 0) && rc == LV_OK)
                rc = lv_error("%s: '%.40s' is id %lld, which is '%.40s' in the vocabulary",
                              name, key, (long long)id, lv_tok_piece(tok, (int32_t)id, NULL));
            if (id == want && rc == LV_OK) {
                rc = tok_add_piece(tok, key, strlen(key), 0.0f, LV_TOK_USER_DEFINED, name);
                found = true;
            }
        }
        if (!found)
            break;
        want = tok->n;
    }
    json_object_foreach(root, key, v) {
        int64_t id = json_integer_value(v);
        if (rc == LV_OK && id >= tok->n)
            rc = lv_error("%s: '%.40s' has id %lld, past the %d pieces", name, key,
                          (long long)id, tok->n);
        struct tok_special sp = { .id = (int32_t)id, .special = false, .resets_prefix = true };
        if (rc == LV_OK && *key)
            rc = tok_add_special(tok, &sp);
    }
    json_decref(root);
    if (rc == LV_OK)
        rc = tok_finish(tok, name);
    if (rc == LV_OK)
        describe(tok, "SentencePiece tokenizer.model with added_tokens.json");
    return rc;
}

/* ----------------------------------------------------------------------------------------
 * GGUF and tokenizer.bin
 */

int lv_tok_load_gguf(lv_tokenizer **out, const struct lv_gguf_file *f)
{
    const char *model;
    int rc;
    if (!lv_gguf_find(f, "tokenizer.ggml.model"))
        return lv_error("%s: no vocabulary (tokenizer.ggml.model is missing)", f->path);
    if ((rc = lv_gguf_get_str(f, "tokenizer.ggml.model", &model, NULL)))
        return rc;
    if (strcmp(model, "llama") != 0)
        return lv_error("%s: tokenizer.ggml.model '%s' is not supported (\"llama\", "
                        "SentencePiece BPE, is)", f->path, model);
    const lv_gguf_str *tokens;
    const float *scores = NULL;
    const int32_t *types = NULL;
    uint64_t n, ns = 0, nt = 0;
    if ((rc = lv_gguf_get_str_arr(f, "tokenizer.ggml.tokens", &tokens, &n)))
        return rc;
    if (lv_gguf_find(f, "tokenizer.ggml.scores") &&
        (rc = lv_gguf_get_arr(f, "tokenizer.ggml.scores", LV_GGUF_TYPE_FLOAT32,
                              (const void **)&scores, &ns)))
        return rc;
    if (lv_gguf_find(f, "tokenizer.ggml.token_type") &&
        (rc = lv_gguf_get_arr(f, "tokenizer.ggml.token_type", LV_GGUF_TYPE_INT32,
                              (const void **)&types, &nt)))
        return rc;
    if ((scores && ns != n) || (types && nt != n))
        return lv_error("%s: %llu tokens but %llu scores and %llu token types", f->path,
                        (unsigned long long)n, (unsigned long long)ns,
                        (unsigned long long)nt);
    lv_tokenizer *tok = tok_new(LV_TOK_SRC_GGUF);
    if (!tok)
        return lv_error_status(LV_ENOMEM, "%s: out of memory", f->path);
    for (uint64_t i = 0; rc == LV_OK && i < n; i++) {
        float score = scores ? scores[i] : 0.0f;
        int type = types ? types[i] : LV_TOK_NORMAL;
        if (!isfinite(score))
            rc = lv_error("%s: token %llu has a score that is not finite", f->path,
                          (unsigned long long)i);
        else if (tokens[i].n == 0)
            rc = lv_error("%s: token %llu is empty", f->path, (unsigned long long)i);
        else
            rc = tok_add_piece(tok, tokens[i].s, tokens[i].n, score, type, f->path);
        if (type == LV_TOK_BYTE)
            tok->byte_fallback = true;
    }
    static const char *const keys[] = { "tokenizer.ggml.unknown_token_id",
                                         "tokenizer.ggml.bos_token_id",
                                         "tokenizer.ggml.eos_token_id",
                                         "tokenizer.ggml.padding_token_id" };
    static const int32_t defaults[] = { 0, 1, 2, -1 };
    int32_t *dst[] = { &tok->unk, &tok->bos, &tok->eos, &tok->pad };
    for (int i = 0; rc == LV_OK && i < 4; i++) {
        int64_t v = defaults[i];
        if (lv_gguf_find(f, keys[i]) && (rc = lv_gguf_get_int(f, keys[i], &v)))
            break;
        *dst[i] = v >= 0 && v < tok->n ? (int32_t)v : -1;
    }
    bool prefix = true, extra = false;
    if (rc == LV_OK && lv_gguf_find(f, "tokenizer.ggml.add_space_prefix"))
        rc = lv_gguf_get_bool(f, "tokenizer.ggml.add_space_prefix", &prefix);
    if (rc == LV_OK && lv_gguf_find(f, "tokenizer.ggml.remove_extra_whitespaces"))
        rc = lv_gguf_get_bool(f, "tokenizer.ggml.remove_extra_whitespaces", &extra);
    if (rc == LV_OK) {
        tok->prefix = prefix ? TOK_PREFIX_TEXT : TOK_PREFIX_NONE;
        tok->strip = prefix ? TOK_STRIP_PIECE : TOK_STRIP_NONE;
        tok->remove_extra_ws = extra;
        tok->fuse_unk = true;
        rc = tok_finish(tok, f->path);
    }
    if (rc != LV_OK) {
        lv_tok_free(tok);
        return rc;
    }
    const char *tmpl;
    if (lv_gguf_find(f, "tokenizer.chat_template") &&
        lv_gguf_get_str(f, "tokenizer.chat_template", &tmpl, NULL) == LV_OK)
        tok->chat_template = strdup(tmpl);
    describe(tok, "GGUF vocabulary");
    *out = tok;
    return LV_OK;
}

/* the records of a tokenizer.bin: max length, then (score, length, bytes) to the end */
static int64_t l2c_count(const uint8_t *p, size_t n)
{
    size_t at = 4;
    int64_t count = 0;
    if (n < 4)
        return -1;
    while (at < n) {
        int32_t len;
        if (n - at < 8)
            return -1;
        memcpy(&len, p + at + 4, 4);
        if (len < 0 || (size_t)len > n - at - 8)
            return -1;
        at += 8 + (size_t)len;
        count++;
    }
    return count;
}

int lv_tok_load_llama2c(lv_tokenizer **out, const void *buf, size_t n, const char *name,
                        int64_t vocab_size)
{
    if (vocab_size <= 0 && (vocab_size = l2c_count(buf, n)) <= 0)
        return lv_error("%s: not a llama2.c tokenizer.bin (its records do not add up to the "
                        "file)", name);
    lv_l2c_tokenizer t;
    int rc = lv_l2c_tokenizer_open_mem(&t, buf, n, name, vocab_size);
    if (rc)
        return rc;
    lv_tokenizer *tok = tok_new(LV_TOK_SRC_LLAMA2C);
    if (!tok) {
        lv_l2c_tokenizer_close(&t);
        return lv_error_status(LV_ENOMEM, "%s: out of memory", name);
    }
    /* export.py wrote "▁" as ' ' and BOS/EOS as "\n<s>\n" and "\n</s>\n": undo both */
    char piece[4 * TOK_MAX_PIECE];
    for (int64_t i = 0; rc == LV_OK && i < vocab_size; i++) {
        size_t len, k = 0;
        const char *s = lv_l2c_tokenizer_piece(&t, i, &len);
        if (len == 5 && memcmp(s, "\n<s>\n", 5) == 0)
            s = "<s>", len = 3;
        else if (len == 6 && memcmp(s, "\n</s>\n", 6) == 0)
            s = "</s>", len = 4;
        if (len > TOK_MAX_PIECE) {
            rc = lv_error("%s: piece %lld is %zu bytes long", name, (long long)i, len);
            break;
        }
        for (size_t j = 0; j < len; j++)
            if (s[j] == ' ') {
                memcpy(piece + k, SPACE_SYMBOL, 3);
                k += 3;
            } else {
                piece[k++] = s[j];
            }
        int type = i == 0 ? LV_TOK_UNKNOWN : i <= 2 ? LV_TOK_CONTROL : LV_TOK_NORMAL;
        if (k == 6 && memcmp(piece, "<0x", 3) == 0 && piece[5] == '>') {
            type = LV_TOK_BYTE;
            tok->byte_fallback = true;
        }
        if (k == 0)
            rc = lv_error("%s: piece %lld is empty", name, (long long)i);
        else
            rc = tok_add_piece(tok, piece, k, t.scores[i], type, name);
    }
    lv_l2c_tokenizer_close(&t);
    if (rc == LV_OK) {
        tok->unk = 0;
        tok->bos = tok->n > 1 ? 1 : -1;
        tok->eos = tok->n > 2 ? 2 : -1;
        tok->prefix = TOK_PREFIX_TEXT;
        tok->strip = TOK_STRIP_PIECE;
        tok->fuse_unk = true;
        rc = tok_finish(tok, name);
    }
    return loaded(tok, rc, "llama2.c tokenizer.bin", out);
}

/* ----------------------------------------------------------------------------------------
 * opening a path
 */

static int open_file_as(lv_tokenizer **out, const char *path, int64_t vocab_hint);

static bool exists(const char *dir, const char *name, char *path, size_t n)
{
    struct stat st;
    snprintf(path, n, "%s/%s", dir, name);
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int open_dir(lv_tokenizer **out, const char *dir)
{
    char path[4200], added[4200];
    int rc;
    if (exists(dir, "tokenizer.json", path, sizeof path)) {
        if ((rc = open_file_as(out, path, 0)) == LV_OK)
            json_config(*out, dir);
        return rc;
    }
    if (!exists(dir, "tokenizer.model", path, sizeof path))
        return lv_error("%s: no tokenizer.json or tokenizer.model", dir);
    if ((rc = open_file_as(out, path, 0)))
        return rc;
    if (exists(dir, "added_tokens.json", added, sizeof added)) {
        char *text;
        size_t n;
        rc = lv_read_file(added, TOK_FILE_MAX, &text, &n);
        if (rc == LV_OK) {
            rc = lv_tok_add_tokens_json(*out, text, n, added);
            free(text);
        }
        if (rc != LV_OK) {
            lv_tok_free(*out);
            *out = NULL;
        }
    }
    if (rc == LV_OK)
        json_config(*out, dir);
    return rc;
}

/* a file by its content */
static int open_file_as(lv_tokenizer **out, const char *path, int64_t vocab_hint)
{
    FILE *f = fopen(path, "rb");
    unsigned char head[16] = { 0 };
    size_t got = f ? fread(head, 1, sizeof head, f) : 0;
    if (!f)
        return lv_error_status(LV_EIO, "%s: cannot open: %s", path, strerror(errno));
    fclose(f);
    if (got >= 4 && memcmp(head, "GGUF", 4) == 0) {
        lv_gguf_file g;
        int rc = lv_gguf_open(&g, path);
        if (rc)
            return rc;
        rc = lv_tok_load_gguf(out, &g);
        lv_gguf_close(&g);
        return rc;
    }
    char *text;
    size_t n;
    int rc = lv_read_file(path, TOK_FILE_MAX, &text, &n);
    if (rc)
        return rc;
    size_t i = 0;
    while (i < n && (text[i] == ' ' || text[i] == '\n' || text[i] == '\r' || text[i] == '\t'))
        i++;
    if (n == 0)
        rc = lv_error("%s: empty file", path);
    else if (i < n && text[i] == '{')
        rc = lv_tok_load_json(out, text, n, path);
    else if ((unsigned char)text[0] == 0x0a && vocab_hint == 0 && l2c_count((uint8_t *)text, n) < 0)
        rc = lv_tok_load_spm(out, text, n, path);
    else if (vocab_hint > 0 || l2c_count((uint8_t *)text, n) > 0)
        rc = lv_tok_load_llama2c(out, text, n, path, vocab_hint);
    else {
        lv_l2c_file m;
        if (lv_l2c_open_mem(&m, text, n, path) == LV_OK) {
            rc = lv_error("%s: a llama2.c model: give its tokenizer.bin with -t", path);
            lv_l2c_close(&m);
        } else {
            rc = lv_error("%s: not a tokenizer lavinia reads (tokenizer.model, tokenizer.json, "
                          "GGUF, llama2.c tokenizer.bin)", path);
        }
    }
    free(text);
    return rc;
}

int lv_tok_open(lv_tokenizer **out, const char *path, const char *tok_file)
{
    struct stat st;
    *out = NULL;
    if (stat(path, &st) != 0)
        return lv_error_status(LV_EIO, "%s: cannot open: %s", path, strerror(errno));
    if (!tok_file)
        return S_ISDIR(st.st_mode) ? open_dir(out, path) : open_file_as(out, path, 0);
    /* an explicit tokenizer file; a llama2.c model tells its tokenizer.bin's size */
    int64_t hint = 0;
    lv_l2c_file m;
    if (S_ISREG(st.st_mode) && lv_l2c_open(&m, path) == LV_OK) {
        hint = m.config.vocab;
        lv_l2c_close(&m);
    }
    return open_file_as(out, tok_file, hint);
}

/* ----------------------------------------------------------------------------------------
 * the vocabulary as GGUF keys
 */

int lv_tok_write_gguf(const lv_tokenizer *tok, struct lv_gguf_writer *w, int64_t n_rows)
{
    int32_t n = n_rows > tok->n && n_rows <= TOK_MAX_VOCAB ? (int32_t)n_rows : tok->n;
    const char **strs = malloc((size_t)n * sizeof *strs);
    uint64_t *lens = malloc((size_t)n * sizeof *lens);
    float *scores = malloc((size_t)n * sizeof *scores);
    int32_t *types = malloc((size_t)n * sizeof *types);
    char *pads = malloc((size_t)(n - tok->n + 1) * 16);
    int rc = strs && lens && scores && types && pads
                 ? LV_OK
                 : lv_error_status(LV_ENOMEM, "out of memory");
    for (int32_t i = 0; rc == LV_OK && i < n; i++) {
        if (i >= tok->n) {
            char *p = pads + (size_t)(i - tok->n) * 16;
            lens[i] = (uint64_t)snprintf(p, 16, "[PAD%d]", i);
            strs[i] = p;
            types[i] = LV_TOK_UNUSED;
            scores[i] = -1000.0f;
            continue;
        }
        strs[i] = tok->text + tok->off[i];
        lens[i] = tok->len[i];
        types[i] = tok->type[i];
        scores[i] = tok->rank_merges ? (tok->type[i] == LV_TOK_NORMAL ? -1e9f : 0.0f)
                                     : tok->score[i];
    }
    /* rank-based merges become scores: an earlier merge's result scores higher */
    for (uint32_t h = 0; rc == LV_OK && tok->rank_merges && h <= tok->merge_mask; h++) {
        const struct tok_merge *m = &tok->merges[h];
        if (m->id >= 0 && -(float)m->rank > scores[m->id])
            scores[m->id] = -(float)m->rank;
    }
    if (rc == LV_OK &&
        (rc = lv_gguf_writer_add_str(w, "tokenizer.ggml.model", "llama")) == LV_OK &&
        (rc = lv_gguf_writer_add_str(w, "tokenizer.ggml.pre", "default")) == LV_OK &&
        (rc = lv_gguf_writer_add_str_arr(w, "tokenizer.ggml.tokens", strs, lens,
                                         (uint64_t)n)) == LV_OK &&
        (rc = lv_gguf_writer_add_arr(w, "tokenizer.ggml.scores", LV_GGUF_TYPE_FLOAT32, scores,
                                     (uint64_t)n)) == LV_OK &&
        (rc = lv_gguf_writer_add_arr(w, "tokenizer.ggml.token_type", LV_GGUF_TYPE_INT32,
                                     types, (uint64_t)n)) == LV_OK) {
        static const char *const keys[] = { "tokenizer.ggml.unknown_token_id",
                                             "tokenizer.ggml.bos_token_id",
                                             "tokenizer.ggml.eos_token_id",
                                             "tokenizer.ggml.padding_token_id" };
        const int32_t ids[] = { tok->unk, tok->bos, tok->eos, tok->pad };
        for (int i = 0; rc == LV_OK && i < 4; i++)
            if (ids[i] >= 0)
                rc = lv_gguf_writer_add_u32(w, keys[i], (uint32_t)ids[i]);
        if (rc == LV_OK)
            rc = lv_gguf_writer_add_bool(w, "tokenizer.ggml.add_space_prefix",
                                         tok->prefix != TOK_PREFIX_NONE);
    }
    free(strs);
    free(lens);
    free(scores);
    free(types);
    free(pads);
    return rc;
}
