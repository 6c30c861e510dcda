/*
 * sites.c: the places adapters attach to, their module paths in each naming, and PEFT's
 * target_modules selection.
 *
 * One row per site kind gives lavinia's name, the module path after the layer prefix and
 * PEFT's short name. Module paths are built in the base's naming; lookups accept any naming
 * by mapping a path to the plain one first (lv_names_hf_canonical).
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "peft/adapter.h"

#include <jansson.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/checkpoint.h"
#include "io/names.h"
#include "lavinia/error.h"
#include "model/clip.h"
#include "model/llama.h"
#include "util/buf.h"

struct kind_row {
    const char *name;           /* after "llm.N." / "vit.N." */
    const char *module;         /* after the layer prefix */
    lv_site_kind kind;
};

static const struct kind_row llm_rows[LV_LLM_SITES] = {
    [LV_LLM_ATTN_IN] = { "attn_in", "input_layernorm", LV_SITE_STREAM },
    [LV_LLM_Q] = { "attn.q", "self_attn.q_proj", LV_SITE_LINEAR },
    [LV_LLM_K] = { "attn.k", "self_attn.k_proj", LV_SITE_LINEAR },
    [LV_LLM_V] = { "attn.v", "self_attn.v_proj", LV_SITE_LINEAR },
    [LV_LLM_O] = { "attn.o", "self_attn.o_proj", LV_SITE_LINEAR },
    [LV_LLM_FFN_IN] = { "ffn_in", "post_attention_layernorm", LV_SITE_STREAM },
    [LV_LLM_GATE] = { "ffn.gate", "mlp.gate_proj", LV_SITE_LINEAR },
    [LV_LLM_UP] = { "ffn.up", "mlp.up_proj", LV_SITE_LINEAR },
    [LV_LLM_DOWN] = { "ffn.down", "mlp.down_proj", LV_SITE_LINEAR },
};

static const struct kind_row vit_rows[LV_VIT_SITES] = {
    [LV_VIT_ATTN_IN] = { "attn_in", "layer_norm1", LV_SITE_STREAM },
    [LV_VIT_Q] = { "attn.q", "self_attn.q_proj", LV_SITE_LINEAR },
    [LV_VIT_K] = { "attn.k", "self_attn.k_proj", LV_SITE_LINEAR },
    [LV_VIT_V] = { "attn.v", "self_attn.v_proj", LV_SITE_LINEAR },
    [LV_VIT_O] = { "attn.o", "self_attn.out_proj", LV_SITE_LINEAR },
    [LV_VIT_MLP_IN] = { "mlp_in", "layer_norm2", LV_SITE_STREAM },
    [LV_VIT_FC1] = { "mlp.fc1", "mlp.fc1", LV_SITE_LINEAR },
    [LV_VIT_FC2] = { "mlp.fc2", "mlp.fc2", LV_SITE_LINEAR },
};

const char *lv_naming_name(enum lv_naming n)
{
    switch (n) {
    case LV_NAMING_PLAIN: return "plain (model.layers.N)";
    case LV_NAMING_LLAVA_HUB: return "llava-hf (language_model.model.layers.N)";
    case LV_NAMING_LLAVA_NEW: return "transformers >= 4.52 (model.language_model.layers.N)";
    }
    return "?";
}

bool lv_module_canonical(const char *module, char *out, size_t n)
{
    char in[512];
    if ((size_t)snprintf(in, sizeof in, "%s.", module) >= sizeof in ||
        !lv_names_hf_canonical(in, out, n))
        return false;
    size_t k = strlen(out);
    if (k > 0 && out[k - 1] == '.')
        out[k - 1] = 0;
    return true;
}

/* a plain module path in naming nm */
static void module_in(char *out, size_t n, const char *plain, enum lv_naming nm)
{
    bool lm = strncmp(plain, "model.", 6) == 0, head = strcmp(plain, "lm_head") == 0;
    if (nm == LV_NAMING_LLAVA_HUB && lm)
        snprintf(out, n, "language_model.model.%s", plain + 6);
    else if (nm == LV_NAMING_LLAVA_HUB && head)
        snprintf(out, n, "language_model.%s", plain);
    else if (nm == LV_NAMING_LLAVA_NEW && lm)
        snprintf(out, n, "model.language_model.%s", plain + 6);
    else if (nm == LV_NAMING_LLAVA_NEW && !head)
        snprintf(out, n, "model.%s", plain);
    else
        snprintf(out, n, "%s", plain);
}

enum lv_naming lv_naming_of(const struct lv_checkpoint *ck)
{
    const struct lv_ckpt_tensor *t = lv_checkpoint_find(ck, "model.layers.0.self_attn.q_proj.weight");
    if (t && ck->format == LV_CKPT_HF_DIR) {
        if (strncmp(t->file_name, "language_model.", 15) == 0)
            return LV_NAMING_LLAVA_HUB;
        if (strncmp(t->file_name, "model.language_model.", 21) == 0)
            return LV_NAMING_LLAVA_NEW;
        return LV_NAMING_PLAIN;
    }
    /* GGUF text model + mmproj: PEFT adapters for it were trained on llava-hf */
    return ck->config.has_vision ? LV_NAMING_LLAVA_HUB : LV_NAMING_PLAIN;
}

/* --- building ------------------------------------------------------------------------ */

struct builder {
    struct lv_site_table *t;
    struct lv_buf names;        /* "name\0module\0gguf\0" per site, offsets fixed at the end */
    size_t *off;
};

static int add(struct builder *b, int i, const char *name, const char *plain_module,
               lv_site_kind kind, lv_tower tower, int layer, int64_t in, int64_t out,
               lv_tensor **w, lv_tensor **bias)
{
    b->t->wslot[i] = w;
    b->t->bslot[i] = bias;
    char module[256];
    module_in(module, sizeof module, plain_module, b->t->naming);
    struct lv_peft_site *s = &b->t->s[i];
    s->kind = kind;
    s->tower = tower;
    s->layer = layer;
    s->in = in;
    s->out = out;
    s->weight = w ? *w : NULL;
    s->bias = bias ? *bias : NULL;
    char canon[300], gguf[160] = "";
    snprintf(canon, sizeof canon, "%s.weight", plain_module);
    if (!lv_names_canonical_to_gguf(canon, gguf, sizeof gguf))
        gguf[0] = 0;
    b->off[3 * i] = b->names.n;
    if (lv_buf_put(&b->names, name, strlen(name) + 1))
        return LV_ERR;
    b->off[3 * i + 1] = b->names.n;
    if (lv_buf_put(&b->names, module, strlen(module) + 1))
        return LV_ERR;
    b->off[3 * i + 2] = b->names.n;
    return lv_buf_put(&b->names, gguf, strlen(gguf) + 1);
}

int lv_site_table_build(struct lv_site_table *t, struct lv_llama *m, struct lv_clip *v,
                        enum lv_naming naming)
{
    memset(t, 0, sizeof *t);
    const struct lv_model_config *c = &m->c;
    t->naming = naming;
    t->n_llm = (int)c->n_layers;
    t->n_vit = v ? (int)v->c.vision.n_layers : 0;
    t->n_proj = !v ? 0 : v->proj2_w ? 2 : 1;
    t->n = 1 + t->n_llm * LV_LLM_SITES + t->n_vit * LV_VIT_SITES + t->n_proj + 1;
    t->meta_qk = m->rope == LV_ROPE_META;
    t->n_heads = c->n_heads;
    t->n_kv_heads = c->n_kv_heads;
    t->head_dim = c->head_dim;
    struct builder b = { .t = t };
    t->s = calloc((size_t)t->n, sizeof *t->s);
    t->wslot = calloc((size_t)t->n, sizeof *t->wslot);
    t->bslot = calloc((size_t)t->n, sizeof *t->bslot);
    b.off = calloc((size_t)t->n * 3, sizeof *b.off);
    int rc = t->s && t->wslot && t->bslot && b.off
                 ? LV_OK : lv_error_status(LV_ENOMEM, "adapters: out of memory");
    char name[64], plain[160];
    if (rc == LV_OK)
        rc = add(&b, LV_SITE_EMBED_INDEX, "llm.embed", "model.embed_tokens", LV_SITE_EMBED,
                 LV_TOWER_LLM, -1, c->vocab, c->dim, &m->tok_emb, NULL);
    for (int l = 0; rc == LV_OK && l < t->n_llm; l++) {
        struct lv_llama_layer *L = &m->layers[l];
        lv_tensor **w[LV_LLM_SITES] = { NULL, &L->wq, &L->wk, &L->wv, &L->wo, NULL,
                                        &L->w_gate, &L->w_up, &L->w_down };
        int64_t HD = c->n_heads * c->head_dim, KD = c->n_kv_heads * c->head_dim;
        int64_t io[LV_LLM_SITES][2] = { { c->dim, c->dim }, { c->dim, HD }, { c->dim, KD },
                                        { c->dim, KD }, { HD, c->dim }, { c->dim, c->dim },
                                        { c->dim, c->hidden }, { c->dim, c->hidden },
                                        { c->hidden, c->dim } };
        for (int k = 0; rc == LV_OK && k < LV_LLM_SITES; k++) {
            snprintf(name, sizeof name, "llm.%d.%s", l, llm_rows[k].name);
            snprintf(plain, sizeof plain, "model.layers.%d.%s", l, llm_rows[k].module);
            rc = add(&b, lv_site_llm(t, l, k), name, plain, llm_rows[k].kind, LV_TOWER_LLM, l,
                     io[k][0], io[k][1], w[k], NULL);
        }
    }
    for (int l = 0; rc == LV_OK && l < t->n_vit; l++) {
        const struct lv_vision_config *vc = &v->c.vision;
        struct lv_clip_layer *Y = &v->layers[l];
        lv_tensor **w[LV_VIT_SITES][2] = { { NULL, NULL }, { &Y->q_w, &Y->q_b },
                                           { &Y->k_w, &Y->k_b }, { &Y->v_w, &Y->v_b },
                                           { &Y->o_w, &Y->o_b }, { NULL, NULL },
                                           { &Y->fc1_w, &Y->fc1_b }, { &Y->fc2_w, &Y->fc2_b } };
        for (int k = 0; rc == LV_OK && k < LV_VIT_SITES; k++) {
            int64_t in = k == LV_VIT_FC2 ? vc->hidden : vc->dim;
            int64_t out = k == LV_VIT_FC1 ? vc->hidden : vc->dim;
            snprintf(name, sizeof name, "vit.%d.%s", l, vit_rows[k].name);
            snprintf(plain, sizeof plain, "vision_tower.vision_model.encoder.layers.%d.%s", l,
                     vit_rows[k].module);
            rc = add(&b, lv_site_vit(t, l, k), name, plain, vit_rows[k].kind, LV_TOWER_VIT, l,
                     in, out, w[k][0], w[k][1]);
        }
    }
    bool lavin = v && v->c.projector == LV_PROJ_LAVIN;
    for (int i = 0; rc == LV_OK && i < t->n_proj; i++) {
        snprintf(name, sizeof name, "proj.%d", i + 1);
        /* LLaVA: (C, D) then (C, C); LaVIN's adapter_proj: (Hp, D) then (C, Hp) */
        int64_t mid = lavin ? v->c.proj_hidden : c->dim;
        if (lavin)
            snprintf(plain, sizeof plain, "adapter_proj.conv_%c", i ? 'B' : 'A');
        else
            snprintf(plain, sizeof plain, "multi_modal_projector.linear_%d", i + 1);
        lv_tensor **w = i ? &v->proj2_w : &v->proj1_w, **bias = i ? &v->proj2_b : &v->proj1_b;
        rc = add(&b, lv_site_proj(t, i), name, plain, LV_SITE_LINEAR, LV_TOWER_PROJ, -1,
                 i ? mid : v->c.vision.dim, i ? c->dim : mid, w, bias);
    }
    if (rc == LV_OK)
        rc = add(&b, lv_site_head(t), "llm.head", "lm_head", LV_SITE_LINEAR, LV_TOWER_LLM, -1,
                 c->dim, c->vocab, &m->lm_head, NULL);
    if (rc == LV_OK) {
        t->strings = b.names.p;
        b.names.p = NULL;
        for (int i = 0; i < t->n; i++) {
            struct lv_peft_site *s = &t->s[i];
            s->name = t->strings + b.off[3 * i];
            s->module = t->strings + b.off[3 * i + 1];
            s->gguf = t->strings + b.off[3 * i + 2];
            const char *dot = strrchr(s->module, '.');
            s->short_name = dot ? dot + 1 : s->module;
        }
    }
    lv_buf_free(&b.names);
    free(b.off);
    if (rc)
        lv_site_table_free(t);
    return rc;
}

void lv_site_table_free(struct lv_site_table *t)
{
    free(t->s);
    free(t->wslot);
    free(t->bslot);
    free(t->strings);
    memset(t, 0, sizeof *t);
}

int lv_site_find_module(const struct lv_site_table *t, const char *module)
{
    char want[256], have[256];
    if (!lv_module_canonical(module, want, sizeof want))
        return -1;
    for (int i = 0; i < t->n; i++)
        if (lv_module_canonical(t->s[i].module, have, sizeof have) && strcmp(want, have) == 0)
            return i;
    return -1;
}

int lv_site_find_name(const struct lv_site_table *t, const char *name)
{
    for (int i = 0; i < t->n; i++)
        if (strcmp(t->s[i].name, name) == 0)
            return i;
    return -1;
}

/* --- selection ----------------------------------------------------------------------- */

/* Python's re syntax as POSIX ERE for the forms PEFT configs use: \d \w \s, (?: ... ).
 * Repeats are limited: glibc's regcomp copies the repeated tree for each bound and for each
 * stacked quantifier, so "a++++..." or nested large bounds would take memory without end.
 * At most 4 bounded repeats with bounds up to 32, at most 64 quantifiers, none stacked on
 * another (Python refuses those too, as "multiple repeat"). */
static bool is_quantifier(char c)
{
    return c == '*' || c == '+' || c == '?' || c == '{';
}

static bool py_to_ere(const char *py, char *out, size_t n)
{
    size_t o = 0;
    int braces = 0, quantifiers = 0;
    bool after_quantifier = false, in_brace = false;
    for (const char *p = py; *p; p++) {
        /* p is at a token: an escape pair is consumed whole below */
        if (in_brace) {
            in_brace = *p != '}';
        } else if (is_quantifier(*p)) {
            if (after_quantifier || ++quantifiers > 64)
                return false;
            after_quantifier = true;
            if (*p == '{') {
                char *end;
                long a = strtol(p + 1, &end, 10), b = a;
                if (*end == ',')
                    b = end[1] == '}' ? 0 : strtol(end + 1, &end, 10);
                if (++braces > 4 || a < 0 || a > 32 || b < 0 || b > 32)
                    return false;
                in_brace = true;
            }
        } else {
            after_quantifier = false;
        }
        const char *rep = NULL;
        char one[3] = { 0 };
        if (p[0] == '\\' && p[1]) {
            switch (p[1]) {
            case 'd': rep = "[0-9]"; break;
            case 'D': rep = "[^0-9]"; break;
            case 'w': rep = "[A-Za-z0-9_]"; break;
            case 'W': rep = "[^A-Za-z0-9_]"; break;
            case 's': rep = "[[:space:]]"; break;
            default: one[0] = p[0]; one[1] = p[1]; rep = one; break;
            }
            p++;
        } else if (p[0] == '(' && p[1] == '?' && p[2] == ':') {
            rep = "(";
            p += 2;
        } else {
            one[0] = *p;
            rep = one;
        }
        size_t k = strlen(rep);
        if (o + k + 1 > n)
            return false;
        memcpy(out + o, rep, k);
        o += k;
    }
    out[o] = 0;
    return true;
}

static bool list_match(const json_t *list, const char *module)
{
    size_t i, ml = strlen(module);
    json_t *e;
    json_array_foreach(list, i, e) {
        const char *s = json_string_value(e);
        size_t sl = s ? strlen(s) : 0;
        if (!s)
            continue;
        if (strcmp(module, s) == 0 ||
            (ml > sl && module[ml - sl - 1] == '.' && strcmp(module + ml - sl, s) == 0))
            return true;
    }
    return false;
}

/* does one target spec (string regex / list) select module? -1 on a bad regex */
int lv_py_regcomp(regex_t *rx, const char *py, const char *before, const char *after,
                  const char *what)
{
    char ere[1024], full[1100];
    if (!py_to_ere(py, ere, sizeof ere))
        return lv_error("%s: the regex '%.60s' is too long or repeats too much (bounds up to "
                        "32)", what, py);
    snprintf(full, sizeof full, "%s%s%s", before, ere, after);
    if (regcomp(rx, full, REG_EXTENDED | REG_NOSUB) != 0)
        return lv_error("%s: '%.60s' is not a regular expression lavinia understands", what,
                        py);
    return LV_OK;
}

int lv_site_spec_match(const json_t *spec, const char *module, const char *what)
{
    if (json_is_array(spec))
        return list_match(spec, module);
    regex_t rx;
    if (lv_py_regcomp(&rx, json_string_value(spec), "^(", ")$", what) != LV_OK)
        return -1;
    int hit = regexec(&rx, module, 0, NULL, 0) == 0;
    regfree(&rx);
    return hit;
}

static bool layer_listed(const json_t *layers, int layer)
{
    if (!layers || json_is_null(layers))
        return true;
    if (layer < 0)
        return false;
    if (json_is_integer(layers))
        return json_integer_value(layers) == layer;
    size_t i;
    json_t *e;
    json_array_foreach(layers, i, e)
        if (json_is_integer(e) && json_integer_value(e) == layer)
            return true;
    return false;
}

int lv_site_select(const struct lv_site_table *t, const json_t *targets, const json_t *exclude,
                   const json_t *layers, unsigned kinds, bool *sel, const char *what)
{
    if (!targets || !(json_is_string(targets) || json_is_array(targets)))
        return lv_error("%s: target_modules must be a string or a list of strings", what);
    if (exclude && !json_is_null(exclude) && !(json_is_string(exclude) || json_is_array(exclude)))
        return lv_error("%s: exclude_modules must be a string or a list of strings", what);
    if (layers && !json_is_null(layers) && !json_is_integer(layers) && !json_is_array(layers))
        return lv_error("%s: layers_to_transform must be an integer or a list", what);
    bool all_linear = json_is_string(targets) &&
                      strcmp(json_string_value(targets), "all-linear") == 0;
    for (int i = 0; i < t->n; i++) {
        const struct lv_peft_site *s = &t->s[i];
        sel[i] = false;
        if (!(kinds & s->kind))
            continue;
        int hit = all_linear ? s->kind == LV_SITE_LINEAR && i != lv_site_head(t)
                             : lv_site_spec_match(targets, s->module, what);
        if (hit < 0)
            return LV_ERR;
        if (hit && exclude && !json_is_null(exclude)) {
            int ex = lv_site_spec_match(exclude, s->module, what);
            if (ex < 0)
                return LV_ERR;
            hit = !ex;
        }
        /* layers_to_transform keeps modules whose path has "layers.N" with N listed (the
         * vision encoder's too) and drops the others, as PEFT does */
        if (hit && layers && !json_is_null(layers))
            hit = layer_listed(layers, s->layer);
        sel[i] = hit;
    }
    return LV_OK;
}
