/*
 * cpu-elementwise.c: activations and their derivatives, one element at a time.
 *
 * Each output element depends on its input element only, so the loops (CPU_FOR in cpu.h,
 * parallel from about 32K elements up) give the same bits at any thread count. Backward
 * accumulates: dx += dy * f'(x).
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "backend/cpu/cpu.h"

#include <math.h>

#define SQRT_2_OVER_PI 0.7978845608028654f
#define GELU_TANH_C 0.044715f
#define QUICK_GELU_K 1.702f

static inline float sigmoidf(float x)
{
    return 1.0f / (1.0f + expf(-x));
}

void cpu_unary_forward(float *y, const float *x, int64_t n, enum cpu_unary f)
{
    switch (f) {
    case CPU_SQRT:
        CPU_FOR(n, i, n, {
            y[i] = sqrtf(x[i]);
        });
        break;
    case CPU_SILU:
        CPU_FOR(n, i, n, {
            y[i] = x[i] * sigmoidf(x[i]);
        });
        break;
    case CPU_GELU:
        CPU_FOR(n, i, n, {
            y[i] = 0.5f * x[i] * (1.0f + erff(x[i] * (float)M_SQRT1_2));
        });
        break;
    case CPU_GELU_TANH:
        CPU_FOR(n, i, n, {
            float v = x[i];
            y[i] = 0.5f * v * (1.0f + tanhf(SQRT_2_OVER_PI * (v + GELU_TANH_C * v * v * v)));
        });
        break;
    case CPU_QUICK_GELU:
        CPU_FOR(n, i, n, {
            y[i] = x[i] * sigmoidf(QUICK_GELU_K * x[i]);
        });
        break;
    }
}

void cpu_unary_backward(float *dx, const float *dy, const float *x, const float *y, int64_t n,
                        enum cpu_unary f)
{
    switch (f) {
    case CPU_SQRT:
        CPU_FOR(n, i, n, {
            dx[i] += dy[i] * 0.5f / y[i];
        });
        break;
    case CPU_SILU:
        CPU_FOR(n, i, n, {
            float s = sigmoidf(x[i]);
            dx[i] += dy[i] * s * (1.0f + x[i] * (1.0f - s));
        });
        break;
    case CPU_GELU:
        CPU_FOR(n, i, n, {
            float v = x[i];
            float cdf = 0.5f * (1.0f + erff(v * (float)M_SQRT1_2));
            float pdf = expf(-0.5f * v * v) * 0.3989422804014327f;
            dx[i] += dy[i] * (cdf + v * pdf);
        });
        break;
    case CPU_GELU_TANH:
        CPU_FOR(n, i, n, {
            float v = x[i];
            float u = SQRT_2_OVER_PI * (v + GELU_TANH_C * v * v * v);
            float t = tanhf(u);
            float du = SQRT_2_OVER_PI * (1.0f + 3.0f * GELU_TANH_C * v * v);
            dx[i] += dy[i] * (0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * du);
        });
        break;
    case CPU_QUICK_GELU:
        CPU_FOR(n, i, n, {
            float s = sigmoidf(QUICK_GELU_K * x[i]);
            dx[i] += dy[i] * (s + QUICK_GELU_K * x[i] * s * (1.0f - s));
        });
        break;
    }
}
