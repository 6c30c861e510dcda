/*
 * test-reduce.c: lv_sum, lv_sum_all and lv_l2norm over every dim of 1- to 4-dim tensors:
 * forward against float64, backward against central differences.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "testutil.h"

struct red { int dim; int l2; };

static lv_tensor *build(lv_graph *g, lv_tensor **in, void *ctx)
{
    struct red *r = ctx;
    if (r->dim < 0)
        return lv_sum_all(g, in[0]);
    return r->l2 ? lv_l2norm(g, in[0], r->dim) : lv_sum(g, in[0], r->dim);
}

static void run(int nd, const int64_t *shape, int dim, int l2)
{
    lv_tensor *x = tu_rand_tensor(LV_F32, nd, shape, 1.0);
    int64_t outer = 1, n = 1, inner = 1;
    if (dim >= 0) {
        for (int d = 0; d < dim; d++)
            outer *= shape[d];
        n = shape[dim];
        for (int d = dim + 1; d < nd; d++)
            inner *= shape[d];
    } else {
        n = lv_tensor_nelem(x);
    }
    double *ref = malloc((size_t)(outer * inner) * sizeof *ref);
    for (int64_t o = 0; o < outer; o++)
        for (int64_t c = 0; c < inner; c++) {
            double acc = 0.0;
            for (int64_t i = 0; i < n; i++) {
                double v = lv_tensor_get(x, (o * n + i) * inner + c);
                acc += l2 ? v * v : v;
            }
            ref[o * inner + c] = l2 ? sqrt(acc) : acc;
        }
    struct red r = { dim, l2 };
    lv_graph *g = lv_graph_new(NULL);
    lv_tensor *y = build(g, &x, &r);
    char label[96];
    snprintf(label, sizeof label, "%s dim %d of %dd", dim < 0 ? "sum_all" : l2 ? "l2norm" : "sum",
             dim, nd);
    tu_assert(y && (dim < 0 ? y->ndim == 1 && y->shape[0] == 1 : y->shape[dim] == 1),
              "%s keeps the reduced dim with size 1", label);
    tu_check_tensor(label, y, ref, 1e-6);      /* summed in double, rounded once */
    lv_graph_free(g);
    lv_tensor_set_param(x);
    tu_gradcheck(label, build, &x, 1, &r, &(tu_grad_opts){ .eps = 1e-2, .tol = 1e-3 });
    free(ref);
    lv_tensor_free(x);
}

int main(int argc, char **argv)
{
    tu_init(argc, argv, "reduce");
    static const int64_t s1[] = { 9 }, s2[] = { 5, 7 }, s3[] = { 3, 1, 33 }, s4[] = { 2, 3, 4, 5 };
    for (int l2 = 0; l2 < 2; l2++) {
        run(1, s1, 0, l2);
        for (int d = 0; d < 2; d++)
            run(2, s2, d, l2);
        for (int d = 0; d < 3; d++)
            run(3, s3, d, l2);
        for (int d = 0; d < 4; d++)
            run(4, s4, d, l2);
    }
    run(3, s3, -1, 0);
    run(4, s4, -1, 0);
    /* the L2 norm of a zero vector is 0 with gradient 0, not NaN */
    int64_t n = 4;
    lv_tensor *z = lv_tensor_new(LV_F32, 1, &n);
    lv_tensor_set_param(z);
    lv_tensor_zero_grad(z);
    lv_graph *g = lv_graph_new(NULL);
    lv_graph_set_recording(g, true);
    lv_tensor *y = lv_l2norm(g, z, 0);
    bool ok = y && lv_backward(g, y) == LV_OK;
    for (int64_t i = 0; ok && i < n; i++)
        ok = lv_tensor_get(z->grad, i) == 0.0;
    tu_assert(ok && lv_tensor_get(y, 0) == 0.0, "l2norm of zeros: value 0, gradient 0");
    tu_assert(lv_sum(g, z, 3) == NULL, "sum over a missing dim refused: %s", lv_errmsg());
    lv_graph_free(g);
    lv_tensor_free(z);
    return tu_finish();
}
