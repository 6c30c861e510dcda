/*
 * merge.c: a checkpoint with its adapters folded in, written as a Hugging Face directory.
 *
 * Each site with an enabled adapter gets its merged weight (and bias) from the stack
 * (lv_peft_stack_merge_site: the base plus every adapter's scaled change, as the forward pass
 * adds their contributions); every other tensor is written as the checkpoint has it. The
 * merged tensors keep their rows in the checkpoint's order, so the writer's q/k permutation
 * applies to them as to the rest, and the tokenizer and preprocessor files are copied.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/checkpoint.h"
#include "lavinia/error.h"
#include "peft/adapter.h"

/* the stored form of a merged tensor: the base tensor's float type, or dtype */
static int put(struct lv_ckpt_tensor *t, const lv_tensor *merged, enum lv_ckpt_type want,
               void **owned)
{
    enum lv_ckpt_type type = want;
    if (type == LV_CKPT_TYPE_COUNT)
        type = t->type == LV_CKPT_F16 || t->type == LV_CKPT_BF16 ? t->type : LV_CKPT_F32;
    lv_dtype dt = type == LV_CKPT_F16 ? LV_F16 : type == LV_CKPT_BF16 ? LV_BF16 : LV_F32;
    int64_t n = lv_tensor_nelem(merged);
    void *buf = malloc(lv_dtype_bytes(dt, n));
    if (!buf)
        return lv_error_status(LV_ENOMEM, "merge: out of memory");
    lv_convert_row(buf, dt, merged->data, LV_F32, n);
    t->data = buf;
    t->nbytes = lv_dtype_bytes(dt, n);
    t->type = type;
    snprintf(t->type_name, sizeof t->type_name, "%s", lv_dtype_name(dt));
    *owned = buf;
    return LV_OK;
}

int lv_adapters_write_merged(const struct lv_checkpoint *ck, struct lv_peft_stack *st,
                             const char *dir, enum lv_ckpt_type dtype)
{
    const struct lv_site_table *sites = st->sites;
    struct lv_checkpoint out = *ck;
    out.tensors = malloc((size_t)(ck->n_tensors ? ck->n_tensors : 1) * sizeof *out.tensors);
    void **owned = calloc((size_t)ck->n_tensors * 2 + 2, sizeof *owned);
    int n_owned = 0, rc = out.tensors && owned ? LV_OK : lv_error_status(LV_ENOMEM,
                                                                         "merge: out of memory");
    if (rc == LV_OK)
        memcpy(out.tensors, ck->tensors, (size_t)ck->n_tensors * sizeof *out.tensors);
    int merged_sites = 0;
    for (int i = 0; rc == LV_OK && i < sites->n; i++) {
        lv_tensor *w = NULL, *b = NULL;
        if (!lv_peft_stack_active(st, i))
            continue;
        if ((i == lv_site_head(sites) || i == LV_SITE_EMBED_INDEX) && ck->config.tied) {
            rc = lv_error("%s: the output head shares the token embedding; an adapter on "
                          "either cannot be merged into one tensor", ck->path);
            break;
        }
        if ((rc = lv_peft_stack_merge_site(st, i, -1, &w, &b)) != LV_OK)
            break;
        char plain[256], name[300];
        lv_module_canonical(sites->s[i].module, plain, sizeof plain);
        for (int k = 0; rc == LV_OK && k < 2; k++) {
            const lv_tensor *t = k ? b : w;
            if (!t)
                continue;
            snprintf(name, sizeof name, "%s.%s", plain, k ? "bias" : "weight");
            const struct lv_ckpt_tensor *ct = lv_checkpoint_find(ck, name);
            if (!ct) {
                rc = lv_error("%s: no tensor '%s' to merge into", ck->path, name);
                break;
            }
            rc = put(&out.tensors[ct - ck->tensors], t, dtype, &owned[n_owned++]);
        }
        merged_sites++;
        lv_tensor_free(w);
        lv_tensor_free(b);
    }
    if (rc == LV_OK && merged_sites == 0)
        rc = lv_error("merge: no enabled adapter with a nonzero scale");
    if (rc == LV_OK)
        rc = lv_checkpoint_write_hf(&out, dir, 0);
    for (int k = 0; k < n_owned; k++)
        free(owned[k]);
    free(owned);
    free(out.tensors);
    return rc;
}
