/*
 * buf.h (internal): a growable byte buffer that keeps a NUL after its bytes, printf into a new
 * string, and zeroed allocations for big arrays.
 */
#ifndef LV_UTIL_BUF_H
#define LV_UTIL_BUF_H

#include <stddef.h>

struct lv_buf {
    char *p;                      /* NULL until the first put */
    size_t n, cap;
};

/* Appends n bytes (s may hold NULs); LV_ENOMEM with the message set on failure. */
int lv_buf_put(struct lv_buf *b, const void *s, size_t n);
void lv_buf_free(struct lv_buf *b);
/* A malloc'd string, or NULL when out of memory. */
char *lv_strdupf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* n zeroed bytes, freed by lv_zfree with the same n; NULL when out of memory. From
 * LV_HUGE_MIN bytes up the block is its own mapping, started on a 2 MiB boundary and advised
 * for transparent huge pages (a streamed weight then crosses no 4 KiB page boundary, where the
 * hardware prefetchers stop); pages are committed when first touched. */
#define LV_HUGE_MIN ((size_t)2 << 20)
void *lv_zalloc(size_t n);
void lv_zfree(void *p, size_t n);
/* Advice that the whole pages inside [p, p + n) will not be read again soon (a mapped file's
 * bytes that were copied out): the kernel may reclaim them; their contents stay. */
void lv_pages_release(const void *p, size_t n);

#endif /* LV_UTIL_BUF_H */
