/* notify.c - sd_notify behind a small interface; compiles to no-ops without
 * libsystemd. */
#include "autoconfig.h"

#include <stdarg.h>
#include <stdio.h>

#include "notify.h"

#ifdef HAVE_SYSTEMD
#include <systemd/sd-daemon.h>

#include <time.h>

void notify_ready(void)
{
	sd_notify(0, "READY=1");
}

/* RELOADING=1 carries MONOTONIC_USEC= so that Type=notify-reload managers
 * can match the reload; older managers ignore it. */
void notify_reloading(void)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu",
	           (unsigned long long)now.tv_sec * 1000000ULL + (unsigned long long)now.tv_nsec / 1000ULL);
}

void notify_stopping(void)
{
	sd_notify(0, "STOPPING=1");
}

void notify_status(const char *format, ...)
{
	char line[256];
	va_list args;

	va_start(args, format);
	vsnprintf(line, sizeof(line), format, args);
	va_end(args);
	sd_notifyf(0, "STATUS=%s", line);
}

uint64_t notify_watchdog_usec(void)
{
	uint64_t usec = 0;

	if (sd_watchdog_enabled(0, &usec) <= 0)
		return 0;
	return usec;
}

void notify_watchdog_ping(void)
{
	sd_notify(0, "WATCHDOG=1");
}

#else

void notify_ready(void) {}
void notify_reloading(void) {}
void notify_stopping(void) {}
void notify_status(const char *format, ...) { (void)format; }
uint64_t notify_watchdog_usec(void) { return 0; }
void notify_watchdog_ping(void) {}

#endif
