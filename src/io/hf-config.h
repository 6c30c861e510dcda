/*
 * hf-config.h (internal): Hugging Face config.json for LLaMA, Mistral and LLaVA-1.5.
 *
 * Reads the hyper-parameters of a Hugging Face checkpoint directory into the shared
 * struct lv_model_config, and writes one back that transformers loads:
 *
 *     struct lv_model_config c;
 *     if (lv_hf_config_load(&c, "llava-1.5-7b-hf/config.json") != LV_OK)
 *         return fail(lv_errmsg());      // "config.json: 'hidden_size' is a string; ..."
 *     if (c.has_vision) ...               // c.vision, c.projector, c.image_token_id
 *
 * Architectures read (from architectures[0], else model_type):
 *   LlamaForCausalLM ("llama"), MistralForCausalLM ("mistral") — the text model at top level;
 *   LlavaForConditionalGeneration ("llava") — llava-hf: text_config + vision_config, each
 *     filled with transformers' defaults (LlamaConfig, CLIPVisionConfig) where keys are absent;
 *   LlavaLlamaForCausalLM ("llava_llama", or "llava" with mm_vision_tower) — the original
 *     haotian-liu/LLaVA layout: LLaMA keys at top level plus mm_* keys; its vision tower is
 *     not in the checkpoint, and is described from the mm_vision_tower name.
 * Anything else is refused by name. Every config read gets qk_layout = LV_QK_HF. Unsupported
 * features that would change the model's output (other rope scalings, attention biases, a
 * non-SiLU MLP, LLaVA-1.6 anyres, ...) are refused by name rather than ignored.
 */
#ifndef LV_IO_HF_CONFIG_H
#define LV_IO_HF_CONFIG_H

#include <stddef.h>

#include "io/model-config.h"

/* Read path (a config.json of at most 16 MiB). On failure *c is left unchanged and the
 * message names the file, the key and the problem. */
int lv_hf_config_load(struct lv_model_config *c, const char *path);
/* Same for n bytes of JSON in memory (need not be NUL-terminated); name is for messages. */
int lv_hf_config_parse(struct lv_model_config *c, const char *json, size_t n,
                       const char *name);
/* Write c as a config.json transformers would load: LlamaForCausalLM or MistralForCausalLM
 * for text models, LlavaForConditionalGeneration (text_config = llama, vision_config = CLIP)
 * for LLaVA, which needs the MLP projector and an image token id. Keys sorted as transformers
 * writes them. Atomic: a temporary file in the same directory, fsync, rename over path. */
int lv_hf_config_write(const struct lv_model_config *c, const char *path);

#endif /* LV_IO_HF_CONFIG_H */
