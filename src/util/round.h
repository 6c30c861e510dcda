/*
 * round.h (internal): C's roundf (halves away from zero) without the libm call, for the
 * quantisers that round every value (ggml's quantize_row_q8_0_ref uses roundf). Baseline
 * x86-64 has no rounding instruction, so roundf is a call of a few nanoseconds per value;
 * this is a truncating conversion and two compares, exact for the same inputs.
 */
#ifndef LV_UTIL_ROUND_H
#define LV_UTIL_ROUND_H

#include <math.h>
#include <stdint.h>

/* roundf(v), up to the sign of a zero result: |v| < 2^23 is truncated to i (v - i is then
 * exact) and stepped away from zero when the dropped part is at least a half; larger values
 * are whole already, and NaN stays NaN. */
static inline float lv_round_half_away(float v)
{
    if (!(fabsf(v) < 8388608.0f))
        return v;
    int32_t i = (int32_t)v;
    float r = v - (float)i;
    i += (r >= 0.5f) - (r <= -0.5f);           /* no branch: the way it goes is the data's */
    return (float)i;
}

#endif /* LV_UTIL_ROUND_H */
