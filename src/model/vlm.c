/*
 * vlm.c: splicing image tokens into a text sequence (vlm.h).
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "model/vlm.h"

#include <stdlib.h>
#include <string.h>

#include "lavinia/error.h"

int lv_vlm_splice(lv_llama *m, const int32_t *ids, int64_t n, int32_t image_id,
                  const float *images, int64_t n_images, int64_t n_img, float **out,
                  int64_t *n_out)
{
    int64_t C = m->c.dim, total = 0, used = 0;
    /* first pass: the length; a run of exactly n_img markers is one image, as is a lone one */
    for (int64_t i = 0; i < n;) {
        if (ids[i] != image_id) {
            total++;
            i++;
            continue;
        }
        int64_t run = 1;
        while (i + run < n && ids[i + run] == image_id)
            run++;
        int64_t k = run == n_img ? 1 : run;      /* n_img markers in a row: one image */
        used += k;
        total += k * n_img;
        i += run;
    }
    if (used != n_images)
        return lv_error("the prompt has %lld image place(s) and %lld image(s) were given",
                        (long long)used, (long long)n_images);
    float *x = malloc((size_t)(total > 0 ? total : 1) * (size_t)C * sizeof *x);
    if (!x)
        return lv_error_status(LV_ENOMEM, "out of memory splicing image tokens");
    int64_t at = 0, img = 0;
    for (int64_t i = 0; i < n;) {
        if (ids[i] != image_id) {
            int64_t j = i;
            while (j < n && ids[j] != image_id)
                j++;
            int rc = lv_llama_embed(m, ids + i, j - i, x + at * C);
            if (rc) {
                free(x);
                return rc;
            }
            at += j - i;
            i = j;
            continue;
        }
        int64_t run = 1;
        while (i + run < n && ids[i + run] == image_id)
            run++;
        for (int64_t k = 0; k < (run == n_img ? 1 : run); k++, img++) {
            memcpy(x + at * C, images + img * n_img * C, (size_t)(n_img * C) * sizeof *x);
            at += n_img;
        }
        i += run;
    }
    *out = x;
    *n_out = total;
    return LV_OK;
}
