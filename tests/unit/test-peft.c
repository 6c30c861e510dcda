/*
 * test-peft.c: the PEFT interface's sequence hooks, written as a plugin would write methods,
 * with lavinia/peft.h alone.
 *
 *   ptune:  prompt tuning. Learned rows put before the sequence (prefix callback), visible to
 *           every later position, or hidden from them (LaVIN's modality token). Visible rows
 *           must give the logits of the same rows fed as input embeddings; hidden rows must
 *           not change any later logit whatever their values; decoding through the cache
 *           must agree with one pass over the whole sequence.
 *   route:  a routed method at the stream sites (the normalised input of attention): it
 *           decides once per sequence, from position 0, with a 2-way softmax kept in its
 *           per-sequence state, and traces its weights for every row.
 * A hidden row shifts the positions after it, and since RoPE is relative, changes nothing else.
 * Registration refuses a wrong ABI, a duplicate name and a method without callbacks.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lavinia/error.h"
#include "lavinia/peft.h"
#include "model/llama.h"
#include "peft/adapter.h"
#include "testutil.h"

#define V 64
#define C 32

/* --- ptune ------------------------------------------------------------------------------ */

static const struct lv_peft_key ptune_keys[] = {
    { .name = "num_virtual_tokens", .type = LV_KEY_INT, .def = "3", .min = 1, .max = 64,
      .help = "rows put before the sequence" },
    { .name = "hidden", .type = LV_KEY_BOOL, .def = "false",
      .help = "later positions do not attend to the rows" },
    { .name = NULL }
};

static int ptune_create(lv_peft_ctx *ctx)
{
    const struct lv_peft_site *s = lv_peft_site_at(ctx, 0);
    int64_t shape[2] = { lv_peft_get_int(ctx, "num_virtual_tokens"), s->out };
    lv_peft_set_value(ctx, -1, 0, lv_peft_get_bool(ctx, "hidden") ? 1.0f : 0.0f);
    return lv_peft_param(ctx, -1, "prompt_embeddings", 2, shape,
                         (struct lv_peft_init){ LV_INIT_NORMAL, 1.0 }, 0) == 0 ? LV_OK : LV_ERR;
}

static int ptune_prefix(const struct lv_peft_call *c, lv_tensor **out, bool *hidden)
{
    *out = c->shared[0];
    *hidden = c->adapter_vals[0] != 0.0f;
    return LV_OK;
}

static const struct lv_peft_method ptune = {
    .abi = LV_PEFT_ABI, .name = "ptune", .description = "prompt tuning (test)",
    .keys = ptune_keys, .sites = LV_SITE_EMBED, .create = ptune_create, .prefix = ptune_prefix,
};

/* --- route ------------------------------------------------------------------------------ */

struct route_state {
    float w[2];
    bool decided;
};

static int route_create(lv_peft_ctx *ctx)
{
    for (int i = 0; i < lv_peft_n_sites(ctx); i++) {
        int64_t c = lv_peft_site_at(ctx, i)->in, shape[2] = { 2, c };
        if (lv_peft_param(ctx, i, "router.weight", 2, shape,
                          (struct lv_peft_init){ LV_INIT_NORMAL, 1.0 }, 0) != 0 ||
            lv_peft_param(ctx, i, "experts.weight", 2, shape,
                          (struct lv_peft_init){ LV_INIT_NORMAL, 0.1 }, 0) != 1)
            return LV_ERR;
    }
    return LV_OK;
}

static lv_tensor *route_apply(const struct lv_peft_call *c)
{
    struct route_state *s = c->state;
    lv_tensor *w;
    if (!s->decided) {
        /* once per sequence, from the first position */
        lv_tensor *x0 = lv_slice(c->g, c->x, 0, 0, 1);
        w = lv_softmax(c->g, lv_linear(c->g, x0, c->p[0], NULL));
        if (!w)
            return NULL;
        lv_tensor_to_f32(s->w, w);
        s->decided = true;
    } else {
        int64_t shape[2] = { 1, 2 };
        if (!(w = lv_new(c->g, LV_F32, 2, shape)))
            return NULL;
        memcpy(w->data, s->w, sizeof s->w);
    }
    for (int64_t t = 0; c->trace && t < c->x->shape[0]; t++)
        memcpy(c->trace + 2 * t, s->w, sizeof s->w);
    return lv_mul(c->g, c->x, lv_matmul(c->g, w, c->p[1], 0));
}

static int route_width(const struct lv_peft_site *site, const float *vals)
{
    (void)vals;
    return site->kind == LV_SITE_STREAM ? 2 : 0;
}

static const struct lv_peft_method route = {
    .abi = LV_PEFT_ABI, .name = "route", .description = "per-sequence 2-way routing (test)",
    .sites = LV_SITE_STREAM, .state_bytes = sizeof(struct route_state),
    .create = route_create, .apply = route_apply, .trace_width = route_width,
};

/* --- helpers ---------------------------------------------------------------------------- */

static struct lv_adapter *make(const struct lv_site_table *t, const struct lv_peft_method *m,
                               const char *config, uint64_t seed)
{
    json_t *j = json_loads(config, 0, NULL);
    struct lv_adapter *a = NULL;
    int rc = lv_adapter_new(&a, m, j, t, seed, m->name);
    json_decref(j);
    tu_assert(rc == LV_OK, "a %s adapter (%s)", m->name, rc ? lv_errmsg() : "ok");
    return a;
}

static double max_diff(const float *a, const float *b, int64_t n)
{
    double d = 0;
    for (int64_t i = 0; i < n; i++)
        d = fmax(d, fabs((double)a[i] - b[i]));
    return d;
}

int main(int argc, char **argv)
{
    tu_init(argc, argv, "peft");
    lv_peft_builtins();
    /* registration */
    struct lv_peft_method bad = ptune;
    bad.abi = LV_PEFT_ABI + 1;
    tu_assert(lv_peft_register(&bad, "bad.so") != LV_OK && strstr(lv_errmsg(), "bad.so") &&
                  strstr(lv_errmsg(), "ABI 2") && strstr(lv_errmsg(), "ABI 1"),
              "a wrong ABI is refused: %s", lv_errmsg());
    bad = ptune;
    bad.name = "lora";
    tu_assert(lv_peft_register(&bad, "dup.so") != LV_OK && strstr(lv_errmsg(), "already"),
              "a duplicate name is refused: %s", lv_errmsg());
    bad = ptune;
    bad.name = "nothing";
    bad.prefix = NULL;
    tu_assert(lv_peft_register(&bad, "empty.so") != LV_OK && strstr(lv_errmsg(), "callback"),
              "a method without apply or prefix is refused: %s", lv_errmsg());
    tu_assert(lv_peft_register(&ptune, "test") == LV_OK && lv_peft_register(&route, "test") ==
                  LV_OK && lv_peft_find("ptune") == &ptune, "two methods registered");

    struct lv_model_config c;
    lv_model_config_init(&c);
    c.vocab = V;
    c.dim = C;
    c.hidden = 48;
    c.n_layers = 2;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.head_dim = 8;
    c.max_seq = 64;
    lv_llama *m = NULL;
    struct lv_site_table t;
    if (!tu_assert(lv_llama_new_random(&m, &c, LV_F32, 3, 0) == LV_OK &&
                       lv_site_table_build(&t, m, NULL, LV_NAMING_PLAIN) == LV_OK,
                   "a random model and its sites")) 
        return tu_finish();
    struct lv_peft_stack *st = lv_peft_stack_new(&t);
    int32_t ids[6] = { 1, 7, 9, 30, 2, 50 };
    enum { N = 5, P = 3 };
    float *out = malloc(sizeof(float) * (N + P + 1) * V), *ref = malloc(sizeof(float) * (N + P + 1) * V);
    float *emb = malloc(sizeof(float) * (N + P + 1) * C), last[V];

    /* visible prompt rows = the same rows given as input embeddings */
    struct lv_adapter *pt = make(&t, &ptune, "{\"target_modules\": [\"embed_tokens\"]}", 5);
    if (pt && lv_peft_stack_add(st, pt) == LV_OK) {
        lv_llama_set_stack(m, st);
        int rc = lv_llama_forward(m, ids, N, out, true);
        tu_assert(rc == LV_OK && m->pos == N + P, "3 prompt rows before 5 tokens: %lld cached "
                  "positions (%s)", (long long)m->pos, rc ? lv_errmsg() : "ok");
        rc = lv_llama_forward(m, ids + N, 1, last, false);
        memcpy(emb, pt->shared[0]->data, sizeof(float) * P * C);
        lv_llama_embed(m, ids, N + 1, emb + P * C);
        lv_peft_stack_set(st, 0, false, 1.0f);
        lv_llama_reset(m);
        rc |= lv_llama_forward_embd(m, emb, N + P + 1, ref, true);
        double d = max_diff(out, ref + P * V, N * V), d2 = max_diff(last, ref + (N + P) * V, V);
        tu_assert(rc == LV_OK && d <= 1e-5 && d2 <= 1e-5, "visible prefix: logits of the 5 "
                  "tokens as with the rows given as input (max difference %.2e), and the next "
                  "token through the cache (%.2e)", d, d2);
        lv_peft_stack_set(st, 0, true, 1.0f);
    }
    lv_peft_stack_free(st);
    st = lv_peft_stack_new(&t);
    lv_llama_set_stack(m, st);
    lv_llama_reset(m);                      /* a new conversation */

    /* hidden rows: invisible to later positions, whatever their values */
    pt = make(&t, &ptune, "{\"target_modules\": [\"embed_tokens\"], \"hidden\": true, "
              "\"num_virtual_tokens\": 1}", 5);
    if (pt && lv_peft_stack_add(st, pt) == LV_OK) {
        int rc = lv_llama_forward(m, ids, N, out, true);
        rc |= lv_llama_forward(m, ids + N, 1, last, false);
        float *row = pt->shared[0]->data;
        for (int i = 0; i < C; i++)
            row[i] = 10.0f * (float)cos(i);
        lv_llama_reset(m);
        rc |= lv_llama_forward(m, ids, N + 1, ref, true);
        tu_assert(rc == LV_OK && m->n_hidden == 1 && memcmp(out, ref, sizeof(float) * N * V) == 0,
                  "hidden prefix: other values, bit-identical logits of the tokens");
        double d = max_diff(last, ref + N * V, V);
        tu_assert(d <= 1e-5, "hidden prefix: the next token through the cache stays hidden "
                  "from it (max difference %.2e to one pass)", d);
        lv_peft_stack_set(st, 0, false, 1.0f);
        lv_llama_reset(m);
        rc = lv_llama_forward(m, ids, N, ref, true);
        double d3 = max_diff(out, ref, N * V);
        tu_assert(rc == LV_OK && d3 <= 1e-5, "hidden prefix: the tokens' logits are those "
                  "without it (it only shifts positions, and RoPE is relative; max difference "
                  "%.2e)", d3);
    }
    lv_peft_stack_free(st);
    st = lv_peft_stack_new(&t);
    lv_llama_set_stack(m, st);
    lv_llama_reset(m);                      /* a new conversation */

    /* routed: decided once per sequence, kept in the state, traced per row */
    struct lv_adapter *rt = make(&t, &route, "{\"target_modules\": [\"input_layernorm\"]}", 9);
    if (rt && lv_peft_stack_add(st, rt) == LV_OK) {
        lv_peft_stack_trace(st, true);
        int rc = lv_llama_forward(m, ids, N, NULL, false);
        rc |= lv_llama_forward(m, ids + N, 1, last, false);
        const struct lv_peft_trace *tr = &st->trace;
        bool ok = rc == LV_OK && tr->nr == 4;
        float first[2][2] = { { 0 } };
        for (int i = 0; ok && i < tr->nr; i++) {
            const struct lv_peft_trace_rec *r = &tr->r[i];
            const float *w = tr->v + r->off;
            int layer = t.s[r->site].layer;
            ok = r->width == 2 && r->rows == (i < 2 ? N : 1) && r->pos == (i < 2 ? 0 : N) &&
                 fabsf(w[0] + w[1] - 1.0f) < 1e-6f;
            if (i < 2)
                memcpy(first[layer], w, sizeof first[layer]);
            for (int64_t k = 0; ok && k < r->rows; k++)
                ok = w[2 * k] == first[layer][0] && w[2 * k + 1] == first[layer][1];
        }
        tu_assert(ok, "route: 4 trace records (2 layers x prefill of 5 rows and one decoded "
                  "row), weights summing to 1, the decision of position 0 kept for every row "
                  "(layer 0: %.4f %.4f)", (double)first[0][0], (double)first[0][1]);
        /* a new sequence decides again */
        lv_llama_reset(m);
        lv_peft_stack_trace(st, true);
        int32_t other[2] = { 40, 7 };
        rc = lv_llama_forward(m, other, 2, NULL, false);
        tu_assert(rc == LV_OK && st->trace.nr == 2 &&
                      st->trace.v[st->trace.r[0].off] != first[0][0],
                  "route: a new sequence starts from a new decision");
        /* the routed model through one pass equals prefill + decode */
        lv_llama_reset(m);
        rc = lv_llama_forward(m, ids, N + 1, ref, true);
        double d = max_diff(last, ref + N * V, V);
        tu_assert(rc == LV_OK && d <= 1e-5, "route: decode through the cache equals one pass "
                  "(max difference %.2e)", d);
        /* a change of scale makes the cache stale: the next token recomputes it */
        struct lv_adapter *pv = make(&t, &ptune, "{\"target_modules\": [\"embed_tokens\"]}", 6);
        if (pv && lv_peft_stack_add(st, pv) == LV_OK) {
            lv_llama_reset(m);
            rc = lv_llama_forward(m, ids, N, NULL, false);
            lv_peft_stack_set(st, 0, true, 0.5f);
            m->recomputed.positions = 0;
            rc |= lv_llama_forward(m, ids + N, 1, last, false);
            int64_t re = m->recomputed.positions;
            lv_llama_reset(m);
            rc |= lv_llama_forward(m, ids, N + 1, ref, true);
            d = max_diff(last, ref + N * V, V);
            tu_assert(rc == LV_OK && re == N + P && d <= 1e-5, "scale 0.5 after 5 tokens: the "
                      "next token recomputes the %lld cached positions (3 prompt rows + 5) and "
                      "agrees with one pass at the new scale (max difference %.2e)",
                      (long long)re, d);
            lv_llama_truncate(m, P + 2);
            m->recomputed.positions = 0;
            rc = lv_llama_forward(m, ids + 2, N - 1, last, false);
            lv_llama_reset(m);
            rc |= lv_llama_forward(m, ids, N + 1, ref, true);
            d = max_diff(last, ref + N * V, V);
            tu_assert(rc == LV_OK && m->recomputed.positions == 0 && d <= 1e-5,
                      "truncate to 2 tokens after the prompt rows and go on: one pass's logits "
                      "(max difference %.2e)", d);
        }
    }
    lv_peft_stack_free(st);
    lv_site_table_free(&t);
    lv_llama_free(m);
    free(out);
    free(ref);
    free(emb);
    return tu_finish();
}
