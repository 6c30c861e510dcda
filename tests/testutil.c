/*
 * testutil.c: checks, generators and finite-difference gradient checks for the C tests.
 *
 * Numbers printed by tu_check: max|a - b| (the largest element-wise error) and the bound
 * tol * max|b|. A test that fails any check exits non-zero through tu_finish.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "testutil.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int n_checks, n_failed;
static uint64_t rng_state = 0x853c49e6748fea9bull;

void tu_init(int argc, char **argv, const char *test_name)
{
    int threads = 0;
    const char *e = getenv("LV_TEST_THREADS");
    if (e)
        threads = atoi(e);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
            threads = atoi(argv[++i]);
    }
    lv_set_threads(threads);
    for (const char *p = test_name; *p; p++)
        rng_state = (rng_state ^ (unsigned char)*p) * 0x100000001b3ull;
    printf("# %s: %d thread(s)\n", test_name, lv_get_threads());
}

static uint64_t next_u64(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

double tu_uniform(void)
{
    return (double)(next_u64() >> 11) * (2.0 / 9007199254740992.0) - 1.0;
}

double tu_randn(void)
{
    double u1 = ((double)(next_u64() >> 11) + 0.5) / 9007199254740992.0;
    double u2 = (double)(next_u64() >> 11) / 9007199254740992.0;
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

lv_tensor *tu_rand_tensor(lv_dtype dtype, int ndim, const int64_t *shape, double scale)
{
    lv_tensor *t = lv_tensor_new(dtype, ndim, shape);
    if (!t) {
        fprintf(stderr, "tu_rand_tensor: %s\n", lv_errmsg());
        exit(99);
    }
    int64_t n = lv_tensor_nelem(t);
    for (int64_t i = 0; i < n; i++) {
        if (dtype == LV_I32)
            lv_tensor_set(t, i, (double)(next_u64() % (uint64_t)(scale > 1 ? scale : 1)));
        else
            lv_tensor_set(t, i, tu_randn() * scale);
    }
    return t;
}

bool tu_check(const char *name, const float *got, const double *ref, int64_t n, double tol)
{
    double maxerr = 0.0, maxref = 0.0;
    int64_t worst = 0;
    bool finite = true;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - ref[i]);
        if (!isfinite((double)got[i]) && isfinite(ref[i]))
            finite = false;
        if (e > maxerr || isnan(e)) {
            maxerr = isnan(e) ? INFINITY : e;
            worst = i;
        }
        if (fabs(ref[i]) > maxref)
            maxref = fabs(ref[i]);
    }
    bool ok = finite && maxerr <= tol * maxref;
    n_checks++;
    n_failed += !ok;
    printf("%-6s %s: max|a-b| %.3g at %lld, tol*max|b| %.3g (tol %.1g)", ok ? "OK" : "NOT OK",
           name, maxerr, (long long)worst, tol * maxref, tol);
    if (!ok) {
        printf("\n       first pairs:");
        for (int64_t i = 0; i < n && i < 4; i++)
            printf(" (%.7g, %.7g)", (double)got[i], ref[i]);
        printf(" worst (%.7g, %.7g)", n ? (double)got[worst] : 0.0, n ? ref[worst] : 0.0);
    }
    printf("\n");
    return ok;
}

bool tu_check_tensor(const char *name, const lv_tensor *got, const double *ref, double tol)
{
    if (!got) {
        return tu_assert(false, "%s: no tensor (%s)", name, lv_errmsg());
    }
    int64_t n = lv_tensor_nelem(got);
    float *buf = malloc((size_t)(n ? n : 1) * sizeof *buf);
    lv_tensor_to_f32(buf, got);
    bool ok = tu_check(name, buf, ref, n, tol);
    free(buf);
    return ok;
}

bool tu_assert(bool cond, const char *fmt, ...)
{
    va_list ap;
    n_checks++;
    n_failed += !cond;
    printf("%-6s ", cond ? "OK" : "NOT OK");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    return cond;
}

/* sum(out * R) in double, for the finite differences */
static double weighted_sum(const lv_tensor *out, const float *r)
{
    int64_t n = lv_tensor_nelem(out);
    double s = 0.0;
    for (int64_t i = 0; i < n; i++)
        s += lv_tensor_get(out, i) * (double)r[i];
    return s;
}

bool tu_gradcheck(const char *name, tu_build_fn fn, lv_tensor **in, int n_in, void *ctx,
                  const tu_grad_opts *opts)
{
    double eps = opts && opts->eps > 0 ? opts->eps : 1e-3;
    double tol = opts && opts->tol > 0 ? opts->tol : 1e-2;
    int max_points = opts && opts->max_points > 0 ? opts->max_points : 256;
    bool ok = true;
    lv_graph *g = lv_graph_new(NULL);
    lv_graph_set_recording(g, true);
    for (int i = 0; i < n_in; i++)
        if (in[i]->flags & LV_TENSOR_PARAM)
            lv_tensor_zero_grad(in[i]);
    lv_tensor *out = fn(g, in, ctx);
    if (!out) {
        tu_assert(false, "%s: forward failed: %s", name, lv_errmsg());
        lv_graph_free(g);
        return false;
    }
    int64_t nout = lv_tensor_nelem(out);
    float *r = malloc((size_t)nout * sizeof *r);
    for (int64_t i = 0; i < nout; i++)
        r[i] = (float)tu_randn();
    lv_tensor R;
    lv_tensor_init(&R, r, LV_F32, out->ndim, out->shape);
    if (lv_backward_with(g, out, &R) != LV_OK) {
        tu_assert(false, "%s: backward failed: %s", name, lv_errmsg());
        free(r);
        lv_graph_free(g);
        return false;
    }
    for (int i = 0; i < n_in; i++) {
        lv_tensor *x = in[i];
        if (!(x->flags & LV_TENSOR_PARAM) || x->dtype != LV_F32)
            continue;
        int64_t n = lv_tensor_nelem(x);
        int64_t pts = n < max_points ? n : max_points;
        float *ana = malloc((size_t)(pts ? pts : 1) * sizeof *ana);
        double *num = malloc((size_t)(pts ? pts : 1) * sizeof *num);
        int64_t kept = 0;
        for (int64_t k = 0; k < pts; k++) {
            int64_t idx = k * n / pts;
            if (opts && opts->skip && opts->skip(x, idx, ctx))
                continue;
            double orig = lv_tensor_get(x, idx);
            lv_tensor_set(x, idx, orig + eps);
            double xp = lv_tensor_get(x, idx);
            lv_graph_reset(g);
            lv_tensor *yp = fn(g, in, ctx);
            double lp = yp ? weighted_sum(yp, r) : NAN;
            lv_tensor_set(x, idx, orig - eps);
            double xm = lv_tensor_get(x, idx);
            lv_graph_reset(g);
            lv_tensor *ym = fn(g, in, ctx);
            double lm = ym ? weighted_sum(ym, r) : NAN;
            lv_tensor_set(x, idx, orig);
            num[kept] = (lp - lm) / (xp - xm);
            ana[kept] = ((const float *)x->grad->data)[idx];
            kept++;
        }
        char label[160];
        snprintf(label, sizeof label, "%s: d/d input %d %s", name, i, x->name);
        ok &= tu_check(label, ana, num, kept, tol);
        free(ana);
        free(num);
    }
    free(r);
    lv_graph_free(g);
    return ok;
}

int tu_finish(void)
{
    printf("%d checks, %d failed\n", n_checks, n_failed);
    return n_failed ? 1 : 0;
}

double tu_rel_err(const float *a, const double *b, int64_t n)
{
    double e = 0.0, m = 0.0;
    for (int64_t i = 0; i < n; i++) {
        e = fmax(e, fabs((double)a[i] - b[i]));
        m = fmax(m, fabs(b[i]));
    }
    return m > 0 ? e / m : e;
}

double tu_rel_err_f(const float *a, const float *b, int64_t n)
{
    double e = 0.0, m = 0.0;
    for (int64_t i = 0; i < n; i++) {
        e = fmax(e, fabs((double)a[i] - (double)b[i]));
        m = fmax(m, fabs((double)b[i]));
    }
    return m > 0 ? e / m : e;
}
