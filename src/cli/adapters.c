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

static int run(int argc, char **argv)
{
    static const struct option opts[] = {
        { "model", required_argument, NULL, 'm' },
        { "mmproj", required_argument, NULL, 'M' },
        { "adapter", required_argument, NULL, 'a' },
        { "methods", no_argument, NULL, 'L' },
        { "plugin-path", required_argument, NULL, 'P' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };
    struct lv_cli_adapters A = { 0 };
    const char *model = NULL, *mmproj = NULL;
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
        default: return lv_cli_usage(&lv_cli_adapters_entry);
        }
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
             "       lavinia adapters --methods [--plugin-path DIR]",
    .help = "list adapters (method, rank, alpha, sites, parameters, scale), or PEFT methods",
    .run = run,
};
