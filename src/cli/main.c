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
#include "cli/cli.h"
#include "lavinia/ops.h"

static const char *device = "auto";

int lv_cli_fail(const char *msg)
{
    fprintf(stderr, "lavinia: %s\n", msg);
    return 1;
}

int lv_cli_usage(const struct lv_cli_entry *e)
{
    fprintf(stderr, "Usage: lavinia %s\n", e->usage);
    return 2;
}

static int devices_run(int argc, char **argv);

static const struct lv_cli_entry devices_entry = {
    .name  = "devices",
    .usage = "devices",
    .help  = "List the compute backends, whether each is usable, and the one selected.",
    .run   = devices_run,
};

/* the subcommands, alphabetical */
static const struct lv_cli_entry *const cli_table[] = {
    &lv_cli_adapters_entry,
    &lv_cli_bench_entry,
    &lv_cli_chat_entry,
    &lv_cli_convert_entry,
    &devices_entry,
    &lv_cli_generate_entry,
    &lv_cli_info_entry,
    &lv_cli_merge_entry,
    &lv_cli_tokenize_entry,
    NULL,
};

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: lavinia [OPTIONS] COMMAND [ARGS]\n"
            "A terminal workbench for chatting with vision-language models and tuning them.\n"
            "\n"
            "Commands:\n");
    for (int i = 0; cli_table[i]; i++)
        fprintf(f, "  %s\n      %s\n", cli_table[i]->usage, cli_table[i]->help);
    fprintf(f,
            "\n"
            "Options (before the command):\n"
            "  --device DEV       auto, cpu or cuda (default auto: CUDA if usable, else CPU)\n"
            "  --threads N        CPU threads (default: the number of cores)\n"
            "  --plugin-path DIR  also load PEFT method plugins from DIR (repeatable; then\n"
            "                     $LAVINIA_PLUGIN_PATH, $XDG_DATA_HOME/lavinia/plugins and\n"
            "                     the installed plugin directory)\n"
            "  -h, --help         show this help and exit\n"
            "  -V, --version      show the version and exit\n");
}

static int devices_run(int argc, char **argv)
{
    (void)argv;
    if (argc != 1)
        return lv_cli_usage(&devices_entry);
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
        { "plugin-path", required_argument, NULL, 'P' },
        { NULL, 0, NULL, 0 },
    };
    int threads = 0, c;
    /* '+': stop at the command; its own options are parsed (and permuted) by it */
    while ((c = getopt_long(argc, argv, "+hV", opts, NULL)) != -1) {
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
        case 'P':
            lv_cli_plugin_arg(optarg);
            break;
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
    int first = optind;
    /* optind 0 makes glibc's getopt start afresh, forgetting this parse's "+" (stop at the
     * first operand): subcommands permute their arguments */
    optind = 0;
    for (int i = 0; cli_table[i]; i++)
        if (strcmp(cmd, cli_table[i]->name) == 0)
            return cli_table[i]->run(argc - first, argv + first);
    fprintf(stderr, "lavinia: unknown command '%s' (try lavinia --help)\n", cmd);
    return 2;
}
