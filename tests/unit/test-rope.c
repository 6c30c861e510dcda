/*
 * test-rope.c: lv_rope in both pair layouts against a float64 reference written naively below,
 * and its gradient against central differences (tu_gradcheck).
 *
 * The reference is the definition in lavinia/ops.h: pair i of the token at position p turns
 * by theta = (p / freq_scale) * base^(-2i/D), y0 = x0 cos - x1 sin, y1 = x0 sin + x1 cos
 * (Hugging Face's rotate_half), where the pair is (x[i], x[i + D/2]) for LV_ROPE_HF and
 * (x[2i], x[2i+1]) for LV_ROPE_META. Cases cover 3-D (T, H, D) and 4-D (B, T, H, D) inputs,
 * D = 2, 6, 8, 14, 16, base 10000 (LLaMA 2) and 500000 (LLaMA 3), freq_scale 1 and 4 (linear
 * scaling), and positions that start at 0, start later, jump about, and pass 100000, where an
 * angle rounded to float is off by up to 1e-3 rad (lavinia computes it in double; a float
 * angle fails that case by 15 to 50 times the tolerance).
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "lavinia/ops.h"
#include "testutil.h"

/*
 * Forward tolerance, max|got - ref| <= TOL * max|ref|. Each output is two F32 products of F32
 * inputs with cos and sin rounded to F32: a few 1e-7 of the largest output. A wrong pair
 * layout, a wrong frequency exponent or a sign error is off by O(1).
 */
#define TOL 1e-5

#define MAX_T 8

/* A step that must work: on failure, a failed check with the library's message; on success
 * nothing is printed (tu_assert would print an OK line for every setup step). */
static bool need(bool cond, const char *what)
{
    if (!cond)
        tu_assert(false, "%s: %s", what, lv_errmsg());
    return cond;
}

/* One RoPE case: the input shape, the positions and the op's parameters. */
struct rope_case {
    int ndim;                   /* 3: (T, H, D), 4: (B, T, H, D) */
    int64_t shape[4];
    int32_t pos[MAX_T];         /* (T) */
    lv_rope_mode mode;
    float base, freq_scale;
};

static void rope_ref(double *y, const double *x, const struct rope_case *rc)
{
    int o = rc->ndim - 3;
    int64_t B = o ? rc->shape[0] : 1, T = rc->shape[o], H = rc->shape[o + 1];
    int64_t D = rc->shape[o + 2], half = D / 2;

    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++)
            for (int64_t h = 0; h < H; h++) {
                int64_t row = ((b * T + t) * H + h) * D;
                for (int64_t i = 0; i < half; i++) {
                    double theta = ((double)rc->pos[t] / (double)rc->freq_scale) *
                                   pow((double)rc->base, -2.0 * (double)i / (double)D);
                    int64_t j0 = rc->mode == LV_ROPE_HF ? i : 2 * i;
                    int64_t j1 = rc->mode == LV_ROPE_HF ? i + half : 2 * i + 1;
                    double x0 = x[row + j0], x1 = x[row + j1];
                    y[row + j0] = x0 * cos(theta) - x1 * sin(theta);
                    y[row + j1] = x0 * sin(theta) + x1 * cos(theta);
                }
            }
}

/* in[0] x (the parameter), in[1] positions */
static lv_tensor *build_rope(lv_graph *g, lv_tensor **in, void *ctx)
{
    const struct rope_case *rc = ctx;
    return lv_rope(g, in[0], in[1], rc->mode, rc->base, rc->freq_scale);
}

static void test_rope(const struct rope_case *rc)
{
    char label[160];
    int o = rc->ndim - 3;
    int64_t T = rc->shape[o];
    const char *mname = rc->mode == LV_ROPE_HF ? "hf" : "meta";

    if (o)
        snprintf(label, sizeof label, "rope %s (%lld, %lld, %lld, %lld) base %g scale %g pos0 %d",
                 mname, (long long)rc->shape[0], (long long)rc->shape[1],
                 (long long)rc->shape[2], (long long)rc->shape[3], (double)rc->base,
                 (double)rc->freq_scale, (int)rc->pos[0]);
    else
        snprintf(label, sizeof label, "rope %s (%lld, %lld, %lld) base %g scale %g pos0 %d",
                 mname, (long long)rc->shape[0], (long long)rc->shape[1],
                 (long long)rc->shape[2], (double)rc->base, (double)rc->freq_scale,
                 (int)rc->pos[0]);

    lv_tensor *in[2];
    in[0] = tu_rand_tensor(LV_F32, rc->ndim, rc->shape, 1.0);
    in[1] = lv_tensor_new(LV_I32, 1, &T);
    if (!need(in[0] && in[1], "rope: tensors"))
        goto done;
    for (int64_t t = 0; t < T; t++)
        lv_tensor_set(in[1], t, rc->pos[t]);
    lv_tensor_set_param(in[0]);

    int64_t n = lv_tensor_nelem(in[0]);
    double *x = malloc((size_t)n * sizeof *x), *ref = malloc((size_t)n * sizeof *ref);
    if (!x || !ref) {
        fprintf(stderr, "test-rope: out of memory\n");
        exit(99);
    }
    for (int64_t i = 0; i < n; i++)
        x[i] = lv_tensor_get(in[0], i);
    rope_ref(ref, x, rc);

    lv_graph *g = lv_graph_new(NULL);
    if (need(g != NULL, "lv_graph_new")) {
        lv_tensor *y = lv_rope(g, in[0], in[1], rc->mode, rc->base, rc->freq_scale);
        tu_check_tensor(label, y, ref, TOL);   /* fails with lv_errmsg() if y is NULL */
        lv_graph_free(g);
    }

    /* RoPE is linear in x: central differences are exact up to F32 rounding, so the default
     * step and tolerance are ample. */
    char glabel[192];
    snprintf(glabel, sizeof glabel, "grad %s", label);
    tu_grad_opts opts = { 0 };
    tu_gradcheck(glabel, build_rope, in, 2, (void *)rc, &opts);

    free(x);
    free(ref);
done:
    lv_tensor_free(in[0]);
    lv_tensor_free(in[1]);
}

int main(int argc, char **argv)
{
    tu_init(argc, argv, "rope");

    static const struct rope_case cases[] = {
        { .ndim = 3, .shape = { 5, 3, 8 }, .pos = { 0, 1, 2, 3, 4 },
          .base = 10000.0f, .freq_scale = 1.0f },
        { .ndim = 4, .shape = { 2, 4, 2, 6 }, .pos = { 17, 18, 19, 20 },
          .base = 10000.0f, .freq_scale = 4.0f },
        { .ndim = 3, .shape = { 3, 1, 2 }, .pos = { 123456, 7, 4095 },
          .base = 500000.0f, .freq_scale = 1.0f },
        { .ndim = 3, .shape = { 3, 2, 8 }, .pos = { 123457, 65537, 99991 },
          .base = 10000.0f, .freq_scale = 1.0f },
        { .ndim = 4, .shape = { 2, 7, 3, 16 }, .pos = { 3, 10, 11, 250, 9, 1000, 2 },
          .base = 500000.0f, .freq_scale = 4.0f },
        { .ndim = 3, .shape = { 4, 2, 14 }, .pos = { 5, 6, 7, 8 },
          .base = 500000.0f, .freq_scale = 1.0f },
        { .ndim = 4, .shape = { 1, 2, 4, 8 }, .pos = { 31, 32 },
          .base = 10000.0f, .freq_scale = 4.0f },
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        for (int m = 0; m < 2; m++) {
            struct rope_case rc = cases[i];
            rc.mode = m ? LV_ROPE_META : LV_ROPE_HF;
            test_rope(&rc);
        }
    }

    return tu_finish();
}
