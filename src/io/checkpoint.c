/*
 * checkpoint.c: every checkpoint format lavinia reads, seen one way, and the two writers.
 *
 * Opening sniffs PATH (a directory is a Hugging Face model; a file is GGUF by its magic,
 * safetensors by its name or by the '{' that opens its header, llama2.c otherwise), hands the
 * work to the format's reader (io/safetensors, io/gguf, io/llama2c, io/hf-config) and then
 * lists every tensor under its canonical name (io/names.h). When the file has a config, every
 * tensor the config implies is looked up and its shape checked; missing and unexpected
 * tensors are named. Nothing is copied: the tensors point into the readers' maps.
 *
 * Writing goes through the canonical view too, so any input can become either output: q/k
 * rows are permuted to the target's rotary order, ggml block types are dequantised to F32 for
 * safetensors (exact: every Q8_0/Q4_0/k-quant value is a float product), large outputs are
 * sharded the way transformers shards them.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "io/checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/fileutil.h"
#include "io/gguf.h"
#include "io/hf-config.h"
#include "io/llama2c.h"
#include "io/names.h"
#include "io/safetensors.h"
#include "lavinia/error.h"
#include "text/tokenizer.h"
#include "util/buf.h"

/* Tokenizer and processor files a Hugging Face directory carries beside the weights. */
static const char *const hf_side_files[] = {
    "tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
    "added_tokens.json", "generation_config.json", "chat_template.json", "chat_template.jinja",
    "preprocessor_config.json", "processor_config.json",
};
#define N_SIDE_FILES (sizeof hf_side_files / sizeof hf_side_files[0])
/* a side file larger than this is not a tokenizer */
#define SIDE_FILE_MAX ((size_t)256 << 20)

struct impl {
    lv_st_set set;                     /* LV_CKPT_HF_DIR */
    lv_st_file st;                     /* LV_CKPT_SAFETENSORS */
    lv_gguf_file gguf, mmproj;         /* LV_CKPT_GGUF */
    lv_l2c_file l2c;                   /* LV_CKPT_LLAMA2C */
    char tok_path[4096];               /* llama2.c: the tokenizer.bin given */
    int cap_tensors, cap_meta;
    const struct lv_ckpt_tensor **sorted;   /* by name, for lv_checkpoint_find */
};

#define IMPL(ck) ((struct impl *)(ck)->impl)

const char *lv_ckpt_format_name(enum lv_ckpt_format f)
{
    static const char *const names[] = {
        [LV_CKPT_HF_DIR] = "Hugging Face directory",
        [LV_CKPT_SAFETENSORS] = "safetensors",
        [LV_CKPT_GGUF] = "GGUF",
        [LV_CKPT_LLAMA2C] = "llama2.c",
    };
    return (unsigned)f <= LV_CKPT_LLAMA2C ? names[f] : "?";
}

/* one row per storage type: its name and its counterparts in the two file formats
 * (-1: none) */
static const struct type_row {
    const char *name;
    int st;       /* lv_st_dtype */
    int ggml;     /* lv_ggml_type */
} type_rows[LV_CKPT_TYPE_COUNT] = {
    [LV_CKPT_F32] = { "F32", LV_ST_F32, LV_GGML_TYPE_F32 },
    [LV_CKPT_F16] = { "F16", LV_ST_F16, LV_GGML_TYPE_F16 },
    [LV_CKPT_BF16] = { "BF16", LV_ST_BF16, LV_GGML_TYPE_BF16 },
    [LV_CKPT_F64] = { "F64", LV_ST_F64, LV_GGML_TYPE_F64 },
    [LV_CKPT_I8] = { "I8", LV_ST_I8, LV_GGML_TYPE_I8 },
    [LV_CKPT_U8] = { "U8", LV_ST_U8, -1 },
    [LV_CKPT_I16] = { "I16", LV_ST_I16, LV_GGML_TYPE_I16 },
    [LV_CKPT_I32] = { "I32", LV_ST_I32, LV_GGML_TYPE_I32 },
    [LV_CKPT_I64] = { "I64", LV_ST_I64, LV_GGML_TYPE_I64 },
    [LV_CKPT_BOOL] = { "BOOL", LV_ST_BOOL, -1 },
    [LV_CKPT_Q8_0] = { "Q8_0", -1, LV_GGML_TYPE_Q8_0 },
    [LV_CKPT_Q4_0] = { "Q4_0", -1, LV_GGML_TYPE_Q4_0 },
    [LV_CKPT_Q4_K] = { "Q4_K", -1, LV_GGML_TYPE_Q4_K },
    [LV_CKPT_Q5_K] = { "Q5_K", -1, LV_GGML_TYPE_Q5_K },
    [LV_CKPT_Q6_K] = { "Q6_K", -1, LV_GGML_TYPE_Q6_K },
    [LV_CKPT_Q4_1] = { "Q4_1", -1, LV_GGML_TYPE_Q4_1 },
    [LV_CKPT_Q5_0] = { "Q5_0", -1, LV_GGML_TYPE_Q5_0 },
    [LV_CKPT_Q5_1] = { "Q5_1", -1, LV_GGML_TYPE_Q5_1 },
    [LV_CKPT_Q2_K] = { "Q2_K", -1, LV_GGML_TYPE_Q2_K },
    [LV_CKPT_Q3_K] = { "Q3_K", -1, LV_GGML_TYPE_Q3_K },
    [LV_CKPT_IQ4_NL] = { "IQ4_NL", -1, LV_GGML_TYPE_IQ4_NL },
    [LV_CKPT_IQ4_XS] = { "IQ4_XS", -1, LV_GGML_TYPE_IQ4_XS },
    [LV_CKPT_OTHER] = { "other", -1, -1 },
};

const char *lv_ckpt_type_name(enum lv_ckpt_type t)
{
    return (unsigned)t < LV_CKPT_TYPE_COUNT ? type_rows[t].name : "?";
}

int lv_ckpt_type_ggml(enum lv_ckpt_type t)
{
    return (unsigned)t < LV_CKPT_TYPE_COUNT ? type_rows[t].ggml : -1;
}

static enum lv_ckpt_type type_from_st(int st)
{
    for (int t = 0; t < LV_CKPT_OTHER; t++)
        if (type_rows[t].st == st)
            return (enum lv_ckpt_type)t;
    return LV_CKPT_OTHER;
}

static enum lv_ckpt_type type_from_ggml(uint32_t g)
{
    for (int t = 0; t < LV_CKPT_OTHER; t++)
        if (type_rows[t].ggml == (int)g)
            return (enum lv_ckpt_type)t;
    return LV_CKPT_OTHER;
}

/* ----------------------------------------------------------------------------------------
 * building the view
 */

static bool copy_str(char *dst, size_t n, const char *src)
{
    size_t k = strlen(src);
    if (k >= n)
        return false;
    memcpy(dst, src, k + 1);
    return true;
}

static struct lv_ckpt_tensor *add_tensor(struct lv_checkpoint *ck, const char *canonical,
                                         const char *file_name)
{
    struct impl *im = IMPL(ck);
    if (ck->n_tensors == im->cap_tensors) {
        int cap = im->cap_tensors ? 2 * im->cap_tensors : 64;
        void *p = realloc(ck->tensors, (size_t)cap * sizeof *ck->tensors);
        if (!p) {
            lv_error_status(LV_ENOMEM, "%s: out of memory", ck->path);
            return NULL;
        }
        ck->tensors = p;
        im->cap_tensors = cap;
    }
    struct lv_ckpt_tensor *t = &ck->tensors[ck->n_tensors];
    memset(t, 0, sizeof *t);
    if (!copy_str(t->name, sizeof t->name, canonical) ||
        !copy_str(t->file_name, sizeof t->file_name, file_name)) {
        lv_error("%s: tensor name '%.64s...' is longer than %zu bytes", ck->path, file_name,
                 sizeof t->name - 1);
        return NULL;
    }
    ck->n_tensors++;
    return t;
}

/* takes ownership of value (freed on failure too) */
static int add_meta(struct lv_checkpoint *ck, const char *key, char *value)
{
    struct impl *im = IMPL(ck);
    char *k = value ? strdup(key) : NULL;
    if (k && ck->n_meta == im->cap_meta) {
        int cap = im->cap_meta ? 2 * im->cap_meta : 32;
        void *p = realloc(ck->meta, (size_t)cap * sizeof *ck->meta);
        if (p) {
            ck->meta = p;
            im->cap_meta = cap;
        } else {
            free(k);
            k = NULL;
        }
    }
    if (!k) {
        free(value);
        return lv_error_status(LV_ENOMEM, "%s: out of memory", ck->path);
    }
    ck->meta[ck->n_meta].key = k;
    ck->meta[ck->n_meta].value = value;
    ck->n_meta++;
    return LV_OK;
}

/* a string for display: printable ASCII and UTF-8 kept, control bytes escaped, cut at max */
static void put_text(FILE *f, const char *s, uint64_t n, uint64_t max)
{
    fputc('"', f);
    for (uint64_t i = 0; i < n && i < max; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c == '\n')
            fputs("\\n", f);
        else if (c < 0x20 || c == 0x7f)
            fprintf(f, "\\x%02x", c);
        else
            fputc(c, f);
    }
    fputs(n > max ? "\"..." : "\"", f);
}

/* element i of an array (or the scalar) of type t at p */
static void put_value(FILE *f, uint32_t t, const void *p)
{
    switch (t) {
    case LV_GGUF_TYPE_UINT8: fprintf(f, "%u", *(const uint8_t *)p); break;
    case LV_GGUF_TYPE_INT8: fprintf(f, "%d", *(const int8_t *)p); break;
    case LV_GGUF_TYPE_UINT16: fprintf(f, "%u", *(const uint16_t *)p); break;
    case LV_GGUF_TYPE_INT16: fprintf(f, "%d", *(const int16_t *)p); break;
    case LV_GGUF_TYPE_UINT32: fprintf(f, "%u", *(const uint32_t *)p); break;
    case LV_GGUF_TYPE_INT32: fprintf(f, "%d", *(const int32_t *)p); break;
    case LV_GGUF_TYPE_FLOAT32: fprintf(f, "%g", (double)*(const float *)p); break;
    case LV_GGUF_TYPE_BOOL: fputs(*(const bool *)p ? "true" : "false", f); break;
    case LV_GGUF_TYPE_UINT64: fprintf(f, "%llu", (unsigned long long)*(const uint64_t *)p); break;
    case LV_GGUF_TYPE_INT64: fprintf(f, "%lld", (long long)*(const int64_t *)p); break;
    case LV_GGUF_TYPE_FLOAT64: fprintf(f, "%g", *(const double *)p); break;
    case LV_GGUF_TYPE_STRING: {
        const lv_gguf_str *s = p;
        put_text(f, s->s, s->n, 72);
        break;
    }
    default: fputs("?", f);
    }
}

static size_t gguf_type_size(uint32_t t)
{
    switch (t) {
    case LV_GGUF_TYPE_UINT8: case LV_GGUF_TYPE_INT8: return 1;
    case LV_GGUF_TYPE_BOOL: return sizeof(bool);
    case LV_GGUF_TYPE_UINT16: case LV_GGUF_TYPE_INT16: return 2;
    case LV_GGUF_TYPE_UINT32: case LV_GGUF_TYPE_INT32: case LV_GGUF_TYPE_FLOAT32: return 4;
    case LV_GGUF_TYPE_STRING: return sizeof(lv_gguf_str);
    default: return 8;
    }
}

/* a GGUF value as text: scalars as they are, arrays as a count and their first elements */
static char *kv_text(const lv_gguf_kv *kv)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return NULL;
    if (kv->type == LV_GGUF_TYPE_ARRAY) {
        fprintf(f, "[%llu %s: ", (unsigned long long)kv->n, lv_gguf_type_name(kv->elem_type));
        size_t sz = gguf_type_size(kv->elem_type);
        for (uint64_t i = 0; i < kv->n && i < 4; i++) {
            if (i)
                fputs(", ", f);
            put_value(f, kv->elem_type, (const char *)kv->v.arr + i * sz);
        }
        fputs(kv->n > 4 ? ", ...]" : "]", f);
    } else {
        put_value(f, kv->type, &kv->v);
    }
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

static int cmp_tensor_ptr(const void *a, const void *b)
{
    const struct lv_ckpt_tensor *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

/* sorted index; two tensors with one canonical name (both LLaVA layouts in one directory)
 * are an error */
static int build_index(struct lv_checkpoint *ck)
{
    struct impl *im = IMPL(ck);
    im->sorted = malloc((size_t)(ck->n_tensors ? ck->n_tensors : 1) * sizeof *im->sorted);
    if (!im->sorted)
        return lv_error_status(LV_ENOMEM, "%s: out of memory", ck->path);
    for (int i = 0; i < ck->n_tensors; i++)
        im->sorted[i] = &ck->tensors[i];
    qsort(im->sorted, (size_t)ck->n_tensors, sizeof *im->sorted, cmp_tensor_ptr);
    for (int i = 1; i < ck->n_tensors; i++)
        if (strcmp(im->sorted[i - 1]->name, im->sorted[i]->name) == 0)
            return lv_error("%s: tensors '%s' and '%s' are the same weight '%s'", ck->path,
                            im->sorted[i - 1]->file_name, im->sorted[i]->file_name,
                            im->sorted[i]->name);
    return LV_OK;
}

const struct lv_ckpt_tensor *lv_checkpoint_find(const struct lv_checkpoint *ck,
                                                const char *name)
{
    const struct impl *im = ck->impl;
    if (!im || !im->sorted)
        return NULL;
    size_t lo = 0, hi = (size_t)ck->n_tensors;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(im->sorted[mid]->name, name);
        if (c == 0)
            return im->sorted[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* ----------------------------------------------------------------------------------------
 * checking the tensors against the config
 */

struct expect {
    const struct lv_checkpoint *ck;
    bool *seen;
    int missing;
    char first_missing[128];
};

static void shape_text(char *out, size_t n, int ndim, const int64_t *shape)
{
    size_t k = 0;
    out[0] = 0;
    for (int d = 0; d < ndim && k < n; d++) {
        int w = snprintf(out + k, n - k, d ? ", %lld" : "%lld", (long long)shape[d]);
        if (w < 0)
            break;
        k += (size_t)w;
    }
}

/* one tensor the config implies: name (printf), shape (ndim values), required or not */
static int expect(struct expect *e, bool required, int ndim, const int64_t *shape,
                  const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static int expect(struct expect *e, bool required, int ndim, const int64_t *shape,
                  const char *fmt, ...)
{
    char name[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    const struct lv_ckpt_tensor *t = lv_checkpoint_find(e->ck, name);
    if (!t) {
        if (required && e->missing++ == 0)
            copy_str(e->first_missing, sizeof e->first_missing, name);
        return LV_OK;
    }
    e->seen[t - e->ck->tensors] = true;
    bool same = t->ndim == ndim;
    for (int d = 0; same && d < ndim; d++)
        same = t->shape[d] == shape[d];
    if (!same) {
        char got[96], want[96];
        shape_text(got, sizeof got, t->ndim, t->shape);
        shape_text(want, sizeof want, ndim, shape);
        return lv_error("%s: tensor '%s' has shape [%s], the config says [%s]", e->ck->path,
                        t->file_name, got, want);
    }
    return LV_OK;
}

#define S1(a) 1, (const int64_t[]){ (a) }
#define S2(a, b) 2, (const int64_t[]){ (a), (b) }
#define S4(a, b, c, d) 4, (const int64_t[]){ (a), (b), (c), (d) }

static int expect_text(struct expect *e, const struct lv_model_config *c)
{
    int64_t D = c->dim, Q = c->n_heads * c->head_dim, KV = c->n_kv_heads * c->head_dim;
    int64_t F = c->hidden;
    int rc;
    if ((rc = expect(e, true, S2(c->vocab, D), "model.embed_tokens.weight")) ||
        (rc = expect(e, true, S1(D), "model.norm.weight")) ||
        (rc = expect(e, !c->tied, S2(c->vocab, D), "lm_head.weight")))
        return rc;
    for (int64_t l = 0; l < c->n_layers; l++) {
        const char *p = "model.layers.";
        long long L = (long long)l;
        if ((rc = expect(e, true, S1(D), "%s%lld.input_layernorm.weight", p, L)) ||
            (rc = expect(e, true, S2(Q, D), "%s%lld.self_attn.q_proj.weight", p, L)) ||
            (rc = expect(e, true, S2(KV, D), "%s%lld.self_attn.k_proj.weight", p, L)) ||
            (rc = expect(e, true, S2(KV, D), "%s%lld.self_attn.v_proj.weight", p, L)) ||
            (rc = expect(e, true, S2(D, Q), "%s%lld.self_attn.o_proj.weight", p, L)) ||
            (rc = expect(e, true, S1(D), "%s%lld.post_attention_layernorm.weight", p, L)) ||
            (rc = expect(e, true, S2(F, D), "%s%lld.mlp.gate_proj.weight", p, L)) ||
            (rc = expect(e, true, S2(F, D), "%s%lld.mlp.up_proj.weight", p, L)) ||
            (rc = expect(e, true, S2(D, F), "%s%lld.mlp.down_proj.weight", p, L)))
            return rc;
    }
    return LV_OK;
}

#define VM "vision_tower.vision_model."

static int expect_vision(struct expect *e, const struct lv_model_config *c, bool tower)
{
    const struct lv_vision_config *v = &c->vision;
    int64_t V = v->dim, H = v->hidden, P = v->patch_size;
    int64_t pos = (v->image_size / P) * (v->image_size / P) + 1;
    int rc;
    if (tower) {
        if ((rc = expect(e, true, S1(V), VM "embeddings.class_embedding")) ||
            (rc = expect(e, true, S4(V, v->n_channels, P, P),
                         VM "embeddings.patch_embedding.weight")) ||
            (rc = expect(e, true, S2(pos, V), VM "embeddings.position_embedding.weight")) ||
            (rc = expect(e, true, S1(V), VM "pre_layrnorm.weight")) ||
            (rc = expect(e, true, S1(V), VM "pre_layrnorm.bias")) ||
            (rc = expect(e, false, S1(V), VM "post_layernorm.weight")) ||
            (rc = expect(e, false, S1(V), VM "post_layernorm.bias")))
            return rc;
        for (int64_t l = 0; l < v->n_layers; l++) {
            static const char *const proj[] = { "q_proj", "k_proj", "v_proj", "out_proj" };
            static const char *const norm[] = { "layer_norm1", "layer_norm2" };
            const char *p = VM "encoder.layers.";
            long long L = (long long)l;
            for (int i = 0; i < 4; i++)
                if ((rc = expect(e, true, S2(V, V), "%s%lld.self_attn.%s.weight", p, L,
                                 proj[i])) ||
                    (rc = expect(e, true, S1(V), "%s%lld.self_attn.%s.bias", p, L, proj[i])))
                    return rc;
            for (int i = 0; i < 2; i++)
                if ((rc = expect(e, true, S1(V), "%s%lld.%s.weight", p, L, norm[i])) ||
                    (rc = expect(e, true, S1(V), "%s%lld.%s.bias", p, L, norm[i])))
                    return rc;
            if ((rc = expect(e, true, S2(H, V), "%s%lld.mlp.fc1.weight", p, L)) ||
                (rc = expect(e, true, S1(H), "%s%lld.mlp.fc1.bias", p, L)) ||
                (rc = expect(e, true, S2(V, H), "%s%lld.mlp.fc2.weight", p, L)) ||
                (rc = expect(e, true, S1(V), "%s%lld.mlp.fc2.bias", p, L)))
                return rc;
        }
    }
    if (c->projector == LV_PROJ_LAVIN) {
        /* LaVIN's adapter_proj, and its modality embedding (read by the MMA adapter) */
        int64_t Hp = c->proj_hidden;
        return (rc = expect(e, true, S2(Hp, V), "adapter_proj.conv_A.weight")) ||
                       (rc = expect(e, true, S1(Hp), "adapter_proj.conv_A.bias")) ||
                       (rc = expect(e, true, S2(c->dim, Hp), "adapter_proj.conv_B.weight")) ||
                       (rc = expect(e, true, S1(c->dim), "adapter_proj.conv_B.bias")) ||
                       (rc = expect(e, false, S2(2, c->dim),
                                    "adapter_modality_embedding.weight"))
                   ? rc : LV_OK;
    }
    const char *mp = "multi_modal_projector.";
    if ((rc = expect(e, true, S2(c->dim, V), "%slinear_1.weight", mp)) ||
        (rc = expect(e, true, S1(c->dim), "%slinear_1.bias", mp)))
        return rc;
    if (c->projector == LV_PROJ_MLP2X_GELU &&
        ((rc = expect(e, true, S2(c->dim, c->dim), "%slinear_2.weight", mp)) ||
         (rc = expect(e, true, S1(c->dim), "%slinear_2.bias", mp))))
        return rc;
    return LV_OK;
}

/* the original haotian-liu/LLaVA checkpoints carry the projector but not the vision tower */
static bool tower_outside(const struct lv_model_config *c)
{
    return strcmp(c->arch_name, "LlavaLlamaForCausalLM") == 0 ||
           strcmp(c->arch_name, "llava_llama") == 0 ||
           (c->arch == LV_ARCH_LLAVA && strcmp(c->arch_name, "llava") == 0 &&
            c->image_token_id < 0);
}

/* bitsandbytes' 4-bit checkpoints: packed weights beside absmax and quant_state tensors */
static int refuse_bnb(const struct lv_checkpoint *ck)
{
    for (int i = 0; i < ck->n_tensors; i++) {
        const char *n = ck->tensors[i].file_name, *dot = strrchr(n, '.');
        if ((dot && (strcmp(dot, ".absmax") == 0 || strcmp(dot, ".quant_map") == 0 ||
                     strcmp(dot, ".nested_absmax") == 0)) || strstr(n, ".quant_state."))
            return lv_error("%s: tensor '%s': a checkpoint already quantised by bitsandbytes; "
                            "load the full-precision checkpoint (--quant nf4 quantises it as "
                            "QLoRA does)", ck->path, n);
    }
    return LV_OK;
}

static int check_tensors(struct lv_checkpoint *ck)
{
    int rc = refuse_bnb(ck);
    if (rc)
        return rc;
    struct expect e = { .ck = ck };
    e.seen = calloc((size_t)ck->n_tensors + 1, sizeof *e.seen);
    if (!e.seen)
        return lv_error_status(LV_ENOMEM, "%s: out of memory", ck->path);
    rc = expect_text(&e, &ck->config);
    if (rc == LV_OK && ck->config.has_vision)
        rc = expect_vision(&e, &ck->config, !tower_outside(&ck->config));
    if (rc == LV_OK && e.missing)
        rc = lv_error("%s: missing tensor '%s'%s (%d missing in all)", ck->path,
                      e.first_missing, ck->format == LV_CKPT_GGUF ? " (canonical name)" : "",
                      e.missing);
    int unexpected = 0, first = -1;
    for (int i = 0; rc == LV_OK && i < ck->n_tensors; i++)
        if (!e.seen[i] && unexpected++ == 0)
            first = i;
    if (rc == LV_OK && unexpected)
        rc = lv_error("%s: unexpected tensor '%s' (%d the config does not account for)",
                      ck->path, ck->tensors[first].file_name, unexpected);
    free(e.seen);
    return rc;
}

/* ----------------------------------------------------------------------------------------
 * Hugging Face directories and lone safetensors files
 */

/* buffers that are not weights: transformers recomputes them */
static bool ignorable(const char *canonical)
{
    size_t n = strlen(canonical);
    static const char *const suffixes[] = { "rotary_emb.inv_freq", "embeddings.position_ids" };
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        size_t k = strlen(suffixes[i]);
        if (n >= k && strcmp(canonical + n - k, suffixes[i]) == 0)
            return true;
    }
    return false;
}

static int add_st_tensor(struct lv_checkpoint *ck, const lv_st_tensor *s)
{
    char canonical[128];
    if (!lv_names_hf_canonical(s->name, canonical, sizeof canonical))
        return lv_error("%s: tensor name '%.64s...' is too long", ck->path, s->name);
    if (ignorable(canonical))
        return LV_OK;
    if (s->ndim > LV_MAX_DIMS)
        return lv_error("%s: tensor '%s' has %d dimensions (at most %d)", ck->path, s->name,
                        s->ndim, LV_MAX_DIMS);
    struct lv_ckpt_tensor *t = add_tensor(ck, canonical, s->name);
    if (!t)
        return LV_ERR;
    t->type = type_from_st(s->dtype);
    copy_str(t->type_name, sizeof t->type_name, lv_st_dtype_name(s->dtype));
    t->ndim = s->ndim;
    for (int d = 0; d < s->ndim; d++)
        t->shape[d] = s->shape[d];
    t->data = s->data;
    t->nbytes = s->nbytes;
    return LV_OK;
}

static int add_st_meta(struct lv_checkpoint *ck, const lv_st_file *f)
{
    for (int i = 0; i < f->n_meta; i++) {
        FILE *m;
        char *buf = NULL;
        size_t len;
        if (!(m = open_memstream(&buf, &len)))
            return lv_error_status(LV_ENOMEM, "%s: out of memory", ck->path);
        put_text(m, f->meta[i].value, strlen(f->meta[i].value), 120);
        int rc = fclose(m) == 0 ? add_meta(ck, f->meta[i].key, buf)
                                : (free(buf), lv_error_status(LV_ENOMEM, "%s: out of memory",
                                                              ck->path));
        if (rc)
            return rc;
    }
    return LV_OK;
}

static bool file_in(const char *dir, const char *name)
{
    char p[4200];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static int open_hf_dir(struct lv_checkpoint *ck)
{
    struct impl *im = IMPL(ck);
    char cfg[4200];
    int rc;
    ck->format = LV_CKPT_HF_DIR;
    snprintf(cfg, sizeof cfg, "%s/config.json", ck->path);
    if (access(cfg, F_OK) != 0)
        return lv_error("%s: no config.json (a Hugging Face model directory has one)",
                        ck->path);
    if ((rc = lv_hf_config_load(&ck->config, cfg)))
        return rc;
    ck->has_config = true;
    if ((rc = lv_st_set_open_dir(&im->set, ck->path)))
        return rc;
    for (int i = 0; i < im->set.n_tensors; i++)
        if ((rc = add_st_tensor(ck, im->set.entries[i].t)))
            return rc;
    if (im->set.n_files > 0 && (rc = add_st_meta(ck, &im->set.files[0])))
        return rc;
    size_t k = 0;
    for (size_t i = 0; i < N_SIDE_FILES && i < 5; i++)
        if (file_in(ck->path, hf_side_files[i])) {
            int w = snprintf(ck->tokenizer + k, sizeof ck->tokenizer - k, "%s%s",
                             k ? ", " : "", hf_side_files[i]);
            if (w > 0 && (size_t)w < sizeof ck->tokenizer - k)
                k += (size_t)w;
        }
    return LV_OK;
}

static int open_safetensors(struct lv_checkpoint *ck)
{
    struct impl *im = IMPL(ck);
    int rc;
    ck->format = LV_CKPT_SAFETENSORS;
    if ((rc = lv_st_open(&im->st, ck->path)))
        return rc;
    for (int i = 0; i < im->st.n_tensors; i++)
        if ((rc = add_st_tensor(ck, &im->st.tensors[i])))
            return rc;
    snprintf(ck->summary, sizeof ck->summary,
             "tensors only (a lone safetensors file has no config.json; open its directory "
             "for the architecture)");
    return add_st_meta(ck, &im->st);
}

/* ----------------------------------------------------------------------------------------
 * GGUF
 */

/* an optional integer key: def when absent, an error when present with another type */
static int g_int(const lv_gguf_file *g, const char *key, int64_t def, int64_t *out)
{
    if (!lv_gguf_find(g, key)) {
        *out = def;
        return LV_OK;
    }
    return lv_gguf_get_int(g, key, out);
}

static int g_req(const lv_gguf_file *g, const char *key, int64_t *out)
{
    if (!lv_gguf_find(g, key))
        return lv_error("%s: key '%s' is missing", g->path, key);
    return lv_gguf_get_int(g, key, out);
}

static int g_float(const lv_gguf_file *g, const char *key, float def, float *out)
{
    double d;
    if (!lv_gguf_find(g, key)) {
        *out = def;
        return LV_OK;
    }
    int rc = lv_gguf_get_float(g, key, &d);
    if (rc == LV_OK)
        *out = (float)d;
    return rc;
}

static int g_bool(const lv_gguf_file *g, const char *key, bool def, bool *out)
{
    if (!lv_gguf_find(g, key)) {
        *out = def;
        return LV_OK;
    }
    return lv_gguf_get_bool(g, key, out);
}

static const char *g_str(const lv_gguf_file *g, const char *key)
{
    const char *s;
    const lv_gguf_kv *kv = lv_gguf_find(g, key);
    if (!kv || kv->type != LV_GGUF_TYPE_STRING || lv_gguf_get_str(g, key, &s, NULL) != LV_OK)
        return NULL;
    return s;
}

static int32_t clamp_id(int64_t v)
{
    return v >= 0 && v <= INT32_MAX ? (int32_t)v : -1;
}

/* the hyper-parameters of a GGUF llama model */
static int gguf_llama_config(const lv_gguf_file *g, struct lv_model_config *c)
{
    int64_t v;
    int rc;
    lv_model_config_init(c);
    c->qk_layout = LV_QK_META;
    if ((rc = g_req(g, "llama.block_count", &c->n_layers)) ||
        (rc = g_req(g, "llama.embedding_length", &c->dim)) ||
        (rc = g_req(g, "llama.feed_forward_length", &c->hidden)) ||
        (rc = g_req(g, "llama.attention.head_count", &c->n_heads)) ||
        (rc = g_int(g, "llama.attention.head_count_kv", c->n_heads, &c->n_kv_heads)) ||
        (rc = g_int(g, "llama.context_length", 2048, &c->max_seq)) ||
        (rc = g_float(g, "llama.attention.layer_norm_rms_epsilon", 1e-5f, &c->norm_eps)) ||
        (rc = g_float(g, "llama.rope.freq_base", 10000.0f, &c->rope_theta)))
        return rc;
    if (c->n_heads <= 0)
        return lv_error("%s: llama.attention.head_count is %lld", g->path,
                        (long long)c->n_heads);
    if ((rc = g_int(g, "llama.attention.key_length", c->dim / c->n_heads, &c->head_dim)) ||
        (rc = g_int(g, "llama.rope.dimension_count", c->head_dim, &v)))
        return rc;
    if (v != c->head_dim)
        return lv_error("%s: llama.rope.dimension_count %lld differs from the head size %lld "
                        "(partial rotary embeddings are not supported)", g->path,
                        (long long)v, (long long)c->head_dim);
    if ((rc = g_int(g, "llama.attention.value_length", c->head_dim, &v)))
        return rc;
    if (v != c->head_dim)
        return lv_error("%s: llama.attention.value_length %lld differs from key_length %lld",
                        g->path, (long long)v, (long long)c->head_dim);
    const char *scaling = g_str(g, "llama.rope.scaling.type");
    if (scaling && strcmp(scaling, "linear") == 0) {
        c->rope_scaling = LV_ROPE_SCALING_LINEAR;
        if ((rc = g_float(g, "llama.rope.scaling.factor", 1.0f, &c->rope_factor)))
            return rc;
    } else if (scaling && strcmp(scaling, "none") != 0) {
        return lv_error("%s: rope scaling '%s' is not supported (none, linear)", g->path,
                        scaling);
    }
    if (lv_gguf_find_tensor(g, "rope_freqs.weight"))
        return lv_error("%s: per-frequency rope factors (rope_freqs.weight, Llama 3.1) are not "
                        "supported", g->path);
    /* vocabulary size: the key, else the token list, else the embedding */
    const lv_gguf_kv *tokens = lv_gguf_find(g, "tokenizer.ggml.tokens");
    const lv_gguf_tensor *emb = lv_gguf_find_tensor(g, "token_embd.weight");
    int64_t def = emb && emb->n_dims == 2 ? emb->shape[0]
                  : tokens && tokens->n <= INT64_MAX ? (int64_t)tokens->n : 0;
    if ((rc = g_int(g, "llama.vocab_size", def, &c->vocab)))
        return rc;
    if ((rc = g_int(g, "tokenizer.ggml.bos_token_id", 1, &v)))
        return rc;
    c->bos_id = clamp_id(v);
    if ((rc = g_int(g, "tokenizer.ggml.eos_token_id", 2, &v)))
        return rc;
    c->eos_id = clamp_id(v);
    if ((rc = g_int(g, "tokenizer.ggml.padding_token_id", -1, &v)))
        return rc;
    c->pad_id = clamp_id(v);
    c->tied = lv_gguf_find_tensor(g, "output.weight") == NULL;
    return LV_OK;
}

/* the vision tower of a clip mmproj file */
static int gguf_clip_config(const lv_gguf_file *g, struct lv_model_config *c)
{
    struct lv_vision_config *v = &c->vision;
    bool has_vision, llava, gelu;
    int rc;
    if ((rc = g_bool(g, "clip.has_vision_encoder", false, &has_vision)) ||
        (rc = g_bool(g, "clip.has_llava_projector", false, &llava)) ||
        (rc = g_bool(g, "clip.use_gelu", false, &gelu)))
        return rc;
    if (!has_vision)
        return lv_error("%s: a clip file without a vision encoder", g->path);
    const char *proj = g_str(g, "clip.projector_type");
    if (!proj)
        proj = g_str(g, "clip.vision.projector_type");
    if (proj ? strcmp(proj, "mlp") != 0 : !llava)
        return lv_error("%s: projector '%s' is not supported (LLaVA-1.5's 'mlp')", g->path,
                        proj ? proj : "none");
    if ((rc = g_req(g, "clip.vision.embedding_length", &v->dim)) ||
        (rc = g_req(g, "clip.vision.feed_forward_length", &v->hidden)) ||
        (rc = g_req(g, "clip.vision.block_count", &v->n_layers)) ||
        (rc = g_req(g, "clip.vision.attention.head_count", &v->n_heads)) ||
        (rc = g_req(g, "clip.vision.image_size", &v->image_size)) ||
        (rc = g_req(g, "clip.vision.patch_size", &v->patch_size)) ||
        (rc = g_float(g, "clip.vision.attention.layer_norm_epsilon", 1e-5f, &v->norm_eps)))
        return rc;
    if (lv_gguf_find(g, "clip.vision.image_grid_pinpoints"))
        return lv_error("%s: LLaVA-1.6 image grids (clip.vision.image_grid_pinpoints) are not "
                        "supported", g->path);
    v->n_channels = 3;
    copy_str(v->act, sizeof v->act, gelu ? "gelu" : "quick_gelu");
    c->has_vision = true;
    c->projector = LV_PROJ_MLP2X_GELU;
    c->image_token_id = -1;          /* llama.cpp splices image embeddings, no token */
    c->vision_feature_full = false;
    /* the legacy converter drops the layers after the feature layer: the last hidden state
     * of the file's tower is the one LLaVA uses, unless clip.vision.feature_layer says */
    c->vision_feature_layer = -1;
    const lv_gguf_kv *fl = lv_gguf_find(g, "clip.vision.feature_layer");
    if (fl) {
        int64_t k;
        if (fl->type != LV_GGUF_TYPE_ARRAY || fl->n != 1)
            return lv_error("%s: clip.vision.feature_layer: one layer is supported", g->path);
        if ((rc = lv_gguf_arr_get_int(g, fl, 0, &k)))
            return rc;
        if (k < 0 || k > v->n_layers)
            return lv_error("%s: clip.vision.feature_layer %lld is outside 0..%lld", g->path,
                            (long long)k, (long long)v->n_layers);
        c->vision_feature_layer = (int32_t)(k - v->n_layers - 1);
    }
    return LV_OK;
}

/* replace fc1 by fc2 or back in name */
static void set_fc(char *name, char which)
{
    char *p = strstr(name, ".mlp.fc");
    if (p && (p[7] == '1' || p[7] == '2'))
        p[7] = which;
}

/* The CLIP MLP by shape (FORMATS.md 2.8): legacy files store fc1 as ffn_down, newer ones as
 * ffn_up; the up-projection is the matrix [hidden, dim]. */
static void fix_clip_fc(struct lv_ckpt_tensor *t, const struct lv_vision_config *v)
{
    if (!strstr(t->name, ".mlp.fc") || v->dim == v->hidden)
        return;
    int64_t rows = t->shape[0];
    if (t->ndim == 2 && rows == v->hidden && t->shape[1] == v->dim)
        set_fc(t->name, '1');
    else if (t->ndim == 2 && rows == v->dim && t->shape[1] == v->hidden)
        set_fc(t->name, '2');
    else if (t->ndim == 1)
        set_fc(t->name, rows == v->hidden ? '1' : '2');
}

static int add_gguf_tensors(struct lv_checkpoint *ck, const lv_gguf_file *g, bool adapter,
                            const struct lv_vision_config *clip)
{
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const lv_gguf_tensor *s = &g->tensors[i];
        char canonical[160], base[64];
        const char *suffix = NULL;
        size_t n = strlen(s->name);
        bool is_b = false;
        if (adapter && n > 7 && (strcmp(s->name + n - 7, ".lora_a") == 0 ||
                                 (is_b = strcmp(s->name + n - 7, ".lora_b") == 0))) {
            snprintf(base, sizeof base, "%.*s", (int)(n - 7), s->name);
            suffix = is_b ? "lora_B.weight" : "lora_A.weight";
        } else {
            copy_str(base, sizeof base, s->name);
        }
        if (!lv_names_gguf_to_canonical(base, canonical, sizeof canonical))
            copy_str(canonical, sizeof canonical, s->name);
        else if (suffix) {
            size_t k = strlen(canonical);
            if (k > 7 && strcmp(canonical + k - 7, ".weight") == 0)
                canonical[k - 7] = 0;
            size_t used = strlen(canonical);
            snprintf(canonical + used, sizeof canonical - used, ".%s", suffix);
        }
        struct lv_ckpt_tensor *t = add_tensor(ck, canonical, s->name);
        if (!t)
            return LV_ERR;
        t->type = type_from_ggml(s->type);
        copy_str(t->type_name, sizeof t->type_name, lv_ggml_type_name(s->type));
        t->ndim = s->n_dims;
        for (int d = 0; d < s->n_dims; d++)
            t->shape[d] = s->shape[d];
        t->data = s->data;
        t->nbytes = s->nbytes;
        /* q/k weights, and the B matrices of their adapters, have Meta-ordered rows */
        char base_canonical[128];
        bool is_k;
        t->meta_qk = suffix ? is_b && lv_names_gguf_to_canonical(base, base_canonical,
                                                                 sizeof base_canonical) &&
                                  lv_names_is_qk(base_canonical, &is_k)
                            : lv_names_is_qk(canonical, &is_k);
        if (clip)
            fix_clip_fc(t, clip);
    }
    return LV_OK;
}

static int add_gguf_meta(struct lv_checkpoint *ck, const lv_gguf_file *g)
{
    for (uint64_t i = 0; i < g->n_kv; i++) {
        char *v = kv_text(&g->kv[i]);
        int rc = v ? add_meta(ck, g->kv[i].key.s, v)
                   : lv_error_status(LV_ENOMEM, "%s: out of memory", ck->path);
        if (rc)
            return rc;
    }
    return LV_OK;
}

static void gguf_tokenizer_summary(struct lv_checkpoint *ck, const lv_gguf_file *g)
{
    const char *model = g_str(g, "tokenizer.ggml.model");
    const lv_gguf_kv *tokens = lv_gguf_find(g, "tokenizer.ggml.tokens");
    if (model)
        snprintf(ck->tokenizer, sizeof ck->tokenizer, "GGUF vocabulary, model '%s', %llu "
                 "tokens", model, tokens ? (unsigned long long)tokens->n : 0ULL);
}

static int open_gguf(struct lv_checkpoint *ck, const char *mmproj)
{
    struct impl *im = IMPL(ck);
    lv_gguf_file *g = &im->gguf;
    int rc;
    ck->format = LV_CKPT_GGUF;
    if ((rc = lv_gguf_open(g, ck->path)) || (rc = add_gguf_meta(ck, g)))
        return rc;
    gguf_tokenizer_summary(ck, g);
    const char *arch = g_str(g, "general.architecture"), *type = g_str(g, "general.type");
    if (!arch)
        return lv_error("%s: no general.architecture string", ck->path);
    if (type && strcmp(type, "adapter") == 0) {
        if (mmproj)
            return lv_error("%s: a LoRA adapter file; --mmproj goes with a text model",
                            ck->path);
        const char *kind = g_str(g, "adapter.type");
        float alpha;
        if ((rc = g_float(g, "adapter.lora.alpha", 0.0f, &alpha)))
            return rc;
        snprintf(ck->summary, sizeof ck->summary, "%s adapter for a '%s' model, alpha %g, "
                 "%llu tensors", kind ? kind : "unknown", arch, (double)alpha,
                 (unsigned long long)g->n_tensors);
        return add_gguf_tensors(ck, g, true, NULL);
    }
    if (strcmp(arch, "clip") == 0) {
        if (mmproj)
            return lv_error("%s: is a clip mmproj file: give the text model as the model and "
                            "this one with --mmproj", ck->path);
        struct lv_model_config c;
        lv_model_config_init(&c);
        if ((rc = gguf_clip_config(g, &c)))
            return rc;
        snprintf(ck->summary, sizeof ck->summary, "CLIP vision tower and LLaVA projector "
                 "(mmproj): dim %lld, %lld layers, %lld heads, image %lld, patch %lld",
                 (long long)c.vision.dim, (long long)c.vision.n_layers,
                 (long long)c.vision.n_heads, (long long)c.vision.image_size,
                 (long long)c.vision.patch_size);
        return add_gguf_tensors(ck, g, false, &c.vision);
    }
    if (strcmp(arch, "llama") != 0)
        return lv_error("%s: architecture '%s' is not supported (lavinia reads llama-family "
                        "GGUF models, clip mmproj files and LoRA adapters)", ck->path, arch);
    if (g->n_tensors == 0) {
        if (mmproj)
            return lv_error("%s: a vocabulary-only file has no model for --mmproj", ck->path);
        snprintf(ck->summary, sizeof ck->summary, "vocabulary only (no tensors)");
        return LV_OK;
    }
    if ((rc = gguf_llama_config(g, &ck->config)))
        return rc;
    ck->has_config = true;
    if ((rc = add_gguf_tensors(ck, g, false, NULL)))
        return rc;
    if (mmproj) {
        lv_gguf_file *m = &im->mmproj;
        if ((rc = lv_gguf_open(m, mmproj)))
            return rc;
        const char *march = g_str(m, "general.architecture");
        if (!march || strcmp(march, "clip") != 0)
            return lv_error("%s: --mmproj wants a clip file, this one's architecture is '%s'",
                            mmproj, march ? march : "missing");
        if ((rc = gguf_clip_config(m, &ck->config)) || (rc = add_gguf_meta(ck, m)) ||
            (rc = add_gguf_tensors(ck, m, false, &ck->config.vision)))
            return rc;
        ck->config.arch = LV_ARCH_LLAVA;
        copy_str(ck->config.arch_name, sizeof ck->config.arch_name, "llama+clip");
    }
    return lv_model_config_check(&ck->config, ck->path);
}

/* ----------------------------------------------------------------------------------------
 * llama2.c
 */

static int open_llama2c(struct lv_checkpoint *ck, const char *tokenizer)
{
    struct impl *im = IMPL(ck);
    int rc;
    ck->format = LV_CKPT_LLAMA2C;
    if ((rc = lv_l2c_open(&im->l2c, ck->path)))
        return rc;
    ck->config = im->l2c.config;
    ck->has_config = true;
    for (int64_t i = 0; i < lv_l2c_tensor_count(&im->l2c); i++) {
        lv_l2c_tensor s;
        bool is_k;
        if ((rc = lv_l2c_tensor_at(&im->l2c, i, &s)))
            return rc;
        struct lv_ckpt_tensor *t = add_tensor(ck, s.name, s.name);
        if (!t)
            return LV_ERR;
        t->type = LV_CKPT_F32;
        copy_str(t->type_name, sizeof t->type_name, "F32");
        t->ndim = s.ndim;
        t->shape[0] = s.shape[0];
        t->shape[1] = s.shape[1];
        t->data = s.data;
        t->nbytes = s.nbytes;
        t->meta_qk = lv_names_is_qk(s.name, &is_k);
    }
    char *v = lv_strdupf("%s", ck->config.tied ? "shared with the embedding" : "separate");
    if ((rc = add_meta(ck, "classifier", v)))
        return rc;
    if (tokenizer) {
        lv_tokenizer *tok;
        if ((rc = lv_tok_open(&tok, ck->path, tokenizer)))
            return rc;
        snprintf(ck->tokenizer, sizeof ck->tokenizer, "%s", lv_tok_describe(tok));
        lv_tok_free(tok);
        copy_str(im->tok_path, sizeof im->tok_path, tokenizer);
    }
    return LV_OK;
}

/* ----------------------------------------------------------------------------------------
 * open / close
 */

void lv_checkpoint_close(struct lv_checkpoint *ck)
{
    struct impl *im = ck->impl;
    if (im) {
        lv_st_set_close(&im->set);
        lv_st_close(&im->st);
        lv_gguf_close(&im->gguf);
        lv_gguf_close(&im->mmproj);
        lv_l2c_close(&im->l2c);
        free(im->sorted);
        free(im);
    }
    for (int i = 0; i < ck->n_meta; i++) {
        free(ck->meta[i].key);
        free(ck->meta[i].value);
    }
    free(ck->meta);
    free(ck->tensors);
    memset(ck, 0, sizeof *ck);
}

int lv_checkpoint_open(struct lv_checkpoint *ck, const char *path, const char *mmproj,
                       const char *tokenizer)
{
    memset(ck, 0, sizeof *ck);
    lv_model_config_init(&ck->config);
    if (!copy_str(ck->path, sizeof ck->path, path))
        return lv_error("%.100s...: path too long", path);
    if (!(ck->impl = calloc(1, sizeof(struct impl))))
        return lv_error_status(LV_ENOMEM, "%s: out of memory", path);
    struct stat st;
    int rc;
    unsigned char head[9] = { 0 };
    if (stat(path, &st) != 0) {
        rc = lv_error_status(LV_EIO, "%s: cannot open: %s", path, strerror(errno));
    } else if (S_ISDIR(st.st_mode)) {
        rc = mmproj      ? lv_error("%s: --mmproj goes with a GGUF model; a Hugging Face "
                                    "LLaVA directory carries its vision tower", path)
             : tokenizer ? lv_error("%s: -t/--tokenizer is for llama2.c models; a Hugging "
                                    "Face directory carries its tokenizer", path)
                         : open_hf_dir(ck);
    } else if (!S_ISREG(st.st_mode)) {
        rc = lv_error("%s: not a regular file or a directory", path);
    } else if (st.st_size == 0) {
        rc = lv_error("%s: empty file (0 bytes)", path);
    } else {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        ssize_t got = fd >= 0 ? pread(fd, head, sizeof head, 0) : -1;
        if (fd >= 0)
            close(fd);
        size_t n = strlen(path);
        bool st_name = n > 12 && strcmp(path + n - 12, ".safetensors") == 0;
        bool gguf_name = n > 5 && strcmp(path + n - 5, ".gguf") == 0;
        if (got < 0)
            rc = lv_error_status(LV_EIO, "%s: cannot read: %s", path, strerror(errno));
        else if ((got >= 4 && memcmp(head, "GGUF", 4) == 0) || gguf_name)
            rc = tokenizer ? lv_error("%s: -t/--tokenizer is for llama2.c models; a GGUF "
                                      "file carries its vocabulary", path)
                           : open_gguf(ck, mmproj);
        else if (mmproj)
            rc = lv_error("%s: --mmproj goes with a GGUF text model", path);
        else if (st_name || (got == 9 && head[8] == '{'))
            rc = tokenizer ? lv_error("%s: -t/--tokenizer is for llama2.c models", path)
                           : open_safetensors(ck);
        else
            rc = open_llama2c(ck, tokenizer);
    }
    if (rc == LV_OK)
        rc = build_index(ck);
    if (rc == LV_OK && ck->has_config)
        rc = check_tensors(ck);
    if (rc != LV_OK) {
        char *msg = strdup(lv_errmsg());
        lv_checkpoint_close(ck);
        if (msg) {
            lv_error("%s", msg);
            free(msg);
        }
    }
    return rc;
}

/* ----------------------------------------------------------------------------------------
 * writing
 */

/* a tensor's bytes in the target's row order and type: t's own bytes when nothing changes,
 * else a new buffer in *owned */
static int converted(const struct lv_checkpoint *ck, const struct lv_ckpt_tensor *t,
                     bool want_meta, bool to_f32, const void **data, uint64_t *nbytes,
                     void **owned)
{
    const void *src = t->data;
    uint64_t n = t->nbytes;
    *owned = NULL;
    if (to_f32) {
        int64_t ne = 1;
        for (int d = 0; d < t->ndim; d++)
            ne *= t->shape[d];
        float *f = malloc((size_t)ne * sizeof(float) + 1);
        if (!f)
            return lv_error_status(LV_ENOMEM, "%s: out of memory converting '%s'", ck->path,
                                   t->name);
        int rc = lv_gguf_dequantize((uint32_t)type_rows[t->type].ggml, t->data, f, ne);
        if (rc) {
            free(f);
            return lv_error("%s: tensor '%s': cannot dequantise %s", ck->path, t->name,
                            t->type_name);
        }
        src = *owned = f;
        n = (uint64_t)ne * sizeof(float);
    }
    bool is_k;
    bool qk = t->ndim == 2 && lv_names_is_qk(t->name, &is_k);
    if (qk && t->meta_qk != want_meta) {
        long heads = (long)(is_k ? ck->config.n_kv_heads : ck->config.n_heads);
        size_t row = (size_t)(n / (uint64_t)t->shape[0]);
        void *p = malloc((size_t)n + 1);
        if (!p) {
            free(*owned);
            *owned = NULL;
            return lv_error_status(LV_ENOMEM, "%s: out of memory", ck->path);
        }
        if (want_meta)
            lv_qk_hf_to_meta(p, src, heads, (long)ck->config.head_dim, row);
        else
            lv_qk_meta_to_hf(p, src, heads, (long)ck->config.head_dim, row);
        free(*owned);
        src = *owned = p;
    }
    *data = src;
    *nbytes = n;
    return LV_OK;
}

static int make_dir(const char *dir)
{
    struct stat st;
    if (stat(dir, &st) == 0)
        return S_ISDIR(st.st_mode) ? LV_OK : lv_error("%s: exists and is not a directory", dir);
    if (mkdir(dir, 0755) != 0)
        return lv_error_status(LV_EIO, "%s: cannot create: %s", dir, strerror(errno));
    return LV_OK;
}

static bool same_dir(const char *a, const char *b)
{
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

/* write tensors [lo, hi) to one safetensors file */
static int write_shard(const struct lv_checkpoint *ck, const char *path, int lo, int hi,
                       bool llava)
{
    int n = hi - lo, rc = LV_OK;
    lv_st_wtensor *w = calloc((size_t)n + 1, sizeof *w);
    void **owned = calloc((size_t)n + 1, sizeof *owned);
    char (*names)[160] = calloc((size_t)n + 1, sizeof *names);
    if (!w || !owned || !names)
        rc = lv_error_status(LV_ENOMEM, "%s: out of memory", path);
    for (int i = 0; rc == LV_OK && i < n; i++) {
        const struct lv_ckpt_tensor *t = &ck->tensors[lo + i];
        bool to_f32 = type_rows[t->type].st < 0;
        uint64_t nbytes;
        if (!lv_names_hf_for_file(t->name, llava, names[i], sizeof names[i]))
            rc = lv_error("%s: tensor name '%s' too long", path, t->name);
        else
            rc = converted(ck, t, false, to_f32, &w[i].data, &nbytes, &owned[i]);
        w[i].name = names[i];
        w[i].dtype = to_f32 ? LV_ST_F32 : (lv_st_dtype)type_rows[t->type].st;
        w[i].ndim = t->ndim;
        for (int d = 0; d < t->ndim; d++)
            w[i].shape[d] = t->shape[d];
    }
    if (rc == LV_OK)
        rc = lv_st_write(path, w, n, NULL);
    for (int i = 0; owned && i < n; i++)
        free(owned[i]);
    free(owned);
    free(names);
    free(w);
    return rc;
}

static uint64_t hf_bytes(const struct lv_ckpt_tensor *t)
{
    if (type_rows[t->type].st >= 0)
        return t->nbytes;
    uint64_t ne = 1;
    for (int d = 0; d < t->ndim; d++)
        ne *= (uint64_t)t->shape[d];
    return ne * 4;
}

static int write_index(const struct lv_checkpoint *ck, const char *dir, const int *shard_of,
                       int n_shards, bool llava)
{
    json_t *root = json_object(), *map = json_object(), *meta = json_object();
    uint64_t total = 0;
    int rc = LV_OK;
    for (int i = 0; i < ck->n_tensors; i++) {
        char name[160], file[64];
        total += hf_bytes(&ck->tensors[i]);
        snprintf(file, sizeof file, "model-%05d-of-%05d.safetensors", shard_of[i] + 1,
                 n_shards);
        if (!lv_names_hf_for_file(ck->tensors[i].name, llava, name, sizeof name) ||
            json_object_set_new(map, name, json_string(file)) != 0)
            rc = lv_error_status(LV_ENOMEM, "%s: cannot build the index", dir);
    }
    char *text = NULL;
    if (rc == LV_OK &&
        json_object_set_new(meta, "total_size", json_integer((json_int_t)total)) == 0 &&
        json_object_set(root, "metadata", meta) == 0 &&
        json_object_set(root, "weight_map", map) == 0)
        text = json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(root);
    json_decref(map);
    json_decref(meta);
    if (rc == LV_OK && !text)
        rc = lv_error_status(LV_ENOMEM, "%s: cannot build the index", dir);
    if (rc == LV_OK) {
        char path[4200];
        snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
        rc = lv_write_atomic(path, text, strlen(text));
    }
    free(text);
    return rc;
}

static int copy_side_files(const struct lv_checkpoint *ck, const char *dir, int *copied)
{
    *copied = 0;
    for (size_t i = 0; i < N_SIDE_FILES; i++) {
        char src[4200], dst[4200], *buf;
        size_t n;
        if (!file_in(ck->path, hf_side_files[i]))
            continue;
        snprintf(src, sizeof src, "%s/%s", ck->path, hf_side_files[i]);
        snprintf(dst, sizeof dst, "%s/%s", dir, hf_side_files[i]);
        int rc = lv_read_file(src, SIDE_FILE_MAX, &buf, &n);
        if (rc == LV_OK) {
            rc = lv_write_atomic(dst, buf, n);
            free(buf);
        }
        if (rc)
            return rc;
        if (i < 5)
            (*copied)++;
    }
    return LV_OK;
}

int lv_checkpoint_write_hf(const struct lv_checkpoint *ck, const char *dir,
                           uint64_t shard_bytes)
{
    /* transformers' default is 5 GB; smaller shards bound the memory a dequantising
     * conversion needs at once */
    if (shard_bytes == 0)
        shard_bytes = LV_CKPT_SHARD_BYTES;
    const struct lv_model_config *c = &ck->config;
    bool llava = c->arch == LV_ARCH_LLAVA;
    int rc;
    if (!ck->has_config)
        return lv_error("%s: %s; there is no model to write", ck->path,
                        ck->summary[0] ? ck->summary : "no config");
    if (llava && (ck->format != LV_CKPT_HF_DIR || tower_outside(c)))
        return lv_error("%s: writing this LLaVA checkpoint as a Hugging Face directory is not "
                        "supported (only Hugging Face LLaVA directories with their vision "
                        "tower are rewritten)", ck->path);
    for (int i = 0; i < ck->n_tensors; i++)
        if (ck->tensors[i].type == LV_CKPT_OTHER)
            return lv_error("%s: tensor '%s' of type %s cannot be written", ck->path,
                            ck->tensors[i].file_name, ck->tensors[i].type_name);
    if ((rc = make_dir(dir)))
        return rc;
    if (ck->format == LV_CKPT_HF_DIR && same_dir(ck->path, dir))
        return lv_error("%s: is the input directory; write to another one", dir);
    /* shards in tensor order, each at most shard_bytes (a larger tensor gets its own) */
    int *shard_of = malloc(((size_t)ck->n_tensors + 1) * sizeof *shard_of), n_shards = 0;
    if (!shard_of)
        return lv_error_status(LV_ENOMEM, "%s: out of memory", dir);
    uint64_t in_shard = 0;
    for (int i = 0; i < ck->n_tensors; i++) {
        uint64_t b = hf_bytes(&ck->tensors[i]);
        if (n_shards == 0 || (in_shard > 0 && in_shard + b > shard_bytes)) {
            n_shards++;
            in_shard = 0;
        }
        in_shard += b;
        shard_of[i] = n_shards - 1;
    }
    char path[4200];
    for (int s = 0, lo = 0; rc == LV_OK && s < (n_shards ? n_shards : 1); s++) {
        int hi = lo;
        while (hi < ck->n_tensors && shard_of[hi] == s)
            hi++;
        if (n_shards <= 1)
            snprintf(path, sizeof path, "%s/model.safetensors", dir);
        else
            snprintf(path, sizeof path, "%s/model-%05d-of-%05d.safetensors", dir, s + 1,
                     n_shards);
        rc = write_shard(ck, path, lo, hi, llava);
        lo = hi;
    }
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    if (rc == LV_OK && n_shards > 1)
        rc = write_index(ck, dir, shard_of, n_shards, llava);
    else if (rc == LV_OK)
        unlink(path);            /* a stale index would hide the new model.safetensors */
    free(shard_of);
    struct lv_model_config hc = *c;
    hc.qk_layout = LV_QK_HF;
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (rc == LV_OK)
        rc = lv_hf_config_write(&hc, path);
    int copied = 0;
    if (rc == LV_OK && ck->format == LV_CKPT_HF_DIR)
        rc = copy_side_files(ck, dir, &copied);
    if (rc == LV_OK && copied == 0) {
        if (ck->tokenizer[0])
            fprintf(stderr, "lavinia: note: the %s is not converted to Hugging Face tokenizer "
                    "files; no tokenizer written\n", ck->tokenizer);
        else
            fprintf(stderr, "lavinia: note: %s has no tokenizer; no tokenizer written\n",
                    ck->path);
    }
    return rc;
}

/* llama.cpp's general.file_type for the type of the layer matrices, -1 when mixed k-quants
 * make it a guess */
static int file_type(const struct lv_checkpoint *ck)
{
    const struct lv_ckpt_tensor *t =
        lv_checkpoint_find(ck, "model.layers.0.self_attn.q_proj.weight");
    switch (t ? t->type : LV_CKPT_F32) {
    case LV_CKPT_F32: return 0;
    case LV_CKPT_F16: return 1;
    case LV_CKPT_Q4_0: return 2;
    case LV_CKPT_Q8_0: return 7;
    case LV_CKPT_BF16: return 32;
    default: return -1;
    }
}

/* the input's vocabulary as GGUF keys: copied from a GGUF input, converted from
 * tokenizer.json / tokenizer.model / tokenizer.bin otherwise; *done says whether there was one */
static int add_vocab(lv_gguf_writer *w, const struct lv_checkpoint *ck, bool *done)
{
    const struct impl *im = ck->impl;
    int rc = LV_OK;
    *done = false;
    if (ck->format == LV_CKPT_GGUF) {
        for (uint64_t i = 0; rc == LV_OK && i < im->gguf.n_kv; i++)
            if (strncmp(im->gguf.kv[i].key.s, "tokenizer.", 10) == 0) {
                rc = lv_gguf_writer_add_kv(w, &im->gguf.kv[i]);
                *done = true;
            }
        return rc;
    }
    if (!ck->tokenizer[0] || (ck->format == LV_CKPT_LLAMA2C && !im->tok_path[0]))
        return LV_OK;
    lv_tokenizer *tok;
    if ((rc = lv_tok_open(&tok, ck->path, im->tok_path[0] ? im->tok_path : NULL)))
        return rc;
    if (lv_tok_n_vocab(tok) > ck->config.vocab)
        rc = lv_error("%s: the tokenizer has %d pieces, more than the model's %lld", ck->path,
                      lv_tok_n_vocab(tok), (long long)ck->config.vocab);
    else
        rc = lv_tok_write_gguf(tok, w, ck->config.vocab);
    lv_tok_free(tok);
    *done = rc == LV_OK;
    return rc;
}

static int add_llama_keys(lv_gguf_writer *w, const struct lv_checkpoint *ck)
{
    const struct lv_model_config *c = &ck->config;
    char name[256];
    const char *base = strrchr(ck->path, '/');
    base = base && base[1] ? base + 1 : ck->path;
    snprintf(name, sizeof name, "%.200s", base);
    char *dot = strrchr(name, '.');
    if (dot && dot != name)
        *dot = 0;
    int ft = file_type(ck), rc;
    if ((rc = lv_gguf_writer_add_str(w, "general.architecture", "llama")) ||
        (rc = lv_gguf_writer_add_str(w, "general.name", name)) ||
        (ft >= 0 && (rc = lv_gguf_writer_add_u32(w, "general.file_type", (uint32_t)ft))) ||
        (rc = lv_gguf_writer_add_u32(w, "llama.vocab_size", (uint32_t)c->vocab)) ||
        (rc = lv_gguf_writer_add_u32(w, "llama.context_length", (uint32_t)c->max_seq)) ||
        (rc = lv_gguf_writer_add_u32(w, "llama.embedding_length", (uint32_t)c->dim)) ||
        (rc = lv_gguf_writer_add_u32(w, "llama.block_count", (uint32_t)c->n_layers)) ||
        (rc = lv_gguf_writer_add_u32(w, "llama.feed_forward_length", (uint32_t)c->hidden)) ||
        (rc = lv_gguf_writer_add_u32(w, "llama.rope.dimension_count",
                                     (uint32_t)c->head_dim)) ||
        (rc = lv_gguf_writer_add_u32(w, "llama.attention.head_count", (uint32_t)c->n_heads)) ||
        (rc = lv_gguf_writer_add_u32(w, "llama.attention.head_count_kv",
                                     (uint32_t)c->n_kv_heads)) ||
        (rc = lv_gguf_writer_add_f32(w, "llama.attention.layer_norm_rms_epsilon",
                                     c->norm_eps)) ||
        (rc = lv_gguf_writer_add_f32(w, "llama.rope.freq_base", c->rope_theta)))
        return rc;
    if (c->head_dim * c->n_heads != c->dim &&
        ((rc = lv_gguf_writer_add_u32(w, "llama.attention.key_length",
                                      (uint32_t)c->head_dim)) ||
         (rc = lv_gguf_writer_add_u32(w, "llama.attention.value_length",
                                      (uint32_t)c->head_dim))))
        return rc;
    if (c->rope_scaling == LV_ROPE_SCALING_LINEAR &&
        ((rc = lv_gguf_writer_add_str(w, "llama.rope.scaling.type", "linear")) ||
         (rc = lv_gguf_writer_add_f32(w, "llama.rope.scaling.factor", c->rope_factor))))
        return rc;
    return LV_OK;
}

static bool is_vision(const char *canonical)
{
    return strncmp(canonical, "vision_tower.", 13) == 0 ||
           strncmp(canonical, "multi_modal_projector.", 22) == 0;
}

/* the blocks of the tower LLaVA uses: up to its feature layer (the legacy converter's rule) */
static int64_t vision_blocks(const struct lv_model_config *c)
{
    int64_t L = c->vision.n_layers, fl = c->vision_feature_layer;
    return fl < 0 ? L + 1 + fl : fl;
}

/* "layers.N." in a canonical vision name: N, or -1 */
static long vision_layer_of(const char *canonical)
{
    const char *p = strstr(canonical, "encoder.layers.");
    return p ? strtol(p + 15, NULL, 10) : -1;
}

/* the clip keys llama.cpp's mmproj files carry for LLaVA-1.5 (FORMATS.md 2.8) */
static int add_clip_keys(lv_gguf_writer *w, const struct lv_checkpoint *ck)
{
    const struct lv_model_config *c = &ck->config;
    const struct lv_vision_config *v = &c->vision;
    static const float mean[3] = { 0.48145466f, 0.4578275f, 0.40821073f },
                       std[3] = { 0.26862954f, 0.26130258f, 0.27577711f };
    int rc;
    if ((rc = lv_gguf_writer_add_str(w, "general.architecture", "clip")) ||
        (rc = lv_gguf_writer_add_str(w, "general.name", "mmproj")) ||
        (rc = lv_gguf_writer_add_bool(w, "clip.has_text_encoder", false)) ||
        (rc = lv_gguf_writer_add_bool(w, "clip.has_vision_encoder", true)) ||
        (rc = lv_gguf_writer_add_bool(w, "clip.has_llava_projector", true)) ||
        (rc = lv_gguf_writer_add_str(w, "clip.projector_type", "mlp")) ||
        (rc = lv_gguf_writer_add_u32(w, "clip.vision.image_size", (uint32_t)v->image_size)) ||
        (rc = lv_gguf_writer_add_u32(w, "clip.vision.patch_size", (uint32_t)v->patch_size)) ||
        (rc = lv_gguf_writer_add_u32(w, "clip.vision.embedding_length", (uint32_t)v->dim)) ||
        (rc = lv_gguf_writer_add_u32(w, "clip.vision.feed_forward_length",
                                     (uint32_t)v->hidden)) ||
        (rc = lv_gguf_writer_add_u32(w, "clip.vision.projection_dim", (uint32_t)c->dim)) ||
        (rc = lv_gguf_writer_add_u32(w, "clip.vision.attention.head_count",
                                     (uint32_t)v->n_heads)) ||
        (rc = lv_gguf_writer_add_f32(w, "clip.vision.attention.layer_norm_epsilon",
                                     v->norm_eps)) ||
        (rc = lv_gguf_writer_add_u32(w, "clip.vision.block_count",
                                     (uint32_t)vision_blocks(c))) ||
        (rc = lv_gguf_writer_add_arr(w, "clip.vision.image_mean", LV_GGUF_TYPE_FLOAT32, mean,
                                     3)) ||
        (rc = lv_gguf_writer_add_arr(w, "clip.vision.image_std", LV_GGUF_TYPE_FLOAT32, std,
                                     3)))
        return rc;
    return lv_gguf_writer_add_bool(w, "clip.use_gelu", strcmp(v->act, "gelu") == 0);
}

/* one GGUF file: the text model (vision false) or the mmproj (vision true) */
static int write_gguf_part(const struct lv_checkpoint *ck, const char *path, bool vision)
{
    lv_gguf_writer *w = lv_gguf_writer_new();
    void **owned = calloc((size_t)ck->n_tensors + 1, sizeof *owned);
    int rc = !w || !owned ? lv_error_status(LV_ENOMEM, "%s: out of memory", path)
             : vision     ? add_clip_keys(w, ck)
                          : add_llama_keys(w, ck);
    bool vocab = false, quant = false;
    if (rc == LV_OK && !vision)
        rc = add_vocab(w, ck, &vocab);
    for (int i = 0; rc == LV_OK && i < ck->n_tensors; i++) {
        const struct lv_ckpt_tensor *t = &ck->tensors[i];
        char name[64];
        const void *data;
        uint64_t nbytes;
        int g = type_rows[t->type].ggml;
        if (is_vision(t->name) != vision ||
            (vision && (strstr(t->name, "post_layernorm") ||
                        vision_layer_of(t->name) >= vision_blocks(&ck->config))))
            continue;
        if (g < 0)
            rc = lv_error("%s: tensor '%s' of type %s has no GGUF type", ck->path,
                          t->file_name, t->type_name);
        else if (!lv_names_canonical_to_gguf(t->name, name, sizeof name))
            rc = lv_error("%s: tensor '%s' has no llama.cpp name", ck->path, t->file_name);
        else if ((rc = converted(ck, t, true, false, &data, &nbytes, &owned[i])) == LV_OK)
            rc = lv_gguf_writer_add_tensor(w, name, (uint32_t)g, t->ndim, t->shape, data,
                                           nbytes);
        quant = quant || lv_ggml_block_elems((uint32_t)g) > 1;
    }
    if (rc == LV_OK && quant)
        rc = lv_gguf_writer_add_u32(w, "general.quantization_version", 2);
    if (rc == LV_OK)
        rc = lv_gguf_writer_write(w, path);
    if (rc == LV_OK && !vocab && !vision)
        fprintf(stderr, "lavinia: note: the input has no tokenizer; no vocabulary written\n");
    for (int i = 0; owned && i < ck->n_tensors; i++)
        free(owned[i]);
    free(owned);
    lv_gguf_writer_free(w);
    return rc;
}

int lv_checkpoint_mmproj_path(const char *path, char *out, size_t n)
{
    size_t k = strlen(path);
    int w = k > 5 && strcmp(path + k - 5, ".gguf") == 0
                ? snprintf(out, n, "%.*s-mmproj.gguf", (int)(k - 5), path)
                : snprintf(out, n, "%s.mmproj.gguf", path);
    return w > 0 && (size_t)w < n ? LV_OK : lv_error("%s: path too long", path);
}

int lv_checkpoint_write_gguf(const struct lv_checkpoint *ck, const char *path)
{
    if (!ck->has_config)
        return lv_error("%s: %s; there is no model to write", ck->path,
                        ck->summary[0] ? ck->summary : "no config");
    const struct lv_model_config *c = &ck->config;
    if (c->has_vision && c->projector == LV_PROJ_LAVIN)
        return lv_error("%s: a LaVIN checkpoint cannot be written as GGUF (llama.cpp's mmproj "
                        "files have no LaVIN projector)", ck->path);
    if (c->has_vision && (tower_outside(c) || c->projector != LV_PROJ_MLP2X_GELU ||
                          c->vision_feature_full))
        return lv_error("%s: this LLaVA cannot be written as GGUF + mmproj (the vision tower "
                        "must be in the checkpoint, with LLaVA-1.5's MLP projector and the "
                        "class token dropped)", ck->path);
    int rc = write_gguf_part(ck, path, false);
    if (rc == LV_OK && c->has_vision) {
        char mm[4200];
        if ((rc = lv_checkpoint_mmproj_path(path, mm, sizeof mm)) == LV_OK &&
            (rc = write_gguf_part(ck, mm, true)) == LV_OK)
            fprintf(stderr, "lavinia: note: the vision tower and projector are in %s (give it "
                    "with --mmproj)\n", mm);
    }
    return rc;
}
