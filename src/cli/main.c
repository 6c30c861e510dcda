/*
 * main.c: the lavinia program's entry: global options, then a command.
 *
 * This is the batch front end's start; the REPL, the TUI and the model commands (generate,
 * chat, convert, bench, tune) arrive with the issues that build them, through the one
 * command table of src/cmd.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "lavinia/ops.h"

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: lavinia [OPTIONS] [COMMAND]\n"
            "A terminal workbench for chatting with vision-language models and tuning them.\n"
            "\n"
            "Commands:\n"
            "  devices            list the compute backends and whether each is usable\n"
            "\n"
            "Options:\n"
            "  --device DEV       auto, cpu or cuda (default auto: CUDA if usable, else CPU)\n"
            "  --threads N        CPU threads (default: the number of cores)\n"
            "  -h, --help         show this help and exit\n"
            "  -V, --version      show the version and exit\n");
}

static int cmd_devices(const char *device)
{
    lv_backend *cpu = lv_backend_cpu();
    printf("cpu: usable, %d thread(s)\n", lv_get_threads());
    lv_backend *cuda = lv_backend_cuda();
    if (cuda)
        printf("cuda: usable\n");
    else
        printf("cuda: not usable: %s\n", lv_errmsg());
    lv_backend *chosen = lv_backend_by_name(device);
    if (!chosen) {
        fprintf(stderr, "lavinia: %s\n", lv_errmsg());
        return 1;
    }
    printf("selected: %s\n", chosen == cpu ? "cpu" : "cuda");
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "device", required_argument, NULL, 'd' },
        { "threads", required_argument, NULL, 't' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 },
    };
    const char *device = "auto";
    int threads = 0, c;
    while ((c = getopt_long(argc, argv, "hV", opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            device = optarg;
            break;
        case 't': {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*end || v < 1 || v > 1024) {
                fprintf(stderr, "lavinia: --threads wants a number from 1 to 1024, not '%s'\n",
                        optarg);
                return 2;
            }
            threads = (int)v;
            break;
        }
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("lavinia %s\n", PACKAGE_VERSION);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    lv_set_threads(threads);
    if (optind == argc) {
        usage(stdout);
        return 0;
    }
    const char *cmd = argv[optind];
    if (strcmp(cmd, "devices") == 0)
        return cmd_devices(device);
    fprintf(stderr, "lavinia: unknown command '%s' (try lavinia --help)\n", cmd);
    return 2;
}
