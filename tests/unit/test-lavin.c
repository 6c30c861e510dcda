/*
 * test-lavin.c: LaVIN's vision layout against PyTorch (tests/reference/gen_lavin.py).
 *
 * lavin-tiny/ (lavinia's LaVIN layout: model_type "lavin") loads with LaVIN's projector; the
 * tower gives the class token after every 4th block (features), adapter_proj turns them into
 * the image tokens, the gradient reaches the pixels, and the language model over a prompt
 * with the tokens spliced in gives the reference logits, all within 1e-5 (per tensor). LaVIN's
 * preprocessing (both sides to the size, ImageNet statistics) of the committed test images
 * agrees with PIL's as CLIP's does (test-image): within 0.02 mean and 0.25 max in CLIP's
 * normalised units, that is in pixels (0..1) 0.0054 and 0.067; ImageNet's smaller std makes
 * the same pixels larger numbers.
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
#include "io/checkpoint.h"
#include "lavinia/error.h"
#include "model/clip.h"
#include "model/llama.h"
#include "model/vlm.h"
#include "refdata.h"
#include "testutil.h"

#define TOL 1e-5

static void preprocessing(const struct ref_file *rf, const char *top)
{
    static const char *const names[] = { "photo.jpg", "alpha.png", "tiny.png", "tall.png",
                                         "wide.png" };
    struct lv_clip_preprocess p;
    lv_clip_preprocess_lavin(&p, 112);
    float *out = malloc(3 * 112 * 112 * sizeof *out);
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char path[1200], key[64];
        snprintf(path, sizeof path, "%s/tests/reference/images/%s", top, names[i]);
        snprintf(key, sizeof key, "pre.%s", names[i]);
        const struct ref_tensor *r = ref_get(rf, key, 3, (int64_t[]){ 3, 112, 112 });
        struct lv_image img;
        if (!r || lv_image_load(&img, path, 0) != LV_OK) {
            tu_assert(false, "%s loads (%s)", names[i], lv_errmsg());
            continue;
        }
        int rc = lv_clip_preprocess(&p, &img, out);
        double mean = 0, mx = 0, clip_std = 0.26862954;   /* CLIP's smallest std */
        for (int j = 0; rc == LV_OK && j < 3 * 112 * 112; j++) {
            double d = fabs((double)out[j] - r->data[j]) * p.std[j / (112 * 112)];
            mean += d / (3 * 112 * 112);
            mx = fmax(mx, d);
        }
        tu_assert(rc == LV_OK && mean <= 0.02 * clip_std && mx <= 0.25 * clip_std,
                  "LaVIN preprocessing of %s (%d x %d to 112 x 112, ImageNet statistics): in "
                  "pixels, mean |diff| %.4f, max %.4f (bounds %.4f, %.4f)", names[i], img.w,
                  img.h, mean, mx, 0.02 * clip_std, 0.25 * clip_std);
        lv_image_free(&img);
    }
    free(out);
}

int main(int argc, char **argv)
{
    tu_init(argc, argv, "lavin");
    struct ref_file rf;
    if (!ref_load(&rf, "lavin", "cd tests/reference && /usr/bin/python3 gen_lavin.py"))
        return tu_finish();
    const char *t = getenv("LV_TOP_SRCDIR");
    const char *top = t && *t ? t : ".";
    char path[1200];
    snprintf(path, sizeof path, "%s/tests/reference/lavin-tiny", top);
    const struct ref_tensor *px_r = ref_get(&rf, "pixels", 3, (int64_t[]){ 3, 28, 28 });
    const struct ref_tensor *fr = ref_get(&rf, "features", 2, (int64_t[]){ 2, 32 });
    const struct ref_tensor *tr = ref_get(&rf, "tokens", 2, (int64_t[]){ 2, 48 });
    const struct ref_tensor *R = ref_get(&rf, "R", 2, (int64_t[]){ 2, 48 });
    const struct ref_tensor *gp = ref_get(&rf, "grad.pixels", 3, (int64_t[]){ 3, 28, 28 });
    const struct ref_tensor *idr = ref_get(&rf, "ids", 1, (int64_t[]){ 7 });
    const struct ref_tensor *lg = ref_get(&rf, "logits", 2, (int64_t[]){ 8, 96 });
    struct lv_checkpoint ck;
    lv_clip *v = NULL;
    lv_llama *m = NULL;
    if (px_r && fr && tr && R && gp && idr && lg &&
        tu_assert(lv_checkpoint_open(&ck, path, NULL, NULL) == LV_OK, "lavin-tiny opens (%s)",
                  lv_errmsg())) {
        const struct lv_model_config *c = &ck.config;
        tu_assert(c->projector == LV_PROJ_LAVIN && c->proj_hidden == 16 &&
                      c->vision_feature_every == 4 && c->image_token_id == -1,
                  "config.json: LaVIN's projector, hidden_proj 16, every 4th block, no image "
                  "token");
        int rc = lv_clip_load(&v, &ck);
        if (rc == LV_OK)
            rc = lv_llama_load(&m, &ck, 0);
        tu_assert(rc == LV_OK && lv_clip_n_tokens(v) == 2, "tower, adapter_proj and language "
                  "model load; 8 blocks give 2 image tokens (%s)", rc ? lv_errmsg() : "ok");
        if (rc == LV_OK) {
            float px[3 * 28 * 28], f[2 * 32], tok[2 * 48], dt[2 * 48], dp[3 * 28 * 28];
            for (int i = 0; i < 3 * 28 * 28; i++)
                px[i] = (float)px_r->data[i];
            rc = lv_clip_encode(v, px, tok, f);
            double ef = rc == LV_OK ? tu_rel_err(f, fr->data, 2 * 32) : 1.0;
            double et = rc == LV_OK ? tu_rel_err(tok, tr->data, 2 * 48) : 1.0;
            tu_assert(ef <= TOL, "the class token after blocks 4 and 8: relative error %.2e", ef);
            tu_assert(et <= TOL, "adapter_proj (linear, SiLU, linear): relative error %.2e", et);
            for (int i = 0; i < 2 * 48; i++)
                dt[i] = (float)R->data[i];
            rc = lv_clip_backward(v, px, dt, dp);
            double eg = rc == LV_OK ? tu_rel_err(dp, gp->data, 3 * 28 * 28) : 1.0;
            tu_assert(eg <= TOL, "gradient through adapter_proj and the tower to the pixels: "
                      "relative error %.2e", eg);
            int32_t ids[7];
            for (int i = 0; i < 7; i++)
                ids[i] = (int32_t)idr->data[i];
            float *seq = NULL, out[8 * 96];
            int64_t n = 0;
            rc = lv_vlm_splice(m, ids, 7, 95, tok, 1, 2, &seq, &n);
            if (rc == LV_OK && n == 8)
                rc = lv_llama_forward_embd(m, seq, n, out, true);
            double el = rc == LV_OK && n == 8 ? tu_rel_err(out, lg->data, 8 * 96) : 1.0;
            tu_assert(el <= TOL, "logits over the prompt with the 2 image tokens spliced in: "
                      "relative error %.2e", el);
            free(seq);
        }
        char gg[600];
        const char *t0 = getenv("TMPDIR");
        snprintf(gg, sizeof gg, "%s/lv-lavin-%d.gguf", t0 && *t0 ? t0 : "/tmp", (int)getpid());
        tu_assert(lv_checkpoint_write_gguf(&ck, gg) != LV_OK, "a LaVIN checkpoint is not "
                  "written as GGUF + mmproj (llama.cpp has no LaVIN projector): %s",
                  lv_errmsg());
        lv_clip_free(v);
        lv_llama_free(m);
        lv_checkpoint_close(&ck);
    }
    preprocessing(&rf, top);
    ref_done(&rf);
    return tu_finish();
}
