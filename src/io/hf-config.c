/*
 * hf-config.c: Hugging Face config.json (LLaMA, Mistral, LLaVA-1.5) <-> lv_model_config.
 *
 * config.json is one JSON object (transformers writes keys sorted, 2-space indent). The keys
 * read here, with the default that applies when a key is absent (transformers' own defaults:
 * LlamaConfig, MistralConfig, LlavaConfig, CLIPVisionConfig; FORMATS.md 4.1 and 4.3):
 *
 *   architectures             ["LlamaForCausalLM"]; [0] picks the model, else model_type
 *   model_type                "llama" | "mistral" | "llava" | "llava_llama"
 *   vocab_size                32000                      (both llama and mistral)
 *   hidden_size               4096
 *   intermediate_size         11008 llama, 14336 mistral
 *   num_hidden_layers         32
 *   num_attention_heads       32
 *   num_key_value_heads       = heads llama, 8 mistral; null = heads
 *   head_dim                  hidden_size / heads (null too)
 *   max_position_embeddings   2048 llama, 131072 mistral
 *   rms_norm_eps              1e-6 (the class default; Llama-2 files say 1e-5)
 *   rope_theta                10000
 *   rope_scaling              null | {"type" or "rope_type": "linear"|"default", "factor": f}
 *   rope_parameters           (transformers 5) {"rope_type", "rope_theta", "factor"}
 *   tie_word_embeddings       false
 *   bos_token_id, eos_token_id, pad_token_id   1, 2, none; null = none; eos may be a list
 *                             (the first is taken)
 *   hidden_act "silu", attention_bias false, mlp_bias false: anything else is refused
 *
 * LlavaForConditionalGeneration (llava-hf) nests the text model and the vision tower:
 *
 *   text_config     object with the keys above (model_type "llama" by default); null or
 *                   absent = LlamaConfig() defaults. llava-hf/llava-1.5-7b-hf gives only
 *                   vocab_size 32064, max_position_embeddings 4096, rms_norm_eps 1e-5 and
 *                   relies on the LLaMA-7B defaults for the rest.
 *   vision_config   object, model_type "clip_vision_model"; absent keys take CLIPVisionConfig
 *                   defaults: hidden_size 768, intermediate_size 3072, num_hidden_layers 12,
 *                   num_attention_heads 12, num_channels 3, image_size 224, patch_size 32,
 *                   hidden_act "quick_gelu", layer_norm_eps 1e-5. null or absent = LlavaConfig's
 *                   own default, CLIP ViT-L/14-336 (1024, 4096, 24, 16, 336, 14).
 *   image_token_index 32000, projector_hidden_act "gelu" (the 2-layer MLP projector),
 *   multimodal_projector_bias true, vision_feature_layer -2,
 *   vision_feature_select_strategy "default" (drop the class token) | "full" (keep it),
 *   and top-level vocab_size, tie_word_embeddings, pad/bos/eos ids that override text_config.
 *
 * LlavaLlamaForCausalLM (the original haotian-liu/LLaVA checkpoints) keeps the LLaMA keys at
 * top level and adds mm_vision_tower ("openai/clip-vit-large-patch14-336"), mm_hidden_size,
 * mm_projector_type ("mlp2x_gelu" | "linear", default linear), mm_vision_select_layer (-2),
 * mm_vision_select_feature ("patch" | "cls_patch"), mm_use_im_start_end (must be false),
 * image_aspect_ratio ("pad"; LLaVA-1.6 "anyres" refused), mm_patch_merge_type ("flat").
 *
 * Unknown keys are ignored (configs carry many: torch_dtype, initializer_range, ...). A key of
 * the wrong JSON type is an error naming the key and the type expected.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "io/hf-config.h"
#include "io/fileutil.h"

#include <float.h>
#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lavinia/error.h"

/* Real config.json files are a few KB; 16 MiB bounds what we hand to the JSON parser. */
#define HF_CONFIG_MAX_BYTES ((size_t)16 << 20)

/* What the file describes. */
enum hf_kind { HF_LLAMA, HF_MISTRAL, HF_LLAVA, HF_LLAVA_ORIG, HF_LAVIN };

static const struct hf_arch_entry {
    const char *name;
    enum hf_kind kind;
} arch_table[] = {
    { .name = "LlamaForCausalLM",              .kind = HF_LLAMA },
    { .name = "MistralForCausalLM",            .kind = HF_MISTRAL },
    { .name = "LlavaForConditionalGeneration", .kind = HF_LLAVA },
    { .name = "LlavaLlamaForCausalLM",         .kind = HF_LLAVA_ORIG },
    { .name = "LaVIN",                         .kind = HF_LAVIN },
};

#define ARCH_LIST "LlamaForCausalLM, MistralForCausalLM, LlavaForConditionalGeneration, " \
                  "LlavaLlamaForCausalLM, LaVIN"

/* The class defaults of the text models (transformers LlamaConfig, MistralConfig). */
struct text_defaults {
    const char *model_type;
    int64_t vocab, dim, hidden, n_layers, n_heads;
    int64_t n_kv_heads;       /* 0: = n_heads */
    int64_t max_seq;
    float norm_eps;
};

static const struct text_defaults text_defaults_table[] = {
    { .model_type = "llama", .vocab = 32000, .dim = 4096, .hidden = 11008, .n_layers = 32,
      .n_heads = 32, .n_kv_heads = 0, .max_seq = 2048, .norm_eps = 1e-6f },
    { .model_type = "mistral", .vocab = 32000, .dim = 4096, .hidden = 14336, .n_layers = 32,
      .n_heads = 32, .n_kv_heads = 8, .max_seq = 4096 * 32, .norm_eps = 1e-6f },
};

/* CLIP vision towers: CLIPVisionConfig's class defaults, and the towers LLaVA names. */
struct clip_entry {
    const char *name;
    int64_t dim, hidden, n_layers, n_heads, image_size, patch_size;
};

static const struct clip_entry clip_class_default = {
    .name = "CLIPVisionConfig", .dim = 768, .hidden = 3072, .n_layers = 12, .n_heads = 12,
    .image_size = 224, .patch_size = 32,
};

static const struct clip_entry clip_table[] = {
    { .name = "clip-vit-large-patch14-336", .dim = 1024, .hidden = 4096, .n_layers = 24,
      .n_heads = 16, .image_size = 336, .patch_size = 14 },
    { .name = "clip-vit-large-patch14", .dim = 1024, .hidden = 4096, .n_layers = 24,
      .n_heads = 16, .image_size = 224, .patch_size = 14 },
};

/* ----------------------------------------------------------------------------------------
 * typed getters: each names the file and the key (with its section, "text_config.") on error
 */

/* Where a key lives, for messages. */
struct hf_ctx {
    const char *file;
    const char *sect;         /* "" or "text_config." or "vision_config." */
};

static const char *type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a real number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "?";
}

static int type_error(const struct hf_ctx *x, const char *key, const json_t *v,
                      const char *want)
{
    return lv_error("%s: '%s%s' is %s; expected %s", x->file, x->sect, key, type_name(v), want);
}

/* An integer key. Absent keeps *out; null keeps it too when nullable; below min is an error. */
static int get_int(const struct hf_ctx *x, const json_t *obj, const char *key, bool nullable,
                   int64_t min, int64_t *out)
{
    json_t *v = json_object_get(obj, key);
    if (!v || (nullable && json_is_null(v)))
        return LV_OK;
    if (!json_is_integer(v))
        return type_error(x, key, v, "an integer");
    json_int_t i = json_integer_value(v);
    if (i < min)
        return lv_error("%s: '%s%s' = %lld must be at least %lld", x->file, x->sect, key,
                        (long long)i, (long long)min);
    *out = (int64_t)i;
    return LV_OK;
}

/* A number key (integer or real), finite. Absent keeps *out. */
static int get_float(const struct hf_ctx *x, const json_t *obj, const char *key, float *out)
{
    json_t *v = json_object_get(obj, key);
    if (!v)
        return LV_OK;
    if (!json_is_number(v))
        return type_error(x, key, v, "a number");
    double d = json_number_value(v);
    if (!isfinite(d) || fabs(d) > FLT_MAX)
        return lv_error("%s: '%s%s' = %g is not a finite float", x->file, x->sect, key, d);
    *out = (float)d;
    return LV_OK;
}

static int get_bool(const struct hf_ctx *x, const json_t *obj, const char *key, bool *out)
{
    json_t *v = json_object_get(obj, key);
    if (!v)
        return LV_OK;
    if (!json_is_boolean(v))
        return type_error(x, key, v, "true or false");
    *out = json_is_true(v);
    return LV_OK;
}

/* A string key; *out points into the JSON tree. Absent keeps *out. */
static int get_str(const struct hf_ctx *x, const json_t *obj, const char *key,
                   const char **out)
{
    json_t *v = json_object_get(obj, key);
    if (!v)
        return LV_OK;
    if (!json_is_string(v))
        return type_error(x, key, v, "a string");
    *out = json_string_value(v);
    return LV_OK;
}

/* A token id: integer, null (none: -1), or for eos a list whose first element is taken
 * (Llama-3 style). Negative ids mean none. Absent keeps *out. */
static int get_id(const struct hf_ctx *x, const json_t *obj, const char *key, bool list_ok,
                  int32_t *out)
{
    json_t *v = json_object_get(obj, key);
    json_int_t id;
    if (!v)
        return LV_OK;
    if (json_is_null(v)) {
        *out = -1;
        return LV_OK;
    }
    if (list_ok && json_is_array(v)) {
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) {
            if (!json_is_integer(e))
                return lv_error("%s: '%s%s[%zu]' is %s; expected an integer token id",
                                x->file, x->sect, key, i, type_name(e));
        }
        if (json_array_size(v) == 0) {
            *out = -1;
            return LV_OK;
        }
        v = json_array_get(v, 0);
    } else if (!json_is_integer(v)) {
        return type_error(x, key, v, list_ok ? "an integer, a list of integers or null"
                                             : "an integer or null");
    }
    id = json_integer_value(v);
    if (id > INT32_MAX)
        return lv_error("%s: '%s%s' = %lld is not a token id", x->file, x->sect, key,
                        (long long)id);
    *out = id < 0 ? -1 : (int32_t)id;
    return LV_OK;
}

/* ----------------------------------------------------------------------------------------
 * the text model
 */

/* One rope block: rope_scaling, or transformers 5's rope_parameters (which may also carry
 * rope_theta and defaults its type to "default"). */
static int parse_rope(const struct hf_ctx *x, const char *key, const json_t *rope,
                      bool type_required, struct lv_model_config *c)
{
    char sect[64];
    snprintf(sect, sizeof sect, "%s%s.", x->sect, key);
    struct hf_ctx sub = { .file = x->file, .sect = sect };
    const char *type = NULL;
    int rc;

    if ((rc = get_str(&sub, rope, "type", &type)) ||
        (rc = get_str(&sub, rope, "rope_type", &type)))   /* rope_type wins, as in transformers */
        return rc;
    if ((rc = get_float(&sub, rope, "rope_theta", &c->rope_theta)))
        return rc;
    if (!type) {
        if (type_required)
            return lv_error("%s: '%s%s' has no 'type' or 'rope_type'", x->file, x->sect, key);
        type = "default";
    }
    if (strcmp(type, "default") == 0) {
        c->rope_scaling = LV_ROPE_SCALING_NONE;
        c->rope_factor = 1.0f;
    } else if (strcmp(type, "linear") == 0) {
        if (!json_object_get(rope, "factor"))
            return lv_error("%s: '%s%s' is linear but has no 'factor'", x->file, x->sect, key);
        if ((rc = get_float(&sub, rope, "factor", &c->rope_factor)))
            return rc;
        if (!(c->rope_factor > 0.0f))
            return lv_error("%s: '%sfactor' = %g must be positive", x->file, sect,
                            (double)c->rope_factor);
        c->rope_scaling = LV_ROPE_SCALING_LINEAR;
    } else {
        return lv_error("%s: '%s%s' type '%s' is not supported (lavinia supports linear)",
                        x->file, x->sect, key, type);
    }
    return LV_OK;
}

/* The LLaMA/Mistral keys of obj (the root, or text_config) over the defaults d. */
static int parse_text(const struct hf_ctx *x, const json_t *obj, const struct text_defaults *d,
                      struct lv_model_config *c)
{
    const char *act = "silu";
    bool attention_bias = false, mlp_bias = false;
    json_t *v;
    int rc;

    c->vocab = d->vocab;
    c->dim = d->dim;
    c->hidden = d->hidden;
    c->n_layers = d->n_layers;
    c->n_heads = d->n_heads;
    c->max_seq = d->max_seq;
    c->norm_eps = d->norm_eps;
    c->rope_theta = 10000.0f;
    c->rope_scaling = LV_ROPE_SCALING_NONE;
    c->rope_factor = 1.0f;
    c->tied = false;
    c->bos_id = 1;
    c->eos_id = 2;
    c->pad_id = -1;
    if ((rc = get_int(x, obj, "vocab_size", false, 1, &c->vocab)) ||
        (rc = get_int(x, obj, "hidden_size", false, 1, &c->dim)) ||
        (rc = get_int(x, obj, "intermediate_size", false, 1, &c->hidden)) ||
        (rc = get_int(x, obj, "num_hidden_layers", false, 1, &c->n_layers)) ||
        (rc = get_int(x, obj, "num_attention_heads", false, 1, &c->n_heads)) ||
        (rc = get_int(x, obj, "max_position_embeddings", false, 1, &c->max_seq)))
        return rc;

    /* absent: the class default (mistral 8); null: as many as the query heads */
    c->n_kv_heads = d->n_kv_heads ? d->n_kv_heads : c->n_heads;
    v = json_object_get(obj, "num_key_value_heads");
    if (v && json_is_null(v))
        c->n_kv_heads = c->n_heads;
    else if ((rc = get_int(x, obj, "num_key_value_heads", false, 1, &c->n_kv_heads)))
        return rc;

    c->head_dim = 0;
    if ((rc = get_int(x, obj, "head_dim", true, 1, &c->head_dim)))
        return rc;
    if (!c->head_dim) {
        if (c->dim % c->n_heads)
            return lv_error("%s: '%shidden_size' %lld is not a multiple of "
                            "'num_attention_heads' %lld (and there is no 'head_dim')",
                            x->file, x->sect, (long long)c->dim, (long long)c->n_heads);
        c->head_dim = c->dim / c->n_heads;
    }

    if ((rc = get_float(x, obj, "rms_norm_eps", &c->norm_eps)) ||
        (rc = get_float(x, obj, "rope_theta", &c->rope_theta)))
        return rc;
    v = json_object_get(obj, "rope_scaling");
    if (v && json_is_object(v)) {
        if ((rc = parse_rope(x, "rope_scaling", v, true, c)))
            return rc;
    } else if (v && !json_is_null(v)) {
        return type_error(x, "rope_scaling", v, "an object or null");
    }
    v = json_object_get(obj, "rope_parameters");
    if (v && json_is_object(v)) {
        if ((rc = parse_rope(x, "rope_parameters", v, false, c)))
            return rc;
    } else if (v && !json_is_null(v)) {
        return type_error(x, "rope_parameters", v, "an object or null");
    }

    if ((rc = get_bool(x, obj, "tie_word_embeddings", &c->tied)) ||
        (rc = get_id(x, obj, "bos_token_id", false, &c->bos_id)) ||
        (rc = get_id(x, obj, "eos_token_id", true, &c->eos_id)) ||
        (rc = get_id(x, obj, "pad_token_id", false, &c->pad_id)))
        return rc;

    /* What lavinia's LLaMA block cannot compute is refused, not ignored. */
    if ((rc = get_str(x, obj, "hidden_act", &act)) ||
        (rc = get_bool(x, obj, "attention_bias", &attention_bias)) ||
        (rc = get_bool(x, obj, "mlp_bias", &mlp_bias)))
        return rc;
    if (strcmp(act, "silu") != 0)
        return lv_error("%s: '%shidden_act' '%s' is not supported (lavinia's LLaMA MLP is "
                        "silu)", x->file, x->sect, act);
    if (attention_bias || mlp_bias)
        return lv_error("%s: '%s%s' is true: biases in the LLaMA %s are not supported",
                        x->file, x->sect, attention_bias ? "attention_bias" : "mlp_bias",
                        attention_bias ? "attention" : "MLP");
    return LV_OK;
}

static const struct text_defaults *find_text_defaults(const char *model_type)
{
    for (size_t i = 0; i < sizeof text_defaults_table / sizeof text_defaults_table[0]; i++)
        if (strcmp(text_defaults_table[i].model_type, model_type) == 0)
            return &text_defaults_table[i];
    return NULL;
}

/* ----------------------------------------------------------------------------------------
 * LLaVA
 */

static void set_clip(struct lv_vision_config *v, const struct clip_entry *e)
{
    v->dim = e->dim;
    v->hidden = e->hidden;
    v->n_layers = e->n_layers;
    v->n_heads = e->n_heads;
    v->image_size = e->image_size;
    v->patch_size = e->patch_size;
    v->n_channels = 3;
    v->norm_eps = 1e-5f;
    snprintf(v->act, sizeof v->act, "quick_gelu");
}

/* llava-hf vision_config: CLIPVisionConfig keys over its class defaults. */
static int parse_vision(const char *file, const json_t *vobj, struct lv_vision_config *v)
{
    struct hf_ctx x = { .file = file, .sect = "vision_config." };
    const char *type = "clip_vision_model", *act = "quick_gelu";
    int rc;

    set_clip(v, &clip_class_default);
    if ((rc = get_str(&x, vobj, "model_type", &type)))
        return rc;
    if (strcmp(type, "clip_vision_model") != 0)
        return lv_error("%s: 'vision_config.model_type' '%s' is not supported (lavinia reads "
                        "clip_vision_model)", file, type);
    if ((rc = get_int(&x, vobj, "hidden_size", false, 1, &v->dim)) ||
        (rc = get_int(&x, vobj, "intermediate_size", false, 1, &v->hidden)) ||
        (rc = get_int(&x, vobj, "num_hidden_layers", false, 1, &v->n_layers)) ||
        (rc = get_int(&x, vobj, "num_attention_heads", false, 1, &v->n_heads)) ||
        (rc = get_int(&x, vobj, "num_channels", false, 1, &v->n_channels)) ||
        (rc = get_int(&x, vobj, "image_size", false, 1, &v->image_size)) ||
        (rc = get_int(&x, vobj, "patch_size", false, 1, &v->patch_size)) ||
        (rc = get_float(&x, vobj, "layer_norm_eps", &v->norm_eps)) ||
        (rc = get_str(&x, vobj, "hidden_act", &act)))
        return rc;
    if (v->n_channels != 3)
        return lv_error("%s: 'vision_config.num_channels' %lld is not supported (RGB images "
                        "only: 3)", file, (long long)v->n_channels);
    if (strcmp(act, "quick_gelu") != 0 && strcmp(act, "gelu") != 0)
        return lv_error("%s: 'vision_config.hidden_act' '%s' is not supported (lavinia reads "
                        "quick_gelu, gelu)", file, act);
    snprintf(v->act, sizeof v->act, "%s", act);
    if (!(v->norm_eps > 0.0f))
        return lv_error("%s: 'vision_config.layer_norm_eps' %g must be positive", file,
                        (double)v->norm_eps);
    return LV_OK;
}

/* llava-hf: LlavaForConditionalGeneration. */
static int parse_llava(const char *file, const json_t *root, struct lv_model_config *c)
{
    struct hf_ctx top = { .file = file, .sect = "" };
    struct hf_ctx tx = { .file = file, .sect = "text_config." };
    struct text_defaults d;
    const json_t *text, *vis, *v;
    const char *type = "llama", *act = "gelu", *strategy = "default";
    bool proj_bias = true, tied;
    int64_t layer = -2, image_token = 32000;
    int rc;

    /* text_config absent or null: LlamaConfig() */
    text = json_object_get(root, "text_config");
    if (text && !json_is_object(text) && !json_is_null(text))
        return type_error(&top, "text_config", text, "an object");
    if (text && json_is_null(text))
        text = NULL;
    json_t *empty = json_object();
    if (!empty)
        return lv_error_status(LV_ENOMEM, "%s: out of memory", file);
    if (text && (rc = get_str(&tx, text, "model_type", &type)))
        goto out;
    const struct text_defaults *dp = find_text_defaults(type);
    if (!dp) {
        rc = lv_error("%s: 'text_config.model_type' '%s' is not supported (lavinia reads "
                      "llama, mistral)", file, type);
        goto out;
    }
    /* the deprecated top-level vocab_size stands in when text_config has none */
    d = *dp;
    if ((rc = get_int(&top, root, "vocab_size", false, 1, &d.vocab)) ||
        (rc = parse_text(&tx, text ? text : empty, &d, c)))
        goto out;
    /* top-level keys LlavaConfig carries itself override the text model's */
    tied = c->tied;
    if ((rc = get_bool(&top, root, "tie_word_embeddings", &tied)) ||
        (rc = get_id(&top, root, "bos_token_id", false, &c->bos_id)) ||
        (rc = get_id(&top, root, "eos_token_id", true, &c->eos_id)) ||
        (rc = get_id(&top, root, "pad_token_id", false, &c->pad_id)))
        goto out;
    c->tied = tied;

    /* vision_config absent or null: LlavaConfig's CLIP ViT-L/14-336 */
    c->has_vision = true;
    vis = json_object_get(root, "vision_config");
    if (vis && !json_is_object(vis) && !json_is_null(vis)) {
        rc = type_error(&top, "vision_config", vis, "an object");
        goto out;
    }
    if (vis && json_is_object(vis)) {
        if ((rc = parse_vision(file, vis, &c->vision)))
            goto out;
    } else {
        set_clip(&c->vision, &clip_table[0]);
    }

    if ((rc = get_str(&top, root, "projector_hidden_act", &act)) ||
        (rc = get_bool(&top, root, "multimodal_projector_bias", &proj_bias)) ||
        (rc = get_int(&top, root, "image_token_index", false, 0, &image_token)) ||
        (rc = get_str(&top, root, "vision_feature_select_strategy", &strategy)))
        goto out;
    if (strcmp(act, "gelu") != 0) {
        rc = lv_error("%s: 'projector_hidden_act' '%s' is not supported (LLaVA-1.5's projector "
                      "uses gelu)", file, act);
        goto out;
    }
    if (!proj_bias) {
        rc = lv_error("%s: 'multimodal_projector_bias' false is not supported (LLaVA-1.5's "
                      "projector has biases)", file);
        goto out;
    }
    c->projector = LV_PROJ_MLP2X_GELU;
    if (image_token > INT32_MAX) {
        rc = lv_error("%s: 'image_token_index' %lld is not a token id", file,
                      (long long)image_token);
        goto out;
    }
    c->image_token_id = (int32_t)image_token;
    v = json_object_get(root, "vision_feature_layer");
    if (v && json_is_array(v)) {
        rc = lv_error("%s: 'vision_feature_layer' is a list; lavinia takes the features of "
                      "one layer", file);
        goto out;
    }
    if ((rc = get_int(&top, root, "vision_feature_layer", false, INT32_MIN, &layer)))
        goto out;
    if (layer < -(c->vision.n_layers + 1) || layer > c->vision.n_layers) {
        rc = lv_error("%s: 'vision_feature_layer' %lld is outside the %lld hidden states of a "
                      "%lld-layer vision tower", file, (long long)layer,
                      (long long)c->vision.n_layers + 1, (long long)c->vision.n_layers);
        goto out;
    }
    c->vision_feature_layer = (int32_t)layer;
    if (strcmp(strategy, "default") == 0) {
        c->vision_feature_full = false;
    } else if (strcmp(strategy, "full") == 0) {
        c->vision_feature_full = true;
    } else {
        rc = lv_error("%s: 'vision_feature_select_strategy' '%s' is not supported (default, "
                      "full)", file, strategy);
        goto out;
    }
    rc = LV_OK;
out:
    json_decref(empty);
    return rc;
}

/* lavinia's LaVIN layout (docs/NOTES.md): LLaVA's text_config and vision_config (default
 * OpenAI's ViT-L/14 at 224), hidden_proj and vision_feature_every; no image token. */
static int parse_lavin(const char *file, const json_t *root, struct lv_model_config *c)
{
    struct hf_ctx top = { .file = file, .sect = "" };
    int64_t hidden = 128, every = 4;
    static const char *const llava_only[] = {
        "image_token_index", "projector_hidden_act", "vision_feature_layer",
        "vision_feature_select_strategy", "multimodal_projector_bias",
    };
    for (size_t i = 0; i < sizeof llava_only / sizeof llava_only[0]; i++)
        if (json_object_get(root, llava_only[i]))
            return lv_error("%s: '%s' is LLaVA's; a LaVIN config has hidden_proj and "
                            "vision_feature_every", file, llava_only[i]);
    int rc = parse_llava(file, root, c);
    if (rc)
        return rc;
    if (!json_object_get(root, "vision_config"))
        c->vision.image_size = 224;          /* clip.load('ViT-L/14') */
    if ((rc = get_int(&top, root, "hidden_proj", false, 1, &hidden)) ||
        (rc = get_int(&top, root, "vision_feature_every", false, 1, &every)))
        return rc;
    if (every > c->vision.n_layers)
        return lv_error("%s: 'vision_feature_every' %lld is more than the %lld vision layers",
                        file, (long long)every, (long long)c->vision.n_layers);
    c->projector = LV_PROJ_LAVIN;
    c->proj_hidden = hidden;
    c->vision_feature_every = (int32_t)every;
    c->image_token_id = -1;
    c->vision_feature_layer = -1;
    c->vision_feature_full = true;
    return LV_OK;
}

/* The original haotian-liu/LLaVA layout: LLaMA keys plus mm_*. */
static int parse_llava_orig(const char *file, const json_t *root, struct lv_model_config *c)
{
    struct hf_ctx top = { .file = file, .sect = "" };
    const char *tower = NULL, *proj = "linear", *feature = "patch", *aspect = NULL;
    const char *merge = NULL;
    bool start_end = false;
    int64_t mm_hidden = 0, layer = -2;
    int rc;

    if ((rc = parse_text(&top, root, &text_defaults_table[0], c)))
        return rc;
    if ((rc = get_str(&top, root, "mm_vision_tower", &tower)))
        return rc;
    if (!tower)
        return lv_error("%s: an original LLaVA config without 'mm_vision_tower'", file);
    /* match the last path component: configs name the hub id or a local copy */
    const char *base = strrchr(tower, '/');
    base = base ? base + 1 : tower;
    const struct clip_entry *e = NULL;
    for (size_t i = 0; i < sizeof clip_table / sizeof clip_table[0]; i++)
        if (strcmp(base, clip_table[i].name) == 0)
            e = &clip_table[i];
    if (!e)
        return lv_error("%s: 'mm_vision_tower' '%s' is not a vision tower lavinia knows "
                        "(openai/clip-vit-large-patch14-336, openai/clip-vit-large-patch14)",
                        file, tower);
    c->has_vision = true;
    set_clip(&c->vision, e);

    mm_hidden = c->vision.dim;
    if ((rc = get_int(&top, root, "mm_hidden_size", false, 1, &mm_hidden)) ||
        (rc = get_str(&top, root, "mm_projector_type", &proj)) ||
        (rc = get_int(&top, root, "mm_vision_select_layer", false, INT32_MIN, &layer)) ||
        (rc = get_str(&top, root, "mm_vision_select_feature", &feature)) ||
        (rc = get_bool(&top, root, "mm_use_im_start_end", &start_end)) ||
        (rc = get_str(&top, root, "image_aspect_ratio", &aspect)) ||
        (rc = get_str(&top, root, "mm_patch_merge_type", &merge)))
        return rc;
    if (mm_hidden != c->vision.dim)
        return lv_error("%s: 'mm_hidden_size' %lld does not match the %lld features of %s",
                        file, (long long)mm_hidden, (long long)c->vision.dim, tower);
    /* builder.py: "linear", or ^mlp(\d+)x_gelu$; only depth 2 (LLaVA-1.5) is supported */
    if (strcmp(proj, "linear") == 0)
        c->projector = LV_PROJ_LINEAR;
    else if (strcmp(proj, "mlp2x_gelu") == 0)
        c->projector = LV_PROJ_MLP2X_GELU;
    else
        return lv_error("%s: 'mm_projector_type' '%s' is not supported (linear, mlp2x_gelu)",
                        file, proj);
    if (layer < -(c->vision.n_layers + 1) || layer > c->vision.n_layers)
        return lv_error("%s: 'mm_vision_select_layer' %lld is outside the %lld hidden states of "
                        "a %lld-layer vision tower", file, (long long)layer,
                        (long long)c->vision.n_layers + 1, (long long)c->vision.n_layers);
    c->vision_feature_layer = (int32_t)layer;
    if (strcmp(feature, "patch") == 0)
        c->vision_feature_full = false;
    else if (strcmp(feature, "cls_patch") == 0)
        c->vision_feature_full = true;
    else
        return lv_error("%s: 'mm_vision_select_feature' '%s' is not supported (patch, "
                        "cls_patch)", file, feature);
    if (start_end)
        return lv_error("%s: 'mm_use_im_start_end' true is not supported (LLaVA-1.5 "
                        "checkpoints use false)", file);
    if (aspect && strncmp(aspect, "anyres", 6) == 0)
        return lv_error("%s: 'image_aspect_ratio' '%s' (LLaVA-1.6) is not supported", file,
                        aspect);
    if (merge && strcmp(merge, "flat") != 0)
        return lv_error("%s: 'mm_patch_merge_type' '%s' (LLaVA-1.6) is not supported", file,
                        merge);
    /* The original code splices image features at a placeholder (IMAGE_TOKEN_INDEX -200,
     * llava/constants.py), not at a vocabulary id: there is no image token here. */
    c->image_token_id = -1;
    return LV_OK;
}

/* ----------------------------------------------------------------------------------------
 * parse
 */

/* Picks the architecture from architectures[0], else model_type. */
static int find_kind(const char *file, const json_t *root, enum hf_kind *kind, char *name,
                     size_t name_size)
{
    struct hf_ctx top = { .file = file, .sect = "" };
    const json_t *archs = json_object_get(root, "architectures");
    const char *type = NULL;
    int rc;

    if (archs && !json_is_null(archs)) {
        if (!json_is_array(archs))
            return type_error(&top, "architectures", archs, "a list of strings");
        if (json_array_size(archs) > 0) {
            const json_t *a = json_array_get(archs, 0);
            if (!json_is_string(a))
                return lv_error("%s: 'architectures[0]' is %s; expected a string", file,
                                type_name(a));
            const char *s = json_string_value(a);
            snprintf(name, name_size, "%s", s);
            for (size_t i = 0; i < sizeof arch_table / sizeof arch_table[0]; i++) {
                if (strcmp(s, arch_table[i].name) == 0) {
                    *kind = arch_table[i].kind;
                    return LV_OK;
                }
            }
            return lv_error("%s: architecture '%s' is not supported (lavinia reads "
                            ARCH_LIST ")", file, s);
        }
    }
    if ((rc = get_str(&top, root, "model_type", &type)))
        return rc;
    if (!type)
        return lv_error("%s: names no architecture (no 'architectures' or 'model_type')",
                        file);
    snprintf(name, name_size, "%s", type);
    if (strcmp(type, "llama") == 0) {
        *kind = HF_LLAMA;
    } else if (strcmp(type, "mistral") == 0) {
        *kind = HF_MISTRAL;
    } else if (strcmp(type, "llava_llama") == 0) {
        *kind = HF_LLAVA_ORIG;
    } else if (strcmp(type, "lavin") == 0) {
        *kind = HF_LAVIN;
    } else if (strcmp(type, "llava") == 0) {
        /* both layouts say "llava"; the original has mm_* keys and no text_config */
        bool orig = json_object_get(root, "mm_vision_tower") &&
                    !json_object_get(root, "text_config");
        *kind = orig ? HF_LLAVA_ORIG : HF_LLAVA;
    } else {
        return lv_error("%s: model_type '%s' is not supported (lavinia reads llama, mistral, "
                        "llava, llava_llama, lavin)", file, type);
    }
    return LV_OK;
}

/* A token id from the file must index the vocabulary (FORMATS.md 2.10, GHSA-g4cc-763q-h9h6). */
static int check_id(const char *file, const char *key, int32_t id, int64_t vocab)
{
    if (id >= 0 && id >= vocab)
        return lv_error("%s: '%s' %d is outside the vocabulary (%lld tokens)", file, key, id,
                        (long long)vocab);
    return LV_OK;
}

int lv_hf_config_parse(struct lv_model_config *out, const char *json, size_t n,
                       const char *name)
{
    struct lv_model_config c;
    json_error_t err;
    json_t *root;
    enum hf_kind kind = HF_LLAMA;
    int rc;

    if (!name)
        name = "<memory>";
    if (n == 0 || !json)
        return lv_error("%s: empty file", name);
    if (n > HF_CONFIG_MAX_BYTES)
        return lv_error("%s: %zu bytes is too large for a config.json (at most %zu)", name, n,
                        HF_CONFIG_MAX_BYTES);
    root = json_loadb(json, n, JSON_REJECT_DUPLICATES, &err);
    if (!root)
        return lv_error("%s: not valid JSON: %s (line %d, column %d)", name, err.text,
                        err.line, err.column);
    if (!json_is_object(root)) {
        rc = lv_error("%s: the top level is %s; expected an object", name, type_name(root));
        goto out;
    }

    lv_model_config_init(&c);
    if ((rc = find_kind(name, root, &kind, c.arch_name, sizeof c.arch_name)))
        goto out;
    struct hf_ctx top = { .file = name, .sect = "" };
    switch (kind) {
    case HF_LLAMA:
        c.arch = LV_ARCH_LLAMA;
        rc = parse_text(&top, root, &text_defaults_table[0], &c);
        break;
    case HF_MISTRAL:
        c.arch = LV_ARCH_MISTRAL;
        rc = parse_text(&top, root, &text_defaults_table[1], &c);
        break;
    case HF_LLAVA:
        c.arch = LV_ARCH_LLAVA;
        rc = parse_llava(name, root, &c);
        break;
    case HF_LLAVA_ORIG:
        c.arch = LV_ARCH_LLAVA;
        rc = parse_llava_orig(name, root, &c);
        break;
    case HF_LAVIN:
        c.arch = LV_ARCH_LLAVA;
        rc = parse_lavin(name, root, &c);
        break;
    }
    if (rc)
        goto out;
    c.qk_layout = LV_QK_HF;

    if ((rc = lv_model_config_check(&c, name)) ||
        (rc = check_id(name, "bos_token_id", c.bos_id, c.vocab)) ||
        (rc = check_id(name, "eos_token_id", c.eos_id, c.vocab)) ||
        (rc = check_id(name, "pad_token_id", c.pad_id, c.vocab)) ||
        (rc = check_id(name, "image_token_index", c.image_token_id, c.vocab)))
        goto out;
    *out = c;
    rc = LV_OK;
out:
    json_decref(root);
    return rc;
}

int lv_hf_config_load(struct lv_model_config *c, const char *path)
{
    char *text;
    size_t n;
    int rc = lv_read_file(path, HF_CONFIG_MAX_BYTES, &text, &n);
    if (rc != LV_OK)
        return rc;
    rc = n == 0 ? lv_error("%s: empty file", path) : lv_hf_config_parse(c, text, n, path);
    free(text);
    return rc;
}

/* ----------------------------------------------------------------------------------------
 * write
 */

/* The shortest decimal that reads back as f (through double, as the reader does), so
 * 1e-5f is written "1e-05" and not 9.99999974737875e-06. */
static json_t *json_float(float f)
{
    char buf[32];
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)f);
        if ((float)strtod(buf, NULL) == f)
            break;
    }
    return json_real(strtod(buf, NULL));
}

/* a token id, or null for none */
static json_t *json_id(int32_t id)
{
    return id >= 0 ? json_integer(id) : json_null();
}

/* obj[key] = v (stolen); false when v is NULL or the set fails (out of memory) */
static bool put(json_t *obj, const char *key, json_t *v)
{
    return v && json_object_set_new(obj, key, v) == 0;
}

static json_t *json_list1(const char *s)
{
    json_t *a = json_array();
    if (a && json_array_append_new(a, json_string(s)) != 0) {
        json_decref(a);
        return NULL;
    }
    return a;
}

/* rope_scaling: null, or the linear block with both spellings of its type (transformers
 * itself writes both once it has read a config with "type") */
static json_t *json_rope(const struct lv_model_config *c)
{
    if (c->rope_scaling != LV_ROPE_SCALING_LINEAR)
        return json_null();
    json_t *rope = json_object();
    if (rope && !(put(rope, "factor", json_float(c->rope_factor)) &&
                  put(rope, "rope_type", json_string("linear")) &&
                  put(rope, "type", json_string("linear")))) {
        json_decref(rope);
        return NULL;
    }
    return rope;
}

/* The text model's keys, sorted (transformers writes sort_keys=True). */
static bool put_text(json_t *o, const struct lv_model_config *c, const char *arch,
                     const char *model_type)
{
    bool ok = put(o, "architectures", json_list1(arch)) &&
              put(o, "attention_bias", json_false()) &&
              put(o, "bos_token_id", json_id(c->bos_id)) &&
              put(o, "eos_token_id", json_id(c->eos_id));
    if (ok && c->head_dim != c->dim / c->n_heads)
        ok = put(o, "head_dim", json_integer(c->head_dim));
    ok = ok && put(o, "hidden_act", json_string("silu")) &&
         put(o, "hidden_size", json_integer(c->dim)) &&
         put(o, "intermediate_size", json_integer(c->hidden)) &&
         put(o, "max_position_embeddings", json_integer(c->max_seq)) &&
         put(o, "mlp_bias", json_false()) &&
         put(o, "model_type", json_string(model_type)) &&
         put(o, "num_attention_heads", json_integer(c->n_heads)) &&
         put(o, "num_hidden_layers", json_integer(c->n_layers)) &&
         put(o, "num_key_value_heads", json_integer(c->n_kv_heads)) &&
         put(o, "pad_token_id", json_id(c->pad_id)) &&
         put(o, "rms_norm_eps", json_float(c->norm_eps)) &&
         put(o, "rope_scaling", json_rope(c)) &&
         put(o, "rope_theta", json_float(c->rope_theta));
    /* lavinia attends over the whole context: say so rather than inherit Mistral's 4096 */
    if (ok && c->arch == LV_ARCH_MISTRAL)
        ok = put(o, "sliding_window", json_null());
    return ok && put(o, "tie_word_embeddings", json_boolean(c->tied)) &&
           put(o, "vocab_size", json_integer(c->vocab));
}

/* The vision tower as transformers' CLIPVisionConfig keys, sorted. */
static bool put_vision(json_t *o, const struct lv_vision_config *v, size_t act_len)
{
    return put(o, "hidden_act", json_stringn(v->act, act_len)) &&
           put(o, "hidden_size", json_integer(v->dim)) &&
           put(o, "image_size", json_integer(v->image_size)) &&
           put(o, "intermediate_size", json_integer(v->hidden)) &&
           put(o, "layer_norm_eps", json_float(v->norm_eps)) &&
           put(o, "model_type", json_string("clip_vision_model")) &&
           put(o, "num_attention_heads", json_integer(v->n_heads)) &&
           put(o, "num_channels", json_integer(v->n_channels)) &&
           put(o, "num_hidden_layers", json_integer(v->n_layers)) &&
           put(o, "patch_size", json_integer(v->patch_size));
}

/* LlavaForConditionalGeneration keys into root, as llava-hf publishes them (sorted). */
static int put_lavin(json_t *root, const struct lv_model_config *c, const char *path)
{
    const struct lv_vision_config *v = &c->vision;
    size_t act_len = strnlen(v->act, sizeof v->act);
    json_t *text = json_object(), *vis = json_object();
    bool ok = text && vis && put_text(text, c, "LlamaForCausalLM", "llama") &&
              put_vision(vis, v, act_len) &&
              put(root, "architectures", json_list1("LaVIN")) &&
              put(root, "model_type", json_string("lavin")) &&
              put(root, "hidden_proj", json_integer(c->proj_hidden)) &&
              put(root, "vision_feature_every", json_integer(c->vision_feature_every)) &&
              put(root, "text_config", json_incref(text)) &&
              put(root, "tie_word_embeddings", json_boolean(c->tied)) &&
              put(root, "vision_config", json_incref(vis)) &&
              put(root, "vocab_size", json_integer(c->vocab));
    json_decref(text);
    json_decref(vis);
    return ok ? LV_OK : lv_error_status(LV_ENOMEM, "%s: out of memory", path);
}

static int put_llava(json_t *root, const struct lv_model_config *c, const char *path)
{
    const struct lv_vision_config *v = &c->vision;
    size_t act_len = strnlen(v->act, sizeof v->act);
    if (c->projector == LV_PROJ_LAVIN)
        return put_lavin(root, c, path);
    if (!c->has_vision || c->projector != LV_PROJ_MLP2X_GELU)
        return lv_error("%s: LlavaForConditionalGeneration needs a vision tower and the "
                        "2-layer GELU projector", path);
    if (c->image_token_id < 0)
        return lv_error("%s: LlavaForConditionalGeneration needs an image token id (llava-hf "
                        "uses 32000)", path);
    if (!(act_len == 10 && memcmp(v->act, "quick_gelu", 10) == 0) &&
        !(act_len == 4 && memcmp(v->act, "gelu", 4) == 0))
        return lv_error("%s: vision activation '%.*s' cannot be written (quick_gelu, gelu)",
                        path, (int)act_len, v->act);
    int64_t side = v->image_size / v->patch_size;
    /* we keep our own references to text and vis; put() steals the extra ones */
    json_t *text = json_object(), *vis = json_object();
    bool ok = text && vis && put_text(text, c, "LlamaForCausalLM", "llama") &&
              put_vision(vis, v, act_len) &&
              put(root, "architectures", json_list1("LlavaForConditionalGeneration")) &&
              put(root, "ignore_index", json_integer(-100)) &&
              put(root, "image_seq_length",
                  json_integer(side * side + (c->vision_feature_full ? 1 : 0))) &&
              put(root, "image_token_index", json_integer(c->image_token_id)) &&
              put(root, "model_type", json_string("llava")) &&
              put(root, "multimodal_projector_bias", json_true()) &&
              put(root, "pad_token_id", json_id(c->pad_id)) &&
              put(root, "projector_hidden_act", json_string("gelu")) &&
              put(root, "text_config", json_incref(text)) &&
              put(root, "tie_word_embeddings", json_boolean(c->tied)) &&
              put(root, "vision_config", json_incref(vis)) &&
              put(root, "vision_feature_layer", json_integer(c->vision_feature_layer)) &&
              put(root, "vision_feature_select_strategy",
                  json_string(c->vision_feature_full ? "full" : "default")) &&
              put(root, "vocab_size", json_integer(c->vocab));
    json_decref(text);
    json_decref(vis);
    return ok ? LV_OK : lv_error_status(LV_ENOMEM, "%s: out of memory", path);
}

/* A config.json tree for c in *out. */
static int build(const struct lv_model_config *c, const char *path, json_t **out)
{
    json_t *root = json_object();
    int rc = LV_OK;
    *out = NULL;
    if (!root)
        return lv_error_status(LV_ENOMEM, "%s: out of memory", path);
    switch (c->arch) {
    case LV_ARCH_LLAMA:
    case LV_ARCH_MISTRAL: {
        bool llama = c->arch == LV_ARCH_LLAMA;
        if (!put_text(root, c, llama ? "LlamaForCausalLM" : "MistralForCausalLM",
                      llama ? "llama" : "mistral"))
            rc = lv_error_status(LV_ENOMEM, "%s: out of memory", path);
        break;
    }
    case LV_ARCH_LLAVA:
        rc = put_llava(root, c, path);
        break;
    default:
        rc = lv_error("%s: architecture %d cannot be written as config.json", path,
                      (int)c->arch);
        break;
    }
    if (rc) {
        json_decref(root);
        return rc;
    }
    *out = root;
    return LV_OK;
}

int lv_hf_config_write(const struct lv_model_config *c, const char *path)
{
    json_t *root;
    int rc;
    if ((rc = lv_model_config_check(c, path)) || (rc = build(c, path, &root)))
        return rc;
    char *s = json_dumps(root, JSON_INDENT(2) | JSON_REAL_PRECISION(9));
    json_decref(root);
    if (!s)
        return lv_error_status(LV_ENOMEM, "%s: out of memory writing config.json", path);
    size_t n = strlen(s);
    char *text = malloc(n + 1);
    if (text) {
        memcpy(text, s, n);
        text[n] = '\n';   /* end the file with a newline, as transformers does */
    }
    free(s);
    if (!text)
        return lv_error_status(LV_ENOMEM, "%s: out of memory writing config.json", path);
    rc = lv_write_atomic(path, text, n + 1);
    free(text);
    return rc;
}
