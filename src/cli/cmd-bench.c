/*
 * cmd-bench.c: lavinia bench -m MODEL | --random dim,hidden,layers,heads,kv_heads,vocab —
 * prompt and decode speed, time to first token, peak memory, and how much of the machine's
 * memory bandwidth (measured in the same run) decoding uses: decode tokens/s x bytes of
 * weights read per token / bandwidth.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <cblas.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "cli/cli.h"
#include "core/graph.h"
#include "io/checkpoint.h"
#include "lavinia/error.h"
#include "model/clip.h"
#include "model/generate.h"
#include "model/llama.h"
#include "util/clock.h"
#include "util/membw.h"

static int parse_shape(const char *s, struct lv_model_config *c)
{
    long long v[6];
    char tail;
    if (sscanf(s, "%lld,%lld,%lld,%lld,%lld,%lld%c", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
               &tail) != 6)
        return lv_error("--random %s: want dim,hidden,layers,heads,kv_heads,vocab", s);
    lv_model_config_init(c);
    c->dim = v[0];
    c->hidden = v[1];
    c->n_layers = v[2];
    c->n_heads = v[3];
    c->n_kv_heads = v[4];
    c->vocab = v[5];
    c->head_dim = v[3] > 0 ? v[0] / v[3] : 0;
    c->max_seq = 2048;
    return lv_model_config_check(c, "--random");
}

/* OpenBLAS's own multi-threaded sgemm on an M x N x K product: FLOP/s, best of 3 */
static double sgemm_ceiling(int64_t M, int64_t N, int64_t K)
{
    float *a = calloc((size_t)(M * K), sizeof *a), *b = calloc((size_t)(N * K), sizeof *b);
    float *c = malloc((size_t)(M * N) * sizeof *c);
    double best = 1e30;
    if (!a || !b || !c) {
        free(a);
        free(b);
        free(c);
        return 0.0;
    }
    openblas_set_num_threads(lv_get_threads());
    for (int r = 0; r < 3; r++) {
        double t0 = lv_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)M, (blasint)N, (blasint)K,
                    1.0f, a, (blasint)K, b, (blasint)K, 0.0f, c, (blasint)N);
        double dt = lv_now() - t0;
        best = dt < best ? dt : best;
    }
    lv_set_threads(lv_get_threads());  /* OpenBLAS back to one thread, ours as they were */
    free(a);
    free(b);
    free(c);
    return 2.0 * (double)M * (double)N * (double)K / best;
}

/* multiply-adds x 2 of a prefill of T tokens: the layers' projections and causal attention
 * (the output head runs for the last row only) */
static double prefill_flops(const struct lv_model_config *c, int64_t T)
{
    double C = (double)c->dim, Q = (double)(c->n_heads * c->head_dim);
    double KV = (double)(c->n_kv_heads * c->head_dim), F = (double)c->hidden;
    double proj = C * Q * 2 + C * KV * 2 + C * F * 3;
    double attn = (double)T * (double)(T + 1) / 2.0 * Q * 2;      /* q k^T and p v */
    return (double)c->n_layers * (2.0 * (double)T * proj + 2.0 * attn) +
           2.0 * C * (double)c->vocab;
}

/* One line of a profile. */
struct prof_row {
    char what[64];
    long calls;
    double seconds;
};

static int prof_row_cmp(const void *a, const void *b)
{
    double x = ((const struct prof_row *)a)->seconds, y = ((const struct prof_row *)b)->seconds;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* Where the time of n steps (t seconds) went: each op's kernels (matrix products by weight
 * shape and type), the most expensive first, per step and as a share of the time; what is
 * left is the time outside the kernels (building the graph, copying the logits out). */
static void print_profile(const char *what, const struct lv_profile *p, long n, double t)
{
    struct prof_row rows[LV_OP_COUNT + LV_PROFILE_SHAPES];
    int n_rows = 0;
    double in_kernels = 0.0, mm_listed = 0.0;
    long mm_calls = 0;
    for (int i = 0; i < p->n_mm; i++) {
        const struct lv_profile_mm *e = &p->mm[i];
        struct prof_row *r = &rows[n_rows++];
        snprintf(r->what, sizeof r->what, "matmul %lld x %lld %s", (long long)e->n,
                 (long long)e->k, lv_dtype_name(e->dtype));
        r->calls = e->calls;
        r->seconds = e->seconds;
        mm_listed += e->seconds;
        mm_calls += e->calls;
    }
    for (int op = 0; op < LV_OP_COUNT; op++) {
        in_kernels += p->seconds[op];
        bool mm = op == LV_OP_MATMUL;
        if (!p->calls[op] || (mm && p->calls[op] == mm_calls))
            continue;
        struct prof_row *r = &rows[n_rows++];
        snprintf(r->what, sizeof r->what, "%s%s", lv_op_name((enum lv_op)op),
                 mm ? " (other shapes)" : "");
        r->calls = mm ? p->calls[op] - mm_calls : p->calls[op];
        r->seconds = mm ? p->seconds[op] - mm_listed : p->seconds[op];
    }
    qsort(rows, (size_t)n_rows, sizeof rows[0], prof_row_cmp);
    printf("%s profile: each op's kernels per step, %ld step(s)\n", what, n);
    printf("  %-32s %10s %10s %10s %7s\n", "op", "calls", "us/call", "ms/step", "share");
    for (int i = 0; i < n_rows; i++)
        printf("  %-32s %10.1f %10.2f %10.3f %6.1f%%\n", rows[i].what,
               (double)rows[i].calls / (double)n, 1e6 * rows[i].seconds / (double)rows[i].calls,
               1e3 * rows[i].seconds / (double)n, 100.0 * rows[i].seconds / t);
    double out = t - in_kernels;
    printf("  %-32s %10s %10s %10.3f %6.1f%%\n", "outside the kernels", "", "",
           1e3 * out / (double)n, 100.0 * out / t);
    printf("  %-32s %10s %10s %10.3f %6.1f%%\n", "step", "", "", 1e3 * t / (double)n, 100.0);
}

static int bench_run(int argc, char **argv)
{
    enum { OPT_RANDOM = 256, OPT_DTYPE, OPT_PROMPT, OPT_GEN, OPT_BW, OPT_THREADS, OPT_ADAPTER,
           OPT_PLUGIN_PATH, OPT_PROFILE };
    static const struct option opts[] = {
        { "model", required_argument, NULL, 'm' },
        { "random", required_argument, NULL, OPT_RANDOM },
        { "dtype", required_argument, NULL, OPT_DTYPE },
        { "prompt", required_argument, NULL, OPT_PROMPT },
        { "gen", required_argument, NULL, OPT_GEN },
        { "bw-size", required_argument, NULL, OPT_BW },
        { "threads", required_argument, NULL, OPT_THREADS },
        { "adapter", required_argument, NULL, OPT_ADAPTER },
        { "plugin-path", required_argument, NULL, OPT_PLUGIN_PATH },
        { "profile", no_argument, NULL, OPT_PROFILE },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *model = NULL, *shape = NULL, *dtype_name = "f32";
    struct lv_cli_adapters ad = { 0 };
    long n_prompt = 128, n_gen = 64, bw_mib = 0;
    bool profile = false;
    int c;
    while ((c = getopt_long(argc, argv, "m:h", opts, NULL)) != -1) {
        char *end = NULL;
        long *dst = c == OPT_PROMPT ? &n_prompt : c == OPT_GEN ? &n_gen : c == OPT_BW ? &bw_mib
                                                                                    : NULL;
        switch (c) {
        case 'm': model = optarg; break;
        case OPT_RANDOM: shape = optarg; break;
        case OPT_DTYPE: dtype_name = optarg; break;
        case OPT_ADAPTER:
            if (lv_cli_adapter_arg(&ad, optarg))
                return 2;
            break;
        case OPT_PLUGIN_PATH: lv_cli_plugin_arg(optarg); break;
        case OPT_PROFILE: profile = true; break;
        case OPT_THREADS:
        case OPT_PROMPT:
        case OPT_GEN:
        case OPT_BW: {
            errno = 0;
            long v = strtol(optarg, &end, 10);
            if (errno || *end || v < 1 || v > (1 << 20)) {
                fprintf(stderr, "lavinia: bench: '%s' is not a positive count\n", optarg);
                return 2;
            }
            if (dst)
                *dst = v;
            else
                lv_set_threads((int)v);
            break;
        }
        case 'h':
            printf("Usage: lavinia %s\n%s\n", lv_cli_bench_entry.usage, lv_cli_bench_entry.help);
            return 0;
        default: return lv_cli_usage(&lv_cli_bench_entry);
        }
    }
    if (!model == !shape || optind != argc)
        return lv_cli_usage(&lv_cli_bench_entry);
    lv_dtype dt = strcmp(dtype_name, "f32") == 0    ? LV_F32
                  : strcmp(dtype_name, "f16") == 0  ? LV_F16
                  : strcmp(dtype_name, "bf16") == 0 ? LV_BF16
                  : strcmp(dtype_name, "q8_0") == 0 ? LV_Q8_0
                  : strcmp(dtype_name, "q4_0") == 0 ? LV_Q4_0
                  : strcmp(dtype_name, "nf4") == 0  ? LV_NF4
                                                    : LV_DTYPE_COUNT;
    if (dt == LV_DTYPE_COUNT) {
        fprintf(stderr, "lavinia: bench: --dtype %s: want f32, f16, bf16, q8_0, q4_0 or nf4\n",
                dtype_name);
        return 2;
    }
    struct lv_checkpoint ck = { 0 };
    struct lv_model_config cfg;
    lv_llama *m = NULL;
    int64_t ctx = n_prompt + n_gen + 1;
    int rc;
    if (model) {
        rc = lv_checkpoint_open(&ck, model, NULL, NULL) == LV_OK
                 ? lv_llama_load(&m, &ck, ctx)
                 : LV_ERR;
        if (rc == LV_OK && lv_dtype_is_block(dt))        /* --dtype q8_0/q4_0 quantises */
            rc = lv_llama_quantize(m, dt);
    }
    else if ((rc = parse_shape(shape, &cfg)) == LV_OK) {
        cfg.max_seq = ctx;
        rc = lv_llama_new_random(&m, &cfg, dt, 1, ctx);
    }
    /* adapters of a LLaVA may reach into the tower: its sites must exist */
    lv_clip *v = NULL;
    if (rc == LV_OK && model && ad.n && lv_checkpoint_find(&ck, LV_CLIP_CLASS_EMBEDDING))
        rc = lv_clip_load(&v, &ck);
    if (rc == LV_OK)
        rc = lv_cli_adapters_open(&ad, model ? &ck : NULL, m, v);
    int32_t *ids = malloc((size_t)(n_prompt + 1) * sizeof *ids);
    float *logits = m ? malloc((size_t)lv_llama_vocab(m) * sizeof *logits) : NULL;
    if (rc == LV_OK && (!ids || !logits))
        rc = lv_error_status(LV_ENOMEM, "out of memory");
    if (rc == LV_OK) {
        uint64_t x = 12345;
        for (long i = 0; i < n_prompt; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            ids[i] = (int32_t)((x >> 33) % (uint64_t)lv_llama_vocab(m));
        }
        /* One untimed pass first, as llama-bench does: the arena and the caches are touched
         * (page faults) and the threads started, which a chat pays once per session. */
        rc = lv_llama_forward(m, ids, n_prompt, logits, false);
        lv_llama_reset(m);
        /* The bandwidth buffer: at least as big as the weights a step reads, so neither the
         * step nor the pass after it finds the other's bytes in the caches. */
        uint64_t wb = lv_llama_weight_bytes(m);
        size_t bw_bytes = bw_mib > 0 ? (size_t)bw_mib << 20
                                     : (size_t)(wb > (256u << 20) ? wb : 256u << 20);
        struct rusage ru;                 /* the model's peak: before the bandwidth buffer */
        getrusage(RUSAGE_SELF, &ru);
        struct lv_membw bwb = { 0 };
        if (rc == LV_OK)
            rc = lv_membw_init(&bwb, bw_bytes);
        /* each step also reads the cached keys and values of every position it attends to */
        double kv_row = 2.0 * (double)m->c.n_layers * (double)m->c.n_kv_heads *
                        (double)m->c.head_dim * sizeof(float), kv_bytes = 0.0;
        double t0 = lv_now(), t_prompt = 0.0, t_decode = 0.0, t_first = 0.0, t_bw = 0.0;
        struct lv_profile pprof = { 0 }, prof = { 0 };
        if (profile)
            lv_llama_set_profile(m, &pprof);
        if (rc == LV_OK)
            rc = lv_llama_forward(m, ids, n_prompt, logits, false);
        t_prompt = lv_now() - t0;
        if (profile)
            lv_llama_set_profile(m, &prof);
        for (long i = 0; rc == LV_OK && i < n_gen; i++) {
            int32_t best = 0;
            for (int64_t v = 1; v < lv_llama_vocab(m); v++)
                best = logits[v] > logits[best] ? (int32_t)v : best;
            if (i == 0)
                t_first = lv_now() - t0;
            double t1 = lv_now();
            rc = lv_llama_forward(m, &best, 1, logits, false);
            t_decode += lv_now() - t1;
            kv_bytes += kv_row * (double)m->pos;
            t_bw += lv_membw_pass(&bwb, lv_get_threads());
        }
        lv_llama_set_profile(m, NULL);
        if (rc == LV_OK) {
            double tps = (double)n_gen / t_decode, mib = 1024.0 * 1024.0;
            double bw = (double)n_gen * (double)lv_membw_bytes(&bwb) / t_bw;
            printf("model: %s, %s weights, %.1f MiB read per token, %d thread(s)\n",
                   model ? model : shape, model ? "stored" : dtype_name, (double)wb / mib,
                   lv_get_threads());
            if (ad.n)
                lv_cli_adapters_print(&ad, stdout);
            printf("prompt: %ld tokens, %.2f tokens/s\n", n_prompt, (double)n_prompt / t_prompt);
            double pf = prefill_flops(&m->c, n_prompt) / t_prompt;
            double ceil = sgemm_ceiling(n_prompt, m->c.hidden, m->c.dim);
            printf("prefill: %.1f GFLOP/s = %.1f%% of OpenBLAS's sgemm on %ld x %lld x %lld "
                   "measured now (%.1f GFLOP/s)\n", pf / 1e9,
                   ceil > 0 ? 100.0 * pf / ceil : 0.0, n_prompt, (long long)m->c.hidden,
                   (long long)m->c.dim, ceil / 1e9);
            printf("time to first token: %.1f ms\n", t_first * 1e3);
            printf("decode: %ld tokens, %.2f tokens/s\n", n_gen, tps);
            printf("peak RSS: %.1f MiB\n", (double)ru.ru_maxrss / 1024.0);
            printf("memory read bandwidth: %.2f GB/s (%.0f MiB, %d thread(s), one pass after "
                   "each decode step)\n", bw / 1e9, (double)lv_membw_bytes(&bwb) / mib,
                   lv_get_threads());
            double kv = kv_bytes / (double)n_gen;
            printf("decode bandwidth use: %.1f%% (%.2f tokens/s x (%.1f MiB of weights + "
                   "%.1f MiB of kv cache) / %.2f GB/s); weights alone %.1f%%\n",
                   100.0 * tps * ((double)wb + kv) / bw, tps, (double)wb / mib, kv / mib,
                   bw / 1e9, 100.0 * tps * (double)wb / bw);
            if (profile) {
                print_profile("prompt", &pprof, 1, t_prompt);
                print_profile("decode", &prof, n_gen, t_decode);
            }
        }
        lv_membw_free(&bwb);
    }
    free(ids);
    free(logits);
    lv_cli_adapters_close(&ad);
    lv_clip_free(v);
    lv_llama_free(m);
    lv_checkpoint_close(&ck);
    return rc == LV_OK ? 0 : lv_cli_fail(lv_errmsg());
}

const struct lv_cli_entry lv_cli_bench_entry = {
    .name  = "bench",
    .usage = "bench (-m MODEL | --random dim,hidden,layers,heads,kv_heads,vocab) [--dtype "
             "f32|f16|bf16|q8_0|q4_0|nf4] [--prompt N] [--gen N] [--bw-size MiB] [--threads N]\n"
             "             [--adapter PATH[:SCALE]]... [--profile]",
    .help  = "Prompt and decode speed, time to first token, peak memory, and the share of the "
             "measured memory bandwidth that decoding uses; --profile adds where a decode step's "
             "time goes, op by op.",
    .run   = bench_run,
};
