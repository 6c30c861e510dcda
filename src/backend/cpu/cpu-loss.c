/*
 * cpu-loss.c: CPU kernels for the cross-entropy loss with ignored targets.
 *
 * For logits (N, V) and targets (N), a row counts when targets[n] >= 0 (Hugging Face marks
 * ignored positions with -100). The loss is the mean over counted rows of
 *     lse[n] - logits[n, targets[n]],   lse[n] = log sum_v exp(logits[n, v])
 * and 0 when no row counts. The forward stores lse for every row (ignored ones included, so
 * the buffer is never left undefined) and the backward rebuilds softmax = exp(logits - lse)
 * from it, so no (N, V) probability matrix is kept.
 *
 * Numerics: lse subtracts the row max before exp and sums in double. The loss is summed over
 * rows in double, serially and in row order after the lse loop (CPU_FOR, cpu.h: parallel over
 * rows when big enough): an OpenMP reduction would make the sum depend on the thread count.
 *
 * Accumulation rule: the backward adds into dlogits (+=), never assigns; ignored rows get
 * nothing added. Targets >= V must be refused by the caller (lv_cross_entropy).
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "backend/cpu/cpu.h"

#include <assert.h>
#include <math.h>

/* log sum exp of one row of V logits */
static inline float row_lse(const float *x, int64_t V)
{
    float mx = -INFINITY;
    for (int64_t c = 0; c < V; c++)
        if (x[c] > mx)
            mx = x[c];
    double s = 0.0;
    for (int64_t c = 0; c < V; c++)
        s += expf(x[c] - mx);
    return (float)((double)mx + log(s));
}

int64_t cpu_cross_entropy_forward(float *loss, float *lse, const float *logits,
                                  const int32_t *targets, int64_t N, int64_t V)
{
    CPU_FOR(N * V, n, N, {
        lse[n] = row_lse(logits + n * V, V);
    });

    double sum = 0.0;
    int64_t count = 0;
    for (int64_t n = 0; n < N; n++) {
        int32_t tg = targets[n];
        if (tg < 0)
            continue;
        assert(tg < V && "lv_cross_entropy should have refused a target >= V");
        sum += (double)lse[n] - (double)logits[n * V + tg];
        count++;
    }
    loss[0] = count > 0 ? (float)(sum / (double)count) : 0.0f;
    return count;
}

void cpu_cross_entropy_backward(float *dlogits, float dloss, const float *logits,
                                const int32_t *targets, const float *lse, float inv_count,
                                int64_t N, int64_t V)
{
    if (!dlogits)
        return;
    float g = dloss * inv_count;

    CPU_FOR(N * V, n, N, {
        int32_t tg = targets[n];
        if (tg < 0)
            continue;
        const float *x = logits + n * V;
        float *dx = dlogits + n * V;
        float ls = lse[n];
        for (int64_t c = 0; c < V; c++)
            dx[c] += g * (expf(x[c] - ls) - (c == tg ? 1.0f : 0.0f));
    });
}
