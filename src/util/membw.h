/*
 * membw.h (internal): the machine's memory-read bandwidth, measured.
 *
 * A vectorised float sum over a buffer much larger than the caches, split over threads:
 * what a memory-bound decode step could read at most. Benchmarks report their bytes/s as a
 * share of it, measured in the same run.
 */
#ifndef LV_UTIL_MEMBW_H
#define LV_UTIL_MEMBW_H

#include <stddef.h>

/* A buffer for passes interleaved with other work (a benchmark alternates a decode step and a
 * pass, so both see the same state of a shared machine). */
struct lv_membw {
    float *x;
    size_t n;   /* floats */
};

/* LV_OK, or LV_ENOMEM with the message set. */
int lv_membw_init(struct lv_membw *b, size_t bytes);
/* Seconds one read of the whole buffer takes with `threads` threads. */
double lv_membw_pass(struct lv_membw *b, int threads);
/* Bytes one pass reads. */
static inline size_t lv_membw_bytes(const struct lv_membw *b)
{
    return b->n * sizeof *b->x;
}
void lv_membw_free(struct lv_membw *b);

#endif /* LV_UTIL_MEMBW_H */
