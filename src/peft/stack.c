/*
 * stack.c: the adapter stack, called by the models at every site.
 *
 * A site with no enabled adapter of nonzero scale costs one array lookup and returns the base
 * output itself, so a disabled stack leaves the model's results bit-identical.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "peft/adapter.h"

#include <stdlib.h>
#include <string.h>

#include "lavinia/error.h"

struct lv_peft_stack *lv_peft_stack_new(const struct lv_site_table *sites)
{
    struct lv_peft_stack *st = calloc(1, sizeof *st);
    if (st && !(st->active = calloc((size_t)sites->n, sizeof *st->active))) {
        free(st);
        st = NULL;
    }
    if (!st) {
        lv_error_status(LV_ENOMEM, "adapters: out of memory");
        return NULL;
    }
    st->sites = sites;
    return st;
}

void lv_peft_stack_free(struct lv_peft_stack *st)
{
    if (!st)
        return;
    for (int i = st->n - 1; i >= 0; i--)
        lv_peft_stack_unmerge(st, i);
    for (int i = 0; i < st->n; i++)
        lv_adapter_free(st->a[i]);
    free(st->a);
    free(st->active);
    free(st->trace.v);
    free(st->trace.r);
    free(st);
}

static void recount(struct lv_peft_stack *st)
{
    memset(st->active, 0, (size_t)st->sites->n * sizeof *st->active);
    for (int k = 0; k < st->n; k++) {
        const struct lv_adapter *a = st->a[k];
        if (!a->enabled || a->scale == 0.0f || a->merged)
            continue;
        for (int i = 0; i < st->sites->n; i++)
            st->active[i] += a->at[i].on || a->at[i].save_w;
    }
}

int lv_peft_stack_add(struct lv_peft_stack *st, struct lv_adapter *a)
{
    if (a->sites != st->sites)
        return lv_error("%s: made for another model", a->name);
    struct lv_adapter **na = realloc(st->a, (size_t)(st->n + 1) * sizeof *na);
    if (!na)
        return lv_error_status(LV_ENOMEM, "adapters: out of memory");
    st->a = na;
    st->a[st->n++] = a;
    st->gen++;
    recount(st);
    return LV_OK;
}

void lv_peft_stack_set(struct lv_peft_stack *st, int i, bool enabled, float scale)
{
    if (i < 0 || i >= st->n)
        return;
    if (st->a[i]->enabled != enabled || st->a[i]->scale != scale)
        st->gen++;
    st->a[i]->enabled = enabled;
    st->a[i]->scale = scale;
    recount(st);
}

static void fill_call(struct lv_peft_call *c, const struct lv_peft_stack *st,
                      const struct lv_adapter *a, int k, int site, lv_graph *g)
{
    const struct lv_adapter_site *as = &a->at[site];
    memset(c, 0, sizeof *c);
    c->g = g;
    c->site = &st->sites->s[site];
    c->p = as->p;
    c->shared = a->shared;
    c->vals = as->vals;
    c->adapter_vals = a->vals;
    c->state = as->state;
    c->modality = st->modality;
    c->training = st->training;
    c->seed = (st->step * 0x9e3779b97f4a7c15ull) ^ ((uint64_t)k << 48) ^ (uint64_t)site;
}

int lv_peft_stack_begin(struct lv_peft_stack *st, lv_graph *g)
{
    if (!st)
        return LV_OK;
    for (int k = 0; k < st->n; k++) {
        const struct lv_adapter *a = st->a[k];
        for (int i = 0; i < st->sites->n; i++) {
            if (!a->at[i].on)
                continue;
            if (a->at[i].state)
                memset(a->at[i].state, 0, a->at[i].state_bytes);
            if (a->method->begin) {
                struct lv_peft_call c;
                fill_call(&c, st, a, k, i, g);
                int rc = a->method->begin(&c);
                if (rc)
                    return rc;
            }
        }
    }
    return LV_OK;
}

int lv_peft_stack_prefix(struct lv_peft_stack *st, lv_graph *g, int k, const lv_tensor *ids,
                         lv_tensor **out, bool *hidden)
{
    const struct lv_adapter *a = st->a[k];
    *out = NULL;
    *hidden = false;
    if (!a->enabled || a->scale == 0.0f || !a->method->prefix)
        return LV_OK;
    struct lv_peft_call c;
    fill_call(&c, st, a, k, LV_SITE_EMBED_INDEX, g);
    c.ids = ids;
    lv_error_clear();
    int rc = a->method->prefix(&c, out, hidden);
    if (rc == LV_OK && *out && a->scale != 1.0f)
        *out = lv_scale(g, *out, a->scale);
    if (rc == LV_OK && !*out && *lv_errmsg())
        rc = LV_ERR;
    return rc;
}

/* room for rows x width trace values of adapter k at a site; NULL when full */
static float *trace_slot(struct lv_peft_stack *st, int k, int site, int64_t pos, int64_t rows,
                         int width)
{
    struct lv_peft_trace *t = &st->trace;
    size_t need = (size_t)rows * (size_t)width;
    if (t->n + need > LV_PEFT_TRACE_MAX_VALUES)
        return NULL;
    if (t->n + need > t->cap) {
        size_t cap = t->cap ? t->cap : 4096;
        while (cap < t->n + need)
            cap *= 2;
        float *v = realloc(t->v, cap * sizeof *v);
        if (!v)
            return NULL;
        t->v = v;
        t->cap = cap;
    }
    if (t->nr == t->rcap) {
        int rcap = t->rcap ? 2 * t->rcap : 256;
        struct lv_peft_trace_rec *r = realloc(t->r, (size_t)rcap * sizeof *r);
        if (!r)
            return NULL;
        t->r = r;
        t->rcap = rcap;
    }
    t->r[t->nr++] = (struct lv_peft_trace_rec){ .adapter = k, .site = site, .pos = pos,
                                                .rows = rows, .width = width, .off = t->n };
    float *slot = t->v + t->n;
    memset(slot, 0, need * sizeof *slot);
    t->n += need;
    return slot;
}

lv_tensor *lv_peft_stack_apply(struct lv_peft_stack *st, lv_graph *g, int site, lv_tensor *x,
                               lv_tensor *y, const lv_tensor *ids, int64_t pos)
{
    if (!y || !lv_peft_stack_active(st, site))
        return y;
    st->step++;
    lv_tensor *out = y;
    for (int k = 0; k < st->n; k++) {
        const struct lv_adapter *a = st->a[k];
        const struct lv_adapter_site *as = &a->at[site];
        bool run = as->on && a->method->apply;
        if (!a->enabled || a->scale == 0.0f || a->merged || !(run || as->save_w))
            continue;
        struct lv_peft_call c;
        fill_call(&c, st, a, k, site, g);
        c.x = x;
        c.y = y;
        c.ids = ids;
        c.pos = pos;
        lv_tensor *d = NULL;
        if (as->save_w) {
            /* the replaced module's output minus the base's */
            lv_tensor *r = c.site->kind == LV_SITE_EMBED
                               ? lv_embedding(g, as->save_w, ids)
                               : lv_linear(g, x, as->save_w, as->save_b);
            if (!(d = lv_sub(g, r, y)))
                return NULL;
        }
        if (run) {
            int width = a->method->trace_width ? a->method->trace_width(c.site, as->vals) : 0;
            if (st->trace.on && width > 0)
                c.trace = trace_slot(st, k, site, pos, y->shape[0], width);
            lv_error_clear();
            lv_tensor *m = a->method->apply(&c);
            if (!m) {
                if (!*lv_errmsg())
                    lv_error("%s: method '%s' failed at %s", a->name, a->method->name,
                             c.site->name);
                return NULL;
            }
            d = d ? lv_add(g, d, m) : m;
        }
        if (d && a->scale != 1.0f)
            d = lv_scale(g, d, a->scale);
        if (!d || !(out = lv_add(g, out, d)))
            return NULL;
    }
    return out;
}

void lv_peft_stack_trace(struct lv_peft_stack *st, bool on)
{
    st->trace.on = on;
    st->trace.n = 0;
    st->trace.nr = 0;
}

/* a new tensor with x's values (F32), outside any graph */
static lv_tensor *keep(const lv_tensor *x)
{
    lv_tensor *t = x ? lv_tensor_new(LV_F32, x->ndim, x->shape) : NULL;
    if (t)
        lv_tensor_to_f32(t->data, x);
    return t;
}

int lv_peft_stack_merge_site(struct lv_peft_stack *st, int site, int only, lv_tensor **w,
                             lv_tensor **b)
{
    *w = *b = NULL;
    if (only < 0 && !lv_peft_stack_active(st, site))
        return LV_OK;
    const struct lv_peft_site *s = &st->sites->s[site];
    lv_tensor *w0 = (lv_tensor *)s->weight, *b0 = (lv_tensor *)s->bias;
    if (!w0)
        return lv_error("%s: no weight to merge into", s->module);
    lv_graph *g = lv_graph_new(NULL);
    if (!g)
        return LV_ERR;
    /* every contribution is relative to the base, as in the forward pass: the merged weight
     * is W + sum over adapters of (W_k - W), and the bias likewise */
    lv_tensor *wf = lv_cast(g, w0, LV_F32), *bf = b0 ? lv_cast(g, b0, LV_F32) : NULL;
    lv_tensor *wsum = wf, *bsum = bf;
    int rc = wf && (!b0 || bf) ? LV_OK : LV_ERR;
    for (int k = 0; rc == LV_OK && k < st->n; k++) {
        const struct lv_adapter *a = st->a[k];
        const struct lv_adapter_site *as = &a->at[site];
        if ((only >= 0 && k != only) || (only < 0 && !a->enabled) || a->merged ||
            a->scale == 0.0f || !(as->on || as->save_w))
            continue;
        lv_tensor *wk = NULL, *bk = NULL;
        if (as->save_w) {
            /* a replaced module: W + scale (W_saved - W) */
            wsum = lv_add(g, wsum, lv_scale(g, lv_sub(g, as->save_w, wf), a->scale));
            if (bf && as->save_b)
                bsum = lv_add(g, bsum, lv_scale(g, lv_sub(g, as->save_b, bf), a->scale));
        }
        if (!as->on)
            continue;
        if (!a->method->merge) {
            rc = lv_error_status(LV_ENOTSUP, "%s: method '%s' cannot be merged", a->name,
                                 a->method->name);
            break;
        }
        struct lv_peft_call c;
        fill_call(&c, st, a, k, site, g);
        lv_error_clear();
        if ((rc = a->method->merge(&c, wf, bf, a->scale, &wk, &bk)) != LV_OK)
            break;
        wsum = lv_add(g, wsum, lv_sub(g, wk, wf));
        if (bk && bf)
            bsum = lv_add(g, bsum, lv_sub(g, bk, bf));
    }
    if (rc == LV_OK && (!wsum || (bf && !bsum)))
        rc = LV_ERR;
    if (rc == LV_OK) {
        *w = keep(wsum);
        *b = bsum && bsum != bf ? keep(bsum) : NULL;
        if (!*w || (bsum && bsum != bf && !*b)) {
            lv_tensor_free(*w);
            lv_tensor_free(*b);
            *w = *b = NULL;
            rc = lv_error_status(LV_ENOMEM, "merge: out of memory");
        }
    }
    lv_graph_free(g);
    return rc;
}

int lv_peft_stack_merge(struct lv_peft_stack *st, int k)
{
    if (k < 0 || k >= st->n)
        return lv_error("adapters: no adapter %d", k);
    struct lv_adapter *a = st->a[k];
    const struct lv_site_table *t = st->sites;
    if (a->merged)
        return LV_OK;
    size_t n = (size_t)t->n;
    a->orig_w = calloc(n, sizeof *a->orig_w);
    a->orig_b = calloc(n, sizeof *a->orig_b);
    a->merged_w = calloc(n, sizeof *a->merged_w);
    a->merged_b = calloc(n, sizeof *a->merged_b);
    int rc = a->orig_w && a->orig_b && a->merged_w && a->merged_b
                 ? LV_OK : lv_error_status(LV_ENOMEM, "adapters: out of memory");
    for (int i = 0; rc == LV_OK && i < t->n; i++) {
        if (!(a->at[i].on || a->at[i].save_w))
            continue;
        if (!t->wslot[i])
            rc = lv_error("%s: %s has no weight to merge into", a->name, t->s[i].name);
        else
            rc = lv_peft_stack_merge_site(st, i, k, &a->merged_w[i], &a->merged_b[i]);
    }
    /* all sites computed: swap them in together */
    for (int i = 0; rc == LV_OK && i < t->n; i++) {
        struct lv_peft_site *s = &st->sites->s[i];
        if (a->merged_w[i]) {
            lv_tensor_set_frozen(a->merged_w[i]);
            a->orig_w[i] = *t->wslot[i];
            *t->wslot[i] = a->merged_w[i];
            s->weight = a->merged_w[i];
        }
        if (a->merged_b[i] && t->bslot[i]) {
            lv_tensor_set_frozen(a->merged_b[i]);
            a->orig_b[i] = *t->bslot[i];
            *t->bslot[i] = a->merged_b[i];
            s->bias = a->merged_b[i];
        }
    }
    if (rc == LV_OK) {
        a->merged = true;
        st->gen++;
        recount(st);
        return LV_OK;
    }
    for (size_t i = 0; a->merged_w && i < n; i++) {
        lv_tensor_free(a->merged_w[i]);
        lv_tensor_free(a->merged_b ? a->merged_b[i] : NULL);
    }
    free(a->orig_w);
    free(a->orig_b);
    free(a->merged_w);
    free(a->merged_b);
    a->orig_w = a->orig_b = a->merged_w = a->merged_b = NULL;
    return rc;
}

int lv_peft_stack_unmerge(struct lv_peft_stack *st, int k)
{
    if (k < 0 || k >= st->n)
        return lv_error("adapters: no adapter %d", k);
    struct lv_adapter *a = st->a[k];
    const struct lv_site_table *t = st->sites;
    if (!a->merged)
        return LV_OK;
    for (int i = 0; i < t->n; i++) {
        struct lv_peft_site *s = &st->sites->s[i];
        if (a->orig_w[i]) {
            *t->wslot[i] = a->orig_w[i];
            s->weight = a->orig_w[i];
        }
        if (a->orig_b[i]) {
            *t->bslot[i] = a->orig_b[i];
            s->bias = a->orig_b[i];
        }
        lv_tensor_free(a->merged_w[i]);
        lv_tensor_free(a->merged_b[i]);
    }
    free(a->orig_w);
    free(a->orig_b);
    free(a->merged_w);
    free(a->merged_b);
    a->orig_w = a->orig_b = a->merged_w = a->merged_b = NULL;
    a->merged = false;
    st->gen++;
    recount(st);
    return LV_OK;
}
