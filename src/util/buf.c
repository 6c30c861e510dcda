/*
 * buf.c: growable byte buffers, printf into new strings, zeroed big blocks (buf.h).
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "util/buf.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

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

/* A big block is its own mapping, its start aligned to 2 MiB so that every whole 2 MiB of it
 * can be a huge page: a header (this magic, the mapping's length) and the data 64 bytes in. */
#define ZALLOC_MAGIC 0x6c767a616c6c6f63ull
#define ZALLOC_HEAD 64

void *lv_zalloc(size_t n)
{
    if (n < LV_HUGE_MIN)
        return calloc(1, n ? n : 1);
    size_t page = (size_t)4096, huge = (size_t)2 << 20;
    if (n > SIZE_MAX / 2)
        return NULL;
    size_t len = (n + ZALLOC_HEAD + page - 1) / page * page;
    char *m = mmap(NULL, len + huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return NULL;
    char *base = (char *)(((uintptr_t)m + huge - 1) & ~(uintptr_t)(huge - 1));
    if (base > m)                                   /* the slop on either side goes back */
        munmap(m, (size_t)(base - m));
    munmap(base + len, huge - (size_t)(base - m));  /* base - m < huge: never empty */
#ifdef MADV_HUGEPAGE
    madvise(base, len, MADV_HUGEPAGE);              /* advice only */
#endif
    uint64_t head[2] = { ZALLOC_MAGIC, len };       /* the kernel zeroed the rest */
    memcpy(base, head, sizeof head);
    return base + ZALLOC_HEAD;
}

void lv_zfree(void *p, size_t n)
{
    if (!p)
        return;
    if (n < LV_HUGE_MIN) {
        free(p);
        return;
    }
    char *base = (char *)p - ZALLOC_HEAD;
    uint64_t head[2];
    memcpy(head, base, sizeof head);
    if (head[0] == ZALLOC_MAGIC)
        munmap(base, (size_t)head[1]);
}

void lv_pages_release(const void *p, size_t n)
{
#ifdef MADV_PAGEOUT
    uintptr_t page = 4096, a = ((uintptr_t)p + page - 1) & ~(page - 1),
              b = ((uintptr_t)p + n) & ~(page - 1);
    if (b > a)
        madvise((void *)a, (size_t)(b - a), MADV_PAGEOUT);  /* advice only */
#else
    (void)p;
    (void)n;
#endif
}
