/*
 * cmd-generate.c: lavinia generate (one completion or one chat turn) and lavinia chat (a
 * multi-turn loop over standard input, one user turn per line, the kv cache kept across
 * turns). Both share the model opening, the sampling options and the generation loop
 * (model/generate.h); text streams to standard output as it is produced, and one line of
 * speed figures goes to standard error at the end.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "io/checkpoint.h"
#include "io/fileutil.h"
#include "io/gguf.h"
#include "lavinia/error.h"
#include "image/image.h"
#include "model/clip.h"
#include "model/generate.h"
#include "model/llama.h"
#include "model/sampler.h"
#include "model/template.h"
#include "model/vlm.h"
#include "text/tokenizer.h"
#include "util/buf.h"

#define MAX_STOP 16

/* what generate and chat share */
struct run {
    const char *model, *tok_file, *system, *template_name, *mmproj, *quant;
    struct lv_sampler_params sp;
    int64_t n_predict, n_ctx;
    bool ignore_eos;
    const char *stop[MAX_STOP];
    int n_stop;
    struct lv_checkpoint ck;
    lv_llama *m;
    lv_tokenizer *tok;
    const struct lv_template *tmpl;
    bool print_ids;
    int64_t printed;              /* ids printed (--print-ids) */
    struct lv_cli_adapters ad;    /* --adapter */
    lv_clip *v;                   /* the tower, loaded when adapters may reach it */
};

enum {
    OPT_TEMP = 256, OPT_TOP_K, OPT_TOP_P, OPT_MIN_P, OPT_REPEAT, OPT_REPEAT_N, OPT_FREQ,
    OPT_PRESENCE, OPT_SEED, OPT_IGNORE_EOS, OPT_STOP, OPT_CTX, OPT_SYSTEM, OPT_TEMPLATE,
    OPT_THREADS, OPT_PROMPT_IDS, OPT_CHAT, OPT_PRINT_IDS, OPT_DUMP, OPT_TRUNCATE, OPT_IMAGE,
    OPT_MMPROJ, OPT_QUANT, OPT_ADAPTER, OPT_PLUGIN_PATH,
};

#define COMMON_OPTIONS \
    { "model", required_argument, NULL, 'm' }, \
    { "tokenizer", required_argument, NULL, 't' }, \
    { "n-predict", required_argument, NULL, 'n' }, \
    { "temp", required_argument, NULL, OPT_TEMP }, \
    { "top-k", required_argument, NULL, OPT_TOP_K }, \
    { "top-p", required_argument, NULL, OPT_TOP_P }, \
    { "min-p", required_argument, NULL, OPT_MIN_P }, \
    { "repeat-penalty", required_argument, NULL, OPT_REPEAT }, \
    { "repeat-last-n", required_argument, NULL, OPT_REPEAT_N }, \
    { "frequency-penalty", required_argument, NULL, OPT_FREQ }, \
    { "presence-penalty", required_argument, NULL, OPT_PRESENCE }, \
    { "seed", required_argument, NULL, OPT_SEED }, \
    { "ignore-eos", no_argument, NULL, OPT_IGNORE_EOS }, \
    { "stop", required_argument, NULL, OPT_STOP }, \
    { "ctx", required_argument, NULL, OPT_CTX }, \
    { "system", required_argument, NULL, OPT_SYSTEM }, \
    { "template", required_argument, NULL, OPT_TEMPLATE }, \
    { "threads", required_argument, NULL, OPT_THREADS }, \
    { "mmproj", required_argument, NULL, OPT_MMPROJ }, \
    { "quant", required_argument, NULL, OPT_QUANT }, \
    { "adapter", required_argument, NULL, OPT_ADAPTER }, \
    { "plugin-path", required_argument, NULL, OPT_PLUGIN_PATH }, \
    { "help", no_argument, NULL, 'h' }

static int num(const char *opt, const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "lavinia: --%s %s: want a number from %g to %g\n", opt, s, lo, hi);
        return 2;
    }
    *out = v;
    return 0;
}

/* one shared option; 0 handled, 1 not a shared option, 2 usage error */
static int common_option(struct run *r, int c)
{
    double v;
    int bad = 0;
    switch (c) {
    case 'm': r->model = optarg; return 0;
    case 't': r->tok_file = optarg; return 0;
    case 'n': bad = num("n-predict", optarg, -1, 1e9, &v); r->n_predict = (int64_t)v; break;
    case OPT_TEMP: bad = num("temp", optarg, 0, 1e6, &v); r->sp.temp = (float)v; break;
    case OPT_TOP_K: bad = num("top-k", optarg, 0, 1e9, &v); r->sp.top_k = (int)v; break;
    case OPT_TOP_P: bad = num("top-p", optarg, 1e-9, 1, &v); r->sp.top_p = (float)v; break;
    case OPT_MIN_P: bad = num("min-p", optarg, 0, 1, &v); r->sp.min_p = (float)v; break;
    case OPT_REPEAT:
        bad = num("repeat-penalty", optarg, 1e-6, 1e6, &v);
        r->sp.repeat_penalty = (float)v;
        break;
    case OPT_REPEAT_N:
        bad = num("repeat-last-n", optarg, -1, 1e9, &v);
        r->sp.repeat_last_n = (int)v;
        break;
    case OPT_FREQ:
        bad = num("frequency-penalty", optarg, -1e6, 1e6, &v);
        r->sp.freq_penalty = (float)v;
        break;
    case OPT_PRESENCE:
        bad = num("presence-penalty", optarg, -1e6, 1e6, &v);
        r->sp.presence_penalty = (float)v;
        break;
    case OPT_SEED: bad = num("seed", optarg, 0, 1.8e19, &v); r->sp.seed = (uint64_t)v; break;
    case OPT_IGNORE_EOS: r->ignore_eos = true; return 0;
    case OPT_STOP:
        if (r->n_stop == MAX_STOP) {
            fprintf(stderr, "lavinia: at most %d --stop strings\n", MAX_STOP);
            return 2;
        }
        r->stop[r->n_stop++] = optarg;
        return 0;
    case OPT_CTX: bad = num("ctx", optarg, 1, 1 << 24, &v); r->n_ctx = (int64_t)v; break;
    case OPT_SYSTEM: r->system = optarg; return 0;
    case OPT_MMPROJ: r->mmproj = optarg; return 0;
    case OPT_ADAPTER: return lv_cli_adapter_arg(&r->ad, optarg);
    case OPT_PLUGIN_PATH: lv_cli_plugin_arg(optarg); return 0;
    case OPT_QUANT:
        if (strcmp(optarg, "q8_0") != 0 && strcmp(optarg, "q4_0") != 0 &&
            strcmp(optarg, "nf4") != 0) {
            fprintf(stderr, "lavinia: --quant %s: want q8_0, q4_0 or nf4\n", optarg);
            return 2;
        }
        r->quant = optarg;
        return 0;
    case OPT_TEMPLATE: r->template_name = optarg; return 0;
    case OPT_THREADS:
        bad = num("threads", optarg, 1, 1024, &v);
        if (!bad)
            lv_set_threads((int)v);
        break;
    default: return 1;
    }
    return bad;
}

static void run_done(struct run *r)
{
    lv_cli_adapters_close(&r->ad);
    lv_clip_free(r->v);
    lv_llama_free(r->m);
    lv_tok_free(r->tok);
    lv_checkpoint_close(&r->ck);
}

/* the model, and the tokenizer unless ids in and out need none */
static int run_open(struct run *r, bool need_tok)
{
    if (lv_checkpoint_open(&r->ck, r->model, r->mmproj, NULL) != LV_OK)
        return LV_ERR;
    if (lv_llama_load(&r->m, &r->ck, r->n_ctx) != LV_OK)
        return LV_ERR;
    if (r->quant &&
        lv_llama_quantize(r->m, strcmp(r->quant, "q8_0") == 0   ? LV_Q8_0
                                : strcmp(r->quant, "q4_0") == 0 ? LV_Q4_0
                                                                : LV_NF4) != LV_OK)
        return LV_ERR;
    /* adapters may sit in the tower and projector: load it first so that its sites exist */
    if (r->ad.n && lv_checkpoint_find(&r->ck, LV_CLIP_CLASS_EMBEDDING) &&
        lv_clip_load(&r->v, &r->ck) != LV_OK)
        return LV_ERR;
    if (lv_cli_adapters_open(&r->ad, &r->ck, r->m, r->v) != LV_OK)
        return LV_ERR;
    if (!need_tok && !r->tok_file)
        return LV_OK;
    if (lv_tok_open(&r->tok, r->model, r->tok_file) != LV_OK) {
        char *msg = strdup(lv_errmsg());
        lv_error("%s (a tokenizer is needed for text: -t FILE)", msg ? msg : "no tokenizer");
        free(msg);
        return LV_ERR;
    }
    if (lv_tok_n_vocab(r->tok) > lv_llama_vocab(r->m))
        return lv_error("%s: the tokenizer has %d pieces, the model %lld", r->model,
                        lv_tok_n_vocab(r->tok), (long long)lv_llama_vocab(r->m));
    return LV_OK;
}

static int run_template(struct run *r)
{
    if (r->template_name) {
        r->tmpl = lv_template_find(r->template_name);
        if (!r->tmpl)
            return lv_error("--template %s: not a template lavinia knows (%s)",
                            r->template_name, lv_template_names());
        return LV_OK;
    }
    r->tmpl = lv_template_detect(lv_tok_chat_template(r->tok));
    if (!r->tmpl)
        return lv_error("%s: %s; choose one with --template (%s)", r->model,
                        lv_tok_chat_template(r->tok) ? "its chat template is not one lavinia "
                                                       "recognises"
                                                     : "no chat template",
                        lv_template_names());
    return LV_OK;
}

static int print_text(void *ctx, int32_t id, const char *text, size_t n)
{
    struct run *r = ctx;
    if (r->print_ids) {
        if (id >= 0)
            printf(r->printed++ ? " %d" : "%d", id);
    } else {
        fwrite(text, 1, n, stdout);
    }
    fflush(stdout);
    return 0;
}

static void report(const struct lv_gen_stats *st)
{
    fprintf(stderr, "prompt: %lld tokens, %.2f tokens/s; decode: %lld tokens, %.2f tokens/s\n",
            (long long)st->n_prompt, st->prompt_s > 0 ? (double)st->n_prompt / st->prompt_s : 0.0,
            (long long)st->n_gen, st->gen_s > 0 ? (double)st->n_gen / st->gen_s : 0.0);
    if (st->hit_context)
        fprintf(stderr, "lavinia: stopped at the end of the context\n");
}

static int32_t eot_of(const struct run *r)
{
    if (!r->tmpl || !r->tmpl->end_of_turn || !r->tok)
        return -1;
    return lv_tok_find(r->tok, r->tmpl->end_of_turn, strlen(r->tmpl->end_of_turn));
}

/* a NumPy .npy file of float32 with the given shape (1 to 3 dims) */
static int write_npy_shape(const char *path, const float *x, int nd, const int64_t *shape)
{
    char header[160], dims[96];
    int64_t total = 1;
    size_t k = 0;
    for (int d = 0; d < nd; d++) {
        k += (size_t)snprintf(dims + k, sizeof dims - k, nd == 1 ? "%lld," : d ? ", %lld" : "%lld",
                              (long long)shape[d]);
        total *= shape[d];
    }
    int hn = snprintf(header, sizeof header, "{'descr': '<f4', 'fortran_order': False, "
                      "'shape': (%s), }", dims);
    size_t pre = 10, pad = (64 - (pre + (size_t)hn + 1) % 64) % 64, hlen = (size_t)hn + pad + 1;
    size_t nbytes = (size_t)total * sizeof(float);
    unsigned char *buf = malloc(pre + hlen + nbytes);
    if (!buf)
        return lv_error_status(LV_ENOMEM, "%s: out of memory", path);
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    buf[8] = (unsigned char)(hlen & 0xff);
    buf[9] = (unsigned char)(hlen >> 8);
    memcpy(buf + pre, header, (size_t)hn);
    memset(buf + pre + hn, ' ', pad);
    buf[pre + hlen - 1] = '\n';
    memcpy(buf + pre + hlen, x, nbytes);
    int rc = lv_write_atomic(path, buf, pre + hlen + nbytes);
    free(buf);
    return rc;
}

static int write_npy(const char *path, const float *x, int64_t rows, int64_t cols)
{
    return write_npy_shape(path, x, 2, (int64_t[]){ rows, cols });
}

static int write_npy3(const char *path, const float *x, int64_t a, int64_t b, int64_t c)
{
    return write_npy_shape(path, x, 3, (int64_t[]){ a, b, c });
}

/* --dump NAME=FILE: what generate can write */
enum { DUMP_LOGITS, DUMP_PIXELS, DUMP_FEATURES, DUMP_TOKENS, DUMP_COUNT };
static const char *const dump_names[DUMP_COUNT] = { "logits", "pixels", "image_features",
                                                    "image_tokens" };

/* the prompt's ids; with an image, a marker where it goes: the tokenizer's image token, or
 * (a vocabulary without one, as llama.cpp's) -1 between the text's pieces around "<image>" */
static int prompt_ids_of(struct run *r, const char *text, int flags, bool image,
                         int32_t *marker, lv_tok_ids *out)
{
    *marker = r->tok ? lv_tok_image(r->tok) : r->m->c.image_token_id;
    if (!image || *marker >= 0)
        return lv_tok_encode(r->tok, text, strlen(text), flags, out);
    *marker = -1;
    const char *at = strstr(text, "<image>");
    int rc = lv_tok_encode(r->tok, text, (size_t)(at - text), flags, out);
    if (rc == LV_OK)
        rc = lv_tok_ids_push(out, -1);
    if (rc == LV_OK)
        rc = lv_tok_encode(r->tok, at + 7, strlen(at + 7), flags & ~LV_TOK_BOS, out);
    return rc;
}

/* image_mean and image_std of an mmproj file, when it has them */
static int mmproj_stats(struct lv_clip_preprocess *p, const char *path)
{
    lv_gguf_file g;
    int rc = lv_gguf_open(&g, path);
    static const char *const keys[2] = { "clip.vision.image_mean", "clip.vision.image_std" };
    float *dst[2] = { p->mean, p->std };
    for (int k = 0; rc == LV_OK && k < 2; k++) {
        const float *v;
        uint64_t n;
        if (!lv_gguf_find(&g, keys[k]))
            continue;
        rc = lv_gguf_get_arr(&g, keys[k], LV_GGUF_TYPE_FLOAT32, (const void **)&v, &n);
        if (rc == LV_OK && n != 3)
            rc = lv_error("%s: %s has %llu values, not 3", path, keys[k], (unsigned long long)n);
        for (int i = 0; rc == LV_OK && i < 3; i++)
            dst[k][i] = v[i];
        if (rc == LV_OK && k == 1 && !(v[0] > 0 && v[1] > 0 && v[2] > 0))
            rc = lv_error("%s: %s must be positive", path, keys[k]);
    }
    lv_gguf_close(&g);
    return rc;
}

/* the image through the tower and projector: tokens (n x text dim), and the dumps asked */
static int encode_image(struct run *r, const char *file, const char *const *dump, float **tokens,
                        int64_t *n_img)
{
    lv_clip *v = r->v;
    struct lv_image img = { 0 };
    struct lv_clip_preprocess pp;
    float *px = NULL, *feats = NULL;
    int rc = v ? LV_OK : lv_clip_load(&v, &r->ck);
    lv_clip_preprocess_default(&pp);
    if (rc == LV_OK) {
        char path[4200];
        pp.size = pp.crop = (int)v->c.vision.image_size;
        if (v->c.projector == LV_PROJ_LAVIN)
            lv_clip_preprocess_lavin(&pp, (int)v->c.vision.image_size);
        snprintf(path, sizeof path, "%s/preprocessor_config.json", r->model);
        if (r->ck.format == LV_CKPT_HF_DIR)
            rc = lv_clip_preprocess_load(&pp, path);
        else if (r->mmproj)
            rc = mmproj_stats(&pp, r->mmproj);
        if (rc == LV_OK && pp.crop != v->c.vision.image_size)
            rc = lv_error("%s: crop size %d differs from the tower's image size %lld", path,
                          pp.crop, (long long)v->c.vision.image_size);
    }
    if (rc == LV_OK)
        rc = lv_image_load(&img, file, 0);
    int64_t S = pp.crop, n = rc == LV_OK ? lv_clip_n_tokens(v) : 0;
    if (rc == LV_OK) {
        px = malloc((size_t)(3 * S * S) * sizeof *px);
        feats = malloc((size_t)(n * v->c.vision.dim) * sizeof *feats);
        *tokens = malloc((size_t)(n * r->m->c.dim) * sizeof **tokens);
        if (!px || !feats || !*tokens)
            rc = lv_error_status(LV_ENOMEM, "out of memory for the image");
    }
    if (rc == LV_OK && (rc = lv_clip_preprocess(&pp, &img, px)) == LV_OK)
        rc = lv_clip_encode(v, px, *tokens, feats);
    if (rc == LV_OK && dump[DUMP_PIXELS])
        rc = write_npy3(dump[DUMP_PIXELS], px, 3, S, S);
    if (rc == LV_OK && dump[DUMP_FEATURES])
        rc = write_npy(dump[DUMP_FEATURES], feats, n, v->c.vision.dim);
    if (rc == LV_OK && dump[DUMP_TOKENS])
        rc = write_npy(dump[DUMP_TOKENS], *tokens, n, r->m->c.dim);
    *n_img = n;
    free(px);
    free(feats);
    lv_image_free(&img);
    if (v != r->v)
        lv_clip_free(v);
    return rc;
}

static int generate_run(int argc, char **argv)
{
    static const struct option opts[] = {
        COMMON_OPTIONS,
        { "prompt", required_argument, NULL, 'p' },
        { "prompt-ids", required_argument, NULL, OPT_PROMPT_IDS },
        { "chat", no_argument, NULL, OPT_CHAT },
        { "print-ids", no_argument, NULL, OPT_PRINT_IDS },
        { "dump", required_argument, NULL, OPT_DUMP },
        { "truncate", no_argument, NULL, OPT_TRUNCATE },
        { "image", required_argument, NULL, OPT_IMAGE },
        { NULL, 0, NULL, 0 },
    };
    struct run r = { .n_predict = 128 };
    const char *prompt = NULL, *prompt_ids = NULL, *dump[DUMP_COUNT] = { 0 }, *image = NULL;
    bool chat = false, truncate = false;
    int c, u;
    lv_sampler_params_default(&r.sp);
    while ((c = getopt_long(argc, argv, "m:t:n:p:h", opts, NULL)) != -1) {
        if ((u = common_option(&r, c)) == 0)
            continue;
        if (u == 2)
            return 2;
        switch (c) {
        case 'p': prompt = optarg; break;
        case OPT_PROMPT_IDS: prompt_ids = optarg; break;
        case OPT_CHAT: chat = true; break;
        case OPT_PRINT_IDS: r.print_ids = true; break;
        case OPT_TRUNCATE: truncate = true; break;
        case OPT_IMAGE: image = optarg; break;
        case OPT_DUMP: {
            const char *eq = strchr(optarg, '=');
            int k = DUMP_COUNT;
            for (int i = 0; eq && eq[1] && i < DUMP_COUNT; i++)
                if (strlen(dump_names[i]) == (size_t)(eq - optarg) &&
                    strncmp(optarg, dump_names[i], (size_t)(eq - optarg)) == 0)
                    k = i;
            if (k == DUMP_COUNT) {
                fprintf(stderr, "lavinia: --dump %s: want NAME=FILE.npy (names: logits, pixels, "
                        "image_features, image_tokens)\n", optarg);
                return 2;
            }
            dump[k] = eq + 1;
            break;
        }
        case 'h':
            printf("Usage: lavinia %s\n%s\n", lv_cli_generate_entry.usage,
                   lv_cli_generate_entry.help);
            return 0;
        default: return lv_cli_usage(&lv_cli_generate_entry);
        }
    }
    if (!r.model || optind != argc || (!prompt == !prompt_ids) || (chat && !prompt))
        return lv_cli_usage(&lv_cli_generate_entry);
    int32_t *ids = NULL, marker = -1;
    int64_t n_ids = 0, n_img = 0, n_feed = 0;
    float *img_tokens = NULL, *embd = NULL;
    lv_tok_ids parsed = { 0 };
    int rc = prompt_ids ? lv_cli_parse_ids(prompt_ids, &parsed, "--prompt-ids") : LV_OK;
    if (rc == LV_OK && prompt_ids && parsed.n == 0)
        rc = lv_error("--prompt-ids: no ids");
    ids = parsed.v;
    n_ids = (int64_t)parsed.n;
    if (rc == LV_OK)
        rc = run_open(&r, !(prompt_ids && r.print_ids));
    if (rc == LV_OK && chat)
        rc = run_template(&r);
    if (rc == LV_OK && image)
        rc = encode_image(&r, image, dump, &img_tokens, &n_img);
    if (rc == LV_OK && prompt) {
        lv_tok_ids t = { 0 };
        char *text = chat ? lv_template_user_turn(r.tmpl, r.system, prompt, true, image != NULL)
                   : image && !strstr(prompt, "<image>") ? lv_strdupf("<image>\n%s", prompt)
                                                         : strdup(prompt);
        rc = text ? prompt_ids_of(&r, text, chat ? LV_TOK_PARSE_SPECIAL : LV_TOK_BOS,
                                  image != NULL, &marker, &t)
                  : lv_error_status(LV_ENOMEM, "out of memory");
        free(text);
        ids = t.v;
        n_ids = (int64_t)t.n;
        if (rc == LV_OK && n_ids == 0)
            rc = lv_error("the prompt is empty");
    } else if (rc == LV_OK && image) {
        marker = r.tok ? lv_tok_image(r.tok) : r.m->c.image_token_id;
        if (marker < 0)
            rc = lv_error("%s: no image token id to mark the image in --prompt-ids", r.model);
    }
    for (int64_t i = 0; rc == LV_OK && i < n_ids; i++)
        if (ids[i] >= lv_llama_vocab(r.m) || (ids[i] < 0 && !image))
            rc = lv_error("prompt id %d is outside the vocabulary (0..%lld)", ids[i],
                          (long long)lv_llama_vocab(r.m) - 1);
    if (rc == LV_OK && image)
        rc = lv_vlm_splice(r.m, ids, n_ids, marker, img_tokens, 1, n_img, &embd, &n_feed);
    else
        n_feed = n_ids;
    int64_t n_ctx = r.m ? r.m->n_ctx : 0;
    if (rc == LV_OK && n_feed > n_ctx) {
        if (!truncate || image) {
            rc = lv_error("the prompt has %lld positions, more than the context of %lld "
                          "(--ctx N for more%s)", (long long)n_feed, (long long)n_ctx,
                          image ? "" : ", or --truncate to keep its end");
        } else {
            int64_t keep = n_ctx - (r.n_predict > 0 && r.n_predict < n_ctx / 2 ? r.n_predict
                                                                              : n_ctx / 2);
            fprintf(stderr, "lavinia: warning: the prompt has %lld tokens; keeping the last "
                    "%lld\n", (long long)n_ids, (long long)keep);
            memmove(ids, ids + (n_ids - keep), (size_t)keep * sizeof *ids);
            n_ids = n_feed = keep;
        }
    }
    lv_sampler s = { 0 };
    float *rows = NULL;
    if (rc == LV_OK)
        rc = lv_sampler_init(&s, &r.sp, lv_llama_vocab(r.m),
                             r.tok ? lv_tok_n_vocab(r.tok) : lv_llama_vocab(r.m));
    int64_t budget = r.n_predict > 0 && r.n_predict < n_ctx ? r.n_predict : n_ctx;
    if (rc == LV_OK && dump[DUMP_LOGITS] &&
        !(rows = malloc((size_t)(n_feed + budget) * (size_t)lv_llama_vocab(r.m) * sizeof *rows)))
        rc = lv_error_status(LV_ENOMEM, "out of memory for --dump logits");
    struct lv_gen_stats st = { 0 };
    if (rc == LV_OK) {
        struct lv_gen_opts o = { .n_predict = r.n_predict, .ignore_eos = r.ignore_eos,
                                 .eot_id = eot_of(&r), .stop = r.stop, .n_stop = r.n_stop,
                                 .logits_rows = rows, .prompt_embd = embd,
                                 .n_prompt_embd = n_feed };
        rc = lv_generate(r.m, r.tok, &s, ids, n_ids, &o, print_text, &r, &st);
        if (rc == LV_OK) {
            printf("\n");
            report(&st);
        }
    }
    if (rc == LV_OK && rows)
        rc = write_npy(dump[DUMP_LOGITS], rows, st.n_rows, lv_llama_vocab(r.m));
    free(rows);
    free(ids);
    free(embd);
    free(img_tokens);
    lv_sampler_done(&s);
    run_done(&r);
    return rc == LV_OK ? 0 : lv_cli_fail(lv_errmsg());
}

/* /adapters, /toggle N, /scale N S, /merge N, /unmerge N between turns; true when line was
 * one of them */
static bool adapter_command(struct run *r, const char *line)
{
    struct lv_peft_stack *st = r->ad.st;
    int i;
    float scale;
    char extra;
    if (strcmp(line, "/adapters") == 0) {
        if (st)
            lv_cli_adapters_print(&r->ad, stderr);
        else
            fprintf(stderr, "no adapters (--adapter PATH[:SCALE])\n");
        return true;
    }
    bool toggle = sscanf(line, "/toggle %d %c", &i, &extra) == 1;
    bool scaled = !toggle && sscanf(line, "/scale %d %f %c", &i, &scale, &extra) == 2;
    bool merge = sscanf(line, "/merge %d %c", &i, &extra) == 1;
    bool unmerge = sscanf(line, "/unmerge %d %c", &i, &extra) == 1;
    if (!toggle && !scaled && !merge && !unmerge)
        return false;
    if (!st || i < 0 || i >= st->n) {
        fprintf(stderr, "no adapter %d (/adapters lists them)\n", i);
        return true;
    }
    const struct lv_adapter *a = st->a[i];
    if (merge || unmerge) {
        int rc = merge ? lv_peft_stack_merge(st, i) : lv_peft_stack_unmerge(st, i);
        if (rc == LV_OK)
            fprintf(stderr, "%s: %s (the conversation is recomputed at the next turn)\n",
                    a->name, a->merged ? "merged into the weights" : "unmerged");
        else
            fprintf(stderr, "%s\n", lv_errmsg());
        return true;
    }
    lv_peft_stack_set(st, i, toggle ? !a->enabled : a->enabled, toggle ? a->scale : scale);
    fprintf(stderr, "%s: %s, scale %g (the conversation is recomputed at the next turn)\n",
            a->name, a->enabled ? "enabled" : "disabled", (double)a->scale);
    return true;
}

static int chat_run(int argc, char **argv)
{
    static const struct option opts[] = { COMMON_OPTIONS, { NULL, 0, NULL, 0 } };
    struct run r = { .n_predict = -1 };
    int c, u;
    lv_sampler_params_default(&r.sp);
    while ((c = getopt_long(argc, argv, "m:t:n:h", opts, NULL)) != -1) {
        if ((u = common_option(&r, c)) == 0)
            continue;
        if (u == 2)
            return 2;
        if (c == 'h') {
            printf("Usage: lavinia %s\n%s\n", lv_cli_chat_entry.usage, lv_cli_chat_entry.help);
            return 0;
        }
        return lv_cli_usage(&lv_cli_chat_entry);
    }
    if (!r.model || optind != argc)
        return lv_cli_usage(&lv_cli_chat_entry);
    int rc = run_open(&r, true);
    if (rc == LV_OK)
        rc = run_template(&r);
    lv_sampler s = { 0 };
    if (rc == LV_OK)
        rc = lv_sampler_init(&s, &r.sp, lv_llama_vocab(r.m), lv_tok_n_vocab(r.tok));
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    bool first = true;
    lv_tok_ids ids = { 0 };
    while (rc == LV_OK && (len = getline(&line, &cap, stdin)) >= 0) {
        if (len > 0 && line[len - 1] == '\n')
            line[--len] = 0;
        if (adapter_command(&r, line))
            continue;
        char *turn = lv_template_user_turn(r.tmpl, r.system, line, first, false);
        char *text = NULL;
        if (turn && asprintf(&text, "%s%s", first ? "" : lv_template_close_answer(r.tmpl),
                             turn) < 0)
            text = NULL;
        free(turn);
        if (!text) {
            rc = lv_error_status(LV_ENOMEM, "out of memory");
            break;
        }
        ids.n = 0;
        rc = lv_tok_encode(r.tok, text, strlen(text), LV_TOK_PARSE_SPECIAL, &ids);
        free(text);
        if (rc == LV_OK && r.m->pos + (int64_t)ids.n >= r.m->n_ctx) {
            rc = lv_error("the conversation no longer fits in the context of %lld tokens "
                          "(--ctx N for more)", (long long)r.m->n_ctx);
            break;
        }
        struct lv_gen_opts o = { .n_predict = r.n_predict, .ignore_eos = r.ignore_eos,
                                 .eot_id = eot_of(&r), .stop = r.stop, .n_stop = r.n_stop };
        struct lv_gen_stats st;
        r.m->recomputed.positions = 0;
        r.m->recomputed.seconds = 0;
        if (rc == LV_OK)
            rc = lv_generate(r.m, r.tok, &s, ids.v, (int64_t)ids.n, &o, print_text, &r, &st);
        printf("\n");
        fflush(stdout);
        if (r.m->recomputed.positions)
            fprintf(stderr, "adapters changed: recomputed %lld cached positions in %.1f ms\n",
                    (long long)r.m->recomputed.positions, r.m->recomputed.seconds * 1e3);
        if (rc == LV_OK)
            report(&st);
        first = false;
    }
    free(line);
    lv_tok_ids_free(&ids);
    lv_sampler_done(&s);
    run_done(&r);
    return rc == LV_OK ? 0 : lv_cli_fail(lv_errmsg());
}

#define SAMPLING_USAGE \
    "[-n N] [--temp T] [--top-k K] [--top-p P] [--min-p P] [--repeat-penalty R] " \
    "[--frequency-penalty F] [--presence-penalty P] [--seed S] [--stop STR] [--ignore-eos] " \
    "[--ctx N] [--threads N] [--mmproj FILE] [--quant q8_0|q4_0|nf4]\n" \
    "                [--adapter PATH[:SCALE]]... [--plugin-path DIR]"

const struct lv_cli_entry lv_cli_generate_entry = {
    .name  = "generate",
    .usage = "generate -m MODEL [-t TOKENIZER] (-p TEXT | --prompt-ids \"1 2 3\") "
             "[--image FILE] [--chat] [--system TEXT] [--template NAME] [--print-ids] "
             "[--dump logits|pixels|image_features|image_tokens=FILE.npy] [--truncate] "
             SAMPLING_USAGE,
    .help  = "Continue a prompt (--chat: answer it as a chat turn), streaming the text.",
    .run   = generate_run,
};

const struct lv_cli_entry lv_cli_chat_entry = {
    .name  = "chat",
    .usage = "chat -m MODEL [-t TOKENIZER] [--system TEXT] [--template NAME] " SAMPLING_USAGE,
    .help  = "Chat: each line of standard input is a user turn; answers stream back.",
    .run   = chat_run,
};
