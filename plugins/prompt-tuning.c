/*
 * prompt-tuning.c: prompt tuning (Lester et al. 2021) as Hugging Face PEFT defines it, as a
 * lavinia plugin: num_virtual_tokens learned rows put before every sequence, seen by every
 * later position; the model itself is unchanged.
 *
 * Saved as PEFT does: peft_type PROMPT_TUNING, the rows as prompt_embeddings
 * (num_virtual_tokens, token_dim). A fresh adapter starts from N(0, 1) rows (PEFT's RANDOM);
 * TEXT and SAMPLE_VOCAB initialisations are accepted for adapters loaded from a file.
 */
#include <lavinia/error.h>
#include <lavinia/peft.h>

static const struct lv_peft_key ptune_keys[] = {
    { .name = "num_virtual_tokens", .type = LV_KEY_INT, .def = "20", .min = 1, .max = 4096,
      .help = "learned rows put before the sequence" },
    { .name = "token_dim", .type = LV_KEY_INT, .def = "0", .min = 0, .max = 1 << 20,
      .help = "width of the rows: the model's hidden size (0: take it from the model)" },
    { .name = "num_transformer_submodules", .type = LV_KEY_INT, .def = "1", .min = 1, .max = 1,
      .help = "1 for decoder-only models" },
    { .name = "prompt_tuning_init", .type = LV_KEY_STRING, .def = "RANDOM",
      .choices = "RANDOM|TEXT|SAMPLE_VOCAB",
      .help = "how PEFT started the rows (a fresh lavinia adapter starts RANDOM)" },
    { .name = NULL }
};

static const char *const ptune_targets[] = { "embed_tokens", NULL };

static int ptune_create(lv_peft_ctx *ctx)
{
    const struct lv_peft_site *s = lv_peft_site_at(ctx, 0);
    int64_t dim = lv_peft_get_int(ctx, "token_dim");
    if (!s || s->kind != LV_SITE_EMBED)
        return lv_error("prompt tuning: the model's token embedding is needed");
    if (dim != 0 && dim != s->out)
        return lv_error("prompt tuning: token_dim %lld differs from the model's hidden size "
                        "%lld", (long long)dim, (long long)s->out);
    int64_t shape[2] = { lv_peft_get_int(ctx, "num_virtual_tokens"), s->out };
    return lv_peft_param(ctx, -1, "prompt_embeddings", 2, shape,
                         (struct lv_peft_init){ LV_INIT_NORMAL, 1.0 }, 0) == 0 ? LV_OK : LV_ERR;
}

static int ptune_prefix(const struct lv_peft_call *c, lv_tensor **out, bool *hidden)
{
    *out = c->shared[0];
    *hidden = false;
    return LV_OK;
}

static const struct lv_peft_method prompt_tuning = {
    .abi = LV_PEFT_ABI,
    .name = "prompt_tuning",
    .description = "prompt tuning (Lester et al. 2021): learned rows before every sequence, "
                   "as PEFT",
    .keys = ptune_keys,
    .sites = LV_SITE_EMBED,
    .default_targets = ptune_targets,
    .create = ptune_create,
    .prefix = ptune_prefix,
};

static const struct lv_peft_method *const methods[] = { &prompt_tuning, NULL };

const struct lv_peft_method *const *lv_peft_plugin(void)
{
    return methods;
}
