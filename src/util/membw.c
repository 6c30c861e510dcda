/*
 * membw.c: memory-read bandwidth (membw.h). SSE2 is part of x86-64, so the sum is vectorised
 * without run-time dispatch; other machines get the portable loop with four accumulators.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "util/membw.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "lavinia/error.h"
#include "util/buf.h"
#include "util/clock.h"

static float sum_floats(const float *x, size_t n)
{
    size_t i = 0;
#ifdef __SSE2__
    __m128 a = _mm_setzero_ps(), b = a, c = a, d = a;
    for (; i + 16 <= n; i += 16) {
        a = _mm_add_ps(a, _mm_load_ps(x + i));
        b = _mm_add_ps(b, _mm_load_ps(x + i + 4));
        c = _mm_add_ps(c, _mm_load_ps(x + i + 8));
        d = _mm_add_ps(d, _mm_load_ps(x + i + 12));
    }
    float lanes[4];
    _mm_storeu_ps(lanes, _mm_add_ps(_mm_add_ps(a, b), _mm_add_ps(c, d)));
    float s = lanes[0] + lanes[1] + lanes[2] + lanes[3];
#else
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += x[i];
        s1 += x[i + 1];
        s2 += x[i + 2];
        s3 += x[i + 3];
    }
    float s = s0 + s1 + s2 + s3;
#endif
    for (; i < n; i++)
        s += x[i];
    return s;
}

int lv_membw_init(struct lv_membw *b, size_t bytes)
{
    b->n = bytes / sizeof(float) / 64 * 64;
    b->x = NULL;
    /* the same allocator as tensors: a weight and this buffer sit on the same kind of page */
    if (b->n == 0 || !(b->x = lv_zalloc(b->n * sizeof *b->x))) {
        b->x = NULL;
        b->n = 0;
        return lv_error_status(LV_ENOMEM, "bandwidth: cannot allocate %zu bytes", bytes);
    }
    for (size_t i = 0; i < b->n; i++)   /* touch every page, and keep the sum finite */
        b->x[i] = (float)(i & 7) * 0.125f;
    return LV_OK;
}

double lv_membw_pass(struct lv_membw *b, int threads)
{
    static volatile float sink;
    if (threads < 1)
        threads = 1;
    size_t n = b->n, chunk = (n / (size_t)threads) / 64 * 64;
    const float *x = b->x;
    double t0 = lv_now();
    float total = 0.0f;
#pragma omp parallel for num_threads(threads) reduction(+ : total) schedule(static)
    for (int t = 0; t < threads; t++) {
        size_t lo = (size_t)t * chunk, hi = t == threads - 1 ? n : lo + chunk;
        total += sum_floats(x + lo, hi - lo);
    }
    double dt = lv_now() - t0;
    sink += total;
    return dt;
}

void lv_membw_free(struct lv_membw *b)
{
    lv_zfree(b->x, b->n * sizeof *b->x);
    b->x = NULL;
    b->n = 0;
}
