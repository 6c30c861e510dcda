/*
 * sampler.h (internal): choosing the next token from logits, in Hugging Face's order.
 *
 *   1. ids past the tokenizer's pieces are masked (llava-hf pads its embedding);
 *   2. repetition penalty on ids seen so far (logit > 0: / r, else * r), then frequency and
 *      presence penalties (logit -= f * count + p * [count > 0]);
 *   3. temperature 0 picks the argmax; otherwise logits / T, then top-k, top-p (the smallest
 *      set whose probability reaches p, always at least one id), min-p (ids whose probability
 *      is below min_p x the top one are dropped), and a draw from what is left.
 *
 * The random stream is splitmix64 from the seed, so the same seed gives the same tokens on
 * any machine and any thread count.
 */
#ifndef LV_MODEL_SAMPLER_H
#define LV_MODEL_SAMPLER_H

#include <stdbool.h>
#include <stdint.h>

struct lv_sampler_params {
    float temp;               /* 0: argmax */
    int top_k;                /* 0: off */
    float top_p;              /* 1: off */
    float min_p;              /* 0: off */
    float repeat_penalty;     /* 1: off */
    float freq_penalty;       /* 0: off */
    float presence_penalty;   /* 0: off */
    int repeat_last_n;        /* penalties look at this many recent ids (0: all, -1: none) */
    uint64_t seed;
};

/* temp 0.8, top-k 40, top-p 0.95, min-p 0.05, no penalties, seed 0 — what `generate` uses
 * unless told otherwise (llama.cpp's defaults) */
void lv_sampler_params_default(struct lv_sampler_params *p);

struct lv_sampler_cand {
    float logit, prob;
    int32_t id;
};

typedef struct lv_sampler {
    struct lv_sampler_params p;
    int64_t n_vocab;          /* logits per row */
    int64_t n_valid;          /* ids that are pieces; the rest are masked */
    uint64_t rng;
    int32_t *history;         /* ids seen (prompt and generated) */
    int64_t n_history, cap_history;
    int32_t *counts;          /* [n_vocab] occurrences in the penalty window */
    struct lv_sampler_cand *cand;   /* [n_vocab] */
} lv_sampler;

int lv_sampler_init(lv_sampler *s, const struct lv_sampler_params *p, int64_t n_vocab,
                    int64_t n_valid);
void lv_sampler_done(lv_sampler *s);
/* Ids that count for the penalties (the prompt, then each chosen id: lv_sampler_sample adds
 * its choice itself). */
int lv_sampler_accept(lv_sampler *s, int32_t id);
void lv_sampler_forget(lv_sampler *s);
/* The next id from one row of logits (not modified). probs (optional, n_vocab floats): the
 * final distribution that was drawn from, 0 for removed ids (for tests and inspection). */
int32_t lv_sampler_sample(lv_sampler *s, const float *logits, float *probs);

#endif /* LV_MODEL_SAMPLER_H */
