/*
 * clip.c: the CLIP vision tower and LLaVA's projector on lavinia's ops (clip.h).
 *
 *     x = [class; patch_embed(pixels)] + positions;  x = pre_ln(x)        hidden_states[0]
 *     per block: x += out(attn(ln1(x)));  x += fc2(act(fc1(ln2(x))))     hidden_states[l+1]
 *     features = hidden_states[feature layer], class token dropped ("default")
 *     tokens = linear_2(gelu(linear_1(features)))   (or linear_1 alone)
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "model/clip.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lavinia/error.h"
#include "peft/adapter.h"
#include "model/weights.h"

#define VM "vision_tower.vision_model."

struct lv_clip_impl {
    struct lv_clip v;
    struct lv_weights w;
};

static int get(struct lv_clip_impl *im, const struct lv_checkpoint *ck, const char *name,
               lv_tensor **out)
{
    return lv_weights_get(&im->w, ck, name, out);
}

int lv_clip_load(lv_clip **out, const struct lv_checkpoint *ck)
{
    const struct lv_model_config *c = &ck->config;
    if (!ck->has_config || !c->has_vision)
        return lv_error("%s: no vision tower (a LLaVA checkpoint, or a GGUF model with "
                        "--mmproj, has one)", ck->path);
    if (!lv_checkpoint_find(ck, VM "embeddings.class_embedding"))
        return lv_error("%s: the vision tower is not in this checkpoint (original LLaVA "
                        "checkpoints name it in mm_vision_tower)", ck->path);
    struct lv_clip_impl *im = calloc(1, sizeof *im);
    if (!im)
        return lv_error_status(LV_ENOMEM, "%s: out of memory", ck->path);
    lv_clip *v = &im->v;
    v->c = *c;
    int64_t L = c->vision.n_layers, fl = c->vision_feature_layer;
    int64_t idx = fl < 0 ? L + 1 + fl : fl;        /* index into hidden_states[0..L] */
    int rc = LV_OK;
    if (idx < 0 || idx > L)
        rc = lv_error("%s: vision feature layer %lld is outside the %lld hidden states",
                      ck->path, (long long)fl, (long long)L + 1);
    v->n_run = c->projector == LV_PROJ_LAVIN ? L : idx;     /* LaVIN reads every block */
    v->layers = calloc((size_t)(L > 0 ? L : 1), sizeof *v->layers);
    v->g = lv_graph_new(NULL);
    if (rc == LV_OK && (!v->layers || !v->g))
        rc = lv_error_status(LV_ENOMEM, "%s: out of memory", ck->path);
    if (rc == LV_OK &&
        ((rc = get(im, ck, VM "embeddings.class_embedding", &v->class_emb)) ||
         (rc = get(im, ck, VM "embeddings.patch_embedding.weight", &v->patch_w)) ||
         (rc = get(im, ck, VM "embeddings.position_embedding.weight", &v->pos_emb)) ||
         (rc = get(im, ck, VM "pre_layrnorm.weight", &v->pre_ln_w)) ||
         (rc = get(im, ck, VM "pre_layrnorm.bias", &v->pre_ln_b))))
        goto fail;
    if (rc == LV_OK && c->projector == LV_PROJ_LAVIN &&
        ((rc = get(im, ck, "adapter_proj.conv_A.weight", &v->proj1_w)) ||
         (rc = get(im, ck, "adapter_proj.conv_A.bias", &v->proj1_b)) ||
         (rc = get(im, ck, "adapter_proj.conv_B.weight", &v->proj2_w)) ||
         (rc = get(im, ck, "adapter_proj.conv_B.bias", &v->proj2_b))))
        goto fail;
    if (rc == LV_OK && c->projector != LV_PROJ_LAVIN &&
        ((rc = get(im, ck, "multi_modal_projector.linear_1.weight", &v->proj1_w)) ||
         (rc = get(im, ck, "multi_modal_projector.linear_1.bias", &v->proj1_b))))
        goto fail;
    if (rc == LV_OK && c->projector == LV_PROJ_MLP2X_GELU &&
        ((rc = get(im, ck, "multi_modal_projector.linear_2.weight", &v->proj2_w)) ||
         (rc = get(im, ck, "multi_modal_projector.linear_2.bias", &v->proj2_b))))
        goto fail;
    /* every stored block, also those after the feature layer that never run: adapters
     * trained on the whole tower (DoRA, IA3) read their weights, and merging writes them */
    for (int64_t l = 0; rc == LV_OK && l < L; l++) {
        struct lv_clip_layer *Y = &v->layers[l];
        struct { const char *suffix; lv_tensor **dst; } t[] = {
            { "layer_norm1.weight", &Y->ln1_w }, { "layer_norm1.bias", &Y->ln1_b },
            { "layer_norm2.weight", &Y->ln2_w }, { "layer_norm2.bias", &Y->ln2_b },
            { "self_attn.q_proj.weight", &Y->q_w }, { "self_attn.q_proj.bias", &Y->q_b },
            { "self_attn.k_proj.weight", &Y->k_w }, { "self_attn.k_proj.bias", &Y->k_b },
            { "self_attn.v_proj.weight", &Y->v_w }, { "self_attn.v_proj.bias", &Y->v_b },
            { "self_attn.out_proj.weight", &Y->o_w }, { "self_attn.out_proj.bias", &Y->o_b },
            { "mlp.fc1.weight", &Y->fc1_w }, { "mlp.fc1.bias", &Y->fc1_b },
            { "mlp.fc2.weight", &Y->fc2_w }, { "mlp.fc2.bias", &Y->fc2_b },
        };
        for (size_t i = 0; rc == LV_OK && i < sizeof t / sizeof t[0]; i++) {
            char name[160];
            snprintf(name, sizeof name, VM "encoder.layers.%lld.%s", (long long)l,
                     t[i].suffix);
            rc = get(im, ck, name, t[i].dst);
        }
    }
    if (rc == LV_OK) {
        *out = v;
        return LV_OK;
    }
fail:
    lv_clip_free(v);
    return rc;
}

int lv_clip_new_random(lv_clip **out, const struct lv_model_config *c, uint64_t seed)
{
    struct lv_clip_impl *im = calloc(1, sizeof *im);
    if (!im)
        return lv_error_status(LV_ENOMEM, "vision: out of memory");
    lv_clip *v = &im->v;
    v->c = *c;
    const struct lv_vision_config *vc = &c->vision;
    int64_t D = vc->dim, F = vc->hidden, P = vc->patch_size, C = c->dim;
    int64_t pos = (vc->image_size / P) * (vc->image_size / P) + 1;
    int64_t L = vc->n_layers, fl = c->vision_feature_layer;
    bool lavin = c->projector == LV_PROJ_LAVIN;
    v->n_run = lavin ? L : fl < 0 ? L + 1 + fl : fl;
    /* the projector: LLaVA's (C, D), (C, C); LaVIN's (Hp, D), (C, Hp) */
    int64_t P1 = lavin ? c->proj_hidden : C;
    v->layers = calloc((size_t)(L > 0 ? L : 1), sizeof *v->layers);
    v->g = lv_graph_new(NULL);
    struct lv_weights *w = &im->w;
    uint64_t rng = seed;
    int rc = v->layers && v->g && v->n_run >= 0 && v->n_run <= L
                 ? LV_OK
                 : lv_error("vision: bad shape or out of memory");
#define RW(dst, nd, fill, ...) \
    (rc = rc ? rc : lv_weights_random(w, LV_F32, nd, (int64_t[]){ __VA_ARGS__ }, fill, &rng, dst))
    RW(&v->class_emb, 1, 0.0f, D);
    RW(&v->patch_w, 4, 0.0f, D, vc->n_channels, P, P);
    RW(&v->pos_emb, 2, 0.0f, pos, D);
    RW(&v->pre_ln_w, 1, 1.0f, D);
    RW(&v->pre_ln_b, 1, 0.0f, D);
    RW(&v->proj1_w, 2, 0.0f, P1, D);
    RW(&v->proj1_b, 1, 0.0f, P1);
    RW(&v->proj2_w, 2, 0.0f, C, P1);
    RW(&v->proj2_b, 1, 0.0f, C);
    for (int64_t l = 0; l < L; l++) {
        struct lv_clip_layer *Y = &v->layers[l];
        RW(&Y->ln1_w, 1, 1.0f, D);
        RW(&Y->ln1_b, 1, 0.0f, D);
        RW(&Y->ln2_w, 1, 1.0f, D);
        RW(&Y->ln2_b, 1, 0.0f, D);
        lv_tensor **mats[4] = { &Y->q_w, &Y->k_w, &Y->v_w, &Y->o_w };
        lv_tensor **bias[4] = { &Y->q_b, &Y->k_b, &Y->v_b, &Y->o_b };
        for (int i = 0; i < 4; i++) {
            RW(mats[i], 2, 0.0f, D, D);
            RW(bias[i], 1, 0.0f, D);
        }
        RW(&Y->fc1_w, 2, 0.0f, F, D);
        RW(&Y->fc1_b, 1, 0.0f, F);
        RW(&Y->fc2_w, 2, 0.0f, D, F);
        RW(&Y->fc2_b, 1, 0.0f, D);
    }
#undef RW
    if (rc != LV_OK) {
        lv_clip_free(v);
        return rc;
    }
    *out = v;
    return LV_OK;
}

void lv_clip_free(lv_clip *v)
{
    if (!v)
        return;
    struct lv_clip_impl *im = (struct lv_clip_impl *)v;
    lv_weights_done(&im->w);
    free(v->layers);
    lv_graph_free(v->g);
    free(im);
}

int64_t lv_clip_n_tokens(const lv_clip *v)
{
    if (v->c.projector == LV_PROJ_LAVIN)
        return v->c.vision.n_layers / v->c.vision_feature_every;
    int64_t side = v->c.vision.image_size / v->c.vision.patch_size;
    return side * side + (v->c.vision_feature_full ? 1 : 0);
}

static int vit_site(const lv_clip *v, int layer, enum lv_vit_site k)
{
    return v->peft ? lv_site_vit(v->peft->sites, layer, k) : 0;
}

/* the adapters at a site: y (the base output; for stream sites x itself) plus theirs */
static lv_tensor *site(lv_clip *v, int i, lv_tensor *x, lv_tensor *y)
{
    return lv_peft_stack_active(v->peft, i) ? lv_peft_stack_apply(v->peft, v->g, i, x, y, NULL, 0)
                                            : y;
}

static lv_tensor *proj(lv_clip *v, int i, lv_tensor *x, lv_tensor *w, lv_tensor *b)
{
    return site(v, i, x, lv_linear(v->g, x, w, b));
}

/* the tower and projector on img in v's graph: the projector's output, or NULL */
static lv_tensor *forward(lv_clip *v, lv_tensor *img, float *features)
{
    const struct lv_vision_config *vc = &v->c.vision;
    lv_graph *g = v->g;
    int64_t S = vc->image_size, D = vc->dim, H = vc->n_heads, HD = vc->dim / vc->n_heads;
    int64_t N = (S / vc->patch_size) * (S / vc->patch_size);
    float eps = vc->norm_eps;
    bool quick = strcmp(vc->act, "quick_gelu") == 0;
    lv_tensor *x = lv_patch_embed(g, img, v->patch_w, NULL);
    x = lv_reshape(g, x, 2, (int64_t[]){ N, D });
    lv_tensor *cls = lv_reshape(g, v->class_emb, 2, (int64_t[]){ 1, D });
    x = lv_add(g, lv_concat(g, cls, x, 0), v->pos_emb);
    x = lv_layernorm(g, x, v->pre_ln_w, v->pre_ln_b, eps);
    bool lavin = v->c.projector == LV_PROJ_LAVIN;
    lv_tensor *cls_rows = NULL;              /* LaVIN: the class token after every k-th block */
    for (int64_t l = 0; x && l < v->n_run; l++) {
        const struct lv_clip_layer *Y = &v->layers[l];
        int l_ = (int)l;
        lv_tensor *n = lv_layernorm(g, x, Y->ln1_w, Y->ln1_b, eps);
        n = site(v, vit_site(v, l_, LV_VIT_ATTN_IN), n, n);
        lv_tensor *q = lv_reshape(g, proj(v, vit_site(v, l_, LV_VIT_Q), n, Y->q_w, Y->q_b), 3,
                                  (int64_t[]){ N + 1, H, HD });
        lv_tensor *k = lv_reshape(g, proj(v, vit_site(v, l_, LV_VIT_K), n, Y->k_w, Y->k_b), 3,
                                  (int64_t[]){ N + 1, H, HD });
        lv_tensor *vv = lv_reshape(g, proj(v, vit_site(v, l_, LV_VIT_V), n, Y->v_w, Y->v_b), 3,
                                   (int64_t[]){ N + 1, H, HD });
        lv_tensor *a = lv_attention(g, q, k, vv, NULL, NULL, 1.0f / sqrtf((float)HD), 0);
        a = lv_reshape(g, a, 2, (int64_t[]){ N + 1, D });
        x = lv_add(g, x, proj(v, vit_site(v, l_, LV_VIT_O), a, Y->o_w, Y->o_b));
        lv_tensor *f = lv_layernorm(g, x, Y->ln2_w, Y->ln2_b, eps);
        f = site(v, vit_site(v, l_, LV_VIT_MLP_IN), f, f);
        f = proj(v, vit_site(v, l_, LV_VIT_FC1), f, Y->fc1_w, Y->fc1_b);
        f = quick ? lv_quick_gelu(g, f) : lv_gelu(g, f);
        x = lv_add(g, x, proj(v, vit_site(v, l_, LV_VIT_FC2), f, Y->fc2_w, Y->fc2_b));
        if (lavin && x && (l + 1) % v->c.vision_feature_every == 0) {
            lv_tensor *row = lv_slice(g, x, 0, 0, 1);
            cls_rows = cls_rows ? lv_concat(g, cls_rows, row, 0) : row;
        }
    }
    if (lavin) {
        x = x ? cls_rows : NULL;
        if (x && features)
            lv_tensor_to_f32(features, x);
        int p1 = v->peft ? lv_site_proj(v->peft->sites, 0) : 0;
        lv_tensor *y = x ? proj(v, p1, x, v->proj1_w, v->proj1_b) : NULL;
        return y ? proj(v, p1 + 1, lv_silu(g, y), v->proj2_w, v->proj2_b) : NULL;
    }
    if (x && !v->c.vision_feature_full)
        x = lv_slice(g, x, 0, 1, N);
    if (x && features)
        lv_tensor_to_f32(features, x);
    int p1 = v->peft ? lv_site_proj(v->peft->sites, 0) : 0;
    lv_tensor *y = x ? proj(v, p1, x, v->proj1_w, v->proj1_b) : NULL;
    if (y && v->c.projector == LV_PROJ_MLP2X_GELU)
        y = proj(v, p1 + 1, lv_gelu(g, y), v->proj2_w, v->proj2_b);
    return y;
}

int lv_clip_encode(lv_clip *v, const float *pixels, float *tokens, float *features)
{
    const struct lv_vision_config *vc = &v->c.vision;
    int64_t S = vc->image_size;
    lv_graph_reset(v->g);
    lv_graph_set_recording(v->g, false);
    lv_tensor *img = lv_new(v->g, LV_F32, 3, (int64_t[]){ vc->n_channels, S, S });
    if (!img)
        return LV_ERR;
    memcpy(img->data, pixels, (size_t)(vc->n_channels * S * S) * sizeof(float));
    lv_tensor *y = forward(v, img, features);
    if (!y)
        return LV_ERR;
    lv_tensor_to_f32(tokens, y);
    return LV_OK;
}

int lv_clip_backward(lv_clip *v, const float *pixels, const float *dtokens, float *dpixels)
{
    const struct lv_vision_config *vc = &v->c.vision;
    int64_t S = vc->image_size, shape[3] = { vc->n_channels, S, S };
    lv_graph_reset(v->g);
    lv_graph_set_recording(v->g, true);
    lv_tensor *img = lv_tensor_new(LV_F32, 3, shape);
    if (!img)
        return lv_error_status(LV_ENOMEM, "vision: out of memory");
    memcpy(img->data, pixels, (size_t)(vc->n_channels * S * S) * sizeof(float));
    if (dpixels)
        lv_tensor_set_param(img);
    else
        lv_tensor_set_frozen(img);
    lv_tensor *y = forward(v, img, NULL);
    int rc = LV_ERR;
    if (y && !(y->flags & LV_TENSOR_NEEDS_GRAD)) {
        rc = LV_OK;                /* nothing in the tower or projector is trained */
    } else if (y) {
        lv_tensor *dy = lv_tensor_wrap((void *)dtokens, LV_F32, y->ndim, y->shape);
        rc = dy ? lv_backward_with(v->g, y, dy) : lv_error_status(LV_ENOMEM, "out of memory");
        lv_tensor_free(dy);
    }
    if (rc == LV_OK && dpixels)
        lv_tensor_to_f32(dpixels, img->grad);
    lv_graph_reset(v->g);
    lv_graph_set_recording(v->g, false);
    lv_tensor_free(img);
    return rc;
}
