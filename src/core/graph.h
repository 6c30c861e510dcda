/*
 * graph.h (internal): the op enum, tape nodes and the graph that records them.
 *
 * One enum names every op; lv_op_name() maps it to text and a static_assert in graph.c keeps
 * the table and the enum the same length. A node keeps what its backward needs: the inputs,
 * the output, tensors the forward saved (rstd, log-sum-exp) and scalar parameters. Backends
 * receive nodes (src/backend/backend.h) and run the forward or the backward of one node.
 *
 * Kernels always see contiguous inputs: the graph-level op copies a strided input first
 * (an LV_OP_CONT node), so only the view ops deal with strides.
 */
#ifndef LV_CORE_GRAPH_H
#define LV_CORE_GRAPH_H

#include "lavinia/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

enum lv_op {
    LV_OP_NONE,          /* a leaf */
    LV_OP_VIEW,          /* reshape, transpose, permute, slice: ip[0] offset, ip[1..4] strides
                            of the view inside the input's contiguous gradient */
    LV_OP_CONT,          /* strided -> contiguous F32 */
    LV_OP_CAST,          /* dtype change */
    LV_OP_MATMUL,        /* ip[0] flags (LV_TRANS_*), ip[1] batch, ip[2..4] M, N, K,
                            ip[5] 1 if b has its own batch (else shared by every batch of a) */
    LV_OP_ADD,           /* ADD..DIV: ip[0..3] b's strides in a's shape padded to 4 dims,
                            0 where b is broadcast */
    LV_OP_SUB,
    LV_OP_MUL,
    LV_OP_DIV,
    LV_OP_SCALE,         /* fp[0] s */
    LV_OP_SQRT,
    LV_OP_SILU,
    LV_OP_GELU,
    LV_OP_GELU_TANH,
    LV_OP_QUICK_GELU,
    LV_OP_SWIGLU,
    LV_OP_DROPOUT,       /* fp[0] p, ip[0] seed */
    LV_OP_SUM,           /* ip[0] dim */
    LV_OP_L2NORM,        /* ip[0] dim */
    LV_OP_SOFTMAX,
    LV_OP_RMSNORM,       /* fp[0] eps; saved[0] rstd (N) */
    LV_OP_LAYERNORM,     /* fp[0] eps; saved[0] mean (N), saved[1] rstd (N) */
    LV_OP_ROPE,          /* ip[0] mode, fp[0] base, fp[1] freq_scale */
    LV_OP_ATTENTION,     /* ip[0] flags (LV_ATTN_*, and LV_ATTN_GRAD_ when a gradient
                            will be taken), ip[1] S, ip[2] cache start, ip[3..7] B, T, H,
                            KV, D; fp[0] scale;
                            saved[0] lse (B, H, T); ptr: the kv cache or NULL */
    LV_OP_EMBEDDING,
    LV_OP_CONCAT,        /* ip[0] dim */
    LV_OP_CROSS_ENTROPY, /* saved[0] lse (N); fp[0] 1/count */
    LV_OP_PATCH_EMBED,   /* saved[0] the im2col matrix (B * patches, Cin * P * P) */
    LV_OP_COUNT
};

const char *lv_op_name(enum lv_op op);

#define LV_MAX_SRC 4

/* One recorded op. */
typedef struct lv_node {
    enum lv_op op;
    lv_tensor *out;
    lv_tensor *src[LV_MAX_SRC];   /* inputs in the op's argument order; NULL past the last */
    lv_tensor *saved[2];          /* statistics the forward kept for the backward */
    int64_t ip[8];                /* integer parameters (see the enum) */
    float fp[4];                  /* float parameters (see the enum) */
    void *ptr;                    /* op-specific pointer (the kv cache) */
} lv_node;

/* Attention node flag: an input needs a gradient, so the forward computes its scores as the
 * backward recomputes them (the lse it stores then matches them bit for bit). */
#define LV_ATTN_GRAD_ 0x100

/* Arena chunk (graph.c): reset keeps the chunks, so steady-state steps never call malloc. */
typedef struct lv_arena_chunk lv_arena_chunk;

/*
 * Where a graph's ops spend their time, while a profile is set (lv_graph_set_profile): calls
 * and seconds of each op's forward kernel (the backend's forward call, its threads included;
 * building the node is not counted), and the matrix products apart by their right operand
 * (N, K, dtype), the first LV_PROFILE_SHAPES of them.
 */
#define LV_PROFILE_SHAPES 32
struct lv_profile {
    long calls[LV_OP_COUNT];
    double seconds[LV_OP_COUNT];
    struct lv_profile_mm {
        int64_t n, k;
        lv_dtype dtype;
        long calls;
        double seconds;
    } mm[LV_PROFILE_SHAPES];
    int n_mm;
};

struct lv_graph {
    lv_backend *backend;
    struct lv_profile *profile;   /* NULL: not timed */
    bool recording;
    lv_arena_chunk *chunks;       /* all chunks; the first ones are filled in order */
    lv_arena_chunk *cur;          /* the chunk being filled */
    lv_node *tape;                /* nodes in execution order */
    int n_nodes, cap_nodes;
};

/* Time the forwards of g's ops into p from now on (NULL: stop); p is borrowed. */
void lv_graph_set_profile(lv_graph *g, struct lv_profile *p);

/* Arena allocation, 64-byte aligned; NULL with a message when memory runs out. */
void *lv_graph_alloc(lv_graph *g, size_t bytes);
/* A zeroed, contiguous tensor in the arena (not recorded). */
lv_tensor *lv_graph_tensor(lv_graph *g, lv_dtype dtype, int ndim, const int64_t *shape);
/* The same, not zeroed: the output of an op whose forward kernel, on every backend, writes
 * every element (zeroing a prompt's outputs first cost 3% of its time). */
lv_tensor *lv_graph_tensor_out(lv_graph *g, lv_dtype dtype, int ndim, const int64_t *shape);
/* Does t take part in gradients (a parameter or derived from one, not detached)? */
bool lv_needs_grad(const lv_tensor *t);
/* Gradient buffer of t during backward: allocated zeroed on first use (arena for
 * intermediates, persistent for parameters); NULL if t takes no gradient. */
lv_tensor *lv_grad_of(lv_graph *g, lv_tensor *t);

#ifdef __cplusplus
}
#endif
#endif /* LV_CORE_GRAPH_H */
