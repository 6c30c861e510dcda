/*
 * ops-reduce.c: sums, L2 norms, softmax, RMSNorm and LayerNorm.
 *
 * Reductions over one dim keep it with size 1 (so the result broadcasts back against x).
 * Norms treat every dim but the last as rows: x (..., C) is (N, C).
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "core/ops.h"

#include <string.h>

static lv_tensor *reduce(lv_graph *g, enum lv_op op, lv_tensor *x, int dim)
{
    if (!x)
        return NULL;
    if (dim < 0)
        dim += x->ndim;
    if (dim < 0 || dim >= x->ndim || x->dtype == LV_I32) {
        lv_error("%s: dim %d of %s %s", lv_op_name(op), dim, lv_dtype_name(x->dtype),
                 op_shape(x));
        return NULL;
    }
    x = lv_cont(g, x);
    lv_node *n = x ? op_begin(g, op) : NULL;
    if (!n)
        return NULL;
    int64_t shape[LV_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[dim] = 1;
    n->src[0] = x;
    n->ip[0] = dim;
    n->out = lv_graph_tensor(g, LV_F32, x->ndim, shape);
    return op_run(g, n);
}

lv_tensor *lv_sum(lv_graph *g, lv_tensor *x, int dim) { return reduce(g, LV_OP_SUM, x, dim); }
lv_tensor *lv_l2norm(lv_graph *g, lv_tensor *x, int dim)
{
    return reduce(g, LV_OP_L2NORM, x, dim);
}

lv_tensor *lv_sum_all(lv_graph *g, lv_tensor *x)
{
    if (!x)
        return NULL;
    int64_t n = lv_tensor_nelem(x);
    return lv_sum(g, lv_reshape(g, x, 1, &n), 0);
}

lv_tensor *lv_softmax(lv_graph *g, lv_tensor *x)
{
    if (!x)
        return NULL;
    if (x->ndim < 1 || x->dtype == LV_I32) {
        lv_error("softmax: input %s %s", lv_dtype_name(x->dtype), op_shape(x));
        return NULL;
    }
    x = lv_cont(g, x);
    lv_node *n = x ? op_begin(g, LV_OP_SOFTMAX) : NULL;
    if (!n)
        return NULL;
    n->src[0] = x;
    n->out = lv_graph_tensor(g, LV_F32, x->ndim, x->shape);
    return op_run(g, n);
}

/* Checks a norm's weight or bias: (C) or absent. */
static bool norm_param_ok(const char *op, const char *what, const lv_tensor *p, int64_t C)
{
    if (!p)
        return true;
    if (p->ndim != 1 || p->shape[0] != C || p->dtype == LV_I32) {
        lv_error("%s: %s %s %s for %lld channels", op, what, lv_dtype_name(p->dtype),
                 op_shape(p), (long long)C);
        return false;
    }
    return true;
}

lv_tensor *lv_rmsnorm(lv_graph *g, lv_tensor *x, lv_tensor *w, float eps)
{
    if (!x)
        return NULL;
    int64_t C = x->shape[x->ndim - 1];
    if (x->ndim < 1 || x->dtype == LV_I32 || !norm_param_ok("rmsnorm", "weight", w, C))
        return NULL;
    x = lv_cont(g, x);
    if (w)
        w = lv_cont(g, w);
    lv_node *n = x && (w || !w) ? op_begin(g, LV_OP_RMSNORM) : NULL;
    if (!n)
        return NULL;
    int64_t N = op_rows(x);
    n->src[0] = x;
    n->src[1] = w;
    n->fp[0] = eps;
    n->saved[0] = lv_graph_tensor(g, LV_F32, 1, &N);
    n->out = n->saved[0] ? lv_graph_tensor_out(g, LV_F32, x->ndim, x->shape) : NULL;
    return op_run(g, n);
}

lv_tensor *lv_layernorm(lv_graph *g, lv_tensor *x, lv_tensor *w, lv_tensor *b, float eps)
{
    if (!x)
        return NULL;
    int64_t C = x->shape[x->ndim - 1];
    if (x->ndim < 1 || x->dtype == LV_I32 || !norm_param_ok("layernorm", "weight", w, C) ||
        !norm_param_ok("layernorm", "bias", b, C))
        return NULL;
    x = lv_cont(g, x);
    if (w)
        w = lv_cont(g, w);
    if (b)
        b = lv_cont(g, b);
    lv_node *n = x ? op_begin(g, LV_OP_LAYERNORM) : NULL;
    if (!n)
        return NULL;
    int64_t N = op_rows(x);
    n->src[0] = x;
    n->src[1] = w;
    n->src[2] = b;
    n->fp[0] = eps;
    n->saved[0] = lv_graph_tensor(g, LV_F32, 1, &N);
    n->saved[1] = lv_graph_tensor(g, LV_F32, 1, &N);
    if (n->saved[0] && n->saved[1])
        n->out = lv_graph_tensor(g, LV_F32, x->ndim, x->shape);
    return op_run(g, n);
}
