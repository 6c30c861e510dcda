/*
 * ops-attention.c: rotary position embedding, the kv cache and scaled dot-product attention.
 *
 * Attention node: src q, k, v, mask; ptr the kv cache or NULL; ip[0] flags, ip[1] S,
 * ip[2] the cache length before this call, ip[3..7] B, T, H, KV, D; fp[0] scale;
 * saved[0] the log-sum-exp of each query row (B, H, T), which the backward reuses instead of
 * a stored probability matrix. With a cache, k and v are appended to it before the forward
 * and the kernel reads every cached position; the backward gives gradients to the appended
 * rows only (earlier positions are constants of this step).
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "core/ops.h"

#include <math.h>
#include <string.h>

lv_tensor *lv_rope(lv_graph *g, lv_tensor *x, const lv_tensor *pos, lv_rope_mode mode,
                   float base, float freq_scale)
{
    if (!x || !pos)
        return NULL;
    if (x->ndim < 3 || x->dtype == LV_I32 || x->shape[x->ndim - 1] % 2) {
        lv_error("rope: x %s must be (..., T, H, D) float with D even", op_shape(x));
        return NULL;
    }
    int64_t T = x->shape[x->ndim - 3];
    if (pos->dtype != LV_I32 || pos->ndim != 1 || pos->shape[0] != T ||
        !lv_tensor_is_contiguous(pos)) {
        lv_error("rope: positions %s %s for %lld tokens (want contiguous I32 (T))",
                 lv_dtype_name(pos->dtype), op_shape(pos), (long long)T);
        return NULL;
    }
    if (mode != LV_ROPE_HF && mode != LV_ROPE_META) {
        lv_error("rope: unknown mode %d", (int)mode);
        return NULL;
    }
    if (!(base > 0.0f) || !(freq_scale > 0.0f)) {
        lv_error("rope: base %g and scale %g must be positive", (double)base,
                 (double)freq_scale);
        return NULL;
    }
    x = lv_cont(g, x);
    lv_node *n = x ? op_begin(g, LV_OP_ROPE) : NULL;
    if (!n)
        return NULL;
    n->src[0] = x;
    n->src[1] = (lv_tensor *)pos;
    n->ip[0] = mode;
    n->fp[0] = base;
    n->fp[1] = freq_scale;
    n->out = lv_graph_tensor_out(g, LV_F32, x->ndim, x->shape);
    return op_run(g, n);
}

int lv_kv_cache_init(lv_kv_cache *c, int64_t s_max, int64_t kv_heads, int64_t head_dim)
{
    int64_t shape[3] = { kv_heads, s_max, head_dim };
    memset(c, 0, sizeof *c);
    if (s_max <= 0 || kv_heads <= 0 || head_dim <= 0)
        return lv_error("kv cache: bad size (%lld, %lld, %lld)", (long long)s_max,
                        (long long)kv_heads, (long long)head_dim);
    c->k = lv_tensor_new(LV_F32, 3, shape);
    c->v = c->k ? lv_tensor_new(LV_F32, 3, shape) : NULL;
    if (!c->v) {
        lv_tensor_free(c->k);
        c->k = NULL;
        return LV_ENOMEM;
    }
    return LV_OK;
}

void lv_kv_cache_done(lv_kv_cache *c)
{
    lv_tensor_free(c->k);
    lv_tensor_free(c->v);
    memset(c, 0, sizeof *c);
}

lv_tensor *lv_attention(lv_graph *g, lv_tensor *q, lv_tensor *k, lv_tensor *v,
                        const lv_tensor *mask, lv_kv_cache *cache, float scale, int flags)
{
    if (!q || !k || !v)
        return NULL;
    if (q->ndim < 3 || q->ndim > 4 || k->ndim != q->ndim || v->ndim != q->ndim ||
        !lv_tensor_same_shape(k, v) || q->dtype == LV_I32 || k->dtype == LV_I32 ||
        v->dtype == LV_I32) {
        lv_error("attention: q %s, k %s, v %s must be float ([B,] T|S, heads, D)", op_shape(q),
                 op_shape(k), op_shape(v));
        return NULL;
    }
    int o = q->ndim - 3;
    int64_t B = o ? q->shape[0] : 1, T = q->shape[o], H = q->shape[o + 1], D = q->shape[o + 2];
    int64_t Sk = k->shape[o], KV = k->shape[o + 1];
    if ((o && k->shape[0] != B) || k->shape[o + 2] != D || KV <= 0 || H % KV) {
        lv_error("attention: q %s and k %s: batch and head dim must match and the %lld query "
                 "heads must be a multiple of the %lld kv heads", op_shape(q), op_shape(k),
                 (long long)H, (long long)KV);
        return NULL;
    }
    int64_t start = 0, S = Sk;
    if (cache) {
        if (B != 1 || !cache->k || cache->k->shape[0] != KV || cache->k->shape[2] != D) {
            lv_error("attention: kv cache of %s does not fit k %s (batch 1 only)",
                     cache->k ? op_shape(cache->k) : "(none)", op_shape(k));
            return NULL;
        }
        start = cache->len;
        S = start + Sk;
        if (S > cache->k->shape[1]) {
            lv_error("attention: kv cache full: %lld + %lld positions > %lld",
                     (long long)start, (long long)Sk, (long long)cache->k->shape[1]);
            return NULL;
        }
    }
    if (mask && (mask->dtype != LV_I32 || mask->ndim != 2 || mask->shape[0] != T ||
                 mask->shape[1] != S || !lv_tensor_is_contiguous(mask))) {
        lv_error("attention: mask %s %s, want contiguous I32 (%lld, %lld)",
                 lv_dtype_name(mask->dtype), op_shape(mask), (long long)T, (long long)S);
        return NULL;
    }
    q = lv_cont(g, q);
    k = lv_cont(g, k);
    v = lv_cont(g, v);
    lv_node *n = q && k && v ? op_begin(g, LV_OP_ATTENTION) : NULL;
    if (!n)
        return NULL;
    if (cache) {                  /* (Sk, KV, D) rows into the head-major cache */
        int64_t S_max = cache->k->shape[1];
        size_t row = (size_t)D * sizeof(float);
        for (int64_t h = 0; h < KV; h++)
            for (int64_t s = 0; s < Sk; s++) {
                int64_t to = (h * S_max + start + s) * D, from = (s * KV + h) * D;
                memcpy((float *)cache->k->data + to, (float *)k->data + from, row);
                memcpy((float *)cache->v->data + to, (float *)v->data + from, row);
            }
    }
    int64_t lse_shape[3] = { B, H, T };
    n->src[0] = q;
    n->src[1] = k;
    n->src[2] = v;
    n->src[3] = (lv_tensor *)mask;
    n->ptr = cache;
    n->ip[0] = flags;
    if (g->recording && (lv_needs_grad(q) || lv_needs_grad(k) || lv_needs_grad(v)))
        n->ip[0] |= LV_ATTN_GRAD_;
    n->ip[1] = S;
    n->ip[2] = start;
    n->ip[3] = B;
    n->ip[4] = T;
    n->ip[5] = H;
    n->ip[6] = KV;
    n->ip[7] = D;
    n->fp[0] = scale;
    n->saved[0] = lv_graph_tensor(g, LV_F32, 3, lse_shape);
    if (n->saved[0])
        n->out = lv_graph_tensor_out(g, LV_F32, q->ndim, q->shape);
    lv_tensor *out = op_run(g, n);
    if (out && cache)
        cache->len = S;
    return out;
}
