/*
 * tok-impl.h (internal to src/text): the tokenizer's representation, shared by the BPE core
 * (tokenizer.c) and the loaders (tok-load.c).
 */
#ifndef LV_TEXT_TOK_IMPL_H
#define LV_TEXT_TOK_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "text/tokenizer.h"

/* the most pieces a vocabulary may have, and the longest piece */
#define TOK_MAX_VOCAB (1 << 22)
#define TOK_MAX_PIECE 1024

/* A token matched in the text before the model sees it: SentencePiece's user-defined pieces,
 * control pieces when special tokens are parsed, Hugging Face's added tokens. */
struct tok_special {
    int32_t id;
    uint32_t len;                 /* the piece's length (set by tok_finish) */
    bool special;                 /* matched only when special tokens are parsed */
    bool resets_prefix;           /* the text after it gets the dummy prefix again */
    bool lstrip, rstrip, single_word;
};

/* Where the dummy prefix ("▁" before the text) goes. */
enum tok_prefix {
    TOK_PREFIX_NONE,
    TOK_PREFIX_TEXT,              /* SentencePiece: once, at the start of the whole text */
    TOK_PREFIX_SEGMENT,           /* HF legacy Prepend normaliser: every non-empty segment */
    TOK_PREFIX_FIRST,             /* HF Metaspace "first": first segment, unless it has one */
    TOK_PREFIX_ALWAYS,            /* HF Metaspace "always": every segment, unless it has one */
};

/* How decoding drops the space the prefix added. */
enum tok_strip {
    TOK_STRIP_NONE,
    TOK_STRIP_PIECE,              /* the leading "▁" of the first non-control piece */
    TOK_STRIP_TEXT,               /* one leading ' ' of the text (HF Strip decoder) */
};

struct lv_tokenizer {
    enum lv_tok_source source;
    char describe[256];
    int32_t n, cap;               /* pieces, and room for them */
    char *text;                   /* every piece, each followed by a NUL */
    size_t text_len, text_cap;
    uint32_t *off, *len;          /* [n] */
    float *score;                 /* [n] */
    uint8_t *type;                /* [n] enum lv_tok_type */
    int32_t *slots;               /* piece -> id, open addressing, -1 empty */
    uint32_t mask;
    /* rank-based merges (tokenizer.json): (left id, right id) -> rank, result id */
    bool rank_merges;
    bool ignore_merges;           /* a word that is a piece is taken whole */
    struct tok_merge { int32_t a, b, rank, id; } *merges;
    uint32_t merge_mask;
    int32_t n_merges;
    int32_t byte_id[256];         /* <0xNN>, -1 when absent */
    int32_t bos, eos, pad, unk, image;
    bool byte_fallback;
    bool fuse_unk;                /* consecutive unknown pieces become one */
    bool escape_ws;               /* ' ' -> "▁" */
    bool remove_extra_ws;         /* SentencePiece: trim and squeeze spaces */
    bool split_words;             /* HF Metaspace split: each "▁" starts a word */
    bool parse_special;           /* default for LV_TOK_PARSE_SPECIAL */
    enum tok_prefix prefix;
    enum tok_strip strip;
    char unk_surface[32];         /* what decoding shows for the unknown piece */
    char *chat_template;          /* the checkpoint's Jinja chat template, or NULL */
    struct tok_special *specials; /* sorted by piece length, longest first */
    int n_specials, cap_specials;
};

/* --- building (tokenizer.c) --- */
lv_tokenizer *tok_new(enum lv_tok_source source);
/* Adds piece id == tok->n; an error naming `what` on a duplicate piece. */
int tok_add_piece(lv_tokenizer *tok, const char *s, size_t n, float score, int type,
                  const char *what);
/* Finish: hash table, byte ids, special list, checks. */
int tok_finish(lv_tokenizer *tok, const char *what);
int tok_add_merge(lv_tokenizer *tok, int32_t a, int32_t b, int32_t rank, int32_t id);
int tok_add_special(lv_tokenizer *tok, const struct tok_special *sp);

#endif /* LV_TEXT_TOK_IMPL_H */
