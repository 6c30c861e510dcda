/*
 * peft.c: the method registry, configuration keys, and making an adapter through a method's
 * create callback (parameters declared through the context, initialised from the seed).
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "peft/adapter.h"

#include <jansson.h>
#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lavinia/error.h"

/* --- the registry -------------------------------------------------------------------- */

#define MAX_METHODS 64

static const struct lv_peft_method *registry[MAX_METHODS];
static int n_registry;

static int check_keys(const struct lv_peft_method *m, const char *what)
{
    for (const struct lv_peft_key *k = m->keys; k && k->name; k++) {
        if (k->type > LV_KEY_MODULES)
            return lv_error("%s: method '%s': key '%s' has an unknown type %d", what, m->name,
                            k->name, (int)k->type);
        for (const struct lv_peft_key *j = m->keys; j != k; j++)
            if (strcmp(j->name, k->name) == 0)
                return lv_error("%s: method '%s': key '%s' is declared twice", what, m->name,
                                k->name);
    }
    return LV_OK;
}

int lv_peft_register(const struct lv_peft_method *m, const char *what)
{
    if (!what)
        what = "built-in";
    if (!m)
        return lv_error("%s: no method", what);
    if (m->abi != LV_PEFT_ABI)
        return lv_error("%s: PEFT ABI %d, lavinia has ABI %d", what, m->abi, LV_PEFT_ABI);
    if (!m->name || !*m->name || strlen(m->name) > 48)
        return lv_error("%s: a method needs a name of 1 to 48 characters", what);
    for (const char *p = m->name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_' || *p == '-'))
            return lv_error("%s: method name '%s' must be lower-case letters, digits, '_' or "
                            "'-'", what, m->name);
    if (!m->create || (!m->apply && !m->prefix))
        return lv_error("%s: method '%s' has no %s callback", what, m->name,
                        m->create ? "apply (or prefix)" : "create");
    if (!(m->sites & (LV_SITE_LINEAR | LV_SITE_STREAM | LV_SITE_EMBED)))
        return lv_error("%s: method '%s' attaches to no kind of site", what, m->name);
    for (int i = 0; i < n_registry; i++)
        if (strcmp(registry[i]->name, m->name) == 0)
            return registry[i] == m ? LV_OK
                                    : lv_error("%s: a method named '%s' is already registered",
                                               what, m->name);
    int rc = check_keys(m, what);
    if (rc)
        return rc;
    if (n_registry == MAX_METHODS)
        return lv_error("%s: too many methods (%d)", what, MAX_METHODS);
    registry[n_registry++] = m;
    return LV_OK;
}

const struct lv_peft_method *lv_peft_find(const char *name)
{
    lv_peft_builtins();
    for (int i = 0; i < n_registry; i++)
        if (strcasecmp(registry[i]->name, name) == 0)
            return registry[i];
    return NULL;
}

int lv_peft_count(void)
{
    lv_peft_builtins();
    return n_registry;
}

const struct lv_peft_method *lv_peft_at(int i)
{
    return i >= 0 && i < lv_peft_count() ? registry[i] : NULL;
}

void lv_peft_builtins(void)
{
    static bool done;
    if (done)
        return;
    done = true;
    lv_peft_register(&lv_peft_lora, NULL);
    lv_peft_register(&lv_peft_dora, NULL);
    lv_peft_register(&lv_peft_ia3, NULL);
}

/* --- configuration ------------------------------------------------------------------- */

static const struct lv_peft_key *key_of(const struct lv_peft_method *m, const char *name)
{
    for (const struct lv_peft_key *k = m->keys; k && k->name; k++)
        if (strcmp(k->name, name) == 0)
            return k;
    return NULL;
}

static bool in_choices(const char *choices, const char *s)
{
    size_t n = strlen(s);
    for (const char *p = choices; p && *p;) {
        const char *bar = strchr(p, '|');
        size_t k = bar ? (size_t)(bar - p) : strlen(p);
        if (k == n && strncmp(p, s, n) == 0)
            return true;
        p = bar ? bar + 1 : p + k;
    }
    return false;
}

static int check_value(const struct lv_peft_key *k, const json_t *v, const char *what)
{
    if (json_is_null(v))
        return LV_OK;
    double x = 0;
    switch (k->type) {
    case LV_KEY_INT:
        if (json_is_integer(v))
            x = (double)json_integer_value(v);
        else if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)))
            x = json_real_value(v);
        else
            return lv_error("%s: '%s' must be an integer", what, k->name);
        break;
    case LV_KEY_FLOAT:
        if (!json_is_number(v))
            return lv_error("%s: '%s' must be a number", what, k->name);
        x = json_number_value(v);
        break;
    case LV_KEY_BOOL:
        if (!json_is_boolean(v))
            return lv_error("%s: '%s' must be true or false", what, k->name);
        return LV_OK;
    case LV_KEY_STRING: {
        /* PEFT writes some string-or-boolean keys (init_lora_weights) as JSON booleans */
        const char *s = json_is_true(v) ? "true" : json_is_false(v) ? "false"
                                                                     : json_string_value(v);
        if (!s)
            return lv_error("%s: '%s' must be a string", what, k->name);
        if (k->choices && !in_choices(k->choices, s))
            return lv_error("%s: '%s' is \"%s\"; lavinia supports %s", what, k->name, s,
                            k->choices);
        return LV_OK;
    }
    case LV_KEY_MODULES: {
        size_t i;
        json_t *e;
        if (json_is_string(v)) {
            regex_t rx;
            char where[300];
            snprintf(where, sizeof where, "%s: '%s'", what, k->name);
            if (lv_py_regcomp(&rx, json_string_value(v), "^(", ")$", where) != LV_OK)
                return LV_ERR;
            regfree(&rx);
            return LV_OK;
        }
        if (!json_is_array(v))
            return lv_error("%s: '%s' must be a list of module names or a regex", what,
                            k->name);
        json_array_foreach(v, i, e)
            if (!json_is_string(e))
                return lv_error("%s: '%s' must hold strings", what, k->name);
        return LV_OK;
    }
    case LV_KEY_PATTERN: {
        const char *key;
        json_t *e;
        if (!json_is_object(v))
            return lv_error("%s: '%s' must be an object of pattern: number", what, k->name);
        json_object_foreach((json_t *)v, key, e) {
            regex_t rx;
            char where[300];
            if (!json_is_number(e))
                return lv_error("%s: '%s': the value of '%s' must be a number", what, k->name,
                                key);
            snprintf(where, sizeof where, "%s: '%s'", what, k->name);
            if (lv_py_regcomp(&rx, key, "^(.*\\.)?(", ")$", where) != LV_OK)
                return LV_ERR;
            regfree(&rx);
        }
        return LV_OK;
    }
    }
    if (!isfinite(x) || ((k->min != 0 || k->max != 0) && (x < k->min || x > k->max)))
        return lv_error("%s: '%s' = %g is outside %g..%g", what, k->name, x, k->min, k->max);
    return LV_OK;
}

static int check_config(const struct lv_peft_method *m, const json_t *config, const char *what)
{
    for (const struct lv_peft_key *k = m->keys; k && k->name; k++) {
        const json_t *v = json_object_get(config, k->name);
        int rc = v ? check_value(k, v, what) : LV_OK;
        if (rc)
            return rc;
    }
    return LV_OK;
}

/* --- the creation context ------------------------------------------------------------ */

struct lv_peft_ctx {
    struct lv_adapter *a;
    int *idx;                   /* selected site indices */
    int n;
    const char *what;
};

int lv_peft_n_sites(const lv_peft_ctx *ctx)
{
    return ctx->n;
}

const struct lv_peft_site *lv_peft_site_at(const lv_peft_ctx *ctx, int i)
{
    return i >= 0 && i < ctx->n ? &ctx->a->sites->s[ctx->idx[i]] : NULL;
}

/* the value of key as text/JSON: the config's, else the default */
static const json_t *value_of(const lv_peft_ctx *ctx, const char *key,
                              const struct lv_peft_key **k)
{
    *k = key_of(ctx->a->method, key);
    const json_t *v = json_object_get(ctx->a->config, key);
    return v && !json_is_null(v) ? v : NULL;
}

double lv_peft_get_float(const lv_peft_ctx *ctx, const char *key)
{
    const struct lv_peft_key *k;
    const json_t *v = value_of(ctx, key, &k);
    if (v)
        return json_is_boolean(v) ? json_is_true(v) : json_number_value(v);
    if (!k || !k->def)
        return 0;
    if (strcmp(k->def, "true") == 0)
        return 1;
    return strtod(k->def, NULL);
}

int64_t lv_peft_get_int(const lv_peft_ctx *ctx, const char *key)
{
    return (int64_t)llround(lv_peft_get_float(ctx, key));
}

bool lv_peft_get_bool(const lv_peft_ctx *ctx, const char *key)
{
    return lv_peft_get_float(ctx, key) != 0;
}

const char *lv_peft_get_str(const lv_peft_ctx *ctx, const char *key)
{
    const struct lv_peft_key *k;
    const json_t *v = value_of(ctx, key, &k);
    if (v && json_is_boolean(v))
        return json_is_true(v) ? "true" : "false";
    if (v && json_is_string(v))
        return json_string_value(v);
    return k ? k->def : NULL;
}

double lv_peft_get_pattern(const lv_peft_ctx *ctx, const char *key, int site, double fallback)
{
    const struct lv_peft_key *k;
    const json_t *v = value_of(ctx, key, &k);
    const struct lv_peft_site *s = lv_peft_site_at(ctx, site);
    if (!v || !json_is_object(v) || !s)
        return fallback;
    const char *pat;
    json_t *e;
    json_object_foreach((json_t *)v, pat, e) {
        regex_t rx;
        if (lv_py_regcomp(&rx, pat, "^(.*\\.)?(", ")$", key) != LV_OK)
            continue;
        int hit = regexec(&rx, s->module, 0, NULL, 0) == 0;
        regfree(&rx);
        if (hit)
            return json_number_value(e);
    }
    return fallback;
}

bool lv_peft_site_matches(const lv_peft_ctx *ctx, const char *key, int site)
{
    const struct lv_peft_key *k;
    const json_t *v = value_of(ctx, key, &k);
    const struct lv_peft_site *s = lv_peft_site_at(ctx, site);
    json_t *def = !v && k && k->def ? json_loads(k->def, JSON_DECODE_ANY, NULL) : NULL;
    bool hit = (v || def) && s && lv_site_spec_match(v ? v : def, s->module, ctx->what) == 1;
    json_decref(def);
    return hit;
}

lv_tensor *lv_peft_param_tensor(lv_peft_ctx *ctx, int site, int k)
{
    struct lv_adapter *a = ctx->a;
    if (site >= ctx->n)
        return NULL;
    int n = site < 0 ? a->n_shared : a->at[ctx->idx[site]].n;
    lv_tensor **p = site < 0 ? a->shared : a->at[ctx->idx[site]].p;
    return k >= 0 && k < n ? p[k] : NULL;
}

float lv_peft_get_value(const lv_peft_ctx *ctx, int site, int slot)
{
    if (slot < 0 || slot >= LV_PEFT_VALUES || site >= ctx->n)
        return 0;
    return site < 0 ? ctx->a->vals[slot] : ctx->a->at[ctx->idx[site]].vals[slot];
}

void lv_peft_set_value(lv_peft_ctx *ctx, int site, int slot, float v)
{
    if (slot < 0 || slot >= LV_PEFT_VALUES)
        return;
    if (site < 0)
        ctx->a->vals[slot] = v;
    else if (site < ctx->n)
        ctx->a->at[ctx->idx[site]].vals[slot] = v;
}

/* --- initialisation ------------------------------------------------------------------ */

static uint64_t splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double uniform01(uint64_t *x)
{
    return (double)(splitmix(x) >> 11) * (1.0 / 9007199254740992.0);
}

static uint64_t hash_name(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static void init_values(lv_tensor *t, struct lv_peft_init init, uint64_t seed)
{
    int64_t n = lv_tensor_nelem(t);
    int64_t fan_in = t->ndim ? t->shape[t->ndim - 1] : 1;
    int64_t fan_out = t->ndim > 1 ? t->shape[0] : 1;
    float *p = t->data;
    double b = init.a;
    if (init.kind == LV_INIT_KAIMING_UNIFORM)
        b = 1.0 / sqrt((double)fan_in);
    else if (init.kind == LV_INIT_XAVIER_UNIFORM)
        b = sqrt(6.0 / (double)(fan_in + fan_out));
    for (int64_t i = 0; i < n; i++) {
        double v = 0;
        switch (init.kind) {
        case LV_INIT_ZERO: v = 0; break;
        case LV_INIT_CONST: v = init.a; break;
        case LV_INIT_NORMAL: {
            double u1 = uniform01(&seed), u2 = uniform01(&seed);
            v = init.a * sqrt(-2.0 * log(1.0 - u1)) * cos(2.0 * M_PI * u2);
            break;
        }
        case LV_INIT_UNIFORM:
        case LV_INIT_KAIMING_UNIFORM:
        case LV_INIT_XAVIER_UNIFORM:
            v = b * (2.0 * uniform01(&seed) - 1.0);
            break;
        }
        p[i] = (float)v;
    }
}

int lv_peft_param(lv_peft_ctx *ctx, int site, const char *name, int ndim, const int64_t *shape,
                  struct lv_peft_init init, unsigned flags)
{
    struct lv_adapter *a = ctx->a;
    if (site >= ctx->n || ndim < 1 || ndim > LV_MAX_DIMS || !name || !*name)
        return lv_error("%s: method '%s' declared a parameter out of range", ctx->what,
                        a->method->name), -1;
    for (int d = 0; d < ndim; d++)
        if (shape[d] <= 0 || shape[d] > (1 << 30))
            return lv_error("%s: parameter '%s' has a bad shape", ctx->what, name), -1;
    int *n = site < 0 ? &a->n_shared : &a->at[ctx->idx[site]].n;
    lv_tensor ***arr = site < 0 ? &a->shared : &a->at[ctx->idx[site]].p;
    char ***names = site < 0 ? &a->shared_names : &a->at[ctx->idx[site]].names;
    lv_tensor **np = realloc(*arr, (size_t)(*n + 1) * sizeof *np);
    if (np)
        *arr = np;
    char **nn = np ? realloc(*names, (size_t)(*n + 1) * sizeof *nn) : NULL;
    if (nn)
        *names = nn;
    lv_tensor *t = nn ? lv_tensor_new(LV_F32, ndim, shape) : NULL;
    char *dup = t ? strdup(name) : NULL;
    if (!dup) {
        lv_tensor_free(t);
        return lv_error_status(LV_ENOMEM, "%s: out of memory", ctx->what), -1;
    }
    char full[512];
    if (site < 0)
        snprintf(full, sizeof full, "%s", name);
    else
        snprintf(full, sizeof full, "%s.%s", a->sites->s[ctx->idx[site]].module, name);
    lv_tensor_set_name(t, full);
    init_values(t, init, a->seed ^ hash_name(full));
    if (flags & LV_PEFT_FROZEN)
        lv_tensor_set_frozen(t);
    else {
        lv_tensor_set_param(t);
        a->n_params += lv_tensor_nelem(t);
    }
    (*arr)[*n] = t;
    (*names)[*n] = dup;
    return (*n)++;
}

/* --- adapters ------------------------------------------------------------------------ */

int lv_adapter_new(struct lv_adapter **out, const struct lv_peft_method *method,
                   json_t *config, const struct lv_site_table *sites, uint64_t seed,
                   const char *what)
{
    *out = NULL;
    int rc = check_config(method, config, what);
    if (rc)
        return rc;
    json_t *targets = json_object_get(config, "target_modules"), *made = NULL;
    if ((!targets || json_is_null(targets)) && method->default_targets) {
        made = targets = json_array();
        for (const char *const *t = method->default_targets; *t; t++)
            json_array_append_new(made, json_string(*t));
    }
    if (!targets || json_is_null(targets)) {
        json_decref(made);
        return lv_error("%s: no target_modules, and method '%s' has no default", what,
                        method->name);
    }
    struct lv_adapter *a = calloc(1, sizeof *a);
    bool *sel = calloc((size_t)sites->n, sizeof *sel);
    int *idx = calloc((size_t)sites->n, sizeof *idx);
    if (a)
        a->at = calloc((size_t)sites->n, sizeof *a->at);
    if (!a || !sel || !idx || !a->at) {
        free(sel);
        free(idx);
        json_decref(made);
        lv_adapter_free(a);
        return lv_error_status(LV_ENOMEM, "%s: out of memory", what);
    }
    a->method = method;
    a->config = json_incref(config);
    a->sites = sites;
    a->seed = seed;
    a->enabled = true;
    a->scale = 1.0f;
    snprintf(a->name, sizeof a->name, "%s", what);
    rc = lv_site_select(sites, targets, json_object_get(config, "exclude_modules"),
                        json_object_get(config, "layers_to_transform"), method->sites, sel,
                        what);
    json_decref(made);
    struct lv_peft_ctx ctx = { .a = a, .idx = idx, .what = what };
    for (int i = 0; rc == LV_OK && i < sites->n; i++)
        if (sel[i]) {
            idx[ctx.n++] = i;
            a->at[i].on = true;
        }
    const json_t *mts = json_object_get(config, "modules_to_save");
    if (rc == LV_OK && ctx.n == 0 && !(json_is_array(mts) && json_array_size(mts) > 0))
        rc = lv_error("%s: target_modules selects no module of this model that method '%s' "
                      "can adapt", what, method->name);
    if (rc == LV_OK && (rc = method->create(&ctx)) != LV_OK) {
        /* name the adapter in the method's message */
        char *msg = strdup(lv_errmsg());
        rc = lv_error_status(rc, "%s: %s", what, msg ? msg : "create failed");
        free(msg);
    }
    for (int i = 0; rc == LV_OK && i < ctx.n; i++) {
        struct lv_adapter_site *as = &a->at[idx[i]];
        as->state_bytes = method->state_size ? method->state_size(&sites->s[idx[i]], as->vals)
                                             : method->state_bytes;
        if (as->state_bytes && !(as->state = calloc(1, as->state_bytes)))
            rc = lv_error_status(LV_ENOMEM, "%s: out of memory", what);
    }
    free(sel);
    free(idx);
    if (rc) {
        lv_adapter_free(a);
        return rc;
    }
    *out = a;
    return LV_OK;
}

static void free_params(int n, lv_tensor **p, char **names)
{
    for (int k = 0; k < n; k++) {
        lv_tensor_free(p[k]);
        free(names[k]);
    }
    free(p);
    free(names);
}

void lv_adapter_free(struct lv_adapter *a)
{
    if (!a)
        return;
    for (int i = 0; a->at && a->sites && i < a->sites->n; i++) {
        free_params(a->at[i].n, a->at[i].p, a->at[i].names);
        free(a->at[i].state);
        lv_tensor_free(a->at[i].save_w);
        lv_tensor_free(a->at[i].save_b);
    }
    free(a->at);
    free_params(a->n_shared, a->shared, a->shared_names);
    json_decref(a->config);
    free(a);
}
