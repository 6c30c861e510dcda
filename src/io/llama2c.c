/*
 * llama2c.c: reader for karpathy/llama2.c checkpoints (version 0) and tokenizer.bin.
 *
 * CHECKPOINT (".bin", "version 0", what llama2.c's run.c reads and export.py's
 * legacy_export writes). Little-endian, no padding, no magic:
 *
 *     offset  size  field
 *          0     4  int32 dim          C, the model width
 *          4     4  int32 hidden_dim   F, the FFN width
 *          8     4  int32 n_layers     L
 *         12     4  int32 n_heads      H
 *         16     4  int32 n_kv_heads   KV (grouped-query attention when KV < H)
 *         20     4  int32 vocab_size   V; NEGATIVE when the classifier is not shared with the
 *                                      embedding: then |vocab_size| is V and wcls is stored last
 *         24     4  int32 seq_len      T, the context length
 *         28        float32 arrays, back to back, each row-major [out, in]:
 *
 *     token_embedding_table [V, C]        rms_att_weight [L, C]
 *     wq [L, C, C]     wk [L, KV*D, C]    wv [L, KV*D, C]    wo [L, C, C]
 *     rms_ffn_weight [L, C]
 *     w1 [L, F, C]     w2 [L, C, F]       w3 [L, F, C]
 *     rms_final_weight [C]
 *     freq_cis_real [T, D/2]              freq_cis_imag [T, D/2]   (run.c skips both)
 *     wcls [V, C]                         (only when vocab_size < 0)
 *
 * with D = C / H the head size. Per-layer tensors are grouped by kind across all layers, not
 * layer by layer. Nothing else is in the file, so its size must be exactly 28 + 4 * (the sum
 * of all the array sizes); that equality is the only integrity check the format allows, and
 * it is enforced. wq and wk rows are in Meta's adjacent-pair rotary order (LV_QK_META).
 *
 * Versions 1 and 2 (export.py --version 1/2) start with the u32 magic 0x616b3432 ("ak42")
 * and a 256-byte header; they are refused with advice. So are PyTorch checkpoints (zip or
 * pickle), which people pass by mistake.
 *
 * TOKENIZER.BIN (llama2.c tokenizer.py):
 *
 *     offset  size  field
 *          0     4  u32 max_token_length   the longest piece, in bytes (27 for Llama-2)
 *          4        vocab_size records, vocab_size taken from the model header:
 *                   f32 score, i32 len, len bytes of piece (no NUL; may contain any byte)
 *
 * and nothing after the last record.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "io/llama2c.h"
#include "io/fileutil.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lavinia/error.h"

/* The version-0 header: 7 int32. */
#define L2C_HEADER_BYTES 28
/* Versions 1 and 2 start with this u32 (the bytes "24ka"; export.py writes 0x616b3432). */
#define L2C_MAGIC_AK42 0x616b3432u
/* The layer-wise weights each layer contributes, in lv_l2c_tensor_at order. */
#define L2C_PER_LAYER 9

/* tokenizer.bin limits. The Llama-2 file is 433869 bytes; 1 GiB is far above any real one
 * and keeps every offset in 32 bits. */
#define TOK_MAX_BYTES ((uint64_t)1 << 30)
/* The vocabulary bound of lv_model_config_check (model-config.c MAX_VOCAB). */
#define TOK_MAX_VOCAB ((int64_t)1 << 24)
/* No real piece is near this; it bounds the buffers an encoder sizes from max_token_length. */
#define TOK_MAX_TOKEN_LENGTH (1u << 16)

/* ----------------------------------------------------------------------------------------
 * little-endian reads (the data may be unaligned)
 */

static uint32_t rd_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int32_t rd_i32(const uint8_t *p)
{
    uint32_t u = rd_u32(p);
    int32_t v;
    memcpy(&v, &u, 4);
    return v;
}

static float rd_f32(const uint8_t *p)
{
    uint32_t u = rd_u32(p);
    float v;
    memcpy(&v, &u, 4);
    return v;
}

/* ----------------------------------------------------------------------------------------
 * mapping a file
 */


/* ----------------------------------------------------------------------------------------
 * checkpoint: header and sizes
 */

/* a * b * c, false on overflow */
static bool mul3(uint64_t a, uint64_t b, uint64_t c, uint64_t *r)
{
    uint64_t ab;
    return !__builtin_mul_overflow(a, b, &ab) && !__builtin_mul_overflow(ab, c, r);
}

/* Files people pass by mistake. Called only once the bytes have failed as a version-0 file,
 * so a real model whose first int32 happens to start with these bytes is never refused. */
static int refuse_foreign(const uint8_t *p, uint64_t n, const char *name)
{
    if (n >= 4 && memcmp(p, "PK\x03\x04", 4) == 0)
        return lv_error("%s: is a PyTorch checkpoint (zip/pickle), not a llama2.c export; "
                        "convert it to safetensors (e.g. with transformers' "
                        "save_pretrained(safe_serialization=True))", name);
    if (n >= 2 && p[0] == 0x80 && p[1] >= 2 && p[1] <= 5)
        return lv_error("%s: is a PyTorch checkpoint (zip/pickle, pickle protocol %d), not a "
                        "llama2.c export; convert it to safetensors (e.g. with transformers' "
                        "save_pretrained(safe_serialization=True))", name, p[1]);
    if (n >= 4 && rd_u32(p) == L2C_MAGIC_AK42) {
        if (n < 8)
            return lv_error("%s: a llama2.c file with magic \"ak42\" (version 1/2 layout) "
                            "truncated before its version field; lavinia reads version 0 "
                            "(export.py --version 0, legacy_export)", name);
        return lv_error("%s: a llama2.c version %d export (magic \"ak42\"); lavinia reads "
                        "version 0 only: re-export with export.py --version 0 (legacy_export)",
                        name, rd_i32(p + 4));
    }
    return LV_OK;
}

/* Reads and checks the header, fills f->config and the group table, checks the file size. */
static int parse_checkpoint(lv_l2c_file *f, const uint8_t *p, uint64_t n, const char *name)
{
    struct lv_model_config *c = &f->config;
    int32_t h[7];
    int rc;

    if (n < L2C_HEADER_BYTES)
        return lv_error("%s: %llu bytes, shorter than the %d-byte llama2.c header", name,
                        (unsigned long long)n, L2C_HEADER_BYTES);
    for (int i = 0; i < 7; i++)
        h[i] = rd_i32(p + 4 * i);

    lv_model_config_init(c);
    c->arch = LV_ARCH_LLAMA;
    c->dim = h[0];
    c->hidden = h[1];
    c->n_layers = h[2];
    c->n_heads = h[3];
    c->n_kv_heads = h[4];
    /* The sign of vocab_size says whether the classifier is shared; widen before negating
     * so INT32_MIN cannot overflow (it then fails the range check). */
    c->tied = h[5] > 0;
    c->vocab = h[5] > 0 ? (int64_t)h[5] : -(int64_t)h[5];
    c->max_seq = h[6];
    c->head_dim = h[3] > 0 ? h[0] / h[3] : 0;
    c->qk_layout = LV_QK_META;
    c->norm_eps = 1e-5f;
    c->rope_theta = 10000.0f;

    if (c->dim > 0 && c->n_heads > 0 && c->dim % c->n_heads)
        return lv_error("%s: dim %lld is not a multiple of %lld heads", name,
                        (long long)c->dim, (long long)c->n_heads);
    if ((rc = lv_model_config_check(c, name)) != LV_OK)
        return rc;

    /* Sizes in floats. lv_model_config_check bounds every factor, so none of this can
     * overflow, but it is checked anyway: the bounds live in another file. */
    uint64_t C = (uint64_t)c->dim, F = (uint64_t)c->hidden, L = (uint64_t)c->n_layers;
    uint64_t V = (uint64_t)c->vocab, T = (uint64_t)c->max_seq, D = (uint64_t)c->head_dim;
    uint64_t KVC = D * (uint64_t)c->n_kv_heads;
    uint64_t *g = f->group_floats;
    bool ok = mul3(V, C, 1, &g[LV_L2C_TOK_EMB]) &&
              mul3(L, C, 1, &g[LV_L2C_RMS_ATT]) &&
              mul3(L, C, C, &g[LV_L2C_WQ]) &&
              mul3(L, KVC, C, &g[LV_L2C_WK]) &&
              mul3(L, KVC, C, &g[LV_L2C_WV]) &&
              mul3(L, C, C, &g[LV_L2C_WO]) &&
              mul3(L, C, 1, &g[LV_L2C_RMS_FFN]) &&
              mul3(L, F, C, &g[LV_L2C_W1]) &&
              mul3(L, C, F, &g[LV_L2C_W2]) &&
              mul3(L, F, C, &g[LV_L2C_W3]) &&
              mul3(C, 1, 1, &g[LV_L2C_RMS_FINAL]) &&
              mul3(T, D / 2, 1, &g[LV_L2C_FREQ_REAL]) &&
              mul3(T, D / 2, 1, &g[LV_L2C_FREQ_IMAG]) &&
              mul3(c->tied ? 0 : V, C, 1, &g[LV_L2C_WCLS]);
    uint64_t off = L2C_HEADER_BYTES;
    for (int i = 0; ok && i < LV_L2C_GROUP_COUNT; i++) {
        uint64_t bytes;
        f->group_offset[i] = off;
        ok = !__builtin_mul_overflow(g[i], (uint64_t)4, &bytes) &&
             !__builtin_add_overflow(off, bytes, &off);
    }
    if (!ok)
        return lv_error("%s: the tensor sizes for dim %lld, hidden_dim %lld, %lld layers, "
                        "vocab %lld overflow 64 bits", name, (long long)c->dim,
                        (long long)c->hidden, (long long)c->n_layers, (long long)c->vocab);
    if (off != n)
        return lv_error("%s: size mismatch: a llama2.c model with dim %lld, hidden_dim %lld, "
                        "%lld layers, %lld heads, %lld kv heads, vocab %lld (%s classifier), "
                        "seq_len %lld takes exactly %llu bytes, the file has %llu (%llu bytes "
                        "%s)", name, (long long)c->dim, (long long)c->hidden,
                        (long long)c->n_layers, (long long)c->n_heads,
                        (long long)c->n_kv_heads, (long long)c->vocab,
                        c->tied ? "shared" : "separate", (long long)c->max_seq,
                        (unsigned long long)off, (unsigned long long)n,
                        (unsigned long long)(n < off ? off - n : n - off),
                        n < off ? "short: truncated?" : "too many: trailing data");

    f->n_tensors = 1 + L2C_PER_LAYER * c->n_layers + 1 + (c->tied ? 0 : 1);
    return LV_OK;
}

int lv_l2c_open_mem(lv_l2c_file *f, const void *buf, size_t n, const char *name)
{
    const uint8_t *p = buf;
    int rc;
    memset(f, 0, sizeof *f);
    if (!name)
        name = "<memory>";
    if (n == 0 || !buf)
        return lv_error("%s: empty file", name);
    if ((rc = parse_checkpoint(f, p, n, name)) != LV_OK) {
        /* A more useful message for a file that is not a version-0 export at all. */
        int foreign = refuse_foreign(p, n, name);
        memset(f, 0, sizeof *f);
        return foreign != LV_OK ? foreign : rc;
    }
    f->data = p;
    f->size = n;
    f->name = strdup(name);
    if (!f->name) {
        memset(f, 0, sizeof *f);
        return lv_error_status(LV_ENOMEM, "%s: out of memory", name);
    }
    return LV_OK;
}

int lv_l2c_open(lv_l2c_file *f, const char *path)
{
    void *map;
    size_t size;
    int rc;
    memset(f, 0, sizeof *f);
    if ((rc = lv_map_file(path, UINT64_MAX, &map, &size)) != LV_OK)
        return rc;
    if ((rc = lv_l2c_open_mem(f, map, size, path)) != LV_OK) {
        munmap(map, size);
        return rc;
    }
    f->map = map;
    f->map_size = size;
    return LV_OK;
}

void lv_l2c_close(lv_l2c_file *f)
{
    if (!f)
        return;
    if (f->map)
        munmap(f->map, f->map_size);
    free(f->name);
    memset(f, 0, sizeof *f);
}

/* ----------------------------------------------------------------------------------------
 * checkpoint: the weights as views under Hugging Face names
 */

/* A dimension of a per-layer weight. */
enum l2c_dim { DIM_NONE, DIM_C, DIM_KVC, DIM_F };

/* The per-layer weights in the order lv_l2c_tensor_at hands them out. */
static const struct l2c_layer_entry {
    const char *suffix;       /* after "model.layers.N." */
    enum lv_l2c_group group;
    enum l2c_dim rows, cols;  /* cols DIM_NONE: a vector */
} layer_table[L2C_PER_LAYER] = {
    { .suffix = "input_layernorm",          .group = LV_L2C_RMS_ATT, .rows = DIM_C,
      .cols = DIM_NONE },
    { .suffix = "self_attn.q_proj",         .group = LV_L2C_WQ,      .rows = DIM_C,
      .cols = DIM_C },
    { .suffix = "self_attn.k_proj",         .group = LV_L2C_WK,      .rows = DIM_KVC,
      .cols = DIM_C },
    { .suffix = "self_attn.v_proj",         .group = LV_L2C_WV,      .rows = DIM_KVC,
      .cols = DIM_C },
    { .suffix = "self_attn.o_proj",         .group = LV_L2C_WO,      .rows = DIM_C,
      .cols = DIM_C },
    { .suffix = "post_attention_layernorm", .group = LV_L2C_RMS_FFN, .rows = DIM_C,
      .cols = DIM_NONE },
    { .suffix = "mlp.gate_proj",            .group = LV_L2C_W1,      .rows = DIM_F,
      .cols = DIM_C },
    { .suffix = "mlp.up_proj",              .group = LV_L2C_W3,      .rows = DIM_F,
      .cols = DIM_C },
    { .suffix = "mlp.down_proj",            .group = LV_L2C_W2,      .rows = DIM_C,
      .cols = DIM_F },
};

static int64_t dim_value(const lv_l2c_file *f, enum l2c_dim d)
{
    switch (d) {
    case DIM_C:
        return f->config.dim;
    case DIM_KVC:
        return f->config.head_dim * f->config.n_kv_heads;
    case DIM_F:
        return f->config.hidden;
    case DIM_NONE:
        break;
    }
    return 1;
}

int64_t lv_l2c_tensor_count(const lv_l2c_file *f)
{
    return f ? f->n_tensors : 0;
}

/* Fill out for a view of `rows` x `cols` floats at byte offset off (cols 0: a vector). */
static void set_view(const lv_l2c_file *f, lv_l2c_tensor *out, uint64_t off, int64_t rows,
                     int64_t cols)
{
    out->ndim = cols ? 2 : 1;
    out->shape[0] = rows;
    out->shape[1] = cols ? cols : 1;
    out->nbytes = 4 * (uint64_t)rows * (uint64_t)(cols ? cols : 1);
    out->offset = off;
    out->data = f->data + off;
}

int lv_l2c_tensor_at(const lv_l2c_file *f, int64_t i, lv_l2c_tensor *out)
{
    memset(out, 0, sizeof *out);
    if (!f || !f->data)
        return lv_error("llama2.c checkpoint: not open");
    if (i < 0 || i >= f->n_tensors)
        return lv_error("%s: tensor index %lld out of range [0, %lld)", f->name, (long long)i,
                        (long long)f->n_tensors);
    const struct lv_model_config *c = &f->config;
    int64_t n_layer_tensors = L2C_PER_LAYER * c->n_layers;
    if (i == 0) {
        snprintf(out->name, sizeof out->name, "model.embed_tokens.weight");
        set_view(f, out, f->group_offset[LV_L2C_TOK_EMB], c->vocab, c->dim);
    } else if (i <= n_layer_tensors) {
        int64_t layer = (i - 1) / L2C_PER_LAYER;
        const struct l2c_layer_entry *e = &layer_table[(i - 1) % L2C_PER_LAYER];
        int64_t rows = dim_value(f, e->rows);
        int64_t cols = e->cols == DIM_NONE ? 0 : dim_value(f, e->cols);
        /* the group holds all layers back to back; this layer's slice */
        uint64_t per_layer = f->group_floats[e->group] / (uint64_t)c->n_layers;
        uint64_t off = f->group_offset[e->group] + 4 * per_layer * (uint64_t)layer;
        snprintf(out->name, sizeof out->name, "model.layers.%lld.%s.weight", (long long)layer,
                 e->suffix);
        set_view(f, out, off, rows, cols);
    } else if (i == n_layer_tensors + 1) {
        snprintf(out->name, sizeof out->name, "model.norm.weight");
        set_view(f, out, f->group_offset[LV_L2C_RMS_FINAL], c->dim, 0);
    } else {
        snprintf(out->name, sizeof out->name, "lm_head.weight");
        set_view(f, out, f->group_offset[LV_L2C_WCLS], c->vocab, c->dim);
    }
    return LV_OK;
}

int lv_l2c_tensor_find(const lv_l2c_file *f, const char *name, lv_l2c_tensor *out)
{
    if (!f || !f->data) {
        memset(out, 0, sizeof *out);
        return lv_error("llama2.c checkpoint: not open");
    }
    for (int64_t i = 0; i < f->n_tensors; i++) {
        if (lv_l2c_tensor_at(f, i, out) == LV_OK && strcmp(out->name, name) == 0)
            return LV_OK;
    }
    memset(out, 0, sizeof *out);
    if (strcmp(name, "lm_head.weight") == 0 && f->config.tied)
        return lv_error("%s: no tensor 'lm_head.weight': the classifier is shared with "
                        "model.embed_tokens.weight", f->name);
    return lv_error("%s: no tensor '%s' in this llama2.c checkpoint", f->name, name);
}

/* ----------------------------------------------------------------------------------------
 * tokenizer.bin
 */

int lv_l2c_tokenizer_open_mem(lv_l2c_tokenizer *t, const void *buf, size_t n,
                              const char *name, int64_t vocab_size)
{
    const uint8_t *p = buf;
    memset(t, 0, sizeof *t);
    if (!name)
        name = "<memory>";
    if (vocab_size < 1 || vocab_size > TOK_MAX_VOCAB)
        return lv_error("%s: vocabulary size %lld is out of range [1, %lld]", name,
                        (long long)vocab_size, (long long)TOK_MAX_VOCAB);
    if (n == 0 || !buf)
        return lv_error("%s: empty file", name);
    if ((uint64_t)n > TOK_MAX_BYTES)
        return lv_error("%s: %llu bytes is too large for a tokenizer.bin (at most %llu)", name,
                        (unsigned long long)n, (unsigned long long)TOK_MAX_BYTES);
    if (n < 4)
        return lv_error("%s: %zu bytes, shorter than the 4-byte tokenizer.bin header", name, n);
    uint32_t max_len = rd_u32(p);
    if (max_len > TOK_MAX_TOKEN_LENGTH)
        return lv_error("%s: max_token_length %u is larger than the limit %u", name, max_len,
                        TOK_MAX_TOKEN_LENGTH);
    /* every record takes at least 8 bytes: refuse an impossible count before allocating */
    if ((uint64_t)vocab_size > ((uint64_t)n - 4) / 8)
        return lv_error("%s: %zu bytes cannot hold %lld tokens (8 bytes at least each): "
                        "truncated, or the wrong vocabulary size", name, n,
                        (long long)vocab_size);

    /* pass 1: validate every record, size the text */
    uint64_t pos = 4, text_bytes = 0;
    for (int64_t i = 0; i < vocab_size; i++) {
        if ((uint64_t)n - pos < 8)
            return lv_error("%s: token %lld at byte %llu: record truncated (needs 8 bytes, "
                            "%llu left)", name, (long long)i, (unsigned long long)pos,
                            (unsigned long long)((uint64_t)n - pos));
        float score = rd_f32(p + pos);
        int32_t len = rd_i32(p + pos + 4);
        if (!isfinite(score))
            return lv_error("%s: token %lld at byte %llu: score is not finite (%g)", name,
                            (long long)i, (unsigned long long)pos, (double)score);
        if (len < 0)
            return lv_error("%s: token %lld at byte %llu: negative length %d", name,
                            (long long)i, (unsigned long long)pos, len);
        if ((uint32_t)len > max_len)
            return lv_error("%s: token %lld at byte %llu: length %d exceeds max_token_length "
                            "%u", name, (long long)i, (unsigned long long)pos, len, max_len);
        if ((uint64_t)len > (uint64_t)n - pos - 8)
            return lv_error("%s: token %lld at byte %llu: piece of %d bytes runs past the end "
                            "of the file (%llu bytes left): truncated", name, (long long)i,
                            (unsigned long long)pos, len,
                            (unsigned long long)((uint64_t)n - pos - 8));
        pos += 8 + (uint64_t)len;
        text_bytes += (uint64_t)len + 1;
    }
    if (pos != n)
        return lv_error("%s: %llu trailing bytes after the %lld tokens (is the vocabulary size "
                        "right?)", name, (unsigned long long)((uint64_t)n - pos),
                        (long long)vocab_size);

    /* pass 2: copy. text_bytes <= n + vocab_size < 2^31, so offsets fit in 32 bits. */
    t->scores = malloc((size_t)vocab_size * sizeof *t->scores);
    t->offsets = malloc(((size_t)vocab_size + 1) * sizeof *t->offsets);
    t->text = malloc((size_t)text_bytes);
    if (!t->scores || !t->offsets || !t->text) {
        lv_l2c_tokenizer_close(t);
        return lv_error_status(LV_ENOMEM, "%s: out of memory for %lld tokens", name,
                               (long long)vocab_size);
    }
    pos = 4;
    uint32_t at = 0;
    for (int64_t i = 0; i < vocab_size; i++) {
        uint32_t len = (uint32_t)rd_i32(p + pos + 4);
        t->scores[i] = rd_f32(p + pos);
        t->offsets[i] = at;
        memcpy(t->text + at, p + pos + 8, len);
        t->text[at + len] = '\0';
        at += len + 1;
        pos += 8 + len;
    }
    t->offsets[vocab_size] = at;
    t->vocab_size = vocab_size;
    t->max_token_length = max_len;
    return LV_OK;
}

int lv_l2c_tokenizer_open(lv_l2c_tokenizer *t, const char *path, int64_t vocab_size)
{
    void *map;
    size_t size;
    int rc;
    memset(t, 0, sizeof *t);
    if ((rc = lv_map_file(path, UINT64_MAX, &map, &size)) != LV_OK)
        return rc;
    rc = lv_l2c_tokenizer_open_mem(t, map, size, path, vocab_size);
    munmap(map, size);   /* the tokenizer keeps copies */
    return rc;
}

void lv_l2c_tokenizer_close(lv_l2c_tokenizer *t)
{
    if (!t)
        return;
    free(t->scores);
    free(t->offsets);
    free(t->text);
    memset(t, 0, sizeof *t);
}

const char *lv_l2c_tokenizer_piece(const lv_l2c_tokenizer *t, int64_t id, size_t *len)
{
    if (!t || !t->text || id < 0 || id >= t->vocab_size) {
        if (len)
            *len = 0;
        return NULL;
    }
    if (len)
        *len = t->offsets[id + 1] - t->offsets[id] - 1;
    return t->text + t->offsets[id];
}
