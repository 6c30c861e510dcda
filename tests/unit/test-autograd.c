/*
 * test-autograd.c: the tape and the reverse walk: fan-out accumulation, frozen weights that
 * pass gradients through, detached tensors, accumulation across backward calls, errors for
 * unrecorded graphs, and results that are bit-identical at 1 and 2 threads.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static bool grad_is(const lv_tensor *p, double (*f)(double x), const lv_tensor *x, double tol)
{
    if (!p->grad)
        return false;
    for (int64_t i = 0; i < lv_tensor_nelem(p); i++)
        if (fabs(lv_tensor_get(p->grad, i) - f(lv_tensor_get(x, i))) > tol)
            return false;
    return true;
}

static double two_x_plus_1(double x) { return 2 * x + 1; }
static double identity(double x) { return x; }
static double four_x_plus_2(double x) { return 4 * x + 2; }

static void test_tape(void)
{
    int64_t n = 6;
    lv_tensor *x = tu_rand_tensor(LV_F32, 1, &n, 1.0);
    lv_tensor_set_param(x);
    lv_graph *g = lv_graph_new(NULL);
    lv_graph_set_recording(g, true);

    /* fan-out: x is used twice; both paths add into its gradient */
    lv_tensor *y = lv_sum_all(g, lv_add(g, lv_mul(g, x, x), x));
    tu_assert(lv_backward(g, y) == LV_OK, "backward of sum(x*x + x)");
    tu_assert(grad_is(x, two_x_plus_1, x, 1e-6), "fan-out: d/dx = 2x + 1");

    /* a second backward without zeroing accumulates */
    lv_graph_reset(g);
    y = lv_sum_all(g, lv_add(g, lv_mul(g, x, x), x));
    lv_backward(g, y);
    tu_assert(grad_is(x, four_x_plus_2, x, 1e-5), "gradients accumulate across steps");

    /* detach: y = sum(x * stop(x)) has gradient stop(x) = x, not 2x */
    lv_tensor_zero_grad(x);
    lv_graph_reset(g);
    y = lv_sum_all(g, lv_mul(g, x, lv_detach(g, x)));
    tu_assert(lv_backward(g, y) == LV_OK && grad_is(x, identity, x, 1e-6),
              "detached operand passes no gradient");

    /* lv_backward wants one element */
    lv_graph_reset(g);
    y = lv_mul(g, x, x);
    tu_assert(lv_backward(g, y) != LV_OK && strstr(lv_errmsg(), "one element"),
              "backward of a vector refused: %s", lv_errmsg());

    /* nothing recorded: a clear message, not a silent zero */
    lv_graph_set_recording(g, false);
    lv_graph_reset(g);
    y = lv_sum_all(g, lv_mul(g, x, x));
    tu_assert(y && lv_backward(g, y) != LV_OK && strstr(lv_errmsg(), "set_param"),
              "backward of an unrecorded graph refused: %s", lv_errmsg());

    /* errors travel down a chain as NULL */
    int64_t m = 5;
    lv_tensor *other = lv_tensor_new(LV_F32, 1, &m);
    y = lv_sum_all(g, lv_silu(g, lv_add(g, x, other)));
    tu_assert(y == NULL && strstr(lv_errmsg(), "broadcast"),
              "a bad op early in a chain makes the chain NULL: %s", lv_errmsg());
    lv_tensor_free(other);
    lv_graph_free(g);
    lv_tensor_free(x);
}

static void test_frozen(void)
{
    int64_t xs[2] = { 3, 4 }, ws[2] = { 5, 4 };
    lv_tensor *x = tu_rand_tensor(LV_F32, 2, xs, 1.0), *w = tu_rand_tensor(LV_BF16, 2, ws, 1.0);
    lv_tensor_set_param(x);
    lv_tensor_set_frozen(w);
    lv_tensor_zero_grad(x);
    lv_graph *g = lv_graph_new(NULL);
    lv_graph_set_recording(g, true);
    lv_tensor *y = lv_sum_all(g, lv_linear(g, x, w, NULL));
    tu_assert(lv_backward(g, y) == LV_OK, "backward through a frozen BF16 weight");
    tu_assert(w->grad == NULL, "the frozen weight gets no gradient of its own");
    /* d/dx sum(x W^T) = column sums of W, for every row */
    bool ok = true;
    for (int r = 0; r < 3; r++)
        for (int k = 0; k < 4; k++) {
            double s = 0;
            for (int o = 0; o < 5; o++)
                s += lv_tensor_get(w, o * 4 + k);
            ok &= fabs(lv_tensor_get(x->grad, r * 4 + k) - s) < 1e-5;
        }
    tu_assert(ok, "the gradient flows through the frozen weight to x");
    lv_graph_free(g);
    lv_tensor_free(x);
    lv_tensor_free(w);
}

/* A small pre-norm attention block and loss: every kind of op the models use. */
static float *run_block(int threads, int64_t *n_out)
{
    lv_set_threads(threads);
    /* big enough that every kernel crosses CPU_PARALLEL_MIN_WORK and really runs in parallel */
    enum { T = 72, C = 512, H = 8, KV = 4, D = 64, V = 520 };
    static lv_tensor *p[6];
    static lv_tensor *ids, *pos, *tgt;
    if (!p[0]) {   /* the same inputs for both runs */
        int64_t emb[2] = { V, C }, wq[2] = { H * D, C }, wkv[2] = { KV * D, C }, wo[2] = { C, H * D };
        int64_t one[1] = { C }, t1[1] = { T };
        p[0] = tu_rand_tensor(LV_F32, 2, emb, 1.0);
        p[1] = tu_rand_tensor(LV_F32, 2, wq, 0.3);
        p[2] = tu_rand_tensor(LV_F32, 2, wkv, 0.3);
        p[3] = tu_rand_tensor(LV_F32, 2, wkv, 0.3);
        p[4] = tu_rand_tensor(LV_F32, 2, wo, 0.3);
        p[5] = tu_rand_tensor(LV_F32, 1, one, 1.0);
        ids = tu_rand_tensor(LV_I32, 1, t1, V);
        tgt = tu_rand_tensor(LV_I32, 1, t1, V);
        lv_tensor_set(tgt, 2, -100);
        pos = lv_tensor_new(LV_I32, 1, t1);
        for (int i = 0; i < T; i++)
            lv_tensor_set(pos, i, i + 3);
        for (int i = 0; i < 6; i++)
            lv_tensor_set_param(p[i]);
    }
    for (int i = 0; i < 6; i++)
        lv_tensor_zero_grad(p[i]);
    lv_graph *g = lv_graph_new(NULL);
    lv_graph_set_recording(g, true);
    lv_tensor *x = lv_embedding(g, p[0], ids);
    lv_tensor *h = lv_rmsnorm(g, x, p[5], 1e-5f);
    int64_t qs[3] = { T, H, D }, ks[3] = { T, KV, D }, flat[2] = { T, H * D };
    lv_tensor *q = lv_rope(g, lv_reshape(g, lv_linear(g, h, p[1], NULL), 3, qs), pos, LV_ROPE_HF,
                           10000.0f, 1.0f);
    lv_tensor *k = lv_rope(g, lv_reshape(g, lv_linear(g, h, p[2], NULL), 3, ks), pos, LV_ROPE_HF,
                           10000.0f, 1.0f);
    lv_tensor *v = lv_reshape(g, lv_linear(g, h, p[3], NULL), 3, ks);
    lv_tensor *a = lv_attention(g, q, k, v, NULL, NULL, 1.0f / sqrtf(D), LV_ATTN_CAUSAL);
    x = lv_add(g, x, lv_linear(g, lv_reshape(g, a, 2, flat), p[4], NULL));
    lv_tensor *logits = lv_matmul(g, lv_gelu(g, x), p[0], LV_TRANS_B);
    lv_tensor *loss = lv_cross_entropy(g, logits, tgt);
    int64_t total = 1 + lv_tensor_nelem(logits);
    for (int i = 0; i < 6; i++)
        total += lv_tensor_nelem(p[i]);
    float *out = malloc((size_t)total * sizeof *out);
    if (!loss || lv_backward(g, loss) != LV_OK) {
        fprintf(stderr, "block failed: %s\n", lv_errmsg());
        exit(1);
    }
    int64_t k0 = 0;
    lv_tensor_to_f32(out, loss);
    lv_tensor_to_f32(out + 1, logits);
    k0 = 1 + lv_tensor_nelem(logits);
    for (int i = 0; i < 6; i++) {
        lv_tensor_to_f32(out + k0, p[i]->grad);
        k0 += lv_tensor_nelem(p[i]);
    }
    lv_graph_free(g);
    *n_out = total;
    if (threads == 0) {    /* last call: release the shared inputs */
        for (int i = 0; i < 6; i++)
            lv_tensor_free(p[i]);
        lv_tensor_free(ids);
        lv_tensor_free(tgt);
        lv_tensor_free(pos);
    }
    return out;
}

static void test_threads(void)
{
    int64_t n1, n2;
    float *a = run_block(1, &n1);
    float *b = run_block(2, &n2);
    int64_t first = -1, ndiff = 0;
    for (int64_t i = 0; i < n1 && n1 == n2; i++)
        if (memcmp(&a[i], &b[i], sizeof *a)) {
            ndiff++;
            if (first < 0)
                first = i;
        }
    if (first >= 0)
        printf("# first difference at value %lld (%.9g vs %.9g), %lld differ\n",
               (long long)first, (double)a[first], (double)b[first], (long long)ndiff);
    tu_assert(n1 == n2 && memcmp(a, b, (size_t)n1 * sizeof *a) == 0,
              "loss, logits and %lld gradient values are bit-identical at 1 and 2 threads",
              (long long)n1);
    free(b);
    b = run_block(0, &n2);
    free(a);
    free(b);
}

int main(int argc, char **argv)
{
    tu_init(argc, argv, "autograd");
    int threads = lv_get_threads();
    test_tape();
    test_frozen();
    test_threads();
    lv_set_threads(threads);
    return tu_finish();
}
