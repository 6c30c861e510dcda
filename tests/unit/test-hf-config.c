/*
 * test-hf-config.c: Hugging Face config.json reading and writing (src/io/hf-config.c).
 *
 * 1. Published configs, reproduced below as the Hugging Face hub serves them (field for field
 *    as far as we know them; the source is named above each), read into lv_model_config with
 *    transformers' defaults for the keys they leave out.
 * 2. Write -> read round trips, bit-exact, and the writer's atomic replace.
 * 3. Hostile files written into a fresh temporary directory: each load must fail with a
 *    message naming the file and the problem.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <dirent.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/hf-config.h"
#include "lavinia/error.h"
#include "testutil.h"

/* ----------------------------------------------------------------------------------------
 * scratch directory and files
 */

static char tmpdir[PATH_MAX];

static void make_tmpdir(void)
{
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/lv-test-hf-config-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        exit(99);
    }
}

/* tmpdir/name in a static rotating buffer */
static const char *tmp_path(const char *name)
{
    static char bufs[4][PATH_MAX + 64];
    static int k;
    char *p = bufs[k++ % 4];
    snprintf(p, PATH_MAX + 64, "%s/%s", tmpdir, name);
    return p;
}

static const char *write_file(const char *name, const void *buf, size_t n)
{
    const char *path = tmp_path(name);
    FILE *fp = fopen(path, "wb");
    if (!fp || (n && fwrite(buf, 1, n, fp) != n) || fclose(fp) != 0) {
        perror(path);
        exit(99);
    }
    return path;
}

static const char *write_text(const char *name, const char *text)
{
    return write_file(name, text, strlen(text));
}

/* Remove everything in tmpdir (one level, plus the empty "subdir"), then tmpdir. */
static void cleanup(void)
{
    DIR *d = opendir(tmpdir);
    struct dirent *e;
    char path[PATH_MAX + 300];
    while (d && (e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", tmpdir, e->d_name);
        if (unlink(path) != 0)
            rmdir(path);
    }
    if (d)
        closedir(d);
    rmdir(tmpdir);
}

/* Names in tmpdir containing ".tmp-" (writer leftovers). */
static int count_temp_files(void)
{
    DIR *d = opendir(tmpdir);
    struct dirent *e;
    int n = 0;
    while (d && (e = readdir(d)))
        n += strstr(e->d_name, ".tmp-") != NULL;
    if (d)
        closedir(d);
    return n;
}

static void expect_fail(int rc, const char *path, const char *word, const char *what)
{
    const char *m = lv_errmsg();
    tu_assert(rc != LV_OK && strstr(m, path) != NULL && strstr(m, word) != NULL,
              "%s: refused, naming the file and '%s' (rc %d: %s)", what, word, rc, m);
}

/* Load name (written from text) and expect it to fail with word in the message. */
static void hostile(const char *name, const char *text, const char *word, const char *what)
{
    struct lv_model_config c;
    const char *p = write_text(name, text);
    expect_fail(lv_hf_config_load(&c, p), p, word, what);
}

/* ----------------------------------------------------------------------------------------
 * published configs
 */

/* meta-llama/Llama-2-7b-hf, config.json (revision of 2023-07; later revisions add
 * "attention_bias": false and "rope_theta": 10000.0, which change nothing here). */
static const char llama2_7b[] =
    "{\n"
    "  \"_name_or_path\": \"meta-llama/Llama-2-7b-hf\",\n"
    "  \"architectures\": [\n    \"LlamaForCausalLM\"\n  ],\n"
    "  \"bos_token_id\": 1,\n"
    "  \"eos_token_id\": 2,\n"
    "  \"hidden_act\": \"silu\",\n"
    "  \"hidden_size\": 4096,\n"
    "  \"initializer_range\": 0.02,\n"
    "  \"intermediate_size\": 11008,\n"
    "  \"max_position_embeddings\": 4096,\n"
    "  \"model_type\": \"llama\",\n"
    "  \"num_attention_heads\": 32,\n"
    "  \"num_hidden_layers\": 32,\n"
    "  \"num_key_value_heads\": 32,\n"
    "  \"pretraining_tp\": 1,\n"
    "  \"rms_norm_eps\": 1e-05,\n"
    "  \"rope_scaling\": null,\n"
    "  \"tie_word_embeddings\": false,\n"
    "  \"torch_dtype\": \"float16\",\n"
    "  \"transformers_version\": \"4.31.0.dev0\",\n"
    "  \"use_cache\": true,\n"
    "  \"vocab_size\": 32000\n"
    "}\n";

/* mistralai/Mistral-7B-v0.1, config.json */
static const char mistral_7b[] =
    "{\n"
    "  \"architectures\": [\n    \"MistralForCausalLM\"\n  ],\n"
    "  \"bos_token_id\": 1,\n"
    "  \"eos_token_id\": 2,\n"
    "  \"hidden_act\": \"silu\",\n"
    "  \"hidden_size\": 4096,\n"
    "  \"initializer_range\": 0.02,\n"
    "  \"intermediate_size\": 14336,\n"
    "  \"max_position_embeddings\": 32768,\n"
    "  \"model_type\": \"mistral\",\n"
    "  \"num_attention_heads\": 32,\n"
    "  \"num_hidden_layers\": 32,\n"
    "  \"num_key_value_heads\": 8,\n"
    "  \"rms_norm_eps\": 1e-05,\n"
    "  \"rope_theta\": 10000.0,\n"
    "  \"sliding_window\": 4096,\n"
    "  \"tie_word_embeddings\": false,\n"
    "  \"torch_dtype\": \"bfloat16\",\n"
    "  \"transformers_version\": \"4.34.0.dev0\",\n"
    "  \"use_cache\": true,\n"
    "  \"vocab_size\": 32000\n"
    "}\n";

/* TinyLlama/TinyLlama-1.1B-Chat-v1.0, config.json (grouped-query attention: 32 heads,
 * 4 kv heads) */
static const char tinyllama[] =
    "{\n"
    "  \"architectures\": [\n    \"LlamaForCausalLM\"\n  ],\n"
    "  \"attention_bias\": false,\n"
    "  \"bos_token_id\": 1,\n"
    "  \"eos_token_id\": 2,\n"
    "  \"hidden_act\": \"silu\",\n"
    "  \"hidden_size\": 2048,\n"
    "  \"initializer_range\": 0.02,\n"
    "  \"intermediate_size\": 5632,\n"
    "  \"max_position_embeddings\": 2048,\n"
    "  \"model_type\": \"llama\",\n"
    "  \"num_attention_heads\": 32,\n"
    "  \"num_hidden_layers\": 22,\n"
    "  \"num_key_value_heads\": 4,\n"
    "  \"pretraining_tp\": 1,\n"
    "  \"rms_norm_eps\": 1e-05,\n"
    "  \"rope_scaling\": null,\n"
    "  \"rope_theta\": 10000.0,\n"
    "  \"tie_word_embeddings\": false,\n"
    "  \"torch_dtype\": \"bfloat16\",\n"
    "  \"transformers_version\": \"4.35.0\",\n"
    "  \"use_cache\": true,\n"
    "  \"vocab_size\": 32000\n"
    "}\n";

/* llava-hf/llava-1.5-7b-hf, config.json (the 2023-12 revision, transformers 4.36): the
 * text_config gives only what differs from LlamaConfig's LLaMA-7B defaults, and the
 * vision_config only what differs from CLIPVisionConfig's. Later revisions add
 * "image_seq_length": 576. */
static const char llava15_hf[] =
    "{\n"
    "  \"architectures\": [\n    \"LlavaForConditionalGeneration\"\n  ],\n"
    "  \"ignore_index\": -100,\n"
    "  \"image_token_index\": 32000,\n"
    "  \"model_type\": \"llava\",\n"
    "  \"pad_token_id\": 32001,\n"
    "  \"projector_hidden_act\": \"gelu\",\n"
    "  \"text_config\": {\n"
    "    \"_name_or_path\": \"lmsys/vicuna-7b-v1.5\",\n"
    "    \"architectures\": [\n      \"LlamaForCausalLM\"\n    ],\n"
    "    \"max_position_embeddings\": 4096,\n"
    "    \"model_type\": \"llama\",\n"
    "    \"rms_norm_eps\": 1e-05,\n"
    "    \"torch_dtype\": \"float16\",\n"
    "    \"vocab_size\": 32064\n"
    "  },\n"
    "  \"tie_word_embeddings\": false,\n"
    "  \"torch_dtype\": \"float16\",\n"
    "  \"transformers_version\": \"4.36.0.dev0\",\n"
    "  \"vision_config\": {\n"
    "    \"hidden_size\": 1024,\n"
    "    \"image_size\": 336,\n"
    "    \"intermediate_size\": 4096,\n"
    "    \"model_type\": \"clip_vision_model\",\n"
    "    \"num_attention_heads\": 16,\n"
    "    \"num_hidden_layers\": 24,\n"
    "    \"patch_size\": 14,\n"
    "    \"projection_dim\": 768,\n"
    "    \"vocab_size\": 32000\n"
    "  },\n"
    "  \"vision_feature_layer\": -2,\n"
    "  \"vision_feature_select_strategy\": \"default\",\n"
    "  \"vocab_size\": 32064\n"
    "}\n";

/* liuhaotian/llava-v1.5-7b, config.json: the original haotian-liu/LLaVA layout */
static const char llava15_orig[] =
    "{\n"
    "  \"_name_or_path\": \"./checkpoints/vicuna-7b-v1-5\",\n"
    "  \"architectures\": [\n    \"LlavaLlamaForCausalLM\"\n  ],\n"
    "  \"bos_token_id\": 1,\n"
    "  \"eos_token_id\": 2,\n"
    "  \"freeze_mm_mlp_adapter\": false,\n"
    "  \"hidden_act\": \"silu\",\n"
    "  \"hidden_size\": 4096,\n"
    "  \"image_aspect_ratio\": \"pad\",\n"
    "  \"initializer_range\": 0.02,\n"
    "  \"intermediate_size\": 11008,\n"
    "  \"max_length\": 4096,\n"
    "  \"max_position_embeddings\": 4096,\n"
    "  \"mm_hidden_size\": 1024,\n"
    "  \"mm_projector_lr\": null,\n"
    "  \"mm_projector_type\": \"mlp2x_gelu\",\n"
    "  \"mm_use_im_patch_token\": false,\n"
    "  \"mm_use_im_start_end\": false,\n"
    "  \"mm_vision_select_feature\": \"patch\",\n"
    "  \"mm_vision_select_layer\": -2,\n"
    "  \"mm_vision_tower\": \"openai/clip-vit-large-patch14-336\",\n"
    "  \"model_type\": \"llava\",\n"
    "  \"num_attention_heads\": 32,\n"
    "  \"num_hidden_layers\": 32,\n"
    "  \"num_key_value_heads\": 32,\n"
    "  \"pad_token_id\": 0,\n"
    "  \"pretraining_tp\": 1,\n"
    "  \"rms_norm_eps\": 1e-05,\n"
    "  \"rope_scaling\": null,\n"
    "  \"tie_word_embeddings\": false,\n"
    "  \"torch_dtype\": \"float16\",\n"
    "  \"transformers_version\": \"4.31.0\",\n"
    "  \"tune_mm_mlp_adapter\": false,\n"
    "  \"tune_mm_vision_resampler\": false,\n"
    "  \"unfreeze_mm_vision_tower\": false,\n"
    "  \"use_cache\": true,\n"
    "  \"use_mm_proj\": true,\n"
    "  \"vocab_size\": 32000\n"
    "}\n";

static bool same_vision(const struct lv_vision_config *a, const struct lv_vision_config *b)
{
    return a->dim == b->dim && a->hidden == b->hidden && a->n_layers == b->n_layers &&
           a->n_heads == b->n_heads && a->image_size == b->image_size &&
           a->patch_size == b->patch_size && a->n_channels == b->n_channels &&
           a->norm_eps == b->norm_eps && strcmp(a->act, b->act) == 0;
}

/* Every field but arch_name (the writer names the canonical class). */
static bool same_config(const struct lv_model_config *a, const struct lv_model_config *b)
{
    return a->arch == b->arch && a->vocab == b->vocab && a->dim == b->dim &&
           a->hidden == b->hidden && a->n_layers == b->n_layers && a->n_heads == b->n_heads &&
           a->n_kv_heads == b->n_kv_heads && a->head_dim == b->head_dim &&
           a->max_seq == b->max_seq && a->norm_eps == b->norm_eps &&
           a->rope_theta == b->rope_theta && a->rope_scaling == b->rope_scaling &&
           a->rope_factor == b->rope_factor && a->tied == b->tied && a->bos_id == b->bos_id &&
           a->eos_id == b->eos_id && a->pad_id == b->pad_id && a->qk_layout == b->qk_layout &&
           a->has_vision == b->has_vision &&
           (!a->has_vision || same_vision(&a->vision, &b->vision)) &&
           a->projector == b->projector && a->image_token_id == b->image_token_id &&
           a->vision_feature_layer == b->vision_feature_layer &&
           a->vision_feature_full == b->vision_feature_full;
}

/* Text-model fields, as expected. */
struct want_text {
    enum lv_arch arch;
    int64_t vocab, dim, hidden, n_layers, n_heads, n_kv_heads, head_dim, max_seq;
    float eps, theta;
    bool tied;
    int32_t bos, eos, pad;
};

static bool check_text(const char *what, const struct lv_model_config *c,
                       const struct want_text *w)
{
    bool ok = c->arch == w->arch && c->vocab == w->vocab && c->dim == w->dim &&
              c->hidden == w->hidden && c->n_layers == w->n_layers &&
              c->n_heads == w->n_heads && c->n_kv_heads == w->n_kv_heads &&
              c->head_dim == w->head_dim && c->max_seq == w->max_seq &&
              c->norm_eps == w->eps && c->rope_theta == w->theta &&
              c->rope_scaling == LV_ROPE_SCALING_NONE && c->rope_factor == 1.0f &&
              c->tied == w->tied && c->bos_id == w->bos && c->eos_id == w->eos &&
              c->pad_id == w->pad && c->qk_layout == LV_QK_HF;
    return tu_assert(ok, "%s: %s vocab %lld dim %lld ffn %lld layers %lld heads %lld/%lld "
                     "head dim %lld ctx %lld eps %g theta %g tied %d ids %d/%d/%d", what,
                     lv_arch_name(c->arch), (long long)c->vocab, (long long)c->dim,
                     (long long)c->hidden, (long long)c->n_layers, (long long)c->n_heads,
                     (long long)c->n_kv_heads, (long long)c->head_dim, (long long)c->max_seq,
                     (double)c->norm_eps, (double)c->rope_theta, c->tied, c->bos_id, c->eos_id,
                     c->pad_id);
}

/* Parse text from a file; write it back; read that; compare. */
static bool load_and_round_trip(const char *name, const char *text,
                                struct lv_model_config *c)
{
    char out_name[128];
    const char *p = write_text(name, text);
    int rc = lv_hf_config_load(c, p);
    if (!tu_assert(rc == LV_OK, "%s: loads (%s)", name, rc ? lv_errmsg() : "ok"))
        return false;
    snprintf(out_name, sizeof out_name, "written-%s", name);
    const char *q = tmp_path(out_name);
    struct lv_model_config back;
    rc = lv_hf_config_write(c, q);
    if (!tu_assert(rc == LV_OK, "%s: written back (%s)", name, rc ? lv_errmsg() : "ok"))
        return true;
    rc = lv_hf_config_load(&back, q);
    tu_assert(rc == LV_OK && same_config(c, &back),
              "%s: write -> read gives the same config, bit for bit (%s)", name,
              rc ? lv_errmsg() : "ok");
    return true;
}

static void test_published(void)
{
    struct lv_model_config c;

    if (load_and_round_trip("llama-2-7b.json", llama2_7b, &c)) {
        const struct want_text w = { .arch = LV_ARCH_LLAMA, .vocab = 32000, .dim = 4096,
            .hidden = 11008, .n_layers = 32, .n_heads = 32, .n_kv_heads = 32,
            .head_dim = 128, .max_seq = 4096, .eps = 1e-5f, .theta = 10000.0f,
            .tied = false, .bos = 1, .eos = 2, .pad = -1 };
        check_text("Llama-2-7b", &c, &w);
        tu_assert(!c.has_vision && strcmp(c.arch_name, "LlamaForCausalLM") == 0,
                  "Llama-2-7b: no vision, arch name '%s'", c.arch_name);
    }
    if (load_and_round_trip("mistral-7b.json", mistral_7b, &c)) {
        const struct want_text w = { .arch = LV_ARCH_MISTRAL, .vocab = 32000, .dim = 4096,
            .hidden = 14336, .n_layers = 32, .n_heads = 32, .n_kv_heads = 8,
            .head_dim = 128, .max_seq = 32768, .eps = 1e-5f, .theta = 10000.0f,
            .tied = false, .bos = 1, .eos = 2, .pad = -1 };
        check_text("Mistral-7B-v0.1", &c, &w);
    }
    if (load_and_round_trip("tinyllama.json", tinyllama, &c)) {
        const struct want_text w = { .arch = LV_ARCH_LLAMA, .vocab = 32000, .dim = 2048,
            .hidden = 5632, .n_layers = 22, .n_heads = 32, .n_kv_heads = 4,
            .head_dim = 64, .max_seq = 2048, .eps = 1e-5f, .theta = 10000.0f,
            .tied = false, .bos = 1, .eos = 2, .pad = -1 };
        check_text("TinyLlama-1.1B (GQA)", &c, &w);
    }
    if (load_and_round_trip("llava-1.5-7b-hf.json", llava15_hf, &c)) {
        /* the LLaMA-7B defaults fill what text_config leaves out */
        const struct want_text w = { .arch = LV_ARCH_LLAVA, .vocab = 32064, .dim = 4096,
            .hidden = 11008, .n_layers = 32, .n_heads = 32, .n_kv_heads = 32,
            .head_dim = 128, .max_seq = 4096, .eps = 1e-5f, .theta = 10000.0f,
            .tied = false, .bos = 1, .eos = 2, .pad = 32001 };
        check_text("llava-1.5-7b-hf text", &c, &w);
        const struct lv_vision_config *v = &c.vision;
        tu_assert(c.has_vision && v->dim == 1024 && v->hidden == 4096 && v->n_layers == 24 &&
                  v->n_heads == 16 && v->image_size == 336 && v->patch_size == 14 &&
                  v->n_channels == 3 && v->norm_eps == 1e-5f &&
                  strcmp(v->act, "quick_gelu") == 0,
                  "llava-1.5-7b-hf vision: CLIP ViT-L/14-336, quick_gelu, eps 1e-5 (act '%s')",
                  v->act);
        tu_assert(c.projector == LV_PROJ_MLP2X_GELU && c.image_token_id == 32000 &&
                  c.vision_feature_layer == -2 && !c.vision_feature_full,
                  "llava-1.5-7b-hf: 2-layer GELU projector, image token 32000, layer -2, "
                  "class token dropped");
    }
    const char *p = write_text("llava-v1.5-7b-orig.json", llava15_orig);
    int rc = lv_hf_config_load(&c, p);
    if (tu_assert(rc == LV_OK, "llava-v1.5-7b (original): loads (%s)", rc ? lv_errmsg() : "ok")) {
        const struct want_text w = { .arch = LV_ARCH_LLAVA, .vocab = 32000, .dim = 4096,
            .hidden = 11008, .n_layers = 32, .n_heads = 32, .n_kv_heads = 32,
            .head_dim = 128, .max_seq = 4096, .eps = 1e-5f, .theta = 10000.0f,
            .tied = false, .bos = 1, .eos = 2, .pad = 0 };
        check_text("llava-v1.5-7b (original) text", &c, &w);
        tu_assert(c.has_vision && c.vision.dim == 1024 && c.vision.image_size == 336 &&
                  c.vision.patch_size == 14 && c.vision.n_layers == 24 &&
                  c.projector == LV_PROJ_MLP2X_GELU && c.vision_feature_layer == -2 &&
                  !c.vision_feature_full && c.image_token_id == -1,
                  "llava-v1.5-7b (original): tower from mm_vision_tower, mlp2x_gelu, layer -2, "
                  "patch features, no image token in the vocabulary");
        const char *wp = tmp_path("orig-written.json");
        expect_fail(lv_hf_config_write(&c, wp), wp, "image token id",
                    "llava-v1.5-7b (original): writing it as llava-hf without an image token");
        /* made into a llava-hf config by giving it the image token, it round-trips */
        c.vocab = 32064;
        c.image_token_id = 32000;
        struct lv_model_config back;
        const char *q = tmp_path("orig-as-hf.json");
        rc = lv_hf_config_write(&c, q);
        rc = rc ? rc : lv_hf_config_load(&back, q);
        tu_assert(rc == LV_OK && same_config(&c, &back) &&
                  strcmp(back.arch_name, "LlavaForConditionalGeneration") == 0,
                  "original LLaVA with an image token: written as LlavaForConditionalGeneration "
                  "and read back (%s)", rc ? lv_errmsg() : "ok");
    }
}

/* Smaller cases of the defaults and of the optional forms. */
static void test_defaults_and_forms(void)
{
    struct lv_model_config c;
    int rc;

    /* no architectures: model_type decides, with MistralConfig's defaults (8 kv heads) */
    const char *mt = "{\"model_type\": \"mistral\", \"num_hidden_layers\": 2}";
    rc = lv_hf_config_parse(&c, mt, strlen(mt), "mistral-type.json");
    tu_assert(rc == LV_OK && c.arch == LV_ARCH_MISTRAL && c.n_kv_heads == 8 &&
              c.hidden == 14336 && c.max_seq == 131072 && c.norm_eps == 1e-6f &&
              c.n_layers == 2 && strcmp(c.arch_name, "mistral") == 0,
              "model_type mistral alone: MistralConfig defaults (%s)", rc ? lv_errmsg() : "ok");
    /* LlamaConfig defaults: kv = heads, 2048 context, eps 1e-6; null kv heads = heads */
    const char *lt = "{\"architectures\": [], \"model_type\": \"llama\", "
                     "\"num_key_value_heads\": null, \"head_dim\": null}";
    rc = lv_hf_config_parse(&c, lt, strlen(lt), "llama-type.json");
    tu_assert(rc == LV_OK && c.arch == LV_ARCH_LLAMA && c.n_kv_heads == 32 &&
              c.head_dim == 128 && c.max_seq == 2048 && c.norm_eps == 1e-6f &&
              c.vocab == 32000 && c.hidden == 11008,
              "empty architectures, model_type llama: LlamaConfig defaults (%s)",
              rc ? lv_errmsg() : "ok");

    /* linear rope scaling (old "type" spelling), an eos list, explicit head_dim, tied */
    const char *rs = "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 256, "
                     "\"num_attention_heads\": 4, \"head_dim\": 32, \"num_hidden_layers\": 2, "
                     "\"intermediate_size\": 512, \"vocab_size\": 1000, "
                     "\"rope_scaling\": {\"type\": \"linear\", \"factor\": 4.0}, "
                     "\"rope_theta\": 500000, \"eos_token_id\": [7, 9], "
                     "\"bos_token_id\": null, \"tie_word_embeddings\": true}";
    struct lv_model_config back;
    rc = lv_hf_config_parse(&c, rs, strlen(rs), "scaled.json");
    tu_assert(rc == LV_OK && c.rope_scaling == LV_ROPE_SCALING_LINEAR &&
              c.rope_factor == 4.0f && c.rope_theta == 500000.0f && c.eos_id == 7 &&
              c.bos_id == -1 && c.head_dim == 32 && c.tied,
              "linear rope scaling, integer rope_theta, eos list, null bos, head_dim 32 with "
              "dim 256 / 4 heads, tied (%s)", rc ? lv_errmsg() : "ok");
    const char *q = tmp_path("scaled-written.json");
    rc = rc ? rc : lv_hf_config_write(&c, q);
    rc = rc ? rc : lv_hf_config_load(&back, q);
    tu_assert(rc == LV_OK && same_config(&c, &back),
              "linear rope, head_dim, tied, null bos: write -> read is exact (%s)",
              rc ? lv_errmsg() : "ok");

    /* transformers 5: rope_parameters carries the theta */
    const char *rp = "{\"model_type\": \"llama\", \"rope_parameters\": "
                     "{\"rope_theta\": 1000000.0, \"rope_type\": \"default\"}}";
    rc = lv_hf_config_parse(&c, rp, strlen(rp), "rope-parameters.json");
    tu_assert(rc == LV_OK && c.rope_theta == 1000000.0f && c.rope_scaling == LV_ROPE_SCALING_NONE,
              "rope_parameters (transformers 5): theta 1e6, no scaling (%s)",
              rc ? lv_errmsg() : "ok");

    /* llava with no vision_config: LlavaConfig's CLIP-336; one with an almost empty
     * vision_config: CLIPVisionConfig's class defaults (ViT-B/32) */
    const char *lv1 = "{\"architectures\": [\"LlavaForConditionalGeneration\"], "
                      "\"text_config\": {\"vocab_size\": 32064}}";
    rc = lv_hf_config_parse(&c, lv1, strlen(lv1), "llava-min.json");
    tu_assert(rc == LV_OK && c.has_vision && c.vision.dim == 1024 &&
              c.vision.image_size == 336 && c.vision.patch_size == 14 && c.vocab == 32064 &&
              c.image_token_id == 32000 && c.max_seq == 2048 && c.norm_eps == 1e-6f,
              "llava, no vision_config: CLIP ViT-L/14-336; text from LlamaConfig (%s)",
              rc ? lv_errmsg() : "ok");
    const char *lv2 = "{\"model_type\": \"llava\", \"vocab_size\": 32064, "
                      "\"vision_config\": {\"model_type\": \"clip_vision_model\"}, "
                      "\"vision_feature_select_strategy\": \"full\", "
                      "\"vision_feature_layer\": -1}";
    rc = lv_hf_config_parse(&c, lv2, strlen(lv2), "llava-b32.json");
    tu_assert(rc == LV_OK && c.vision.dim == 768 && c.vision.hidden == 3072 &&
              c.vision.n_layers == 12 && c.vision.n_heads == 12 && c.vision.image_size == 224 &&
              c.vision.patch_size == 32 && c.vocab == 32064 && c.vision_feature_full &&
              c.vision_feature_layer == -1,
              "llava, bare vision_config: CLIPVisionConfig defaults; top-level vocab_size; "
              "strategy full (%s)", rc ? lv_errmsg() : "ok");
    q = tmp_path("llava-b32-written.json");
    rc = rc ? rc : lv_hf_config_write(&c, q);
    rc = rc ? rc : lv_hf_config_load(&back, q);
    tu_assert(rc == LV_OK && same_config(&c, &back),
              "llava with ViT-B/32 and strategy full: write -> read is exact (%s)",
              rc ? lv_errmsg() : "ok");
}

/* The writer replaces atomically and leaves nothing behind. */
static void test_writer(void)
{
    struct lv_model_config c, back;
    lv_model_config_init(&c);
    c.vocab = 512;
    c.dim = 64;
    c.hidden = 172;
    c.n_layers = 5;
    c.n_heads = 8;
    c.n_kv_heads = 4;
    c.head_dim = 8;
    c.max_seq = 512;
    c.tied = true;
    c.norm_eps = 1e-5f;
    const char *p = write_text("config.json", "old contents that are not JSON");
    int rc = lv_hf_config_write(&c, p);
    rc = rc ? rc : lv_hf_config_load(&back, p);
    tu_assert(rc == LV_OK && same_config(&c, &back),
              "writing over an existing file replaces it; stories260K-like config reads back "
              "(%s)", rc ? lv_errmsg() : "ok");
    struct stat st;
    tu_assert(stat(p, &st) == 0 && (st.st_mode & 0777) == 0644,
              "the written config.json is mode 0644");
    FILE *fp = fopen(p, "rb");
    char text[4096] = { 0 };
    size_t n = fp ? fread(text, 1, sizeof text - 1, fp) : 0;
    if (fp)
        fclose(fp);
    tu_assert(n > 0 && text[n - 1] == '\n' && strstr(text, "\"rms_norm_eps\": 1e-") &&
              strstr(text, "\"rope_theta\": 10000.0") &&
              strstr(text, "\"architectures\": [\n    \"LlamaForCausalLM\"\n  ]"),
              "the file reads like transformers' own: shortest floats, 2-space indent, final "
              "newline");

    /* a write that cannot happen leaves the old file and no temporary */
    const char *bad = tmp_path("no-such-dir/config.json");
    rc = lv_hf_config_write(&c, bad);
    expect_fail(rc, bad, "cannot create", "writing into a missing directory");
    c.n_kv_heads = 3;
    rc = lv_hf_config_write(&c, p);
    expect_fail(rc, p, "kv heads", "writing an inconsistent config");
    rc = lv_hf_config_load(&back, p);
    tu_assert(rc == LV_OK && back.n_kv_heads == 4, "the refused write left the old file");
    tu_assert(count_temp_files() == 0, "no .tmp- files are left in the directory");
}

/* ----------------------------------------------------------------------------------------
 * hostile
 */

static void test_hostile(void)
{
    struct lv_model_config c;
    lv_model_config_init(&c);
    int rc;

    hostile("not-json.json", "{ \"hidden_size\": 4096, this is not json", "not valid JSON",
            "not JSON");
    hostile("dup.json", "{\"model_type\": \"llama\", \"hidden_size\": 4096, "
            "\"hidden_size\": 2048}", "duplicate", "duplicate key");
    hostile("gpt2.json", "{\"architectures\": [\"GPT2LMHeadModel\"], \"model_type\": \"gpt2\"}",
            "architecture 'GPT2LMHeadModel' is not supported (lavinia reads LlamaForCausalLM, "
            "MistralForCausalLM, LlavaForConditionalGeneration", "unknown architecture");
    hostile("gpt2-type.json", "{\"model_type\": \"gpt2\"}", "model_type 'gpt2' is not supported",
            "unknown model_type");
    hostile("no-arch.json", "{\"hidden_size\": 4096}", "names no architecture",
            "neither architectures nor model_type");
    hostile("arch-type.json", "{\"architectures\": \"LlamaForCausalLM\"}",
            "'architectures' is a string; expected a list", "architectures a string");
    hostile("hidden-str.json", "{\"model_type\": \"llama\", \"hidden_size\": \"4096\"}",
            "'hidden_size' is a string; expected an integer", "hidden_size a string");
    hostile("hidden-real.json", "{\"model_type\": \"llama\", \"hidden_size\": 4096.0}",
            "'hidden_size' is a real number; expected an integer", "hidden_size a real");
    hostile("eps-str.json", "{\"model_type\": \"llama\", \"rms_norm_eps\": \"1e-5\"}",
            "'rms_norm_eps' is a string; expected a number", "rms_norm_eps a string");
    hostile("tie-int.json", "{\"model_type\": \"llama\", \"tie_word_embeddings\": 0}",
            "'tie_word_embeddings' is an integer; expected true or false", "tie an integer");
    hostile("neg-heads.json", "{\"model_type\": \"llama\", \"num_attention_heads\": -32}",
            "'num_attention_heads' = -32 must be at least 1", "negative heads");
    hostile("kv.json", "{\"model_type\": \"llama\", \"num_key_value_heads\": 5}",
            "32 heads are not a multiple of 5 kv heads", "heads not divisible by kv heads");
    hostile("dim-heads.json", "{\"model_type\": \"llama\", \"num_attention_heads\": 3}",
            "'hidden_size' 4096 is not a multiple of 'num_attention_heads' 3",
            "hidden_size not divisible by heads");
    hostile("huge.json", "{\"model_type\": \"llama\", \"num_hidden_layers\": 1000000000}",
            "layers = 1000000000 is out of range", "a billion layers");
    hostile("bigint.json", "{\"model_type\": \"llama\", \"vocab_size\": 99999999999999999999}",
            "not valid JSON", "an integer beyond 64 bits");
    hostile("dynamic.json", "{\"model_type\": \"llama\", \"rope_scaling\": "
            "{\"type\": \"dynamic\", \"factor\": 2.0}}", "type 'dynamic' is not supported",
            "rope_scaling dynamic");
    hostile("llama3.json", "{\"model_type\": \"llama\", \"rope_scaling\": {\"rope_type\": "
            "\"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0}}",
            "type 'llama3' is not supported", "rope_scaling llama3");
    hostile("rope-nofactor.json", "{\"model_type\": \"llama\", \"rope_scaling\": "
            "{\"type\": \"linear\"}}", "no 'factor'", "linear rope_scaling without factor");
    hostile("rope-zero.json", "{\"model_type\": \"llama\", \"rope_scaling\": "
            "{\"type\": \"linear\", \"factor\": 0}}", "must be positive", "rope factor 0");
    hostile("rope-list.json", "{\"model_type\": \"llama\", \"rope_scaling\": [1]}",
            "'rope_scaling' is an array; expected an object or null", "rope_scaling a list");
    hostile("act.json", "{\"model_type\": \"llama\", \"hidden_act\": \"gelu\"}",
            "'hidden_act' 'gelu' is not supported", "a GELU LLaMA");
    hostile("bias.json", "{\"model_type\": \"llama\", \"attention_bias\": true}",
            "attention_bias", "attention biases");
    hostile("bos.json", "{\"model_type\": \"llama\", \"vocab_size\": 100, \"bos_token_id\": 100}",
            "'bos_token_id' 100 is outside the vocabulary", "bos id past the vocabulary");
    hostile("eos-list.json", "{\"model_type\": \"llama\", \"eos_token_id\": [2, \"x\"]}",
            "'eos_token_id[1]' is a string", "eos list with a string");
    hostile("top-array.json", "[1, 2, 3]", "top level is an array", "top level an array");
    hostile("llava-text.json", "{\"model_type\": \"llava\", \"text_config\": "
            "{\"hidden_size\": \"big\"}}", "'text_config.hidden_size' is a string",
            "llava text_config.hidden_size a string");
    hostile("llava-tc.json", "{\"model_type\": \"llava\", \"text_config\": \"llama\"}",
            "'text_config' is a string; expected an object", "llava text_config a string");
    hostile("llava-qwen.json", "{\"model_type\": \"llava\", \"text_config\": "
            "{\"model_type\": \"qwen2\"}}", "'text_config.model_type' 'qwen2' is not supported",
            "llava with a qwen2 text model");
    hostile("llava-siglip.json", "{\"model_type\": \"llava\", \"vocab_size\": 32064, "
            "\"vision_config\": {\"model_type\": \"siglip_vision_model\"}}",
            "'siglip_vision_model' is not supported", "llava with a SigLIP tower");
    hostile("llava-token.json", "{\"model_type\": \"llava\"}",
            "'image_token_index' 32000 is outside the vocabulary (32000 tokens)",
            "llava whose image token is past the default vocabulary");
    hostile("llava-layers.json", "{\"model_type\": \"llava\", \"vocab_size\": 32064, "
            "\"vision_feature_layer\": [-2, -5]}", "is a list", "llava with a list of layers");
    hostile("llava-layer.json", "{\"model_type\": \"llava\", \"vocab_size\": 32064, "
            "\"vision_feature_layer\": -26}", "outside the 25 hidden states",
            "llava vision layer -26 of 24");
    hostile("llava-strategy.json", "{\"model_type\": \"llava\", \"vocab_size\": 32064, "
            "\"vision_feature_select_strategy\": \"pooled\"}", "'pooled' is not supported",
            "llava strategy pooled");
    hostile("llava-proj.json", "{\"model_type\": \"llava\", \"vocab_size\": 32064, "
            "\"projector_hidden_act\": \"silu\"}", "'projector_hidden_act' 'silu'",
            "llava projector silu");
    hostile("llava-patch.json", "{\"model_type\": \"llava\", \"vocab_size\": 32064, "
            "\"vision_config\": {\"image_size\": 336, \"patch_size\": 32}}",
            "not a multiple of patch size", "llava image 336 with patch 32");
    hostile("orig-tower.json", "{\"model_type\": \"llava_llama\", "
            "\"mm_vision_tower\": \"google/siglip-so400m-patch14-384\"}",
            "not a vision tower lavinia knows", "original LLaVA with a SigLIP tower");
    hostile("orig-anyres.json", "{\"architectures\": [\"LlavaLlamaForCausalLM\"], "
            "\"mm_vision_tower\": \"openai/clip-vit-large-patch14-336\", "
            "\"image_aspect_ratio\": \"anyres\"}", "anyres", "LLaVA-1.6 anyres");
    hostile("orig-mlp3.json", "{\"architectures\": [\"LlavaLlamaForCausalLM\"], "
            "\"mm_vision_tower\": \"openai/clip-vit-large-patch14-336\", "
            "\"mm_projector_type\": \"mlp3x_gelu\"}", "'mlp3x_gelu' is not supported",
            "original LLaVA mlp3x_gelu");
    hostile("orig-mmhidden.json", "{\"architectures\": [\"LlavaLlamaForCausalLM\"], "
            "\"mm_vision_tower\": \"openai/clip-vit-large-patch14\", \"mm_hidden_size\": 768}",
            "'mm_hidden_size' 768 does not match", "original LLaVA with a wrong mm_hidden_size");
    hostile("nul.json", "{\"model_type\": \"ll\\u0000ama\"}", "not valid JSON",
            "a NUL inside a string");

    const char *p = write_file("empty.json", "", 0);
    expect_fail(lv_hf_config_load(&c, p), p, "empty", "0-byte file");
    char sub[PATH_MAX + 16];
    snprintf(sub, sizeof sub, "%s/subdir", tmpdir);
    mkdir(sub, 0700);
    expect_fail(lv_hf_config_load(&c, sub), sub, "directory", "a directory");
    p = tmp_path("missing.json");
    expect_fail(lv_hf_config_load(&c, p), p, "cannot open", "a missing file");

    /* 17 MB: refused from its size before any parsing, from a file and from memory */
    size_t big = 17u * 1000u * 1000u;
    char *buf = malloc(big);
    memset(buf, ' ', big);
    buf[0] = '{';
    buf[big - 1] = '}';
    p = write_file("big.json", buf, big);
    expect_fail(lv_hf_config_load(&c, p), p, "too large", "a 17 MB file");
    rc = lv_hf_config_parse(&c, buf, big, "big-mem.json");
    expect_fail(rc, "big-mem.json", "too large", "17 MB in memory");
    free(buf);

    /* a failed parse leaves the caller's struct alone */
    struct lv_model_config before = c;
    const char *zero = "{\"model_type\": \"llama\", \"num_attention_heads\": 0}";
    rc = lv_hf_config_parse(&c, zero, strlen(zero), "zero.json");
    tu_assert(rc != LV_OK && memcmp(&before, &c, sizeof c) == 0,
              "a failed parse leaves the struct unchanged (%s)", lv_errmsg());
}

int main(int argc, char **argv)
{
    tu_init(argc, argv, "test-hf-config");
    make_tmpdir();
    test_published();
    test_defaults_and_forms();
    test_writer();
    test_hostile();
    cleanup();
    return tu_finish();
}
