/*
 * vera.c: VeRA (Kopiczko et al. 2024), vector-based random matrix adaptation, as Hugging Face
 * PEFT defines it, as a lavinia plugin.
 *
 *     y = W x + b + lambda_b * (B[:out, :] (lambda_d * (A[:, :in] drop(x))))
 *
 * A (r, max in) and B (max out, r) are random, frozen and shared by every adapted module;
 * each module trains two vectors, lambda_d (r) and lambda_b (out). Saved as PEFT does:
 * base_model.vera_A, base_model.vera_B (save_projection) and vera_lambda_d / vera_lambda_b
 * under each module. lambda_b starts at 0 (the base model unchanged), lambda_d at d_initial.
 */
#include <lavinia/error.h>
#include <lavinia/peft.h>

enum { P_LAMBDA_B, P_LAMBDA_D };
enum { S_A, S_B };
enum { V_DROPOUT };

static const struct lv_peft_key vera_keys[] = {
    { .name = "r", .type = LV_KEY_INT, .def = "256", .min = 1, .max = 65536,
      .help = "rank of the shared random projections" },
    { .name = "vera_dropout", .type = LV_KEY_FLOAT, .def = "0", .min = 0, .max = 0.999,
      .help = "dropout on the adapter's input while training" },
    { .name = "d_initial", .type = LV_KEY_FLOAT, .def = "0.1", .min = -1e6, .max = 1e6,
      .help = "initial value of every lambda_d" },
    { .name = "projection_prng_key", .type = LV_KEY_INT, .def = "0", .min = 0, .max = 4e18,
      .help = "seed of the projections (lavinia's generator, not PyTorch's)" },
    { .name = "save_projection", .type = LV_KEY_BOOL, .def = "true",
      .help = "save vera_A and vera_B with the adapter (needed to load it elsewhere)" },
    { .name = "fan_in_fan_out", .type = LV_KEY_BOOL, .def = "false",
      .help = "weights stored (in, out), GPT-2 style (not for LLaMA-family models)" },
    { .name = "bias", .type = LV_KEY_STRING, .def = "none", .choices = "none",
      .help = "trainable biases (\"none\")" },
    { .name = NULL }
};

static int vera_create(lv_peft_ctx *ctx)
{
    if (lv_peft_get_bool(ctx, "fan_in_fan_out"))
        return lv_error("VeRA: fan_in_fan_out = true is not supported");
    int64_t r = lv_peft_get_int(ctx, "r"), max_in = 0, max_out = 0;
    for (int i = 0; i < lv_peft_n_sites(ctx); i++) {
        const struct lv_peft_site *s = lv_peft_site_at(ctx, i);
        max_in = s->in > max_in ? s->in : max_in;
        max_out = s->out > max_out ? s->out : max_out;
    }
    struct lv_peft_init kaiming = { LV_INIT_KAIMING_UNIFORM, 0 };
    if (lv_peft_param(ctx, -1, "base_model.vera_A", 2, (int64_t[]){ r, max_in }, kaiming,
                      LV_PEFT_FROZEN) != S_A ||
        lv_peft_param(ctx, -1, "base_model.vera_B", 2, (int64_t[]){ max_out, r }, kaiming,
                      LV_PEFT_FROZEN) != S_B)
        return LV_ERR;
    double d0 = lv_peft_get_float(ctx, "d_initial");
    for (int i = 0; i < lv_peft_n_sites(ctx); i++) {
        const struct lv_peft_site *s = lv_peft_site_at(ctx, i);
        if (lv_peft_param(ctx, i, "vera_lambda_b", 1, &s->out,
                          (struct lv_peft_init){ LV_INIT_ZERO, 0 }, 0) != P_LAMBDA_B ||
            lv_peft_param(ctx, i, "vera_lambda_d", 1, &r,
                          (struct lv_peft_init){ LV_INIT_CONST, d0 }, 0) != P_LAMBDA_D)
            return LV_ERR;
        lv_peft_set_value(ctx, i, V_DROPOUT, (float)lv_peft_get_float(ctx, "vera_dropout"));
    }
    return LV_OK;
}

/* the slices of the shared projections this module uses: A (r, in), B (out, r) */
static lv_tensor *slice_a(const struct lv_peft_call *c)
{
    return lv_slice(c->g, c->shared[S_A], 1, 0, c->site->in);
}

static lv_tensor *slice_b(const struct lv_peft_call *c)
{
    return lv_slice(c->g, c->shared[S_B], 0, 0, c->site->out);
}

static lv_tensor *vera_apply(const struct lv_peft_call *c)
{
    lv_graph *g = c->g;
    float p = c->vals[V_DROPOUT];
    lv_tensor *x = c->training && p > 0 ? lv_dropout(g, c->x, p, c->seed) : c->x;
    lv_tensor *h = lv_mul(g, lv_linear(g, x, slice_a(c), NULL), c->p[P_LAMBDA_D]);
    return lv_mul(g, lv_linear(g, h, slice_b(c), NULL), c->p[P_LAMBDA_B]);
}

static int vera_merge(const struct lv_peft_call *c, lv_tensor *w, lv_tensor *b, float scale,
                      lv_tensor **w_out, lv_tensor **b_out)
{
    (void)b;
    lv_graph *g = c->g;
    int64_t r = c->shared[S_A]->shape[0], out = c->site->out;
    /* (lambda_b B) (lambda_d A): rows of B scaled by lambda_b, rows of A by lambda_d */
    lv_tensor *bb = lv_mul(g, slice_b(c), lv_reshape(g, c->p[P_LAMBDA_B], 2,
                                                     (int64_t[]){ out, 1 }));
    lv_tensor *aa = lv_mul(g, slice_a(c), lv_reshape(g, c->p[P_LAMBDA_D], 2,
                                                     (int64_t[]){ r, 1 }));
    *w_out = lv_add(g, lv_cast(g, w, LV_F32), lv_scale(g, lv_matmul(g, bb, aa, 0), scale));
    *b_out = NULL;
    return *w_out ? LV_OK : LV_ERR;
}

static const char *const vera_default_targets[] = { "q_proj", "v_proj", NULL };

static const struct lv_peft_method vera = {
    .abi = LV_PEFT_ABI,
    .name = "vera",
    .description = "VeRA (Kopiczko et al. 2024): shared frozen random projections, two "
                   "trained vectors per module, as PEFT",
    .keys = vera_keys,
    .sites = LV_SITE_LINEAR,
    .default_targets = vera_default_targets,
    .create = vera_create,
    .apply = vera_apply,
    .merge = vera_merge,
};

static const struct lv_peft_method *const methods[] = { &vera, NULL };

const struct lv_peft_method *const *lv_peft_plugin(void)
{
    return methods;
}
