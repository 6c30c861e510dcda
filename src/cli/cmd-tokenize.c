/*
 * cmd-tokenize.c: lavinia tokenize -m MODEL_OR_TOKENIZER [-t TOKENIZER] [--bos] [--jsonl]
 * [--decode] [TEXT] — the ids of a text, or the text of ids, with any tokenizer lavinia reads.
 *
 * Without --jsonl, TEXT (or all of standard input) is one string and one line of ids is
 * printed. With --jsonl, every line of standard input is a JSON string and exactly one line
 * of ids is printed for it. --decode reads ids instead and prints text (with --jsonl: one
 * JSON string per line). Nothing else goes to standard output.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "lavinia/error.h"
#include "text/tokenizer.h"

static int print_ids(const lv_tok_ids *ids)
{
    for (size_t i = 0; i < ids->n; i++)
        printf(i ? " %d" : "%d", ids->v[i]);
    putchar('\n');
    return 0;
}

int lv_cli_parse_ids(const char *s, lv_tok_ids *ids, const char *where)
{
    ids->n = 0;
    while (*s) {
        while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r' || *s == ',')
            s++;
        if (!*s)
            break;
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (end == s || errno || v < 0 || v > INT32_MAX ||
            (*end && !strchr(" \t\n\r,", *end)))
            return lv_error("%s: '%.20s' is not a token id", where, s);
        int rc = lv_tok_ids_push(ids, (int32_t)v);
        if (rc)
            return rc;
        s = end;
    }
    return LV_OK;
}

static int read_all(FILE *f, char **out, size_t *n)
{
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    if (!buf)
        return lv_error_status(LV_ENOMEM, "out of memory");
    size_t got;
    while ((got = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += got;
        if (cap - len - 1 == 0) {
            char *p = realloc(buf, cap * 2);
            if (!p) {
                free(buf);
                return lv_error_status(LV_ENOMEM, "out of memory");
            }
            buf = p;
            cap *= 2;
        }
    }
    if (ferror(f)) {
        free(buf);
        return lv_error_status(LV_EIO, "standard input: %s", strerror(errno));
    }
    buf[len] = 0;
    *out = buf;
    *n = len;
    return LV_OK;
}

static int decode_print(const lv_tokenizer *tok, const lv_tok_ids *ids, bool jsonl)
{
    char *text;
    size_t n;
    int rc = lv_tok_decode(tok, ids->v, ids->n, &text, &n);
    if (rc)
        return rc;
    if (jsonl) {
        json_t *s = json_stringn_nocheck(text, n);
        char *line = s ? json_dumps(s, JSON_ENCODE_ANY) : NULL;
        json_decref(s);
        if (!line) {
            free(text);
            return lv_error_status(LV_ENOMEM, "out of memory");
        }
        printf("%s\n", line);
        free(line);
    } else {
        fwrite(text, 1, n, stdout);
    }
    free(text);
    return LV_OK;
}

/* --jsonl: one output line per input line */
static int run_lines(const lv_tokenizer *tok, int flags, bool decode)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long lineno = 0;
    lv_tok_ids ids = { 0 };
    int rc = LV_OK;
    while (rc == LV_OK && (len = getline(&line, &cap, stdin)) >= 0) {
        char where[64];
        lineno++;
        snprintf(where, sizeof where, "standard input, line %ld", lineno);
        if (len > 0 && line[len - 1] == '\n')
            line[--len] = 0;
        if (decode) {
            if ((rc = lv_cli_parse_ids(line, &ids, where)) == LV_OK)
                rc = decode_print(tok, &ids, true);
            continue;
        }
        json_error_t err;
        json_t *s = json_loadb(line, (size_t)len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
        if (!json_is_string(s)) {
            rc = lv_error("%s: not a JSON string%s%s", where, s ? "" : ": ", s ? "" : err.text);
        } else {
            ids.n = 0;
            rc = lv_tok_encode(tok, json_string_value(s), json_string_length(s), flags, &ids);
            if (rc == LV_OK)
                print_ids(&ids);
        }
        json_decref(s);
    }
    free(line);
    lv_tok_ids_free(&ids);
    return rc;
}

static int tokenize_run(int argc, char **argv)
{
    enum { OPT_BOS = 256, OPT_JSONL, OPT_DECODE, OPT_PARSE, OPT_NO_PARSE };
    static const struct option opts[] = {
        { "model", required_argument, NULL, 'm' },
        { "tokenizer", required_argument, NULL, 't' },
        { "bos", no_argument, NULL, OPT_BOS },
        { "jsonl", no_argument, NULL, OPT_JSONL },
        { "decode", no_argument, NULL, OPT_DECODE },
        { "parse-special", no_argument, NULL, OPT_PARSE },
        { "no-parse-special", no_argument, NULL, OPT_NO_PARSE },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *model = NULL, *tok_file = NULL;
    bool jsonl = false, decode = false;
    int flags = 0, c;
    while ((c = getopt_long(argc, argv, "m:t:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 't': tok_file = optarg; break;
        case OPT_BOS: flags |= LV_TOK_BOS; break;
        case OPT_JSONL: jsonl = true; break;
        case OPT_DECODE: decode = true; break;
        case OPT_PARSE: flags = (flags & ~LV_TOK_NO_PARSE_SPECIAL) | LV_TOK_PARSE_SPECIAL; break;
        case OPT_NO_PARSE:
            flags = (flags & ~LV_TOK_PARSE_SPECIAL) | LV_TOK_NO_PARSE_SPECIAL;
            break;
        case 'h':
            printf("Usage: lavinia %s\n%s\n", lv_cli_tokenize_entry.usage,
                   lv_cli_tokenize_entry.help);
            return 0;
        default: return lv_cli_usage(&lv_cli_tokenize_entry);
        }
    }
    if (!model && tok_file) {
        model = tok_file;
        tok_file = NULL;
    }
    if (!model || (jsonl && optind < argc))
        return lv_cli_usage(&lv_cli_tokenize_entry);
    lv_tokenizer *tok;
    if (lv_tok_open(&tok, model, tok_file) != LV_OK)
        return lv_cli_fail(lv_errmsg());
    int rc;
    if (jsonl) {
        rc = run_lines(tok, flags, decode);
    } else {
        char *text = NULL;
        size_t n = 0;
        if (optind < argc) {
            size_t total = 1;
            for (int i = optind; i < argc; i++)
                total += strlen(argv[i]) + 1;
            text = calloc(total, 1);
            rc = text ? LV_OK : lv_error_status(LV_ENOMEM, "out of memory");
            for (int i = optind; text && i < argc; i++) {
                if (i > optind)
                    text[n++] = ' ';
                memcpy(text + n, argv[i], strlen(argv[i]));
                n += strlen(argv[i]);
            }
        } else {
            rc = read_all(stdin, &text, &n);
        }
        lv_tok_ids ids = { 0 };
        if (rc == LV_OK && decode) {
            if ((rc = lv_cli_parse_ids(text, &ids, optind < argc ? "TEXT" : "standard input")) ==
                LV_OK)
                rc = decode_print(tok, &ids, false);
        } else if (rc == LV_OK) {
            if ((rc = lv_tok_encode(tok, text, n, flags, &ids)) == LV_OK)
                print_ids(&ids);
        }
        lv_tok_ids_free(&ids);
        free(text);
    }
    lv_tok_free(tok);
    if (fflush(stdout) != 0 && rc == LV_OK)
        rc = lv_error_status(LV_EIO, "standard output: %s", strerror(errno));
    return rc == LV_OK ? 0 : lv_cli_fail(lv_errmsg());
}

const struct lv_cli_entry lv_cli_tokenize_entry = {
    .name  = "tokenize",
    .usage = "tokenize -m MODEL_OR_TOKENIZER [-t TOKENIZER] [--bos] [--jsonl] [--decode] "
             "[--parse-special|--no-parse-special] [TEXT]",
    .help  = "Print the token ids of TEXT (or standard input; --jsonl: one JSON string per "
             "line), or with --decode the text of ids.",
    .run   = tokenize_run,
};
