/*
 * test-llava.c: the CLIP tower, the projector and the spliced sequence against PyTorch.
 *
 * tests/reference/llava.bin (gen_llava.py, float64): a small random LLaVA in the llava-hf
 * layout (llava-tiny/). From the same pixels, the tower's features (hidden_states[-2] without
 * the class token) and the projector's tokens match within 1e-5 (max|a - b| <= tol *
 * max|b|); the language model's logits over the prompt with its image token expanded into the
 * 4 image tokens match too. The same markers written as 4 image tokens in a row splice the
 * same way, and a marker count that does not match the images is refused.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/checkpoint.h"
#include "lavinia/error.h"
#include "model/clip.h"
#include "model/llama.h"
#include "model/vlm.h"
#include "refdata.h"
#include "testutil.h"

#define TOL 1e-5
#define REF_HINT "cd tests/reference && /usr/bin/python3 gen_llava.py"


int main(int argc, char **argv)
{
    tu_init(argc, argv, "llava");
    struct ref_file rf;
    if (!ref_load(&rf, "llava", REF_HINT))
        return tu_finish();
    const char *top = getenv("LV_TOP_SRCDIR");
    char path[1200];
    snprintf(path, sizeof path, "%s/tests/reference/llava-tiny", top && *top ? top : ".");
    const struct ref_tensor *pixels = ref_get(&rf, "pixels", 3, (int64_t[]){ 3, 28, 28 });
    const struct ref_tensor *feats = ref_get(&rf, "features", 2, (int64_t[]){ 4, 32 });
    const struct ref_tensor *toks = ref_get(&rf, "tokens", 2, (int64_t[]){ 4, 48 });
    const struct ref_tensor *idsr = ref_get(&rf, "ids", 1, (int64_t[]){ 7 });
    const struct ref_tensor *logits = ref_get(&rf, "logits", 2, (int64_t[]){ 10, 96 });
    struct lv_checkpoint ck;
    lv_clip *v = NULL;
    lv_llama *m = NULL;
    if (!pixels || !feats || !toks || !idsr || !logits ||
        !tu_assert(lv_checkpoint_open(&ck, path, NULL, NULL) == LV_OK, "llava-tiny opens (%s)",
                   lv_errmsg())) {
        ref_done(&rf);
        return tu_finish();
    }
    tu_assert(lv_clip_load(&v, &ck) == LV_OK, "the vision tower loads (%s)", lv_errmsg());
    tu_assert(lv_llama_load(&m, &ck, 0) == LV_OK, "the language model loads (%s)", lv_errmsg());
    if (v && m) {
        float px[3 * 28 * 28], f[4 * 32], t[4 * 48];
        for (int i = 0; i < 3 * 28 * 28; i++)
            px[i] = (float)pixels->data[i];
        tu_assert(lv_clip_n_tokens(v) == 4, "4 image tokens per image");
        int rc = lv_clip_encode(v, px, t, f);
        double ef = rc == LV_OK ? tu_rel_err(f, feats->data, 4 * 32) : 1.0;
        double et = rc == LV_OK ? tu_rel_err(t, toks->data, 4 * 48) : 1.0;
        tu_assert(ef <= TOL, "tower features (hidden_states[-2], class token dropped): "
                  "relative error %.2e", ef);
        tu_assert(et <= TOL, "projector tokens (linear, GELU, linear): relative error %.2e", et);
        const struct ref_tensor *R = ref_get(&rf, "R", 2, (int64_t[]){ 4, 48 });
        const struct ref_tensor *gp = ref_get(&rf, "grad.pixels", 3, (int64_t[]){ 3, 28, 28 });
        if (R && gp) {
            float dt[4 * 48], dp[3 * 28 * 28];
            for (int i = 0; i < 4 * 48; i++)
                dt[i] = (float)R->data[i];
            rc = lv_clip_backward(v, px, dt, dp);
            double eg = rc == LV_OK ? tu_rel_err(dp, gp->data, 3 * 28 * 28) : 1.0;
            tu_assert(eg <= TOL, "gradient through the projector and the tower to the pixels: "
                      "relative error %.2e (%s)", eg, rc == LV_OK ? "ok" : lv_errmsg());
        }
        int32_t ids[7];
        for (int i = 0; i < 7; i++)
            ids[i] = (int32_t)idsr->data[i];
        float *seq = NULL, out[10 * 96];
        int64_t n = 0;
        rc = lv_vlm_splice(m, ids, 7, 95, t, 1, 4, &seq, &n);
        tu_assert(rc == LV_OK && n == 10, "one image token expands to 4 (%lld positions)",
                  (long long)n);
        if (rc == LV_OK) {
            rc = lv_llama_forward_embd(m, seq, n, out, true);
            double e = rc == LV_OK ? tu_rel_err(out, logits->data, 10 * 96) : 1.0;
            tu_assert(e <= TOL, "logits over the spliced sequence: relative error %.2e", e);
        }
        /* two images, each at its own turn through the cache, against one pass over both */
        float pxb[3 * 28 * 28], tb[4 * 48], both[8 * 48];
        for (int i = 0; i < 3 * 28 * 28; i++)
            pxb[i] = -0.5f * px[3 * 28 * 28 - 1 - i];
        int32_t turn2[4] = { 2, 60, 95, 61 }, all[11];
        memcpy(all, ids, sizeof ids);
        memcpy(all + 7, turn2, sizeof turn2);
        float *s1 = NULL, *s2 = NULL, *sall = NULL, last[96], *allout = NULL;
        int64_t n1 = 0, n2 = 0, nall = 0;
        rc = lv_clip_encode(v, pxb, tb, NULL);
        memcpy(both, t, sizeof t);
        memcpy(both + 4 * 48, tb, sizeof tb);
        if (rc == LV_OK)
            rc = lv_vlm_splice(m, ids, 7, 95, t, 1, 4, &s1, &n1);
        if (rc == LV_OK)
            rc = lv_vlm_splice(m, turn2, 4, 95, tb, 1, 4, &s2, &n2);
        if (rc == LV_OK)
            rc = lv_vlm_splice(m, all, 11, 95, both, 2, 4, &sall, &nall);
        lv_llama_reset(m);
        if (rc == LV_OK && (rc = lv_llama_forward_embd(m, s1, n1, NULL, false)) == LV_OK)
            rc = lv_llama_forward_embd(m, s2, n2, last, false);
        allout = malloc((size_t)(nall * 96) * sizeof *allout);
        lv_llama_reset(m);
        if (rc == LV_OK)
            rc = lv_llama_forward_embd(m, sall, nall, allout, true);
        double e2 = 1.0;
        if (rc == LV_OK) {
            double mx = 0.0, d = 0.0;
            for (int i = 0; i < 96; i++) {
                d = fmax(d, fabs((double)last[i] - allout[(nall - 1) * 96 + i]));
                mx = fmax(mx, fabs((double)allout[(nall - 1) * 96 + i]));
            }
            e2 = d / mx;
        }
        tu_assert(rc == LV_OK && nall == n1 + n2 && e2 <= TOL, "two images at two turns through "
                  "the cache give the logits of one pass over both (%lld positions, relative "
                  "difference %.2e)", (long long)nall, e2);
        free(s1);
        free(s2);
        free(sall);
        free(allout);
        lv_llama_reset(m);
        /* four image tokens in a row (newer processors) splice the same way */
        int32_t ids4[10] = { ids[0], ids[1], ids[2], 95, 95, 95, 95, ids[4], ids[5], ids[6] };
        float *seq4 = NULL;
        int64_t n4 = 0;
        tu_assert(lv_vlm_splice(m, ids4, 10, 95, t, 1, 4, &seq4, &n4) == LV_OK && n4 == 10 &&
                      memcmp(seq4, seq, (size_t)(10 * 48) * sizeof(float)) == 0,
                  "4 image tokens in a row are the same splice");
        int32_t two[3] = { 1, 95, 95 };
        float *bad = NULL;
        int64_t nb;
        tu_assert(lv_vlm_splice(m, two, 3, 95, t, 1, 4, &bad, &nb) != LV_OK &&
                      strstr(lv_errmsg(), "image"), "two image places for one image: %s",
                  lv_errmsg());
        /* the same model written as GGUF + mmproj and read back through the GGUF loader */
        char tmp[256], gg[400], mm[400];
        const char *t0 = getenv("TMPDIR");
        snprintf(tmp, sizeof tmp, "%s/lv-llava-XXXXXX", t0 && *t0 ? t0 : "/tmp");
        struct lv_checkpoint g;
        lv_clip *gv = NULL;
        lv_llama *gm = NULL;
        if (mkdtemp(tmp)) {
            snprintf(gg, sizeof gg, "%s/llava.gguf", tmp);
            lv_checkpoint_mmproj_path(gg, mm, sizeof mm);
            rc = lv_checkpoint_write_gguf(&ck, gg);
            tu_assert(rc == LV_OK, "written as GGUF + mmproj (%s)", lv_errmsg());
            if (rc == LV_OK &&
                tu_assert(lv_checkpoint_open(&g, gg, mm, NULL) == LV_OK, "GGUF + mmproj open "
                          "(%s)", lv_errmsg())) {
                float gt[4 * 48], gout[10 * 96], *gseq = NULL;
                int64_t gn = 0;
                rc = lv_clip_load(&gv, &g);
                if (rc == LV_OK)
                    rc = lv_llama_load(&gm, &g, 0);
                if (rc == LV_OK)
                    rc = lv_clip_encode(gv, px, gt, NULL);
                if (rc == LV_OK)
                    rc = lv_vlm_splice(gm, ids, 7, 95, gt, 1, 4, &gseq, &gn);
                if (rc == LV_OK)
                    rc = lv_llama_forward_embd(gm, gseq, gn, gout, true);
                double e = rc == LV_OK ? tu_rel_err(gout, logits->data, 10 * 96) : 1.0;
                tu_assert(e <= TOL, "GGUF + mmproj: the same logits through the GGUF loader: "
                          "relative error %.2e (%s)", e, rc == LV_OK ? "ok" : lv_errmsg());
                free(gseq);
                lv_clip_free(gv);
                lv_llama_free(gm);
                lv_checkpoint_close(&g);
            }
            char cmd[400];
            snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
            if (system(cmd) != 0)
                printf("# could not remove %s\n", tmp);
        }
        free(seq);
        free(seq4);
        free(bad);
    }
    lv_clip_free(v);
    lv_llama_free(m);
    lv_checkpoint_close(&ck);
    ref_done(&rf);
    return tu_finish();
}
