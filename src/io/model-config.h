/*
 * model-config.h (internal): the hyper-parameters of a model, whatever file they came from.
 *
 * Every reader (Hugging Face config.json, GGUF metadata, the llama2.c header) fills this one
 * struct, and every writer reads it, so conversions between formats go through it. Fields
 * a format does not carry keep the defaults of lv_model_config_init (those of LLaMA-2).
 */
#ifndef LV_IO_MODEL_CONFIG_H
#define LV_IO_MODEL_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

enum lv_arch {
    LV_ARCH_LLAMA,        /* LlamaForCausalLM, GGUF "llama", llama2.c */
    LV_ARCH_MISTRAL,      /* MistralForCausalLM (LLaMA layout, sliding window ignored) */
    LV_ARCH_LLAVA,        /* LlavaForConditionalGeneration: text + vision + projector */
    LV_ARCH_COUNT
};

enum lv_rope_scaling { LV_ROPE_SCALING_NONE, LV_ROPE_SCALING_LINEAR };

/* The q/k row order of the attention weights as stored (FORMATS.md 4.2). */
enum lv_qk_layout {
    LV_QK_HF,             /* half-split rotation (Hugging Face rotate_half) */
    LV_QK_META,           /* adjacent pairs (Meta, GGUF, llama2.c) */
};

/* LLaVA: linear, or linear-GELU-linear over the patch features of one layer; LaVIN: the
 * class token after every vision_feature_every-th block through linear-SiLU-linear (its
 * adapter_proj, conv_A and conv_B). */
enum lv_projector { LV_PROJ_NONE, LV_PROJ_LINEAR, LV_PROJ_MLP2X_GELU, LV_PROJ_LAVIN };

/* CLIP ViT vision tower (LLaVA). */
struct lv_vision_config {
    int64_t dim;              /* hidden_size, e.g. 1024 */
    int64_t hidden;           /* intermediate_size, e.g. 4096 */
    int64_t n_layers;         /* num_hidden_layers, e.g. 24 */
    int64_t n_heads;          /* num_attention_heads, e.g. 16 */
    int64_t image_size;       /* e.g. 336 */
    int64_t patch_size;       /* e.g. 14 */
    int64_t n_channels;       /* 3 */
    float norm_eps;           /* layer_norm_eps, 1e-5 */
    char act[16];             /* hidden_act: "quick_gelu" or "gelu" */
};

struct lv_model_config {
    enum lv_arch arch;
    char arch_name[64];           /* as the file names it ("LlamaForCausalLM", "llama") */
    /* --- the language model ---------------------------------------------------------- */
    int64_t vocab;                /* rows of the embedding (llava-hf pads to 32064) */
    int64_t dim;                  /* hidden_size */
    int64_t hidden;               /* intermediate_size (FFN) */
    int64_t n_layers;
    int64_t n_heads;
    int64_t n_kv_heads;
    int64_t head_dim;             /* dim / n_heads unless the config says otherwise */
    int64_t max_seq;              /* max_position_embeddings / context length */
    float norm_eps;               /* rms_norm_eps */
    float rope_theta;             /* 10000 */
    enum lv_rope_scaling rope_scaling;
    float rope_factor;            /* linear scaling factor (1 = none) */
    bool tied;                    /* lm_head shares the embedding */
    int32_t bos_id, eos_id, pad_id;   /* -1 when absent */
    enum lv_qk_layout qk_layout;  /* how q/k rows are stored in the file */
    /* --- LLaVA ------------------------------------------------------------------------ */
    bool has_vision;
    struct lv_vision_config vision;
    enum lv_projector projector;
    int32_t image_token_id;       /* image_token_index (32000 in llava-hf) */
    int32_t vision_feature_layer; /* -2 in LLaVA-1.5: the penultimate layer */
    bool vision_feature_full;     /* strategy "full" keeps the class token; "default" drops it */
    /* --- LaVIN ------------------------------------------------------------------------ */
    int64_t proj_hidden;          /* hidden_proj: adapter_proj's hidden size (128) */
    int32_t vision_feature_every; /* class tokens after blocks every, 2 every, ... (4) */
};

/* LLaMA-2 defaults: eps 1e-5, theta 10000, no scaling, untied, ids 1/2/-1, HF layout. */
void lv_model_config_init(struct lv_model_config *c);
/* Checks the numbers agree with each other (dim % heads, heads % kv heads, positive sizes,
 * bounded); an error names `what` (the file) and the field. */
int lv_model_config_check(const struct lv_model_config *c, const char *what);
const char *lv_arch_name(enum lv_arch a);

#endif /* LV_IO_MODEL_CONFIG_H */
