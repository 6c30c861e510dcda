/*
 * test-llama.c: the decoder against references, the sampler against hand-computed
 * distributions, and the generation loop's edges.
 *
 * 1. tests/reference/llama_lm.bin (gen_llama_lm.py, float64 PyTorch): a random LLaMA with
 *    GQA and an untied head, stored as F32, F16 and BF16: logits of one prefill pass and of
 *    token-by-token decoding with the cache match within 1e-5 (max|a - b| <= tol * max|b|);
 *    F16/BF16 against F32: teacher-forced top-1 agreement and mean KL are printed.
 * 2. The conformance stories260K.bin: greedy from BOS gives the 256 ids of llama2.c's run.c;
 *    the same model written as a Hugging Face directory and as GGUF gives the same ids and
 *    logits within 1e-5; logits do not depend on the thread count.
 * 3. Sampler: top-k, top-p, min-p, temperature and the penalties against distributions
 *    computed by hand; same seed, same draws; 20 seeds at temperature 1 give >= 19 outputs.
 * 4. Context: too long a prompt is refused and leaves the cache as it was; generation stops
 *    at the context end.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/checkpoint.h"
#include "io/gguf.h"
#include "lavinia/error.h"
#include "lavinia/ops.h"
#include "model/generate.h"
#include "model/llama.h"
#include "model/sampler.h"
#include "refdata.h"
#include "testutil.h"

#define TOL 1e-5
#define REF_HINT "cd tests/reference && /usr/bin/python3 gen_llama_lm.py"

static char tmpdir[256];



static bool open_model(const char *path, struct lv_checkpoint *ck, lv_llama **m, int64_t n_ctx)
{
    if (!tu_assert(lv_checkpoint_open(ck, path, NULL, NULL) == LV_OK, "%s opens (%s)", path,
                   lv_errmsg()))
        return false;
    if (!tu_assert(lv_llama_load(m, ck, n_ctx) == LV_OK, "%s loads (%s)", path, lv_errmsg())) {
        lv_checkpoint_close(ck);
        return false;
    }
    return true;
}

/* ----------------------------------------------------------------------------------------
 * 1. the PyTorch reference
 */

static void softmax64(const float *x, double *p, int64_t n)
{
    double mx = x[0], s = 0.0;
    for (int64_t i = 1; i < n; i++)
        mx = fmax(mx, x[i]);
    for (int64_t i = 0; i < n; i++)
        s += (p[i] = exp((double)x[i] - mx));
    for (int64_t i = 0; i < n; i++)
        p[i] /= s;
}

/* teacher-forced top-1 agreement and mean KL(a || b) over T rows of V logits */
static void agreement(const float *a, const float *b, int64_t T, int64_t V, int *agree,
                      double *kl)
{
    double *p = malloc((size_t)V * sizeof *p), *q = malloc((size_t)V * sizeof *q);
    *agree = 0;
    *kl = 0.0;
    for (int64_t t = 0; t < T; t++) {
        const float *x = a + t * V, *y = b + t * V;
        int64_t ix = 0, iy = 0;
        for (int64_t i = 1; i < V; i++) {
            ix = x[i] > x[ix] ? i : ix;
            iy = y[i] > y[iy] ? i : iy;
        }
        *agree += ix == iy;
        softmax64(x, p, V);
        softmax64(y, q, V);
        for (int64_t i = 0; i < V; i++)
            *kl += p[i] * (log(p[i]) - log(q[i]));
    }
    *kl /= (double)T;
    free(p);
    free(q);
}

static void reference(void)
{
    struct ref_file rf;
    if (!ref_load(&rf, "llama_lm", REF_HINT))
        return;
    const struct ref_tensor *tokens = NULL;
    for (int i = 0; i < rf.count; i++)
        if (strcmp(rf.t[i].name, "tokens") == 0)
            tokens = &rf.t[i];
    if (!tu_assert(tokens && tokens->ndim == 1, "llama_lm.bin has the prompt")) {
        ref_done(&rf);
        return;
    }
    int64_t T = tokens->shape[0], V = 96;
    int32_t ids[64];
    for (int64_t t = 0; t < T; t++)
        ids[t] = (int32_t)tokens->data[t];
    static const char *const dts[] = { "f32", "f16", "bf16" };
    float *all[3] = { 0 };
    const char *top = getenv("LV_TOP_SRCDIR");
    for (int d = 0; d < 3; d++) {
        char path[1200], name[32];
        snprintf(path, sizeof path, "%s/tests/reference/llama-lm-%s", top && *top ? top : ".",
                 dts[d]);
        snprintf(name, sizeof name, "logits.%s", dts[d]);
        const struct ref_tensor *want = ref_get(&rf, name, 2, (int64_t[]){ T, V });
        struct lv_checkpoint ck;
        lv_llama *m;
        if (!want || !open_model(path, &ck, &m, 0))
            continue;
        float *got = malloc((size_t)(T * V) * sizeof *got), *row = malloc((size_t)V * 4);
        all[d] = got;
        int rc = lv_llama_forward(m, ids, T, got, true);
        double e = rc == LV_OK ? tu_rel_err(got, want->data, T * V) : 1.0;
        tu_assert(rc == LV_OK && e <= TOL, "%s: prefill logits at all %lld positions: "
                  "relative error %.2e (tol %.0e)", dts[d], (long long)T, e, TOL);
        lv_llama_reset(m);
        double worst = 0.0;
        for (int64_t t = 0; t < T && rc == LV_OK; t++) {
            rc = lv_llama_forward(m, &ids[t], 1, row, false);
            worst = fmax(worst, tu_rel_err(row, want->data + t * V, V));
        }
        tu_assert(rc == LV_OK && worst <= TOL, "%s: token-by-token decoding with the cache: "
                  "worst relative error %.2e", dts[d], worst);
        free(row);
        lv_llama_free(m);
        lv_checkpoint_close(&ck);
    }
    /* narrow weights against F32: teacher-forced top-1 agreement and mean KL(F32 || x) */
    for (int d = 1; d < 3 && all[0]; d++) {
        if (!all[d])
            continue;
        int agree;
        double kl;
        agreement(all[0], all[d], T, V, &agree, &kl);
        printf("# %s vs f32: teacher-forced top-1 agreement %d/%lld, mean KL %.3e nats\n",
               dts[d], agree, (long long)T, kl);
        tu_assert(agree >= T - 1, "%s agrees with F32 on the top id at %d of %lld positions",
                  dts[d], agree, (long long)T);
    }
    for (int d = 0; d < 3; d++)
        free(all[d]);
    ref_done(&rf);
}

/* ----------------------------------------------------------------------------------------
 * 2. stories260K
 */

static int collect_id(void *ctx, int32_t id, const char *text, size_t n)
{
    (void)text;
    (void)n;
    int32_t **p = ctx;
    if (id >= 0)
        *(*p)++ = id;
    return 0;
}

static int run_greedy(lv_llama *m, int n, int32_t *out)
{
    struct lv_sampler_params p = { .temp = 0.0f, .top_p = 1.0f, .repeat_penalty = 1.0f };
    lv_sampler s;
    struct lv_gen_stats st;
    struct lv_gen_opts o = { .n_predict = n, .eot_id = -1, .ignore_eos = true };
    int32_t bos = 1, *w = out;
    if (lv_sampler_init(&s, &p, lv_llama_vocab(m), lv_llama_vocab(m)) != LV_OK)
        return -1;
    lv_llama_reset(m);
    int rc = lv_generate(m, NULL, &s, &bos, 1, &o, collect_id, &w, &st);
    lv_sampler_done(&s);
    return rc == LV_OK ? (int)(w - out) : -1;
}

static void stories(const char *conf)
{
    char model[1200], ref[1200], hf[400], gguf[400];
    snprintf(model, sizeof model, "%s/stories260K.bin", conf);
    snprintf(ref, sizeof ref, "%s/stories260K.greedy-from-bos.txt", conf);
    FILE *f = fopen(ref, "r");
    if (!f) {
        printf("skipped: conformance data not found (%s)\n", ref);
        return;
    }
    int32_t want[256];
    int nw = 0;
    while (nw < 256 && fscanf(f, "%d", &want[nw]) == 1)
        nw++;
    fclose(f);
    struct lv_checkpoint ck;
    lv_llama *m;
    if (!open_model(model, &ck, &m, 0))
        return;
    int32_t got[256];
    int n = run_greedy(m, 256, got);
    tu_assert(nw == 256 && n == 256 && memcmp(got, want, sizeof want) == 0,
              "stories260K: greedy from BOS gives the 256 ids of llama2.c's run.c");
    /* the whole sequence's logits, as the reference for the converted files */
    int32_t seq[257] = { 1 };
    memcpy(seq + 1, want, sizeof want);
    int64_t V = lv_llama_vocab(m);
    float *base = malloc((size_t)(257 * V) * sizeof *base), *other = malloc((size_t)(257 * V) * 4);
    lv_llama_reset(m);
    tu_assert(lv_llama_forward(m, seq, 257, base, true) == LV_OK, "stories260K: 257 positions");
    /* threads: 1 and 2 give the same bits */
    int threads = lv_get_threads();
    lv_set_threads(1);
    lv_llama_reset(m);
    lv_llama_forward(m, seq, 257, other, true);
    lv_set_threads(threads > 1 ? threads : 2);
    tu_assert(memcmp(base, other, (size_t)(257 * V) * 4) == 0,
              "logits do not depend on the thread count (1 vs %d)", threads > 1 ? threads : 2);
    snprintf(hf, sizeof hf, "%s/stories-hf", tmpdir);
    snprintf(gguf, sizeof gguf, "%s/stories.gguf", tmpdir);
    tu_assert(lv_checkpoint_write_hf(&ck, hf, 0) == LV_OK &&
                  lv_checkpoint_write_gguf(&ck, gguf) == LV_OK, "stories260K converted");
    lv_llama_free(m);
    lv_checkpoint_close(&ck);
    const char *paths[] = { hf, gguf }, *labels[] = { "Hugging Face directory", "GGUF" };
    for (int i = 0; i < 2; i++) {
        if (!open_model(paths[i], &ck, &m, 0))
            continue;
        n = run_greedy(m, 256, got);
        tu_assert(n == 256 && memcmp(got, want, sizeof want) == 0,
                  "stories260K as a %s: the same 256 ids", labels[i]);
        lv_llama_reset(m);
        int rc = lv_llama_forward(m, seq, 257, other, true);
        double e = rc == LV_OK ? tu_rel_err_f(other, base, 257 * V) : 1.0;
        tu_assert(e <= TOL, "stories260K as a %s: logits within %.0e (relative error %.2e)",
                  labels[i], TOL, e);
        lv_llama_free(m);
        lv_checkpoint_close(&ck);
    }
    free(base);
    free(other);
}

/* stories260K's GGUF with every matrix whose rows are whole Q8_0 blocks quantised (q8 set),
 * or the same with those matrices dequantised back to F32 (q8 clear) */
static bool write_q8(const char *src, const char *dst, bool q8)
{
    lv_gguf_file g;
    if (lv_gguf_open(&g, src) != LV_OK)
        return false;
    lv_gguf_writer *w = lv_gguf_writer_new();
    for (uint64_t i = 0; i < g.n_kv; i++)
        lv_gguf_writer_add_kv(w, &g.kv[i]);
    void **bufs = calloc(g.n_tensors, sizeof *bufs);
    for (uint64_t i = 0; i < g.n_tensors; i++) {
        const lv_gguf_tensor *t = &g.tensors[i];
        bool quant = t->n_dims == 2 && t->ne[0] % 32 == 0 && t->type == LV_GGML_TYPE_F32;
        if (!quant) {
            lv_gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->shape, t->data,
                                      t->nbytes);
            continue;
        }
        float *f = malloc((size_t)t->nbytes);
        memcpy(f, t->data, (size_t)t->nbytes);
        uint64_t qb = lv_ggml_nbytes(LV_GGML_TYPE_Q8_0, t->nelem);
        void *q = malloc((size_t)qb);
        lv_gguf_quantize_q8_0(f, q, t->nelem);
        if (q8) {
            bufs[i] = q;
            free(f);
            lv_gguf_writer_add_tensor(w, t->name, LV_GGML_TYPE_Q8_0, 2, t->shape, q, qb);
        } else {
            lv_gguf_dequantize(LV_GGML_TYPE_Q8_0, q, f, t->nelem);
            free(q);
            bufs[i] = f;
            lv_gguf_writer_add_tensor(w, t->name, LV_GGML_TYPE_F32, 2, t->shape, f, t->nbytes);
        }
    }
    bool ok = lv_gguf_writer_write(w, dst) == LV_OK;
    lv_gguf_writer_free(w);
    for (uint64_t i = 0; i < g.n_tensors; i++)
        free(bufs[i]);
    free(bufs);
    lv_gguf_close(&g);
    return ok;
}

static void quantised(const char *conf)
{
    char model[1200], f32[400], q8[400], deq[400];
    snprintf(model, sizeof model, "%s/stories260K.bin", conf);
    if (access(model, R_OK) != 0)
        return;
    snprintf(f32, sizeof f32, "%s/f32.gguf", tmpdir);
    snprintf(q8, sizeof q8, "%s/q8.gguf", tmpdir);
    snprintf(deq, sizeof deq, "%s/deq.gguf", tmpdir);
    struct lv_checkpoint ck;
    if (lv_checkpoint_open(&ck, model, NULL, NULL) != LV_OK)
        return;
    lv_checkpoint_write_gguf(&ck, f32);
    lv_checkpoint_close(&ck);
    if (!tu_assert(write_q8(f32, q8, true) && write_q8(f32, deq, false), "Q8_0 GGUF written"))
        return;
    const char *paths[3] = { f32, deq, q8 };
    float *lg[3] = { 0 };
    int32_t seq[64] = { 1 };
    for (int i = 1; i < 64; i++)
        seq[i] = (int32_t)((i * 37) % 500 + 3);
    int64_t V = 512, T = 64;
    for (int i = 0; i < 3; i++) {
        lv_llama *m;
        if (!open_model(paths[i], &ck, &m, 0))
            continue;
        lg[i] = malloc((size_t)(T * V) * sizeof(float));
        if (lv_llama_forward(m, seq, T, lg[i], true) != LV_OK)
            memset(lg[i], 0, (size_t)(T * V) * sizeof(float));
        lv_llama_free(m);
        lv_checkpoint_close(&ck);
    }
    if (lg[0] && lg[1] && lg[2]) {
        /* Q8_0 kept as stored: the same numbers as the dequantised F32 model */
        double e = tu_rel_err_f(lg[2], lg[1], T * V);
        tu_assert(e <= TOL, "Q8_0 weights as stored: prefill logits within %.1e of the "
                  "dequantised F32 model (1e-5)", e);
        lv_llama *m;
        if (open_model(q8, &ck, &m, 0)) {
            float row[512];
            double worst = 0.0;
            for (int64_t t = 0; t < T; t++) {
                if (lv_llama_forward(m, &seq[t], 1, row, false) != LV_OK) {
                    worst = 1.0;
                    break;
                }
                worst = fmax(worst, tu_rel_err_f(row, lg[1] + t * V, V));
            }
            tu_assert(worst <= TOL, "Q8_0 token by token (matrix-vector kernels): within %.1e "
                      "of the dequantised F32 model", worst);
            lv_llama_free(m);
            lv_checkpoint_close(&ck);
        }
        for (int which = 1; which <= 2; which++) {
        int agree;
        double kl;
        agreement(lg[0], lg[which], T, V, &agree, &kl);
        printf("# stories260K %s vs F32: teacher-forced top-1 agreement %d/%lld, mean KL "
               "%.3e nats\n", which == 1 ? "Q8_0 dequantised to F32" : "Q8_0 as stored",
               agree, (long long)T, kl);
        }
    }
    for (int i = 0; i < 3; i++)
        free(lg[i]);
}

/* The ggml types converted to Q8_0 at load, with the byte offsets of their f16 scales in a
 * block (the second -1 when there is none) and values for them that keep weights small */
static const struct {
    uint32_t type;
    int d_off, m_off;
    float d, m;
} conv[] = {
    { LV_GGML_TYPE_Q4_K, 0, 2, 0.002f, 0.001f },   { LV_GGML_TYPE_Q5_K, 0, 2, 0.001f, 0.001f },
    { LV_GGML_TYPE_Q6_K, 208, -1, 0.0005f, 0 },     { LV_GGML_TYPE_Q4_1, 0, 2, 0.004f, -0.03f },
    { LV_GGML_TYPE_Q5_0, 0, -1, 0.004f, 0 },        { LV_GGML_TYPE_Q5_1, 0, 2, 0.002f, -0.03f },
    { LV_GGML_TYPE_Q2_K, 80, 82, 0.004f, 0.002f },  { LV_GGML_TYPE_Q3_K, 108, -1, 0.002f, 0 },
    { LV_GGML_TYPE_IQ4_NL, 0, -1, 0.001f, 0 },      { LV_GGML_TYPE_IQ4_XS, 0, -1, 0.0001f, 0 },
};

/* a one-layer model (dim 256) whose matrices are of conv[k]'s type (random blocks with sane
 * scales), or (as_q8) the same values dequantised and requantised to Q8_0 */
static bool write_converted(const char *path, int k, bool as_q8)
{
    enum { KD = 256, KV = 16 };
    static const char *const mats[] = { "token_embd.weight", "blk.0.attn_q.weight",
                                        "blk.0.attn_k.weight", "blk.0.attn_v.weight",
                                        "blk.0.attn_output.weight", "blk.0.ffn_gate.weight",
                                        "blk.0.ffn_up.weight", "blk.0.ffn_down.weight" };
    /* at most 0.75 bytes a value in every converted type, 1.0625 in Q8_0 */
    static uint8_t qk[8][KD * KD], q8[8][KD * KD / 32 * 34];
    static float f[KD * KD], ones[KD];
    const uint32_t type = conv[k].type;
    const uint64_t bb = lv_ggml_block_bytes(type), be = (uint64_t)lv_ggml_block_elems(type);
    lv_gguf_writer *w = lv_gguf_writer_new();
    lv_gguf_writer_add_str(w, "general.architecture", "llama");
    lv_gguf_writer_add_u32(w, "llama.block_count", 1);
    lv_gguf_writer_add_u32(w, "llama.embedding_length", KD);
    lv_gguf_writer_add_u32(w, "llama.feed_forward_length", KD);
    lv_gguf_writer_add_u32(w, "llama.attention.head_count", 4);
    lv_gguf_writer_add_u32(w, "llama.context_length", 32);
    uint32_t rng = 12345;
    for (int i = 0; i < 8; i++) {
        int64_t rows = i == 0 ? KV : KD, n = rows * KD, shape[2] = { rows, KD };
        for (uint64_t b = 0; b < (uint64_t)n / be; b++) {
            uint8_t *blk = qk[i] + b * bb;
            for (uint64_t j = 0; j < bb; j++) {
                rng = rng * 1103515245u + 12345u;
                blk[j] = (uint8_t)(rng >> 16);
            }
            uint16_t d = lv_f32_to_f16(conv[k].d), m = lv_f32_to_f16(conv[k].m);
            blk[conv[k].d_off] = (uint8_t)d;
            blk[conv[k].d_off + 1] = (uint8_t)(d >> 8);
            if (conv[k].m_off >= 0) {
                blk[conv[k].m_off] = (uint8_t)m;
                blk[conv[k].m_off + 1] = (uint8_t)(m >> 8);
            }
        }
        if (!as_q8) {
            lv_gguf_writer_add_tensor(w, mats[i], type, 2, shape, qk[i],
                                      lv_ggml_nbytes(type, n));
            continue;
        }
        lv_gguf_dequantize(type, qk[i], f, n);
        lv_gguf_quantize_q8_0(f, q8[i], n);
        lv_gguf_writer_add_tensor(w, mats[i], LV_GGML_TYPE_Q8_0, 2, shape, q8[i],
                                  lv_ggml_nbytes(LV_GGML_TYPE_Q8_0, n));
    }
    for (int i = 0; i < KD; i++)
        ones[i] = 1.0f;
    int64_t d = KD;
    lv_gguf_writer_add_tensor(w, "blk.0.attn_norm.weight", 0, 1, &d, ones, sizeof ones);
    lv_gguf_writer_add_tensor(w, "blk.0.ffn_norm.weight", 0, 1, &d, ones, sizeof ones);
    lv_gguf_writer_add_tensor(w, "output_norm.weight", 0, 1, &d, ones, sizeof ones);
    bool ok = lv_gguf_writer_write(w, path) == LV_OK;
    lv_gguf_writer_free(w);
    return ok;
}

/* 8 tokens as a prompt (the tiled products), then 2 more one by one (the matrix-vector
 * kernels): 10 rows of logits into out; whether wq ended up of dtype want */
static bool prompt_and_steps(lv_llama *m, lv_dtype want, float *out)
{
    int32_t ids[10] = { 1, 5, 9, 2, 14, 7, 3, 11, 4, 8 };
    int64_t V = lv_llama_vocab(m);
    return lv_llama_forward(m, ids, 8, out, true) == LV_OK &&
           lv_llama_forward(m, ids + 8, 1, out + 8 * V, false) == LV_OK &&
           lv_llama_forward(m, ids + 9, 1, out + 9 * V, false) == LV_OK &&
           m->layers[0].wq->dtype == want;
}

/* The model's matrices (Q8_0x8) swapped for copies in ggml's Q8_0 layout, kept in keep[] */
static bool as_ggml_q8_0(lv_llama *m, lv_tensor **keep)
{
    struct lv_llama_layer *L = &m->layers[0];
    lv_tensor **w[] = { &L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down,
                        &m->lm_head };
    bool ok = true;
    for (int i = 0; i < 8; i++) {
        lv_tensor *x8 = *w[i];
        keep[i] = lv_tensor_new(LV_Q8_0, 2, x8->shape);
        if (!(ok = ok && keep[i] && x8->dtype == LV_Q8_0X8))
            continue;
        lv_convert_row(keep[i]->data, LV_Q8_0, x8->data, LV_Q8_0X8, lv_tensor_nelem(x8));
        lv_tensor_set_frozen(keep[i]);
        *w[i] = keep[i];
    }
    return ok;
}

/* Weights of a type without kernels (k-quants, Q4_1, Q5_0, Q5_1, IQ4_NL, IQ4_XS) become Q8_0
 * at load, and so do Q8_0 weights, as Q8_0x8 (rows of 256: the same blocks regrouped): the
 * same logits as the Q8_0 of their values, whether loaded from a Q8_0 GGUF (Q8_0x8) or put
 * back into ggml's layout, for each type, bit for bit */
static void converted(void)
{
    for (int k = 0; k < (int)(sizeof conv / sizeof conv[0]); k++) {
        const char *tn = lv_ggml_type_name(conv[k].type);
        char a[400], b[400];
        snprintf(a, sizeof a, "%s/%s.gguf", tmpdir, tn);
        snprintf(b, sizeof b, "%s/%s-as-q8.gguf", tmpdir, tn);
        if (!tu_assert(write_converted(a, k, false) && write_converted(b, k, true),
                       "%s GGUF written", tn))
            return;
        static float la[10 * 16], lb[10 * 16], lc[10 * 16];
        const char *paths[3] = { a, b, b };
        float *outs[3] = { la, lb, lc };
        const lv_dtype want[3] = { LV_Q8_0X8, LV_Q8_0X8, LV_Q8_0 };
        int ok = 0;
        for (int i = 0; i < 3; i++) {
            struct lv_checkpoint ck;
            lv_llama *m;
            lv_tensor *keep[8] = { NULL };
            if (!open_model(paths[i], &ck, &m, 0))
                continue;
            ok += (i < 2 || as_ggml_q8_0(m, keep)) && prompt_and_steps(m, want[i], outs[i]);
            lv_llama_free(m);
            lv_checkpoint_close(&ck);
            for (int j = 0; j < 8; j++)
                lv_tensor_free(keep[j]);
        }
        bool finite = true;
        float amax = 0.0f;
        for (int i = 0; i < 10 * 16; i++) {
            finite = finite && isfinite(la[i]) && la[i] != 0.0f;
            amax = fabsf(la[i]) > amax ? fabsf(la[i]) : amax;
        }
        tu_assert(ok == 3 && finite && memcmp(la, lb, sizeof la) == 0 &&
                      memcmp(lc, lb, sizeof lc) == 0,
                  "%s weights converted at load (Q8_0x8) give the logits of the same values "
                  "stored as Q8_0 (Q8_0x8 at load, and put back into ggml's layout), bit for "
                  "bit, over a prompt and two steps (max |logit| %.3g)", tn, amax);
    }
}

/* ----------------------------------------------------------------------------------------
 * 3. the sampler
 */

static bool probs_are(const float *got, const double *want, int n)
{
    for (int i = 0; i < n; i++)
        if (fabs((double)got[i] - want[i]) > 1e-6)
            return false;
    return true;
}

static void sampler(const char *conf)
{
    /* logits ln(p) for p = .4 .3 .15 .1 .05 (then a masked id) */
    const float lg[6] = { logf(0.4f), logf(0.3f), logf(0.15f), logf(0.1f), logf(0.05f), 10.0f };
    float pr[6];
    lv_sampler s;
    struct lv_sampler_params p = { .temp = 1.0f, .top_p = 1.0f, .repeat_penalty = 1.0f };
    struct { const char *what; struct lv_sampler_params p; double want[6]; } cases[] = {
        { "temperature 1, nothing cut", p, { .4, .3, .15, .1, .05, 0 } },
        { "top-k 2", { .temp = 1, .top_k = 2, .top_p = 1, .repeat_penalty = 1 },
          { .4 / .7, .3 / .7, 0, 0, 0, 0 } },
        { "top-p 0.8 (.4 + .3 + .15 reaches it)", { .temp = 1, .top_p = 0.8f,
                                                    .repeat_penalty = 1 },
          { .4 / .85, .3 / .85, .15 / .85, 0, 0, 0 } },
        { "min-p 0.3 (>= .12 stays)", { .temp = 1, .top_p = 1, .min_p = 0.3f,
                                         .repeat_penalty = 1 },
          { .4 / .85, .3 / .85, .15 / .85, 0, 0, 0 } },
        { "temperature 2 (p^(1/2) renormalised)", { .temp = 2, .top_p = 1,
                                                     .repeat_penalty = 1 },
          { 0 } },
    };
    double z = sqrt(.4) + sqrt(.3) + sqrt(.15) + sqrt(.1) + sqrt(.05);
    double t2[5] = { sqrt(.4) / z, sqrt(.3) / z, sqrt(.15) / z, sqrt(.1) / z, sqrt(.05) / z };
    memcpy(cases[4].want, t2, sizeof t2);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        lv_sampler_init(&s, &cases[i].p, 6, 5);
        lv_sampler_sample(&s, lg, pr);
        tu_assert(probs_are(pr, cases[i].want, 6), "sampler, %s: %.4f %.4f %.4f %.4f %.4f %.4f",
                  cases[i].what, pr[0], pr[1], pr[2], pr[3], pr[4], pr[5]);
        lv_sampler_done(&s);
    }
    /* penalties: repetition 2 on ids 0 and 3 (seen), frequency 0.5 and presence 0.25 on id 0
     * (seen twice): logits ln .4 / 2 ... for negative logits the penalty multiplies */
    struct lv_sampler_params pen = { .temp = 1, .top_p = 1, .repeat_penalty = 2.0f,
                                     .freq_penalty = 0.5f, .presence_penalty = 0.25f };
    lv_sampler_init(&s, &pen, 6, 5);
    lv_sampler_accept(&s, 0);
    lv_sampler_accept(&s, 0);
    lv_sampler_accept(&s, 3);
    lv_sampler_sample(&s, lg, pr);
    double e[5] = { 2 * log(.4) - 0.5 * 2 - 0.25, log(.3), log(.15), 2 * log(.1) - 0.5 - 0.25,
                    log(.05) }, w[6] = { 0 }, sum = 0;
    for (int i = 0; i < 5; i++)
        sum += exp(e[i]);
    for (int i = 0; i < 5; i++)
        w[i] = exp(e[i]) / sum;
    tu_assert(probs_are(pr, w, 6), "sampler, repetition/frequency/presence penalties: %.4f "
              "%.4f %.4f %.4f %.4f", pr[0], pr[1], pr[2], pr[3], pr[4]);
    lv_sampler_done(&s);
    /* top-k picks the k best of a large vocabulary (with ties, lower ids first) */
    {
        enum { NV = 1000, K = 37 };
        static float big[NV], bp[NV];
        static int order[NV];
        for (int i = 0; i < NV; i++) {
            big[i] = (float)((i * 7919) % 211) * 0.05f;     /* many ties */
            order[i] = i;
        }
        for (int i = 1; i < NV; i++)                          /* insertion sort: the reference */
            for (int j = i; j > 0 && (big[order[j]] > big[order[j - 1]] ||
                                      (big[order[j]] == big[order[j - 1]] &&
                                       order[j] < order[j - 1])); j--) {
                int t = order[j];
                order[j] = order[j - 1];
                order[j - 1] = t;
            }
        struct lv_sampler_params tk = { .temp = 0.7f, .top_k = K, .top_p = 1,
                                        .repeat_penalty = 1 };
        lv_sampler_init(&s, &tk, NV, NV);
        lv_sampler_sample(&s, big, bp);
        lv_sampler_done(&s);
        double z = 0.0, worst = 0.0;
        for (int i = 0; i < K; i++)
            z += exp((big[order[i]] - big[order[0]]) / 0.7);
        int outside = 0;
        for (int i = 0; i < NV; i++) {
            int rank = 0;
            while (order[rank] != i)
                rank++;
            double want = rank < K ? exp((big[i] - big[order[0]]) / 0.7) / z : 0.0;
            worst = fmax(worst, fabs(bp[i] - want));
            outside += rank >= K && bp[i] != 0.0f;
        }
        tu_assert(worst <= 1e-6 && outside == 0, "top-k %d of %d logits with ties: the same "
                  "distribution as a full sort (worst %.1e)", K, NV, worst);
    }
    /* greedy ignores the masked id with the largest logit */
    struct lv_sampler_params g = { .temp = 0, .top_p = 1, .repeat_penalty = 1 };
    lv_sampler_init(&s, &g, 6, 5);
    tu_assert(lv_sampler_sample(&s, lg, NULL) == 0, "greedy picks the best unmasked id");
    lv_sampler_done(&s);
    /* seeds, on stories260K */
    char model[1200];
    snprintf(model, sizeof model, "%s/stories260K.bin", conf);
    if (access(model, R_OK) != 0)
        return;
    struct lv_checkpoint ck;
    lv_llama *m;
    if (!open_model(model, &ck, &m, 0))
        return;
    int32_t outs[21][32];
    for (int seed = 0; seed <= 20; seed++) {
        struct lv_sampler_params sp = { .temp = 1, .top_p = 1, .repeat_penalty = 1,
                                        .seed = (uint64_t)(seed == 20 ? 7 : seed) };
        struct lv_gen_opts o = { .n_predict = 32, .eot_id = -1, .ignore_eos = true };
        struct lv_gen_stats st;
        int32_t bos = 1, *wp = outs[seed];
        lv_sampler_init(&s, &sp, lv_llama_vocab(m), lv_llama_vocab(m));
        lv_llama_reset(m);
        lv_generate(m, NULL, &s, &bos, 1, &o, collect_id, &wp, &st);
        lv_sampler_done(&s);
    }
    int distinct = 0;
    for (int i = 0; i < 20; i++) {
        bool seen = false;
        for (int j = 0; j < i && !seen; j++)
            seen = memcmp(outs[i], outs[j], sizeof outs[i]) == 0;
        distinct += !seen;
    }
    tu_assert(distinct >= 19, "temperature 1: %d of 20 seeds give distinct outputs", distinct);
    tu_assert(memcmp(outs[7], outs[20], sizeof outs[7]) == 0, "the same seed, the same output");
    lv_llama_free(m);
    lv_checkpoint_close(&ck);
}

/* ----------------------------------------------------------------------------------------
 * 4. the context
 */

static void context(void)
{
    const char *top = getenv("LV_TOP_SRCDIR");
    char path[1200];
    snprintf(path, sizeof path, "%s/tests/reference/llama-lm-f32", top && *top ? top : ".");
    struct lv_checkpoint ck;
    lv_llama *m;
    if (!open_model(path, &ck, &m, 8))
        return;
    int32_t ids[10] = { 3, 4, 5, 6, 7, 8, 9, 10, 11, 12 };
    float logits[96];
    tu_assert(lv_llama_forward(m, ids, 10, logits, false) != LV_OK &&
                  strstr(lv_errmsg(), "context") && m->pos == 0,
              "10 positions in a context of 8 are refused, the cache untouched: %s",
              lv_errmsg());
    int32_t bad = 96;
    tu_assert(lv_llama_forward(m, &bad, 1, logits, false) != LV_OK &&
                  strstr(lv_errmsg(), "96"), "an id outside the vocabulary: %s", lv_errmsg());
    struct lv_sampler_params p = { .temp = 0, .top_p = 1, .repeat_penalty = 1 };
    lv_sampler s;
    struct lv_gen_opts o = { .n_predict = 100, .eot_id = -1, .ignore_eos = true };
    struct lv_gen_stats st;
    lv_sampler_init(&s, &p, 96, 96);
    int rc = lv_generate(m, NULL, &s, ids, 3, &o, NULL, NULL, &st);
    tu_assert(rc == LV_OK && st.hit_context && st.n_gen == 6 && m->pos == 8,
              "generation stops cleanly at the context end (%lld generated)",
              (long long)st.n_gen);
    lv_sampler_done(&s);
    lv_llama_free(m);
    lv_checkpoint_close(&ck);
}

int main(int argc, char **argv)
{
    tu_init(argc, argv, "llama");
    const char *t = getenv("TMPDIR"), *cd = getenv("LAVINIA_CONFORMANCE_DIR");
    const char *top = getenv("LV_TOP_SRCDIR");
    char conf[1024];
    if (cd && *cd)
        snprintf(conf, sizeof conf, "%s", cd);
    else
        snprintf(conf, sizeof conf, "%s/../shared/conformance", top && *top ? top : ".");
    snprintf(tmpdir, sizeof tmpdir, "%s/lv-llama-XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(tmpdir))
        return 99;
    reference();
    stories(conf);
    quantised(conf);
    converted();
    sampler(conf);
    context();
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        printf("# could not remove %s\n", tmpdir);
    return tu_finish();
}
