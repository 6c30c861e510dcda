/*
 * test-backend.c: backend parity. Every op the CUDA backend implements runs forward and
 * backward on the CUDA backend and on the CPU backend from the same inputs, and the results
 * are compared element by element (llm.c dev/cuda/common.h validate_result):
 *
 *     |cuda - cpu| <= abs + |cpu| * eps       (non-finite CPU values skipped)
 *
 * with eps the epsilon of the dtype that limits the product and abs derived per case below.
 * At most 10 mismatches are printed per tensor. Both sides go through the same code: the
 * node is built by hand (src/core/graph.h) over buffers from the backend's own alloc and
 * copy, so this also exercises those slots. Gradient buffers start non-zero, so a backend
 * that assigns instead of accumulating (+=) fails.
 *
 * Without a usable GPU (or a build without CUDA) lv_backend_cuda() returns NULL: the test
 * prints why and exits 77, which automake counts as skipped.
 */
#include "config.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "../testutil.h"

enum { MAX_PRINT = 10 };

/* --- comparison --------------------------------------------------------------------- */

/* Machine epsilon (spacing above 1) of a float dtype. */
static double dtype_eps(lv_dtype t)
{
    return t == LV_F16 ? 0x1p-10 : t == LV_BF16 ? 0x1p-7 : FLT_EPSILON;
}

/* cuda against cpu (n floats): |cuda - cpu| <= tol_abs + |cpu| * tol_rel, printing the
 * first mismatches. */
static bool validate(const char *name, const float *cuda, const float *cpu, int64_t n,
                     double tol_abs, double tol_rel)
{
    int64_t bad = 0;
    double max_diff = 0;

    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(cpu[i]))
            continue;
        double d = fabs((double)cuda[i] - cpu[i]);
        /* written so that a NaN from the GPU fails */
        if (!(d <= tol_abs + fabs(cpu[i]) * tol_rel)) {
            if (bad < MAX_PRINT)
                printf("  %s[%lld]: cuda %.9g cpu %.9g diff %.3g\n", name, (long long)i,
                       cuda[i], cpu[i], d);
            bad++;
        }
        if (d > max_diff || isnan(d))
            max_diff = d;
    }
    return tu_assert(bad == 0, "%-40s max diff %.3g, tol %.3g + |ref| * %.3g, %lld of %lld out",
                     name, max_diff, tol_abs, tol_rel, (long long)bad, (long long)n);
}

/* --- running one node on one backend ------------------------------------------------ */

/* A tensor header over a buffer from be->ops->alloc, filled from the host tensor h. */
static bool upload(lv_backend *be, lv_tensor *t, const lv_tensor *h)
{
    size_t n = lv_tensor_nbytes(h);
    void *p = be->ops->alloc(be->ctx, n);

    lv_tensor_init(t, p, h->dtype, h->ndim, h->shape);
    t->device = be->ops->device;
    if (!p)
        return tu_assert(false, "%s: alloc %zu bytes: %s", be->ops->name, n, lv_errmsg());
    if (be->ops->copy(be->ctx, p, be->ops->device, h->data, LV_DEVICE_CPU, n) != LV_OK)
        return tu_assert(false, "%s: upload: %s", be->ops->name, lv_errmsg());
    return true;
}

/* The F32 contents of a backend tensor, in a new host array (NULL on failure). */
static float *download(lv_backend *be, const lv_tensor *t)
{
    size_t n = lv_tensor_nbytes(t);
    float *h = malloc(n ? n : 1);

    if (!h || be->ops->copy(be->ctx, h, LV_DEVICE_CPU, t->data, be->ops->device, n) != LV_OK) {
        tu_assert(false, "%s: download: %s", be->ops->name, h ? lv_errmsg() : "no memory");
        free(h);
        return NULL;
    }
    return h;
}

/* What one parity case feeds both backends. */
struct parity_case {
    const char *name;
    enum lv_op op;
    int64_t ip[8];                      /* node->ip, as the graph-level op fills it */
    int n_in;
    lv_tensor *in[LV_MAX_SRC];          /* host inputs */
    lv_tensor *g0[LV_MAX_SRC];          /* host initial gradients; NULL: input takes none */
    lv_tensor *dy;                      /* host gradient of the output (F32) */
    double abs[1 + LV_MAX_SRC];         /* tolerance of out, then of each gradient */
    double rel[1 + LV_MAX_SRC];
};

/* Forward, backward and sync of pc's node on be; res[0] gets out, res[1 + i] dsrc[i]. */
static bool run_side(lv_backend *be, const struct parity_case *pc, float **res)
{
    const struct lv_backend_ops *o = be->ops;
    lv_tensor in[LV_MAX_SRC], g[LV_MAX_SRC], out, dy;
    lv_tensor *dsrc[LV_MAX_SRC] = { NULL };
    lv_node node;
    bool ok = false;

    memset(in, 0, sizeof in);
    memset(g, 0, sizeof g);
    memset(&out, 0, sizeof out);
    memset(&dy, 0, sizeof dy);
    memset(&node, 0, sizeof node);
    node.op = pc->op;
    memcpy(node.ip, pc->ip, sizeof node.ip);
    node.out = &out;
    if (!upload(be, &dy, pc->dy))
        goto done;
    /* out has dy's shape; its contents are whatever alloc gave, forward must assign */
    lv_tensor_init(&out, o->alloc(be->ctx, lv_tensor_nbytes(pc->dy)), LV_F32, pc->dy->ndim,
                   pc->dy->shape);
    out.device = o->device;
    if (!out.data) {
        tu_assert(false, "%s: %s: alloc: %s", pc->name, o->name, lv_errmsg());
        goto done;
    }
    for (int i = 0; i < pc->n_in; i++) {
        if (!upload(be, &in[i], pc->in[i]))
            goto done;
        node.src[i] = &in[i];
        if (pc->g0[i]) {
            if (!upload(be, &g[i], pc->g0[i]))
                goto done;
            dsrc[i] = &g[i];
        }
    }
    if (o->forward(be->ctx, &node) != LV_OK || o->backward(be->ctx, &node, &dy, dsrc) != LV_OK
        || o->sync(be->ctx) != LV_OK) {
        tu_assert(false, "%s: %s: %s", pc->name, o->name, lv_errmsg());
        goto done;
    }
    if (!(res[0] = download(be, &out)))
        goto done;
    for (int i = 0; i < pc->n_in; i++)
        if (dsrc[i] && !(res[1 + i] = download(be, dsrc[i])))
            goto done;
    ok = true;
done:
    o->free(be->ctx, dy.data);
    o->free(be->ctx, out.data);
    for (int i = 0; i < LV_MAX_SRC; i++) {
        o->free(be->ctx, in[i].data);
        o->free(be->ctx, g[i].data);
    }
    return ok;
}

/* Runs pc on both backends and compares out and every gradient; frees pc's tensors. */
static void parity(lv_backend *cpu, lv_backend *gpu, struct parity_case *pc)
{
    float *ref[1 + LV_MAX_SRC] = { NULL }, *got[1 + LV_MAX_SRC] = { NULL };
    char name[128];

    if (run_side(cpu, pc, ref) && run_side(gpu, pc, got)) {
        snprintf(name, sizeof name, "%s: out", pc->name);
        validate(name, got[0], ref[0], lv_tensor_nelem(pc->dy), pc->abs[0], pc->rel[0]);
        for (int i = 0; i < pc->n_in; i++) {
            if (!pc->g0[i])
                continue;
            snprintf(name, sizeof name, "%s: d%c", pc->name, 'a' + i);
            validate(name, got[1 + i], ref[1 + i], lv_tensor_nelem(pc->g0[i]), pc->abs[1 + i],
                     pc->rel[1 + i]);
        }
    }
    for (int i = 0; i < 1 + LV_MAX_SRC; i++) {
        free(ref[i]);
        free(got[i]);
    }
    for (int i = 0; i < pc->n_in; i++) {
        lv_tensor_free(pc->in[i]);
        lv_tensor_free(pc->g0[i]);
    }
    lv_tensor_free(pc->dy);
}

/* --- matmul ------------------------------------------------------------------------- */

/* One lv_matmul shape (lavinia/ops.h): a (..., M, K) or (..., K, M) with LV_TRANS_A,
 * b (..., K, N) or (..., N, K) with LV_TRANS_B, b's leading dims 1 or a's. */
struct mm_case {
    const char *name;
    lv_dtype bt;                        /* b's dtype; a is F32 */
    int flags;
    int nda, ndb;
    int64_t a[LV_MAX_DIMS], b[LV_MAX_DIMS];
};

/* Odd sizes, so no kernel gets away with assuming multiples of 8 or 32. */
static const struct mm_case mm_cases[] = {
    { .name = "matmul f32",  .bt = LV_F32,  .nda = 2, .a = { 33, 65 }, .ndb = 2, .b = { 65, 47 } },
    { .name = "matmul f16",  .bt = LV_F16,  .nda = 2, .a = { 33, 65 }, .ndb = 2, .b = { 65, 47 } },
    { .name = "matmul bf16", .bt = LV_BF16, .nda = 2, .a = { 33, 65 }, .ndb = 2, .b = { 65, 47 } },
    { .name = "matmul f32 trans_b", .bt = LV_F32, .flags = LV_TRANS_B,
      .nda = 2, .a = { 33, 65 }, .ndb = 2, .b = { 47, 65 } },
    { .name = "matmul bf16 trans_b", .bt = LV_BF16, .flags = LV_TRANS_B,
      .nda = 2, .a = { 33, 65 }, .ndb = 2, .b = { 47, 65 } },
    { .name = "matmul f32 trans_a", .bt = LV_F32, .flags = LV_TRANS_A,
      .nda = 2, .a = { 65, 33 }, .ndb = 2, .b = { 65, 47 } },
    { .name = "matmul f32 batched, shared b", .bt = LV_F32,
      .nda = 4, .a = { 2, 3, 17, 40 }, .ndb = 2, .b = { 40, 23 } },
    { .name = "matmul f32 batched", .bt = LV_F32,
      .nda = 3, .a = { 3, 17, 40 }, .ndb = 3, .b = { 3, 40, 23 } },
    { .name = "matmul f32 batched trans_a", .bt = LV_F32, .flags = LV_TRANS_A,
      .nda = 3, .a = { 3, 40, 17 }, .ndb = 3, .b = { 3, 40, 23 } },
    { .name = "matmul f32 batched trans_a+b, shared b", .bt = LV_F32,
      .flags = LV_TRANS_A | LV_TRANS_B,
      .nda = 3, .a = { 3, 40, 17 }, .ndb = 3, .b = { 1, 23, 40 } },
    { .name = "matmul f16 batched trans_b, shared b", .bt = LV_F16, .flags = LV_TRANS_B,
      .nda = 4, .a = { 2, 3, 17, 40 }, .ndb = 2, .b = { 23, 40 } },
    { .name = "matmul bf16 batched trans_a", .bt = LV_BF16, .flags = LV_TRANS_A,
      .nda = 3, .a = { 3, 40, 17 }, .ndb = 3, .b = { 3, 40, 23 } },
};

/* Absolute tolerance of a sum of `inner` products of unit-variance inputs, computed with
 * the F32 operand rounded to `conv` on the GPU and not on the CPU. F32: both sides add the
 * same terms in different orders, an error of a few ulps of the partial sums, far under
 * 1e-5 * sqrt(inner). F16/BF16: the rounding is a relative error of at most u = eps/2 per
 * term, uniform and independent, so the sum's error has standard deviation
 * sqrt(inner) * u / sqrt(3); we allow 6 of them. */
static double mm_abs(lv_dtype conv, int64_t inner)
{
    if (conv == LV_F32)
        return 1e-5 * sqrt((double)inner);
    return 6.0 * sqrt((double)inner) * (dtype_eps(conv) / 2) / sqrt(3.0);
}

static void test_matmul(lv_backend *cpu, lv_backend *gpu, const struct mm_case *mc)
{
    struct parity_case pc = { .name = mc->name, .op = LV_OP_MATMUL, .n_in = 2 };
    int ta = (mc->flags & LV_TRANS_A) != 0, tb = (mc->flags & LV_TRANS_B) != 0;
    int64_t M = mc->a[mc->nda - (ta ? 1 : 2)], K = mc->a[mc->nda - (ta ? 2 : 1)];
    int64_t N = mc->b[mc->ndb - (tb ? 2 : 1)];
    int64_t out[LV_MAX_DIMS], batch = 1, nb = 1;

    for (int i = 0; i < mc->nda - 2; i++) {
        out[i] = mc->a[i];
        batch *= mc->a[i];
    }
    for (int i = 0; i < mc->ndb - 2; i++)
        nb *= mc->b[i];
    out[mc->nda - 2] = M;
    out[mc->nda - 1] = N;
    /* node->ip as src/core/ops-matmul.c fills it: flags, batch, M, N, K, b has its own batch */
    pc.ip[0] = mc->flags;
    pc.ip[1] = batch;
    pc.ip[2] = M;
    pc.ip[3] = N;
    pc.ip[4] = K;
    pc.ip[5] = nb > 1;

    pc.in[0] = tu_rand_tensor(LV_F32, mc->nda, mc->a, 1.0);
    pc.in[1] = tu_rand_tensor(mc->bt, mc->ndb, mc->b, 1.0);
    pc.dy = tu_rand_tensor(LV_F32, mc->nda, out, 1.0);
    pc.g0[0] = tu_rand_tensor(LV_F32, mc->nda, mc->a, 1.0);
    /* An F16/BF16 b is a frozen weight: no gradient of its own, dx still flows. */
    if (mc->bt == LV_F32)
        pc.g0[1] = tu_rand_tensor(LV_F32, mc->ndb, mc->b, 1.0);
    if (!pc.in[0] || !pc.in[1] || !pc.dy || !pc.g0[0] || (mc->bt == LV_F32 && !pc.g0[1])) {
        tu_assert(false, "%s: inputs: %s", mc->name, lv_errmsg());
        return;
    }
    /* out sums K products, da sums N (dy rounded to b's dtype like a in the forward), db
     * sums M per matrix of a that shares it (always F32 operands). */
    pc.abs[0] = mm_abs(mc->bt, K);
    pc.rel[0] = dtype_eps(mc->bt);
    pc.abs[1] = mm_abs(mc->bt, N);
    pc.rel[1] = dtype_eps(mc->bt);
    pc.abs[2] = mm_abs(LV_F32, M * (batch / nb));
    pc.rel[2] = FLT_EPSILON;
    parity(cpu, gpu, &pc);
}

/* --- add ---------------------------------------------------------------------------- */

static void test_add(lv_backend *cpu, lv_backend *gpu)
{
    const int64_t shape[3] = { 4, 33, 17 };
    /* node->ip as src/core/ops-elementwise.c fills it: b's strides in a's shape padded to
     * four dims (here b has a's shape, so its own contiguous strides and 0 for the pad) */
    struct parity_case pc = { .name = "add f32", .op = LV_OP_ADD, .n_in = 2,
                              .ip = { 0, 33 * 17, 17, 1 } };

    for (int i = 0; i < 2; i++) {
        pc.in[i] = tu_rand_tensor(LV_F32, 3, shape, 1.0);
        pc.g0[i] = tu_rand_tensor(LV_F32, 3, shape, 1.0);
    }
    pc.dy = tu_rand_tensor(LV_F32, 3, shape, 1.0);
    if (!pc.in[0] || !pc.in[1] || !pc.g0[0] || !pc.g0[1] || !pc.dy) {
        tu_assert(false, "add: inputs: %s", lv_errmsg());
        return;
    }
    /* One IEEE F32 addition per element on both sides: the results are identical. */
    for (int i = 0; i < 3; i++) {
        pc.abs[i] = 0;
        pc.rel[i] = FLT_EPSILON;
    }
    parity(cpu, gpu, &pc);
}

int main(int argc, char **argv)
{
    lv_backend *cpu, *gpu;

    tu_init(argc, argv, "test-backend");
    gpu = lv_backend_cuda();
    if (!gpu) {
        printf("skipped: no CUDA device (%s)\n", lv_errmsg());
        return 77;
    }
    cpu = lv_backend_cpu();
    printf("parity: %s against %s\n", gpu->ops->name, cpu->ops->name);
    for (size_t i = 0; i < sizeof mm_cases / sizeof mm_cases[0]; i++)
        test_matmul(cpu, gpu, &mm_cases[i]);
    test_add(cpu, gpu);
    if (gpu->ops->done)
        gpu->ops->done(gpu->ctx);
    return tu_finish();
}
