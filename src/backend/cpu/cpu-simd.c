/*
 * cpu-simd.c: kernels chosen at run time from CPUID: generic C, AVX2+FMA+F16C, AVX-512F.
 *
 * The build stays portable (no -march): each accelerated kernel is compiled for its target
 * with a function attribute and only called when the CPU reports the extension (GCC's
 * __builtin_cpu_supports). LAVINIA_SIMD=generic|avx2|avx512 forces a path (one the CPU lacks
 * is refused with a warning and the best available is used).
 *
 * The dot products here serve matrix-vector products (decoding: a few rows of activations
 * against a weight matrix whose rows are contiguous). Each streams one weight row once, with
 * four independent accumulators, converting F16/BF16 on the fly, so narrow weights are read
 * at their own width instead of being widened into a buffer first.
 *
 * The attention row kernels serve decoding too: the scores of one query against a run of
 * cached keys, and the weighted sum of the cached values, each key or value row read once
 * (OpenBLAS's sgemv on the generic path; its call and set-up cost a third of the attention of
 * a decode step on the 110M model next to these, docs/NOTES.md).
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "backend/cpu/cpu.h"

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define LV_X86 1
#endif

#include "util/log.h"

/* --- generic ------------------------------------------------------------------------- */

static float dot_f32_generic(const float *x, const void *w, int64_t k)
{
    const float *y = w;
    float s[4] = { 0 };
    int64_t i = 0;
    for (; i + 4 <= k; i += 4)
        for (int j = 0; j < 4; j++)
            s[j] += x[i + j] * y[i + j];
    for (; i < k; i++)
        s[0] += x[i] * y[i];
    return (s[0] + s[1]) + (s[2] + s[3]);
}

static float dot_f16_generic(const float *x, const void *w, int64_t k)
{
    const uint16_t *y = w;
    float s[4] = { 0 };
    int64_t i = 0;
    for (; i + 4 <= k; i += 4)
        for (int j = 0; j < 4; j++)
            s[j] += x[i + j] * lv_f16_to_f32(y[i + j]);
    for (; i < k; i++)
        s[0] += x[i] * lv_f16_to_f32(y[i]);
    return (s[0] + s[1]) + (s[2] + s[3]);
}

static float dot_bf16_generic(const float *x, const void *w, int64_t k)
{
    const uint16_t *y = w;
    float s[4] = { 0 };
    int64_t i = 0;
    for (; i + 4 <= k; i += 4)
        for (int j = 0; j < 4; j++)
            s[j] += x[i + j] * lv_bf16_to_f32(y[i + j]);
    for (; i < k; i++)
        s[0] += x[i] * lv_bf16_to_f32(y[i]);
    return (s[0] + s[1]) + (s[2] + s[3]);
}

/* the F16 scale at the start of a block */
static inline float block_scale(const unsigned char *b)
{
    return lv_f16_to_f32((uint16_t)(b[0] | b[1] << 8));
}

static float dot_q8_0_generic(const float *x, const void *w, int64_t k)
{
    const unsigned char *b = w;
    float s = 0.0f;
    for (int64_t i = 0; i < k; i += 32, b += 34) {
        float t = 0.0f;
        for (int j = 0; j < 32; j++)
            t += x[i + j] * (float)(int8_t)b[2 + j];
        s += block_scale(b) * t;
    }
    return s;
}

static float nf4_dot_generic(const float *x, const unsigned char *q, const float *scales,
                             int64_t k)
{
    const float *lut = lv_nf4_codebook;
    float acc = 0.0f;
    for (int64_t j = 0; j < k / LV_NF4_BLOCK; j++, q += LV_NF4_BLOCK / 2, x += LV_NF4_BLOCK) {
        float part = 0.0f;
        for (int i = 0; i < LV_NF4_BLOCK / 2; i++)
            part += lut[q[i] >> 4] * x[2 * i] + lut[q[i] & 0x0f] * x[2 * i + 1];
        acc += scales[j] * part;
    }
    return acc;
}

static float dot_q4_0_generic(const float *x, const void *w, int64_t k)
{
    const unsigned char *b = w;
    float s = 0.0f;
    for (int64_t i = 0; i < k; i += 32, b += 18) {
        float t = 0.0f;
        for (int j = 0; j < 16; j++)
            t += x[i + j] * (float)((b[2 + j] & 0x0f) - 8) +
                 x[i + 16 + j] * (float)((b[2 + j] >> 4) - 8);
        s += block_scale(b) * t;
    }
    return s;
}

#ifdef LV_X86
static void attn_scores_generic(float *sc, const float *q, const float *k, int64_t n,
                                int64_t D, int64_t ld, float scale)
{
    cblas_sgemv(CblasRowMajor, CblasNoTrans, (blasint)n, (blasint)D, scale, k, (blasint)ld, q,
                1, 0.0f, sc, 1);
}

static void attn_accum_generic(float *o, const float *p, const float *v, int64_t n, int64_t D,
                               int64_t ld)
{
    cblas_sgemv(CblasRowMajor, CblasTrans, (blasint)n, (blasint)D, 1.0f, v, (blasint)ld, p, 1,
                1.0f, o, 1);
}

static void swiglu_generic(float *y, const float *gate, const float *up, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

/* exp(x) in vectors: x clamped to [EXP_LO, EXP_HI] (the results stay normal floats: 1.6e-38
 * to 1.7e38), x = n ln 2 + r with |r| <= ln 2 / 2, exp(r) by Cephes' expf polynomial (within
 * 2 ulp of expf), times 2^n through the exponent bits */
#define EXP_LO -87.0f
#define EXP_HI 88.0f
#define EXP_LOG2E 1.44269504088896341f
#define EXP_LN2_HI 0.693359375f
#define EXP_LN2_LO -2.12194440e-4f
#define EXP_P0 1.9875691500e-4f
#define EXP_P1 1.3981999507e-3f
#define EXP_P2 8.3334519073e-3f
#define EXP_P3 4.1665795894e-2f
#define EXP_P4 1.6666665459e-1f
#define EXP_P5 5.0000001201e-1f

/* --- AVX2 + FMA + F16C ------------------------------------------------------------------ */

#define AVX2 __attribute__((target("avx2,fma,f16c")))

AVX2 static float hsum256(__m256 v)
{
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_add_ps(a, _mm_movehl_ps(a, a));
    a = _mm_add_ss(a, _mm_movehdup_ps(a));
    return _mm_cvtss_f32(a);
}

AVX2 static __m256 load_f16x8(const uint16_t *p)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

AVX2 static __m256 load_bf16x8(const uint16_t *p)
{
    __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

/* four accumulators of 8 lanes over 32 elements a step; LOAD(p) gives 8 floats */
#define DOT_AVX2(LOAD, T, TAIL)                                                              \
    const T *y = w;                                                                          \
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;                              \
    int64_t i = 0;                                                                           \
    for (; i + 32 <= k; i += 32) {                                                           \
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), LOAD(y + i), a0);                       \
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), LOAD(y + i + 8), a1);               \
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 16), LOAD(y + i + 16), a2);             \
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 24), LOAD(y + i + 24), a3);             \
    }                                                                                        \
    for (; i + 8 <= k; i += 8)                                                               \
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), LOAD(y + i), a0);                       \
    float s = hsum256(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));          \
    for (; i < k; i++)                                                                       \
        s += x[i] * TAIL(y[i]);                                                              \
    return s;

#define SAME(v) (v)
AVX2 static float dot_f32_avx2(const float *x, const void *w, int64_t k)
{
    DOT_AVX2(_mm256_loadu_ps, float, SAME)
}

AVX2 static float dot_f16_avx2(const float *x, const void *w, int64_t k)
{
    DOT_AVX2(load_f16x8, uint16_t, lv_f16_to_f32)
}

AVX2 static float dot_bf16_avx2(const float *x, const void *w, int64_t k)
{
    DOT_AVX2(load_bf16x8, uint16_t, lv_bf16_to_f32)
}

/* n 16-bit values widened to F32, 8 at a time by LOAD, the tail by TAIL */
#define WIDEN_AVX2(LOAD, TAIL)                                                               \
    const uint16_t *h = x;                                                                   \
    int64_t i = 0;                                                                           \
    for (; i + 8 <= n; i += 8)                                                               \
        _mm256_storeu_ps(y + i, LOAD(h + i));                                                \
    for (; i < n; i++)                                                                       \
        y[i] = TAIL(h[i]);

AVX2 static void f16_to_f32_avx2(float *y, const void *x, int64_t n)
{
    WIDEN_AVX2(load_f16x8, lv_f16_to_f32)
}

AVX2 static void bf16_to_f32_avx2(float *y, const void *x, int64_t n)
{
    WIDEN_AVX2(load_bf16x8, lv_bf16_to_f32)
}

/* the F16 scale at the start of a block, converted by F16C */
AVX2 static inline float block_scale_f16c(const unsigned char *b)
{
    uint16_t h;
    memcpy(&h, b, sizeof h);
    return _cvtsh_ss(h);
}

/* 8 int8 at p as floats */
AVX2 static __m256 i8x8(const unsigned char *p)
{
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}

AVX2 static float dot_q8_0_avx2(const float *x, const void *w, int64_t k)
{
    const unsigned char *b = w;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < k; i += 32, b += 34) {
        __m256 t = _mm256_mul_ps(_mm256_loadu_ps(x + i), i8x8(b + 2));
        t = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), i8x8(b + 10), t);
        t = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 16), i8x8(b + 18), t);
        t = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 24), i8x8(b + 26), t);
        acc = _mm256_fmadd_ps(t, _mm256_set1_ps(block_scale_f16c(b)), acc);
    }
    return hsum256(acc);
}

AVX2 static float dot_q4_0_avx2(const float *x, const void *w, int64_t k)
{
    const unsigned char *b = w;
    const __m128i lo_mask = _mm_set1_epi8(0x0f), eight = _mm_set1_epi8(8);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < k; i += 32, b += 18) {
        __m128i q = _mm_loadu_si128((const __m128i *)(b + 2));
        __m128i lo = _mm_sub_epi8(_mm_and_si128(q, lo_mask), eight);
        __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(q, 4), lo_mask), eight);
        __m256 l0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo));
        __m256 l1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8)));
        __m256 h0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi));
        __m256 h1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8)));
        __m256 t = _mm256_mul_ps(_mm256_loadu_ps(x + i), l0);
        t = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), l1, t);
        t = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 16), h0, t);
        t = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 24), h1, t);
        acc = _mm256_fmadd_ps(t, _mm256_set1_ps(block_scale_f16c(b)), acc);
    }
    return hsum256(acc);
}

/* 8 NF4 values from 4 bytes (high nibble first), looked up in the table held in two halves */
AVX2 static __m256 nf4x8(const unsigned char *q, __m256 lut_lo, __m256 lut_hi)
{
    uint32_t w;
    memcpy(&w, q, sizeof w);
    __m128i b = _mm_cvtsi32_si128((int)w);
    b = _mm_unpacklo_epi8(b, b);                            /* b0 b0 b1 b1 b2 b2 b3 b3 */
    __m256i v = _mm256_cvtepu8_epi32(b);
    v = _mm256_srlv_epi32(v, _mm256_setr_epi32(4, 0, 4, 0, 4, 0, 4, 0));
    v = _mm256_and_si256(v, _mm256_set1_epi32(15));
    __m256 lo = _mm256_permutevar8x32_ps(lut_lo, v), hi = _mm256_permutevar8x32_ps(lut_hi, v);
    return _mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(_mm256_slli_epi32(v, 28)));
}

AVX2 static float nf4_dot_avx2(const float *x, const unsigned char *q, const float *scales,
                               int64_t k)
{
    __m256 lut_lo = _mm256_loadu_ps(lv_nf4_codebook), lut_hi = _mm256_loadu_ps(lv_nf4_codebook + 8);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t j = 0; j < k / LV_NF4_BLOCK; j++, q += LV_NF4_BLOCK / 2, x += LV_NF4_BLOCK) {
        __m256 t = _mm256_mul_ps(_mm256_loadu_ps(x), nf4x8(q, lut_lo, lut_hi));
        for (int i = 1; i < LV_NF4_BLOCK / 8; i++)
            t = _mm256_fmadd_ps(_mm256_loadu_ps(x + 8 * i), nf4x8(q + 4 * i, lut_lo, lut_hi), t);
        acc = _mm256_fmadd_ps(t, _mm256_set1_ps(scales[j]), acc);
    }
    return hsum256(acc);
}

/* lanes [0, n) of 8 set, as maskload wants them */
AVX2 static __m256i lanes8(int64_t n)
{
    __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), idx);
}

/* Four keys at a time, each with its own accumulator; a head's tail under 8 values through a
 * masked load. */
AVX2 static void attn_scores_avx2(float *sc, const float *q, const float *k, int64_t n,
                                  int64_t D, int64_t ld, float scale)
{
    int64_t D8 = D / 8 * 8;
    __m256i tail = lanes8(D - D8);
    int64_t j = 0;
    for (; j + 4 <= n; j += 4) {
        const float *k0 = k + j * ld, *k1 = k0 + ld, *k2 = k1 + ld, *k3 = k2 + ld;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int64_t d = 0; d < D8; d += 8) {
            __m256 qv = _mm256_loadu_ps(q + d);
            a0 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + d), a0);
            a1 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k1 + d), a1);
            a2 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k2 + d), a2);
            a3 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k3 + d), a3);
        }
        if (D8 < D) {
            __m256 qv = _mm256_maskload_ps(q + D8, tail);
            a0 = _mm256_fmadd_ps(qv, _mm256_maskload_ps(k0 + D8, tail), a0);
            a1 = _mm256_fmadd_ps(qv, _mm256_maskload_ps(k1 + D8, tail), a1);
            a2 = _mm256_fmadd_ps(qv, _mm256_maskload_ps(k2 + D8, tail), a2);
            a3 = _mm256_fmadd_ps(qv, _mm256_maskload_ps(k3 + D8, tail), a3);
        }
        sc[j] = scale * hsum256(a0);
        sc[j + 1] = scale * hsum256(a1);
        sc[j + 2] = scale * hsum256(a2);
        sc[j + 3] = scale * hsum256(a3);
    }
    for (; j < n; j++) {
        const float *kr = k + j * ld;
        __m256 a = _mm256_setzero_ps();
        for (int64_t d = 0; d < D8; d += 8)
            a = _mm256_fmadd_ps(_mm256_loadu_ps(q + d), _mm256_loadu_ps(kr + d), a);
        if (D8 < D)
            a = _mm256_fmadd_ps(_mm256_maskload_ps(q + D8, tail),
                                _mm256_maskload_ps(kr + D8, tail), a);
        sc[j] = scale * hsum256(a);
    }
}

/* o[0, 8 nv) += sum_j p[j] v_j, the last of the nv vectors masked by last; nv is a constant
 * where this is inlined, so the accumulators stay in registers */
__attribute__((always_inline)) AVX2 static inline void
accum_avx2(float *o, const float *p, const float *v, int64_t n, int64_t ld, int nv, __m256i last)
{
    __m256i all = _mm256_set1_epi32(-1);
    __m256 acc[8];
    for (int i = 0; i < nv; i++)
        acc[i] = _mm256_maskload_ps(o + 8 * i, i == nv - 1 ? last : all);
    for (int64_t j = 0; j < n; j++) {
        __m256 pj = _mm256_set1_ps(p[j]);
        const float *vr = v + j * ld;
        for (int i = 0; i < nv; i++)
            acc[i] = _mm256_fmadd_ps(pj, _mm256_maskload_ps(vr + 8 * i, i == nv - 1 ? last : all),
                                     acc[i]);
    }
    for (int i = 0; i < nv; i++)
        _mm256_maskstore_ps(o + 8 * i, i == nv - 1 ? last : all, acc[i]);
}

/* 64 values of o at a time in registers: one pass over the values for heads up to 64 */
AVX2 static void attn_accum_avx2(float *o, const float *p, const float *v, int64_t n, int64_t D,
                                 int64_t ld)
{
    for (int64_t d0 = 0; d0 < D; d0 += 64) {
        int64_t w = D - d0 < 64 ? D - d0 : 64;
        __m256i last = lanes8(w % 8 ? w % 8 : 8);
        switch ((w + 7) / 8) {
        case 1: accum_avx2(o + d0, p, v + d0, n, ld, 1, last); break;
        case 2: accum_avx2(o + d0, p, v + d0, n, ld, 2, last); break;
        case 3: accum_avx2(o + d0, p, v + d0, n, ld, 3, last); break;
        case 4: accum_avx2(o + d0, p, v + d0, n, ld, 4, last); break;
        case 5: accum_avx2(o + d0, p, v + d0, n, ld, 5, last); break;
        case 6: accum_avx2(o + d0, p, v + d0, n, ld, 6, last); break;
        case 7: accum_avx2(o + d0, p, v + d0, n, ld, 7, last); break;
        default: accum_avx2(o + d0, p, v + d0, n, ld, 8, last); break;
        }
    }
}

AVX2 static __m256 exp_avx2(__m256 x)
{
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(EXP_LO)), _mm256_set1_ps(EXP_HI));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(EXP_LOG2E)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(EXP_LN2_HI), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(EXP_LN2_LO), r);
    __m256 p = _mm256_set1_ps(EXP_P0);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P5));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_cvtps_epi32(n), 23);
    return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), e));
}

/* y = gate / (1 + exp(-gate)) * up, 8 at a time; the tail as the generic path does it */
AVX2 static void swiglu_avx2(float *y, const float *gate, const float *up, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 g = _mm256_loadu_ps(gate + i);
        __m256 d = _mm256_add_ps(_mm256_set1_ps(1.0f),
                                 exp_avx2(_mm256_sub_ps(_mm256_setzero_ps(), g)));
        _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_div_ps(g, d), _mm256_loadu_ps(up + i)));
    }
    swiglu_generic(y + i, gate + i, up + i, n - i);
}

/* --- AVX-512F --------------------------------------------------------------------------- */

#define AVX512 __attribute__((target("avx512f,avx2,fma,f16c")))

AVX512 static __m512 load_f16x16(const uint16_t *p)
{
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
}

AVX512 static __m512 load_bf16x16(const uint16_t *p)
{
    __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
}

#define DOT_AVX512(LOAD, T, TAIL)                                                            \
    const T *y = w;                                                                          \
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;                              \
    int64_t i = 0;                                                                           \
    for (; i + 64 <= k; i += 64) {                                                           \
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i), LOAD(y + i), a0);                       \
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 16), LOAD(y + i + 16), a1);             \
        a2 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 32), LOAD(y + i + 32), a2);             \
        a3 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 48), LOAD(y + i + 48), a3);             \
    }                                                                                        \
    for (; i + 16 <= k; i += 16)                                                             \
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i), LOAD(y + i), a0);                       \
    float s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1),                      \
                                                 _mm512_add_ps(a2, a3)));                    \
    for (; i < k; i++)                                                                       \
        s += x[i] * TAIL(y[i]);                                                              \
    return s;

AVX512 static float dot_f32_avx512(const float *x, const void *w, int64_t k)
{
    DOT_AVX512(_mm512_loadu_ps, float, SAME)
}

AVX512 static float dot_f16_avx512(const float *x, const void *w, int64_t k)
{
    DOT_AVX512(load_f16x16, uint16_t, lv_f16_to_f32)
}

AVX512 static float dot_bf16_avx512(const float *x, const void *w, int64_t k)
{
    DOT_AVX512(load_bf16x16, uint16_t, lv_bf16_to_f32)
}
/* 16 int8 at p as floats */
AVX512 static __m512 i8x16(const unsigned char *p)
{
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)));
}

AVX512 static float dot_q8_0_avx512(const float *x, const void *w, int64_t k)
{
    const unsigned char *b = w;
    __m512 acc = _mm512_setzero_ps();
    for (int64_t i = 0; i < k; i += 32, b += 34) {
        __m512 t = _mm512_mul_ps(_mm512_loadu_ps(x + i), i8x16(b + 2));
        t = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 16), i8x16(b + 18), t);
        acc = _mm512_fmadd_ps(t, _mm512_set1_ps(block_scale_f16c(b)), acc);
    }
    return _mm512_reduce_add_ps(acc);
}

/* 32 NF4 values from 16 bytes (high nibble first), looked up in the code book held in a zmm */
AVX512 static void nf4x32(const unsigned char *q, __m512 lut, __m512 *v0, __m512 *v1)
{
    __m128i b = _mm_loadu_si128((const __m128i *)q);
    __m128i hi = _mm_and_si128(_mm_srli_epi16(b, 4), _mm_set1_epi8(0x0f));
    __m128i lo = _mm_and_si128(b, _mm_set1_epi8(0x0f));
    /* interleaved back into value order */
    *v0 = _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(_mm_unpacklo_epi8(hi, lo)), lut);
    *v1 = _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(_mm_unpackhi_epi8(hi, lo)), lut);
}

AVX512 static float nf4_dot_avx512(const float *x, const unsigned char *q, const float *scales,
                                   int64_t k)
{
    __m512 lut = _mm512_loadu_ps(lv_nf4_codebook);
    __m512 acc0 = _mm512_setzero_ps(), acc1 = acc0;
    for (int64_t j = 0; j < k / LV_NF4_BLOCK; j++, q += LV_NF4_BLOCK / 2, x += LV_NF4_BLOCK) {
        __m512 w0, w1, w2, w3;
        nf4x32(q, lut, &w0, &w1);
        nf4x32(q + 16, lut, &w2, &w3);
        __m512 t0 = _mm512_mul_ps(_mm512_loadu_ps(x), w0);
        __m512 t1 = _mm512_mul_ps(_mm512_loadu_ps(x + 16), w1);
        t0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + 32), w2, t0);
        t1 = _mm512_fmadd_ps(_mm512_loadu_ps(x + 48), w3, t1);
        __m512 sc = _mm512_set1_ps(scales[j]);
        acc0 = _mm512_fmadd_ps(t0, sc, acc0);
        acc1 = _mm512_fmadd_ps(t1, sc, acc1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

/* Q4_0: 32 values from 16 bytes (value j in the low nibble of byte j, value j + 16 in the high
 * one), minus 8, looked up as floats */
AVX512 static float dot_q4_0_avx512(const float *x, const void *w, int64_t k)
{
    const unsigned char *b = w;
    static const float tab[16] = { -8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7 };
    const __m512 lut = _mm512_loadu_ps(tab);
    __m512 acc0 = _mm512_setzero_ps(), acc1 = acc0;
    int64_t i = 0;
    for (; i + 64 <= k; i += 64, b += 36) {
        __m512i v0 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(b + 2)));
        __m512i v1 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(b + 20)));
        __m512 t0 = _mm512_mul_ps(_mm512_loadu_ps(x + i), _mm512_permutexvar_ps(v0, lut));
        __m512 t1 = _mm512_mul_ps(_mm512_loadu_ps(x + i + 32), _mm512_permutexvar_ps(v1, lut));
        t0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 16),
                             _mm512_permutexvar_ps(_mm512_srli_epi32(v0, 4), lut), t0);
        t1 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 48),
                             _mm512_permutexvar_ps(_mm512_srli_epi32(v1, 4), lut), t1);
        acc0 = _mm512_fmadd_ps(t0, _mm512_set1_ps(block_scale_f16c(b)), acc0);
        acc1 = _mm512_fmadd_ps(t1, _mm512_set1_ps(block_scale_f16c(b + 18)), acc1);
    }
    for (; i < k; i += 32, b += 18) {
        __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(b + 2)));
        __m512 t = _mm512_mul_ps(_mm512_loadu_ps(x + i), _mm512_permutexvar_ps(v, lut));
        t = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 16),
                            _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), lut), t);
        acc0 = _mm512_fmadd_ps(t, _mm512_set1_ps(block_scale_f16c(b)), acc0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

/* Four keys at a time, as attn_scores_avx2, 16 values a step */
AVX512 static void attn_scores_avx512(float *sc, const float *q, const float *k, int64_t n,
                                      int64_t D, int64_t ld, float scale)
{
    int64_t D16 = D / 16 * 16;
    __mmask16 tail = (__mmask16)((1u << (D - D16)) - 1u);
    int64_t j = 0;
    for (; j + 4 <= n; j += 4) {
        const float *k0 = k + j * ld, *k1 = k0 + ld, *k2 = k1 + ld, *k3 = k2 + ld;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int64_t d = 0; d < D16; d += 16) {
            __m512 qv = _mm512_loadu_ps(q + d);
            a0 = _mm512_fmadd_ps(qv, _mm512_loadu_ps(k0 + d), a0);
            a1 = _mm512_fmadd_ps(qv, _mm512_loadu_ps(k1 + d), a1);
            a2 = _mm512_fmadd_ps(qv, _mm512_loadu_ps(k2 + d), a2);
            a3 = _mm512_fmadd_ps(qv, _mm512_loadu_ps(k3 + d), a3);
        }
        if (tail) {
            __m512 qv = _mm512_maskz_loadu_ps(tail, q + D16);
            a0 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(tail, k0 + D16), a0);
            a1 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(tail, k1 + D16), a1);
            a2 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(tail, k2 + D16), a2);
            a3 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(tail, k3 + D16), a3);
        }
        sc[j] = scale * _mm512_reduce_add_ps(a0);
        sc[j + 1] = scale * _mm512_reduce_add_ps(a1);
        sc[j + 2] = scale * _mm512_reduce_add_ps(a2);
        sc[j + 3] = scale * _mm512_reduce_add_ps(a3);
    }
    for (; j < n; j++) {
        const float *kr = k + j * ld;
        __m512 a = _mm512_setzero_ps();
        for (int64_t d = 0; d < D16; d += 16)
            a = _mm512_fmadd_ps(_mm512_loadu_ps(q + d), _mm512_loadu_ps(kr + d), a);
        if (tail)
            a = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, q + D16),
                                _mm512_maskz_loadu_ps(tail, kr + D16), a);
        sc[j] = scale * _mm512_reduce_add_ps(a);
    }
}

/* as accum_avx2, 16 values a vector */
__attribute__((always_inline)) AVX512 static inline void
accum_avx512(float *o, const float *p, const float *v, int64_t n, int64_t ld, int nv,
             __mmask16 last)
{
    __m512 acc[8];
    for (int i = 0; i < nv; i++)
        acc[i] = _mm512_maskz_loadu_ps(i == nv - 1 ? last : (__mmask16)0xffff, o + 16 * i);
    for (int64_t j = 0; j < n; j++) {
        __m512 pj = _mm512_set1_ps(p[j]);
        const float *vr = v + j * ld;
        for (int i = 0; i < nv; i++)
            acc[i] = _mm512_fmadd_ps(
                pj, _mm512_maskz_loadu_ps(i == nv - 1 ? last : (__mmask16)0xffff, vr + 16 * i),
                acc[i]);
    }
    for (int i = 0; i < nv; i++)
        _mm512_mask_storeu_ps(o + 16 * i, i == nv - 1 ? last : (__mmask16)0xffff, acc[i]);
}

/* 128 values of o at a time in registers: one pass over the values for heads up to 128 */
AVX512 static void attn_accum_avx512(float *o, const float *p, const float *v, int64_t n,
                                     int64_t D, int64_t ld)
{
    for (int64_t d0 = 0; d0 < D; d0 += 128) {
        int64_t w = D - d0 < 128 ? D - d0 : 128;
        __mmask16 last = (__mmask16)(w % 16 ? (1u << (w % 16)) - 1u : 0xffffu);
        switch ((w + 15) / 16) {
        case 1: accum_avx512(o + d0, p, v + d0, n, ld, 1, last); break;
        case 2: accum_avx512(o + d0, p, v + d0, n, ld, 2, last); break;
        case 3: accum_avx512(o + d0, p, v + d0, n, ld, 3, last); break;
        case 4: accum_avx512(o + d0, p, v + d0, n, ld, 4, last); break;
        case 5: accum_avx512(o + d0, p, v + d0, n, ld, 5, last); break;
        case 6: accum_avx512(o + d0, p, v + d0, n, ld, 6, last); break;
        case 7: accum_avx512(o + d0, p, v + d0, n, ld, 7, last); break;
        default: accum_avx512(o + d0, p, v + d0, n, ld, 8, last); break;
        }
    }
}

AVX512 static __m512 exp_avx512(__m512 x)
{
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(EXP_LO)), _mm512_set1_ps(EXP_HI));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(EXP_LOG2E)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(EXP_LN2_HI), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(EXP_LN2_LO), r);
    __m512 p = _mm512_set1_ps(EXP_P0);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P5));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    __m512i e = _mm512_slli_epi32(_mm512_cvtps_epi32(n), 23);
    return _mm512_castsi512_ps(_mm512_add_epi32(_mm512_castps_si512(p), e));
}

/* as swiglu_avx2, 16 at a time */
AVX512 static void swiglu_avx512(float *y, const float *gate, const float *up, int64_t n)
{
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 g = _mm512_loadu_ps(gate + i);
        __m512 d = _mm512_add_ps(_mm512_set1_ps(1.0f),
                                 exp_avx512(_mm512_sub_ps(_mm512_setzero_ps(), g)));
        _mm512_storeu_ps(y + i, _mm512_mul_ps(_mm512_div_ps(g, d), _mm512_loadu_ps(up + i)));
    }
    swiglu_generic(y + i, gate + i, up + i, n - i);
}

#endif /* LV_X86 */

/* --- the table and the choice ------------------------------------------------------------ */

static const struct cpu_simd simd_table[CPU_SIMD_COUNT] = {
    [CPU_SIMD_GENERIC] = { .name = "generic",
                           .dot = { [LV_F32] = dot_f32_generic, [LV_F16] = dot_f16_generic,
                                    [LV_BF16] = dot_bf16_generic, [LV_Q8_0] = dot_q8_0_generic,
                                    [LV_Q4_0] = dot_q4_0_generic },
                           .nf4_dot = nf4_dot_generic,
                           .attn_scores = attn_scores_generic,
                           .attn_accum = attn_accum_generic,
                           .swiglu = swiglu_generic },
#ifdef LV_X86
    [CPU_SIMD_AVX2] = { .name = "avx2",
                        .dot = { [LV_F32] = dot_f32_avx2, [LV_F16] = dot_f16_avx2,
                                 [LV_BF16] = dot_bf16_avx2, [LV_Q8_0] = dot_q8_0_avx2,
                                 [LV_Q4_0] = dot_q4_0_avx2 },
                        .nf4_dot = nf4_dot_avx2,
                        .attn_scores = attn_scores_avx2,
                        .attn_accum = attn_accum_avx2,
                        .swiglu = swiglu_avx2,
                        .to_f32 = { [LV_F16] = f16_to_f32_avx2, [LV_BF16] = bf16_to_f32_avx2 } },
    [CPU_SIMD_AVX512] = { .name = "avx512",
                          .dot = { [LV_F32] = dot_f32_avx512, [LV_F16] = dot_f16_avx512,
                                   [LV_BF16] = dot_bf16_avx512, [LV_Q8_0] = dot_q8_0_avx512,
                                   [LV_Q4_0] = dot_q4_0_avx512 },
                          .nf4_dot = nf4_dot_avx512,
                          .attn_scores = attn_scores_avx512,
                          .attn_accum = attn_accum_avx512,
                          .swiglu = swiglu_avx512,
                          .to_f32 = { [LV_F16] = f16_to_f32_avx2, [LV_BF16] = bf16_to_f32_avx2 } },
#endif
};

#ifdef LV_X86
/* F16C: CPUID leaf 1, ECX bit 29 (clang 14's __builtin_cpu_supports does not know it) */
static bool has_f16c(void)
{
    unsigned a, b, c, d;
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(1), "c"(0));
    (void)a;
    (void)b;
    (void)d;
    return (c >> 29) & 1u;
}
#endif

bool cpu_simd_supported(enum cpu_simd_level l)
{
    switch (l) {
    case CPU_SIMD_GENERIC: return true;
#ifdef LV_X86
    case CPU_SIMD_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && has_f16c();
    case CPU_SIMD_AVX512:
        /* the AVX-512 kernels use AVX2, FMA and F16C too */
        return cpu_simd_supported(CPU_SIMD_AVX2) && __builtin_cpu_supports("avx512f");
#endif
    default: return false;
    }
}

void cpu_to_f32(const struct cpu_simd *s, float *y, const void *x, lv_dtype dt, int64_t n)
{
    if (s->to_f32[dt])
        s->to_f32[dt](y, x, n);
    else
        lv_convert_row(y, LV_F32, x, dt, n);
}

const struct cpu_simd *cpu_simd_get(enum cpu_simd_level l)
{
    return (unsigned)l < CPU_SIMD_COUNT && cpu_simd_supported(l) ? &simd_table[l] : NULL;
}

static const struct cpu_simd *chosen;
static pthread_once_t chosen_once = PTHREAD_ONCE_INIT;

static void choose(void)
{
    const char *env = getenv("LAVINIA_SIMD");
    int best = CPU_SIMD_GENERIC;
    for (int l = CPU_SIMD_COUNT - 1; l > CPU_SIMD_GENERIC; l--)
        if (cpu_simd_supported((enum cpu_simd_level)l)) {
            best = l;
            break;
        }
    if (env && *env) {
        int want = -1;
        for (int l = 0; l < CPU_SIMD_COUNT; l++)
            if (strcmp(env, simd_table[l].name ? simd_table[l].name : "") == 0)
                want = l;
        if (want < 0 || !cpu_simd_supported((enum cpu_simd_level)want))
            lv_log(LV_LOG_WARN, "LAVINIA_SIMD=%s: not a path this CPU runs (generic, avx2, "
                   "avx512); using %s", env, simd_table[best].name);
        else
            best = want;
    }
    chosen = &simd_table[best];
}

const struct cpu_simd *cpu_simd(void)
{
    pthread_once(&chosen_once, choose);
    return chosen;
}

bool cpu_simd_use(enum cpu_simd_level l)
{
    pthread_once(&chosen_once, choose);
    if (!cpu_simd_get(l))
        return false;
    chosen = &simd_table[l];
    return true;
}
