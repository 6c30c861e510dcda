/*
 * test-elementwise.c: add, sub, mul, div with broadcasting, scale, sqrt, the activations,
 * swiglu and dropout: forward against float64 references, backward against central
 * differences.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

enum which { ADD, SUB, MUL, DIV, SCALE, SQRT, SILU, GELU, GELU_TANH, QUICK_GELU, SWIGLU,
             DROPOUT };
static const char *names[] = { "add", "sub", "mul", "div", "scale", "sqrt", "silu", "gelu",
                               "gelu_tanh", "quick_gelu", "swiglu", "dropout" };

static lv_tensor *build(lv_graph *g, lv_tensor **in, void *ctx)
{
    switch (*(enum which *)ctx) {
    case ADD: return lv_add(g, in[0], in[1]);
    case SUB: return lv_sub(g, in[0], in[1]);
    case MUL: return lv_mul(g, in[0], in[1]);
    case DIV: return lv_div(g, in[0], in[1]);
    case SCALE: return lv_scale(g, in[0], -0.75f);
    case SQRT: return lv_sqrt(g, in[0]);
    case SILU: return lv_silu(g, in[0]);
    case GELU: return lv_gelu(g, in[0]);
    case GELU_TANH: return lv_gelu_tanh(g, in[0]);
    case QUICK_GELU: return lv_quick_gelu(g, in[0]);
    case SWIGLU: return lv_swiglu(g, in[0], in[1]);
    case DROPOUT: return lv_dropout(g, in[0], 0.3f, 1234);
    }
    return NULL;
}

static double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

static double ref_unary(enum which w, double x)
{
    switch (w) {
    case SCALE: return -0.75 * x;
    case SQRT: return sqrt(x);
    case SILU: return x * sigmoid(x);
    case GELU: return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
    case GELU_TANH:
        return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
    case QUICK_GELU: return x * sigmoid(1.702 * x);
    default: return NAN;
    }
}

/* index of b's element for a's flat index i (NumPy broadcasting, b right-aligned) */
static int64_t bcast_index(const lv_tensor *a, const lv_tensor *b, int64_t i)
{
    int64_t off = 0, stride = 1;
    for (int d = a->ndim - 1, e = b->ndim - 1; d >= 0; d--, e--) {
        int64_t idx = i % a->shape[d];
        i /= a->shape[d];
        if (e >= 0) {
            if (b->shape[e] != 1)
                off += idx * stride;
            stride *= b->shape[e];
        }
    }
    return off;
}

static void test_binary(enum which w, int an, const int64_t *as, int bn, const int64_t *bs)
{
    lv_tensor *in[2] = { tu_rand_tensor(LV_F32, an, as, 1.0), tu_rand_tensor(LV_F32, bn, bs, 1.0) };
    if (w == DIV)   /* keep the divisor away from zero */
        for (int64_t i = 0; i < lv_tensor_nelem(in[1]); i++)
            lv_tensor_set(in[1], i, 1.5 + fabs(lv_tensor_get(in[1], i)));
    int64_t n = lv_tensor_nelem(in[0]);
    double *ref = malloc((size_t)n * sizeof *ref);
    for (int64_t i = 0; i < n; i++) {
        double a = lv_tensor_get(in[0], i), b = lv_tensor_get(in[1], bcast_index(in[0], in[1], i));
        ref[i] = w == ADD ? a + b : w == SUB ? a - b : w == MUL ? a * b : a / b;
    }
    lv_graph *g = lv_graph_new(NULL);
    char label[96];
    snprintf(label, sizeof label, "%s forward %lld/%lld elems", names[w], (long long)n,
             (long long)lv_tensor_nelem(in[1]));
    tu_check_tensor(label, build(g, in, &w), ref, 1e-6);   /* one F32 rounding per element */
    lv_graph_free(g);
    lv_tensor_set_param(in[0]);
    lv_tensor_set_param(in[1]);
    snprintf(label, sizeof label, "%s grad", names[w]);
    tu_gradcheck(label, build, in, 2, &w, &(tu_grad_opts){ .eps = 1e-2, .tol = 2e-3 });
    free(ref);
    lv_tensor_free(in[0]);
    lv_tensor_free(in[1]);
}

static void test_unary(enum which w, int nd, const int64_t *shape)
{
    lv_tensor *x = tu_rand_tensor(LV_F32, nd, shape, 2.0);
    int64_t n = lv_tensor_nelem(x);
    if (w == SQRT)
        for (int64_t i = 0; i < n; i++)
            lv_tensor_set(x, i, 0.5 + fabs(lv_tensor_get(x, i)));
    double *ref = malloc((size_t)n * sizeof *ref);
    for (int64_t i = 0; i < n; i++)
        ref[i] = ref_unary(w, lv_tensor_get(x, i));
    lv_graph *g = lv_graph_new(NULL);
    char label[96];
    snprintf(label, sizeof label, "%s forward n=%lld", names[w], (long long)n);
    /* libm's expf/erff/tanhf are within a few ulp */
    tu_check_tensor(label, build(g, &x, &w), ref, 2e-6);
    lv_graph_free(g);
    lv_tensor_set_param(x);
    snprintf(label, sizeof label, "%s grad n=%lld", names[w], (long long)n);
    tu_gradcheck(label, build, &x, 1, &w, &(tu_grad_opts){ .eps = 1e-2, .tol = 2e-3 });
    free(ref);
    lv_tensor_free(x);
}

static void test_swiglu(int64_t n)
{
    lv_tensor *in[2] = { tu_rand_tensor(LV_F32, 1, &n, 2.0), tu_rand_tensor(LV_F32, 1, &n, 1.0) };
    double *ref = malloc((size_t)n * sizeof *ref);
    for (int64_t i = 0; i < n; i++) {
        double gt = lv_tensor_get(in[0], i);
        ref[i] = gt * sigmoid(gt) * lv_tensor_get(in[1], i);
    }
    enum which w = SWIGLU;
    lv_graph *g = lv_graph_new(NULL);
    tu_check_tensor("swiglu forward", build(g, in, &w), ref, 2e-6);
    lv_graph_free(g);
    lv_tensor_set_param(in[0]);
    lv_tensor_set_param(in[1]);
    tu_gradcheck("swiglu grad", build, in, 2, &w, &(tu_grad_opts){ .eps = 1e-2, .tol = 2e-3 });
    free(ref);
    lv_tensor_free(in[0]);
    lv_tensor_free(in[1]);
}

static void test_dropout(void)
{
    int64_t n = 20000;
    lv_tensor *x = lv_tensor_new(LV_F32, 1, &n);
    for (int64_t i = 0; i < n; i++)
        lv_tensor_set(x, i, 1.0);
    enum which w = DROPOUT;
    lv_graph *g = lv_graph_new(NULL);
    lv_tensor *y0 = build(g, &x, &w);
    tu_assert(y0 == x, "dropout is the identity when the graph is not recording");
    lv_graph_set_recording(g, true);
    lv_tensor *y1 = build(g, &x, &w), *y2 = build(g, &x, &w);
    int64_t zeros = 0;
    bool same = true, scaled = true;
    for (int64_t i = 0; i < n; i++) {
        double v = lv_tensor_get(y1, i);
        zeros += v == 0.0;
        same &= v == lv_tensor_get(y2, i);
        scaled &= v == 0.0 || fabs(v - 1.0 / 0.7) < 1e-6;
    }
    tu_assert(fabs((double)zeros / n - 0.3) < 0.02, "dropout p=0.3 zeroes %.4f of elements",
              (double)zeros / n);
    tu_assert(same, "dropout mask is a function of the seed");
    tu_assert(scaled, "kept elements are scaled by 1/(1-p)");
    lv_graph_free(g);
    lv_tensor_free(x);
    int64_t m = 37;
    lv_tensor *x2 = tu_rand_tensor(LV_F32, 1, &m, 1.0);
    lv_tensor_set_param(x2);
    tu_gradcheck("dropout grad", build, &x2, 1, &w, &(tu_grad_opts){ .eps = 1e-2, .tol = 1e-3 });
    lv_tensor_free(x2);
}

int main(int argc, char **argv)
{
    tu_init(argc, argv, "elementwise");
    static const int64_t s7[] = { 7 }, s35[] = { 3, 5 }, s5[] = { 5 }, s234[] = { 2, 3, 4 };
    static const int64_t s31[] = { 3, 1 }, s1[] = { 1 }, s2345[] = { 2, 3, 4, 5 };
    static const int64_t s1345[] = { 1, 3, 1, 5 }, s33[] = { 33 };
    for (enum which w = ADD; w <= DIV; w++) {
        test_binary(w, 1, s7, 1, s7);
        test_binary(w, 2, s35, 1, s5);
        test_binary(w, 3, s234, 2, s31);
        test_binary(w, 2, s35, 1, s1);
        test_binary(w, 4, s2345, 4, s1345);
    }
    for (enum which w = SCALE; w <= QUICK_GELU; w++) {
        test_unary(w, 1, s1);
        test_unary(w, 1, s33);
        test_unary(w, 3, s234);
    }
    test_swiglu(1);
    test_swiglu(45);
    test_dropout();
    /* a shape that does not broadcast is an error, not a crash */
    lv_tensor *a = tu_rand_tensor(LV_F32, 2, s35, 1.0), *b = tu_rand_tensor(LV_F32, 1, s7, 1.0);
    lv_graph *g = lv_graph_new(NULL);
    tu_assert(lv_add(g, a, b) == NULL && strstr(lv_errmsg(), "broadcast"),
              "add (3,5)+(7) refused: %s", lv_errmsg());
    tu_assert(lv_add(g, NULL, b) == NULL, "NULL input gives NULL");
    lv_graph_free(g);
    lv_tensor_free(a);
    lv_tensor_free(b);
    return tu_finish();
}
