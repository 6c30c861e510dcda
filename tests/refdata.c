/*
 * refdata.c: the reader of tests/reference/NAME.bin (refdata.h).
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "refdata.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#define REF_MAGIC     "LVREF\0\0\0"
#define REF_VERSION   1u
#define REF_MAX_BYTES (16u << 20)
#define REF_MAX_DIM   65536u

/* ---------------------------------------------------------------------------------------- */
/* reference files */

/* A bounds-checked reader over the file's bytes. */
struct cursor {
    const unsigned char *p;
    size_t len;
    size_t off;
};


/* Print "PATH: problem" and how to regenerate; record a failed check. */
bool ref_fail(const struct ref_file *rf, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s: %s\n  regenerate it: %s\n", rf->path, msg, rf->hint);
    tu_assert(false, "%s: %s", rf->path, msg);
    return false;
}

static bool rd_u32(struct cursor *c, uint32_t *v)
{
    if (c->len - c->off < 4)
        return false;
    const unsigned char *b = c->p + c->off;
    *v = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
    c->off += 4;
    return true;
}

/* float64 little-endian, whatever the host's byte order; the caller has checked that 8 bytes
 * remain. */
static double rd_f64(struct cursor *c)
{
    const unsigned char *b = c->p + c->off;
    uint64_t u = 0;
    double d;

    for (int i = 7; i >= 0; i--)
        u = u << 8 | b[i];
    memcpy(&d, &u, sizeof d);
    c->off += 8;
    return d;
}

/* Read the whole file into a malloc'ed buffer of at most REF_MAX_BYTES. */
static unsigned char *slurp(struct ref_file *rf, size_t *len)
{
    FILE *f = fopen(rf->path, "rb");
    unsigned char *buf = NULL;
    long size;

    if (!f) {
        ref_fail(rf, "cannot open: %s", strerror(errno));
        return NULL;
    }
    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        ref_fail(rf, "cannot find its size");
        goto fail;
    }
    if ((unsigned long)size > REF_MAX_BYTES) {
        ref_fail(rf, "%ld bytes, more than the %u this test accepts", size, REF_MAX_BYTES);
        goto fail;
    }
    buf = malloc(size > 0 ? (size_t)size : 1);
    if (!buf) {
        ref_fail(rf, "out of memory for %ld bytes", size);
        goto fail;
    }
    if (fread(buf, 1, (size_t)size, f) != (size_t)size) {
        ref_fail(rf, "short read");
        free(buf);
        buf = NULL;
        goto fail;
    }
    *len = (size_t)size;
fail:
    fclose(f);
    return buf;
}

/* Parse buf into rf; every field is checked against the bytes left. */
static bool ref_parse(struct ref_file *rf, const unsigned char *buf, size_t len)
{
    struct cursor c = { .p = buf, .len = len, .off = 0 };
    uint32_t version, count;
    size_t used = 0;

    if (len < 16 || memcmp(buf, REF_MAGIC, 8) != 0)
        return ref_fail(rf, "not a reference file (bad magic)");
    c.off = 8;
    rd_u32(&c, &version);
    rd_u32(&c, &count);
    if (version != REF_VERSION)
        return ref_fail(rf, "version %u, this test reads version %u", version, REF_VERSION);
    if (count == 0 || count > REF_MAX_COUNT)
        return ref_fail(rf, "%u tensors, expected 1..%d", count, REF_MAX_COUNT);

    /* every value takes 8 bytes of the file, so len / 8 bounds the total */
    rf->values = malloc((len / 8 + 1) * sizeof(double));
    if (!rf->values)
        return ref_fail(rf, "out of memory");

    for (uint32_t i = 0; i < count; i++) {
        struct ref_tensor *t = &rf->t[i];
        uint32_t name_len, ndim, dim;

        if (!rd_u32(&c, &name_len) || name_len == 0 || name_len > REF_MAX_NAME
            || c.len - c.off < name_len)
            return ref_fail(rf, "tensor %u: bad name length at offset %zu", i, c.off);
        for (uint32_t j = 0; j < name_len; j++) {
            unsigned char ch = c.p[c.off + j];
            if (ch < 0x21 || ch > 0x7e)
                return ref_fail(rf, "tensor %u: name byte 0x%02x is not printable", i, ch);
            t->name[j] = (char)ch;
        }
        t->name[name_len] = '\0';
        c.off += name_len;
        for (uint32_t j = 0; j < i; j++)
            if (strcmp(rf->t[j].name, t->name) == 0)
                return ref_fail(rf, "tensor '%s' appears twice", t->name);

        if (!rd_u32(&c, &ndim) || ndim > LV_MAX_DIMS)
            return ref_fail(rf, "tensor '%s': bad ndim", t->name);
        t->ndim = (int)ndim;
        t->n = 1;
        for (int d = 0; d < LV_MAX_DIMS; d++)
            t->shape[d] = 1;
        for (uint32_t d = 0; d < ndim; d++) {
            /* dim <= 2^16 and n <= len / 8 <= 2^17 before the product: no overflow */
            if (!rd_u32(&c, &dim))
                return ref_fail(rf, "tensor '%s': shape runs past the end of the file",
                                t->name);
            if (dim == 0 || dim > REF_MAX_DIM)
                return ref_fail(rf, "tensor '%s': dimension %u is %u, expected 1..%u",
                                t->name, d, dim, REF_MAX_DIM);
            t->shape[d] = dim;
            t->n *= dim;
            if ((uint64_t)t->n > (c.len - c.off) / 8)
                return ref_fail(rf, "tensor '%s': data runs past the end of the file",
                                t->name);
        }
        if ((uint64_t)t->n > (c.len - c.off) / 8)
            return ref_fail(rf, "tensor '%s': data runs past the end of the file", t->name);

        double *v = rf->values + used;
        for (int64_t j = 0; j < t->n; j++) {
            v[j] = rd_f64(&c);
            if (!isfinite(v[j]))
                return ref_fail(rf, "tensor '%s': element %lld is not finite", t->name,
                                (long long)j);
        }
        t->data = v;
        used += (size_t)t->n;
    }
    if (c.off != c.len)
        return ref_fail(rf, "%zu bytes after the last tensor", c.len - c.off);
    rf->count = (int)count;
    return true;
}

void ref_done(struct ref_file *rf)
{
    free(rf->values);
    rf->values = NULL;
    rf->count = 0;
}

/* Load tests/reference/NAME.bin under $LV_TOP_SRCDIR (or "."). */
bool ref_load(struct ref_file *rf, const char *name, const char *hint)
{
    const char *top = getenv("LV_TOP_SRCDIR");
    unsigned char *buf;
    size_t len = 0;
    int n;
    bool ok;

    memset(rf, 0, sizeof *rf);
    rf->hint = hint;
    n = snprintf(rf->path, sizeof rf->path, "%s/tests/reference/%s.bin",
                 top && *top ? top : ".", name);
    if (n < 0 || (size_t)n >= sizeof rf->path)
        return ref_fail(rf, "path too long");
    buf = slurp(rf, &len);
    if (!buf)
        return false;
    ok = ref_parse(rf, buf, len);
    free(buf);
    if (!ok)
        ref_done(rf);
    return ok;
}

/* The tensor NAME with exactly this shape, or NULL after a failed check saying why. */
const struct ref_tensor *ref_get(const struct ref_file *rf, const char *name, int ndim,
                                        const int64_t *shape)
{
    for (int i = 0; i < rf->count; i++) {
        const struct ref_tensor *t = &rf->t[i];
        if (strcmp(t->name, name) != 0)
            continue;
        bool same = t->ndim == ndim;
        for (int d = 0; same && d < ndim; d++)
            same = t->shape[d] == shape[d];
        if (!same) {
            ref_fail(rf, "tensor '%s' has another shape than this test builds (stale file?)",
                     name);
            return NULL;
        }
        return t;
    }
    ref_fail(rf, "no tensor '%s' (stale file?)", name);
    return NULL;
}

