/*
 * cmd-convert.c: lavinia convert IN OUT [--to hf|gguf] — rewrite a checkpoint as a Hugging
 * Face directory or a GGUF file in llama.cpp's conventions, from any input lavinia reads.
 * Without --to, an OUT ending in .gguf means gguf, anything else a Hugging Face directory.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "io/checkpoint.h"
#include "lavinia/error.h"

/* "500M", "2G", "4096": bytes, with an optional K/M/G (binary) suffix; 0 on error */
static uint64_t parse_size(const char *s)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *s == '-')
        return 0;
    int shift = 0;
    switch (*end) {
    case 'K': case 'k': shift = 10; end++; break;
    case 'M': case 'm': shift = 20; end++; break;
    case 'G': case 'g': shift = 30; end++; break;
    }
    if (*end || v > (UINT64_MAX >> shift))
        return 0;
    return (uint64_t)v << shift;
}

static int convert_run(int argc, char **argv)
{
    static const struct option opts[] = {
        { "to", required_argument, NULL, 'o' },
        { "shard-size", required_argument, NULL, 's' },
        { "mmproj", required_argument, NULL, 'm' },
        { "tokenizer", required_argument, NULL, 't' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *to = NULL, *mmproj = NULL, *tokenizer = NULL;
    uint64_t shard = 0;
    int c;
    while ((c = getopt_long(argc, argv, "m:t:h", opts, NULL)) != -1) {
        switch (c) {
        case 'o': to = optarg; break;
        case 's':
            if (!(shard = parse_size(optarg))) {
                fprintf(stderr, "lavinia: convert: --shard-size %s: want a size such as 500M "
                        "or 2G\n", optarg);
                return 2;
            }
            break;
        case 'm': mmproj = optarg; break;
        case 't': tokenizer = optarg; break;
        case 'h':
            printf("Usage: lavinia %s\n%s\n", lv_cli_convert_entry.usage,
                   lv_cli_convert_entry.help);
            return 0;
        default: return lv_cli_usage(&lv_cli_convert_entry);
        }
    }
    if (argc - optind != 2)
        return lv_cli_usage(&lv_cli_convert_entry);
    const char *in = argv[optind], *out = argv[optind + 1];
    if (!to) {
        size_t n = strlen(out);
        to = n > 5 && strcmp(out + n - 5, ".gguf") == 0 ? "gguf" : "hf";
    }
    if (strcmp(to, "hf") != 0 && strcmp(to, "gguf") != 0) {
        fprintf(stderr, "lavinia: convert: --to %s: want hf or gguf\n", to);
        return 2;
    }
    struct lv_checkpoint ck;
    if (lv_checkpoint_open(&ck, in, mmproj, tokenizer) != LV_OK)
        return lv_cli_fail(lv_errmsg());
    int rc = strcmp(to, "hf") == 0 ? lv_checkpoint_write_hf(&ck, out, shard)
                                   : lv_checkpoint_write_gguf(&ck, out);
    lv_checkpoint_close(&ck);
    if (rc != LV_OK)
        return lv_cli_fail(lv_errmsg());
    printf("wrote %s (%s)\n", out, strcmp(to, "hf") == 0 ? "Hugging Face directory" : "GGUF");
    return 0;
}

const struct lv_cli_entry lv_cli_convert_entry = {
    .name  = "convert",
    .usage = "convert IN OUT [--to hf|gguf] [--shard-size SIZE] [--mmproj FILE] "
             "[-t TOKENIZER.bin]",
    .help  = "Write a checkpoint as a Hugging Face directory or a GGUF file.",
    .run   = convert_run,
};
