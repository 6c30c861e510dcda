/*
 * image.h (internal): images in, and the pixels a CLIP vision tower wants.
 *
 *     struct lv_image img;
 *     if (lv_image_load(&img, "cat.jpg", 0) != LV_OK)        // 0: the default pixel limit
 *         return fail(lv_errmsg());                          // "cat.jpg: not an image ..."
 *     struct lv_clip_preprocess p;
 *     lv_clip_preprocess_default(&p);                        // CLIP ViT-L/14-336's numbers
 *     float *pixels = malloc(3 * p.crop * p.crop * sizeof(float));
 *     lv_clip_preprocess(&p, &img, pixels);                  // [3, crop, crop], normalised
 *     lv_image_free(&img);
 *
 * Decoding is stb_image's (PNG, JPEG, BMP, GIF's first frame, PNM; 8 or 16 bits; grey,
 * grey+alpha, RGB, RGBA): the size is read from the header and checked against the pixel
 * limit before anything is decoded, and alpha is dropped as PIL's convert('RGB') drops it.
 * Preprocessing follows Hugging Face's CLIPImageProcessor: the shortest side resized to
 * `size` (the long side int()-truncated) with a bicubic filter, a centre crop with its
 * offset rounded down, 1/255, then (x - mean) / std per channel. LLaVA's "pad" aspect mode
 * first pads to a square with the mean colour.
 */
#ifndef LV_IMAGE_IMAGE_H
#define LV_IMAGE_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LV_IMAGE_DEFAULT_MAX_PIXELS ((int64_t)64 << 20)

struct lv_image {
    int w, h;
    unsigned char *rgb;           /* h rows of w RGB triplets */
};

/* max_pixels 0: LV_IMAGE_DEFAULT_MAX_PIXELS. On failure img is zeroed and the message names
 * the file and the problem. */
int lv_image_load(struct lv_image *img, const char *path, int64_t max_pixels);
int lv_image_load_mem(struct lv_image *img, const void *buf, size_t n, const char *name,
                      int64_t max_pixels);
void lv_image_free(struct lv_image *img);

struct lv_clip_preprocess {
    int size;                     /* shortest side after resizing (336) */
    int crop;                     /* square crop (336) */
    float mean[3], std[3];        /* OpenAI CLIP's */
    bool pad_square;              /* LLaVA image_aspect_ratio "pad" */
    bool stretch;                 /* LaVIN: both sides to size (aspect not kept), no crop */
};

void lv_clip_preprocess_default(struct lv_clip_preprocess *p);
/* LaVIN's torchvision pipeline: Resize((size, size)) bicubic, ImageNet mean and std. */
void lv_clip_preprocess_lavin(struct lv_clip_preprocess *p, int size);
/* Sizes and statistics from a Hugging Face preprocessor_config.json (image_mean, image_std,
 * size / shortest_edge, crop_size, do_pad); a missing file leaves p as it is. */
int lv_clip_preprocess_load(struct lv_clip_preprocess *p, const char *path);
/* out: 3 x crop x crop floats, channel-major. */
int lv_clip_preprocess(const struct lv_clip_preprocess *p, const struct lv_image *img,
                       float *out);

#endif /* LV_IMAGE_IMAGE_H */
