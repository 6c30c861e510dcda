/*
 * ops.h: the graph and its ops, forward and backward.
 *
 * Ops run eagerly: each call checks shapes, allocates its result in the graph's arena and
 * computes it on the graph's backend. When the graph is recording (training), each op also
 * pushes a node on the tape; lv_backward walks the tape in reverse and accumulates (+=)
 * gradients into every tensor that needs one. Inference uses the same ops with recording off.
 *
 *     lv_graph *g = lv_graph_new(NULL);
 *     lv_graph_set_recording(g, true);
 *     lv_tensor *h = lv_rmsnorm(g, x, w_norm, 1e-5f);
 *     lv_tensor *y = lv_linear(g, h, w_q, NULL);
 *     lv_tensor *loss = lv_cross_entropy(g, logits, targets);
 *     if (!loss || lv_backward(g, loss) != LV_OK) fprintf(stderr, "%s\n", lv_errmsg());
 *     lv_graph_reset(g);                   // once per step: frees every op result
 *
 * Every op returns NULL on error (bad shapes, out of memory) with lv_errmsg() set, and returns
 * NULL at once if any input is NULL, so a chain of ops can be checked once at its end.
 *
 * Shapes are row-major, last dimension fastest. Letters: B batch, T tokens (queries),
 * S keys (kv positions), C channels, V vocab, H query heads, KV kv heads, D head dim,
 * N rows (everything before the last dim, flattened), R rank, E experts, L layers.
 */
#ifndef LV_OPS_H
#define LV_OPS_H

#include "lavinia/error.h"
#include "lavinia/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lv_graph lv_graph;
typedef struct lv_backend lv_backend;

/* --- graph -------------------------------------------------------------------------- */

/* A new graph on a backend (NULL: the CPU backend). Its arena grows during the first steps
 * and is then reused: after warm-up, a step allocates nothing. */
lv_graph *lv_graph_new(lv_backend *backend);
void lv_graph_free(lv_graph *g);
/* Drop every op result and the tape; parameters' gradients are kept. */
void lv_graph_reset(lv_graph *g);
/* Recording on: ops push tape nodes (training). Off: inference. */
void lv_graph_set_recording(lv_graph *g, bool on);
bool lv_graph_recording(const lv_graph *g);
/* Bytes held by the arena (for benches and leak tests). */
size_t lv_graph_arena_size(const lv_graph *g);

/* Backward from a one-element tensor (seeded with 1). */
int lv_backward(lv_graph *g, lv_tensor *loss);
/* Backward from any recorded tensor y, seeded with dy (same shape as y, F32). */
int lv_backward_with(lv_graph *g, lv_tensor *y, const lv_tensor *dy);

/* A new leaf tensor in the graph's arena, zero-filled; it lives until lv_graph_reset. */
lv_tensor *lv_new(lv_graph *g, lv_dtype dtype, int ndim, const int64_t *shape);

/* Threads for CPU loops and OpenBLAS (n <= 0: the number of cores). Results never depend on it. */
void lv_set_threads(int n);
int lv_get_threads(void);

/* --- views (no copy; gradients flow back through them) ------------------------------ */

/* New shape with the same number of elements; a non-contiguous input is copied first. */
lv_tensor *lv_reshape(lv_graph *g, lv_tensor *x, int ndim, const int64_t *shape);
/* Swap two dimensions. */
lv_tensor *lv_transpose(lv_graph *g, lv_tensor *x, int d0, int d1);
/* Reorder dimensions: result dim i is input dim perm[i]. */
lv_tensor *lv_permute(lv_graph *g, lv_tensor *x, const int *perm);
/* x[..., start:start+len, ...] along dim. */
lv_tensor *lv_slice(lv_graph *g, lv_tensor *x, int dim, int64_t start, int64_t len);
/* A contiguous F32 copy (or the tensor itself if already contiguous F32). */
lv_tensor *lv_cont(lv_graph *g, lv_tensor *x);
/* Same values, no gradient flows back through it. */
lv_tensor *lv_detach(lv_graph *g, lv_tensor *x);
/* Convert to another float dtype (F32/F16/BF16); gradient passes through as F32. */
lv_tensor *lv_cast(lv_graph *g, lv_tensor *x, lv_dtype dtype);

/* --- matrix products ---------------------------------------------------------------- */

enum { LV_TRANS_A = 1, LV_TRANS_B = 2 };
/* a: (..., M, K) F32 (or (..., K, M) with LV_TRANS_A)
 * b: (..., K, N) F32/F16/BF16 (or (..., N, K) with LV_TRANS_B); b's leading dims are 1 or
 *    a's (broadcast). Result (..., M, N) F32, accumulated in F32. */
lv_tensor *lv_matmul(lv_graph *g, lv_tensor *a, lv_tensor *b, int flags);
/* x: (..., K)  w: (N, K) as in torch.nn.Linear  bias: (N) or NULL  ->  (..., N) */
lv_tensor *lv_linear(lv_graph *g, lv_tensor *x, lv_tensor *w, lv_tensor *bias);
/* y[i] = lv_linear(g, x, w[i], NULL) for n <= LV_LINEAR_N_MAX weights sharing x (q, k and v;
 * gate and up): the same values, nodes and gradients, and where the backend can (the CPU,
 * x of a few rows as in decoding) one pass over all the weights' rows instead of n. LV_OK,
 * or LV_ERR with the message set. */
#define LV_LINEAR_N_MAX 4
int lv_linear_n(lv_graph *g, lv_tensor *x, int n, lv_tensor *const *w, lv_tensor **y);

/* --- elementwise (NumPy broadcasting of b against a; result has a's shape) ---------- */

lv_tensor *lv_add(lv_graph *g, lv_tensor *a, lv_tensor *b);
lv_tensor *lv_sub(lv_graph *g, lv_tensor *a, lv_tensor *b);
lv_tensor *lv_mul(lv_graph *g, lv_tensor *a, lv_tensor *b);
lv_tensor *lv_div(lv_graph *g, lv_tensor *a, lv_tensor *b);
lv_tensor *lv_scale(lv_graph *g, lv_tensor *x, float s);
lv_tensor *lv_sqrt(lv_graph *g, lv_tensor *x);
lv_tensor *lv_silu(lv_graph *g, lv_tensor *x);
lv_tensor *lv_gelu(lv_graph *g, lv_tensor *x);        /* exact: x * Phi(x), with erf */
lv_tensor *lv_gelu_tanh(lv_graph *g, lv_tensor *x);   /* tanh approximation */
lv_tensor *lv_quick_gelu(lv_graph *g, lv_tensor *x);  /* x * sigmoid(1.702 x), CLIP */
/* gate, up: same shape -> silu(gate) * up */
lv_tensor *lv_swiglu(lv_graph *g, lv_tensor *gate, lv_tensor *up);
/* Inverted dropout: zero with probability p, scale the rest by 1/(1-p). The mask is a
 * function of (seed, element index) alone: reproducible and independent of threads.
 * Identity when the graph is not recording. */
lv_tensor *lv_dropout(lv_graph *g, lv_tensor *x, float p, uint64_t seed);

/* --- reductions and normalisation --------------------------------------------------- */

/* Sum over one dim, kept with size 1. */
lv_tensor *lv_sum(lv_graph *g, lv_tensor *x, int dim);
/* Sum of all elements: a one-element tensor of shape (1). */
lv_tensor *lv_sum_all(lv_graph *g, lv_tensor *x);
/* sqrt(sum x^2) over one dim, kept with size 1. */
lv_tensor *lv_l2norm(lv_graph *g, lv_tensor *x, int dim);
/* Softmax over the last dim (a row of only -inf gives NaN, as in PyTorch). */
lv_tensor *lv_softmax(lv_graph *g, lv_tensor *x);
/* x: (..., C), rows N  w: (C) or NULL -> x / sqrt(mean(x^2) + eps) * w */
lv_tensor *lv_rmsnorm(lv_graph *g, lv_tensor *x, lv_tensor *w, float eps);
/* x: (..., C), rows N  w, b: (C) or NULL -> (x - mean) / sqrt(var + eps) * w + b */
lv_tensor *lv_layernorm(lv_graph *g, lv_tensor *x, lv_tensor *w, lv_tensor *b, float eps);

/* --- positions and attention -------------------------------------------------------- */

typedef enum lv_rope_mode {
    LV_ROPE_HF,    /* half split: (x[i], x[i + D/2]) rotate together (Hugging Face) */
    LV_ROPE_META,  /* interleaved: (x[2i], x[2i+1]) rotate together (Meta, GGUF) */
} lv_rope_mode;

/* x: (..., T, H, D)  pos: (T) I32.  Angle of pair i at position p:
 * (p / freq_scale) * base^(-2i/D)  (freq_scale > 1 is linear RoPE scaling). */
lv_tensor *lv_rope(lv_graph *g, lv_tensor *x, const lv_tensor *pos, lv_rope_mode mode,
                   float base, float freq_scale);

/* A key/value cache for one layer: k, v (KV, S_max, D) F32, len positions filled. Head-major:
 * each kv head's keys are one contiguous run, which decoding reads as a single stream. */
typedef struct lv_kv_cache {
    lv_tensor *k;        /* (KV, S_max, D) */
    lv_tensor *v;        /* (KV, S_max, D) */
    int64_t len;         /* positions filled */
} lv_kv_cache;

int lv_kv_cache_init(lv_kv_cache *c, int64_t s_max, int64_t kv_heads, int64_t head_dim);
void lv_kv_cache_done(lv_kv_cache *c);

enum {
    LV_ATTN_CAUSAL = 1,   /* query t (at position S - T + t) sees keys s <= S - T + t */
};

/* Scaled dot-product attention with grouped-query heads (H a multiple of KV; query head h
 * reads kv head h / (H / KV), as Hugging Face's repeat_kv).
 * q: (B, T, H, D) or (T, H, D)    k, v: (B, S, KV, D) or (S, KV, D)
 * mask: NULL, or (T, S) I32 where nonzero blocks query t from key s (on top of causality);
 * cache: NULL, or a cache (B = 1): k and v are appended at cache->len and the queries
 *        attend over every cached position; S = cache->len after the call. Only the
 *        appended positions receive gradients, and the backward reads the earlier positions
 *        from the cache: run it before the cache is written again.
 * scale: usually 1/sqrt(D).  Result: the shape of q. */
lv_tensor *lv_attention(lv_graph *g, lv_tensor *q, lv_tensor *k, lv_tensor *v,
                        const lv_tensor *mask, lv_kv_cache *cache, float scale, int flags);

/* --- tokens, sequences and losses --------------------------------------------------- */

/* table: (V, C) F32/F16/BF16  ids: (T) or (B, T) I32 -> (..., C) F32. Ids out of range are
 * an error naming the id. */
lv_tensor *lv_embedding(lv_graph *g, lv_tensor *table, const lv_tensor *ids);
/* Join a and b along dim (their other dims equal). */
lv_tensor *lv_concat(lv_graph *g, lv_tensor *a, lv_tensor *b, int dim);
/* logits: (..., V), rows N  targets: N I32 values, negative = ignored (Hugging Face: -100).
 * Mean over the targets that count (0 if none): a (1) tensor. */
lv_tensor *lv_cross_entropy(lv_graph *g, lv_tensor *logits, const lv_tensor *targets);
/* Convolution with stride = kernel (ViT patch embedding).
 * img: (B, Cin, Hh, Ww) or (Cin, Hh, Ww)  w: (C, Cin, P, P)  bias: (C) or NULL
 * -> (B, (Hh/P)*(Ww/P), C) patches in row-major order (conv, flatten, transpose). */
lv_tensor *lv_patch_embed(lv_graph *g, lv_tensor *img, lv_tensor *w, lv_tensor *bias);

#ifdef __cplusplus
}
#endif
#endif /* LV_OPS_H */
