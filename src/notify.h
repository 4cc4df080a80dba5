/* notify.h - service manager notifications (sd_notify).  Without libsystemd,
 * or when not started by systemd, every call does nothing. */
#ifndef GOPHERMQ_NOTIFY_H
#define GOPHERMQ_NOTIFY_H

#include <stdint.h>

void notify_ready(void);
void notify_reloading(void);
void notify_stopping(void);

/* STATUS= line shown by systemctl status.  printf-style. */
void notify_status(const char *format, ...) __attribute__((format(printf, 1, 2)));

/* Returns the watchdog interval in microseconds requested by the service
 * manager (WatchdogSec=), or 0 when none was requested. */
uint64_t notify_watchdog_usec(void);
void notify_watchdog_ping(void);

#endif
