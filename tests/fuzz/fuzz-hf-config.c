/*
 * fuzz-hf-config.c: libFuzzer target for the Hugging Face config.json reader.
 *
 * Parses the input with lv_hf_config_parse and, when it is accepted, reads every field of
 * the config it filled. Seeds: tests/fuzz/hf-config/ (published LLaMA, Mistral and LLaVA
 * configs and a few broken ones).
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "io/hf-config.h"
#include "lavinia/error.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct lv_model_config c;
    volatile int64_t sink = 0;
    volatile float fsink = 0.0f;

    if (lv_hf_config_parse(&c, (const char *)data, size, "fuzz-config.json") != LV_OK)
        return 0;
    sink += c.arch + (int64_t)strlen(c.arch_name) + (int64_t)strlen(lv_arch_name(c.arch));
    sink += c.vocab + c.dim + c.hidden + c.n_layers + c.n_heads + c.n_kv_heads + c.head_dim;
    sink += c.max_seq + c.rope_scaling + c.tied + c.bos_id + c.eos_id + c.pad_id + c.qk_layout;
    fsink += c.norm_eps + c.rope_theta + c.rope_factor;
    if (c.has_vision) {
        const struct lv_vision_config *v = &c.vision;
        sink += v->dim + v->hidden + v->n_layers + v->n_heads + v->image_size + v->patch_size;
        sink += v->n_channels + (int64_t)strnlen(v->act, sizeof v->act);
        fsink += v->norm_eps;
        sink += c.projector + c.image_token_id + c.vision_feature_layer + c.vision_feature_full;
    }
    (void)sink;
    (void)fsink;
    return 0;
}
