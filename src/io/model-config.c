/*
 * model-config.c: defaults and consistency checks for lv_model_config.
 *
 * The bounds are generous for real models (the largest LLaMA-family configs are far below
 * them) and small enough that size arithmetic on them cannot overflow 64 bits.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "io/model-config.h"

#include <math.h>
#include <string.h>

#include "lavinia/error.h"

#define MAX_DIM ((int64_t)1 << 20)
#define MAX_VOCAB ((int64_t)1 << 24)
#define MAX_LAYERS 1024
#define MAX_HEADS 4096
#define MAX_SEQ ((int64_t)1 << 24)

void lv_model_config_init(struct lv_model_config *c)
{
    memset(c, 0, sizeof *c);
    c->arch = LV_ARCH_LLAMA;
    strcpy(c->arch_name, "llama");
    c->norm_eps = 1e-5f;
    c->rope_theta = 10000.0f;
    c->rope_scaling = LV_ROPE_SCALING_NONE;
    c->rope_factor = 1.0f;
    c->bos_id = 1;
    c->eos_id = 2;
    c->pad_id = -1;
    c->qk_layout = LV_QK_HF;
    c->image_token_id = -1;
    c->vision_feature_layer = -2;
    c->vision.n_channels = 3;
    c->vision.norm_eps = 1e-5f;
    strcpy(c->vision.act, "quick_gelu");
}

const char *lv_arch_name(enum lv_arch a)
{
    static const char *const names[] = {
        [LV_ARCH_LLAMA] = "llama",
        [LV_ARCH_MISTRAL] = "mistral",
        [LV_ARCH_LLAVA] = "llava",
    };
    _Static_assert(sizeof names / sizeof names[0] == LV_ARCH_COUNT, "arch names");
    return (unsigned)a < LV_ARCH_COUNT ? names[a] : "?";
}

/* one range check: lo <= v <= hi */
static int range(const char *what, const char *field, int64_t v, int64_t lo, int64_t hi)
{
    if (v < lo || v > hi)
        return lv_error("%s: %s = %lld is out of range [%lld, %lld]", what, field, (long long)v,
                        (long long)lo, (long long)hi);
    return LV_OK;
}

int lv_model_config_check(const struct lv_model_config *c, const char *what)
{
    int rc;
    if ((rc = range(what, "vocab size", c->vocab, 1, MAX_VOCAB)) ||
        (rc = range(what, "dim", c->dim, 1, MAX_DIM)) ||
        (rc = range(what, "hidden dim", c->hidden, 1, 8 * MAX_DIM)) ||
        (rc = range(what, "layers", c->n_layers, 1, MAX_LAYERS)) ||
        (rc = range(what, "heads", c->n_heads, 1, MAX_HEADS)) ||
        (rc = range(what, "kv heads", c->n_kv_heads, 1, MAX_HEADS)) ||
        (rc = range(what, "head dim", c->head_dim, 1, MAX_DIM)) ||
        (rc = range(what, "context length", c->max_seq, 1, MAX_SEQ)))
        return rc;
    if (c->n_heads % c->n_kv_heads)
        return lv_error("%s: %lld heads are not a multiple of %lld kv heads", what,
                        (long long)c->n_heads, (long long)c->n_kv_heads);
    if (c->head_dim % 2)
        return lv_error("%s: head dim %lld is odd (rotary embedding needs pairs)", what,
                        (long long)c->head_dim);
    if (!(c->norm_eps > 0.0f) || !isfinite(c->norm_eps) || !(c->rope_theta > 0.0f) ||
        !isfinite(c->rope_theta) || !(c->rope_factor > 0.0f) || !isfinite(c->rope_factor))
        return lv_error("%s: norm eps %g, rope theta %g and rope factor %g must be positive",
                        what, (double)c->norm_eps, (double)c->rope_theta,
                        (double)c->rope_factor);
    if (c->has_vision) {
        const struct lv_vision_config *v = &c->vision;
        if ((rc = range(what, "vision dim", v->dim, 1, MAX_DIM)) ||
            (rc = range(what, "vision hidden dim", v->hidden, 1, 8 * MAX_DIM)) ||
            (rc = range(what, "vision layers", v->n_layers, 1, MAX_LAYERS)) ||
            (rc = range(what, "vision heads", v->n_heads, 1, MAX_HEADS)) ||
            (rc = range(what, "patch size", v->patch_size, 1, 1024)) ||
            (rc = range(what, "image size", v->image_size, v->patch_size, 16384)))
            return rc;
        if (v->dim % v->n_heads)
            return lv_error("%s: vision dim %lld is not a multiple of %lld heads", what,
                            (long long)v->dim, (long long)v->n_heads);
        if (v->image_size % v->patch_size)
            return lv_error("%s: image size %lld is not a multiple of patch size %lld", what,
                            (long long)v->image_size, (long long)v->patch_size);
        if (c->projector == LV_PROJ_LAVIN &&
            ((rc = range(what, "hidden_proj", c->proj_hidden, 1, MAX_DIM)) ||
             (rc = range(what, "vision_feature_every", c->vision_feature_every, 1,
                         v->n_layers))))
            return rc;
    }
    return LV_OK;
}
