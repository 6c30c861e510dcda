/*
 * cpu-attention.c: CPU kernels for scaled dot-product attention with grouped-query heads.
 *
 * Shapes (cpu.h): q, out (B, T, H, D); k, v (B, S, KV, D), or the head-major cache (KV, S_max,
 * D); dk, dv (B, S, KV, D); lse (B, H, T); mask (T, S) I32.
 * Query head h reads kv head h / (H / KV). Query t sits at position S - T + t, so with a kv
 * cache the T new queries come after S - T cached keys; causal attention lets it see keys
 * s <= S - T + t, and a nonzero mask[t, s] blocks key s on top of that. A query row that sees
 * no key at all outputs zeros, stores lse = -inf, and takes no part in the backward.
 *
 * Forward, few queries (decoding): one pass over the visible keys in chunks of
 * ATTN_ROW_CHUNK with a running maximum (the online softmax of flash attention): each chunk's
 * scores and its weighted values are two calls of the SIMD path's row kernels (cpu-simd.c,
 * each key and value row read once), and when the maximum grows, the partial sum and the
 * partial output row are rescaled, so no S-sized scratch is needed. Many queries (prompts,
 * images, training): blocks of query rows of one head go through two single-threaded sgemm
 * calls, scores = scale q k^T into the thread's scratch, a softmax per row in place,
 * out = P v. Both store
 *     lse[b, h, t] = log sum_s exp(scale * q_t . k_s)   over visible s
 * and nothing else: no (T, S) probability matrix is kept.
 *
 * Backward: P[t, s] = exp(scale * q_t . k_s - lse_t) is recomputed from lse, and with
 * D_t = dout_t . out_t (the row sum of P * dP):
 *     dP = dout_t . v_s,  dS = P (dP - D_t)
 *     dq_t += scale sum_s dS k_s,  dk_s += scale sum_t dS q_t,  dv_s += sum_t P dout_t
 * Accumulation rule: dq, dk and dv are added into (+=), never assigned; NULL ones are skipped.
 *
 * Threads: every output element is computed by exactly one thread, in a fixed order, so
 * results do not depend on the thread count. out, lse and dq are split over the query rows
 * (b, h, t); dk and dv over the key rows (b, kv head, s), each looping over its group's query
 * heads and over t in order and recomputing the scores it needs (scores are cheap next to a
 * race or a reduction). Rows go to threads through CPU_FOR_DYNAMIC (cpu.h), one flat index
 * per row, in parallel only when B * H * T * S * D is large enough to pay for it.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "backend/cpu/cpu.h"

#include <cblas.h>
#include <math.h>

static inline float dot_f32(const float *a, const float *b, int64_t D)
{
    float s = 0.0f;
    for (int64_t d = 0; d < D; d++)
        s += a[d] * b[d];
    return s;
}

/* One past the last key query t may see: S without causality, else S - T + t + 1 (which is
 * <= 0 when T > S puts the query before every key). */
static inline int64_t key_end(int64_t t, int64_t T, int64_t S, int causal)
{
    if (!causal)
        return S;
    int64_t e = S - T + t + 1;
    return e < 0 ? 0 : (e > S ? S : e);
}

/* The sizes and read-only inputs of one call, shared by its per-row functions. out and lse
 * are inputs only in the backward (the forward writes them through its own arguments). */
struct attn {
    const float *q, *k, *v, *out, *dout, *lse;
    const int32_t *mask;
    int64_t B, T, S, H, KV, D, G;   /* G: query heads per kv head */
    /* where key (b, s, kv head kh) starts: b * kb + s * ks + kh * khs elements in (kv_row) */
    int64_t kb, ks, khs;
    float scale;
    int causal;
};

/* Key (or value) row s of kv head kh in batch b. */
static inline const float *kv_row(const struct attn *a, const float *base, int64_t b, int64_t s,
                                  int64_t kh)
{
    return base + b * a->kb + s * a->ks + kh * a->khs;
}

/* k and v as (B, S, KV, D), or (kv_stride > 0) the head-major cache: KV heads kv_stride
 * elements apart, each (S, D) */
static void kv_layout(struct attn *a, int64_t kv_stride)
{
    a->kb = kv_stride > 0 ? a->KV * kv_stride : a->S * a->KV * a->D;
    a->ks = kv_stride > 0 ? a->D : a->KV * a->D;
    a->khs = kv_stride > 0 ? kv_stride : a->D;
}

/* ---- forward ------------------------------------------------------------------------ */

/* keys a decoding row scores at a time, on the stack */
#define ATTN_ROW_CHUNK 256
/* below this head size or key count, a decoding row goes key by key */
#define ATTN_CHUNKED_MIN 16

/* A new running maximum nm > *m: what was summed against the old one is rescaled. */
static inline void row_rescale(float *o, int64_t D, double *l, float *m, float nm)
{
    if (*l > 0.0) {
        float corr = expf(*m - nm);
        *l *= corr;
        for (int64_t d = 0; d < D; d++)
            o[d] *= corr;
    }
    *m = nm;
}

/* The row divided by its sum, and its lse; no visible key: the row stays zero, lse -inf (the
 * backward skips it). */
static inline void row_finish(float *o, int64_t D, double l, float m, float *lse)
{
    if (l == 0.0) {
        *lse = -INFINITY;
        return;
    }
    float inv = (float)(1.0 / l);
    for (int64_t d = 0; d < D; d++)
        o[d] *= inv;
    *lse = m + (float)log(l);
}

/* Out and lse of query row i = (b * H + h) * T + t (the index of lse). The keys go by in
 * chunks: the path's attn_scores scores a chunk, and when the chunk's maximum exceeds the
 * running one, what was summed so far is rescaled; its attn_accum adds the chunk's weighted
 * values to the output row. */
static inline void attn_forward_row(const struct attn *a, float *out, float *lse, int64_t i)
{
    int64_t T = a->T, S = a->S, H = a->H, D = a->D, ld = a->ks;
    int64_t b = i / (H * T), h = (i / T) % H, t = i % T;
    int64_t kh = h / a->G;
    const float *qr = a->q + ((b * T + t) * H + h) * D;
    const float *kb = kv_row(a, a->k, b, 0, kh), *vb = kv_row(a, a->v, b, 0, kh);
    float *o = out + ((b * T + t) * H + h) * D;
    const int32_t *mr = a->mask ? a->mask + t * S : NULL;
    int64_t send = key_end(t, T, S, a->causal);
    const struct cpu_simd *simd = cpu_simd();
    float sc[ATTN_ROW_CHUNK];

    for (int64_t d = 0; d < D; d++)
        o[d] = 0.0f;
    float m = -INFINITY;   /* running max of the visible scores */
    double l = 0.0;        /* sum of exp(score - m) so far */
    for (int64_t s0 = 0; s0 < send; s0 += ATTN_ROW_CHUNK) {
        int64_t n = send - s0 < ATTN_ROW_CHUNK ? send - s0 : ATTN_ROW_CHUNK;
        simd->attn_scores(sc, qr, kb + s0 * ld, n, D, ld, a->scale);
        float cm = -INFINITY;
        for (int64_t j = 0; j < n; j++) {
            if (mr && mr[s0 + j])
                sc[j] = -INFINITY;
            cm = sc[j] > cm ? sc[j] : cm;
        }
        if (cm == -INFINITY)
            continue;
        if (cm > m)
            row_rescale(o, D, &l, &m, cm);
        for (int64_t j = 0; j < n; j++) {
            sc[j] = sc[j] == -INFINITY ? 0.0f : expf(sc[j] - m);
            l += sc[j];
        }
        simd->attn_accum(o, sc, vb + s0 * ld, n, D, ld);
    }
    row_finish(o, D, l, m, &lse[i]);
}

/* The same row key by key, scored with dot_f32 as the backward rescores them (so a training
 * step's lse matches its backward bit for bit): training steps, and heads too small for
 * chunked calls to pay. */
static inline void attn_forward_row_exact(const struct attn *a, float *out, float *lse, int64_t i)
{
    int64_t T = a->T, S = a->S, H = a->H, D = a->D;
    int64_t b = i / (H * T), h = (i / T) % H, t = i % T;
    int64_t kh = h / a->G;
    const float *qr = a->q + ((b * T + t) * H + h) * D;
    float *o = out + ((b * T + t) * H + h) * D;
    const int32_t *mr = a->mask ? a->mask + t * S : NULL;
    int64_t send = key_end(t, T, S, a->causal);

    for (int64_t d = 0; d < D; d++)
        o[d] = 0.0f;
    float m = -INFINITY;   /* running max of the visible scores */
    double l = 0.0;        /* sum of exp(score - m) so far */
    for (int64_t s = 0; s < send; s++) {
        if (mr && mr[s])
            continue;
        const float *kr = kv_row(a, a->k, b, s, kh), *vr = kv_row(a, a->v, b, s, kh);
        float sc = a->scale * dot_f32(qr, kr, D);
        if (sc > m)
            row_rescale(o, D, &l, &m, sc);
        float e = expf(sc - m);
        l += e;
        for (int64_t d = 0; d < D; d++)
            o[d] += e * vr[d];
    }
    row_finish(o, D, l, m, &lse[i]);
}

/* query rows [t0, t0 + tn) of head h of batch b, through sgemm; sc: tn x S scratch */
static void attn_forward_block(const struct attn *a, float *out, float *lse, int64_t b,
                               int64_t h, int64_t t0, int64_t tn, float *sc)
{
    int64_t T = a->T, S = a->S, H = a->H, D = a->D, kh = h / a->G;
    const float *q = a->q + ((b * T + t0) * H + h) * D;
    const float *k = kv_row(a, a->k, b, 0, kh), *v = kv_row(a, a->v, b, 0, kh);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)tn, (blasint)S, (blasint)D,
                a->scale, q, (blasint)(H * D), k, (blasint)a->ks, 0.0f, sc, (blasint)S);
    for (int64_t r = 0; r < tn; r++) {
        int64_t t = t0 + r, send = key_end(t, T, S, a->causal);
        float *row = sc + r * S, m = -INFINITY;
        const int32_t *mr = a->mask ? a->mask + t * S : NULL;
        for (int64_t s = 0; s < send; s++) {
            if (mr && mr[s])
                row[s] = -INFINITY;
            m = row[s] > m ? row[s] : m;
        }
        double l = 0.0;
        for (int64_t s = 0; s < S; s++) {
            float e = s < send && row[s] != -INFINITY ? expf(row[s] - m) : 0.0f;
            row[s] = e;
            l += e;
        }
        if (l == 0.0) {              /* no visible key: a zero row, lse -inf */
            lse[(b * H + h) * T + t] = -INFINITY;
            continue;
        }
        float inv = (float)(1.0 / l);
        for (int64_t s = 0; s < send; s++)
            row[s] *= inv;
        lse[(b * H + h) * T + t] = m + (float)log(l);
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)tn, (blasint)D, (blasint)S,
                1.0f, sc, (blasint)S, v, (blasint)a->ks, 0.0f,
                out + ((b * T + t0) * H + h) * D, (blasint)(H * D));
}

/* below this many queries, the row-by-row online softmax wins */
#define ATTN_GEMM_MIN_T 8

void cpu_attention_forward(float *out, float *lse, const float *q, const float *k,
                           const float *v, const int32_t *mask, int64_t B, int64_t T,
                           int64_t S, int64_t H, int64_t KV, int64_t D, int64_t kv_stride,
                           float scale, int causal, bool for_grad)
{
    struct attn a = { .q = q, .k = k, .v = v, .mask = mask, .B = B, .T = T, .S = S, .H = H,
                      .KV = KV, .D = D, .G = H / KV, .scale = scale, .causal = causal };
    kv_layout(&a, kv_stride);
    int64_t tc = S > 0 ? CPU_SCRATCH_FLOATS / S : 0;
    if (T >= ATTN_GEMM_MIN_T && tc >= 1 && S > 0) {
        tc = tc < 64 ? tc : 64;
        int64_t blocks = (T + tc - 1) / tc;
        CPU_FOR_DYNAMIC(B * H * T * S * D, i, B * H * blocks, {
            float *sc = cpu_scratch();
            int64_t bh = i / blocks, t0 = (i % blocks) * tc;
            int64_t tn = T - t0 < tc ? T - t0 : tc;
            if (sc)
                attn_forward_block(&a, out, lse, bh / H, bh % H, t0, tn, sc);
            else
                for (int64_t t = t0; t < t0 + tn; t++)
                    attn_forward_row(&a, out, lse, bh * T + t);
        });
        return;
    }
    /* Fewer than ATTN_GEMM_MIN_T queries: rows of nearly equal cost, split evenly. */
    bool exact = for_grad || D < ATTN_CHUNKED_MIN || S < ATTN_CHUNKED_MIN;
    CPU_FOR(B * H * T * S * D, i, B * H * T, {
        if (exact)
            attn_forward_row_exact(&a, out, lse, i);
        else
            attn_forward_row(&a, out, lse, i);
    });
}

/* ---- backward ----------------------------------------------------------------------- */

/* dq of query row i = (b * H + h) * T + t. */
static inline void attn_dq_row(const struct attn *a, float *dq, int64_t i)
{
    int64_t T = a->T, S = a->S, H = a->H, D = a->D;
    float ls = a->lse[i];
    if (ls == -INFINITY)
        return;
    int64_t b = i / (H * T), h = (i / T) % H, t = i % T;
    int64_t kh = h / a->G;
    int64_t row = ((b * T + t) * H + h) * D;
    const float *qr = a->q + row, *dor = a->dout + row;
    float *dqr = dq + row;
    const int32_t *mr = a->mask ? a->mask + t * S : NULL;
    int64_t send = key_end(t, T, S, a->causal);
    float Dt = dot_f32(dor, a->out + row, D);
    for (int64_t s = 0; s < send; s++) {
        if (mr && mr[s])
            continue;
        const float *kr = kv_row(a, a->k, b, s, kh), *vr = kv_row(a, a->v, b, s, kh);
        float p = expf(a->scale * dot_f32(qr, kr, D) - ls);
        float ds = p * (dot_f32(dor, vr, D) - Dt);
        float c = a->scale * ds;
        for (int64_t d = 0; d < D; d++)
            dqr[d] += c * kr[d];
    }
}

/* dk and dv (either may be NULL, each (B, S, KV, D)) of key row i = (b * KV + kh) * S + s. */
static inline void attn_dkdv_row(const struct attn *a, float *dk, float *dv, int64_t i)
{
    int64_t T = a->T, S = a->S, H = a->H, KV = a->KV, D = a->D, G = a->G;
    int64_t b = i / (KV * S), kh = (i / S) % KV, s = i % S;
    int64_t krow = ((b * S + s) * KV + kh) * D;
    const float *kr = kv_row(a, a->k, b, s, kh), *vr = kv_row(a, a->v, b, s, kh);
    float *dkr = dk ? dk + krow : NULL;
    float *dvr = dv ? dv + krow : NULL;
    /* Causal: key s is seen by queries t >= s - (S - T). */
    int64_t t0 = a->causal ? s - (S - T) : 0;
    if (t0 < 0)
        t0 = 0;
    for (int64_t h = kh * G; h < (kh + 1) * G; h++) {
        for (int64_t t = t0; t < T; t++) {
            if (a->mask && a->mask[t * S + s])
                continue;
            float ls = a->lse[(b * H + h) * T + t];
            if (ls == -INFINITY)
                continue;
            int64_t row = ((b * T + t) * H + h) * D;
            const float *qr = a->q + row, *dor = a->dout + row;
            float p = expf(a->scale * dot_f32(qr, kr, D) - ls);
            if (dvr) {
                for (int64_t d = 0; d < D; d++)
                    dvr[d] += p * dor[d];
            }
            if (dkr) {
                float Dt = dot_f32(dor, a->out + row, D);
                float ds = p * (dot_f32(dor, vr, D) - Dt);
                float c = a->scale * ds;
                for (int64_t d = 0; d < D; d++)
                    dkr[d] += c * qr[d];
            }
        }
    }
}

void cpu_attention_backward(float *dq, float *dk, float *dv, const float *dout,
                            const float *q, const float *k, const float *v, const float *out,
                            const float *lse, const int32_t *mask, int64_t B, int64_t T,
                            int64_t S, int64_t H, int64_t KV, int64_t D, int64_t kv_stride,
                            float scale, int causal)
{
    struct attn a = { .q = q, .k = k, .v = v, .out = out, .dout = dout, .lse = lse,
                      .mask = mask, .B = B, .T = T, .S = S, .H = H, .KV = KV, .D = D,
                      .G = H / KV, .scale = scale, .causal = causal };
    kv_layout(&a, kv_stride);
    int64_t work = B * H * T * S * D;

    if (dq) {
        CPU_FOR_DYNAMIC(work, i, B * H * T, {
            attn_dq_row(&a, dq, i);
        });
    }
    if (!dk && !dv)
        return;
    CPU_FOR_DYNAMIC(work, i, B * KV * S, {
        attn_dkdv_row(&a, dk, dv, i);
    });
}
