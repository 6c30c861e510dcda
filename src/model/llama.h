/*
 * llama.h (internal): the LLaMA-family decoder (LLaMA, Llama-2, Vicuna, Mistral without
 * sliding window, llama2.c models, LLaVA's language model) with a kv cache.
 *
 *     struct lv_checkpoint ck;             // io/checkpoint.h: stays open while the model lives
 *     lv_llama *m;
 *     lv_checkpoint_open(&ck, path, NULL, NULL);
 *     lv_llama_load(&m, &ck, 0);           // 0: the config's context length
 *     float *logits = malloc(lv_llama_vocab(m) * sizeof(float));
 *     lv_llama_forward(m, prompt, n, logits, false);   // the prompt in one pass: last row
 *     lv_llama_forward(m, &next, 1, logits, false);    // then token by token
 *
 * Weights are used where the checkpoint maps them (F32, F16, BF16, zero-copy when aligned);
 * q/k rows stay in the file's order and RoPE runs in the matching layout (Meta pairs or
 * Hugging Face halves), so nothing is permuted at load.
 */
#ifndef LV_MODEL_LLAMA_H
#define LV_MODEL_LLAMA_H

#include <stdbool.h>
#include <stdint.h>

#include "io/checkpoint.h"
#include "lavinia/ops.h"
#include "model/weights.h"

typedef struct lv_llama lv_llama;

struct lv_llama_layer {
    lv_tensor *attn_norm;                  /* (C) */
    lv_tensor *wq, *wk, *wv, *wo;          /* (H*D, C), (KV*D, C), (KV*D, C), (C, H*D) */
    lv_tensor *ffn_norm;                   /* (C) */
    lv_tensor *w_gate, *w_up, *w_down;     /* (F, C), (F, C), (C, F) */
};

struct lv_llama {
    struct lv_model_config c;
    lv_tensor *tok_emb;                    /* (V, C) */
    lv_tensor *norm;                       /* (C) */
    lv_tensor *lm_head;                    /* (V, C): tok_emb when tied */
    struct lv_llama_layer *layers;         /* [L] */
    lv_kv_cache *cache;                    /* [L] */
    void *cache_block;                     /* every layer's k and v, one block (lv_zalloc) */
    size_t cache_bytes;
    int64_t n_ctx;                         /* positions the cache holds */
    int64_t pos;                           /* positions filled */
    int64_t n_hidden;                      /* leading positions later ones do not see (a
                                              prefix method's hidden rows) */
    lv_rope_mode rope;
    float rope_scale;
    lv_graph *g;
    struct lv_weights w;                   /* every weight, for freeing */
    struct lv_peft_stack *peft;            /* adapters called at each site, or NULL */
    uint64_t peft_gen;                     /* the stack's generation the cache was made with */
    /* What the cached positions were made from, to recompute them when the adapters change:
     * per position after the prefix an id, or -1 for a row of embd (spliced images). */
    struct {
        int32_t *ids;
        float *embd;
        int64_t n, n_embd, cap_embd;
    } hist;
    int64_t n_prefix;                      /* positions the prefix methods put first */
    struct {
        int64_t positions;                 /* recomputed since the caller zeroed this */
        double seconds;
    } recomputed;
};

/* Load the language model of ck (LLaMA, Mistral, llama2.c, or LLaVA's text half). n_ctx 0:
 * the config's max_seq. ck must stay open until lv_llama_free. */
int lv_llama_load(lv_llama **out, const struct lv_checkpoint *ck, int64_t n_ctx);
/* A model with random weights (N(0, 1/fan_in), norms 1) of the given shape, stored as dtype
 * (F32, F16, BF16; a block type quantises F32 weights as lv_llama_quantize does): benchmarks
 * and demos without a checkpoint. */
int lv_llama_new_random(lv_llama **out, const struct lv_model_config *c, lv_dtype dtype,
                        uint64_t seed, int64_t n_ctx);
/* Bytes of weights one decoded token reads (every matrix and norm, the classifier once). */
uint64_t lv_llama_weight_bytes(const lv_llama *m);
void lv_llama_free(lv_llama *m);
/* Quantise every weight of a matrix product (the layers' projections and the output head;
 * a tied head gets its own copy) to dtype (LV_Q8_0, LV_Q4_0 as ggml quantises; LV_NF4 as
 * QLoRA does, blocks of 64 over the whole matrix); norms and the token embedding stay as
 * stored, and so does a matrix whose rows are not whole blocks of 32 values (stories260K's
 * 172-wide down projection) or, for NF4, whose size is not a multiple of 64. */
int lv_llama_quantize(lv_llama *m, lv_dtype dtype);
/* Forget the cached positions (a new conversation). */
void lv_llama_reset(lv_llama *m);
/* Keep only the first n cached positions (undo a turn). */
int lv_llama_truncate(lv_llama *m, int64_t n);
int64_t lv_llama_vocab(const lv_llama *m);

/* Run n tokens at positions pos.. pos+n-1 and append them to the cache. logits: NULL, or
 * room for the last row (all = false: V floats) or for every row (all = true: n x V). An
 * error (ids out of range, past the context) leaves the cache as it was. At the start of a
 * sequence (pos 0), adapters with a prefix callback put their positions first: the cache
 * then holds them too (pos advances past them) and logits cover the n tokens only. */
int lv_llama_forward(lv_llama *m, const int32_t *ids, int64_t n, float *logits, bool all);
/* The token embeddings of n ids (n x C floats), for splicing image tokens in, with the
 * embedding's adapters applied. */
int lv_llama_embed(lv_llama *m, const int32_t *ids, int64_t n, float *out);
/* The same from input embeddings (n x C floats): image tokens spliced by the vision code. */
int lv_llama_forward_embd(lv_llama *m, const float *embd, int64_t n, float *logits, bool all);

/* The adapter stack the model calls at its sites (NULL: none); the stack is borrowed. When
 * the stack changes (adapters added, toggled or scaled) the cached positions no longer hold:
 * the next forward recomputes them from the inputs it remembers and adds what it cost to
 * m->recomputed (positions, seconds). */
struct lv_peft_stack;
void lv_llama_set_stack(lv_llama *m, struct lv_peft_stack *st);

/* Time the kernels of every op the model runs into p from now on (NULL: stop); p is
 * borrowed (core/graph.h). */
struct lv_profile;
void lv_llama_set_profile(lv_llama *m, struct lv_profile *p);

/* Gradients through a fresh sequence of n positions (the cache is reset first and holds the
 * sequence afterwards): from ids, or from input embeddings embd (n x C) when ids is NULL.
 * dlogits (n x V) is the loss's gradient with respect to every row of logits. Trainable
 * tensors (adapter parameters) accumulate their gradients; logits (n x V) and dembd (n x C,
 * embd only) receive the forward's logits and the input's gradient when not NULL. */
int lv_llama_backward(lv_llama *m, const int32_t *ids, const float *embd, int64_t n,
                      const float *dlogits, float *logits, float *dembd);

#endif /* LV_MODEL_LLAMA_H */
