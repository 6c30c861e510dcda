/*
 * weights.h (internal): model weights as engine tensors, straight from a checkpoint.
 *
 * A checkpoint tensor is wrapped where the reader mapped it (F32, F16, BF16, when its address
 * suits the type), copied into the set's slabs when it does not; ggml's Q4_0 is used as stored
 * and Q8_0 too, or regrouped as Q8_0x8 (lv_weights_q8_0_layout), and the other ggml types
 * lavinia reads (LV_GGUF_CONVERTED_TYPES: Q4_1, Q5_0, Q5_1, the k-quants, IQ4_NL, IQ4_XS) are
 * converted to Q8_0 in the same layout. Every tensor handed out is frozen and freed with the
 * set.
 */
#ifndef LV_MODEL_WEIGHTS_H
#define LV_MODEL_WEIGHTS_H

#include <stdbool.h>

#include "io/checkpoint.h"
#include "lavinia/tensor.h"

/* A big zeroed block (lv_zalloc) that weights the set makes are carved out of. */
struct lv_weights_slab {
    char *p;
    size_t size, used;
};

struct lv_weights {
    lv_tensor **tensors;          /* every header handed out */
    struct lv_weights_slab *slabs;
    int n_tensors, n_slabs;
    bool converted;               /* k-quants were converted (said once on stderr) */
};

/* The layout Q8_0 rows of cols values are held in: Q8_0x8 (tensor.h), which the CPU's
 * decoding kernels read faster, when the rows are whole groups; ggml's Q8_0 otherwise. */
static inline lv_dtype lv_weights_q8_0_layout(int64_t cols)
{
    return cols % LV_Q8_0X8_GROUP == 0 ? LV_Q8_0X8 : LV_Q8_0;
}

/* The tensor called name (canonical) in ck; an error names the file and the tensor. */
int lv_weights_get(struct lv_weights *w, const struct lv_checkpoint *ck, const char *name,
                   lv_tensor **out);
/*
 * A zeroed frozen tensor whose data belongs to the set. Everything the set makes (random
 * weights, quantised copies, k-quants converted to Q8_0, tensors copied for alignment) is
 * carved out of slabs of LV_WEIGHTS_SLAB bytes (bigger tensors get their own), 2 MiB-aligned
 * blocks advised for huge pages (lv_zalloc), 64-byte aligned within: a decode step streams
 * dozens of weights of 0.5-2 MiB, which on their own would be malloc'ed blocks on 4 KiB
 * pages. Freed with the set.
 */
#define LV_WEIGHTS_SLAB ((size_t)32 << 20)
int lv_weights_new(struct lv_weights *w, lv_dtype dt, int ndim, const int64_t *shape,
                   lv_tensor **out);
void lv_weights_done(struct lv_weights *w);
/* A random weight for benchmarks and demos: ndim >= 2 draws N(0, 1/fan_in) (fan_in the
 * product of the dims after the first) from the LCG state *rng; ndim 1 is filled with fill
 * (1 for norm weights, 0 for biases). Stored as dt, frozen, kept by the set. */
int lv_weights_random(struct lv_weights *w, lv_dtype dt, int ndim, const int64_t *shape,
                      float fill, uint64_t *rng, lv_tensor **out);

#endif /* LV_MODEL_WEIGHTS_H */
