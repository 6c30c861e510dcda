/*
 * generate.c: the generation loop (generate.h).
 *
 * Stop strings: decoded text is held back while it could still be the start of a stop
 * string, so the callback never sees one; when one completes, the text before it is given
 * and generation ends.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "model/generate.h"

#include <stdlib.h>
#include <string.h>

#include "lavinia/error.h"
#include "util/buf.h"
#include "util/clock.h"

/* bytes of h that can go out now: everything before a completed stop string (*stop set),
 * or everything but the longest tail that starts some stop string */
static size_t releasable(const struct lv_buf *h, const struct lv_gen_opts *o, bool *stop)
{
    size_t out = h->n;
    *stop = false;
    for (int i = 0; i < o->n_stop; i++) {
        const char *hit = o->stop[i][0] ? strstr(h->p, o->stop[i]) : NULL;
        if (hit && (size_t)(hit - h->p) <= out) {
            out = (size_t)(hit - h->p);
            *stop = true;
        }
    }
    if (*stop)
        return out;
    for (int i = 0; i < o->n_stop; i++) {
        size_t sl = strlen(o->stop[i]);
        for (size_t k = sl > 1 ? sl - 1 : 0; k > 0; k--)
            if (k <= h->n && memcmp(h->p + h->n - k, o->stop[i], k) == 0) {
                if (h->n - k < out)
                    out = h->n - k;
                break;
            }
    }
    return out;
}

int lv_generate(lv_llama *m, const lv_tokenizer *tok, lv_sampler *s, const int32_t *prompt,
                int64_t n_prompt, const struct lv_gen_opts *o, lv_gen_fn fn, void *ctx,
                struct lv_gen_stats *st)
{
    int64_t V = lv_llama_vocab(m);
    float *row = o->logits_rows ? NULL : malloc((size_t)V * sizeof *row);
    struct lv_buf h = { 0 };
    char chunk[8192];
    lv_tok_stream ts;
    int rc = o->logits_rows || row ? LV_OK : lv_error_status(LV_ENOMEM, "out of memory");
    memset(st, 0, sizeof *st);
    if (tok)
        lv_tok_stream_init(&ts, tok);
    for (int64_t i = 0; rc == LV_OK && i < n_prompt; i++)
        if (!o->prompt_embd || (prompt[i] >= 0 && prompt[i] < V))
            rc = lv_sampler_accept(s, prompt[i]);
    int64_t n_feed = o->prompt_embd ? o->n_prompt_embd : n_prompt;
    float *first = o->logits_rows ? o->logits_rows : row;
    double t0 = lv_now();
    if (rc == LV_OK)
        rc = o->prompt_embd ? lv_llama_forward_embd(m, o->prompt_embd, n_feed, first,
                                                    o->logits_rows != NULL)
                            : lv_llama_forward(m, prompt, n_feed, first, o->logits_rows != NULL);
    double t1 = lv_now();
    st->n_prompt = rc == LV_OK ? n_feed : 0;
    st->prompt_s = t1 - t0;
    st->n_rows = rc == LV_OK && o->logits_rows ? n_feed : 0;
    const float *last = o->logits_rows ? o->logits_rows + (size_t)(n_feed - 1) * (size_t)V
                                       : row;
    int32_t eos = tok ? lv_tok_eos(tok) : (int32_t)m->c.eos_id;
    bool stop = false;
    for (int64_t i = 0; rc == LV_OK && !stop && (o->n_predict <= 0 || i < o->n_predict); i++) {
        int32_t id = lv_sampler_sample(s, last, NULL);
        if (!o->ignore_eos && ((eos >= 0 && id == eos) || (o->eot_id >= 0 && id == o->eot_id))) {
            st->hit_eos = true;
            break;
        }
        st->n_gen++;
        size_t emit = 0;
        int k = 0;
        if (tok) {
            k = lv_tok_stream_push(&ts, id, chunk, sizeof chunk);
            if (k < 0 || (rc = lv_buf_put(&h, chunk, (size_t)k)))
                rc = rc ? rc : LV_ERR;
            else
                emit = releasable(&h, o, &stop);
        }
        if (rc == LV_OK && fn && fn(ctx, id, h.p ? h.p : "", emit) != 0)
            stop = true;
        if (rc == LV_OK && emit > 0) {
            memmove(h.p, h.p + emit, h.n - emit + 1);
            h.n -= emit;
        }
        if (stop) {
            st->hit_eos = true;
            break;
        }
        if (o->n_predict > 0 && i + 1 >= o->n_predict)
            break;
        if (m->pos >= m->n_ctx) {
            st->hit_context = true;
            break;
        }
        float *dst = o->logits_rows ? o->logits_rows + (size_t)st->n_rows * (size_t)V : row;
        rc = lv_llama_forward(m, &id, 1, dst, false);
        if (rc == LV_OK && o->logits_rows)
            st->n_rows++;
        last = dst;
    }
    /* what was held back for a stop string that never came, and an unfinished character */
    if (rc == LV_OK && tok && fn && !stop) {
        int k = lv_tok_stream_flush(&ts, chunk, sizeof chunk);
        if (k > 0)
            lv_buf_put(&h, chunk, (size_t)k);
        if (h.n > 0)
            fn(ctx, -1, h.p, h.n);
    }
    st->gen_s = lv_now() - t1;
    free(h.p);
    free(row);
    return rc;
}
