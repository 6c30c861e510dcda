/*
 * ops-elementwise.c: add, sub, mul, div (b broadcast against a), scale, the activations,
 * swiglu and dropout.
 *
 * Broadcasting follows NumPy with b aligned to a's last dims; every dim of b is 1 or a's.
 * The node keeps b's strides in a's index space (0 where b is broadcast): ip[0..3], with a's
 * shape padded on the left to four dims.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "core/ops.h"

static lv_tensor *binary(lv_graph *g, enum lv_op op, lv_tensor *a, lv_tensor *b)
{
    if (!a || !b)
        return NULL;
    const char *name = lv_op_name(op);
    if (a->dtype == LV_I32 || b->dtype == LV_I32) {
        lv_error("%s: integer operands", name);
        return NULL;
    }
    if (b->ndim > a->ndim) {
        lv_error("%s: b %s has more dims than a %s", name, op_shape(b), op_shape(a));
        return NULL;
    }
    int64_t bstride[LV_MAX_DIMS] = { 0 };
    int64_t s = 1;
    for (int i = 1; i <= b->ndim; i++) {
        int64_t ad = a->shape[a->ndim - i], bd = b->shape[b->ndim - i];
        if (bd != ad && bd != 1) {
            lv_error("%s: b %s does not broadcast to a %s", name, op_shape(b), op_shape(a));
            return NULL;
        }
        bstride[LV_MAX_DIMS - i] = bd == 1 ? 0 : s;
        s *= bd;
    }
    a = lv_cont(g, a);
    b = lv_cont(g, b);
    lv_node *n = a && b ? op_begin(g, op) : NULL;
    if (!n)
        return NULL;
    n->src[0] = a;
    n->src[1] = b;
    for (int i = 0; i < LV_MAX_DIMS; i++)
        n->ip[i] = bstride[i];
    n->out = lv_graph_tensor_out(g, LV_F32, a->ndim, a->shape);
    return op_run(g, n);
}

lv_tensor *lv_add(lv_graph *g, lv_tensor *a, lv_tensor *b) { return binary(g, LV_OP_ADD, a, b); }
lv_tensor *lv_sub(lv_graph *g, lv_tensor *a, lv_tensor *b) { return binary(g, LV_OP_SUB, a, b); }
lv_tensor *lv_mul(lv_graph *g, lv_tensor *a, lv_tensor *b) { return binary(g, LV_OP_MUL, a, b); }
lv_tensor *lv_div(lv_graph *g, lv_tensor *a, lv_tensor *b) { return binary(g, LV_OP_DIV, a, b); }

/* One input, one output of the same shape; fp[0] and ip[0] carry the op's parameter. */
static lv_tensor *unary(lv_graph *g, enum lv_op op, lv_tensor *x, float fp, int64_t ip)
{
    if (!x)
        return NULL;
    if (x->dtype == LV_I32) {
        lv_error("%s: integer input", lv_op_name(op));
        return NULL;
    }
    x = lv_cont(g, x);
    lv_node *n = x ? op_begin(g, op) : NULL;
    if (!n)
        return NULL;
    n->src[0] = x;
    n->fp[0] = fp;
    n->ip[0] = ip;
    n->out = lv_graph_tensor_out(g, LV_F32, x->ndim, x->shape);
    return op_run(g, n);
}

lv_tensor *lv_scale(lv_graph *g, lv_tensor *x, float s) { return unary(g, LV_OP_SCALE, x, s, 0); }
lv_tensor *lv_sqrt(lv_graph *g, lv_tensor *x) { return unary(g, LV_OP_SQRT, x, 0, 0); }
lv_tensor *lv_silu(lv_graph *g, lv_tensor *x) { return unary(g, LV_OP_SILU, x, 0, 0); }
lv_tensor *lv_gelu(lv_graph *g, lv_tensor *x) { return unary(g, LV_OP_GELU, x, 0, 0); }

lv_tensor *lv_gelu_tanh(lv_graph *g, lv_tensor *x)
{
    return unary(g, LV_OP_GELU_TANH, x, 0, 0);
}

lv_tensor *lv_quick_gelu(lv_graph *g, lv_tensor *x)
{
    return unary(g, LV_OP_QUICK_GELU, x, 0, 0);
}

lv_tensor *lv_dropout(lv_graph *g, lv_tensor *x, float p, uint64_t seed)
{
    if (!x)
        return NULL;
    if (!(p >= 0.0f && p < 1.0f)) {
        lv_error("dropout: probability %g is not in [0, 1)", (double)p);
        return NULL;
    }
    if (!g->recording || p == 0.0f)
        return x;
    return unary(g, LV_OP_DROPOUT, x, p, (int64_t)seed);
}

lv_tensor *lv_swiglu(lv_graph *g, lv_tensor *gate, lv_tensor *up)
{
    if (!gate || !up)
        return NULL;
    if (!lv_tensor_same_shape(gate, up) || gate->dtype == LV_I32 || up->dtype == LV_I32) {
        lv_error("swiglu: gate %s and up %s differ", op_shape(gate), op_shape(up));
        return NULL;
    }
    gate = lv_cont(g, gate);
    up = lv_cont(g, up);
    lv_node *n = gate && up ? op_begin(g, LV_OP_SWIGLU) : NULL;
    if (!n)
        return NULL;
    n->src[0] = gate;
    n->src[1] = up;
    n->out = lv_graph_tensor_out(g, LV_F32, gate->ndim, gate->shape);
    return op_run(g, n);
}
