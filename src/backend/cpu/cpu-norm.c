/*
 * cpu-norm.c: CPU kernels for RMSNorm, LayerNorm and softmax over the last dimension.
 *
 * Each op has its forward and backward side by side, in the argument order of cpu.h (outputs,
 * inputs, sizes; backward: gradient destinations, dy, saved values and inputs, sizes). The
 * forward keeps the per-row statistics its backward needs (rstd for RMSNorm, mean and rstd for
 * LayerNorm); softmax's backward needs only y, which is the op's output.
 *
 * Accumulation rule: every gradient destination is added into (+=), never assigned, and a
 * NULL destination is skipped, so fan-out and gradient accumulation need no extra pass.
 *
 * Numerics: row statistics (mean of squares, mean, variance, softmax denominators and the
 * dot products of the backward) are summed in double, because a row of C floats summed in
 * float loses digits as C grows; element-wise work stays in float. No fast-math.
 *
 * Threads: rows are split across OpenMP threads and each row is done by one thread. The
 * weight and bias gradients are sums over rows, so they get their own loop split over
 * columns, each column summed over rows in order: results do not depend on the thread count.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "backend/cpu/cpu.h"

#include <math.h>
#include <stddef.h>

/* Columns per task in the dw/db loops: wide enough to stream rows, narrow enough to share. */
#define COL_BLOCK 64

/* ---- RMSNorm ------------------------------------------------------------------------ */

void cpu_rmsnorm_forward(float *y, float *rstd, const float *x, const float *w,
                         int64_t N, int64_t C, float eps)
{
    #pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++) {
        const float *xr = x + n * C;
        float *yr = y + n * C;
        double ss = 0.0;
        for (int64_t c = 0; c < C; c++)
            ss += (double)xr[c] * xr[c];
        float r = (float)(1.0 / sqrt(ss / (double)C + (double)eps));
        rstd[n] = r;
        if (w) {
            for (int64_t c = 0; c < C; c++)
                yr[c] = xr[c] * r * w[c];
        } else {
            for (int64_t c = 0; c < C; c++)
                yr[c] = xr[c] * r;
        }
    }
}

/*
 * y_i = x_i r w_i with r = (mean(x^2) + eps)^(-1/2), dr/dx_j = -r^3 x_j / C, so
 *     dx_i = r w_i dy_i - (r^3 / C) x_i sum_j(dy_j w_j x_j)
 *     dw_i = sum over rows of dy_i x_i r
 */
void cpu_rmsnorm_backward(float *dx, float *dw, const float *dy, const float *x,
                          const float *w, const float *rstd, int64_t N, int64_t C)
{
    if (dx) {
        #pragma omp parallel for schedule(static)
        for (int64_t n = 0; n < N; n++) {
            const float *xr = x + n * C, *dyr = dy + n * C;
            float *dxr = dx + n * C;
            float r = rstd[n];
            double dot = 0.0;
            for (int64_t c = 0; c < C; c++)
                dot += (double)dyr[c] * (w ? w[c] : 1.0f) * xr[c];
            float k = (float)((double)r * r * r * dot / (double)C);
            if (w) {
                for (int64_t c = 0; c < C; c++)
                    dxr[c] += r * w[c] * dyr[c] - k * xr[c];
            } else {
                for (int64_t c = 0; c < C; c++)
                    dxr[c] += r * dyr[c] - k * xr[c];
            }
        }
    }
    if (dw) {
        int64_t nb = (C + COL_BLOCK - 1) / COL_BLOCK;
        #pragma omp parallel for schedule(static)
        for (int64_t blk = 0; blk < nb; blk++) {
            int64_t c0 = blk * COL_BLOCK;
            int64_t c1 = c0 + COL_BLOCK < C ? c0 + COL_BLOCK : C;
            double acc[COL_BLOCK] = { 0 };
            for (int64_t n = 0; n < N; n++) {
                const float *xr = x + n * C, *dyr = dy + n * C;
                float r = rstd[n];
                for (int64_t c = c0; c < c1; c++)
                    acc[c - c0] += (double)dyr[c] * xr[c] * r;
            }
            for (int64_t c = c0; c < c1; c++)
                dw[c] += (float)acc[c - c0];
        }
    }
}

/* ---- LayerNorm ---------------------------------------------------------------------- */

void cpu_layernorm_forward(float *y, float *mean, float *rstd, const float *x, const float *w,
                           const float *b, int64_t N, int64_t C, float eps)
{
    #pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++) {
        const float *xr = x + n * C;
        float *yr = y + n * C;
        double s = 0.0;
        for (int64_t c = 0; c < C; c++)
            s += xr[c];
        double m = s / (double)C;
        /* Two passes: the variance of x - mean, not mean(x^2) - mean^2, which cancels
         * catastrophically for rows with a large offset. */
        double v = 0.0;
        for (int64_t c = 0; c < C; c++) {
            double d = (double)xr[c] - m;
            v += d * d;
        }
        double r = 1.0 / sqrt(v / (double)C + (double)eps);
        mean[n] = (float)m;
        rstd[n] = (float)r;
        for (int64_t c = 0; c < C; c++) {
            float xh = (float)(((double)xr[c] - m) * r);
            float o = w ? xh * w[c] : xh;
            yr[c] = b ? o + b[c] : o;
        }
    }
}

/*
 * With xhat = (x - mean) rstd and g = dy * w (llm.c layernorm_backward):
 *     dx = rstd (g - mean(g) - xhat mean(g xhat))
 *     dw = sum over rows of dy xhat,  db = sum over rows of dy
 */
void cpu_layernorm_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                            const float *w, const float *mean, const float *rstd,
                            int64_t N, int64_t C)
{
    if (dx) {
        #pragma omp parallel for schedule(static)
        for (int64_t n = 0; n < N; n++) {
            const float *xr = x + n * C, *dyr = dy + n * C;
            float *dxr = dx + n * C;
            float m = mean[n], r = rstd[n];
            double sg = 0.0, sgx = 0.0;
            for (int64_t c = 0; c < C; c++) {
                float xh = (xr[c] - m) * r;
                float gc = w ? dyr[c] * w[c] : dyr[c];
                sg += gc;
                sgx += (double)gc * xh;
            }
            float mg = (float)(sg / (double)C), mgx = (float)(sgx / (double)C);
            for (int64_t c = 0; c < C; c++) {
                float xh = (xr[c] - m) * r;
                float gc = w ? dyr[c] * w[c] : dyr[c];
                dxr[c] += r * (gc - mg - xh * mgx);
            }
        }
    }
    if (dw || db) {
        int64_t nb = (C + COL_BLOCK - 1) / COL_BLOCK;
        #pragma omp parallel for schedule(static)
        for (int64_t blk = 0; blk < nb; blk++) {
            int64_t c0 = blk * COL_BLOCK;
            int64_t c1 = c0 + COL_BLOCK < C ? c0 + COL_BLOCK : C;
            double aw[COL_BLOCK] = { 0 }, ab[COL_BLOCK] = { 0 };
            for (int64_t n = 0; n < N; n++) {
                const float *xr = x + n * C, *dyr = dy + n * C;
                float m = mean[n], r = rstd[n];
                for (int64_t c = c0; c < c1; c++) {
                    aw[c - c0] += (double)dyr[c] * ((xr[c] - m) * r);
                    ab[c - c0] += dyr[c];
                }
            }
            for (int64_t c = c0; c < c1; c++) {
                if (dw)
                    dw[c] += (float)aw[c - c0];
                if (db)
                    db[c] += (float)ab[c - c0];
            }
        }
    }
}

/* ---- softmax ------------------------------------------------------------------------ */

void cpu_softmax_forward(float *y, const float *x, int64_t N, int64_t C)
{
    #pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++) {
        const float *xr = x + n * C;
        float *yr = y + n * C;
        /* Subtract the row max so exp never overflows; -inf entries give 0. */
        float mx = -INFINITY;
        for (int64_t c = 0; c < C; c++)
            if (xr[c] > mx)
                mx = xr[c];
        double s = 0.0;
        for (int64_t c = 0; c < C; c++) {
            float e = expf(xr[c] - mx);
            yr[c] = e;
            s += e;
        }
        float inv = (float)(1.0 / s);
        for (int64_t c = 0; c < C; c++)
            yr[c] *= inv;
    }
}

void cpu_softmax_backward(float *dx, const float *dy, const float *y, int64_t N, int64_t C)
{
    if (!dx)
        return;
    #pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++) {
        const float *yr = y + n * C, *dyr = dy + n * C;
        float *dxr = dx + n * C;
        double dot = 0.0;
        for (int64_t c = 0; c < C; c++)
            dot += (double)dyr[c] * yr[c];
        float d = (float)dot;
        for (int64_t c = 0; c < C; c++)
            dxr[c] += yr[c] * (dyr[c] - d);
    }
}
