/*
 * cpu-rope.c: CPU kernels for rotary position embedding (RoPE), forward and backward.
 *
 * The last dimension D of x (B, T, H, D) is split into D/2 pairs (x0, x1), and pair i of the
 * token at position p = pos[t] is rotated by the angle
 *     theta = (p / freq_scale) * base^(-2i/D)
 * as in Hugging Face's rotate_half: y0 = x0 cos - x1 sin, y1 = x0 sin + x1 cos. The two
 * layouts differ only in which elements pair up:
 *     LV_ROPE_HF    (x[i], x[i + D/2])   half split (Hugging Face checkpoints)
 *     LV_ROPE_META  (x[2i], x[2i + 1])   interleaved (Meta, GGUF)
 * The inverse frequency and the angle are computed in double, because positions reach the
 * hundreds of thousands and a float angle would lose the low bits that cos and sin need;
 * cos and sin are then rounded to float. D is even (lv_rope refuses odd D); were it odd, the
 * last element would pass through unrotated.
 *
 * The backward rotates dy by the opposite angle (a rotation's transpose is its inverse), and
 * accumulates: dx += R(-theta) dy, never assigned.
 *
 * Threads: the (t, i) pairs are split across threads (CPU_FOR, cpu.h); each computes its cos
 * and sin once and rotates that pair in every batch row and head. Each output element is
 * written by one thread.
 *
 * Decoding rotates q and k of every layer at the same few positions: up to ROPE_TABLE pairs,
 * the cosines and sines are kept in a per-thread table and reused while the positions and the
 * parameters stay the same (the same arithmetic, so the same bits; a step of the 110M model
 * made 24 tables of 32 pairs, 2.4 us each).
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "backend/cpu/cpu.h"

#include <math.h>

#include "lavinia/ops.h"

/* Rotate pair (j0, j1) of token t, in every batch row and head, by the angle whose cosine is
 * c and sine is s (add: y += instead of y =). */
static inline void rope_pair(float *y, const float *x, int64_t B, int64_t T, int64_t H,
                             int64_t D, int64_t t, int64_t j0, int64_t j1, float c, float s,
                             int add)
{
    for (int64_t b = 0; b < B; b++) {
        for (int64_t h = 0; h < H; h++) {
            int64_t row = ((b * T + t) * H + h) * D;
            float x0 = x[row + j0], x1 = x[row + j1];
            float y0 = x0 * c - x1 * s;
            float y1 = x0 * s + x1 * c;
            if (add) {
                y[row + j0] += y0;
                y[row + j1] += y1;
            } else {
                y[row + j0] = y0;
                y[row + j1] = y1;
            }
        }
    }
}

/* cos and sin of pair i of a token at position p */
static inline void rope_angle(int32_t p, int64_t i, int64_t D, float base, float freq_scale,
                              float *c, float *s)
{
    double inv_freq = pow((double)base, -2.0 * (double)i / (double)D);
    double theta = (double)p / (double)freq_scale * inv_freq;
    *c = (float)cos(theta);
    *s = (float)sin(theta);
}

#define ROPE_TABLE 512

/* The last few positions' cosines and sines, pair-major per token (t * D/2 + i). */
struct rope_table {
    int64_t T, D;
    float base, freq_scale;
    int32_t pos[ROPE_TABLE];
    float c[ROPE_TABLE], s[ROPE_TABLE];
};

/* The table for (pos, T, D, base, freq_scale), from the thread's cache when it matches; NULL
 * when T * D/2 is more than it holds. */
static const struct rope_table *rope_table(const int32_t *pos, int64_t T, int64_t D, float base,
                                           float freq_scale)
{
    static _Thread_local struct rope_table tab;
    int64_t half = D / 2;
    if (T * half > ROPE_TABLE || half == 0)
        return NULL;
    bool same = tab.T == T && tab.D == D && tab.base == base && tab.freq_scale == freq_scale;
    for (int64_t t = 0; same && t < T; t++)
        same = tab.pos[t] == pos[t];
    if (!same) {
        for (int64_t t = 0; t < T; t++) {
            tab.pos[t] = pos[t];
            for (int64_t i = 0; i < half; i++)
                rope_angle(pos[t], i, D, base, freq_scale, &tab.c[t * half + i],
                           &tab.s[t * half + i]);
        }
        tab.T = T;
        tab.D = D;
        tab.base = base;
        tab.freq_scale = freq_scale;
    }
    return &tab;
}

/* Rotate every pair of x by sgn * theta into y (add: y += instead of y =). */
static void rope_apply(float *y, const float *x, const int32_t *pos, int64_t B, int64_t T,
                       int64_t H, int64_t D, int mode, float base, float freq_scale, float sgn,
                       int add)
{
    int64_t half = D / 2;
    /* Element i0(i) and i1(i) of pair i: stride 1 and offset D/2 (HF), or stride 2 and
     * offset 1 (Meta). */
    int64_t step = mode == LV_ROPE_META ? 2 : 1;
    int64_t off = mode == LV_ROPE_META ? 1 : half;

    /* One index per (t, i) pair, t-major; few pairs: from the thread's table, in one loop */
    const struct rope_table *tab = cpu_parallel_worth(B * T * H * D)
                                       ? NULL : rope_table(pos, T, D, base, freq_scale);
    if (tab) {
        for (int64_t ti = 0; ti < T * half; ti++)
            rope_pair(y, x, B, T, H, D, ti / half, ti % half * step, ti % half * step + off,
                      tab->c[ti], sgn * tab->s[ti], add);
    } else {
        CPU_FOR(B * T * H * D, ti, T * half, {
            int64_t t = ti / half, i = ti % half;
            float c, s;
            rope_angle(pos[t], i, D, base, freq_scale, &c, &s);
            rope_pair(y, x, B, T, H, D, t, i * step, i * step + off, c, sgn * s, add);
        });
    }
    if (D % 2) {
        int64_t rows = B * T * H;
        CPU_FOR(rows, r, rows, {
            if (add)
                y[r * D + D - 1] += x[r * D + D - 1];
            else
                y[r * D + D - 1] = x[r * D + D - 1];
        });
    }
}

void cpu_rope_forward(float *y, const float *x, const int32_t *pos, int64_t B, int64_t T,
                      int64_t H, int64_t D, int mode, float base, float freq_scale)
{
    rope_apply(y, x, pos, B, T, H, D, mode, base, freq_scale, 1.0f, 0);
}

void cpu_rope_backward(float *dx, const float *dy, const int32_t *pos, int64_t B, int64_t T,
                       int64_t H, int64_t D, int mode, float base, float freq_scale)
{
    if (!dx)
        return;
    rope_apply(dx, dy, pos, B, T, H, D, mode, base, freq_scale, -1.0f, 1);
}
