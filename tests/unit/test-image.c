/*
 * test-image.c: image decoding and CLIP preprocessing against PIL, and hostile image files.
 *
 * tests/reference/image_ref.bin (gen_image_ref.py) holds what CLIPImageProcessor's steps
 * give with PIL for the committed images in tests/reference/images/ (a photo-like JPEG, a PNG
 * with alpha, 1x1, 7x4000, 4000x7) at size = crop = 112: lavinia's pixels must be within a
 * mean |difference| of 0.02 and a maximum of 0.25 in normalised units (the resamplers differ
 * in rounding and at the borders). Hostile files, each refused with a message naming it, and
 * a good image loading right after each failure: a truncated JPEG, a PNG that declares a
 * huge size, a text file named .png, a missing file, a 0-width PNG, an empty file.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "image/image.h"
#include "io/fileutil.h"
#include "lavinia/error.h"
#include "refdata.h"
#include "testutil.h"

#define REF_HINT "cd tests/reference && /usr/bin/python3 gen_image_ref.py"

static char top[1024], tmpdir[256];

static void against_pil(void)
{
    struct ref_file rf;
    if (!ref_load(&rf, "image_ref", REF_HINT))
        return;
    static const char *const names[] = { "photo.jpg", "alpha.png", "tiny.png", "tall.png",
                                         "wide.png" };
    struct lv_clip_preprocess p;
    lv_clip_preprocess_default(&p);
    p.size = p.crop = 112;
    float *px = malloc(3 * 112 * 112 * sizeof *px);
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char path[1200], key[64];
        snprintf(path, sizeof path, "%s/tests/reference/images/%s", top, names[i]);
        snprintf(key, sizeof key, "pixels.%.*s", (int)(strchr(names[i], '.') - names[i]),
                 names[i]);
        const struct ref_tensor *want = ref_get(&rf, key, 3, (int64_t[]){ 3, 112, 112 });
        struct lv_image img;
        if (!want || !tu_assert(lv_image_load(&img, path, 0) == LV_OK, "%s loads (%s)",
                                names[i], lv_errmsg()))
            continue;
        int rc = lv_clip_preprocess(&p, &img, px);
        double sum = 0.0, mx = 0.0;
        for (int64_t j = 0; j < want->n; j++) {
            double d = fabs((double)px[j] - want->data[j]);
            sum += d;
            mx = fmax(mx, d);
        }
        tu_assert(rc == LV_OK && sum / (double)want->n <= 0.02 && mx <= 0.25,
                  "%s (%d x %d): preprocessing against PIL: mean |diff| %.4f, max %.4f",
                  names[i], img.w, img.h, sum / (double)want->n, mx);
        lv_image_free(&img);
    }
    free(px);
    ref_done(&rf);
}

static void write_bytes(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (f) {
        fwrite(p, 1, n, f);
        fclose(f);
    }
}

/* a PNG signature and an IHDR chunk only (the CRC is not checked by the header probe) */
static size_t png_header(unsigned char *b, uint32_t w, uint32_t h)
{
    static const unsigned char sig[8] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n' };
    size_t k = 0;
    memcpy(b, sig, 8);
    k = 8;
    const unsigned char ihdr[8] = { 0, 0, 0, 13, 'I', 'H', 'D', 'R' };
    memcpy(b + k, ihdr, 8);
    k += 8;
    for (int i = 3; i >= 0; i--)
        b[k++] = (unsigned char)(w >> (8 * i));
    for (int i = 3; i >= 0; i--)
        b[k++] = (unsigned char)(h >> (8 * i));
    const unsigned char rest[9] = { 8, 2, 0, 0, 0, 0, 0, 0, 0 };   /* 8-bit RGB, CRC */
    memcpy(b + k, rest, 9);
    return k + 9;
}

static void hostile(void)
{
    char good[1200], path[400];
    snprintf(good, sizeof good, "%s/tests/reference/images/alpha.png", top);
    char *jpeg = NULL;
    size_t jn = 0;
    char photo[1200];
    snprintf(photo, sizeof photo, "%s/tests/reference/images/photo.jpg", top);
    if (lv_read_file(photo, 1 << 24, &jpeg, &jn) != LV_OK)
        return;
    unsigned char png[64];
    struct { const char *name; const void *data; size_t n; const char *words; } cases[] = {
        { "truncated.jpg", jpeg, 400, "" },
        { "huge.png", png, png_header(png, 100000, 100000), "limit" },
        { "text.png", "this is not an image\n", 21, "not an image" },
        { "empty.png", "", 0, "empty" },
    };
    unsigned char zero[64];
    size_t zn = png_header(zero, 0, 16);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0] + 2; i++) {
        const char *name = i < 4 ? cases[i].name : i == 4 ? "zero-width.png" : "missing.png";
        snprintf(path, sizeof path, "%s/%s", tmpdir, name);
        if (i < 4)
            write_bytes(path, cases[i].data, cases[i].n);
        else if (i == 4)
            write_bytes(path, zero, zn);
        struct lv_image img;
        int rc = lv_image_load(&img, path, 0);
        tu_assert(rc != LV_OK && strstr(lv_errmsg(), path) && !strchr(lv_errmsg(), '\n') &&
                      (i >= 4 || strstr(lv_errmsg(), cases[i].words)) && !img.rgb,
                  "%s refused: %s", name, rc != LV_OK ? lv_errmsg() : "accepted");
        if (rc == LV_OK)
            lv_image_free(&img);
        rc = lv_image_load(&img, good, 0);
        tu_assert(rc == LV_OK && img.w == 97 && img.h == 61, "after %s, the next image loads",
                  name);
        lv_image_free(&img);
    }
    free(jpeg);
}

/* a strip that padding or resizing would blow up past the pixel limit is refused */
static void strips(void)
{
    struct lv_image img = { .w = 1, .h = 20000 };
    img.rgb = calloc((size_t)img.w * (size_t)img.h, 3);
    struct lv_clip_preprocess p;
    lv_clip_preprocess_default(&p);
    p.size = p.crop = 336;
    float *out = malloc(3 * 336 * 336 * sizeof *out);
    p.pad_square = true;
    tu_assert(lv_clip_preprocess(&p, &img, out) != LV_OK && strstr(lv_errmsg(), "square"),
              "1 x 20000 padded to a square (400 million pixels) is refused: %s", lv_errmsg());
    p.pad_square = false;
    tu_assert(lv_clip_preprocess(&p, &img, out) != LV_OK && strstr(lv_errmsg(), "resizing"),
              "1 x 20000 with its shortest side to 336 (6.7 million rows) is refused: %s",
              lv_errmsg());
    img.h = 100;
    tu_assert(lv_clip_preprocess(&p, &img, out) == LV_OK, "1 x 100 still preprocesses");
    free(img.rgb);
    free(out);
    lv_error_clear();
}

int main(int argc, char **argv)
{
    tu_init(argc, argv, "image");
    strips();
    const char *t = getenv("LV_TOP_SRCDIR"), *tmp = getenv("TMPDIR");
    snprintf(top, sizeof top, "%s", t && *t ? t : ".");
    snprintf(tmpdir, sizeof tmpdir, "%s/lv-image-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(tmpdir))
        return 99;
    against_pil();
    hostile();
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        printf("# could not remove %s\n", tmpdir);
    return tu_finish();
}
