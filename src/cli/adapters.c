/*
 * adapters.c: --adapter PATH[:SCALE] for generate, chat and bench, and `lavinia adapters`,
 * which lists what a model would run with (or, with --methods, the PEFT methods lavinia has).
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "cli/cli.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/checkpoint.h"
#include "lavinia/error.h"
#include "model/clip.h"
#include "model/llama.h"
#include "peft/adapter.h"

static char plugin_path[8192];

void lv_cli_plugin_arg(const char *dir)
{
    size_t k = strlen(plugin_path);
    snprintf(plugin_path + k, sizeof plugin_path - k, "%s%s", k ? ":" : "", dir);
}

void lv_cli_load_plugins(void)
{
    static bool done;
    if (!done)
        lv_peft_load_plugins(plugin_path[0] ? plugin_path : NULL);
    done = true;
}

int lv_cli_adapter_arg(struct lv_cli_adapters *A, const char *arg)
{
    if (A->n == LV_CLI_MAX_ADAPTERS) {
        fprintf(stderr, "lavinia: at most %d --adapter options\n", LV_CLI_MAX_ADAPTERS);
        return 2;
    }
    /* PATH:SCALE when what follows the last ':' is a number (paths may hold ':') */
    const char *colon = strrchr(arg, ':');
    char *end = NULL;
    double s = 1.0;
    size_t len = strlen(arg);
    if (colon && colon[1]) {
        errno = 0;
        double v = strtod(colon + 1, &end);
        if (!errno && *end == 0 && isfinite(v)) {
            s = v;
            len = (size_t)(colon - arg);
        }
    }
    if (len == 0 || len >= sizeof A->path[0]) {
        fprintf(stderr, "lavinia: --adapter %s: want PATH or PATH:SCALE\n", arg);
        return 2;
    }
    snprintf(A->path[A->n], sizeof A->path[0], "%.*s", (int)len, arg);
    A->scale[A->n++] = (float)s;
    return 0;
}

int lv_cli_adapters_open(struct lv_cli_adapters *A, const struct lv_checkpoint *ck,
                         lv_llama *m, lv_clip *v)
{
    if (A->n == 0)
        return LV_OK;
    lv_cli_load_plugins();
    enum lv_naming nm = ck ? lv_naming_of(ck) : LV_NAMING_PLAIN;
    if (lv_site_table_build(&A->sites, m, v, nm) != LV_OK)
        return LV_ERR;
    A->built = true;
    if (!(A->st = lv_peft_stack_new(&A->sites)))
        return LV_ERR;
    /* with several adapters, one that cannot be loaded is skipped (said on stderr) and the
     * run goes on with the others; the last reason is the error when none loads */
    for (int i = 0; i < A->n; i++) {
        struct lv_adapter *a;
        int rc = lv_adapter_load(&a, A->path[i], &A->sites, ck);
        if (rc == LV_OK && (rc = lv_peft_stack_add(A->st, a)) != LV_OK)
            lv_adapter_free(a);
        if (rc == LV_OK)
            lv_peft_stack_set(A->st, A->st->n - 1, true, A->scale[i]);
        else if (A->n == 1)
            return rc;
        else
            fprintf(stderr, "lavinia: %s (adapter skipped)\n", lv_errmsg());
    }
    if (A->st->n == 0)
        return lv_error("none of the %d adapters could be loaded", A->n);
    lv_llama_set_stack(m, A->st);
    if (v)
        v->peft = A->st;
    return LV_OK;
}

void lv_cli_adapters_close(struct lv_cli_adapters *A)
{
    lv_peft_stack_free(A->st);
    A->st = NULL;
    if (A->built)
        lv_site_table_free(&A->sites);
    A->built = false;
}

static const char *site_kinds(unsigned k, char *buf, size_t n)
{
    snprintf(buf, n, "%s%s%s%s%s", k & LV_SITE_LINEAR ? "linear" : "",
             (k & LV_SITE_LINEAR) && (k & ~LV_SITE_LINEAR) ? ", " : "",
             k & LV_SITE_STREAM ? "stream" : "",
             (k & LV_SITE_STREAM) && (k & LV_SITE_EMBED) ? ", " : "",
             k & LV_SITE_EMBED ? "embedding" : "");
    return buf;
}

static void print_methods(void)
{
    static const char *const types[] = { "int", "float", "bool", "string", "pattern",
                                          "modules" };
    for (int i = 0; i < lv_peft_count(); i++) {
        const struct lv_peft_method *m = lv_peft_at(i);
        char kinds[64];
        printf("%s: %s\n  sites: %s; ABI %d\n", m->name, m->description ? m->description : "",
               site_kinds(m->sites, kinds, sizeof kinds), m->abi);
        for (const struct lv_peft_key *k = m->keys; k && k->name; k++) {
            printf("  %-18s %-7s default %-8s", k->name, types[k->type], k->def ? k->def : "-");
            if (k->min != 0 || k->max != 0)
                printf(" range %g..%g", k->min, k->max);
            if (k->choices)
                printf(" one of %s", k->choices);
            printf("\n      %s\n", k->help ? k->help : "");
        }
    }
}

/* what a stack holds, one adapter per paragraph */
void lv_cli_adapters_print(const struct lv_cli_adapters *A, FILE *f)
{
    for (int i = 0; A->st && i < A->st->n; i++) {
        const struct lv_adapter *a = A->st->a[i];
        const json_t *r = json_object_get(a->config, "r");
        const json_t *alpha = json_object_get(a->config, "lora_alpha");
        int n_sites = 0, n_saved = 0;
        for (int s = 0; s < A->sites.n; s++) {
            n_sites += a->at[s].on;
            n_saved += a->at[s].save_w != NULL;
        }
        fprintf(f, "%d: %s (%s)\n  method %s", i, a->name, a->path, a->method->name);
        if (json_is_number(r))
            fprintf(f, ", rank %g", json_number_value(r));
        if (json_is_number(alpha))
            fprintf(f, ", alpha %g", json_number_value(alpha));
        if (json_is_true(json_object_get(a->config, "use_rslora")))
            fprintf(f, " (rsLoRA)");
        fprintf(f, ", %lld parameters, scale %g, %s\n", (long long)a->n_params,
                (double)a->scale, a->enabled ? "enabled" : "disabled");
        fprintf(f, "  %d sites:", n_sites);
        int shown = 0;
        for (int s = 0; s < A->sites.n; s++)
            if (a->at[s].on)
                fprintf(f, "%s%s", shown++ ? ", " : " ", A->sites.s[s].name);
        fprintf(f, "\n");
        if (n_saved) {
            fprintf(f, "  modules_to_save:");
            for (int s = 0; s < A->sites.n; s++)
                if (a->at[s].save_w)
                    fprintf(f, " %s", A->sites.s[s].module);
            fprintf(f, "\n");
        }
    }
}

/* loss = sum(logits * R) over a fresh sequence of ids */
static double loss_of(lv_llama *m, const int32_t *ids, int64_t n, const float *R, float *logits)
{
    lv_llama_reset(m);
    if (lv_llama_forward(m, ids, n, logits, true) != LV_OK)
        return NAN;
    double l = 0;
    for (int64_t i = 0; i < n * lv_llama_vocab(m); i++)
        l += (double)logits[i] * R[i];
    return l;
}

static uint64_t rng_next(uint64_t *x)
{
    *x = *x * 6364136223846793005ull + 1442695040888963407ull;
    return *x >> 11;
}

static float rng_normal(uint64_t *x)
{
    double u1 = ((double)rng_next(x) + 1.0) / 9007199254740993.0;
    double u2 = (double)rng_next(x) / 9007199254740992.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

/* The gradients a method's apply produces (through lavinia's autograd) against central
 * differences, on a small random model: what a plugin author runs first. */
static int gradcheck(const char *method, const char *config_text)
{
    const struct lv_peft_method *pm = lv_peft_find(method);
    if (!pm)
        return lv_error("no method '%s' (lavinia adapters --methods lists them)", method);
    struct lv_model_config c;
    lv_model_config_init(&c);
    c.vocab = 64;
    c.dim = 32;
    c.hidden = 48;
    c.n_layers = 2;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.head_dim = 8;
    c.max_seq = 64;
    lv_llama *m = NULL;
    struct lv_site_table sites;
    struct lv_peft_stack *st = NULL;
    struct lv_adapter *a = NULL;
    json_t *cfg = NULL;
    int rc = lv_adapter_config_parse(config_text, strlen(config_text), "--config", &cfg);
    if (rc == LV_OK && (rc = lv_llama_new_random(&m, &c, LV_F32, 7, 0)) == LV_OK &&
        (rc = lv_site_table_build(&sites, m, NULL, LV_NAMING_PLAIN)) == LV_OK) {
        if ((rc = lv_adapter_new(&a, pm, cfg, &sites, 11, method)) == LV_OK &&
            (st = lv_peft_stack_new(&sites)) && (rc = lv_peft_stack_add(st, a)) != LV_OK) {
            lv_adapter_free(a);
            a = NULL;
        }
        if (rc == LV_OK && !st)
            rc = LV_ERR;
    }
    enum { T = 6, PER_TENSOR = 6 };
    int32_t ids[T] = { 1, 9, 33, 4, 50, 17 };
    float *R = malloc(sizeof(float) * T * 64), *logits = malloc(sizeof(float) * T * 64);
    uint64_t x = 99;
    int checked = 0, tensors = 0;
    double worst = 0, gmax = 0;
    char worst_name[160] = "";
    if (rc == LV_OK && (!R || !logits))
        rc = lv_error_status(LV_ENOMEM, "out of memory");
    /* every trainable tensor: moved off its initial values (a zero B hides A's gradient) */
    lv_tensor *params[4096];
    int np = 0;
    for (int i = 0; rc == LV_OK && i <= sites.n; i++) {
        int n = i < sites.n ? a->at[i].n : a->n_shared;
        lv_tensor **p = i < sites.n ? a->at[i].p : a->shared;
        for (int k = 0; k < n && np < 4096; k++)
            if (p[k]->flags & LV_TENSOR_PARAM)
                params[np++] = p[k];
    }
    for (int i = 0; rc == LV_OK && i < np; i++) {
        float *d = params[i]->data;
        for (int64_t j = 0; j < lv_tensor_nelem(params[i]); j++)
            d[j] += 0.05f * rng_normal(&x);
        rc = lv_tensor_zero_grad(params[i]);
    }
    for (int i = 0; rc == LV_OK && i < T * 64; i++)
        R[i] = rng_normal(&x);
    if (rc == LV_OK) {
        lv_llama_set_stack(m, st);
        rc = lv_llama_backward(m, ids, NULL, T, R, NULL, NULL);
    }
    for (int i = 0; rc == LV_OK && i < np; i++)
        for (int64_t j = 0; j < lv_tensor_nelem(params[i]); j++)
            gmax = fmax(gmax, fabs(((float *)params[i]->grad->data)[j]));
    for (int i = 0; rc == LV_OK && i < np; i++) {
        lv_tensor *p = params[i];
        int64_t ne = lv_tensor_nelem(p);
        tensors++;
        for (int s = 0; s < PER_TENSOR && s < ne; s++) {
            int64_t j = s * ne / (ne < PER_TENSOR ? ne : PER_TENSOR);
            float *v = (float *)p->data + j, keep = *v, h = 1e-2f * fmaxf(1.0f, fabsf(keep));
            *v = keep + h;
            double up = loss_of(m, ids, T, R, logits);
            *v = keep - h;
            double down = loss_of(m, ids, T, R, logits);
            *v = keep;
            lv_peft_stack_set(st, 0, true, 1.0f);       /* cached states out of date */
            double num = (up - down) / (2.0 * (double)h);
            double ana = ((float *)p->grad->data)[j];
            double e = fabs(num - ana) / fmax(fabs(ana), 3e-2 * gmax + 1e-12);
            if (!(e <= worst)) {
                worst = e;
                snprintf(worst_name, sizeof worst_name, "%s[%lld]", p->name, (long long)j);
            }
            checked++;
        }
    }
    if (rc == LV_OK) {
        /* float32 central differences: a wrong gradient is off by its own size, not 5% */
        printf("gradcheck %s: %d values of %d trainable tensors, worst relative error %.2e at "
               "%s (tolerance 5e-2)\n", method, checked, tensors, worst, worst_name);
        if (!(worst <= 5e-2) || checked == 0)
            rc = lv_error("gradcheck %s: the gradients do not match central differences",
                          method);
    }
    free(R);
    free(logits);
    lv_peft_stack_free(st);
    if (m)
        lv_site_table_free(&sites);
    lv_llama_free(m);
    json_decref(cfg);
    return rc;
}

static int run(int argc, char **argv)
{
    static const struct option opts[] = {
        { "model", required_argument, NULL, 'm' },
        { "mmproj", required_argument, NULL, 'M' },
        { "adapter", required_argument, NULL, 'a' },
        { "methods", no_argument, NULL, 'L' },
        { "plugin-path", required_argument, NULL, 'P' },
        { "gradcheck", required_argument, NULL, 'G' },
        { "config", required_argument, NULL, 'C' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };
    struct lv_cli_adapters A = { 0 };
    const char *model = NULL, *mmproj = NULL, *check = NULL, *config = "{}";
    bool methods = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'M': mmproj = optarg; break;
        case 'a':
            if (lv_cli_adapter_arg(&A, optarg))
                return 2;
            break;
        case 'L': methods = true; break;
        case 'P': lv_cli_plugin_arg(optarg); break;
        case 'G': check = optarg; break;
        case 'C': config = optarg; break;
        default: return lv_cli_usage(&lv_cli_adapters_entry);
        }
    }
    if (check) {
        lv_cli_load_plugins();
        return gradcheck(check, config) == LV_OK ? 0 : lv_cli_fail(lv_errmsg());
    }
    if (methods && !model) {
        lv_cli_load_plugins();
        print_methods();
        return 0;
    }
    if (!model || optind != argc || A.n == 0)
        return lv_cli_usage(&lv_cli_adapters_entry);
    struct lv_checkpoint ck;
    lv_llama *m = NULL;
    lv_clip *v = NULL;
    int rc = lv_checkpoint_open(&ck, model, mmproj, NULL);
    if (rc)
        return lv_cli_fail(lv_errmsg());
    rc = lv_llama_load(&m, &ck, 0);
    if (rc == LV_OK && ck.config.has_vision)
        rc = lv_clip_load(&v, &ck);
    if (rc == LV_OK)
        rc = lv_cli_adapters_open(&A, &ck, m, v);
    if (rc == LV_OK) {
        printf("%s: %d sites, module names in %s naming\n", model, A.sites.n,
               lv_naming_name(A.sites.naming));
        lv_cli_adapters_print(&A, stdout);
        if (methods)
            print_methods();
    }
    int status = rc == LV_OK ? 0 : lv_cli_fail(lv_errmsg());
    lv_cli_adapters_close(&A);
    lv_llama_free(m);
    lv_clip_free(v);
    lv_checkpoint_close(&ck);
    return status;
}

const struct lv_cli_entry lv_cli_adapters_entry = {
    .name = "adapters",
    .usage = "adapters -m MODEL [--mmproj FILE] --adapter PATH[:SCALE]... [--methods]\n"
             "       lavinia adapters --methods [--plugin-path DIR]\n"
             "       lavinia adapters --gradcheck METHOD [--config JSON] [--plugin-path DIR]",
    .help = "list adapters (method, rank, alpha, sites, parameters, scale), or PEFT methods",
    .run = run,
};
