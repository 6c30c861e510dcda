/*
 * dora.c: DoRA (Liu et al. 2024), weight-decomposed LoRA, as Hugging Face PEFT computes it.
 *
 *     W' = m * (W + s B A) / ||W + s B A||      (the norm of each output row, detached)
 *     y' = W' x + b = y + (m/n - 1) * (W x) + (m/n) * s B A x
 *
 * The contribution is (m/n) (W x + s B A x) - W x, with W x the base output less its bias
 * (or W drop(x) while dropout is on, as PEFT). n depends on A and B only, so it is computed
 * once per sequence and kept in the site's state: a training step is a sequence, so it
 * follows every update. Saved as PEFT does: peft_type LORA, use_dora true, the magnitude as
 * lora_magnitude_vector (out), initialised to the row norms of W + s B A.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lavinia/error.h"
#include "lavinia/peft.h"
#include "peft/adapter.h"

enum { P_A, P_B, P_M };

struct dora_state {
    int ready;
    float norm[];               /* (out) */
};

/* row norms of W + s B A, in double, into out (W in any dtype, B A from the parameters) */
static int row_norms(const struct lv_peft_site *site, const lv_tensor *A, const lv_tensor *B,
                     float s, float *out)
{
    int64_t O = site->out, I = site->in, r = A->shape[0];
    const lv_tensor *w = site->weight;
    /* NF4 is laid out over the whole matrix: dequantised at once; other types by rows */
    bool whole = w && w->dtype == LV_NF4;
    float *buf = malloc((size_t)(whole ? O * I : I) * sizeof *buf), *row = buf;
    if (!buf)
        return lv_error_status(LV_ENOMEM, "DoRA: out of memory");
    if (whole)
        lv_convert_row(buf, LV_F32, w->data, LV_NF4, O * I);
    const float *a = A->data, *b = B->data;
    size_t rb = w && !whole ? lv_dtype_bytes(w->dtype, I) : 0;
    for (int64_t o = 0; o < O; o++) {
        if (whole)
            row = buf + o * I;
        else if (w)
            lv_convert_row(row, LV_F32, (const char *)w->data + (size_t)o * rb, w->dtype, I);
        else
            memset(row, 0, (size_t)I * sizeof *row);
        double sum = 0;
        for (int64_t i = 0; i < I; i++) {
            double v = row[i];
            for (int64_t k = 0; k < r; k++)
                v += (double)s * b[o * r + k] * a[k * I + i];
            sum += v * v;
        }
        out[o] = (float)sqrt(sum);
    }
    free(buf);
    return LV_OK;
}

static int dora_create(lv_peft_ctx *ctx)
{
    int rc = lv_lora_create(ctx, true);
    for (int i = 0; rc == LV_OK && i < lv_peft_n_sites(ctx); i++) {
        const struct lv_peft_site *s = lv_peft_site_at(ctx, i);
        if (!s->weight)
            return lv_error("DoRA: %s has no weight in this model", s->module);
        if (lv_peft_param(ctx, i, "lora_magnitude_vector", 1, &s->out,
                          (struct lv_peft_init){ LV_INIT_ZERO, 0 }, 0) != P_M)
            return LV_ERR;
        /* the magnitude starts as the norms: the adapter starts as plain LoRA would */
        rc = row_norms(s, lv_peft_param_tensor(ctx, i, P_A), lv_peft_param_tensor(ctx, i, P_B),
                       lv_peft_get_value(ctx, i, LV_LORA_SCALING),
                       lv_peft_param_tensor(ctx, i, P_M)->data);
    }
    return rc;
}

static size_t dora_state_size(const struct lv_peft_site *site, const float *vals)
{
    (void)vals;
    return sizeof(struct dora_state) + (size_t)site->out * sizeof(float);
}

/* m / ||W + s B A||: the norm a constant, the magnitude a parameter */
static lv_tensor *mag_scale(const struct lv_peft_call *c)
{
    struct dora_state *st = c->state;
    if (!st->ready) {
        if (row_norms(c->site, c->p[P_A], c->p[P_B], c->vals[LV_LORA_SCALING], st->norm))
            return NULL;
        st->ready = 1;
    }
    lv_tensor *n = lv_new(c->g, LV_F32, 1, &c->site->out);
    if (!n)
        return NULL;
    memcpy(n->data, st->norm, (size_t)c->site->out * sizeof(float));
    return lv_div(c->g, c->p[P_M], n);
}

static lv_tensor *dora_apply(const struct lv_peft_call *c)
{
    lv_graph *g = c->g;
    lv_tensor *x = lv_lora_input(c), *base;
    lv_tensor *w = (lv_tensor *)c->site->weight, *b = (lv_tensor *)c->site->bias;
    if (x != c->x)
        base = lv_linear(g, x, w, NULL);                 /* W drop(x), as PEFT */
    else
        base = b ? lv_sub(g, c->y, b) : c->y;
    lv_tensor *scale = mag_scale(c);
    lv_tensor *t = lv_add(g, base, lv_lora_delta(c, x));
    return lv_sub(g, lv_mul(g, t, scale), base);
}

static int dora_merge(const struct lv_peft_call *c, lv_tensor *w, lv_tensor *b, float scale,
                      lv_tensor **w_out, lv_tensor **b_out)
{
    (void)b;
    lv_graph *g = c->g;
    int64_t O = c->site->out;
    float *norm = malloc((size_t)O * sizeof *norm);
    if (!norm || row_norms(c->site, c->p[P_A], c->p[P_B], c->vals[LV_LORA_SCALING], norm)) {
        free(norm);
        return lv_error_status(LV_ENOMEM, "DoRA: out of memory");
    }
    lv_tensor *n = lv_new(g, LV_F32, 2, (int64_t[]){ O, 1 });
    if (n)
        memcpy(n->data, norm, (size_t)O * sizeof *norm);
    free(norm);
    lv_tensor *wf = lv_cast(g, w, LV_F32);
    lv_tensor *d = lv_scale(g, lv_matmul(g, c->p[P_B], c->p[P_A], 0), c->vals[LV_LORA_SCALING]);
    lv_tensor *m = lv_reshape(g, c->p[P_M], 2, (int64_t[]){ O, 1 });
    lv_tensor *merged = lv_mul(g, lv_div(g, lv_add(g, wf, d), n), m);
    /* scale blends the base and the merged weight: W + scale (W' - W) */
    *w_out = lv_add(g, wf, lv_scale(g, lv_sub(g, merged, wf), scale));
    *b_out = NULL;
    return *w_out ? LV_OK : LV_ERR;
}

static const char *const dora_default_targets[] = { "q_proj", "v_proj", NULL };

const struct lv_peft_method lv_peft_dora = {
    .abi = LV_PEFT_ABI,
    .name = "dora",
    .description = "weight-decomposed LoRA (Liu et al. 2024): a learned magnitude per output "
                   "row, as PEFT's use_dora",
    .keys = lv_lora_dora_keys,
    .sites = LV_SITE_LINEAR,
    .default_targets = dora_default_targets,
    .create = dora_create,
    .apply = dora_apply,
    .merge = dora_merge,
    .state_size = dora_state_size,
    .peft_type = "LORA",
};
