/*
 * bench-matmul.c: lv_matmul throughput per right-hand-side dtype, as a share of the F32
 * sgemm ceiling measured in the same run.
 *
 *   bench/bench-matmul [--threads N] [--k K] [--n N]
 *
 * For M = 1 (decode: one token against a weight) and M = 256 (prefill, training), it times
 * y = x W^T with W (N, K) in F32, F16, BF16, Q8_0, Q4_0, NF4 and Q8_0x8 (the layout lavinia
 * gives Q8_0 weights with rows of whole groups of 256 at load), and prints GFLOP/s and the
 * ratio to OpenBLAS's own multi-threaded F32 sgemm at M = 256 (the machine's compute ceiling
 * for this library). M = 256 times are the best of several repetitions. At M = 1 the product
 * is memory-bound, so it runs over enough copies of W to leave the caches (at least 256 MiB),
 * each sweep followed by one read of a buffer as large through membw.h, and the line also
 * gives the share of that memory bandwidth the weight reads reach. Ratios, not absolute
 * figures, are what to compare.
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
#include "util/membw.h"

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

/* W (N, K) of dtype dt from the F32 values (a frozen weight, as the model's are) */
static lv_tensor *weight_as(const lv_tensor *w32, lv_dtype dt)
{
    lv_tensor *w = lv_tensor_new(dt, 2, w32->shape);
    if (!w) {
        fprintf(stderr, "bench-matmul: %s\n", lv_errmsg());
        exit(1);
    }
    lv_convert_row(w->data, dt, w32->data, LV_F32, lv_tensor_nelem(w32));
    lv_tensor_set_frozen(w);
    return w;
}

/* M = 1 over n copies of w, each sweep followed by a pass over bw: seconds per product and
 * the bandwidth of the passes in bytes/s */
static double time_sweeps(lv_graph *g, lv_tensor *x, lv_tensor **w, int n, struct lv_membw *bw,
                          int threads, double *bw_out)
{
    double t_mm = 0.0, t_bw = 0.0;
    int sweeps = 4;
    for (int r = 0; r < sweeps; r++) {
        double t0 = now();
        for (int i = 0; i < n; i++) {
            if (!lv_matmul(g, x, w[i], LV_TRANS_B)) {
                fprintf(stderr, "bench-matmul: %s\n", lv_errmsg());
                exit(1);
            }
            lv_graph_reset(g);
        }
        t_mm += now() - t0;
        t_bw += lv_membw_pass(bw, threads);
    }
    *bw_out = (double)sweeps * (double)lv_membw_bytes(bw) / t_bw;
    return t_mm / ((double)sweeps * n);
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
    if (K <= 0 || N <= 0 || K % 64 != 0) {
        fprintf(stderr, "bench-matmul: --k must be a positive multiple of 64, --n positive\n");
        return 2;
    }
    lv_set_threads(threads);
    lv_graph *g = lv_graph_new(NULL);
    int64_t wshape[2] = { N, K };
    lv_tensor *w32 = lv_tensor_new(LV_F32, 2, wshape);
    for (int64_t i = 0; i < N * K; i++)
        ((float *)w32->data)[i] = (float)((i * 7919) % 1000) / 1000.0f - 0.5f;
    /* the ceiling: OpenBLAS with its own threads at M = 256 (lavinia keeps it at one thread
     * and parallelises over tiles itself, for results independent of the thread count) */
    double ceiling;
    {
        int64_t M = 256;
        float *xa = malloc((size_t)(M * K) * sizeof *xa);
        float *y = malloc((size_t)(M * N) * sizeof *y);
        for (int64_t i = 0; i < M * K; i++)
            xa[i] = (float)((i * 104729) % 1000) / 1000.0f - 0.5f;
        openblas_set_num_threads(lv_get_threads());
        ceiling = 2.0 * (double)M * (double)N * (double)K / time_sgemm(xa, w32->data, y, M, N, K, 5);
        lv_set_threads(threads);     /* back to lavinia's setting (OpenBLAS at one thread) */
        free(xa);
        free(y);
    }
    printf("# lv_matmul y = x W^T, W (%lld, %lld); %d thread(s); F32 sgemm ceiling (OpenBLAS, "
           "M = 256) %.1f GFLOP/s\n", (long long)N, (long long)K, lv_get_threads(), ceiling / 1e9);
    printf("%-5s %-7s %10s %8s %12s %10s\n", "M", "W", "GFLOP/s", "share", "weights GB/s",
           "bandwidth");
    static const lv_dtype dts[] = { LV_F32, LV_F16, LV_BF16, LV_Q8_0, LV_Q4_0, LV_NF4,
                                    LV_Q8_0X8 };
    static const int64_t Ms[] = { 1, 256 };
    for (size_t mi = 0; mi < sizeof Ms / sizeof Ms[0]; mi++) {
        int64_t M = Ms[mi], xshape[2] = { M, K };
        lv_tensor *x = lv_tensor_new(LV_F32, 2, xshape);
        for (int64_t i = 0; i < M * K; i++)
            ((float *)x->data)[i] = (float)((i * 104729) % 1000) / 1000.0f - 0.5f;
        double flops = 2.0 * (double)M * (double)N * (double)K;
        for (size_t di = 0; di < sizeof dts / sizeof dts[0]; di++) {
            lv_dtype dt = dts[di];
            if (dt == LV_Q8_0X8 && K % LV_Q8_0X8_GROUP != 0)
                continue;
            lv_tensor *w = weight_as(w32, dt);
            size_t wb = lv_tensor_nbytes(w);
            if (M > 1) {
                double gf = flops / time_matmul(g, x, w, 5);
                printf("%-5lld %-7s %10.2f %7.0f%% %12s %10s\n", (long long)M,
                       lv_dtype_name(dt), gf / 1e9, 100.0 * gf / ceiling, "", "");
                lv_tensor_free(w);
                continue;
            }
            int n = (int)(((size_t)256 << 20) / wb + 1);
            lv_tensor **copies = malloc((size_t)n * sizeof *copies);
            copies[0] = w;
            for (int i = 1; i < n; i++) {
                copies[i] = lv_tensor_new(dt, 2, wshape);
                memcpy(copies[i]->data, w->data, wb);
                lv_tensor_set_frozen(copies[i]);
            }
            struct lv_membw bw;
            if (lv_membw_init(&bw, (size_t)n * wb) != LV_OK) {
                fprintf(stderr, "bench-matmul: %s\n", lv_errmsg());
                return 1;
            }
            double bps, t = time_sweeps(g, x, copies, n, &bw, lv_get_threads(), &bps);
            printf("%-5lld %-7s %10.2f %7.1f%% %12.2f %9.1f%%\n", (long long)M,
                   lv_dtype_name(dt), flops / t / 1e9, 100.0 * flops / t / ceiling,
                   (double)wb / t / 1e9, 100.0 * (double)wb / t / bps);
            lv_membw_free(&bw);
            for (int i = 0; i < n; i++)
                lv_tensor_free(copies[i]);
            free(copies);
        }
        lv_tensor_free(x);
    }
    lv_tensor_free(w32);
    lv_graph_free(g);
    return 0;
}
