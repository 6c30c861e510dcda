/*
 * fuzz-image.c: libFuzzer target for image decoding and CLIP preprocessing.
 *
 * Decodes the input with lv_image_load_mem (a pixel limit of 1 Mi so the fuzzer explores
 * headers rather than huge allocations) and, when it is accepted, preprocesses it to a small
 * crop, with and without the square padding. Seeds: tests/fuzz/image/.
 *
 * Debian's stb_image is a precompiled library, which the fuzzer cannot see into; this target
 * compiles the implementations from Debian's own headers instead, so they are instrumented
 * (the program's definitions take precedence over libstb's).
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_RESIZE_IMPLEMENTATION
#include <stb/stb_image.h>
#include <stb/stb_image_resize.h>

#include "image/image.h"
#include "lavinia/error.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct lv_image img;
    if (lv_image_load_mem(&img, data, size, "fuzz.img", (int64_t)1 << 20) != LV_OK)
        return 0;
    if (img.w <= 0 || img.h <= 0 || !img.rgb)
        abort();
    struct lv_clip_preprocess p;
    lv_clip_preprocess_default(&p);
    p.size = p.crop = 16;
    float px[3 * 16 * 16];
    lv_clip_preprocess(&p, &img, px);
    p.pad_square = true;
    p.size = 20;
    lv_clip_preprocess(&p, &img, px);
    lv_image_free(&img);
    return 0;
}
