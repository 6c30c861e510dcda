/*
 * names.c: the cross-format tensor name map and the rotary row permutation.
 *
 * Per-layer names are mapped by suffix tables (designated rows, one per tensor kind); the
 * layer number is carried over as written. The q/k permutation: within head h, Hugging Face
 * row h*hd + i is Meta row h*hd + 2i, and HF row h*hd + hd/2 + i is Meta row h*hd + 2i + 1.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "io/names.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* one name in each naming */
struct name_pair {
    const char *gguf;
    const char *hf;
};

/* language model, whole-model tensors */
static const struct name_pair text_global[] = {
    { .gguf = "token_embd.weight", .hf = "model.embed_tokens.weight" },
    { .gguf = "output_norm.weight", .hf = "model.norm.weight" },
    { .gguf = "output.weight", .hf = "lm_head.weight" },
};

/* language model, per layer: "blk.N." + gguf  <->  "model.layers.N." + hf */
static const struct name_pair text_layer[] = {
    { .gguf = "attn_norm.weight", .hf = "input_layernorm.weight" },
    { .gguf = "attn_q.weight", .hf = "self_attn.q_proj.weight" },
    { .gguf = "attn_k.weight", .hf = "self_attn.k_proj.weight" },
    { .gguf = "attn_v.weight", .hf = "self_attn.v_proj.weight" },
    { .gguf = "attn_output.weight", .hf = "self_attn.o_proj.weight" },
    { .gguf = "ffn_norm.weight", .hf = "post_attention_layernorm.weight" },
    { .gguf = "ffn_gate.weight", .hf = "mlp.gate_proj.weight" },
    { .gguf = "ffn_up.weight", .hf = "mlp.up_proj.weight" },
    { .gguf = "ffn_down.weight", .hf = "mlp.down_proj.weight" },
};

#define VM "vision_tower.vision_model."

/* vision tower and projector, whole-model tensors (clip mmproj GGUF) */
static const struct name_pair vision_global[] = {
    { .gguf = "v.class_embd", .hf = VM "embeddings.class_embedding" },
    { .gguf = "v.patch_embd.weight", .hf = VM "embeddings.patch_embedding.weight" },
    { .gguf = "v.position_embd.weight", .hf = VM "embeddings.position_embedding.weight" },
    { .gguf = "v.pre_ln.weight", .hf = VM "pre_layrnorm.weight" },
    { .gguf = "v.pre_ln.bias", .hf = VM "pre_layrnorm.bias" },
    { .gguf = "v.post_ln.weight", .hf = VM "post_layernorm.weight" },
    { .gguf = "v.post_ln.bias", .hf = VM "post_layernorm.bias" },
    { .gguf = "mm.0.weight", .hf = "multi_modal_projector.linear_1.weight" },
    { .gguf = "mm.0.bias", .hf = "multi_modal_projector.linear_1.bias" },
    { .gguf = "mm.2.weight", .hf = "multi_modal_projector.linear_2.weight" },
    { .gguf = "mm.2.bias", .hf = "multi_modal_projector.linear_2.bias" },
};

/* vision tower, per layer: "v.blk.N." + gguf  <->  VM "encoder.layers.N." + hf.
 * ffn_down holds fc1 and ffn_up holds fc2 in the legacy converter's files (FORMATS.md 2.8). */
static const struct name_pair vision_layer[] = {
    { .gguf = "attn_q.weight", .hf = "self_attn.q_proj.weight" },
    { .gguf = "attn_q.bias", .hf = "self_attn.q_proj.bias" },
    { .gguf = "attn_k.weight", .hf = "self_attn.k_proj.weight" },
    { .gguf = "attn_k.bias", .hf = "self_attn.k_proj.bias" },
    { .gguf = "attn_v.weight", .hf = "self_attn.v_proj.weight" },
    { .gguf = "attn_v.bias", .hf = "self_attn.v_proj.bias" },
    { .gguf = "attn_out.weight", .hf = "self_attn.out_proj.weight" },
    { .gguf = "attn_out.bias", .hf = "self_attn.out_proj.bias" },
    { .gguf = "ln1.weight", .hf = "layer_norm1.weight" },
    { .gguf = "ln1.bias", .hf = "layer_norm1.bias" },
    { .gguf = "ln2.weight", .hf = "layer_norm2.weight" },
    { .gguf = "ln2.bias", .hf = "layer_norm2.bias" },
    { .gguf = "ffn_down.weight", .hf = "mlp.fc1.weight" },
    { .gguf = "ffn_down.bias", .hf = "mlp.fc1.bias" },
    { .gguf = "ffn_up.weight", .hf = "mlp.fc2.weight" },
    { .gguf = "ffn_up.bias", .hf = "mlp.fc2.bias" },
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static bool put(char *out, size_t n, const char *fmt, const char *a, long layer, const char *b)
{
    int k = layer >= 0 ? snprintf(out, n, fmt, a, layer, b) : snprintf(out, n, fmt, a, b);
    return k >= 0 && (size_t)k < n;
}

/* "PREFIX<digits>." at the start of s: the layer number and the rest, or -1 */
static long layer_of(const char *s, const char *prefix, const char **rest)
{
    size_t pl = strlen(prefix);
    if (strncmp(s, prefix, pl) != 0)
        return -1;
    const char *p = s + pl;
    if (*p < '0' || *p > '9' || (p[0] == '0' && p[1] >= '0' && p[1] <= '9'))
        return -1;
    char *end;
    long n = strtol(p, &end, 10);
    if (*end != '.' || n < 0 || n > 100000)
        return -1;
    *rest = end + 1;
    return n;
}

static bool map(const char *name, bool from_gguf, char *out, size_t n)
{
    const char *rest;
    long L;
    for (size_t i = 0; i < COUNT(text_global); i++)
        if (strcmp(name, from_gguf ? text_global[i].gguf : text_global[i].hf) == 0)
            return put(out, n, "%s%s", from_gguf ? text_global[i].hf : text_global[i].gguf,
                       -1, "");
    for (size_t i = 0; i < COUNT(vision_global); i++)
        if (strcmp(name, from_gguf ? vision_global[i].gguf : vision_global[i].hf) == 0)
            return put(out, n, "%s%s", from_gguf ? vision_global[i].hf : vision_global[i].gguf,
                       -1, "");
    if ((L = layer_of(name, from_gguf ? "blk." : "model.layers.", &rest)) >= 0)
        for (size_t i = 0; i < COUNT(text_layer); i++)
            if (strcmp(rest, from_gguf ? text_layer[i].gguf : text_layer[i].hf) == 0)
                return put(out, n, "%s%ld.%s", from_gguf ? "model.layers." : "blk.", L,
                           from_gguf ? text_layer[i].hf : text_layer[i].gguf);
    if ((L = layer_of(name, from_gguf ? "v.blk." : VM "encoder.layers.", &rest)) >= 0)
        for (size_t i = 0; i < COUNT(vision_layer); i++)
            if (strcmp(rest, from_gguf ? vision_layer[i].gguf : vision_layer[i].hf) == 0)
                return put(out, n, "%s%ld.%s", from_gguf ? VM "encoder.layers." : "v.blk.", L,
                           from_gguf ? vision_layer[i].hf : vision_layer[i].gguf);
    return false;
}

bool lv_names_gguf_to_canonical(const char *gguf, char *out, size_t n)
{
    return map(gguf, true, out, n);
}

bool lv_names_canonical_to_gguf(const char *canonical, char *out, size_t n)
{
    return map(canonical, false, out, n);
}

/* prefix rewrites onto canonical names, first match wins */
static const struct {
    const char *from, *to;
} hf_prefixes[] = {
    { .from = "language_model.model.", .to = "model." },
    { .from = "language_model.lm_head.", .to = "lm_head." },
    { .from = "model.language_model.", .to = "model." },
    { .from = "model.vision_tower.", .to = "vision_tower." },
    { .from = "model.multi_modal_projector.", .to = "multi_modal_projector." },
    /* the original haotian-liu/LLaVA checkpoints: nn.Sequential(Linear, GELU, Linear), or
     * one Linear for mm_projector_type "linear" */
    { .from = "model.mm_projector.0.", .to = "multi_modal_projector.linear_1." },
    { .from = "model.mm_projector.2.", .to = "multi_modal_projector.linear_2." },
    { .from = "model.mm_projector.", .to = "multi_modal_projector.linear_1." },
};

bool lv_names_hf_canonical(const char *name, char *out, size_t n)
{
    for (size_t i = 0; i < COUNT(hf_prefixes); i++) {
        size_t fl = strlen(hf_prefixes[i].from);
        if (strncmp(name, hf_prefixes[i].from, fl) == 0)
            return put(out, n, "%s%s", hf_prefixes[i].to, -1, name + fl);
    }
    return put(out, n, "%s%s", name, -1, "");
}

bool lv_names_hf_for_file(const char *canonical, bool llava, char *out, size_t n)
{
    if (llava && strncmp(canonical, "model.", 6) == 0)
        return put(out, n, "%s%s", "language_model.model.", -1, canonical + 6);
    if (llava && strncmp(canonical, "lm_head.", 8) == 0)
        return put(out, n, "%s%s", "language_model.", -1, canonical);
    return put(out, n, "%s%s", canonical, -1, "");
}

bool lv_names_is_qk(const char *canonical, bool *is_k)
{
    const char *rest;
    if (layer_of(canonical, "model.layers.", &rest) < 0)
        return false;
    if (strcmp(rest, "self_attn.q_proj.weight") == 0) {
        *is_k = false;
        return true;
    }
    if (strcmp(rest, "self_attn.k_proj.weight") == 0) {
        *is_k = true;
        return true;
    }
    return false;
}

void lv_qk_meta_to_hf(void *dst, const void *src, long heads, long head_dim, size_t row_bytes)
{
    char *d = dst;
    const char *s = src;
    for (long h = 0; h < heads; h++)
        for (long i = 0; i < head_dim / 2; i++) {
            long base = h * head_dim;
            memcpy(d + (size_t)(base + i) * row_bytes, s + (size_t)(base + 2 * i) * row_bytes,
                   row_bytes);
            memcpy(d + (size_t)(base + head_dim / 2 + i) * row_bytes,
                   s + (size_t)(base + 2 * i + 1) * row_bytes, row_bytes);
        }
}

void lv_qk_hf_to_meta(void *dst, const void *src, long heads, long head_dim, size_t row_bytes)
{
    char *d = dst;
    const char *s = src;
    for (long h = 0; h < heads; h++)
        for (long i = 0; i < head_dim / 2; i++) {
            long base = h * head_dim;
            memcpy(d + (size_t)(base + 2 * i) * row_bytes, s + (size_t)(base + i) * row_bytes,
                   row_bytes);
            memcpy(d + (size_t)(base + 2 * i + 1) * row_bytes,
                   s + (size_t)(base + head_dim / 2 + i) * row_bytes, row_bytes);
        }
}
