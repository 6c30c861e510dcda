/*
 * checkpoint.h (internal): any checkpoint lavinia reads, seen one way.
 *
 * lv_checkpoint_open sniffs what PATH is (a Hugging Face directory, a .safetensors file, a
 * GGUF file, a llama2.c .bin) and gives the hyper-parameters (struct lv_model_config), the
 * metadata as text, and every tensor under its canonical name (io/names.h) with its stored
 * type, its PyTorch-order shape and a pointer to its bytes in the mapped file. Nothing is
 * converted or copied at open: loaders read what they need, and q/k rows keep the order the
 * file stores them in (tensor->qk_layout says which).
 *
 *     struct lv_checkpoint ck;
 *     if (lv_checkpoint_open(&ck, "stories260K.bin", NULL) != LV_OK)
 *         fprintf(stderr, "lavinia: %s\n", lv_errmsg());
 *     for (int i = 0; i < ck.n_tensors; i++) ...
 *     lv_checkpoint_close(&ck);
 */
#ifndef LV_IO_CHECKPOINT_H
#define LV_IO_CHECKPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "io/model-config.h"
#include "lavinia/tensor.h"

enum lv_ckpt_format {
    LV_CKPT_HF_DIR,       /* config.json + model.safetensors or a sharded index */
    LV_CKPT_SAFETENSORS,  /* a lone .safetensors file (no config: tensors only) */
    LV_CKPT_GGUF,
    LV_CKPT_LLAMA2C,
};

/* Storage types lavinia knows how to read, across formats. */
enum lv_ckpt_type {
    LV_CKPT_F32, LV_CKPT_F16, LV_CKPT_BF16, LV_CKPT_F64,
    LV_CKPT_I8, LV_CKPT_U8, LV_CKPT_I16, LV_CKPT_I32, LV_CKPT_I64, LV_CKPT_BOOL,
    LV_CKPT_Q8_0, LV_CKPT_Q4_0,                       /* ggml blocks, kept as stored */
    LV_CKPT_Q4_K, LV_CKPT_Q5_K, LV_CKPT_Q6_K,         /* converted at load (Q8_0 or BF16) */
    LV_CKPT_Q4_1, LV_CKPT_Q5_0, LV_CKPT_Q5_1,         /* the same */
    LV_CKPT_Q2_K, LV_CKPT_Q3_K, LV_CKPT_IQ4_NL, LV_CKPT_IQ4_XS,
    LV_CKPT_OTHER,                                    /* listed by info, refused by loaders */
    LV_CKPT_TYPE_COUNT
};

struct lv_ckpt_tensor {
    char name[128];              /* canonical name (io/names.h) */
    char file_name[128];         /* as the file stores it */
    enum lv_ckpt_type type;
    char type_name[16];          /* the file's own name for the type ("Q4_K", "BF16") */
    int ndim;
    int64_t shape[LV_MAX_DIMS];  /* PyTorch order */
    const void *data;            /* in the mapped file; may be unaligned */
    uint64_t nbytes;
    bool meta_qk;                /* a q/k weight whose rows are in Meta (adjacent-pair) order */
};

/* Metadata as text, for `lavinia info` (GGUF key/values, safetensors __metadata__, ...). */
struct lv_ckpt_meta {
    char *key;
    char *value;                 /* arrays summarised: "[32000 strings: \"<unk>\", ...]" */
};

struct lv_checkpoint {
    char path[4096];
    enum lv_ckpt_format format;
    bool has_config;             /* false for a lone .safetensors file, an mmproj or LoRA
                                    GGUF, a vocabulary-only GGUF */
    char summary[160];           /* what the file is, in words, when it has no config */
    struct lv_model_config config;
    struct lv_ckpt_tensor *tensors;
    int n_tensors;
    struct lv_ckpt_meta *meta;
    int n_meta;
    char tokenizer[256];         /* what tokenizer the checkpoint carries, in words */
    void *impl;                  /* the format reader's handles */
};

/* Open PATH (file or directory). mmproj: NULL, or a clip GGUF whose vision tower and
 * projector join a GGUF text model (LLaVA). tokenizer: NULL, or llama2.c's tokenizer.bin. */
int lv_checkpoint_open(struct lv_checkpoint *ck, const char *path, const char *mmproj,
                       const char *tokenizer);
void lv_checkpoint_close(struct lv_checkpoint *ck);
const struct lv_ckpt_tensor *lv_checkpoint_find(const struct lv_checkpoint *ck,
                                                const char *name);
const char *lv_ckpt_format_name(enum lv_ckpt_format f);
const char *lv_ckpt_type_name(enum lv_ckpt_type t);
/* The ggml type (lv_ggml_type) of a storage type, -1 when GGUF has none. */
int lv_ckpt_type_ggml(enum lv_ckpt_type t);

/* Write ck as a Hugging Face directory (config.json, model.safetensors, tokenizer files when
 * the input has them) or as GGUF in llama.cpp's conventions (LLaVA: the text model, and the
 * tower and projector in an mmproj file beside it, lv_checkpoint_mmproj_path). q/k rows are
 * permuted to each format's order; quantised GGUF types are dequantised for Hugging Face (F32).
 * Hugging Face weights larger than shard_bytes (0: LV_CKPT_SHARD_BYTES) are split into
 * model-0000N-of-0000M.safetensors shards with a model.safetensors.index.json, as
 * transformers' max_shard_size does. Messages on standard error say what was not written
 * (no tokenizer, ...). */
#define LV_CKPT_SHARD_BYTES ((uint64_t)2 << 30)
int lv_checkpoint_write_hf(const struct lv_checkpoint *ck, const char *dir,
                           uint64_t shard_bytes);
int lv_checkpoint_write_gguf(const struct lv_checkpoint *ck, const char *path);
/* Where write_gguf puts a LLaVA's vision tower: PATH.gguf -> PATH-mmproj.gguf. */
int lv_checkpoint_mmproj_path(const char *path, char *out, size_t n);

#endif /* LV_IO_CHECKPOINT_H */
