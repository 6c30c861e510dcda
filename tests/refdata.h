/*
 * refdata.h: reference files written by tests/reference/gen_*.py (PyTorch, float64), read as
 * hostile input: every read bounds-checked, sizes capped, names unique, values finite.
 *
 * File layout (integers uint32 little-endian, data float64 little-endian, no padding):
 *
 *     offset 0   magic    8 bytes  "LVREF\0\0\0"
 *            8   version  uint32   1
 *           12   count    uint32   tensors that follow
 *     per tensor, back to back:
 *                name_len uint32   1..63
 *                name     name_len bytes, printable ASCII, no NUL
 *                ndim     uint32   0..4
 *                shape    ndim x uint32, each >= 1
 *                data     prod(shape) x float64, row-major
 *     the file ends right after the last tensor.
 */
#ifndef LV_TESTS_REFDATA_H
#define LV_TESTS_REFDATA_H

#include <stdbool.h>
#include <stdint.h>

#include "lavinia/tensor.h"

#define REF_MAX_COUNT 256
#define REF_MAX_NAME  63

/* One tensor of a reference file. */
struct ref_tensor {
    char name[REF_MAX_NAME + 1];
    int ndim;
    int64_t shape[LV_MAX_DIMS];
    int64_t n;                  /* elements (1 for ndim 0) */
    const double *data;         /* (n), points into ref_file.values */
};

/* A parsed reference file; the values of all tensors live in one block. */
struct ref_file {
    char path[4096];
    int count;
    struct ref_tensor t[REF_MAX_COUNT];
    double *values;
    const char *hint;           /* the command that regenerates the file */
};

/* Print "PATH: problem" and how to regenerate the file; record a failed check. */
bool ref_fail(const struct ref_file *rf, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Load tests/reference/NAME.bin under $LV_TOP_SRCDIR (or "."); hint: the command that
 * regenerates it. */
bool ref_load(struct ref_file *rf, const char *name, const char *hint);
void ref_done(struct ref_file *rf);
/* The tensor NAME with exactly this shape, or NULL after a failed check saying why. */
const struct ref_tensor *ref_get(const struct ref_file *rf, const char *name, int ndim,
                                 const int64_t *shape);

#endif /* LV_TESTS_REFDATA_H */
