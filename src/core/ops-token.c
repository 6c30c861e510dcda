/*
 * ops-token.c: token embedding lookup, concatenation along a dim, cross-entropy over a
 * vocabulary and ViT patch embedding: the ops at the edges of a model.
 *
 * Ids and targets come from files and users, so each is range-checked here, and a bad one is
 * an error naming it, never a read out of bounds in a kernel.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "core/ops.h"

#include <string.h>

lv_tensor *lv_embedding(lv_graph *g, lv_tensor *table, const lv_tensor *ids)
{
    if (!table || !ids)
        return NULL;
    if (table->ndim != 2 || table->dtype == LV_I32) {
        lv_error("embedding: table %s %s, want float (V, C)", lv_dtype_name(table->dtype),
                 op_shape(table));
        return NULL;
    }
    if (ids->dtype != LV_I32 || ids->ndim < 1 || ids->ndim > 2 || !lv_tensor_is_contiguous(ids)) {
        lv_error("embedding: ids %s %s, want contiguous I32 (T) or (B, T)",
                 lv_dtype_name(ids->dtype), op_shape(ids));
        return NULL;
    }
    int64_t V = table->shape[0], n = lv_tensor_nelem(ids);
    const int32_t *id = ids->data;
    for (int64_t i = 0; i < n; i++) {
        if (id[i] < 0 || id[i] >= V) {
            lv_error("embedding: token id %d at position %lld is outside the vocabulary of %lld",
                     id[i], (long long)i, (long long)V);
            return NULL;
        }
    }
    table = op_cont(g, table);
    lv_node *nd = table ? op_begin(g, LV_OP_EMBEDDING) : NULL;
    if (!nd)
        return NULL;
    int64_t shape[3] = { ids->shape[0], ids->shape[1], table->shape[1] };
    if (ids->ndim == 1)
        shape[1] = table->shape[1];
    nd->src[0] = table;
    nd->src[1] = (lv_tensor *)ids;
    nd->out = lv_graph_tensor_out(g, LV_F32, ids->ndim + 1, shape);
    return op_run(g, nd);
}

lv_tensor *lv_concat(lv_graph *g, lv_tensor *a, lv_tensor *b, int dim)
{
    if (!a || !b)
        return NULL;
    if (dim < 0)
        dim += a->ndim;
    bool ok = a->ndim == b->ndim && dim >= 0 && dim < a->ndim && a->dtype != LV_I32 &&
              b->dtype != LV_I32;
    for (int i = 0; ok && i < a->ndim; i++)
        ok = i == dim || a->shape[i] == b->shape[i];
    if (!ok) {
        lv_error("concat: a %s and b %s cannot be joined along dim %d", op_shape(a),
                 op_shape(b), dim);
        return NULL;
    }
    a = lv_cont(g, a);
    b = lv_cont(g, b);
    lv_node *n = a && b ? op_begin(g, LV_OP_CONCAT) : NULL;
    if (!n)
        return NULL;
    int64_t shape[LV_MAX_DIMS];
    memcpy(shape, a->shape, sizeof shape);
    shape[dim] += b->shape[dim];
    n->src[0] = a;
    n->src[1] = b;
    n->ip[0] = dim;
    n->out = lv_graph_tensor(g, LV_F32, a->ndim, shape);
    return op_run(g, n);
}

lv_tensor *lv_cross_entropy(lv_graph *g, lv_tensor *logits, const lv_tensor *targets)
{
    if (!logits || !targets)
        return NULL;
    if (logits->dtype == LV_I32 || logits->ndim < 1) {
        lv_error("cross_entropy: logits %s", op_shape(logits));
        return NULL;
    }
    int64_t V = logits->shape[logits->ndim - 1], N = op_rows(logits);
    if (targets->dtype != LV_I32 || lv_tensor_nelem(targets) != N ||
        !lv_tensor_is_contiguous(targets)) {
        lv_error("cross_entropy: targets %s %s for %lld rows of logits %s",
                 lv_dtype_name(targets->dtype), op_shape(targets), (long long)N,
                 op_shape(logits));
        return NULL;
    }
    const int32_t *t = targets->data;
    int64_t count = 0;
    for (int64_t i = 0; i < N; i++) {
        if (t[i] >= V) {
            lv_error("cross_entropy: target %d at row %lld is outside the vocabulary of %lld",
                     t[i], (long long)i, (long long)V);
            return NULL;
        }
        count += t[i] >= 0;
    }
    logits = lv_cont(g, logits);
    lv_node *n = logits ? op_begin(g, LV_OP_CROSS_ENTROPY) : NULL;
    if (!n)
        return NULL;
    int64_t one = 1;
    n->src[0] = logits;
    n->src[1] = (lv_tensor *)targets;
    n->fp[0] = count ? 1.0f / (float)count : 0.0f;
    n->saved[0] = lv_graph_tensor(g, LV_F32, 1, &N);
    if (n->saved[0])
        n->out = lv_graph_tensor(g, LV_F32, 1, &one);
    return op_run(g, n);
}

lv_tensor *lv_patch_embed(lv_graph *g, lv_tensor *img, lv_tensor *w, lv_tensor *bias)
{
    if (!img || !w)
        return NULL;
    if (img->ndim < 3 || img->ndim > 4 || w->ndim != 4 || img->dtype == LV_I32 ||
        w->dtype == LV_I32) {
        lv_error("patch_embed: image %s and weight %s, want ([B,] Cin, H, W) and "
                 "(C, Cin, P, P)", op_shape(img), op_shape(w));
        return NULL;
    }
    int o = img->ndim - 3;
    int64_t B = o ? img->shape[0] : 1, Cin = img->shape[o], Hh = img->shape[o + 1];
    int64_t Ww = img->shape[o + 2], C = w->shape[0], P = w->shape[2];
    if (w->shape[1] != Cin || w->shape[3] != P || P <= 0 || Hh % P || Ww % P) {
        lv_error("patch_embed: image %s does not split into the %lldx%lld patches of weight %s",
                 op_shape(img), (long long)P, (long long)P, op_shape(w));
        return NULL;
    }
    if (bias && (bias->ndim != 1 || bias->shape[0] != C)) {
        lv_error("patch_embed: bias %s for %lld channels", op_shape(bias), (long long)C);
        return NULL;
    }
    img = lv_cont(g, img);
    w = lv_cont(g, w);
    if (bias)
        bias = lv_cont(g, bias);
    lv_node *n = img && w ? op_begin(g, LV_OP_PATCH_EMBED) : NULL;
    if (!n)
        return NULL;
    int64_t shape[3] = { B, (Hh / P) * (Ww / P), C };
    n->src[0] = img;
    n->src[1] = w;
    n->src[2] = bias;
    /* im2col buffer: one row of Cin*P*P pixels per patch, kept for dw in the backward */
    int64_t cols[2] = { B * shape[1], Cin * P * P };
    n->saved[0] = lv_graph_tensor(g, LV_F32, 2, cols);
    if (n->saved[0])
        n->out = lv_graph_tensor(g, LV_F32, 3, shape);
    return op_run(g, n);
}
