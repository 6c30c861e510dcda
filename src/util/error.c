/*
 * error.c: the thread-local error message behind lv_errmsg().
 *
 * The code nearest the bytes writes the message (file, object, problem); callers return the
 * status and leave the message alone. Messages longer than the buffer are cut, never overrun.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "lavinia/error.h"

#include <stdarg.h>
#include <stdio.h>

static _Thread_local char errbuf[1024];

static void set_message(const char *fmt, va_list ap)
{
    vsnprintf(errbuf, sizeof errbuf, fmt, ap);
}

int lv_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_message(fmt, ap);
    va_end(ap);
    return LV_ERR;
}

int lv_error_status(int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_message(fmt, ap);
    va_end(ap);
    return status;
}

const char *lv_errmsg(void)
{
    return errbuf;
}

void lv_error_clear(void)
{
    errbuf[0] = '\0';
}
