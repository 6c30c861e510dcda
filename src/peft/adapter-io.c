/*
 * adapter-io.c: adapters on disk. Hugging Face PEFT folders (FORMATS.md §3) both ways, and
 * llama.cpp's LoRA GGUF (FORMATS.md §2.9) for reading.
 *
 * A PEFT tensor is "base_model.model." + module path + "." + parameter name; the module path
 * may be in any naming of the base (plain LLaMA, llava-hf, transformers >= 4.52) and is
 * matched to a site through the plain naming. q/k B factors are stored in Hugging Face row
 * order; a base whose q/k rows are in Meta order (GGUF) gets them permuted at load and back
 * at save. A GGUF LoRA becomes the equivalent PEFT configuration (r per tensor, one alpha).
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/checkpoint.h"
#include "io/fileutil.h"
#include "io/names.h"
#include "io/safetensors.h"
#include "lavinia/error.h"
#include "peft/adapter.h"

#define PREFIX "base_model.model."
#define CONFIG_MAX (4u << 20)

/* --- q/k row order -------------------------------------------------------------------- */

/* heads of the q or k projection at site i, 0 for other sites */
static long qk_heads(const struct lv_site_table *t, int i)
{
    const struct lv_peft_site *s = &t->s[i];
    if (s->tower != LV_TOWER_LLM || s->layer < 0 || s->kind != LV_SITE_LINEAR)
        return 0;
    if (i == lv_site_llm(t, s->layer, LV_LLM_Q))
        return (long)t->n_heads;
    if (i == lv_site_llm(t, s->layer, LV_LLM_K))
        return (long)t->n_kv_heads;
    return 0;
}

/* B (out, r) rows from one order to the other (to_meta: HF -> Meta) */
static int permute_rows(float *b, int64_t rows, int64_t cols, long heads, long hd, bool to_meta)
{
    if (heads * hd != rows)
        return LV_OK;
    float *tmp = malloc((size_t)(rows * cols) * sizeof *tmp);
    if (!tmp)
        return lv_error_status(LV_ENOMEM, "adapter: out of memory");
    size_t row = (size_t)cols * sizeof(float);
    if (to_meta)
        lv_qk_hf_to_meta(tmp, b, heads, hd, row);
    else
        lv_qk_meta_to_hf(tmp, b, heads, hd, row);
    memcpy(b, tmp, (size_t)(rows * cols) * sizeof *tmp);
    free(tmp);
    return LV_OK;
}

/* --- reading tensors ----------------------------------------------------------------- */

static int read_f32(const char *file, const struct lv_ckpt_tensor *t, float *dst)
{
    lv_dtype dt;
    switch (t->type) {
    case LV_CKPT_F32: dt = LV_F32; break;
    case LV_CKPT_F16: dt = LV_F16; break;
    case LV_CKPT_BF16: dt = LV_BF16; break;
    default:
        return lv_error("%s: tensor '%s' is %s; adapter tensors must be F32, F16 or BF16", file,
                        t->file_name, t->type_name);
    }
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++)
        n *= t->shape[d];
    void *tmp = malloc(t->nbytes ? t->nbytes : 1);
    if (!tmp)
        return lv_error_status(LV_ENOMEM, "%s: out of memory", file);
    memcpy(tmp, t->data, t->nbytes);
    lv_convert_row(dst, LV_F32, tmp, dt, n);
    free(tmp);
    return LV_OK;
}

static bool same_shape(const struct lv_ckpt_tensor *t, const lv_tensor *p)
{
    if (t->ndim != p->ndim)
        return false;
    for (int d = 0; d < p->ndim; d++)
        if (t->shape[d] != p->shape[d])
            return false;
    return true;
}

static void shape_text(char *out, size_t n, int ndim, const int64_t *shape)
{
    size_t o = (size_t)snprintf(out, n, "(");
    for (int d = 0; d < ndim && o < n; d++)
        o += (size_t)snprintf(out + o, n - o, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (o < n)
        snprintf(out + o, n - o, ")");
}

/* load a tensor into parameter k of site i (transposed: GGUF's embedding A) */
static int load_param(struct lv_adapter *a, const char *file, const struct lv_ckpt_tensor *t,
                      int i, int k, bool transposed, bool meta_rows)
{
    lv_tensor *p = a->at[i].p[k];
    int64_t want[2] = { p->shape[0], p->ndim > 1 ? p->shape[1] : 1 };
    bool ok = transposed ? t->ndim == 2 && t->shape[0] == want[1] && t->shape[1] == want[0]
                         : same_shape(t, p);
    if (!ok) {
        char have[64], exp[64];
        shape_text(have, sizeof have, t->ndim, t->shape);
        shape_text(exp, sizeof exp, p->ndim, p->shape);
        return lv_error("%s: tensor '%s' has shape %s; the model's %s needs %s%s", file,
                        t->file_name, have, a->sites->s[i].module, exp,
                        transposed ? " transposed" : "");
    }
    int rc = read_f32(file, t, p->data);
    if (rc == LV_OK && transposed) {
        float *tmp = malloc((size_t)lv_tensor_nelem(p) * sizeof *tmp);
        if (!tmp)
            return lv_error_status(LV_ENOMEM, "%s: out of memory", file);
        memcpy(tmp, p->data, (size_t)lv_tensor_nelem(p) * sizeof *tmp);
        float *d = p->data;
        for (int64_t r = 0; r < want[0]; r++)
            for (int64_t c = 0; c < want[1]; c++)
                d[r * want[1] + c] = tmp[c * want[0] + r];
        free(tmp);
    }
    /* B of q/k: rows follow the base's order */
    long heads = qk_heads(a->sites, i);
    bool is_b = strstr(a->at[i].names[k], "lora_B") != NULL;
    if (rc == LV_OK && heads && is_b && meta_rows != a->sites->meta_qk)
        rc = permute_rows(p->data, p->shape[0], p->shape[1], heads, (long)a->sites->head_dim,
                          a->sites->meta_qk);
    return rc;
}

/* The site and parameter a PEFT tensor name (without "base_model.model.") refers to. -2: a
 * module that is not in the model; -1: no parameter of the adapter ends the name. */
static int match_param(const struct lv_adapter *a, const char *rest, int *site, int *param,
                       char *module, size_t mn)
{
    size_t rl = strlen(rest);
    for (int i = 0; i < a->sites->n; i++)
        for (int k = 0; k < a->at[i].n; k++) {
            const char *pn = a->at[i].names[k];
            size_t pl = strlen(pn);
            if (rl <= pl + 1 || rest[rl - pl - 1] != '.' || strcmp(rest + rl - pl, pn) != 0)
                continue;
            snprintf(module, mn, "%.*s", (int)(rl - pl - 1), rest);
            int s = lv_site_find_module(a->sites, module);
            if (s < 0)
                return -2;
            if (s == i) {
                *site = i;
                *param = k;
                return 0;
            }
        }
    return -1;
}

/* a modules_to_save tensor: module.weight or module.bias of a listed module */
static int load_saved(struct lv_adapter *a, const char *file, const struct lv_ckpt_tensor *t,
                      const char *rest)
{
    const json_t *mts = json_object_get(a->config, "modules_to_save");
    const char *dot = strrchr(rest, '.');
    if (!dot || (strcmp(dot, ".weight") != 0 && strcmp(dot, ".bias") != 0))
        return lv_error("%s: tensor '%s' is not a parameter of a '%s' adapter", file,
                        t->file_name, a->method->name);
    char module[256];
    snprintf(module, sizeof module, "%.*s", (int)(dot - rest), rest);
    /* PEFT wraps the module whose name ends with an entry (target_modules' list rule); its
     * tensors lie below it */
    bool listed = false;
    for (char *end = module; json_is_array(mts) && !listed && end;) {
        end = strchr(end + 1, '.');
        char prefix[256];
        snprintf(prefix, sizeof prefix, "%.*s", end ? (int)(end - module) : (int)strlen(module),
                 module);
        listed = lv_site_spec_match(mts, prefix, file) == 1;
    }
    if (!listed)
        return lv_error("%s: tensor '%s' is not a parameter of a '%s' adapter and its module "
                        "is not in modules_to_save", file, t->file_name, a->method->name);
    int i = lv_site_find_module(a->sites, module);
    if (i < 0)
        return lv_error("%s: modules_to_save tensor '%s': this model has no module '%s'", file,
                        t->file_name, module);
    const struct lv_peft_site *s = &a->sites->s[i];
    bool bias = strcmp(dot, ".bias") == 0;
    int64_t shape[2] = { s->kind == LV_SITE_EMBED ? s->in : s->out,
                         s->kind == LV_SITE_EMBED ? s->out : s->in };
    lv_tensor **dst = bias ? &a->at[i].save_b : &a->at[i].save_w;
    if (s->kind == LV_SITE_STREAM || (bias && (!s->bias || s->kind == LV_SITE_EMBED)))
        return lv_error("%s: modules_to_save tensor '%s': module '%s' has no such parameter",
                        file, t->file_name, module);
    if (*dst)
        return lv_error("%s: tensor '%s' appears twice", file, t->file_name);
    *dst = lv_tensor_new(LV_F32, bias ? 1 : 2, bias ? &shape[0] : shape);
    if (!*dst)
        return lv_error_status(LV_ENOMEM, "%s: out of memory", file);
    lv_tensor_set_frozen(*dst);
    if (!same_shape(t, *dst)) {
        char have[64], exp[64];
        shape_text(have, sizeof have, t->ndim, t->shape);
        shape_text(exp, sizeof exp, (*dst)->ndim, (*dst)->shape);
        return lv_error("%s: tensor '%s' has shape %s; the model's %s is %s", file,
                        t->file_name, have, module, exp);
    }
    int rc = read_f32(file, t, (*dst)->data);
    long heads = qk_heads(a->sites, i);
    if (rc == LV_OK && heads && !bias && a->sites->meta_qk)
        rc = permute_rows((*dst)->data, shape[0], shape[1], heads, (long)a->sites->head_dim,
                          true);
    return rc;
}

/* --- PEFT folders --------------------------------------------------------------------- */

int lv_adapter_config_parse(const char *text, size_t n, const char *what, json_t **out)
{
    *out = NULL;
    if (n > CONFIG_MAX)
        return lv_error("%s: larger than %u bytes", what, CONFIG_MAX);
    json_error_t err;
    json_t *j = json_loadb(text, n, JSON_REJECT_DUPLICATES, &err);
    if (!j)
        return lv_error("%s: line %d: %s", what, err.line, err.text);
    if (!json_is_object(j)) {
        json_decref(j);
        return lv_error("%s: not a JSON object", what);
    }
    *out = j;
    return LV_OK;
}

static int read_config(const char *dir, json_t **out)
{
    *out = NULL;
    char path[4200];
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    char *text;
    size_t n;
    int rc = lv_read_file(path, CONFIG_MAX, &text, &n);
    if (rc)
        return rc;
    rc = lv_adapter_config_parse(text, n, path, out);
    free(text);
    return rc;
}

int lv_adapter_method_of(const json_t *config, const char *what,
                         const struct lv_peft_method **m)
{
    const char *type = json_string_value(json_object_get(config, "peft_type"));
    if (!type)
        return lv_error("%s: no peft_type string", what);
    char name[64];
    snprintf(name, sizeof name, "%s", type);
    for (char *p = name; *p; p++)
        *p = (char)(*p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : *p);
    if (strcmp(name, "lora") == 0 && json_is_true(json_object_get(config, "use_dora")) &&
        lv_peft_find("dora"))
        snprintf(name, sizeof name, "dora");
    if (!(*m = lv_peft_find(name))) {
        char known[512] = "";
        for (int i = 0; i < lv_peft_count(); i++) {
            size_t k = strlen(known);
            snprintf(known + k, sizeof known - k, "%s%s", i ? ", " : "", lv_peft_at(i)->name);
        }
        return lv_error("%s: peft_type '%s' is not a method lavinia has (%s)", what, type,
                        known);
    }
    return LV_OK;
}

/* a module of a vision block the model does not store: an mmproj keeps only the blocks LLaVA
 * runs, so an adapter trained on the full tower names blocks that never run here */
static bool unused_block(const struct lv_site_table *t, const char *module)
{
    char plain[256];
    const char *pre = "vision_tower.vision_model.encoder.layers.";
    if (!lv_module_canonical(module, plain, sizeof plain) || strncmp(plain, pre, strlen(pre)))
        return false;
    char *end;
    long l = strtol(plain + strlen(pre), &end, 10);
    return *end == '.' && t->n_vit > 0 && l >= t->n_vit && l < 1000;
}

/* a shared parameter (VeRA's projections, prompt tuning's rows): stored under its own name */
static int load_shared(struct lv_adapter *a, const char *file, const struct lv_ckpt_tensor *t,
                       int k)
{
    const lv_tensor *p = a->shared[k];
    if (!same_shape(t, p)) {
        char have[64], exp[64];
        shape_text(have, sizeof have, t->ndim, t->shape);
        shape_text(exp, sizeof exp, p->ndim, p->shape);
        return lv_error("%s: tensor '%s' has shape %s; the adapter needs %s", file,
                        t->file_name, have, exp);
    }
    return read_f32(file, t, p->data);
}

static int fill_from_file(struct lv_adapter *a, const struct lv_checkpoint *ck, bool meta_rows)
{
    bool *seen = calloc((size_t)a->sites->n * 8 + (size_t)a->n_shared + 1, sizeof *seen);
    bool *seen_shared = seen ? seen + (size_t)a->sites->n * 8 : NULL;
    if (!seen)
        return lv_error_status(LV_ENOMEM, "%s: out of memory", ck->path);
    int rc = LV_OK;
    for (int j = 0; rc == LV_OK && j < ck->n_tensors; j++) {
        const struct lv_ckpt_tensor *t = &ck->tensors[j];
        const char *name = t->file_name;
        int sh = -1;
        for (int k = 0; k < a->n_shared; k++)
            if (strcmp(name, a->shared_names[k]) == 0)
                sh = k;
        if (sh >= 0) {
            rc = seen_shared[sh] ? lv_error("%s: tensor '%s' appears twice", ck->path, name)
                                 : load_shared(a, ck->path, t, sh);
            seen_shared[sh] = true;
            continue;
        }
        if (strncmp(name, PREFIX, strlen(PREFIX)) != 0) {
            rc = lv_error("%s: tensor '%s' is not a parameter of a '%s' adapter", ck->path,
                          name, a->method->name);
            break;
        }
        const char *rest = name + strlen(PREFIX);
        char module[256];
        int site, k, m = match_param(a, rest, &site, &k, module, sizeof module);
        if (m == -2 && unused_block(a->sites, module))
            continue;
        if (m == -2)
            rc = lv_error("%s: tensor '%s': the model has no module '%s'", ck->path, name,
                          module);
        else if (m == -1)
            rc = load_saved(a, ck->path, t, rest);
        else if (k >= 8)
            rc = lv_error("%s: method '%s' has more than 8 parameters per module", ck->path,
                          a->method->name);
        else if (seen[site * 8 + k])
            rc = lv_error("%s: tensor '%s' appears twice", ck->path, name);
        else {
            seen[site * 8 + k] = true;
            rc = load_param(a, ck->path, t, site, k, false, meta_rows);
        }
    }
    for (int i = 0; rc == LV_OK && i < a->sites->n; i++)
        for (int k = 0; rc == LV_OK && k < a->at[i].n && k < 8; k++)
            if (!seen[i * 8 + k])
                rc = lv_error("%s: no tensor '" PREFIX "%s.%s' (target_modules selects that "
                              "module)", ck->path, a->sites->s[i].module, a->at[i].names[k]);
    for (int k = 0; rc == LV_OK && k < a->n_shared; k++)
        if (!seen_shared[k])
            rc = lv_error("%s: no tensor '%s' (the '%s' adapter needs it)", ck->path,
                          a->shared_names[k], a->method->name);
    free(seen);
    return rc;
}

static int load_peft_dir(struct lv_adapter **out, const char *dir,
                         const struct lv_site_table *sites)
{
    json_t *config;
    int rc = read_config(dir, &config);
    if (rc)
        return rc;
    char what[4200], st[4200];
    snprintf(what, sizeof what, "%s/adapter_config.json", dir);
    snprintf(st, sizeof st, "%s/adapter_model.safetensors", dir);
    const struct lv_peft_method *m;
    struct lv_checkpoint ck;
    struct stat sb;
    if ((rc = lv_adapter_method_of(config, what, &m)) == LV_OK && stat(st, &sb) != 0) {
        snprintf(st, sizeof st, "%s/adapter_model.bin", dir);
        rc = stat(st, &sb) == 0
                 ? lv_error("%s: a pickled PyTorch file; lavinia reads adapter_model."
                            "safetensors (save with safe_serialization=True)", st)
                 : lv_error("%s: no adapter_model.safetensors", dir);
    }
    if (rc == LV_OK)
        rc = lv_adapter_new(out, m, config, sites, 0, what);
    json_decref(config);
    if (rc)
        return rc;
    if ((rc = lv_checkpoint_open(&ck, st, NULL, NULL)) == LV_OK) {
        rc = fill_from_file(*out, &ck, false);
        lv_checkpoint_close(&ck);
    }
    if (rc) {
        lv_adapter_free(*out);
        *out = NULL;
    }
    return rc;
}

/* --- llama.cpp LoRA GGUF ---------------------------------------------------------------- */

/* a GGUF key's value as text (strings without their quotes), or NULL */
static const char *meta_of(const struct lv_checkpoint *ck, const char *key, char *buf, size_t n)
{
    for (int i = 0; i < ck->n_meta; i++)
        if (strcmp(ck->meta[i].key, key) == 0) {
            const char *v = ck->meta[i].value;
            size_t k = strlen(v);
            if (k >= 2 && v[0] == '"' && v[k - 1] == '"')
                snprintf(buf, n, "%.*s", (int)(k - 2), v + 1);
            else
                snprintf(buf, n, "%s", v);
            return buf;
        }
    return NULL;
}

/* the PEFT configuration equivalent to a GGUF LoRA: r per module, one alpha */
static int gguf_config(const struct lv_checkpoint *ck, const struct lv_site_table *sites,
                       const struct lv_checkpoint *base, json_t **out)
{
    char b1[64], b2[64], b3[64];
    const char *arch = meta_of(ck, "general.architecture", b1, sizeof b1);
    const char *type = meta_of(ck, "adapter.type", b2, sizeof b2);
    if (!type || strcmp(type, "lora") != 0)
        return lv_error("%s: adapter.type is '%s'; lavinia reads LoRA adapters", ck->path,
                        type ? type : "(none)");
    (void)base;
    if (!arch || strcmp(arch, "llama") != 0)
        return lv_error("%s: an adapter for '%s' models; lavinia's language models are "
                        "llama-family", ck->path, arch ? arch : "(no general.architecture)");
    const char *alpha_s = meta_of(ck, "adapter.lora.alpha", b3, sizeof b3);
    double alpha = alpha_s ? strtod(alpha_s, NULL) : 0;
    json_t *c = json_object(), *targets = json_array(), *ranks = json_object();
    int64_t r0 = 0;
    int rc = c && targets && ranks ? LV_OK : lv_error_status(LV_ENOMEM, "out of memory");
    for (int j = 0; rc == LV_OK && j < ck->n_tensors; j++) {
        const struct lv_ckpt_tensor *t = &ck->tensors[j];
        size_t n = strlen(t->name);
        const char *suf = ".lora_B.weight";
        if (n <= strlen(suf) || strcmp(t->name + n - strlen(suf), suf) != 0)
            continue;
        char module[256];
        snprintf(module, sizeof module, "%.*s", (int)(n - strlen(suf)), t->name);
        int i = lv_site_find_module(sites, module);
        if (i < 0) {
            rc = lv_error("%s: tensor '%s': the model has no module '%s'", ck->path,
                          t->file_name, module);
            break;
        }
        int64_t r = t->ndim == 2 ? t->shape[1] : 0;
        if (r <= 0) {
            rc = lv_error("%s: tensor '%s' is not a matrix", ck->path, t->file_name);
            break;
        }
        if (!r0)
            r0 = r;
        json_array_append_new(targets, json_string(sites->s[i].module));
        if (r != r0) {
            char pat[300];
            snprintf(pat, sizeof pat, "%s", sites->s[i].module);
            json_object_set_new(ranks, pat, json_integer(r));
        }
    }
    if (rc == LV_OK && !r0)
        rc = lv_error("%s: no LoRA tensors", ck->path);
    if (rc == LV_OK) {
        /* llama.cpp scales by alpha / r, or by 1 when alpha is 0 */
        json_object_set_new(c, "peft_type", json_string("LORA"));
        json_object_set_new(c, "r", json_integer(r0));
        json_object_set_new(c, "lora_alpha", json_real(alpha != 0 ? alpha : (double)r0));
        json_object_set(c, "target_modules", targets);
        if (json_object_size(ranks))
            json_object_set(c, "rank_pattern", ranks);
        if (alpha == 0 && json_object_size(ranks)) {
            /* scale 1 everywhere: alpha = r per module */
            json_object_set(c, "alpha_pattern", ranks);
        }
        *out = c;
        c = NULL;
    }
    json_decref(c);
    json_decref(targets);
    json_decref(ranks);
    return rc;
}

static int load_gguf(struct lv_adapter **out, const char *path,
                     const struct lv_site_table *sites, const struct lv_checkpoint *base)
{
    struct lv_checkpoint ck;
    int rc = lv_checkpoint_open(&ck, path, NULL, NULL);
    if (rc)
        return rc;
    json_t *config = NULL;
    char tb[64];
    const char *type = meta_of(&ck, "general.type", tb, sizeof tb);
    if (ck.format != LV_CKPT_GGUF)
        rc = lv_error("%s: an adapter is a PEFT folder (adapter_config.json and "
                      "adapter_model.safetensors) or a llama.cpp LoRA GGUF file", path);
    else if (!type || strcmp(type, "adapter") != 0)
        rc = lv_error("%s: general.type is not \"adapter\" (a model, not a LoRA)", path);
    if (rc == LV_OK)
        rc = gguf_config(&ck, sites, base, &config);
    if (rc == LV_OK)
        rc = lv_adapter_new(out, &lv_peft_lora, config, sites, 0, path);
    json_decref(config);
    int n_a = 0;
    for (int j = 0; rc == LV_OK && j < ck.n_tensors; j++) {
        const struct lv_ckpt_tensor *t = &ck.tensors[j];
        size_t n = strlen(t->name);
        bool is_a = n > 14 && strcmp(t->name + n - 14, ".lora_A.weight") == 0;
        bool is_b = n > 14 && strcmp(t->name + n - 14, ".lora_B.weight") == 0;
        if (!is_a && !is_b) {
            /* mergekit's norm tensors are tolerated, as llama.cpp does */
            if (t->ndim == 1 && strstr(t->file_name, "_norm.weight"))
                continue;
            rc = lv_error("%s: tensor '%s' is not a LoRA factor", path, t->file_name);
            break;
        }
        char module[256];
        snprintf(module, sizeof module, "%.*s", (int)(n - 14), t->name);
        int i = lv_site_find_module(sites, module);
        if (i < 0 || !(*out)->at[i].on) {
            rc = lv_error("%s: tensor '%s' has no lora_b partner for a module of this model",
                          path, t->file_name);
            break;
        }
        if (is_a)
            n_a++;
        bool embed = i == LV_SITE_EMBED_INDEX;
        rc = load_param(*out, path, t, i, is_a ? 0 : 1, embed && is_a, t->meta_qk);
    }
    int n_on = 0;
    for (int i = 0; rc == LV_OK && i < sites->n; i++)
        n_on += (*out)->at[i].on;
    if (rc == LV_OK && n_a != n_on)
        rc = lv_error("%s: %d lora_b tensors but %d lora_a", path, n_on, n_a);
    lv_checkpoint_close(&ck);
    if (rc && *out) {
        lv_adapter_free(*out);
        *out = NULL;
    }
    return rc;
}

int lv_adapter_load(struct lv_adapter **out, const char *path, const struct lv_site_table *sites,
                    const struct lv_checkpoint *base)
{
    *out = NULL;
    lv_peft_builtins();
    struct stat sb;
    if (stat(path, &sb) != 0)
        return lv_error("%s: %s", path, strerror(errno));
    int rc = S_ISDIR(sb.st_mode) ? load_peft_dir(out, path, sites)
                                 : load_gguf(out, path, sites, base);
    if (rc == LV_OK) {
        /* the name: the path's last component ("runs/my-lora/" -> "my-lora") */
        char tmp[4096];
        snprintf(tmp, sizeof tmp, "%s", path);
        size_t k = strlen(tmp);
        while (k > 1 && tmp[k - 1] == '/')
            tmp[--k] = 0;
        const char *slash = strrchr(tmp, '/');
        snprintf((*out)->name, sizeof (*out)->name, "%s", slash && slash[1] ? slash + 1 : tmp);
        snprintf((*out)->path, sizeof (*out)->path, "%s", path);
    }
    return rc;
}

/* --- writing ------------------------------------------------------------------------- */

int lv_adapter_tensor_name(const struct lv_adapter *a, int site, int k, char *out, size_t n)
{
    int w = snprintf(out, n, PREFIX "%s.%s", a->sites->s[site].module, a->at[site].names[k]);
    return w < 0 || (size_t)w >= n ? lv_error("adapter: tensor name too long") : LV_OK;
}

/* the configuration to write: every key of the method with its value in effect */
static json_t *config_out(const struct lv_adapter *a)
{
    json_t *c = json_deep_copy(a->config);
    if (!c)
        return NULL;
    char type[64];
    snprintf(type, sizeof type, "%s", a->method->peft_type ? a->method->peft_type
                                                           : a->method->name);
    for (char *p = type; *p; p++)
        *p = (char)(*p >= 'a' && *p <= 'z' ? *p - 'a' + 'A' : *p);
    json_object_set_new(c, "peft_type", json_string(type));
    if (!json_object_get(c, "task_type"))
        json_object_set_new(c, "task_type", json_string("CAUSAL_LM"));
    if (!json_object_get(c, "base_model_name_or_path"))
        json_object_set_new(c, "base_model_name_or_path", json_null());
    json_object_set_new(c, "inference_mode", json_true());
    if (!json_object_get(c, "modules_to_save"))
        json_object_set_new(c, "modules_to_save", json_null());
    for (const struct lv_peft_key *k = a->method->keys; k && k->name; k++) {
        if (json_object_get(c, k->name))
            continue;
        json_t *v = NULL;
        switch (k->type) {
        case LV_KEY_INT: v = json_integer(k->def ? strtoll(k->def, NULL, 10) : 0); break;
        case LV_KEY_FLOAT: v = json_real(k->def ? strtod(k->def, NULL) : 0); break;
        case LV_KEY_BOOL: v = json_boolean(k->def && strcmp(k->def, "true") == 0); break;
        case LV_KEY_STRING:
            v = !k->def ? json_null() : strcmp(k->def, "true") == 0 ? json_true()
                : strcmp(k->def, "false") == 0 ? json_false() : json_string(k->def);
            break;
        case LV_KEY_PATTERN: v = json_object(); break;
        case LV_KEY_MODULES:
            v = k->def ? json_loads(k->def, JSON_DECODE_ANY, NULL) : json_null();
            break;
        }
        json_object_set_new(c, k->name, v);
    }
    return c;
}

int lv_adapter_save(const struct lv_adapter *a, const char *dir)
{
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return lv_error("%s: %s", dir, strerror(errno));
    int n = a->n_shared;
    for (int i = 0; i < a->sites->n; i++)
        n += a->at[i].n + (a->at[i].save_w != NULL) + (a->at[i].save_b != NULL);
    lv_st_wtensor *wt = calloc((size_t)n + 1, sizeof *wt);
    char **names = calloc((size_t)n + 1, sizeof *names);
    float **bufs = calloc((size_t)n + 1, sizeof *bufs);
    int rc = wt && names && bufs ? LV_OK : lv_error_status(LV_ENOMEM, "%s: out of memory", dir);
    int j = 0;
    for (int i = 0; rc == LV_OK && i < a->sites->n; i++) {
        const struct lv_adapter_site *as = &a->at[i];
        long heads = qk_heads(a->sites, i);
        for (int k = 0; rc == LV_OK && k < as->n + 2; k++) {
            const lv_tensor *p = k < as->n ? as->p[k] : k == as->n ? as->save_w : as->save_b;
            if (!p)
                continue;
            char name[512];
            if (k < as->n)
                rc = lv_adapter_tensor_name(a, i, k, name, sizeof name);
            else
                snprintf(name, sizeof name, PREFIX "%s.%s", a->sites->s[i].module,
                         k == as->n ? "weight" : "bias");
            size_t bytes = (size_t)lv_tensor_nelem(p) * sizeof(float);
            if (rc == LV_OK && (!(names[j] = strdup(name)) || !(bufs[j] = malloc(bytes))))
                rc = lv_error_status(LV_ENOMEM, "%s: out of memory", dir);
            if (rc)
                break;
            memcpy(bufs[j], p->data, bytes);
            /* q/k B factors (and replaced q/k weights) go back to Hugging Face row order */
            bool b_like = k == as->n || (k < as->n && strstr(as->names[k], "lora_B"));
            if (heads && b_like && a->sites->meta_qk)
                rc = permute_rows(bufs[j], p->shape[0], p->shape[1], heads,
                                  (long)a->sites->head_dim, false);
            wt[j].name = names[j];
            wt[j].dtype = LV_ST_F32;
            wt[j].ndim = p->ndim;
            for (int d = 0; d < p->ndim; d++)
                wt[j].shape[d] = p->shape[d];
            wt[j].data = bufs[j];
            j++;
        }
    }
    for (int k = 0; rc == LV_OK && k < a->n_shared; k++, j++) {
        const lv_tensor *p = a->shared[k];
        size_t bytes = (size_t)lv_tensor_nelem(p) * sizeof(float);
        if (!(names[j] = strdup(a->shared_names[k])) || !(bufs[j] = malloc(bytes))) {
            rc = lv_error_status(LV_ENOMEM, "%s: out of memory", dir);
            break;
        }
        memcpy(bufs[j], p->data, bytes);
        wt[j] = (lv_st_wtensor){ .name = names[j], .dtype = LV_ST_F32, .ndim = p->ndim,
                                 .data = bufs[j] };
        for (int d = 0; d < p->ndim; d++)
            wt[j].shape[d] = p->shape[d];
    }
    char path[4200];
    json_t *c = rc == LV_OK ? config_out(a) : NULL;
    char *text = c ? json_dumps(c, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
    if (rc == LV_OK && !text)
        rc = lv_error_status(LV_ENOMEM, "%s: out of memory", dir);
    if (rc == LV_OK) {
        snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
        rc = lv_st_write(path, wt, j, NULL);
    }
    if (rc == LV_OK) {
        snprintf(path, sizeof path, "%s/adapter_config.json", dir);
        size_t tl = strlen(text);
        text[tl] = '\n';
        rc = lv_write_atomic(path, text, tl + 1);
        text[tl] = 0;
    }
    free(text);
    json_decref(c);
    for (int k = 0; k < n; k++) {
        free(names[k]);
        free(bufs[k]);
    }
    free(names);
    free(bufs);
    free(wt);
    return rc;
}
