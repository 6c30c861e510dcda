/*
 * test-safetensors.c: the safetensors reader, writer and sharded directories (FORMATS.md §1).
 *
 * Round trips every dtype lavinia writes, bit-exact, with zero-element and scalar tensors and
 * metadata; reads a file laid out byte by byte as Python's safetensors writes it (so the
 * reader is checked against the format, not only against our writer) and checks our writer
 * produces the same bytes; then feeds the reader hostile files, one per rule of §1.3, each
 * written into a fresh temporary directory, and checks that the open fails with one line
 * naming the file and the problem. Sharded directories: a good two-shard checkpoint, then a
 * missing shard, path traversal, a tensor the index misplaces and a tensor in two shards.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/safetensors.h"
#include "lavinia/error.h"
#include "testutil.h"

static char tmpdir[1024];

/* ----------------------------------------------------------------------------------------
 * Files
 */

static void make_tmpdir(void)
{
    const char *t = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/test-safetensors-XXXXXX", t && *t ? t : "/tmp");
    if (mkdtemp(tmpdir) == NULL) {
        perror(tmpdir);
        exit(1);
    }
}

/* rm -r of the temporary directory (it holds files and one level of subdirectories). */
static void remove_tree(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char p[4096];
    if (d == NULL)
        return;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
            remove_tree(p);
        else
            unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

/* tmpdir/name, in a static ring so a few can be alive at once. */
static const char *tpath(const char *name)
{
    static char ring[8][4096];
    static int k;
    char *p = ring[k++ % 8];
    snprintf(p, 4096, "%s/%s", tmpdir, name);
    return p;
}

static void write_file(const char *path, const void *buf, size_t n)
{
    FILE *fp = fopen(path, "wb");
    if (fp == NULL || (n > 0 && fwrite(buf, 1, n, fp) != n) || fclose(fp) != 0) {
        perror(path);
        exit(1);
    }
}

static void *read_file(const char *path, size_t *n)
{
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
        return NULL;
    FILE *fp = fopen(path, "rb");
    if (fp == NULL)
        return NULL;
    fseek(fp, 0, SEEK_END);
    long len = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    void *b = len >= 0 ? malloc((size_t)len + 1) : NULL;
    if (b == NULL) {
        fclose(fp);
        return NULL;
    }
    *n = fread(b, 1, (size_t)len, fp);
    fclose(fp);
    return b;
}

/* A safetensors file: 8-byte little-endian header length, the header (padded with pad_byte
 * to a multiple of 8 unless pad_byte is 0), then ndata bytes of data. */
static void *st_bytes(const char *header, char pad_byte, const void *data, size_t ndata,
                      size_t *n)
{
    size_t h = strlen(header);
    size_t nh = pad_byte ? (h + 7) / 8 * 8 : h;
    uint8_t *b = calloc(8 + nh + ndata + 1, 1);
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)((uint64_t)nh >> (8 * i));
    memcpy(b + 8, header, h);
    memset(b + 8 + h, pad_byte, nh - h);
    if (ndata > 0)
        memcpy(b + 8 + nh, data, ndata);
    *n = 8 + nh + ndata;
    return b;
}

static const char *write_st(const char *name, const char *header, const void *data,
                            size_t ndata)
{
    size_t n;
    void *b = st_bytes(header, ' ', data, ndata, &n);
    const char *p = tpath(name);
    write_file(p, b, n);
    free(b);
    return p;
}

/* The open of path must fail with one line naming the file and containing word. The same
 * bytes through lv_st_open_mem must fail too. */
static void expect_fail(const char *label, const char *path, const char *word)
{
    lv_st_file f;
    lv_error_clear();
    int rc = lv_st_open(&f, path);
    const char *m = lv_errmsg();
    tu_assert(rc != LV_OK, "%s: the open fails", label);
    tu_assert(strstr(m, path) != NULL && strstr(m, word) != NULL && strchr(m, '\n') == NULL,
              "%s: one line naming the file and saying '%s': %s", label, word, m);
    if (rc == LV_OK)
        lv_st_close(&f);

    size_t n;
    void *b = read_file(path, &n);
    if (b != NULL) {
        rc = lv_st_open_mem(&f, b, n, "mem.safetensors");
        tu_assert(rc != LV_OK && strstr(lv_errmsg(), "mem.safetensors") != NULL,
                  "%s: lv_st_open_mem fails too: %s", label, lv_errmsg());
        if (rc == LV_OK)
            lv_st_close(&f);
        free(b);
    }
}

static void expect_fail_hdr(const char *label, const char *header, const void *data,
                            size_t ndata, const char *word)
{
    char name[128];
    snprintf(name, sizeof name, "%s.safetensors", label);
    expect_fail(label, write_st(name, header, data, ndata), word);
}

static bool no_temp_files(void)
{
    DIR *d = opendir(tmpdir);
    struct dirent *e;
    bool ok = true;
    while (d != NULL && (e = readdir(d)) != NULL)
        if (strstr(e->d_name, ".tmp-") != NULL)
            ok = false;
    if (d != NULL)
        closedir(d);
    return ok;
}

/* ----------------------------------------------------------------------------------------
 * dtypes
 */

static void test_dtypes(void)
{
    static const struct { const char *name; unsigned bits; } want[] = {
        { "BOOL", 8 }, { "F4", 4 }, { "F6_E2M3", 6 }, { "F6_E3M2", 6 }, { "U8", 8 },
        { "I8", 8 }, { "F8_E5M2", 8 }, { "F8_E4M3", 8 }, { "F8_E8M0", 8 },
        { "F8_E4M3FNUZ", 8 }, { "F8_E5M2FNUZ", 8 }, { "I16", 16 }, { "U16", 16 },
        { "F16", 16 }, { "BF16", 16 }, { "I32", 32 }, { "U32", 32 }, { "F32", 32 },
        { "C64", 64 }, { "F64", 64 }, { "I64", 64 }, { "U64", 64 },
    };
    int bad = 0;
    tu_assert(sizeof want / sizeof want[0] == LV_ST_DTYPE_COUNT, "22 dtypes, as the reference");
    for (int d = 0; d < LV_ST_DTYPE_COUNT; d++)
        bad += strcmp(lv_st_dtype_name(d), want[d].name) != 0 ||
               lv_st_dtype_bits(d) != want[d].bits ||
               lv_st_dtype_from_name(want[d].name) != d;
    tu_assert(bad == 0, "dtype names, bit sizes and the reference's enum order (%d wrong)", bad);
    tu_assert(lv_st_dtype_from_name("f32") < 0 && lv_st_dtype_from_name("F33") < 0 &&
                  lv_st_dtype_from_name("") < 0, "unknown dtype strings are -1");
    tu_assert(lv_st_dtype_to_lv(LV_ST_F32) == LV_F32 && lv_st_dtype_to_lv(LV_ST_F16) == LV_F16 &&
                  lv_st_dtype_to_lv(LV_ST_BF16) == LV_BF16 &&
                  lv_st_dtype_to_lv(LV_ST_I32) == LV_I32 &&
                  lv_st_dtype_to_lv(LV_ST_F64) == -1 && lv_st_dtype_to_lv(LV_ST_F8_E4M3) == -1,
              "lavinia dtypes: F32/F16/BF16/I32 map, others are -1");
    tu_assert(lv_st_dtype_from_lv(LV_F32) == LV_ST_F32 &&
                  lv_st_dtype_from_lv(LV_BF16) == LV_ST_BF16 &&
                  lv_st_dtype_from_lv((lv_dtype)99) == -1, "and back");
}

/* ----------------------------------------------------------------------------------------
 * Round trip
 */

static void fill(uint8_t *b, size_t n, uint32_t seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        b[i] = (uint8_t)(seed >> 24);
    }
}

static void test_round_trip(void)
{
    static const struct { const char *name; lv_st_dtype dt; int ndim; int64_t shape[3]; } spec[] = {
        { "f32.w", LV_ST_F32, 2, { 3, 5 } },
        { "f16.w", LV_ST_F16, 3, { 2, 3, 3 } },
        { "bf16.w", LV_ST_BF16, 1, { 7 } },
        { "i32.ids", LV_ST_I32, 1, { 5 } },
        { "i8.q", LV_ST_I8, 2, { 3, 3 } },
        { "u8.q", LV_ST_U8, 1, { 11 } },
        { "i16.x", LV_ST_I16, 1, { 3 } },
        { "i64.pos", LV_ST_I64, 1, { 2 } },
        { "f64.acc", LV_ST_F64, 2, { 1, 3 } },
        { "bool.mask", LV_ST_BOOL, 1, { 9 } },
        { "empty", LV_ST_F32, 2, { 0, 3 } },          /* zero elements: offsets [k, k] */
        { "scalar", LV_ST_F32, 0, { 0 } },            /* shape []: one element */
        { "a.scalar.bf16", LV_ST_BF16, 0, { 0 } },
        { "f4.packed", LV_ST_F4, 1, { 6 } },          /* 3 bytes */
        { "f6.packed", LV_ST_F6_E2M3, 1, { 4 } },     /* 3 bytes */
    };
    enum { N = sizeof spec / sizeof spec[0] };
    lv_st_wtensor w[N];
    uint8_t *bufs[N];
    for (int i = 0; i < N; i++) {
        memset(&w[i], 0, sizeof w[i]);
        w[i].name = spec[i].name;
        w[i].dtype = spec[i].dt;
        w[i].ndim = spec[i].ndim;
        uint64_t ne = 1;
        for (int k = 0; k < spec[i].ndim; k++) {
            w[i].shape[k] = spec[i].shape[k];
            ne *= (uint64_t)spec[i].shape[k];
        }
        size_t nb = (size_t)(ne * lv_st_dtype_bits(spec[i].dt) / 8);
        bufs[i] = malloc(nb + 1);
        fill(bufs[i], nb, (uint32_t)i + 1);
        w[i].data = nb ? bufs[i] : NULL;
    }
    const char *meta[] = { "lavinia.version", "0.1", "note", "caf\xc3\xa9 \"quoted\"\n", NULL };
    const char *path = tpath("round.safetensors");
    int rc = lv_st_write(path, w, N, meta);
    tu_assert(rc == LV_OK, "write %d tensors of 12 dtypes: %s", N, rc ? lv_errmsg() : "ok");
    tu_assert(no_temp_files(), "no temporary file is left behind");

    lv_st_file f;
    rc = lv_st_open(&f, path);
    tu_assert(rc == LV_OK, "read them back: %s", rc ? lv_errmsg() : "ok");
    if (rc != LV_OK)
        goto out;
    tu_assert(f.n_tensors == N, "%d tensors", f.n_tensors);
    tu_assert(f.buf[8] == '{' && f.header_len % 8 == 0 && f.data_start % 8 == 0,
              "header starts with '{', padded to a multiple of 8 (%llu)",
              (unsigned long long)f.header_len);
    size_t hl = (size_t)f.header_len;
    size_t sp = 0;
    while (sp < hl && f.buf[8 + hl - 1 - sp] == ' ')
        sp++;
    tu_assert(sp < 8 && f.buf[8 + hl - 1 - sp] == '}', "padding is %zu spaces after '}'", sp);
    int bad = 0;
    for (int i = 0; i < N; i++) {
        const lv_st_tensor *t = lv_st_find(&f, spec[i].name);
        if (t == NULL) {
            bad++;
            continue;
        }
        uint64_t ne = 1;
        for (int k = 0; k < spec[i].ndim; k++)
            ne *= (uint64_t)spec[i].shape[k];
        uint64_t nb = ne * lv_st_dtype_bits(spec[i].dt) / 8;
        bool same = t->dtype == spec[i].dt && t->ndim == spec[i].ndim && t->nelem == ne &&
                    t->nbytes == nb && memcmp(t->data, bufs[i], (size_t)nb) == 0;
        for (int k = 0; k < spec[i].ndim; k++)
            same = same && t->shape[k] == spec[i].shape[k];
        if (!same)
            printf("  differs: %s\n", spec[i].name);
        bad += !same;
    }
    tu_assert(bad == 0, "every tensor is bit-exact with its dtype and shape (%d differ)", bad);
    const lv_st_tensor *sc = lv_st_find(&f, "scalar");
    tu_assert(sc != NULL && sc->ndim == 0 && sc->nelem == 1 && sc->nbytes == 4,
              "a scalar has shape [] and one element");
    const lv_st_tensor *em = lv_st_find(&f, "empty");
    tu_assert(em != NULL && em->nelem == 0 && em->nbytes == 0, "a zero-element tensor");
    tu_assert(lv_st_find(&f, "nope") == NULL && lv_st_find(&f, "") == NULL,
              "find: absent names give NULL");

    /* Reference layout: descending dtype enum, then name, back to back, each aligned. */
    bool order = true, aligned = true;
    for (int i = 0; i < f.n_tensors; i++) {
        const lv_st_tensor *t = &f.tensors[i];
        if (i > 0) {
            const lv_st_tensor *p = &f.tensors[i - 1];
            order = order && (p->dtype > t->dtype ||
                              (p->dtype == t->dtype && strcmp(p->name, t->name) < 0)) &&
                    p->offset + p->nbytes == t->offset;
        }
        unsigned esz = lv_st_dtype_bits(t->dtype) / 8;
        aligned = aligned && (esz == 0 || t->offset % esz == 0);
    }
    tu_assert(order, "tensors laid out by descending dtype, then name, back to back");
    tu_assert(aligned, "every tensor is aligned to its element size in the file");

    tu_assert(f.n_meta == 3 && strcmp(f.meta[0].key, "format") == 0,
              "__metadata__ has format first and the 2 given keys (%d)", f.n_meta);
    const char *fmt = lv_st_meta_get(&f, "format");
    const char *note = lv_st_meta_get(&f, "note");
    tu_assert(fmt && strcmp(fmt, "pt") == 0 && note &&
                  strcmp(note, "caf\xc3\xa9 \"quoted\"\n") == 0 &&
                  lv_st_meta_get(&f, "absent") == NULL,
              "metadata round-trips, escapes included");
    lv_dtype ld;
    tu_assert(lv_st_tensor_lv_dtype(&f, lv_st_find(&f, "bf16.w"), &ld) == LV_OK && ld == LV_BF16,
              "BF16 has a lavinia dtype");
    rc = lv_st_tensor_lv_dtype(&f, lv_st_find(&f, "f64.acc"), &ld);
    tu_assert(rc == LV_ENOTSUP && strstr(lv_errmsg(), "f64.acc") && strstr(lv_errmsg(), path) &&
                  strstr(lv_errmsg(), "no lavinia dtype"),
              "F64 has none: %s", lv_errmsg());
    lv_st_close(&f);

    /* A given format replaces "pt"; overwriting an existing file works. */
    const char *meta2[] = { "format", "mlx", NULL };
    rc = lv_st_write(path, w, 2, meta2);
    tu_assert(rc == LV_OK && lv_st_open(&f, path) == LV_OK, "overwrite with format mlx");
    if (rc == LV_OK) {
        tu_assert(f.n_tensors == 2 && f.n_meta == 1 &&
                      strcmp(lv_st_meta_get(&f, "format"), "mlx") == 0,
                  "format is mlx, once");
        lv_st_close(&f);
    }
    /* No tensors at all. */
    rc = lv_st_write(tpath("none.safetensors"), NULL, 0, NULL);
    tu_assert(rc == LV_OK && lv_st_open(&f, tpath("none.safetensors")) == LV_OK &&
                  f.n_tensors == 0 && f.n_meta == 1, "a file with no tensors");
    if (rc == LV_OK)
        lv_st_close(&f);
out:
    for (int i = 0; i < N; i++)
        free(bufs[i]);
}

/* ----------------------------------------------------------------------------------------
 * Python's layout, byte by byte
 */

/* What safetensors.torch.save_file({"weight": [[1,2],[3,4]] float32, "bias": [0.5,-1] float16,
 * "step": 7 int64}, path, metadata={"format": "pt"}) writes: u64 N = 208, the compact JSON
 * with __metadata__ first and the tensors in data order (I64 > F32 > F16 in the dtype enum),
 * padded with 2 spaces to 208 bytes, then 8 + 16 + 4 bytes of data. */
static const char python_header[] =
    "{\"__metadata__\":{\"format\":\"pt\"},"
    "\"step\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[0,8]},"
    "\"weight\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[8,24]},"
    "\"bias\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[24,28]}}"
    "  ";
static const uint8_t python_len[8] = { 0xd0, 0, 0, 0, 0, 0, 0, 0 };   /* 208 */
static const uint8_t python_data[28] = {
    0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,       /* step: int64 7 */
    0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0x40,       /* weight: 1.0f, 2.0f */
    0x00, 0x00, 0x40, 0x40, 0x00, 0x00, 0x80, 0x40,       /*         3.0f, 4.0f */
    0x00, 0x38, 0x00, 0xbc,                               /* bias: half 0.5, -1.0 */
};

static void test_python_layout(void)
{
    uint8_t file[8 + 208 + 28];
    tu_assert(sizeof python_header - 1 == 208, "the hand-made header is 208 bytes");
    memcpy(file, python_len, 8);
    memcpy(file + 8, python_header, 208);
    memcpy(file + 216, python_data, 28);
    const char *path = tpath("python.safetensors");
    write_file(path, file, sizeof file);

    lv_st_file f;
    int rc = lv_st_open(&f, path);
    tu_assert(rc == LV_OK, "open Python's layout: %s", rc ? lv_errmsg() : "ok");
    if (rc != LV_OK)
        return;
    const lv_st_tensor *w = lv_st_find(&f, "weight"), *b = lv_st_find(&f, "bias"),
                       *s = lv_st_find(&f, "step");
    float wv[4];
    int64_t sv;
    uint16_t bv[2];
    bool ok = w && b && s && w->dtype == LV_ST_F32 && w->ndim == 2 && w->shape[0] == 2 &&
              w->shape[1] == 2 && w->offset == 224 && b->dtype == LV_ST_F16 && b->nelem == 2 &&
              s->dtype == LV_ST_I64 && s->ndim == 0 && s->offset == 216;
    if (ok) {
        memcpy(wv, w->data, 16);
        memcpy(&sv, s->data, 8);
        memcpy(bv, b->data, 4);
        ok = wv[0] == 1 && wv[1] == 2 && wv[2] == 3 && wv[3] == 4 && sv == 7 &&
             lv_f16_to_f32(bv[0]) == 0.5f && lv_f16_to_f32(bv[1]) == -1.0f;
    }
    tu_assert(ok, "weight, bias and step have Python's dtypes, shapes, offsets and values");
    tu_assert(f.n_meta == 1 && strcmp(lv_st_meta_get(&f, "format"), "pt") == 0,
              "format pt");
    tu_assert(f.tensors[0].name == s->name && f.tensors[2].name == b->name,
              "tensors listed in data order");
    lv_st_close(&f);

    /* Our writer, given the same tensors, writes the same bytes. */
    lv_st_wtensor wt[3] = {
        { .name = "weight", .dtype = LV_ST_F32, .ndim = 2, .shape = { 2, 2 },
          .data = python_data + 8 },
        { .name = "bias", .dtype = LV_ST_F16, .ndim = 1, .shape = { 2 },
          .data = python_data + 24 },
        { .name = "step", .dtype = LV_ST_I64, .ndim = 0, .data = python_data },
    };
    const char *ours = tpath("ours.safetensors");
    rc = lv_st_write(ours, wt, 3, NULL);
    size_t n = 0;
    uint8_t *got = rc == LV_OK ? read_file(ours, &n) : NULL;
    tu_assert(got && n == sizeof file && memcmp(got, file, n) == 0,
              "lv_st_write reproduces Python's file byte for byte (%zu bytes)", n);
    free(got);

    /* Other writers: JSON whitespace before and after the object, no __metadata__, and a
     * tensor at an odd offset (unaligned: read through memcpy). */
    const uint8_t odd[7] = { 1, 2, 3, 0x80, 0x3f, 0x00, 0x40 };
    size_t len;
    uint8_t *bytes = st_bytes(" \t\r\n{\"u\":{\"dtype\":\"U8\",\"shape\":[3],"
                              "\"data_offsets\":[0,3]},\"h\":{\"data_offsets\":[3,7],"
                              "\"shape\":[2],\"dtype\":\"BF16\"}}\n\t ", 0, odd, sizeof odd, &len);
    rc = lv_st_open_mem(&f, bytes, len, "ws.safetensors");
    tu_assert(rc == LV_OK, "leading and trailing JSON whitespace, keys in any order: %s",
              rc ? lv_errmsg() : "ok");
    if (rc == LV_OK) {
        const lv_st_tensor *h = lv_st_find(&f, "h");
        uint16_t hv[2];
        if (h != NULL)
            memcpy(hv, h->data, 4);
        tu_assert(f.n_meta == 0 && h && h->offset % 2 == 1 && lv_bf16_to_f32(hv[0]) == 1.0f &&
                      lv_bf16_to_f32(hv[1]) == 2.0f,
                  "no metadata; an unaligned BF16 tensor reads right");
        lv_st_close(&f);
    }
    free(bytes);
}

/* ----------------------------------------------------------------------------------------
 * Hostile files
 */

static void test_hostile(void)
{
    uint8_t data[64] = { 0 };
    size_t n;

    /* 1. too small for the length */
    write_file(tpath("empty.safetensors"), "", 0);
    expect_fail("0-byte file", tpath("empty.safetensors"), "empty");
    write_file(tpath("seven.safetensors"), "\x02\0\0\0\0\0\0", 7);
    expect_fail("7-byte file", tpath("seven.safetensors"), "too small");

    /* 2. header length over the limit (100,000,008 = 0x05f5e108) */
    write_file(tpath("huge.safetensors"), "\x08\xe1\xf5\x05\0\0\0\0{}", 10);
    expect_fail("header length > 100 MB", tpath("huge.safetensors"), "limit");
    write_file(tpath("maxlen.safetensors"), "\xff\xff\xff\xff\xff\xff\xff\xff{}", 10);
    expect_fail("header length 2^64-1", tpath("maxlen.safetensors"), "limit");

    /* 3. header length past the end; a header cut short */
    write_file(tpath("past.safetensors"), "\x64\0\0\0\0\0\0\0{}      ", 16);
    expect_fail("header length past the end", tpath("past.safetensors"), "past the end");
    uint8_t *b = st_bytes("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
                          ' ', data, 8, &n);
    write_file(tpath("truncated.safetensors"), b, 30);
    expect_fail("truncated header", tpath("truncated.safetensors"), "past the end");
    free(b);

    /* 4. UTF-8, JSON, entries */
    expect_fail_hdr("invalid-json", "{\"a\":{\"dtype\":\"F32\",", NULL, 0, "not valid JSON");
    expect_fail_hdr("not-object", "[1, 2]", NULL, 0, "not a JSON object");
    expect_fail_hdr("bad-utf8-name",
                    "{\"w\xff\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", data,
                    8, "UTF-8");
    expect_fail_hdr("overlong-utf8",
                    "{\"\xc0\xaf\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", data,
                    8, "UTF-8");
    expect_fail_hdr("surrogate-utf8",
                    "{\"\xed\xa0\x80\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
                    data, 8, "UTF-8");
    expect_fail_hdr("escaped-lone-surrogate",
                    "{\"\\ud800\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
                    data, 8, "not valid JSON");
    expect_fail_hdr("unknown-dtype",
                    "{\"w\":{\"dtype\":\"F33\",\"shape\":[2],\"data_offsets\":[0,8]}}", data, 8,
                    "unknown dtype");
    expect_fail_hdr("lowercase-dtype",
                    "{\"w\":{\"dtype\":\"f32\",\"shape\":[2],\"data_offsets\":[0,8]}}", data, 8,
                    "unknown dtype");
    expect_fail_hdr("extra-key",
                    "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"x\":1}}",
                    data, 8, "unexpected key");
    expect_fail_hdr("missing-key", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2]}}", data, 8,
                    "missing key 'data_offsets'");
    expect_fail_hdr("negative-dim",
                    "{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,8]}}", data, 8,
                    "negative");
    expect_fail_hdr("float-dim",
                    "{\"w\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", data, 8,
                    "non-integer");
    expect_fail_hdr("exponent-dim",
                    "{\"w\":{\"dtype\":\"F32\",\"shape\":[2e0],\"data_offsets\":[0,8]}}", data, 8,
                    "non-integer");
    expect_fail_hdr("string-dim",
                    "{\"w\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", data,
                    8, "a string");
    expect_fail_hdr("dim-2^64",
                    "{\"w\":{\"dtype\":\"U8\",\"shape\":[18446744073709551616],"
                    "\"data_offsets\":[0,8]}}", data, 8, "too big");
    expect_fail_hdr("nine-dims",
                    "{\"w\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,8],"
                    "\"data_offsets\":[0,8]}}", data, 8, "9 dimensions");
    expect_fail_hdr("negative-zero",
                    "{\"w\":{\"dtype\":\"U8\",\"shape\":[-0],\"data_offsets\":[0,0]}}", data, 0,
                    "-0");
    expect_fail_hdr("negative-offset",
                    "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", data, 8,
                    "negative");
    expect_fail_hdr("three-offsets",
                    "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4,8]}}", data,
                    8, "data_offsets");
    expect_fail_hdr("duplicate-name",
                    "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                    "\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", data, 16,
                    "duplicate");
    expect_fail_hdr("duplicate-escaped",
                    "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                    "\"\\u0077\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
                    data, 16, "duplicate");
    expect_fail_hdr("duplicate-metadata",
                    "{\"__metadata__\":{\"format\":\"pt\"},\"__metadata__\":{\"format\":\"pt\"}}",
                    NULL, 0, "duplicate");
    expect_fail_hdr("metadata-number", "{\"__metadata__\":{\"format\":\"pt\",\"step\":3}}",
                    NULL, 0, "only strings");
    expect_fail_hdr("metadata-not-object", "{\"__metadata__\":[\"pt\"]}", NULL, 0,
                    "not an object");
    expect_fail_hdr("entry-not-object", "{\"w\":[0,8]}", data, 8, "not an object");

    /* 5-7. layout */
    expect_fail_hdr("offset-out-of-bounds",
                    "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", data, 8,
                    "past the data size");
    expect_fail_hdr("overlap",
                    "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                    "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", data, 12,
                    "overlap");
    expect_fail_hdr("gap",
                    "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                    "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}", data, 20,
                    "gap");
    expect_fail_hdr("gap-at-start",
                    "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", data, 12,
                    "gap");
    expect_fail_hdr("end-before-begin",
                    "{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]},"
                    "\"c\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[8,0]}}", data, 8,
                    "end before");
    expect_fail_hdr("trailing-bytes",
                    "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", data, 9,
                    "trailing");
    expect_fail_hdr("size-mismatch",
                    "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", data, 8,
                    "needs 12");
    expect_fail_hdr("elements-overflow",
                    "{\"a\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296],"
                    "\"data_offsets\":[0,8]}}", data, 8, "overflow");
    expect_fail_hdr("bytes-overflow",
                    "{\"a\":{\"dtype\":\"F32\",\"shape\":[2305843009213693952,2],"
                    "\"data_offsets\":[0,8]}}", data, 8, "overflow");
    expect_fail_hdr("f4-odd-count",
                    "{\"a\":{\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[0,2]}}", data, 2,
                    "whole number of bytes");
    expect_fail_hdr("zero-size-at-end-with-trailing",
                    "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}", data, 1,
                    "trailing");

    /* Accepted edge cases: "-0" inside a string, null metadata (the reference's Option). */
    lv_st_file ok;
    b = st_bytes("{\"__metadata__\":null,\"-0\":{\"dtype\":\"U8\",\"shape\":[0],"
                 "\"data_offsets\":[0,0]}}", ' ', NULL, 0, &n);
    int rc0 = lv_st_open_mem(&ok, b, n, "edge.safetensors");
    tu_assert(rc0 == LV_OK && ok.n_meta == 0 && lv_st_find(&ok, "-0") != NULL,
              "a tensor named \"-0\" and \"__metadata__\": null are fine: %s",
              rc0 ? lv_errmsg() : "ok");
    if (rc0 == LV_OK)
        lv_st_close(&ok);
    free(b);

    /* Not files */
    expect_fail("a directory", tmpdir, "directory");
    lv_st_file f;
    int rc = lv_st_open(&f, tpath("does-not-exist.safetensors"));
    tu_assert(rc != LV_OK && strstr(lv_errmsg(), "does-not-exist") != NULL,
              "a missing file: %s", lv_errmsg());
}

/* NUL padding is what some broken writers emit; the reference refuses it (JSON error) and so
 * do we. Checked separately because the header literal above stops at the first NUL. */
static void test_nul_padding(void)
{
    uint8_t file[8 + 8];
    memcpy(file, "\x08\0\0\0\0\0\0\0{}\0\0\0\0\0\0", 16);
    const char *p = tpath("nulpad.safetensors");
    write_file(p, file, 16);
    expect_fail("NUL padding", p, "not valid JSON");
    memcpy(file, "\x08\0\0\0\0\0\0\0{}      ", 16);
    write_file(p, file, 16);
    lv_st_file f;
    int rc = lv_st_open(&f, p);
    tu_assert(rc == LV_OK && f.n_tensors == 0, "'{}' padded with spaces is an empty file");
    if (rc == LV_OK)
        lv_st_close(&f);
}

/* Writer refusals leave the file at PATH as it was and no temporary file behind. */
static void test_write_refusals(void)
{
    float x[2] = { 1, 2 };
    const char *path = tpath("keep.safetensors");
    lv_st_wtensor good = { .name = "x", .dtype = LV_ST_F32, .ndim = 1, .shape = { 2 },
                           .data = x };
    int rc = lv_st_write(path, &good, 1, NULL);
    size_t n0 = 0, n1 = 0;
    uint8_t *before = read_file(path, &n0);

    lv_st_wtensor meta_name = good;
    meta_name.name = "__metadata__";
    rc = lv_st_write(path, &meta_name, 1, NULL);
    tu_assert(rc != LV_OK && strstr(lv_errmsg(), "__metadata__") && strstr(lv_errmsg(), path) &&
                  strstr(lv_errmsg(), "reserved"),
              "write: a tensor named __metadata__ is refused: %s", lv_errmsg());

    lv_st_wtensor dup[2] = { good, good };
    dup[1].dtype = LV_ST_U8;
    dup[1].shape[0] = 8;
    rc = lv_st_write(path, dup, 2, NULL);
    tu_assert(rc != LV_OK && strstr(lv_errmsg(), "duplicate"),
              "write: duplicate names are refused: %s", lv_errmsg());

    lv_st_wtensor neg = good;
    neg.shape[0] = -2;
    rc = lv_st_write(path, &neg, 1, NULL);
    tu_assert(rc != LV_OK && strstr(lv_errmsg(), "negative"),
              "write: a negative dimension is refused: %s", lv_errmsg());

    lv_st_wtensor big = good;
    big.ndim = 2;
    big.shape[0] = INT64_MAX;
    big.shape[1] = 4;
    rc = lv_st_write(path, &big, 1, NULL);
    tu_assert(rc != LV_OK && strstr(lv_errmsg(), "overflow"),
              "write: a size past 64 bits is refused: %s", lv_errmsg());

    lv_st_wtensor f4 = good;
    f4.dtype = LV_ST_F4;
    f4.shape[0] = 3;
    rc = lv_st_write(path, &f4, 1, NULL);
    tu_assert(rc != LV_OK && strstr(lv_errmsg(), "whole number"),
              "write: 3 F4 values (12 bits) are refused: %s", lv_errmsg());

    const char *bad_utf8[] = { "key", "\xff", NULL };
    rc = lv_st_write(path, &good, 1, bad_utf8);
    tu_assert(rc != LV_OK && strstr(lv_errmsg(), "UTF-8"),
              "write: non-UTF-8 metadata is refused: %s", lv_errmsg());
    const char *odd_meta[] = { "key", NULL };
    rc = lv_st_write(path, &good, 1, odd_meta);
    tu_assert(rc != LV_OK && strstr(lv_errmsg(), "no value"),
              "write: a key without a value is refused: %s", lv_errmsg());
    const char *dup_meta[] = { "k", "1", "k", "2", NULL };
    rc = lv_st_write(path, &good, 1, dup_meta);
    tu_assert(rc != LV_OK && strstr(lv_errmsg(), "duplicate metadata"),
              "write: a duplicate metadata key is refused: %s", lv_errmsg());

    rc = lv_st_write(tpath("no-such-dir/x.safetensors"), &good, 1, NULL);
    tu_assert(rc != LV_OK && strstr(lv_errmsg(), "no-such-dir"),
              "write into a missing directory fails: %s", lv_errmsg());

    uint8_t *after = read_file(path, &n1);
    tu_assert(before && after && n0 == n1 && memcmp(before, after, n0) == 0,
              "the refused writes left the existing file as it was");
    tu_assert(no_temp_files(), "and no temporary file behind");
    free(before);
    free(after);
}

/* ----------------------------------------------------------------------------------------
 * Sharded directories
 */

static const char *mkdir_t(const char *name)
{
    const char *p = tpath(name);
    mkdir(p, 0755);
    return p;
}

static void write_shard(const char *dir, const char *file, const char *const *names, int n,
                        const float *vals)
{
    char path[4096];
    lv_st_wtensor w[8];
    for (int i = 0; i < n; i++)
        w[i] = (lv_st_wtensor){ .name = names[i], .dtype = LV_ST_F32, .ndim = 1,
                                .shape = { 2 }, .data = vals + 2 * i };
    snprintf(path, sizeof path, "%s/%s", dir, file);
    if (lv_st_write(path, w, n, NULL) != LV_OK) {
        printf("%s\n", lv_errmsg());
        exit(1);
    }
}

static void write_text(const char *dir, const char *file, const char *text)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    write_file(path, text, strlen(text));
}

static void expect_set_fail(const char *label, const char *dir, const char *word)
{
    lv_st_set s;
    lv_error_clear();
    int rc = lv_st_set_open_dir(&s, dir);
    const char *m = lv_errmsg();
    tu_assert(rc != LV_OK && strstr(m, dir) != NULL && strstr(m, word) != NULL &&
                  strchr(m, '\n') == NULL,
              "%s: the open fails naming the directory's file and '%s': %s", label, word, m);
    if (rc == LV_OK)
        lv_st_set_close(&s);
}

static const char *const idx_good =
    "{\"metadata\":{\"total_size\":24},\"weight_map\":{"
    "\"model.embed.weight\":\"model-00001-of-00002.safetensors\","
    "\"model.norm.weight\":\"model-00001-of-00002.safetensors\","
    "\"lm_head.weight\":\"model-00002-of-00002.safetensors\"}}";

static void test_sharded(void)
{
    const float v[6] = { 1, 2, 3, 4, 5, 6 };
    const char *s1[] = { "model.embed.weight", "model.norm.weight" };
    const char *s2[] = { "lm_head.weight" };

    const char *good = mkdir_t("hf-good");
    write_shard(good, "model-00001-of-00002.safetensors", s1, 2, v);
    write_shard(good, "model-00002-of-00002.safetensors", s2, 1, v + 4);
    write_text(good, "model.safetensors.index.json", idx_good);
    lv_st_set s;
    int rc = lv_st_set_open_dir(&s, good);
    tu_assert(rc == LV_OK, "two-shard directory opens: %s", rc ? lv_errmsg() : "ok");
    if (rc == LV_OK) {
        tu_assert(s.n_files == 2 && s.n_tensors == 3 &&
                      strcmp(s.entries[0].t->name, "lm_head.weight") == 0 &&
                      strcmp(s.entries[1].t->name, "model.embed.weight") == 0 &&
                      strcmp(s.entries[2].t->name, "model.norm.weight") == 0,
                  "3 tensors from 2 files, sorted by name");
        const lv_st_tensor *t = lv_st_set_find(&s, "lm_head.weight");
        const lv_st_set_entry *e = lv_st_set_find_entry(&s, "model.norm.weight");
        float got[2] = { 0, 0 }, got2[2] = { 0, 0 };
        if (t)
            memcpy(got, t->data, 8);
        if (e)
            memcpy(got2, e->t->data, 8);
        tu_assert(t && got[0] == 5 && got[1] == 6 && e && got2[0] == 3 && got2[1] == 4 &&
                      strstr(e->file->name, "model-00001-of-00002") != NULL,
                  "find gives each tensor's bytes and file");
        tu_assert(lv_st_set_find(&s, "absent") == NULL, "find: absent gives NULL");
        lv_st_set_close(&s);
    }

    const char *single = mkdir_t("hf-single");
    write_shard(single, "model.safetensors", s1, 2, v);
    rc = lv_st_set_open_dir(&s, single);
    tu_assert(rc == LV_OK && s.n_files == 1 && s.n_tensors == 2 &&
                  lv_st_set_find(&s, "model.norm.weight") != NULL,
              "a directory with model.safetensors: %s", rc ? lv_errmsg() : "ok");
    if (rc == LV_OK)
        lv_st_set_close(&s);

    expect_set_fail("empty directory", mkdir_t("hf-empty"), "model.safetensors");

    const char *missing = mkdir_t("hf-missing");
    write_shard(missing, "model-00001-of-00002.safetensors", s1, 2, v);
    write_text(missing, "model.safetensors.index.json", idx_good);
    expect_set_fail("index naming a missing shard", missing, "model-00002-of-00002");
    expect_set_fail("index naming a missing shard", missing, "missing");

    static const char *const evil[] = {
        "../model-00001-of-00002.safetensors", "/etc/passwd", "sub/x.safetensors",
        "a\\\\b.safetensors", "..", "",
    };
    for (size_t i = 0; i < sizeof evil / sizeof evil[0]; i++) {
        char label[64], idx[512];
        snprintf(label, sizeof label, "hf-evil-%zu", i);
        const char *d = mkdir_t(label);
        write_shard(d, "model-00001-of-00002.safetensors", s1, 2, v);
        snprintf(idx, sizeof idx, "{\"weight_map\":{\"model.embed.weight\":\"%s\"}}", evil[i]);
        write_text(d, "model.safetensors.index.json", idx);
        snprintf(label, sizeof label, "shard name '%s'", evil[i]);
        expect_set_fail(label, d, "traversal");
    }

    const char *misplaced = mkdir_t("hf-misplaced");
    write_shard(misplaced, "model-00001-of-00002.safetensors", s1, 2, v);
    write_shard(misplaced, "model-00002-of-00002.safetensors", s2, 1, v + 4);
    write_text(misplaced, "model.safetensors.index.json",
               "{\"weight_map\":{\"model.embed.weight\":\"model-00001-of-00002.safetensors\","
               "\"lm_head.weight\":\"model-00001-of-00002.safetensors\"}}");
    expect_set_fail("tensor named in the index but missing in its shard", misplaced,
                    "does not hold it");

    const char *twice = mkdir_t("hf-twice");
    write_shard(twice, "model-00001-of-00002.safetensors", s1, 2, v);
    write_shard(twice, "model-00002-of-00002.safetensors", s1 + 1, 1, v + 4);
    write_text(twice, "model.safetensors.index.json",
               "{\"weight_map\":{\"model.embed.weight\":\"model-00001-of-00002.safetensors\","
               "\"model.norm.weight\":\"model-00002-of-00002.safetensors\"}}");
    expect_set_fail("a tensor in two shards", twice, "two shards");

    const char *badjson = mkdir_t("hf-badjson");
    write_text(badjson, "model.safetensors.index.json", "{\"weight_map\":{\"a\":");
    expect_set_fail("index that is not JSON", badjson, "not valid JSON");
    const char *nomap = mkdir_t("hf-nomap");
    write_text(nomap, "model.safetensors.index.json", "{\"metadata\":{}}");
    expect_set_fail("index without weight_map", nomap, "weight_map");
    const char *numshard = mkdir_t("hf-numshard");
    write_text(numshard, "model.safetensors.index.json", "{\"weight_map\":{\"a\":1}}");
    expect_set_fail("shard that is a number", numshard, "not a shard file name");

    /* The index is read whole: more than 64 MB is refused before parsing (a sparse file). */
    const char *bigidx = mkdir_t("hf-bigidx");
    write_text(bigidx, "model.safetensors.index.json", "{");
    char bp[4096];
    snprintf(bp, sizeof bp, "%s/model.safetensors.index.json", bigidx);
    if (truncate(bp, (64 << 20) + 1) == 0)
        expect_set_fail("index over 64 MB", bigidx, "limit");

    const char *badshard = mkdir_t("hf-badshard");
    write_text(badshard, "model.safetensors", "not safetensors at all");
    expect_set_fail("a broken model.safetensors", badshard, "model.safetensors");

    rc = lv_st_set_open_dir(&s, tpath("round.safetensors"));
    tu_assert(rc != LV_OK && strstr(lv_errmsg(), "not a directory"),
              "a file is not a model directory: %s", lv_errmsg());
}

int main(int argc, char **argv)
{
    tu_init(argc, argv, "test-safetensors");
    make_tmpdir();
    test_dtypes();
    test_round_trip();
    test_python_layout();
    test_hostile();
    test_nul_padding();
    test_write_refusals();
    test_sharded();
    remove_tree(tmpdir);
    return tu_finish();
}
