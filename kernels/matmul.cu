/*
 * matmul.cu: matrix products through cublasGemmStridedBatchedEx (see matmul.cuh).
 *
 * Mixed precision: cuBLAS wants both operands of one type. With an F16/BF16 weight we convert
 * the F32 activation (a, or dy for da) to the weight's dtype in a scratch buffer, rather than
 * widening the weight to F32: the weight stays half the bytes, the GEMM runs on tensor cores,
 * and activations are the smaller operand in inference. The cost is one extra rounding of the
 * activation (relative 2^-11 for F16, 2^-8 for BF16), which the parity test allows for, and
 * F16's range: activations beyond 65504 become inf (BF16 has F32's range). db never needs a
 * conversion: it is op(a)^T dy, both F32.
 *
 * Layout: a row-major (R, C) matrix is a column-major (C, R) one, i.e. its transpose, so
 * c^T = op(b)^T op(a)^T is one cuBLAS call with b first, m = N, n = M. The 64-bit API
 * (CUDA 12+) takes the sizes as int64_t, so no size needs a range check here.
 */
#include "matmul.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "lavinia/error.h"

/* --- errors and the scratch buffer -------------------------------------------------- */

static int blas_error(const char *what, cublasStatus_t st)
{
    int status = (st == CUBLAS_STATUS_NOT_SUPPORTED || st == CUBLAS_STATUS_ARCH_MISMATCH)
                     ? LV_ENOTSUP : LV_ERR;
    return lv_error_status(status, "cuda: %s: %s", what, cublasGetStatusString(st));
}

int cuda_blas_init(struct cuda_blas *cb, cudaStream_t stream)
{
    cublasStatus_t st;

    cb->handle = NULL;
    cb->stream = stream;
    cb->scratch = NULL;
    cb->scratch_bytes = 0;
    st = cublasCreate(&cb->handle);
    if (st != CUBLAS_STATUS_SUCCESS) {
        cb->handle = NULL;
        return blas_error("cublasCreate", st);
    }
    st = cublasSetStream(cb->handle, stream);
    if (st != CUBLAS_STATUS_SUCCESS) {
        cublasDestroy(cb->handle);
        cb->handle = NULL;
        return blas_error("cublasSetStream", st);
    }
    return LV_OK;
}

void cuda_blas_done(struct cuda_blas *cb)
{
    if (cb->handle)
        cublasDestroy(cb->handle);
    cudaFree(cb->scratch);
    cb->handle = NULL;
    cb->scratch = NULL;
    cb->scratch_bytes = 0;
}

/* Make the scratch buffer at least n bytes. It only grows, so after the first steps of a
 * run no call allocates. */
static int scratch_reserve(struct cuda_blas *cb, size_t n)
{
    cudaError_t err;

    if (n <= cb->scratch_bytes)
        return LV_OK;
    /* Work queued on the stream may still read the old buffer. */
    cudaStreamSynchronize(cb->stream);
    cudaFree(cb->scratch);
    cb->scratch = NULL;
    cb->scratch_bytes = 0;
    err = cudaMalloc(&cb->scratch, n);
    if (err != cudaSuccess) {
        cb->scratch = NULL;
        return lv_error_status(LV_ENOMEM, "cuda: matmul scratch of %zu bytes: %s", n,
                               cudaGetErrorString(err));
    }
    cb->scratch_bytes = n;
    return LV_OK;
}

/* --- conversion of the F32 operand -------------------------------------------------- */

/* Round to nearest even into the operand type. */
static __device__ void store(__half *d, float x) { *d = __float2half_rn(x); }
static __device__ void store(__nv_bfloat16 *d, float x) { *d = __float2bfloat16_rn(x); }

/* dst = src converted to T.  dst, src: (n) */
template <typename T>
static __global__ void convert_kernel(T *dst, const float *src, int64_t n)
{
    int64_t step = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step)
        store(&dst[i], src[i]);
}

/* *out = x (n F32 elements) in dtype t: x itself for F32, else a converted copy in the
 * scratch buffer (valid until the next conversion; stream order keeps uses apart). */
static int as_dtype(struct cuda_blas *cb, const void **out, const float *x, int64_t n,
                    lv_dtype t)
{
    const int BLOCK = 256;
    const int64_t MAX_GRID = 4096;
    int64_t g = (n + BLOCK - 1) / BLOCK;
    unsigned grid = (unsigned)(g < MAX_GRID ? (g > 0 ? g : 1) : MAX_GRID);
    int rc;

    if (t == LV_F32) {
        *out = x;
        return LV_OK;
    }
    rc = scratch_reserve(cb, (size_t)n * 2);
    if (rc != LV_OK)
        return rc;
    if (t == LV_F16)
        convert_kernel<__half><<<grid, BLOCK, 0, cb->stream>>>(
            (__half *)cb->scratch, x, n);
    else
        convert_kernel<__nv_bfloat16><<<grid, BLOCK, 0, cb->stream>>>(
            (__nv_bfloat16 *)cb->scratch, x, n);
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess)
        return lv_error("cuda: matmul: converting to %s: %s", lv_dtype_name(t),
                        cudaGetErrorString(err));
    *out = cb->scratch;
    return LV_OK;
}

/* --- one row-major GEMM call -------------------------------------------------------- */

static cudaDataType cuda_type(lv_dtype t)
{
    return t == LV_F16 ? CUDA_R_16F : t == LV_BF16 ? CUDA_R_16BF : CUDA_R_32F;
}

/* c = op(a) op(b) + beta c, row-major, for count matrices; F32 accumulation and output.
 * c: (M, N) F32   a: (M, K), or (K, M) if ta   b: (K, N), or (N, K) if tb; a and b of type t
 * sa, sb, sc: elements between consecutive matrices. A stride of 0 reuses one matrix; cuBLAS
 * does not document that for strided batches, so such calls are issued one matrix at a time
 * (in order on the stream, so an output with sc = 0 and beta = 1 accumulates deterministically). */
static int gemm_rm(struct cuda_blas *cb, float *c, const void *a, const void *b, lv_dtype t,
                   int ta, int tb, int64_t M, int64_t N, int64_t K, float beta,
                   int64_t count, int64_t sa, int64_t sb, int64_t sc)
{
    const float alpha = 1.0f;
    const size_t es = lv_dtype_size(t);
    const cudaDataType ct = cuda_type(t);
    const int64_t lda = ta ? M : K, ldb = tb ? K : N;
    const int64_t calls = (count > 1 && (sa == 0 || sb == 0 || sc == 0)) ? count : 1;
    const int64_t per_call = count / calls;

    for (int64_t i = 0; i < calls; i++) {
        const char *ai = (const char *)a + (size_t)(i * sa) * es;
        const char *bi = (const char *)b + (size_t)(i * sb) * es;
        float *ci = c + i * sc;
        cublasStatus_t st = cublasGemmStridedBatchedEx_64(
            cb->handle, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
            N, M, K, &alpha, bi, ct, ldb, sb, ai, ct, lda, sa, &beta, ci, CUDA_R_32F, N, sc,
            per_call, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        if (st != CUBLAS_STATUS_SUCCESS)
            return blas_error(t == LV_F32 ? "matmul (f32)" : t == LV_F16 ? "matmul (f16)"
                                                                           : "matmul (bf16)",
                              st);
    }
    return LV_OK;
}

/* --- forward and backward ----------------------------------------------------------- */

int cuda_matmul_forward(struct cuda_blas *cb, float *out, const float *a, const void *b,
                        lv_dtype bt, int ta, int tb, int64_t batch, int64_t nb,
                        int64_t M, int64_t N, int64_t K)
{
    const void *ac;
    int rc = as_dtype(cb, &ac, a, batch * M * K, bt);

    if (rc != LV_OK)
        return rc;
    /* One shared b and an untransposed a: the batch is one (batch*M, K) matrix. */
    if (nb == 1 && !ta)
        return gemm_rm(cb, out, ac, b, bt, 0, tb, batch * M, N, K, 0.0f, 1, 0, 0, 0);
    return gemm_rm(cb, out, ac, b, bt, ta, tb, M, N, K, 0.0f, batch, M * K,
                   nb == 1 ? 0 : K * N, M * N);
}

int cuda_matmul_backward(struct cuda_blas *cb, float *da, float *db, const float *dy,
                         const float *a, const void *b, lv_dtype bt, int ta, int tb,
                         int64_t batch, int64_t nb, int64_t M, int64_t N, int64_t K)
{
    const int64_t sb = nb == 1 ? 0 : K * N;   /* also the stride of db */
    int rc;

    if (da) {
        const void *dyc;
        rc = as_dtype(cb, &dyc, dy, batch * M * N, bt);
        if (rc != LV_OK)
            return rc;
        if (!ta && nb == 1)         /* da (batch*M, K) += dy (batch*M, N) op(b)^T */
            rc = gemm_rm(cb, da, dyc, b, bt, 0, !tb, batch * M, K, N, 1.0f, 1, 0, 0, 0);
        else if (!ta)               /* da (M, K) += dy (M, N) op(b)^T, per matrix */
            rc = gemm_rm(cb, da, dyc, b, bt, 0, !tb, M, K, N, 1.0f, batch, M * N, sb, M * K);
        else                        /* da (K, M) += op(b) (K, N) dy^T (N, M) */
            rc = gemm_rm(cb, da, b, dyc, bt, tb, 1, K, M, N, 1.0f, batch, sb, M * N, K * M);
        if (rc != LV_OK)
            return rc;
    }
    if (db) {
        /* With a shared b and an untransposed a, a and dy are single (batch*M, .) matrices
         * and the sum over the batch is the inner dimension of one GEMM. Otherwise, with a
         * shared b, sb = 0 makes gemm_rm accumulate the matrices one after another. */
        const int fold = nb == 1 && !ta;
        const int64_t count = fold ? 1 : batch, inner = fold ? batch * M : M;
        if (!tb)                    /* db (K, N) += op(a)^T (K, M) dy (M, N) */
            rc = gemm_rm(cb, db, a, dy, LV_F32, !ta, 0, K, N, inner, 1.0f, count, M * K,
                         M * N, sb);
        else                        /* db (N, K) += dy^T (N, M) op(a) (M, K) */
            rc = gemm_rm(cb, db, dy, a, LV_F32, 1, ta, N, K, inner, 1.0f, count, M * N,
                         M * K, sb);
        if (rc != LV_OK)
            return rc;
    }
    return LV_OK;
}
