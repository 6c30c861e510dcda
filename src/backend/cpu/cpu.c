/*
 * cpu.c: the CPU backend: memory on the host, each node's forward and backward dispatched to
 * the kernels of cpu-*.c, OpenMP threads shared with OpenBLAS (Debian's OpenMP build of
 * OpenBLAS runs on the same libgomp pool).
 *
 * The CPU supports every op at every dtype: it is where other backends fall back.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "backend/backend.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "backend/cpu/cpu.h"

/* ----------------------------------------------------------------------------------------
 * memory
 */

static void *cpu_alloc(void *ctx, size_t n)
{
    (void)ctx;
    void *p = aligned_alloc(64, (n + 63) & ~(size_t)63);
    if (!p)
        lv_error_status(LV_ENOMEM, "cpu: out of memory for %zu bytes", n);
    return p;
}

static void cpu_free(void *ctx, void *p)
{
    (void)ctx;
    free(p);
}

static int cpu_copy(void *ctx, void *dst, lv_device dst_dev, const void *src, lv_device src_dev,
                    size_t n)
{
    (void)ctx;
    if (dst_dev != LV_DEVICE_CPU || src_dev != LV_DEVICE_CPU)
        return lv_error_status(LV_ENOTSUP, "cpu: cannot copy to or from a device buffer");
    memmove(dst, src, n);
    return LV_OK;
}

static int cpu_sync(void *ctx)
{
    (void)ctx;
    return LV_OK;
}

static bool cpu_supports(void *ctx, const lv_node *node)
{
    (void)ctx;
    return node->op < LV_OP_COUNT;
}

static void cpu_set_threads(void *ctx, int n)
{
    (void)ctx;
    /* OpenBLAS stays single-threaded: cpu_gemm runs it per tile on lavinia's threads, since
     * its own threading makes results depend on the thread count. Its OpenMP build also sets
     * OpenMP's thread count here, so lavinia's own setting must come after. */
    openblas_set_num_threads(1);
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
}

/* ----------------------------------------------------------------------------------------
 * helpers
 */

#define F(t) ((float *)(t)->data)
#define FC(t) ((const float *)(t)->data)
#define FN(t) ((t) ? (float *)(t)->data : NULL)
#define I32(t) ((t) ? (const int32_t *)(t)->data : NULL)

/* a tensor's shape, left-padded with 1s to four dims */
static void shape4(int64_t *s, const lv_tensor *t)
{
    int pad = LV_MAX_DIMS - t->ndim;
    for (int d = 0; d < 4; d++)
        s[d] = d < pad ? 1 : t->shape[d - pad];
}

/* (outer, n, inner) around one dim */
static void split_dim(const lv_tensor *t, int dim, int64_t *outer, int64_t *n, int64_t *inner)
{
    *outer = *inner = 1;
    for (int d = 0; d < dim; d++)
        *outer *= t->shape[d];
    *n = t->shape[dim];
    for (int d = dim + 1; d < t->ndim; d++)
        *inner *= t->shape[d];
}

static enum cpu_unary unary_of(enum lv_op op)
{
    switch (op) {
    case LV_OP_SQRT: return CPU_SQRT;
    case LV_OP_SILU: return CPU_SILU;
    case LV_OP_GELU: return CPU_GELU;
    case LV_OP_GELU_TANH: return CPU_GELU_TANH;
    default: return CPU_QUICK_GELU;
    }
}

static enum cpu_binary binary_of(enum lv_op op)
{
    switch (op) {
    case LV_OP_ADD: return CPU_ADD;
    case LV_OP_SUB: return CPU_SUB;
    case LV_OP_MUL: return CPU_MUL;
    default: return CPU_DIV;
    }
}

/* ----------------------------------------------------------------------------------------
 * matmul over batches
 */

static void matmul_forward(lv_node *n)
{
    const lv_tensor *a = n->src[0], *b = n->src[1];
    int ta = !!(n->ip[0] & LV_TRANS_A), tb = !!(n->ip[0] & LV_TRANS_B);
    int64_t batch = n->ip[1], M = n->ip[2], N = n->ip[3], K = n->ip[4];
    if (!n->ip[5] && !ta) {
        /* one shared b: all batches of a are rows of one product */
        cpu_gemm(F(n->out), FC(a), b->data, b->dtype, 0, tb, batch * M, N, K, 0.0f);
        return;
    }
    for (int64_t i = 0; i < batch; i++)
        cpu_gemm(F(n->out) + i * M * N, FC(a) + i * M * K,
                 (const char *)b->data + (n->ip[5] ? lv_dtype_bytes(b->dtype, i * K * N) : 0),
                 b->dtype, ta,
                 tb, M, N, K, 0.0f);
}

static int matmul_backward(lv_node *n, const float *dc, float *da, float *db)
{
    const lv_tensor *a = n->src[0], *b = n->src[1];
    int ta = !!(n->ip[0] & LV_TRANS_A), tb = !!(n->ip[0] & LV_TRANS_B);
    int64_t batch = n->ip[1], M = n->ip[2], N = n->ip[3], K = n->ip[4];
    float *bf = NULL;
    if (da && ta && b->dtype != LV_F32) {
        /* b is the left operand here; cpu_gemm converts only right operands */
        int64_t nb = (n->ip[5] ? batch : 1) * K * N;
        if (!(bf = malloc((size_t)nb * sizeof *bf)))
            return lv_error_status(LV_ENOMEM, "matmul backward: out of memory");
        lv_convert_row(bf, LV_F32, b->data, b->dtype, nb);
    }
    for (int64_t i = 0; i < batch; i++) {
        const float *dci = dc + i * M * N, *ai = FC(a) + i * M * K;
        int64_t boff = n->ip[5] ? i * K * N : 0;
        const void *bi = (const char *)b->data + lv_dtype_bytes(b->dtype, boff);
        if (da) {
            float *dai = da + i * M * K;
            if (!ta)   /* dA (M, K) += dC op(B)^T */
                cpu_gemm(dai, dci, bi, b->dtype, 0, !tb, M, K, N, 1.0f);
            else       /* dA (K, M) += op(B) dC^T */
                cpu_gemm(dai, bf ? bf + boff : (const float *)bi, dci, LV_F32, tb, 1, K, M, N,
                         1.0f);
        }
        if (db) {
            float *dbi = db + boff;
            if (!tb)   /* dB (K, N) += op(A)^T dC */
                cpu_gemm(dbi, ai, dci, LV_F32, !ta, 0, K, N, M, 1.0f);
            else       /* dB (N, K) += dC^T op(A) */
                cpu_gemm(dbi, dci, ai, LV_F32, 1, ta, N, K, M, 1.0f);
        }
    }
    free(bf);
    return LV_OK;
}

/* ----------------------------------------------------------------------------------------
 * attention, with or without a kv cache
 */

static void attention_dims(const lv_node *n, int64_t *d)
{
    for (int i = 0; i < 7; i++)
        d[i] = n->ip[1 + i];      /* S, start, B, T, H, KV, D */
}

static void attention_forward(lv_node *n)
{
    int64_t d[7];
    attention_dims(n, d);
    const lv_kv_cache *c = n->ptr;
    const float *k = c ? FC(c->k) : FC(n->src[1]), *v = c ? FC(c->v) : FC(n->src[2]);
    cpu_attention_forward(F(n->out), F(n->saved[0]), FC(n->src[0]), k, v, I32(n->src[3]), d[2],
                          d[3], d[0], d[4], d[5], d[6], c ? c->k->shape[1] * d[6] : 0,
                          n->fp[0], (int)(n->ip[0] & LV_ATTN_CAUSAL),
                          (n->ip[0] & LV_ATTN_GRAD_) != 0);
}

static int attention_backward(lv_node *n, const float *dy, lv_tensor *const *dsrc)
{
    int64_t d[7];
    attention_dims(n, d);
    int64_t S = d[0], start = d[1], KV = d[5], D = d[6];
    int causal = (int)(n->ip[0] & LV_ATTN_CAUSAL);
    const lv_kv_cache *c = n->ptr;
    if (!c) {
        cpu_attention_backward(FN(dsrc[0]), FN(dsrc[1]), FN(dsrc[2]), dy, FC(n->src[0]),
                               FC(n->src[1]), FC(n->src[2]), FC(n->out), FC(n->saved[0]),
                               I32(n->src[3]), d[2], d[3], S, d[4], KV, D, 0, n->fp[0],
                               causal);
        return LV_OK;
    }
    /* With a cache the kernel differentiates all S positions; only the rows appended by
     * this call belong to k and v. Training through a cache is rare: a scratch allocation
     * here is acceptable. */
    float *dk = NULL, *dv = NULL;
    if (dsrc[1] || dsrc[2]) {
        dk = calloc((size_t)(S * KV * D), sizeof *dk);
        dv = calloc((size_t)(S * KV * D), sizeof *dv);
        if (!dk || !dv) {
            free(dk);
            free(dv);
            return lv_error_status(LV_ENOMEM, "attention backward: out of memory");
        }
    }
    cpu_attention_backward(FN(dsrc[0]), dk, dv, dy, FC(n->src[0]), FC(c->k), FC(c->v),
                           FC(n->out), FC(n->saved[0]), I32(n->src[3]), d[2], d[3], S, d[4], KV,
                           D, c->k->shape[1] * D, n->fp[0], causal);
    int64_t rows = (S - start) * KV * D;
    for (int64_t i = 0; i < rows; i++) {
        if (dsrc[1])
            F(dsrc[1])[i] += dk[start * KV * D + i];
        if (dsrc[2])
            F(dsrc[2])[i] += dv[start * KV * D + i];
    }
    free(dk);
    free(dv);
    return LV_OK;
}

/* ----------------------------------------------------------------------------------------
 * patch embedding: im2col, then one product with the flattened kernel
 */

static void patch_embed_dims(const lv_node *n, int64_t *B, int64_t *Cin, int64_t *Hh,
                             int64_t *Ww, int64_t *P, int64_t *C)
{
    const lv_tensor *img = n->src[0], *w = n->src[1];
    int o = img->ndim - 3;
    *B = o ? img->shape[0] : 1;
    *Cin = img->shape[o];
    *Hh = img->shape[o + 1];
    *Ww = img->shape[o + 2];
    *C = w->shape[0];
    *P = w->shape[2];
}

static void patch_embed_forward(lv_node *n)
{
    int64_t B, Cin, Hh, Ww, P, C;
    patch_embed_dims(n, &B, &Cin, &Hh, &Ww, &P, &C);
    int64_t rows = B * (Hh / P) * (Ww / P), K = Cin * P * P;
    cpu_im2col(F(n->saved[0]), FC(n->src[0]), B, Cin, Hh, Ww, P);
    cpu_gemm(F(n->out), FC(n->saved[0]), FC(n->src[1]), LV_F32, 0, 1, rows, C, K, 0.0f);
    if (n->src[2]) {
        float *y = F(n->out);
        const float *bias = FC(n->src[2]);
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < C; c++)
                y[r * C + c] += bias[c];
    }
}

static int patch_embed_backward(lv_node *n, const float *dy, lv_tensor *const *dsrc)
{
    int64_t B, Cin, Hh, Ww, P, C;
    patch_embed_dims(n, &B, &Cin, &Hh, &Ww, &P, &C);
    int64_t rows = B * (Hh / P) * (Ww / P), K = Cin * P * P;
    if (dsrc[1])     /* dW (C, K) += dY^T cols */
        cpu_gemm(F(dsrc[1]), dy, FC(n->saved[0]), LV_F32, 1, 0, C, K, rows, 1.0f);
    if (dsrc[2]) {
        float *db = F(dsrc[2]);
        for (int64_t c = 0; c < C; c++) {
            float acc = 0.0f;
            for (int64_t r = 0; r < rows; r++)
                acc += dy[r * C + c];
            db[c] += acc;
        }
    }
    if (dsrc[0]) {   /* dcols (rows, K) = dY W, then scattered back onto the image */
        float *dcols = malloc((size_t)(rows * K) * sizeof *dcols);
        if (!dcols)
            return lv_error_status(LV_ENOMEM, "patch_embed backward: out of memory");
        cpu_gemm(dcols, dy, FC(n->src[1]), LV_F32, 0, 0, rows, K, C, 0.0f);
        cpu_col2im(F(dsrc[0]), dcols, B, Cin, Hh, Ww, P);
        free(dcols);
    }
    return LV_OK;
}

/* ----------------------------------------------------------------------------------------
 * dispatch
 */

/* Matrix products of a few rows sharing their input (lv_linear_n) as one pass over all the
 * weights' rows; anything else is left to be run node by node. */
static bool cpu_forward_n(void *ctx, lv_node *const *nodes, int n)
{
    (void)ctx;
    float *c[CPU_GEMV_N_MAX];
    const void *b[CPU_GEMV_N_MAX];
    lv_dtype bt[CPU_GEMV_N_MAX];
    int64_t N[CPU_GEMV_N_MAX];
    if (n < 1 || n > CPU_GEMV_N_MAX)
        return false;
    const lv_tensor *a = nodes[0]->src[0];
    for (int i = 0; i < n; i++) {
        const lv_node *nd = nodes[i];
        if (nd->op != LV_OP_MATMUL || nd->src[0] != a || nd->ip[0] != LV_TRANS_B ||
            nd->ip[1] != 1 || nd->ip[5] || nd->ip[2] != nodes[0]->ip[2] ||
            nd->ip[4] != nodes[0]->ip[4])
            return false;
        c[i] = F(nd->out);
        b[i] = nd->src[1]->data;
        bt[i] = nd->src[1]->dtype;
        N[i] = nd->ip[3];
    }
    return cpu_gemv_n(n, c, FC(a), b, bt, N, nodes[0]->ip[2], nodes[0]->ip[4]);
}

static int cpu_forward(void *ctx, lv_node *n)
{
    (void)ctx;
    lv_tensor *x = n->src[0], *y = n->out;
    int64_t nel = lv_tensor_nelem(y), s4[4], outer, len, inner;
    switch (n->op) {
    case LV_OP_NONE:
    case LV_OP_VIEW:
        break;
    case LV_OP_CONT:
    case LV_OP_CAST:
        cpu_copy_strided(y->data, y->dtype, x);
        break;
    case LV_OP_MATMUL:
        matmul_forward(n);
        break;
    case LV_OP_ADD:
    case LV_OP_SUB:
    case LV_OP_MUL:
    case LV_OP_DIV:
        shape4(s4, x);
        cpu_binary_forward(F(y), FC(x), FC(n->src[1]), s4, n->ip, binary_of(n->op));
        break;
    case LV_OP_SCALE:
        for (int64_t i = 0; i < nel; i++)
            F(y)[i] = FC(x)[i] * n->fp[0];
        break;
    case LV_OP_SQRT:
    case LV_OP_SILU:
    case LV_OP_GELU:
    case LV_OP_GELU_TANH:
    case LV_OP_QUICK_GELU:
        cpu_unary_forward(F(y), FC(x), nel, unary_of(n->op));
        break;
    case LV_OP_SWIGLU:
        cpu_swiglu_forward(F(y), FC(x), FC(n->src[1]), nel);
        break;
    case LV_OP_DROPOUT:
        cpu_dropout_forward(F(y), FC(x), nel, n->fp[0], (uint64_t)n->ip[0]);
        break;
    case LV_OP_SUM:
    case LV_OP_L2NORM:
        split_dim(x, (int)n->ip[0], &outer, &len, &inner);
        (n->op == LV_OP_SUM ? cpu_sum_forward : cpu_l2norm_forward)(F(y), FC(x), outer, len,
                                                                     inner);
        break;
    case LV_OP_SOFTMAX:
        cpu_softmax_forward(F(y), FC(x), nel / x->shape[x->ndim - 1], x->shape[x->ndim - 1]);
        break;
    case LV_OP_RMSNORM:
        cpu_rmsnorm_forward(F(y), F(n->saved[0]), FC(x), FN(n->src[1]),
                            nel / x->shape[x->ndim - 1], x->shape[x->ndim - 1], n->fp[0]);
        break;
    case LV_OP_LAYERNORM:
        cpu_layernorm_forward(F(y), F(n->saved[0]), F(n->saved[1]), FC(x), FN(n->src[1]),
                              FN(n->src[2]), nel / x->shape[x->ndim - 1],
                              x->shape[x->ndim - 1], n->fp[0]);
        break;
    case LV_OP_ROPE: {
        int64_t T = x->shape[x->ndim - 3], H = x->shape[x->ndim - 2], D = x->shape[x->ndim - 1];
        cpu_rope_forward(F(y), FC(x), I32(n->src[1]), nel / (T * H * D), T, H, D,
                         (int)n->ip[0], n->fp[0], n->fp[1]);
        break;
    }
    case LV_OP_ATTENTION:
        attention_forward(n);
        break;
    case LV_OP_EMBEDDING:
        cpu_embedding_forward(F(y), x->data, x->dtype, I32(n->src[1]),
                              lv_tensor_nelem(n->src[1]), x->shape[1]);
        break;
    case LV_OP_CONCAT:
        split_dim(x, (int)n->ip[0], &outer, &len, &inner);
        cpu_concat_forward(F(y), FC(x), FC(n->src[1]), outer, len,
                           n->src[1]->shape[n->ip[0]], inner);
        break;
    case LV_OP_CROSS_ENTROPY:
        cpu_cross_entropy_forward(F(y), F(n->saved[0]), FC(x), I32(n->src[1]),
                                  lv_tensor_nelem(x) / x->shape[x->ndim - 1],
                                  x->shape[x->ndim - 1]);
        break;
    case LV_OP_PATCH_EMBED:
        patch_embed_forward(n);
        break;
    case LV_OP_COUNT:
        return lv_error("cpu: no forward for op %d", (int)n->op);
    }
    return LV_OK;
}

static int cpu_backward(void *ctx, lv_node *n, const lv_tensor *dyt, lv_tensor *const *dsrc)
{
    (void)ctx;
    lv_tensor *x = n->src[0], *y = n->out;
    const float *dy = FC(dyt);
    float *dx = FN(dsrc[0]);
    int64_t nel = lv_tensor_nelem(y), s4[4], g4[4], outer, len, inner;
    switch (n->op) {
    case LV_OP_NONE:
        break;
    case LV_OP_VIEW:
        shape4(s4, y);
        for (int d = 0; d < 4; d++) {
            int k = d - (LV_MAX_DIMS - y->ndim);
            g4[d] = k < 0 ? 0 : n->ip[1 + k];
        }
        cpu_view_backward(dx, dy, s4, n->ip[0], g4);
        break;
    case LV_OP_CONT:
    case LV_OP_CAST:
        for (int64_t i = 0; i < nel; i++)
            dx[i] += dy[i];
        break;
    case LV_OP_MATMUL:
        return matmul_backward(n, dy, dx, FN(dsrc[1]));
    case LV_OP_ADD:
    case LV_OP_SUB:
    case LV_OP_MUL:
    case LV_OP_DIV:
        shape4(s4, x);
        cpu_binary_backward(dx, FN(dsrc[1]), dy, FC(x), FC(n->src[1]), s4, n->ip,
                            binary_of(n->op));
        break;
    case LV_OP_SCALE:
        for (int64_t i = 0; i < nel; i++)
            dx[i] += dy[i] * n->fp[0];
        break;
    case LV_OP_SQRT:
    case LV_OP_SILU:
    case LV_OP_GELU:
    case LV_OP_GELU_TANH:
    case LV_OP_QUICK_GELU:
        cpu_unary_backward(dx, dy, FC(x), FC(y), nel, unary_of(n->op));
        break;
    case LV_OP_SWIGLU:
        cpu_swiglu_backward(dx, FN(dsrc[1]), dy, FC(x), FC(n->src[1]), nel);
        break;
    case LV_OP_DROPOUT:
        cpu_dropout_backward(dx, dy, nel, n->fp[0], (uint64_t)n->ip[0]);
        break;
    case LV_OP_SUM:
        split_dim(x, (int)n->ip[0], &outer, &len, &inner);
        cpu_sum_backward(dx, dy, outer, len, inner);
        break;
    case LV_OP_L2NORM:
        split_dim(x, (int)n->ip[0], &outer, &len, &inner);
        cpu_l2norm_backward(dx, dy, FC(x), FC(y), outer, len, inner);
        break;
    case LV_OP_SOFTMAX:
        cpu_softmax_backward(dx, dy, FC(y), nel / y->shape[y->ndim - 1], y->shape[y->ndim - 1]);
        break;
    case LV_OP_RMSNORM:
        cpu_rmsnorm_backward(dx, FN(dsrc[1]), dy, FC(x), FN(n->src[1]), FC(n->saved[0]),
                             nel / x->shape[x->ndim - 1], x->shape[x->ndim - 1]);
        break;
    case LV_OP_LAYERNORM:
        cpu_layernorm_backward(dx, FN(dsrc[1]), FN(dsrc[2]), dy, FC(x), FN(n->src[1]),
                               FC(n->saved[0]), FC(n->saved[1]), nel / x->shape[x->ndim - 1],
                               x->shape[x->ndim - 1]);
        break;
    case LV_OP_ROPE: {
        int64_t T = x->shape[x->ndim - 3], H = x->shape[x->ndim - 2], D = x->shape[x->ndim - 1];
        cpu_rope_backward(dx, dy, I32(n->src[1]), nel / (T * H * D), T, H, D, (int)n->ip[0],
                          n->fp[0], n->fp[1]);
        break;
    }
    case LV_OP_ATTENTION:
        return attention_backward(n, dy, dsrc);
    case LV_OP_EMBEDDING:
        cpu_embedding_backward(dx, dy, I32(n->src[1]), lv_tensor_nelem(n->src[1]), x->shape[0],
                               x->shape[1]);
        break;
    case LV_OP_CONCAT:
        split_dim(x, (int)n->ip[0], &outer, &len, &inner);
        cpu_concat_backward(dx, FN(dsrc[1]), dy, outer, len, n->src[1]->shape[n->ip[0]], inner);
        break;
    case LV_OP_CROSS_ENTROPY:
        cpu_cross_entropy_backward(dx, dy[0], FC(x), I32(n->src[1]), FC(n->saved[0]), n->fp[0],
                                   lv_tensor_nelem(x) / x->shape[x->ndim - 1],
                                   x->shape[x->ndim - 1]);
        break;
    case LV_OP_PATCH_EMBED:
        return patch_embed_backward(n, dy, dsrc);
    case LV_OP_COUNT:
        return lv_error("cpu: no backward for op %d", (int)n->op);
    }
    return LV_OK;
}

static const struct lv_backend_ops cpu_ops = {
    .name        = "cpu",
    .device      = LV_DEVICE_CPU,
    .alloc       = cpu_alloc,
    .free        = cpu_free,
    .copy        = cpu_copy,
    .sync        = cpu_sync,
    .supports    = cpu_supports,
    .forward     = cpu_forward,
    .forward_n   = cpu_forward_n,
    .backward    = cpu_backward,
    .set_threads = cpu_set_threads,
    .done        = NULL,
};

static lv_backend cpu_backend = { .ops = &cpu_ops, .ctx = NULL };

lv_backend *lv_backend_cpu(void)
{
    return &cpu_backend;
}
