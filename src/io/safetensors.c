/*
 * safetensors.c: the safetensors reader and writer, and Hugging Face sharded directories.
 *
 * A safetensors file (huggingface/safetensors, README.md and safetensors/src/tensor.rs;
 * FORMATS.md §1) is:
 *
 *     offset 0    u64, little-endian   N: byte length of the JSON header, padding included
 *     offset 8    N bytes              the header: UTF-8 JSON, one object (below), optionally
 *                                      surrounded by JSON whitespace (the reference writer
 *                                      pads with spaces so that N is a multiple of 8)
 *     offset 8+N  the data region      every tensor's bytes, back to back; it ends exactly at
 *                                      the end of the file
 *
 * The header object maps each tensor name to
 *
 *     { "dtype": "F32", "shape": [4096, 11008], "data_offsets": [BEGIN, END] }
 *
 * where dtype is one of the strings of lv_st_dtype, shape lists non-negative integers in
 * PyTorch order ([] is a scalar, one element), and BEGIN and END (one past the last byte)
 * count from the start of the data region. The bytes are little-endian, row-major. One
 * optional key "__metadata__" maps to an object of string values ({"format":"pt"}).
 *
 * The reader enforces the reference's checks in the reference's order (FORMATS.md §1.3):
 *   1. the file holds at least the 8-byte length;
 *   2. N <= LV_ST_MAX_HEADER;
 *   3. 8 + N <= file size;
 *   4. the header is valid UTF-8, then valid JSON with no duplicate keys (jansson compares
 *      keys after unescaping, so "a" and "\u0061" are duplicates), a top-level object whose
 *      tensor entries have exactly the three keys above (we reject extra keys, as the JSON
 *      schema's additionalProperties:false does; serde would ignore them), a known dtype and
 *      non-negative integer shape and offsets (negatives, -0, fractions and exponents
 *      refused); __metadata__ is an object of strings (or null, read as absent, as the
 *      reference's Option does), and no tensor can be named __metadata__;
 *   5. sorted by (BEGIN, END), the tensors tile the data region from 0 without holes or
 *      overlaps;
 *   6. product(shape) * bits fits in 64 bits, is a whole number of bytes, and equals
 *      (END - BEGIN) * 8; END lies inside the data region;
 *   7. the last END is the data region's size: no trailing bytes.
 * Integers go through jansson's json_int_t (long long), so values of 2^63 and more fail as
 * "too big integer" in step 4; the reference accepts them there and fails later at step 5-7,
 * which no real file can pass either.
 *
 * The writer follows the reference writer: "__metadata__" first (with "format":"pt"), then
 * the tensors sorted by descending dtype enum and then by name, laid out back to back in
 * that order, the header padded with spaces to a multiple of 8 so that the data region is
 * 8-aligned and every tensor sits aligned to its element size.
 *
 * A Hugging Face directory holds model.safetensors, or model.safetensors.index.json
 * ({"metadata": {"total_size": N}, "weight_map": {"tensor name": "shard file name", ...}})
 * and the shards it names; see lv_st_set_open_dir.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "io/safetensors.h"
#include "io/fileutil.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "lavinia/error.h"

/* The largest header we read or write: the reference's MAX_HEADER_SIZE (100 MB), which a
 * 7B model's few hundred tensors never come near. */
#define LV_ST_MAX_HEADER 100000000u
/* The largest model.safetensors.index.json we read: a weight_map of a few thousand names is
 * well under 1 MB; 64 MB bounds what a hostile index can make jansson allocate. */
#define LV_ST_MAX_INDEX (64u << 20)
/* Longest shard file name accepted in an index (NAME_MAX of common file systems). */
#define LV_ST_MAX_SHARD_NAME 255

/* ----------------------------------------------------------------------------------------
 * dtypes
 */

static const struct {
    const char *name;
    unsigned bits;
    int lv;                     /* lv_dtype, or -1 */
} dtype_table[] = {
    [LV_ST_BOOL]        = { .name = "BOOL",        .bits = 8,  .lv = -1 },
    [LV_ST_F4]          = { .name = "F4",          .bits = 4,  .lv = -1 },
    [LV_ST_F6_E2M3]     = { .name = "F6_E2M3",     .bits = 6,  .lv = -1 },
    [LV_ST_F6_E3M2]     = { .name = "F6_E3M2",     .bits = 6,  .lv = -1 },
    [LV_ST_U8]          = { .name = "U8",          .bits = 8,  .lv = -1 },
    [LV_ST_I8]          = { .name = "I8",          .bits = 8,  .lv = -1 },
    [LV_ST_F8_E5M2]     = { .name = "F8_E5M2",     .bits = 8,  .lv = -1 },
    [LV_ST_F8_E4M3]     = { .name = "F8_E4M3",     .bits = 8,  .lv = -1 },
    [LV_ST_F8_E8M0]     = { .name = "F8_E8M0",     .bits = 8,  .lv = -1 },
    [LV_ST_F8_E4M3FNUZ] = { .name = "F8_E4M3FNUZ", .bits = 8,  .lv = -1 },
    [LV_ST_F8_E5M2FNUZ] = { .name = "F8_E5M2FNUZ", .bits = 8,  .lv = -1 },
    [LV_ST_I16]         = { .name = "I16",         .bits = 16, .lv = -1 },
    [LV_ST_U16]         = { .name = "U16",         .bits = 16, .lv = -1 },
    [LV_ST_F16]         = { .name = "F16",         .bits = 16, .lv = LV_F16 },
    [LV_ST_BF16]        = { .name = "BF16",        .bits = 16, .lv = LV_BF16 },
    [LV_ST_I32]         = { .name = "I32",         .bits = 32, .lv = LV_I32 },
    [LV_ST_U32]         = { .name = "U32",         .bits = 32, .lv = -1 },
    [LV_ST_F32]         = { .name = "F32",         .bits = 32, .lv = LV_F32 },
    [LV_ST_C64]         = { .name = "C64",         .bits = 64, .lv = -1 },
    [LV_ST_F64]         = { .name = "F64",         .bits = 64, .lv = -1 },
    [LV_ST_I64]         = { .name = "I64",         .bits = 64, .lv = -1 },
    [LV_ST_U64]         = { .name = "U64",         .bits = 64, .lv = -1 },
};
_Static_assert(sizeof dtype_table / sizeof dtype_table[0] == LV_ST_DTYPE_COUNT,
               "dtype_table and lv_st_dtype disagree");

const char *lv_st_dtype_name(lv_st_dtype d)
{
    return (unsigned)d < LV_ST_DTYPE_COUNT ? dtype_table[d].name : "?";
}

int lv_st_dtype_from_name(const char *s)
{
    for (int d = 0; d < LV_ST_DTYPE_COUNT; d++)
        if (strcmp(s, dtype_table[d].name) == 0)
            return d;
    return -1;
}

unsigned lv_st_dtype_bits(lv_st_dtype d)
{
    return (unsigned)d < LV_ST_DTYPE_COUNT ? dtype_table[d].bits : 0;
}

int lv_st_dtype_to_lv(lv_st_dtype d)
{
    return (unsigned)d < LV_ST_DTYPE_COUNT ? dtype_table[d].lv : -1;
}

int lv_st_dtype_from_lv(lv_dtype d)
{
    for (int s = 0; s < LV_ST_DTYPE_COUNT; s++)
        if (dtype_table[s].lv >= 0 && dtype_table[s].lv == (int)d)
            return s;
    return -1;
}

/* ----------------------------------------------------------------------------------------
 * Helpers: UTF-8, names in messages, sizes
 */

/* Length of the valid UTF-8 prefix of s[0..n) (== n when all of it is valid). Same rules as
 * Rust's str::from_utf8: no overlong forms, no surrogates, nothing above U+10FFFF. */
static size_t utf8_valid_prefix(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t len;
        uint8_t lo = 0x80, hi = 0xbf;     /* range of the second byte */
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            len = 2;
        } else if (c >= 0xe0 && c <= 0xef) {
            len = 3;
            if (c == 0xe0)
                lo = 0xa0;                /* overlong below U+0800 */
            else if (c == 0xed)
                hi = 0x9f;                /* surrogates U+D800..DFFF */
        } else if (c >= 0xf0 && c <= 0xf4) {
            len = 4;
            if (c == 0xf0)
                lo = 0x90;                /* overlong below U+10000 */
            else if (c == 0xf4)
                hi = 0x8f;                /* above U+10FFFF */
        } else {
            return i;
        }
        if (n - i < len || s[i + 1] < lo || s[i + 1] > hi)
            return i;
        for (size_t k = 2; k < len; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xbf)
                return i;
        i += len;
    }
    return n;
}

static bool utf8_valid(const char *s)
{
    size_t n = strlen(s);
    return utf8_valid_prefix((const uint8_t *)s, n) == n;
}

/* A name fit for a one-line message: control bytes escaped as \xNN, cut at about QNAME_MAX
 * bytes on a character boundary. */
#define QNAME_MAX 160
typedef struct qname { char s[QNAME_MAX + 16]; } qname;

static const char *quote(qname *q, const char *s)
{
    size_t o = 0;
    for (size_t i = 0; s[i] != '\0'; i++) {
        unsigned char c = (unsigned char)s[i];
        if (o >= QNAME_MAX && (c & 0xc0) != 0x80) {
            memcpy(q->s + o, "...", 4);
            return q->s;
        }
        if (c < 0x20 || c == 0x7f) {
            snprintf(q->s + o, 5, "\\x%02x", c);
            o += 4;
        } else {
            q->s[o++] = (char)c;
        }
    }
    q->s[o] = '\0';
    return q->s;
}

/* "[2, 3, 4]" */
static const char *shape_str(char *buf, size_t n, int ndim, const int64_t *shape)
{
    size_t o = 0;
    o += (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && o < n; i++)
        o += (size_t)snprintf(buf + o, n - o, "%s%" PRId64, i ? ", " : "", shape[i]);
    if (o < n)
        snprintf(buf + o, n - o, "]");
    return buf;
}

/* product(shape) and the size in bytes, with overflow and whole-byte checks. Returns 0, or
 * 1 on element-count overflow, 2 on bit-count overflow, 3 when not a whole number of bytes. */
static int tensor_size(lv_st_dtype d, int ndim, const int64_t *shape, uint64_t *nelem,
                       uint64_t *nbytes)
{
    uint64_t ne = 1;
    for (int i = 0; i < ndim; i++) {
        uint64_t dim = (uint64_t)shape[i];
        if (dim != 0 && ne > UINT64_MAX / dim)
            return 1;
        ne *= dim;
    }
    uint64_t bits = dtype_table[d].bits;
    if (ne > UINT64_MAX / bits)
        return 2;
    *nelem = ne;
    if ((ne * bits) % 8 != 0)
        return 3;
    *nbytes = ne * bits / 8;
    return 0;
}

static char *path_join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (p == NULL)
        return NULL;
    memcpy(p, dir, a);
    size_t o = a;
    if (a > 0 && dir[a - 1] != '/')
        p[o++] = '/';
    memcpy(p + o, name, b + 1);
    return p;
}

/* A non-negative JSON integer. */
static bool json_u64(const json_t *v, uint64_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return false;
    *out = (uint64_t)json_integer_value(v);
    return true;
}

/* What a JSON value is, for messages ("a negative number", "a string"). */
static const char *json_what(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:  return "an object";
    case JSON_ARRAY:   return "an array";
    case JSON_STRING:  return "a string";
    case JSON_INTEGER: return json_integer_value(v) < 0 ? "a negative integer" : "an integer";
    case JSON_REAL:    return "a non-integer number";
    case JSON_TRUE:
    case JSON_FALSE:   return "a boolean";
    case JSON_NULL:    return "null";
    }
    return "?";
}

/* Offset of the first "-0" integer outside strings in a JSON text, or -1. jansson reads it
 * as the integer 0; the reference (serde_json) reads it as the float -0.0 and refuses it as a
 * size, and so do we. Called on text jansson has accepted, so strings are well formed. */
static long find_negative_zero(const uint8_t *p, size_t n)
{
    bool in_str = false;
    for (size_t i = 0; i < n; i++) {
        if (in_str) {
            if (p[i] == '\\')
                i++;
            else if (p[i] == '"')
                in_str = false;
        } else if (p[i] == '"') {
            in_str = true;
        } else if (p[i] == '-' && i + 1 < n && p[i + 1] == '0') {
            /* "-0.5" and "-0e1" are reals, refused later; "-01" is not JSON */
            uint8_t c = i + 2 < n ? p[i + 2] : ' ';
            if (c != '.' && c != 'e' && c != 'E')
                return (long)i;
        }
    }
    return -1;
}

/* Parse len bytes of UTF-8 JSON (already checked) into an object, refusing duplicate keys. */
static int parse_json_object(const char *name, const char *what, const uint8_t *p, size_t len,
                             json_t **out)
{
    json_error_t err;
    *out = NULL;
    json_t *root = json_loadb((const char *)p, len, JSON_REJECT_DUPLICATES, &err);
    if (root == NULL) {
        qname q;
        return lv_error("%s: %s is not valid JSON: %s (at %s byte %d)", name, what,
                        quote(&q, err.text), what, err.position);
    }
    if (!json_is_object(root)) {
        int rc = lv_error("%s: %s is %s, not a JSON object", name, what, json_what(root));
        json_decref(root);
        return rc;
    }
    *out = root;
    return LV_OK;
}

/* ----------------------------------------------------------------------------------------
 * Reader
 */

/* A tensor while the header is checked: end is needed until the offsets are validated. */
struct pending {
    lv_st_tensor t;
    uint64_t begin, end;        /* data_offsets */
};

static int cmp_pending(const void *a, const void *b)
{
    const struct pending *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return strcmp(x->t.name, y->t.name);
}

static int cmp_tensor_ptr_name(const void *a, const void *b)
{
    const lv_st_tensor *x = *(const lv_st_tensor *const *)a;
    const lv_st_tensor *y = *(const lv_st_tensor *const *)b;
    return strcmp(x->name, y->name);
}

/* Step 4, for one tensor entry: fills p from the JSON object v (names stay jansson's). */
static int parse_tensor_entry(const char *fname, const char *key, json_t *v, struct pending *p)
{
    qname q;
    const char *tn = quote(&q, key);
    if (!utf8_valid(key))
        return lv_error("%s: tensor '%s': name is not valid UTF-8", fname, tn);
    if (!json_is_object(v))
        return lv_error("%s: tensor '%s': entry is %s, not an object with dtype, shape and "
                        "data_offsets", fname, tn, json_what(v));
    const char *k;
    json_t *x;
    json_object_foreach(v, k, x) {
        if (strcmp(k, "dtype") != 0 && strcmp(k, "shape") != 0 &&
            strcmp(k, "data_offsets") != 0) {
            qname qk;
            return lv_error("%s: tensor '%s': unexpected key '%s' (only dtype, shape and "
                            "data_offsets are allowed)", fname, tn, quote(&qk, k));
        }
    }
    json_t *dt = json_object_get(v, "dtype");
    json_t *sh = json_object_get(v, "shape");
    json_t *off = json_object_get(v, "data_offsets");
    if (dt == NULL || sh == NULL || off == NULL)
        return lv_error("%s: tensor '%s': missing key '%s'", fname, tn,
                        dt == NULL ? "dtype" : sh == NULL ? "shape" : "data_offsets");

    memset(p, 0, sizeof *p);
    p->t.name = key;
    if (!json_is_string(dt))
        return lv_error("%s: tensor '%s': dtype is %s, not a string", fname, tn, json_what(dt));
    const char *ds = json_string_value(dt);
    int d = strlen(ds) == json_string_length(dt) ? lv_st_dtype_from_name(ds) : -1;
    if (d < 0) {
        qname qd;
        return lv_error("%s: tensor '%s': unknown dtype '%s'", fname, tn, quote(&qd, ds));
    }
    p->t.dtype = (lv_st_dtype)d;

    if (!json_is_array(sh))
        return lv_error("%s: tensor '%s': shape is %s, not an array", fname, tn, json_what(sh));
    size_t nd = json_array_size(sh);
    if (nd > LV_ST_MAX_DIMS)
        return lv_error("%s: tensor '%s': shape has %zu dimensions, more than the %d supported",
                        fname, tn, nd, LV_ST_MAX_DIMS);
    p->t.ndim = (int)nd;
    for (int i = 0; i < LV_ST_MAX_DIMS; i++)
        p->t.shape[i] = 1;
    for (size_t i = 0; i < nd; i++) {
        json_t *e = json_array_get(sh, i);
        uint64_t dim;
        if (!json_u64(e, &dim))
            return lv_error("%s: tensor '%s': shape dimension %zu is %s, not a non-negative "
                            "integer", fname, tn, i, json_what(e));
        p->t.shape[i] = (int64_t)dim;     /* json_int_t: at most 2^63-1 */
    }

    if (!json_is_array(off) || json_array_size(off) != 2)
        return lv_error("%s: tensor '%s': data_offsets is %s, not an array [BEGIN, END]",
                        fname, tn, json_is_array(off) ? "an array of the wrong length"
                                                      : json_what(off));
    for (int i = 0; i < 2; i++) {
        json_t *e = json_array_get(off, (size_t)i);
        if (!json_u64(e, i == 0 ? &p->begin : &p->end))
            return lv_error("%s: tensor '%s': data_offsets %s is %s, not a non-negative "
                            "integer", fname, tn, i == 0 ? "BEGIN" : "END", json_what(e));
    }
    return LV_OK;
}

/* Step 4 for __metadata__: an object of strings. */
static int parse_metadata(const char *fname, json_t *v, size_t *n, size_t *bytes)
{
    if (!json_is_object(v))
        return lv_error("%s: __metadata__ is %s, not an object of strings", fname,
                        json_what(v));
    const char *k;
    json_t *x;
    json_object_foreach(v, k, x) {
        qname q;
        if (!utf8_valid(k))
            return lv_error("%s: __metadata__ key '%s' is not valid UTF-8", fname,
                            quote(&q, k));
        if (!json_is_string(x))
            return lv_error("%s: __metadata__ value of '%s' is %s; only strings are allowed",
                            fname, quote(&q, k), json_what(x));
        if (strlen(json_string_value(x)) != json_string_length(x) ||
            !utf8_valid(json_string_value(x)))
            return lv_error("%s: __metadata__ value of '%s' is not a valid NUL-free UTF-8 "
                            "string", fname, quote(&q, k));
        *n += 1;
        *bytes += strlen(k) + 1 + json_string_length(x) + 1;
    }
    return LV_OK;
}

/* Steps 5-7: sort by offsets, check the tiling and every size. */
static int validate_layout(lv_st_file *f, struct pending *p, size_t n, uint64_t data_size)
{
    qsort(p, n, sizeof *p, cmp_pending);
    uint64_t start = 0;
    for (size_t i = 0; i < n; i++) {
        lv_st_tensor *t = &p[i].t;
        qname q;
        char sb[256];
        const char *tn = quote(&q, t->name);
        if (p[i].begin != start) {
            if (p[i].begin > start)
                return lv_error("%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] "
                                "leave a gap: %s at %" PRIu64, f->name, tn, p[i].begin,
                                p[i].end, i == 0 ? "the data region begins"
                                                 : "the previous tensor ends", start);
            return lv_error("%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] "
                            "overlap the previous tensor, which ends at %" PRIu64,
                            f->name, tn, p[i].begin, p[i].end, start);
        }
        if (p[i].end < p[i].begin)
            return lv_error("%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] end "
                            "before they begin", f->name, tn, p[i].begin, p[i].end);
        start = p[i].end;

        switch (tensor_size(t->dtype, t->ndim, t->shape, &t->nelem, &t->nbytes)) {
        case 1:
            return lv_error("%s: tensor '%s': shape %s has more elements than 64 bits count "
                            "(overflow)", f->name, tn,
                            shape_str(sb, sizeof sb, t->ndim, t->shape));
        case 2:
            return lv_error("%s: tensor '%s': %s shape %s is more bits than 64 bits count "
                            "(overflow)", f->name, tn, lv_st_dtype_name(t->dtype),
                            shape_str(sb, sizeof sb, t->ndim, t->shape));
        case 3:
            return lv_error("%s: tensor '%s': %s shape %s is not a whole number of bytes "
                            "(%" PRIu64 " elements of %u bits)", f->name, tn,
                            lv_st_dtype_name(t->dtype),
                            shape_str(sb, sizeof sb, t->ndim, t->shape), t->nelem,
                            lv_st_dtype_bits(t->dtype));
        }
        if (p[i].end - p[i].begin != t->nbytes)
            return lv_error("%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] hold "
                            "%" PRIu64 " bytes but %s shape %s needs %" PRIu64, f->name, tn,
                            p[i].begin, p[i].end, p[i].end - p[i].begin,
                            lv_st_dtype_name(t->dtype),
                            shape_str(sb, sizeof sb, t->ndim, t->shape), t->nbytes);
        if (p[i].end > data_size)
            return lv_error("%s: tensor '%s': data_offsets end %" PRIu64 " past the data size "
                            "%" PRIu64 " (file truncated?)", f->name, tn, p[i].end, data_size);
        t->offset = f->data_start + p[i].begin;
        t->data = f->buf + t->offset;
    }
    if (start != data_size)
        return lv_error("%s: %" PRIu64 " trailing bytes after the last tensor (the data region "
                        "is %" PRIu64 " bytes, the tensors cover %" PRIu64 ")", f->name,
                        data_size - start, data_size, start);
    return LV_OK;
}

/* Copy s into the string arena at *o. */
static const char *arena_put(char *arena, size_t *o, const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = arena + *o;
    memcpy(d, s, n);
    *o += n;
    return d;
}

/* Everything after the buffer is set: steps 1-7, then the copies the file keeps. */
static int parse(lv_st_file *f)
{
    const char *fn = f->name;
    json_t *root = NULL;
    struct pending *pend = NULL;
    int rc;

    /* 1-3: the length prefix */
    if (f->size < 8)
        return lv_error("%s: %zu bytes, too small for the 8-byte header length", fn, f->size);
    uint64_t nh = 0;
    for (int i = 7; i >= 0; i--)
        nh = nh << 8 | f->buf[i];
    if (nh > LV_ST_MAX_HEADER)
        return lv_error("%s: header length %" PRIu64 " is larger than the %u-byte limit "
                        "(not a safetensors file?)", fn, nh, LV_ST_MAX_HEADER);
    if (nh > (uint64_t)f->size - 8)
        return lv_error("%s: header length %" PRIu64 " runs past the end of the file "
                        "(%zu bytes; truncated?)", fn, nh, f->size);
    f->header_len = nh;
    f->data_start = 8 + nh;
    uint64_t data_size = (uint64_t)f->size - f->data_start;

    /* 4: UTF-8, then JSON */
    const uint8_t *hdr = f->buf + 8;
    size_t ok = utf8_valid_prefix(hdr, (size_t)nh);
    if (ok != nh)
        return lv_error("%s: header is not valid UTF-8 (byte 0x%02x at file offset %zu)", fn,
                        hdr[ok], ok + 8);
    rc = parse_json_object(fn, "header", hdr, (size_t)nh, &root);
    if (rc != LV_OK)
        return rc;
    long nz = find_negative_zero(hdr, (size_t)nh);
    if (nz >= 0) {
        rc = lv_error("%s: header has the number -0 at file offset %ld; sizes and offsets "
                      "must be non-negative integers", fn, nz + 8);
        goto fail;
    }

    size_t nkeys = json_object_size(root);
    pend = calloc(nkeys ? nkeys : 1, sizeof *pend);
    if (pend == NULL) {
        rc = lv_error_status(LV_ENOMEM, "%s: out of memory for %zu tensors", fn, nkeys);
        goto fail;
    }
    size_t nt = 0, nmeta = 0, bytes = 0;
    json_t *meta = NULL;
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) {
            /* null is "no metadata", as for the reference's Option<HashMap>. */
            if (json_is_null(val))
                continue;
            meta = val;
            rc = parse_metadata(fn, val, &nmeta, &bytes);
        } else {
            rc = parse_tensor_entry(fn, key, val, &pend[nt]);
            nt++;
            bytes += strlen(key) + 1;
        }
        if (rc != LV_OK)
            goto fail;
    }

    /* 5-7 */
    rc = validate_layout(f, pend, nt, data_size);
    if (rc != LV_OK)
        goto fail;

    /* Keep: tensors in data order, names sorted, strings copied out of jansson's tree. */
    f->strings = malloc(bytes ? bytes : 1);
    f->tensors = calloc(nt ? nt : 1, sizeof *f->tensors);
    f->by_name = calloc(nt ? nt : 1, sizeof *f->by_name);
    f->meta = calloc(nmeta ? nmeta : 1, sizeof *f->meta);
    if (f->strings == NULL || f->tensors == NULL || f->by_name == NULL || f->meta == NULL) {
        rc = lv_error_status(LV_ENOMEM, "%s: out of memory for %zu tensors", fn, nt);
        goto fail;
    }
    size_t o = 0;
    for (size_t i = 0; i < nt; i++) {
        f->tensors[i] = pend[i].t;
        f->tensors[i].name = arena_put(f->strings, &o, pend[i].t.name);
        f->by_name[i] = &f->tensors[i];
    }
    f->n_tensors = (int)nt;
    if (meta != NULL) {
        const char *k;
        json_t *x;
        json_object_foreach(meta, k, x) {
            f->meta[f->n_meta].key = arena_put(f->strings, &o, k);
            f->meta[f->n_meta].value = arena_put(f->strings, &o, json_string_value(x));
            f->n_meta++;
        }
    }
    qsort(f->by_name, nt, sizeof *f->by_name, cmp_tensor_ptr_name);
    /* jansson already refused duplicate keys; this keeps lv_st_find sound whatever the
     * parser does. */
    for (size_t i = 1; i < nt; i++) {
        if (strcmp(f->by_name[i - 1]->name, f->by_name[i]->name) == 0) {
            qname q;
            rc = lv_error("%s: duplicate tensor name '%s'", fn,
                          quote(&q, f->by_name[i]->name));
            goto fail;
        }
    }
    free(pend);
    json_decref(root);
    return LV_OK;

fail:
    free(pend);
    json_decref(root);
    return rc;
}

int lv_st_open_mem(lv_st_file *f, const void *buf, size_t n, const char *name)
{
    memset(f, 0, sizeof *f);
    if (name == NULL)
        name = "(memory)";
    f->name = strdup(name);
    if (f->name == NULL)
        return lv_error_status(LV_ENOMEM, "%s: out of memory", name);
    f->buf = buf;
    f->size = buf != NULL ? n : 0;
    int rc = parse(f);
    if (rc != LV_OK)
        lv_st_close(f);
    return rc;
}

int lv_st_open(lv_st_file *f, const char *path)
{
    void *map;
    size_t size;
    memset(f, 0, sizeof *f);
    int rc = lv_map_file(path, UINT64_MAX, &map, &size);
    if (rc != LV_OK)
        return rc;
    rc = lv_st_open_mem(f, map, size, path);
    if (rc != LV_OK) {
        munmap(map, size);
        return rc;
    }
    f->map = map;
    f->map_size = size;
    return LV_OK;
}

void lv_st_close(lv_st_file *f)
{
    if (f->map != NULL)
        munmap(f->map, f->map_size);
    free(f->name);
    free(f->tensors);
    free(f->by_name);
    free(f->meta);
    free(f->strings);
    memset(f, 0, sizeof *f);
}

static int cmp_name_key(const void *key, const void *elem)
{
    return strcmp((const char *)key, (*(const lv_st_tensor *const *)elem)->name);
}

const lv_st_tensor *lv_st_find(const lv_st_file *f, const char *name)
{
    if (f->n_tensors == 0)
        return NULL;
    const lv_st_tensor *const *hit =
        bsearch(name, f->by_name, (size_t)f->n_tensors, sizeof *f->by_name, cmp_name_key);
    return hit != NULL ? *hit : NULL;
}

const char *lv_st_meta_get(const lv_st_file *f, const char *key)
{
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta[i].key, key) == 0)
            return f->meta[i].value;
    return NULL;
}

int lv_st_tensor_lv_dtype(const lv_st_file *f, const lv_st_tensor *t, lv_dtype *out)
{
    int d = lv_st_dtype_to_lv(t->dtype);
    if (d < 0) {
        qname q;
        return lv_error_status(LV_ENOTSUP, "%s: tensor '%s': dtype %s has no lavinia dtype",
                               f->name, quote(&q, t->name), lv_st_dtype_name(t->dtype));
    }
    *out = (lv_dtype)d;
    return LV_OK;
}

/* ----------------------------------------------------------------------------------------
 * Writer
 */

/* A tensor to write and its place in the data region. */
struct wplan {
    const lv_st_wtensor *w;
    uint64_t nbytes, begin;
};

static int cmp_wplan_name(const void *a, const void *b)
{
    return strcmp(((const struct wplan *)a)->w->name, ((const struct wplan *)b)->w->name);
}

/* The reference writer's order: descending dtype enum, then name. */
static int cmp_wplan_layout(const void *a, const void *b)
{
    const lv_st_wtensor *x = ((const struct wplan *)a)->w, *y = ((const struct wplan *)b)->w;
    if (x->dtype != y->dtype)
        return x->dtype > y->dtype ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* write() all of it, through EINTR and short writes. */
static int write_all(int fd, const void *p, uint64_t n)
{
    const uint8_t *b = p;
    while (n > 0) {
        size_t chunk = n > (1u << 30) ? (1u << 30) : (size_t)n;
        ssize_t w = write(fd, b, chunk);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        b += w;
        n -= (uint64_t)w;
    }
    return 0;
}

/* Checks the tensors and metadata and builds the header JSON (unpadded) in *json. */
static int build_header(const char *path, struct wplan *plan, int n, const char *const *meta,
                        char **json)
{
    qname q;
    char sb[256];
    *json = NULL;
    for (int i = 0; i < n; i++) {
        const lv_st_wtensor *w = plan[i].w;
        if (w->name == NULL)
            return lv_error("%s: tensor %d has no name", path, i);
        const char *tn = quote(&q, w->name);
        if (!utf8_valid(w->name))
            return lv_error("%s: tensor '%s': name is not valid UTF-8", path, tn);
        if (strcmp(w->name, "__metadata__") == 0)
            return lv_error("%s: tensor name '__metadata__' is reserved for the metadata", path);
        if ((unsigned)w->dtype >= LV_ST_DTYPE_COUNT)
            return lv_error("%s: tensor '%s': unknown dtype %d", path, tn, (int)w->dtype);
        if (w->ndim < 0 || w->ndim > LV_ST_MAX_DIMS)
            return lv_error("%s: tensor '%s': %d dimensions, at most %d", path, tn, w->ndim,
                            LV_ST_MAX_DIMS);
        for (int k = 0; k < w->ndim; k++)
            if (w->shape[k] < 0)
                return lv_error("%s: tensor '%s': negative dimension in shape %s", path, tn,
                                shape_str(sb, sizeof sb, w->ndim, w->shape));
        uint64_t nelem;
        if (tensor_size(w->dtype, w->ndim, w->shape, &nelem, &plan[i].nbytes) != 0)
            return lv_error("%s: tensor '%s': %s shape %s overflows 64 bits or is not a whole "
                            "number of bytes", path, tn, lv_st_dtype_name(w->dtype),
                            shape_str(sb, sizeof sb, w->ndim, w->shape));
        if (plan[i].nbytes > 0 && w->data == NULL)
            return lv_error("%s: tensor '%s': no data for %" PRIu64 " bytes", path, tn,
                            plan[i].nbytes);
    }
    if (n > 1) {
        qsort(plan, (size_t)n, sizeof *plan, cmp_wplan_name);
        for (int i = 1; i < n; i++)
            if (strcmp(plan[i - 1].w->name, plan[i].w->name) == 0)
                return lv_error("%s: duplicate tensor name '%s'", path,
                                quote(&q, plan[i].w->name));
        qsort(plan, (size_t)n, sizeof *plan, cmp_wplan_layout);
    }
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        plan[i].begin = off;
        if (plan[i].nbytes > (uint64_t)INT64_MAX - off)
            return lv_error("%s: tensors total more than 2^63 bytes", path);
        off += plan[i].nbytes;
    }

    int rc = LV_OK;
    json_t *root = json_object();
    json_t *md = json_object();
    if (root == NULL || md == NULL || json_object_set_new(root, "__metadata__", md) != 0) {
        json_decref(md);
        rc = lv_error_status(LV_ENOMEM, "%s: out of memory", path);
        goto done;
    }
    bool has_format = false;
    for (size_t i = 0; meta != NULL && meta[i] != NULL; i += 2) {
        if (meta[i + 1] == NULL) {
            rc = lv_error("%s: metadata key '%s' has no value", path, quote(&q, meta[i]));
            goto done;
        }
        if (strcmp(meta[i], "format") == 0)
            has_format = true;
    }
    if (!has_format && json_object_set_new(md, "format", json_string("pt")) != 0) {
        rc = lv_error_status(LV_ENOMEM, "%s: out of memory", path);
        goto done;
    }
    for (size_t i = 0; meta != NULL && meta[i] != NULL; i += 2) {
        const char *k = meta[i], *v = meta[i + 1];
        if (!utf8_valid(k) || !utf8_valid(v)) {
            rc = lv_error("%s: metadata '%s' is not valid UTF-8", path, quote(&q, k));
            goto done;
        }
        if (json_object_get(md, k) != NULL) {
            rc = lv_error("%s: duplicate metadata key '%s'", path, quote(&q, k));
            goto done;
        }
        if (json_object_set_new(md, k, json_string(v)) != 0) {
            rc = lv_error_status(LV_ENOMEM, "%s: out of memory", path);
            goto done;
        }
    }
    for (int i = 0; i < n; i++) {
        const lv_st_wtensor *w = plan[i].w;
        json_t *e = json_object(), *sh = json_array(), *off2 = json_array();
        bool bad = e == NULL || sh == NULL || off2 == NULL;
        for (int k = 0; !bad && k < w->ndim; k++)
            bad = json_array_append_new(sh, json_integer(w->shape[k])) != 0;
        bad = bad || json_array_append_new(off2, json_integer((json_int_t)plan[i].begin)) != 0
                  || json_array_append_new(off2, json_integer((json_int_t)(plan[i].begin +
                                                                           plan[i].nbytes))) != 0
                  || json_object_set_new(e, "dtype", json_string(lv_st_dtype_name(w->dtype)))
                  || json_object_set(e, "shape", sh) != 0
                  || json_object_set(e, "data_offsets", off2) != 0
                  || json_object_set(root, w->name, e) != 0;
        json_decref(sh);
        json_decref(off2);
        json_decref(e);
        if (bad) {
            rc = lv_error_status(LV_ENOMEM, "%s: out of memory", path);
            goto done;
        }
    }
    *json = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (*json == NULL)
        rc = lv_error_status(LV_ENOMEM, "%s: out of memory", path);
done:
    json_decref(root);
    return rc;
}

int lv_st_write(const char *path, const lv_st_wtensor *tensors, int n,
                const char *const *meta)
{
    if (n < 0 || (n > 0 && tensors == NULL))
        return lv_error("%s: bad tensor list (%d tensors)", path, n);
    struct wplan *plan = calloc(n ? (size_t)n : 1, sizeof *plan);
    char *json = NULL, *tmp = NULL;
    int fd = -1, rc;
    if (plan == NULL)
        return lv_error_status(LV_ENOMEM, "%s: out of memory", path);
    for (int i = 0; i < n; i++)
        plan[i].w = &tensors[i];
    rc = build_header(path, plan, n, meta, &json);
    if (rc != LV_OK)
        goto done;

    size_t len = strlen(json);
    uint64_t nh = ((uint64_t)len + 7) / 8 * 8;
    if (nh > LV_ST_MAX_HEADER) {
        rc = lv_error("%s: header of %" PRIu64 " bytes is larger than the %u-byte limit", path,
                      nh, LV_ST_MAX_HEADER);
        goto done;
    }
    uint8_t lenbuf[8];
    for (int i = 0; i < 8; i++)
        lenbuf[i] = (uint8_t)(nh >> (8 * i));
    char spaces[8];
    memset(spaces, ' ', sizeof spaces);

    size_t plen = strlen(path);
    tmp = malloc(plen + sizeof ".tmp-XXXXXX");
    if (tmp == NULL) {
        rc = lv_error_status(LV_ENOMEM, "%s: out of memory", path);
        goto done;
    }
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp-XXXXXX", sizeof ".tmp-XXXXXX");
    fd = mkstemp(tmp);
    if (fd < 0) {
        rc = lv_error_status(LV_EIO, "%s: cannot create a temporary file: %s", path,
                             strerror(errno));
        free(tmp);
        tmp = NULL;
        goto done;
    }
    /* mkstemp makes the file 0600; a model file is as readable as any other. */
    (void)fchmod(fd, 0644);
    bool bad = write_all(fd, lenbuf, 8) != 0 || write_all(fd, json, len) != 0 ||
               write_all(fd, spaces, nh - len) != 0;
    for (int i = 0; !bad && i < n; i++)
        bad = write_all(fd, plan[i].w->data, plan[i].nbytes) != 0;
    if (bad || fsync(fd) != 0) {
        rc = lv_error_status(LV_EIO, "%s: cannot write: %s", tmp, strerror(errno));
        goto done;
    }
    int cfd = fd;
    fd = -1;
    if (close(cfd) != 0) {
        rc = lv_error_status(LV_EIO, "%s: cannot write: %s", tmp, strerror(errno));
        goto done;
    }
    if (rename(tmp, path) != 0) {
        rc = lv_error_status(LV_EIO, "%s: cannot rename %s over it: %s", path, tmp,
                             strerror(errno));
        goto done;
    }
    free(tmp);
    tmp = NULL;
    /* Make the rename itself durable; a file system that cannot sync a directory is no
     * reason to fail a write that has happened. */
    char *slash = strrchr(path, '/');
    char *dir = slash == NULL ? strdup(".") : strndup(path, (size_t)(slash - path) + 1);
    if (dir != NULL) {
        int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            (void)fsync(dfd);
            close(dfd);
        }
        free(dir);
    }
done:
    if (fd >= 0)
        close(fd);
    if (tmp != NULL) {
        unlink(tmp);
        free(tmp);
    }
    free(json);
    free(plan);
    return rc;
}

/* ----------------------------------------------------------------------------------------
 * Hugging Face directories (FORMATS.md §1.4)
 */

/* A shard name from an index: a plain file name in the directory, nothing that climbs out. */
static bool shard_name_ok(const char *s)
{
    size_t n = strlen(s);
    return n > 0 && n <= LV_ST_MAX_SHARD_NAME && strchr(s, '/') == NULL &&
           strchr(s, '\\') == NULL && strstr(s, "..") == NULL && strcmp(s, ".") != 0;
}

static int cmp_str_ptr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int cmp_entry_name(const void *a, const void *b)
{
    return strcmp(((const lv_st_set_entry *)a)->t->name, ((const lv_st_set_entry *)b)->t->name);
}

static int cmp_entry_key(const void *key, const void *elem)
{
    return strcmp((const char *)key, ((const lv_st_set_entry *)elem)->t->name);
}

/* Fill s->entries with every tensor of every file, sorted; a name in two files is an error. */
static int collect_entries(lv_st_set *s, const char *what)
{
    size_t total = 0;
    for (int i = 0; i < s->n_files; i++)
        total += (size_t)s->files[i].n_tensors;
    if (total > INT32_MAX)
        return lv_error("%s: %zu tensors, too many", what, total);
    s->entries = calloc(total ? total : 1, sizeof *s->entries);
    if (s->entries == NULL)
        return lv_error_status(LV_ENOMEM, "%s: out of memory for %zu tensors", what, total);
    size_t k = 0;
    for (int i = 0; i < s->n_files; i++)
        for (int j = 0; j < s->files[i].n_tensors; j++) {
            s->entries[k].t = &s->files[i].tensors[j];
            s->entries[k].file = &s->files[i];
            k++;
        }
    s->n_tensors = (int)total;
    qsort(s->entries, total, sizeof *s->entries, cmp_entry_name);
    for (size_t i = 1; i < total; i++) {
        if (strcmp(s->entries[i - 1].t->name, s->entries[i].t->name) == 0) {
            qname q;
            return lv_error("%s: tensor '%s' is in two shards: %s and %s", what,
                            quote(&q, s->entries[i].t->name), s->entries[i - 1].file->name,
                            s->entries[i].file->name);
        }
    }
    return LV_OK;
}

/* DIR/model.safetensors.index.json: parse the weight_map, open each shard once, check. */
static int open_index(lv_st_set *s, const char *ipath)
{
    void *map = NULL;
    size_t size = 0;
    json_t *root = NULL;
    const char **shards = NULL;
    qname q, q2;
    int rc = lv_map_file(ipath, LV_ST_MAX_INDEX, &map, &size);
    if (rc != LV_OK)
        return rc;
    size_t ok = utf8_valid_prefix(map, size);
    if (ok != size) {
        rc = lv_error("%s: not valid UTF-8 (byte 0x%02x at offset %zu)", ipath,
                      ((const uint8_t *)map)[ok], ok);
        goto done;
    }
    rc = parse_json_object(ipath, "index", map, size, &root);
    if (rc != LV_OK)
        goto done;
    json_t *wm = json_object_get(root, "weight_map");
    if (wm == NULL || !json_is_object(wm)) {
        rc = lv_error("%s: weight_map is %s, not an object of tensor name to shard file",
                      ipath, wm == NULL ? "missing" : json_what(wm));
        goto done;
    }
    size_t n = json_object_size(wm);
    if (n == 0) {
        rc = lv_error("%s: weight_map is empty", ipath);
        goto done;
    }
    /* Every shard name is safe; collect the distinct ones, sorted. */
    shards = calloc(n, sizeof *shards);
    if (shards == NULL) {
        rc = lv_error_status(LV_ENOMEM, "%s: out of memory", ipath);
        goto done;
    }
    size_t ns = 0;
    const char *tname;
    json_t *v;
    json_object_foreach(wm, tname, v) {
        if (!json_is_string(v)) {
            rc = lv_error("%s: weight_map entry '%s' is %s, not a shard file name", ipath,
                          quote(&q, tname), json_what(v));
            goto done;
        }
        const char *sh = json_string_value(v);
        if (strlen(sh) != json_string_length(v) || !shard_name_ok(sh)) {
            rc = lv_error("%s: tensor '%s': shard name '%s' is not a plain file name in the "
                          "directory (no '/', '\\', '..'; path traversal refused)", ipath,
                          quote(&q, tname), quote(&q2, sh));
            goto done;
        }
        shards[ns++] = sh;
    }
    qsort(shards, ns, sizeof *shards, cmp_str_ptr);
    size_t nu = 0;
    for (size_t i = 0; i < ns; i++)
        if (nu == 0 || strcmp(shards[nu - 1], shards[i]) != 0)
            shards[nu++] = shards[i];

    s->files = calloc(nu, sizeof *s->files);
    if (s->files == NULL) {
        rc = lv_error_status(LV_ENOMEM, "%s: out of memory", ipath);
        goto done;
    }
    for (size_t i = 0; i < nu; i++) {
        char *sp = path_join(s->dir, shards[i]);
        if (sp == NULL) {
            rc = lv_error_status(LV_ENOMEM, "%s: out of memory", ipath);
            goto done;
        }
        struct stat st;
        if (stat(sp, &st) != 0 && errno == ENOENT) {
            rc = lv_error("%s: shard '%s' is missing (%s not found)", ipath,
                          quote(&q, shards[i]), sp);
            free(sp);
            goto done;
        }
        rc = lv_st_open(&s->files[i], sp);
        free(sp);
        if (rc != LV_OK)
            goto done;
        s->n_files++;
    }
    /* Every tensor of the weight_map is in the shard the index names. */
    json_object_foreach(wm, tname, v) {
        const char *sh = json_string_value(v);
        const char **hit = bsearch(&sh, shards, nu, sizeof *shards, cmp_str_ptr);
        if (hit == NULL || lv_st_find(&s->files[hit - shards], tname) == NULL) {
            rc = lv_error("%s: tensor '%s' is listed in shard '%s', which does not hold it",
                          ipath, quote(&q, tname), quote(&q2, sh));
            goto done;
        }
    }
    rc = collect_entries(s, ipath);
done:
    free(shards);
    json_decref(root);
    munmap(map, size);
    return rc;
}

int lv_st_set_open_dir(lv_st_set *s, const char *dir)
{
    memset(s, 0, sizeof *s);
    struct stat st;
    if (stat(dir, &st) != 0)
        return lv_error_status(LV_EIO, "%s: cannot open: %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return lv_error("%s: not a directory", dir);
    s->dir = strdup(dir);
    char *ipath = path_join(dir, "model.safetensors.index.json");
    char *mpath = path_join(dir, "model.safetensors");
    int rc;
    if (s->dir == NULL || ipath == NULL || mpath == NULL) {
        rc = lv_error_status(LV_ENOMEM, "%s: out of memory", dir);
    } else if (stat(ipath, &st) == 0 || errno != ENOENT) {
        rc = open_index(s, ipath);
    } else if (stat(mpath, &st) == 0 || errno != ENOENT) {
        s->files = calloc(1, sizeof *s->files);
        if (s->files == NULL) {
            rc = lv_error_status(LV_ENOMEM, "%s: out of memory", dir);
        } else {
            rc = lv_st_open(&s->files[0], mpath);
            if (rc == LV_OK) {
                s->n_files = 1;
                rc = collect_entries(s, mpath);
            }
        }
    } else {
        rc = lv_error("%s: no model.safetensors.index.json or model.safetensors in this "
                      "directory", dir);
    }
    free(ipath);
    free(mpath);
    if (rc != LV_OK)
        lv_st_set_close(s);
    return rc;
}

void lv_st_set_close(lv_st_set *s)
{
    for (int i = 0; i < s->n_files; i++)
        lv_st_close(&s->files[i]);
    free(s->files);
    free(s->entries);
    free(s->dir);
    memset(s, 0, sizeof *s);
}

const lv_st_set_entry *lv_st_set_find_entry(const lv_st_set *s, const char *name)
{
    if (s->n_tensors == 0)
        return NULL;
    return bsearch(name, s->entries, (size_t)s->n_tensors, sizeof *s->entries, cmp_entry_key);
}

const lv_st_tensor *lv_st_set_find(const lv_st_set *s, const char *name)
{
    const lv_st_set_entry *e = lv_st_set_find_entry(s, name);
    return e != NULL ? e->t : NULL;
}
