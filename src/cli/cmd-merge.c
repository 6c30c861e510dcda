/*
 * cmd-merge.c: lavinia merge -m MODEL --adapter DIR[:SCALE]... -o OUT: a Hugging Face
 * directory with the adapters folded into the weights (LoRA, DoRA, IA3, modules_to_save).
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "io/checkpoint.h"
#include "lavinia/error.h"
#include "model/clip.h"
#include "model/llama.h"
#include "peft/adapter.h"

static int merge_run(int argc, char **argv)
{
    static const struct option opts[] = {
        { "model", required_argument, NULL, 'm' },
        { "adapter", required_argument, NULL, 'a' },
        { "output", required_argument, NULL, 'o' },
        { "dtype", required_argument, NULL, 'd' },
        { "plugin-path", required_argument, NULL, 'P' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };
    struct lv_cli_adapters ad = { 0 };
    const char *model = NULL, *out = NULL, *dtype = "auto";
    int c;
    while ((c = getopt_long(argc, argv, "m:o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'o': out = optarg; break;
        case 'd': dtype = optarg; break;
        case 'P': lv_cli_plugin_arg(optarg); break;
        case 'a':
            if (lv_cli_adapter_arg(&ad, optarg))
                return 2;
            break;
        case 'h':
            printf("Usage: lavinia %s\n%s\n", lv_cli_merge_entry.usage, lv_cli_merge_entry.help);
            return 0;
        default: return lv_cli_usage(&lv_cli_merge_entry);
        }
    }
    enum lv_ckpt_type dt = strcmp(dtype, "auto") == 0   ? LV_CKPT_TYPE_COUNT
                           : strcmp(dtype, "f32") == 0  ? LV_CKPT_F32
                           : strcmp(dtype, "f16") == 0  ? LV_CKPT_F16
                           : strcmp(dtype, "bf16") == 0 ? LV_CKPT_BF16
                                                        : LV_CKPT_OTHER;
    if (dt == LV_CKPT_OTHER) {
        fprintf(stderr, "lavinia: merge: --dtype %s: want auto, f32, f16 or bf16\n", dtype);
        return 2;
    }
    if (!model || !out || ad.n == 0 || optind != argc)
        return lv_cli_usage(&lv_cli_merge_entry);
    struct lv_checkpoint ck;
    lv_llama *m = NULL;
    lv_clip *v = NULL;
    if (lv_checkpoint_open(&ck, model, NULL, NULL) != LV_OK)
        return lv_cli_fail(lv_errmsg());
    int rc = lv_llama_load(&m, &ck, 0);
    if (rc == LV_OK && lv_checkpoint_find(&ck, LV_CLIP_CLASS_EMBEDDING))
        rc = lv_clip_load(&v, &ck);
    if (rc == LV_OK)
        rc = lv_cli_adapters_open(&ad, &ck, m, v);
    if (rc == LV_OK)
        rc = lv_adapters_write_merged(&ck, ad.st, out, dt);
    if (rc == LV_OK)
        printf("%s: %s with %d adapter(s) folded in\n", out, model, ad.n);
    int status = rc == LV_OK ? 0 : lv_cli_fail(lv_errmsg());
    lv_cli_adapters_close(&ad);
    lv_clip_free(v);
    lv_llama_free(m);
    lv_checkpoint_close(&ck);
    return status;
}

const struct lv_cli_entry lv_cli_merge_entry = {
    .name = "merge",
    .usage = "merge -m MODEL --adapter PATH[:SCALE]... -o OUT [--dtype auto|f32|f16|bf16]\n"
             "             [--plugin-path DIR]",
    .help = "write MODEL with the adapters folded into its weights as a Hugging Face "
            "directory (LoRA, DoRA, IA3), with its tokenizer and preprocessor files",
    .run = merge_run,
};
