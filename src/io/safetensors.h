/*
 * safetensors.h (internal): read and write Hugging Face safetensors files and sharded
 * checkpoint directories (FORMATS.md §1).
 *
 * The reader maps the file and checks every rule of the reference loader before it hands out
 * anything: afterwards each tensor's bytes lie inside the file, the tensors tile the data
 * region exactly, and every size fits in 64 bits. Nothing is copied or converted; data
 * pointers point into the map and may be unaligned (memcpy, never cast to float *).
 *
 *     lv_st_file f;
 *     if (lv_st_open(&f, "model.safetensors") != LV_OK)
 *         fprintf(stderr, "lavinia: %s\n", lv_errmsg());
 *     const lv_st_tensor *t = lv_st_find(&f, "lm_head.weight");
 *     ...
 *     lv_st_close(&f);
 *
 * A Hugging Face model directory (model.safetensors, or model.safetensors.index.json and its
 * shards) opens as one lv_st_set whose tensors are sorted by name.
 */
#ifndef LV_IO_SAFETENSORS_H
#define LV_IO_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lavinia/tensor.h"

/* Dimensions a tensor may have in a file we read or write (PyTorch allows more; no model
 * lavinia reads uses more than 4). */
#define LV_ST_MAX_DIMS 8

/* The dtypes of the reference (safetensors tensor.rs `Dtype`), in its enum order: the writer
 * lays tensors out in descending order of this enum, like the reference. */
typedef enum lv_st_dtype {
    LV_ST_BOOL,
    LV_ST_F4,             /* 4 bits: two per byte */
    LV_ST_F6_E2M3,        /* 6 bits: four per three bytes */
    LV_ST_F6_E3M2,
    LV_ST_U8,
    LV_ST_I8,
    LV_ST_F8_E5M2,
    LV_ST_F8_E4M3,
    LV_ST_F8_E8M0,
    LV_ST_F8_E4M3FNUZ,
    LV_ST_F8_E5M2FNUZ,
    LV_ST_I16,
    LV_ST_U16,
    LV_ST_F16,
    LV_ST_BF16,
    LV_ST_I32,
    LV_ST_U32,
    LV_ST_F32,
    LV_ST_C64,            /* two F32: real, imaginary */
    LV_ST_F64,
    LV_ST_I64,
    LV_ST_U64,
    LV_ST_DTYPE_COUNT
} lv_st_dtype;

/* The dtype's string in the file ("F32", "F8_E4M3"); "?" when out of range. */
const char *lv_st_dtype_name(lv_st_dtype d);
/* The dtype of a string in the file, -1 when unknown (matching is exact, case included). */
int lv_st_dtype_from_name(const char *s);
/* Bits per element (BOOL 8, F4 4, F6_* 6, ...); 0 when out of range. */
unsigned lv_st_dtype_bits(lv_st_dtype d);
/* The lavinia dtype with the same bytes (F32, F16, BF16, I32), or -1 when there is none. */
int lv_st_dtype_to_lv(lv_st_dtype d);
/* The safetensors dtype of a lavinia dtype, -1 when out of range. */
int lv_st_dtype_from_lv(lv_dtype d);

/* One tensor of an open file. */
typedef struct lv_st_tensor {
    const char *name;           /* valid UTF-8, NUL-terminated, never contains NUL */
    lv_st_dtype dtype;
    int ndim;                   /* 0..LV_ST_MAX_DIMS; 0 is a scalar (one element) */
    int64_t shape[LV_ST_MAX_DIMS];  /* PyTorch order (last varies fastest); unused: 1 */
    uint64_t nelem;             /* product of shape (1 for a scalar, 0 if a dim is 0) */
    uint64_t nbytes;            /* nelem * bits / 8, exact */
    uint64_t offset;            /* of the first byte, from the start of the file */
    const uint8_t *data;        /* its bytes in the buffer (memcpy: may be unaligned) */
} lv_st_tensor;

/* A __metadata__ entry (both strings valid UTF-8 without NUL). */
typedef struct lv_st_meta {
    const char *key;
    const char *value;
} lv_st_meta;

/* An open file (or caller-owned buffer). */
typedef struct lv_st_file {
    char *name;                 /* the path or the name given to _open_mem, for messages */
    const uint8_t *buf;         /* the whole file */
    size_t size;
    uint64_t header_len;        /* N: bytes of JSON after the 8-byte length */
    uint64_t data_start;        /* 8 + N: where data_offsets count from */
    lv_st_tensor *tensors;      /* in data order (sorted by offset) */
    int n_tensors;
    lv_st_meta *meta;           /* __metadata__ in file order */
    int n_meta;
    /* private */
    const lv_st_tensor **by_name;   /* the tensors sorted by name, for lv_st_find */
    char *strings;              /* names, keys and values */
    void *map;                  /* mmap of lv_st_open, NULL for _open_mem */
    size_t map_size;
} lv_st_file;

/* Map PATH read-only and parse it. On failure f is left closed (lv_st_close is harmless). */
int lv_st_open(lv_st_file *f, const char *path);
/* Parse a caller-owned buffer, which must outlive f; name is used in messages. */
int lv_st_open_mem(lv_st_file *f, const void *buf, size_t n, const char *name);
void lv_st_close(lv_st_file *f);
/* The tensor of that name, NULL if none (no message set). */
const lv_st_tensor *lv_st_find(const lv_st_file *f, const char *name);
/* The __metadata__ value of key, NULL if absent. */
const char *lv_st_meta_get(const lv_st_file *f, const char *key);
/* t's lavinia dtype in *out; LV_ENOTSUP naming the file and tensor when it has none
 * (e.g. "x.safetensors: tensor 'w': dtype F8_E4M3 has no lavinia dtype"). */
int lv_st_tensor_lv_dtype(const lv_st_file *f, const lv_st_tensor *t, lv_dtype *out);

/* ----------------------------------------------------------------------------------------
 * Writer
 */

/* One tensor to write: nbytes = product(shape) * bits / 8 bytes at data (any alignment). */
typedef struct lv_st_wtensor {
    const char *name;           /* valid UTF-8, not "__metadata__", unique */
    lv_st_dtype dtype;
    int ndim;                   /* 0..LV_ST_MAX_DIMS */
    int64_t shape[LV_ST_MAX_DIMS];
    const void *data;           /* may be NULL when nbytes is 0 */
} lv_st_wtensor;

/* Write n tensors to PATH atomically (PATH.tmp-XXXXXX, fsync, rename). meta: NULL or a
 * NULL-terminated list key, value, key, value, ..., NULL; "format":"pt" is added unless meta
 * sets "format". The header starts with '{' and is padded with spaces to a multiple of 8;
 * tensors are laid out like the reference writer's (descending dtype enum, then name). */
int lv_st_write(const char *path, const lv_st_wtensor *tensors, int n,
                const char *const *meta);

/* ----------------------------------------------------------------------------------------
 * Hugging Face model directories (FORMATS.md §1.4)
 */

/* A tensor of a set, and the file it lives in. */
typedef struct lv_st_set_entry {
    const lv_st_tensor *t;
    const lv_st_file *file;
} lv_st_set_entry;

typedef struct lv_st_set {
    char *dir;
    lv_st_file *files;          /* the shards (or the one model.safetensors) */
    int n_files;
    lv_st_set_entry *entries;   /* every tensor of every file, sorted by name (strcmp) */
    int n_tensors;
} lv_st_set;

/* Open DIR/model.safetensors.index.json and its shards if the index exists, else
 * DIR/model.safetensors. Every weight_map entry must name a safe shard file name and a
 * tensor that shard holds; no tensor may live in two shards. On failure s is left closed. */
int lv_st_set_open_dir(lv_st_set *s, const char *dir);
void lv_st_set_close(lv_st_set *s);
/* The tensor of that name, NULL if none (no message set). */
const lv_st_tensor *lv_st_set_find(const lv_st_set *s, const char *name);
/* Same, with the file it lives in (for messages and for data lifetime). */
const lv_st_set_entry *lv_st_set_find_entry(const lv_st_set *s, const char *name);

#endif /* LV_IO_SAFETENSORS_H */
