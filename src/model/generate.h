/*
 * generate.h (internal): the generation loop shared by `lavinia generate`, `lavinia chat`
 * and the front ends: prefill in one pass, then sample, stream and feed back token by token
 * until EOS, the end-of-turn piece, a stop string, the token budget or the context end.
 *
 *     struct lv_gen_opts o = { .n_predict = 128 };
 *     struct lv_gen_stats st;
 *     lv_generate(m, tok, &sampler, prompt, n_prompt, &o, on_text, stdout, &st);
 *
 * Text reaches the callback in whole UTF-8 characters, never a stop string or a piece of one.
 */
#ifndef LV_MODEL_GENERATE_H
#define LV_MODEL_GENERATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/llama.h"
#include "model/sampler.h"
#include "text/tokenizer.h"

struct lv_gen_opts {
    int64_t n_predict;            /* tokens to generate at most (<= 0: until the context end) */
    bool ignore_eos;
    int32_t eot_id;               /* another id that ends the turn, or -1 */
    const char *const *stop;      /* stop strings, n_stop of them */
    int n_stop;
    float *logits_rows;           /* NULL, or room for (n_prompt + n_predict) x V floats: the
                                     raw logits of every position fed */
    const float *prompt_embd;     /* NULL, or the prompt as n_prompt_embd x C embeddings (image
                                     tokens spliced in): fed instead of the ids, which then
                                     only count for the penalties (negative ids skipped) */
    int64_t n_prompt_embd;
};

struct lv_gen_stats {
    int64_t n_prompt, n_gen;
    double prompt_s, gen_s;       /* wall seconds of the prefill and of the decode loop */
    int64_t n_rows;               /* logits rows written */
    bool hit_context;             /* stopped at the context end */
    bool hit_eos;                 /* stopped at EOS / end-of-turn / a stop string */
};

/* id: the generated id; text: its completed text (may be empty), n bytes. Non-zero stops. */
typedef int (*lv_gen_fn)(void *ctx, int32_t id, const char *text, size_t n);

/* tok may be NULL (ids only: no text, no stop strings). The prompt is fed as given (add BOS
 * before if wanted); the sampler sees the prompt ids for its penalties. */
int lv_generate(lv_llama *m, const lv_tokenizer *tok, lv_sampler *s, const int32_t *prompt,
                int64_t n_prompt, const struct lv_gen_opts *o, lv_gen_fn fn, void *ctx,
                struct lv_gen_stats *st);

#endif /* LV_MODEL_GENERATE_H */
