/*
 * elementwise.cu: elementwise CUDA kernels (see elementwise.cuh).
 *
 * A grid-stride loop with 64-bit indices, so one launch covers any n and the grid size stays
 * bounded. Every element is written by one thread, so results are bitwise those of the CPU
 * (one IEEE F32 addition per element, no fused operations).
 */
#include "elementwise.cuh"

static const int EW_BLOCK = 256;         /* threads per block */
static const int64_t EW_MAX_GRID = 4096;  /* blocks; the loop strides over the rest */

/* out[i] = a[i] + b[i]; out may alias a (the accumulate form). */
static __global__ void add_kernel(float *out, const float *a, const float *b, int64_t n)
{
    int64_t step = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step)
        out[i] = a[i] + b[i];
}

static unsigned ew_grid(int64_t n)
{
    int64_t g = (n + EW_BLOCK - 1) / EW_BLOCK;
    return (unsigned)(g < EW_MAX_GRID ? g : EW_MAX_GRID);
}

cudaError_t cuda_add_forward(float *out, const float *a, const float *b, int64_t n,
                             cudaStream_t stream)
{
    if (n <= 0)
        return cudaSuccess;
    add_kernel<<<ew_grid(n), EW_BLOCK, 0, stream>>>(out, a, b, n);
    return cudaGetLastError();
}

cudaError_t cuda_accumulate(float *d, const float *dy, int64_t n, cudaStream_t stream)
{
    return cuda_add_forward(d, d, dy, n, stream);
}
