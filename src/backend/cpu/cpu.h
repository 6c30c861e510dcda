/*
 * cpu.h (internal): the CPU kernels, one forward/backward pair per op, side by side in one
 * file per op family (cpu-norm.c, cpu-attention.c, ...).
 *
 * Conventions (llm.c): outputs first, then inputs, then sizes. Backward takes the gradient
 * destinations first, then dy, then saved values and forward inputs, then sizes. Every
 * gradient destination is accumulated into (+=); a NULL destination is skipped. All arrays
 * are contiguous F32 unless the type says otherwise. Loops run through CPU_FOR (below), in
 * parallel with OpenMP when they are big enough, and every output element is computed by one
 * thread in a fixed order, so results do not depend on the thread count. No fast-math: expf,
 * erff and tanhf come from libm.
 */
#ifndef LV_CPU_H
#define LV_CPU_H

#include <stdbool.h>
#include <stdint.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "lavinia/tensor.h"

/* --- parallel loops ----------------------------------------------------------------- */

/*
 * Why not a plain `#pragma omp parallel for`: libgomp allocates a team (a memalign of about
 * 1.5 KB, freed at the region's end) every time it starts a region that runs on one thread,
 * and that includes a region whose if() clause is false and every region when the thread
 * count is 1. It caches the team only for regions of two threads or more. lavinia's rule is
 * that a training or inference step allocates nothing after warm-up (tests/unit/test-steady),
 * so a loop must not enter a parallel region at all unless it will really use several
 * threads. CPU_FOR decides before the region: it runs the loop in parallel only when the
 * work estimate exceeds CPU_PARALLEL_MIN_WORK and OpenMP may use more than one thread;
 * otherwise it runs the same body as a plain serial loop, with no libgomp call. Without
 * OpenMP it is always the serial loop.
 *
 * The work estimate is roughly the number of elements touched or multiply-adds done; below
 * the threshold, starting a team costs more than the loop. Defining it to 0 at build time
 * (-DCPU_PARALLEL_MIN_WORK=0) sends every loop through OpenMP, to test thread independence.
 *
 * Each index var in [0, count) is run exactly once, by one thread, and the body never depends
 * on which thread or in which order other indices run, so results are bit-identical at any
 * thread count. The body is the macro's trailing arguments, so commas in it are fine; write
 * it as a braced block and move long bodies into a static inline function of var. The
 * count and the work are evaluated once, before the loop.
 */
#ifndef CPU_PARALLEL_MIN_WORK
#define CPU_PARALLEL_MIN_WORK 32768
#endif

static inline bool cpu_parallel_worth(int64_t work)
{
#ifdef _OPENMP
    return work > CPU_PARALLEL_MIN_WORK && omp_get_max_threads() > 1;
#else
    (void)work;
    return false;
#endif
}

#ifdef _OPENMP
#define CPU_FOR_(pragma, work, var, count, ...)                                             \
    do {                                                                                    \
        int64_t var##_n_ = (count);                                                         \
        if (cpu_parallel_worth(work)) {                                                     \
            _Pragma(pragma)                                                                 \
            for (int64_t var = 0; var < var##_n_; var++) {                                  \
                __VA_ARGS__                                                                 \
            }                                                                               \
        } else {                                                                            \
            for (int64_t var = 0; var < var##_n_; var++) {                                  \
                __VA_ARGS__                                                                 \
            }                                                                               \
        }                                                                                   \
    } while (0)
#else
#define CPU_FOR_(pragma, work, var, count, ...)                                             \
    do {                                                                                    \
        (void)(work);                                                                       \
        int64_t var##_n_ = (count);                                                         \
        for (int64_t var = 0; var < var##_n_; var++) {                                      \
            __VA_ARGS__                                                                     \
        }                                                                                   \
    } while (0)
#endif

/* Static schedule: equal contiguous ranges of indices per thread. */
#define CPU_FOR(work, var, count, ...)                                                      \
    CPU_FOR_("omp parallel for schedule(static)", work, var, count, __VA_ARGS__)
/* Dynamic schedule, 8 indices at a time: for iterations of uneven cost (causal attention). */
#define CPU_FOR_DYNAMIC(work, var, count, ...)                                              \
    CPU_FOR_("omp parallel for schedule(dynamic, 8)", work, var, count, __VA_ARGS__)

/* --- matmul (cpu-matmul.c) ---------------------------------------------------------- */

/* c (M, N) = op(a) op(b), a: (M, K) or (K, M) if ta, b: (K, N) or (N, K) if tb, b of dtype bt
 * (F32/F16/BF16; converted to F32 blocks, accumulation in F32). beta 0 assigns, 1 adds. */
/* A per-thread scratch buffer of CPU_SCRATCH_FLOATS floats (1 MiB), kept for the thread's
 * life; NULL when out of memory. */
#define CPU_SCRATCH_FLOATS ((int64_t)1 << 18)
float *cpu_scratch(void);

/* --- SIMD paths (cpu-simd.c): chosen once from CPUID, LAVINIA_SIMD forces one ----------- */

enum cpu_simd_level { CPU_SIMD_GENERIC, CPU_SIMD_AVX2, CPU_SIMD_AVX512, CPU_SIMD_COUNT };

/* x (k) F32 . w (k) of the table's dtype, F32 accumulation */
typedef float (*cpu_dot_fn)(const float *x, const void *w, int64_t k);

/* One row of NF4 values (k of them, whole blocks of 64; the first of each pair in the high
 * nibble) dotted with x, each block times its scale. */
typedef float (*cpu_nf4_dot_fn)(const float *x, const unsigned char *q, const float *scales,
                                int64_t k);

struct cpu_simd {
    const char *name;                    /* "generic", "avx2", "avx512" */
    cpu_dot_fn dot[LV_DTYPE_COUNT];      /* by dtype: F32, F16, BF16, Q8_0, Q4_0 (I32, NF4:
                                            NULL) */
    cpu_nf4_dot_fn nf4_dot;
    /* Decoding attention, one query row against n cached rows ld floats apart (D values
     * each): sc[j] = scale * q . k_j, and o (D) += sum_j p[j] v_j. */
    void (*attn_scores)(float *sc, const float *q, const float *k, int64_t n, int64_t D,
                        int64_t ld, float scale);
    void (*attn_accum)(float *o, const float *p, const float *v, int64_t n, int64_t D,
                       int64_t ld);
    /* y = silu(gate) * up, silu(g) = g / (1 + exp(-g)): libm's expf on the generic path, a
     * polynomial exp within 2 ulp of it on the others */
    void (*swiglu)(float *y, const float *gate, const float *up, int64_t n);
    /* F16 and BF16 rows widened to F32 (exact; NULL: lv_convert_row) */
    void (*to_f32[LV_DTYPE_COUNT])(float *y, const void *x, int64_t n);
};
/* n values of dtype dt at x as F32 into y, through the path's widening where it has one */
void cpu_to_f32(const struct cpu_simd *s, float *y, const void *x, lv_dtype dt, int64_t n);

bool cpu_simd_supported(enum cpu_simd_level l);
/* The path's kernels, NULL when this CPU cannot run it (tests run every path present). */
const struct cpu_simd *cpu_simd_get(enum cpu_simd_level l);
/* The path in use. */
const struct cpu_simd *cpu_simd(void);
/* Use path l from now on (tests: every path through the whole library); false if the CPU
 * lacks it. Call it with no parallel work running. */
bool cpu_simd_use(enum cpu_simd_level l);
/* Matrix-vector products: c (M, N) = beta c + a (M, K) b^T with b (N, K) rows of dtype bt,
 * for small M (decoding), with the given kernels; each output by one thread. */
void cpu_gemv(float *c, const float *a, const void *b, lv_dtype bt, int64_t M, int64_t N,
              int64_t K, float beta, const struct cpu_simd *s);
/* c[i] (M, N[i]) = a (M, K) b[i]^T for n products sharing a, as one parallel loop over the
 * rows of all the b[i] (one region, each thread a contiguous run of them); false, with
 * nothing done, where the matrix-vector kernels do not apply (more than CPU_GEMV_N_MAX
 * products or the kernels' rows of a, K = 0, a type without a dot kernel). */
#define CPU_GEMV_N_MAX 4
bool cpu_gemv_n(int n, float *const *c, const float *a, const void *const *b,
                const lv_dtype *bt, const int64_t *N, int64_t M, int64_t K);

void cpu_gemm(float *c, const float *a, const void *b, lv_dtype bt, int ta, int tb,
              int64_t M, int64_t N, int64_t K, float beta);
/* The naive triple loop, kept for tests and as the reference for the fast path. */
void cpu_gemm_naive(float *c, const float *a, const float *b, int ta, int tb,
                    int64_t M, int64_t N, int64_t K, float beta);

/* --- normalisation (cpu-norm.c) ----------------------------------------------------- */

/* y = x * rstd * w, rstd = 1/sqrt(mean(x^2) + eps).  x, y: (N, C)  w: (C) or NULL  rstd: (N) */
void cpu_rmsnorm_forward(float *y, float *rstd, const float *x, const float *w,
                         int64_t N, int64_t C, float eps);
/* dx += ..., dw += ... (either may be NULL); reads the rstd that forward saved */
void cpu_rmsnorm_backward(float *dx, float *dw, const float *dy, const float *x,
                          const float *w, const float *rstd, int64_t N, int64_t C);
/* y = (x - mean) * rstd * w + b.  x, y: (N, C)  w, b: (C) or NULL  mean, rstd: (N) */
void cpu_layernorm_forward(float *y, float *mean, float *rstd, const float *x, const float *w,
                           const float *b, int64_t N, int64_t C, float eps);
void cpu_layernorm_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                            const float *w, const float *mean, const float *rstd,
                            int64_t N, int64_t C);
/* Softmax over the last dim.  x, y: (N, C) */
void cpu_softmax_forward(float *y, const float *x, int64_t N, int64_t C);
/* dx += y * (dy - sum(dy * y)) */
void cpu_softmax_backward(float *dx, const float *dy, const float *y, int64_t N, int64_t C);

/* --- rope (cpu-rope.c) -------------------------------------------------------------- */

/* x, y: (B, T, H, D)  pos: (T).  mode: LV_ROPE_HF or LV_ROPE_META (lavinia/ops.h). */
void cpu_rope_forward(float *y, const float *x, const int32_t *pos, int64_t B, int64_t T,
                      int64_t H, int64_t D, int mode, float base, float freq_scale);
/* dx += rotation of dy by the opposite angle */
void cpu_rope_backward(float *dx, const float *dy, const int32_t *pos, int64_t B, int64_t T,
                       int64_t H, int64_t D, int mode, float base, float freq_scale);

/* --- attention (cpu-attention.c) ---------------------------------------------------- */

/* q, out: (B, T, H, D)  k, v: (B, S, KV, D), or with kv_stride > 0 one batch of kv heads
 * kv_stride elements apart, each (S, D) (the head-major cache)  lse: (B, H, T) log-sum-exp of
 * the scaled scores  mask: (T, S) or NULL, nonzero = blocked.  causal: query t is at position
 * S - T + t and sees keys s <= S - T + t.  A query row with no visible key gives zeros
 * (lse = -inf).  for_grad: a backward will follow, so few-query rows score their keys the way
 * cpu_attention_backward does (else through the path's row kernels, faster). */
void cpu_attention_forward(float *out, float *lse, const float *q, const float *k,
                           const float *v, const int32_t *mask, int64_t B, int64_t T,
                           int64_t S, int64_t H, int64_t KV, int64_t D, int64_t kv_stride,
                           float scale, int causal, bool for_grad);
/* k and v as in the forward; dk, dv (B, S, KV, D), added into */
void cpu_attention_backward(float *dq, float *dk, float *dv, const float *dout,
                            const float *q, const float *k, const float *v, const float *out,
                            const float *lse, const int32_t *mask, int64_t B, int64_t T,
                            int64_t S, int64_t H, int64_t KV, int64_t D, int64_t kv_stride,
                            float scale, int causal);

/* --- losses (cpu-loss.c) ------------------------------------------------------------ */

/* loss[0] = mean over rows with targets[n] >= 0 of (lse[n] - logits[n, targets[n]]).
 * logits: (N, V)  targets: (N)  lse: (N).  Returns the count of rows that count.
 * A target >= V is the caller's job to refuse. */
int64_t cpu_cross_entropy_forward(float *loss, float *lse, const float *logits,
                                  const int32_t *targets, int64_t N, int64_t V);
/* dlogits += dloss * inv_count * (softmax - onehot) on rows that count */
void cpu_cross_entropy_backward(float *dlogits, float dloss, const float *logits,
                                const int32_t *targets, const float *lse, float inv_count,
                                int64_t N, int64_t V);

/* --- elementwise (cpu-elementwise.c) ------------------------------------------------ */

enum cpu_unary { CPU_SQRT, CPU_SILU, CPU_GELU, CPU_GELU_TANH, CPU_QUICK_GELU };
void cpu_unary_forward(float *y, const float *x, int64_t n, enum cpu_unary f);
/* dx += dy * f'(x); sqrt uses y */
void cpu_unary_backward(float *dx, const float *dy, const float *x, const float *y, int64_t n,
                        enum cpu_unary f);


/* --- layout and the rest (cpu-shape.c) ---------------------------------------------- */

/* Broadcast binary op over a's 4-D padded shape; bstride: b's strides (0 = broadcast). */
enum cpu_binary { CPU_ADD, CPU_SUB, CPU_MUL, CPU_DIV };
void cpu_binary_forward(float *y, const float *a, const float *b, const int64_t *shape4,
                        const int64_t *bstride, enum cpu_binary f);
void cpu_binary_backward(float *da, float *db, const float *dy, const float *a, const float *b,
                         const int64_t *shape4, const int64_t *bstride, enum cpu_binary f);
/* Copy a strided tensor into contiguous memory of dtype dt. */
void cpu_copy_strided(void *dst, lv_dtype dt, const lv_tensor *src);
/* dx[off + sum(i_d * gstride_d)] += dy[i] over the view's 4-D padded shape */
void cpu_view_backward(float *dx, const float *dy, const int64_t *shape4, int64_t off,
                       const int64_t *gstride4);
/* Sums and L2 norms over the middle of (outer, n, inner). */
void cpu_sum_forward(float *y, const float *x, int64_t outer, int64_t n, int64_t inner);
void cpu_sum_backward(float *dx, const float *dy, int64_t outer, int64_t n, int64_t inner);
void cpu_l2norm_forward(float *y, const float *x, int64_t outer, int64_t n, int64_t inner);
void cpu_l2norm_backward(float *dx, const float *dy, const float *x, const float *y,
                         int64_t outer, int64_t n, int64_t inner);
/* y = x * (keep ? 1/(1-p) : 0), keep decided by (seed, i) alone */
void cpu_dropout_forward(float *y, const float *x, int64_t n, float p, uint64_t seed);
void cpu_dropout_backward(float *dx, const float *dy, int64_t n, float p, uint64_t seed);
/* y = silu(gate) * up */
void cpu_swiglu_forward(float *y, const float *gate, const float *up, int64_t n);
void cpu_swiglu_backward(float *dgate, float *dup, const float *dy, const float *gate,
                         const float *up, int64_t n);
/* out (T, C) = rows ids of table (V, C) of dtype tt; dtable (V, C) += per id */
void cpu_embedding_forward(float *out, const void *table, lv_dtype tt, const int32_t *ids,
                           int64_t T, int64_t C);
void cpu_embedding_backward(float *dtable, const float *dout, const int32_t *ids, int64_t T,
                            int64_t V, int64_t C);
/* out = [a | b] along the middle of (outer, na + nb, inner) */
void cpu_concat_forward(float *out, const float *a, const float *b, int64_t outer, int64_t na,
                        int64_t nb, int64_t inner);
void cpu_concat_backward(float *da, float *db, const float *dout, int64_t outer, int64_t na,
                         int64_t nb, int64_t inner);
/* cols (B * nP, Cin * P * P) from img (B, Cin, Hh, Ww); col2im adds back into dimg */
void cpu_im2col(float *cols, const float *img, int64_t B, int64_t Cin, int64_t Hh, int64_t Ww,
                int64_t P);
void cpu_col2im(float *dimg, const float *dcols, int64_t B, int64_t Cin, int64_t Hh,
                int64_t Ww, int64_t P);

#endif /* LV_CPU_H */
