/*
 * cpu-matmul.c: matrix products on the CPU through OpenBLAS's sgemm.
 *
 * F16 and BF16 right-hand sides are converted to F32 one panel at a time into a per-thread
 * buffer of CONV_FLOATS floats (allocated on a thread's first use, freed when it exits), so
 * a product never allocates and never holds a whole F32 copy of a large weight. The
 * performance work replaces this with kernels that read the narrow types directly.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "backend/cpu/cpu.h"

#include <cblas.h>
#include <pthread.h>
#include <stdlib.h>

#define CONV_FLOATS ((int64_t)1 << 18)    /* 1 MiB of F32 per thread */

static pthread_key_t conv_key;
static pthread_once_t conv_once = PTHREAD_ONCE_INIT;

static void conv_key_make(void)
{
    pthread_key_create(&conv_key, free);
}

static float *conv_buffer(void)
{
    pthread_once(&conv_once, conv_key_make);
    float *buf = pthread_getspecific(conv_key);
    if (!buf) {
        buf = malloc((size_t)CONV_FLOATS * sizeof *buf);
        pthread_setspecific(conv_key, buf);
    }
    return buf;
}

void cpu_gemm_naive(float *c, const float *a, const float *b, int ta, int tb,
                    int64_t M, int64_t N, int64_t K, float beta)
{
    for (int64_t m = 0; m < M; m++) {
        for (int64_t n = 0; n < N; n++) {
            float acc = 0.0f;
            for (int64_t k = 0; k < K; k++)
                acc += (ta ? a[k * M + m] : a[m * K + k]) * (tb ? b[n * K + k] : b[k * N + n]);
            c[m * N + n] = beta == 0.0f ? acc : beta * c[m * N + n] + acc;
        }
    }
}

static void sgemm(float *c, const float *a, const float *b, int ta, int tb, int64_t M,
                  int64_t N, int64_t K, int64_t ldb, int64_t ldc, float beta)
{
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                (blasint)M, (blasint)N, (blasint)K, 1.0f, a, (blasint)(ta ? M : K), b,
                (blasint)ldb, beta, c, (blasint)ldc);
}

void cpu_gemm(float *c, const float *a, const void *b, lv_dtype bt, int ta, int tb,
              int64_t M, int64_t N, int64_t K, float beta)
{
    if (M == 0 || N == 0)
        return;
    if (K == 0) {
        for (int64_t i = 0; i < M * N; i++)
            c[i] = beta == 0.0f ? 0.0f : beta * c[i];
        return;
    }
    if (bt == LV_F32) {
        sgemm(c, a, b, ta, tb, M, N, K, tb ? K : N, N, beta);
        return;
    }
    float *buf = conv_buffer();
    if (!buf) {
        /* Out of memory for 1 MiB: fall back to converting one element at a time. */
        for (int64_t m = 0; m < M; m++)
            for (int64_t n = 0; n < N; n++) {
                float acc = 0.0f;
                for (int64_t k = 0; k < K; k++) {
                    float bv;
                    lv_convert_row(&bv, LV_F32, (const char *)b +
                                   (tb ? n * K + k : k * N + n) * 2, bt, 1);
                    acc += (ta ? a[k * M + m] : a[m * K + k]) * bv;
                }
                c[m * N + n] = beta == 0.0f ? acc : beta * c[m * N + n] + acc;
            }
        return;
    }
    const uint16_t *bh = b;
    if (tb) {
        /* b is (N, K): convert blocks of whole rows, each block fills columns of c */
        int64_t nb = CONV_FLOATS / K > 0 ? CONV_FLOATS / K : 1;
        if (CONV_FLOATS < K)
            goto by_k;
        for (int64_t n0 = 0; n0 < N; n0 += nb) {
            int64_t nn = N - n0 < nb ? N - n0 : nb;
            lv_convert_row(buf, LV_F32, bh + n0 * K, bt, nn * K);
            sgemm(c + n0, a, buf, ta, 1, M, nn, K, K, N, beta);
        }
        return;
    }
by_k:
    /* b is (K, N) (or rows too long for the buffer): add up panels of k */
    if (CONV_FLOATS < N) {
        for (int64_t m = 0; m < M; m++)
            for (int64_t n = 0; n < N; n++) {
                float acc = 0.0f;
                for (int64_t k = 0; k < K; k++) {
                    const uint16_t *e = bh + (tb ? n * K + k : k * N + n);
                    float bv = bt == LV_F16 ? lv_f16_to_f32(*e) : lv_bf16_to_f32(*e);
                    acc += (ta ? a[k * M + m] : a[m * K + k]) * bv;
                }
                c[m * N + n] = beta == 0.0f ? acc : beta * c[m * N + n] + acc;
            }
        return;
    }
    int64_t kb = CONV_FLOATS / N;
    for (int64_t k0 = 0; k0 < K; k0 += kb) {
        int64_t kk = K - k0 < kb ? K - k0 : kb;
        if (tb) {
            /* gather the (kk, N) panel of b^T from the (N, K) rows */
            for (int64_t n = 0; n < N; n++)
                for (int64_t k = 0; k < kk; k++)
                    lv_convert_row(buf + k * N + n, LV_F32, bh + n * K + k0 + k, bt, 1);
        } else {
            lv_convert_row(buf, LV_F32, bh + k0 * N, bt, kk * N);
        }
        const float *ap = ta ? a + k0 * M : a + k0;
        cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, CblasNoTrans, (blasint)M,
                    (blasint)N, (blasint)kk, 1.0f, ap, (blasint)(ta ? M : K), buf, (blasint)N,
                    k0 == 0 ? beta : 1.0f, c, (blasint)N);
    }
}
