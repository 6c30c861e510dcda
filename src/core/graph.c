/*
 * graph.c: the arena, the tape and the reverse walk.
 *
 * Arena: a list of chunks. Allocation bumps a pointer in the current chunk and moves to the
 * next chunk (allocating one only when the list runs out); lv_graph_reset rewinds to the
 * first chunk and keeps them all, so after the first steps a step allocates nothing. Every
 * allocation is 64-byte aligned and zero-filled.
 *
 * Tape: nodes in execution order, kept only when the graph records and some input of the op
 * needs a gradient. lv_backward seeds the output's gradient and walks the tape backwards;
 * each node's backward accumulates (+=) into the gradients of the inputs that need one.
 * Gradients of op results live in the arena; gradients of parameters are allocated once
 * (lazily, on the first backward) and persist until the caller zeroes them.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "core/graph.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "backend/backend.h"
#include "core/ops.h"
#include "util/clock.h"
#include "util/log.h"

static const char *const op_names[] = {
    [LV_OP_NONE] = "none",
    [LV_OP_VIEW] = "view",
    [LV_OP_CONT] = "cont",
    [LV_OP_CAST] = "cast",
    [LV_OP_MATMUL] = "matmul",
    [LV_OP_ADD] = "add",
    [LV_OP_SUB] = "sub",
    [LV_OP_MUL] = "mul",
    [LV_OP_DIV] = "div",
    [LV_OP_SCALE] = "scale",
    [LV_OP_SQRT] = "sqrt",
    [LV_OP_SILU] = "silu",
    [LV_OP_GELU] = "gelu",
    [LV_OP_GELU_TANH] = "gelu_tanh",
    [LV_OP_QUICK_GELU] = "quick_gelu",
    [LV_OP_SWIGLU] = "swiglu",
    [LV_OP_DROPOUT] = "dropout",
    [LV_OP_SUM] = "sum",
    [LV_OP_L2NORM] = "l2norm",
    [LV_OP_SOFTMAX] = "softmax",
    [LV_OP_RMSNORM] = "rmsnorm",
    [LV_OP_LAYERNORM] = "layernorm",
    [LV_OP_ROPE] = "rope",
    [LV_OP_ATTENTION] = "attention",
    [LV_OP_EMBEDDING] = "embedding",
    [LV_OP_CONCAT] = "concat",
    [LV_OP_CROSS_ENTROPY] = "cross_entropy",
    [LV_OP_PATCH_EMBED] = "patch_embed",
};
_Static_assert(sizeof op_names / sizeof op_names[0] == LV_OP_COUNT,
               "op_names and enum lv_op disagree: add the new op's name");

const char *lv_op_name(enum lv_op op)
{
    return (unsigned)op < LV_OP_COUNT && op_names[op] ? op_names[op] : "?";
}

/* ----------------------------------------------------------------------------------------
 * arena
 */

struct lv_arena_chunk {
    struct lv_arena_chunk *next;
    size_t size, used;
    unsigned char *data;          /* 64-byte aligned */
};

#define ARENA_MIN_CHUNK ((size_t)16 << 20)
#define ARENA_ALIGN 64

static lv_arena_chunk *chunk_new(size_t size)
{
    lv_arena_chunk *c = malloc(sizeof *c);
    if (!c)
        return NULL;
    c->data = aligned_alloc(ARENA_ALIGN, size);
    if (!c->data) {
        free(c);
        return NULL;
    }
    c->next = NULL;
    c->size = size;
    c->used = 0;
    return c;
}

/* bytes from the arena, left as they are */
static void *arena_take(lv_graph *g, size_t bytes)
{
    bytes = (bytes + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    if (bytes == 0)
        bytes = ARENA_ALIGN;
    lv_arena_chunk *c = g->cur;
    while (c && c->used + bytes > c->size)
        c = c->next;          /* chunks after cur are empty (reset) or too small: skip */
    if (!c) {
        size_t size = bytes > ARENA_MIN_CHUNK ? bytes : ARENA_MIN_CHUNK;
        c = chunk_new(size);
        if (!c) {
            lv_error_status(LV_ENOMEM, "graph: out of memory for a %zu-byte arena chunk", size);
            return NULL;
        }
        lv_arena_chunk **tail = &g->chunks;
        while (*tail)
            tail = &(*tail)->next;
        *tail = c;
    }
    g->cur = c;
    void *p = c->data + c->used;
    c->used += bytes;
    return p;
}

void *lv_graph_alloc(lv_graph *g, size_t bytes)
{
    void *p = arena_take(g, bytes);
    if (p)
        memset(p, 0, (bytes + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1));
    return p;
}

size_t lv_graph_arena_size(const lv_graph *g)
{
    size_t n = 0;
    for (const lv_arena_chunk *c = g->chunks; c; c = c->next)
        n += c->size;
    return n;
}

/* A tensor in the arena, its data zeroed or left as it is. */
static lv_tensor *graph_tensor(lv_graph *g, lv_dtype dtype, int ndim, const int64_t *shape,
                               bool zero)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) {
            lv_error("graph: negative dimension %lld", (long long)shape[i]);
            return NULL;
        }
        n *= shape[i];
    }
    lv_tensor *t = arena_take(g, sizeof *t);          /* lv_tensor_init sets all of it */
    size_t bytes = (size_t)n * lv_dtype_size(dtype);
    void *data = t ? (zero ? lv_graph_alloc(g, bytes) : arena_take(g, bytes)) : NULL;
    if (!data)
        return NULL;
    lv_tensor_init(t, data, dtype, ndim, shape);
    return t;
}

lv_tensor *lv_graph_tensor(lv_graph *g, lv_dtype dtype, int ndim, const int64_t *shape)
{
    return graph_tensor(g, dtype, ndim, shape, true);
}

lv_tensor *lv_graph_tensor_out(lv_graph *g, lv_dtype dtype, int ndim, const int64_t *shape)
{
    return graph_tensor(g, dtype, ndim, shape, false);
}

lv_tensor *lv_new(lv_graph *g, lv_dtype dtype, int ndim, const int64_t *shape)
{
    if (ndim < 0 || ndim > LV_MAX_DIMS) {
        lv_error("graph: %d dimensions (at most %d)", ndim, LV_MAX_DIMS);
        return NULL;
    }
    return lv_graph_tensor(g, dtype, ndim, shape);
}

/* ----------------------------------------------------------------------------------------
 * graph lifetime
 */

lv_graph *lv_graph_new(lv_backend *backend)
{
    lv_graph *g = calloc(1, sizeof *g);
    if (!g) {
        lv_error_status(LV_ENOMEM, "graph: out of memory");
        return NULL;
    }
    g->backend = backend ? backend : lv_backend_cpu();
    return g;
}

void lv_graph_free(lv_graph *g)
{
    if (!g)
        return;
    for (lv_arena_chunk *c = g->chunks, *next; c; c = next) {
        next = c->next;
        free(c->data);
        free(c);
    }
    free(g->tape);
    free(g);
}

void lv_graph_reset(lv_graph *g)
{
    for (lv_arena_chunk *c = g->chunks; c; c = c->next)
        c->used = 0;
    g->cur = g->chunks;
    g->n_nodes = 0;
}

void lv_graph_set_recording(lv_graph *g, bool on)
{
    g->recording = on;
}

bool lv_graph_recording(const lv_graph *g)
{
    return g->recording;
}

/* ----------------------------------------------------------------------------------------
 * running and recording ops
 */

lv_node *op_begin(lv_graph *g, enum lv_op op)
{
    if (g->n_nodes == g->cap_nodes) {
        /* Grows during warm-up only: the capacity is kept across resets. */
        int cap = g->cap_nodes ? g->cap_nodes * 2 : 256;
        lv_node *t = realloc(g->tape, (size_t)cap * sizeof *t);
        if (!t) {
            lv_error_status(LV_ENOMEM, "graph: out of memory for %d tape nodes", cap);
            return NULL;
        }
        g->tape = t;
        g->cap_nodes = cap;
    }
    lv_node *n = &g->tape[g->n_nodes];
    memset(n, 0, sizeof *n);
    n->op = op;
    return n;
}

bool lv_needs_grad(const lv_tensor *t)
{
    return t && (t->flags & LV_TENSOR_NEEDS_GRAD) && !(t->flags & LV_TENSOR_DETACHED);
}

/* The dtype that decides whether a backend supports the node: its first float input. */
static lv_dtype node_dtype(const lv_node *n)
{
    for (int i = 0; i < LV_MAX_SRC && n->src[i]; i++)
        if (n->src[i]->dtype != LV_I32)
            return n->src[i]->dtype;
    return LV_F32;
}

static lv_backend *backend_for(lv_graph *g, const lv_node *n)
{
    lv_backend *b = g->backend;
    if (b->ops->supports(b->ctx, n))
        return b;
    static _Thread_local unsigned char warned[LV_OP_COUNT];
    if (!warned[n->op]) {
        warned[n->op] = 1;
        lv_log(LV_LOG_INFO, "%s backend has no %s for %s: running it on the CPU",
               b->ops->name, lv_op_name(n->op), lv_dtype_name(node_dtype(n)));
    }
    return lv_backend_cpu();
}

void lv_graph_set_profile(lv_graph *g, struct lv_profile *p)
{
    g->profile = p;
}

/* s seconds of node n's forward into p */
static void profile_add(struct lv_profile *p, const lv_node *n, double s)
{
    p->calls[n->op]++;
    p->seconds[n->op] += s;
    if (n->op != LV_OP_MATMUL)
        return;
    const lv_tensor *w = n->src[1];
    int64_t N = n->ip[3], K = n->ip[4];
    for (int i = 0; i < p->n_mm; i++) {
        struct lv_profile_mm *e = &p->mm[i];
        if (e->n == N && e->k == K && e->dtype == w->dtype) {
            e->calls++;
            e->seconds += s;
            return;
        }
    }
    if (p->n_mm < LV_PROFILE_SHAPES)
        p->mm[p->n_mm++] = (struct lv_profile_mm){ N, K, w->dtype, 1, s };
}

/* Keep node n (in its tape slot) when the graph records and an input needs a gradient. */
static lv_tensor *op_keep(lv_graph *g, lv_node *n)
{
    bool grad = false;
    for (int i = 0; i < LV_MAX_SRC; i++)
        grad |= n->src[i] && n->src[i]->dtype != LV_I32 && lv_needs_grad(n->src[i]);
    if (g->recording && grad) {
        n->out->flags |= LV_TENSOR_NEEDS_GRAD;
        n->out->node = g->n_nodes++;
    }
    return n->out;
}

/* Node n's forward on its backend, timed into the profile when one is set. */
static int forward_node(lv_graph *g, lv_node *n)
{
    lv_backend *b = backend_for(g, n);
    double t0 = g->profile ? lv_now() : 0.0;
    if (b->ops->forward(b->ctx, n) != LV_OK)
        return LV_ERR;
    if (g->profile)
        profile_add(g->profile, n, lv_now() - t0);
    return LV_OK;
}

lv_tensor *op_run(lv_graph *g, lv_node *n)
{
    assert(n == &g->tape[g->n_nodes] && "op_run: pass the node op_begin returned");
    if (!n->out || forward_node(g, n) != LV_OK)
        return NULL;
    return op_keep(g, n);
}

int op_run_n(lv_graph *g, lv_node *const *nodes, int n, lv_tensor **out)
{
    lv_backend *b = g->backend;
    bool all = b->ops->forward_n != NULL;
    for (int i = 0; i < n; i++) {
        if (!nodes[i]->out)
            return LV_ERR;
        all &= b->ops->supports(b->ctx, nodes[i]);
    }
    double t0 = g->profile ? lv_now() : 0.0;
    if (all && b->ops->forward_n(b->ctx, nodes, n)) {
        if (g->profile) {
            /* the group's time shared out by the nodes' output sizes */
            double t = lv_now() - t0, total = 0.0;
            for (int i = 0; i < n; i++)
                total += (double)lv_tensor_nelem(nodes[i]->out);
            for (int i = 0; i < n; i++)
                profile_add(g->profile, nodes[i],
                            total > 0.0 ? t * (double)lv_tensor_nelem(nodes[i]->out) / total
                                        : t / n);
        }
    } else {
        for (int i = 0; i < n; i++)
            if (forward_node(g, nodes[i]) != LV_OK)
                return LV_ERR;
    }
    for (int i = 0; i < n; i++) {
        lv_node *t = op_begin(g, nodes[i]->op);
        if (!t)
            return LV_ERR;
        *t = *nodes[i];
        out[i] = op_keep(g, t);
    }
    return LV_OK;
}

/* ----------------------------------------------------------------------------------------
 * backward
 */

lv_tensor *lv_grad_of(lv_graph *g, lv_tensor *t)
{
    if (!lv_needs_grad(t) || t->dtype == LV_I32)
        return NULL;
    if (t->grad)
        return t->grad;
    if (t->flags & LV_TENSOR_PARAM) {
        /* A parameter's gradient persists across steps: allocated once, zeroed by the user. */
        t->grad = lv_tensor_new(LV_F32, t->ndim, t->shape);
    } else {
        t->grad = lv_graph_tensor(g, LV_F32, t->ndim, t->shape);
    }
    return t->grad;
}

int lv_backward_with(lv_graph *g, lv_tensor *y, const lv_tensor *dy)
{
    if (!y || !dy)
        return LV_ERR;
    if (!lv_needs_grad(y) || y->node < 0 || y->node >= g->n_nodes || g->tape[y->node].out != y)
        return lv_error("backward: the tensor was not recorded with a parameter upstream "
                        "(is the graph recording, and did you lv_tensor_set_param a weight?)");
    if (!lv_tensor_same_shape(y, dy) || dy->dtype != LV_F32)
        return lv_error("backward: dy %s %s does not match y %s", op_shape(dy),
                        lv_dtype_name(dy->dtype), op_shape(y));
    lv_tensor *gy = lv_grad_of(g, y);
    if (!gy)
        return LV_ENOMEM;
    int64_t n = lv_tensor_nelem(y);
    float *gyd = gy->data;
    for (int64_t i = 0; i < n; i++)
        gyd[i] += (float)lv_tensor_get(dy, i);
    for (int i = y->node; i >= 0; i--) {
        lv_node *nd = &g->tape[i];
        if (!nd->out->grad)
            continue;                 /* nothing downstream of this node reached the loss */
        lv_tensor *dsrc[LV_MAX_SRC] = { 0 };
        bool any = false;
        for (int j = 0; j < LV_MAX_SRC; j++) {
            if (!nd->src[j] || !lv_needs_grad(nd->src[j]))
                continue;
            if (!(dsrc[j] = lv_grad_of(g, nd->src[j])))
                return LV_ENOMEM;
            any = true;
        }
        if (!any)
            continue;
        lv_backend *b = backend_for(g, nd);
        if (!b->ops->backward)
            return lv_error("backward: the %s backend has no backward for %s", b->ops->name,
                            lv_op_name(nd->op));
        int rc = b->ops->backward(b->ctx, nd, nd->out->grad, dsrc);
        if (rc != LV_OK)
            return rc;
    }
    return LV_OK;
}

int lv_backward(lv_graph *g, lv_tensor *loss)
{
    if (!loss)
        return LV_ERR;
    if (lv_tensor_nelem(loss) != 1)
        return lv_error("backward: the loss has shape %s; lv_backward wants one element "
                        "(use lv_backward_with for others)", op_shape(loss));
    float one = 1.0f;
    lv_tensor seed;
    lv_tensor_init(&seed, &one, LV_F32, loss->ndim, loss->shape);
    return lv_backward_with(g, loss, &seed);
}

/* ----------------------------------------------------------------------------------------
 * helpers shared by the op files
 */

const char *op_shape(const lv_tensor *t)
{
    static _Thread_local char bufs[4][64];
    static _Thread_local int next;
    char *b = bufs[next++ & 3];
    return lv_shape_str(t, b, sizeof bufs[0]);
}

int64_t op_rows(const lv_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i + 1 < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

/* ----------------------------------------------------------------------------------------
 * threads
 */

static int n_threads;

void lv_set_threads(int n)
{
#ifdef _OPENMP
    if (n <= 0)
        n = omp_get_num_procs();
#else
    if (n <= 0)
        n = 1;
#endif
    n_threads = n;
    lv_backend *cpu = lv_backend_cpu();
    if (cpu->ops->set_threads)
        cpu->ops->set_threads(cpu->ctx, n);
}

int lv_get_threads(void)
{
    if (n_threads <= 0)
        lv_set_threads(0);
    return n_threads;
}
