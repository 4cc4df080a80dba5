/* metrics.h - request and broker metrics in the Prometheus text format.
 *
 * Counters are lock-free (relaxed atomics), so recording costs a few atomic
 * adds on the request path.  Rendering reads them without stopping writers.
 */
#ifndef GOPHERMQ_METRICS_H
#define GOPHERMQ_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "broker.h"
#include "journal.h"

/* Most values of the "method" label of the request families; the labels
 * themselves come from the API's endpoint table (metrics_init). */
#define METRICS_MAX_METHODS 16

/* Counted events besides requests. */
enum metrics_event {
	METRICS_ASYNC_FAILED = 0,    /* an async publish failed after it was accepted */
	METRICS_ASYNC_REJECTED,      /* async queue full: 503 */
	METRICS_UNAUTHORIZED,        /* requests refused with 401 */
	METRICS_CONNECTIONS_REFUSED, /* connections refused at the limit */
	METRICS_RELOADS,             /* configuration reloads applied */
	METRICS_RELOAD_FAILURES,     /* reloads refused (bad config) */
	METRICS_EVENT_COUNT,
};

/* Values read at render time from other modules. */
struct metrics_snapshot {
	struct broker_stats broker;
	uint64_t async_queue_depth;
	uint64_t async_workers;
	uint64_t connections;
	uint64_t streams;            /* open /api/stream responses */
	uint64_t stream_events;      /* events they have sent */
	double start_time_seconds;   /* Unix time the daemon started */
	bool persistence;            /* the journal families below are rendered */
	struct journal_stats journal;
	double replay_seconds;
};

/* Resets every counter; method_labels[i] (static strings, at most
 * METRICS_MAX_METHODS) is the label of method i. */
void metrics_init(const char *const *method_labels, size_t method_count);

/* Records one API request of method (an index into the labels).  status
 * is the HTTP status answered. */
void metrics_observe_request(size_t method, unsigned status, double seconds);

/* Records one accepted batch publish of messages messages. */
void metrics_observe_batch(size_t messages);

void metrics_count(enum metrics_event event);

/* Renders every family into a malloc'ed NUL-terminated string stored in
 * *text; returns its length, or 0 with *text NULL when out of memory. */
size_t metrics_render(const struct metrics_snapshot *snapshot, char **text);

#endif
