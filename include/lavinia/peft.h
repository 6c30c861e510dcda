/*
 * peft.h: the PEFT method interface, one for built-in methods and plugins alike.
 *
 * An adapter is an instance of a method with its own parameters, attached at sites (a named
 * place in the model: "llm.3.attn.q", "llm.3.attn_in", "vit.0.mlp.fc1", "proj.1"). The model
 * calls the adapter stack at every site; each enabled adapter attached there adds its
 * contribution, multiplied by the adapter's scale:
 *
 *     y = base(x) + sum over enabled adapters of  scale * apply(x, base(x))
 *
 * A method is a struct of data and callbacks. apply is written with lavinia's ops
 * (lavinia/ops.h), so backward, every backend and the optimiser come with it.
 *
 *     static const struct lv_peft_key keys[] = {
 *         { .name = "r", .type = LV_KEY_INT, .def = "8", .min = 1, .max = 1024,
 *           .help = "rank of the A and B factors" },
 *         { .name = NULL }
 *     };
 *     const struct lv_peft_method my_method = {
 *         .abi = LV_PEFT_ABI, .name = "mymethod", .keys = keys,
 *         .sites = LV_SITE_LINEAR, .create = my_create, .apply = my_apply,
 *     };
 *     // a plugin exports:  const struct lv_peft_method *lv_peft_plugin(void);
 *
 * Versioning, as sqlite's io_methods: .abi comes first and says which slots the method
 * fills. New slots are added only at the end of the struct, with the ABI that added them;
 * lavinia reads a slot only when the method's .abi includes it.
 */
#ifndef LV_PEFT_H
#define LV_PEFT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lavinia/ops.h"
#include "lavinia/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LV_PEFT_ABI 1

/* --- sites -------------------------------------------------------------------------- */

typedef enum lv_site_kind {
    LV_SITE_LINEAR = 1u << 0,   /* a linear projection: x (..., in) -> y (..., out) */
    LV_SITE_STREAM = 1u << 1,   /* the normalised residual stream entering attention or the
                                   FFN/MLP: x (..., C), y = x */
    LV_SITE_EMBED  = 1u << 2,   /* the token embedding: ids -> y (..., C) */
} lv_site_kind;

typedef enum lv_tower {
    LV_TOWER_LLM,               /* the language model */
    LV_TOWER_VIT,               /* the vision encoder */
    LV_TOWER_PROJ,              /* the vision-language projector */
} lv_tower;

/* One place where adapters attach. Names and paths are filled by lavinia. */
struct lv_peft_site {
    const char *name;           /* lavinia's name: "llm.3.attn.q" */
    const char *module;         /* the Hugging Face module path in the base's naming:
                                   "model.layers.3.self_attn.q_proj" */
    const char *short_name;     /* the last component PEFT matches: "q_proj" */
    const char *gguf;           /* the GGUF name of the module's weight, as llama.cpp's files
                                   and LoRA adapters name it ("blk.3.attn_q.weight"), or "" */
    lv_site_kind kind;
    lv_tower tower;
    int layer;                  /* block index, -1 for sites outside blocks */
    int64_t in, out;            /* features in and out (in = out = C for stream sites;
                                   in = vocabulary size for the embedding) */
    const lv_tensor *weight;    /* the base weight (out, in) or the embedding (V, C); NULL
                                   for stream sites. Read only; any dtype, Q8_0/Q4_0 too. */
    const lv_tensor *bias;      /* (out) or NULL */
};

/* --- configuration keys (data, read by /set, recipes, adapter_config.json, --help) ----- */

typedef enum lv_key_type {
    LV_KEY_INT,
    LV_KEY_FLOAT,
    LV_KEY_BOOL,
    LV_KEY_STRING,
    LV_KEY_PATTERN,             /* a JSON object {regex: number}, PEFT's rank_pattern */
    LV_KEY_MODULES,             /* module names as target_modules takes them: a list (suffix
                                   match) or a string (a regex over the whole name) */
} lv_key_type;

struct lv_peft_key {
    const char *name;           /* NULL ends the table */
    lv_key_type type;
    const char *def;            /* default as text ("8", "0.0", "false", "gaussian"; JSON for
                                   LV_KEY_MODULES); NULL: none (a string key reads as NULL) */
    double min, max;            /* range for numbers; both 0: unbounded */
    const char *choices;        /* strings: allowed values separated by '|', or NULL */
    const char *help;
};

/* --- creating an adapter ------------------------------------------------------------ */

typedef struct lv_peft_ctx lv_peft_ctx;

typedef enum lv_init_kind {
    LV_INIT_ZERO,
    LV_INIT_CONST,              /* every element a */
    LV_INIT_NORMAL,             /* N(0, a^2) */
    LV_INIT_UNIFORM,            /* U(-a, a) */
    LV_INIT_KAIMING_UNIFORM,    /* torch's kaiming_uniform_(a = sqrt(5)): U(-b, b) with
                                   b = 1/sqrt(fan_in), fan_in the last dimension (nn.Linear) */
    LV_INIT_XAVIER_UNIFORM,     /* U(-b, b), b = sqrt(6 / (fan_in + fan_out)) */
} lv_init_kind;

struct lv_peft_init {
    lv_init_kind kind;
    double a;
};

enum {
    LV_PEFT_FROZEN = 1u << 0,   /* a seeded buffer (VeRA's shared projections): saved, never
                                   trained */
};

/* The sites this adapter attaches to (already selected by target_modules and the method's
 * .sites mask), in the model's order. */
int lv_peft_n_sites(const lv_peft_ctx *ctx);
const struct lv_peft_site *lv_peft_site_at(const lv_peft_ctx *ctx, int i);

/* Configuration values, validated against the method's key table before create runs. A key
 * missing from the table is a programmer error (the value of an unknown key is 0/NULL). */
int64_t lv_peft_get_int(const lv_peft_ctx *ctx, const char *key);
double lv_peft_get_float(const lv_peft_ctx *ctx, const char *key);
bool lv_peft_get_bool(const lv_peft_ctx *ctx, const char *key);
const char *lv_peft_get_str(const lv_peft_ctx *ctx, const char *key);
/* A LV_KEY_PATTERN key for site i: the value of the first pattern K such that the site's
 * module path matches (.*\.)?(K)$ (PEFT's get_pattern_key), else fallback. */
double lv_peft_get_pattern(const lv_peft_ctx *ctx, const char *key, int site, double fallback);

/* Declare a parameter of site i (site -1: the adapter's own, shared by every site). name is
 * the tensor's name in the saved file after the module path ("lora_A.weight"; for site -1
 * the whole name). Returns its index among the site's (or the shared) parameters, in
 * declaration order, or -1 with lv_errmsg() set. Values come from init with the adapter's
 * seed, unless a saved adapter is loaded over them. */
int lv_peft_param(lv_peft_ctx *ctx, int site, const char *name, int ndim, const int64_t *shape,
                  struct lv_peft_init init, unsigned flags);

/* Whether site i's module is named by a LV_KEY_MODULES key (IA3's feedforward_modules). */
bool lv_peft_site_matches(const lv_peft_ctx *ctx, const char *key, int site);

/* The tensor of parameter k of site i (site -1: shared), to give it values create computes
 * (DoRA's magnitude starts as the norms of the base weight's rows). */
lv_tensor *lv_peft_param_tensor(lv_peft_ctx *ctx, int site, int k);

/* Numbers kept per site (slot 0..7) or per adapter (site -1), read back in apply
 * (call->vals, call->adapter_vals): a scaling, a rank, a flag. */
void lv_peft_set_value(lv_peft_ctx *ctx, int site, int slot, float v);
float lv_peft_get_value(const lv_peft_ctx *ctx, int site, int slot);
#define LV_PEFT_VALUES 8

/* --- applying ----------------------------------------------------------------------- */

struct lv_peft_call {
    lv_graph *g;                      /* the graph to build in */
    const struct lv_peft_site *site;
    lv_tensor *const *p;              /* this site's parameters, in declaration order */
    lv_tensor *const *shared;         /* the adapter's own parameters (site -1) */
    const float *vals;                /* this site's values (LV_PEFT_VALUES) */
    const float *adapter_vals;        /* the adapter's values */
    lv_tensor *x;                     /* the site's input (T, in); the stream for stream sites */
    lv_tensor *y;                     /* the base output (T, out); x for stream sites */
    const lv_tensor *ids;             /* embedding site: the token ids (T) I32; else NULL */
    int64_t pos;                      /* sequence position of the first row of x */
    void *state;                      /* this site's per-sequence state (.state_bytes), zeroed
                                         when a sequence starts; NULL if the method has none */
    int modality;                     /* the sequence: 0 text only, 1 with an image */
    bool training;                    /* the graph records: dropout applies */
    uint64_t seed;                    /* differs per step, adapter and site (dropout masks) */
    float *trace;                     /* NULL, or room for trace_width(site) floats per row
                                         of x: the method's routing decisions, written here */
};

/* --- the method ---------------------------------------------------------------------- */

struct lv_peft_method {
    int abi;                          /* LV_PEFT_ABI the method was built against: first */
    const char *name;                 /* lower case; PEFT's peft_type is the upper-case form */
    const char *description;          /* one line for `lavinia adapters --methods` */
    const struct lv_peft_key *keys;   /* the method's own configuration keys */
    unsigned sites;                   /* lv_site_kind mask the method can attach to */
    /* Whether target_modules may be omitted, and the suffixes used then (NULL: required). */
    const char *const *default_targets;
    size_t state_bytes;               /* per-sequence state of each site, zeroed at each new
                                         sequence (kept beside the kv cache) */

    /* Declare parameters (lv_peft_param) and values for every site. */
    int (*create)(lv_peft_ctx *ctx);
    /* The contribution at one site: the shape of call->y, or one that broadcasts against it
     * (a bias vector); the stack scales it and adds it. NULL with lv_errmsg() set on
     * failure. */
    lv_tensor *(*apply)(const struct lv_peft_call *call);

    /* Optional. Called once when a sequence starts, before any apply: routed methods reset
     * their decisions in call->state (x, y, ids are NULL). */
    int (*begin)(const struct lv_peft_call *call);
    /* Optional. Positions to put before the sequence's first token (prompt tuning, LaVIN's
     * modality token): *out (P, C) built with ops from the adapter's parameters, or NULL for
     * none. *hidden: later positions do not attend to them (they still see themselves). Called
     * with call->site the embedding site and call->ids the first tokens. */
    int (*prefix)(const struct lv_peft_call *call, lv_tensor **out, bool *hidden);
    /* Optional. Floats per row this method traces at a site (0: nothing there). */
    int (*trace_width)(const struct lv_peft_site *site, const float *vals);
    /* Optional. The base weight (out, in) and bias (out or NULL) with the adapter folded in
     * at scale, as new tensors built with ops in call->g (x, y NULL); *b_out may stay NULL
     * when the bias does not change. LV_ENOTSUP when this configuration cannot be merged. */
    int (*merge)(const struct lv_peft_call *call, lv_tensor *w, lv_tensor *b, float scale,
                 lv_tensor **w_out, lv_tensor **b_out);
    /* Optional. Bytes of per-sequence state at one site, when they depend on the site
     * (DoRA keeps the detached norm of each output row); overrides .state_bytes. */
    size_t (*state_size)(const struct lv_peft_site *site, const float *vals);
    /* Optional. The peft_type written in adapter_config.json (NULL: the name in upper case):
     * DoRA is PEFT's "LORA" with use_dora. */
    const char *peft_type;
};

/* A plugin's entry point: the methods it defines, NULL-terminated. */
typedef const struct lv_peft_method *const *(*lv_peft_plugin_fn)(void);
#define LV_PEFT_PLUGIN_SYMBOL "lv_peft_plugin"

/* --- the registry --------------------------------------------------------------------- */

/* Add a method (built-ins are registered at start-up). Refused with a message on a wrong
 * ABI, a duplicate name or a malformed key table; what (a file name, or NULL) names it. */
int lv_peft_register(const struct lv_peft_method *m, const char *what);
const struct lv_peft_method *lv_peft_find(const char *name);
int lv_peft_count(void);
const struct lv_peft_method *lv_peft_at(int i);

#ifdef __cplusplus
}
#endif

#endif /* LV_PEFT_H */
