/* http_metrics.h - the metrics listener: GET /metrics in the Prometheus
 * text format, on its own port and thread so that scraping never competes
 * with API requests for a worker. */
#ifndef GOPHERMQ_HTTP_METRICS_H
#define GOPHERMQ_HTTP_METRICS_H

#include <stddef.h>

#include "auth.h"
#include "metrics.h"

/* Called on the metrics thread for every scrape to read the values owned
 * by other modules. */
typedef void (*http_metrics_collect)(struct metrics_snapshot *snapshot, void *context);

struct http_metrics;

/* Starts serving on listen:port (port 0 = any free port).  With auth
 * (may be NULL), scrapes need a bearer token.  Returns NULL with a reason
 * in error on failure. */
struct http_metrics *http_metrics_start(const char *listen, unsigned port, struct auth_guard *auth,
                                        http_metrics_collect collect, void *context,
                                        char *error, size_t error_size);
unsigned http_metrics_port(const struct http_metrics *metrics);
void http_metrics_stop(struct http_metrics *metrics);

#endif
