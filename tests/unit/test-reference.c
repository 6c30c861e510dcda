/*
 * test-reference.c: one LLaMA decoder block and one CLIP encoder block, built from lavinia's
 * public ops, against float64 reference states written by PyTorch.
 *
 * The expected values come from tests/reference/gen_blocks.py (torch 1.13 autograd in float64,
 * run with Debian's /usr/bin/python3); its outputs llama_block.bin and clip_block.bin are
 * committed, so this test needs no Python. The pattern is karpathy/llm.c's train_gpt2.py
 * write_state + test_gpt2.c: the script writes the inputs, every weight, R, the output, the loss
 * and the gradient of loss = sum(out * R) w.r.t. the input and every weight; this test loads the
 * same inputs and weights as F32, runs the block on a recording graph, seeds backward with R
 * (d loss / d out = R) and compares the output, the loss and every gradient.
 *
 * The blocks (see gen_blocks.py for the formulas; Linear weights are (out, in) as in torch):
 *   llama: x (T=7, C=32), pre-norm RMSNorm (eps 1e-5), GQA attention H=4, KV=2, D=8, causal,
 *          RoPE half-split (LV_ROPE_HF, base 10000) at positions 0..T-1, SwiGLU MLP F=48,
 *          no biases, two residuals.
 *   clip:  x (T=5, C=32), pre-LN LayerNorm (eps 1e-5), attention H=KV=4, D=8, not causal,
 *          q/k/v/o with biases, MLP fc1 (F=64) quick_gelu fc2 with biases, two residuals.
 *
 * File layout (integers uint32 little-endian, data float64 little-endian, no padding):
 *
 *     offset 0   magic    8 bytes  "LVREF\0\0\0"
 *            8   version  uint32   1 (REF_VERSION)
 *           12   count    uint32   tensors that follow
 *     per tensor, back to back:
 *                name_len uint32   1..63
 *                name     name_len bytes, printable ASCII, no NUL
 *                ndim     uint32   0..4
 *                shape    ndim x uint32, each >= 1
 *                data     prod(shape) x float64, row-major
 *     the file ends right after the last tensor.
 *
 * Names: inputs and weights ("x", "wq", "ln1.weight", ...), "R", "out", "loss" (shape (1)),
 * and "grad.NAME" for each input and weight. The file is test data, but it is parsed as if it
 * were hostile: every read is bounds-checked, sizes are capped, names must be unique and
 * values finite. A missing, stale or damaged file fails with the command that regenerates it.
 *
 * Found at $LV_TOP_SRCDIR/tests/reference/NAME.bin, or ./tests/reference/NAME.bin when the
 * variable is unset.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lavinia/ops.h"
#include "refdata.h"
#include "testutil.h"

/*
 * Tolerance for every check, as max|got - ref| <= TOL * max|ref| per tensor. lavinia computes
 * in F32 (unit round-off 6e-8) from exactly the F32 inputs the reference used; the reference is
 * float64. Through one block (norms and softmax over at most 64 terms, matmuls with K <= 64)
 * torch's own F32 CPU run of these blocks lands at 3e-7..6e-7 of the reference (gen_blocks.py
 * prints it), so 1e-5 leaves a wide margin for other summation orders and exp/erf code, while a
 * layout mistake (a wrong RoPE pair, GQA head map or transpose) moves results by O(1).
 */
#define TOL 1e-5

#define REF_HINT      "cd tests/reference && /usr/bin/python3 gen_blocks.py"

/* A new F32 CPU tensor holding the reference values of NAME, which must be float32-exact. */
static lv_tensor *ref_tensor_new(const struct ref_file *rf, const char *name, int ndim,
                                 const int64_t *shape)
{
    const struct ref_tensor *r = ref_get(rf, name, ndim, shape);
    lv_tensor *t;

    if (!r)
        return NULL;
    for (int64_t i = 0; i < r->n; i++) {
        if ((double)(float)r->data[i] != r->data[i]) {
            ref_fail(rf, "input '%s' is not float32-exact at element %lld", name,
                     (long long)i);
            return NULL;
        }
    }
    t = lv_tensor_new(LV_F32, ndim, shape);
    if (!t) {
        tu_assert(false, "%s: lv_tensor_new: %s", name, lv_errmsg());
        return NULL;
    }
    for (int64_t i = 0; i < r->n; i++)
        lv_tensor_set(t, i, r->data[i]);
    lv_tensor_set_name(t, name);
    return t;
}

/* ---------------------------------------------------------------------------------------- */
/* blocks */

/* One input or weight of a block: its name in the file and its shape. */
struct param_spec {
    const char *name;
    int ndim;
    int64_t shape[LV_MAX_DIMS];
    /* (optional) the gradient is zero in exact arithmetic, so the reference holds round-off:
     * bound it by TOL times max|grad.zero_vs| instead of a relative check */
    const char *zero_vs;
};

/* The spec of the parameter NAME in a block's table, or NULL. */
static const struct param_spec *spec_find(const struct param_spec *specs, int n,
                                          const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcmp(specs[i].name, name) == 0)
            return &specs[i];
    return NULL;
}

/* A block under test: its file, its parameters and its forward pass. */
struct block {
    const char *file;                       /* tests/reference/FILE.bin */
    const struct param_spec *params;        /* params[0] is x */
    int n_params;
    int64_t T, C;                           /* x, out and R are (T, C) */
    /* builds out (T, C) from params (in spec order) and pos (T) I32; NULL on error */
    lv_tensor *(*forward)(lv_graph *g, lv_tensor **p, const lv_tensor *pos);
};

/* --- LLaMA decoder block --- */

enum { LL_T = 7, LL_C = 32, LL_H = 4, LL_KV = 2, LL_D = 8, LL_F = 48 };
#define LL_EPS 1e-5f

enum {
    LL_X, LL_ATTN_NORM, LL_WQ, LL_WK, LL_WV, LL_WO, LL_FFN_NORM, LL_W1, LL_W2, LL_W3, LL_COUNT
};

static const struct param_spec llama_params[LL_COUNT] = {
    [LL_X]         = { .name = "x",         .ndim = 2, .shape = { LL_T, LL_C } },
    [LL_ATTN_NORM] = { .name = "attn_norm", .ndim = 1, .shape = { LL_C } },
    [LL_WQ]        = { .name = "wq",        .ndim = 2, .shape = { LL_H * LL_D, LL_C } },
    [LL_WK]        = { .name = "wk",        .ndim = 2, .shape = { LL_KV * LL_D, LL_C } },
    [LL_WV]        = { .name = "wv",        .ndim = 2, .shape = { LL_KV * LL_D, LL_C } },
    [LL_WO]        = { .name = "wo",        .ndim = 2, .shape = { LL_C, LL_H * LL_D } },
    [LL_FFN_NORM]  = { .name = "ffn_norm",  .ndim = 1, .shape = { LL_C } },
    [LL_W1]        = { .name = "w1",        .ndim = 2, .shape = { LL_F, LL_C } },
    [LL_W2]        = { .name = "w2",        .ndim = 2, .shape = { LL_C, LL_F } },
    [LL_W3]        = { .name = "w3",        .ndim = 2, .shape = { LL_F, LL_C } },
};

/* out = h + W2 (silu(W1 m) * W3 m), m = rmsnorm(h), h = x + Wo attn(rope q, rope k, v) */
static lv_tensor *llama_forward(lv_graph *g, lv_tensor **p, const lv_tensor *pos)
{
    const int64_t q_shape[3] = { LL_T, LL_H, LL_D };
    const int64_t kv_shape[3] = { LL_T, LL_KV, LL_D };
    const int64_t flat[2] = { LL_T, LL_H * LL_D };
    const float scale = (float)(1.0 / sqrt((double)LL_D));

    lv_tensor *n = lv_rmsnorm(g, p[LL_X], p[LL_ATTN_NORM], LL_EPS);
    lv_tensor *q = lv_reshape(g, lv_linear(g, n, p[LL_WQ], NULL), 3, q_shape);
    lv_tensor *k = lv_reshape(g, lv_linear(g, n, p[LL_WK], NULL), 3, kv_shape);
    lv_tensor *v = lv_reshape(g, lv_linear(g, n, p[LL_WV], NULL), 3, kv_shape);
    q = lv_rope(g, q, pos, LV_ROPE_HF, 10000.0f, 1.0f);
    k = lv_rope(g, k, pos, LV_ROPE_HF, 10000.0f, 1.0f);
    /* (T, H, D); query head h reads kv head h / (H / KV), as Hugging Face's repeat_kv */
    lv_tensor *a = lv_attention(g, q, k, v, NULL, NULL, scale, LV_ATTN_CAUSAL);
    a = lv_linear(g, lv_reshape(g, a, 2, flat), p[LL_WO], NULL);
    lv_tensor *h = lv_add(g, p[LL_X], a);

    lv_tensor *m = lv_rmsnorm(g, h, p[LL_FFN_NORM], LL_EPS);
    lv_tensor *f = lv_swiglu(g, lv_linear(g, m, p[LL_W1], NULL), lv_linear(g, m, p[LL_W3], NULL));
    return lv_add(g, h, lv_linear(g, f, p[LL_W2], NULL));
}

static const struct block llama_block = {
    .file     = "llama_block",
    .params   = llama_params,
    .n_params = LL_COUNT,
    .T        = LL_T,
    .C        = LL_C,
    .forward  = llama_forward,
};

/* --- CLIP encoder block --- */

enum { LC_T = 5, LC_C = 32, LC_H = 4, LC_D = 8, LC_F = 64 };
#define LC_EPS 1e-5f

enum {
    LC_X, LC_LN1_W, LC_LN1_B, LC_WQ, LC_BQ, LC_WK, LC_BK, LC_WV, LC_BV, LC_WO, LC_BO,
    LC_LN2_W, LC_LN2_B, LC_FC1_W, LC_FC1_B, LC_FC2_W, LC_FC2_B, LC_COUNT
};

static const struct param_spec clip_params[LC_COUNT] = {
    [LC_X]     = { .name = "x",          .ndim = 2, .shape = { LC_T, LC_C } },
    [LC_LN1_W] = { .name = "ln1.weight", .ndim = 1, .shape = { LC_C } },
    [LC_LN1_B] = { .name = "ln1.bias",   .ndim = 1, .shape = { LC_C } },
    [LC_WQ]    = { .name = "wq",         .ndim = 2, .shape = { LC_C, LC_C } },
    [LC_BQ]    = { .name = "bq",         .ndim = 1, .shape = { LC_C } },
    [LC_WK]    = { .name = "wk",         .ndim = 2, .shape = { LC_C, LC_C } },
    /* unmasked softmax ignores the q . bk shift shared by all keys of a query */
    [LC_BK]    = { .name = "bk",         .ndim = 1, .shape = { LC_C }, .zero_vs = "wk" },
    [LC_WV]    = { .name = "wv",         .ndim = 2, .shape = { LC_C, LC_C } },
    [LC_BV]    = { .name = "bv",         .ndim = 1, .shape = { LC_C } },
    [LC_WO]    = { .name = "wo",         .ndim = 2, .shape = { LC_C, LC_C } },
    [LC_BO]    = { .name = "bo",         .ndim = 1, .shape = { LC_C } },
    [LC_LN2_W] = { .name = "ln2.weight", .ndim = 1, .shape = { LC_C } },
    [LC_LN2_B] = { .name = "ln2.bias",   .ndim = 1, .shape = { LC_C } },
    [LC_FC1_W] = { .name = "fc1.weight", .ndim = 2, .shape = { LC_F, LC_C } },
    [LC_FC1_B] = { .name = "fc1.bias",   .ndim = 1, .shape = { LC_F } },
    [LC_FC2_W] = { .name = "fc2.weight", .ndim = 2, .shape = { LC_C, LC_F } },
    [LC_FC2_B] = { .name = "fc2.bias",   .ndim = 1, .shape = { LC_C } },
};

/* out = h + fc2 quick_gelu(fc1 ln2(h)), h = x + o attn(q, k, v of ln1(x)); no positions */
static lv_tensor *clip_forward(lv_graph *g, lv_tensor **p, const lv_tensor *pos)
{
    const int64_t heads[3] = { LC_T, LC_H, LC_D };
    const int64_t flat[2] = { LC_T, LC_C };
    const float scale = (float)(1.0 / sqrt((double)LC_D));

    (void)pos;
    lv_tensor *n = lv_layernorm(g, p[LC_X], p[LC_LN1_W], p[LC_LN1_B], LC_EPS);
    lv_tensor *q = lv_reshape(g, lv_linear(g, n, p[LC_WQ], p[LC_BQ]), 3, heads);
    lv_tensor *k = lv_reshape(g, lv_linear(g, n, p[LC_WK], p[LC_BK]), 3, heads);
    lv_tensor *v = lv_reshape(g, lv_linear(g, n, p[LC_WV], p[LC_BV]), 3, heads);
    lv_tensor *a = lv_attention(g, q, k, v, NULL, NULL, scale, 0);
    a = lv_linear(g, lv_reshape(g, a, 2, flat), p[LC_WO], p[LC_BO]);
    lv_tensor *h = lv_add(g, p[LC_X], a);

    lv_tensor *m = lv_layernorm(g, h, p[LC_LN2_W], p[LC_LN2_B], LC_EPS);
    lv_tensor *f = lv_quick_gelu(g, lv_linear(g, m, p[LC_FC1_W], p[LC_FC1_B]));
    return lv_add(g, h, lv_linear(g, f, p[LC_FC2_W], p[LC_FC2_B]));
}

static const struct block clip_block = {
    .file     = "clip_block",
    .params   = clip_params,
    .n_params = LC_COUNT,
    .T        = LC_T,
    .C        = LC_C,
    .forward  = clip_forward,
};

/* ---------------------------------------------------------------------------------------- */
/* the checks */

/* A gradient that is zero in exact arithmetic: max|got| <= TOL * max|ref of its partner|. */
static void check_zero_grad(const char *label, const lv_tensor *got,
                            const struct ref_tensor *partner)
{
    double max_got = 0, max_ref = 0;

    for (int64_t i = 0; i < lv_tensor_nelem(got); i++)
        max_got = fmax(max_got, fabs(lv_tensor_get(got, i)));
    for (int64_t i = 0; i < partner->n; i++)
        max_ref = fmax(max_ref, fabs(partner->data[i]));
    bool ok = max_got <= TOL * max_ref;
    tu_assert(ok, "%s: zero in exact arithmetic: max|got| %.3e <= %.0e * max|%s| %.3e",
              label, max_got, TOL, partner->name, max_ref);
}

/* Load a block's file, run forward and backward, check out, loss and every gradient. */
static void run_block(const struct block *b)
{
    struct ref_file rf;
    const struct ref_tensor *ref_out, *ref_loss;
    lv_tensor *p[REF_MAX_COUNT] = { 0 };
    lv_tensor *R = NULL, *pos = NULL, *out;
    lv_graph *g = NULL;
    const int64_t tc[2] = { b->T, b->C };
    const int64_t one[1] = { 1 };
    double loss = 0;
    float loss_f;
    char label[96];

    printf("--- %s\n", b->file);
    if (!ref_load(&rf, b->file, REF_HINT))
        return;

    for (int i = 0; i < b->n_params; i++) {
        const struct param_spec *s = &b->params[i];
        p[i] = ref_tensor_new(&rf, s->name, s->ndim, s->shape);
        if (!p[i])
            goto done;
        lv_tensor_set_param(p[i]);
        if (lv_tensor_zero_grad(p[i]) != LV_OK) {
            tu_assert(false, "%s: zero_grad %s: %s", b->file, s->name, lv_errmsg());
            goto done;
        }
    }
    R = ref_tensor_new(&rf, "R", 2, tc);
    ref_out = ref_get(&rf, "out", 2, tc);
    ref_loss = ref_get(&rf, "loss", 1, one);
    if (!R || !ref_out || !ref_loss)
        goto done;

    pos = lv_tensor_new(LV_I32, 1, &tc[0]);
    g = lv_graph_new(NULL);
    if (!pos || !g) {
        tu_assert(false, "%s: setup: %s", b->file, lv_errmsg());
        goto done;
    }
    for (int64_t t = 0; t < b->T; t++)
        ((int32_t *)pos->data)[t] = (int32_t)t;
    lv_graph_set_recording(g, true);

    out = b->forward(g, p, pos);
    if (!tu_assert(out != NULL, "%s: forward ran%s%s", b->file, out ? "" : ": ", out ? "" : lv_errmsg()))
        goto done;
    if (!tu_assert(out->ndim == 2 && out->shape[0] == b->T && out->shape[1] == b->C,
                   "%s: out has shape %s, want (%lld, %lld)", b->file,
                   lv_shape_str(out, label, sizeof label), (long long)b->T, (long long)b->C))
        goto done;

    snprintf(label, sizeof label, "%s out", b->file);
    tu_check_tensor(label, out, ref_out->data, TOL);

    /* loss = sum(out * R), summed in double from the F32 output */
    for (int64_t i = 0; i < b->T * b->C; i++)
        loss += lv_tensor_get(out, i) * lv_tensor_get(R, i);
    loss_f = (float)loss;
    snprintf(label, sizeof label, "%s loss", b->file);
    tu_check(label, &loss_f, ref_loss->data, 1, TOL);

    if (!tu_assert(lv_backward_with(g, out, R) == LV_OK, "%s: backward ran (last message: %s)",
                   b->file, lv_errmsg()))
        goto done;

    for (int i = 0; i < b->n_params; i++) {
        const struct param_spec *s = &b->params[i];
        char gname[REF_MAX_NAME + 8];

        snprintf(gname, sizeof gname, "grad.%s", s->name);
        snprintf(label, sizeof label, "%s %s", b->file, gname);
        const struct ref_tensor *ref = ref_get(&rf, gname, s->ndim, s->shape);
        if (!ref)
            continue;
        if (!tu_assert(p[i]->grad != NULL, "%s: a gradient exists after backward", label))
            continue;
        if (s->zero_vs) {
            const struct param_spec *ps = spec_find(b->params, b->n_params, s->zero_vs);
            const struct ref_tensor *partner = NULL;
            char pname[REF_MAX_NAME + 8];

            snprintf(pname, sizeof pname, "grad.%s", s->zero_vs);
            /* a zero_vs naming no parameter is a bug in the tables above */
            if (tu_assert(ps != NULL, "%s: zero_vs '%s' names a parameter", label, s->zero_vs))
                partner = ref_get(&rf, pname, ps->ndim, ps->shape);
            if (partner)
                check_zero_grad(label, p[i]->grad, partner);
            continue;
        }
        tu_check_tensor(label, p[i]->grad, ref->data, TOL);
    }

done:
    if (g)
        lv_graph_free(g);
    lv_tensor_free(pos);
    lv_tensor_free(R);
    for (int i = 0; i < b->n_params; i++)
        lv_tensor_free(p[i]);
    ref_done(&rf);
}

int main(int argc, char **argv)
{
    tu_init(argc, argv, "reference");
    run_block(&llama_block);
    run_block(&clip_block);
    return tu_finish();
}
