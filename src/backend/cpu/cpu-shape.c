/*
 * cpu-shape.c: CPU kernels for broadcasting arithmetic, strided copies, views, sums,
 * dropout, swiglu, embedding, concatenation and im2col.
 *
 * Gradients accumulate (+=). Where several elements of dy add into one element of dx
 * (broadcast operands, sums, embedding rows), one thread owns each dx element and adds in
 * index order, so the result is the same at any thread count.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "backend/cpu/cpu.h"

#include <math.h>
#include <string.h>

/* ----------------------------------------------------------------------------------------
 * broadcasting binary ops over a 4-D padded shape
 */

/* y[j] = f(a[j], b[j * bs]) for a row of n: one loop per op and stride 1 or 0 (a residual
 * add, a bias), which the compiler vectorises, else the general loop */
#define BINARY_ROW(OP)                                                                       \
    do {                                                                                     \
        if (bs == 1)                                                                         \
            for (int64_t j = 0; j < n; j++)                                                  \
                y[j] = a[j] OP b[j];                                                         \
        else if (bs == 0)                                                                    \
            for (int64_t j = 0; j < n; j++)                                                  \
                y[j] = a[j] OP b[0];                                                         \
        else                                                                                 \
            for (int64_t j = 0; j < n; j++)                                                  \
                y[j] = a[j] OP b[j * bs];                                                    \
    } while (0)

static inline void binary_row(float *y, const float *a, const float *b, int64_t bs,
                              int64_t n, enum cpu_binary f)
{
    switch (f) {
    case CPU_ADD: BINARY_ROW(+); break;
    case CPU_SUB: BINARY_ROW(-); break;
    case CPU_MUL: BINARY_ROW(*); break;
    case CPU_DIV: BINARY_ROW(/); break;
    }
}

static inline int64_t bindex(int64_t i, const int64_t *shape4, const int64_t *bstride)
{
    int64_t off = 0;
    for (int d = 3; d >= 0; d--) {
        off += (i % shape4[d]) * bstride[d];
        i /= shape4[d];
    }
    return off;
}

void cpu_binary_forward(float *y, const float *a, const float *b, const int64_t *shape4,
                        const int64_t *bstride, enum cpu_binary f)
{
    int64_t n = shape4[0] * shape4[1] * shape4[2] * shape4[3];
    int64_t inner = shape4[3];
    /* rows of the last dim: b is either contiguous along it or a scalar there */
    CPU_FOR(n, r, n / (inner ? inner : 1), {
        int64_t boff = bindex(r * inner, shape4, bstride);
        binary_row(y + r * inner, a + r * inner, b + boff, bstride[3], inner, f);
    });
}

void cpu_binary_backward(float *da, float *db, const float *dy, const float *a, const float *b,
                         const int64_t *shape4, const int64_t *bstride, enum cpu_binary f)
{
    int64_t n = shape4[0] * shape4[1] * shape4[2] * shape4[3];
    if (da) {
        CPU_FOR(n, i, n, {
            float bv = b[bindex(i, shape4, bstride)];
            float g = dy[i];
            da[i] += f == CPU_MUL ? g * bv : f == CPU_DIV ? g / bv : g;
        });
    }
    if (db) {
        bool same = true;
        for (int d = 0; d < 4; d++)
            same &= shape4[d] == 1 || bstride[d] != 0;
        if (same) {
            CPU_FOR(n, i, n, {
                float bv = b[i], g = dy[i];
                db[i] += f == CPU_ADD   ? g
                         : f == CPU_SUB ? -g
                         : f == CPU_MUL ? g * a[i]
                                        : -g * a[i] / (bv * bv);
            });
        } else {
            /* broadcast: many elements of dy land on one of db; add them in index order */
            for (int64_t i = 0; i < n; i++) {
                int64_t j = bindex(i, shape4, bstride);
                float bv = b[j], g = dy[i];
                db[j] += f == CPU_ADD   ? g
                         : f == CPU_SUB ? -g
                         : f == CPU_MUL ? g * a[i]
                                        : -g * a[i] / (bv * bv);
            }
        }
    }
}

/* ----------------------------------------------------------------------------------------
 * strided copies and views
 */

void cpu_copy_strided(void *dst, lv_dtype dt, const lv_tensor *src)
{
    int64_t sh[4], st[4];
    int pad = LV_MAX_DIMS - src->ndim;
    for (int d = 0; d < 4; d++) {
        sh[d] = d < pad ? 1 : src->shape[d - pad];
        st[d] = d < pad ? 0 : src->stride[d - pad];
    }
    size_t es = lv_dtype_size(src->dtype), ds = lv_dtype_size(dt);
    const char *s = src->data;
    char *o = dst;
    int64_t rows = sh[0] * sh[1] * sh[2];
    if (src->dtype == LV_NF4) {                 /* laid out over the whole tensor */
        lv_convert_row(o, dt, s, LV_NF4, rows * sh[3]);
        return;
    }
    if (lv_dtype_is_block(src->dtype)) {        /* contiguous: whole rows of blocks */
        size_t rb = lv_dtype_bytes(src->dtype, sh[3]);
        CPU_FOR(rows * sh[3], r, rows, {
            lv_convert_row(o + r * sh[3] * (int64_t)ds, dt, s + (size_t)r * rb, src->dtype,
                           sh[3]);
        });
        return;
    }
    CPU_FOR(rows * sh[3], r, rows, {
        int64_t i0 = r / (sh[1] * sh[2]), i1 = (r / sh[2]) % sh[1], i2 = r % sh[2];
        const char *row = s + (i0 * st[0] + i1 * st[1] + i2 * st[2]) * (int64_t)es;
        char *out = o + r * sh[3] * (int64_t)ds;
        if (st[3] == 1) {
            lv_convert_row(out, dt, row, src->dtype, sh[3]);
        } else {
            for (int64_t j = 0; j < sh[3]; j++)
                lv_convert_row(out + j * (int64_t)ds, dt, row + j * st[3] * (int64_t)es,
                               src->dtype, 1);
        }
    });
}

void cpu_view_backward(float *dx, const float *dy, const int64_t *shape4, int64_t off,
                       const int64_t *gstride4)
{
    /* A view never maps two of its elements onto one input element, so rows are
     * independent. */
    int64_t rows = shape4[0] * shape4[1] * shape4[2];
    CPU_FOR(rows * shape4[3], r, rows, {
        int64_t i0 = r / (shape4[1] * shape4[2]), i1 = (r / shape4[2]) % shape4[1];
        int64_t i2 = r % shape4[2];
        float *d = dx + off + i0 * gstride4[0] + i1 * gstride4[1] + i2 * gstride4[2];
        const float *g = dy + r * shape4[3];
        for (int64_t j = 0; j < shape4[3]; j++)
            d[j * gstride4[3]] += g[j];
    });
}

/* ----------------------------------------------------------------------------------------
 * sums and norms over one dim of (outer, n, inner)
 */

void cpu_sum_forward(float *y, const float *x, int64_t outer, int64_t n, int64_t inner)
{
    CPU_FOR(outer * inner * n, o, outer * inner, {
        int64_t a = o / inner, c = o % inner;
        double acc = 0.0;
        for (int64_t i = 0; i < n; i++)
            acc += x[(a * n + i) * inner + c];
        y[o] = (float)acc;
    });
}

void cpu_sum_backward(float *dx, const float *dy, int64_t outer, int64_t n, int64_t inner)
{
    CPU_FOR(outer * inner * n, o, outer * inner, {
        int64_t a = o / inner, c = o % inner;
        for (int64_t i = 0; i < n; i++)
            dx[(a * n + i) * inner + c] += dy[o];
    });
}

void cpu_l2norm_forward(float *y, const float *x, int64_t outer, int64_t n, int64_t inner)
{
    CPU_FOR(outer * inner * n, o, outer * inner, {
        int64_t a = o / inner, c = o % inner;
        double acc = 0.0;
        for (int64_t i = 0; i < n; i++) {
            double v = x[(a * n + i) * inner + c];
            acc += v * v;
        }
        y[o] = (float)sqrt(acc);
    });
}

void cpu_l2norm_backward(float *dx, const float *dy, const float *x, const float *y,
                         int64_t outer, int64_t n, int64_t inner)
{
    CPU_FOR(outer * inner * n, o, outer * inner, {
        int64_t a = o / inner, c = o % inner;
        if (y[o] == 0.0f)
            continue;           /* the norm is not differentiable at 0: use the subgradient 0 */
        float k = dy[o] / y[o];
        for (int64_t i = 0; i < n; i++)
            dx[(a * n + i) * inner + c] += k * x[(a * n + i) * inner + c];
    });
}

/* ----------------------------------------------------------------------------------------
 * dropout and swiglu
 */

/* splitmix64 of (seed, i): a counter-based generator, so any thread can draw element i. */
static inline bool dropout_keep(uint64_t seed, int64_t i, float p)
{
    uint64_t z = seed + 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (float)(z >> 40) * (1.0f / 16777216.0f) >= p;
}

void cpu_dropout_forward(float *y, const float *x, int64_t n, float p, uint64_t seed)
{
    float k = 1.0f / (1.0f - p);
    CPU_FOR(n, i, n, {
        y[i] = dropout_keep(seed, i, p) ? x[i] * k : 0.0f;
    });
}

void cpu_dropout_backward(float *dx, const float *dy, int64_t n, float p, uint64_t seed)
{
    float k = 1.0f / (1.0f - p);
    CPU_FOR(n, i, n, {
        if (dropout_keep(seed, i, p))
            dx[i] += dy[i] * k;
    });
}

/* values of a swiglu forward a task takes, through the SIMD path's kernel */
#define SWIGLU_BLOCK 4096

void cpu_swiglu_forward(float *y, const float *gate, const float *up, int64_t n)
{
    const struct cpu_simd *s = cpu_simd();
    CPU_FOR(n, b, (n + SWIGLU_BLOCK - 1) / SWIGLU_BLOCK, {
        int64_t i0 = b * SWIGLU_BLOCK;
        s->swiglu(y + i0, gate + i0, up + i0, n - i0 < SWIGLU_BLOCK ? n - i0 : SWIGLU_BLOCK);
    });
}

void cpu_swiglu_backward(float *dgate, float *dup, const float *dy, const float *gate,
                         const float *up, int64_t n)
{
    CPU_FOR(n, i, n, {
        float g = gate[i], s = 1.0f / (1.0f + expf(-g));
        if (dgate)
            dgate[i] += dy[i] * up[i] * s * (1.0f + g * (1.0f - s));
        if (dup)
            dup[i] += dy[i] * g * s;
    });
}

/* ----------------------------------------------------------------------------------------
 * embedding and concatenation
 */

void cpu_embedding_forward(float *out, const void *table, lv_dtype tt, const int32_t *ids,
                           int64_t T, int64_t C)
{
    size_t rb = lv_dtype_bytes(tt, C);      /* whole blocks for block types */
    CPU_FOR(T * C, t, T, {
        const char *row = (const char *)table + (size_t)ids[t] * rb;
        lv_convert_row(out + t * C, LV_F32, row, tt, C);
    });
}

void cpu_embedding_backward(float *dtable, const float *dout, const int32_t *ids, int64_t T,
                            int64_t V, int64_t C)
{
    (void)V;
    /* Parallel over channels: each thread owns a column range of every row, and tokens are
     * added in order, so repeated ids sum the same way at any thread count. */
    CPU_FOR(T * C, c, C, {
        for (int64_t t = 0; t < T; t++)
            dtable[(int64_t)ids[t] * C + c] += dout[t * C + c];
    });
}

void cpu_concat_forward(float *out, const float *a, const float *b, int64_t outer, int64_t na,
                        int64_t nb, int64_t inner)
{
    for (int64_t o = 0; o < outer; o++) {
        memcpy(out + o * (na + nb) * inner, a + o * na * inner, (size_t)(na * inner) * 4);
        memcpy(out + (o * (na + nb) + na) * inner, b + o * nb * inner, (size_t)(nb * inner) * 4);
    }
}

void cpu_concat_backward(float *da, float *db, const float *dout, int64_t outer, int64_t na,
                         int64_t nb, int64_t inner)
{
    for (int64_t o = 0; o < outer; o++) {
        const float *g = dout + o * (na + nb) * inner;
        if (da)
            for (int64_t i = 0; i < na * inner; i++)
                da[o * na * inner + i] += g[i];
        if (db)
            for (int64_t i = 0; i < nb * inner; i++)
                db[o * nb * inner + i] += g[na * inner + i];
    }
}

/* ----------------------------------------------------------------------------------------
 * im2col for patch embedding (stride = kernel, so patches do not overlap)
 */

void cpu_im2col(float *cols, const float *img, int64_t B, int64_t Cin, int64_t Hh, int64_t Ww,
                int64_t P)
{
    int64_t nh = Hh / P, nw = Ww / P, K = Cin * P * P;
    CPU_FOR(B * nh * nw * K, r, B * nh * nw, {
        int64_t b = r / (nh * nw), py = (r / nw) % nh, px = r % nw;
        float *row = cols + r * K;
        for (int64_t c = 0; c < Cin; c++)
            for (int64_t i = 0; i < P; i++)
                memcpy(row + (c * P + i) * P,
                       img + ((b * Cin + c) * Hh + py * P + i) * Ww + px * P, (size_t)P * 4);
    });
}

void cpu_col2im(float *dimg, const float *dcols, int64_t B, int64_t Cin, int64_t Hh,
                int64_t Ww, int64_t P)
{
    int64_t nh = Hh / P, nw = Ww / P, K = Cin * P * P;
    CPU_FOR(B * nh * nw * K, r, B * nh * nw, {
        int64_t b = r / (nh * nw), py = (r / nw) % nh, px = r % nw;
        const float *row = dcols + r * K;
        for (int64_t c = 0; c < Cin; c++)
            for (int64_t i = 0; i < P; i++)
                for (int64_t j = 0; j < P; j++)
                    dimg[((b * Cin + c) * Hh + py * P + i) * Ww + px * P + j] +=
                        row[(c * P + i) * P + j];
    });
}
