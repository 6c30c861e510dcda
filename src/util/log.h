/*
 * log.h (internal): one-line messages to standard error, filtered by level.
 * LAVINIA_LOG=error|warn|info|debug sets the level (default warn). Front ends that own the
 * terminal (the TUI) install a sink instead.
 */
#ifndef LV_LOG_H
#define LV_LOG_H

enum lv_log_level { LV_LOG_ERROR, LV_LOG_WARN, LV_LOG_INFO, LV_LOG_DEBUG };

typedef void (*lv_log_sink)(enum lv_log_level level, const char *line, void *ud);

void lv_log(enum lv_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Replace the sink (NULL restores standard error). */
void lv_log_set_sink(lv_log_sink sink, void *ud);
void lv_log_set_level(enum lv_log_level level);

#endif /* LV_LOG_H */
