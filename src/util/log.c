/*
 * log.c: lavinia's log lines ("lavinia: ..." on standard error unless a sink is installed).
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "util/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static lv_log_sink log_sink;
static void *log_ud;
static int log_level = -1;

static int level_from_env(void)
{
    static const char *names[] = { "error", "warn", "info", "debug" };
    const char *e = getenv("LAVINIA_LOG");
    if (e)
        for (int i = 0; i < 4; i++)
            if (strcmp(e, names[i]) == 0)
                return i;
    return LV_LOG_WARN;
}

void lv_log_set_level(enum lv_log_level level)
{
    log_level = (int)level;
}

void lv_log_set_sink(lv_log_sink sink, void *ud)
{
    pthread_mutex_lock(&log_lock);
    log_sink = sink;
    log_ud = ud;
    pthread_mutex_unlock(&log_lock);
}

void lv_log(enum lv_log_level level, const char *fmt, ...)
{
    if (log_level < 0)
        log_level = level_from_env();
    if ((int)level > log_level)
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&log_lock);
    if (log_sink)
        log_sink(level, line, log_ud);
    else
        fprintf(stderr, "lavinia: %s\n", line);
    pthread_mutex_unlock(&log_lock);
}
