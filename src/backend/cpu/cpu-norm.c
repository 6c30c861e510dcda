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
 * Threads: rows are split across threads (CPU_FOR, cpu.h; work estimate N * C) and each row is
 * done by one thread. The weight and bias gradients are sums over rows, so they get their own
 * loop split over column blocks, each column summed over rows in order: results do not depend
 * on the thread count. Each loop's body is a static inline function of its index.
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

/* One row of y; returns its rstd. */
static inline float rmsnorm_row(float *yr, const float *xr, const float *w, int64_t C,
                                float eps)
{
    /* four running sums, so the adds do not wait on each other (a decode step's rows of 768
     * were latency-bound on one chain) */
    double s4[4] = { 0.0, 0.0, 0.0, 0.0 };
    int64_t c = 0;
    for (; c + 4 <= C; c += 4)
        for (int k = 0; k < 4; k++)
            s4[k] += (double)xr[c + k] * xr[c + k];
    for (; c < C; c++)
        s4[0] += (double)xr[c] * xr[c];
    double ss = (s4[0] + s4[1]) + (s4[2] + s4[3]);
    float r = (float)(1.0 / sqrt(ss / (double)C + (double)eps));
    if (w) {
        for (int64_t c = 0; c < C; c++)
            yr[c] = xr[c] * r * w[c];
    } else {
        for (int64_t c = 0; c < C; c++)
            yr[c] = xr[c] * r;
    }
    return r;
}

void cpu_rmsnorm_forward(float *y, float *rstd, const float *x, const float *w,
                         int64_t N, int64_t C, float eps)
{
    CPU_FOR(N * C, n, N, {
        rstd[n] = rmsnorm_row(y + n * C, x + n * C, w, C, eps);
    });
}

/*
 * y_i = x_i r w_i with r = (mean(x^2) + eps)^(-1/2), dr/dx_j = -r^3 x_j / C, so
 *     dx_i = r w_i dy_i - (r^3 / C) x_i sum_j(dy_j w_j x_j)
 *     dw_i = sum over rows of dy_i x_i r
 */
static inline void rmsnorm_backward_row(float *dxr, const float *dyr, const float *xr,
                                        const float *w, float r, int64_t C)
{
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

/* dw over columns [blk * COL_BLOCK, +COL_BLOCK), each summed over the rows in order. */
static inline void rmsnorm_dw_block(float *dw, const float *dy, const float *x,
                                    const float *rstd, int64_t N, int64_t C, int64_t blk)
{
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

void cpu_rmsnorm_backward(float *dx, float *dw, const float *dy, const float *x,
                          const float *w, const float *rstd, int64_t N, int64_t C)
{
    if (dx) {
        CPU_FOR(N * C, n, N, {
            rmsnorm_backward_row(dx + n * C, dy + n * C, x + n * C, w, rstd[n], C);
        });
    }
    if (dw) {
        int64_t nb = (C + COL_BLOCK - 1) / COL_BLOCK;
        CPU_FOR(N * C, blk, nb, {
            rmsnorm_dw_block(dw, dy, x, rstd, N, C, blk);
        });
    }
}

/* ---- LayerNorm ---------------------------------------------------------------------- */

/* One row of y; stores its mean and rstd. */
static inline void layernorm_row(float *yr, float *mean, float *rstd, const float *xr,
                                 const float *w, const float *b, int64_t C, float eps)
{
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
    *mean = (float)m;
    *rstd = (float)r;
    for (int64_t c = 0; c < C; c++) {
        float xh = (float)(((double)xr[c] - m) * r);
        float o = w ? xh * w[c] : xh;
        yr[c] = b ? o + b[c] : o;
    }
}

void cpu_layernorm_forward(float *y, float *mean, float *rstd, const float *x, const float *w,
                           const float *b, int64_t N, int64_t C, float eps)
{
    CPU_FOR(N * C, n, N, {
        layernorm_row(y + n * C, &mean[n], &rstd[n], x + n * C, w, b, C, eps);
    });
}

/*
 * With xhat = (x - mean) rstd and g = dy * w (llm.c layernorm_backward):
 *     dx = rstd (g - mean(g) - xhat mean(g xhat))
 *     dw = sum over rows of dy xhat,  db = sum over rows of dy
 */
static inline void layernorm_backward_row(float *dxr, const float *dyr, const float *xr,
                                          const float *w, float m, float r, int64_t C)
{
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

/* dw and db over columns [blk * COL_BLOCK, +COL_BLOCK), each summed over the rows in order. */
static inline void layernorm_dwdb_block(float *dw, float *db, const float *dy, const float *x,
                                        const float *mean, const float *rstd, int64_t N,
                                        int64_t C, int64_t blk)
{
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

void cpu_layernorm_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                            const float *w, const float *mean, const float *rstd,
                            int64_t N, int64_t C)
{
    if (dx) {
        CPU_FOR(N * C, n, N, {
            layernorm_backward_row(dx + n * C, dy + n * C, x + n * C, w, mean[n], rstd[n], C);
        });
    }
    if (dw || db) {
        int64_t nb = (C + COL_BLOCK - 1) / COL_BLOCK;
        CPU_FOR(N * C, blk, nb, {
            layernorm_dwdb_block(dw, db, dy, x, mean, rstd, N, C, blk);
        });
    }
}

/* ---- softmax ------------------------------------------------------------------------ */

static inline void softmax_row(float *yr, const float *xr, int64_t C)
{
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

void cpu_softmax_forward(float *y, const float *x, int64_t N, int64_t C)
{
    CPU_FOR(N * C, n, N, {
        softmax_row(y + n * C, x + n * C, C);
    });
}

static inline void softmax_backward_row(float *dxr, const float *dyr, const float *yr,
                                        int64_t C)
{
    double dot = 0.0;
    for (int64_t c = 0; c < C; c++)
        dot += (double)dyr[c] * yr[c];
    float d = (float)dot;
    for (int64_t c = 0; c < C; c++)
        dxr[c] += yr[c] * (dyr[c] - d);
}

void cpu_softmax_backward(float *dx, const float *dy, const float *y, int64_t N, int64_t C)
{
    if (!dx)
        return;
    CPU_FOR(N * C, n, N, {
        softmax_backward_row(dx + n * C, dy + n * C, y + n * C, C);
    });
}
