/*
 * test-loss.c: lv_cross_entropy against a float64 reference written naively below, and its
 * gradient against central differences (tu_gradcheck).
 *
 * The reference is the definition in lavinia/ops.h: the mean over rows whose target is >= 0
 * of logsumexp(logits[n]) - logits[n, target[n]], and 0 when every target is ignored (-100, as
 * Hugging Face writes them). Cases cover vocabularies V = 1, 7, 33, 50, some rows ignored, 2-D
 * (N, V) and 3-D (B, T, V) logits, logits scaled by 40 (exp overflows F32 without the max
 * subtraction), and a batch where every target is ignored, whose loss and gradient are zero.
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
 * Forward tolerance, |got - ref| <= TOL * |ref|. The loss is a mean of F32 log-sum-exps over at
 * most 50 logits (sums in double inside): a few 1e-7 relative. Forgetting the ignored rows in
 * the mean, or counting them, moves it by 10% or more.
 */
#define TOL 1e-5

#define IGNORE (-100)

/* A step that must work: on failure, a failed check with the library's message; on success
 * nothing is printed (tu_assert would print an OK line for every setup step). */
static bool need(bool cond, const char *what)
{
    if (!cond)
        tu_assert(false, "%s: %s", what, lv_errmsg());
    return cond;
}

/* One case: the logits' shape and which rows are ignored. */
struct ce_case {
    int ndim;               /* 2: (N, V), 3: (B, T, V) */
    int64_t shape[3];
    double scale;           /* of the random logits */
    unsigned ignore;        /* bit n set: row n's target is IGNORE */
    double grad_eps;        /* finite-difference step; 0: tu_gradcheck's default */
};

static double ce_ref(const lv_tensor *logits, const lv_tensor *targets, int64_t N, int64_t V)
{
    double sum = 0.0;
    int64_t count = 0;
    for (int64_t n = 0; n < N; n++) {
        int64_t tg = (int64_t)lv_tensor_get(targets, n);
        if (tg < 0)
            continue;
        double mx = -INFINITY, s = 0.0;
        for (int64_t c = 0; c < V; c++)
            mx = fmax(mx, lv_tensor_get(logits, n * V + c));
        for (int64_t c = 0; c < V; c++)
            s += exp(lv_tensor_get(logits, n * V + c) - mx);
        sum += mx + log(s) - lv_tensor_get(logits, n * V + tg);
        count++;
    }
    return count ? sum / (double)count : 0.0;
}

/* in[0] logits (the parameter), in[1] targets */
static lv_tensor *build_ce(lv_graph *g, lv_tensor **in, void *ctx)
{
    (void)ctx;
    return lv_cross_entropy(g, in[0], in[1]);
}

static void test_case(const struct ce_case *cc)
{
    char label[128], glabel[144];
    int64_t V = cc->shape[cc->ndim - 1], N = 1;
    for (int i = 0; i < cc->ndim - 1; i++)
        N *= cc->shape[i];
    int64_t counted = 0;
    for (int64_t n = 0; n < N; n++)
        counted += !(cc->ignore >> n & 1u);
    snprintf(label, sizeof label, "cross_entropy N%lld V%lld x%g, %lld of %lld rows count",
             (long long)N, (long long)V, cc->scale, (long long)counted, (long long)N);

    /* Targets: uniform in [0, V) from tu_rand_tensor, shaped like the leading dims. */
    lv_tensor *in[2] = { tu_rand_tensor(LV_F32, cc->ndim, cc->shape, cc->scale),
                         tu_rand_tensor(LV_I32, cc->ndim - 1, cc->shape, (double)V) };
    if (!need(in[0] && in[1], "cross_entropy: tensors"))
        goto done;
    for (int64_t n = 0; n < N; n++)
        if (cc->ignore >> n & 1u)
            lv_tensor_set(in[1], n, IGNORE);
    lv_tensor_set_param(in[0]);

    double ref = ce_ref(in[0], in[1], N, V);
    lv_graph *g = lv_graph_new(NULL);
    if (need(g != NULL, "lv_graph_new")) {
        lv_tensor *loss = lv_cross_entropy(g, in[0], in[1]);
        if (need(loss != NULL, label) &&
            need(lv_tensor_nelem(loss) == 1, "cross_entropy: a loss of more than one element")) {
            if (ref == 0.0) {
                /* Nothing counts, or V = 1: the loss is exactly zero; a relative check
                 * against zero says nothing, so test it directly. */
                tu_assert(lv_tensor_get(loss, 0) == 0.0, "%s: loss %g, want 0", label,
                          lv_tensor_get(loss, 0));
            } else {
                tu_check_tensor(label, loss, &ref, TOL);
            }
        }
        lv_graph_free(g);
    }

    /* With V = 1 or no counted row the gradient is identically zero: nothing for central
     * differences to compare (the all-ignored case checks it directly below). */
    if (V > 1 && counted > 0) {
        snprintf(glabel, sizeof glabel, "grad %s", label);
        tu_grad_opts opts = { .eps = cc->grad_eps };
        tu_gradcheck(glabel, build_ce, in, 2, NULL, &opts);
    }

done:
    lv_tensor_free(in[0]);
    lv_tensor_free(in[1]);
}

/* Every target ignored: loss 0, and backward adds nothing to the logits' gradient. */
static void test_all_ignored(void)
{
    int64_t shape[2] = { 4, 7 };
    lv_tensor *logits = tu_rand_tensor(LV_F32, 2, shape, 1.0);
    lv_tensor *targets = lv_tensor_new(LV_I32, 1, shape);
    lv_graph *g = lv_graph_new(NULL);

    if (!need(logits && targets && g, "all ignored: setup"))
        goto done;
    for (int64_t n = 0; n < shape[0]; n++)
        lv_tensor_set(targets, n, IGNORE);
    lv_tensor_set_param(logits);
    lv_graph_set_recording(g, true);

    lv_tensor *loss = lv_cross_entropy(g, logits, targets);
    if (!need(loss != NULL, "all ignored: cross_entropy"))
        goto done;
    tu_assert(lv_tensor_get(loss, 0) == 0.0, "all ignored: loss %g, want 0",
              lv_tensor_get(loss, 0));
    if (!need(lv_backward(g, loss) == LV_OK, "all ignored: backward"))
        goto done;
    /* No gradient buffer at all is as good as a zero one. */
    double worst = 0.0;
    if (logits->grad)
        for (int64_t i = 0; i < lv_tensor_nelem(logits->grad); i++)
            worst = fmax(worst, fabs(lv_tensor_get(logits->grad, i)));
    tu_assert(worst == 0.0, "all ignored: max|dlogits| %g, want 0", worst);

done:
    lv_graph_free(g);
    lv_tensor_free(logits);
    lv_tensor_free(targets);
}

int main(int argc, char **argv)
{
    tu_init(argc, argv, "loss");

    static const struct ce_case cases[] = {
        { .ndim = 2, .shape = { 4, 1 }, .scale = 1.0 },
        { .ndim = 2, .shape = { 5, 7 }, .scale = 1.0, .ignore = 0x5 },
        { .ndim = 2, .shape = { 1, 33 }, .scale = 1.0 },
        { .ndim = 2, .shape = { 6, 33 }, .scale = 2.0, .ignore = 0x20 },
        { .ndim = 2, .shape = { 4, 50 }, .scale = 1.0 },
        /* Logits of size ~100 put the F32 loss's rounding step near 8e-6; with the default
         * step of 1e-3 that noise is ~1% of the largest gradient (1/4), the tolerance itself.
         * A step of 1e-2 cuts the noise tenfold, and the truncation error (of order h^2 times
         * the third derivative of logsumexp, below 1) stays under 1e-4. */
        { .ndim = 2, .shape = { 6, 50 }, .scale = 40.0, .ignore = 0x3, .grad_eps = 1e-2 },
        { .ndim = 3, .shape = { 2, 3, 7 }, .scale = 1.0, .ignore = 0x10 },
        { .ndim = 2, .shape = { 3, 7 }, .scale = 1.0, .ignore = 0x7 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        test_case(&cases[i]);

    test_all_ignored();

    return tu_finish();
}
