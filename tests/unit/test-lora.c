/*
 * test-lora.c: sites, target selection, the adapter stack and LoRA against PyTorch.
 *
 * tests/reference/lora.bin (gen_lora.py, float64) holds the logits of the small random LLaVA
 * (llava-tiny/) with PEFT adapters written by the reference script: lora-tiny (all-linear, the
 * language model, the vision tower and the projector, llava-hf names), rslora-tiny (q_proj and
 * v_proj, rsLoRA, transformers >= 4.52 names) and lora-text.gguf (llama.cpp's LoRA GGUF of the
 * language-model half), and the gradients of every adapter parameter of a loss sum(logits * RL).
 * Tolerance 1e-5 per tensor (max|a - b| <= tol * max|b|).
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "lavinia/error.h"
#include "model/clip.h"
#include "model/llama.h"
#include "model/vlm.h"
#include "peft/adapter.h"
#include "refdata.h"
#include "testutil.h"

#define TOL 1e-5
#define REF_HINT "cd tests/reference && /usr/bin/python3 gen_lora.py"
#define NT 10                       /* positions of the spliced prompt */
#define V 96
#define C 48

static const char *top(void)
{
    const char *t = getenv("LV_TOP_SRCDIR");
    return t && *t ? t : ".";
}

struct model {
    struct lv_checkpoint ck;
    lv_llama *m;
    lv_clip *v;
    struct lv_site_table sites;
    struct lv_peft_stack *st;
    bool open;
};

/* the model of path (quant: LV_F32, or a block type the language model is quantised to) */
static bool model_open_q(struct model *md, const char *path, const char *mmproj, lv_dtype quant)
{
    memset(md, 0, sizeof *md);
    if (lv_checkpoint_open(&md->ck, path, mmproj, NULL) != LV_OK)
        return tu_assert(false, "%s opens (%s)", path, lv_errmsg());
    md->open = true;
    bool ok = lv_llama_load(&md->m, &md->ck, 0) == LV_OK &&
              (quant == LV_F32 || lv_llama_quantize(md->m, quant) == LV_OK) &&
              lv_clip_load(&md->v, &md->ck) == LV_OK &&
              lv_site_table_build(&md->sites, md->m, md->v, lv_naming_of(&md->ck)) == LV_OK &&
              (md->st = lv_peft_stack_new(&md->sites)) != NULL;
    if (ok) {
        lv_llama_set_stack(md->m, md->st);
        md->v->peft = md->st;
    }
    return tu_assert(ok, "model and sites of %s (%s)", path, ok ? "ok" : lv_errmsg());
}

static bool model_open(struct model *md, const char *path, const char *mmproj)
{
    return model_open_q(md, path, mmproj, LV_F32);
}

static void model_close(struct model *md)
{
    lv_peft_stack_free(md->st);
    lv_site_table_free(&md->sites);
    lv_llama_free(md->m);
    lv_clip_free(md->v);
    if (md->open)
        lv_checkpoint_close(&md->ck);
}

static bool add_adapter(struct model *md, const char *rel)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/tests/reference/%s", top(), rel);
    struct lv_adapter *a;
    int rc = lv_adapter_load(&a, path, &md->sites, &md->ck);
    if (rc == LV_OK && (rc = lv_peft_stack_add(md->st, a)) != LV_OK)
        lv_adapter_free(a);
    return tu_assert(rc == LV_OK, "%s loads (%s)", rel, rc == LV_OK ? "ok" : lv_errmsg());
}

/* the logits over the spliced prompt */
static int logits(struct model *md, const float *px, const int32_t *ids, float *out)
{
    float toks[4 * C], *seq = NULL;
    int64_t n = 0;
    int rc = lv_clip_encode(md->v, px, toks, NULL);
    if (rc == LV_OK)
        rc = lv_vlm_splice(md->m, ids, 7, 95, toks, 1, 4, &seq, &n);
    lv_llama_reset(md->m);
    if (rc == LV_OK)
        rc = n == NT ? lv_llama_forward_embd(md->m, seq, n, out, true) : LV_ERR;
    free(seq);
    return rc;
}

static double logits_err(struct model *md, const float *px, const int32_t *ids,
                         const struct ref_tensor *ref, float *out)
{
    return logits(md, px, ids, out) == LV_OK ? tu_rel_err(out, ref->data, NT * V) : 1.0;
}

/* d sum(logits * RL) for every adapter parameter: through the language model, then from the
 * image tokens' gradient through the projector and the tower */
static int gradients(struct model *md, const float *px, const int32_t *ids, const float *RL)
{
    for (int k = 0; k < md->st->n; k++)
        for (int i = 0; i < md->sites.n; i++)
            for (int j = 0; j < md->st->a[k]->at[i].n; j++)
                if (lv_tensor_zero_grad(md->st->a[k]->at[i].p[j]))
                    return LV_ERR;
    float toks[4 * C], dembd[NT * C], *seq = NULL;
    int64_t n = 0;
    int rc = lv_clip_encode(md->v, px, toks, NULL);
    if (rc == LV_OK)
        rc = lv_vlm_splice(md->m, ids, 7, 95, toks, 1, 4, &seq, &n);
    if (rc == LV_OK)
        rc = lv_llama_backward(md->m, NULL, seq, n, RL, NULL, dembd);
    if (rc == LV_OK)
        rc = lv_clip_backward(md->v, px, dembd + 3 * C, NULL);
    free(seq);
    return rc;
}

/* the logits of a training pass (the graph records) */
static int train_logits(struct model *md, const float *px, const int32_t *ids, const float *RL,
                        float *out)
{
    float toks[4 * C], *seq = NULL;
    int64_t n = 0;
    int rc = lv_clip_encode(md->v, px, toks, NULL);
    if (rc == LV_OK)
        rc = lv_vlm_splice(md->m, ids, 7, 95, toks, 1, 4, &seq, &n);
    if (rc == LV_OK)
        rc = lv_llama_backward(md->m, NULL, seq, n, RL, out, NULL);
    free(seq);
    return rc;
}

/* every parameter's gradient against the reference's (prefix k + site name for parameter
 * k; prefixes: "a.,b." for LoRA's A and B) */
static void check_grads(const struct ref_file *rf, const struct lv_adapter *a,
                        const char *prefixes, const char *what)
{
    double worst = 0;
    int n = 0;
    bool ok = true;
    char worst_name[80] = "";
    for (int i = 0; i < a->sites->n; i++)
        for (int k = 0; k < a->at[i].n; k++) {
            const lv_tensor *p = a->at[i].p[k];
            char name[80], pre[16] = "";
            const char *p0 = prefixes;
            for (int j = 0; j < k && p0; j++)
                p0 = strchr(p0, ',') ? strchr(p0, ',') + 1 : NULL;
            if (p0)
                snprintf(pre, sizeof pre, "%.*s", (int)strcspn(p0, ","), p0);
            snprintf(name, sizeof name, "%s%s", pre, a->sites->s[i].name);
            const struct ref_tensor *r = ref_get(rf, name, p->ndim, p->shape);
            if (!r) {
                ok = false;
                continue;
            }
            int64_t ne = lv_tensor_nelem(p);
            float *g = calloc((size_t)ne, sizeof *g);
            if (p->grad)
                memcpy(g, p->grad->data, (size_t)ne * sizeof *g);
            double mx = 0, e;
            for (int64_t j = 0; j < ne; j++)
                mx = fmax(mx, fabs(r->data[j]));
            if (mx == 0) {
                e = 0;
                for (int64_t j = 0; j < ne; j++)
                    e = fmax(e, fabs(g[j]));
            } else {
                e = tu_rel_err(g, r->data, ne);
            }
            free(g);
            n++;
            if (e > worst) {
                worst = e;
                snprintf(worst_name, sizeof worst_name, "%s", name);
            }
        }
    tu_assert(ok && n > 0 && worst <= TOL, "%s: gradients of all %d parameters, worst relative "
              "error %.2e (%s)", what, n, worst, worst_name);
}

/* --- target selection ------------------------------------------------------------------ */

static void check_selection(const struct lv_site_table *t, const char *targets_json,
                            const char *exclude_json, const char *layers_json,
                            const char *expect)
{
    json_t *targets = json_loads(targets_json, JSON_DECODE_ANY, NULL);
    json_t *exclude = exclude_json ? json_loads(exclude_json, JSON_DECODE_ANY, NULL) : NULL;
    json_t *layers = layers_json ? json_loads(layers_json, JSON_DECODE_ANY, NULL) : NULL;
    bool *sel = calloc((size_t)t->n, sizeof *sel);
    char got[2048] = "";
    int rc = lv_site_select(t, targets, exclude, layers, LV_SITE_LINEAR | LV_SITE_EMBED, sel,
                            "test");
    for (int i = 0; rc == LV_OK && i < t->n; i++)
        if (sel[i]) {
            size_t k = strlen(got);
            snprintf(got + k, sizeof got - k, "%s%s", k ? " " : "", t->s[i].name);
        }
    tu_assert(rc == LV_OK && strcmp(got, expect) == 0, "target_modules %s%s%s%s%s selects: %s",
              targets_json, exclude_json ? ", exclude " : "", exclude_json ? exclude_json : "",
              layers_json ? ", layers " : "", layers_json ? layers_json : "",
              rc == LV_OK ? got : lv_errmsg());
    if (strcmp(got, expect) != 0)
        printf("#   expected: %s\n", expect);
    free(sel);
    json_decref(targets);
    json_decref(exclude);
    json_decref(layers);
}

static void selection_tests(const struct lv_site_table *t)
{
    /* a suffix list: equal to an entry or ending in "." + entry */
    check_selection(t, "[\"o_proj\", \"fc2\"]", NULL, NULL,
                    "llm.0.attn.o llm.1.attn.o vit.0.mlp.fc2 vit.1.mlp.fc2 vit.2.mlp.fc2");
    check_selection(t, "[\"self_attn.q_proj\"]", NULL, NULL,
                    "llm.0.attn.q llm.1.attn.q vit.0.attn.q vit.1.attn.q vit.2.attn.q");
    /* a string is a regex over the whole module path (re.fullmatch), with \d and (?:) */
    check_selection(t, "\".*\\\\.layers\\\\.1\\\\.self_attn\\\\.(?:q|v)_proj\"", NULL, NULL,
                    "llm.1.attn.q llm.1.attn.v vit.1.attn.q vit.1.attn.v");
    check_selection(t, "\"language_model\\\\.model\\\\.layers\\\\.\\\\d+\\\\.mlp\\\\.down_proj\"",
                    NULL, NULL, "llm.0.ffn.down llm.1.ffn.down");
    check_selection(t, "\"down_proj\"", NULL, NULL, "");   /* fullmatch, not search */
    check_selection(t, "\"multi_modal_projector.*\"", NULL, NULL, "proj.1 proj.2");
    /* all-linear: every linear but the output head, the tower and projector included */
    check_selection(t, "\"all-linear\"", NULL, NULL,
                    "llm.0.attn.q llm.0.attn.k llm.0.attn.v llm.0.attn.o llm.0.ffn.gate "
                    "llm.0.ffn.up llm.0.ffn.down llm.1.attn.q llm.1.attn.k llm.1.attn.v "
                    "llm.1.attn.o llm.1.ffn.gate llm.1.ffn.up llm.1.ffn.down "
                    "vit.0.attn.q vit.0.attn.k vit.0.attn.v vit.0.attn.o vit.0.mlp.fc1 "
                    "vit.0.mlp.fc2 vit.1.attn.q vit.1.attn.k vit.1.attn.v vit.1.attn.o "
                    "vit.1.mlp.fc1 vit.1.mlp.fc2 vit.2.attn.q vit.2.attn.k vit.2.attn.v "
                    "vit.2.attn.o vit.2.mlp.fc1 vit.2.mlp.fc2 proj.1 proj.2");
    check_selection(t, "[\"q_proj\", \"v_proj\"]", "\".*vision_tower.*\"", NULL,
                    "llm.0.attn.q llm.0.attn.v llm.1.attn.q llm.1.attn.v");
    check_selection(t, "[\"q_proj\"]", NULL, "[1]", "llm.1.attn.q vit.1.attn.q");
    check_selection(t, "[\"embed_tokens\", \"lm_head\"]", NULL, NULL, "llm.embed llm.head");
}

/* --- files written by lavinia ------------------------------------------------------------ */

/* a fresh adapter saved in each naming: PEFT's keys, names and shapes (FORMATS.md §3) */
static void save_rules(struct model *md)
{
    static const struct { enum lv_naming nm; const char *q0, *vit, *proj; } cases[] = {
        { LV_NAMING_PLAIN, "base_model.model.model.layers.0.self_attn.q_proj",
          "base_model.model.vision_tower.vision_model.encoder.layers.0.mlp.fc1",
          "base_model.model.multi_modal_projector.linear_2" },
        { LV_NAMING_LLAVA_HUB, "base_model.model.language_model.model.layers.0.self_attn.q_proj",
          "base_model.model.vision_tower.vision_model.encoder.layers.0.mlp.fc1",
          "base_model.model.multi_modal_projector.linear_2" },
        { LV_NAMING_LLAVA_NEW, "base_model.model.model.language_model.layers.0.self_attn.q_proj",
          "base_model.model.model.vision_tower.vision_model.encoder.layers.0.mlp.fc1",
          "base_model.model.model.multi_modal_projector.linear_2" },
    };
    char tmp[256];
    const char *t0 = getenv("TMPDIR");
    snprintf(tmp, sizeof tmp, "%s/lv-lora-XXXXXX", t0 && *t0 ? t0 : "/tmp");
    if (!mkdtemp(tmp))
        return;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        struct lv_site_table t;
        if (lv_site_table_build(&t, md->m, md->v, cases[c].nm) != LV_OK)
            continue;
        json_t *cfg = json_pack("{s:s, s:i, s:f, s:s, s:b}", "peft_type", "LORA", "r", 3,
                                "lora_alpha", 6.0, "target_modules", "all-linear",
                                "use_rslora", 0);
        struct lv_adapter *a;
        char dir[400], path[500];
        snprintf(dir, sizeof dir, "%s/a%zu", tmp, c);
        int rc = lv_adapter_new(&a, lv_peft_find("lora"), cfg, &t, 7, "test");
        if (rc == LV_OK) {
            rc = lv_adapter_save(a, dir);
            lv_adapter_free(a);
        }
        json_decref(cfg);
        tu_assert(rc == LV_OK, "a new adapter saved in %s naming (%s)",
                  lv_naming_name(cases[c].nm), rc == LV_OK ? "ok" : lv_errmsg());
        snprintf(path, sizeof path, "%s/adapter_config.json", dir);
        json_t *j = json_load_file(path, 0, NULL);
        bool keys = j && strcmp(json_string_value(json_object_get(j, "peft_type")), "LORA") == 0 &&
                    json_integer_value(json_object_get(j, "r")) == 3 &&
                    json_number_value(json_object_get(j, "lora_alpha")) == 6.0 &&
                    json_is_string(json_object_get(j, "target_modules")) &&
                    json_is_false(json_object_get(j, "use_rslora")) &&
                    json_is_string(json_object_get(j, "task_type")) &&
                    json_is_string(json_object_get(j, "bias")) &&
                    json_is_number(json_object_get(j, "lora_dropout")) &&
                    json_is_boolean(json_object_get(j, "fan_in_fan_out")) &&
                    json_is_object(json_object_get(j, "rank_pattern")) &&
                    json_is_object(json_object_get(j, "alpha_pattern"));
        tu_assert(keys, "%s naming: adapter_config.json has PEFT's keys (peft_type LORA, r, "
                  "lora_alpha, target_modules, use_rslora, task_type, bias, lora_dropout, "
                  "fan_in_fan_out, rank_pattern, alpha_pattern)", lv_naming_name(cases[c].nm));
        json_decref(j);
        snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
        lv_st_file f;
        if (lv_st_open(&f, path) != LV_OK) {
            tu_assert(false, "%s opens (%s)", path, lv_errmsg());
        } else {
            char n[300];
            const lv_st_tensor *qa, *qb, *va, *pb;
            snprintf(n, sizeof n, "%s.lora_A.weight", cases[c].q0);
            qa = lv_st_find(&f, n);
            snprintf(n, sizeof n, "%s.lora_B.weight", cases[c].q0);
            qb = lv_st_find(&f, n);
            snprintf(n, sizeof n, "%s.lora_A.weight", cases[c].vit);
            va = lv_st_find(&f, n);
            snprintf(n, sizeof n, "%s.lora_B.weight", cases[c].proj);
            pb = lv_st_find(&f, n);
            const char *fmt = lv_st_meta_get(&f, "format");
            tu_assert(qa && qb && va && pb && f.n_tensors == 34 * 2 && fmt &&
                          strcmp(fmt, "pt") == 0 &&
                          qa->shape[0] == 3 && qa->shape[1] == C && qb->shape[0] == C &&
                          qb->shape[1] == 3 && va->shape[0] == 3 && va->shape[1] == 32 &&
                          pb->shape[0] == C && pb->shape[1] == 3,
                      "%s naming: %d tensors named %s.lora_{A,B}.weight ..., A (r, in), B "
                      "(out, r), format pt", lv_naming_name(cases[c].nm), f.n_tensors,
                      cases[c].q0);
            lv_st_close(&f);
        }
        lv_site_table_free(&t);
    }
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0)
        printf("# could not remove %s\n", tmp);
}

/* lavinia merge: each adapter folded into a Hugging Face directory that, loaded with no
 * adapter, gives the reference logits of base + adapter */
static void merge_case(struct model *md, const char *dir, float scale,
                       const struct ref_tensor *ref, const char *tmp, const float *px,
                       const int32_t *ids)
{
    for (int k = 0; k < md->st->n; k++)
        lv_peft_stack_set(md->st, k, false, 1.0f);
    if (!add_adapter(md, dir))
        return;
    lv_peft_stack_set(md->st, md->st->n - 1, true, scale);
    char out[400];
    snprintf(out, sizeof out, "%s/merged-%s-%g", tmp, dir, (double)scale);
    int rc = lv_adapters_write_merged(&md->ck, md->st, out, LV_CKPT_TYPE_COUNT);
    struct model mm;
    float logit[NT * V];
    double e = 1.0;
    if (rc == LV_OK && model_open(&mm, out, NULL)) {
        e = logits_err(&mm, px, ids, ref, logit);
        model_close(&mm);
    }
    tu_assert(rc == LV_OK && e <= TOL, "merge %s at scale %g, loaded as a plain model: "
              "relative error %.2e (%s)", dir, (double)scale, e, rc ? lv_errmsg() : "ok");
}

/* DoRA and IA3 (dora_ia3.bin, gen_dora_ia3.py): logits and every parameter's gradient */
static void dora_ia3(struct model *md, const float *px, const int32_t *ids, const float *RL,
                     const char *tmp, const float *base)
{
    struct ref_file rf;
    if (!ref_load(&rf, "dora_ia3", "cd tests/reference && /usr/bin/python3 gen_dora_ia3.py"))
        return;
    static const struct { const char *dir, *logits, *prefixes; } cases[] = {
        { "dora-tiny", "logits.dora", "da.,db.,dm." },
        { "ia3-tiny", "logits.ia3", "il." },
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        for (int k = 0; k < md->st->n; k++)
            lv_peft_stack_set(md->st, k, false, 1.0f);
        const struct ref_tensor *r = ref_get(&rf, cases[c].logits, 2, (int64_t[]){ NT, V });
        if (!r || !add_adapter(md, cases[c].dir))
            continue;
        const struct lv_adapter *a = md->st->a[md->st->n - 1];
        float out[NT * V];
        double e = logits_err(md, px, ids, r, out);
        tu_assert(e <= TOL, "%s (method %s): logits, relative error %.2e", cases[c].dir,
                  a->method->name, e);
        int rc = gradients(md, px, ids, RL);
        if (tu_assert(rc == LV_OK, "%s: backward (%s)", cases[c].dir, rc ? lv_errmsg() : "ok"))
            check_grads(&rf, a, cases[c].prefixes, cases[c].dir);
        /* folded into the loaded weights and taken out again */
        int k = md->st->n - 1;
        rc = lv_peft_stack_merge(md->st, k);
        e = rc == LV_OK ? logits_err(md, px, ids, r, out) : 1.0;
        tu_assert(e <= TOL && md->st->active[lv_site_llm(&md->sites, 0, LV_LLM_V)] == 0,
                  "%s merged into the model in memory: the adapter's logits (relative error "
                  "%.2e), with nothing left to compute at its sites", cases[c].dir, e);
        float unmerged[NT * V];
        lv_peft_stack_set(md->st, k, false, 1.0f);
        rc = lv_peft_stack_unmerge(md->st, k);
        tu_assert(rc == LV_OK && logits(md, px, ids, unmerged) == LV_OK &&
                      memcmp(unmerged, base, sizeof unmerged) == 0,
                  "%s unmerged and disabled: the base's logits bit for bit", cases[c].dir);
    }
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const struct ref_tensor *r = ref_get(&rf, cases[c].logits, 2, (int64_t[]){ NT, V });
        if (r)
            merge_case(md, cases[c].dir, 1.0f, r, tmp, px, ids);
    }
    ref_done(&rf);
}

/* ||a - b|| / ||b|| over every trainable gradient of adapter a against the reference's */
static double grad_vector_err(const struct ref_file *rf, const struct lv_adapter *a)
{
    double d = 0, n = 0;
    for (int i = 0; i < a->sites->n; i++)
        for (int k = 0; k < a->at[i].n; k++) {
            const lv_tensor *p = a->at[i].p[k];
            char name[80];
            snprintf(name, sizeof name, "%s%s", k ? "b." : "a.", a->sites->s[i].name);
            const struct ref_tensor *r = ref_get(rf, name, p->ndim, p->shape);
            if (!r)
                return 1.0;
            for (int64_t j = 0; j < lv_tensor_nelem(p); j++) {
                double g = p->grad ? ((float *)p->grad->data)[j] : 0.0;
                d += (g - r->data[j]) * (g - r->data[j]);
                n += r->data[j] * r->data[j];
            }
        }
    return n > 0 ? sqrt(d / n) : 1.0;
}

/* QLoRA: lora-tiny over the language model quantised to NF4, against the same adapter on
 * the F32 base (the reference): what 4-bit base weights cost the outputs and the gradients */
static void qlora(const char *path, const float *px, const int32_t *ids, const float *RL,
                  const struct ref_tensor *base_ref, const struct ref_tensor *r_lora,
                  const struct ref_file *rf)
{
    struct model md;
    if (!model_open_q(&md, path, NULL, LV_NF4))
        return;
    float out[NT * V];
    double e0 = logits_err(&md, px, ids, base_ref, out);
    if (add_adapter(&md, "lora-tiny")) {
        double e = logits_err(&md, px, ids, r_lora, out);
        /* tolerances (docs/NOTES.md): this 48-wide random model loses more to 4 bits than
         * a trained one: its NF4 base alone is 0.33 from the F32 base */
        tu_assert(e <= 0.25 && e <= e0, "QLoRA (lora-tiny over an NF4 language model): logits "
                  "within 0.25 of the F32 base's with the adapter, and no further than the "
                  "bases are from each other (relative error %.3f; NF4 base to F32 base %.3f)",
                  e, e0);
        int rc = gradients(&md, px, ids, RL);
        double eg = rc == LV_OK ? grad_vector_err(rf, md.st->a[0]) : 1.0;
        tu_assert(eg <= 0.5, "QLoRA: the adapter's gradient vector within 0.5 of the F32 "
                  "base's (||g - g_f32|| / ||g_f32|| = %.3f)", eg);
        char dir[400];
        const char *t0 = getenv("TMPDIR");
        snprintf(dir, sizeof dir, "%s/lv-qlora-XXXXXX", t0 && *t0 ? t0 : "/tmp");
        if (mkdtemp(dir)) {
            char cfg[500], cmd[500];
            rc = lv_adapter_save(md.st->a[0], dir);
            snprintf(cfg, sizeof cfg, "%s/adapter_config.json", dir);
            json_t *j = json_load_file(cfg, 0, NULL);
            tu_assert(rc == LV_OK && j && strcmp(json_string_value(json_object_get(j,
                          "peft_type")), "LORA") == 0, "a QLoRA adapter saves as a plain "
                      "LoRA folder (peft_type LORA), as PEFT does");
            json_decref(j);
            snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
            if (system(cmd) != 0)
                printf("# could not remove %s\n", dir);
        }
    }
    /* DoRA over NF4: its norm reads the 4-bit weight */
    struct ref_file dr;
    if (ref_load(&dr, "dora_ia3", "cd tests/reference && /usr/bin/python3 gen_dora_ia3.py")) {
        const struct ref_tensor *r = ref_get(&dr, "logits.dora", 2, (int64_t[]){ NT, V });
        lv_peft_stack_set(md.st, 0, false, 1.0f);
        if (r && add_adapter(&md, "dora-tiny")) {
            double e = logits_err(&md, px, ids, r, out);
            tu_assert(e <= 0.25 && e <= e0, "QLoRA with DoRA (dora-tiny over the NF4 language "
                      "model): logits %.3f from the F32 base's", e);
        }
        ref_done(&dr);
    }
    model_close(&md);
}

/* the plugins of plugins/ (built as modules, loaded from the build tree): VeRA and prompt
 * tuning against gen_plugins.py */
static void plugin_methods(struct model *md, const float *px, const int32_t *ids,
                           const float *RL, const char *tmp)
{
    const char *b = getenv("LV_TOP_BUILDDIR");
    char dir[1200];
    snprintf(dir, sizeof dir, "%s/plugins/.libs", b && *b ? b : ".");
    int added = lv_peft_load_plugins(dir);
    if (!tu_assert(lv_peft_find("vera") && lv_peft_find("prompt_tuning"), "plugins from %s: "
                   "vera and prompt_tuning registered (%d files)", dir, added))
        return;
    struct ref_file rf;
    if (!ref_load(&rf, "plugins", "cd tests/reference && /usr/bin/python3 gen_plugins.py"))
        return;
    const struct ref_tensor *rv = ref_get(&rf, "logits.vera", 2, (int64_t[]){ NT, V });
    const struct ref_tensor *rp = ref_get(&rf, "logits.ptune", 2, (int64_t[]){ NT, V });
    const struct ref_tensor *gp = ref_get(&rf, "prompt", 2, (int64_t[]){ 3, C });
    for (int k = 0; k < md->st->n; k++)
        lv_peft_stack_set(md->st, k, false, 1.0f);
    float out[NT * V];
    if (rv && add_adapter(md, "vera-tiny")) {
        const struct lv_adapter *a = md->st->a[md->st->n - 1];
        double e = logits_err(md, px, ids, rv, out);
        tu_assert(e <= TOL, "vera-tiny (plugin, shared projections sliced for 4 shapes): "
                  "logits, relative error %.2e", e);
        if (tu_assert(gradients(md, px, ids, RL) == LV_OK, "vera-tiny: backward"))
            check_grads(&rf, a, "vb.,vd.", "vera-tiny");
        tu_assert(!a->shared[0]->grad && !a->shared[1]->grad, "vera-tiny: the projections are "
                  "frozen (no gradient)");
        merge_case(md, "vera-tiny", 1.0f, rv, tmp, px, ids);
    }
    for (int k = 0; k < md->st->n; k++)
        lv_peft_stack_set(md->st, k, false, 1.0f);
    if (rp && gp && add_adapter(md, "ptune-tiny")) {
        const struct lv_adapter *a = md->st->a[md->st->n - 1];
        double e = logits_err(md, px, ids, rp, out);
        tu_assert(e <= TOL, "ptune-tiny (plugin, 3 rows before the prompt): logits of the "
                  "prompt's positions, relative error %.2e", e);
        lv_tensor_zero_grad(a->shared[0]);
        int rc = gradients(md, px, ids, RL);
        double eg = rc == LV_OK ? tu_rel_err(a->shared[0]->grad->data, gp->data, 3 * C) : 1.0;
        tu_assert(eg <= TOL, "ptune-tiny: gradient of the rows, relative error %.2e", eg);
        /* saved by lavinia: PEFT's layout (prompt_embeddings, no module prefix) */
        char d[400];
        snprintf(d, sizeof d, "%s/ptune-saved", tmp);
        struct lv_adapter *back = NULL;
        rc = lv_adapter_save(a, d);
        if (rc == LV_OK)
            rc = lv_adapter_load(&back, d, &md->sites, &md->ck);
        tu_assert(rc == LV_OK && back && back->n_shared == 1 &&
                      memcmp(back->shared[0]->data, a->shared[0]->data, 3 * C * sizeof(float)) == 0,
                  "ptune-tiny saved and read back (%s)", rc ? lv_errmsg() : "ok");
        lv_adapter_free(back);
    }
    ref_done(&rf);
}

int main(int argc, char **argv)
{
    tu_init(argc, argv, "lora");
    struct ref_file rf;
    if (!ref_load(&rf, "lora", REF_HINT))
        return tu_finish();
    struct ref_file lr;
    if (!ref_load(&lr, "llava", "cd tests/reference && /usr/bin/python3 gen_llava.py")) {
        ref_done(&rf);
        return tu_finish();
    }
    const struct ref_tensor *pixels = ref_get(&lr, "pixels", 3, (int64_t[]){ 3, 28, 28 });
    const struct ref_tensor *idsr = ref_get(&lr, "ids", 1, (int64_t[]){ 7 });
    const struct ref_tensor *base_ref = ref_get(&lr, "logits", 2, (int64_t[]){ NT, V });
    const struct ref_tensor *r_lora = ref_get(&rf, "logits.lora", 2, (int64_t[]){ NT, V });
    const struct ref_tensor *r_rs = ref_get(&rf, "logits.rslora", 2, (int64_t[]){ NT, V });
    const struct ref_tensor *r_stack = ref_get(&rf, "logits.stack", 2, (int64_t[]){ NT, V });
    const struct ref_tensor *r_half = ref_get(&rf, "logits.half", 2, (int64_t[]){ NT, V });
    const struct ref_tensor *r_text = ref_get(&rf, "logits.text", 2, (int64_t[]){ NT, V });
    const struct ref_tensor *RLr = ref_get(&rf, "RL", 2, (int64_t[]){ NT, V });
    const struct ref_tensor *r_mts = ref_get(&rf, "logits.mts", 2, (int64_t[]){ NT, V });
    char path[1200], gg[400], mm[400], tmp[256];
    snprintf(path, sizeof path, "%s/tests/reference/llava-tiny", top());
    const char *t0 = getenv("TMPDIR");
    snprintf(tmp, sizeof tmp, "%s/lv-lora-XXXXXX", t0 && *t0 ? t0 : "/tmp");
    if (!mkdtemp(tmp))
        return tu_assert(false, "a temporary directory (%s)", tmp), tu_finish();
    struct model md;
    if (!pixels || !idsr || !base_ref || !r_lora || !r_rs || !r_stack || !r_half || !r_text ||
        !RLr || !r_mts || !model_open(&md, path, NULL)) {
        ref_done(&rf);
        ref_done(&lr);
        return tu_finish();
    }
    float px[3 * 28 * 28], RL[NT * V], base[NT * V], out[NT * V], out2[NT * V];
    int32_t ids[7];
    for (int i = 0; i < 3 * 28 * 28; i++)
        px[i] = (float)pixels->data[i];
    for (int i = 0; i < NT * V; i++)
        RL[i] = (float)RLr->data[i];
    for (int i = 0; i < 7; i++)
        ids[i] = (int32_t)idsr->data[i];

    tu_assert(md.sites.naming == LV_NAMING_LLAVA_HUB && md.sites.n == 1 + 2 * 9 + 3 * 8 + 2 + 1 &&
                  strcmp(md.sites.s[lv_site_llm(&md.sites, 1, LV_LLM_Q)].module,
                         "language_model.model.layers.1.self_attn.q_proj") == 0 &&
                  strcmp(md.sites.s[lv_site_vit(&md.sites, 2, LV_VIT_O)].name, "vit.2.attn.o") == 0 &&
                  strcmp(md.sites.s[lv_site_llm(&md.sites, 1, LV_LLM_Q)].gguf,
                         "blk.1.attn_q.weight") == 0 &&
                  strcmp(md.sites.s[lv_site_llm(&md.sites, 0, LV_LLM_ATTN_IN)].gguf,
                         "blk.0.attn_norm.weight") == 0 &&
                  strcmp(md.sites.s[lv_site_vit(&md.sites, 1, LV_VIT_FC1)].gguf,
                         "v.blk.1.ffn_down.weight") == 0 &&
                  strcmp(md.sites.s[lv_site_proj(&md.sites, 1)].gguf, "mm.2.weight") == 0 &&
                  strcmp(md.sites.s[LV_SITE_EMBED_INDEX].gguf, "token_embd.weight") == 0 &&
                  strcmp(md.sites.s[lv_site_head(&md.sites)].gguf, "output.weight") == 0,
              "%d sites, llava-hf module paths and GGUF names", md.sites.n);
    selection_tests(&md.sites);

    double e = logits_err(&md, px, ids, base_ref, base);
    tu_assert(e <= TOL, "no adapter: the base logits, relative error %.2e", e);

    /* lora-tiny: all-linear, llava-hf names */
    if (add_adapter(&md, "lora-tiny")) {
        const struct lv_adapter *a = md.st->a[0];
        e = logits_err(&md, px, ids, r_lora, out);
        tu_assert(e <= TOL, "lora-tiny (r 4, all-linear: decoder, tower, projector; %lld "
                  "values): logits, relative error %.2e", (long long)a->n_params, e);
        int rc = gradients(&md, px, ids, RL);
        tu_assert(rc == LV_OK, "backward through the model (%s)", rc ? lv_errmsg() : "ok");
        if (rc == LV_OK)
            check_grads(&rf, a, "a.,b.", "lora-tiny");
        /* disabled, or scale 0: the base model bit for bit */
        lv_peft_stack_set(md.st, 0, false, 1.0f);
        tu_assert(logits(&md, px, ids, out) == LV_OK && memcmp(out, base, sizeof out) == 0,
                  "disabled: logits bit-identical to the base");
        lv_peft_stack_set(md.st, 0, true, 0.0f);
        tu_assert(logits(&md, px, ids, out) == LV_OK && memcmp(out, base, sizeof out) == 0,
                  "scale 0: logits bit-identical to the base");
        lv_peft_stack_set(md.st, 0, true, 0.5f);
        e = logits_err(&md, px, ids, r_half, out);
        tu_assert(e <= TOL, "scale 0.5: the logits of half the update, relative error %.2e", e);
        lv_peft_stack_set(md.st, 0, true, 1.0f);
    }
    /* rslora-tiny: q_proj and v_proj by suffix, rsLoRA, transformers >= 4.52 names */
    if (add_adapter(&md, "rslora-tiny")) {
        const struct lv_adapter *a = md.st->a[md.st->n - 1];
        int on = 0;
        for (int i = 0; i < md.sites.n; i++)
            on += a->at[i].on;
        tu_assert(on == 2 * 2 + 3 * 2 && fabsf(a->at[lv_site_llm(&md.sites, 0, LV_LLM_Q)].vals[0] -
                                              (float)(4 / sqrt(2))) < 1e-6f,
                  "rslora-tiny: %d sites (q and v of 2 decoder and 3 tower layers), scaling "
                  "alpha / sqrt(r)", on);
        e = logits_err(&md, px, ids, r_stack, out);
        tu_assert(e <= TOL, "lora-tiny and rslora-tiny stacked: relative error %.2e", e);
        lv_peft_stack_set(md.st, 0, false, 1.0f);
        e = logits_err(&md, px, ids, r_rs, out);
        tu_assert(e <= TOL, "rslora-tiny alone: relative error %.2e", e);
        int rc = gradients(&md, px, ids, RL);
        if (tu_assert(rc == LV_OK, "backward with rslora-tiny (%s)", rc ? lv_errmsg() : "ok"))
            check_grads(&rf, a, "ra.,rb.", "rslora-tiny");
        lv_peft_stack_set(md.st, 0, true, 1.0f);
    }

    /* saved by lavinia and read back: the same logits */
    if (md.st->n == 2) {
        char dir[400];
        snprintf(dir, sizeof dir, "%s/saved", tmp);
        int rc = lv_adapter_save(md.st->a[1], dir);
        struct lv_adapter *b = NULL;
        if (rc == LV_OK)
            rc = lv_adapter_load(&b, dir, &md.sites, &md.ck);
        lv_peft_stack_set(md.st, 0, false, 1.0f);
        lv_peft_stack_set(md.st, 1, false, 1.0f);
        if (rc == LV_OK && (rc = lv_peft_stack_add(md.st, b)) != LV_OK)
            lv_adapter_free(b);
        e = rc == LV_OK ? logits_err(&md, px, ids, r_rs, out) : 1.0;
        tu_assert(e <= TOL, "rslora-tiny saved by lavinia and loaded again: relative error %.2e "
                  "(%s)", e, rc == LV_OK ? "ok" : lv_errmsg());
    }
    save_rules(&md);
    /* modules_to_save: a new projector and output head in place of the base's */
    lv_peft_stack_set(md.st, md.st->n - 1, false, 1.0f);
    if (add_adapter(&md, "lora-mts")) {
        const struct lv_adapter *a = md.st->a[md.st->n - 1];
        int head = lv_site_head(&md.sites), p1 = lv_site_proj(&md.sites, 0);
        e = logits_err(&md, px, ids, r_mts, out);
        tu_assert(a->at[head].save_w && a->at[p1].save_w && a->at[p1].save_b && e <= TOL,
                  "lora-mts (q_proj, modules_to_save: projector and lm_head): relative error "
                  "%.2e", e);
        char dir[400];
        snprintf(dir, sizeof dir, "%s/mts", tmp);
        struct lv_adapter *b = NULL;
        int rc = lv_adapter_save(a, dir);
        if (rc == LV_OK)
            rc = lv_adapter_load(&b, dir, &md.sites, &md.ck);
        lv_peft_stack_set(md.st, md.st->n - 1, false, 1.0f);
        if (rc == LV_OK && (rc = lv_peft_stack_add(md.st, b)) != LV_OK)
            lv_adapter_free(b);
        e = rc == LV_OK ? logits_err(&md, px, ids, r_mts, out) : 1.0;
        tu_assert(e <= TOL, "lora-mts saved by lavinia and loaded again: relative error %.2e "
                  "(%s)", e, rc == LV_OK ? "ok" : lv_errmsg());
        /* a modules_to_save tensor for a module the model lacks */
        if (rc == LV_OK) {
            char path2[500];
            snprintf(path2, sizeof path2, "%s/adapter_model.safetensors", dir);
            float junk[4] = { 0 };
            lv_st_wtensor wt = { .name = "base_model.model.model.extra_head.weight",
                                 .dtype = LV_ST_F32, .ndim = 2, .shape = { 2, 2 },
                                 .data = junk };
            lv_st_write(path2, &wt, 1, NULL);
            snprintf(path2, sizeof path2, "%s/adapter_config.json", dir);
            FILE *f = fopen(path2, "w");
            if (f) {
                fputs("{\"peft_type\": \"LORA\", \"r\": 2, \"target_modules\": [\"q_proj\"],"
                      " \"modules_to_save\": [\"extra_head\"]}\n", f);
                fclose(f);
            }
            rc = lv_adapter_load(&b, dir, &md.sites, &md.ck);
            tu_assert(rc != LV_OK && strstr(lv_errmsg(), "extra_head"), "a modules_to_save "
                      "tensor of a module the model lacks is refused: %s", lv_errmsg());
        }
    }
    /* PEFT's initialisation: B zero, so a new adapter leaves the model as it was */
    {
        json_t *cfg = json_pack("{s:s, s:i, s:f, s:s}", "peft_type", "LORA", "r", 8,
                                "lora_alpha", 16.0, "target_modules", "all-linear");
        struct lv_adapter *a = NULL;
        for (int k = 0; k < md.st->n; k++)
            lv_peft_stack_set(md.st, k, false, 1.0f);
        int rc = lv_adapter_new(&a, lv_peft_find("lora"), cfg, &md.sites, 42, "fresh");
        json_decref(cfg);
        bool init_ok = rc == LV_OK;
        for (int i = 0; init_ok && i < md.sites.n; i++) {
            if (!a->at[i].on)
                continue;
            const lv_tensor *A = a->at[i].p[0], *B = a->at[i].p[1];
            double bound = 1.0 / sqrt((double)A->shape[1]), amax = 0;
            for (int64_t j = 0; j < lv_tensor_nelem(A); j++)
                amax = fmax(amax, fabs(((float *)A->data)[j]));
            for (int64_t j = 0; j < lv_tensor_nelem(B); j++)
                init_ok &= ((float *)B->data)[j] == 0.0f;
            init_ok &= amax <= bound && amax > 0.5 * bound;
        }
        if (rc == LV_OK && (rc = lv_peft_stack_add(md.st, a)) != LV_OK)
            lv_adapter_free(a);
        tu_assert(init_ok && rc == LV_OK && logits(&md, px, ids, out) == LV_OK &&
                      memcmp(out, base, sizeof out) == 0,
                  "a new LoRA (A Kaiming-uniform within 1/sqrt(in), B zero): logits "
                  "bit-identical to the base");
        /* dropout applies in training only */
        if (rc == LV_OK) {
            lv_peft_stack_set(md.st, md.st->n - 1, false, 1.0f);
            for (int k = 0; k < md.st->n; k++)
                if (strcmp(md.st->a[k]->name, "lora-tiny") == 0)
                    lv_peft_stack_set(md.st, k, true, 1.0f);
            md.st->training = true;
            rc = train_logits(&md, px, ids, RL, out2);
            md.st->training = false;
            double d = rc == LV_OK ? tu_rel_err(out2, r_lora->data, NT * V) : 0;
            e = train_logits(&md, px, ids, RL, out) == LV_OK
                    ? tu_rel_err(out, r_lora->data, NT * V) : 1.0;
            tu_assert(rc == LV_OK && d > 1e-3 && e <= TOL, "lora_dropout 0.05 changes the "
                      "logits of a training pass (relative difference %.2e), not those of a "
                      "pass without dropout (%.2e)",
                      d, e);
        }
    }
    dora_ia3(&md, px, ids, RL, tmp, base);
    merge_case(&md, "lora-tiny", 1.0f, r_lora, tmp, px, ids);
    merge_case(&md, "lora-tiny", 0.5f, r_half, tmp, px, ids);
    merge_case(&md, "lora-mts", 1.0f, r_mts, tmp, px, ids);
    plugin_methods(&md, px, ids, RL, tmp);
    model_close(&md);

    qlora(path, px, ids, RL, base_ref, r_lora, &rf);

    /* llama.cpp's LoRA GGUF of the language-model half, on the Hugging Face base */
    if (model_open(&md, path, NULL)) {
        if (add_adapter(&md, "lora-text.gguf")) {
            e = logits_err(&md, px, ids, r_text, out);
            tu_assert(e <= TOL, "lora-text.gguf (q/k B rows in Meta order) on the Hugging Face "
                      "base: relative error %.2e", e);
        }
        /* the same model written as GGUF + mmproj (q/k rows in Meta order) */
        snprintf(gg, sizeof gg, "%s/llava.gguf", tmp);
        lv_checkpoint_mmproj_path(gg, mm, sizeof mm);
        int rc = lv_checkpoint_write_gguf(&md.ck, gg);
        tu_assert(rc == LV_OK, "llava-tiny written as GGUF + mmproj (%s)", rc ? lv_errmsg() : "ok");
        model_close(&md);
        struct model gm;
        if (rc == LV_OK && model_open(&gm, gg, mm)) {
            if (add_adapter(&gm, "lora-text.gguf")) {
                e = logits_err(&gm, px, ids, r_text, out);
                tu_assert(e <= TOL, "lora-text.gguf on the GGUF base: relative error %.2e", e);
            }
            lv_peft_stack_set(gm.st, 0, false, 1.0f);
            if (add_adapter(&gm, "lora-tiny")) {
                e = logits_err(&gm, px, ids, r_lora, out2);
                tu_assert(e <= TOL, "the PEFT folder lora-tiny on the GGUF base (q/k B rows "
                          "permuted at load): relative error %.2e", e);
            }
            model_close(&gm);
        }
    }
    /* a base that does not fit: a language model of another width */
    {
        struct lv_model_config c;
        lv_model_config_init(&c);
        c.vocab = V;
        c.dim = 64;
        c.hidden = 96;
        c.n_layers = 2;
        c.n_heads = 4;
        c.n_kv_heads = 2;
        c.head_dim = 16;
        c.max_seq = 32;
        lv_llama *m = NULL;
        struct lv_site_table t;
        struct lv_adapter *a = NULL;
        char lp[1200];
        snprintf(lp, sizeof lp, "%s/tests/reference/rslora-tiny", top());
        if (lv_llama_new_random(&m, &c, LV_F32, 1, 0) == LV_OK &&
            lv_site_table_build(&t, m, NULL, LV_NAMING_LLAVA_NEW) == LV_OK) {
            int rc = lv_adapter_load(&a, lp, &t, NULL);
            tu_assert(rc != LV_OK && strstr(lv_errmsg(), "lora_A.weight") &&
                          strstr(lv_errmsg(), "shape"),
                      "rslora-tiny on a model of width 64 is refused: %s", lv_errmsg());
            lv_adapter_free(a);
            lv_site_table_free(&t);
        }
        lv_llama_free(m);
    }
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0)
        printf("# could not remove %s\n", tmp);
    ref_done(&rf);
    ref_done(&lr);
    return tu_finish();
}
