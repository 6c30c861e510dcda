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

/* Q8_0x8 (tensor.h): groups of eight blocks, the scales first; the same sums as the Q8_0 dot,
 * in the same order */
static float dot_q8_0x8_generic(const float *x, const void *w, int64_t k)
{
    const unsigned char *g = w;
    float s = 0.0f;
    for (int64_t i = 0; i < k; g += 8 * 34) {
        int m = k - i < 256 ? (int)((k - i) / 32) : 8;
        for (int j = 0; j < m; j++, i += 32) {
            const unsigned char *q = g + 2 * m + 32 * j;
            float t = 0.0f;
            for (int v = 0; v < 32; v++)
                t += x[i + v] * (float)(int8_t)q[v];
            s += block_scale(g + 2 * j) * t;
        }
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

#ifdef LV_X86
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

/* The scales of the eight blocks from b on (BYTES apart) into sc: their F16 words gathered
 * in two general registers and widened by one F16C conversion. One conversion per block had
 * the int8 widening of the Q8_0 dot waiting on the same unit (in-cache rate +5%,
 * docs/NOTES.md). */
AVX2 static inline void block_scales8(float *sc, const unsigned char *b, size_t bytes)
{
    uint64_t lo = 0, hi = 0;
    for (int i = 0; i < 4; i++) {
        uint16_t h0, h1;
        memcpy(&h0, b + (size_t)i * bytes, sizeof h0);
        memcpy(&h1, b + (size_t)(i + 4) * bytes, sizeof h1);
        lo |= (uint64_t)h0 << 16 * i;
        hi |= (uint64_t)h1 << 16 * i;
    }
    _mm256_storeu_ps(sc, _mm256_cvtph_ps(_mm_set_epi64x((long long)hi, (long long)lo)));
}

/* The block loop of a Q8_0 or Q4_0 row (blocks BYTES long): BLOCK(i, b, d) adds the block
 * at b (values i..i+31) with scale d. Groups of eight blocks take their scales from
 * block_scales8, the rest one at a time; the sums are the same, in the same order, either
 * way. */
#define BLOCKS_OF(BYTES, BLOCK)                                                              \
    const unsigned char *b = w;                                                                \
    float sc8[8];                                                                              \
    int64_t i = 0;                                                                             \
    while (i + 256 <= k) {                                                                     \
        block_scales8(sc8, b, BYTES);                                                          \
        for (int j = 0; j < 8; j++, i += 32, b += BYTES)                                       \
            BLOCK(i, b, sc8[j])                                                                \
    }                                                                                          \
    for (; i < k; i += 32, b += BYTES)                                                         \
        BLOCK(i, b, block_scale_f16c(b))

/* The group loop of a Q8_0x8 row: VALUES(i, q, d) adds the 32 int8 at q (values i..i+31)
 * with scale d. A whole group's scales are one F16C conversion; a last group of m < 8 blocks
 * (never in a tensor: its rows are whole groups) takes its scales one at a time. */
#define GROUPS_OF_8(VALUES)                                                                    \
    const unsigned char *g = w;                                                                \
    float sc8[8];                                                                              \
    int64_t i = 0;                                                                             \
    for (; i + 256 <= k; g += 8 * 34) {                                                        \
        _mm256_storeu_ps(sc8, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)g)));           \
        for (int j = 0; j < 8; j++, i += 32)                                                   \
            VALUES(i, g + 16 + 32 * j, sc8[j])                                                 \
    }                                                                                          \
    for (int m = (int)((k - i) / 32), j = 0; j < m; j++, i += 32)                              \
        VALUES(i, g + 2 * m + 32 * j, block_scale_f16c(g + 2 * j))

/* 8 int8 at p as floats */
AVX2 static __m256 i8x8(const unsigned char *p)
{
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}

/* the 32 int8 at q (values i..i+31) with scale d, and the same for the block at b */
#define Q8_0_VALUES_AVX2(i, q, d)                                                            \
    {                                                                                          \
        __m256 t = _mm256_mul_ps(_mm256_loadu_ps(x + (i)), i8x8(q));                           \
        t = _mm256_fmadd_ps(_mm256_loadu_ps(x + (i) + 8), i8x8((q) + 8), t);                   \
        t = _mm256_fmadd_ps(_mm256_loadu_ps(x + (i) + 16), i8x8((q) + 16), t);                 \
        t = _mm256_fmadd_ps(_mm256_loadu_ps(x + (i) + 24), i8x8((q) + 24), t);                 \
        acc = _mm256_fmadd_ps(t, _mm256_set1_ps(d), acc);                                      \
    }
#define Q8_0_BLOCK_AVX2(i, b, d) Q8_0_VALUES_AVX2(i, (b) + 2, d)

AVX2 static float dot_q8_0_avx2(const float *x, const void *w, int64_t k)
{
    __m256 acc = _mm256_setzero_ps();
    BLOCKS_OF(34, Q8_0_BLOCK_AVX2)
    return hsum256(acc);
}

AVX2 static float dot_q8_0x8_avx2(const float *x, const void *w, int64_t k)
{
    __m256 acc = _mm256_setzero_ps();
    GROUPS_OF_8(Q8_0_VALUES_AVX2)
    return hsum256(acc);
}

#define Q4_0_BLOCK_AVX2(i, b, d)                                                             \
    {                                                                                          \
        __m128i q = _mm_loadu_si128((const __m128i *)((b) + 2));                               \
        __m128i lo = _mm_sub_epi8(_mm_and_si128(q, lo_mask), eight);                           \
        __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(q, 4), lo_mask), eight);        \
        __m256 l0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo));                              \
        __m256 l1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8)));           \
        __m256 h0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi));                              \
        __m256 h1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8)));           \
        __m256 t = _mm256_mul_ps(_mm256_loadu_ps(x + (i)), l0);                                \
        t = _mm256_fmadd_ps(_mm256_loadu_ps(x + (i) + 8), l1, t);                              \
        t = _mm256_fmadd_ps(_mm256_loadu_ps(x + (i) + 16), h0, t);                             \
        t = _mm256_fmadd_ps(_mm256_loadu_ps(x + (i) + 24), h1, t);                             \
        acc = _mm256_fmadd_ps(t, _mm256_set1_ps(d), acc);                                      \
    }

AVX2 static float dot_q4_0_avx2(const float *x, const void *w, int64_t k)
{
    const __m128i lo_mask = _mm_set1_epi8(0x0f), eight = _mm_set1_epi8(8);
    __m256 acc = _mm256_setzero_ps();
    BLOCKS_OF(18, Q4_0_BLOCK_AVX2)
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

/* masked loads and stores with one signature for both widths */
AVX2 static inline __m256 mload256(const float *p, __m256i m)
{
    return _mm256_maskload_ps(p, m);
}

AVX2 static inline void mstore256(float *p, __m256i m, __m256 v)
{
    _mm256_maskstore_ps(p, m, v);
}

/*
 * The decoding attention's row kernels at one vector width B (256 or 512): W floats a vector,
 * M the mask type, ALL a full mask, HSUM a horizontal sum. Scores go four keys at a time,
 * each with its own accumulator, the head's last D % W values through a masked load
 * (SCORES_BODY, with tail the mask of those values). The weighted sum keeps up to 8 vectors
 * of o in registers (ACCUM_BODY, nv a constant where it is inlined, the last vector masked
 * by last) and passes over the values once per 8 W of the head (ACCUM_SPLIT).
 */
#define SCORES_BODY(B, W, HSUM)                                                              \
    int64_t DW = D / W * W, j = 0;                                                             \
    for (; j + 4 <= n; j += 4) {                                                               \
        const float *k0 = k + j * ld, *k1 = k0 + ld, *k2 = k1 + ld, *k3 = k2 + ld;             \
        __m##B a0 = _mm##B##_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;                          \
        for (int64_t d = 0; d < DW; d += W) {                                                  \
            __m##B qv = _mm##B##_loadu_ps(q + d);                                              \
            a0 = _mm##B##_fmadd_ps(qv, _mm##B##_loadu_ps(k0 + d), a0);                         \
            a1 = _mm##B##_fmadd_ps(qv, _mm##B##_loadu_ps(k1 + d), a1);                         \
            a2 = _mm##B##_fmadd_ps(qv, _mm##B##_loadu_ps(k2 + d), a2);                         \
            a3 = _mm##B##_fmadd_ps(qv, _mm##B##_loadu_ps(k3 + d), a3);                         \
        }                                                                                      \
        if (DW < D) {                                                                          \
            __m##B qv = mload##B(q + DW, tail);                                                \
            a0 = _mm##B##_fmadd_ps(qv, mload##B(k0 + DW, tail), a0);                           \
            a1 = _mm##B##_fmadd_ps(qv, mload##B(k1 + DW, tail), a1);                           \
            a2 = _mm##B##_fmadd_ps(qv, mload##B(k2 + DW, tail), a2);                           \
            a3 = _mm##B##_fmadd_ps(qv, mload##B(k3 + DW, tail), a3);                           \
        }                                                                                      \
        sc[j] = scale * HSUM(a0);                                                              \
        sc[j + 1] = scale * HSUM(a1);                                                          \
        sc[j + 2] = scale * HSUM(a2);                                                          \
        sc[j + 3] = scale * HSUM(a3);                                                          \
    }                                                                                          \
    for (; j < n; j++) {                                                                       \
        const float *kr = k + j * ld;                                                          \
        __m##B a = _mm##B##_setzero_ps();                                                      \
        for (int64_t d = 0; d < DW; d += W)                                                    \
            a = _mm##B##_fmadd_ps(_mm##B##_loadu_ps(q + d), _mm##B##_loadu_ps(kr + d), a);     \
        if (DW < D)                                                                            \
            a = _mm##B##_fmadd_ps(mload##B(q + DW, tail), mload##B(kr + DW, tail), a);         \
        sc[j] = scale * HSUM(a);                                                               \
    }

#define ACCUM_BODY(B, W, ALL)                                                                \
    __m##B acc[8];                                                                             \
    for (int i = 0; i < nv; i++)                                                               \
        acc[i] = mload##B(o + W * i, i == nv - 1 ? last : ALL);                                \
    for (int64_t j = 0; j < n; j++) {                                                          \
        __m##B pj = _mm##B##_set1_ps(p[j]);                                                    \
        const float *vr = v + j * ld;                                                          \
        for (int i = 0; i < nv; i++)                                                           \
            acc[i] = _mm##B##_fmadd_ps(pj, mload##B(vr + W * i, i == nv - 1 ? last : ALL),     \
                                       acc[i]);                                                \
    }                                                                                          \
    for (int i = 0; i < nv; i++)                                                               \
        mstore##B(o + W * i, i == nv - 1 ? last : ALL, acc[i]);

#define ACCUM_SPLIT(W, ACCUM, LAST)                                                          \
    for (int64_t d0 = 0; d0 < D; d0 += 8 * W) {                                                \
        int64_t w = D - d0 < 8 * W ? D - d0 : 8 * W;                                           \
        switch ((w + W - 1) / W) {                                                             \
        case 1: ACCUM(o + d0, p, v + d0, n, ld, 1, LAST(w)); break;                            \
        case 2: ACCUM(o + d0, p, v + d0, n, ld, 2, LAST(w)); break;                            \
        case 3: ACCUM(o + d0, p, v + d0, n, ld, 3, LAST(w)); break;                            \
        case 4: ACCUM(o + d0, p, v + d0, n, ld, 4, LAST(w)); break;                            \
        case 5: ACCUM(o + d0, p, v + d0, n, ld, 5, LAST(w)); break;                            \
        case 6: ACCUM(o + d0, p, v + d0, n, ld, 6, LAST(w)); break;                            \
        case 7: ACCUM(o + d0, p, v + d0, n, ld, 7, LAST(w)); break;                            \
        default: ACCUM(o + d0, p, v + d0, n, ld, 8, LAST(w)); break;                           \
        }                                                                                      \
    }

AVX2 static void attn_scores_avx2(float *sc, const float *q, const float *k, int64_t n,
                                  int64_t D, int64_t ld, float scale)
{
    __m256i tail = lanes8(D % 8);
    SCORES_BODY(256, 8, hsum256)
}

__attribute__((always_inline)) AVX2 static inline void
accum_avx2(float *o, const float *p, const float *v, int64_t n, int64_t ld, int nv, __m256i last)
{
    ACCUM_BODY(256, 8, _mm256_set1_epi32(-1))
}

/* the mask of the last vector of w values */
#define LAST8(w) lanes8((w) % 8 ? (w) % 8 : 8)

AVX2 static void attn_accum_avx2(float *o, const float *p, const float *v, int64_t n, int64_t D,
                                 int64_t ld)
{
    ACCUM_SPLIT(8, accum_avx2, LAST8)
}

/*
 * exp and SwiGLU at one vector width B (256 or 512) with its rounding intrinsic ROUND: the
 * body of exp_avxN(x) and of swiglu_avxN's loop, 8 or 16 values a step.
 */
#define EXP_BODY(B, ROUND)                                                                   \
    x = _mm##B##_min_ps(_mm##B##_max_ps(x, _mm##B##_set1_ps(EXP_LO)),                          \
                        _mm##B##_set1_ps(EXP_HI));                                             \
    __m##B n = ROUND(_mm##B##_mul_ps(x, _mm##B##_set1_ps(EXP_LOG2E)),                          \
                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);                           \
    __m##B r = _mm##B##_fnmadd_ps(n, _mm##B##_set1_ps(EXP_LN2_HI), x);                         \
    r = _mm##B##_fnmadd_ps(n, _mm##B##_set1_ps(EXP_LN2_LO), r);                                \
    __m##B p = _mm##B##_set1_ps(EXP_P0);                                                       \
    p = _mm##B##_fmadd_ps(p, r, _mm##B##_set1_ps(EXP_P1));                                     \
    p = _mm##B##_fmadd_ps(p, r, _mm##B##_set1_ps(EXP_P2));                                     \
    p = _mm##B##_fmadd_ps(p, r, _mm##B##_set1_ps(EXP_P3));                                     \
    p = _mm##B##_fmadd_ps(p, r, _mm##B##_set1_ps(EXP_P4));                                     \
    p = _mm##B##_fmadd_ps(p, r, _mm##B##_set1_ps(EXP_P5));                                     \
    p = _mm##B##_fmadd_ps(p, _mm##B##_mul_ps(r, r), _mm##B##_add_ps(r, _mm##B##_set1_ps(1.0f))); \
    __m##B##i e = _mm##B##_slli_epi32(_mm##B##_cvtps_epi32(n), 23);                            \
    return _mm##B##_castsi##B##_ps(_mm##B##_add_epi32(_mm##B##_castps_si##B(p), e));

#define SWIGLU_BODY(B, EXP)                                                                  \
    int64_t i = 0, w = B / 32;                                                                 \
    for (; i + w <= n; i += w) {                                                               \
        __m##B g = _mm##B##_loadu_ps(gate + i);                                                \
        __m##B d = _mm##B##_add_ps(_mm##B##_set1_ps(1.0f),                                     \
                                   EXP(_mm##B##_sub_ps(_mm##B##_setzero_ps(), g)));            \
        _mm##B##_storeu_ps(y + i, _mm##B##_mul_ps(_mm##B##_div_ps(g, d),                       \
                                                  _mm##B##_loadu_ps(up + i)));                 \
    }                                                                                          \
    swiglu_generic(y + i, gate + i, up + i, n - i);

AVX2 static __m256 exp_avx2(__m256 x)
{
    EXP_BODY(256, _mm256_round_ps)
}

/* y = gate / (1 + exp(-gate)) * up, 8 at a time; the tail as the generic path does it */
AVX2 static void swiglu_avx2(float *y, const float *gate, const float *up, int64_t n)
{
    SWIGLU_BODY(256, exp_avx2)
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

#define Q8_0_VALUES_AVX512(i, q, d)                                                          \
    {                                                                                          \
        __m512 t = _mm512_mul_ps(_mm512_loadu_ps(x + (i)), i8x16(q));                          \
        t = _mm512_fmadd_ps(_mm512_loadu_ps(x + (i) + 16), i8x16((q) + 16), t);                \
        acc = _mm512_fmadd_ps(t, _mm512_set1_ps(d), acc);                                      \
    }
#define Q8_0_BLOCK_AVX512(i, b, d) Q8_0_VALUES_AVX512(i, (b) + 2, d)

AVX512 static float dot_q8_0_avx512(const float *x, const void *w, int64_t k)
{
    __m512 acc = _mm512_setzero_ps();
    BLOCKS_OF(34, Q8_0_BLOCK_AVX512)
    return _mm512_reduce_add_ps(acc);
}

AVX512 static float dot_q8_0x8_avx512(const float *x, const void *w, int64_t k)
{
    __m512 acc = _mm512_setzero_ps();
    GROUPS_OF_8(Q8_0_VALUES_AVX512)
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
 * one), minus 8, looked up as floats. Two blocks at b (values i..i+63), one accumulator
 * each, scales d0 and d1: */
#define Q4_0_PAIR_AVX512(i, b, d0, d1)                                                       \
    {                                                                                          \
        __m512i v0 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)((b) + 2)));        \
        __m512i v1 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)((b) + 20)));       \
        __m512 t0 = _mm512_mul_ps(_mm512_loadu_ps(x + (i)), _mm512_permutexvar_ps(v0, lut));   \
        __m512 t1 = _mm512_mul_ps(_mm512_loadu_ps(x + (i) + 32),                               \
                                  _mm512_permutexvar_ps(v1, lut));                             \
        t0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + (i) + 16),                                    \
                             _mm512_permutexvar_ps(_mm512_srli_epi32(v0, 4), lut), t0);        \
        t1 = _mm512_fmadd_ps(_mm512_loadu_ps(x + (i) + 48),                                    \
                             _mm512_permutexvar_ps(_mm512_srli_epi32(v1, 4), lut), t1);        \
        acc0 = _mm512_fmadd_ps(t0, _mm512_set1_ps(d0), acc0);                                  \
        acc1 = _mm512_fmadd_ps(t1, _mm512_set1_ps(d1), acc1);                                  \
    }

/* Q4_0: pairs of blocks (scales eight blocks at a time, as BLOCKS_OF), then a last block */
AVX512 static float dot_q4_0_avx512(const float *x, const void *w, int64_t k)
{
    const unsigned char *b = w;
    static const float tab[16] = { -8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7 };
    const __m512 lut = _mm512_loadu_ps(tab);
    __m512 acc0 = _mm512_setzero_ps(), acc1 = acc0;
    float sc8[8];
    int64_t i = 0;
    while (i + 256 <= k) {
        block_scales8(sc8, b, 18);
        for (int j = 0; j < 8; j += 2, i += 64, b += 36)
            Q4_0_PAIR_AVX512(i, b, sc8[j], sc8[j + 1])
    }
    for (; i + 64 <= k; i += 64, b += 36)
        Q4_0_PAIR_AVX512(i, b, block_scale_f16c(b), block_scale_f16c(b + 18))
    for (; i < k; i += 32, b += 18) {
        __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(b + 2)));
        __m512 t = _mm512_mul_ps(_mm512_loadu_ps(x + i), _mm512_permutexvar_ps(v, lut));
        t = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 16),
                            _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), lut), t);
        acc0 = _mm512_fmadd_ps(t, _mm512_set1_ps(block_scale_f16c(b)), acc0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

AVX512 static inline __m512 mload512(const float *p, __mmask16 m)
{
    return _mm512_maskz_loadu_ps(m, p);
}

AVX512 static inline void mstore512(float *p, __mmask16 m, __m512 v)
{
    _mm512_mask_storeu_ps(p, m, v);
}

AVX512 static void attn_scores_avx512(float *sc, const float *q, const float *k, int64_t n,
                                      int64_t D, int64_t ld, float scale)
{
    __mmask16 tail = (__mmask16)((1u << (D % 16)) - 1u);
    SCORES_BODY(512, 16, _mm512_reduce_add_ps)
}

__attribute__((always_inline)) AVX512 static inline void
accum_avx512(float *o, const float *p, const float *v, int64_t n, int64_t ld, int nv,
             __mmask16 last)
{
    ACCUM_BODY(512, 16, (__mmask16)0xffff)
}

#define LAST16(w) (__mmask16)((w) % 16 ? (1u << ((w) % 16)) - 1u : 0xffffu)

AVX512 static void attn_accum_avx512(float *o, const float *p, const float *v, int64_t n,
                                     int64_t D, int64_t ld)
{
    ACCUM_SPLIT(16, accum_avx512, LAST16)
}

AVX512 static __m512 exp_avx512(__m512 x)
{
    EXP_BODY(512, _mm512_roundscale_ps)
}

/* as swiglu_avx2, 16 at a time */
AVX512 static void swiglu_avx512(float *y, const float *gate, const float *up, int64_t n)
{
    SWIGLU_BODY(512, exp_avx512)
}

#endif /* LV_X86 */

/* --- the table and the choice ------------------------------------------------------------ */

static const struct cpu_simd simd_table[CPU_SIMD_COUNT] = {
    [CPU_SIMD_GENERIC] = { .name = "generic",
                           .dot = { [LV_F32] = dot_f32_generic, [LV_F16] = dot_f16_generic,
                                    [LV_BF16] = dot_bf16_generic, [LV_Q8_0] = dot_q8_0_generic,
                                    [LV_Q4_0] = dot_q4_0_generic,
                                    [LV_Q8_0X8] = dot_q8_0x8_generic },
                           .nf4_dot = nf4_dot_generic,
                           .attn_scores = attn_scores_generic,
                           .attn_accum = attn_accum_generic,
                           .swiglu = swiglu_generic },
#ifdef LV_X86
    [CPU_SIMD_AVX2] = { .name = "avx2",
                        .dot = { [LV_F32] = dot_f32_avx2, [LV_F16] = dot_f16_avx2,
                                 [LV_BF16] = dot_bf16_avx2, [LV_Q8_0] = dot_q8_0_avx2,
                                 [LV_Q4_0] = dot_q4_0_avx2, [LV_Q8_0X8] = dot_q8_0x8_avx2 },
                        .nf4_dot = nf4_dot_avx2,
                        .attn_scores = attn_scores_avx2,
                        .attn_accum = attn_accum_avx2,
                        .swiglu = swiglu_avx2,
                        .to_f32 = { [LV_F16] = f16_to_f32_avx2, [LV_BF16] = bf16_to_f32_avx2 } },
    [CPU_SIMD_AVX512] = { .name = "avx512",
                          .dot = { [LV_F32] = dot_f32_avx512, [LV_F16] = dot_f16_avx512,
                                   [LV_BF16] = dot_bf16_avx512, [LV_Q8_0] = dot_q8_0_avx512,
                                   [LV_Q4_0] = dot_q4_0_avx512,
                                   [LV_Q8_0X8] = dot_q8_0x8_avx512 },
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
