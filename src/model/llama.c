/*
 * llama.c: the LLaMA-family decoder on lavinia's ops, with a kv cache.
 *
 * One pre-norm block per layer:
 *     h = x + Wo attn(rope(Wq n), rope(Wk n), Wv n),   n = rmsnorm(x) * attn_norm
 *     y = h + Wdown (silu(Wgate m) * Wup m),            m = rmsnorm(h) * ffn_norm
 * then logits = lm_head(rmsnorm(y) * norm). Attention is causal over the cache plus the new
 * positions, with grouped kv heads. Every call runs in the model's graph with recording off
 * and resets it first: inference allocates nothing once the arena has grown.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "model/llama.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/graph.h"
#include "lavinia/error.h"
#include "model/generate.h"
#include "peft/adapter.h"
#include "util/buf.h"
#include "util/clock.h"

/* ----------------------------------------------------------------------------------------
 * loading
 */

/* the struct, its graph and the per-layer arrays for config c */
static int alloc_model(lv_llama **out, const struct lv_model_config *c, int64_t n_ctx)
{
    lv_llama *m = calloc(1, sizeof *m);
    if (!m)
        return lv_error_status(LV_ENOMEM, "model: out of memory");
    m->c = *c;
    m->n_ctx = n_ctx > 0 ? n_ctx : c->max_seq;
    m->rope = c->qk_layout == LV_QK_META ? LV_ROPE_META : LV_ROPE_HF;
    m->rope_scale = c->rope_scaling == LV_ROPE_SCALING_LINEAR ? c->rope_factor : 1.0f;
    m->layers = calloc((size_t)c->n_layers, sizeof *m->layers);
    m->cache = calloc((size_t)c->n_layers, sizeof *m->cache);
    m->g = lv_graph_new(NULL);
    *out = m;
    if (!m->layers || !m->cache || !m->g)
        return lv_error_status(LV_ENOMEM, "model: out of memory");
    if (m->n_ctx > c->max_seq)
        fprintf(stderr, "lavinia: warning: a context of %lld positions is longer than the "
                "%lld the model was trained for\n", (long long)m->n_ctx, (long long)c->max_seq);
    return LV_OK;
}

/* Every layer's cache in one block, so that the keys and values a decode step reads sit on
 * huge pages (lv_zalloc) even where one layer's are under 2 MiB. */
static int alloc_caches(lv_llama *m, const char *what)
{
    int64_t shape[3] = { m->c.n_kv_heads, m->n_ctx, m->c.head_dim };
    size_t one = lv_dtype_bytes(LV_F32, shape[0] * shape[1] * shape[2]);
    size_t n = 2 * (size_t)m->c.n_layers;
    if (one > SIZE_MAX / n || !(m->cache_block = lv_zalloc(one * n)))
        goto fail;
    m->cache_bytes = one * n;
    for (int64_t l = 0; l < m->c.n_layers; l++) {
        char *p = (char *)m->cache_block + 2 * (size_t)l * one;
        m->cache[l].k = lv_tensor_wrap(p, LV_F32, 3, shape);
        m->cache[l].v = lv_tensor_wrap(p + one, LV_F32, 3, shape);
        if (!m->cache[l].k || !m->cache[l].v)
            goto fail;
    }
    return LV_OK;
fail:
    return lv_error_status(LV_ENOMEM, "%s: no memory for a kv cache of %lld positions", what,
                           (long long)m->n_ctx);
}

/* every weight of layer l by its name suffix */
#define LAYER_WEIGHTS(L) { \
    { "input_layernorm.weight", &(L)->attn_norm }, \
    { "self_attn.q_proj.weight", &(L)->wq }, \
    { "self_attn.k_proj.weight", &(L)->wk }, \
    { "self_attn.v_proj.weight", &(L)->wv }, \
    { "self_attn.o_proj.weight", &(L)->wo }, \
    { "post_attention_layernorm.weight", &(L)->ffn_norm }, \
    { "mlp.gate_proj.weight", &(L)->w_gate }, \
    { "mlp.up_proj.weight", &(L)->w_up }, \
    { "mlp.down_proj.weight", &(L)->w_down }, \
}

struct layer_weight {
    const char *suffix;
    lv_tensor **dst;
};

int lv_llama_load(lv_llama **out, const struct lv_checkpoint *ck, int64_t n_ctx)
{
    if (!ck->has_config)
        return lv_error("%s: %s; not a model", ck->path,
                        ck->summary[0] ? ck->summary : "no config");
    const struct lv_model_config *c = &ck->config;
    lv_llama *m = NULL;
    int rc = alloc_model(&m, c, n_ctx);
    if (rc == LV_OK &&
        ((rc = lv_weights_get(&m->w, ck, "model.embed_tokens.weight", &m->tok_emb)) ||
                        (rc = lv_weights_get(&m->w, ck, "model.norm.weight", &m->norm))))
        goto fail;
    if (rc == LV_OK && c->tied)
        m->lm_head = m->tok_emb;
    else if (rc == LV_OK && (rc = lv_weights_get(&m->w, ck, "lm_head.weight", &m->lm_head)))
        goto fail;
    for (int64_t l = 0; rc == LV_OK && l < c->n_layers; l++) {
        struct layer_weight w[] = LAYER_WEIGHTS(&m->layers[l]);
        for (size_t i = 0; rc == LV_OK && i < sizeof w / sizeof w[0]; i++) {
            char name[128];
            snprintf(name, sizeof name, "model.layers.%lld.%s", (long long)l, w[i].suffix);
            rc = lv_weights_get(&m->w, ck, name, w[i].dst);
        }
    }
    if (rc == LV_OK)
        rc = alloc_caches(m, ck->path);
    if (rc == LV_OK) {
        *out = m;
        return LV_OK;
    }
fail:
    lv_llama_free(m);
    return rc;
}

/* a random (rows, cols) weight, or a (rows) norm weight of ones */
static int random_weight(lv_llama *m, lv_dtype dt, int64_t rows, int64_t cols, uint64_t *rng,
                         lv_tensor **out)
{
    return cols > 0 ? lv_weights_random(&m->w, dt, 2, (int64_t[]){ rows, cols }, 0.0f, rng, out)
                    : lv_weights_random(&m->w, LV_F32, 1, (int64_t[]){ rows }, 1.0f, rng, out);
}

int lv_llama_new_random(lv_llama **out, const struct lv_model_config *c, lv_dtype dtype,
                        uint64_t seed, int64_t n_ctx)
{
    int rc = lv_model_config_check(c, "random model");
    lv_llama *m = NULL;
    if (rc == LV_OK)
        rc = alloc_model(&m, c, n_ctx);
    /* block types: drawn as F32, then quantised as a checkpoint would be */
    lv_dtype quant = lv_dtype_is_block(dtype) ? dtype : LV_F32;
    if (lv_dtype_is_block(dtype))
        dtype = LV_F32;
    uint64_t rng = seed;
    int64_t C = c->dim, Q = c->n_heads * c->head_dim, K = c->n_kv_heads * c->head_dim;
    if (rc == LV_OK && ((rc = random_weight(m, dtype, c->vocab, C, &rng, &m->tok_emb)) ||
                        (rc = random_weight(m, LV_F32, C, 0, &rng, &m->norm))))
        goto fail;
    if (rc == LV_OK && c->tied)
        m->lm_head = m->tok_emb;
    else if (rc == LV_OK && (rc = random_weight(m, dtype, c->vocab, C, &rng, &m->lm_head)))
        goto fail;
    for (int64_t l = 0; rc == LV_OK && l < c->n_layers; l++) {
        struct lv_llama_layer *L = &m->layers[l];
        if ((rc = random_weight(m, LV_F32, C, 0, &rng, &L->attn_norm)) ||
            (rc = random_weight(m, dtype, Q, C, &rng, &L->wq)) ||
            (rc = random_weight(m, dtype, K, C, &rng, &L->wk)) ||
            (rc = random_weight(m, dtype, K, C, &rng, &L->wv)) ||
            (rc = random_weight(m, dtype, C, Q, &rng, &L->wo)) ||
            (rc = random_weight(m, LV_F32, C, 0, &rng, &L->ffn_norm)) ||
            (rc = random_weight(m, dtype, c->hidden, C, &rng, &L->w_gate)) ||
            (rc = random_weight(m, dtype, c->hidden, C, &rng, &L->w_up)) ||
            (rc = random_weight(m, dtype, C, c->hidden, &rng, &L->w_down)))
            goto fail;
    }
    if (rc == LV_OK && quant != LV_F32)
        rc = lv_llama_quantize(m, quant);
    if (rc == LV_OK)
        rc = alloc_caches(m, "random model");
    if (rc == LV_OK) {
        *out = m;
        return LV_OK;
    }
fail:
    lv_llama_free(m);
    return rc;
}

/* a quantised copy of w, kept by the model; Q8_0 rows of whole groups of 256 take the CPU
 * kernels' layout of the same blocks, Q8_0x8 (a Q8_0 GGUF's tensors are regrouped byte for
 * byte) */
static int quantized(lv_llama *m, lv_tensor *w, lv_dtype dtype, lv_tensor **out)
{
    if (dtype == LV_Q8_0 && w->ndim == 2)
        dtype = lv_weights_q8_0_layout(w->shape[1]);
    if (w->dtype == dtype || (dtype == LV_Q8_0 && w->dtype == LV_Q8_0X8)) {
        *out = w;
        return LV_OK;
    }
    if (w->ndim != 2 || (dtype == LV_NF4      ? lv_tensor_nelem(w) % LV_NF4_BLOCK
                         : dtype == LV_Q8_0X8 ? w->shape[1] % LV_Q8_0X8_GROUP
                                              : w->shape[1] % LV_QBLOCK) != 0) {
        *out = w;               /* rows that are not whole blocks stay as stored (llama.cpp too) */
        return LV_OK;
    }
    lv_tensor *q;
    if (lv_weights_new(&m->w, dtype, 2, w->shape, &q) != LV_OK)
        return lv_error_status(LV_ENOMEM, "model: out of memory quantising '%s'", w->name);
    if (dtype == LV_NF4 || w->dtype == LV_NF4) {     /* NF4: the whole tensor at once */
        lv_convert_row(q->data, dtype, w->data, w->dtype, lv_tensor_nelem(w));
    } else {
        size_t in_row = lv_dtype_bytes(w->dtype, w->shape[1]);
        size_t out_row = lv_dtype_bytes(dtype, w->shape[1]);
        for (int64_t r = 0; r < w->shape[0]; r++)
            lv_convert_row((char *)q->data + (size_t)r * out_row, dtype,
                           (const char *)w->data + (size_t)r * in_row, w->dtype, w->shape[1]);
    }
    lv_tensor_set_name(q, w->name);
    *out = q;
    return LV_OK;
}

int lv_llama_quantize(lv_llama *m, lv_dtype dtype)
{
    if (!lv_dtype_is_block(dtype))
        return lv_error("model: quantise to Q8_0, Q4_0 or NF4, not %s", lv_dtype_name(dtype));
    int rc = quantized(m, m->lm_head, dtype, &m->lm_head);
    for (int64_t l = 0; rc == LV_OK && l < m->c.n_layers; l++) {
        struct lv_llama_layer *L = &m->layers[l];
        lv_tensor **w[] = { &L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down };
        for (size_t i = 0; rc == LV_OK && i < sizeof w / sizeof w[0]; i++)
            rc = quantized(m, *w[i], dtype, w[i]);
    }
    return rc;
}

uint64_t lv_llama_weight_bytes(const lv_llama *m)
{
    uint64_t b = lv_tensor_nbytes(m->norm) + lv_tensor_nbytes(m->lm_head);
    for (int64_t l = 0; l < m->c.n_layers; l++) {
        const struct lv_llama_layer *L = &m->layers[l];
        const lv_tensor *w[] = { L->attn_norm, L->wq, L->wk, L->wv, L->wo, L->ffn_norm,
                                 L->w_gate, L->w_up, L->w_down };
        for (size_t i = 0; i < sizeof w / sizeof w[0]; i++)
            b += lv_tensor_nbytes(w[i]);
    }
    return b;
}

void lv_llama_free(lv_llama *m)
{
    if (!m)
        return;
    for (int64_t l = 0; m->cache && l < m->c.n_layers; l++)
        lv_kv_cache_done(&m->cache[l]);
    lv_zfree(m->cache_block, m->cache_bytes);
    lv_weights_done(&m->w);
    free(m->hist.ids);
    free(m->hist.embd);
    free(m->cache);
    free(m->layers);
    lv_graph_free(m->g);
    free(m);
}

void lv_llama_reset(lv_llama *m)
{
    lv_llama_truncate(m, 0);
}

int lv_llama_truncate(lv_llama *m, int64_t n)
{
    if (n < 0 || n > m->pos)
        return lv_error("model: cannot keep %lld of %lld cached positions", (long long)n,
                        (long long)m->pos);
    m->pos = n;
    if (m->n_hidden > n)
        m->n_hidden = n;
    if (n == 0)
        m->n_prefix = 0;
    m->hist.n = n > m->n_prefix ? n - m->n_prefix : 0;
    m->hist.n_embd = 0;
    for (int64_t i = 0; i < m->hist.n; i++)
        m->hist.n_embd += m->hist.ids[i] < 0;
    for (int64_t l = 0; l < m->c.n_layers; l++)
        m->cache[l].len = n;
    return LV_OK;
}

int64_t lv_llama_vocab(const lv_llama *m)
{
    return m->c.vocab;
}

/* ----------------------------------------------------------------------------------------
 * forward
 */

static int site_of(const lv_llama *m, int layer, enum lv_llm_site k)
{
    return m->peft ? lv_site_llm(m->peft->sites, layer, k) : 0;
}

/* the adapters at a projection's site, given its input x and its base output y */
static lv_tensor *adapt(lv_llama *m, int site, lv_tensor *x, lv_tensor *y)
{
    return lv_peft_stack_active(m->peft, site)
               ? lv_peft_stack_apply(m->peft, m->g, site, x, y, NULL, m->pos) : y;
}

/* a linear projection and the adapters at its site */
static lv_tensor *proj(lv_llama *m, int site, lv_tensor *x, lv_tensor *w)
{
    lv_tensor *y = lv_linear(m->g, x, w, NULL);
    return y ? adapt(m, site, x, y) : NULL;
}

/* n projections of the same x (q, k, v; gate, up) through one lv_linear_n, each with the
 * adapters at its site; y[i] NULL on error */
static void proj_n(lv_llama *m, int l, const enum lv_llm_site *sites, int n, lv_tensor *x,
                   lv_tensor *const *w, lv_tensor **y)
{
    if (!x || lv_linear_n(m->g, x, n, w, y) != LV_OK) {
        for (int i = 0; i < n; i++)
            y[i] = NULL;
        return;
    }
    for (int i = 0; i < n; i++)
        y[i] = adapt(m, site_of(m, l, sites[i]), x, y[i]);
}

/* the normalised residual stream and the adapters at its site */
static lv_tensor *stream(lv_llama *m, int site, lv_tensor *x)
{
    return lv_peft_stack_active(m->peft, site)
               ? lv_peft_stack_apply(m->peft, m->g, site, x, x, NULL, m->pos) : x;
}

/* The mask that hides the first n_hidden positions from every later one (LaVIN's modality
 * token), for T queries starting at m->pos; NULL when nothing is hidden. */
static lv_tensor *hidden_mask(lv_llama *m, int64_t T)
{
    if (m->n_hidden == 0)
        return NULL;
    int64_t S = m->pos + T, shape[2] = { T, S };
    lv_tensor *mask = lv_new(m->g, LV_I32, 2, shape);
    for (int64_t t = 0; mask && t < T; t++)
        for (int64_t k = 0; k < m->n_hidden && k < S; k++)
            ((int32_t *)mask->data)[t * S + k] = m->pos + t >= m->n_hidden;
    return mask;
}

/* x (T, C) through the blocks; skip: leading rows (prefix positions) left out of the result */
static lv_tensor *forward_graph(lv_llama *m, lv_tensor *x, int64_t T, int64_t skip, bool head,
                                bool all)
{
    const struct lv_model_config *c = &m->c;
    lv_graph *g = m->g;
    int64_t H = c->n_heads, KV = c->n_kv_heads, D = c->head_dim;
    float eps = c->norm_eps, scale = 1.0f / sqrtf((float)D);
    int64_t ps = T;
    lv_tensor *pos = lv_new(g, LV_I32, 1, &ps);
    if (!pos)
        return NULL;
    for (int64_t t = 0; t < T; t++)
        ((int32_t *)pos->data)[t] = (int32_t)(m->pos + t);
    lv_tensor *mask = hidden_mask(m, T);
    if (m->n_hidden && !mask)
        return NULL;
    for (int64_t l = 0; x && l < c->n_layers; l++) {
        const struct lv_llama_layer *L = &m->layers[l];
        int l_ = (int)l;
        lv_tensor *n = lv_rmsnorm(g, x, L->attn_norm, eps);
        n = stream(m, site_of(m, l_, LV_LLM_ATTN_IN), n);
        lv_tensor *qkv[3];
        proj_n(m, l_, (enum lv_llm_site[]){ LV_LLM_Q, LV_LLM_K, LV_LLM_V }, 3, n,
               (lv_tensor *[]){ L->wq, L->wk, L->wv }, qkv);
        lv_tensor *q = qkv[0], *k = qkv[1], *v = qkv[2];
        q = lv_reshape(g, q, 3, (int64_t[]){ T, H, D });
        k = lv_reshape(g, k, 3, (int64_t[]){ T, KV, D });
        v = lv_reshape(g, v, 3, (int64_t[]){ T, KV, D });
        q = lv_rope(g, q, pos, m->rope, c->rope_theta, m->rope_scale);
        k = lv_rope(g, k, pos, m->rope, c->rope_theta, m->rope_scale);
        lv_tensor *a = lv_attention(g, q, k, v, mask, &m->cache[l], scale, LV_ATTN_CAUSAL);
        a = lv_reshape(g, a, 2, (int64_t[]){ T, H * D });
        lv_tensor *h = lv_add(g, x, proj(m, site_of(m, l_, LV_LLM_O), a, L->wo));
        lv_tensor *f = lv_rmsnorm(g, h, L->ffn_norm, eps);
        f = stream(m, site_of(m, l_, LV_LLM_FFN_IN), f);
        lv_tensor *gu[2];
        proj_n(m, l_, (enum lv_llm_site[]){ LV_LLM_GATE, LV_LLM_UP }, 2, f,
               (lv_tensor *[]){ L->w_gate, L->w_up }, gu);
        f = lv_swiglu(g, gu[0], gu[1]);
        x = lv_add(g, h, proj(m, site_of(m, l_, LV_LLM_DOWN), f, L->w_down));
    }
    if (x && !all && T > 1)
        x = lv_slice(g, x, 0, T - 1, 1);
    else if (x && all && skip)
        x = lv_slice(g, x, 0, skip, T - skip);
    if (x)
        x = lv_rmsnorm(g, x, m->norm, eps);
    return x && head ? proj(m, m->peft ? lv_site_head(m->peft->sites) : 0, x, m->lm_head) : x;
}

static int forward(lv_llama *m, lv_tensor *x, int64_t T, int64_t skip, float *logits, bool all)
{
    lv_tensor *out = forward_graph(m, x, T, skip, logits != NULL, all);
    if (!out)
        return LV_ERR;
    if (logits)
        lv_tensor_to_f32(logits, out);
    return LV_OK;
}

static int begin(lv_llama *m, int64_t n)
{
    if (n <= 0)
        return lv_error("model: nothing to run");
    if (m->pos + n > m->n_ctx)
        return lv_error("model: %lld more positions do not fit in the context (%lld of %lld "
                        "used)", (long long)n, (long long)m->pos, (long long)m->n_ctx);
    lv_graph_reset(m->g);
    lv_graph_set_recording(m->g, false);
    if (m->pos != 0)
        return LV_OK;
    m->peft_gen = m->peft ? m->peft->gen : 0;
    return lv_peft_stack_begin(m->peft, m->g);
}

/* remember what n new positions were made from (ids, or rows of embd when ids is NULL) */
static int remember(lv_llama *m, const int32_t *ids, const float *embd, int64_t n)
{
    int64_t C = m->c.dim;
    if (!m->hist.ids && !(m->hist.ids = malloc((size_t)m->n_ctx * sizeof *m->hist.ids)))
        return lv_error_status(LV_ENOMEM, "model: out of memory");
    if (!ids && m->hist.n_embd + n > m->hist.cap_embd) {
        int64_t cap = m->hist.cap_embd ? m->hist.cap_embd : 64;
        while (cap < m->hist.n_embd + n)
            cap *= 2;
        float *e = realloc(m->hist.embd, (size_t)(cap * C) * sizeof *e);
        if (!e)
            return lv_error_status(LV_ENOMEM, "model: out of memory");
        m->hist.embd = e;
        m->hist.cap_embd = cap;
    }
    for (int64_t i = 0; i < n; i++)
        m->hist.ids[m->hist.n + i] = ids ? ids[i] : -1;
    if (!ids) {
        memcpy(m->hist.embd + m->hist.n_embd * C, embd, (size_t)(n * C) * sizeof *embd);
        m->hist.n_embd += n;
    }
    m->hist.n += n;
    return LV_OK;
}

/* The adapters changed since the cache was made: run everything again from the inputs. */
static int recompute(lv_llama *m)
{
    int64_t n = m->hist.n, ne = m->hist.n_embd, C = m->c.dim;
    int32_t *ids = malloc((size_t)(n ? n : 1) * sizeof *ids);
    float *embd = malloc((size_t)(ne ? ne * C : 1) * sizeof *embd);
    if (!ids || !embd) {
        free(ids);
        free(embd);
        return lv_error_status(LV_ENOMEM, "model: out of memory");
    }
    if (n)
        memcpy(ids, m->hist.ids, (size_t)n * sizeof *ids);
    if (ne)
        memcpy(embd, m->hist.embd, (size_t)(ne * C) * sizeof *embd);
    double t0 = lv_now();
    lv_llama_reset(m);
    int rc = LV_OK;
    for (int64_t i = 0, e = 0; rc == LV_OK && i < n;) {
        int64_t j = i;
        while (j < n && (ids[j] < 0) == (ids[i] < 0))
            j++;
        rc = ids[i] < 0 ? lv_llama_forward_embd(m, embd + e * C, j - i, NULL, false)
                        : lv_llama_forward(m, ids + i, j - i, NULL, false);
        e += ids[i] < 0 ? j - i : 0;
        i = j;
    }
    m->recomputed.positions += m->pos;
    m->recomputed.seconds += lv_now() - t0;
    free(ids);
    free(embd);
    return rc;
}

/* before new positions: recompute the cache if the adapter stack changed */
static int sync_adapters(lv_llama *m)
{
    uint64_t gen = m->peft ? m->peft->gen : 0;
    if (m->pos == 0 || gen == m->peft_gen)
        return LV_OK;
    return recompute(m);
}

/* after a failure the cache keeps what it had */
static int finish(lv_llama *m, int64_t n, int rc)
{
    if (rc != LV_OK && m->pos == 0)
        m->n_hidden = 0;
    if (rc == LV_OK)
        m->pos += n;
    for (int64_t l = 0; l < m->c.n_layers; l++)
        m->cache[l].len = m->pos;
    return rc;
}

/* Positions that prefix methods put before a new sequence (their rows first, those hidden
 * from later positions before the visible ones), concatenated before x. */
static lv_tensor *with_prefix(lv_llama *m, lv_tensor *x, const lv_tensor *ids, int64_t *P,
                              int64_t *hidden)
{
    *P = *hidden = 0;
    struct lv_peft_stack *st = m->peft;
    if (!x || !st || m->pos != 0)
        return x;
    lv_tensor *rows[2] = { NULL, NULL };     /* hidden, visible */
    for (int k = 0; k < st->n; k++) {
        const struct lv_adapter *a = st->a[k];
        bool hid = false;
        lv_tensor *p = NULL;
        int rc = lv_peft_stack_prefix(st, m->g, k, ids, &p, &hid);
        if (rc)
            return NULL;
        if (!p)
            continue;
        if (p->ndim != 2 || p->shape[1] != m->c.dim) {
            lv_error("%s: method '%s' made prefix rows of the wrong shape", a->name,
                     a->method->name);
            return NULL;
        }
        rows[!hid] = rows[!hid] ? lv_concat(m->g, rows[!hid], p, 0) : p;
        if (hid)
            *hidden += p->shape[0];
    }
    lv_tensor *pre = rows[0] && rows[1] ? lv_concat(m->g, rows[0], rows[1], 0)
                     : rows[0] ? rows[0] : rows[1];
    if (!pre)
        return x;
    *P = pre->shape[0];
    if (*P + x->shape[0] > m->n_ctx) {
        lv_error("model: %lld prefix positions and %lld more do not fit in the context of %lld",
                 (long long)*P, (long long)x->shape[0], (long long)m->n_ctx);
        return NULL;
    }
    return lv_concat(m->g, pre, x, 0);
}

/* run x (n rows) with any prefix; the cache keeps n + prefix positions */
static int run_rows(lv_llama *m, lv_tensor *x, const lv_tensor *ids, int64_t n, float *logits,
                    bool all)
{
    int64_t P, hidden;
    bool start = m->pos == 0;
    lv_tensor *xp = with_prefix(m, x, ids, &P, &hidden);
    if (!xp)
        return LV_ERR;
    if (start) {
        m->n_hidden = hidden;
        m->n_prefix = P;
    }
    int rc = forward(m, xp, n + P, P, logits, all);
    return finish(m, n + P, rc);
}


int lv_llama_forward(lv_llama *m, const int32_t *ids, int64_t n, float *logits, bool all)
{
    int rc = sync_adapters(m);
    if (rc == LV_OK)
        rc = begin(m, n);
    if (rc)
        return rc;
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= m->c.vocab)
            return lv_error("model: token id %d is outside the vocabulary (0..%lld)", ids[i],
                            (long long)m->c.vocab - 1);
    lv_tensor *t = lv_new(m->g, LV_I32, 1, &n);
    if (!t)
        return LV_ERR;
    memcpy(t->data, ids, (size_t)n * sizeof *ids);
    lv_tensor *x = lv_embedding(m->g, m->tok_emb, t);
    if (lv_peft_stack_active(m->peft, LV_SITE_EMBED_INDEX))
        x = lv_peft_stack_apply(m->peft, m->g, LV_SITE_EMBED_INDEX, x, x, t, m->pos);
    rc = run_rows(m, x, t, n, logits, all);
    return rc == LV_OK ? remember(m, ids, NULL, n) : rc;
}

int lv_llama_embed(lv_llama *m, const int32_t *ids, int64_t n, float *out)
{
    int64_t C = m->c.dim;
    size_t row = lv_dtype_bytes(m->tok_emb->dtype, C);
    for (int64_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= m->c.vocab)
            return lv_error("model: token id %d is outside the vocabulary (0..%lld)", ids[i],
                            (long long)m->c.vocab - 1);
        lv_convert_row(out + i * C, LV_F32, (const char *)m->tok_emb->data + (size_t)ids[i] * row,
                       m->tok_emb->dtype, C);
    }
    if (!lv_peft_stack_active(m->peft, LV_SITE_EMBED_INDEX) || n == 0)
        return LV_OK;
    /* adapters of the embedding (LoRA on embed_tokens, a replaced table) */
    lv_graph_reset(m->g);
    lv_graph_set_recording(m->g, false);
    lv_tensor *t = lv_new(m->g, LV_I32, 1, &n);
    lv_tensor *x = lv_new(m->g, LV_F32, 2, (int64_t[]){ n, C });
    if (!t || !x)
        return LV_ERR;
    memcpy(t->data, ids, (size_t)n * sizeof *ids);
    memcpy(x->data, out, (size_t)(n * C) * sizeof *out);
    lv_tensor *y = lv_peft_stack_apply(m->peft, m->g, LV_SITE_EMBED_INDEX, x, x, t, m->pos);
    if (!y)
        return LV_ERR;
    lv_tensor_to_f32(out, y);
    return LV_OK;
}

int lv_llama_forward_embd(lv_llama *m, const float *embd, int64_t n, float *logits, bool all)
{
    int rc = sync_adapters(m);
    if (rc == LV_OK)
        rc = begin(m, n);
    if (rc)
        return rc;
    lv_tensor *x = lv_new(m->g, LV_F32, 2, (int64_t[]){ n, m->c.dim });
    if (!x)
        return LV_ERR;
    memcpy(x->data, embd, (size_t)(n * m->c.dim) * sizeof(float));
    rc = run_rows(m, x, NULL, n, logits, all);
    return rc == LV_OK ? remember(m, NULL, embd, n) : rc;
}

/* ----------------------------------------------------------------------------------------
 * gradients
 */

static int backward_pass(lv_llama *m, lv_tensor *x, const lv_tensor *ids, lv_tensor *leaf,
                         int64_t n, const float *dlogits, float *logits, float *dembd)
{
    int64_t P = 0, hidden = 0;
    x = with_prefix(m, x, ids, &P, &hidden);   /* a fresh sequence: pos is 0 */
    m->n_hidden = hidden;
    m->n_prefix = P;
    lv_tensor *y = x ? forward_graph(m, x, n + P, P, true, true) : NULL;
    int rc = y ? LV_OK : LV_ERR;
    if (rc == LV_OK && logits)
        lv_tensor_to_f32(logits, y);
    lv_tensor *dy = rc == LV_OK ? lv_tensor_wrap((void *)dlogits, LV_F32, y->ndim, y->shape)
                                : NULL;
    if (rc == LV_OK)
        rc = dy ? lv_backward_with(m->g, y, dy) : lv_error_status(LV_ENOMEM, "out of memory");
    lv_tensor_free(dy);
    if (rc == LV_OK && dembd && leaf && leaf->grad)
        lv_tensor_to_f32(dembd, leaf->grad);
    rc = finish(m, n + P, rc);
    lv_graph_reset(m->g);
    lv_graph_set_recording(m->g, false);
    return rc;
}

int lv_llama_backward(lv_llama *m, const int32_t *ids, const float *embd, int64_t n,
                      const float *dlogits, float *logits, float *dembd)
{
    lv_llama_reset(m);
    int rc = begin(m, n);
    if (rc)
        return rc;
    lv_graph_set_recording(m->g, true);
    lv_tensor *x = NULL, *leaf = NULL;
    if (ids) {
        for (int64_t i = 0; i < n; i++)
            if (ids[i] < 0 || ids[i] >= m->c.vocab)
                return lv_error("model: token id %d is outside the vocabulary (0..%lld)",
                                ids[i], (long long)m->c.vocab - 1);
        lv_tensor *t = lv_new(m->g, LV_I32, 1, &n);
        if (t)
            memcpy(t->data, ids, (size_t)n * sizeof *ids);
        x = t ? lv_embedding(m->g, m->tok_emb, t) : NULL;
        if (lv_peft_stack_active(m->peft, LV_SITE_EMBED_INDEX))
            x = lv_peft_stack_apply(m->peft, m->g, LV_SITE_EMBED_INDEX, x, x, t, m->pos);
        rc = backward_pass(m, x, t, NULL, n, dlogits, logits, NULL);
        return rc == LV_OK ? remember(m, ids, NULL, n) : rc;
    }
    int64_t shape[2] = { n, m->c.dim };
    if (!(leaf = lv_tensor_new(LV_F32, 2, shape)))
        return lv_error_status(LV_ENOMEM, "model: out of memory");
    memcpy(leaf->data, embd, (size_t)(n * m->c.dim) * sizeof(float));
    if (dembd)
        lv_tensor_set_param(leaf);
    else
        lv_tensor_set_frozen(leaf);
    rc = backward_pass(m, leaf, NULL, leaf, n, dlogits, logits, dembd);
    lv_tensor_free(leaf);
    if (rc == LV_OK)
        rc = remember(m, NULL, embd, n);
    return rc;
}

void lv_llama_set_profile(lv_llama *m, struct lv_profile *p)
{
    lv_graph_set_profile(m->g, p);
}

void lv_llama_set_stack(lv_llama *m, struct lv_peft_stack *st)
{
    m->peft = st;
    m->peft_gen = ~(uint64_t)0;          /* cached positions, if any, are recomputed */
}
