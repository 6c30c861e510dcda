/*
 * clock.h (internal): seconds on the monotonic clock, for timings.
 */
#ifndef LV_UTIL_CLOCK_H
#define LV_UTIL_CLOCK_H

#include <time.h>

static inline double lv_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

#endif /* LV_UTIL_CLOCK_H */
