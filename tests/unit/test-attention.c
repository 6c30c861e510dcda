/*
 * test-attention.c: lv_attention against a float64 reference written naively below, its
 * gradients against central differences (tu_gradcheck), and the kv cache path against one full
 * causal pass.
 *
 * The reference is the definition in lavinia/ops.h: query head h reads kv head h / (H / KV);
 * query t sits at position S - T + t and, when causal, sees keys s <= S - T + t; a nonzero
 * mask[t, s] blocks key s as well; out = softmax(scale * q k^T over visible keys) v, and a row
 * with no visible key is zero. Cases cover 3-D (T, H, D) and batched 4-D (B, T, H, D) inputs,
 * H = KV and grouped heads (H = 4, KV = 2; H = 2, KV = 1), causal and not, T < S (queries after
 * a prefix), head dims 4..16 including odd ones, and a mask that blocks one query row entirely.
 *
 * The kv cache test runs a 5-token prompt and then two single-token steps through one cache and
 * checks each step's rows against the same rows of one causal pass over all 7 positions; a
 * gradient check then runs 2 new tokens after 3 cached ones (only the new ones take gradients).
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "lavinia/ops.h"
#include "testutil.h"

/*
 * Forward tolerance, max|got - ref| <= TOL * max|ref|. Scores are F32 dot products over
 * D <= 16, the softmax runs over S <= 16 keys and the output is a convex mix of F32 values:
 * a few 1e-7 of max|out|. A wrong head map, an off-by-one causal edge or a missing scale moves
 * rows by O(0.1) or more.
 */
#define TOL 1e-5

/* A step that must work: on failure, a failed check with the library's message; on success
 * nothing is printed (tu_assert would print an OK line for every setup step). */
static bool need(bool cond, const char *what)
{
    if (!cond)
        tu_assert(false, "%s: %s", what, lv_errmsg());
    return cond;
}

/* One attention case. */
struct attn_case {
    int ndim;                    /* 3: (T, H, D) and (S, KV, D); 4: with a leading B */
    int64_t B, T, S, H, KV, D;
    int flags;                   /* 0 or LV_ATTN_CAUSAL */
    bool mask;                   /* a random (T, S) mask, with query row 1 fully blocked */
};

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "test-attention: out of memory\n");
        exit(99);
    }
    return p;
}

static double *values_of(const lv_tensor *t)
{
    int64_t n = lv_tensor_nelem(t);
    double *v = xmalloc((size_t)n * sizeof *v);
    for (int64_t i = 0; i < n; i++)
        v[i] = lv_tensor_get(t, i);
    return v;
}

/* ---------------------------------------------------------------------------------------- */
/* float64 reference: q (B, T, H, D), k and v (B, S, KV, D), mask (T, S) or NULL */

static void attention_ref(double *out, const double *q, const double *k, const double *v,
                          const double *mask, int64_t B, int64_t T, int64_t S, int64_t H,
                          int64_t KV, int64_t D, double scale, bool causal)
{
    double *sc = xmalloc((size_t)S * sizeof *sc);
    bool *vis = xmalloc((size_t)S * sizeof *vis);

    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++)
            for (int64_t h = 0; h < H; h++) {
                int64_t kh = h / (H / KV);
                const double *qr = q + ((b * T + t) * H + h) * D;
                double *o = out + ((b * T + t) * H + h) * D;
                double mx = -INFINITY, sum = 0.0;
                for (int64_t s = 0; s < S; s++) {
                    vis[s] = !(causal && s > S - T + t) && !(mask && mask[t * S + s] != 0.0);
                    if (!vis[s])
                        continue;
                    const double *kr = k + ((b * S + s) * KV + kh) * D;
                    double d = 0.0;
                    for (int64_t i = 0; i < D; i++)
                        d += qr[i] * kr[i];
                    sc[s] = d * scale;
                    mx = fmax(mx, sc[s]);
                }
                for (int64_t i = 0; i < D; i++)
                    o[i] = 0.0;
                for (int64_t s = 0; s < S; s++)
                    if (vis[s])
                        sum += exp(sc[s] - mx);
                for (int64_t s = 0; s < S; s++) {
                    if (!vis[s])
                        continue;
                    const double *vr = v + ((b * S + s) * KV + kh) * D;
                    double p = exp(sc[s] - mx) / sum;
                    for (int64_t i = 0; i < D; i++)
                        o[i] += p * vr[i];
                }
            }
    free(sc);
    free(vis);
}

/* ---------------------------------------------------------------------------------------- */
/* one case: forward and gradients */

/* in[0] q, in[1] k, in[2] v (the parameters), in[3] the mask when the case has one */
static lv_tensor *build_attention(lv_graph *g, lv_tensor **in, void *ctx)
{
    const struct attn_case *ac = ctx;
    return lv_attention(g, in[0], in[1], in[2], ac->mask ? in[3] : NULL, NULL,
                        1.0f / sqrtf((float)ac->D), ac->flags);
}

/* A new tensor of 3 or 4 dims: ([B,] rows, heads, D). */
static lv_tensor *rand_heads(const struct attn_case *ac, int64_t rows, int64_t heads)
{
    int64_t shape[4];
    int i = 0;
    if (ac->ndim == 4)
        shape[i++] = ac->B;
    shape[i++] = rows;
    shape[i++] = heads;
    shape[i++] = ac->D;
    return tu_rand_tensor(LV_F32, i, shape, 1.0);
}

static void test_case(const struct attn_case *ac)
{
    char label[160], glabel[176];
    snprintf(label, sizeof label, "attention %dd B%lld T%lld S%lld H%lld KV%lld D%lld%s%s",
             ac->ndim, (long long)ac->B, (long long)ac->T, (long long)ac->S, (long long)ac->H,
             (long long)ac->KV, (long long)ac->D, ac->flags & LV_ATTN_CAUSAL ? " causal" : "",
             ac->mask ? " mask" : "");

    int64_t mshape[2] = { ac->T, ac->S };
    lv_tensor *in[4] = { rand_heads(ac, ac->T, ac->H), rand_heads(ac, ac->S, ac->KV),
                         rand_heads(ac, ac->S, ac->KV),
                         ac->mask ? lv_tensor_new(LV_I32, 2, mshape) : NULL };
    if (!need(in[0] && in[1] && in[2] && (in[3] || !ac->mask), "attention: tensors"))
        goto done;
    if (ac->mask) {
        /* About a third blocked; row 1 entirely, so its output must be zero. */
        for (int64_t t = 0; t < ac->T; t++)
            for (int64_t s = 0; s < ac->S; s++)
                lv_tensor_set(in[3], t * ac->S + s, t == 1 || tu_uniform() > 0.35);
    }
    for (int i = 0; i < 3; i++)
        lv_tensor_set_param(in[i]);

    double *q = values_of(in[0]), *k = values_of(in[1]), *v = values_of(in[2]);
    double *mask = ac->mask ? values_of(in[3]) : NULL;
    double *ref = xmalloc((size_t)lv_tensor_nelem(in[0]) * sizeof *ref);
    attention_ref(ref, q, k, v, mask, ac->B, ac->T, ac->S, ac->H, ac->KV, ac->D,
                  (double)(1.0f / sqrtf((float)ac->D)), ac->flags & LV_ATTN_CAUSAL);

    /* inference, then recorded for a backward (few-query rows then score keys as the
     * backward does) */
    for (int rec = 0; rec < 2; rec++) {
        lv_graph *g = lv_graph_new(NULL);
        if (!need(g != NULL, "lv_graph_new"))
            break;
        lv_graph_set_recording(g, rec);
        lv_tensor *y = build_attention(g, in, (void *)ac);
        snprintf(glabel, sizeof glabel, "%s%s", label, rec ? " (recorded)" : "");
        tu_check_tensor(glabel, y, ref, TOL);   /* fails with lv_errmsg() if y is NULL */
        lv_graph_free(g);
    }

    /* Attention is smooth in q, k and v (the mask is fixed), so the default step and
     * tolerance apply; the blocked row contributes exactly zero to every gradient. */
    snprintf(glabel, sizeof glabel, "grad %s", label);
    tu_grad_opts opts = { 0 };
    tu_gradcheck(glabel, build_attention, in, ac->mask ? 4 : 3, (void *)ac, &opts);

    free(q);
    free(k);
    free(v);
    free(mask);
    free(ref);
done:
    for (int i = 0; i < 4; i++)
        lv_tensor_free(in[i]);
}

/* ---------------------------------------------------------------------------------------- */
/* the kv cache */

#define KV_H    4
#define KV_KV   2
#define KV_D    8
#define KV_ALL  7   /* positions in the full pass */
#define KV_PROMPT 5

/* Rows [start, start + len) of a (rows, heads, D) tensor, as a new tensor. */
static lv_tensor *rows_of(const lv_tensor *t, int64_t start, int64_t len)
{
    int64_t shape[3] = { len, t->shape[1], t->shape[2] };
    int64_t row = t->shape[1] * t->shape[2];
    lv_tensor *r = lv_tensor_new(LV_F32, 3, shape);
    if (!r)
        return NULL;
    for (int64_t i = 0; i < len * row; i++)
        lv_tensor_set(r, i, lv_tensor_get(t, start * row + i));
    return r;
}

/*
 * A prompt of `prompt` tokens, then single tokens, through one cache: each call's rows equal
 * the same rows of a causal pass over all `all` positions at once. Heads of D = 8 decode key
 * by key; D = 32 over 300 positions decodes through the SIMD path's row kernels in two
 * chunks of the head-major cache.
 */
static void test_kv_cache(int64_t D, int64_t all, int64_t prompt)
{
    int64_t qs[3] = { all, KV_H, D }, ks[3] = { all, KV_KV, D };
    float scale = 1.0f / sqrtf((float)D);
    int64_t qrow = KV_H * D;
    lv_tensor *q = tu_rand_tensor(LV_F32, 3, qs, 1.0);
    lv_tensor *k = tu_rand_tensor(LV_F32, 3, ks, 1.0);
    lv_tensor *v = tu_rand_tensor(LV_F32, 3, ks, 1.0);
    lv_graph *g = lv_graph_new(NULL);
    lv_kv_cache cache;
    bool have_cache = false;
    double *full = NULL, *ref = NULL, *qv = NULL, *kv = NULL, *vv = NULL;

    if (!need(q && k && v && g, "kv cache: setup"))
        goto done;
    have_cache = lv_kv_cache_init(&cache, all + 1, KV_KV, D) == LV_OK;
    if (!need(have_cache, "lv_kv_cache_init"))
        goto done;

    qv = values_of(q);
    kv = values_of(k);
    vv = values_of(v);
    ref = xmalloc((size_t)(all * qrow) * sizeof *ref);
    attention_ref(ref, qv, kv, vv, NULL, 1, all, all, KV_H, KV_KV, D, scale, true);

    /* One full causal pass, no cache. */
    lv_tensor *y = lv_attention(g, q, k, v, NULL, NULL, scale, LV_ATTN_CAUSAL);
    if (!need(y != NULL, "kv cache: full pass"))
        goto done;
    tu_check_tensor("kv cache: full causal pass", y, ref, TOL);
    full = values_of(y);
    lv_graph_reset(g);

    /* The prompt, then one token at a time. */
    int64_t start = 0;
    for (int step = 0; start < all; step++) {
        int64_t len = step == 0 ? prompt : 1;
        char label[96];
        lv_tensor *qp = rows_of(q, start, len), *kp = rows_of(k, start, len);
        lv_tensor *vp = rows_of(v, start, len);
        if (need(qp && kp && vp, "kv cache: rows")) {
            lv_tensor *o = lv_attention(g, qp, kp, vp, NULL, &cache, scale, LV_ATTN_CAUSAL);
            snprintf(label, sizeof label, "kv cache D%lld: step %d (positions %lld..%lld)",
                     (long long)D, step, (long long)start, (long long)(start + len - 1));
            /* Same keys as the full pass's rows, summed in another order: equal up to
             * rounding (a few units in the last place of 300 terms). */
            tu_check_tensor(label, o, full + start * qrow, 4e-6);
            tu_check_tensor(label, o, ref + start * qrow, TOL);
            tu_assert(cache.len == start + len, "%s: cache len %lld, want %lld", label,
                      (long long)cache.len, (long long)(start + len));
        }
        lv_tensor_free(qp);
        lv_tensor_free(kp);
        lv_tensor_free(vp);
        lv_graph_reset(g);
        start += len;
    }

done:
    free(full);
    free(ref);
    free(qv);
    free(kv);
    free(vv);
    if (have_cache)
        lv_kv_cache_done(&cache);
    lv_graph_free(g);
    lv_tensor_free(q);
    lv_tensor_free(k);
    lv_tensor_free(v);
}

/* The cache and how many positions it holds before the gradient-checked step. */
struct cache_step {
    lv_kv_cache *cache;
    int64_t prefix;
};

/* in[0] q, in[1] k, in[2] v of the new tokens. Every call (tu_gradcheck makes many) rewinds
 * the cache to the prefix first, so each one appends at the same place. The backward reads
 * the cached keys, so this relies on tu_gradcheck running lv_backward_with right after the
 * build whose graph it differentiates. */
static lv_tensor *build_cached(lv_graph *g, lv_tensor **in, void *ctx)
{
    struct cache_step *cs = ctx;
    cs->cache->len = cs->prefix;
    return lv_attention(g, in[0], in[1], in[2], NULL, cs->cache, 1.0f / sqrtf((float)KV_D),
                        LV_ATTN_CAUSAL);
}

/* Gradients through the cache path: 2 new tokens after 3 cached ones. */
static void test_kv_cache_grad(void)
{
    int64_t q0s[3] = { 3, KV_H, KV_D }, k0s[3] = { 3, KV_KV, KV_D };
    int64_t qs[3] = { 2, KV_H, KV_D }, ks[3] = { 2, KV_KV, KV_D };
    lv_tensor *q0 = tu_rand_tensor(LV_F32, 3, q0s, 1.0);
    lv_tensor *k0 = tu_rand_tensor(LV_F32, 3, k0s, 1.0);
    lv_tensor *v0 = tu_rand_tensor(LV_F32, 3, k0s, 1.0);
    lv_tensor *in[3] = { tu_rand_tensor(LV_F32, 3, qs, 1.0), tu_rand_tensor(LV_F32, 3, ks, 1.0),
                         tu_rand_tensor(LV_F32, 3, ks, 1.0) };
    lv_graph *g = lv_graph_new(NULL);
    lv_kv_cache cache;
    bool have_cache = false;

    if (!need(q0 && k0 && v0 && in[0] && in[1] && in[2] && g, "kv cache grad: setup"))
        goto done;
    have_cache = lv_kv_cache_init(&cache, 8, KV_KV, KV_D) == LV_OK;
    if (!need(have_cache, "lv_kv_cache_init"))
        goto done;
    if (!need(lv_attention(g, q0, k0, v0, NULL, &cache, 1.0f / sqrtf((float)KV_D),
                           LV_ATTN_CAUSAL) != NULL, "kv cache grad: prefix"))
        goto done;
    for (int i = 0; i < 3; i++)
        lv_tensor_set_param(in[i]);

    struct cache_step cs = { .cache = &cache, .prefix = 3 };
    tu_grad_opts opts = { 0 };
    tu_gradcheck("grad attention kv cache (3 cached + 2 new)", build_cached, in, 3, &cs, &opts);

done:
    if (have_cache)
        lv_kv_cache_done(&cache);
    lv_graph_free(g);
    lv_tensor_free(q0);
    lv_tensor_free(k0);
    lv_tensor_free(v0);
    for (int i = 0; i < 3; i++)
        lv_tensor_free(in[i]);
}

int main(int argc, char **argv)
{
    tu_init(argc, argv, "attention");

    static const struct attn_case cases[] = {
        { .ndim = 3, .B = 1, .T = 5, .S = 5, .H = 2, .KV = 2, .D = 4 },
        { .ndim = 3, .B = 1, .T = 6, .S = 6, .H = 4, .KV = 2, .D = 8, .flags = LV_ATTN_CAUSAL },
        /* T < S: the 3 queries sit at positions 4..6 after 4 earlier keys. */
        { .ndim = 4, .B = 2, .T = 3, .S = 7, .H = 4, .KV = 2, .D = 6, .flags = LV_ATTN_CAUSAL },
        { .ndim = 4, .B = 2, .T = 4, .S = 9, .H = 3, .KV = 3, .D = 5, .mask = true },
        { .ndim = 3, .B = 1, .T = 5, .S = 5, .H = 4, .KV = 2, .D = 7, .flags = LV_ATTN_CAUSAL,
          .mask = true },
        { .ndim = 4, .B = 1, .T = 16, .S = 16, .H = 2, .KV = 1, .D = 16,
          .flags = LV_ATTN_CAUSAL },
        /* 8 queries or more take the blocked sgemm path: no causality, a mask, a kv cache
         * offset (T < S), a mask that hides every key of some rows */
        { .ndim = 3, .B = 1, .T = 9, .S = 9, .H = 2, .KV = 2, .D = 8 },
        { .ndim = 4, .B = 2, .T = 10, .S = 13, .H = 4, .KV = 2, .D = 6, .flags = LV_ATTN_CAUSAL,
          .mask = true },
        { .ndim = 3, .B = 1, .T = 12, .S = 12, .H = 3, .KV = 1, .D = 5, .mask = true },
        /* One query after 8 keys, as in decoding. */
        { .ndim = 3, .B = 1, .T = 1, .S = 9, .H = 4, .KV = 2, .D = 8, .flags = LV_ATTN_CAUSAL },
        /* Decoding rows through the row kernels (heads of 16 and more) over more than one chunk
         * (the running maximum carried and rescaled between chunks), with a mask that hides
         * all of row 1; recorded, the same rows go key by key. */
        { .ndim = 3, .B = 1, .T = 1, .S = 300, .H = 2, .KV = 1, .D = 16,
          .flags = LV_ATTN_CAUSAL },
        { .ndim = 3, .B = 1, .T = 2, .S = 270, .H = 2, .KV = 1, .D = 16,
          .flags = LV_ATTN_CAUSAL, .mask = true },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        test_case(&cases[i]);

    test_kv_cache(KV_D, KV_ALL, KV_PROMPT);
    test_kv_cache(32, 300, 270);
    test_kv_cache_grad();

    return tu_finish();
}
