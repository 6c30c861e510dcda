/*
 * tokenizer.c: the BPE core shared by every tokenizer source, and the decoder.
 *
 * Encoding (FORMATS.md 5.2, 5.3): tokens matched in the text first (user-defined pieces,
 * special tokens, Hugging Face's added tokens); the rest normalised (spaces to "▁", the
 * dummy prefix); each word split into UTF-8 characters and merged pair by pair, best pair
 * first: by the merged piece's score (SentencePiece) or by the merge's rank (tokenizer.json),
 * leftmost on ties. SentencePiece re-splits unused pieces along the merges that made them;
 * what is not a piece falls back to <0xNN> bytes or the unknown id.
 *
 * Decoding runs every piece's bytes through one UTF-8 assembler, so a stream never emits half
 * a character and the whole decode is the stream's concatenation by construction.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "text/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lavinia/error.h"
#include "text/tok-impl.h"
#include "util/buf.h"

#define SPACE_SYMBOL "\xe2\x96\x81"   /* U+2581 "▁" */

/* ----------------------------------------------------------------------------------------
 * the vocabulary
 */

static uint32_t hash_bytes(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

lv_tokenizer *tok_new(enum lv_tok_source source)
{
    lv_tokenizer *tok = calloc(1, sizeof *tok);
    if (!tok)
        return NULL;
    tok->source = source;
    tok->bos = tok->eos = tok->pad = tok->unk = tok->image = -1;
    for (int i = 0; i < 256; i++)
        tok->byte_id[i] = -1;
    tok->escape_ws = true;
    strcpy(tok->unk_surface, " \xe2\x81\x87 ");    /* SentencePiece's default " ⁇ " */
    return tok;
}

void lv_tok_free(lv_tokenizer *tok)
{
    if (!tok)
        return;
    free(tok->text);
    free(tok->off);
    free(tok->len);
    free(tok->score);
    free(tok->type);
    free(tok->slots);
    free(tok->merges);
    free(tok->specials);
    free(tok->chat_template);
    free(tok);
}

void lv_tok_ids_free(lv_tok_ids *ids)
{
    free(ids->v);
    memset(ids, 0, sizeof *ids);
}

int lv_tok_ids_push(lv_tok_ids *ids, int32_t id)
{
    if (ids->n == ids->cap) {
        size_t cap = ids->cap ? 2 * ids->cap : 64;
        int32_t *v = realloc(ids->v, cap * sizeof *v);
        if (!v)
            return lv_error_status(LV_ENOMEM, "tokenizer: out of memory");
        ids->v = v;
        ids->cap = cap;
    }
    ids->v[ids->n++] = id;
    return LV_OK;
}

int tok_add_piece(lv_tokenizer *tok, const char *s, size_t n, float score, int type,
                  const char *what)
{
    int32_t id = tok->n;
    if (id >= TOK_MAX_VOCAB)
        return lv_error("%s: more than %d pieces", what, TOK_MAX_VOCAB);
    if (n > TOK_MAX_PIECE)
        return lv_error("%s: piece %d is %zu bytes long (at most %d)", what, id, n,
                        TOK_MAX_PIECE);
    if (type < LV_TOK_NORMAL || type > LV_TOK_BYTE)
        return lv_error("%s: piece %d has type %d (1..6)", what, id, type);
    if (id == tok->cap) {
        size_t cap = id ? 2 * (size_t)id : 1024;
        uint32_t *off = realloc(tok->off, cap * sizeof *off);
        if (off)
            tok->off = off;
        uint32_t *len = realloc(tok->len, cap * sizeof *len);
        if (len)
            tok->len = len;
        float *sc = realloc(tok->score, cap * sizeof *sc);
        if (sc)
            tok->score = sc;
        uint8_t *ty = realloc(tok->type, cap * sizeof *ty);
        if (ty)
            tok->type = ty;
        if (!off || !len || !sc || !ty)
            return lv_error_status(LV_ENOMEM, "%s: out of memory", what);
        tok->cap = (int32_t)cap;
    }
    if (tok->text_len + n + 1 > tok->text_cap) {
        size_t cap = tok->text_cap ? tok->text_cap : 65536;
        while (cap < tok->text_len + n + 1)
            cap *= 2;
        char *t = realloc(tok->text, cap);
        if (!t)
            return lv_error_status(LV_ENOMEM, "%s: out of memory", what);
        tok->text = t;
        tok->text_cap = cap;
    }
    if (tok->text_len > UINT32_MAX - n - 1)
        return lv_error("%s: the pieces take more than 4 GiB", what);
    memcpy(tok->text + tok->text_len, s, n);
    tok->text[tok->text_len + n] = 0;
    tok->off[id] = (uint32_t)tok->text_len;
    tok->len[id] = (uint32_t)n;
    tok->score[id] = score;
    tok->type[id] = (uint8_t)type;
    tok->text_len += n + 1;
    tok->n++;
    return LV_OK;
}

int32_t lv_tok_find(const lv_tokenizer *tok, const char *piece, size_t len)
{
    if (!tok->slots)
        return -1;
    for (uint32_t h = hash_bytes(piece, len) & tok->mask;; h = (h + 1) & tok->mask) {
        int32_t id = tok->slots[h];
        if (id < 0)
            return -1;
        if (tok->len[id] == len && memcmp(tok->text + tok->off[id], piece, len) == 0)
            return id;
    }
}

int tok_add_merge(lv_tokenizer *tok, int32_t a, int32_t b, int32_t rank, int32_t id)
{
    /* the table is sized by the loader's count: tok->merge_mask set before the first add */
    for (uint32_t h = (hash_bytes((const char *)&a, 4) ^ (uint32_t)b * 2654435761u) &
                      tok->merge_mask;;
         h = (h + 1) & tok->merge_mask) {
        struct tok_merge *m = &tok->merges[h];
        if (m->id < 0) {
            *m = (struct tok_merge){ .a = a, .b = b, .rank = rank, .id = id };
            tok->n_merges++;
            return LV_OK;
        }
        if (m->a == a && m->b == b)
            return LV_OK;        /* a repeated merge keeps its first (best) rank */
    }
}

static const struct tok_merge *find_merge(const lv_tokenizer *tok, int32_t a, int32_t b)
{
    for (uint32_t h = (hash_bytes((const char *)&a, 4) ^ (uint32_t)b * 2654435761u) &
                      tok->merge_mask;;
         h = (h + 1) & tok->merge_mask) {
        const struct tok_merge *m = &tok->merges[h];
        if (m->id < 0)
            return NULL;
        if (m->a == a && m->b == b)
            return m;
    }
}

int tok_add_special(lv_tokenizer *tok, const struct tok_special *sp)
{
    for (int i = 0; i < tok->n_specials; i++)
        if (tok->specials[i].id == sp->id) {
            tok->specials[i] = *sp;     /* a later description wins (added_tokens) */
            return LV_OK;
        }
    if (tok->n_specials == tok->cap_specials) {
        int cap = tok->cap_specials ? 2 * tok->cap_specials : 16;
        void *p = realloc(tok->specials, (size_t)cap * sizeof *tok->specials);
        if (!p)
            return lv_error_status(LV_ENOMEM, "tokenizer: out of memory");
        tok->specials = p;
        tok->cap_specials = cap;
    }
    tok->specials[tok->n_specials++] = *sp;
    return LV_OK;
}

static int cmp_special(const void *a, const void *b)
{
    const struct tok_special *x = a, *y = b;
    return x->len != y->len ? (x->len > y->len ? -1 : 1) : (x->id > y->id) - (x->id < y->id);
}

/* "<0x41>" -> 0x41, or -1 */
static int byte_piece(const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>')
        return -1;
    const char *h = strchr(hex, s[3]), *l = strchr(hex, s[4]);
    if (!h || !l || !s[3] || !s[4])
        return -1;
    return (int)((h - hex) * 16 + (l - hex));
}

int tok_finish(lv_tokenizer *tok, const char *what)
{
    if (tok->n == 0)
        return lv_error("%s: the vocabulary is empty", what);
    uint32_t size = 1;
    while (size < 2 * (uint32_t)tok->n)
        size *= 2;
    free(tok->slots);
    tok->slots = malloc(size * sizeof *tok->slots);
    if (!tok->slots)
        return lv_error_status(LV_ENOMEM, "%s: out of memory", what);
    memset(tok->slots, 0xff, size * sizeof *tok->slots);
    tok->mask = size - 1;
    for (int32_t id = 0; id < tok->n; id++) {
        const char *s = tok->text + tok->off[id];
        size_t n = tok->len[id];
        uint32_t h = hash_bytes(s, n) & tok->mask;
        for (; tok->slots[h] >= 0; h = (h + 1) & tok->mask) {
            int32_t o = tok->slots[h];
            if (tok->len[o] == n && memcmp(tok->text + tok->off[o], s, n) == 0)
                return lv_error("%s: pieces %d and %d are both '%.*s'", what, o, id,
                                (int)(n > 40 ? 40 : n), s);
        }
        tok->slots[h] = id;
        /* tokenizer.json has no piece types: with byte fallback, <0xNN> pieces are bytes */
        if (tok->source == LV_TOK_SRC_JSON && tok->byte_fallback &&
            tok->type[id] == LV_TOK_NORMAL && byte_piece(s, n) >= 0)
            tok->type[id] = LV_TOK_BYTE;
        if (tok->type[id] == LV_TOK_BYTE) {
            int b = byte_piece(s, n);
            if (b < 0)
                return lv_error("%s: byte piece %d is '%.*s', not <0xNN>", what, id,
                                (int)(n > 40 ? 40 : n), s);
            tok->byte_id[b] = id;
        }
    }
    tok->image = lv_tok_find(tok, "<image>", 7);
    for (int32_t *p = &tok->bos; p <= &tok->unk; p++)
        if (*p >= tok->n)
            return lv_error("%s: special id %d is past the %d pieces", what, *p, tok->n);
    /* SentencePiece-style sources: user-defined pieces are always matched in the text,
     * control and unknown ones when special tokens are parsed (as llama.cpp does) */
    if (tok->source != LV_TOK_SRC_JSON)
        for (int32_t id = 0; id < tok->n; id++) {
            int t = tok->type[id];
            bool known = false;
            for (int i = 0; i < tok->n_specials && !known; i++)
                known = tok->specials[i].id == id;
            if ((t != LV_TOK_USER_DEFINED && t != LV_TOK_CONTROL && t != LV_TOK_UNKNOWN) ||
                tok->len[id] == 0 || known)
                continue;
            struct tok_special sp = { .id = id, .special = t != LV_TOK_USER_DEFINED,
                                      .resets_prefix = false };
            int rc = tok_add_special(tok, &sp);
            if (rc)
                return rc;
        }
    for (int i = 0; i < tok->n_specials; i++)
        if (tok->specials[i].id < 0 || tok->specials[i].id >= tok->n ||
            tok->len[tok->specials[i].id] == 0)
            return lv_error("%s: added token %d is not a piece of the vocabulary", what,
                            tok->specials[i].id);
        else
            tok->specials[i].len = tok->len[tok->specials[i].id];
    if (tok->n_specials > 1)
        qsort(tok->specials, (size_t)tok->n_specials, sizeof *tok->specials, cmp_special);
    return LV_OK;
}

/* ----------------------------------------------------------------------------------------
 * BPE on one word
 */

struct sym {
    uint32_t start, len;          /* bytes in the word */
    int32_t prev, next;
    int32_t id;                   /* the piece, -1 when the text is not one */
    int32_t node;                 /* merge tree node (SentencePiece re-splitting) */
    uint32_t ver;
};

struct node {
    int32_t left, right;          /* -1 for a character */
    uint32_t start, len;
};

struct pair {
    double prio;                  /* higher first */
    int32_t left, right;
    uint32_t ver_l, ver_r;
};

struct scratch {
    struct sym *syms;
    struct node *nodes;
    struct pair *heap;
    size_t cap_syms, n_heap, cap_heap;
    int32_t n_nodes;
};

static bool pair_before(const struct pair *a, const struct pair *b)
{
    return a->prio > b->prio || (a->prio == b->prio && a->left < b->left);
}

static int heap_push(struct scratch *s, struct pair p)
{
    if (s->n_heap == s->cap_heap) {
        size_t cap = s->cap_heap ? 2 * s->cap_heap : 64;
        struct pair *h = realloc(s->heap, cap * sizeof *h);
        if (!h)
            return lv_error_status(LV_ENOMEM, "tokenizer: out of memory");
        s->heap = h;
        s->cap_heap = cap;
    }
    size_t i = s->n_heap++;
    while (i > 0 && pair_before(&p, &s->heap[(i - 1) / 2])) {
        s->heap[i] = s->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    s->heap[i] = p;
    return LV_OK;
}

static struct pair heap_pop(struct scratch *s)
{
    struct pair top = s->heap[0], last = s->heap[--s->n_heap];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= s->n_heap)
            break;
        if (c + 1 < s->n_heap && pair_before(&s->heap[c + 1], &s->heap[c]))
            c++;
        if (!pair_before(&s->heap[c], &last))
            break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (s->n_heap > 0)
        s->heap[i] = last;
    return top;
}

static bool mergeable(const lv_tokenizer *tok, int32_t id)
{
    int t = tok->type[id];
    return t == LV_TOK_NORMAL || t == LV_TOK_USER_DEFINED || t == LV_TOK_UNUSED;
}

static int try_pair(const lv_tokenizer *tok, struct scratch *s, const char *w, int32_t l,
                    int32_t r)
{
    if (l < 0 || r < 0)
        return LV_OK;
    const struct sym *a = &s->syms[l], *b = &s->syms[r];
    struct pair p = { .left = l, .right = r, .ver_l = a->ver, .ver_r = b->ver };
    if (tok->rank_merges) {
        if (a->id < 0 || b->id < 0)
            return LV_OK;
        const struct tok_merge *m = find_merge(tok, a->id, b->id);
        if (!m)
            return LV_OK;
        p.prio = -(double)m->rank;
    } else {
        int32_t id = lv_tok_find(tok, w + a->start, a->len + b->len);
        if (id < 0 || !mergeable(tok, id))
            return LV_OK;
        p.prio = tok->score[id];
    }
    return heap_push(s, p);
}

/* bytes of one UTF-8 character at s (n > 0 left); an invalid lead or a truncated sequence
 * is one byte */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    size_t k = s[0] < 0x80 ? 1 : (s[0] >> 5) == 6 ? 2 : (s[0] >> 4) == 14 ? 3
               : (s[0] >> 3) == 30 ? 4 : 1;
    if (k > n)
        return 1;
    for (size_t i = 1; i < k; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 1;
    return k;
}

struct emit {
    lv_tok_ids *ids;
    size_t first;                 /* the first id of this encode call (unknown fusing) */
};

static int emit_unk(const lv_tokenizer *tok, struct emit *e)
{
    if (tok->unk < 0)
        return lv_error("tokenizer: text needs the unknown token and the vocabulary has none");
    if (tok->fuse_unk && e->ids->n > e->first && e->ids->v[e->ids->n - 1] == tok->unk)
        return LV_OK;
    return lv_tok_ids_push(e->ids, tok->unk);
}

static int emit_bytes(const lv_tokenizer *tok, struct emit *e, const char *p, size_t n)
{
    if (!tok->byte_fallback)
        return emit_unk(tok, e);
    for (size_t i = 0; i < n; i++) {
        int32_t id = tok->byte_id[(unsigned char)p[i]];
        int rc = id >= 0 ? lv_tok_ids_push(e->ids, id) : emit_unk(tok, e);
        if (rc)
            return rc;
    }
    return LV_OK;
}

/* SentencePiece's output of one final symbol: the piece, or its halves when it is unused,
 * or bytes / unknown when the text is no piece */
static int emit_node(const lv_tokenizer *tok, struct scratch *s, struct emit *e,
                     const char *w, int32_t k)
{
    const struct node *nd = &s->nodes[k];
    int32_t id = lv_tok_find(tok, w + nd->start, nd->len);
    if (id >= 0 && mergeable(tok, id) && tok->type[id] != LV_TOK_UNUSED)
        return lv_tok_ids_push(e->ids, id);
    if (nd->left >= 0) {
        int rc = emit_node(tok, s, e, w, nd->left);
        return rc ? rc : emit_node(tok, s, e, w, nd->right);
    }
    return emit_bytes(tok, e, w + nd->start, nd->len);
}

static int reserve(struct scratch *s, size_t n)
{
    if (n <= s->cap_syms)
        return LV_OK;
    size_t cap = s->cap_syms ? s->cap_syms : 64;
    while (cap < n)
        cap *= 2;
    struct sym *y = realloc(s->syms, cap * sizeof *y);
    if (y)
        s->syms = y;
    struct node *d = realloc(s->nodes, 2 * cap * sizeof *d);
    if (d)
        s->nodes = d;
    if (!y || !d)
        return lv_error_status(LV_ENOMEM, "tokenizer: out of memory");
    s->cap_syms = cap;
    return LV_OK;
}

static int bpe_word(const lv_tokenizer *tok, struct scratch *s, struct emit *e, const char *w,
                    size_t n)
{
    if (n == 0)
        return LV_OK;
    if (n > UINT32_MAX / 2)
        return lv_error("tokenizer: a word of %zu bytes is too long", n);
    int rc;
    if (tok->ignore_merges) {
        int32_t id = lv_tok_find(tok, w, n);
        if (id >= 0)
            return lv_tok_ids_push(e->ids, id);
    }
    /* characters; for tokenizer.json, a character that is no piece becomes its bytes (or
     * the unknown id) before merging, as tokenizers' BPE builds its words */
    if ((rc = reserve(s, n + 1)))
        return rc;
    int32_t ns = 0;
    s->n_nodes = 0;
    s->n_heap = 0;
    for (size_t i = 0; i < n;) {
        size_t k = utf8_len((const unsigned char *)w + i, n - i);
        int32_t id = lv_tok_find(tok, w + i, k);
        if (tok->rank_merges && id < 0) {
            bool bytes = tok->byte_fallback;
            for (size_t j = 0; bytes && j < k; j++)
                bytes = tok->byte_id[(unsigned char)w[i + j]] >= 0;
            for (size_t j = 0; bytes && j < k; j++)
                s->syms[ns++] = (struct sym){ .start = (uint32_t)(i + j), .len = 1,
                                              .id = tok->byte_id[(unsigned char)w[i + j]] };
            if (!bytes) {
                bool fuse = tok->fuse_unk && ns > 0 && s->syms[ns - 1].id == tok->unk &&
                            tok->unk >= 0;
                if (fuse)
                    s->syms[ns - 1].len += (uint32_t)k;
                else
                    s->syms[ns++] = (struct sym){ .start = (uint32_t)i, .len = (uint32_t)k,
                                                  .id = tok->unk };
            }
        } else {
            s->syms[ns++] = (struct sym){ .start = (uint32_t)i, .len = (uint32_t)k,
                                          .id = id };
        }
        i += k;
    }
    for (int32_t i = 0; i < ns; i++) {
        s->syms[i].prev = i - 1;
        s->syms[i].next = i + 1 < ns ? i + 1 : -1;
        s->syms[i].ver = 0;
        s->syms[i].node = s->n_nodes;
        s->nodes[s->n_nodes++] = (struct node){ .left = -1, .right = -1,
                                                .start = s->syms[i].start,
                                                .len = s->syms[i].len };
    }
    for (int32_t i = 0; i + 1 < ns; i++)
        if ((rc = try_pair(tok, s, w, i, i + 1)))
            return rc;
    while (s->n_heap > 0) {
        struct pair p = heap_pop(s);
        struct sym *a = &s->syms[p.left], *b = &s->syms[p.right];
        if (a->len == 0 || b->len == 0 || a->next != p.right || a->ver != p.ver_l ||
            b->ver != p.ver_r)
            continue;
        if (tok->rank_merges)
            a->id = find_merge(tok, a->id, b->id)->id;
        a->len += b->len;
        if (!tok->rank_merges)
            a->id = lv_tok_find(tok, w + a->start, a->len);
        s->nodes[s->n_nodes] = (struct node){ .left = a->node, .right = b->node,
                                              .start = a->start, .len = a->len };
        a->node = s->n_nodes++;
        a->ver++;
        b->len = 0;
        b->ver++;
        a->next = b->next;
        if (b->next >= 0)
            s->syms[b->next].prev = p.left;
        if ((rc = try_pair(tok, s, w, a->prev, p.left)) ||
            (rc = try_pair(tok, s, w, p.left, a->next)))
            return rc;
    }
    for (int32_t i = 0; i >= 0; i = s->syms[i].next) {
        const struct sym *y = &s->syms[i];
        if (tok->rank_merges)
            rc = y->id == tok->unk ? emit_unk(tok, e) : lv_tok_ids_push(e->ids, y->id);
        else
            rc = emit_node(tok, s, e, w, y->node);
        if (rc)
            return rc;
    }
    return LV_OK;
}

/* ----------------------------------------------------------------------------------------
 * encoding
 */

/* ' ' as the vocabulary writes it */
static const char *space_of(const lv_tokenizer *tok, size_t *n)
{
    *n = tok->escape_ws ? 3 : 1;
    return tok->escape_ws ? SPACE_SYMBOL : " ";
}

/* the special token at text[i], or NULL; `special` says whether control/special tokens are
 * matched */
static const struct tok_special *match_special(const lv_tokenizer *tok, const char *text,
                                               size_t n, size_t i, bool special)
{
    for (int k = 0; k < tok->n_specials; k++) {
        const struct tok_special *sp = &tok->specials[k];
        size_t len = sp->len;
        if ((sp->special && !special) || len > n - i ||
            memcmp(text + i, tok->text + tok->off[sp->id], len) != 0)
            continue;
        if (sp->single_word) {
            unsigned char before = i > 0 ? (unsigned char)text[i - 1] : ' ';
            unsigned char after = i + len < n ? (unsigned char)text[i + len] : ' ';
            bool wb = before >= 0x80 || (before >= '0' && before <= '9') ||
                      ((before | 0x20) >= 'a' && (before | 0x20) <= 'z') || before == '_';
            bool wa = after >= 0x80 || (after >= '0' && after <= '9') ||
                      ((after | 0x20) >= 'a' && (after | 0x20) <= 'z') || after == '_';
            if (wb || wa)
                continue;
        }
        return sp;
    }
    return NULL;
}

static bool is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* Hugging Face: one segment between added tokens: spaces to "▁", the prefix, words */
static int hf_segment(const lv_tokenizer *tok, struct scratch *s, struct emit *e,
                      struct lv_buf *b, const char *t, size_t n, bool first, enum tok_prefix mode)
{
    size_t sn;
    const char *sp = space_of(tok, &sn);
    int rc;
    if (n == 0)
        return LV_OK;
    b->n = 0;
    bool starts = n > 0 && t[0] == ' ';
    bool prefix = mode == TOK_PREFIX_SEGMENT || (mode == TOK_PREFIX_ALWAYS && !starts) ||
                  (mode == TOK_PREFIX_FIRST && first && !starts);
    if (prefix && (rc = lv_buf_put(b, sp, sn)))
        return rc;
    for (size_t i = 0; i < n; i++)
        if ((rc = t[i] == ' ' ? lv_buf_put(b, sp, sn) : lv_buf_put(b, t + i, 1)))
            return rc;
    if (!tok->split_words)
        return bpe_word(tok, s, e, b->p, b->n);
    size_t start = 0;
    for (size_t i = sn; i + sn <= b->n; i++)
        if (memcmp(b->p + i, sp, sn) == 0) {
            if ((rc = bpe_word(tok, s, e, b->p + start, i - start)))
                return rc;
            start = i;
        }
    return bpe_word(tok, s, e, b->p + start, b->n - start);
}

/* Hugging Face: added tokens split out of the raw text, then each segment normalised. Also
 * SentencePiece sources with special tokens parsed, as llama.cpp does it: every piece of text
 * between tokens gets the prefix (mode TOK_PREFIX_SEGMENT). */
static int encode_hf(const lv_tokenizer *tok, struct scratch *s, struct emit *e,
                     const char *text, size_t n, bool special, enum tok_prefix mode)
{
    struct lv_buf b = { 0 };
    size_t seg = 0, i = 0;
    int rc = LV_OK;
    while (rc == LV_OK && i < n) {
        const struct tok_special *sp = match_special(tok, text, n, i, special);
        if (!sp) {
            i++;
            continue;
        }
        size_t end = i;
        if (sp->lstrip)
            while (end > seg && is_ws(text[end - 1]))
                end--;
        if ((rc = hf_segment(tok, s, e, &b, text + seg, end - seg, seg == 0, mode)) ||
            (rc = lv_tok_ids_push(e->ids, sp->id)))
            break;
        i += tok->len[sp->id];
        if (sp->rstrip)
            while (i < n && is_ws(text[i]))
                i++;
        seg = i;
    }
    if (rc == LV_OK)
        rc = hf_segment(tok, s, e, &b, text + seg, n - seg, seg == 0, mode);
    free(b.p);
    return rc;
}

/* SentencePiece: normalise the whole text, then split out the pieces matched in it */
static int encode_spm(const lv_tokenizer *tok, struct scratch *s, struct emit *e,
                      const char *text, size_t n, bool special)
{
    struct lv_buf b = { 0 };
    size_t sn;
    const char *sp = space_of(tok, &sn);
    int rc = lv_buf_put(&b, "", 0);
    size_t lo = 0, hi = n;
    if (tok->remove_extra_ws) {
        while (lo < hi && text[lo] == ' ')
            lo++;
        while (hi > lo && text[hi - 1] == ' ')
            hi--;
    }
    if (rc == LV_OK && hi > lo && tok->prefix == TOK_PREFIX_TEXT)
        rc = lv_buf_put(&b, sp, sn);
    for (size_t i = lo; rc == LV_OK && i < hi; i++) {
        if (text[i] != ' ')
            rc = lv_buf_put(&b, text + i, 1);
        else if (!(tok->remove_extra_ws && i > lo && text[i - 1] == ' '))
            rc = lv_buf_put(&b, sp, sn);
    }
    /* after an added token (added_tokens.json), the text gets the dummy prefix again, as
     * transformers' slow tokenizers encode each piece of text on its own */
    struct lv_buf again = { 0 };
    bool reprefix = false;
    size_t seg = 0, i = 0;
    while (rc == LV_OK && i <= b.n) {
        const struct tok_special *m = i < b.n ? match_special(tok, b.p, b.n, i, special) : NULL;
        if (!m && i < b.n) {
            i++;
            continue;
        }
        if (reprefix && i > seg && tok->prefix == TOK_PREFIX_TEXT) {
            again.n = 0;
            if ((rc = lv_buf_put(&again, sp, sn)) ||
                (rc = lv_buf_put(&again, b.p + seg, i - seg)) ||
                (rc = bpe_word(tok, s, e, again.p, again.n)))
                break;
        } else if ((rc = bpe_word(tok, s, e, b.p + seg, i - seg))) {
            break;
        }
        if (!m)
            break;
        if ((rc = lv_tok_ids_push(e->ids, m->id)))
            break;
        reprefix = m->resets_prefix;
        i += tok->len[m->id];
        seg = i;
    }
    free(again.p);
    free(b.p);
    return rc;
}

int lv_tok_encode(const lv_tokenizer *tok, const char *text, size_t n, int flags,
                  lv_tok_ids *ids)
{
    bool special = (flags & LV_TOK_PARSE_SPECIAL)      ? true
                   : (flags & LV_TOK_NO_PARSE_SPECIAL) ? false
                                                       : tok->parse_special;
    struct scratch s = { 0 };
    struct emit e = { .ids = ids, .first = ids->n };
    int rc = LV_OK;
    if ((flags & LV_TOK_BOS) && tok->bos >= 0)
        rc = lv_tok_ids_push(ids, tok->bos);
    e.first = ids->n;
    if (rc == LV_OK && tok->source == LV_TOK_SRC_JSON)
        rc = encode_hf(tok, &s, &e, text, n, special, tok->prefix);
    else if (rc == LV_OK && special)
        rc = encode_hf(tok, &s, &e, text, n, true,
                       tok->prefix == TOK_PREFIX_TEXT ? TOK_PREFIX_SEGMENT : TOK_PREFIX_NONE);
    else if (rc == LV_OK)
        rc = encode_spm(tok, &s, &e, text, n, false);
    if (rc == LV_OK && (flags & LV_TOK_EOS) && tok->eos >= 0)
        rc = lv_tok_ids_push(ids, tok->eos);
    free(s.syms);
    free(s.nodes);
    free(s.heap);
    return rc;
}

/* ----------------------------------------------------------------------------------------
 * decoding
 */

void lv_tok_stream_init(lv_tok_stream *s, const lv_tokenizer *tok)
{
    memset(s, 0, sizeof *s);
    s->tok = tok;
}

struct out {
    char *p;
    size_t n, cap;
    bool full;
};

static void out_put(struct out *o, const void *s, size_t n)
{
    if (o->n + n + 1 > o->cap) {
        o->full = true;
        return;
    }
    memcpy(o->p + o->n, s, n);
    o->n += n;
    o->p[o->n] = 0;
}

/* bytes that could still become a valid character: a lead byte and continuations, fewer
 * than the lead asks for */
static bool incomplete(const unsigned char *p, int n)
{
    int k = p[0] < 0x80 ? 1 : (p[0] >> 5) == 6 ? 2 : (p[0] >> 4) == 14 ? 3
            : (p[0] >> 3) == 30 ? 4 : 0;
    if (k <= 1 || n >= k)
        return false;
    for (int i = 1; i < n; i++)
        if ((p[i] & 0xc0) != 0x80)
            return false;
    return true;
}

/* feeds bytes through the assembler: complete characters out, invalid bytes as U+FFFD */
static void assemble(lv_tok_stream *s, struct out *o, const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        s->pending[s->n_pending++] = p[i];
        while (s->n_pending > 0) {
            if (incomplete(s->pending, s->n_pending))
                break;
            size_t k = utf8_len(s->pending, (size_t)s->n_pending);
            if (k == 1 && s->pending[0] >= 0x80)
                out_put(o, "\xef\xbf\xbd", 3);
            else
                out_put(o, s->pending, k);
            memmove(s->pending, s->pending + k, (size_t)s->n_pending - k);
            s->n_pending -= (int)k;
        }
    }
}

/* one piece's surface, with "▁" turned back into spaces */
static void put_piece(lv_tok_stream *s, struct out *o, const char *p, size_t n)
{
    const lv_tokenizer *tok = s->tok;
    for (size_t i = 0; i < n;) {
        if (tok->escape_ws && n - i >= 3 && memcmp(p + i, SPACE_SYMBOL, 3) == 0) {
            assemble(s, o, (const unsigned char *)" ", 1);
            i += 3;
        } else {
            assemble(s, o, (const unsigned char *)p + i, 1);
            i++;
        }
    }
}

int lv_tok_stream_push(lv_tok_stream *s, int32_t id, char *out, size_t cap)
{
    const lv_tokenizer *tok = s->tok;
    struct out o = { .p = out, .cap = cap };
    if (cap == 0)
        return lv_error("tokenizer: no room to decode into");
    out[0] = 0;
    if (id < 0 || id >= tok->n)
        return lv_error("tokenizer: id %d is outside the vocabulary (0..%d)", id, tok->n - 1);
    int type = tok->type[id];
    const char *p = tok->text + tok->off[id];
    size_t n = tok->len[id];
    if (type == LV_TOK_CONTROL)
        return 0;
    if (type == LV_TOK_UNKNOWN) {
        if (tok->source == LV_TOK_SRC_JSON)
            return 0;
        p = tok->unk_surface;
        n = strlen(p);
        s->started = true;
        put_piece(s, &o, p, n);
    } else if (type == LV_TOK_BYTE) {
        unsigned char byte = (unsigned char)byte_piece(p, n);
        bool strip = tok->strip == TOK_STRIP_TEXT && !s->started && byte == ' ';
        s->started = true;
        if (!strip)
            assemble(s, &o, &byte, 1);
    } else {
        size_t sn;
        const char *sp = space_of(tok, &sn);
        if (!s->started && tok->strip != TOK_STRIP_NONE && n >= sn && memcmp(p, sp, sn) == 0) {
            p += sn;
            n -= sn;
        }
        if (!s->started && tok->strip == TOK_STRIP_TEXT && n == 0)
            return 0;             /* HF strips from the text: the next space still goes */
        s->started = true;
        put_piece(s, &o, p, n);
    }
    return o.full ? lv_error("tokenizer: %zu bytes are too few to decode id %d", cap, id)
                  : (int)o.n;
}

int lv_tok_stream_flush(lv_tok_stream *s, char *out, size_t cap)
{
    struct out o = { .p = out, .cap = cap };
    if (cap == 0)
        return lv_error("tokenizer: no room to decode into");
    out[0] = 0;
    for (int i = 0; i < s->n_pending; i++)
        out_put(&o, "\xef\xbf\xbd", 3);
    s->n_pending = 0;
    return o.full ? lv_error("tokenizer: too little room to flush") : (int)o.n;
}

int lv_tok_decode(const lv_tokenizer *tok, const int32_t *ids, size_t n, char **out,
                  size_t *len)
{
    lv_tok_stream s;
    struct lv_buf b = { 0 };
    char piece[TOK_MAX_PIECE * 2 + 64];
    int rc = lv_buf_put(&b, "", 0), k;
    lv_tok_stream_init(&s, tok);
    for (size_t i = 0; rc == LV_OK && i <= n; i++) {
        k = i < n ? lv_tok_stream_push(&s, ids[i], piece, sizeof piece)
                  : lv_tok_stream_flush(&s, piece, sizeof piece);
        rc = k < 0 ? LV_ERR : lv_buf_put(&b, piece, (size_t)k);
    }
    if (rc != LV_OK) {
        free(b.p);
        return rc;
    }
    *out = b.p;
    if (len)
        *len = b.n;
    return LV_OK;
}

/* ----------------------------------------------------------------------------------------
 * accessors
 */

int32_t lv_tok_n_vocab(const lv_tokenizer *tok) { return tok->n; }
int32_t lv_tok_bos(const lv_tokenizer *tok) { return tok->bos; }
int32_t lv_tok_eos(const lv_tokenizer *tok) { return tok->eos; }
int32_t lv_tok_pad(const lv_tokenizer *tok) { return tok->pad; }
int32_t lv_tok_unk(const lv_tokenizer *tok) { return tok->unk; }
int32_t lv_tok_image(const lv_tokenizer *tok) { return tok->image; }
enum lv_tok_source lv_tok_source(const lv_tokenizer *tok) { return tok->source; }
const char *lv_tok_describe(const lv_tokenizer *tok) { return tok->describe; }
const char *lv_tok_chat_template(const lv_tokenizer *tok) { return tok->chat_template; }

const char *lv_tok_piece(const lv_tokenizer *tok, int32_t id, size_t *len)
{
    if (id < 0 || id >= tok->n)
        return NULL;
    if (len)
        *len = tok->len[id];
    return tok->text + tok->off[id];
}

enum lv_tok_type lv_tok_piece_type(const lv_tokenizer *tok, int32_t id)
{
    return id >= 0 && id < tok->n ? (enum lv_tok_type)tok->type[id] : LV_TOK_UNKNOWN;
}

float lv_tok_piece_score(const lv_tokenizer *tok, int32_t id)
{
    return id >= 0 && id < tok->n ? tok->score[id] : 0.0f;
}
