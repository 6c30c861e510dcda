/*
 * test-matmul.c: lv_matmul and lv_linear: every transpose combination, batched and shared
 * right-hand sides, F16 and BF16 right-hand sides (with panels large enough to need several
 * conversions), against float64 references and central differences; lv_linear_n against
 * separate lv_linear calls.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

struct mm { int flags; };

static lv_tensor *build_mm(lv_graph *g, lv_tensor **in, void *ctx)
{
    return lv_matmul(g, in[0], in[1], ((struct mm *)ctx)->flags);
}

static lv_tensor *build_linear(lv_graph *g, lv_tensor **in, void *ctx)
{
    (void)ctx;
    return lv_linear(g, in[0], in[1], in[2]);
}

/* float64 reference of op(a) op(b) over batches; b shared when its batch is 1 */
static double *ref_mm(const lv_tensor *a, const lv_tensor *b, int flags, int64_t *nout)
{
    int ta = !!(flags & LV_TRANS_A), tb = !!(flags & LV_TRANS_B);
    int64_t M = a->shape[a->ndim - 2 + ta], K = a->shape[a->ndim - 1 - ta];
    int64_t N = b->shape[b->ndim - 1 - tb];
    int64_t batch = lv_tensor_nelem(a) / (M * K), bb = lv_tensor_nelem(b) / (K * N);
    double *c = calloc((size_t)(batch * M * N), sizeof *c);
    for (int64_t z = 0; z < batch; z++)
        for (int64_t m = 0; m < M; m++)
            for (int64_t n = 0; n < N; n++) {
                double acc = 0.0;
                for (int64_t k = 0; k < K; k++) {
                    double av = lv_tensor_get(a, z * M * K + (ta ? k * M + m : m * K + k));
                    double bv = lv_tensor_get(b, (bb > 1 ? z * K * N : 0) +
                                                     (tb ? n * K + k : k * N + n));
                    acc += av * bv;
                }
                c[(z * M + m) * N + n] = acc;
            }
    *nout = batch * M * N;
    return c;
}

static void run(const char *what, int an, const int64_t *as, int bn, const int64_t *bs,
                lv_dtype bt, int flags, bool grad)
{
    lv_tensor *in[2] = { tu_rand_tensor(LV_F32, an, as, 1.0), tu_rand_tensor(bt, bn, bs, 1.0) };
    int64_t n;
    double *ref = ref_mm(in[0], in[1], flags, &n);
    struct mm ctx = { flags };
    lv_graph *g = lv_graph_new(NULL);
    char label[128];
    snprintf(label, sizeof label, "matmul %s %s%s%s forward", what, lv_dtype_name(bt),
             flags & LV_TRANS_A ? " ta" : "", flags & LV_TRANS_B ? " tb" : "");
    /* F32 accumulation over K <= 600 terms of unit-variance products: ~1e-6 relative */
    tu_check_tensor(label, build_mm(g, in, &ctx), ref, 1e-5);
    lv_graph_free(g);
    if (grad) {
        lv_tensor_set_param(in[0]);
        if (bt == LV_F32)
            lv_tensor_set_param(in[1]);
        snprintf(label, sizeof label, "matmul %s %s%s%s grad", what, lv_dtype_name(bt),
                 flags & LV_TRANS_A ? " ta" : "", flags & LV_TRANS_B ? " tb" : "");
        tu_gradcheck(label, build_mm, in, 2, &ctx, &(tu_grad_opts){ .eps = 1e-2, .tol = 1e-3 });
    }
    free(ref);
    lv_tensor_free(in[0]);
    lv_tensor_free(in[1]);
}

/* y[i] = x w[i]^T for three weights through lv_linear_n (grouped) or three lv_linear calls,
 * recorded with x a parameter; returns the sum of every output, x->grad after backward */
static lv_tensor *three_linears(lv_graph *g, lv_tensor *x, lv_tensor *const *w, bool group,
                                lv_tensor **y)
{
    lv_graph_set_recording(g, true);
    if (group) {
        if (lv_linear_n(g, x, 3, w, y) != LV_OK)
            return NULL;
    } else {
        for (int i = 0; i < 3; i++)
            y[i] = lv_linear(g, x, w[i], NULL);
    }
    lv_tensor *s = lv_add(g, lv_add(g, lv_sum_all(g, y[0]), lv_sum_all(g, y[1])),
                          lv_sum_all(g, y[2]));
    return s && lv_backward(g, s) == LV_OK ? s : NULL;
}

/* lv_linear_n against three lv_linear calls: the same values and the same gradient of x, bit
 * for bit (the grouped pass runs the same kernels in one region), for every weight type, at
 * decoding sizes (grouped on the CPU) and at a prompt's (one by one; NF4 is never grouped) */
static void linear_n(void)
{
    static const lv_dtype types[] = { LV_F32, LV_F16, LV_BF16, LV_Q8_0, LV_Q4_0, LV_NF4,
                                      LV_Q8_0X8 };
    static const int64_t rows[] = { 1, 3, 9 };
    int64_t K = 256, N[3] = { 96, 32, 64 };
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        lv_tensor *w[3];
        for (int i = 0; i < 3; i++) {
            int64_t ws[2] = { N[i], K };
            lv_tensor *wf = tu_rand_tensor(LV_F32, 2, ws, 1.0);
            w[i] = lv_tensor_new(types[ti], 2, ws);
            lv_convert_row(w[i]->data, types[ti], wf->data, LV_F32, N[i] * K);
            lv_tensor_set_frozen(w[i]);
            lv_tensor_free(wf);
        }
        for (size_t ri = 0; ri < sizeof rows / sizeof rows[0]; ri++) {
            int64_t xs[2] = { rows[ri], K };
            lv_tensor *x = tu_rand_tensor(LV_F32, 2, xs, 1.0);
            lv_tensor_set_param(x);
            lv_graph *g1 = lv_graph_new(NULL), *g2 = lv_graph_new(NULL);
            lv_tensor *y1[3], *y2[3];
            bool ok = three_linears(g1, x, w, false, y1) != NULL;
            lv_tensor *dx1 = ok && x->grad ? lv_tensor_new(LV_F32, 2, xs) : NULL;
            if (dx1) {
                memcpy(dx1->data, x->grad->data, lv_tensor_nbytes(dx1));
                memset(x->grad->data, 0, lv_tensor_nbytes(dx1));
            }
            ok = ok && dx1 && three_linears(g2, x, w, true, y2) != NULL;
            bool same = ok;
            for (int i = 0; same && i < 3; i++)
                same = y1[i]->shape[1] == N[i] && y2[i]->shape[1] == N[i] &&
                       memcmp(y1[i]->data, y2[i]->data, lv_tensor_nbytes(y1[i])) == 0;
            same = same && memcmp(dx1->data, x->grad->data, lv_tensor_nbytes(dx1)) == 0;
            tu_assert(same, "lv_linear_n, %s weights, %lld row(s): outputs and dx as three "
                      "lv_linear calls (%s)", lv_dtype_name(types[ti]), (long long)rows[ri],
                      ok ? "compared" : lv_errmsg());
            lv_graph_free(g1);
            lv_graph_free(g2);
            lv_tensor_free(dx1);
            lv_tensor_free(x);
        }
        for (int i = 0; i < 3; i++)
            lv_tensor_free(w[i]);
    }
}

int main(int argc, char **argv)
{
    tu_init(argc, argv, "matmul");
    for (int flags = 0; flags < 4; flags++) {
        int ta = flags & LV_TRANS_A, tb = flags & LV_TRANS_B;
        int64_t M = 5, K = 7, N = 3;
        int64_t as[2] = { ta ? K : M, ta ? M : K }, bs[2] = { tb ? N : K, tb ? K : N };
        run("5x7x3", 2, as, 2, bs, LV_F32, flags, true);
        int64_t as3[3] = { 2, as[0], as[1] }, bs3[3] = { 2, bs[0], bs[1] };
        run("batched", 3, as3, 3, bs3, LV_F32, flags, true);
        run("shared b", 3, as3, 2, bs, LV_F32, flags, true);
        run("bf16 b", 2, as, 2, bs, LV_BF16, flags, true);
        run("f16 b", 3, as3, 2, bs, LV_F16, flags, true);
    }
    {   /* single row, long K, and right-hand sides that need several conversion panels */
        int64_t a1[2] = { 1, 33 }, b1[2] = { 17, 33 };
        run("1x33x17", 2, a1, 2, b1, LV_F32, LV_TRANS_B, true);
        /* K = 5000 needs three k-panels of the 1 MiB conversion buffer per 128-column tile */
        int64_t a2[2] = { 2, 5000 }, b2[2] = { 300, 5000 };
        run("panels tb", 2, a2, 2, b2, LV_F16, LV_TRANS_B, false);
        int64_t a3[2] = { 2, 5000 }, b3[2] = { 5000, 300 };
        run("panels", 2, a3, 2, b3, LV_BF16, 0, false);
    }
    {   /* linear with bias, 3-D input, and a 1-D input */
        int64_t xs[3] = { 2, 3, 9 }, ws[2] = { 4, 9 }, bs[1] = { 4 }, x1[1] = { 9 };
        lv_tensor *in[3] = { tu_rand_tensor(LV_F32, 3, xs, 1.0), tu_rand_tensor(LV_F32, 2, ws, 1.0),
                             tu_rand_tensor(LV_F32, 1, bs, 1.0) };
        double ref[24];
        for (int64_t r = 0; r < 6; r++)
            for (int64_t o = 0; o < 4; o++) {
                double acc = lv_tensor_get(in[2], o);
                for (int64_t k = 0; k < 9; k++)
                    acc += lv_tensor_get(in[0], r * 9 + k) * lv_tensor_get(in[1], o * 9 + k);
                ref[r * 4 + o] = acc;
            }
        lv_graph *g = lv_graph_new(NULL);
        lv_tensor *y = build_linear(g, in, NULL);
        tu_assert(y && y->ndim == 3 && y->shape[2] == 4, "linear keeps leading dims");
        tu_check_tensor("linear forward", y, ref, 1e-5);
        lv_tensor *x1t = tu_rand_tensor(LV_F32, 1, x1, 1.0);
        lv_tensor *y1 = lv_linear(g, x1t, in[1], NULL);
        tu_assert(y1 && y1->ndim == 1 && y1->shape[0] == 4, "linear of a vector is a vector");
        int64_t bad[2] = { 4, 8 };
        lv_tensor *wbad = lv_tensor_new(LV_F32, 2, bad);
        tu_assert(lv_linear(g, in[0], wbad, NULL) == NULL, "linear refuses (…, 9) x (4, 8): %s",
                  lv_errmsg());
        lv_graph_free(g);
        for (int i = 0; i < 3; i++)
            lv_tensor_set_param(in[i]);
        tu_gradcheck("linear grad", build_linear, in, 3, NULL,
                     &(tu_grad_opts){ .eps = 1e-2, .tol = 1e-3 });
        for (int i = 0; i < 3; i++)
            lv_tensor_free(in[i]);
        lv_tensor_free(x1t);
        lv_tensor_free(wbad);
    }
    linear_n();
    {   /* a small product checked at a tighter tolerance */
        int64_t as[2] = { 4, 6 }, bs[2] = { 6, 5 };
        lv_tensor *a = tu_rand_tensor(LV_F32, 2, as, 1.0), *b = tu_rand_tensor(LV_F32, 2, bs, 1.0);
        lv_graph *g = lv_graph_new(NULL);
        lv_tensor *c = lv_matmul(g, a, b, 0);
        int64_t n;
        double *ref = ref_mm(a, b, 0, &n);
        tu_check_tensor("matmul 4x6x5", c, ref, 1e-6);
        free(ref);
        lv_graph_free(g);
        lv_tensor_free(a);
        lv_tensor_free(b);
    }
    return tu_finish();
}
