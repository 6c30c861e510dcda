/*
 * lora.c: LoRA (Hu et al. 2021) as Hugging Face PEFT defines it.
 *
 *     y = W x + s * B (A drop(x)),   s = alpha / r   (rsLoRA: alpha / sqrt(r))
 *
 * A (r, in) and B (out, r) per linear site, computed as (x A^T) B^T without forming B A. The
 * embedding site follows PEFT's Embedding layer: lora_embedding_A (r, V), lora_embedding_B
 * (C, r), y = E[ids] + s * A^T[ids] B^T. Initialisation as PEFT's init_lora_weights: true
 * (A Kaiming-uniform, B zero; for the embedding A zero, B normal), "gaussian" (A normal with
 * std 1/r), false (both factors random, as nn.Linear would leave them: useful in tests).
 * Dropout applies to x before A, in training only.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <math.h>
#include <string.h>

#include "lavinia/error.h"
#include "lavinia/peft.h"
#include "peft/adapter.h"

enum { V_SCALING = LV_LORA_SCALING, V_DROPOUT = LV_LORA_DROPOUT };
enum { P_A, P_B };

#define LORA_KEYS(dora_default)                                                               \
    { .name = "r", .type = LV_KEY_INT, .def = "8", .min = 1, .max = 65536,                     \
      .help = "rank of the A and B factors" },                                                \
    { .name = "lora_alpha", .type = LV_KEY_FLOAT, .def = "8", .min = -1e6, .max = 1e6,         \
      .help = "the update is scaled by lora_alpha / r (or / sqrt(r) with use_rslora)" },      \
    { .name = "lora_dropout", .type = LV_KEY_FLOAT, .def = "0", .min = 0, .max = 0.999,        \
      .help = "dropout on the adapter's input while training" },                              \
    { .name = "use_rslora", .type = LV_KEY_BOOL, .def = "false",                               \
      .help = "rank-stabilised scaling: lora_alpha / sqrt(r)" },                              \
    { .name = "init_lora_weights", .type = LV_KEY_STRING, .def = "true",                       \
      .choices = "true|false|gaussian",                                                        \
      .help = "initialisation: true (B zero, the base model unchanged), gaussian, false" },    \
    { .name = "rank_pattern", .type = LV_KEY_PATTERN,                                          \
      .help = "per-module ranks: {pattern: r}, the pattern matching the module path's end" }, \
    { .name = "alpha_pattern", .type = LV_KEY_PATTERN,                                         \
      .help = "per-module alphas: {pattern: alpha}" },                                        \
    { .name = "bias", .type = LV_KEY_STRING, .def = "none", .choices = "none",                 \
      .help = "trainable biases (lavinia supports \"none\")" },                               \
    { .name = "fan_in_fan_out", .type = LV_KEY_BOOL, .def = "false",                           \
      .help = "weights stored (in, out), GPT-2 style (not for LLaMA-family models)" },        \
    { .name = "use_dora", .type = LV_KEY_BOOL, .def = dora_default,                            \
      .help = "weight-decomposed LoRA (the dora method)" },                                   \
    { .name = "lora_bias", .type = LV_KEY_BOOL, .def = "false",                                \
      .help = "a bias on B (not supported)" },                                                \
    { .name = NULL }

const struct lv_peft_key lv_lora_dora_keys[] = { LORA_KEYS("true") };

static const struct lv_peft_key lora_keys[] = { LORA_KEYS("false") };

static const char *const lora_default_targets[] = { "q_proj", "v_proj", NULL };

int lv_lora_create(lv_peft_ctx *ctx, bool dora)
{
    static const char *const refused[] = { "fan_in_fan_out", "use_dora", "lora_bias" };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
        if (lv_peft_get_bool(ctx, refused[i]) && !(dora && i == 1))
            return lv_error("LoRA: %s = true is not supported", refused[i]);
    const char *init = lv_peft_get_str(ctx, "init_lora_weights");
    bool rs = lv_peft_get_bool(ctx, "use_rslora");
    int64_t r0 = lv_peft_get_int(ctx, "r");
    double alpha0 = lv_peft_get_float(ctx, "lora_alpha");
    for (int i = 0; i < lv_peft_n_sites(ctx); i++) {
        const struct lv_peft_site *s = lv_peft_site_at(ctx, i);
        int64_t r = (int64_t)lv_peft_get_pattern(ctx, "rank_pattern", i, (double)r0);
        double alpha = lv_peft_get_pattern(ctx, "alpha_pattern", i, alpha0);
        if (r < 1 || r > 65536)
            return lv_error("LoRA: rank %lld for %s is out of range", (long long)r, s->module);
        struct lv_peft_init a_init = { LV_INIT_KAIMING_UNIFORM, 0 }, b_init = { LV_INIT_ZERO, 0 };
        if (strcmp(init, "gaussian") == 0)
            a_init = (struct lv_peft_init){ LV_INIT_NORMAL, 1.0 / (double)r };
        else if (strcmp(init, "false") == 0)
            b_init = (struct lv_peft_init){ LV_INIT_KAIMING_UNIFORM, 0 };
        int pa, pb;
        if (s->kind == LV_SITE_EMBED) {
            if (strcmp(init, "true") == 0) {
                a_init = (struct lv_peft_init){ LV_INIT_ZERO, 0 };
                b_init = (struct lv_peft_init){ LV_INIT_NORMAL, 1.0 };
            }
            pa = lv_peft_param(ctx, i, "lora_embedding_A", 2, (int64_t[]){ r, s->in }, a_init, 0);
            pb = lv_peft_param(ctx, i, "lora_embedding_B", 2, (int64_t[]){ s->out, r }, b_init, 0);
        } else {
            pa = lv_peft_param(ctx, i, "lora_A.weight", 2, (int64_t[]){ r, s->in }, a_init, 0);
            pb = lv_peft_param(ctx, i, "lora_B.weight", 2, (int64_t[]){ s->out, r }, b_init, 0);
        }
        if (pa != P_A || pb != P_B)
            return LV_ERR;
        if (dora && s->kind != LV_SITE_LINEAR)
            return lv_error("DoRA: %s is not a linear layer", s->module);
        lv_peft_set_value(ctx, i, V_SCALING, (float)(rs ? alpha / sqrt((double)r) : alpha / (double)r));
        lv_peft_set_value(ctx, i, V_DROPOUT, (float)lv_peft_get_float(ctx, "lora_dropout"));
    }
    return LV_OK;
}

static int lora_create(lv_peft_ctx *ctx)
{
    return lv_lora_create(ctx, false);
}

lv_tensor *lv_lora_delta(const struct lv_peft_call *c, lv_tensor *x)
{
    return lv_scale(c->g, lv_linear(c->g, lv_linear(c->g, x, c->p[P_A], NULL), c->p[P_B], NULL),
                    c->vals[V_SCALING]);
}

lv_tensor *lv_lora_input(const struct lv_peft_call *c)
{
    float p = c->vals[V_DROPOUT];
    return c->training && p > 0 ? lv_dropout(c->g, c->x, p, c->seed) : c->x;
}

static lv_tensor *lora_apply(const struct lv_peft_call *c)
{
    lv_graph *g = c->g;
    if (c->site->kind == LV_SITE_EMBED) {
        lv_tensor *at = lv_cont(g, lv_transpose(g, c->p[P_A], 0, 1));     /* (V, r) */
        lv_tensor *h = lv_embedding(g, at, c->ids);
        return lv_scale(g, lv_linear(g, h, c->p[P_B], NULL), c->vals[V_SCALING]);
    }
    return lv_lora_delta(c, lv_lora_input(c));
}

static int lora_merge(const struct lv_peft_call *c, lv_tensor *w, lv_tensor *b, float scale,
                      lv_tensor **w_out, lv_tensor **b_out)
{
    (void)b;
    lv_graph *g = c->g;
    lv_tensor *d = lv_matmul(g, c->p[P_B], c->p[P_A], 0);   /* (out, in) or (C, V) */
    if (c->site->kind == LV_SITE_EMBED)
        d = lv_cont(g, lv_transpose(g, d, 0, 1));
    *w_out = lv_add(g, lv_cast(g, w, LV_F32), lv_scale(g, d, scale * c->vals[V_SCALING]));
    *b_out = NULL;
    return *w_out ? LV_OK : LV_ERR;
}

const struct lv_peft_method lv_peft_lora = {
    .abi = LV_PEFT_ABI,
    .name = "lora",
    .description = "low-rank update B A of each adapted weight (Hu et al. 2021), as PEFT",
    .keys = lora_keys,
    .sites = LV_SITE_LINEAR | LV_SITE_EMBED,
    .default_targets = lora_default_targets,
    .create = lora_create,
    .apply = lora_apply,
    .merge = lora_merge,
};
