/*
 * test-llama2c.c: the llama2.c checkpoint and tokenizer.bin reader (src/io/llama2c.c).
 *
 * 1. Conformance: stories260K.bin (karpathy/llama2.c's published checkpoint, from
 *    ../shared/conformance) opens with the dimensions its README states, and a few weights
 *    match bytes read independently with stdio at offsets computed here from FORMATS.md 6.1.
 * 2. A tiny untied model written by the test, every float equal to its own index, so the
 *    first and last value of each view say exactly where in the file it points.
 * 3. Hostile checkpoints and tokenizers written into a fresh temporary directory: each open
 *    must fail with a message naming the file and the problem.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/llama2c.h"
#include "lavinia/error.h"
#include "testutil.h"

/* ----------------------------------------------------------------------------------------
 * scratch directory and files
 */

static char tmpdir[PATH_MAX];
static char *created[64];
static int n_created;

static void make_tmpdir(void)
{
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/lv-test-llama2c-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        exit(99);
    }
}

/* Write n bytes to tmpdir/name; returns the path (kept until cleanup). */
static const char *write_file(const char *name, const void *buf, size_t n)
{
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *fp = fopen(path, "wb");
    if (!fp || (n && fwrite(buf, 1, n, fp) != n) || fclose(fp) != 0) {
        perror(path);
        exit(99);
    }
    if (n_created < (int)(sizeof created / sizeof created[0]))
        created[n_created++] = strdup(path);
    return created[n_created - 1];
}

static void cleanup(void)
{
    for (int i = 0; i < n_created; i++) {
        unlink(created[i]);
        free(created[i]);
    }
    char sub[PATH_MAX + 16];
    snprintf(sub, sizeof sub, "%s/subdir", tmpdir);
    rmdir(sub);
    rmdir(tmpdir);
}

/* The open failed, and the message names the file and contains word. */
static void expect_fail(int rc, const char *path, const char *word, const char *what)
{
    const char *m = lv_errmsg();
    tu_assert(rc != LV_OK && strstr(m, path) != NULL && strstr(m, word) != NULL,
              "%s: refused, naming the file and '%s' (rc %d: %s)", what, word, rc, m);
}

/* ----------------------------------------------------------------------------------------
 * building checkpoints
 */

struct dims {
    int32_t dim, hidden, layers, heads, kv_heads, vocab, seq;   /* vocab < 0: untied */
};

/* 28 + 4 * floats of a version-0 file, computed group by group from FORMATS.md 6.1. */
static uint64_t model_floats(const struct dims *d)
{
    uint64_t C = (uint64_t)d->dim, F = (uint64_t)d->hidden, L = (uint64_t)d->layers;
    uint64_t V = (uint64_t)(d->vocab < 0 ? -(int64_t)d->vocab : d->vocab);
    uint64_t hd = C / (uint64_t)d->heads, KVC = hd * (uint64_t)d->kv_heads;
    uint64_t T = (uint64_t)d->seq;
    return V * C + L * C + L * C * C + 2 * L * KVC * C + L * C * C + L * C + 3 * L * F * C + C +
           2 * T * (hd / 2) + (d->vocab < 0 ? V * C : 0);
}

/* A header followed by `floats` floats, float i = i (exactly representable below 2^24). */
static uint8_t *build_model(const struct dims *d, int64_t extra_floats, size_t *n)
{
    int64_t floats = (int64_t)model_floats(d) + extra_floats;
    *n = 28 + 4 * (size_t)floats;
    uint8_t *buf = malloc(*n);
    int32_t h[7] = { d->dim, d->hidden, d->layers, d->heads, d->kv_heads, d->vocab, d->seq };
    memcpy(buf, h, 28);
    for (int64_t i = 0; i < floats; i++) {
        float v = (float)i;
        memcpy(buf + 28 + 4 * i, &v, 4);
    }
    return buf;
}

/* A bare 28-byte header (for the header checks, which come before the size check). */
static const char *write_header(const char *name, int32_t dim, int32_t hidden, int32_t layers,
                                int32_t heads, int32_t kv, int32_t vocab, int32_t seq)
{
    int32_t h[7] = { dim, hidden, layers, heads, kv, vocab, seq };
    return write_file(name, h, sizeof h);
}

static float f32_at(const void *p, uint64_t i)
{
    float v;
    memcpy(&v, (const uint8_t *)p + 4 * i, 4);
    return v;
}

/* ----------------------------------------------------------------------------------------
 * 1. conformance: stories260K.bin
 */

/* bytes [off, off + n) of path, read with stdio */
static bool read_at(const char *path, uint64_t off, void *buf, size_t n)
{
    FILE *fp = fopen(path, "rb");
    bool ok = fp && fseek(fp, (long)off, SEEK_SET) == 0 && fread(buf, 1, n, fp) == n;
    if (fp)
        fclose(fp);
    return ok;
}

static void test_stories260k(void)
{
    char dir[PATH_MAX], path[PATH_MAX + 32];
    const char *env = getenv("LAVINIA_CONFORMANCE_DIR");
    const char *top = getenv("LV_TOP_SRCDIR");
    if (env && *env)
        snprintf(dir, sizeof dir, "%s", env);
    else
        snprintf(dir, sizeof dir, "%s/../shared/conformance", top && *top ? top : ".");
    snprintf(path, sizeof path, "%s/stories260K.bin", dir);
    if (access(path, R_OK) != 0) {
        printf("skipped: conformance data not found (%s)\n", path);
        return;
    }

    lv_l2c_file f;
    int rc = lv_l2c_open(&f, path);
    if (!tu_assert(rc == LV_OK, "stories260K.bin opens (%s)", rc ? lv_errmsg() : "ok"))
        return;
    const struct lv_model_config *c = &f.config;
    tu_assert(c->dim == 64 && c->hidden == 172 && c->n_layers == 5 && c->n_heads == 8 &&
              c->n_kv_heads == 4 && c->vocab == 512 && c->max_seq == 512 && c->tied,
              "stories260K: dim %lld hidden %lld layers %lld heads %lld kv %lld vocab %lld "
              "seq %lld tied %d (expected 64 172 5 8 4 512 512 1)", (long long)c->dim,
              (long long)c->hidden, (long long)c->n_layers, (long long)c->n_heads,
              (long long)c->n_kv_heads, (long long)c->vocab, (long long)c->max_seq, c->tied);
    tu_assert(c->head_dim == 8 && c->qk_layout == LV_QK_META && c->arch == LV_ARCH_LLAMA &&
              c->norm_eps == 1e-5f && c->rope_theta == 10000.0f,
              "stories260K: head dim 8, Meta q/k layout, eps 1e-5, theta 10000");
    tu_assert(lv_l2c_tensor_count(&f) == 1 + 9 * 5 + 1, "stories260K: 47 weights (tied)");

    /* offsets from FORMATS.md 6.1 for C 64, F 172, L 5, KVC 32, V 512 (in floats):
     * emb 32768 | rms_att 320 | wq 20480 | wk 10240 | wv 10240 | wo 20480 | rms_ffn 320 |
     * w1 55040 | w2 55040 | w3 55040 | rms_final 64 | freq 2 x 2048 */
    static const struct {
        const char *name;
        uint64_t off_floats, n;
        int64_t rows, cols;
    } spot[] = {
        { "model.embed_tokens.weight", 0, 512 * 64, 512, 64 },
        { "model.layers.0.input_layernorm.weight", 32768, 64, 64, 1 },
        { "model.layers.2.self_attn.k_proj.weight", 32768 + 320 + 20480 + 2 * 32 * 64,
          32 * 64, 32, 64 },
        { "model.layers.4.self_attn.o_proj.weight",
          32768 + 320 + 20480 + 10240 + 10240 + 4 * 64 * 64, 64 * 64, 64, 64 },
        { "model.layers.1.mlp.down_proj.weight",
          32768 + 320 + 20480 + 10240 + 10240 + 20480 + 320 + 55040 + 1 * 64 * 172,
          64 * 172, 64, 172 },
        { "model.layers.3.mlp.up_proj.weight",
          32768 + 320 + 20480 + 10240 + 10240 + 20480 + 320 + 2 * 55040 + 3 * 172 * 64,
          172 * 64, 172, 64 },
        { "model.norm.weight",
          32768 + 320 + 20480 + 10240 + 10240 + 20480 + 320 + 3 * 55040, 64, 64, 1 },
    };
    for (size_t i = 0; i < sizeof spot / sizeof spot[0]; i++) {
        lv_l2c_tensor t;
        uint8_t first[16], last[4];
        uint64_t off = 28 + 4 * spot[i].off_floats, nbytes = 4 * spot[i].n;
        rc = lv_l2c_tensor_find(&f, spot[i].name, &t);
        bool ok = rc == LV_OK && t.offset == off && t.nbytes == nbytes &&
                  t.shape[0] == spot[i].rows && (t.ndim == 1 || t.shape[1] == spot[i].cols) &&
                  read_at(path, off, first, sizeof first) &&
                  read_at(path, off + nbytes - 4, last, 4) &&
                  memcmp(t.data, first, sizeof first) == 0 &&
                  memcmp((const uint8_t *)t.data + nbytes - 4, last, 4) == 0;
        tu_assert(ok, "stories260K: %s at byte %llu, %llu bytes, first and last values "
                  "match the file (%g ...)", spot[i].name, (unsigned long long)off,
                  (unsigned long long)nbytes, rc == LV_OK ? (double)f32_at(t.data, 0) : 0.0);
    }
    /* RMSNorm weights of a trained model are positive-ish and not all equal */
    lv_l2c_tensor t;
    if (lv_l2c_tensor_find(&f, "model.norm.weight", &t) == LV_OK) {
        double sum = 0;
        for (int i = 0; i < 64; i++)
            sum += f32_at(t.data, i);
        tu_assert(isfinite(sum) && sum > 0, "stories260K: final norm weights sum to %g > 0",
                  sum);
    }
    rc = lv_l2c_tensor_find(&f, "lm_head.weight", &t);
    expect_fail(rc, path, "shared", "stories260K: lm_head.weight of a tied model");
    lv_l2c_close(&f);
}

/* ----------------------------------------------------------------------------------------
 * 2. a tiny untied model: every view at the right offset
 */

static void test_tiny_model(void)
{
    /* dim 8, hidden 12, 2 layers, 2 heads (head dim 4), 1 kv head, vocab 5 untied, seq 3 */
    const struct dims d = { .dim = 8, .hidden = 12, .layers = 2, .heads = 2, .kv_heads = 1,
                            .vocab = -5, .seq = 3 };
    size_t n;
    uint8_t *buf = build_model(&d, 0, &n);
    const char *path = write_file("tiny.bin", buf, n);

    /* the expected table, written out by hand: name, float offset, rows, cols (0: vector).
     * groups: emb 40 | rms_att 16 | wq 128 | wk 64 | wv 64 | wo 128 | rms_ffn 16 |
     * w1 192 | w2 192 | w3 192 | rms_final 8 | freq 2 x 6 | wcls 40 */
    enum { EMB = 0, RA = 40, WQ = 56, WK = 184, WV = 248, WO = 312, RF = 440, W1 = 456,
           W2 = 648, W3 = 840, FIN = 1032, WCLS = 1052, END = 1092 };
    static const struct {
        const char *name;
        int off;
        int rows, cols;
    } want[] = {
        { "model.embed_tokens.weight", EMB, 5, 8 },
        { "model.layers.0.input_layernorm.weight", RA, 8, 0 },
        { "model.layers.0.self_attn.q_proj.weight", WQ, 8, 8 },
        { "model.layers.0.self_attn.k_proj.weight", WK, 4, 8 },
        { "model.layers.0.self_attn.v_proj.weight", WV, 4, 8 },
        { "model.layers.0.self_attn.o_proj.weight", WO, 8, 8 },
        { "model.layers.0.post_attention_layernorm.weight", RF, 8, 0 },
        { "model.layers.0.mlp.gate_proj.weight", W1, 12, 8 },
        { "model.layers.0.mlp.up_proj.weight", W3, 12, 8 },
        { "model.layers.0.mlp.down_proj.weight", W2, 8, 12 },
        { "model.layers.1.input_layernorm.weight", RA + 8, 8, 0 },
        { "model.layers.1.self_attn.q_proj.weight", WQ + 64, 8, 8 },
        { "model.layers.1.self_attn.k_proj.weight", WK + 32, 4, 8 },
        { "model.layers.1.self_attn.v_proj.weight", WV + 32, 4, 8 },
        { "model.layers.1.self_attn.o_proj.weight", WO + 64, 8, 8 },
        { "model.layers.1.post_attention_layernorm.weight", RF + 8, 8, 0 },
        { "model.layers.1.mlp.gate_proj.weight", W1 + 96, 12, 8 },
        { "model.layers.1.mlp.up_proj.weight", W3 + 96, 12, 8 },
        { "model.layers.1.mlp.down_proj.weight", W2 + 96, 8, 12 },
        { "model.norm.weight", FIN, 8, 0 },
        { "lm_head.weight", WCLS, 5, 8 },
    };
    const int n_want = (int)(sizeof want / sizeof want[0]);
    tu_assert(n == 28 + 4 * END, "tiny: the test's own size formula gives %zu bytes", n);

    for (int pass = 0; pass < 2; pass++) {
        lv_l2c_file f;
        int rc = pass == 0 ? lv_l2c_open(&f, path) : lv_l2c_open_mem(&f, buf, n, "tiny-mem");
        const char *how = pass == 0 ? "file" : "memory";
        if (!tu_assert(rc == LV_OK, "tiny (%s): opens (%s)", how, rc ? lv_errmsg() : "ok"))
            continue;
        const struct lv_model_config *c = &f.config;
        tu_assert(c->dim == 8 && c->hidden == 12 && c->n_layers == 2 && c->n_heads == 2 &&
                  c->n_kv_heads == 1 && c->vocab == 5 && !c->tied && c->max_seq == 3 &&
                  c->head_dim == 4, "tiny (%s): config read back, untied", how);
        tu_assert(lv_l2c_tensor_count(&f) == n_want, "tiny (%s): %lld weights, expected %d",
                  how, (long long)lv_l2c_tensor_count(&f), n_want);
        const uint8_t *base = pass == 0 ? f.data : buf;
        int good = 0;
        for (int i = 0; i < n_want && i < lv_l2c_tensor_count(&f); i++) {
            lv_l2c_tensor t, byname;
            int64_t rows = want[i].rows, cols = want[i].cols ? want[i].cols : 1;
            uint64_t count = (uint64_t)(rows * cols);
            bool ok = lv_l2c_tensor_at(&f, i, &t) == LV_OK &&
                      strcmp(t.name, want[i].name) == 0 &&
                      t.ndim == (want[i].cols ? 2 : 1) && t.shape[0] == rows &&
                      (t.ndim == 1 || t.shape[1] == cols) && t.nbytes == 4 * count &&
                      t.offset == 28 + 4 * (uint64_t)want[i].off &&
                      (const uint8_t *)t.data == base + t.offset &&
                      f32_at(t.data, 0) == (float)want[i].off &&
                      f32_at(t.data, count - 1) == (float)(want[i].off + (int64_t)count - 1) &&
                      lv_l2c_tensor_find(&f, want[i].name, &byname) == LV_OK &&
                      byname.data == t.data;
            if (!ok)
                tu_assert(false, "tiny (%s): weight %d %s (got '%s', offset %llu)", how, i,
                          want[i].name, t.name, (unsigned long long)t.offset);
            good += ok;
        }
        tu_assert(good == n_want, "tiny (%s): all %d views have the right name, shape and "
                  "offset", how, n_want);
        lv_l2c_tensor t;
        rc = lv_l2c_tensor_at(&f, n_want, &t);
        tu_assert(rc != LV_OK && strstr(lv_errmsg(), "out of range"),
                  "tiny (%s): index past the end refused (%s)", how, lv_errmsg());
        rc = lv_l2c_tensor_find(&f, "model.layers.2.mlp.up_proj.weight", &t);
        tu_assert(rc != LV_OK && strstr(lv_errmsg(), "no tensor"),
                  "tiny (%s): a missing name refused (%s)", how, lv_errmsg());
        lv_l2c_close(&f);
        lv_l2c_close(&f);   /* closing twice is harmless */
    }
    free(buf);
}

/* A real-looking model whose dim (640 = 0x280) makes the file start 80 02, like a pickle:
 * it must still open, since the signature is only consulted once the header has failed. */
static void test_pickle_lookalike(void)
{
    const struct dims d = { .dim = 640, .hidden = 2, .layers = 1, .heads = 1, .kv_heads = 1,
                            .vocab = 1, .seq = 1 };
    size_t n;
    uint8_t *buf = build_model(&d, 0, &n);
    const char *path = write_file("dim640.bin", buf, n);
    lv_l2c_file f;
    int rc = lv_l2c_open(&f, path);
    tu_assert(rc == LV_OK && buf[0] == 0x80 && buf[1] == 0x02 && f.config.dim == 640,
              "a version-0 file starting 80 02 (dim 640) opens (%s)", rc ? lv_errmsg() : "ok");
    lv_l2c_close(&f);
    free(buf);
}

/* ----------------------------------------------------------------------------------------
 * 3. hostile checkpoints
 */

static void test_hostile_models(void)
{
    lv_l2c_file f;
    const char *p;
    int rc;

    p = write_file("empty.bin", "", 0);
    expect_fail(lv_l2c_open(&f, p), p, "empty", "0-byte file");
    rc = lv_l2c_open_mem(&f, "", 0, "empty-mem");
    expect_fail(rc, "empty-mem", "empty", "0-byte buffer");

    p = write_file("short.bin", "\x08\0\0\0\x0c\0\0\0\x02\0", 10);
    expect_fail(lv_l2c_open(&f, p), p, "shorter than the 28-byte", "10-byte file");

    p = write_header("zero-heads.bin", 8, 12, 2, 0, 1, 5, 3);
    expect_fail(lv_l2c_open(&f, p), p, "heads", "zero heads");

    p = write_header("heads-kv.bin", 12, 12, 2, 3, 2, 5, 3);
    expect_fail(lv_l2c_open(&f, p), p, "not a multiple of 2 kv heads",
                "3 heads, 2 kv heads");

    p = write_header("dim-heads.bin", 10, 12, 2, 4, 1, 5, 3);
    expect_fail(lv_l2c_open(&f, p), p, "dim 10 is not a multiple of 4 heads",
                "dim 10, 4 heads");

    p = write_header("neg-dim.bin", -8, 12, 2, 2, 1, 5, 3);
    expect_fail(lv_l2c_open(&f, p), p, "dim = -8 is out of range", "negative dim");

    p = write_header("zero-vocab.bin", 8, 12, 2, 2, 1, 0, 3);
    expect_fail(lv_l2c_open(&f, p), p, "vocab", "vocab 0");

    p = write_header("min-vocab.bin", 8, 12, 2, 2, 1, INT32_MIN, 3);
    expect_fail(lv_l2c_open(&f, p), p, "vocab size = 2147483648 is out of range",
                "vocab INT32_MIN (negating it must not overflow)");

    p = write_header("max-dims.bin", INT32_MAX, INT32_MAX, INT32_MAX, 1, 1, INT32_MAX,
                     INT32_MAX);
    expect_fail(lv_l2c_open(&f, p), p, "out of range", "INT32_MAX dimensions");

    /* the largest dimensions the bounds allow: ~2^57 bytes of tensors, a 28-byte file */
    p = write_header("huge.bin", 1 << 20, 8 << 20, 1024, 4096, 4096, -(1 << 24), 1 << 24);
    expect_fail(lv_l2c_open(&f, p), p, "size mismatch", "huge dimensions (size, no overflow)");

    p = write_header("odd-head.bin", 6, 12, 2, 2, 1, 5, 3);
    expect_fail(lv_l2c_open(&f, p), p, "odd", "head dim 3 (odd)");

    /* one float short and one too many of a valid tiny model */
    const struct dims d = { .dim = 8, .hidden = 12, .layers = 2, .heads = 2, .kv_heads = 1,
                            .vocab = -5, .seq = 3 };
    size_t n;
    uint8_t *buf = build_model(&d, -1, &n);
    p = write_file("short-float.bin", buf, n);
    expect_fail(lv_l2c_open(&f, p), p, "4 bytes short", "truncated by one float");
    free(buf);
    buf = build_model(&d, 1, &n);
    p = write_file("long-float.bin", buf, n);
    expect_fail(lv_l2c_open(&f, p), p, "trailing", "one float too many");
    tu_assert(strstr(lv_errmsg(), "takes exactly 4396 bytes, the file has 4400") != NULL,
              "the size message says the expected and actual sizes (%s)", lv_errmsg());
    /* the same bytes with the tied sign: wcls becomes 10 floats of trailing data */
    int32_t tied_vocab = 5;
    memcpy(buf + 20, &tied_vocab, 4);
    p = write_file("tied-wrong.bin", buf, n);
    expect_fail(lv_l2c_open(&f, p), p, "trailing", "untied file with a tied header");
    free(buf);

    /* PyTorch: a zip (torch.save since 1.6) and a legacy pickle */
    static const uint8_t zip[64] = { 'P', 'K', 3, 4, 20, 0, 0, 0, 0, 0, 'a', 'r', 'c', 'h' };
    p = write_file("pytorch_model.bin", zip, sizeof zip);
    expect_fail(lv_l2c_open(&f, p), p, "PyTorch checkpoint (zip/pickle)", "zip signature");
    tu_assert(strstr(lv_errmsg(), "save_pretrained(safe_serialization=True)") != NULL,
              "the zip message says how to convert (%s)", lv_errmsg());
    static const uint8_t pkl[64] = { 0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9 };
    p = write_file("legacy.pt", pkl, sizeof pkl);
    expect_fail(lv_l2c_open(&f, p), p, "PyTorch checkpoint", "pickle protocol 2 signature");
    static const uint8_t pkl4[8] = { 0x80, 0x04, 0x95 };
    p = write_file("legacy4.pt", pkl4, sizeof pkl4);
    expect_fail(lv_l2c_open(&f, p), p, "pickle protocol 4", "pickle protocol 4 signature");

    /* export.py version 1: 256-byte header, magic, version, params, shared flag, pad */
    uint8_t v1[256 + 64] = { 0 };
    uint32_t magic = 0x616b3432;
    int32_t ver = 1, params[7] = { 8, 12, 2, 2, 1, 5, 3 };
    memcpy(v1, &magic, 4);
    memcpy(v1 + 4, &ver, 4);
    memcpy(v1 + 8, params, sizeof params);
    v1[36] = 1;
    p = write_file("v1.bin", v1, sizeof v1);
    expect_fail(lv_l2c_open(&f, p), p, "version 1", "ak42 version 1 header");
    tu_assert(strstr(lv_errmsg(), "version 0") != NULL,
              "the ak42 message says lavinia reads version 0 (%s)", lv_errmsg());
    ver = 2;
    memcpy(v1 + 4, &ver, 4);
    p = write_file("v2.bin", v1, sizeof v1);
    expect_fail(lv_l2c_open(&f, p), p, "version 2", "ak42 version 2 header");

    /* not files at all */
    char missing[PATH_MAX + 32], sub[PATH_MAX + 16];
    snprintf(missing, sizeof missing, "%s/does-not-exist.bin", tmpdir);
    expect_fail(lv_l2c_open(&f, missing), missing, "cannot open", "missing file");
    snprintf(sub, sizeof sub, "%s/subdir", tmpdir);
    mkdir(sub, 0700);
    expect_fail(lv_l2c_open(&f, sub), sub, "directory", "a directory");
    tu_assert(f.data == NULL && f.name == NULL && f.map == NULL,
              "a failed open leaves the struct closed");
    lv_l2c_close(&f);
}

/* ----------------------------------------------------------------------------------------
 * tokenizer.bin
 */

struct tokbuf {
    uint8_t b[512];
    size_t n;
};

static void tok_u32(struct tokbuf *t, uint32_t v)
{
    memcpy(t->b + t->n, &v, 4);
    t->n += 4;
}

static void tok_rec(struct tokbuf *t, float score, int32_t len, const char *s, size_t slen)
{
    memcpy(t->b + t->n, &score, 4);
    memcpy(t->b + t->n + 4, &len, 4);
    memcpy(t->b + t->n + 8, s, slen);
    t->n += 8 + slen;
}

/* max_token_length 5; "<unk>", "\n<s>\n", "a\0b" (a NUL inside), "" */
static void good_tokenizer(struct tokbuf *t)
{
    t->n = 0;
    tok_u32(t, 5);
    tok_rec(t, 0.0f, 5, "<unk>", 5);
    tok_rec(t, -1.5f, 5, "\n<s>\n", 5);
    tok_rec(t, 2.0f, 3, "a\0b", 3);
    tok_rec(t, -1e9f, 0, "", 0);
}

static void test_tokenizer(void)
{
    struct tokbuf tb;
    lv_l2c_tokenizer t;
    const char *p;
    size_t len;
    int rc;

    good_tokenizer(&tb);
    p = write_file("tokenizer.bin", tb.b, tb.n);
    rc = lv_l2c_tokenizer_open(&t, p, 4);
    if (tu_assert(rc == LV_OK, "tokenizer: a good 4-token file opens (%s)",
                  rc ? lv_errmsg() : "ok")) {
        const char *s0 = lv_l2c_tokenizer_piece(&t, 0, &len);
        bool ok = t.vocab_size == 4 && t.max_token_length == 5 && len == 5 &&
                  memcmp(s0, "<unk>", 6) == 0;
        const char *s1 = lv_l2c_tokenizer_piece(&t, 1, &len);
        ok = ok && len == 5 && memcmp(s1, "\n<s>\n", 6) == 0;
        const char *s2 = lv_l2c_tokenizer_piece(&t, 2, &len);
        ok = ok && len == 3 && memcmp(s2, "a\0b\0", 4) == 0;
        const char *s3 = lv_l2c_tokenizer_piece(&t, 3, &len);
        ok = ok && len == 0 && s3 && s3[0] == '\0';
        ok = ok && t.scores[0] == 0.0f && t.scores[1] == -1.5f && t.scores[2] == 2.0f &&
             t.scores[3] == -1e9f;
        ok = ok && !lv_l2c_tokenizer_piece(&t, 4, &len) && len == 0 &&
             !lv_l2c_tokenizer_piece(&t, -1, NULL);
        tu_assert(ok, "tokenizer: pieces (with a NUL inside, and an empty one), lengths and "
                  "scores read back; ids out of range give NULL");
    }
    lv_l2c_tokenizer_close(&t);
    lv_l2c_tokenizer_close(&t);

    rc = lv_l2c_tokenizer_open_mem(&t, tb.b, tb.n, "tok-mem", 4);
    tu_assert(rc == LV_OK && t.vocab_size == 4, "tokenizer: the same bytes from memory");
    lv_l2c_tokenizer_close(&t);

    /* hostile */
    p = write_file("tok-empty.bin", "", 0);
    expect_fail(lv_l2c_tokenizer_open(&t, p, 4), p, "empty", "tokenizer: 0 bytes");

    p = write_file("tok-trunc.bin", tb.b, tb.n - 8 - 2);   /* cut inside "a\0b" */
    expect_fail(lv_l2c_tokenizer_open(&t, p, 4), p, "truncated",
                "tokenizer: truncated inside a piece");
    p = write_file("tok-trunc2.bin", tb.b, 4 + 13 + 6);    /* cut inside record 1's header */
    expect_fail(lv_l2c_tokenizer_open(&t, p, 2), p, "record truncated",
                "tokenizer: truncated inside a record header");

    good_tokenizer(&tb);
    int32_t neg = -1;
    memcpy(tb.b + 4 + 13 + 4, &neg, 4);                   /* record 1's len */
    p = write_file("tok-neg.bin", tb.b, tb.n);
    expect_fail(lv_l2c_tokenizer_open(&t, p, 4), p, "negative length",
                "tokenizer: negative length");

    good_tokenizer(&tb);
    uint32_t max2 = 2;
    memcpy(tb.b, &max2, 4);
    p = write_file("tok-maxlen.bin", tb.b, tb.n);
    expect_fail(lv_l2c_tokenizer_open(&t, p, 4), p, "exceeds max_token_length",
                "tokenizer: len > max_token_length");

    good_tokenizer(&tb);
    p = write_file("tok-trailing.bin", tb.b, tb.n);
    expect_fail(lv_l2c_tokenizer_open(&t, p, 3), p, "trailing bytes",
                "tokenizer: trailing bytes (one record too many)");

    good_tokenizer(&tb);
    float nan = NAN;
    memcpy(tb.b + 4 + 13, &nan, 4);
    p = write_file("tok-nan.bin", tb.b, tb.n);
    expect_fail(lv_l2c_tokenizer_open(&t, p, 4), p, "not finite", "tokenizer: NaN score");

    good_tokenizer(&tb);
    p = write_file("tok-vocab.bin", tb.b, tb.n);
    expect_fail(lv_l2c_tokenizer_open(&t, p, 32000), p, "cannot hold",
                "tokenizer: vocab 32000 in a 49-byte file (checked before allocating)");
    expect_fail(lv_l2c_tokenizer_open(&t, p, 0), p, "out of range", "tokenizer: vocab 0");
    uint32_t hugemax = 0xffffffffu;
    memcpy(tb.b, &hugemax, 4);
    p = write_file("tok-hugemax.bin", tb.b, tb.n);
    expect_fail(lv_l2c_tokenizer_open(&t, p, 4), p, "max_token_length",
                "tokenizer: max_token_length 2^32-1");
    tu_assert(t.text == NULL && t.scores == NULL && t.vocab_size == 0,
              "tokenizer: a failed open leaves the struct empty");
}

int main(int argc, char **argv)
{
    tu_init(argc, argv, "test-llama2c");
    make_tmpdir();
    test_stories260k();
    test_tiny_model();
    test_pickle_lookalike();
    test_hostile_models();
    test_tokenizer();
    cleanup();
    return tu_finish();
}
