/*
 * ops-matmul.c: matrix products (lv_matmul) and the linear layer built on them.
 *
 * node->ip: [0] flags (LV_TRANS_A / LV_TRANS_B), [1] batch count, [2] M, [3] N, [4] K,
 * [5] 1 if b has its own batch (else b is shared by every batch of a).
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "core/ops.h"

#include "backend/backend.h"

#include <string.h>

/* A matmul node's operands, sizes and output (shape: a's with its last two dims M, N), as
 * lv_matmul records them and the CPU backend reads them. */
static void matmul_node(lv_graph *g, lv_node *n, lv_tensor *a, lv_tensor *b, int trans,
                        int64_t batch, int64_t M, int64_t N, int64_t K, bool b_batched,
                        const int64_t *shape)
{
    n->src[0] = a;
    n->src[1] = b;
    n->ip[0] = trans;
    n->ip[1] = batch;
    n->ip[2] = M;
    n->ip[3] = N;
    n->ip[4] = K;
    n->ip[5] = b_batched;
    n->out = lv_graph_tensor_out(g, LV_F32, a->ndim, shape);
}

lv_tensor *lv_matmul(lv_graph *g, lv_tensor *a, lv_tensor *b, int flags)
{
    if (!a || !b)
        return NULL;
    if (a->ndim < 2 || b->ndim < 2) {
        lv_error("matmul: a %s and b %s need at least 2 dims", op_shape(a), op_shape(b));
        return NULL;
    }
    if (a->dtype == LV_I32 || b->dtype == LV_I32) {
        lv_error("matmul: integer operands (%s, %s)", lv_dtype_name(a->dtype),
                 lv_dtype_name(b->dtype));
        return NULL;
    }
    if (lv_dtype_is_block(a->dtype) ||
        (lv_dtype_is_block(b->dtype) && (b->ndim != 2 || !(b->flags & LV_TENSOR_FROZEN) ||
                                         !lv_tensor_is_contiguous(b)))) {
        lv_error("matmul: %s weights enter as a frozen, contiguous 2-D right operand only (a "
                 "%s, b %s)", lv_dtype_name(lv_dtype_is_block(a->dtype) ? a->dtype : b->dtype),
                 op_shape(a), op_shape(b));
        return NULL;
    }
    int ta = !!(flags & LV_TRANS_A), tb = !!(flags & LV_TRANS_B);
    int64_t M = a->shape[a->ndim - 2 + ta], K = a->shape[a->ndim - 1 - ta];
    /* NF4's blocks run over the whole matrix. Decoding (a few rows of x W^T, nothing
     * recorded, rows of whole blocks) reads it as stored; everything else (prompts, training
     * and its input gradient) gets it dequantised: a frozen copy in the graph's arena, one
     * matrix at a time, while the model stays 4-bit. */
    int64_t rows = M;
    for (int i = 0; i < a->ndim - 2; i++)
        rows *= a->shape[i];
    if (b->dtype == LV_NF4 &&
        !(tb && !ta && rows <= LV_NF4_GEMV_ROWS && !lv_graph_recording(g) &&
          K % LV_NF4_BLOCK == 0 && b->ndim == 2 && g->backend == lv_backend_cpu()) &&
        !(b = lv_cast(g, b, LV_F32)))
        return NULL;
    int64_t Kb = b->shape[b->ndim - 2 + tb], N = b->shape[b->ndim - 1 - tb];
    if (K != Kb) {
        lv_error("matmul: a %s%s and b %s%s disagree on the inner dimension (%lld vs %lld)",
                 op_shape(a), ta ? "^T" : "", op_shape(b), tb ? "^T" : "", (long long)K,
                 (long long)Kb);
        return NULL;
    }
    int64_t batch = 1, bbatch = 1;
    for (int i = 0; i < a->ndim - 2; i++)
        batch *= a->shape[i];
    for (int i = 0; i < b->ndim - 2; i++)
        bbatch *= b->shape[i];
    bool b_batched = bbatch > 1;
    if (bbatch != 1) {
        bool same = b->ndim == a->ndim;
        for (int i = 0; same && i < a->ndim - 2; i++)
            same = a->shape[i] == b->shape[i];
        if (!same) {
            lv_error("matmul: batch dims of a %s and b %s are neither equal nor 1",
                     op_shape(a), op_shape(b));
            return NULL;
        }
    }
    a = a->dtype == LV_F32 ? op_cont(g, a) : lv_cont(g, a);
    b = op_cont(g, b);
    lv_node *n = a && b ? op_begin(g, LV_OP_MATMUL) : NULL;
    if (!n)
        return NULL;
    int64_t shape[LV_MAX_DIMS];
    memcpy(shape, a->shape, sizeof shape);
    shape[a->ndim - 2] = M;
    shape[a->ndim - 1] = N;
    matmul_node(g, n, a, b, flags & (LV_TRANS_A | LV_TRANS_B), batch, M, N, K, b_batched,
                shape);
    return op_run(g, n);
}

/* Can x (M, K) w^T go into a group of lv_linear_n as it is (no copy, no cast)? */
static bool linear_groups(const lv_tensor *x, const lv_tensor *w)
{
    return w && w->ndim == 2 && w->shape[1] == x->shape[1] && w->dtype != LV_I32 &&
           w->dtype != LV_NF4 && lv_tensor_is_contiguous(w) &&
           (!lv_dtype_is_block(w->dtype) || (w->flags & LV_TENSOR_FROZEN));
}

int lv_linear_n(lv_graph *g, lv_tensor *x, int n, lv_tensor *const *w, lv_tensor **y)
{
    bool group = x && n > 1 && n <= LV_LINEAR_N_MAX && x->ndim == 2 && x->dtype == LV_F32 &&
                 lv_tensor_is_contiguous(x);
    for (int i = 0; group && i < n; i++)
        group = linear_groups(x, w[i]);
    if (!group) {
        for (int i = 0; i < n; i++)
            if (!(y[i] = lv_linear(g, x, w[i], NULL)))
                return LV_ERR;
        return LV_OK;
    }
    /* the nodes lv_matmul(x, w[i], LV_TRANS_B) would make */
    lv_node nodes[LV_LINEAR_N_MAX], *np[LV_LINEAR_N_MAX];
    int64_t M = x->shape[0], K = x->shape[1];
    for (int i = 0; i < n; i++) {
        lv_node *nd = &nodes[i];
        int64_t N = w[i]->shape[0];
        memset(nd, 0, sizeof *nd);
        nd->op = LV_OP_MATMUL;
        matmul_node(g, nd, x, w[i], LV_TRANS_B, 1, M, N, K, false, (int64_t[]){ M, N });
        if (!nd->out)
            return LV_ERR;
        np[i] = nd;
    }
    return op_run_n(g, np, n, y);
}

lv_tensor *lv_linear(lv_graph *g, lv_tensor *x, lv_tensor *w, lv_tensor *bias)
{
    if (!x || !w)
        return NULL;
    if (w->ndim != 2 || x->shape[x->ndim - 1] != w->shape[1]) {
        lv_error("linear: x %s and weight %s (out, in) disagree", op_shape(x), op_shape(w));
        return NULL;
    }
    if (bias && (bias->ndim != 1 || bias->shape[0] != w->shape[0])) {
        lv_error("linear: bias %s for a weight %s", op_shape(bias), op_shape(w));
        return NULL;
    }
    lv_tensor *x2 = x;
    if (x->ndim == 1) {
        int64_t sh[2] = { 1, x->shape[0] };
        x2 = lv_reshape(g, x, 2, sh);
    }
    lv_tensor *y = lv_matmul(g, x2, w, LV_TRANS_B);
    if (y && x->ndim == 1) {
        int64_t sh[1] = { w->shape[0] };
        y = lv_reshape(g, y, 1, sh);
    }
    return bias ? lv_add(g, y, bias) : y;
}
