/*
 * test-norm.c: lv_rmsnorm, lv_layernorm and lv_softmax against float64 references written
 * naively below, and their gradients against central differences (tu_gradcheck).
 *
 * Each op runs at several row lengths C, including ones that are not multiples of 8 (1, 7,
 * 33) and a power of two (64), on 2-D (N, C) inputs and on one 3-D (2, 3, C) input whose
 * leading dims are flattened into rows. RMSNorm runs with and without a weight, LayerNorm with
 * every combination of weight and bias; softmax also runs on logits of size ~100 (randn * 30
 * + 100), where an implementation that skips the max subtraction overflows.
 *
 * Expected values: the reference functions in this file, in double, from the same F32 inputs.
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
 * Forward tolerance, as max|got - ref| <= TOL * max|ref|. The kernels compute in F32 from the
 * same F32 inputs (unit round-off 6e-8) with row sums in double; a row of C <= 64 elements
 * lands within a few 1e-7, so 1e-5 leaves a wide margin, while a wrong formula (biased vs
 * unbiased variance, a missing eps, a forgotten weight) is off by 1e-2 or more.
 */
#define TOL 1e-5

static const int64_t row_lengths[] = { 1, 7, 33, 64 };
#define N_LENGTHS ((int)(sizeof row_lengths / sizeof row_lengths[0]))

/* A step that must work: on failure, a failed check with the library's message; on success
 * nothing is printed (tu_assert would print an OK line for every setup step). */
static bool need(bool cond, const char *what)
{
    if (!cond)
        tu_assert(false, "%s: %s", what, lv_errmsg());
    return cond;
}

/* One test input: its shape (2-D rows or 3-D) and the eps the norms use. */
struct norm_case {
    int ndim;
    int64_t shape[3];
    float eps;
    int has_w, has_b;
};

/* ---------------------------------------------------------------------------------------- */
/* float64 references over (N, C) */

static double *values_of(const lv_tensor *t)
{
    int64_t n = lv_tensor_nelem(t);
    double *v = malloc((size_t)(n > 0 ? n : 1) * sizeof *v);
    if (!v) {
        fprintf(stderr, "test-norm: out of memory\n");
        exit(99);
    }
    for (int64_t i = 0; i < n; i++)
        v[i] = lv_tensor_get(t, i);
    return v;
}

static void rmsnorm_ref(double *y, const double *x, const double *w, int64_t N, int64_t C,
                        double eps)
{
    for (int64_t n = 0; n < N; n++) {
        double ss = 0.0;
        for (int64_t c = 0; c < C; c++)
            ss += x[n * C + c] * x[n * C + c];
        double r = 1.0 / sqrt(ss / (double)C + eps);
        for (int64_t c = 0; c < C; c++)
            y[n * C + c] = x[n * C + c] * r * (w ? w[c] : 1.0);
    }
}

static void layernorm_ref(double *y, const double *x, const double *w, const double *b,
                          int64_t N, int64_t C, double eps)
{
    for (int64_t n = 0; n < N; n++) {
        double m = 0.0, var = 0.0;
        for (int64_t c = 0; c < C; c++)
            m += x[n * C + c];
        m /= (double)C;
        for (int64_t c = 0; c < C; c++)
            var += (x[n * C + c] - m) * (x[n * C + c] - m);
        var /= (double)C;   /* biased, as torch.nn.LayerNorm */
        double r = 1.0 / sqrt(var + eps);
        for (int64_t c = 0; c < C; c++)
            y[n * C + c] = (x[n * C + c] - m) * r * (w ? w[c] : 1.0) + (b ? b[c] : 0.0);
    }
}

static void softmax_ref(double *y, const double *x, int64_t N, int64_t C)
{
    for (int64_t n = 0; n < N; n++) {
        double mx = -INFINITY, s = 0.0;
        for (int64_t c = 0; c < C; c++)
            mx = fmax(mx, x[n * C + c]);
        for (int64_t c = 0; c < C; c++)
            s += exp(x[n * C + c] - mx);
        for (int64_t c = 0; c < C; c++)
            y[n * C + c] = exp(x[n * C + c] - mx) / s;
    }
}

/* ---------------------------------------------------------------------------------------- */
/* graph builders for tu_gradcheck: in[0] x, then the weight and the bias the case has */

static lv_tensor *build_rmsnorm(lv_graph *g, lv_tensor **in, void *ctx)
{
    const struct norm_case *nc = ctx;
    return lv_rmsnorm(g, in[0], nc->has_w ? in[1] : NULL, nc->eps);
}

static lv_tensor *build_layernorm(lv_graph *g, lv_tensor **in, void *ctx)
{
    const struct norm_case *nc = ctx;
    lv_tensor *w = nc->has_w ? in[1] : NULL;
    lv_tensor *b = nc->has_b ? in[nc->has_w ? 2 : 1] : NULL;
    return lv_layernorm(g, in[0], w, b, nc->eps);
}

static lv_tensor *build_softmax(lv_graph *g, lv_tensor **in, void *ctx)
{
    (void)ctx;
    return lv_softmax(g, in[0]);
}

/* ---------------------------------------------------------------------------------------- */
/* the tests */

static void shape_name(char *buf, size_t n, const struct norm_case *nc)
{
    if (nc->ndim == 2)
        snprintf(buf, n, "(%lld, %lld)", (long long)nc->shape[0], (long long)nc->shape[1]);
    else
        snprintf(buf, n, "(%lld, %lld, %lld)", (long long)nc->shape[0],
                 (long long)nc->shape[1], (long long)nc->shape[2]);
}


static void test_rmsnorm(const struct norm_case *nc)
{
    char shp[64], label[128];
    int64_t C = nc->shape[nc->ndim - 1], N = 1;
    for (int i = 0; i < nc->ndim - 1; i++)
        N *= nc->shape[i];
    shape_name(shp, sizeof shp, nc);

    lv_tensor *in[2] = { tu_rand_tensor(LV_F32, nc->ndim, nc->shape, 1.0),
                         tu_rand_tensor(LV_F32, 1, &C, 1.0) };
    if (!need(in[0] && in[1], "rmsnorm: tensors"))
        goto done;
    lv_tensor_set_param(in[0]);
    lv_tensor_set_param(in[1]);

    double *x = values_of(in[0]), *w = values_of(in[1]);
    double *ref = malloc((size_t)(N * C) * sizeof *ref);
    if (!ref) {
        fprintf(stderr, "test-norm: out of memory\n");
        exit(99);
    }
    rmsnorm_ref(ref, x, nc->has_w ? w : NULL, N, C, nc->eps);

    lv_graph *g = lv_graph_new(NULL);
    if (need(g != NULL, "lv_graph_new")) {
        snprintf(label, sizeof label, "rmsnorm %s%s eps %g", shp, nc->has_w ? " w" : "",
                 (double)nc->eps);
        /* tu_check_tensor fails with lv_errmsg() when the op returned NULL. */
        tu_check_tensor(label, lv_rmsnorm(g, in[0], nc->has_w ? in[1] : NULL, nc->eps), ref,
                        TOL);
        lv_graph_free(g);
    }

    tu_grad_opts opts = { 0 };
    snprintf(label, sizeof label, "grad rmsnorm %s%s", shp, nc->has_w ? " w" : "");
    tu_gradcheck(label, build_rmsnorm, in, nc->has_w ? 2 : 1, (void *)nc, &opts);

    free(x);
    free(w);
    free(ref);
done:
    lv_tensor_free(in[0]);
    lv_tensor_free(in[1]);
}

static void test_layernorm(const struct norm_case *nc, bool grad)
{
    char shp[64], label[128];
    int64_t C = nc->shape[nc->ndim - 1], N = 1;
    for (int i = 0; i < nc->ndim - 1; i++)
        N *= nc->shape[i];
    shape_name(shp, sizeof shp, nc);

    lv_tensor *x = tu_rand_tensor(LV_F32, nc->ndim, nc->shape, 1.0);
    lv_tensor *w = tu_rand_tensor(LV_F32, 1, &C, 1.0);
    lv_tensor *b = tu_rand_tensor(LV_F32, 1, &C, 1.0);
    if (!need(x && w && b, "layernorm: tensors"))
        goto done;
    /* An offset of 3 per row: a one-pass mean(x^2) - mean^2 variance would lose digits. */
    for (int64_t i = 0; i < N * C; i++)
        lv_tensor_set(x, i, lv_tensor_get(x, i) + 3.0);
    lv_tensor_set_param(x);
    lv_tensor_set_param(w);
    lv_tensor_set_param(b);

    double *xv = values_of(x), *wv = values_of(w), *bv = values_of(b);
    double *ref = malloc((size_t)(N * C) * sizeof *ref);
    if (!ref) {
        fprintf(stderr, "test-norm: out of memory\n");
        exit(99);
    }
    layernorm_ref(ref, xv, nc->has_w ? wv : NULL, nc->has_b ? bv : NULL, N, C, nc->eps);

    const char *wb = nc->has_w ? (nc->has_b ? " w b" : " w") : (nc->has_b ? " b" : "");
    lv_graph *g = lv_graph_new(NULL);
    if (need(g != NULL, "lv_graph_new")) {
        snprintf(label, sizeof label, "layernorm %s%s", shp, wb);
        tu_check_tensor(label, lv_layernorm(g, x, nc->has_w ? w : NULL, nc->has_b ? b : NULL,
                                            nc->eps), ref, TOL);
        lv_graph_free(g);
    }

    if (grad) {
        lv_tensor *in[3] = { x, NULL, NULL };
        int n_in = 1;
        if (nc->has_w)
            in[n_in++] = w;
        if (nc->has_b)
            in[n_in++] = b;
        tu_grad_opts opts = { 0 };
        snprintf(label, sizeof label, "grad layernorm %s%s", shp, wb);
        tu_gradcheck(label, build_layernorm, in, n_in, (void *)nc, &opts);
    }

    free(xv);
    free(wv);
    free(bv);
    free(ref);
done:
    lv_tensor_free(x);
    lv_tensor_free(w);
    lv_tensor_free(b);
}

/* Softmax of randn * scale + offset (the offset changes nothing but the overflow risk). */
static void test_softmax(const struct norm_case *nc, double scale, double offset, bool grad)
{
    char shp[64], label[128];
    int64_t C = nc->shape[nc->ndim - 1], N = 1;
    for (int i = 0; i < nc->ndim - 1; i++)
        N *= nc->shape[i];
    shape_name(shp, sizeof shp, nc);

    lv_tensor *x = tu_rand_tensor(LV_F32, nc->ndim, nc->shape, scale);
    if (!need(x != NULL, "softmax: tensors"))
        return;
    for (int64_t i = 0; i < N * C; i++)
        lv_tensor_set(x, i, lv_tensor_get(x, i) + offset);
    lv_tensor_set_param(x);

    double *xv = values_of(x);
    double *ref = malloc((size_t)(N * C) * sizeof *ref);
    if (!ref) {
        fprintf(stderr, "test-norm: out of memory\n");
        exit(99);
    }
    softmax_ref(ref, xv, N, C);

    lv_graph *g = lv_graph_new(NULL);
    if (need(g != NULL, "lv_graph_new")) {
        snprintf(label, sizeof label, "softmax %s x%g%+g", shp, scale, offset);
        tu_check_tensor(label, lv_softmax(g, x), ref, TOL);
        lv_graph_free(g);
    }

    if (grad) {
        tu_grad_opts opts = { 0 };
        snprintf(label, sizeof label, "grad softmax %s", shp);
        tu_gradcheck(label, build_softmax, &x, 1, NULL, &opts);
    }

    free(xv);
    free(ref);
    lv_tensor_free(x);
}

int main(int argc, char **argv)
{
    tu_init(argc, argv, "norm");

    for (int i = 0; i < N_LENGTHS; i++) {
        int64_t C = row_lengths[i];
        /* With C = 1, RMSNorm is x / sqrt(x^2 + eps) * w, about sign(x) * w: its gradient in
         * x is of order eps / |x|^3, which a finite difference of F32 outputs cannot see at
         * eps 1e-5. eps 0.25 keeps that derivative of order 1 and still tests the formula. */
        float eps = C == 1 ? 0.25f : 1e-5f;
        for (int hw = 0; hw <= 1; hw++) {
            struct norm_case r2 = { .ndim = 2, .shape = { 5, C }, .eps = eps, .has_w = hw };
            test_rmsnorm(&r2);
        }
        for (int k = 0; k < 4; k++) {
            struct norm_case l2 = { .ndim = 2, .shape = { 4, C }, .eps = 1e-5f,
                                    .has_w = k & 1, .has_b = k >> 1 };
            /* With C = 1, LayerNorm's output is b whatever x is: dx and dw are exactly zero
             * and there is nothing for a gradient check to compare. */
            test_layernorm(&l2, C > 1);
        }
        struct norm_case s2 = { .ndim = 2, .shape = { 3, C } };
        /* Softmax of one element is 1 whatever x is: dx is exactly zero, as above. */
        test_softmax(&s2, 1.0, 0.0, C > 1);
        test_softmax(&s2, 30.0, 100.0, false);
    }

    /* 3-D inputs: the leading (2, 3) are six rows. */
    struct norm_case r3 = { .ndim = 3, .shape = { 2, 3, 7 }, .eps = 1e-5f, .has_w = 1 };
    test_rmsnorm(&r3);
    struct norm_case l3 = { .ndim = 3, .shape = { 2, 3, 33 }, .eps = 1e-5f, .has_w = 1,
                            .has_b = 1 };
    test_layernorm(&l3, true);
    struct norm_case s3 = { .ndim = 3, .shape = { 2, 3, 7 } };
    test_softmax(&s3, 1.0, 0.0, true);

    return tu_finish();
}
