/*
 * matmul.cuh: matrix products on CUDA through cuBLAS (kernels/matmul.cu).
 *
 * Row-major, as everywhere in lavinia; cuBLAS is column-major, so matmul.cu computes
 * c^T = op(b)^T op(a)^T by swapping the operands instead of transposing anything. Every
 * product accumulates in F32 (CUBLAS_COMPUTE_32F: true F32 for F32 operands, never TF32, so
 * F32 results match the CPU to rounding). The weight b may be F32, F16 or BF16; for F16/BF16
 * the F32 operand (a in the forward, dy in the backward) is converted to b's dtype in a
 * scratch buffer so cuBLAS runs a half-precision tensor-core GEMM with F32 output.
 *
 * Batching: a has `batch` matrices; b has nb = 1 matrix shared by all of them, or nb = batch.
 * Gradients are accumulated (+=), never assigned; with nb = 1, db sums over the batch.
 * Everything is asynchronous on cb->stream; functions return LV_OK or a status with
 * lv_errmsg() set (LV_ENOTSUP when cuBLAS refuses a dtype on this GPU).
 */
#ifndef LV_CUDA_MATMUL_CUH
#define LV_CUDA_MATMUL_CUH

#include <stddef.h>
#include <stdint.h>

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "lavinia/tensor.h"

/* The cuBLAS state the products share; embedded in the backend's context. */
struct cuda_blas {
    cublasHandle_t handle;      /* bound to stream */
    cudaStream_t stream;        /* owned by the caller */
    void *scratch;              /* device memory for converted operands, grown on demand */
    size_t scratch_bytes;
};

/* A handle on stream (which the caller keeps owning); LV_OK or a status with the message. */
int cuda_blas_init(struct cuda_blas *cb, cudaStream_t stream);
/* Destroy the handle and free the scratch buffer. */
void cuda_blas_done(struct cuda_blas *cb);

/* out = op(a) op(b), assigned.
 * out: (batch, M, N) F32
 * a:   (batch, M, K) F32, or (batch, K, M) if ta
 * b:   (nb, K, N) of dtype bt (F32/F16/BF16), or (nb, N, K) if tb; nb is 1 or batch */
int cuda_matmul_forward(struct cuda_blas *cb, float *out, const float *a, const void *b,
                        lv_dtype bt, int ta, int tb, int64_t batch, int64_t nb,
                        int64_t M, int64_t N, int64_t K);
/* da += dy op(b)^T (stored as op(b) dy^T if ta), db += op(a)^T dy (stored as dy^T op(a) if tb).
 * da: the shape of a, db: the shape of b but F32 whatever bt is; either may be NULL.
 * dy: (batch, M, N) F32.  Other arguments as in the forward. */
int cuda_matmul_backward(struct cuda_blas *cb, float *da, float *db, const float *dy,
                         const float *a, const void *b, lv_dtype bt, int ta, int tb,
                         int64_t batch, int64_t nb, int64_t M, int64_t N, int64_t K);

#endif /* LV_CUDA_MATMUL_CUH */
