/*
 * fuzz-adapter.c: libFuzzer target for adapter_config.json and what follows from it.
 *
 * The input is an adapter_config.json. When it parses and names a method, an adapter is made
 * from it for a small random LLaVA (a two-layer decoder and a two-block tower): key types and
 * ranges, target_modules / exclude_modules regexes and lists, layers_to_transform,
 * rank_pattern / alpha_pattern, modules_to_save. Seeds: tests/fuzz/adapter/.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "lavinia/error.h"
#include "model/clip.h"
#include "model/llama.h"
#include "peft/adapter.h"

static struct lv_site_table sites;
static lv_llama *model;             /* kept for the whole run: the table points at them */
static lv_clip *tower;
static bool ready;

static void setup(void)
{
    struct lv_model_config c;
    lv_model_config_init(&c);
    c.vocab = 32;
    c.dim = 8;
    c.hidden = 16;
    c.n_layers = 2;
    c.n_heads = 2;
    c.n_kv_heads = 1;
    c.head_dim = 4;
    c.max_seq = 16;
    c.has_vision = true;
    c.vision.dim = 8;
    c.vision.hidden = 16;
    c.vision.n_layers = 2;
    c.vision.n_heads = 2;
    c.vision.image_size = 8;
    c.vision.patch_size = 4;
    c.vision.n_channels = 3;
    c.vision.norm_eps = 1e-5f;
    c.projector = LV_PROJ_MLP2X_GELU;
    c.vision_feature_layer = -1;
    if (lv_llama_new_random(&model, &c, LV_F32, 1, 0) != LV_OK ||
        lv_clip_new_random(&tower, &c, 2) != LV_OK ||
        lv_site_table_build(&sites, model, tower, LV_NAMING_LLAVA_HUB) != LV_OK)
        abort();
    ready = true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!ready)
        setup();
    json_t *config;
    const struct lv_peft_method *m;
    struct lv_adapter *a = NULL;
    if (lv_adapter_config_parse((const char *)data, size, "adapter_config.json", &config))
        return 0;
    if (lv_adapter_method_of(config, "adapter_config.json", &m) == LV_OK &&
        lv_adapter_new(&a, m, config, &sites, 1, "adapter_config.json") == LV_OK) {
        volatile int64_t sink = a->n_params;
        (void)sink;
        lv_adapter_free(a);
    }
    json_decref(config);
    return 0;
}
