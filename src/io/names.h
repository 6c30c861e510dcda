/*
 * names.h (internal): tensor names across checkpoint formats (FORMATS.md §7, §2.8, §4.3).
 *
 * lavinia's canonical names are Hugging Face's LLaMA names for the language model
 * ("model.layers.3.self_attn.q_proj.weight", "lm_head.weight") and llava-hf's names for the
 * vision tower and projector without a "model." prefix ("vision_tower.vision_model....",
 * "multi_modal_projector.linear_1.weight"). Both LLaVA layouts in circulation map onto them:
 * the hub layout (language_model.model.*, language_model.lm_head.*) and the layout of
 * transformers >= 4.52 (model.language_model.*, model.vision_tower.*, lm_head.*).
 */
#ifndef LV_IO_NAMES_H
#define LV_IO_NAMES_H

#include <stdbool.h>
#include <stddef.h>

/* Canonical name of a Hugging Face tensor name (either LLaVA layout, or plain LLaMA).
 * Writes into out; false if it does not fit. */
bool lv_names_hf_canonical(const char *name, char *out, size_t n);
/* The name to write in a Hugging Face checkpoint: plain for text models, the hub layout
 * (language_model.*) for LLaVA. */
bool lv_names_hf_for_file(const char *canonical, bool llava, char *out, size_t n);
/* GGUF name (llama text model or clip mmproj) <-> canonical name. False when the name has no
 * counterpart. For the CLIP MLP, GGUF's ffn_up/ffn_down are swapped in legacy files: the
 * caller fixes fc1/fc2 by shape (lv_names_clip_fc_by_shape). */
bool lv_names_gguf_to_canonical(const char *gguf, char *out, size_t n);
bool lv_names_canonical_to_gguf(const char *canonical, char *out, size_t n);
/* Is this the canonical name of a q or k projection of the language model? (Meta vs HF row
 * order applies to these only.) Sets *is_k. */
bool lv_names_is_qk(const char *canonical, bool *is_k);

/* Permute the rows of a q or k weight between Meta (adjacent pairs) and Hugging Face
 * (half split) rotary order, per head (FORMATS.md 4.2). src and dst: rows x row_bytes,
 * distinct buffers; rows = heads * head_dim. */
void lv_qk_meta_to_hf(void *dst, const void *src, long heads, long head_dim, size_t row_bytes);
void lv_qk_hf_to_meta(void *dst, const void *src, long heads, long head_dim, size_t row_bytes);

#endif /* LV_IO_NAMES_H */
