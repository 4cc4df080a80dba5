/* log.h - logging to syslog (ident "gophermqd", facility daemon) and, in the
 * foreground, to stderr.  Messages below the current level are dropped; the
 * level can be changed at any time from any thread. */
#ifndef GOPHERMQ_LOG_H
#define GOPHERMQ_LOG_H

#include <stdbool.h>

enum log_level {
	LOG_LEVEL_ERROR = 0,
	LOG_LEVEL_WARNING,
	LOG_LEVEL_NOTICE,
	LOG_LEVEL_INFO,
	LOG_LEVEL_DEBUG,
};

/* Opens syslog.  With to_stderr, messages are also written to stderr. */
void log_open(bool to_stderr);
void log_close(void);

void log_set_level(enum log_level level);
bool log_enabled(enum log_level level);

/* Parses "error", "warning", "notice", "info" or "debug".  Returns 0 and
 * sets *level, or -1 for anything else. */
int log_level_parse(const char *name, enum log_level *level);

void log_message(enum log_level level, const char *format, ...)
	__attribute__((format(printf, 2, 3)));

#define log_error(...)   log_message(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warning(...) log_message(LOG_LEVEL_WARNING, __VA_ARGS__)
#define log_notice(...)  log_message(LOG_LEVEL_NOTICE, __VA_ARGS__)
#define log_info(...)    log_message(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...)   do { if (log_enabled(LOG_LEVEL_DEBUG)) log_message(LOG_LEVEL_DEBUG, __VA_ARGS__); } while (0)

#endif
