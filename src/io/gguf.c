/*
 * gguf.c: GGUF v2/v3 reader (over a read-only map), ggml block types, k-quant conversion and
 * an atomic writer.
 *
 * On-disk layout (ggml docs/gguf.md; FORMATS.md 2.1). All integers little-endian:
 *
 *     offset  size  field
 *          0     4  magic "GGUF" (0x47 0x47 0x55 0x46)
 *          4     4  version: 2 or 3 (the same layout for little-endian files; 1 used 32-bit
 *                   counts and is refused; a version whose low 16 bits are zero is a
 *                   byte-swapped big-endian file and is refused)
 *          8     8  tensor_count (read as int64, must be >= 0)
 *         16     8  kv_count (read as int64, must be >= 0)
 *         24        kv_count metadata pairs:
 *                     string key      u64 length + bytes (non-empty, unique, no NUL)
 *                     u32 value_type  0 UINT8 .. 12 FLOAT64 (lv_gguf_type)
 *                     value           the scalar (BOOL is one byte, 0 or 1), a string, or
 *                                     u32 element type + u64 count + count elements
 *                                     (elements are never arrays)
 *                   tensor_count tensor infos:
 *                     string name     1..63 bytes, unique
 *                     u32 n_dims      0..4
 *                     u64 ne[n_dims]  ne[0] fastest (the PyTorch shape reversed), each >= 0
 *                     u32 ggml_type   lv_ggml_type; ne[0] a multiple of its block size
 *                     u64 offset      from the data section start
 *                   zero padding up to a multiple of ALIGNMENT (absolute file offset; only
 *                   when tensor_count > 0)
 *    data_start     tensor data: tensor i at data_start + offset_i, where offset_0 = 0 and
 *                   offset_i+1 = offset_i + align_up(nbytes_i, ALIGNMENT) exactly (llama.cpp
 *                   refuses gaps, overlaps and reordering); every tensor ends within the file.
 *
 * ALIGNMENT is general.alignment (must be a UINT32 power of two) or 32.
 *
 * The input is hostile: every count and length is checked against the bytes left before
 * anything is allocated, sizes are computed in uint64_t with explicit overflow checks, and no
 * pointer into the file is dereferenced except byte by byte (the map may be unaligned for
 * every type). The decoded metadata lives in an arena freed by lv_gguf_close; the tensors'
 * data stays in the map.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "io/gguf.h"
#include "io/fileutil.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lavinia/error.h"
#include "lavinia/tensor.h"
#include "util/round.h"

/* ----------------------------------------------------------------------------------------
 * Limits
 */

/* A string (key, value, array element, tensor name) is at most 1 GiB, as llama.cpp's
 * GGUF_MAX_STRING_LENGTH. */
#define MAX_STRING ((uint64_t)1 << 30)
/* An array has at most 1 Gi elements, as llama.cpp's GGUF_MAX_ARRAY_ELEMENTS. */
#define MAX_ARRAY ((uint64_t)1 << 30)
/* Keys are at most 65535 bytes (the GGUF spec's key rule). */
#define MAX_KEY 65535u
/* The smallest metadata pair on disk: u64 key length, 1 key byte, u32 type, 1 value byte. */
#define MIN_KV_BYTES 14u
/* The smallest tensor info: u64 name length, 1 name byte, u32 n_dims (0), u32 type, u64 offset. */
#define MIN_TENSOR_BYTES 25u
/* Arena chunks for the decoded metadata; larger requests get a chunk of their own. */
#define ARENA_CHUNK ((size_t)64 << 10)

static const char gguf_magic[4] = { 'G', 'G', 'U', 'F' };

/* ----------------------------------------------------------------------------------------
 * Type tables
 */

static const struct {
    const char *name;
    uint32_t size;                /* bytes on disk per scalar / array element; 0 = variable */
} value_types[LV_GGUF_TYPE_COUNT] = {
    [LV_GGUF_TYPE_UINT8]   = { .name = "UINT8",   .size = 1 },
    [LV_GGUF_TYPE_INT8]    = { .name = "INT8",    .size = 1 },
    [LV_GGUF_TYPE_UINT16]  = { .name = "UINT16",  .size = 2 },
    [LV_GGUF_TYPE_INT16]   = { .name = "INT16",   .size = 2 },
    [LV_GGUF_TYPE_UINT32]  = { .name = "UINT32",  .size = 4 },
    [LV_GGUF_TYPE_INT32]   = { .name = "INT32",   .size = 4 },
    [LV_GGUF_TYPE_FLOAT32] = { .name = "FLOAT32", .size = 4 },
    [LV_GGUF_TYPE_BOOL]    = { .name = "BOOL",    .size = 1 },
    [LV_GGUF_TYPE_STRING]  = { .name = "STRING",  .size = 0 },
    [LV_GGUF_TYPE_ARRAY]   = { .name = "ARRAY",   .size = 0 },
    [LV_GGUF_TYPE_UINT64]  = { .name = "UINT64",  .size = 8 },
    [LV_GGUF_TYPE_INT64]   = { .name = "INT64",   .size = 8 },
    [LV_GGUF_TYPE_FLOAT64] = { .name = "FLOAT64", .size = 8 },
};

/* Host bytes per decoded element (bool for BOOL, lv_gguf_str for STRING). */
static size_t host_size(uint32_t t)
{
    switch (t) {
    case LV_GGUF_TYPE_BOOL:   return sizeof(bool);
    case LV_GGUF_TYPE_STRING: return sizeof(lv_gguf_str);
    default:                  return value_types[t].size;
    }
}

static bool is_int_type(uint32_t t)
{
    return t <= LV_GGUF_TYPE_INT32 || t == LV_GGUF_TYPE_UINT64 || t == LV_GGUF_TYPE_INT64;
}

const char *lv_gguf_type_name(uint32_t type)
{
    return type < LV_GGUF_TYPE_COUNT ? value_types[type].name : "?";
}

/* ggml types (ggml-org/llama.cpp ggml/include/ggml.h, ggml/src/ggml-common.h, 2026 master).
 * Removed ids keep their name and have no block. */
static const struct {
    const char *name;
    uint32_t blck;                /* elements per block; 0 = removed */
    uint32_t size;                /* bytes per block */
} ggml_types[LV_GGML_TYPE_COUNT] = {
    [0]  = { .name = "F32",     .blck = 1,   .size = 4 },
    [1]  = { .name = "F16",     .blck = 1,   .size = 2 },
    [2]  = { .name = "Q4_0",    .blck = 32,  .size = 18 },    /* f16 d; u8 qs[16] */
    [3]  = { .name = "Q4_1",    .blck = 32,  .size = 20 },
    [4]  = { .name = "Q4_2 (removed)" },
    [5]  = { .name = "Q4_3 (removed)" },
    [6]  = { .name = "Q5_0",    .blck = 32,  .size = 22 },
    [7]  = { .name = "Q5_1",    .blck = 32,  .size = 24 },
    [8]  = { .name = "Q8_0",    .blck = 32,  .size = 34 },    /* f16 d; i8 qs[32] */
    [9]  = { .name = "Q8_1",    .blck = 32,  .size = 36 },
    [10] = { .name = "Q2_K",    .blck = 256, .size = 84 },
    [11] = { .name = "Q3_K",    .blck = 256, .size = 110 },
    [12] = { .name = "Q4_K",    .blck = 256, .size = 144 },   /* d, dmin, scales[12], qs[128] */
    [13] = { .name = "Q5_K",    .blck = 256, .size = 176 },   /* d, dmin, sc[12], qh[32], qs[128] */
    [14] = { .name = "Q6_K",    .blck = 256, .size = 210 },   /* ql[128], qh[64], i8 sc[16], d */
    [15] = { .name = "Q8_K",    .blck = 256, .size = 292 },
    [16] = { .name = "IQ2_XXS", .blck = 256, .size = 66 },
    [17] = { .name = "IQ2_XS",  .blck = 256, .size = 74 },
    [18] = { .name = "IQ3_XXS", .blck = 256, .size = 98 },
    [19] = { .name = "IQ1_S",   .blck = 256, .size = 50 },
    [20] = { .name = "IQ4_NL",  .blck = 32,  .size = 18 },
    [21] = { .name = "IQ3_S",   .blck = 256, .size = 110 },
    [22] = { .name = "IQ2_S",   .blck = 256, .size = 82 },
    [23] = { .name = "IQ4_XS",  .blck = 256, .size = 136 },
    [24] = { .name = "I8",      .blck = 1,   .size = 1 },
    [25] = { .name = "I16",     .blck = 1,   .size = 2 },
    [26] = { .name = "I32",     .blck = 1,   .size = 4 },
    [27] = { .name = "I64",     .blck = 1,   .size = 8 },
    [28] = { .name = "F64",     .blck = 1,   .size = 8 },
    [29] = { .name = "IQ1_M",   .blck = 256, .size = 56 },
    [30] = { .name = "BF16",    .blck = 1,   .size = 2 },
    [31] = { .name = "Q4_0_4_4 (removed)" },
    [32] = { .name = "Q4_0_4_8 (removed)" },
    [33] = { .name = "Q4_0_8_8 (removed)" },
    [34] = { .name = "TQ1_0",   .blck = 256, .size = 54 },
    [35] = { .name = "TQ2_0",   .blck = 256, .size = 66 },
    [36] = { .name = "IQ4_NL_4_4 (removed)" },
    [37] = { .name = "IQ4_NL_4_8 (removed)" },
    [38] = { .name = "IQ4_NL_8_8 (removed)" },
    [39] = { .name = "MXFP4",   .blck = 32,  .size = 17 },
    [40] = { .name = "NVFP4",   .blck = 64,  .size = 36 },
    [41] = { .name = "Q1_0",    .blck = 128, .size = 18 },
    [42] = { .name = "Q2_0",    .blck = 64,  .size = 18 },
};

const char *lv_ggml_type_name(uint32_t type)
{
    return type < LV_GGML_TYPE_COUNT ? ggml_types[type].name : "?";
}

int64_t lv_ggml_block_elems(uint32_t type)
{
    return type < LV_GGML_TYPE_COUNT ? ggml_types[type].blck : 0;
}

uint64_t lv_ggml_block_bytes(uint32_t type)
{
    return type < LV_GGML_TYPE_COUNT && ggml_types[type].blck ? ggml_types[type].size : 0;
}

uint64_t lv_ggml_nbytes(uint32_t type, int64_t nelem)
{
    uint64_t blck = (uint64_t)lv_ggml_block_elems(type), bytes;
    if (blck == 0 || nelem < 0 || (uint64_t)nelem % blck)
        return 0;
    if (__builtin_mul_overflow((uint64_t)nelem / blck, (uint64_t)ggml_types[type].size, &bytes))
        return 0;
    return bytes;
}

enum lv_gguf_load lv_gguf_type_loadable(uint32_t type)
{
    switch (type) {
    case LV_GGML_TYPE_F32:
    case LV_GGML_TYPE_F16:
    case LV_GGML_TYPE_BF16:
    case LV_GGML_TYPE_Q8_0:
    case LV_GGML_TYPE_Q4_0:
        return LV_GGUF_LOAD_KEEP;
    case LV_GGML_TYPE_Q4_1:
    case LV_GGML_TYPE_Q5_0:
    case LV_GGML_TYPE_Q5_1:
    case LV_GGML_TYPE_Q2_K:
    case LV_GGML_TYPE_Q3_K:
    case LV_GGML_TYPE_Q4_K:
    case LV_GGML_TYPE_Q5_K:
    case LV_GGML_TYPE_Q6_K:
    case LV_GGML_TYPE_IQ4_NL:
    case LV_GGML_TYPE_IQ4_XS:
        return LV_GGUF_LOAD_CONVERT;
    default:
        return LV_GGUF_LOAD_REFUSE;
    }
}

static const char *tname(const lv_gguf_tensor *t, char *buf, size_t size);

int lv_gguf_tensor_check_loadable(const lv_gguf_tensor *t)
{
    char nm[96];
    if (lv_gguf_type_loadable(t->type) != LV_GGUF_LOAD_REFUSE)
        return LV_OK;
    return lv_error_status(LV_ENOTSUP,
                           "%s: tensor '%s': ggml type %s (%" PRIu32 ") is not supported "
                           "(lavinia loads F32, F16, BF16, Q8_0 and Q4_0, and converts "
                           LV_GGUF_CONVERTED_TYPES "); re-quantize the model to one of these",
                           t->file, tname(t, nm, sizeof nm), lv_ggml_type_name(t->type),
                           t->type);
}

/* ----------------------------------------------------------------------------------------
 * Little-endian loads and helpers for messages
 */

static inline uint16_t ld16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (uint16_t)p[1] << 8);
}

static inline uint32_t ld32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t ld64(const uint8_t *p)
{
    return (uint64_t)ld32(p) | (uint64_t)ld32(p + 4) << 32;
}

/* A printable, bounded copy of n bytes of s for messages (non-printables become '?'). */
static const char *printable(const char *s, uint64_t n, char *buf, size_t size)
{
    size_t max = size - 4, i;
    for (i = 0; i < n && i < max; i++) {
        unsigned char c = (unsigned char)s[i];
        buf[i] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    if (i < n)
        memcpy(buf + i, "...", 3), i += 3;
    buf[i] = '\0';
    return buf;
}

/* A tensor's name as printable text. */
static const char *tname(const lv_gguf_tensor *t, char *buf, size_t size)
{
    return printable(t->name, strlen(t->name), buf, size);
}

/* A key as printable text. */
static const char *kname(const lv_gguf_kv *kv, char *buf, size_t size)
{
    return printable(kv->key.s, kv->key.n, buf, size);
}

/* ----------------------------------------------------------------------------------------
 * Arena for the decoded metadata
 */

struct arena {
    struct arena *next;
    size_t used, cap;
    max_align_t data[];
};

static void *arena_alloc(lv_gguf_file *f, uint64_t n)
{
    struct arena *head = f->owned, *a;
    if (n > SIZE_MAX / 2)
        return NULL;
    n = (n + 15) & ~(uint64_t)15;
    if (head && head->cap - head->used >= n) {
        void *p = (char *)head->data + head->used;
        head->used += n;
        return p;
    }
    size_t cap = n >= ARENA_CHUNK / 4 ? (size_t)n : ARENA_CHUNK;
    a = malloc(sizeof *a + cap);
    if (!a)
        return NULL;
    a->cap = cap;
    a->used = n;
    if (head && cap == n) {
        /* a dedicated chunk: keep bumping in the current one */
        a->next = head->next;
        head->next = a;
    } else {
        a->next = head;
        f->owned = a;
    }
    return a->data;
}

static void arena_free(struct arena *a)
{
    while (a) {
        struct arena *next = a->next;
        free(a);
        a = next;
    }
}

/* ----------------------------------------------------------------------------------------
 * Name index: open addressing over the kv keys or the tensor names
 */

static uint64_t hash_bytes(const char *s, uint64_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (uint64_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return h;
}

/* A table of at least 2n slots (a power of two), all empty. */
static int64_t *index_new(uint64_t n, uint64_t *mask)
{
    uint64_t size = 16;
    while (size < 2 * n)
        size *= 2;
    int64_t *tab = malloc(size * sizeof *tab);
    if (!tab)
        return NULL;
    memset(tab, 0xff, size * sizeof *tab);        /* -1 = empty */
    *mask = size - 1;
    return tab;
}

/* The slot holding s (kind 0: keys, 1: tensor names), or the empty slot where it goes. */
static uint64_t index_slot(const lv_gguf_file *f, int kind, const char *s, uint64_t n)
{
    const int64_t *tab = kind ? f->tensor_index : f->kv_index;
    uint64_t mask = kind ? f->tensor_mask : f->kv_mask;
    for (uint64_t h = hash_bytes(s, n) & mask;; h = (h + 1) & mask) {
        int64_t k = tab[h];
        if (k < 0)
            return h;
        const char *ks = kind ? f->tensors[k].name : f->kv[k].key.s;
        uint64_t kn = kind ? strlen(ks) : f->kv[k].key.n;
        if (kn == n && memcmp(ks, s, n) == 0)
            return h;
    }
}

/* ----------------------------------------------------------------------------------------
 * Parser
 */

struct parser {
    lv_gguf_file *f;
    const uint8_t *b;
    uint64_t size, pos;
    const char *path;
    char ctx[160];                /* what is being read, for messages: "key 'general.name'" */
};

static uint64_t left(const struct parser *p)
{
    return p->size - p->pos;
}

/* Fails unless n more bytes are there; what says which field. */
static int need(struct parser *p, uint64_t n, const char *what)
{
    if (n <= left(p))
        return LV_OK;
    return lv_error("%s: %s: truncated file: %s needs %" PRIu64 " bytes at offset %" PRIu64
                    " but only %" PRIu64 " remain",
                    p->path, p->ctx, what, n, p->pos, left(p));
}

static int rd32(struct parser *p, uint32_t *v, const char *what)
{
    if (need(p, 4, what) != LV_OK)
        return LV_ERR;
    *v = ld32(p->b + p->pos);
    p->pos += 4;
    return LV_OK;
}

static int rd64(struct parser *p, uint64_t *v, const char *what)
{
    if (need(p, 8, what) != LV_OK)
        return LV_ERR;
    *v = ld64(p->b + p->pos);
    p->pos += 8;
    return LV_OK;
}

/* Reads a string's length and checks it against the limits; leaves pos at the bytes. */
static int rd_strlen(struct parser *p, uint64_t *n, const char *what)
{
    if (rd64(p, n, what) != LV_OK)
        return LV_ERR;
    if (*n > MAX_STRING)
        return lv_error("%s: %s: %s length %" PRIu64 " exceeds the limit of %" PRIu64
                        " bytes (1 GiB)", p->path, p->ctx, what, *n, MAX_STRING);
    if (*n > left(p))
        return lv_error("%s: %s: %s length %" PRIu64 " runs past the end of the file "
                        "(%" PRIu64 " bytes remain)", p->path, p->ctx, what, *n, left(p));
    return LV_OK;
}

static int oom(struct parser *p, uint64_t n)
{
    return lv_error_status(LV_ENOMEM, "%s: %s: out of memory (%" PRIu64 " bytes)", p->path,
                           p->ctx, n);
}

/* A string into the arena, NUL-terminated. */
static int rd_str(struct parser *p, lv_gguf_str *out, const char *what)
{
    uint64_t n;
    if (rd_strlen(p, &n, what) != LV_OK)
        return LV_ERR;
    char *s = arena_alloc(p->f, n + 1);
    if (!s)
        return oom(p, n + 1);
    memcpy(s, p->b + p->pos, n);
    s[n] = '\0';
    p->pos += n;
    out->n = n;
    out->s = s;
    return LV_OK;
}

/* One scalar of numeric or BOOL type t from the file bytes q into dst (host order). */
static void decode_scalar(const uint8_t *q, uint32_t t, void *dst)
{
    switch (value_types[t].size) {
    case 1:
        if (t == LV_GGUF_TYPE_BOOL)
            *(bool *)dst = q[0] != 0;
        else
            memcpy(dst, q, 1);
        break;
    case 2: { uint16_t v = ld16(q); memcpy(dst, &v, 2); break; }
    case 4: { uint32_t v = ld32(q); memcpy(dst, &v, 4); break; }
    case 8: { uint64_t v = ld64(q); memcpy(dst, &v, 8); break; }
    }
}

/* An array of strings: lengths checked in a first pass, then one allocation for the
 * lv_gguf_str table and one for all the bytes. */
static int rd_str_array(struct parser *p, lv_gguf_kv *kv)
{
    uint64_t n = kv->n, start = p->pos, total = 0;
    char what[48];
    for (uint64_t i = 0; i < n; i++) {
        uint64_t len;
        snprintf(what, sizeof what, "string %" PRIu64, i);
        if (rd_strlen(p, &len, what) != LV_OK)
            return LV_ERR;
        p->pos += len;
        total += len + 1;               /* <= file size + n: no overflow */
    }
    p->pos = start;
    lv_gguf_str *strs = arena_alloc(p->f, n * sizeof *strs);
    char *blob = arena_alloc(p->f, total ? total : 1);
    if (!strs || !blob)
        return oom(p, n * sizeof *strs + total);
    for (uint64_t i = 0; i < n; i++) {
        uint64_t len = ld64(p->b + p->pos);
        p->pos += 8;
        memcpy(blob, p->b + p->pos, len);
        blob[len] = '\0';
        strs[i].n = len;
        strs[i].s = blob;
        blob += len + 1;
        p->pos += len;
    }
    kv->v.arr = strs;
    return LV_OK;
}

static int rd_array(struct parser *p, lv_gguf_kv *kv)
{
    uint32_t et;
    uint64_t n;
    if (rd32(p, &et, "array element type") != LV_OK || rd64(p, &n, "array count") != LV_OK)
        return LV_ERR;
    if (et == LV_GGUF_TYPE_ARRAY)
        return lv_error("%s: %s: arrays of arrays are not supported (as in llama.cpp)",
                        p->path, p->ctx);
    if (et >= LV_GGUF_TYPE_COUNT)
        return lv_error("%s: %s: unknown array element type %" PRIu32 " (valid: 0..12)",
                        p->path, p->ctx, et);
    if (n > MAX_ARRAY)
        return lv_error("%s: %s: array of %" PRIu64 " %s elements exceeds the limit of %"
                        PRIu64, p->path, p->ctx, n, value_types[et].name, MAX_ARRAY);
    /* each string element has at least its u64 length on disk */
    uint64_t elem = et == LV_GGUF_TYPE_STRING ? 8 : value_types[et].size;
    if (n * elem > left(p))         /* n <= 2^30, elem <= 8: no overflow */
        return lv_error("%s: %s: array of %" PRIu64 " %s elements needs at least %" PRIu64
                        " bytes but only %" PRIu64 " remain", p->path, p->ctx, n,
                        value_types[et].name, n * elem, left(p));
    kv->elem_type = et;
    kv->n = n;
    if (et == LV_GGUF_TYPE_STRING)
        return rd_str_array(p, kv);
    uint64_t bytes = n * host_size(et);
    char *arr = arena_alloc(p->f, bytes ? bytes : 1);
    if (!arr)
        return oom(p, bytes);
    for (uint64_t i = 0; i < n; i++) {
        const uint8_t *q = p->b + p->pos;
        if (et == LV_GGUF_TYPE_BOOL && q[0] > 1)
            return lv_error("%s: %s: element %" PRIu64 ": BOOL value %u is not 0 or 1",
                            p->path, p->ctx, i, q[0]);
        decode_scalar(q, et, arr + i * host_size(et));
        p->pos += value_types[et].size;
    }
    kv->v.arr = arr;
    return LV_OK;
}

static int parse_kv(struct parser *p, uint64_t i)
{
    lv_gguf_file *f = p->f;
    lv_gguf_kv *kv = &f->kv[i];
    char name[96];
    snprintf(p->ctx, sizeof p->ctx, "key %" PRIu64, i);
    uint64_t n;
    if (rd64(p, &n, "key length") != LV_OK)
        return LV_ERR;
    if (n == 0)
        return lv_error("%s: key %" PRIu64 " is empty (keys must be non-empty)", p->path, i);
    if (n > MAX_KEY)
        return lv_error("%s: key %" PRIu64 ": length %" PRIu64 " exceeds the limit of %u "
                        "bytes", p->path, i, n, MAX_KEY);
    p->pos -= 8;
    if (rd_str(p, &kv->key, "key") != LV_OK)
        return LV_ERR;
    printable(kv->key.s, kv->key.n, name, sizeof name);
    if (memchr(kv->key.s, '\0', kv->key.n))
        return lv_error("%s: key %" PRIu64 " ('%s') contains a NUL byte", p->path, i, name);
    uint64_t slot = index_slot(f, 0, kv->key.s, kv->key.n);
    if (f->kv_index[slot] >= 0)
        return lv_error("%s: duplicate key '%s' (keys %" PRId64 " and %" PRIu64 ")", p->path,
                        name, f->kv_index[slot], i);
    f->kv_index[slot] = (int64_t)i;
    snprintf(p->ctx, sizeof p->ctx, "key '%s'", name);

    if (rd32(p, &kv->type, "value type") != LV_OK)
        return LV_ERR;
    kv->elem_type = kv->type;
    kv->n = 1;
    if (kv->type >= LV_GGUF_TYPE_COUNT)
        return lv_error("%s: %s: unknown value type %" PRIu32 " (valid: 0..12)", p->path,
                        p->ctx, kv->type);
    if (kv->type == LV_GGUF_TYPE_ARRAY)
        return rd_array(p, kv);
    if (kv->type == LV_GGUF_TYPE_STRING)
        return rd_str(p, &kv->v.str, "string value");
    if (need(p, value_types[kv->type].size, value_types[kv->type].name) != LV_OK)
        return LV_ERR;
    const uint8_t *q = p->b + p->pos;
    if (kv->type == LV_GGUF_TYPE_BOOL && q[0] > 1)
        return lv_error("%s: %s: BOOL value %u is not 0 or 1", p->path, p->ctx, q[0]);
    decode_scalar(q, kv->type, &kv->v);
    p->pos += value_types[kv->type].size;
    return LV_OK;
}

/* general.alignment: absent (32) or a UINT32 power of two. */
static int parse_alignment(struct parser *p)
{
    const lv_gguf_kv *kv = lv_gguf_find(p->f, "general.alignment");
    p->f->alignment = LV_GGUF_DEFAULT_ALIGNMENT;
    if (!kv)
        return LV_OK;
    if (kv->type != LV_GGUF_TYPE_UINT32)
        return lv_error("%s: general.alignment must be UINT32, not %s", p->path,
                        lv_gguf_type_name(kv->type));
    uint32_t a = kv->v.u32;
    if (a == 0 || (a & (a - 1)) != 0)
        return lv_error("%s: general.alignment %" PRIu32 " is not a power of two", p->path, a);
    p->f->alignment = a;
    return LV_OK;
}

static int parse_tensor_info(struct parser *p, uint64_t i)
{
    lv_gguf_file *f = p->f;
    lv_gguf_tensor *t = &f->tensors[i];
    lv_gguf_str name;
    char pname[96];
    uint64_t n;
    snprintf(p->ctx, sizeof p->ctx, "tensor %" PRIu64, i);
    if (rd64(p, &n, "name length") != LV_OK)
        return LV_ERR;
    if (n == 0)
        return lv_error("%s: tensor %" PRIu64 " has an empty name", p->path, i);
    if (n > LV_GGUF_MAX_NAME)
        return lv_error("%s: tensor %" PRIu64 ": name of %" PRIu64 " bytes is too long "
                        "(at most %d)", p->path, i, n, LV_GGUF_MAX_NAME);
    p->pos -= 8;
    if (rd_str(p, &name, "name") != LV_OK)
        return LV_ERR;
    printable(name.s, name.n, pname, sizeof pname);
    if (memchr(name.s, '\0', name.n))
        return lv_error("%s: tensor %" PRIu64 " ('%s'): name contains a NUL byte", p->path, i,
                        pname);
    t->name = name.s;
    t->file = f->path;
    uint64_t slot = index_slot(f, 1, name.s, name.n);
    if (f->tensor_index[slot] >= 0)
        return lv_error("%s: duplicate tensor name '%s' (tensors %" PRId64 " and %" PRIu64 ")",
                        p->path, pname, f->tensor_index[slot], i);
    f->tensor_index[slot] = (int64_t)i;
    snprintf(p->ctx, sizeof p->ctx, "tensor '%s'", pname);

    uint32_t n_dims;
    if (rd32(p, &n_dims, "n_dims") != LV_OK)
        return LV_ERR;
    if (n_dims > LV_GGUF_MAX_DIMS)
        return lv_error("%s: %s: %" PRIu32 " dimensions (at most %d)", p->path, p->ctx, n_dims,
                        LV_GGUF_MAX_DIMS);
    t->n_dims = (int)n_dims;
    int64_t nelem = 1;
    for (int d = 0; d < LV_GGUF_MAX_DIMS; d++) {
        uint64_t v = 1;
        if (d < t->n_dims && rd64(p, &v, "dimension") != LV_OK)
            return LV_ERR;
        if (v > INT64_MAX)
            return lv_error("%s: %s: dimension %d is negative (%" PRId64 ")", p->path, p->ctx,
                            d, (int64_t)v);
        t->ne[d] = (int64_t)v;
    }
    for (int d = 0; d < LV_GGUF_MAX_DIMS; d++) {
        if (__builtin_mul_overflow(nelem, t->ne[d], &nelem))
            return lv_error("%s: %s: element count of ne [%" PRId64 ", %" PRId64 ", %" PRId64
                            ", %" PRId64 "] overflows int64", p->path, p->ctx, t->ne[0],
                            t->ne[1], t->ne[2], t->ne[3]);
    }
    t->nelem = nelem;
    for (int d = 0; d < LV_GGUF_MAX_DIMS; d++)
        t->shape[d] = d < t->n_dims ? t->ne[t->n_dims - 1 - d] : 1;

    if (rd32(p, &t->type, "ggml type") != LV_OK)
        return LV_ERR;
    if (t->type >= LV_GGML_TYPE_COUNT)
        return lv_error("%s: %s: unknown ggml type %" PRIu32 " (known: 0..%d)", p->path,
                        p->ctx, t->type, LV_GGML_TYPE_COUNT - 1);
    uint64_t blck = ggml_types[t->type].blck;
    if (blck == 0)
        return lv_error("%s: %s: ggml type %" PRIu32 " (%s) was removed from ggml and is not "
                        "supported", p->path, p->ctx, t->type, ggml_types[t->type].name);
    if ((uint64_t)t->ne[0] % blck)
        return lv_error("%s: %s: row of %" PRId64 " elements is not a multiple of the %s block "
                        "size %" PRIu64, p->path, p->ctx, t->ne[0], ggml_types[t->type].name,
                        blck);
    if (__builtin_mul_overflow((uint64_t)nelem / blck, (uint64_t)ggml_types[t->type].size,
                               &t->nbytes))
        return lv_error("%s: %s: byte size overflows 64 bits", p->path, p->ctx);
    return rd64(p, &t->offset, "data offset");
}

/* Data section start, exactly sequential offsets, every tensor inside the file. */
static int parse_layout(struct parser *p)
{
    lv_gguf_file *f = p->f;
    uint64_t a = f->alignment, start = p->pos, expect = 0;
    if (f->n_tensors > 0) {
        start = (p->pos + a - 1) / a * a;       /* pos <= size < 2^63: no wrap */
        if (start > p->size)
            return lv_error("%s: the tensor data section would start at offset %" PRIu64
                            ", past the end of the file (%" PRIu64 " bytes)", p->path, start,
                            p->size);
    }
    f->data_offset = start;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        lv_gguf_tensor *t = &f->tensors[i];
        char name[96];
        printable(t->name, strlen(t->name), name, sizeof name);
        if (t->offset != expect)
            return lv_error("%s: tensor '%s': data offset %" PRIu64 " is not %" PRIu64 " (tensor"
                            " data must be sequential, each padded to %" PRIu64 " bytes)",
                            p->path, name, t->offset, expect, a);
        uint64_t end, padded;
        if (__builtin_add_overflow(start, t->offset, &end) ||
            __builtin_add_overflow(end, t->nbytes, &end) || end > p->size)
            return lv_error("%s: tensor '%s': data (%" PRIu64 " bytes at offset %" PRIu64
                            ") runs past the end of the file (%" PRIu64 " bytes)", p->path,
                            name, t->nbytes, start + t->offset, p->size);
        t->data = p->b + start + t->offset;
        /* nbytes <= size, so padding cannot wrap; the running sum is checked anyway */
        padded = (t->nbytes + a - 1) / a * a;
        if (__builtin_add_overflow(expect, padded, &expect))
            return lv_error("%s: tensor '%s': data offsets overflow", p->path, name);
    }
    return LV_OK;
}

static int parse(struct parser *p)
{
    lv_gguf_file *f = p->f;
    snprintf(p->ctx, sizeof p->ctx, "header");
    if (p->size == 0)
        return lv_error("%s: empty file", p->path);
    if (p->size < 4 || memcmp(p->b, gguf_magic, 4) != 0) {
        char m[16];
        return lv_error("%s: not a GGUF file (magic '%s', expected 'GGUF')", p->path,
                        printable((const char *)p->b, p->size < 4 ? p->size : 4, m, sizeof m));
    }
    p->pos = 4;
    if (rd32(p, &f->version, "version") != LV_OK)
        return LV_ERR;
    if (f->version == 0)
        return lv_error("%s: bad GGUF version 0", p->path);
    if ((f->version & 0xffff) == 0)
        return lv_error("%s: GGUF version 0x%08" PRIx32 " looks byte-swapped: big-endian GGUF "
                        "files are not supported (convert it to little-endian)", p->path,
                        f->version);
    if (f->version == 1)
        return lv_error("%s: GGUF version 1 is not supported (it used 32-bit counts); "
                        "re-convert the model with a current llama.cpp", p->path);
    if (f->version > 3)
        return lv_error("%s: GGUF version %" PRIu32 " is newer than this reader (versions 2 and"
                        " 3)", p->path, f->version);
    uint64_t nt, nkv;
    if (rd64(p, &nt, "tensor count") != LV_OK || rd64(p, &nkv, "metadata count") != LV_OK)
        return LV_ERR;
    if (nt > INT64_MAX || nkv > INT64_MAX)
        return lv_error("%s: negative %s count", p->path, nt > INT64_MAX ? "tensor" : "metadata");
    /* every pair and info takes some bytes: bound the counts before allocating */
    if (nkv > left(p) / MIN_KV_BYTES)
        return lv_error("%s: metadata count %" PRIu64 " is too large: %" PRIu64 " pairs cannot "
                        "fit in the %" PRIu64 " bytes left", p->path, nkv, nkv, left(p));
    if (nt > (left(p) - nkv * MIN_KV_BYTES) / MIN_TENSOR_BYTES)
        return lv_error("%s: tensor count %" PRIu64 " is too large: %" PRIu64 " tensor infos "
                        "cannot fit in the %" PRIu64 " bytes left", p->path, nt, nt, left(p));

    f->kv = calloc(nkv ? nkv : 1, sizeof *f->kv);
    f->tensors = calloc(nt ? nt : 1, sizeof *f->tensors);
    f->kv_index = index_new(nkv, &f->kv_mask);
    f->tensor_index = index_new(nt, &f->tensor_mask);
    if (!f->kv || !f->tensors || !f->kv_index || !f->tensor_index)
        return oom(p, nkv * sizeof *f->kv + nt * sizeof *f->tensors);
    for (uint64_t i = 0; i < nkv; i++) {
        f->n_kv = i + 1;
        if (parse_kv(p, i) != LV_OK)
            return LV_ERR;
    }
    if (parse_alignment(p) != LV_OK)
        return LV_ERR;
    for (uint64_t i = 0; i < nt; i++) {
        f->n_tensors = i + 1;
        if (parse_tensor_info(p, i) != LV_OK)
            return LV_ERR;
    }
    return parse_layout(p);
}

/* ----------------------------------------------------------------------------------------
 * Open and close
 */

int lv_gguf_open_mem(lv_gguf_file *f, const void *buf, size_t n, const char *name)
{
    memset(f, 0, sizeof *f);
    if (!name)
        name = "(memory)";
    f->path = strdup(name);
    if (!f->path)
        return lv_error_status(LV_ENOMEM, "%s: out of memory", name);
    if (!buf && n) {
        lv_gguf_close(f);
        return lv_error("%s: no buffer", name);
    }
    f->bytes = buf;
    f->size = n;
    struct parser p = { .f = f, .b = buf, .size = n, .path = f->path };
    int rc = parse(&p);
    if (rc != LV_OK) {
        lv_gguf_close(f);
        return rc;
    }
    return LV_OK;
}

int lv_gguf_open(lv_gguf_file *f, const char *path)
{
    void *map;
    size_t size;
    memset(f, 0, sizeof *f);
    int rc = lv_map_file(path, UINT64_MAX, &map, &size);
    if (rc != LV_OK)
        return rc;
    rc = lv_gguf_open_mem(f, map, size, path);
    if (rc != LV_OK) {
        munmap(map, size);
        return rc;
    }
    f->map = map;
    f->map_size = size;
    return LV_OK;
}

void lv_gguf_close(lv_gguf_file *f)
{
    if (!f)
        return;
    arena_free(f->owned);
    free(f->kv);
    free(f->tensors);
    free(f->kv_index);
    free(f->tensor_index);
    free(f->path);
    if (f->map)
        munmap(f->map, f->map_size);
    memset(f, 0, sizeof *f);
}

/* ----------------------------------------------------------------------------------------
 * Lookup and typed getters
 */

const lv_gguf_kv *lv_gguf_find(const lv_gguf_file *f, const char *key)
{
    if (!f->kv_index || !key)
        return NULL;
    int64_t k = f->kv_index[index_slot(f, 0, key, strlen(key))];
    return k >= 0 ? &f->kv[k] : NULL;
}

const lv_gguf_tensor *lv_gguf_find_tensor(const lv_gguf_file *f, const char *name)
{
    if (!f->tensor_index || !name)
        return NULL;
    int64_t k = f->tensor_index[index_slot(f, 1, name, strlen(name))];
    return k >= 0 ? &f->tensors[k] : NULL;
}

/* "UINT32" or "ARRAY of FLOAT32 (3 elements)". */
static const char *kv_type_desc(const lv_gguf_kv *kv, char *buf, size_t n)
{
    if (kv->type != LV_GGUF_TYPE_ARRAY)
        return lv_gguf_type_name(kv->type);
    snprintf(buf, n, "ARRAY of %s (%" PRIu64 " elements)", lv_gguf_type_name(kv->elem_type),
             kv->n);
    return buf;
}

/* The pair under key, or an error naming it as missing. */
static const lv_gguf_kv *get(const lv_gguf_file *f, const char *key)
{
    const lv_gguf_kv *kv = lv_gguf_find(f, key);
    if (!kv)
        lv_error("%s: key '%s' is missing", f->path, key);
    return kv;
}

static int wrong_type(const lv_gguf_file *f, const lv_gguf_kv *kv, const char *expected)
{
    char d[64], nm[96];
    return lv_error("%s: key '%s' is %s, expected %s", f->path, kname(kv, nm, sizeof nm),
                    kv_type_desc(kv, d, sizeof d), expected);
}

/* An integer scalar of any width at p (host order) as int64; false if a UINT64 is too big. */
static bool int_value(uint32_t t, const void *p, int64_t *out)
{
    switch (t) {
    case LV_GGUF_TYPE_UINT8:  *out = *(const uint8_t *)p; return true;
    case LV_GGUF_TYPE_INT8:   *out = *(const int8_t *)p; return true;
    case LV_GGUF_TYPE_UINT16: *out = *(const uint16_t *)p; return true;
    case LV_GGUF_TYPE_INT16:  *out = *(const int16_t *)p; return true;
    case LV_GGUF_TYPE_UINT32: *out = *(const uint32_t *)p; return true;
    case LV_GGUF_TYPE_INT32:  *out = *(const int32_t *)p; return true;
    case LV_GGUF_TYPE_INT64:  *out = *(const int64_t *)p; return true;
    case LV_GGUF_TYPE_UINT64: {
        uint64_t v = *(const uint64_t *)p;
        *out = (int64_t)v;
        return v <= INT64_MAX;
    }
    default: return false;
    }
}

int lv_gguf_get_int(const lv_gguf_file *f, const char *key, int64_t *out)
{
    const lv_gguf_kv *kv = get(f, key);
    if (!kv)
        return LV_ERR;
    if (!is_int_type(kv->type))
        return wrong_type(f, kv, "an integer");
    if (!int_value(kv->type, &kv->v, out))
        return lv_error("%s: key '%s': UINT64 value %" PRIu64 " is out of range", f->path, key,
                        kv->v.u64);
    return LV_OK;
}

int lv_gguf_get_float(const lv_gguf_file *f, const char *key, double *out)
{
    const lv_gguf_kv *kv = get(f, key);
    if (!kv)
        return LV_ERR;
    if (kv->type == LV_GGUF_TYPE_FLOAT32)
        *out = kv->v.f32;
    else if (kv->type == LV_GGUF_TYPE_FLOAT64)
        *out = kv->v.f64;
    else
        return wrong_type(f, kv, "FLOAT32 or FLOAT64");
    return LV_OK;
}

int lv_gguf_get_bool(const lv_gguf_file *f, const char *key, bool *out)
{
    const lv_gguf_kv *kv = get(f, key);
    if (!kv)
        return LV_ERR;
    if (kv->type != LV_GGUF_TYPE_BOOL)
        return wrong_type(f, kv, "BOOL");
    *out = kv->v.b;
    return LV_OK;
}

int lv_gguf_get_str(const lv_gguf_file *f, const char *key, const char **s, uint64_t *len)
{
    const lv_gguf_kv *kv = get(f, key);
    if (!kv)
        return LV_ERR;
    if (kv->type != LV_GGUF_TYPE_STRING)
        return wrong_type(f, kv, "STRING");
    *s = kv->v.str.s;
    if (len)
        *len = kv->v.str.n;
    return LV_OK;
}

int lv_gguf_get_arr(const lv_gguf_file *f, const char *key, uint32_t elem_type,
                    const void **data, uint64_t *n)
{
    const lv_gguf_kv *kv = get(f, key);
    if (!kv)
        return LV_ERR;
    if (kv->type != LV_GGUF_TYPE_ARRAY || kv->elem_type != elem_type) {
        char e[32];
        snprintf(e, sizeof e, "ARRAY of %s", lv_gguf_type_name(elem_type));
        return wrong_type(f, kv, e);
    }
    *data = kv->v.arr;
    *n = kv->n;
    return LV_OK;
}

int lv_gguf_get_str_arr(const lv_gguf_file *f, const char *key, const lv_gguf_str **strs,
                        uint64_t *n)
{
    const void *d;
    if (lv_gguf_get_arr(f, key, LV_GGUF_TYPE_STRING, &d, n) != LV_OK)
        return LV_ERR;
    *strs = d;
    return LV_OK;
}

int lv_gguf_arr_get_int(const lv_gguf_file *f, const lv_gguf_kv *kv, uint64_t i, int64_t *out)
{
    char nm[96];
    if (kv->type != LV_GGUF_TYPE_ARRAY || !is_int_type(kv->elem_type))
        return wrong_type(f, kv, "an ARRAY of integers");
    if (i >= kv->n)
        return lv_error("%s: key '%s': index %" PRIu64 " past the %" PRIu64 " elements", f->path,
                        kname(kv, nm, sizeof nm), i, kv->n);
    const char *p = (const char *)kv->v.arr + i * host_size(kv->elem_type);
    if (!int_value(kv->elem_type, p, out))
        return lv_error("%s: key '%s': element %" PRIu64 " is out of range", f->path,
                        kname(kv, nm, sizeof nm), i);
    return LV_OK;
}

int lv_gguf_arr_get_float(const lv_gguf_file *f, const lv_gguf_kv *kv, uint64_t i, double *out)
{
    char nm[96];
    if (kv->type != LV_GGUF_TYPE_ARRAY ||
        (kv->elem_type != LV_GGUF_TYPE_FLOAT32 && kv->elem_type != LV_GGUF_TYPE_FLOAT64))
        return wrong_type(f, kv, "an ARRAY of FLOAT32 or FLOAT64");
    if (i >= kv->n)
        return lv_error("%s: key '%s': index %" PRIu64 " past the %" PRIu64 " elements", f->path,
                        kname(kv, nm, sizeof nm), i, kv->n);
    if (kv->elem_type == LV_GGUF_TYPE_FLOAT32)
        *out = ((const float *)kv->v.arr)[i];
    else
        *out = ((const double *)kv->v.arr)[i];
    return LV_OK;
}

/* ----------------------------------------------------------------------------------------
 * Dequantization (ggml-quants.c dequantize_row_*, one block at a time)
 *
 * The arithmetic is written as in ggml, operation for operation, so results are bit-exact
 * with ggml's scalar code: no a*b - c may become an FMA (GCC in ISO C mode does not contract;
 * the pragma tells clang).
 */
#pragma STDC FP_CONTRACT OFF

static inline float f16_at(const uint8_t *p)
{
    return lv_f16_to_f32(ld16(p));
}

/* Q4_0: f16 d; qs[16]: low nibbles are elements 0..15, high nibbles 16..31. */
static void deq_q4_0(const uint8_t *b, float *y)
{
    const float d = f16_at(b);
    const uint8_t *qs = b + 2;
    for (int j = 0; j < 16; j++) {
        const int x0 = (qs[j] & 0x0F) - 8;
        const int x1 = (qs[j] >> 4) - 8;
        y[j] = x0 * d;
        y[j + 16] = x1 * d;
    }
}

/* Q8_0: f16 d; i8 qs[32]. */
static void deq_q8_0(const uint8_t *b, float *y)
{
    const float d = f16_at(b);
    for (int j = 0; j < 32; j++)
        y[j] = (int8_t)b[2 + j] * d;
}

/* Q4_1: f16 d, f16 m; qs[16] as Q4_0's; value d * q + m. */
static void deq_q4_1(const uint8_t *b, float *y)
{
    const float d = f16_at(b), m = f16_at(b + 2);
    const uint8_t *qs = b + 4;
    for (int j = 0; j < 16; j++) {
        const int x0 = qs[j] & 0x0F, x1 = qs[j] >> 4;
        y[j] = x0 * d + m;
        y[j + 16] = x1 * d + m;
    }
}

/* The fifth bits of Q5_0/Q5_1: bit j of the little-endian qh is element j's, bit j + 16
 * element j + 16's; placed at bit 4 of the 5-bit value. */
static inline int q5_hi(uint32_t qh, int j)
{
    return (int)(((qh >> j) << 4) & 0x10);
}

/* Q5_0: f16 d; qh[4]; qs[16] (low 4 bits as Q4_0); value d * (q - 16). */
static void deq_q5_0(const uint8_t *b, float *y)
{
    const float d = f16_at(b);
    const uint32_t qh = ld32(b + 2);
    const uint8_t *qs = b + 6;
    for (int j = 0; j < 16; j++) {
        const int x0 = ((qs[j] & 0x0F) | q5_hi(qh, j)) - 16;
        const int x1 = ((qs[j] >> 4) | q5_hi(qh, j + 16)) - 16;
        y[j] = x0 * d;
        y[j + 16] = x1 * d;
    }
}

/* Q5_1: f16 d, f16 m; qh[4]; qs[16]; value d * q + m. */
static void deq_q5_1(const uint8_t *b, float *y)
{
    const float d = f16_at(b), m = f16_at(b + 2);
    const uint32_t qh = ld32(b + 4);
    const uint8_t *qs = b + 8;
    for (int j = 0; j < 16; j++) {
        const int x0 = (qs[j] & 0x0F) | q5_hi(qh, j);
        const int x1 = (qs[j] >> 4) | q5_hi(qh, j + 16);
        y[j] = x0 * d + m;
        y[j + 16] = x1 * d + m;
    }
}

/* IQ4_NL/IQ4_XS: the 16 non-linear 4-bit values (ggml-common.h kvalues_iq4nl). */
static const int8_t iq4nl_values[16] = { -127, -104, -83, -65, -49, -35, -22, -10,
                                         1,    13,   25,  38,  53,  69,  89,  113 };

/* 32 IQ4 values from qs[16] (element j in the low nibble of byte j, j + 16 in the high one),
 * times dl */
static inline void deq_iq4_32(const uint8_t *qs, float dl, float *y)
{
    for (int j = 0; j < 16; j++) {
        y[j] = dl * iq4nl_values[qs[j] & 0xF];
        y[j + 16] = dl * iq4nl_values[qs[j] >> 4];
    }
}

/* IQ4_NL: f16 d; qs[16]. */
static void deq_iq4_nl(const uint8_t *b, float *y)
{
    deq_iq4_32(b + 2, f16_at(b), y);
}

/* IQ4_XS: f16 d, u16 scales_h, scales_l[4], qs[128]; sub-block ib's 6-bit scale is nibble
 * ib % 2 of scales_l[ib / 2] with bits 2ib, 2ib+1 of scales_h above it, minus 32. */
static void deq_iq4_xs(const uint8_t *b, float *y)
{
    const float d = f16_at(b);
    const unsigned sh = ld16(b + 2);
    const uint8_t *sl = b + 4, *qs = b + 8;
    for (int ib = 0; ib < 8; ib++, y += 32, qs += 16) {
        const int ls = ((sl[ib / 2] >> 4 * (ib % 2)) & 0xF) | (int)(((sh >> 2 * ib) & 3) << 4);
        deq_iq4_32(qs, d * (ls - 32), y);
    }
}

/* Q2_K: scales[16] (low nibble the scale, high the min of 16 values), qs[64] (2 bits),
 * f16 d, f16 dmin (at the END). Value d * sc * q - dmin * m; in each half of 128 values,
 * the four 32-value groups are the bit pairs 0, 2, 4, 6 of qs[32h .. 32h + 31]. */
static void deq_q2_k(const uint8_t *b, float *y)
{
    const float d = f16_at(b + 80), min = f16_at(b + 82);
    const uint8_t *sc = b, *q = b + 16;
    int is = 0;
    for (int n = 0; n < 256; n += 128, q += 32)
        for (int shift = 0; shift < 8; shift += 2)
            for (int h = 0; h < 32; h += 16) {
                const uint8_t s = sc[is++];
                const float dl = d * (s & 0xF), ml = min * (s >> 4);
                for (int l = 0; l < 16; ++l)
                    *y++ = dl * ((q[l + h] >> shift) & 3) - ml;
            }
}

/* Q3_K: hmask[32] (third bits), qs[64] (low 2 bits, laid out as Q2_K's), scales[12], f16 d.
 * Scale j (6 bits, minus 32): low 4 bits in the low (j < 8) or high (j >= 8) nibble of byte
 * j % 8, the top two at bits 2 (j / 4) of byte 8 + j % 4. A value whose hmask bit is clear
 * has 4 taken off; the hmask bit of group g of 32 values is bit g, counted over the block. */
static void deq_q3_k(const uint8_t *b, float *y)
{
    const float d_all = f16_at(b + 108);
    const uint8_t *hm = b, *q = b + 32, *s = b + 96;
    int scales[16];
    for (int j = 0; j < 16; j++) {
        const int lo = j < 8 ? s[j] & 0xF : s[j - 8] >> 4;
        scales[j] = (lo | ((s[8 + j % 4] >> (2 * (j / 4))) & 3) << 4) - 32;
    }
    int is = 0;
    unsigned m = 1;
    for (int n = 0; n < 256; n += 128, q += 32)
        for (int shift = 0; shift < 8; shift += 2, m <<= 1)
            for (int h = 0; h < 32; h += 16) {
                const float dl = d_all * scales[is++];
                for (int l = 0; l < 16; ++l)
                    *y++ = dl * (((q[l + h] >> shift) & 3) - ((hm[l + h] & m) ? 0 : 4));
            }
}

/* The 6-bit scale and min of sub-block j of a Q4_K/Q5_K block (ggml get_scale_min_k4). */
static inline void scale_min_k4(int j, const uint8_t *q, uint8_t *d, uint8_t *m)
{
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4));
    }
}

/* Q4_K: f16 d, f16 dmin, scales[12], qs[128]; 8 sub-blocks of 32. */
static void deq_q4_k(const uint8_t *b, float *y)
{
    const float d = f16_at(b);
    const float min = f16_at(b + 2);
    const uint8_t *scales = b + 4, *q = b + 16;
    int is = 0;
    uint8_t sc, m;
    for (int j = 0; j < 256; j += 64) {
        scale_min_k4(is + 0, scales, &sc, &m);
        const float d1 = d * sc, m1 = min * m;
        scale_min_k4(is + 1, scales, &sc, &m);
        const float d2 = d * sc, m2 = min * m;
        for (int l = 0; l < 32; ++l)
            *y++ = d1 * (q[l] & 0xF) - m1;
        for (int l = 0; l < 32; ++l)
            *y++ = d2 * (q[l] >> 4) - m2;
        q += 32;
        is += 2;
    }
}

/* Q5_K: f16 d, f16 dmin, scales[12], qh[32], qs[128]; the fifth bit of element l of
 * sub-block 2c (2c+1) is bit 2c (2c+1) of qh[l]. */
static void deq_q5_k(const uint8_t *b, float *y)
{
    const float d = f16_at(b);
    const float min = f16_at(b + 2);
    const uint8_t *scales = b + 4, *qh = b + 16, *ql = b + 48;
    int is = 0;
    uint8_t sc, m;
    uint8_t u1 = 1, u2 = 2;
    for (int j = 0; j < 256; j += 64) {
        scale_min_k4(is + 0, scales, &sc, &m);
        const float d1 = d * sc, m1 = min * m;
        scale_min_k4(is + 1, scales, &sc, &m);
        const float d2 = d * sc, m2 = min * m;
        for (int l = 0; l < 32; ++l)
            *y++ = d1 * ((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
        for (int l = 0; l < 32; ++l)
            *y++ = d2 * ((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
        ql += 32;
        is += 2;
        u1 = (uint8_t)(u1 << 2);
        u2 = (uint8_t)(u2 << 2);
    }
}

/* Q6_K: ql[128] (low 4 bits), qh[64] (high 2 bits), i8 scales[16], f16 d (at the END). */
static void deq_q6_k(const uint8_t *b, float *y)
{
    const float d = f16_at(b + 208);
    const uint8_t *ql = b, *qh = b + 128;
    const int8_t *sc = (const int8_t *)(b + 192);
    for (int n = 0; n < 256; n += 128) {
        for (int l = 0; l < 32; ++l) {
            int is = l / 16;
            const int8_t q1 = (int8_t)((ql[l + 0] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
            const int8_t q2 = (int8_t)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
            const int8_t q3 = (int8_t)((ql[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            const int8_t q4 = (int8_t)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            y[l + 0] = d * sc[is + 0] * q1;
            y[l + 32] = d * sc[is + 2] * q2;
            y[l + 64] = d * sc[is + 4] * q3;
            y[l + 96] = d * sc[is + 6] * q4;
        }
        y += 128;
        ql += 64;
        qh += 32;
        sc += 8;
    }
}

int lv_gguf_dequantize(uint32_t type, const void *src, float *dst, int64_t n)
{
    const uint8_t *s = src;
    int64_t blck = lv_ggml_block_elems(type);
    void (*deq)(const uint8_t *, float *) = NULL;
    if (n < 0)
        return lv_error("ggml type %s: negative element count", lv_ggml_type_name(type));
    switch (type) {
    case LV_GGML_TYPE_F32:
        memcpy(dst, s, (size_t)n * 4);
        return LV_OK;
    case LV_GGML_TYPE_F16:
        for (int64_t i = 0; i < n; i++)
            dst[i] = lv_f16_to_f32(ld16(s + 2 * i));
        return LV_OK;
    case LV_GGML_TYPE_BF16:
        for (int64_t i = 0; i < n; i++)
            dst[i] = lv_bf16_to_f32(ld16(s + 2 * i));
        return LV_OK;
    case LV_GGML_TYPE_Q4_0: deq = deq_q4_0; break;
    case LV_GGML_TYPE_Q4_1: deq = deq_q4_1; break;
    case LV_GGML_TYPE_Q5_0: deq = deq_q5_0; break;
    case LV_GGML_TYPE_Q5_1: deq = deq_q5_1; break;
    case LV_GGML_TYPE_Q8_0: deq = deq_q8_0; break;
    case LV_GGML_TYPE_Q2_K: deq = deq_q2_k; break;
    case LV_GGML_TYPE_Q3_K: deq = deq_q3_k; break;
    case LV_GGML_TYPE_Q4_K: deq = deq_q4_k; break;
    case LV_GGML_TYPE_Q5_K: deq = deq_q5_k; break;
    case LV_GGML_TYPE_Q6_K: deq = deq_q6_k; break;
    case LV_GGML_TYPE_IQ4_NL: deq = deq_iq4_nl; break;
    case LV_GGML_TYPE_IQ4_XS: deq = deq_iq4_xs; break;
    default:
        return lv_error_status(LV_ENOTSUP, "ggml type %s (%" PRIu32 "): dequantization is not "
                               "supported", lv_ggml_type_name(type), type);
    }
    if (n < 0 || n % blck)
        return lv_error("ggml type %s: %" PRId64 " elements is not a multiple of the block "
                        "size %" PRId64, lv_ggml_type_name(type), n, blck);
    for (int64_t i = 0; i < n / blck; i++)
        deq(s + (size_t)i * ggml_types[type].size, dst + i * blck);
    return LV_OK;
}

/* ggml's quantize_row_q8_0_ref. The float-to-int8 conversion of a non-finite or
 * out-of-range product (only from non-finite input) is undefined in C; it gives 0 here, as
 * x86's cvttss2si followed by the int8 truncation does in ggml. */
void lv_gguf_quantize_q8_0(const float *x, void *dst, int64_t n)
{
    uint8_t *y = dst;
    for (int64_t i = 0; i < n / 32; i++, x += 32, y += 34) {
        /* ggml's amax = MAX(amax, |x[j]|) in order: four running maxima give the same value
         * without a 32-long chain; a NaN makes the order matter, so that block goes in order */
        float m0 = 0.0f, m1 = 0.0f, m2 = 0.0f, m3 = 0.0f, amax;
        int nan = 0;
        for (int j = 0; j < 32; j += 4) {
            const float a0 = fabsf(x[j]), a1 = fabsf(x[j + 1]);
            const float a2 = fabsf(x[j + 2]), a3 = fabsf(x[j + 3]);
            nan |= (a0 != a0) | (a1 != a1) | (a2 != a2) | (a3 != a3);
            m0 = m0 > a0 ? m0 : a0;
            m1 = m1 > a1 ? m1 : a1;
            m2 = m2 > a2 ? m2 : a2;
            m3 = m3 > a3 ? m3 : a3;
        }
        amax = m0 > m1 ? m0 : m1;
        amax = amax > m2 ? amax : m2;
        amax = amax > m3 ? amax : m3;
        if (nan) {
            amax = 0.0f;
            for (int j = 0; j < 32; j++) {
                const float a = fabsf(x[j]);
                amax = amax > a ? amax : a;     /* ggml's MAX(amax, a) */
            }
        }
        const float d = amax / ((1 << 7) - 1);
        const float id = d ? 1.0f / d : 0.0f;
        uint16_t h = lv_f32_to_f16(d);
        y[0] = (uint8_t)(h & 0xff);
        y[1] = (uint8_t)(h >> 8);
        for (int j = 0; j < 32; j++) {
            const float r = lv_round_half_away(x[j] * id);
            y[2 + j] = (uint8_t)(r >= -128.0f && r <= 127.0f ? (int8_t)r : 0);
        }
    }
}

/* Elements per conversion step: one k-quant block; divides by every supported block size. */
#define CONVERT_CHUNK 256

int lv_gguf_convert_tensor(const lv_gguf_tensor *t, uint32_t to_type, void *dst,
                           size_t dst_size)
{
    float buf[CONVERT_CHUNK];
    char nm[96];
    tname(t, nm, sizeof nm);
    if (to_type != LV_GGML_TYPE_Q8_0 && to_type != LV_GGML_TYPE_BF16)
        return lv_error_status(LV_ENOTSUP, "%s: tensor '%s': conversion to %s is not supported"
                               " (only to Q8_0 or BF16)", t->file, nm,
                               lv_ggml_type_name(to_type));
    if (lv_gguf_type_loadable(t->type) == LV_GGUF_LOAD_REFUSE)
        return lv_error_status(LV_ENOTSUP, "%s: tensor '%s': ggml type %s cannot be converted "
                               "(lavinia converts " LV_GGUF_CONVERTED_TYPES ")", t->file, nm,
                               lv_ggml_type_name(t->type));
    if (to_type == LV_GGML_TYPE_Q8_0 && t->nelem % 32)
        return lv_error("%s: tensor '%s': %" PRId64 " elements cannot be Q8_0 (not a multiple "
                        "of 32)", t->file, nm, t->nelem);
    uint64_t need = lv_ggml_nbytes(to_type, t->nelem);
    if ((t->nelem && need == 0) || dst_size < need)
        return lv_error("%s: tensor '%s': %s output needs %" PRIu64 " bytes, buffer has %zu",
                        t->file, nm, lv_ggml_type_name(to_type), need, dst_size);
    if (lv_ggml_nbytes(t->type, t->nelem) != t->nbytes)
        return lv_error("%s: tensor '%s': inconsistent size", t->file, nm);

    const uint8_t *src = t->data;
    uint8_t *out = dst;
    const uint64_t sblck = ggml_types[t->type].blck, sbytes = ggml_types[t->type].size;
    for (int64_t i = 0; i < t->nelem; i += CONVERT_CHUNK) {
        int64_t n = t->nelem - i < CONVERT_CHUNK ? t->nelem - i : CONVERT_CHUNK;
        /* n is a multiple of the source block: nelem is, and so is CONVERT_CHUNK */
        lv_gguf_dequantize(t->type, src + (uint64_t)i / sblck * sbytes, buf, n);
        if (to_type == LV_GGML_TYPE_Q8_0) {
            lv_gguf_quantize_q8_0(buf, out + (uint64_t)i / 32 * 34, n);
        } else {
            for (int64_t j = 0; j < n; j++) {
                uint16_t h = lv_f32_to_bf16(buf[j]);
                out[2 * (i + j)] = (uint8_t)(h & 0xff);
                out[2 * (i + j) + 1] = (uint8_t)(h >> 8);
            }
        }
    }
    return LV_OK;
}

/* ----------------------------------------------------------------------------------------
 * Writer
 */

/* A growable byte buffer; oom is sticky. */
struct buf {
    uint8_t *p;
    size_t n, cap;
    bool oom;
};

static void put(struct buf *b, const void *src, size_t n)
{
    if (b->oom)
        return;
    if (n > b->cap - b->n) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap - b->n < n) {
            if (cap > SIZE_MAX / 2) {
                b->oom = true;
                return;
            }
            cap *= 2;
        }
        uint8_t *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->n, src, n);
    b->n += n;
}

static void put32(struct buf *b, uint32_t v)
{
    uint8_t q[4] = { (uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24) };
    put(b, q, 4);
}

static void put64(struct buf *b, uint64_t v)
{
    put32(b, (uint32_t)v);
    put32(b, (uint32_t)(v >> 32));
}

/* One element of a numeric or BOOL type from host order at src, little-endian. */
static void put_scalar(struct buf *b, uint32_t t, const void *src)
{
    switch (t) {
    case LV_GGUF_TYPE_BOOL: { uint8_t v = *(const bool *)src ? 1 : 0; put(b, &v, 1); break; }
    case LV_GGUF_TYPE_UINT8:
    case LV_GGUF_TYPE_INT8: put(b, src, 1); break;
    case LV_GGUF_TYPE_UINT16:
    case LV_GGUF_TYPE_INT16: {
        uint16_t v;
        memcpy(&v, src, 2);
        uint8_t q[2] = { (uint8_t)v, (uint8_t)(v >> 8) };
        put(b, q, 2);
        break;
    }
    case LV_GGUF_TYPE_UINT32:
    case LV_GGUF_TYPE_INT32:
    case LV_GGUF_TYPE_FLOAT32: { uint32_t v; memcpy(&v, src, 4); put32(b, v); break; }
    default: { uint64_t v; memcpy(&v, src, 8); put64(b, v); break; }
    }
}

struct wkv {
    char *key;
    uint32_t type;
    struct buf val;               /* u32 type + the value, as on disk */
};

struct wtensor {
    char name[LV_GGUF_MAX_NAME + 1];
    uint32_t type;
    int n_dims;
    int64_t ne[LV_GGUF_MAX_DIMS];
    const void *data;
    uint64_t nbytes;
};

struct lv_gguf_writer {
    struct wkv *kv;
    size_t n_kv, cap_kv;
    struct wtensor *t;
    size_t n_t, cap_t;
    uint32_t alignment;
};

lv_gguf_writer *lv_gguf_writer_new(void)
{
    lv_gguf_writer *w = calloc(1, sizeof *w);
    if (!w) {
        lv_error_status(LV_ENOMEM, "gguf writer: out of memory");
        return NULL;
    }
    w->alignment = LV_GGUF_DEFAULT_ALIGNMENT;
    return w;
}

void lv_gguf_writer_free(lv_gguf_writer *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kv[i].key);
        free(w->kv[i].val.p);
    }
    free(w->kv);
    free(w->t);
    free(w);
}

static struct wkv *find_wkv(lv_gguf_writer *w, const char *key)
{
    for (size_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->kv[i].key, key) == 0)
            return &w->kv[i];
    return NULL;
}

/* A new pair for key (checked: non-empty, bounded, unique) with its type word written. */
static struct wkv *new_wkv(lv_gguf_writer *w, const char *key, uint32_t type)
{
    size_t n = key ? strlen(key) : 0;
    if (n == 0 || n > MAX_KEY) {
        lv_error("gguf writer: key '%s' must be 1..%u bytes", key ? key : "(null)", MAX_KEY);
        return NULL;
    }
    if (find_wkv(w, key)) {
        lv_error("gguf writer: duplicate key '%s'", key);
        return NULL;
    }
    if (w->n_kv == w->cap_kv) {
        size_t cap = w->cap_kv ? 2 * w->cap_kv : 16;
        struct wkv *kv = realloc(w->kv, cap * sizeof *kv);
        if (!kv) {
            lv_error_status(LV_ENOMEM, "gguf writer: out of memory");
            return NULL;
        }
        w->kv = kv;
        w->cap_kv = cap;
    }
    struct wkv *kv = &w->kv[w->n_kv];
    memset(kv, 0, sizeof *kv);
    kv->key = strdup(key);
    if (!kv->key) {
        lv_error_status(LV_ENOMEM, "gguf writer: out of memory");
        return NULL;
    }
    kv->type = type;
    put32(&kv->val, type);
    w->n_kv++;
    return kv;
}

/* Drops the last pair (after a failed value) and reports what went wrong. */
static int finish_wkv(lv_gguf_writer *w, struct wkv *kv)
{
    if (!kv->val.oom)
        return LV_OK;
    free(kv->key);
    free(kv->val.p);
    w->n_kv--;
    return lv_error_status(LV_ENOMEM, "gguf writer: out of memory");
}

static int add_scalar(lv_gguf_writer *w, const char *key, uint32_t type, const void *v)
{
    if (key && strcmp(key, "general.alignment") == 0) {
        uint32_t a;
        if (type != LV_GGUF_TYPE_UINT32)
            return lv_error("gguf writer: general.alignment must be UINT32, not %s",
                            lv_gguf_type_name(type));
        memcpy(&a, v, 4);
        if (a == 0 || (a & (a - 1)))
            return lv_error("gguf writer: general.alignment %" PRIu32 " is not a power of two",
                            a);
        if (find_wkv(w, key))
            return lv_error("gguf writer: duplicate key '%s'", key);
        w->alignment = a;
    }
    struct wkv *kv = new_wkv(w, key, type);
    if (!kv)
        return LV_ERR;
    put_scalar(&kv->val, type, v);
    return finish_wkv(w, kv);
}

int lv_gguf_writer_add_u8(lv_gguf_writer *w, const char *key, uint8_t v)
{
    return add_scalar(w, key, LV_GGUF_TYPE_UINT8, &v);
}

int lv_gguf_writer_add_i8(lv_gguf_writer *w, const char *key, int8_t v)
{
    return add_scalar(w, key, LV_GGUF_TYPE_INT8, &v);
}

int lv_gguf_writer_add_u16(lv_gguf_writer *w, const char *key, uint16_t v)
{
    return add_scalar(w, key, LV_GGUF_TYPE_UINT16, &v);
}

int lv_gguf_writer_add_i16(lv_gguf_writer *w, const char *key, int16_t v)
{
    return add_scalar(w, key, LV_GGUF_TYPE_INT16, &v);
}

int lv_gguf_writer_add_u32(lv_gguf_writer *w, const char *key, uint32_t v)
{
    return add_scalar(w, key, LV_GGUF_TYPE_UINT32, &v);
}

int lv_gguf_writer_add_i32(lv_gguf_writer *w, const char *key, int32_t v)
{
    return add_scalar(w, key, LV_GGUF_TYPE_INT32, &v);
}

int lv_gguf_writer_add_f32(lv_gguf_writer *w, const char *key, float v)
{
    return add_scalar(w, key, LV_GGUF_TYPE_FLOAT32, &v);
}

int lv_gguf_writer_add_bool(lv_gguf_writer *w, const char *key, bool v)
{
    return add_scalar(w, key, LV_GGUF_TYPE_BOOL, &v);
}

int lv_gguf_writer_add_u64(lv_gguf_writer *w, const char *key, uint64_t v)
{
    return add_scalar(w, key, LV_GGUF_TYPE_UINT64, &v);
}

int lv_gguf_writer_add_i64(lv_gguf_writer *w, const char *key, int64_t v)
{
    return add_scalar(w, key, LV_GGUF_TYPE_INT64, &v);
}

int lv_gguf_writer_add_f64(lv_gguf_writer *w, const char *key, double v)
{
    return add_scalar(w, key, LV_GGUF_TYPE_FLOAT64, &v);
}

int lv_gguf_writer_add_strn(lv_gguf_writer *w, const char *key, const char *s, uint64_t n)
{
    if (n > MAX_STRING || (!s && n))
        return lv_error("gguf writer: key '%s': string of %" PRIu64 " bytes (at most 1 GiB)",
                        key ? key : "(null)", n);
    if (key && strcmp(key, "general.alignment") == 0)
        return lv_error("gguf writer: general.alignment must be UINT32, not STRING");
    struct wkv *kv = new_wkv(w, key, LV_GGUF_TYPE_STRING);
    if (!kv)
        return LV_ERR;
    put64(&kv->val, n);
    put(&kv->val, s, (size_t)n);
    return finish_wkv(w, kv);
}

int lv_gguf_writer_add_str(lv_gguf_writer *w, const char *key, const char *s)
{
    return lv_gguf_writer_add_strn(w, key, s ? s : "", s ? strlen(s) : 0);
}

int lv_gguf_writer_add_arr(lv_gguf_writer *w, const char *key, uint32_t elem_type,
                           const void *data, uint64_t n)
{
    if (elem_type >= LV_GGUF_TYPE_COUNT || elem_type == LV_GGUF_TYPE_STRING ||
        elem_type == LV_GGUF_TYPE_ARRAY)
        return lv_error("gguf writer: key '%s': %s arrays are not written by add_arr",
                        key ? key : "(null)", lv_gguf_type_name(elem_type));
    if (n > MAX_ARRAY || (!data && n))
        return lv_error("gguf writer: key '%s': array of %" PRIu64 " elements (at most %"
                        PRIu64 ")", key ? key : "(null)", n, MAX_ARRAY);
    if (key && strcmp(key, "general.alignment") == 0)
        return lv_error("gguf writer: general.alignment must be UINT32, not ARRAY");
    struct wkv *kv = new_wkv(w, key, LV_GGUF_TYPE_ARRAY);
    if (!kv)
        return LV_ERR;
    put32(&kv->val, elem_type);
    put64(&kv->val, n);
    for (uint64_t i = 0; i < n && !kv->val.oom; i++)
        put_scalar(&kv->val, elem_type, (const char *)data + i * host_size(elem_type));
    return finish_wkv(w, kv);
}

int lv_gguf_writer_add_str_arr(lv_gguf_writer *w, const char *key, const char *const *strs,
                               const uint64_t *lens, uint64_t n)
{
    if (n > MAX_ARRAY || (!strs && n))
        return lv_error("gguf writer: key '%s': array of %" PRIu64 " strings (at most %" PRIu64
                        ")", key ? key : "(null)", n, MAX_ARRAY);
    for (uint64_t i = 0; i < n; i++) {
        uint64_t len = lens ? lens[i] : strs[i] ? strlen(strs[i]) : 0;
        if (len > MAX_STRING || (!strs[i] && len))
            return lv_error("gguf writer: key '%s': string %" PRIu64 " of %" PRIu64 " bytes",
                            key ? key : "(null)", i, len);
    }
    if (key && strcmp(key, "general.alignment") == 0)
        return lv_error("gguf writer: general.alignment must be UINT32, not ARRAY");
    struct wkv *kv = new_wkv(w, key, LV_GGUF_TYPE_ARRAY);
    if (!kv)
        return LV_ERR;
    put32(&kv->val, LV_GGUF_TYPE_STRING);
    put64(&kv->val, n);
    for (uint64_t i = 0; i < n && !kv->val.oom; i++) {
        uint64_t len = lens ? lens[i] : strs[i] ? strlen(strs[i]) : 0;
        put64(&kv->val, len);
        put(&kv->val, strs[i], (size_t)len);
    }
    return finish_wkv(w, kv);
}

int lv_gguf_writer_add_kv(lv_gguf_writer *w, const lv_gguf_kv *kv)
{
    if (kv->type == LV_GGUF_TYPE_STRING)
        return lv_gguf_writer_add_strn(w, kv->key.s, kv->v.str.s, kv->v.str.n);
    if (kv->type != LV_GGUF_TYPE_ARRAY)
        return add_scalar(w, kv->key.s, kv->type, &kv->v);
    if (kv->elem_type != LV_GGUF_TYPE_STRING)
        return lv_gguf_writer_add_arr(w, kv->key.s, kv->elem_type, kv->v.arr, kv->n);
    /* a string array: write it directly, the lengths are in the table */
    const lv_gguf_str *s = kv->v.arr;
    if (kv->n > MAX_ARRAY)
        return lv_error("gguf writer: key '%s': array too long", kv->key.s);
    if (strcmp(kv->key.s, "general.alignment") == 0)
        return lv_error("gguf writer: general.alignment must be UINT32, not ARRAY");
    struct wkv *o = new_wkv(w, kv->key.s, LV_GGUF_TYPE_ARRAY);
    if (!o)
        return LV_ERR;
    put32(&o->val, LV_GGUF_TYPE_STRING);
    put64(&o->val, kv->n);
    for (uint64_t i = 0; i < kv->n && !o->val.oom; i++) {
        put64(&o->val, s[i].n);
        put(&o->val, s[i].s, (size_t)s[i].n);
    }
    return finish_wkv(w, o);
}

int lv_gguf_writer_set_alignment(lv_gguf_writer *w, uint32_t alignment)
{
    if (alignment == 0 || (alignment & (alignment - 1)))
        return lv_error("gguf writer: alignment %" PRIu32 " is not a power of two", alignment);
    struct wkv *kv = find_wkv(w, "general.alignment");
    if (kv) {
        /* rewrite the value in place: the type word stays, 4 value bytes follow it */
        kv->val.n = 4;
        put32(&kv->val, alignment);
        w->alignment = alignment;
        return LV_OK;
    }
    if (alignment == LV_GGUF_DEFAULT_ALIGNMENT) {
        w->alignment = alignment;
        return LV_OK;
    }
    return lv_gguf_writer_add_u32(w, "general.alignment", alignment);
}

int lv_gguf_writer_add_tensor(lv_gguf_writer *w, const char *name, uint32_t type, int ndim,
                              const int64_t *shape, const void *data, uint64_t nbytes)
{
    size_t len = name ? strlen(name) : 0;
    if (len == 0 || len > LV_GGUF_MAX_NAME)
        return lv_error("gguf writer: tensor name '%s' must be 1..%d bytes",
                        name ? name : "(null)", LV_GGUF_MAX_NAME);
    for (size_t i = 0; i < w->n_t; i++)
        if (strcmp(w->t[i].name, name) == 0)
            return lv_error("gguf writer: duplicate tensor name '%s'", name);
    if (ndim < 0 || ndim > LV_GGUF_MAX_DIMS)
        return lv_error("gguf writer: tensor '%s': %d dimensions (at most %d)", name, ndim,
                        LV_GGUF_MAX_DIMS);
    if (type >= LV_GGML_TYPE_COUNT || ggml_types[type].blck == 0)
        return lv_error("gguf writer: tensor '%s': unknown ggml type %" PRIu32, name, type);
    struct wtensor t = { .type = type, .n_dims = ndim, .data = data, .nbytes = nbytes };
    memcpy(t.name, name, len + 1);
    int64_t nelem = 1;
    for (int d = 0; d < LV_GGUF_MAX_DIMS; d++) {
        t.ne[d] = d < ndim ? shape[ndim - 1 - d] : 1;
        if (t.ne[d] < 0 || __builtin_mul_overflow(nelem, t.ne[d], &nelem))
            return lv_error("gguf writer: tensor '%s': bad shape", name);
    }
    if (t.ne[0] % ggml_types[type].blck)
        return lv_error("gguf writer: tensor '%s': last dimension %" PRId64 " is not a multiple"
                        " of the %s block size %" PRIu32, name, t.ne[0], ggml_types[type].name,
                        ggml_types[type].blck);
    uint64_t expect = lv_ggml_nbytes(type, nelem);
    if ((nelem && expect == 0) || nbytes != expect || (!data && nbytes))
        return lv_error("gguf writer: tensor '%s': %" PRIu64 " bytes given, %s of this shape "
                        "takes %" PRIu64, name, nbytes, ggml_types[type].name, expect);
    if (w->n_t == w->cap_t) {
        size_t cap = w->cap_t ? 2 * w->cap_t : 16;
        struct wtensor *p = realloc(w->t, cap * sizeof *p);
        if (!p)
            return lv_error_status(LV_ENOMEM, "gguf writer: out of memory");
        w->t = p;
        w->cap_t = cap;
    }
    w->t[w->n_t++] = t;
    return LV_OK;
}

/* Writes n bytes, or fails naming path. */
static int wr(FILE *fp, const void *p, size_t n, const char *path)
{
    if (n && fwrite(p, 1, n, fp) != n)
        return lv_error_status(LV_EIO, "%s: write failed: %s", path, strerror(errno));
    return LV_OK;
}

static int wr_pad(FILE *fp, uint64_t *pos, uint64_t a, const char *path)
{
    static const uint8_t zeros[256];
    uint64_t pad = (a - *pos % a) % a;
    while (pad > 0) {
        size_t n = pad < sizeof zeros ? (size_t)pad : sizeof zeros;
        if (wr(fp, zeros, n, path) != LV_OK)
            return LV_EIO;
        pad -= n;
        *pos += n;
    }
    return LV_OK;
}

/* Header, pairs and tensor infos (with offsets) into one buffer. */
static int build_head(const lv_gguf_writer *w, struct buf *b, const char *path)
{
    uint64_t a = w->alignment, off = 0;
    put(b, gguf_magic, 4);
    put32(b, 3);
    put64(b, w->n_t);
    put64(b, w->n_kv);
    for (size_t i = 0; i < w->n_kv; i++) {
        size_t n = strlen(w->kv[i].key);
        put64(b, n);
        put(b, w->kv[i].key, n);
        put(b, w->kv[i].val.p, w->kv[i].val.n);
    }
    for (size_t i = 0; i < w->n_t; i++) {
        const struct wtensor *t = &w->t[i];
        size_t n = strlen(t->name);
        put64(b, n);
        put(b, t->name, n);
        put32(b, (uint32_t)t->n_dims);
        for (int d = 0; d < t->n_dims; d++)
            put64(b, (uint64_t)t->ne[d]);
        put32(b, t->type);
        put64(b, off);
        uint64_t padded;
        if (__builtin_add_overflow(t->nbytes, a - 1, &padded) ||
            __builtin_add_overflow(off, padded / a * a, &off))
            return lv_error("%s: tensor data size overflows", path);
    }
    if (b->oom)
        return lv_error_status(LV_ENOMEM, "%s: out of memory", path);
    return LV_OK;
}

int lv_gguf_writer_write(lv_gguf_writer *w, const char *path)
{
    struct buf head = { 0 };
    struct stat st;
    int rc = build_head(w, &head, path);
    if (rc != LV_OK) {
        free(head.p);
        return rc;
    }
    size_t plen = strlen(path);
    char *tmp = malloc(plen + sizeof ".tmp-XXXXXX");
    if (!tmp) {
        free(head.p);
        return lv_error_status(LV_ENOMEM, "%s: out of memory", path);
    }
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp-XXXXXX", sizeof ".tmp-XXXXXX");
    int fd = mkstemp(tmp);
    if (fd < 0) {
        rc = lv_error_status(LV_EIO, "%s: cannot create a temporary file beside it: %s", path,
                             strerror(errno));
        free(tmp);
        free(head.p);
        return rc;
    }
    /* mkstemp makes 0600: keep the mode of the file we replace, else 0644 */
    (void)fchmod(fd, stat(path, &st) == 0 ? (st.st_mode & 07777) : 0644);
    FILE *fp = fdopen(fd, "wb");
    if (!fp) {
        rc = lv_error_status(LV_EIO, "%s: %s", path, strerror(errno));
        close(fd);
        goto fail;
    }
    uint64_t pos = head.n;
    rc = wr(fp, head.p, head.n, path);
    if (rc == LV_OK && w->n_t > 0)
        rc = wr_pad(fp, &pos, w->alignment, path);
    for (size_t i = 0; rc == LV_OK && i < w->n_t; i++) {
        rc = wr(fp, w->t[i].data, (size_t)w->t[i].nbytes, path);
        pos += w->t[i].nbytes;
        if (rc == LV_OK)
            rc = wr_pad(fp, &pos, w->alignment, path);
    }
    if (rc == LV_OK && (fflush(fp) != 0 || fsync(fileno(fp)) != 0))
        rc = lv_error_status(LV_EIO, "%s: write failed: %s", path, strerror(errno));
    if (fclose(fp) != 0 && rc == LV_OK)
        rc = lv_error_status(LV_EIO, "%s: write failed: %s", path, strerror(errno));
    if (rc != LV_OK)
        goto fail;
    if (rename(tmp, path) != 0) {
        rc = lv_error_status(LV_EIO, "%s: cannot rename %s over it: %s", path, tmp,
                             strerror(errno));
        goto fail;
    }
    /* make the rename durable: fsync the directory (best effort) */
    char *slash = strrchr(tmp, '/');
    if (slash)
        slash[slash == tmp ? 1 : 0] = '\0';
    int dfd = open(slash ? tmp : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
    free(tmp);
    free(head.p);
    return LV_OK;
fail:
    unlink(tmp);
    free(tmp);
    free(head.p);
    return rc;
}
