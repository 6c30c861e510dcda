/*
 * cpu-matmul.c: matrix products on the CPU through OpenBLAS's sgemm.
 *
 * The output is cut into fixed tiles (TILE_M x TILE_N) and each tile is one single-threaded
 * sgemm, run in parallel over tiles: OpenBLAS's own threads split the work by thread count,
 * which changes the rounding, so lavinia keeps OpenBLAS at one thread (cpu.c) and owns the
 * parallelism. F16, BF16, Q8_0 and Q4_0 right-hand sides are converted to F32 one panel at a
 * time into the thread's scratch buffer (cpu_scratch: allocated on first use, freed when the
 * thread exits), so a product never allocates in steady state and never holds a whole F32
 * copy of a large weight. Up to GEMV_MAX_M rows of activations skip all this: the
 * matrix-vector kernels of cpu-simd.c read the narrow types directly.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "backend/cpu/cpu.h"

#include "backend/backend.h"

#include <cblas.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>


static pthread_key_t conv_key;
static pthread_once_t conv_once = PTHREAD_ONCE_INIT;

static void conv_key_make(void)
{
    pthread_key_create(&conv_key, free);
}

float *cpu_scratch(void)
{
    pthread_once(&conv_once, conv_key_make);
    float *buf = pthread_getspecific(conv_key);
    if (!buf) {
        buf = malloc((size_t)CPU_SCRATCH_FLOATS * sizeof *buf);
        pthread_setspecific(conv_key, buf);
    }
    return buf;
}

void cpu_gemm_naive(float *c, const float *a, const float *b, int ta, int tb,
                    int64_t M, int64_t N, int64_t K, float beta)
{
    for (int64_t m = 0; m < M; m++) {
        for (int64_t n = 0; n < N; n++) {
            float acc = 0.0f;
            for (int64_t k = 0; k < K; k++)
                acc += (ta ? a[k * M + m] : a[m * K + k]) * (tb ? b[n * K + k] : b[k * N + n]);
            c[m * N + n] = beta == 0.0f ? acc : beta * c[m * N + n] + acc;
        }
    }
}

/* Tiles of the output: fixed by the shape alone, never by the thread count. */
#define TILE_M 512
#define TILE_N 128

/* c (M, N), leading dimension ldc = op(a)'s M x K tile times op(b)'s K x N tile, F32 b with
 * leading dimension ldb. OpenBLAS runs single-threaded: the parallelism is ours. */
static void sgemm(float *c, const float *a, const float *b, int ta, int tb, int64_t M,
                  int64_t N, int64_t K, int64_t lda, int64_t ldb, int64_t ldc, float beta)
{
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                (blasint)M, (blasint)N, (blasint)K, 1.0f, a, (blasint)lda, b, (blasint)ldb,
                beta, c, (blasint)ldc);
}

/* n values of b from element e as F32 (block types: e and n whole blocks), b's rows being
 * row values long: a Q8_0x8 block is found inside its row's groups */
static void b_to_f32(const struct cpu_simd *s, float *y, const void *b, lv_dtype bt,
                     int64_t row, int64_t e, int64_t n)
{
    if (bt == LV_Q8_0X8)
        lv_q8_0x8_dequantize(y, (const char *)b + lv_dtype_bytes(bt, e / row * row), row,
                             e % row, n);
    else
        cpu_to_f32(s, y, (const char *)b + lv_dtype_bytes(bt, e), bt, n);
}

/* One output tile, rows [m0, m0+mm) and columns [n0, n0+nn): F32 b directly, F16/BF16/Q8_0/
 * Q4_0 b through the per-thread buffer in panels of k. */
static void gemm_tile(float *c, const float *a, const void *b, lv_dtype bt, int ta, int tb,
                      int64_t M, int64_t N, int64_t K, float beta, int64_t m0, int64_t mm,
                      int64_t n0, int64_t nn)
{
    float *ct = c + m0 * N + n0;
    const float *at = ta ? a + m0 : a + m0 * K;
    int64_t lda = ta ? M : K;
    if (bt == LV_F32) {
        const float *bf = b;
        sgemm(ct, at, tb ? bf + n0 * K : bf + n0, ta, tb, mm, nn, K, lda, tb ? K : N, N, beta);
        return;
    }
    float *buf = cpu_scratch();
    /* panels of k: whole blocks for block types (K and the tiles are multiples of 32) */
    int64_t kb = buf ? CPU_SCRATCH_FLOATS / nn / LV_QBLOCK * LV_QBLOCK : 0;
    if (kb == 0) {
        /* no buffer (out of memory for 1 MiB): convert one row at a time */
        float row[LV_QBLOCK];
        int64_t unit = lv_dtype_is_block(bt) ? LV_QBLOCK : 1;
        for (int64_t m = 0; m < mm; m++)
            for (int64_t n = 0; n < nn; n++) {
                float acc = 0.0f;
                for (int64_t k = 0; k < K; k++) {
                    int64_t e = tb ? (n0 + n) * K + k : k * N + n0 + n;
                    int64_t e0 = e / unit * unit;
                    b_to_f32(cpu_simd(), row, b, bt, tb ? K : N, e0, unit);
                    acc += at[ta ? k * M + m : m * K + k] * row[e - e0];
                }
                ct[m * N + n] = beta == 0.0f ? acc : beta * ct[m * N + n] + acc;
            }
        return;
    }
    for (int64_t k0 = 0; k0 < K; k0 += kb) {
        int64_t kk = K - k0 < kb ? K - k0 : kb;
        /* the panel of b in its own layout, converted to F32: (nn, kk) rows of a (N, K) b,
         * or (kk, nn) rows of a (K, N) b */
        const struct cpu_simd *s = cpu_simd();
        if (tb) {
            for (int64_t n = 0; n < nn; n++)
                b_to_f32(s, buf + n * kk, b, bt, K, (n0 + n) * K + k0, kk);
        } else {
            for (int64_t k = 0; k < kk; k++)
                b_to_f32(s, buf + k * nn, b, bt, N, (k0 + k) * N + n0, nn);
        }
        sgemm(ct, ta ? at + k0 * M : at + k0, buf, ta, tb, mm, nn, kk, lda, tb ? kk : nn, N,
              k0 == 0 ? beta : 1.0f);
    }
}

/* rows of b a thread takes at a time in a matrix-vector product */
#define GEMV_ROWS 16
/* up to this many rows of a, matrix-vector products beat the tiled sgemm */
#define GEMV_MAX_M 4

/* rows [t GEMV_ROWS, (t + 1) GEMV_ROWS) of c (M, N) = beta c + a (M, K) b^T */
static inline void gemv_chunk(float *c, const float *a, const void *b, cpu_dot_fn dot,
                              size_t row, int64_t M, int64_t N, int64_t K, float beta, int64_t t)
{
    int64_t n1 = (t + 1) * GEMV_ROWS < N ? (t + 1) * GEMV_ROWS : N;
    for (int64_t n = t * GEMV_ROWS; n < n1; n++) {
        const void *bn = (const char *)b + (size_t)n * row;
        for (int64_t m = 0; m < M; m++) {
            float v = dot(a + m * K, bn, K);
            c[m * N + n] = beta == 0.0f ? v : beta * c[m * N + n] + v;
        }
    }
}

void cpu_gemv(float *c, const float *a, const void *b, lv_dtype bt, int64_t M, int64_t N,
              int64_t K, float beta, const struct cpu_simd *s)
{
    cpu_dot_fn dot = s->dot[bt];
    size_t row = lv_dtype_bytes(bt, K);
    CPU_FOR(M * N * K, t, (N + GEMV_ROWS - 1) / GEMV_ROWS, {
        gemv_chunk(c, a, b, dot, row, M, N, K, beta, t);
    });
}

bool cpu_gemv_n(int n, float *const *c, const float *a, const void *const *b,
                const lv_dtype *bt, const int64_t *N, int64_t M, int64_t K)
{
    const struct cpu_simd *s = cpu_simd();
    cpu_dot_fn dot[CPU_GEMV_N_MAX];
    size_t row[CPU_GEMV_N_MAX];
    int64_t first[CPU_GEMV_N_MAX + 1] = { 0 }, work = 0;   /* product i's first chunk */
    if (n > CPU_GEMV_N_MAX || M > GEMV_MAX_M || K <= 0)
        return false;
    for (int i = 0; i < n; i++) {
        if (!(dot[i] = s->dot[bt[i]]))
            return false;
        row[i] = lv_dtype_bytes(bt[i], K);
        first[i + 1] = first[i] + (N[i] + GEMV_ROWS - 1) / GEMV_ROWS;
        work += M * N[i] * K;
    }
    CPU_FOR(work, t, first[n], {
        int i = 0;
        while (t >= first[i + 1])
            i++;
        gemv_chunk(c[i], a, b[i], dot[i], row[i], M, N[i], K, 0.0f, t - first[i]);
    });
    return true;
}

/* c (M, N) = a (M, K) b^T for NF4 b (N, K), K a multiple of 64: each row of b is whole
 * blocks. Each thread reads a row's block scales a chunk at a time into its stack, and the
 * row dot product looks the 4-bit values up in the table. */
#define NF4_CHUNK 256                          /* blocks of scales at a time: 16384 values */
_Static_assert(LV_NF4_GEMV_ROWS <= GEMV_MAX_M, "ops-matmul.c sends NF4 here for few rows");
static void nf4_gemv(float *c, const float *a, const void *b, int64_t M, int64_t N, int64_t K,
                     float beta)
{
    const unsigned char *codes = b;
    cpu_nf4_dot_fn dot = cpu_simd()->nf4_dot;
    int64_t nb = K / LV_NF4_BLOCK;
    CPU_FOR(M * N * K, t, (N + GEMV_ROWS - 1) / GEMV_ROWS, {
        int64_t n1 = (t + 1) * GEMV_ROWS < N ? (t + 1) * GEMV_ROWS : N;
        float sc[NF4_CHUNK], acc[GEMV_MAX_M];
        for (int64_t n = t * GEMV_ROWS; n < n1; n++) {
            memset(acc, 0, sizeof acc);
            for (int64_t j0 = 0; j0 < nb; j0 += NF4_CHUNK) {
                int64_t jn = nb - j0 < NF4_CHUNK ? nb - j0 : NF4_CHUNK;
                int64_t e0 = (n * nb + j0) * LV_NF4_BLOCK;          /* first value */
                lv_nf4_block_scales(sc, b, N * K, n * nb + j0, jn);
                for (int64_t m = 0; m < M; m++)
                    acc[m] += dot(a + m * K + j0 * LV_NF4_BLOCK, codes + e0 / 2, sc,
                                  jn * LV_NF4_BLOCK);
            }
            for (int64_t m = 0; m < M; m++)
                c[m * N + n] = beta == 0.0f ? acc[m] : beta * c[m * N + n] + acc[m];
        }
    });
}

void cpu_gemm(float *c, const float *a, const void *b, lv_dtype bt, int ta, int tb,
              int64_t M, int64_t N, int64_t K, float beta)
{
    if (M == 0 || N == 0)
        return;
    if (bt == LV_NF4) {                          /* decoding only: see ops-matmul.c */
        nf4_gemv(c, a, b, M, N, K, beta);
        return;
    }
    if (!ta && tb && M <= GEMV_MAX_M && K > 0 && cpu_simd()->dot[bt]) {
        cpu_gemv(c, a, b, bt, M, N, K, beta, cpu_simd());
        return;
    }
    if (K == 0) {
        for (int64_t i = 0; i < M * N; i++)
            c[i] = beta == 0.0f ? 0.0f : beta * c[i];
        return;
    }
    /* Each tile is one single-threaded sgemm, and the tiles depend on the shape only, so the
     * result is the same at any thread count (OpenBLAS's own threading splits the work by
     * thread count and changes the rounding). */
    int64_t tm = (M + TILE_M - 1) / TILE_M, tn = (N + TILE_N - 1) / TILE_N;
    CPU_FOR(2 * M * N * K, t, tm * tn, {
        int64_t m0 = (t / tn) * TILE_M, n0 = (t % tn) * TILE_N;
        gemm_tile(c, a, b, bt, ta, tb, M, N, K, beta, m0, M - m0 < TILE_M ? M - m0 : TILE_M, n0,
                  N - n0 < TILE_N ? N - n0 : TILE_N);
    });
}
