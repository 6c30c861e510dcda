/*
 * cpu-attention.c: CPU kernels for scaled dot-product attention with grouped-query heads.
 *
 * Shapes (cpu.h): q, out (B, T, H, D); k, v (B, S, KV, D); lse (B, H, T); mask (T, S) I32.
 * Query head h reads kv head h / (H / KV). Query t sits at position S - T + t, so with a kv
 * cache the T new queries come after S - T cached keys; causal attention lets it see keys
 * s <= S - T + t, and a nonzero mask[t, s] blocks key s on top of that. A query row that sees
 * no key at all outputs zeros, stores lse = -inf, and takes no part in the backward.
 *
 * Forward: one pass over the visible keys with a running maximum (the online softmax of
 * flash attention): when the maximum grows, the partial sum and the partial output row are
 * rescaled. So the forward needs no S-sized scratch and no malloc at all. It stores
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
 * results do not depend on the thread count. out, lse and dq are split over (b, h, t); dk and
 * dv over (b, kv head, s), each looping over its group's query heads and over t in order and
 * recomputing the scores it needs (scores are cheap next to a race or a reduction).
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "backend/cpu/cpu.h"

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

/* ---- forward ------------------------------------------------------------------------ */

void cpu_attention_forward(float *out, float *lse, const float *q, const float *k,
                           const float *v, const int32_t *mask, int64_t B, int64_t T,
                           int64_t S, int64_t H, int64_t KV, int64_t D, float scale, int causal)
{
    int64_t G = H / KV;   /* query heads per kv head */

    #pragma omp parallel for collapse(3) schedule(dynamic, 8)
    for (int64_t b = 0; b < B; b++) {
        for (int64_t h = 0; h < H; h++) {
            for (int64_t t = 0; t < T; t++) {
                int64_t kh = h / G;
                const float *qr = q + ((b * T + t) * H + h) * D;
                float *o = out + ((b * T + t) * H + h) * D;
                const int32_t *mr = mask ? mask + t * S : NULL;
                int64_t send = key_end(t, T, S, causal);

                for (int64_t d = 0; d < D; d++)
                    o[d] = 0.0f;
                float m = -INFINITY;   /* running max of the visible scores */
                double l = 0.0;        /* sum of exp(score - m) so far */
                for (int64_t s = 0; s < send; s++) {
                    if (mr && mr[s])
                        continue;
                    const float *kr = k + ((b * S + s) * KV + kh) * D;
                    const float *vr = v + ((b * S + s) * KV + kh) * D;
                    float sc = scale * dot_f32(qr, kr, D);
                    if (sc > m) {
                        /* New maximum: rescale what was summed against the old one. */
                        if (l > 0.0) {
                            float corr = expf(m - sc);
                            l *= corr;
                            for (int64_t d = 0; d < D; d++)
                                o[d] *= corr;
                        }
                        m = sc;
                    }
                    float e = expf(sc - m);
                    l += e;
                    for (int64_t d = 0; d < D; d++)
                        o[d] += e * vr[d];
                }
                if (l == 0.0) {
                    /* No visible key: the row stays zero and backward skips it. */
                    lse[(b * H + h) * T + t] = -INFINITY;
                    continue;
                }
                float inv = (float)(1.0 / l);
                for (int64_t d = 0; d < D; d++)
                    o[d] *= inv;
                lse[(b * H + h) * T + t] = m + (float)log(l);
            }
        }
    }
}

/* ---- backward ----------------------------------------------------------------------- */

void cpu_attention_backward(float *dq, float *dk, float *dv, const float *dout,
                            const float *q, const float *k, const float *v, const float *out,
                            const float *lse, const int32_t *mask, int64_t B, int64_t T,
                            int64_t S, int64_t H, int64_t KV, int64_t D, float scale, int causal)
{
    int64_t G = H / KV;

    if (dq) {
        #pragma omp parallel for collapse(3) schedule(dynamic, 8)
        for (int64_t b = 0; b < B; b++) {
            for (int64_t h = 0; h < H; h++) {
                for (int64_t t = 0; t < T; t++) {
                    float ls = lse[(b * H + h) * T + t];
                    if (ls == -INFINITY)
                        continue;
                    int64_t kh = h / G;
                    int64_t row = ((b * T + t) * H + h) * D;
                    const float *qr = q + row, *dor = dout + row;
                    float *dqr = dq + row;
                    const int32_t *mr = mask ? mask + t * S : NULL;
                    int64_t send = key_end(t, T, S, causal);
                    float Dt = dot_f32(dor, out + row, D);
                    for (int64_t s = 0; s < send; s++) {
                        if (mr && mr[s])
                            continue;
                        const float *kr = k + ((b * S + s) * KV + kh) * D;
                        const float *vr = v + ((b * S + s) * KV + kh) * D;
                        float p = expf(scale * dot_f32(qr, kr, D) - ls);
                        float ds = p * (dot_f32(dor, vr, D) - Dt);
                        float c = scale * ds;
                        for (int64_t d = 0; d < D; d++)
                            dqr[d] += c * kr[d];
                    }
                }
            }
        }
    }

    if (!dk && !dv)
        return;

    #pragma omp parallel for collapse(3) schedule(dynamic, 8)
    for (int64_t b = 0; b < B; b++) {
        for (int64_t kh = 0; kh < KV; kh++) {
            for (int64_t s = 0; s < S; s++) {
                int64_t krow = ((b * S + s) * KV + kh) * D;
                const float *kr = k + krow, *vr = v + krow;
                float *dkr = dk ? dk + krow : NULL;
                float *dvr = dv ? dv + krow : NULL;
                /* Causal: key s is seen by queries t >= s - (S - T). */
                int64_t t0 = causal ? s - (S - T) : 0;
                if (t0 < 0)
                    t0 = 0;
                for (int64_t h = kh * G; h < (kh + 1) * G; h++) {
                    for (int64_t t = t0; t < T; t++) {
                        if (mask && mask[t * S + s])
                            continue;
                        float ls = lse[(b * H + h) * T + t];
                        if (ls == -INFINITY)
                            continue;
                        int64_t row = ((b * T + t) * H + h) * D;
                        const float *qr = q + row, *dor = dout + row;
                        float p = expf(scale * dot_f32(qr, kr, D) - ls);
                        if (dvr) {
                            for (int64_t d = 0; d < D; d++)
                                dvr[d] += p * dor[d];
                        }
                        if (dkr) {
                            float Dt = dot_f32(dor, out + row, D);
                            float ds = p * (dot_f32(dor, vr, D) - Dt);
                            float c = scale * ds;
                            for (int64_t d = 0; d < D; d++)
                                dkr[d] += c * qr[d];
                        }
                    }
                }
            }
        }
    }
}
