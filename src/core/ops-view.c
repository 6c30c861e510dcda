/*
 * ops-view.c: reshape, transpose, permute, slice (views, no copy), cont, cast and detach.
 *
 * A view's node keeps where its elements sit inside the input's gradient, which is always
 * contiguous in the input's logical shape: ip[0] is the offset and ip[1..4] the strides.
 * The view's data uses the input's real strides instead, so views of views compose; only
 * reshape needs a contiguous input and copies a strided one first.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "core/ops.h"

#include <string.h>

/* Contiguous strides of a shape (what the input's gradient uses). */
static void contiguous_strides(int64_t *st, const lv_tensor *t)
{
    st[LV_MAX_DIMS - 1] = 1;
    for (int i = LV_MAX_DIMS - 1; i > 0; i--)
        st[i - 1] = st[i] * (i < t->ndim ? t->shape[i] : 1);
    for (int i = t->ndim; i < LV_MAX_DIMS; i++)
        st[i] = 1;
}

/* A view of x: shape, data strides and data offset (elements); gstride/goff place it in
 * x's gradient. */
static lv_tensor *make_view(lv_graph *g, lv_tensor *x, int ndim, const int64_t *shape,
                            const int64_t *stride, int64_t off, const int64_t *gstride,
                            int64_t goff)
{
    if (lv_dtype_is_block(x->dtype) && (off != 0 || ndim < 1 ||
                                        shape[ndim - 1] != x->shape[x->ndim - 1] ||
                                        stride[ndim - 1] != 1)) {
        lv_error("view: a %s tensor keeps its rows whole (only reshapes of its leading dims)",
                 lv_dtype_name(x->dtype));
        return NULL;
    }
    lv_node *n = op_begin(g, LV_OP_VIEW);
    if (!n)
        return NULL;
    lv_tensor *y = lv_graph_alloc(g, sizeof *y);
    if (!y)
        return NULL;
    lv_tensor_init(y, (char *)x->data + off * (int64_t)lv_dtype_size(x->dtype), x->dtype, ndim,
                   shape);
    for (int i = 0; i < ndim; i++)
        y->stride[i] = stride[i];
    y->device = x->device;
    y->flags = LV_TENSOR_VIEW;
    n->out = y;
    n->src[0] = x;
    n->ip[0] = goff;
    for (int i = 0; i < LV_MAX_DIMS; i++)
        n->ip[1 + i] = i < ndim ? gstride[i] : 0;
    return op_run(g, n);
}

lv_tensor *op_cont(lv_graph *g, lv_tensor *x)
{
    if (!x || lv_tensor_is_contiguous(x))
        return x;
    lv_node *n = op_begin(g, LV_OP_CONT);
    if (!n)
        return NULL;
    n->src[0] = x;
    n->out = lv_graph_tensor(g, x->dtype == LV_I32 ? LV_I32 : LV_F32, x->ndim, x->shape);
    return op_run(g, n);
}

lv_tensor *lv_cont(lv_graph *g, lv_tensor *x)
{
    if (!x)
        return NULL;
    if (x->dtype != LV_F32 && x->dtype != LV_I32)
        return lv_cast(g, x, LV_F32);
    return op_cont(g, x);
}

lv_tensor *lv_cast(lv_graph *g, lv_tensor *x, lv_dtype dtype)
{
    if (!x)
        return NULL;
    /* block types (frozen weights) may be dequantised: DoRA's weight norm, merging */
    bool dequant = lv_dtype_is_block(x->dtype) && lv_tensor_is_contiguous(x);
    if (dtype == LV_I32 || x->dtype == LV_I32 || (unsigned)dtype >= LV_DTYPE_COUNT ||
        lv_dtype_is_block(dtype) || (lv_dtype_is_block(x->dtype) && !dequant)) {
        lv_error("cast: only between F32, F16 and BF16, or from a contiguous block type (%s "
                 "to %s)", lv_dtype_name(x->dtype), lv_dtype_name(dtype));
        return NULL;
    }
    lv_node *n = op_begin(g, LV_OP_CAST);
    if (!n)
        return NULL;
    n->src[0] = x;
    n->out = lv_graph_tensor(g, dtype, x->ndim, x->shape);
    return op_run(g, n);
}

lv_tensor *lv_detach(lv_graph *g, lv_tensor *x)
{
    if (!x)
        return NULL;
    lv_tensor *y = lv_graph_alloc(g, sizeof *y);
    if (!y)
        return NULL;
    *y = *x;
    y->grad = NULL;
    y->node = -1;
    y->flags = (x->flags | LV_TENSOR_DETACHED | LV_TENSOR_VIEW) &
               ~(LV_TENSOR_PARAM | LV_TENSOR_NEEDS_GRAD | LV_TENSOR_OWNS_DATA);
    return y;
}

lv_tensor *lv_reshape(lv_graph *g, lv_tensor *x, int ndim, const int64_t *shape)
{
    if (!x)
        return NULL;
    if (ndim < 1 || ndim > LV_MAX_DIMS) {
        lv_error("reshape: %d dimensions (1 to %d)", ndim, LV_MAX_DIMS);
        return NULL;
    }
    int64_t sh[LV_MAX_DIMS], n = 1, infer = -1;
    for (int i = 0; i < ndim; i++) {
        sh[i] = shape[i];
        if (sh[i] == -1 && infer < 0)
            infer = i;
        else if (sh[i] < 0) {
            lv_error("reshape: bad dimension %lld", (long long)sh[i]);
            return NULL;
        } else
            n *= sh[i];
    }
    int64_t total = lv_tensor_nelem(x);
    if (infer >= 0)
        sh[infer] = n ? total / n : 0;
    if ((infer >= 0 ? n * sh[infer] : n) != total) {
        lv_error("reshape: %s has %lld elements, not what the new shape holds",
                 op_shape(x), (long long)total);
        return NULL;
    }
    x = op_cont(g, x);
    if (!x)
        return NULL;
    lv_tensor tmp;
    lv_tensor_init(&tmp, NULL, x->dtype, ndim, sh);
    return make_view(g, x, ndim, sh, tmp.stride, 0, tmp.stride, 0);
}

lv_tensor *lv_permute(lv_graph *g, lv_tensor *x, const int *perm)
{
    if (!x)
        return NULL;
    int seen[LV_MAX_DIMS] = { 0 };
    for (int i = 0; i < x->ndim; i++) {
        if (perm[i] < 0 || perm[i] >= x->ndim || seen[perm[i]]++) {
            lv_error("permute: not a permutation of %d dims", x->ndim);
            return NULL;
        }
    }
    int64_t cst[LV_MAX_DIMS], sh[LV_MAX_DIMS], st[LV_MAX_DIMS], gst[LV_MAX_DIMS];
    contiguous_strides(cst, x);
    for (int i = 0; i < x->ndim; i++) {
        sh[i] = x->shape[perm[i]];
        st[i] = x->stride[perm[i]];
        gst[i] = cst[perm[i]];
    }
    return make_view(g, x, x->ndim, sh, st, 0, gst, 0);
}

lv_tensor *lv_transpose(lv_graph *g, lv_tensor *x, int d0, int d1)
{
    if (!x)
        return NULL;
    if (d0 < 0 || d0 >= x->ndim || d1 < 0 || d1 >= x->ndim) {
        lv_error("transpose: dims %d, %d of a %d-dim tensor", d0, d1, x->ndim);
        return NULL;
    }
    int perm[LV_MAX_DIMS] = { 0, 1, 2, 3 };
    perm[d0] = d1;
    perm[d1] = d0;
    return lv_permute(g, x, perm);
}

lv_tensor *lv_slice(lv_graph *g, lv_tensor *x, int dim, int64_t start, int64_t len)
{
    if (!x)
        return NULL;
    if (dim < 0 || dim >= x->ndim || start < 0 || len < 0 || start > x->shape[dim] ||
        len > x->shape[dim] - start) {
        lv_error("slice: [%lld, %lld) of dim %d of %s is out of range", (long long)start,
                 (long long)(start + len), dim, op_shape(x));
        return NULL;
    }
    int64_t cst[LV_MAX_DIMS], sh[LV_MAX_DIMS];
    contiguous_strides(cst, x);
    memcpy(sh, x->shape, sizeof sh);
    sh[dim] = len;
    return make_view(g, x, x->ndim, sh, x->stride, start * x->stride[dim], cst,
                     start * cst[dim]);
}
