/*
 * llama2c.h (internal): karpathy/llama2.c checkpoints (".bin", version 0) and tokenizer.bin.
 *
 * A checkpoint is opened read-only (mmap) and its weights are exposed as views under their
 * Hugging Face names, so the rest of lavinia loads a llama2.c model the way it loads any
 * other checkpoint:
 *
 *     lv_l2c_file f;
 *     if (lv_l2c_open(&f, "stories260K.bin") != LV_OK)
 *         return fail(lv_errmsg());
 *     for (int64_t i = 0; i < lv_l2c_tensor_count(&f); i++) {
 *         lv_l2c_tensor t;
 *         lv_l2c_tensor_at(&f, i, &t);      // t.name, t.shape, t.data (F32, maybe unaligned)
 *         ...
 *     }
 *     lv_l2c_close(&f);
 *
 * The views point into the file's map (or the caller's buffer for _open_mem) and live until
 * lv_l2c_close. The data are little-endian F32 and may be unaligned: copy them with memcpy,
 * never cast to float *.
 *
 * q/k layout: llama2.c stores the rows of wq and wk in Meta's adjacent-pair rotary order
 * (config.qk_layout == LV_QK_META). The views below hand them out unchanged, under the Hugging
 * Face names; converting them to the Hugging Face half-split order (FORMATS.md 4.2) is the
 * caller's job.
 *
 * Only the version-0 ("legacy_export") layout is read; version 1/2 files (magic "ak42") and
 * PyTorch checkpoints are refused with a message that says what to do instead.
 */
#ifndef LV_IO_LLAMA2C_H
#define LV_IO_LLAMA2C_H

#include <stddef.h>
#include <stdint.h>

#include "io/model-config.h"

/* ---- checkpoint ---------------------------------------------------------------------- */

/* The groups of floats in a version-0 file, in file order (see llama2c.c). */
enum lv_l2c_group {
    LV_L2C_TOK_EMB,       /* [V, C] */
    LV_L2C_RMS_ATT,       /* [L, C] */
    LV_L2C_WQ,            /* [L, C, C] */
    LV_L2C_WK,            /* [L, KVC, C] */
    LV_L2C_WV,            /* [L, KVC, C] */
    LV_L2C_WO,            /* [L, C, C] */
    LV_L2C_RMS_FFN,       /* [L, C] */
    LV_L2C_W1,            /* [L, F, C]  gate */
    LV_L2C_W2,            /* [L, C, F]  down */
    LV_L2C_W3,            /* [L, F, C]  up */
    LV_L2C_RMS_FINAL,     /* [C] */
    LV_L2C_FREQ_REAL,     /* [T, D/2]  unused (the rotary table is recomputed) */
    LV_L2C_FREQ_IMAG,     /* [T, D/2]  unused */
    LV_L2C_WCLS,          /* [V, C]  only when the classifier is not shared */
    LV_L2C_GROUP_COUNT
};

/* An open llama2.c checkpoint. Fields are read-only for callers. */
typedef struct lv_l2c_file {
    struct lv_model_config config;    /* arch llama, LV_QK_META, tied = (vocab_size > 0) */
    const uint8_t *data;              /* the whole file (map or caller's buffer) */
    uint64_t size;                    /* its size in bytes */
    void *map;                        /* mmap base, NULL for _open_mem */
    size_t map_size;
    char *name;                       /* the path (or name) used in messages; owned */
    uint64_t group_offset[LV_L2C_GROUP_COUNT];   /* byte offset of each group in the file */
    uint64_t group_floats[LV_L2C_GROUP_COUNT];   /* floats in each group (0: absent) */
    int64_t n_tensors;                /* views lv_l2c_tensor_at hands out */
} lv_l2c_file;

/* One weight as a view into the file. */
typedef struct lv_l2c_tensor {
    char name[64];            /* Hugging Face name, e.g. "model.layers.3.mlp.up_proj.weight" */
    int ndim;                 /* 1 (norms) or 2 (matrices) */
    int64_t shape[2];         /* PyTorch order: [out, in] for matrices, [C] for norms */
    const void *data;         /* F32 little-endian bytes in the file; may be unaligned */
    uint64_t nbytes;          /* 4 * shape[0] * shape[1] */
    uint64_t offset;          /* byte offset of data in the file */
} lv_l2c_tensor;

/* Open a version-0 llama2.c checkpoint with mmap. On failure f is left closed (zeroed) and
 * the message names the file and the problem. */
int lv_l2c_open(lv_l2c_file *f, const char *path);
/* Same for a caller-owned buffer of n bytes, which must outlive f; name is for messages. */
int lv_l2c_open_mem(lv_l2c_file *f, const void *buf, size_t n, const char *name);
/* Unmap and free; safe on a zeroed or already closed f. */
void lv_l2c_close(lv_l2c_file *f);

/* Number of weights: 1 (embedding) + 9 per layer + 1 (final norm) + 1 if the classifier is
 * not shared (lm_head.weight). */
int64_t lv_l2c_tensor_count(const lv_l2c_file *f);
/* The i-th weight, in a fixed order: model.embed_tokens.weight; for each layer N:
 * input_layernorm, self_attn.{q,k,v,o}_proj, post_attention_layernorm, mlp.{gate,up,down}_proj
 * (all "model.layers.N.*.weight"); model.norm.weight; lm_head.weight if untied. */
int lv_l2c_tensor_at(const lv_l2c_file *f, int64_t i, lv_l2c_tensor *out);
/* The weight with that Hugging Face name; an error if there is none (lm_head.weight of a
 * tied model included: use model.embed_tokens.weight). */
int lv_l2c_tensor_find(const lv_l2c_file *f, const char *name, lv_l2c_tensor *out);

/* ---- tokenizer.bin ------------------------------------------------------------------- */

/* A loaded tokenizer.bin; owns copies of the pieces and scores (the file is not kept). */
typedef struct lv_l2c_tokenizer {
    int64_t vocab_size;
    uint32_t max_token_length;    /* as the file says (27 for Llama-2) */
    float *scores;                /* [vocab_size], all finite */
    uint32_t *offsets;            /* [vocab_size + 1]: piece i is text[offsets[i]..] */
    char *text;                   /* every piece followed by a NUL that is not part of it */
} lv_l2c_tokenizer;

/* Read a tokenizer.bin holding exactly vocab_size records (the count is not in the file: it
 * comes from the model's header). On failure t is left zeroed. */
int lv_l2c_tokenizer_open(lv_l2c_tokenizer *t, const char *path, int64_t vocab_size);
int lv_l2c_tokenizer_open_mem(lv_l2c_tokenizer *t, const void *buf, size_t n,
                              const char *name, int64_t vocab_size);
void lv_l2c_tokenizer_close(lv_l2c_tokenizer *t);
/* Piece id's bytes (may contain NUL; NUL-terminated for convenience) and its length in *len;
 * NULL if id is out of range. */
const char *lv_l2c_tokenizer_piece(const lv_l2c_tokenizer *t, int64_t id, size_t *len);

#endif /* LV_IO_LLAMA2C_H */
