/*
 * cuda.cu: the CUDA backend: device memory, copies, and the one dispatch switch that sends a
 * node's forward or backward to the kernels of this directory (matmul.cu, elementwise.cu).
 *
 * It implements struct lv_backend_ops (src/backend/backend.h) for the device that is current
 * when lv_backend_cuda() is first called, with one stream and one cuBLAS handle. Every kernel
 * and device-to-device copy is queued on that stream, so work runs in the order the graph
 * issues it; copies that touch host memory wait for the stream (see cuda_copy).
 *
 * Deliberately minimal: matmul (F32 a; F32/F16/BF16 b; transposes; batches with b shared or
 * per matrix) and same-shape F32 add. supports() says no to everything else, and the graph
 * runs those nodes on the CPU. Tensors reaching this file are contiguous device memory; the
 * graph copies strided inputs first (src/core/graph.h).
 *
 * The backend object is a process-wide static: lv_backend_cuda() returns the same object
 * until done() releases it. Not thread-safe; the engine calls backends from its one worker.
 */
#include <string.h>

#include <cuda_runtime.h>

#include "lavinia/error.h"
#include "backend/backend.h"

#include "elementwise.cuh"
#include "matmul.cuh"

/* The backend's state. */
struct cuda_ctx {
    bool ready;                 /* lv_backend_cuda() succeeded and done() has not run */
    int device;                 /* CUDA device ordinal */
    cudaStream_t stream;        /* every kernel and copy */
    struct cuda_blas blas;      /* cuBLAS handle on stream, conversion scratch */
};

static struct cuda_ctx cuda_state;

/* LV_OK, or the CUDA error as a message naming what failed. */
static int cuda_check(const char *what, cudaError_t err)
{
    if (err == cudaSuccess)
        return LV_OK;
    return lv_error_status(err == cudaErrorMemoryAllocation ? LV_ENOMEM : LV_ERR,
                           "cuda: %s: %s", what, cudaGetErrorString(err));
}

/* --- memory ------------------------------------------------------------------------- */

static void *cuda_alloc(void *ctx, size_t n)
{
    void *p = NULL;
    cudaError_t err;

    (void)ctx;
    /* cudaMalloc(0) may succeed with NULL, which callers would read as failure. Its
     * alignment is 256 bytes, more than the 64 the interface asks for. */
    err = cudaMalloc(&p, n ? n : 1);
    if (err != cudaSuccess) {
        lv_error_status(LV_ENOMEM, "cuda: allocating %zu bytes: %s", n,
                        cudaGetErrorString(err));
        return NULL;
    }
    return p;
}

/* cudaFree waits for the device to go idle, so queued kernels using p finish first. */
static void cuda_free(void *ctx, void *p)
{
    (void)ctx;
    if (p)
        cudaFree(p);
}

static int cuda_copy(void *ctx, void *dst, lv_device dst_dev, const void *src,
                     lv_device src_dev, size_t n)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    cudaMemcpyKind kind;
    cudaError_t err;

    if (n == 0)
        return LV_OK;
    if (dst_dev == LV_DEVICE_CPU && src_dev == LV_DEVICE_CPU) {
        memcpy(dst, src, n);
        return LV_OK;
    }
    kind = dst_dev == LV_DEVICE_CPU ? cudaMemcpyDeviceToHost
         : src_dev == LV_DEVICE_CPU ? cudaMemcpyHostToDevice
         : cudaMemcpyDeviceToDevice;
    err = cudaMemcpyAsync(dst, src, n, kind, c->stream);
    /* The host side may be pageable, or reused by the caller as soon as we return, so a copy
     * that touches it completes before we do. Device to device stays queued in order. */
    if (err == cudaSuccess && kind != cudaMemcpyDeviceToDevice)
        err = cudaStreamSynchronize(c->stream);
    return cuda_check(kind == cudaMemcpyDeviceToHost ? "copy to host"
                      : kind == cudaMemcpyHostToDevice ? "copy to device"
                      : "copy on device", err);
}

static int cuda_sync(void *ctx)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;

    /* Errors of kernels that already returned (bad addresses, ...) surface here. */
    return cuda_check("queued work", cudaStreamSynchronize(c->stream));
}

/* --- ops ---------------------------------------------------------------------------- */

/* Matmul with an F32 left side and an F32/F16/BF16 right side; add of two same-shape F32
 * tensors (broadcasting adds stay on the CPU for now). */
static bool cuda_supports(void *ctx, const lv_node *node)
{
    (void)ctx;
    const lv_tensor *a = node->src[0], *b = node->src[1];
    switch (node->op) {
    case LV_OP_MATMUL:
        return a && b && a->dtype == LV_F32 &&
               (b->dtype == LV_F32 || b->dtype == LV_F16 || b->dtype == LV_BF16);
    case LV_OP_ADD:
        return a && b && a->dtype == LV_F32 && b->dtype == LV_F32 && lv_tensor_same_shape(a, b);
    default:
        return false;
    }
}

/* Every tensor of the node is contiguous memory on this device (the graph's job). */
static int check_node(const lv_node *node)
{
    const lv_tensor *out = node->out;

    if (!out || out->device != LV_DEVICE_CUDA || !lv_tensor_is_contiguous(out))
        return lv_error("cuda: %s: output is not contiguous CUDA memory (graph bug)",
                        lv_op_name(node->op));
    for (int i = 0; i < LV_MAX_SRC && node->src[i]; i++)
        if (node->src[i]->device != LV_DEVICE_CUDA || !lv_tensor_is_contiguous(node->src[i]))
            return lv_error("cuda: %s: input %d is not contiguous CUDA memory (graph bug)",
                            lv_op_name(node->op), i);
    return LV_OK;
}

/* Sizes of a matmul node, as lv_matmul (lavinia/ops.h) defines them. */
struct mm_dims {
    int ta, tb;
    int64_t batch, nb;          /* matrices in a, in b (1: shared by all) */
    int64_t M, N, K;
};

static int matmul_dims(struct mm_dims *d, const lv_node *node)
{
    const lv_tensor *a = node->src[0], *b = node->src[1];
    char as[64], bs[64];
    int64_t kb;

    d->ta = (node->ip[0] & LV_TRANS_A) != 0;
    d->tb = (node->ip[0] & LV_TRANS_B) != 0;
    if (!b || a->ndim < 2 || b->ndim < 2 || b->ndim > a->ndim)
        goto bad_shape;
    d->M = a->shape[a->ndim - (d->ta ? 1 : 2)];
    d->K = a->shape[a->ndim - (d->ta ? 2 : 1)];
    kb = b->shape[b->ndim - (d->tb ? 1 : 2)];
    d->N = b->shape[b->ndim - (d->tb ? 2 : 1)];
    if (kb != d->K)
        goto bad_shape;
    d->batch = 1;
    for (int i = 0; i < a->ndim - 2; i++)
        d->batch *= a->shape[i];
    d->nb = 1;
    for (int i = 0; i < b->ndim - 2; i++) {
        int64_t bi = b->shape[i], ai = a->shape[a->ndim - b->ndim + i];
        if (bi != 1 && bi != ai)
            goto bad_shape;
        d->nb *= bi;
    }
    /* Per-dimension broadcasting (a (P, Q, ...), b (1, Q, ...)) would need a batch index
     * map; nothing uses it yet. */
    if (d->nb != 1 && d->nb != d->batch)
        return lv_error_status(LV_ENOTSUP, "cuda: matmul: b %s broadcast in part against "
                               "a %s is not supported", lv_shape_str(b, bs, sizeof bs),
                               lv_shape_str(a, as, sizeof as));
    if (a->dtype != LV_F32 || node->out->dtype != LV_F32
        || (b->dtype != LV_F32 && b->dtype != LV_F16 && b->dtype != LV_BF16))
        return lv_error_status(LV_ENOTSUP, "cuda: matmul: a %s, b %s: a must be f32, "
                               "b f32, f16 or bf16", lv_dtype_name(a->dtype),
                               lv_dtype_name(b->dtype));
    return LV_OK;

bad_shape:
    return lv_error("cuda: matmul: a %s and b %s do not fit (flags %lld)",
                    lv_shape_str(a, as, sizeof as), b ? lv_shape_str(b, bs, sizeof bs) : "NULL",
                    (long long)node->ip[0]);
}

static int matmul_forward(struct cuda_ctx *c, lv_node *node)
{
    const lv_tensor *a = node->src[0], *b = node->src[1];
    struct mm_dims d;
    int rc = matmul_dims(&d, node);

    if (rc != LV_OK)
        return rc;
    return cuda_matmul_forward(&c->blas, (float *)node->out->data, (const float *)a->data,
                               b->data, b->dtype, d.ta, d.tb, d.batch, d.nb, d.M, d.N, d.K);
}

static int matmul_backward(struct cuda_ctx *c, lv_node *node, const lv_tensor *dy,
                           lv_tensor *const *dsrc)
{
    const lv_tensor *a = node->src[0], *b = node->src[1];
    struct mm_dims d;
    int rc = matmul_dims(&d, node);

    if (rc != LV_OK)
        return rc;
    return cuda_matmul_backward(&c->blas, dsrc[0] ? (float *)dsrc[0]->data : NULL,
                                dsrc[1] ? (float *)dsrc[1]->data : NULL,
                                (const float *)dy->data, (const float *)a->data, b->data,
                                b->dtype, d.ta, d.tb, d.batch, d.nb, d.M, d.N, d.K);
}

/* Same shape and F32 only: broadcasting b is left to the CPU. */
static int add_check(const lv_node *node)
{
    const lv_tensor *a = node->src[0], *b = node->src[1];
    char as[64], bs[64];

    if (!b || a->dtype != LV_F32 || b->dtype != LV_F32 || node->out->dtype != LV_F32
        || !lv_tensor_same_shape(a, b))
        return lv_error_status(LV_ENOTSUP, "cuda: add: a %s %s, b %s %s: only f32 of the "
                               "same shape", lv_dtype_name(a->dtype),
                               lv_shape_str(a, as, sizeof as),
                               b ? lv_dtype_name(b->dtype) : "NULL",
                               b ? lv_shape_str(b, bs, sizeof bs) : "");
    return LV_OK;
}

static int add_forward(struct cuda_ctx *c, lv_node *node)
{
    const lv_tensor *a = node->src[0], *b = node->src[1];
    int rc = add_check(node);

    if (rc != LV_OK)
        return rc;
    return cuda_check("add", cuda_add_forward((float *)node->out->data, (const float *)a->data,
                                              (const float *)b->data, lv_tensor_nelem(a),
                                              c->stream));
}

/* da += dy, db += dy */
static int add_backward(struct cuda_ctx *c, lv_node *node, const lv_tensor *dy,
                        lv_tensor *const *dsrc)
{
    int64_t n = lv_tensor_nelem(node->src[0]);
    int rc = add_check(node);

    for (int i = 0; i < 2 && rc == LV_OK; i++)
        if (dsrc[i])
            rc = cuda_check("add backward", cuda_accumulate((float *)dsrc[i]->data,
                                                            (const float *)dy->data, n,
                                                            c->stream));
    return rc;
}

static int cuda_forward(void *ctx, lv_node *node)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    int rc = check_node(node);

    if (rc != LV_OK)
        return rc;
    switch (node->op) {
    case LV_OP_MATMUL:
        return matmul_forward(c, node);
    case LV_OP_ADD:
        return add_forward(c, node);
    default:
        return lv_error_status(LV_ENOTSUP, "cuda: no forward for %s",
                               lv_op_name(node->op));
    }
}

static int cuda_backward(void *ctx, lv_node *node, const lv_tensor *dy,
                         lv_tensor *const *dsrc)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    int rc = check_node(node);

    if (rc != LV_OK)
        return rc;
    switch (node->op) {
    case LV_OP_MATMUL:
        return matmul_backward(c, node, dy, dsrc);
    case LV_OP_ADD:
        return add_backward(c, node, dy, dsrc);
    default:
        return lv_error_status(LV_ENOTSUP, "cuda: no backward for %s",
                               lv_op_name(node->op));
    }
}

/* --- the backend -------------------------------------------------------------------- */

static void cuda_done(void *ctx)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;

    if (!c->ready)
        return;
    cudaStreamSynchronize(c->stream);
    cuda_blas_done(&c->blas);
    cudaStreamDestroy(c->stream);
    c->ready = false;
}

static const struct lv_backend_ops cuda_ops = {
    .name        = "cuda",
    .device      = LV_DEVICE_CUDA,
    .alloc       = cuda_alloc,
    .free        = cuda_free,
    .copy        = cuda_copy,
    .sync        = cuda_sync,
    .supports    = cuda_supports,
    .forward     = cuda_forward,
    .backward    = cuda_backward,
    .set_threads = NULL,            /* the GPU has no thread count to set */
    .done        = cuda_done,
};

static lv_backend cuda_backend = { .ops = &cuda_ops, .ctx = &cuda_state };

extern "C" lv_backend *lv_backend_cuda(void)
{
    struct cuda_ctx *c = &cuda_state;
    int n = 0;
    cudaError_t err;

    if (c->ready)
        return &cuda_backend;
    err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess || n == 0) {
        cudaGetLastError();         /* don't leave the error behind for later calls */
        lv_error("cuda: no usable device (cudaGetDeviceCount: %s)",
                 err != cudaSuccess ? cudaGetErrorString(err) : "0 devices");
        return NULL;
    }
    err = cudaGetDevice(&c->device);
    if (err == cudaSuccess)
        err = cudaStreamCreate(&c->stream);
    if (err != cudaSuccess) {
        lv_error("cuda: no usable device (creating a stream: %s)", cudaGetErrorString(err));
        return NULL;
    }
    if (cuda_blas_init(&c->blas, c->stream) != LV_OK) {
        cudaStreamDestroy(c->stream);
        return NULL;
    }
    c->ready = true;
    return &cuda_backend;
}
