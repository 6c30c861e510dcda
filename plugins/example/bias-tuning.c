/*
 * bias-tuning.c: a complete lavinia PEFT plugin. Each adapted linear layer learns a bias
 * vector b added to its output (BitFit-style tuning for models whose layers have no bias).
 *
 *     cc -shared -fPIC bias-tuning.c $(pkg-config --cflags --libs lavinia) -o bias_tuning.so
 *     lavinia --plugin-path . adapters --gradcheck bias_tuning
 */
#include <lavinia/error.h>
#include <lavinia/peft.h>

static const struct lv_peft_key keys[] = {
    { .name = "init_std", .type = LV_KEY_FLOAT, .def = "0", .min = 0, .max = 10,
      .help = "standard deviation of the initial biases (0: the model unchanged)" },
    { .name = NULL }
};

/* one parameter per adapted layer: "bias_tuning.bias", one value per output feature */
static int create(lv_peft_ctx *ctx)
{
    double std = lv_peft_get_float(ctx, "init_std");
    for (int i = 0; i < lv_peft_n_sites(ctx); i++) {
        const struct lv_peft_site *s = lv_peft_site_at(ctx, i);
        struct lv_peft_init init = { std > 0 ? LV_INIT_NORMAL : LV_INIT_ZERO, std };
        if (lv_peft_param(ctx, i, "bias_tuning.bias", 1, &s->out, init, 0) < 0)
            return LV_ERR;
    }
    return LV_OK;
}

/* the contribution: b, which broadcasts over the rows of the layer's output */
static lv_tensor *apply(const struct lv_peft_call *c)
{
    return c->p[0];
}

static const char *const default_targets[] = { "q_proj", "v_proj", NULL };

static const struct lv_peft_method bias_tuning = {
    .abi = LV_PEFT_ABI,               /* first: the ABI this plugin was built against */
    .name = "bias_tuning",
    .description = "a learned bias on each adapted linear layer",
    .keys = keys,
    .sites = LV_SITE_LINEAR,
    .default_targets = default_targets,
    .create = create,
    .apply = apply,
};

static const struct lv_peft_method *const methods[] = { &bias_tuning, NULL };

/* the one symbol lavinia looks for */
const struct lv_peft_method *const *lv_peft_plugin(void)
{
    return methods;
}
