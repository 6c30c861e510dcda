/*
 * backend.h (internal): the backend interface, a table of function pointers plus a context.
 *
 * The graph calls a backend to allocate and move memory and to run one node's forward or
 * backward. A backend that cannot run an op for a dtype says so through supports(); the graph
 * then runs that node on the CPU backend and says so once in the log. Every implementation
 * fills every slot in declaration order, writing NULL explicitly for optional slots it lacks.
 *
 * Gradient rule for backward(): gradients are accumulated (+=) into the buffers the graph
 * hands over (lv_grad_of), never assigned, so fan-out and accumulation just work.
 */
#ifndef LV_BACKEND_H
#define LV_BACKEND_H

#include "lavinia/tensor.h"
#include "core/graph.h"

#ifdef __cplusplus
extern "C" {
#endif

struct lv_backend_ops {
    const char *name;                                      /* "cpu", "cuda" */
    lv_device device;
    /* Device memory of n bytes, 64-byte aligned; NULL on failure (message set). */
    void *(*alloc)(void *ctx, size_t n);
    /* Free what alloc returned; NULL is fine. */
    void (*free)(void *ctx, void *p);
    /* Copy n bytes; each side is on this backend's device or on the host (CPU). */
    int (*copy)(void *ctx, void *dst, lv_device dst_dev, const void *src, lv_device src_dev,
                size_t n);
    /* Wait until queued work is finished. */
    int (*sync)(void *ctx);
    /* Can this backend run this node (its op, its inputs' dtypes and shapes)? Asked before
     * the forward and again before the backward; false sends the node to the CPU. */
    bool (*supports)(void *ctx, const lv_node *node);
    /* Compute node->out from node->src (and node->saved where the op keeps statistics). */
    int (*forward)(void *ctx, lv_node *node);
    /* Accumulate input gradients: dy is node->out's gradient; dsrc[i] is NULL for inputs
     * that take none. */
    int (*backward)(void *ctx, lv_node *node, const lv_tensor *dy, lv_tensor *const *dsrc);
    /* (optional) Run n nodes at once where that is faster than one by one (the CPU: matrix
     * products of a few rows sharing their input, one pass over all the weights' rows);
     * false: not taken, the caller runs them one by one. */
    bool (*forward_n)(void *ctx, lv_node *const *nodes, int n);
    /* (optional) Set the worker thread count; NULL: fixed by the backend. */
    void (*set_threads)(void *ctx, int n);
    /* (optional) Release the context; NULL: nothing to release. */
    void (*done)(void *ctx);
};

struct lv_backend {
    const struct lv_backend_ops *ops;
    void *ctx;
};

/* The CPU backend (always present). */
lv_backend *lv_backend_cpu(void);
/* Up to this many rows of x, the CPU backend multiplies NF4 weights as stored (decoding);
 * ops-matmul.c dequantises them for anything larger. */
#define LV_NF4_GEMV_ROWS 4
/* The CUDA backend, or NULL with a one-line reason (no build support, no driver, no device). */
lv_backend *lv_backend_cuda(void);
/* --device auto|cpu|cuda: auto falls back to the CPU and logs one line saying why. */
lv_backend *lv_backend_by_name(const char *name);

#ifdef __cplusplus
}
#endif
#endif /* LV_BACKEND_H */
