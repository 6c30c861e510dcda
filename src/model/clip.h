/*
 * clip.h (internal): the CLIP ViT vision tower and LLaVA's projector.
 *
 *     lv_clip *v;
 *     lv_clip_load(&v, &ck);                         // a LLaVA checkpoint (HF, or GGUF+mmproj)
 *     float *tokens = malloc(lv_clip_n_tokens(v) * ck.config.dim * sizeof(float));
 *     lv_clip_encode(v, pixels, tokens, NULL);       // pixels: 3 x S x S, preprocessed
 *
 * The tower is Hugging Face's CLIPVisionTransformer: patch embedding (no bias), the class
 * token, learned positions, pre-layernorm, pre-LN blocks (attention with biases, MLP with
 * quick-GELU or GELU); the features are hidden_states[vision_feature_layer] with Hugging
 * Face's meaning (index 0 is the embeddings, -1 the last block's output), the class token
 * dropped by the "default" strategy. Only the blocks up to that layer run. The projector is
 * linear, or LLaVA-1.5's linear-GELU-linear.
 */
#ifndef LV_MODEL_CLIP_H
#define LV_MODEL_CLIP_H

#include <stdint.h>

#include "io/checkpoint.h"
#include "lavinia/ops.h"

typedef struct lv_clip lv_clip;

/* The tensor whose presence says a checkpoint holds the tower (canonical name). */
#define LV_CLIP_CLASS_EMBEDDING "vision_tower.vision_model.embeddings.class_embedding"

struct lv_clip_layer {
    lv_tensor *ln1_w, *ln1_b, *ln2_w, *ln2_b;              /* (D) */
    lv_tensor *q_w, *q_b, *k_w, *k_b, *v_w, *v_b, *o_w, *o_b; /* (D, D), (D) */
    lv_tensor *fc1_w, *fc1_b, *fc2_w, *fc2_b;              /* (F, D), (F), (D, F), (D) */
};

struct lv_clip {
    struct lv_model_config c;      /* c.vision, c.projector, c.vision_feature_* */
    lv_tensor *class_emb;          /* (D) */
    lv_tensor *patch_w;            /* (D, 3, P, P) */
    lv_tensor *pos_emb;            /* (N + 1, D) */
    lv_tensor *pre_ln_w, *pre_ln_b;
    struct lv_clip_layer *layers;
    int64_t n_run;                 /* blocks that run (up to the feature layer) */
    lv_tensor *proj1_w, *proj1_b, *proj2_w, *proj2_b;
    lv_graph *g;
    struct lv_peft_stack *peft;    /* adapters called at the tower's and projector's sites */
    lv_tensor **owned;
    void **copies;
    int n_owned, n_copies;
};

/* The vision tower and projector of a LLaVA checkpoint (ck stays open while v lives). */
int lv_clip_load(lv_clip **out, const struct lv_checkpoint *ck);
/* A tower and projector with random weights (N(0, 1/fan_in), norms 1, biases 0) of config
 * c's shape (c->vision, c->dim, c->projector): benchmarks without a checkpoint. */
int lv_clip_new_random(lv_clip **out, const struct lv_model_config *c, uint64_t seed);
void lv_clip_free(lv_clip *v);
/* Image tokens one image becomes (576 for ViT-L/14 at 336). */
int64_t lv_clip_n_tokens(const lv_clip *v);
/* pixels: 3 x S x S (S = image_size), preprocessed. tokens: n_tokens x text dim (the
 * projector's output); features (optional): n_tokens x vision dim (before the projector). */
int lv_clip_encode(lv_clip *v, const float *pixels, float *tokens, float *features);
/* Backward through the tower and projector: the gradient of a loss whose gradient at the
 * tokens is dtokens (n_tokens x text dim) reaches dpixels (3 x S x S; NULL: not wanted).
 * Frozen weights get none; adapters at the tower's and projector's sites accumulate theirs. */
int lv_clip_backward(lv_clip *v, const float *pixels, const float *dtokens, float *dpixels);

#endif /* LV_MODEL_CLIP_H */
