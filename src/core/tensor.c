/*
 * tensor.c: tensor headers, dtypes and their conversions, and leaf lifetime.
 *
 * F16 and BF16 conversions round to nearest even (the FPU's default mode does the subnormal
 * half case; nothing here changes the rounding mode). NaN stays NaN, overflow gives infinity.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "lavinia/tensor.h"

#include <math.h>
#include <pthread.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lavinia/error.h"
#include "util/buf.h"
#include "util/round.h"

/* ----------------------------------------------------------------------------------------
 * dtypes
 */

static const struct {
    const char *name;
    size_t size;               /* bytes per element, 0 for block types */
    size_t block_bytes;        /* bytes per LV_QBLOCK values of a block type */
} dtype_table[] = {
    [LV_F32]  = { .name = "F32",  .size = 4 },
    [LV_F16]  = { .name = "F16",  .size = 2 },
    [LV_BF16] = { .name = "BF16", .size = 2 },
    [LV_I32]  = { .name = "I32",  .size = 4 },
    [LV_Q8_0] = { .name = "Q8_0", .block_bytes = 34 },
    [LV_Q4_0] = { .name = "Q4_0", .block_bytes = 18 },
    [LV_NF4]  = { .name = "NF4",  .block_bytes = 1 },      /* whole-tensor layout, below */
    [LV_Q8_0X8] = { .name = "Q8_0x8", .block_bytes = 34 },
};
_Static_assert(sizeof dtype_table / sizeof dtype_table[0] == LV_DTYPE_COUNT,
               "dtype_table and lv_dtype disagree");

size_t lv_dtype_size(lv_dtype t)
{
    return (unsigned)t < LV_DTYPE_COUNT ? dtype_table[t].size : 0;
}

bool lv_dtype_is_block(lv_dtype t)
{
    return (unsigned)t < LV_DTYPE_COUNT && dtype_table[t].block_bytes > 0;
}

size_t lv_dtype_bytes(lv_dtype t, int64_t n)
{
    if ((unsigned)t >= LV_DTYPE_COUNT || n < 0)
        return 0;
    if (t == LV_NF4) {
        int64_t nb = n / LV_NF4_BLOCK, ng = (nb + LV_NF4_GROUP - 1) / LV_NF4_GROUP;
        return (size_t)(n / 2 + nb) + (size_t)(ng + 1) * sizeof(float);
    }
    return dtype_table[t].block_bytes ? (size_t)(n / LV_QBLOCK) * dtype_table[t].block_bytes
                                      : (size_t)n * dtype_table[t].size;
}

/* --- NF4 --------------------------------------------------------------------------------
 * Every step is defined in double precision and rounded to float where it is stored, so that
 * a float64 reference (tests/reference/gen_nf4.py) makes the same choices bit for bit. */

/* QLoRA's NormalFloat-4 values (bitsandbytes' table) */
const float lv_nf4_codebook[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
    -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
    0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
    0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f,
};

float lv_nf4_value(int i)
{
    return i >= 0 && i < 16 ? lv_nf4_codebook[i] : NAN;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* bitsandbytes' create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8): for
 * exponents 10^-6 .. 10^0, the midpoints of 2^i + 1 points spaced evenly from 0.1 to 1, with
 * both signs; then 0 and 1; sorted. Computed in double, stored as float. */
static float dyn_map[256];
static pthread_once_t dyn_map_once = PTHREAD_ONCE_INIT;

static void dynamic_map_fill(void)
{
    double v[256];
    int n = 0;
    for (int i = 0; i < 7; i++) {
        int items = (1 << i) + 1;
        for (int k = 0; k + 1 < items; k++) {
            double b0 = 0.1 + 0.9 * k / (items - 1), b1 = 0.1 + 0.9 * (k + 1) / (items - 1);
            double mean = (b0 + b1) / 2.0, e = pow(10.0, -6 + i);
            v[n++] = e * mean;
            v[n++] = -e * mean;
        }
    }
    v[n++] = 0.0;
    v[n++] = 1.0;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    for (int i = 0; i < 256; i++)
        dyn_map[i] = (float)v[i];
}

/* filled once, on first use, whichever thread gets there first (decoding threads read it) */
static const float *dynamic_map(void)
{
    pthread_once(&dyn_map_once, dynamic_map_fill);
    return dyn_map;
}

float lv_dynamic_map_value(int i)
{
    return i >= 0 && i < 256 ? dynamic_map()[i] : NAN;
}

/* the index of the value nearest to x in a sorted table (ties: the lower) */
static int nearest(const float *table, int n, double x)
{
    int best = 0;
    double d = fabs(x - table[0]);
    for (int i = 1; i < n; i++) {
        double e = fabs(x - table[i]);
        if (e < d) {
            d = e;
            best = i;
        }
    }
    return best;
}

struct nf4_layout {
    unsigned char *codes, *qabs;
    float *group, *offset;
    int64_t nb, ng;
};

static struct nf4_layout nf4_parts(const void *data, int64_t n)
{
    struct nf4_layout l;
    l.nb = n / LV_NF4_BLOCK;
    l.ng = (l.nb + LV_NF4_GROUP - 1) / LV_NF4_GROUP;
    l.codes = (unsigned char *)data;
    l.qabs = l.codes + n / 2;
    l.group = (float *)(void *)(l.qabs + l.nb);      /* may be unaligned: memcpy below */
    l.offset = l.group + l.ng;
    return l;
}

static float get_f(const float *p)
{
    float v;
    memcpy(&v, p, sizeof v);
    return v;
}

static void put_f(float *p, float v)
{
    memcpy(p, &v, sizeof v);
}

/* the scale of block b */
static float nf4_scale(const struct nf4_layout *l, int64_t b)
{
    double s = (double)dynamic_map()[l->qabs[b]] * get_f(l->group + b / LV_NF4_GROUP) +
               get_f(l->offset);
    return (float)s;
}

void lv_nf4_quantize(void *dst, const float *x, int64_t n)
{
    struct nf4_layout l = nf4_parts(dst, n);
    const float *map = dynamic_map();
    float *absmax = malloc((size_t)(l.nb ? l.nb : 1) * sizeof *absmax);
    if (!absmax)
        return;
    double sum = 0;
    for (int64_t b = 0; b < l.nb; b++) {
        float a = 0;
        for (int j = 0; j < LV_NF4_BLOCK; j++)
            a = fmaxf(a, fabsf(x[b * LV_NF4_BLOCK + j]));
        absmax[b] = a;
        sum += a;
        for (int j = 0; j < LV_NF4_BLOCK; j += 2) {
            int64_t i = b * LV_NF4_BLOCK + j;
            int hi = a > 0 ? nearest(lv_nf4_codebook, 16, (double)x[i] / a) : 7;
            int lo = a > 0 ? nearest(lv_nf4_codebook, 16, (double)x[i + 1] / a) : 7;
            l.codes[i / 2] = (unsigned char)(hi << 4 | lo);
        }
    }
    float offset = (float)(l.nb ? sum / (double)l.nb : 0.0);
    put_f(l.offset, offset);
    for (int64_t g = 0; g < l.ng; g++) {
        int64_t b0 = g * LV_NF4_GROUP, b1 = b0 + LV_NF4_GROUP < l.nb ? b0 + LV_NF4_GROUP : l.nb;
        float a2 = 0;
        for (int64_t b = b0; b < b1; b++)
            a2 = fmaxf(a2, fabsf((float)((double)absmax[b] - offset)));
        put_f(l.group + g, a2);
        for (int64_t b = b0; b < b1; b++) {
            double c = (double)(float)((double)absmax[b] - offset);
            l.qabs[b] = (unsigned char)(a2 > 0 ? nearest(map, 256, c / a2) : 127);
        }
    }
    free(absmax);
}

void lv_nf4_block_scales(float *scales, const void *src, int64_t n, int64_t first,
                         int64_t count)
{
    struct nf4_layout l = nf4_parts(src, n);
    const float *map = dynamic_map();
    double off = get_f(l.offset), grp = 0.0;
    for (int64_t b = 0, g = -1; b < count && first + b < l.nb; b++) {
        if ((first + b) / LV_NF4_GROUP != g) {
            g = (first + b) / LV_NF4_GROUP;
            grp = get_f(l.group + g);
        }
        /* nf4_scale's arithmetic, with the loads hoisted (decoding calls this per row) */
        scales[b] = (float)((double)map[l.qabs[first + b]] * grp + off);
    }
}

void lv_nf4_dequantize(float *y, const void *src, int64_t n)
{
    struct nf4_layout l = nf4_parts(src, n);
    for (int64_t b = 0; b < l.nb; b++) {
        float s = nf4_scale(&l, b);
        for (int j = 0; j < LV_NF4_BLOCK; j += 2) {
            int64_t i = b * LV_NF4_BLOCK + j;
            unsigned char c = l.codes[i / 2];
            y[i] = lv_nf4_codebook[c >> 4] * s;
            y[i + 1] = lv_nf4_codebook[c & 0x0f] * s;
        }
    }
}

/* --- ggml's Q8_0 and Q4_0 (ggml-quants.c, quantize_row_*_ref / dequantize_row_*) --- */

static void q8_0_dequant(float *y, const unsigned char *b, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, b += 34) {
        float d = lv_f16_to_f32((uint16_t)(b[0] | b[1] << 8));
        for (int j = 0; j < 32; j++)
            y[i * 32 + j] = d * (float)(int8_t)b[2 + j];
    }
}

static void q4_0_dequant(float *y, const unsigned char *b, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, b += 18) {
        float d = lv_f16_to_f32((uint16_t)(b[0] | b[1] << 8));
        for (int j = 0; j < 16; j++) {
            y[i * 32 + j] = (float)((b[2 + j] & 0x0f) - 8) * d;
            y[i * 32 + j + 16] = (float)((b[2 + j] >> 4) - 8) * d;
        }
    }
}

/* Q8_0x8 (tensor.h): the byte offsets of block b's scale and values in an array of nb blocks */
static inline void q8_0x8_block(int64_t nb, int64_t b, int64_t *scale, int64_t *q)
{
    int64_t g = b / 8, j = b % 8, m = nb - g * 8 < 8 ? nb - g * 8 : 8;
    *scale = g * 8 * 34 + 2 * j;
    *q = g * 8 * 34 + 2 * m + 32 * j;
}

/* nb Q8_0 blocks into Q8_0x8, and back: the same bytes, moved */
static void q8_0x8_pack(unsigned char *dst, const unsigned char *src, int64_t nb)
{
    for (int64_t b = 0, sc, q; b < nb; b++) {
        q8_0x8_block(nb, b, &sc, &q);
        memcpy(dst + sc, src + b * 34, 2);
        memcpy(dst + q, src + b * 34 + 2, 32);
    }
}

static void q8_0x8_unpack(unsigned char *dst, const unsigned char *src, int64_t nb)
{
    for (int64_t b = 0, sc, q; b < nb; b++) {
        q8_0x8_block(nb, b, &sc, &q);
        memcpy(dst + b * 34, src + sc, 2);
        memcpy(dst + b * 34 + 2, src + q, 32);
    }
}

/* 32 int8 at q times d */
static void scaled_int8(float *restrict y, float d, const unsigned char *restrict q)
{
    for (int v = 0; v < 32; v++)
        y[v] = d * (float)(int8_t)q[v];
}

void lv_q8_0x8_dequantize(float *y, const void *src, int64_t n, int64_t first, int64_t count)
{
    const unsigned char *base = src;
    int64_t nb = n / 32;
    for (int64_t b = first / 32, i = 0, sc, q; i < count; b++, i += 32) {
        q8_0x8_block(nb, b, &sc, &q);
        scaled_int8(y + i, lv_f16_to_f32((uint16_t)(base[sc] | base[sc + 1] << 8)), base + q);
    }
}

#ifdef __SSE2__
/* 32 values times id, rounded as roundf, as the low bytes of their int32 (C's int8_t cast on
 * x86: 0 for NaN) into q: truncation, then a step away from zero where the dropped part is at
 * least a half (lv_round_half_away, four at a time; |x * id| <= 127 or NaN here) */
static void q8_0_round32(unsigned char *q, const float *x, float id)
{
    const __m128 vid = _mm_set1_ps(id), half = _mm_set1_ps(0.5f), mhalf = _mm_set1_ps(-0.5f);
    const __m128i low = _mm_set1_epi32(0xff);
    for (int j = 0; j < 32; j += 16) {
        __m128i w[4];
        for (int k = 0; k < 4; k++) {
            __m128 v = _mm_mul_ps(_mm_loadu_ps(x + j + 4 * k), vid);
            __m128i i = _mm_cvttps_epi32(v);
            __m128 r = _mm_sub_ps(v, _mm_cvtepi32_ps(i));
            i = _mm_sub_epi32(i, _mm_castps_si128(_mm_cmpge_ps(r, half)));
            i = _mm_add_epi32(i, _mm_castps_si128(_mm_cmple_ps(r, mhalf)));
            w[k] = _mm_and_si128(i, low);
        }
        __m128i p = _mm_packus_epi16(_mm_packs_epi32(w[0], w[1]), _mm_packs_epi32(w[2], w[3]));
        _mm_storeu_si128((__m128i *)(q + j), p);
    }
}
#endif

static void q8_0_quant(unsigned char *b, const float *x, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, b += 34, x += 32) {
        /* the largest |x| (NaNs pass over), as four running maxima: no 32-long chain */
        float m0 = 0.0f, m1 = 0.0f, m2 = 0.0f, m3 = 0.0f;
        for (int j = 0; j < 32; j += 4) {
            m0 = fabsf(x[j]) > m0 ? fabsf(x[j]) : m0;
            m1 = fabsf(x[j + 1]) > m1 ? fabsf(x[j + 1]) : m1;
            m2 = fabsf(x[j + 2]) > m2 ? fabsf(x[j + 2]) : m2;
            m3 = fabsf(x[j + 3]) > m3 ? fabsf(x[j + 3]) : m3;
        }
        float amax = m0 > m1 ? m0 : m1;
        amax = m2 > amax ? m2 : amax;
        amax = m3 > amax ? m3 : amax;
        float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        uint16_t h = lv_f32_to_f16(d);
        b[0] = (unsigned char)(h & 0xff);
        b[1] = (unsigned char)(h >> 8);
#ifdef __SSE2__
        q8_0_round32(b + 2, x, id);
#else
        for (int j = 0; j < 32; j++) {
            float r = lv_round_half_away(x[j] * id);
            b[2 + j] = (unsigned char)(r >= -128.0f && r <= 127.0f ? (int8_t)r : 0);
        }
#endif
    }
}

static void q4_0_quant(unsigned char *b, const float *x, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, b += 18, x += 32) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < 32; j++)
            if (amax < fabsf(x[j])) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        float d = max / -8.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        uint16_t h = lv_f32_to_f16(d);
        b[0] = (unsigned char)(h & 0xff);
        b[1] = (unsigned char)(h >> 8);
        for (int j = 0; j < 16; j++) {
            int x0 = (int)(int8_t)(x[j] * id + 8.5f), x1 = (int)(int8_t)(x[16 + j] * id + 8.5f);
            x0 = x0 < 15 ? x0 : 15;
            x1 = x1 < 15 ? x1 : 15;
            b[2 + j] = (unsigned char)(x0 | x1 << 4);
        }
    }
}

const char *lv_dtype_name(lv_dtype t)
{
    return (unsigned)t < LV_DTYPE_COUNT ? dtype_table[t].name : "?";
}

static inline uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static inline float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t lv_f32_to_f16(float f)
{
    const uint32_t f32_inf = 255u << 23;
    const uint32_t f16_max = (127u + 16u) << 23;           /* 2^16: rounds to infinity */
    const uint32_t denorm_magic = ((127u - 15u) + (23u - 10u) + 1u) << 23;
    uint32_t u = f32_bits(f);
    uint32_t sign = u & 0x80000000u;
    uint16_t h;
    u ^= sign;
    if (u >= f16_max) {
        h = u > f32_inf ? 0x7e00 : 0x7c00;
    } else if (u < (113u << 23)) {
        /* The result is subnormal or zero: let the FPU round by adding a magic number whose
         * exponent puts the half's last mantissa bit at the float's. */
        float t = bits_f32(u) + bits_f32(denorm_magic);
        h = (uint16_t)(f32_bits(t) - denorm_magic);
    } else {
        uint32_t odd = (u >> 13) & 1u;
        u += ((uint32_t)(15 - 127) << 23) + 0xfffu + odd;
        h = (uint16_t)(u >> 13);
    }
    return (uint16_t)(h | (sign >> 16));
}

float lv_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    if (exp == 0) {
        float v = ldexpf((float)mant, -24);
        return sign ? -v : v;
    }
    if (exp == 31)
        return bits_f32(sign | 0x7f800000u | (mant << 13));
    return bits_f32(sign | ((exp + 112u) << 23) | (mant << 13));
}

uint16_t lv_f32_to_bf16(float f)
{
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40u);          /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float lv_bf16_to_f32(uint16_t h)
{
    return bits_f32((uint32_t)h << 16);
}

static inline float load_f32(const void *p, lv_dtype t, int64_t i)
{
    switch (t) {
    case LV_F32:  return ((const float *)p)[i];
    case LV_F16:  return lv_f16_to_f32(((const uint16_t *)p)[i]);
    case LV_BF16: return lv_bf16_to_f32(((const uint16_t *)p)[i]);
    case LV_I32:  return (float)((const int32_t *)p)[i];
    case LV_Q8_0X8: {               /* a tensor's rows are whole groups */
        float blk[32];
        lv_q8_0x8_dequantize(blk, p, (i / 256 + 1) * 256, i / 32 * 32, 32);
        return blk[i % 32];
    }
    case LV_Q8_0:
    case LV_Q4_0: {
        float blk[32];
        const unsigned char *b = (const unsigned char *)p + lv_dtype_bytes(t, i / 32 * 32);
        if (t == LV_Q8_0)
            q8_0_dequant(blk, b, 1);
        else
            q4_0_dequant(blk, b, 1);
        return blk[i % 32];
    }
    default:      return NAN;
    }
}

static inline void store_f32(void *p, lv_dtype t, int64_t i, float v)
{
    switch (t) {
    case LV_F32:  ((float *)p)[i] = v; break;
    case LV_F16:  ((uint16_t *)p)[i] = lv_f32_to_f16(v); break;
    case LV_BF16: ((uint16_t *)p)[i] = lv_f32_to_bf16(v); break;
    case LV_I32:  ((int32_t *)p)[i] = (int32_t)lrintf(v); break;
    default:      break;
    }
}

void lv_convert_row(void *dst, lv_dtype dt, const void *src, lv_dtype st, int64_t n)
{
    if (dt == st) {
        memcpy(dst, src, lv_dtype_bytes(dt, n));
        return;
    }
    if (st == LV_NF4 || dt == LV_NF4) {
        /* NF4 is laid out over the whole tensor: n is every value of it */
        float *tmp = st == LV_NF4 && dt == LV_F32 ? dst : malloc((size_t)(n ? n : 1) *
                                                                   sizeof *tmp);
        if (!tmp)
            return;
        if (st == LV_NF4)
            lv_nf4_dequantize(tmp, src, n);
        else
            lv_convert_row(tmp, LV_F32, src, st, n);
        if (dt == LV_NF4)
            lv_nf4_quantize(dst, tmp, n);
        else if (dt != LV_F32 || st != LV_NF4)
            lv_convert_row(dst, dt, tmp, LV_F32, n);
        if (tmp != dst)
            free(tmp);
        return;
    }
    if (lv_dtype_is_block(st) || lv_dtype_is_block(dt)) {
        /* whole blocks, through F32 256 values (a Q8_0x8 group) at a time; Q8_0 <-> Q8_0x8
         * moves the bytes */
        _Static_assert(LV_Q8_0X8_GROUP == 256, "a chunk is one Q8_0x8 group");
        float buf[256];
        unsigned char q8[8 * 34];
        bool moved = (st == LV_Q8_0 && dt == LV_Q8_0X8) || (st == LV_Q8_0X8 && dt == LV_Q8_0);
        for (int64_t i = 0; i < n; i += 256) {
            int64_t k = n - i < 256 ? n - i : 256;
            const void *s = (const char *)src + lv_dtype_bytes(st, i);
            void *d = (char *)dst + lv_dtype_bytes(dt, i);
            if (moved) {
                if (st == LV_Q8_0)
                    q8_0x8_pack(d, s, k / 32);
                else
                    q8_0x8_unpack(d, s, k / 32);
                continue;
            }
            if (st == LV_Q8_0X8)
                q8_0x8_unpack(q8, s, k / 32);
            if (st == LV_Q8_0 || st == LV_Q8_0X8)
                q8_0_dequant(buf, st == LV_Q8_0 ? s : q8, k / 32);
            else if (st == LV_Q4_0)
                q4_0_dequant(buf, s, k / 32);
            else
                lv_convert_row(buf, LV_F32, s, st, k);
            if (dt == LV_Q8_0 || dt == LV_Q8_0X8)
                q8_0_quant(dt == LV_Q8_0 ? d : q8, buf, k / 32);
            else if (dt == LV_Q4_0)
                q4_0_quant(d, buf, k / 32);
            else
                lv_convert_row(d, dt, buf, LV_F32, k);
            if (dt == LV_Q8_0X8)
                q8_0x8_pack(d, q8, k / 32);
        }
        return;
    }
    if (dt == LV_F32 && st == LV_BF16) {        /* the common cases, without a switch */
        float *d = dst;
        const uint16_t *h = src;
        for (int64_t i = 0; i < n; i++)
            d[i] = lv_bf16_to_f32(h[i]);
        return;
    }
    if (dt == LV_F32 && st == LV_F16) {
        float *d = dst;
        const uint16_t *h = src;
        for (int64_t i = 0; i < n; i++)
            d[i] = lv_f16_to_f32(h[i]);
        return;
    }
    for (int64_t i = 0; i < n; i++)
        store_f32(dst, dt, i, load_f32(src, st, i));
}

/* ----------------------------------------------------------------------------------------
 * headers and lifetime
 */

void lv_tensor_init(lv_tensor *t, void *data, lv_dtype dtype, int ndim, const int64_t *shape)
{
    memset(t, 0, sizeof *t);
    t->dtype = dtype;
    t->device = LV_DEVICE_CPU;
    t->ndim = ndim;
    t->data = data;
    t->node = -1;
    for (int i = 0; i < LV_MAX_DIMS; i++) {
        t->shape[i] = i < ndim ? shape[i] : 1;
        t->stride[i] = 1;
    }
    for (int i = ndim - 2; i >= 0; i--)
        t->stride[i] = t->stride[i + 1] * t->shape[i + 1];
}

/* Refuse shapes that are negative, too many dims, or whose byte size overflows. */
static int check_shape(lv_dtype dtype, int ndim, const int64_t *shape, size_t *bytes)
{
    if ((unsigned)dtype >= LV_DTYPE_COUNT)
        return lv_error("tensor: unknown dtype %d", (int)dtype);
    if (ndim < 0 || ndim > LV_MAX_DIMS)
        return lv_error("tensor: %d dimensions (at most %d)", ndim, LV_MAX_DIMS);
    uint64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return lv_error("tensor: negative dimension %lld", (long long)shape[i]);
        if (shape[i] != 0 && n > (UINT64_MAX / 8) / (uint64_t)shape[i])
            return lv_error("tensor: shape too large");
        n *= (uint64_t)shape[i];
    }
    if (n > ((uint64_t)1 << 40))
        return lv_error("tensor: %llu elements is more than lavinia allows", (unsigned long long)n);
    if (dtype == LV_NF4 && n % LV_NF4_BLOCK != 0)
        return lv_error("tensor: an NF4 tensor holds a multiple of %d values, not %llu",
                        LV_NF4_BLOCK, (unsigned long long)n);
    int64_t row_unit = dtype == LV_Q8_0X8 ? LV_Q8_0X8_GROUP : LV_QBLOCK;
    if (lv_dtype_is_block(dtype) && dtype != LV_NF4 &&
        (ndim == 0 || shape[ndim - 1] % row_unit != 0))
        return lv_error("tensor: a %s tensor's last dimension must be a multiple of %lld",
                        lv_dtype_name(dtype), (long long)row_unit);
    *bytes = lv_dtype_bytes(dtype, (int64_t)n);
    return LV_OK;
}

lv_tensor *lv_tensor_new(lv_dtype dtype, int ndim, const int64_t *shape)
{
    size_t bytes;
    if (check_shape(dtype, ndim, shape, &bytes) != LV_OK)
        return NULL;
    lv_tensor *t = malloc(sizeof *t);
    void *data = lv_zalloc(bytes);
    if (!t || !data) {
        free(t);
        lv_zfree(data, bytes);
        lv_error_status(LV_ENOMEM, "tensor: out of memory for %zu bytes", bytes);
        return NULL;
    }
    lv_tensor_init(t, data, dtype, ndim, shape);
    t->flags |= LV_TENSOR_OWNS_DATA;
    return t;
}

lv_tensor *lv_tensor_wrap(void *data, lv_dtype dtype, int ndim, const int64_t *shape)
{
    size_t bytes;
    if (check_shape(dtype, ndim, shape, &bytes) != LV_OK)
        return NULL;
    lv_tensor *t = malloc(sizeof *t);
    if (!t) {
        lv_error_status(LV_ENOMEM, "tensor: out of memory");
        return NULL;
    }
    lv_tensor_init(t, data, dtype, ndim, shape);
    return t;
}

void lv_tensor_free(lv_tensor *t)
{
    if (!t)
        return;
    lv_tensor_free(t->grad);
    if (t->flags & LV_TENSOR_OWNS_DATA)
        lv_zfree(t->data, lv_tensor_nbytes(t));
    free(t);
}

/* ----------------------------------------------------------------------------------------
 * shape helpers
 */

int64_t lv_tensor_nelem(const lv_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

size_t lv_tensor_nbytes(const lv_tensor *t)
{
    return lv_dtype_bytes(t->dtype, lv_tensor_nelem(t));
}

bool lv_tensor_is_contiguous(const lv_tensor *t)
{
    int64_t s = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] != 1 && t->stride[i] != s)
            return false;
        s *= t->shape[i];
    }
    return true;
}

bool lv_tensor_same_shape(const lv_tensor *a, const lv_tensor *b)
{
    if (a->ndim != b->ndim)
        return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i])
            return false;
    return true;
}

char *lv_shape_str(const lv_tensor *t, char *buf, size_t n)
{
    size_t k = 0;
    k += (size_t)snprintf(buf + k, n - k, "(");
    for (int i = 0; i < t->ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, i ? ", %lld" : "%lld", (long long)t->shape[i]);
    if (k < n)
        snprintf(buf + k, n - k, ")");
    return buf;
}

void lv_tensor_set_name(lv_tensor *t, const char *name)
{
    snprintf(t->name, sizeof t->name, "%s", name ? name : "");
}

/* ----------------------------------------------------------------------------------------
 * parameters
 */

void lv_tensor_set_param(lv_tensor *t)
{
    t->flags = (t->flags | LV_TENSOR_PARAM | LV_TENSOR_NEEDS_GRAD) & ~LV_TENSOR_FROZEN;
}

void lv_tensor_set_frozen(lv_tensor *t)
{
    t->flags = (t->flags | LV_TENSOR_FROZEN) & ~(LV_TENSOR_PARAM | LV_TENSOR_NEEDS_GRAD);
}

int lv_tensor_zero_grad(lv_tensor *t)
{
    if (!t->grad) {
        t->grad = lv_tensor_new(LV_F32, t->ndim, t->shape);
        return t->grad ? LV_OK : LV_ENOMEM;
    }
    memset(t->grad->data, 0, lv_tensor_nbytes(t->grad));
    return LV_OK;
}

/* ----------------------------------------------------------------------------------------
 * element access
 */

static int64_t strided_offset(const lv_tensor *t, int64_t i)
{
    int64_t off = 0;
    for (int d = t->ndim - 1; d >= 0; d--) {
        off += (i % t->shape[d]) * t->stride[d];
        i /= t->shape[d];
    }
    return off;
}

double lv_tensor_get(const lv_tensor *t, int64_t i)
{
    int64_t off = strided_offset(t, i);
    if (t->dtype == LV_I32)
        return ((const int32_t *)t->data)[off];
    if (t->dtype == LV_NF4) {            /* contiguous: one block, scaled */
        struct nf4_layout l = nf4_parts(t->data, lv_tensor_nelem(t));
        unsigned char c = l.codes[off / 2];
        return lv_nf4_codebook[off % 2 ? c & 0x0f : c >> 4] * nf4_scale(&l, off / LV_NF4_BLOCK);
    }
    return load_f32(t->data, t->dtype, off);
}

void lv_tensor_set(lv_tensor *t, int64_t i, double v)
{
    int64_t off = strided_offset(t, i);
    if (t->dtype == LV_I32)
        ((int32_t *)t->data)[off] = (int32_t)v;
    else
        store_f32(t->data, t->dtype, off, (float)v);
}

void lv_tensor_to_f32(float *dst, const lv_tensor *t)
{
    int64_t n = lv_tensor_nelem(t);
    if (lv_tensor_is_contiguous(t)) {
        lv_convert_row(dst, LV_F32, t->data, t->dtype, n);
        return;
    }
    for (int64_t i = 0; i < n; i++)
        dst[i] = load_f32(t->data, t->dtype, strided_offset(t, i));
}

void lv_tensor_from_f32(lv_tensor *t, const float *src)
{
    int64_t n = lv_tensor_nelem(t);
    for (int64_t i = 0; i < n; i++)
        store_f32(t->data, t->dtype, strided_offset(t, i), src[i]);
}
