/*
 * test-simd.c: every SIMD path this CPU runs against float64 and against the generic path.
 *
 * Dot products of F32, F16 and BF16 weights at lengths around every unroll boundary, and
 * matrix-vector products (the decode path of lv_linear) for 1 to 4 rows, each path within
 * 1e-6 of the float64 result relative to sum |x_i w_i| (a summation-order bound), and a
 * forward and input-gradient check of lv_linear at M = 1 against the generic kernels.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu.h"
#include "lavinia/ops.h"
#include "testutil.h"

static const char *const dtype_names[] = { "F32", "F16", "BF16" };

/* w in dtype dt (as stored) and its exact float value */
static void make_weights(lv_dtype dt, int64_t n, void *w, double *wv)
{
    for (int64_t i = 0; i < n; i++) {
        float f = (float)tu_randn();
        if (dt == LV_F32) {
            ((float *)w)[i] = f;
            wv[i] = f;
        } else if (dt == LV_F16) {
            ((uint16_t *)w)[i] = lv_f32_to_f16(f);
            wv[i] = lv_f16_to_f32(((uint16_t *)w)[i]);
        } else {
            ((uint16_t *)w)[i] = lv_f32_to_bf16(f);
            wv[i] = lv_bf16_to_f32(((uint16_t *)w)[i]);
        }
    }
}

static void dots(const struct cpu_simd *s)
{
    static const int64_t lengths[] = { 1, 3, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127,
                                       128, 129, 1000, 4096, 4099 };
    int64_t kmax = 4099;
    float *x = malloc((size_t)kmax * sizeof *x);
    void *w = malloc((size_t)kmax * 4);
    double *wv = malloc((size_t)kmax * sizeof *wv);
    for (int dt = LV_F32; dt <= LV_BF16; dt++) {
        double worst = 0.0;
        for (size_t li = 0; li < sizeof lengths / sizeof lengths[0]; li++) {
            int64_t k = lengths[li];
            for (int64_t i = 0; i < k; i++)
                x[i] = (float)tu_randn();
            make_weights((lv_dtype)dt, k, w, wv);
            double ref = 0.0, mag = 0.0;
            for (int64_t i = 0; i < k; i++) {
                ref += (double)x[i] * wv[i];
                mag += fabs((double)x[i] * wv[i]);
            }
            double got = s->dot[dt](x, w, k);
            worst = fmax(worst, fabs(got - ref) / mag);
        }
        tu_assert(worst <= 1e-6, "%s: dot of %s weights, %zu lengths 1..4099: worst error "
                  "%.2e of sum |x w|", s->name, dtype_names[dt],
                  sizeof lengths / sizeof lengths[0], worst);
    }
    free(x);
    free(w);
    free(wv);
}

static void gemv(const struct cpu_simd *s)
{
    int64_t N = 67, K = 301;
    float *a = malloc(4 * (size_t)K * sizeof *a), *c = malloc(4 * (size_t)N * sizeof *c);
    void *b = malloc((size_t)(N * K) * 4);
    double *bv = malloc((size_t)(N * K) * sizeof *bv);
    for (int dt = LV_F32; dt <= LV_BF16; dt++) {
        make_weights((lv_dtype)dt, N * K, b, bv);
        double worst = 0.0;
        for (int64_t M = 1; M <= 4; M++) {
            for (int64_t i = 0; i < M * K; i++)
                a[i] = (float)tu_randn();
            for (int64_t i = 0; i < M * N; i++)
                c[i] = 1.0f;
            cpu_gemv(c, a, b, (lv_dtype)dt, M, N, K, 0.5f, s);
            for (int64_t m = 0; m < M; m++)
                for (int64_t n = 0; n < N; n++) {
                    double ref = 0.5, mag = 0.5;
                    for (int64_t k = 0; k < K; k++) {
                        ref += (double)a[m * K + k] * bv[n * K + k];
                        mag += fabs((double)a[m * K + k] * bv[n * K + k]);
                    }
                    worst = fmax(worst, fabs(c[m * N + n] - ref) / mag);
                }
        }
        tu_assert(worst <= 1e-6, "%s: matrix-vector products of %s weights, 1 to 4 rows, beta "
                  "0.5: worst error %.2e", s->name, dtype_names[dt], worst);
    }
    free(a);
    free(c);
    free(b);
    free(bv);
}

/* lv_linear at M = 1 (the decode path) against the same product at M = 5 (the tiled sgemm),
 * forward and input gradient */
static void linear_paths(void)
{
    for (int dt = LV_F32; dt <= LV_BF16; dt++) {
        lv_graph *g = lv_graph_new(NULL);
        lv_graph_set_recording(g, true);
        int64_t N = 96, K = 200;
        lv_tensor *w = tu_rand_tensor((lv_dtype)dt, 2, (int64_t[]){ N, K }, 0.1);
        lv_tensor *x5 = tu_rand_tensor(LV_F32, 2, (int64_t[]){ 5, K }, 1.0);
        lv_tensor_set_param(x5);
        lv_tensor *x1 = lv_tensor_wrap(x5->data, LV_F32, 2, (int64_t[]){ 1, K });
        lv_tensor_set_param(x1);
        lv_tensor *y5 = lv_linear(g, x5, w, NULL), *y1 = lv_linear(g, x1, w, NULL);
        float *a = malloc((size_t)N * 4), *b = malloc((size_t)(5 * N) * 4);
        lv_tensor_to_f32(a, y1);
        lv_tensor_to_f32(b, y5);
        double e = 0.0, m = 0.0;
        for (int64_t n = 0; n < N; n++) {
            e = fmax(e, fabs((double)a[n] - b[n]));
            m = fmax(m, fabs((double)b[n]));
        }
        tu_assert(e <= 1e-5 * m, "lv_linear, %s weights: row 0 at M = 1 (matrix-vector) and "
                  "at M = 5 (sgemm) agree: %.2e of %.2e", dtype_names[dt], e, m);
        lv_tensor *l1 = lv_sum_all(g, y1);
        tu_assert(l1 && lv_backward(g, l1) == LV_OK && x1->grad, "backward through M = 1");
        if (x1->grad) {
            /* d sum(x W^T) / dx = column sums of W */
            float *gx = malloc((size_t)K * 4), *wf = malloc((size_t)(N * K) * 4);
            lv_tensor_to_f32(gx, x1->grad);
            lv_tensor_to_f32(wf, w);
            double ge = 0.0;
            for (int64_t k = 0; k < K; k++) {
                double ref = 0.0;
                for (int64_t n = 0; n < N; n++)
                    ref += wf[n * K + k];
                ge = fmax(ge, fabs(gx[k] - ref));
            }
            tu_assert(ge <= 1e-5, "input gradient at M = 1, %s weights: error %.2e",
                      dtype_names[dt], ge);
            free(gx);
            free(wf);
        }
        free(a);
        free(b);
        lv_graph_free(g);
        lv_tensor_free(w);
        lv_tensor_free(x5);
        lv_tensor_free(x1);
    }
}

int main(int argc, char **argv)
{
    tu_init(argc, argv, "simd");
    printf("# path in use: %s\n", cpu_simd()->name);
    int ran = 0;
    for (int l = 0; l < CPU_SIMD_COUNT; l++) {
        const struct cpu_simd *s = cpu_simd_get((enum cpu_simd_level)l);
        if (!s) {
            printf("# %s: not run (this CPU lacks it)\n", l == CPU_SIMD_AVX2 ? "avx2" : "avx512");
            continue;
        }
        ran++;
        dots(s);
        gemv(s);
    }
    tu_assert(ran >= 1, "%d SIMD path(s) tested", ran);
    linear_paths();
    return tu_finish();
}
