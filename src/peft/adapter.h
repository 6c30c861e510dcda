/*
 * adapter.h (internal): sites of a model, adapters, the adapter stack, adapter files.
 *
 *     struct lv_site_table sites;
 *     lv_site_table_build(&sites, llama, clip, LV_NAMING_LLAVA_HUB);
 *     struct lv_adapter *a;
 *     lv_adapter_load(&a, "my-lora/", &sites, 1.0f);     // a PEFT folder or a LoRA GGUF
 *     struct lv_peft_stack *st = lv_peft_stack_new(&sites);
 *     lv_peft_stack_add(st, a);                           // the stack owns it now
 *     lv_llama_set_stack(llama, st);                      // the model calls it at each site
 *
 * Site indices: the embedding first, then for each language-model layer LV_LLM_SITES sites
 * (enum lv_llm_site), then for each vision layer LV_VIT_SITES (enum lv_vit_site), then the
 * projector's one or two linears, then the output head (a linear site that "all-linear"
 * leaves out, as PEFT does).
 */
#ifndef LV_PEFT_ADAPTER_H
#define LV_PEFT_ADAPTER_H

#include <regex.h>
#include <stdbool.h>
#include <stdint.h>

#include "lavinia/peft.h"

struct lv_llama;
struct lv_clip;
struct lv_checkpoint;

enum lv_llm_site {
    LV_LLM_ATTN_IN, LV_LLM_Q, LV_LLM_K, LV_LLM_V, LV_LLM_O,
    LV_LLM_FFN_IN, LV_LLM_GATE, LV_LLM_UP, LV_LLM_DOWN,
    LV_LLM_SITES
};

enum lv_vit_site {
    LV_VIT_ATTN_IN, LV_VIT_Q, LV_VIT_K, LV_VIT_V, LV_VIT_O,
    LV_VIT_MLP_IN, LV_VIT_FC1, LV_VIT_FC2,
    LV_VIT_SITES
};

/* How the base checkpoint names its modules (PEFT's module paths follow it). */
enum lv_naming {
    LV_NAMING_PLAIN,        /* model.layers.N..., lm_head (LLaMA; LLaVA written by lavinia
                               as a text model) */
    LV_NAMING_LLAVA_HUB,    /* language_model.model.layers.N..., vision_tower.vision_model...,
                               multi_modal_projector... (llava-hf on the hub) */
    LV_NAMING_LLAVA_NEW,    /* model.language_model.layers.N..., model.vision_tower...,
                               model.multi_modal_projector... (transformers >= 4.52) */
};

struct lv_site_table {
    struct lv_peft_site *s;
    int n;
    int n_llm, n_vit;           /* layers */
    int n_proj;                 /* projector linears: 0, 1 or 2 */
    enum lv_naming naming;
    bool meta_qk;               /* the model's q/k rows are in Meta order (a GGUF base): the
                                   B factors of q/k adapters are permuted to match */
    int64_t n_heads, n_kv_heads, head_dim;
    char *strings;              /* names and paths */
    lv_tensor ***wslot, ***bslot;   /* where the models keep each site's weight and bias, so
                                       that an adapter can be merged into them (or NULL) */
};

/* The sites of a language model and, if v is not NULL, its vision tower and projector. The
 * table points into the models (their weights, and where they keep them). */
int lv_site_table_build(struct lv_site_table *t, struct lv_llama *m, struct lv_clip *v,
                        enum lv_naming naming);
void lv_site_table_free(struct lv_site_table *t);
static inline int lv_site_llm(const struct lv_site_table *t, int layer, enum lv_llm_site k)
{
    (void)t;
    return 1 + layer * LV_LLM_SITES + (int)k;
}
static inline int lv_site_vit(const struct lv_site_table *t, int layer, enum lv_vit_site k)
{
    return 1 + t->n_llm * LV_LLM_SITES + layer * LV_VIT_SITES + (int)k;
}
static inline int lv_site_proj(const struct lv_site_table *t, int i)
{
    return 1 + t->n_llm * LV_LLM_SITES + t->n_vit * LV_VIT_SITES + i;
}
static inline int lv_site_head(const struct lv_site_table *t)
{
    return t->n - 1;
}
#define LV_SITE_EMBED_INDEX 0
/* The site whose module path (in any naming) is module, or -1. */
int lv_site_find_module(const struct lv_site_table *t, const char *module);
int lv_site_find_name(const struct lv_site_table *t, const char *name);
/* The naming a checkpoint uses for its modules. */
enum lv_naming lv_naming_of(const struct lv_checkpoint *ck);
const char *lv_naming_name(enum lv_naming n);
/* A module path in any naming -> the plain one ("language_model.model.layers.0.mlp.up_proj"
 * -> "model.layers.0.mlp.up_proj"); false when out is too small. */
bool lv_module_canonical(const char *module, char *out, size_t n);

/* PEFT's target selection. targets: a JSON string (a regex that must match the whole module
 * path, or "all-linear") or a list of strings (a module path equal to an entry or ending in
 * "." + entry); exclude likewise (NULL: none); layers: NULL, or a list of layer indices
 * (layers_to_transform). Sets sel[i] for every selected site of a kind in the kinds mask.
 * what names the configuration in messages. */
struct json_t;
/* Compile a Python-syntax regex (the forms PEFT configs use) as POSIX ERE between before and
 * after; repeat bounds are limited. An error names what. */
int lv_py_regcomp(regex_t *rx, const char *py, const char *before, const char *after,
                  const char *what);
/* Does a target spec (a JSON list of suffixes or a regex string) name module? 1 yes, 0 no,
 * -1 a bad regex (message set). */
int lv_site_spec_match(const struct json_t *spec, const char *module, const char *what);
int lv_site_select(const struct lv_site_table *t, const struct json_t *targets,
                   const struct json_t *exclude, const struct json_t *layers, unsigned kinds,
                   bool *sel, const char *what);

/* --- adapters ------------------------------------------------------------------------ */

struct lv_adapter_site {
    bool on;
    int n;                              /* parameters */
    lv_tensor **p;
    char **names;                       /* "lora_A.weight" */
    float vals[LV_PEFT_VALUES];
    void *state;                        /* method's per-sequence state */
    size_t state_bytes;
    lv_tensor *save_w, *save_b;         /* modules_to_save: a whole new weight (and bias) for
                                           this module, used in place of the base's */
};

struct lv_adapter {
    char name[128];                     /* for lists and messages: the folder's name */
    char path[4096];
    const struct lv_peft_method *method;
    struct json_t *config;              /* adapter_config.json, as read or made */
    uint64_t seed;
    const struct lv_site_table *sites;
    struct lv_adapter_site *at;         /* [sites->n] */
    int n_shared;
    lv_tensor **shared;
    char **shared_names;
    float vals[LV_PEFT_VALUES];
    int64_t n_params;                   /* trainable values */
    bool enabled;
    float scale;
    bool merged;                        /* folded into the model's weights (stack_merge) */
    lv_tensor **orig_w, **orig_b;       /* [sites->n] while merged: the weights it replaced */
    lv_tensor **merged_w, **merged_b;   /* [sites->n] while merged: the merged weights */
};

/* A new adapter of method on the sites config selects (adapter_config.json keys: the
 * method's own and target_modules, exclude_modules, layers_to_transform), parameters from
 * the method's init with seed. config is borrowed (a reference is taken). */
int lv_adapter_new(struct lv_adapter **out, const struct lv_peft_method *method,
                   struct json_t *config, const struct lv_site_table *sites, uint64_t seed,
                   const char *what);
void lv_adapter_free(struct lv_adapter *a);
/* Read a Hugging Face PEFT folder (adapter_config.json + adapter_model.safetensors) or a
 * llama.cpp LoRA GGUF, for the model whose sites are given. A base that does not fit is
 * refused with a message naming the first tensor that does not. */
int lv_adapter_load(struct lv_adapter **out, const char *path, const struct lv_site_table *sites,
                    const struct lv_checkpoint *base);
/* adapter_config.json text -> a JSON object (what names it in messages). */
int lv_adapter_config_parse(const char *text, size_t n, const char *what, struct json_t **out);
/* The method a configuration names (peft_type; LORA with use_dora true is "dora"). */
int lv_adapter_method_of(const struct json_t *config, const char *what,
                         const struct lv_peft_method **m);
/* Write a PEFT folder in the sites' naming (atomically: a file is either whole or absent). */
int lv_adapter_save(const struct lv_adapter *a, const char *dir);
/* The tensor name a parameter has in a PEFT file: "base_model.model." + module + "." + name. */
int lv_adapter_tensor_name(const struct lv_adapter *a, int site, int k, char *out, size_t n);

/* --- the stack ----------------------------------------------------------------------- */

/* Router traces: what routed methods decided, per adapter, site and row (one record per
 * call; values rows x width floats at off). Bounded: records past the cap are dropped. */
struct lv_peft_trace_rec {
    int adapter, site;
    int64_t pos, rows;              /* sequence position of the first row */
    int width;
    size_t off;
};
#define LV_PEFT_TRACE_MAX_VALUES ((size_t)64 << 20)
struct lv_peft_trace {
    bool on;
    float *v;
    size_t n, cap;
    struct lv_peft_trace_rec *r;
    int nr, rcap;
};

struct lv_peft_stack {
    const struct lv_site_table *sites;
    struct lv_adapter **a;
    int n;
    int *active;                        /* [sites->n]: enabled adapters with a nonzero scale
                                           attached there; 0 makes the site free */
    uint64_t step;                      /* counts calls, for dropout seeds */
    int modality;
    bool training;
    uint64_t gen;                       /* counts changes (add, enable, scale): a model's
                                           cache made under another generation is stale */
    struct lv_peft_trace trace;
};

struct lv_peft_stack *lv_peft_stack_new(const struct lv_site_table *sites);
void lv_peft_stack_free(struct lv_peft_stack *st);        /* frees its adapters too */
int lv_peft_stack_add(struct lv_peft_stack *st, struct lv_adapter *a);
/* Enable or disable adapter i, or set its scale; recompute which sites are active. */
void lv_peft_stack_set(struct lv_peft_stack *st, int i, bool enabled, float scale);
/* Start (or stop) recording router traces, forgetting what was recorded. */
void lv_peft_stack_trace(struct lv_peft_stack *st, bool on);
/* A new sequence: zero the methods' states and call their begin. */
int lv_peft_stack_begin(struct lv_peft_stack *st, lv_graph *g);
/* At site i: y plus every active adapter's scaled contribution (y itself when none). */
lv_tensor *lv_peft_stack_apply(struct lv_peft_stack *st, lv_graph *g, int site, lv_tensor *x,
                               lv_tensor *y, const lv_tensor *ids, int64_t pos);
/* Adapter k's prefix rows for a new sequence (*out NULL: none), scaled by its scale. */
int lv_peft_stack_prefix(struct lv_peft_stack *st, lv_graph *g, int k, const lv_tensor *ids,
                         lv_tensor **out, bool *hidden);
static inline bool lv_peft_stack_active(const struct lv_peft_stack *st, int site)
{
    return st && st->active[site] > 0;
}

/* Site i's weight (out, in) and bias with every enabled adapter folded in (only adapter k
 * when k >= 0), as new F32 tensors (*b NULL when the bias does not change; both NULL when
 * no adapter is there). */
int lv_peft_stack_merge_site(struct lv_peft_stack *st, int site, int k, lv_tensor **w,
                             lv_tensor **b);
/* Fold adapter k into the models' weights (at its scale), so that generation no longer pays
 * for it; unmerge puts the weights it replaced back, bit for bit. Either makes the cached
 * positions stale. Free the stack before the models: it unmerges. */
int lv_peft_stack_merge(struct lv_peft_stack *st, int k);
int lv_peft_stack_unmerge(struct lv_peft_stack *st, int k);

/* Write ck as a Hugging Face directory with the stack's enabled adapters folded in (merge.c).
 * dtype: the stored type of merged tensors (LV_CKPT_F32, _F16, _BF16), or LV_CKPT_TYPE_COUNT
 * for the base tensor's float type (F32 for quantised bases). */
enum lv_ckpt_type;
int lv_adapters_write_merged(const struct lv_checkpoint *ck, struct lv_peft_stack *st,
                             const char *dir, enum lv_ckpt_type dtype);

/* Load the plugins of the plugin path (plugins.c): cli_path (--plugin-path, colon-separated,
 * or NULL), $LAVINIA_PLUGIN_PATH, $XDG_DATA_HOME/lavinia/plugins, the installed directory.
 * Refusals are said on stderr, one line each; returns the files that added methods. */
int lv_peft_load_plugins(const char *cli_path);

/* Built-in methods. */
extern const struct lv_peft_method lv_peft_lora;
extern const struct lv_peft_method lv_peft_dora;
extern const struct lv_peft_method lv_peft_ia3;
/* What LoRA and DoRA share (lora.c): the factors and their values (scaling in slot
 * LV_LORA_SCALING, dropout in LV_LORA_DROPOUT), the input after dropout, s B A x. */
enum { LV_LORA_SCALING, LV_LORA_DROPOUT };
extern const struct lv_peft_key lv_lora_dora_keys[];
int lv_lora_create(lv_peft_ctx *ctx, bool dora);
lv_tensor *lv_lora_input(const struct lv_peft_call *c);
lv_tensor *lv_lora_delta(const struct lv_peft_call *c, lv_tensor *x);
/* Register the built-ins once (idempotent). */
void lv_peft_builtins(void);

#endif /* LV_PEFT_ADAPTER_H */
