/*
 * sampler.c: penalties, temperature, top-k, top-p, min-p and the draw (sampler.h).
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "model/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lavinia/error.h"

void lv_sampler_params_default(struct lv_sampler_params *p)
{
    *p = (struct lv_sampler_params){ .temp = 0.8f, .top_k = 40, .top_p = 0.95f,
                                     .min_p = 0.05f, .repeat_penalty = 1.0f,
                                     .repeat_last_n = 64, .seed = 0 };
}

int lv_sampler_init(lv_sampler *s, const struct lv_sampler_params *p, int64_t n_vocab,
                    int64_t n_valid)
{
    memset(s, 0, sizeof *s);
    if (n_vocab <= 0 || n_valid <= 0 || n_valid > n_vocab)
        return lv_error("sampler: %lld of %lld ids valid", (long long)n_valid,
                        (long long)n_vocab);
    if (!(p->temp >= 0.0f) || p->top_k < 0 || !(p->top_p > 0.0f && p->top_p <= 1.0f) ||
        !(p->min_p >= 0.0f && p->min_p <= 1.0f) || !(p->repeat_penalty > 0.0f))
        return lv_error("sampler: temperature >= 0, top-k >= 0, 0 < top-p <= 1, 0 <= min-p "
                        "<= 1 and repeat penalty > 0, please");
    s->p = *p;
    s->n_vocab = n_vocab;
    s->n_valid = n_valid;
    s->rng = p->seed;
    s->counts = calloc((size_t)n_vocab, sizeof *s->counts);
    s->cand = malloc((size_t)n_vocab * sizeof *s->cand);
    if (!s->counts || !s->cand) {
        lv_sampler_done(s);
        return lv_error_status(LV_ENOMEM, "sampler: out of memory");
    }
    return LV_OK;
}

void lv_sampler_done(lv_sampler *s)
{
    free(s->history);
    free(s->counts);
    free(s->cand);
    memset(s, 0, sizeof *s);
}

void lv_sampler_forget(lv_sampler *s)
{
    s->n_history = 0;
    memset(s->counts, 0, (size_t)s->n_vocab * sizeof *s->counts);
}

int lv_sampler_accept(lv_sampler *s, int32_t id)
{
    if (id < 0 || id >= s->n_vocab)
        return lv_error("sampler: id %d outside the vocabulary", id);
    if (s->n_history == s->cap_history) {
        int64_t cap = s->cap_history ? 2 * s->cap_history : 256;
        int32_t *h = realloc(s->history, (size_t)cap * sizeof *h);
        if (!h)
            return lv_error_status(LV_ENOMEM, "sampler: out of memory");
        s->history = h;
        s->cap_history = cap;
    }
    s->history[s->n_history++] = id;
    int n = s->p.repeat_last_n;
    if (n < 0)
        return LV_OK;
    s->counts[id]++;
    if (n > 0 && s->n_history > n)   /* the window slides: the oldest id leaves it */
        s->counts[s->history[s->n_history - 1 - n]]--;
    return LV_OK;
}

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* descending by logit, ascending id on ties (a total order: deterministic) */
static int cmp_desc(const void *a, const void *b)
{
    const struct lv_sampler_cand *x = a, *y = b;
    if (x->logit != y->logit)
        return x->logit > y->logit ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

/* restore the heap below o[i] (o[0..k)): a parent is never better than its children in
 * cmp_desc's order, so the root is the worst candidate kept */
static void sift_down(struct lv_sampler_cand *o, int64_t k, int64_t i)
{
    for (;;) {
        int64_t c = 2 * i + 1;
        if (c >= k)
            return;
        if (c + 1 < k && cmp_desc(&o[c + 1], &o[c]) > 0)
            c++;
        if (cmp_desc(&o[c], &o[i]) <= 0)
            return;
        struct lv_sampler_cand t = o[i];
        o[i] = o[c];
        o[c] = t;
        i = c;
    }
}

/* the k best of o[0..n) (by cmp_desc's order) moved to o[0..k), in no particular order */
static void select_top(struct lv_sampler_cand *o, int64_t n, int64_t k)
{
    for (int64_t i = k / 2 - 1; i >= 0; i--)
        sift_down(o, k, i);
    for (int64_t j = k; j < n; j++)
        if (cmp_desc(&o[j], &o[0]) < 0) {      /* better than the worst kept */
            o[0] = o[j];
            sift_down(o, k, 0);
        }
}

int32_t lv_sampler_sample(lv_sampler *s, const float *logits, float *probs)
{
    const struct lv_sampler_params *p = &s->p;
    struct lv_sampler_cand *o = s->cand;
    int64_t V = s->n_vocab, n = s->n_valid;
    int32_t best = 0;
    for (int64_t i = 0; i < n; i++) {
        float x = logits[i];
        int32_t c = s->counts[i];
        if (c > 0) {
            if (p->repeat_penalty != 1.0f)
                x = x > 0.0f ? x / p->repeat_penalty : x * p->repeat_penalty;
            x -= p->freq_penalty * (float)c + p->presence_penalty;
        }
        o[i] = (struct lv_sampler_cand){ .logit = isnan(x) ? -INFINITY : x, .id = (int32_t)i };
        if (o[i].logit > o[best].logit)
            best = (int32_t)i;
    }
    if (probs)
        memset(probs, 0, (size_t)V * sizeof *probs);
    if (p->temp == 0.0f) {
        if (probs)
            probs[best] = 1.0f;
        lv_sampler_accept(s, best);
        return best;
    }
    /* candidates best first; softmax at temperature T over the top k. With top-k the k best
     * are picked first (a min-heap of k: O(n log k)), so only they are sorted. */
    int64_t k = p->top_k > 0 && p->top_k < n ? p->top_k : n;
    if (k < n)
        select_top(o, n, k);
    qsort(o, (size_t)k, sizeof *o, cmp_desc);
    double mx = (double)o[0].logit / p->temp, sum = 0.0;
    for (int64_t i = 0; i < k; i++)
        sum += (o[i].prob = (float)exp((double)o[i].logit / p->temp - mx));
    for (int64_t i = 0; i < k; i++)
        o[i].prob = (float)(o[i].prob / sum);
    if (p->top_p < 1.0f) {       /* the smallest head whose mass reaches top_p */
        double c = 0.0;
        int64_t keep = 0;
        while (keep < k) {
            c += o[keep++].prob;
            if (c >= p->top_p)
                break;
        }
        k = keep;
    }
    if (p->min_p > 0.0f) {       /* drop ids below min_p x the most likely one */
        float floor = p->min_p * o[0].prob;
        int64_t keep = 1;
        while (keep < k && o[keep].prob >= floor)
            keep++;
        k = keep;
    }
    double total = 0.0;
    for (int64_t i = 0; i < k; i++)
        total += o[i].prob;
    double r = (double)(splitmix64(&s->rng) >> 11) * (1.0 / 9007199254740992.0) * total;
    int32_t pick = o[k - 1].id;
    double c = 0.0;
    for (int64_t i = 0; i < k; i++) {
        c += o[i].prob;
        if (r < c) {
            pick = o[i].id;
            break;
        }
    }
    for (int64_t i = 0; probs && i < k; i++)
        probs[o[i].id] = (float)(o[i].prob / total);
    lv_sampler_accept(s, pick);
    return pick;
}
