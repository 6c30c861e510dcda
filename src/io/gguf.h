/*
 * gguf.h (internal): GGUF v2/v3 files (llama.cpp's model, vocabulary, mmproj and LoRA files):
 * a strict reader over a read-only map, the ggml block types, k-quant conversion, a writer.
 *
 * The reader checks everything llama.cpp's gguf_init_from_reader checks (FORMATS.md 2.3) and
 * more, then exposes the metadata as decoded, owned values and the tensors as pointers into
 * the map. Reading a vocabulary:
 *
 *     lv_gguf_file f;
 *     if (lv_gguf_open(&f, "vocab.gguf") != LV_OK)
 *         return fprintf(stderr, "lavinia: %s\n", lv_errmsg()), 1;
 *     const lv_gguf_str *tokens;
 *     const float *scores;
 *     uint64_t n_tok, n_sc;
 *     int64_t bos;
 *     if (lv_gguf_get_str_arr(&f, "tokenizer.ggml.tokens", &tokens, &n_tok) != LV_OK ||
 *         lv_gguf_get_arr(&f, "tokenizer.ggml.scores", LV_GGUF_TYPE_FLOAT32,
 *                         (const void **)&scores, &n_sc) != LV_OK ||
 *         lv_gguf_get_int(&f, "tokenizer.ggml.bos_token_id", &bos) != LV_OK)
 *         ...                            // the message names the file, the key and its type
 *     lv_gguf_close(&f);
 *
 * Tensors: F32, F16, BF16, Q8_0 and Q4_0 are used as stored; Q4_1, Q5_0, Q5_1, the
 * k-quants Q2_K to Q6_K, IQ4_NL and IQ4_XS are converted at load to Q8_0 or BF16 with
 * lv_gguf_convert_tensor (never to F32); every other ggml type (the lattice IQ1/IQ2/IQ3
 * types, TQ*, MXFP4, ...) is refused by lv_gguf_tensor_check_loadable with its name.
 *
 * Writing: lv_gguf_writer_new, lv_gguf_writer_add_* for metadata (insertion order is kept),
 * lv_gguf_writer_add_tensor (PyTorch-order shape, data borrowed until the write),
 * lv_gguf_writer_write (atomic: temp file, fsync, rename), lv_gguf_writer_free.
 */
#ifndef LV_IO_GGUF_H
#define LV_IO_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LV_GGUF_MAX_DIMS 4
/* Tensor names are at most 63 bytes (ggml's GGML_MAX_NAME = 64 includes the NUL). */
#define LV_GGUF_MAX_NAME 63
#define LV_GGUF_DEFAULT_ALIGNMENT 32

/* Metadata value types (gguf_type, u32 on disk; FORMATS.md 2.2). */
enum lv_gguf_type {
    LV_GGUF_TYPE_UINT8   = 0,
    LV_GGUF_TYPE_INT8    = 1,
    LV_GGUF_TYPE_UINT16  = 2,
    LV_GGUF_TYPE_INT16   = 3,
    LV_GGUF_TYPE_UINT32  = 4,
    LV_GGUF_TYPE_INT32   = 5,
    LV_GGUF_TYPE_FLOAT32 = 6,
    LV_GGUF_TYPE_BOOL    = 7,     /* one byte, 0 or 1 */
    LV_GGUF_TYPE_STRING  = 8,     /* u64 length + bytes, no NUL on disk */
    LV_GGUF_TYPE_ARRAY   = 9,     /* u32 element type + u64 count + elements; no arrays of arrays */
    LV_GGUF_TYPE_UINT64  = 10,
    LV_GGUF_TYPE_INT64   = 11,
    LV_GGUF_TYPE_FLOAT64 = 12,
    LV_GGUF_TYPE_COUNT
};

/* ggml tensor types (ggml.h enum ggml_type; FORMATS.md 2.5). Missing ids were removed from
 * ggml and are refused. */
enum lv_ggml_type {
    LV_GGML_TYPE_F32     = 0,
    LV_GGML_TYPE_F16     = 1,
    LV_GGML_TYPE_Q4_0    = 2,
    LV_GGML_TYPE_Q4_1    = 3,
    LV_GGML_TYPE_Q5_0    = 6,
    LV_GGML_TYPE_Q5_1    = 7,
    LV_GGML_TYPE_Q8_0    = 8,
    LV_GGML_TYPE_Q8_1    = 9,
    LV_GGML_TYPE_Q2_K    = 10,
    LV_GGML_TYPE_Q3_K    = 11,
    LV_GGML_TYPE_Q4_K    = 12,
    LV_GGML_TYPE_Q5_K    = 13,
    LV_GGML_TYPE_Q6_K    = 14,
    LV_GGML_TYPE_Q8_K    = 15,
    LV_GGML_TYPE_IQ2_XXS = 16,
    LV_GGML_TYPE_IQ2_XS  = 17,
    LV_GGML_TYPE_IQ3_XXS = 18,
    LV_GGML_TYPE_IQ1_S   = 19,
    LV_GGML_TYPE_IQ4_NL  = 20,
    LV_GGML_TYPE_IQ3_S   = 21,
    LV_GGML_TYPE_IQ2_S   = 22,
    LV_GGML_TYPE_IQ4_XS  = 23,
    LV_GGML_TYPE_I8      = 24,
    LV_GGML_TYPE_I16     = 25,
    LV_GGML_TYPE_I32     = 26,
    LV_GGML_TYPE_I64     = 27,
    LV_GGML_TYPE_F64     = 28,
    LV_GGML_TYPE_IQ1_M   = 29,
    LV_GGML_TYPE_BF16    = 30,
    LV_GGML_TYPE_TQ1_0   = 34,
    LV_GGML_TYPE_TQ2_0   = 35,
    LV_GGML_TYPE_MXFP4   = 39,
    LV_GGML_TYPE_NVFP4   = 40,
    LV_GGML_TYPE_Q1_0    = 41,
    LV_GGML_TYPE_Q2_0    = 42,
    LV_GGML_TYPE_COUNT   = 43     /* ggml-org/llama.cpp master, 2026 */
};

/* A string from the file: n bytes at s, followed by a NUL that is not counted (the bytes may
 * themselves contain NULs). Owned by the lv_gguf_file. */
typedef struct lv_gguf_str {
    uint64_t n;
    const char *s;
} lv_gguf_str;

/* One metadata key/value pair, decoded. Scalars live in the union; a STRING in .str; an
 * ARRAY has elem_type, n elements and .arr pointing at n host-order values of that type:
 * uint8_t .. double for numbers, bool for BOOL, lv_gguf_str for STRING. */
typedef struct lv_gguf_kv {
    lv_gguf_str key;              /* non-empty, no NUL bytes */
    uint32_t type;                /* enum lv_gguf_type */
    uint32_t elem_type;           /* ARRAY: the elements' type; otherwise == type */
    uint64_t n;                   /* ARRAY: element count; otherwise 1 */
    union {
        uint8_t u8;
        int8_t i8;
        uint16_t u16;
        int16_t i16;
        uint32_t u32;
        int32_t i32;
        float f32;
        bool b;
        uint64_t u64;
        int64_t i64;
        double f64;
        lv_gguf_str str;
        const void *arr;
    } v;
} lv_gguf_kv;

/* One tensor. ne[] is the GGUF order (ne[0] varies fastest); shape[] is the PyTorch order of
 * the same bytes (shape[i] = ne[n_dims-1-i]); unused entries of both are 1. */
typedef struct lv_gguf_tensor {
    const char *name;             /* 1..63 bytes, unique in the file */
    uint32_t type;                /* enum lv_ggml_type */
    int n_dims;                   /* 0..4 as stored; 0 is a scalar */
    int64_t ne[LV_GGUF_MAX_DIMS];
    int64_t shape[LV_GGUF_MAX_DIMS];
    int64_t nelem;
    uint64_t offset;              /* from the start of the data section, as stored */
    uint64_t nbytes;              /* nelem / block elements * block bytes */
    const void *data;             /* into the file's bytes; may be unaligned: memcpy */
    const char *file;             /* the file's name, for messages */
} lv_gguf_tensor;

/* An open GGUF file. Everything it points to lives until lv_gguf_close. */
typedef struct lv_gguf_file {
    char *path;                   /* the name given to open (used in messages) */
    uint32_t version;             /* 2 or 3 */
    uint32_t alignment;           /* general.alignment, or 32 */
    uint64_t n_kv;
    lv_gguf_kv *kv;               /* in file order */
    uint64_t n_tensors;
    lv_gguf_tensor *tensors;      /* in file (= data) order */
    uint64_t data_offset;         /* absolute offset of the tensor data section */
    const uint8_t *bytes;         /* the whole file: the map or the caller's buffer */
    uint64_t size;
    /* private */
    void *map;                    /* non-NULL when lv_gguf_open mapped the file */
    size_t map_size;
    void *owned;                  /* allocations freed at close */
    int64_t *kv_index, *tensor_index;   /* open-addressing hash tables (slot -> index) */
    uint64_t kv_mask, tensor_mask;
} lv_gguf_file;

/* --- reading ---------------------------------------------------------------------------- */

/* Maps path read-only and parses it; on failure f is left closed (nothing to free). */
int lv_gguf_open(lv_gguf_file *f, const char *path);
/* Parses a caller-owned buffer, which must outlive f; name is used in messages. */
int lv_gguf_open_mem(lv_gguf_file *f, const void *buf, size_t n, const char *name);
/* Frees everything and unmaps; a zeroed or already-closed f is fine. */
void lv_gguf_close(lv_gguf_file *f);

/* The pair under key, or NULL. */
const lv_gguf_kv *lv_gguf_find(const lv_gguf_file *f, const char *key);
/* Typed getters: LV_OK, or LV_ERR with a message naming the file, the key and what was wrong
 * (missing, or its actual type). get_int takes any integer type (a UINT64 above INT64_MAX is
 * an error); get_float takes FLOAT32 or FLOAT64. */
int lv_gguf_get_int(const lv_gguf_file *f, const char *key, int64_t *out);
int lv_gguf_get_float(const lv_gguf_file *f, const char *key, double *out);
int lv_gguf_get_bool(const lv_gguf_file *f, const char *key, bool *out);
/* *s is NUL-terminated; len (may be NULL) gets the byte count. */
int lv_gguf_get_str(const lv_gguf_file *f, const char *key, const char **s, uint64_t *len);
/* An ARRAY whose elements are exactly elem_type (an f32[] key must really be FLOAT32:
 * FORMATS.md 2.10, llama.cpp PR #26690). */
int lv_gguf_get_arr(const lv_gguf_file *f, const char *key, uint32_t elem_type,
                    const void **data, uint64_t *n);
int lv_gguf_get_str_arr(const lv_gguf_file *f, const char *key, const lv_gguf_str **strs,
                        uint64_t *n);
/* Element i of an integer array of any width / of a FLOAT32 or FLOAT64 array. */
int lv_gguf_arr_get_int(const lv_gguf_file *f, const lv_gguf_kv *kv, uint64_t i, int64_t *out);
int lv_gguf_arr_get_float(const lv_gguf_file *f, const lv_gguf_kv *kv, uint64_t i, double *out);

/* The tensor called name, or NULL. */
const lv_gguf_tensor *lv_gguf_find_tensor(const lv_gguf_file *f, const char *name);

/* "UINT32", "ARRAY", ... and "?" for unknown ids. */
const char *lv_gguf_type_name(uint32_t type);

/* --- ggml types ------------------------------------------------------------------------- */

/* "Q4_K", ...; "Q4_2 (removed)" for removed ids and "?" past the table. */
const char *lv_ggml_type_name(uint32_t type);
/* Elements and bytes per block; 0 for removed or unknown ids. */
int64_t lv_ggml_block_elems(uint32_t type);
uint64_t lv_ggml_block_bytes(uint32_t type);
/* Bytes of nelem elements (a multiple of the block size), 0 if unknown or on overflow. */
uint64_t lv_ggml_nbytes(uint32_t type, int64_t nelem);

/* The types lavinia converts at load, for messages. */
#define LV_GGUF_CONVERTED_TYPES "Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL and IQ4_XS"

/* How lavinia loads a tensor of this type (the 0 value refuses, so it reads as a bool). */
enum lv_gguf_load {
    LV_GGUF_LOAD_REFUSE = 0,      /* IQ1/IQ2/IQ3, TQ*, Q8_1, MXFP4, ...: no support */
    LV_GGUF_LOAD_KEEP,            /* F32, F16, BF16, Q8_0, Q4_0: used as stored */
    LV_GGUF_LOAD_CONVERT,         /* LV_GGUF_CONVERTED_TYPES: converted to Q8_0 or BF16 */
};
enum lv_gguf_load lv_gguf_type_loadable(uint32_t type);
/* LV_OK if t is loadable, else LV_ENOTSUP with a message naming the file, tensor and type. */
int lv_gguf_tensor_check_loadable(const lv_gguf_tensor *t);

/* Dequantizes n elements (a multiple of the type's block size) of F32, F16, BF16, Q4_0,
 * Q8_0 or a converted type into dst, exactly as ggml's dequantize_row_* (ggml-quants.c). */
int lv_gguf_dequantize(uint32_t type, const void *src, float *dst, int64_t n);
/* ggml's quantize_row_q8_0_ref: n (a multiple of 32) floats into n/32 34-byte blocks. */
void lv_gguf_quantize_q8_0(const float *x, void *dst, int64_t n);
/* Converts t (any type lv_gguf_dequantize reads; meant for the converted types) to Q8_0 or
 * BF16 in dst, 256 elements at a time, without an F32 copy of the tensor. dst_size must be at
 * least lv_ggml_nbytes(to_type, t->nelem). Q8_0 needs nelem % 32 == 0. */
int lv_gguf_convert_tensor(const lv_gguf_tensor *t, uint32_t to_type, void *dst,
                           size_t dst_size);

/* --- writing ---------------------------------------------------------------------------- */

typedef struct lv_gguf_writer lv_gguf_writer;

lv_gguf_writer *lv_gguf_writer_new(void);
void lv_gguf_writer_free(lv_gguf_writer *w);

/* Metadata, written in the order added. Keys must be non-empty, unique and NUL-free.
 * "general.alignment" must be a UINT32 power of two and sets the alignment. */
int lv_gguf_writer_add_u8(lv_gguf_writer *w, const char *key, uint8_t v);
int lv_gguf_writer_add_i8(lv_gguf_writer *w, const char *key, int8_t v);
int lv_gguf_writer_add_u16(lv_gguf_writer *w, const char *key, uint16_t v);
int lv_gguf_writer_add_i16(lv_gguf_writer *w, const char *key, int16_t v);
int lv_gguf_writer_add_u32(lv_gguf_writer *w, const char *key, uint32_t v);
int lv_gguf_writer_add_i32(lv_gguf_writer *w, const char *key, int32_t v);
int lv_gguf_writer_add_f32(lv_gguf_writer *w, const char *key, float v);
int lv_gguf_writer_add_bool(lv_gguf_writer *w, const char *key, bool v);
int lv_gguf_writer_add_u64(lv_gguf_writer *w, const char *key, uint64_t v);
int lv_gguf_writer_add_i64(lv_gguf_writer *w, const char *key, int64_t v);
int lv_gguf_writer_add_f64(lv_gguf_writer *w, const char *key, double v);
int lv_gguf_writer_add_str(lv_gguf_writer *w, const char *key, const char *s);
int lv_gguf_writer_add_strn(lv_gguf_writer *w, const char *key, const char *s, uint64_t n);
/* n host-order values of a numeric or BOOL elem_type (bool[] for BOOL). */
int lv_gguf_writer_add_arr(lv_gguf_writer *w, const char *key, uint32_t elem_type,
                           const void *data, uint64_t n);
/* n strings; lens NULL means each is NUL-terminated. */
int lv_gguf_writer_add_str_arr(lv_gguf_writer *w, const char *key, const char *const *strs,
                               const uint64_t *lens, uint64_t n);
/* A copy of a pair read from another file (any type). */
int lv_gguf_writer_add_kv(lv_gguf_writer *w, const lv_gguf_kv *kv);
/* Sets the alignment (a power of two); adds general.alignment unless it is 32. */
int lv_gguf_writer_set_alignment(lv_gguf_writer *w, uint32_t alignment);

/* A tensor with a PyTorch-order shape (ndim 0..4; the last dimension a multiple of the
 * type's block size). data (nbytes, which must equal the type's size for that shape) is
 * borrowed, not copied: it must stay valid until lv_gguf_writer_write returns. */
int lv_gguf_writer_add_tensor(lv_gguf_writer *w, const char *name, uint32_t type, int ndim,
                              const int64_t *shape, const void *data, uint64_t nbytes);

/* Writes header, metadata, tensor infos, padding and data (FORMATS.md 2.4) to path
 * atomically: PATH.tmp-XXXXXX in the same directory, fsync, rename over path. */
int lv_gguf_writer_write(lv_gguf_writer *w, const char *path);

#endif /* LV_IO_GGUF_H */
