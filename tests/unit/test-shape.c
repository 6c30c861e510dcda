/*
 * test-shape.c: views (reshape, transpose, permute, slice) and the ops that move data
 * (cont, cast, concat, embedding, patch embedding): values against float64 references and
 * gradients against central differences, including chains of views over views.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

/* ---- views -------------------------------------------------------------------------- */

/* x (2, 3, 4) -> transpose(0, 2) -> slice dim 1 [1, 3) -> reshape (4, 4) -> *
 * permute back to (4, 4)^T: a chain of views whose gradient must land in the right places */
static lv_tensor *build_views(lv_graph *g, lv_tensor **in, void *ctx)
{
    (void)ctx;
    lv_tensor *t = lv_transpose(g, in[0], 0, 2);            /* (4, 3, 2) */
    t = lv_slice(g, t, 1, 1, 2);                             /* (4, 2, 2) */
    int64_t sh[2] = { 4, 4 };
    t = lv_reshape(g, t, 2, sh);                             /* copies: not contiguous */
    int perm[2] = { 1, 0 };
    t = lv_permute(g, t, perm);
    return lv_mul(g, t, t);                                  /* something non-linear */
}

static void test_views(void)
{
    int64_t xs[3] = { 2, 3, 4 };
    lv_tensor *x = tu_rand_tensor(LV_F32, 3, xs, 1.0);
    double ref[16];
    /* element (i, j) of the result is v[j][i] squared, v = reshape of x^T[:, 1:3, :] */
    for (int j = 0; j < 4; j++)
        for (int i = 0; i < 4; i++) {
            int flat = j * 4 + i;                  /* index in the (4, 2, 2) slice */
            int a = flat / 4, b = (flat / 2) % 2 + 1, c = flat % 2;
            double v = lv_tensor_get(x, (c * 3 + b) * 4 + a);   /* x[c][b][a] */
            ref[i * 4 + j] = v * v;
        }
    lv_graph *g = lv_graph_new(NULL);
    lv_tensor *y = build_views(g, &x, NULL);
    tu_check_tensor("view chain forward", y, ref, 1e-6);
    lv_tensor *t = lv_transpose(g, x, 1, 2);
    tu_assert(t && t->data == x->data && !lv_tensor_is_contiguous(t),
              "transpose is a view (no copy)");
    lv_tensor *s = lv_slice(g, x, 0, 1, 1);
    tu_assert(s && (float *)s->data == (float *)x->data + 12, "slice is a view at the offset");
    tu_assert(lv_slice(g, x, 2, 3, 2) == NULL, "slice past the end refused: %s", lv_errmsg());
    int64_t bad[2] = { 5, 5 };
    tu_assert(lv_reshape(g, x, 2, bad) == NULL, "reshape to 25 elements refused: %s",
              lv_errmsg());
    int64_t inf[2] = { -1, 6 };
    lv_tensor *r = lv_reshape(g, x, 2, inf);
    tu_assert(r && r->shape[0] == 4, "reshape infers -1");
    lv_graph_free(g);
    lv_tensor_set_param(x);
    tu_gradcheck("view chain grad", build_views, &x, 1, NULL,
                 &(tu_grad_opts){ .eps = 1e-2, .tol = 1e-3 });
    lv_tensor_free(x);
}

/* ---- cast and cont ------------------------------------------------------------------ */

static lv_tensor *build_cast(lv_graph *g, lv_tensor **in, void *ctx)
{
    lv_tensor *h = lv_cast(g, lv_transpose(g, in[0], 0, 1), *(lv_dtype *)ctx);
    return lv_cast(g, h, LV_F32);
}

static void test_cast(void)
{
    int64_t xs[2] = { 3, 5 };
    lv_tensor *x = tu_rand_tensor(LV_F32, 2, xs, 1.0);
    for (lv_dtype dt = LV_F32; dt <= LV_BF16; dt++) {
        double ref[15];
        for (int i = 0; i < 5; i++)
            for (int j = 0; j < 3; j++) {
                float v = (float)lv_tensor_get(x, j * 5 + i);
                ref[i * 3 + j] = dt == LV_F16    ? lv_f16_to_f32(lv_f32_to_f16(v))
                                 : dt == LV_BF16 ? lv_bf16_to_f32(lv_f32_to_bf16(v))
                                                 : v;
            }
        lv_graph *g = lv_graph_new(NULL);
        char label[64];
        snprintf(label, sizeof label, "cast transposed via %s", lv_dtype_name(dt));
        tu_check_tensor(label, build_cast(g, &x, &dt), ref, 0.0);   /* exact rounding */
        lv_graph_free(g);
        lv_tensor_set_param(x);
        snprintf(label, sizeof label, "cast via %s grad", lv_dtype_name(dt));
        if (dt == LV_F32)   /* through a narrow type the finite difference sees rounding */
            tu_gradcheck(label, build_cast, &x, 1, &dt, &(tu_grad_opts){ .eps = 1e-2, .tol = 1e-4 });
        x->flags = LV_TENSOR_OWNS_DATA;
    }
    lv_tensor_free(x);
}

/* ---- concat ------------------------------------------------------------------------- */

static lv_tensor *build_concat(lv_graph *g, lv_tensor **in, void *ctx)
{
    return lv_concat(g, in[0], in[1], *(int *)ctx);
}

static void test_concat(void)
{
    for (int dim = 0; dim < 3; dim++) {
        int64_t as[3] = { 2, 3, 4 }, bs[3] = { 2, 3, 4 };
        bs[dim] = dim + 1;
        lv_tensor *in[2] = { tu_rand_tensor(LV_F32, 3, as, 1.0), tu_rand_tensor(LV_F32, 3, bs, 1.0) };
        int64_t os[3] = { 2, 3, 4 };
        os[dim] += bs[dim];
        double *ref = malloc((size_t)(os[0] * os[1] * os[2]) * sizeof *ref);
        for (int64_t i = 0; i < os[0]; i++)
            for (int64_t j = 0; j < os[1]; j++)
                for (int64_t k = 0; k < os[2]; k++) {
                    int64_t idx[3] = { i, j, k };
                    bool in_a = idx[dim] < as[dim];
                    if (!in_a)
                        idx[dim] -= as[dim];
                    const int64_t *s = in_a ? as : bs;
                    ref[(i * os[1] + j) * os[2] + k] =
                        lv_tensor_get(in[in_a ? 0 : 1], (idx[0] * s[1] + idx[1]) * s[2] + idx[2]);
                }
        lv_graph *g = lv_graph_new(NULL);
        char label[64];
        snprintf(label, sizeof label, "concat dim %d", dim);
        tu_check_tensor(label, build_concat(g, in, &dim), ref, 0.0);
        lv_graph_free(g);
        lv_tensor_set_param(in[0]);
        lv_tensor_set_param(in[1]);
        tu_gradcheck(label, build_concat, in, 2, &dim, &(tu_grad_opts){ .eps = 1e-2, .tol = 1e-4 });
        free(ref);
        lv_tensor_free(in[0]);
        lv_tensor_free(in[1]);
    }
}

/* ---- embedding ---------------------------------------------------------------------- */

static lv_tensor *build_embed(lv_graph *g, lv_tensor **in, void *ctx)
{
    (void)ctx;
    return lv_embedding(g, in[0], in[1]);
}

static void test_embedding(void)
{
    int64_t ts[2] = { 11, 7 }, is[2] = { 2, 5 };
    for (lv_dtype dt = LV_F32; dt <= LV_BF16; dt++) {
        lv_tensor *in[2] = { tu_rand_tensor(dt, 2, ts, 1.0), tu_rand_tensor(LV_I32, 2, is, 11) };
        lv_tensor_set(in[1], 3, 4);
        lv_tensor_set(in[1], 7, 4);       /* a repeated id: its gradient rows add up */
        double ref[70];
        for (int t = 0; t < 10; t++)
            for (int c = 0; c < 7; c++)
                ref[t * 7 + c] = lv_tensor_get(in[0], (int64_t)lv_tensor_get(in[1], t) * 7 + c);
        lv_graph *g = lv_graph_new(NULL);
        lv_tensor *y = build_embed(g, in, NULL);
        char label[64];
        snprintf(label, sizeof label, "embedding %s table", lv_dtype_name(dt));
        tu_assert(y && y->ndim == 3 && y->shape[2] == 7, "%s: (B, T, C) out", label);
        tu_check_tensor(label, y, ref, 0.0);
        lv_tensor_set(in[1], 0, 11);
        tu_assert(build_embed(g, in, NULL) == NULL && strstr(lv_errmsg(), "11"),
                  "embedding id 11 of 11 refused: %s", lv_errmsg());
        lv_tensor_set(in[1], 0, 2);
        lv_graph_free(g);
        if (dt == LV_F32) {
            lv_tensor_set_param(in[0]);
            tu_gradcheck("embedding grad", build_embed, in, 2, NULL,
                         &(tu_grad_opts){ .eps = 1e-2, .tol = 1e-4 });
        }
        lv_tensor_free(in[0]);
        lv_tensor_free(in[1]);
    }
}

/* ---- patch embedding ---------------------------------------------------------------- */

static lv_tensor *build_patch(lv_graph *g, lv_tensor **in, void *ctx)
{
    (void)ctx;
    return lv_patch_embed(g, in[0], in[1], in[2]);
}

static void test_patch_embed(void)
{
    enum { B = 2, CIN = 3, HH = 6, WW = 9, P = 3, C = 5 };
    int64_t is[4] = { B, CIN, HH, WW }, ws[4] = { C, CIN, P, P }, bs[1] = { C };
    lv_tensor *in[3] = { tu_rand_tensor(LV_F32, 4, is, 1.0), tu_rand_tensor(LV_F32, 4, ws, 0.5),
                         tu_rand_tensor(LV_F32, 1, bs, 1.0) };
    int np = (HH / P) * (WW / P);
    double ref[B * (HH / P) * (WW / P) * C];
    for (int b = 0; b < B; b++)
        for (int p = 0; p < np; p++)
            for (int c = 0; c < C; c++) {
                int py = p / (WW / P), px = p % (WW / P);
                double acc = lv_tensor_get(in[2], c);
                for (int ci = 0; ci < CIN; ci++)
                    for (int i = 0; i < P; i++)
                        for (int j = 0; j < P; j++)
                            acc += lv_tensor_get(in[1], ((c * CIN + ci) * P + i) * P + j) *
                                   lv_tensor_get(in[0], ((b * CIN + ci) * HH + py * P + i) * WW +
                                                            px * P + j);
                ref[(b * np + p) * C + c] = acc;
            }
    lv_graph *g = lv_graph_new(NULL);
    lv_tensor *y = build_patch(g, in, NULL);
    tu_assert(y && y->ndim == 3 && y->shape[1] == np && y->shape[2] == C,
              "patch_embed gives (B, patches, C)");
    tu_check_tensor("patch_embed forward", y, ref, 1e-5);
    int64_t odd[4] = { 1, CIN, 7, 9 };
    lv_tensor *bad = lv_tensor_new(LV_F32, 4, odd);
    tu_assert(lv_patch_embed(g, bad, in[1], NULL) == NULL,
              "a 7x9 image is refused for 3x3 patches: %s", lv_errmsg());
    lv_tensor_free(bad);
    lv_graph_free(g);
    for (int i = 0; i < 3; i++)
        lv_tensor_set_param(in[i]);
    tu_gradcheck("patch_embed grad", build_patch, in, 3, NULL,
                 &(tu_grad_opts){ .eps = 1e-2, .tol = 1e-3 });
    for (int i = 0; i < 3; i++)
        lv_tensor_free(in[i]);
}

int main(int argc, char **argv)
{
    tu_init(argc, argv, "shape");
    test_views();
    test_cast();
    test_concat();
    test_embedding();
    test_patch_embed();
    return tu_finish();
}
