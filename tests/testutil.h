/*
 * testutil.h: the helpers every C test uses.
 *
 * tu_check compares a result with a float64 reference per tensor:
 *     max|a - b| <= tol * max|b|
 * and prints the name, the first pairs, the largest element-wise error, the tolerance and
 * OK or NOT OK. tu_gradcheck compares lv_backward with central finite differences of the F32
 * forward, accumulated in double (ggml's test-backend-ops: a per-op step and tolerance).
 * A failed check fails the process: tu_finish returns the exit status.
 */
#ifndef LV_TESTUTIL_H
#define LV_TESTUTIL_H

#include <stdbool.h>
#include <stdint.h>

#include "lavinia/ops.h"

/* Reads --threads N (or LV_TEST_THREADS), seeds the generator from the test name. */
void tu_init(int argc, char **argv, const char *test_name);

/* Deterministic generator (xorshift64*): uniform in [-1, 1) and standard normal. */
double tu_uniform(void);
double tu_randn(void);
/* A new CPU tensor (lv_tensor_new) filled with randn * scale (F32/F16/BF16) or with
 * integers in [0, scale) (I32). */
lv_tensor *tu_rand_tensor(lv_dtype dtype, int ndim, const int64_t *shape, double scale);

/* Per-tensor check of got (n floats) against ref (n doubles). Returns true if it passed. */
bool tu_check(const char *name, const float *got, const double *ref, int64_t n, double tol);
/* Same for a tensor (any strides and float dtype) against ref. */
bool tu_check_tensor(const char *name, const lv_tensor *got, const double *ref, double tol);
/* Record a plain condition. */
bool tu_assert(bool cond, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* max|a - b| / max|b| over n values (the per-tensor rule's ratio), b in float64 or float */
double tu_rel_err(const float *a, const double *b, int64_t n);
double tu_rel_err_f(const float *a, const float *b, int64_t n);

/* Builds the op under test from its inputs; returns the output (NULL on error). */
typedef lv_tensor *(*tu_build_fn)(lv_graph *g, lv_tensor **in, void *ctx);

/* Options of one gradient check; zero fields take the defaults. */
typedef struct tu_grad_opts {
    double eps;         /* finite-difference step (default 1e-3) */
    double tol;         /* per-tensor tolerance (default 1e-2) */
    int max_points;     /* elements probed per input (default 256, spread evenly) */
    /* (optional) skip points where the op is not smooth: returns true to skip x[i] */
    bool (*skip)(const lv_tensor *in, int64_t i, void *ctx);
} tu_grad_opts;

/* For each F32 input marked LV_TENSOR_PARAM: loss = sum(out * R) with a fixed random R;
 * analytic gradient from lv_backward_with, numeric from central differences in double.
 * Inputs that are not parameters (ids, positions, masks, frozen weights) are not probed,
 * but the op still runs with them. */
bool tu_gradcheck(const char *name, tu_build_fn fn, lv_tensor **in, int n_in, void *ctx,
                  const tu_grad_opts *opts);

/* Prints "N checks, M failed" and returns the exit status (0 if none failed). */
int tu_finish(void);

#endif /* LV_TESTUTIL_H */
