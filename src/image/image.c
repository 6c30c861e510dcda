/*
 * image.c: decoding with Debian's stb_image and CLIP preprocessing (image.h).
 *
 * Resizing: PIL's BICUBIC is Keys' cubic with a = -0.5 (Catmull-Rom), widened by the scale
 * when shrinking, and works on the stored values (no gamma); stb_image_resize is asked for
 * the same: STBIR_FILTER_CATMULLROM, linear colour space, clamped edges. The two still differ
 * in rounding and at the borders (PIL renormalises the weights that fall outside), which the
 * preprocessing test bounds against PIL itself.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "image/image.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <stb/stb_image.h>
#include <stb/stb_image_resize.h>

#include "io/fileutil.h"
#include "lavinia/error.h"

/* an image file larger than this is refused before it is read */
#define IMAGE_FILE_MAX ((size_t)1 << 30)

void lv_image_free(struct lv_image *img)
{
    free(img->rgb);
    memset(img, 0, sizeof *img);
}

/* the format by its first bytes, NULL if none stb_image reads */
static const char *image_kind(const unsigned char *b, size_t n)
{
    if (n >= 8 && memcmp(b, "\x89PNG\r\n\x1a\n", 8) == 0)
        return "PNG";
    /* stb_image reads a JPEG's SOI after any run of 0xff fill bytes */
    size_t k = 0;
    while (k < n && b[k] == 0xff)
        k++;
    if (k >= 1 && k < n && b[k] == 0xd8)
        return "JPEG";
    if (n >= 4 && memcmp(b, "GIF8", 4) == 0)
        return "GIF";
    if (n >= 2 && b[0] == 'B' && b[1] == 'M')
        return "BMP";
    if (n >= 2 && b[0] == 'P' && (b[1] == '5' || b[1] == '6'))
        return "PNM";
    return NULL;
}

/* stb_image 2.27 (Debian 12) overruns its Huffman size table when a DHT segment declares
 * more than 256 codes, and reads past its tables when the codes do not fit their lengths:
 * every segment of the JPEG is walked first and such tables refused. */
static int jpeg_check(const unsigned char *b, size_t n, const char *name)
{
    size_t at = 2;
    while (at + 4 <= n) {
        if (b[at] != 0xff) {              /* stb_image skips bytes until a marker: so do we */
            at++;
            continue;
        }
        unsigned marker = b[at + 1];
        if (marker == 0xd8 || (marker >= 0xd0 && marker <= 0xd7) || marker == 0x01 ||
            marker == 0xff) {
            at += marker == 0xff ? 1 : 2;
            continue;
        }
        if (marker == 0xd9)
            return LV_OK;                 /* end of image */
        size_t len = (size_t)b[at + 2] << 8 | b[at + 3];
        if (len < 2 || at + 2 + len > n)
            return lv_error("%s: a JPEG segment runs past the end of the file", name);
        if (marker == 0xda) {             /* a scan: skip its data to the next marker (tables
                                             may follow in progressive files) */
            at += 2 + len;
            while (at + 1 < n && !(b[at] == 0xff && b[at + 1] != 0x00 &&
                                   !(b[at + 1] >= 0xd0 && b[at + 1] <= 0xd7)))
                at++;
            continue;
        }
        if (marker == 0xc4) {             /* DHT: tables of 1 + 16 + sum(counts) bytes */
            size_t p = at + 4, end = at + 2 + len;
            while (p < end) {
                if (p + 17 > end)
                    return lv_error("%s: a damaged JPEG Huffman table", name);
                size_t codes = 0;
                for (int i = 1; i <= 16; i++)
                    codes += b[p + (size_t)i];
                if (codes > 256 || p + 17 + codes > end)
                    return lv_error("%s: a JPEG Huffman table with %zu codes (at most 256)",
                                    name, codes);
                /* canonical codes must fit their lengths, the all-ones code left free, as
                 * libjpeg checks: an oversubscribed table sends stb_image's decoder past
                 * its tables */
                uint32_t code = 0;
                for (int len = 1; len <= 16; len++) {
                    code += b[p + (size_t)len];
                    if (code >= (1u << len) && b[p + (size_t)len])
                        return lv_error("%s: a JPEG Huffman table with more codes of %d bits "
                                        "than fit", name, len);
                    code <<= 1;
                }
                p += 17 + codes;
            }
        }
        at += 2 + len;
    }
    return LV_OK;
}

int lv_image_load_mem(struct lv_image *img, const void *buf, size_t n, const char *name,
                      int64_t max_pixels)
{
    int w, h, comp;
    memset(img, 0, sizeof *img);
    if (max_pixels <= 0)
        max_pixels = LV_IMAGE_DEFAULT_MAX_PIXELS;
    if (n == 0)
        return lv_error("%s: empty file", name);
    if (n > INT32_MAX)
        return lv_error("%s: %zu bytes is too large for an image file", name, n);
    const char *kind = image_kind(buf, n);
    int rc = kind && strcmp(kind, "JPEG") == 0 ? jpeg_check(buf, n, name) : LV_OK;
    if (rc)
        return rc;
    /* a PNG says its size in the first chunk: check it before stb_image sees the file */
    if (kind && strcmp(kind, "PNG") == 0 && n >= 24) {
        const unsigned char *b = buf;
        uint64_t pw = (uint64_t)b[16] << 24 | (uint64_t)b[17] << 16 | (uint64_t)b[18] << 8 | b[19];
        uint64_t ph = (uint64_t)b[20] << 24 | (uint64_t)b[21] << 16 | (uint64_t)b[22] << 8 | b[23];
        if (pw == 0 || ph == 0)
            return lv_error("%s: the PNG is %llu x %llu", name, (unsigned long long)pw,
                            (unsigned long long)ph);
        if (pw * ph > (uint64_t)max_pixels)
            return lv_error("%s: %llu x %llu is more than the %lld-pixel limit", name,
                            (unsigned long long)pw, (unsigned long long)ph,
                            (long long)max_pixels);
    }
    if (!stbi_info_from_memory(buf, (int)n, &w, &h, &comp))
        return kind ? lv_error("%s: a damaged or unsupported %s file", name, kind)
                    : lv_error("%s: not an image lavinia reads (PNG, JPEG, BMP, GIF, PNM)",
                               name);
    if (w <= 0 || h <= 0)
        return lv_error("%s: the image is %d x %d", name, w, h);
    if ((int64_t)w * h > max_pixels)
        return lv_error("%s: %d x %d is more than the %lld-pixel limit", name, w, h,
                        (long long)max_pixels);
    unsigned char *rgb = stbi_load_from_memory(buf, (int)n, &w, &h, &comp, 3);
    if (!rgb)
        return lv_error("%s: cannot decode the %s image (damaged or truncated)", name,
                        kind ? kind : "");
    /* stb's buffer is released with stbi_image_free: copy into our own */
    img->rgb = malloc((size_t)w * (size_t)h * 3);
    if (!img->rgb) {
        stbi_image_free(rgb);
        return lv_error_status(LV_ENOMEM, "%s: out of memory for %d x %d pixels", name, w, h);
    }
    memcpy(img->rgb, rgb, (size_t)w * (size_t)h * 3);
    stbi_image_free(rgb);
    img->w = w;
    img->h = h;
    return LV_OK;
}

int lv_image_load(struct lv_image *img, const char *path, int64_t max_pixels)
{
    char *buf;
    size_t n;
    memset(img, 0, sizeof *img);
    int rc = lv_read_file(path, IMAGE_FILE_MAX, &buf, &n);
    if (rc)
        return rc;
    rc = lv_image_load_mem(img, buf, n, path, max_pixels);
    free(buf);
    return rc;
}

void lv_clip_preprocess_default(struct lv_clip_preprocess *p)
{
    *p = (struct lv_clip_preprocess){
        .size = 336, .crop = 336,
        .mean = { 0.48145466f, 0.4578275f, 0.40821073f },
        .std = { 0.26862954f, 0.26130258f, 0.27577711f },
    };
}

void lv_clip_preprocess_lavin(struct lv_clip_preprocess *p, int size)
{
    *p = (struct lv_clip_preprocess){
        .size = size, .crop = size, .stretch = true,
        .mean = { 0.485f, 0.456f, 0.406f },
        .std = { 0.229f, 0.224f, 0.225f },
    };
}

/* an int, or an object holding one of the keys */
static int json_size(const json_t *v, const char *k1, const char *k2, int *out)
{
    if (json_is_object(v)) {
        const json_t *a = json_object_get(v, k1);
        v = a ? a : json_object_get(v, k2);
    }
    if (!v)
        return LV_OK;
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 8192)
        return LV_ERR;
    *out = (int)json_integer_value(v);
    return LV_OK;
}

int lv_clip_preprocess_load(struct lv_clip_preprocess *p, const char *path)
{
    char *text;
    size_t n;
    if (access(path, F_OK) != 0)
        return LV_OK;
    int rc = lv_read_file(path, (size_t)1 << 20, &text, &n);
    if (rc)
        return rc;
    json_error_t err;
    json_t *root = json_loadb(text, n, 0, &err);
    free(text);
    if (!json_is_object(root)) {
        json_decref(root);
        return lv_error("%s: not a JSON object", path);
    }
    static const char *const keys[2] = { "image_mean", "image_std" };
    float *dst[2] = { p->mean, p->std };
    for (int k = 0; rc == LV_OK && k < 2; k++) {
        const json_t *a = json_object_get(root, keys[k]);
        if (!a)
            continue;
        if (!json_is_array(a) || json_array_size(a) != 3)
            rc = lv_error("%s: '%s' is not a list of 3 numbers", path, keys[k]);
        for (size_t i = 0; rc == LV_OK && i < 3; i++) {
            const json_t *x = json_array_get(a, i);
            double d = json_number_value(x);
            if (!json_is_number(x) || !(d > -10.0 && d < 10.0) || (k == 1 && !(d > 0.0)))
                rc = lv_error("%s: '%s' has a value out of range", path, keys[k]);
            dst[k][i] = (float)d;
        }
    }
    const json_t *pad = json_object_get(root, "do_pad");
    if (rc == LV_OK && pad && json_is_boolean(pad))
        p->pad_square = json_is_true(pad);
    if (rc == LV_OK && (json_size(json_object_get(root, "size"), "shortest_edge", "height",
                                  &p->size) ||
                        json_size(json_object_get(root, "crop_size"), "height", "shortest_edge",
                                  &p->crop)))
        rc = lv_error("%s: 'size' or 'crop_size' is not a size from 1 to 8192", path);
    json_decref(root);
    return rc;
}

/* LLaVA's expand2square: the image centred on a square of the mean colour */
static unsigned char *pad_square(const struct lv_clip_preprocess *p, const struct lv_image *img,
                                 int *side)
{
    int s = img->w > img->h ? img->w : img->h;
    unsigned char *out = malloc((size_t)s * (size_t)s * 3);
    if (!out)
        return NULL;
    for (size_t i = 0; i < (size_t)s * (size_t)s; i++)
        for (int c = 0; c < 3; c++)
            out[3 * i + (size_t)c] = (unsigned char)(int)(p->mean[c] * 255.0f);
    int x0 = (s - img->w) / 2, y0 = (s - img->h) / 2;
    for (int y = 0; y < img->h; y++)
        memcpy(out + ((size_t)(y0 + y) * (size_t)s + (size_t)x0) * 3,
               img->rgb + (size_t)y * (size_t)img->w * 3, (size_t)img->w * 3);
    *side = s;
    return out;
}

int lv_clip_preprocess(const struct lv_clip_preprocess *p, const struct lv_image *img,
                       float *out)
{
    if (p->size <= 0 || p->crop <= 0)
        return lv_error("image: size %d and crop %d must be positive", p->size, p->crop);
    const unsigned char *src = img->rgb;
    unsigned char *padded = NULL;
    int w = img->w, h = img->h;
    /* LLaVA's padding and CLIP's resize can make an image far larger than the file's (a
     * 1 x 60000 strip becomes 60000 x 60000, or 336 x 20 million): the same pixel limit as
     * decoding holds for them */
    int64_t side = w > h ? w : h;
    if (p->pad_square && w != h && side * side > LV_IMAGE_DEFAULT_MAX_PIXELS)
        return lv_error("image: padding %d x %d to a square makes %lld pixels (at most %lld)",
                        w, h, (long long)(side * side), (long long)LV_IMAGE_DEFAULT_MAX_PIXELS);
    if (p->pad_square && w != h) {
        int s;
        if (!(padded = pad_square(p, img, &s)))
            return lv_error_status(LV_ENOMEM, "image: out of memory");
        src = padded;
        w = h = s;
    }
    /* shortest side to size, the other int()-truncated (at least 1); LaVIN: both to size */
    int64_t nw64, nh64;
    if (p->stretch) {
        nw64 = nh64 = p->size;
    } else if (w <= h) {
        nw64 = p->size;
        nh64 = (int64_t)p->size * h / w;
    } else {
        nh64 = p->size;
        nw64 = (int64_t)p->size * w / h;
    }
    nw64 = nw64 < 1 ? 1 : nw64;
    nh64 = nh64 < 1 ? 1 : nh64;
    if (nw64 * nh64 > LV_IMAGE_DEFAULT_MAX_PIXELS) {
        free(padded);
        return lv_error("image: resizing %d x %d so that its shortest side is %d makes %lld x "
                        "%lld pixels (at most %lld)", w, h, p->size, (long long)nw64,
                        (long long)nh64, (long long)LV_IMAGE_DEFAULT_MAX_PIXELS);
    }
    int nw = (int)nw64, nh = (int)nh64;
    unsigned char *res = malloc((size_t)nw * (size_t)nh * 3);
    int rc = LV_OK;
    if (!res)
        rc = lv_error_status(LV_ENOMEM, "image: out of memory");
    else if (!stbir_resize_uint8_generic(src, w, h, 0, res, nw, nh, 0, 3, STBIR_ALPHA_CHANNEL_NONE,
                                         0, STBIR_EDGE_CLAMP, STBIR_FILTER_CATMULLROM,
                                         STBIR_COLORSPACE_LINEAR, NULL))
        rc = lv_error("image: resizing %d x %d to %d x %d failed", w, h, nw, nh);
    free(padded);
    if (rc) {
        free(res);
        return rc;
    }
    /* centre crop, offsets rounded down; what falls outside (a small image) is zero */
    int top = (nh - p->crop) / 2, left = (nw - p->crop) / 2;
    if (nh < p->crop)
        top = -((p->crop - nh + 1) / 2);
    if (nw < p->crop)
        left = -((p->crop - nw + 1) / 2);
    size_t plane = (size_t)p->crop * (size_t)p->crop;
    for (int y = 0; y < p->crop; y++)
        for (int x = 0; x < p->crop; x++) {
            int sy = top + y, sx = left + x;
            bool in = sy >= 0 && sy < nh && sx >= 0 && sx < nw;
            for (int c = 0; c < 3; c++) {
                float v = in ? res[((size_t)sy * (size_t)nw + (size_t)sx) * 3 + (size_t)c] /
                                   255.0f
                             : 0.0f;
                out[(size_t)c * plane + (size_t)y * (size_t)p->crop + (size_t)x] =
                    (v - p->mean[c]) / p->std[c];
            }
        }
    free(res);
    return LV_OK;
}
