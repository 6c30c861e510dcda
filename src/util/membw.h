/*
 * membw.h (internal): the machine's memory-read bandwidth, measured.
 *
 * A vectorised float sum over a buffer much larger than the caches, split over threads,
 * best of several passes: what a memory-bound decode step could read at most. Benchmarks
 * report their bytes/s as a share of it, measured in the same run.
 */
#ifndef LV_UTIL_MEMBW_H
#define LV_UTIL_MEMBW_H

#include <stddef.h>

/* Bytes per second reading `bytes` of floats with `threads` threads, best of `reps`; -1 with
 * the message set when the buffer cannot be allocated. */
double lv_mem_read_bandwidth(size_t bytes, int threads, int reps);

#endif /* LV_UTIL_MEMBW_H */
