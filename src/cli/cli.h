/*
 * cli.h (internal): the batch subcommands of the lavinia program (lavinia SUBCOMMAND ...).
 *
 * Each subcommand parses its own options with getopt_long, so options may follow operands
 * (GNU argument permutation). Exit status: 0 success, 1 failure (one line on standard error
 * naming the file and the problem), 2 usage error.
 */
#ifndef LV_CLI_H
#define LV_CLI_H

#include <stdbool.h>
#include <stdio.h>

#include "peft/adapter.h"

struct lv_cli_entry {
    const char *name;
    const char *usage;     /* after "lavinia " */
    const char *help;      /* one line */
    int (*run)(int argc, char **argv);   /* argv[0] is the subcommand's name */
};

extern const struct lv_cli_entry lv_cli_info_entry;
extern const struct lv_cli_entry lv_cli_convert_entry;
extern const struct lv_cli_entry lv_cli_tokenize_entry;
extern const struct lv_cli_entry lv_cli_generate_entry;
extern const struct lv_cli_entry lv_cli_chat_entry;
extern const struct lv_cli_entry lv_cli_bench_entry;
extern const struct lv_cli_entry lv_cli_adapters_entry;
extern const struct lv_cli_entry lv_cli_merge_entry;

/* --adapter PATH[:SCALE] (repeatable) for generate, chat, bench and adapters */
#define LV_CLI_MAX_ADAPTERS 16
struct lv_checkpoint;
struct lv_llama;
struct lv_clip;
struct lv_cli_adapters {
    char path[LV_CLI_MAX_ADAPTERS][4096];
    float scale[LV_CLI_MAX_ADAPTERS];
    int n;
    struct lv_site_table sites;
    bool built;
    struct lv_peft_stack *st;
};
/* --plugin-path DIR (repeatable; before the command or after it): added to the plugin path,
 * loaded once when adapters are first needed (lv_cli_load_plugins). */
void lv_cli_plugin_arg(const char *dir);
void lv_cli_load_plugins(void);
/* One --adapter argument; 0, or 2 (usage error, said on stderr). */
int lv_cli_adapter_arg(struct lv_cli_adapters *A, const char *arg);
/* Load the adapters named and attach the stack to the model (and tower, when v is not
 * NULL); nothing to do without --adapter. ck may be NULL (random models). */
int lv_cli_adapters_open(struct lv_cli_adapters *A, const struct lv_checkpoint *ck,
                         struct lv_llama *m, struct lv_clip *v);
void lv_cli_adapters_close(struct lv_cli_adapters *A);
void lv_cli_adapters_print(const struct lv_cli_adapters *A, FILE *f);

/* "1 2 3" (or commas) into ids; an error names `where` and what is not an id. */
struct lv_tok_ids;
int lv_cli_parse_ids(const char *s, struct lv_tok_ids *ids, const char *where);
/* Print "lavinia: MESSAGE" on standard error; returns 1. */
int lv_cli_fail(const char *msg);
/* Print the entry's usage on standard error; returns 2. */
int lv_cli_usage(const struct lv_cli_entry *e);

#endif /* LV_CLI_H */
