/*
 * weights.c: model weights from a checkpoint (weights.h).
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "model/weights.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/gguf.h"
#include "lavinia/error.h"
#include "util/buf.h"

/* Adopt a tensor header, to free with the set. */
static int keep(struct lv_weights *m, lv_tensor *t)
{
    void *p = realloc(m->tensors, (size_t)(m->n_tensors + 1) * sizeof *m->tensors);
    if (!p)
        return LV_ENOMEM;
    m->tensors = p;
    m->tensors[m->n_tensors++] = t;
    return LV_OK;
}

/* n zeroed bytes, 64-aligned, from the set's slabs; NULL when out of memory */
static void *slab_take(struct lv_weights *m, size_t n)
{
    n = (n + 63) / 64 * 64;
    struct lv_weights_slab *s = m->n_slabs ? &m->slabs[m->n_slabs - 1] : NULL;
    if (!s || s->size - s->used < n) {
        /* a new slab, or a block of its own for a tensor bigger than a slab; what is left of
         * the last one is given up (pages never touched are never committed) */
        void *p = realloc(m->slabs, (size_t)(m->n_slabs + 1) * sizeof *m->slabs);
        if (!p)
            return NULL;
        m->slabs = p;
        size_t size = n > LV_WEIGHTS_SLAB ? n : LV_WEIGHTS_SLAB;
        char *block = lv_zalloc(size);
        if (!block)
            return NULL;
        s = &m->slabs[m->n_slabs++];
        *s = (struct lv_weights_slab){ block, size, 0 };
    }
    void *p = s->p + s->used;
    s->used += n;
    return p;
}

int lv_weights_new(struct lv_weights *m, lv_dtype dt, int ndim, const int64_t *shape,
                   lv_tensor **out)
{
    lv_tensor *t = lv_tensor_wrap(NULL, dt, ndim, shape);
    void *data = t ? slab_take(m, lv_tensor_nbytes(t)) : NULL;
    if (!data || keep(m, t) != LV_OK) {
        lv_tensor_free(t);
        return lv_error_status(LV_ENOMEM, "out of memory for weights");
    }
    t->data = data;
    lv_tensor_set_frozen(t);
    *out = t;
    return LV_OK;
}

/* ggml weights the engine has no kernels for (k-quants, Q4_1, Q5_0, Q5_1, IQ4_NL, IQ4_XS:
 * LV_GGUF_CONVERTED_TYPES) become Q8_0 at load, row by row (the rows split over the
 * threads): 8.5 bits a weight, finer than any of them; Q8_0x8 (tensor.h) where the rows are
 * whole groups of 256. */
static int to_q8_0(struct lv_weights *m, const struct lv_checkpoint *ck,
                   const struct lv_ckpt_tensor *t, void **out, lv_dtype *dt)
{
    int64_t cols = t->shape[t->ndim - 1], rows = 1;
    for (int d = 0; d < t->ndim - 1; d++)
        rows *= t->shape[d];
    uint32_t type = (uint32_t)lv_ckpt_type_ggml(t->type);
    if (cols % LV_QBLOCK != 0 || cols % lv_ggml_block_elems(type) != 0)
        return lv_error("%s: tensor '%s' has rows of %lld values, not whole %s and Q8_0 blocks",
                        ck->path, t->file_name, (long long)cols, t->type_name);
    uint64_t row_bytes = t->nbytes / (uint64_t)rows;
    /* rows of whole groups take the CPU kernels' layout of the same blocks */
    lv_dtype q8 = lv_weights_q8_0_layout(cols);
    size_t out_row = lv_dtype_bytes(q8, cols);
    unsigned char *w = slab_take(m, (size_t)rows * out_row);
    int failed = 0;
    if (!w)
        return lv_error_status(LV_ENOMEM, "%s: out of memory converting '%s'", ck->path,
                               t->file_name);
    /* nothing in the loop can fail but a buffer: the type converts and the rows are whole
     * blocks of it */
#ifdef _OPENMP
#pragma omp parallel reduction(|| : failed)
#endif
    {
        float *row = malloc((size_t)cols * sizeof *row);
        failed = !row;
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
        for (int64_t r = 0; r < rows; r++) {
            if (!row)
                continue;
            lv_gguf_dequantize(type, (const uint8_t *)t->data + (uint64_t)r * row_bytes, row,
                               cols);
            lv_convert_row(w + (size_t)r * out_row, q8, row, LV_F32, cols);
        }
        free(row);
    }
    if (failed)                 /* the slab's bytes go with the set */
        return lv_error_status(LV_ENOMEM, "%s: out of memory converting '%s'", ck->path,
                               t->file_name);
    if (!m->converted)
        fprintf(stderr, "lavinia: note: %s: %s weights are converted to Q8_0 at load\n",
                ck->path, t->type_name);
    m->converted = true;
    *dt = q8;
    *out = w;
    return LV_OK;
}

/* a checkpoint tensor as an lv_tensor: wrapped where it lies when aligned, else copied into
 * the set's slabs */
int lv_weights_get(struct lv_weights *m, const struct lv_checkpoint *ck, const char *name,
                   lv_tensor **out)
{
    const struct lv_ckpt_tensor *t = lv_checkpoint_find(ck, name);
    if (!t)
        return lv_error("%s: no tensor '%s'", ck->path, name);
    lv_dtype dt = LV_F32;
    void *data = (void *)t->data;
    bool copied = false;
    switch (t->type) {
    case LV_CKPT_F32: dt = LV_F32; break;
    case LV_CKPT_F16: dt = LV_F16; break;
    case LV_CKPT_BF16: dt = LV_BF16; break;
    case LV_CKPT_Q8_0:
        dt = LV_Q8_0;
        if (t->ndim >= 1 && lv_weights_q8_0_layout(t->shape[t->ndim - 1]) == LV_Q8_0X8) {
            /* rows of whole groups: the same blocks regrouped for the CPU's kernels, byte for
             * byte (tensor.h); the file's pages can go */
            if (!(data = slab_take(m, (size_t)t->nbytes)))
                return lv_error_status(LV_ENOMEM, "%s: out of memory for '%s'", ck->path, name);
            lv_convert_row(data, LV_Q8_0X8, t->data, LV_Q8_0, (int64_t)(t->nbytes / 34 * 32));
            lv_pages_release(t->data, (size_t)t->nbytes);
            dt = LV_Q8_0X8;
            copied = true;
        }
        break;
    case LV_CKPT_Q4_0: dt = LV_Q4_0; break;
    default: {
        int g = lv_ckpt_type_ggml(t->type);
        if (g < 0 || lv_gguf_type_loadable((uint32_t)g) != LV_GGUF_LOAD_CONVERT)
            return lv_error("%s: tensor '%s' is %s; the decoder runs F32, F16, BF16, Q8_0 and "
                            "Q4_0 weights and converts " LV_GGUF_CONVERTED_TYPES " to Q8_0",
                            ck->path, t->file_name, t->type_name);
        int rc = to_q8_0(m, ck, t, &data, &dt);
        if (rc)
            return rc;
        copied = true;
        break;
    }
    }
    if (!copied && !lv_dtype_is_block(dt) && (uintptr_t)data % lv_dtype_size(dt) != 0) {
        if (!(data = slab_take(m, (size_t)t->nbytes)))
            return lv_error_status(LV_ENOMEM, "%s: out of memory for '%s'", ck->path, name);
        memcpy(data, t->data, (size_t)t->nbytes);
    }
    lv_tensor *w = lv_tensor_wrap(data, dt, t->ndim, t->shape);
    if (!w || keep(m, w) != LV_OK) {
        lv_tensor_free(w);
        return lv_error_status(LV_ENOMEM, "%s: out of memory", ck->path);
    }
    lv_tensor_set_name(w, name);
    lv_tensor_set_frozen(w);
    *out = w;
    return LV_OK;
}

int lv_weights_random(struct lv_weights *w, lv_dtype dt, int ndim, const int64_t *shape,
                      float fill, uint64_t *rng, lv_tensor **out)
{
    int64_t fan_in = 1, rows = shape[0];
    for (int d = 1; d < ndim; d++)
        fan_in *= shape[d];
    int64_t n = ndim > 1 ? fan_in : rows;
    lv_tensor *t;
    int rc = lv_weights_new(w, dt, ndim, shape, &t);
    if (rc != LV_OK)
        return rc;
    float *row = malloc((size_t)n * sizeof *row);
    if (!row)
        return lv_error_status(LV_ENOMEM, "out of memory for random weights");
    double sd = 1.0 / sqrt((double)fan_in);
    for (int64_t r = 0; r < (ndim > 1 ? rows : 1); r++) {
        for (int64_t i = 0; i < n; i++) {
            if (ndim == 1) {
                row[i] = fill;
                continue;
            }
            /* Irwin-Hall: the sum of 4 uniforms, centred and scaled to variance 1 */
            double u = 0.0;
            for (int k = 0; k < 4; k++) {
                *rng = *rng * 6364136223846793005ull + 1442695040888963407ull;
                u += (double)(*rng >> 11) * (1.0 / 9007199254740992.0);
            }
            row[i] = (float)((u - 2.0) * sqrt(3.0) * sd);
        }
        lv_convert_row((char *)t->data + (size_t)(r * n) * lv_dtype_size(dt), dt, row, LV_F32,
                       n);
    }
    free(row);
    *out = t;
    return LV_OK;
}

void lv_weights_done(struct lv_weights *w)
{
    for (int i = 0; i < w->n_tensors; i++)
        lv_tensor_free(w->tensors[i]);
    for (int i = 0; i < w->n_slabs; i++)
        lv_zfree(w->slabs[i].p, w->slabs[i].size);
    free(w->tensors);
    free(w->slabs);
    memset(w, 0, sizeof *w);
}
