/*
 * cmd-info.c: lavinia info PATH — what a checkpoint holds: format, architecture,
 * hyper-parameters, tokenizer, metadata, and every tensor with its type, shape and size
 * (what gguf-dump and safetensors' metadata viewers show).
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "io/checkpoint.h"
#include "lavinia/error.h"

static void print_size(uint64_t bytes)
{
    if (bytes >= ((uint64_t)1 << 30))
        printf("%.2f GiB", (double)bytes / (double)((uint64_t)1 << 30));
    else if (bytes >= ((uint64_t)1 << 20))
        printf("%.2f MiB", (double)bytes / (double)((uint64_t)1 << 20));
    else if (bytes >= 1024)
        printf("%.1f KiB", (double)bytes / 1024.0);
    else
        printf("%" PRIu64 " B", bytes);
}

static void print_config(const struct lv_model_config *c)
{
    printf("architecture: %s (%s)\n", lv_arch_name(c->arch), c->arch_name);
    printf("  vocab: %lld\n", (long long)c->vocab);
    printf("  dim: %lld\n", (long long)c->dim);
    printf("  hidden dim: %lld\n", (long long)c->hidden);
    printf("  layers: %lld\n", (long long)c->n_layers);
    printf("  heads: %lld\n", (long long)c->n_heads);
    printf("  kv heads: %lld\n", (long long)c->n_kv_heads);
    printf("  head dim: %lld\n", (long long)c->head_dim);
    printf("  context length: %lld\n", (long long)c->max_seq);
    printf("  norm eps: %g\n", (double)c->norm_eps);
    printf("  rope theta: %g%s\n", (double)c->rope_theta,
           c->rope_scaling == LV_ROPE_SCALING_LINEAR ? " (linear scaling)" : "");
    if (c->rope_scaling == LV_ROPE_SCALING_LINEAR)
        printf("  rope scaling factor: %g\n", (double)c->rope_factor);
    printf("  tied embeddings: %s\n", c->tied ? "yes" : "no");
    printf("  q/k row order: %s\n", c->qk_layout == LV_QK_META ? "Meta (adjacent pairs)"
                                                               : "Hugging Face (half split)");
    printf("  bos/eos/pad ids: %d/%d/%d\n", c->bos_id, c->eos_id, c->pad_id);
    if (c->has_vision) {
        const struct lv_vision_config *v = &c->vision;
        printf("vision tower: CLIP ViT, dim %lld, hidden %lld, %lld layers, %lld heads, "
               "image %lld, patch %lld, %s\n", (long long)v->dim, (long long)v->hidden,
               (long long)v->n_layers, (long long)v->n_heads, (long long)v->image_size,
               (long long)v->patch_size, v->act);
        if (c->projector == LV_PROJ_LAVIN)
            printf("  projector: LaVIN's adapter_proj (linear %lld, SiLU, linear) over the "
                   "class token after every %d blocks (%lld image tokens)\n",
                   (long long)c->proj_hidden, c->vision_feature_every,
                   (long long)(v->n_layers / c->vision_feature_every));
        else
            printf("  projector: %s, image token id %d, feature layer %d, %s\n",
                   c->projector == LV_PROJ_MLP2X_GELU ? "mlp2x_gelu"
                   : c->projector == LV_PROJ_LINEAR   ? "linear"
                                                      : "none",
                   c->image_token_id, c->vision_feature_layer,
                   c->vision_feature_full ? "class token kept" : "class token dropped");
    }
}

static int info_run(int argc, char **argv)
{
    static const struct option opts[] = {
        { "mmproj", required_argument, NULL, 'm' },
        { "tokenizer", required_argument, NULL, 't' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *mmproj = NULL, *tokenizer = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "m:t:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': mmproj = optarg; break;
        case 't': tokenizer = optarg; break;
        case 'h':
            printf("Usage: lavinia %s\n%s\n", lv_cli_info_entry.usage, lv_cli_info_entry.help);
            return 0;
        default: return lv_cli_usage(&lv_cli_info_entry);
        }
    }
    if (argc - optind != 1)
        return lv_cli_usage(&lv_cli_info_entry);
    struct lv_checkpoint ck;
    if (lv_checkpoint_open(&ck, argv[optind], mmproj, tokenizer) != LV_OK)
        return lv_cli_fail(lv_errmsg());
    printf("path: %s\n", ck.path);
    printf("format: %s\n", lv_ckpt_format_name(ck.format));
    if (ck.has_config)
        print_config(&ck.config);
    else
        printf("contents: %s\n", ck.summary);
    printf("tokenizer: %s\n", ck.tokenizer[0] ? ck.tokenizer : "none");
    printf("metadata: %d key(s)\n", ck.n_meta);
    for (int i = 0; i < ck.n_meta; i++)
        printf("  %s = %s\n", ck.meta[i].key, ck.meta[i].value);
    uint64_t total = 0;
    for (int i = 0; i < ck.n_tensors; i++)
        total += ck.tensors[i].nbytes;
    printf("tensors: %d, ", ck.n_tensors);
    print_size(total);
    printf("\n");
    for (int i = 0; i < ck.n_tensors; i++) {
        const struct lv_ckpt_tensor *t = &ck.tensors[i];
        printf("  %-56s %-5s [", t->name, t->type_name);
        for (int d = 0; d < t->ndim; d++)
            printf(d ? ", %lld" : "%lld", (long long)t->shape[d]);
        printf("] %" PRIu64 " B", t->nbytes);
        if (t->meta_qk)
            printf(" (Meta rotary order)");
        if (strcmp(t->name, t->file_name) != 0)
            printf("  <- %s", t->file_name);
        printf("\n");
    }
    lv_checkpoint_close(&ck);
    return 0;
}

const struct lv_cli_entry lv_cli_info_entry = {
    .name  = "info",
    .usage = "info PATH [--mmproj FILE] [-t TOKENIZER.bin]",
    .help  = "Show a checkpoint's format, architecture, hyper-parameters, tokenizer, metadata "
             "and tensors.",
    .run   = info_run,
};
