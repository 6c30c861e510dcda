/*
 * test-steady.c: after warm-up, a training step and an inference step allocate nothing.
 *
 * The graph's arena keeps its chunks across lv_graph_reset, the tape keeps its capacity and
 * parameter gradients are allocated once, so the steady state should not call the allocator
 * at all. This test counts calls by defining malloc and friends in the executable (they
 * interpose on the C library's for every shared object) and forwarding to glibc's
 * __libc_* entry points. Under AddressSanitizer, which owns the allocator, it is skipped.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "testutil.h"

#if defined(__SANITIZE_ADDRESS__)
int main(void)
{
    printf("skipped: AddressSanitizer replaces the allocator this test counts\n");
    return 77;
}
#else

extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t m);
extern void *__libc_realloc(void *p, size_t n);
extern void *__libc_memalign(size_t a, size_t n);

static atomic_long n_calls;
static volatile int counting;    /* set and cleared by the main thread only */

static void count(void)
{
    if (counting)
        atomic_fetch_add(&n_calls, 1);
}

void *malloc(size_t n) { count(); return __libc_malloc(n); }
void *calloc(size_t n, size_t m) { count(); return __libc_calloc(n, m); }
void *realloc(void *p, size_t n) { count(); return __libc_realloc(p, n); }
void *aligned_alloc(size_t a, size_t n) { count(); return __libc_memalign(a, n); }
void *memalign(size_t a, size_t n) { count(); return __libc_memalign(a, n); }
int posix_memalign(void **p, size_t a, size_t n)
{
    count();
    *p = __libc_memalign(a, n);
    return *p ? 0 : 12;
}

enum { T = 16, C = 32, H = 4, KV = 2, D = 8, F = 48, V = 40 };
enum { P_EMB, P_NORM, P_Q, P_K, P_V, P_O, P_UP, P_GATE, P_DOWN, P_COUNT };

/* One step of a small decoder: embedding, attention with RoPE, SwiGLU MLP, loss. */
static lv_tensor *step(lv_graph *g, lv_tensor **p, const lv_tensor *ids, const lv_tensor *pos,
                       const lv_tensor *tgt)
{
    int64_t qs[3] = { T, H, D }, ks[3] = { T, KV, D }, flat[2] = { T, H * D };
    lv_tensor *x = lv_embedding(g, p[P_EMB], ids);
    lv_tensor *h = lv_rmsnorm(g, x, p[P_NORM], 1e-5f);
    lv_tensor *q = lv_rope(g, lv_reshape(g, lv_linear(g, h, p[P_Q], NULL), 3, qs), pos,
                           LV_ROPE_META, 10000.0f, 1.0f);
    lv_tensor *k = lv_rope(g, lv_reshape(g, lv_linear(g, h, p[P_K], NULL), 3, ks), pos,
                           LV_ROPE_META, 10000.0f, 1.0f);
    lv_tensor *v = lv_reshape(g, lv_linear(g, h, p[P_V], NULL), 3, ks);
    lv_tensor *a = lv_attention(g, q, k, v, NULL, NULL, 1.0f / sqrtf(D), LV_ATTN_CAUSAL);
    x = lv_add(g, x, lv_linear(g, lv_reshape(g, a, 2, flat), p[P_O], NULL));
    h = lv_rmsnorm(g, x, p[P_NORM], 1e-5f);
    h = lv_swiglu(g, lv_linear(g, h, p[P_GATE], NULL), lv_linear(g, h, p[P_UP], NULL));
    x = lv_add(g, x, lv_dropout(g, lv_linear(g, h, p[P_DOWN], NULL), 0.1f, 7));
    return lv_cross_entropy(g, lv_linear(g, x, p[P_EMB], NULL), tgt);
}

int main(int argc, char **argv)
{
    tu_init(argc, argv, "steady");
    static const int64_t shapes[P_COUNT][2] = {
        [P_EMB] = { V, C }, [P_NORM] = { C, 0 }, [P_Q] = { H * D, C }, [P_K] = { KV * D, C },
        [P_V] = { KV * D, C }, [P_O] = { C, H * D }, [P_UP] = { F, C }, [P_GATE] = { F, C },
        [P_DOWN] = { C, F },
    };
    lv_tensor *p[P_COUNT];
    for (int i = 0; i < P_COUNT; i++) {
        p[i] = tu_rand_tensor(i == P_Q ? LV_BF16 : LV_F32, shapes[i][1] ? 2 : 1, shapes[i], 0.2);
        if (i == P_Q)
            lv_tensor_set_frozen(p[i]);   /* a frozen narrow weight, as under an adapter */
        else
            lv_tensor_set_param(p[i]);
    }
    int64_t t1 = T;
    lv_tensor *ids = tu_rand_tensor(LV_I32, 1, &t1, V), *tgt = tu_rand_tensor(LV_I32, 1, &t1, V);
    lv_tensor *pos = lv_tensor_new(LV_I32, 1, &t1);
    for (int i = 0; i < T; i++)
        lv_tensor_set(pos, i, i);
    lv_graph *g = lv_graph_new(NULL);
    float losses[4];
    long calls[4];
    for (int s = 0; s < 4; s++) {
        bool train = s < 3;
        lv_graph_set_recording(g, train);
        atomic_store(&n_calls, 0);
        counting = s >= 1;
        lv_tensor *loss = step(g, p, ids, pos, tgt);
        int rc = loss && train ? lv_backward(g, loss) : LV_OK;
        counting = 0;
        calls[s] = atomic_load(&n_calls);
        if (!loss || rc != LV_OK) {
            tu_assert(false, "step %d: %s", s, lv_errmsg());
            break;
        }
        losses[s] = (float)lv_tensor_get(loss, 0);
        lv_graph_reset(g);
    }
    tu_assert(isfinite(losses[0]) && losses[0] == losses[1],
              "the same step gives the same loss (%g, %g)", (double)losses[0], (double)losses[1]);
    tu_assert(calls[1] == 0 && calls[2] == 0,
              "training steps after warm-up allocate nothing (%ld, %ld calls)", calls[1],
              calls[2]);
    tu_assert(calls[3] == 0, "an inference step allocates nothing (%ld calls)", calls[3]);
    tu_assert(p[P_Q]->grad == NULL && p[P_EMB]->grad != NULL,
              "the frozen weight has no gradient, the trainable ones do");
    lv_graph_free(g);
    for (int i = 0; i < P_COUNT; i++)
        lv_tensor_free(p[i]);
    lv_tensor_free(ids);
    lv_tensor_free(tgt);
    lv_tensor_free(pos);
    return tu_finish();
}
#endif
