/*
 * elementwise.cuh: the CUDA elementwise family (kernels/elementwise.cu).
 *
 * For now one kernel, out = a + b over n contiguous F32 elements, used twice: as the forward
 * of LV_OP_ADD (same shape only; broadcasting stays on the CPU) and, with out aliasing a, as
 * the gradient accumulation d += dy that every backward needs. Launches are asynchronous on
 * the given stream; the return value only reports launch errors (cudaGetLastError), errors
 * while running show up at the next synchronisation.
 */
#ifndef LV_CUDA_ELEMENTWISE_CUH
#define LV_CUDA_ELEMENTWISE_CUH

#include <stdint.h>

#include <cuda_runtime.h>

/* out = a + b.  out, a, b: (n) F32 on the device; out may alias a or b. */
cudaError_t cuda_add_forward(float *out, const float *a, const float *b, int64_t n,
                             cudaStream_t stream);
/* d += dy.  d, dy: (n) F32 on the device (the accumulate form of the kernel above). */
cudaError_t cuda_accumulate(float *d, const float *dy, int64_t n, cudaStream_t stream);

#endif /* LV_CUDA_ELEMENTWISE_CUH */
