/*
 * vlm.h (internal): image tokens spliced into a text sequence (LLaVA).
 *
 * A prompt's ids hold a marker where an image goes: the checkpoint's image token id, either
 * once (LLaVA's and llama.cpp's convention: it expands to the image's N tokens) or N times in
 * a row (newer Hugging Face processors already expand it). The sequence handed to the
 * language model is the text's token embeddings with the projected image tokens in place.
 */
#ifndef LV_MODEL_VLM_H
#define LV_MODEL_VLM_H

#include <stdint.h>

#include "model/llama.h"

/* Each image marker in ids (marker id: image_id) takes the next image's n_img x C tokens from
 * images (n_images of them, back to back). *out (malloc'd, *n_out x C floats). An error when
 * the markers and the images do not match in number. */
int lv_vlm_splice(lv_llama *m, const int32_t *ids, int64_t n, int32_t image_id,
                  const float *images, int64_t n_images, int64_t n_img, float **out,
                  int64_t *n_out);

#endif /* LV_MODEL_VLM_H */
