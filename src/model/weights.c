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

int lv_weights_keep(struct lv_weights *m, lv_tensor *t, void *copy)
{
    void *p = realloc(m->tensors, (size_t)(m->n_tensors + 1) * sizeof *m->tensors);
    if (!p)
        return LV_ENOMEM;
    m->tensors = p;
    m->tensors[m->n_tensors++] = t;
    if (copy) {
        p = realloc(m->copies, (size_t)(m->n_copies + 1) * sizeof *m->copies);
        if (!p)
            return LV_ENOMEM;
        m->copies = p;
        m->copies[m->n_copies++] = copy;
    }
    return LV_OK;
}

/* ggml block weights, widened at load to F16 (BF16 for a tensor whose values leave F16's
 * range): until the engine has block types of its own, a quantised GGUF runs as a 16-bit
 * model. F16 keeps 11 significant bits, below the quantisation's own error. */
static int widen(struct lv_weights *m, const struct lv_checkpoint *ck,
                 const struct lv_ckpt_tensor *t, void **out, lv_dtype *dt)
{
    int64_t cols = t->shape[t->ndim - 1], rows = 1;
    for (int d = 0; d < t->ndim - 1; d++)
        rows *= t->shape[d];
    uint32_t type = t->type == LV_CKPT_Q8_0   ? LV_GGML_TYPE_Q8_0
                    : t->type == LV_CKPT_Q4_0 ? LV_GGML_TYPE_Q4_0
                    : t->type == LV_CKPT_Q4_K ? LV_GGML_TYPE_Q4_K
                    : t->type == LV_CKPT_Q5_K ? LV_GGML_TYPE_Q5_K
                                              : LV_GGML_TYPE_Q6_K;
    uint64_t row_bytes = t->nbytes / (uint64_t)rows;
    uint16_t *w = malloc((size_t)(rows * cols) * 2);
    float *row = malloc((size_t)cols * sizeof *row);
    int rc = w && row ? LV_OK : lv_error_status(LV_ENOMEM, "%s: out of memory widening '%s'",
                                               ck->path, t->file_name);
    *dt = LV_F16;
    for (int pass = 0; rc == LV_OK && pass < 2; pass++) {
        bool fits = true;
        for (int64_t r = 0; rc == LV_OK && r < rows && fits; r++) {
            rc = lv_gguf_dequantize(type, (const uint8_t *)t->data + (uint64_t)r * row_bytes,
                                    row, cols);
            for (int64_t i = 0; *dt == LV_F16 && i < cols; i++)
                fits = fits && fabsf(row[i]) <= 65504.0f;
            if (fits)
                lv_convert_row(w + r * cols, *dt, row, LV_F32, cols);
        }
        if (fits)
            break;
        *dt = LV_BF16;          /* a value past F16's range: the whole tensor in BF16 */
    }
    free(row);
    if (rc != LV_OK) {
        free(w);
        return rc;
    }
    if (!m->widened)
        fprintf(stderr, "lavinia: note: %s: ggml block weights (%s) are widened to 16 bits at "
                "load; native quantised kernels come with the performance work\n", ck->path,
                t->type_name);
    m->widened = true;
    *out = w;
    return LV_OK;
}

/* a checkpoint tensor as an lv_tensor: wrapped where it lies when aligned, else copied */
int lv_weights_get(struct lv_weights *m, const struct lv_checkpoint *ck, const char *name,
                   lv_tensor **out)
{
    const struct lv_ckpt_tensor *t = lv_checkpoint_find(ck, name);
    if (!t)
        return lv_error("%s: no tensor '%s'", ck->path, name);
    lv_dtype dt;
    void *data = (void *)t->data, *copy = NULL;
    switch (t->type) {
    case LV_CKPT_F32: dt = LV_F32; break;
    case LV_CKPT_F16: dt = LV_F16; break;
    case LV_CKPT_BF16: dt = LV_BF16; break;
    case LV_CKPT_Q8_0:
    case LV_CKPT_Q4_0:
    case LV_CKPT_Q4_K:
    case LV_CKPT_Q5_K:
    case LV_CKPT_Q6_K: {
        int rc = widen(m, ck, t, &copy, &dt);
        if (rc)
            return rc;
        data = copy;
        break;
    }
    default:
        return lv_error("%s: tensor '%s' is %s; the decoder runs F32, F16 and BF16 weights "
                        "and widens Q8_0, Q4_0, Q4_K, Q5_K and Q6_K", ck->path, t->file_name,
                        t->type_name);
    }
    if (!copy && (uintptr_t)data % lv_dtype_size(dt) != 0) {
        copy = malloc((size_t)t->nbytes);
        if (!copy)
            return lv_error_status(LV_ENOMEM, "%s: out of memory for '%s'", ck->path, name);
        memcpy(copy, t->data, (size_t)t->nbytes);
        data = copy;
    }
    lv_tensor *w = lv_tensor_wrap(data, dt, t->ndim, t->shape);
    if (!w || lv_weights_keep(m, w, copy) != LV_OK) {
        lv_tensor_free(w);
        free(copy);
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
    lv_tensor *t = lv_tensor_new(dt, ndim, shape);
    float *row = malloc((size_t)n * sizeof *row);
    if (!t || !row || lv_weights_keep(w, t, NULL) != LV_OK) {
        lv_tensor_free(t);
        free(row);
        return lv_error_status(LV_ENOMEM, "out of memory for random weights");
    }
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
    lv_tensor_set_frozen(t);
    *out = t;
    return LV_OK;
}

void lv_weights_done(struct lv_weights *w)
{
    for (int i = 0; i < w->n_tensors; i++)
        lv_tensor_free(w->tensors[i]);
    for (int i = 0; i < w->n_copies; i++)
        free(w->copies[i]);
    free(w->tensors);
    free(w->copies);
    memset(w, 0, sizeof *w);
}
