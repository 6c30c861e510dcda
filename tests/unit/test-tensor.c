/*
 * test-tensor.c: dtypes and their conversions, tensor headers, strides and element access.
 *
 * F16: every one of the 65536 halves survives half -> float -> half; float -> half rounds
 * to nearest even at ties, to infinity past 65520, and keeps NaN. BF16: the same rules.
 * References: IEEE 754 binary16 and the bfloat16 truncation of binary32 with RNE.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/graph.h"
#include "testutil.h"

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void test_f16(void)
{
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = lv_f16_to_f32((uint16_t)h);
        uint16_t back = lv_f32_to_f16(f);
        bool nan = ((h >> 10) & 0x1f) == 0x1f && (h & 0x3ff);
        if (nan ? !isnan(f) || !isnan(lv_f16_to_f32(back)) : back != h)
            bad++;
    }
    tu_assert(bad == 0, "f16: all 65536 halves round-trip (%d differ)", bad);
    tu_assert(lv_f16_to_f32(0x3c00) == 1.0f && lv_f16_to_f32(0xc000) == -2.0f &&
                  lv_f16_to_f32(0x7bff) == 65504.0f && lv_f16_to_f32(0x0001) == ldexpf(1, -24),
              "f16 decodes 1, -2, 65504 and the smallest subnormal");
    /* 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties go to the even mantissa (1) */
    tu_assert(lv_f32_to_f16(1.0f + ldexpf(1, -11)) == 0x3c00, "f16 tie rounds to even (down)");
    tu_assert(lv_f32_to_f16(1.0f + 3 * ldexpf(1, -11)) == 0x3c02, "f16 tie rounds to even (up)");
    tu_assert(lv_f32_to_f16(1.0f + ldexpf(1, -11) + ldexpf(1, -20)) == 0x3c01,
              "f16 above a tie rounds up");
    tu_assert(lv_f32_to_f16(65519.0f) == 0x7bff && lv_f32_to_f16(65520.0f) == 0x7c00,
              "f16 overflow threshold at 65520");
    tu_assert(lv_f32_to_f16(ldexpf(1, -25)) == 0x0000 && lv_f32_to_f16(ldexpf(3, -26)) == 0x0001,
              "f16 subnormal rounding (2^-25 ties to 0, 1.5*2^-25 rounds up)");
    tu_assert(lv_f32_to_f16(-0.0f) == 0x8000 && lv_f32_to_f16(-INFINITY) == 0xfc00,
              "f16 keeps the sign of zero and infinity");
    tu_assert((lv_f32_to_f16(NAN) & 0x7c00) == 0x7c00 && (lv_f32_to_f16(NAN) & 0x3ff),
              "f16 NaN stays NaN");
}

static void test_bf16(void)
{
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = lv_bf16_to_f32((uint16_t)h);
        if (!isnan(f) && lv_f32_to_bf16(f) != h)
            bad++;
    }
    tu_assert(bad == 0, "bf16: all non-NaN values round-trip (%d differ)", bad);
    tu_assert(lv_f32_to_bf16(bits_f32(0x3f808000)) == 0x3f80, "bf16 tie rounds to even (down)");
    tu_assert(lv_f32_to_bf16(bits_f32(0x3f818000)) == 0x3f82, "bf16 tie rounds to even (up)");
    tu_assert(lv_f32_to_bf16(bits_f32(0x3f808001)) == 0x3f81, "bf16 above a tie rounds up");
    tu_assert(isnan(lv_bf16_to_f32(lv_f32_to_bf16(bits_f32(0x7f800001)))),
              "bf16 keeps a NaN whose payload sits in the low bits");
    tu_assert(lv_f32_to_bf16(bits_f32(0x7f7fffff)) == 0x7f80, "bf16 overflow rounds to infinity");
}

static void test_headers(void)
{
    int64_t s[3] = { 2, 3, 4 };
    lv_tensor *t = lv_tensor_new(LV_BF16, 3, s);
    tu_assert(t && t->stride[0] == 12 && t->stride[1] == 4 && t->stride[2] == 1 &&
                  lv_tensor_nbytes(t) == 48 && lv_tensor_is_contiguous(t),
              "new tensor: contiguous strides and byte size");
    for (int64_t i = 0; i < 24; i++)
        lv_tensor_set(t, i, (double)i);
    float buf[24];
    lv_tensor_to_f32(buf, t);
    bool ok = true;
    for (int i = 0; i < 24; i++)
        ok &= buf[i] == (float)i;
    tu_assert(ok, "set/get through BF16 storage is exact for small integers");
    char str[32];
    tu_assert(strcmp(lv_shape_str(t, str, sizeof str), "(2, 3, 4)") == 0, "shape string %s", str);
    lv_tensor_free(t);

    int64_t neg[2] = { 2, -1 }, five[5] = { 1, 1, 1, 1, 1 }, huge[4] = { 1 << 20, 1 << 20, 1 << 20, 8 };
    tu_assert(lv_tensor_new(LV_F32, 2, neg) == NULL, "negative dim refused: %s", lv_errmsg());
    tu_assert(lv_tensor_new(LV_F32, 5, five) == NULL, "5 dims refused: %s", lv_errmsg());
    tu_assert(lv_tensor_new(LV_F32, 4, huge) == NULL, "2^63 elements refused: %s", lv_errmsg());
    int64_t z[1] = { 0 };
    lv_tensor *e = lv_tensor_new(LV_F32, 1, z);
    tu_assert(e && lv_tensor_nelem(e) == 0, "an empty tensor is allowed");
    lv_tensor_free(e);
    lv_tensor_free(NULL);

    float data[6] = { 0, 1, 2, 3, 4, 5 };
    int64_t s23[2] = { 2, 3 };
    lv_tensor *w = lv_tensor_wrap(data, LV_F32, 2, s23);
    w->stride[0] = 1;           /* read it as the transpose of a (3, 2) matrix */
    w->stride[1] = 2;
    lv_tensor_to_f32(buf, w);
    tu_assert(!lv_tensor_is_contiguous(w) && buf[0] == 0 && buf[1] == 2 && buf[2] == 4 &&
                  buf[3] == 1 && buf[5] == 5,
              "strided read follows the strides");
    lv_tensor_free(w);
    tu_assert(data[5] == 5.0f, "wrapped data is not freed");
    tu_assert(lv_dtype_size(LV_F16) == 2 && strcmp(lv_dtype_name(LV_I32), "I32") == 0,
              "dtype table");
}

static void test_arena(void)
{
    lv_graph *g = lv_graph_new(NULL);
    int64_t s[2] = { 64, 64 };
    void *first = NULL;
    size_t size0 = 0;
    for (int step = 0; step < 5; step++) {
        lv_tensor *a = lv_new(g, LV_F32, 2, s);
        for (int i = 0; i < 100; i++)
            a = lv_add(g, a, a);
        if (step == 0) {
            first = a;
            size0 = lv_graph_arena_size(g);
        }
        tu_assert(a != NULL, "step %d ran", step);
        if (step == 4)
            tu_assert(a == first && lv_graph_arena_size(g) == size0,
                      "after reset the same arena memory is reused (%zu bytes)", size0);
        lv_graph_reset(g);
    }
    void *p = lv_graph_alloc(g, 1);
    tu_assert(((uintptr_t)p & 63) == 0, "arena allocations are 64-byte aligned");
    lv_graph_free(g);
}

/* Big tensors are their own 2 MiB-aligned mappings (util/buf.h): zeroed, writable end to end,
 * freed; sizes on both sides of the threshold. */
static void test_big(void)
{
    static const int64_t floats[] = { (2 << 20) / 4 - 1, (2 << 20) / 4, (3 << 20) / 4 + 7,
                                      (8 << 20) / 4 };
    for (size_t i = 0; i < sizeof floats / sizeof floats[0]; i++) {
        lv_tensor *t = lv_tensor_new(LV_F32, 1, &floats[i]);
        bool zero = t != NULL;
        for (int64_t j = 0; zero && j < floats[i]; j += 1021)
            zero = ((float *)t->data)[j] == 0.0f;
        if (t) {
            float *d = t->data;
            d[0] = 1.0f;
            d[floats[i] - 1] = 2.0f;
            zero &= (uintptr_t)d % 16 == 0 && d[floats[i] - 1] == 2.0f;
        }
        tu_assert(zero, "tensor of %lld floats: zeroed, 16-byte aligned, writable to its end",
                  (long long)floats[i]);
        lv_tensor_free(t);
    }
}

int main(int argc, char **argv)
{
    tu_init(argc, argv, "tensor");
    test_big();
    test_f16();
    test_bf16();
    test_headers();
    test_arena();
    return tu_finish();
}
