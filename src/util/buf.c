/*
 * buf.c: growable byte buffers and printf into new strings (buf.h).
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "util/buf.h"

#include <stdarg.h>
#include <stdint.h>
#include <sys/mman.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lavinia/error.h"

int lv_buf_put(struct lv_buf *b, const void *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            return lv_error_status(LV_ENOMEM, "out of memory");
        b->p = p;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return LV_OK;
}

void lv_buf_free(struct lv_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
}

char *lv_strdupf(const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;
    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    return s;
}

void *lv_zalloc(size_t n)
{
    void *p = calloc(1, n ? n : 1);
#ifdef MADV_HUGEPAGE
    /* Advice only, on the 2 MiB-aligned interior of the block (calloc's memory is zeroed by
     * the kernel on first touch, so nothing is committed before use); the ragged ends keep
     * 4 KiB pages. */
    if (p && n >= LV_HUGE_MIN) {
        uintptr_t huge = (uintptr_t)2 << 20, lo = ((uintptr_t)p + huge - 1) & ~(huge - 1),
                  hi = ((uintptr_t)p + n) & ~(huge - 1);
        if (hi > lo)
            madvise((void *)lo, hi - lo, MADV_HUGEPAGE);
    }
#endif
    return p;
}
