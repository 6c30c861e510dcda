/*
 * error.h: status codes and the thread-local error message.
 *
 * Library functions return LV_OK or a negative status and leave a message that names the
 * file, the object and the problem; callers pass the status up without rewriting it:
 *
 *     if (lv_safetensors_open(&st, path) != LV_OK)
 *         fprintf(stderr, "lavinia: %s\n", lv_errmsg());
 *
 * Functions that return a pointer return NULL on failure with the same message set.
 */
#ifndef LV_ERROR_H
#define LV_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

enum lv_status {
    LV_OK      = 0,
    LV_ERR     = -1,   /* bad input or a failed check; the message says which */
    LV_ENOMEM  = -2,   /* an allocation failed */
    LV_EIO     = -3,   /* a read or write failed */
    LV_ENOTSUP = -4,   /* the backend or build lacks this */
};

/* Set the thread-local message (printf format) and return LV_ERR. */
int lv_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Same, with an explicit status. */
int lv_error_status(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The last message set on this thread ("" if none). */
const char *lv_errmsg(void);
void lv_error_clear(void);

#ifdef __cplusplus
}
#endif
#endif /* LV_ERROR_H */
