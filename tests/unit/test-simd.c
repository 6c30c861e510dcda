/*
 * test-simd.c: every SIMD path this CPU runs against float64 and against the generic path.
 *
 * Per path: dot products of F32, F16, BF16, Q8_0 and Q4_0 weights at lengths around every
 * unroll boundary and of NF4 rows (codes and block scales) of 1 to 65 blocks, and
 * matrix-vector products (the decode path of lv_linear) for 1 to 4 rows, each within 1e-6 of
 * the float64 result relative to sum |x_i w_i| (a summation-order bound); F16 and BF16 rows
 * widened to F32 bit for bit as the portable conversion; the decoding attention's row kernels
 * (scores against strided key rows, weighted sums of value rows) at head sizes around every
 * vector width and register block, within 1e-6 the same way; SwiGLU within 1e-6 of float64
 * from underflow to overflow of its exp; then, with the whole library on that
 * path, lv_linear at M = 1 against M = 5 (sgemm) and its input gradient at M = 1 against the
 * column sums of W, for every weight type including NF4.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu.h"
#include "io/gguf.h"
#include "lavinia/ops.h"
#include "testutil.h"

/* the weight dtypes the kernels take (I32 is not one) */
static const lv_dtype wtypes[] = { LV_F32, LV_F16, LV_BF16, LV_Q8_0, LV_Q4_0, LV_Q8_0X8 };
#define N_WTYPES (int)(sizeof wtypes / sizeof wtypes[0])

/* w in dtype dt (as stored) and its exact float value */
static void make_weights(lv_dtype dt, int64_t n, void *w, double *wv)
{
    if (lv_dtype_is_block(dt)) {
        float *f = malloc((size_t)n * sizeof *f);
        for (int64_t i = 0; i < n; i++)
            f[i] = (float)tu_randn();
        lv_convert_row(w, dt, f, LV_F32, n);       /* quantise */
        lv_convert_row(f, LV_F32, w, dt, n);       /* what the blocks hold */
        for (int64_t i = 0; i < n; i++)
            wv[i] = f[i];
        free(f);
        return;
    }
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
    /* block types round up to whole blocks: 129 is 5 blocks, 300 10 (a group of eight
     * scales and a pair), 600 19 (two groups, a pair and one), 4099 129 */
    static const int64_t lengths[] = { 1, 3, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127,
                                       128, 129, 300, 600, 1000, 4096, 4099 };
    int64_t kmax = 4128;
    float *x = malloc((size_t)kmax * sizeof *x);
    void *w = malloc((size_t)kmax * 4);
    double *wv = malloc((size_t)kmax * sizeof *wv);
    for (int wi = 0; wi < N_WTYPES; wi++) {
        lv_dtype dt = wtypes[wi];
        double worst = 0.0;
        for (size_t li = 0; li < sizeof lengths / sizeof lengths[0]; li++) {
            int64_t k = lv_dtype_is_block(dt) ? (lengths[li] + 31) / 32 * 32 : lengths[li];
            for (int64_t i = 0; i < k; i++)
                x[i] = (float)tu_randn();
            make_weights(dt, k, w, wv);
            double ref = 0.0, mag = 0.0;
            for (int64_t i = 0; i < k; i++) {
                ref += (double)x[i] * wv[i];
                mag += fabs((double)x[i] * wv[i]);
            }
            double got = s->dot[dt](x, w, k);
            worst = fmax(worst, fabs(got - ref) / mag);
        }
        tu_assert(worst <= 1e-6, "%s: dot of %s weights, %zu lengths 1..4099: worst error "
                  "%.2e of sum |x w|", s->name, lv_dtype_name(dt),
                  sizeof lengths / sizeof lengths[0], worst);
    }
    free(x);
    free(w);
    free(wv);
}

/* NF4 rows: random codes (the first value of each pair in the high nibble) and block scales */
static void nf4_dots(const struct cpu_simd *s)
{
    static const int64_t blocks[] = { 1, 2, 3, 4, 5, 16, 65 };
    int64_t kmax = 65 * LV_NF4_BLOCK;
    float *x = malloc((size_t)kmax * sizeof *x), *sc = malloc(65 * sizeof *sc);
    unsigned char *q = malloc((size_t)kmax / 2);
    double worst = 0.0;
    for (size_t bi = 0; bi < sizeof blocks / sizeof blocks[0]; bi++) {
        int64_t k = blocks[bi] * LV_NF4_BLOCK;
        for (int64_t i = 0; i < k; i++)
            x[i] = (float)tu_randn();
        for (int64_t i = 0; i < k / 2; i++)
            q[i] = (unsigned char)(tu_randn() * 1000.0);
        for (int64_t j = 0; j < blocks[bi]; j++)
            sc[j] = (float)fabs(tu_randn()) + 0.01f;
        double ref = 0.0, mag = 0.0;
        for (int64_t i = 0; i < k; i++) {
            int code = i % 2 ? q[i / 2] & 0x0f : q[i / 2] >> 4;
            double v = (double)sc[i / LV_NF4_BLOCK] * lv_nf4_value(code) * x[i];
            ref += v;
            mag += fabs(v);
        }
        worst = fmax(worst, fabs(s->nf4_dot(x, q, sc, k) - ref) / mag);
    }
    tu_assert(worst <= 1e-6, "%s: NF4 row dots of 1 to 65 blocks: worst error %.2e of sum |x w|",
              s->name, worst);
    free(x);
    free(sc);
    free(q);
}

/* The attention row kernels: n keys (and values) ld floats apart, head sizes on either side
 * of every vector width and of the register blocks of the weighted sum (64 and 128 values). */
static void attn_rows(const struct cpu_simd *s)
{
    static const int64_t heads[] = { 1, 4, 8, 16, 20, 24, 64, 80, 128, 136, 200 };
    static const int64_t keys[] = { 1, 3, 4, 5, 37 };
    int64_t dmax = 200, nmax = 37, ld = dmax + 3;
    float *q = malloc((size_t)dmax * sizeof *q), *kv = malloc((size_t)(nmax * ld) * sizeof *kv);
    float *sc = malloc((size_t)nmax * sizeof *sc), *o = malloc((size_t)dmax * sizeof *o);
    double worst_s = 0.0, worst_o = 0.0;
    for (int64_t i = 0; i < nmax * ld; i++)
        kv[i] = (float)tu_randn();
    for (size_t di = 0; di < sizeof heads / sizeof heads[0]; di++) {
        int64_t D = heads[di];
        for (int64_t d = 0; d < D; d++)
            q[d] = (float)tu_randn();
        for (size_t ni = 0; ni < sizeof keys / sizeof keys[0]; ni++) {
            int64_t n = keys[ni];
            for (int64_t d = 0; d < dmax; d++)
                o[d] = d < D ? (float)tu_randn() : 7.0f;      /* past D: must stay 7 */
            float o0[200];
            memcpy(o0, o, sizeof o0);
            s->attn_scores(sc, q, kv, n, D, ld, 0.25f);
            /* sc as the weights of the same rows read as values */
            s->attn_accum(o, sc, kv, n, D, ld);
            for (int64_t j = 0; j < n; j++) {
                double ref = 0.0, mag = 0.0;
                for (int64_t d = 0; d < D; d++) {
                    ref += 0.25 * (double)q[d] * kv[j * ld + d];
                    mag += 0.25 * fabs((double)q[d] * kv[j * ld + d]);
                }
                worst_s = fmax(worst_s, fabs(sc[j] - ref) / mag);
            }
            for (int64_t d = 0; d < dmax; d++) {
                double ref = o0[d], mag = fabs(o0[d]);
                for (int64_t j = 0; d < D && j < n; j++) {
                    ref += (double)sc[j] * kv[j * ld + d];
                    mag += fabs((double)sc[j] * kv[j * ld + d]);
                }
                worst_o = fmax(worst_o, d < D ? fabs(o[d] - ref) / mag : (o[d] != 7.0f));
            }
        }
    }
    tu_assert(worst_s <= 1e-6 && worst_o <= 1e-6,
              "%s: attention rows, heads of 1 to 200 over 1 to 37 keys: worst score error "
              "%.2e, weighted sum %.2e of sum |terms|", s->name, worst_s, worst_o);
    free(q);
    free(kv);
    free(sc);
    free(o);
}

/* y = silu(gate) * up against float64 at lengths around the vector widths, gates from 0 to past
 * where exp(-g) overflows or underflows */
static void swiglu(const struct cpu_simd *s)
{
    static const float edge[] = { 0.0f, 1e-3f, -1e-3f, 1.0f, -1.0f, 20.0f, -20.0f, 86.0f,
                                  -86.0f, 88.5f, -88.5f, 90.0f, -90.0f, 200.0f, -200.0f };
    int64_t nmax = 77;
    float g[77] = { 0 }, u[77] = { 0 }, y[77];
    double worst = 0.0;
    for (int64_t n = 0; n <= nmax; n += n < 20 ? 1 : 19) {
        for (int64_t i = 0; i < n; i++) {
            g[i] = i % 3 == 0 ? edge[(i / 3) % 15] : (float)(8.0 * tu_randn());
            u[i] = (float)tu_randn();
        }
        s->swiglu(y, g, u, n);
        for (int64_t i = 0; i < n; i++) {
            double ref = (double)g[i] / (1.0 + exp(-(double)g[i])) * u[i];
            double err = fabs(y[i] - ref);
            worst = fmax(worst, err <= 1e-30 ? 0.0 : err / fabs(ref));
        }
    }
    tu_assert(worst <= 1e-6, "%s: swiglu of 0 to 77 values: worst relative error %.2e", s->name,
              worst);
}

/* F16 and BF16 widened by the path equal lv_convert_row bit for bit (every finite pattern) */
static void widen(const struct cpu_simd *s)
{
    static const lv_dtype dts[] = { LV_F16, LV_BF16 };
    int64_t n = 65536 + 7;
    uint16_t *h = malloc((size_t)n * sizeof *h);
    float *a = malloc((size_t)n * sizeof *a), *b = malloc((size_t)n * sizeof *b);
    for (int di = 0; di < 2; di++) {
        int64_t diff = 0;
        for (int64_t i = 0; i < n; i++) {
            h[i] = (uint16_t)(i * 40503u);
            /* NaNs aside (their payloads are the hardware's business) */
            uint16_t e = dts[di] == LV_F16 ? 0x7c00 : 0x7f80;
            if ((h[i] & e) == e)
                h[i] &= (uint16_t)~e;
        }
        cpu_to_f32(s, a, h, dts[di], n);
        lv_convert_row(b, LV_F32, h, dts[di], n);
        for (int64_t i = 0; i < n; i++)
            diff += memcmp(&a[i], &b[i], sizeof a[i]) != 0;
        tu_assert(diff == 0, "%s: %s widened to F32 equal to lv_convert_row on %lld patterns "
                  "(%lld differ)", s->name, lv_dtype_name(dts[di]), (long long)n, (long long)diff);
    }
    free(h);
    free(a);
    free(b);
}

static void gemv(const struct cpu_simd *s)
{
    int64_t N = 67, KMAX = 768;
    float *a = malloc(4 * (size_t)KMAX * sizeof *a), *c = malloc(4 * (size_t)N * sizeof *c);
    void *b = malloc((size_t)(N * KMAX) * 4);
    double *bv = malloc((size_t)(N * KMAX) * sizeof *bv);
    for (int wi = 0; wi < N_WTYPES; wi++) {
        lv_dtype dt = wtypes[wi];
        /* 10 blocks a row (a group of eight scales and a pair); Q8_0x8 rows are whole groups */
        int64_t K = dt == LV_Q8_0X8 ? KMAX : 320;
        make_weights(dt, N * K, b, bv);
        double worst = 0.0;
        for (int64_t M = 1; M <= 4; M++) {
            for (int64_t i = 0; i < M * K; i++)
                a[i] = (float)tu_randn();
            for (int64_t i = 0; i < M * N; i++)
                c[i] = 1.0f;
            cpu_gemv(c, a, b, dt, M, N, K, 0.5f, s);
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
                  "0.5: worst error %.2e", s->name, lv_dtype_name(dt), worst);
    }
    free(a);
    free(c);
    free(b);
    free(bv);
}

/* lv_linear at M = 1 (the decode path) against the same product at M = 5 (the tiled sgemm),
 * forward and input gradient, through the path in use. NF4 decodes (M = 1, nothing recorded)
 * as stored and takes its gradient through dequantised weights. */
static void linear_paths(const char *path)
{
    static const lv_dtype lin_types[] = { LV_F32, LV_F16, LV_BF16, LV_Q8_0, LV_Q4_0, LV_NF4,
                                          LV_Q8_0X8 };
    for (size_t wi = 0; wi < sizeof lin_types / sizeof lin_types[0]; wi++) {
        lv_dtype dt = lin_types[wi];
        lv_graph *g = lv_graph_new(NULL);
        int64_t N = 96, K = 256;
        lv_tensor *w = lv_tensor_new(dt, 2, (int64_t[]){ N, K });
        {
            lv_tensor *f = tu_rand_tensor(LV_F32, 2, (int64_t[]){ N, K }, 0.1);
            lv_convert_row(w->data, dt, f->data, LV_F32, N * K);
            lv_tensor_free(f);
        }
        lv_tensor_set_frozen(w);
        lv_tensor *x5 = tu_rand_tensor(LV_F32, 2, (int64_t[]){ 5, K }, 1.0);
        lv_tensor *x1 = lv_tensor_wrap(x5->data, LV_F32, 2, (int64_t[]){ 1, K });
        float *a = malloc((size_t)N * 4), *b = malloc((size_t)(5 * N) * 4);
        lv_tensor *y5 = lv_linear(g, x5, w, NULL), *y1 = lv_linear(g, x1, w, NULL);
        lv_tensor_to_f32(a, y1);
        lv_tensor_to_f32(b, y5);
        double e = 0.0, m = 0.0;
        for (int64_t n = 0; n < N; n++) {
            e = fmax(e, fabs((double)a[n] - b[n]));
            m = fmax(m, fabs((double)b[n]));
        }
        tu_assert(e <= 1e-5 * m, "%s: lv_linear, %s weights: row 0 at M = 1 (matrix-vector) "
                  "and at M = 5 (sgemm) agree: %.2e of %.2e", path, lv_dtype_name(dt), e, m);
        lv_graph_reset(g);
        lv_graph_set_recording(g, true);
        lv_tensor_set_param(x1);
        y1 = lv_linear(g, x1, w, NULL);
        lv_tensor *l1 = lv_sum_all(g, y1);
        tu_assert(l1 && lv_backward(g, l1) == LV_OK && x1->grad, "%s: backward through M = 1",
                  path);
        if (x1->grad) {
            /* d sum(x W^T) / dx = column sums of W */
            float *gx = malloc((size_t)K * 4), *wf = malloc((size_t)(N * K) * 4);
            lv_tensor_to_f32(gx, x1->grad);
            lv_convert_row(wf, LV_F32, w->data, dt, N * K);
            double ge = 0.0;
            for (int64_t k = 0; k < K; k++) {
                double ref = 0.0;
                for (int64_t n = 0; n < N; n++)
                    ref += wf[n * K + k];
                ge = fmax(ge, fabs(gx[k] - ref));
            }
            tu_assert(ge <= 1e-5, "%s: input gradient at M = 1, %s weights: error %.2e", path,
                      lv_dtype_name(dt), ge);
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

static void blocks_as_ggml(void)
{
    enum { N = 32 * 64 };
    float x[N], a[N], b[N];
    unsigned char q[N / 32 * 34], ref[N / 32 * 34];
    for (int i = 0; i < N; i++)
        x[i] = (float)tu_randn() * (i % 97 == 0 ? 20.0f : 1.0f);
    x[5] = 0.0f;
    lv_convert_row(q, LV_Q8_0, x, LV_F32, N);
    lv_gguf_quantize_q8_0(x, ref, N);
    tu_assert(memcmp(q, ref, sizeof q) == 0, "Q8_0 quantisation gives ggml's bytes");
    /* exact halves (a block whose largest value is 127 has the scale 1): ggml's roundf takes
     * them away from zero; and blocks of zeros, of one tiny value, of mixed magnitudes */
    static float t[4 * 32];
    for (int j = 0; j < 32; j++) {
        t[j] = j == 0 ? 127.0f : (float)(j - 16) + (j % 2 ? 0.5f : -0.5f);
        t[32 + j] = 0.0f;
        t[64 + j] = j == 7 ? 1e-30f : 0.0f;
        t[96 + j] = (j % 3 ? -1.0f : 1.0f) * (float)(j * j) * 0.37f;
    }
    unsigned char tq[4 * 34], tref[4 * 34];
    lv_convert_row(tq, LV_Q8_0, t, LV_F32, 4 * 32);
    lv_gguf_quantize_q8_0(t, tref, 4 * 32);
    tu_assert(memcmp(tq, tref, sizeof tq) == 0 && tq[2 + 1] == (unsigned char)(int8_t)-15 &&
                  tq[2 + 2] == (unsigned char)(int8_t)-15,
              "Q8_0 quantisation gives ggml's bytes on exact halves, zero and tiny blocks");
    lv_convert_row(a, LV_F32, q, LV_Q8_0, N);
    lv_gguf_dequantize(LV_GGML_TYPE_Q8_0, q, b, N);
    tu_assert(memcmp(a, b, sizeof a) == 0, "Q8_0 dequantisation equals ggml's");
    double e8 = 0.0, e4 = 0.0;
    for (int blk = 0; blk < N / 32; blk++) {
        float amax = 0.0f;
        for (int j = 0; j < 32; j++)
            amax = fmaxf(amax, fabsf(x[blk * 32 + j]));
        for (int j = 0; j < 32; j++)
            e8 = fmax(e8, fabs(a[blk * 32 + j] - x[blk * 32 + j]) / amax);
    }
    lv_convert_row(q, LV_Q4_0, x, LV_F32, N);
    lv_convert_row(a, LV_F32, q, LV_Q4_0, N);
    lv_gguf_dequantize(LV_GGML_TYPE_Q4_0, q, b, N);
    tu_assert(memcmp(a, b, sizeof a) == 0, "Q4_0 dequantisation equals ggml's");
    for (int blk = 0; blk < N / 32; blk++) {
        float amax = 0.0f;
        for (int j = 0; j < 32; j++)
            amax = fmaxf(amax, fabsf(x[blk * 32 + j]));
        for (int j = 0; j < 32; j++)
            e4 = fmax(e4, fabs(a[blk * 32 + j] - x[blk * 32 + j]) / amax);
    }
    /* Q8_0 rounds to the nearest of 255 steps of max/127: half a step, plus the F16
     * rounding of the scale. Q4_0's 16 levels run from -8 to +7 steps of max/8 with the
     * block's largest value at -8: values of the other sign clip at 7/8 of it, so the bound
     * is one step (ggml's definition, kept bit for bit). */
    tu_assert(e8 <= 0.5 / 127 + 1e-3 && e4 <= 1.0 / 8 + 1e-2, "round-trip error bounds: Q8_0 "
              "%.4f <= 0.0049 of the block's max, Q4_0 %.4f <= 0.135", e8, e4);
}

/* Q8_0x8 (tensor.h): ggml's Q8_0 blocks regrouped, byte for byte, both ways; its values,
 * from any block on, are ggml's */
static void q8_0x8_layout(void)
{
    enum { NB = 19, N = NB * 32 };               /* two groups of eight and one of three */
    float x[N], a[N], b[N];
    unsigned char q8[NB * 34], x8[NB * 34], back[NB * 34];
    for (int i = 0; i < N; i++)
        x[i] = (float)tu_randn() * (i % 61 == 0 ? 9.0f : 1.0f);
    lv_gguf_quantize_q8_0(x, q8, N);
    lv_convert_row(x8, LV_Q8_0X8, x, LV_F32, N);
    bool placed = true;
    for (int blk = 0; blk < NB; blk++) {
        int g = blk / 8, j = blk % 8, m = NB - g * 8 < 8 ? NB - g * 8 : 8;
        const unsigned char *grp = x8 + g * 272;
        placed = placed && memcmp(grp + 2 * j, q8 + blk * 34, 2) == 0 &&
                 memcmp(grp + 2 * m + 32 * j, q8 + blk * 34 + 2, 32) == 0;
    }
    tu_assert(placed, "Q8_0x8 quantisation: ggml's Q8_0 blocks, each group's scales first");
    lv_convert_row(back, LV_Q8_0, x8, LV_Q8_0X8, N);
    tu_assert(memcmp(back, q8, sizeof q8) == 0, "Q8_0x8 -> Q8_0 gives ggml's bytes back");
    lv_convert_row(back, LV_Q8_0X8, q8, LV_Q8_0, N);
    tu_assert(memcmp(back, x8, sizeof x8) == 0, "Q8_0 -> Q8_0x8 moves the bytes");
    /* blocks whose largest |q| is under 127 do not survive a trip through F32 unchanged:
     * the direct conversion must not take it */
    unsigned char odd[34] = { 0x00, 0x3c };     /* scale 1.0, values 0..31 */
    for (int j = 0; j < 32; j++)
        odd[2 + j] = (unsigned char)j;
    unsigned char o8[34], o2[34];
    lv_convert_row(o8, LV_Q8_0X8, odd, LV_Q8_0, 32);
    lv_convert_row(o2, LV_Q8_0, o8, LV_Q8_0X8, 32);
    tu_assert(memcmp(o2, odd, 34) == 0, "Q8_0 <-> Q8_0x8 keeps a block's bytes as they are");
    lv_gguf_dequantize(LV_GGML_TYPE_Q8_0, q8, b, N);
    lv_convert_row(a, LV_F32, x8, LV_Q8_0X8, N);
    bool same = memcmp(a, b, sizeof a) == 0;
    for (int first = 0; first < N; first += 32)
        for (int count = 32; first + count <= N; count += 96) {
            lv_q8_0x8_dequantize(a, x8, N, first, count);
            same = same && memcmp(a, b + first, (size_t)count * sizeof *a) == 0;
        }
    tu_assert(same, "Q8_0x8 dequantisation, whole and from every block on, equals ggml's");
    lv_tensor *t = lv_tensor_new(LV_Q8_0X8, 2, (int64_t[]){ 2, 128 });
    tu_assert(!t && strstr(lv_errmsg(), "multiple of 256"), "a Q8_0x8 tensor's rows are "
              "whole groups: %s", lv_errmsg());
    t = lv_tensor_new(LV_Q8_0X8, 2, (int64_t[]){ 2, 256 });
    if (tu_assert(t, "a (2, 256) Q8_0x8 tensor")) {
        lv_convert_row(t->data, LV_Q8_0X8, x, LV_F32, 512);
        lv_gguf_dequantize(LV_GGML_TYPE_Q8_0, q8, b, 512);
        bool got = true;
        for (int i = 0; i < 512; i += 37)
            got = got && (float)lv_tensor_get(t, i) == b[i];
        tu_assert(got, "Q8_0x8 element access");
    }
    lv_tensor_free(t);
}

int main(int argc, char **argv)
{
    tu_init(argc, argv, "simd");
    blocks_as_ggml();
    q8_0x8_layout();
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
        nf4_dots(s);
        widen(s);
        gemv(s);
        attn_rows(s);
        swiglu(s);
        /* the whole library on this path */
        cpu_simd_use((enum cpu_simd_level)l);
        linear_paths(s->name);
    }
    tu_assert(ran >= 1, "%d SIMD path(s) tested", ran);
    return tu_finish();
}
