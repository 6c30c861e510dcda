/*
 * tokenizer.h (internal): LLaMA-family BPE tokenizers from every place their vocabulary lives.
 *
 * One BPE core serves four sources, and each source encodes as its own reference does:
 *   - tokenizer.model (SentencePiece protobuf): score-based merges, as SentencePiece;
 *   - tokenizer.json (Hugging Face): rank-based merges, added tokens split out of the text
 *     first, as tokenizers' encode(text, add_special_tokens=False);
 *   - GGUF metadata (tokenizer.ggml.*): as SentencePiece (llama.cpp's "llama" vocabulary);
 *   - llama2.c tokenizer.bin: as SentencePiece on the vocabulary it was exported from.
 * Byte fallback (<0xNN> pieces), unknown tokens and the piece types (normal, unknown, control,
 * user-defined, unused, byte) follow SentencePiece's model_interface.
 *
 *     lv_tokenizer *tok;
 *     if (lv_tok_open(&tok, "llava-1.5-7b-hf", NULL) != LV_OK)
 *         return fail(lv_errmsg());
 *     lv_tok_ids ids = { 0 };
 *     lv_tok_encode(tok, text, strlen(text), LV_TOK_BOS, &ids);
 *     ...
 *     lv_tok_ids_free(&ids);
 *     lv_tok_free(tok);
 *
 * Decoding goes through a stream that never emits part of a UTF-8 character, so a chat can
 * print tokens as they come; lv_tok_decode is the stream run to its end.
 */
#ifndef LV_TEXT_TOKENIZER_H
#define LV_TEXT_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct lv_gguf_file;
struct lv_gguf_writer;

/* Piece types, numbered as SentencePiece and GGUF's token_type number them. */
enum lv_tok_type {
    LV_TOK_NORMAL = 1,
    LV_TOK_UNKNOWN = 2,
    LV_TOK_CONTROL = 3,
    LV_TOK_USER_DEFINED = 4,
    LV_TOK_UNUSED = 5,
    LV_TOK_BYTE = 6,
};

enum lv_tok_source {
    LV_TOK_SRC_SPM,       /* tokenizer.model */
    LV_TOK_SRC_JSON,      /* tokenizer.json */
    LV_TOK_SRC_GGUF,      /* tokenizer.ggml.* */
    LV_TOK_SRC_LLAMA2C,   /* tokenizer.bin */
};

typedef struct lv_tokenizer lv_tokenizer;

/* A growable id list, reused across calls (no allocation once it is large enough). */
typedef struct lv_tok_ids {
    int32_t *v;
    size_t n, cap;
} lv_tok_ids;

void lv_tok_ids_free(lv_tok_ids *ids);
int lv_tok_ids_push(lv_tok_ids *ids, int32_t id);

/* --- opening ----------------------------------------------------------------------------- */

/* The tokenizer of PATH: a model directory (tokenizer.json wins over tokenizer.model, as
 * transformers' AutoTokenizer; added_tokens.json beside tokenizer.model is read), a GGUF file
 * (its metadata only: a vocabulary-only file does), a tokenizer.model, a tokenizer.json or a
 * tokenizer.bin, recognised by content. tok_file (NULL: none) names the tokenizer file
 * explicitly; with a llama2.c model as PATH it is the model's tokenizer.bin. */
int lv_tok_open(lv_tokenizer **out, const char *path, const char *tok_file);
/* The same from bytes in memory (name is for messages). vocab_size is needed for a
 * tokenizer.bin only (0: count the records). */
int lv_tok_load_spm(lv_tokenizer **out, const void *buf, size_t n, const char *name);
int lv_tok_load_json(lv_tokenizer **out, const void *buf, size_t n, const char *name);
int lv_tok_load_llama2c(lv_tokenizer **out, const void *buf, size_t n, const char *name,
                        int64_t vocab_size);
int lv_tok_load_gguf(lv_tokenizer **out, const struct lv_gguf_file *f);
/* HF added_tokens.json ({"<image>": 32000, ...}) added to an SPM tokenizer, as transformers'
 * slow tokenizers do. */
int lv_tok_add_tokens_json(lv_tokenizer *tok, const void *buf, size_t n, const char *name);
void lv_tok_free(lv_tokenizer *tok);

/* --- encoding ---------------------------------------------------------------------------- */

enum {
    LV_TOK_BOS = 1 << 0,              /* prepend the BOS id */
    LV_TOK_EOS = 1 << 1,              /* append the EOS id */
    LV_TOK_PARSE_SPECIAL = 1 << 2,    /* control/special tokens in the text become their ids */
    LV_TOK_NO_PARSE_SPECIAL = 1 << 3, /* ...stay text (default for SPM, GGUF, llama2.c) */
};

/* Appends the ids of text (n bytes, any bytes) to ids. */
int lv_tok_encode(const lv_tokenizer *tok, const char *text, size_t n, int flags,
                  lv_tok_ids *ids);

/* --- decoding ---------------------------------------------------------------------------- */

typedef struct lv_tok_stream {
    const lv_tokenizer *tok;
    unsigned char pending[8];     /* bytes of a UTF-8 character not yet complete */
    int n_pending;
    bool started;                 /* something was emitted (the leading space is settled) */
    bool space_pending;           /* a leading space held back: strip it or emit it */
} lv_tok_stream;

void lv_tok_stream_init(lv_tok_stream *s, const lv_tokenizer *tok);
/* Appends to out (cap bytes, NUL-terminated) the text that id completes; returns the number of
 * bytes written, or -1 when out is too small (at most 8 + the longest piece is needed) or
 * the id is out of range (message set). */
int lv_tok_stream_push(lv_tok_stream *s, int32_t id, char *out, size_t cap);
/* What is still held back (an incomplete character becomes U+FFFD per byte). */
int lv_tok_stream_flush(lv_tok_stream *s, char *out, size_t cap);
/* Whole decode into a malloc'd, NUL-terminated string. */
int lv_tok_decode(const lv_tokenizer *tok, const int32_t *ids, size_t n, char **out,
                  size_t *len);

/* --- the vocabulary ---------------------------------------------------------------------- */

int32_t lv_tok_n_vocab(const lv_tokenizer *tok);
const char *lv_tok_piece(const lv_tokenizer *tok, int32_t id, size_t *len);
enum lv_tok_type lv_tok_piece_type(const lv_tokenizer *tok, int32_t id);
float lv_tok_piece_score(const lv_tokenizer *tok, int32_t id);
/* The id of a piece, -1 if none. */
int32_t lv_tok_find(const lv_tokenizer *tok, const char *piece, size_t len);
/* Special ids, -1 when the vocabulary has none. */
int32_t lv_tok_bos(const lv_tokenizer *tok);
int32_t lv_tok_eos(const lv_tokenizer *tok);
int32_t lv_tok_pad(const lv_tokenizer *tok);
int32_t lv_tok_unk(const lv_tokenizer *tok);
int32_t lv_tok_image(const lv_tokenizer *tok);    /* "<image>" */
enum lv_tok_source lv_tok_source(const lv_tokenizer *tok);
/* The checkpoint's Jinja chat template (tokenizer_config.json, chat_template.json,
 * chat_template.jinja or GGUF tokenizer.chat_template), or NULL. */
const char *lv_tok_chat_template(const lv_tokenizer *tok);
/* "SentencePiece tokenizer.model, 32000 pieces, byte fallback" */
const char *lv_tok_describe(const lv_tokenizer *tok);

/* Writes the vocabulary as llama.cpp's "llama" GGUF keys (tokenizer.ggml.*). A rank-based
 * tokenizer.json gets scores from its merge ranks (earlier merge, higher score). A model
 * whose embedding has more rows (n_rows > pieces: llava-hf pads to 32064) gets "[PADi]"
 * pieces of type UNUSED and score -1000 up to n_rows, as llama.cpp's converter writes. */
int lv_tok_write_gguf(const lv_tokenizer *tok, struct lv_gguf_writer *w, int64_t n_rows);

#endif /* LV_TEXT_TOKENIZER_H */
