/*
 * bench-matmul.c: lv_matmul throughput per right-hand-side dtype, as a share of the F32
 * sgemm ceiling measured in the same run.
 *
 *   bench/bench-matmul [--threads N] [--k K] [--n N]
 *
 * For M = 1 (decode: one token against a weight) and M = 256 (prefill, training), it times
 * y = x W^T with W (N, K) in F32, F16 and BF16, and prints GFLOP/s and the ratio to a plain
 * cblas_sgemm of the same shape in F32 (the machine's ceiling for this library). Times are
 * the best of several repetitions; ratios, not absolute figures, are what to compare.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lavinia/ops.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* best time of reps runs of y = x W^T through lv_matmul */
static double time_matmul(lv_graph *g, lv_tensor *x, lv_tensor *w, int reps)
{
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        lv_tensor *y = lv_matmul(g, x, w, LV_TRANS_B);
        double t = now() - t0;
        if (!y) {
            fprintf(stderr, "bench-matmul: %s\n", lv_errmsg());
            exit(1);
        }
        lv_graph_reset(g);
        if (t < best)
            best = t;
    }
    return best;
}

static double time_sgemm(const float *x, const float *w, float *y, int64_t M, int64_t N,
                         int64_t K, int reps)
{
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)M, (blasint)N, (blasint)K,
                    1.0f, x, (blasint)K, w, (blasint)K, 0.0f, y, (blasint)N);
        double t = now() - t0;
        if (t < best)
            best = t;
    }
    return best;
}

int main(int argc, char **argv)
{
    int threads = 0;
    int64_t K = 2048, N = 2048;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--threads") == 0)
            threads = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--k") == 0)
            K = atoll(argv[i + 1]);
        else if (strcmp(argv[i], "--n") == 0)
            N = atoll(argv[i + 1]);
    }
    lv_set_threads(threads);
    printf("# lv_matmul y = x W^T, W (%lld, %lld); %d thread(s)\n", (long long)N, (long long)K,
           lv_get_threads());
    printf("%-6s %-5s %12s %12s %10s\n", "M", "W", "GFLOP/s", "sgemm GF/s", "share");
    lv_graph *g = lv_graph_new(NULL);
    int64_t wshape[2] = { N, K };
    lv_tensor *w32 = lv_tensor_new(LV_F32, 2, wshape);
    for (int64_t i = 0; i < N * K; i++)
        ((float *)w32->data)[i] = (float)((i * 7919) % 1000) / 1000.0f - 0.5f;
    static const int64_t Ms[] = { 1, 256 };
    for (size_t mi = 0; mi < sizeof Ms / sizeof Ms[0]; mi++) {
        int64_t M = Ms[mi], xshape[2] = { M, K };
        lv_tensor *x = lv_tensor_new(LV_F32, 2, xshape);
        for (int64_t i = 0; i < M * K; i++)
            ((float *)x->data)[i] = (float)((i * 104729) % 1000) / 1000.0f - 0.5f;
        float *y = malloc((size_t)(M * N) * sizeof *y);
        int reps = M == 1 ? 50 : 5;
        double flops = 2.0 * (double)M * (double)N * (double)K;
        /* the ceiling: OpenBLAS with its own threads (lavinia keeps it at one thread and
         * parallelises over tiles itself, for results independent of the thread count) */
        openblas_set_num_threads(lv_get_threads());
        double ceiling = flops / time_sgemm(x->data, w32->data, y, M, N, K, reps) / 1e9;
        lv_set_threads(threads);     /* back to lavinia's setting (OpenBLAS at one thread) */
        for (lv_dtype dt = LV_F32; dt <= LV_BF16; dt++) {
            lv_tensor *w = w32;
            if (dt != LV_F32) {
                w = lv_tensor_new(dt, 2, wshape);
                lv_convert_row(w->data, dt, w32->data, LV_F32, N * K);
            }
            double gf = flops / time_matmul(g, x, w, reps) / 1e9;
            printf("%-6lld %-5s %12.2f %12.2f %9.0f%%\n", (long long)M, lv_dtype_name(dt), gf,
                   ceiling, 100.0 * gf / ceiling);
            if (w != w32)
                lv_tensor_free(w);
        }
        free(y);
        lv_tensor_free(x);
    }
    lv_tensor_free(w32);
    lv_graph_free(g);
    return 0;
}
