/*
 * ia3.c: (IA)^3 (Liu et al. 2022) as Hugging Face PEFT defines it: learned vectors that scale
 * the keys, the values and the FFN's intermediate activations.
 *
 * A module named by feedforward_modules scales its input: y' = W (l * x) + b, l of shape
 * (1, in). Any other scales its output: y' = l * (W x + b), l of shape (out, 1). The
 * contributions are W ((l - 1) * x) and (l - 1) * y. Saved as `ia3_l` under each module, as
 * PEFT does; init_ia3_weights true starts every l at 1 (the base model unchanged).
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <string.h>

#include "lavinia/error.h"
#include "lavinia/peft.h"
#include "peft/adapter.h"

enum { V_FEEDFORWARD };

static const struct lv_peft_key ia3_keys[] = {
    { .name = "feedforward_modules", .type = LV_KEY_MODULES, .def = "[\"down_proj\"]",
      .help = "modules whose input is scaled (as target_modules: a list or a regex)" },
    { .name = "init_ia3_weights", .type = LV_KEY_BOOL, .def = "true",
      .help = "start every vector at 1 (the base model unchanged); false: random" },
    { .name = "fan_in_fan_out", .type = LV_KEY_BOOL, .def = "false",
      .help = "weights stored (in, out), GPT-2 style (not for LLaMA-family models)" },
    { .name = NULL }
};

static const char *const ia3_default_targets[] = { "k_proj", "v_proj", "down_proj", NULL };

static int ia3_create(lv_peft_ctx *ctx)
{
    if (lv_peft_get_bool(ctx, "fan_in_fan_out"))
        return lv_error("IA3: fan_in_fan_out = true is not supported");
    struct lv_peft_init init = lv_peft_get_bool(ctx, "init_ia3_weights")
                                   ? (struct lv_peft_init){ LV_INIT_CONST, 1.0 }
                                   : (struct lv_peft_init){ LV_INIT_NORMAL, 1.0 };
    for (int i = 0; i < lv_peft_n_sites(ctx); i++) {
        const struct lv_peft_site *s = lv_peft_site_at(ctx, i);
        bool ff = lv_peft_site_matches(ctx, "feedforward_modules", i);
        int64_t shape[2] = { ff ? 1 : s->out, ff ? s->in : 1 };
        if (ff && !s->weight)
            return lv_error("IA3: %s has no weight in this model", s->module);
        if (lv_peft_param(ctx, i, "ia3_l", 2, shape, init, 0) != 0)
            return LV_ERR;
        lv_peft_set_value(ctx, i, V_FEEDFORWARD, ff ? 1.0f : 0.0f);
    }
    return LV_OK;
}

/* a one-element tensor holding 1, to broadcast */
static lv_tensor *one(lv_graph *g)
{
    lv_tensor *t = lv_new(g, LV_F32, 1, (int64_t[]){ 1 });
    if (t)
        *(float *)t->data = 1.0f;
    return t;
}

static lv_tensor *minus_one(lv_graph *g, lv_tensor *l)
{
    return lv_sub(g, l, one(g));
}

static lv_tensor *ia3_apply(const struct lv_peft_call *c)
{
    lv_graph *g = c->g;
    if (c->vals[V_FEEDFORWARD] != 0.0f) {
        lv_tensor *l = lv_reshape(g, c->p[0], 1, &c->site->in);
        return lv_linear(g, lv_mul(g, c->x, minus_one(g, l)), (lv_tensor *)c->site->weight,
                         NULL);
    }
    lv_tensor *l = lv_reshape(g, c->p[0], 1, &c->site->out);
    return lv_mul(g, c->y, minus_one(g, l));
}

static int ia3_merge(const struct lv_peft_call *c, lv_tensor *w, lv_tensor *b, float scale,
                     lv_tensor **w_out, lv_tensor **b_out)
{
    lv_graph *g = c->g;
    bool ff = c->vals[V_FEEDFORWARD] != 0.0f;
    /* the blended vector 1 + scale (l - 1): rows (out, 1) or columns (1, in) of W */
    lv_tensor *l = lv_add(g, lv_scale(g, minus_one(g, c->p[0]), scale), one(g));
    *w_out = lv_mul(g, lv_cast(g, w, LV_F32), l);
    *b_out = !ff && b ? lv_mul(g, lv_cast(g, b, LV_F32),
                               lv_reshape(g, l, 1, &c->site->out)) : NULL;
    return *w_out && (ff || !b || *b_out) ? LV_OK : LV_ERR;
}

const struct lv_peft_method lv_peft_ia3 = {
    .abi = LV_PEFT_ABI,
    .name = "ia3",
    .description = "(IA)^3 (Liu et al. 2022): learned scaling of keys, values and the FFN's "
                   "intermediate activations, as PEFT",
    .keys = ia3_keys,
    .sites = LV_SITE_LINEAR,
    .default_targets = ia3_default_targets,
    .create = ia3_create,
    .apply = ia3_apply,
    .merge = ia3_merge,
};
