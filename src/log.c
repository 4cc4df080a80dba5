/* log.c - syslog and stderr logging with a run-time level. */
#include "autoconfig.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>

#include "log.h"

static atomic_int current_level = LOG_LEVEL_INFO;
static bool log_to_stderr;
static bool syslog_open;

static const char *const level_names[] = {
	[LOG_LEVEL_ERROR] = "error",
	[LOG_LEVEL_WARNING] = "warning",
	[LOG_LEVEL_NOTICE] = "notice",
	[LOG_LEVEL_INFO] = "info",
	[LOG_LEVEL_DEBUG] = "debug",
};

static const int syslog_priorities[] = {
	[LOG_LEVEL_ERROR] = LOG_ERR,
	[LOG_LEVEL_WARNING] = LOG_WARNING,
	[LOG_LEVEL_NOTICE] = LOG_NOTICE,
	[LOG_LEVEL_INFO] = LOG_INFO,
	[LOG_LEVEL_DEBUG] = LOG_DEBUG,
};

void log_open(bool to_stderr)
{
	log_to_stderr = to_stderr;
	openlog("gophermqd", LOG_PID | LOG_NDELAY, LOG_DAEMON);
	syslog_open = true;
}

void log_close(void)
{
	if (syslog_open)
		closelog();
	syslog_open = false;
}

void log_set_level(enum log_level level)
{
	atomic_store_explicit(&current_level, (int)level, memory_order_relaxed);
}

bool log_enabled(enum log_level level)
{
	return (int)level <= atomic_load_explicit(&current_level, memory_order_relaxed);
}

int log_level_parse(const char *name, enum log_level *level)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (strcmp(name, level_names[i]) == 0) {
			*level = (enum log_level)i;
			return 0;
		}
	}
	return -1;
}

void log_message(enum log_level level, const char *format, ...)
{
	char line[1024];
	va_list args;

	if (!log_enabled(level))
		return;
	va_start(args, format);
	vsnprintf(line, sizeof(line), format, args);
	va_end(args);

	if (syslog_open)
		syslog(syslog_priorities[level], "%s", line);
	if (log_to_stderr || !syslog_open)
		fprintf(stderr, "gophermqd: %s: %s\n", level_names[level], line);
}
