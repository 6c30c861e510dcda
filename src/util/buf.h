/*
 * buf.h (internal): a growable byte buffer that keeps a NUL after its bytes, and printf into
 * a new string.
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

#endif /* LV_UTIL_BUF_H */
