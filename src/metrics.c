/* metrics.c - lock-free request counters and the Prometheus text exposition.
 *
 * The request families keep the original GopherMQ's names and labels:
 * gophermq_client_request_rate (a counter) and
 * gophermq_request_duration_seconds (a histogram), both labelled by method
 * and code.  Histogram buckets are stored per bucket and made cumulative
 * only when rendering, so an observation is three relaxed atomic adds.
 */
#include "autoconfig.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

/* The status codes the API answers; anything else is counted as "other". */
static const unsigned tracked_codes[] = { 200, 204, 400, 401, 404, 405, 409, 413, 429, 500, 503, 507 };
#define CODE_COUNT (sizeof(tracked_codes) / sizeof(tracked_codes[0]) + 1)

/* Prometheus' default buckets, as the original used. */
static const double bucket_bounds[] = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 };
#define BUCKET_COUNT (sizeof(bucket_bounds) / sizeof(bucket_bounds[0]))

/* Messages per batch publish. */
static const double batch_bounds[] = { 1, 10, 100, 1000, 10000 };
#define BATCH_BUCKET_COUNT (sizeof(batch_bounds) / sizeof(batch_bounds[0]))

static const char *method_names[METRICS_MAX_METHODS];
static size_t method_count;

struct request_series {
	atomic_uint_fast64_t count;
	atomic_uint_fast64_t sum_nanoseconds;
	atomic_uint_fast64_t buckets[BUCKET_COUNT + 1]; /* last: above every bound (+Inf) */
};

static struct request_series request_series[METRICS_MAX_METHODS][CODE_COUNT];
static atomic_uint_fast64_t event_counts[METRICS_EVENT_COUNT];
static atomic_uint_fast64_t batch_buckets[BATCH_BUCKET_COUNT + 1];
static atomic_uint_fast64_t batch_messages;

void metrics_init(const char *const *method_labels, size_t count)
{
	memset(request_series, 0, sizeof(request_series));
	memset(event_counts, 0, sizeof(event_counts));
	memset(batch_buckets, 0, sizeof(batch_buckets));
	atomic_store(&batch_messages, 0);
	method_count = count < METRICS_MAX_METHODS ? count : METRICS_MAX_METHODS;
	for (size_t i = 0; i < method_count; i++)
		method_names[i] = method_labels[i];
}

void metrics_observe_batch(size_t messages)
{
	size_t bucket = 0;

	while (bucket < BATCH_BUCKET_COUNT && (double)messages > batch_bounds[bucket])
		bucket++;
	atomic_fetch_add_explicit(&batch_buckets[bucket], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&batch_messages, messages, memory_order_relaxed);
}

static size_t code_index(unsigned status)
{
	for (size_t i = 0; i < CODE_COUNT - 1; i++)
		if (tracked_codes[i] == status)
			return i;
	return CODE_COUNT - 1;
}

void metrics_observe_request(size_t method, unsigned status, double seconds)
{
	struct request_series *series;
	size_t bucket = 0;

	if (method >= method_count)
		return;
	series = &request_series[method][code_index(status)];
	while (bucket < BUCKET_COUNT && seconds > bucket_bounds[bucket])
		bucket++;
	if (seconds < 0)
		seconds = 0;
	atomic_fetch_add_explicit(&series->count, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&series->sum_nanoseconds, (uint_fast64_t)(seconds * 1e9), memory_order_relaxed);
	atomic_fetch_add_explicit(&series->buckets[bucket], 1, memory_order_relaxed);
}

void metrics_count(enum metrics_event event)
{
	if ((unsigned)event < METRICS_EVENT_COUNT)
		atomic_fetch_add_explicit(&event_counts[event], 1, memory_order_relaxed);
}

/* A growable text buffer; on allocation failure it remembers the failure
 * and ignores further appends. */
struct text {
	char *data;
	size_t length;
	size_t capacity;
	bool failed;
};

__attribute__((format(printf, 2, 3)))
static void text_printf(struct text *text, const char *format, ...)
{
	va_list args;
	int needed;

	if (text->failed)
		return;
	for (;;) {
		size_t room = text->capacity - text->length;

		va_start(args, format);
		needed = vsnprintf(text->data + text->length, room, format, args);
		va_end(args);
		if (needed < 0) {
			text->failed = true;
			return;
		}
		if ((size_t)needed < room) {
			text->length += (size_t)needed;
			return;
		}
		size_t capacity = text->capacity * 2 + (size_t)needed + 1;
		char *data = realloc(text->data, capacity);
		if (data == NULL) {
			text->failed = true;
			return;
		}
		text->data = data;
		text->capacity = capacity;
	}
}

static void render_family(struct text *text, const char *name, const char *type, const char *help)
{
	text_printf(text, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void render_value(struct text *text, const char *name, const char *type,
                         const char *help, uint64_t value)
{
	render_family(text, name, type, help);
	text_printf(text, "%s %llu\n", name, (unsigned long long)value);
}

static void code_label(size_t index, char *label, size_t size)
{
	if (index < CODE_COUNT - 1)
		snprintf(label, size, "%u", tracked_codes[index]);
	else
		snprintf(label, size, "other");
}

static void render_requests(struct text *text)
{
	char code[16];

	render_family(text, "gophermq_client_request_rate", "counter",
	              "API requests answered, by method and HTTP status code.");
	for (size_t m = 0; m < method_count; m++) {
		for (size_t c = 0; c < CODE_COUNT; c++) {
			uint64_t count = atomic_load_explicit(&request_series[m][c].count, memory_order_relaxed);
			if (count == 0)
				continue;
			code_label(c, code, sizeof(code));
			text_printf(text, "gophermq_client_request_rate{method=\"%s\",code=\"%s\"} %llu\n",
			            method_names[m], code, (unsigned long long)count);
		}
	}

	render_family(text, "gophermq_request_duration_seconds", "histogram",
	              "API request latency in seconds, by method and HTTP status code.");
	for (size_t m = 0; m < method_count; m++) {
		for (size_t c = 0; c < CODE_COUNT; c++) {
			struct request_series *series = &request_series[m][c];
			uint64_t cumulative = 0;

			if (atomic_load_explicit(&series->count, memory_order_relaxed) == 0)
				continue;
			code_label(c, code, sizeof(code));
			for (size_t b = 0; b <= BUCKET_COUNT; b++) {
				cumulative += atomic_load_explicit(&series->buckets[b], memory_order_relaxed);
				if (b < BUCKET_COUNT)
					text_printf(text, "gophermq_request_duration_seconds_bucket{method=\"%s\",code=\"%s\",le=\"%g\"} %llu\n",
					            method_names[m], code, bucket_bounds[b], (unsigned long long)cumulative);
				else
					text_printf(text, "gophermq_request_duration_seconds_bucket{method=\"%s\",code=\"%s\",le=\"+Inf\"} %llu\n",
					            method_names[m], code, (unsigned long long)cumulative);
			}
			/* _count is the +Inf bucket, so the two always agree even
			 * while writers race with this read. */
			text_printf(text, "gophermq_request_duration_seconds_sum{method=\"%s\",code=\"%s\"} %.9f\n",
			            method_names[m], code,
			            (double)atomic_load_explicit(&series->sum_nanoseconds, memory_order_relaxed) / 1e9);
			text_printf(text, "gophermq_request_duration_seconds_count{method=\"%s\",code=\"%s\"} %llu\n",
			            method_names[m], code, (unsigned long long)cumulative);
		}
	}
}

static void render_batches(struct text *text)
{
	uint64_t cumulative = 0;

	render_family(text, "gophermq_batch_messages", "histogram",
	              "Messages per accepted batch publish.");
	for (size_t b = 0; b <= BATCH_BUCKET_COUNT; b++) {
		cumulative += atomic_load_explicit(&batch_buckets[b], memory_order_relaxed);
		if (b < BATCH_BUCKET_COUNT)
			text_printf(text, "gophermq_batch_messages_bucket{le=\"%g\"} %llu\n",
			            batch_bounds[b], (unsigned long long)cumulative);
		else
			text_printf(text, "gophermq_batch_messages_bucket{le=\"+Inf\"} %llu\n",
			            (unsigned long long)cumulative);
	}
	text_printf(text, "gophermq_batch_messages_sum %llu\n",
	            (unsigned long long)atomic_load_explicit(&batch_messages, memory_order_relaxed));
	text_printf(text, "gophermq_batch_messages_count %llu\n", (unsigned long long)cumulative);
	render_value(text, "gophermq_batch_publishes_total", "counter",
	             "Batch publishes accepted.", cumulative);
}

static void render_journal(struct text *text, const struct journal_stats *journal, double replay_seconds)
{
	uint64_t cumulative = 0;

	render_value(text, "gophermq_journal_bytes", "gauge",
	             "Bytes of the journal since its last compaction (what a compaction would replace).",
	             journal->bytes);
	render_value(text, "gophermq_journal_segments", "gauge",
	             "Journal segment files.", journal->segments);
	render_family(text, "gophermq_journal_fsync_seconds", "histogram",
	              "Time each sync of the journal took (fdatasync of the segments written).");
	for (size_t b = 0; b < JOURNAL_SYNC_BUCKETS; b++) {
		cumulative += journal->sync_buckets[b];
		text_printf(text, "gophermq_journal_fsync_seconds_bucket{le=\"%g\"} %llu\n",
		            journal_sync_bounds[b], (unsigned long long)cumulative);
	}
	text_printf(text, "gophermq_journal_fsync_seconds_bucket{le=\"+Inf\"} %llu\n",
	            (unsigned long long)journal->syncs);
	text_printf(text, "gophermq_journal_fsync_seconds_sum %.9f\n", (double)journal->sync_nanoseconds / 1e9);
	text_printf(text, "gophermq_journal_fsync_seconds_count %llu\n", (unsigned long long)journal->syncs);
	render_value(text, "gophermq_journal_write_errors_total", "counter",
	             "Journal writes that failed (no room for a segment, I/O errors); changes refused with 507.",
	             journal->write_errors);
	render_value(text, "gophermq_journal_failed", "gauge",
	             "1 while the journal refuses changes after a write error, else 0.", journal->failed ? 1 : 0);
	render_value(text, "gophermq_journal_compactions_total", "counter",
	             "Compactions of the journal completed.", journal->compactions);
	render_family(text, "gophermq_journal_last_compaction_timestamp_seconds", "gauge",
	              "When the last compaction completed, since the Unix epoch; 0 = none since start.");
	text_printf(text, "gophermq_journal_last_compaction_timestamp_seconds %llu\n",
	            (unsigned long long)journal->last_compaction);
	render_family(text, "gophermq_journal_replay_seconds", "gauge",
	              "Time the start-up replay of the journal took.");
	text_printf(text, "gophermq_journal_replay_seconds %.6f\n", replay_seconds);
}

static uint64_t event_value(enum metrics_event event)
{
	return atomic_load_explicit(&event_counts[event], memory_order_relaxed);
}

size_t metrics_render(const struct metrics_snapshot *snapshot, char **result)
{
	const struct broker_stats *broker = &snapshot->broker;
	struct text text = { .data = NULL, .length = 0, .capacity = 0, .failed = false };

	text.capacity = 8192;
	text.data = malloc(text.capacity);
	if (text.data == NULL) {
		*result = NULL;
		return 0;
	}
	text.data[0] = '\0';

	render_requests(&text);

	render_value(&text, "gophermq_messages_published_total", "counter",
	             "Messages accepted by publish (one per publish, whatever the fan-out).", broker->published);
	render_value(&text, "gophermq_messages_delivered_total", "counter",
	             "Message copies handed to subscribers by fetch.", broker->delivered);
	render_value(&text, "gophermq_pending_messages", "gauge",
	             "Message copies waiting to be fetched, all subscribers together.", broker->pending);
	render_value(&text, "gophermq_pending_bytes", "gauge",
	             "Payload bytes of the message copies waiting to be fetched.", broker->pending_bytes);
	render_value(&text, "gophermq_subscribers", "gauge",
	             "Current subscribers.", broker->subscribers);
	render_value(&text, "gophermq_subjects", "gauge",
	             "Subjects with at least one subscriber.", broker->subjects);
	render_value(&text, "gophermq_overflows_total", "counter",
	             "Publishes refused because max_pending or max_pending_bytes would be exceeded.", broker->overflows);
	render_value(&text, "gophermq_subscribers_expired_total", "counter",
	             "Subscribers removed after subscriber_ttl seconds without a fetch.", broker->expired_subscribers);
	render_value(&text, "gophermq_expired_messages_total", "counter",
	             "Pending message copies freed with expired subscribers.", broker->expired_messages);
	render_value(&text, "gophermq_inflight_messages", "gauge",
	             "Message copies fetched by ack subscriptions and not yet acknowledged.", broker->in_flight);
	render_value(&text, "gophermq_acked_total", "counter",
	             "In-flight message copies acknowledged.", broker->acked);
	render_value(&text, "gophermq_nacked_total", "counter",
	             "In-flight message copies given back with nack.", broker->nacked);
	render_value(&text, "gophermq_redelivered_total", "counter",
	             "Message copies handed out again (attempt 2 and later).", broker->redelivered);
	render_value(&text, "gophermq_dead_lettered_total", "counter",
	             "Messages published to a dead_letter subject after max_deliver attempts.",
	             broker->dead_lettered);
	render_value(&text, "gophermq_max_deliver_dropped_total", "counter",
	             "Messages dropped after max_deliver attempts (no dead_letter, or it had no subscriber).",
	             broker->max_deliver_dropped);
	render_value(&text, "gophermq_parked_fetches", "gauge",
	             "Fetches held waiting for a message (wait_ms).", broker->parked);
	render_value(&text, "gophermq_groups", "gauge",
	             "Consumer groups.", broker->groups);
	render_value(&text, "gophermq_messages_ttl_expired_total", "counter",
	             "Message copies removed unfetched because their message's ttl passed.",
	             broker->expired_copies);
	render_value(&text, "gophermq_wildcard_subscriptions", "gauge",
	             "Subscribed subjects with wildcards (* or >).", broker->wildcard_subjects);
	render_value(&text, "gophermq_streams", "gauge",
	             "Open event streams (/api/stream).", snapshot->streams);
	render_value(&text, "gophermq_stream_events_total", "counter",
	             "Message events sent on streams.", snapshot->stream_events);
	render_batches(&text);
	render_value(&text, "gophermq_async_queue_depth", "gauge",
	             "Async publishes waiting for a worker.", snapshot->async_queue_depth);
	render_value(&text, "gophermq_async_workers", "gauge",
	             "Async publish worker threads.", snapshot->async_workers);
	render_value(&text, "gophermq_async_failures_total", "counter",
	             "Async publishes accepted but then not stored (no subscriber, overflow, out of memory).",
	             event_value(METRICS_ASYNC_FAILED));
	render_value(&text, "gophermq_async_rejected_total", "counter",
	             "Async publishes refused with 503 because the queue was full.",
	             event_value(METRICS_ASYNC_REJECTED));
	render_value(&text, "gophermq_unauthorized_requests_total", "counter",
	             "Requests refused with 401.", event_value(METRICS_UNAUTHORIZED));
	render_value(&text, "gophermq_connections", "gauge",
	             "Open API connections.", snapshot->connections);
	render_value(&text, "gophermq_connections_refused_total", "counter",
	             "API connections refused at max_connections.", event_value(METRICS_CONNECTIONS_REFUSED));
	render_value(&text, "gophermq_config_reloads_total", "counter",
	             "Configuration reloads applied.", event_value(METRICS_RELOADS));
	render_value(&text, "gophermq_config_reload_failures_total", "counter",
	             "Configuration reloads refused because the new file was invalid.",
	             event_value(METRICS_RELOAD_FAILURES));

	if (snapshot->persistence)
		render_journal(&text, &snapshot->journal, snapshot->replay_seconds);

	render_family(&text, "gophermq_start_time_seconds", "gauge", "Start time of the daemon since the Unix epoch, in seconds.");
	text_printf(&text, "gophermq_start_time_seconds %.3f\n", snapshot->start_time_seconds);
	render_family(&text, "gophermq_build_info", "gauge", "Version of gophermqd; always 1.");
	text_printf(&text, "gophermq_build_info{version=\"%s\"} 1\n", PACKAGE_VERSION);

	if (text.failed) {
		free(text.data);
		*result = NULL;
		return 0;
	}
	*result = text.data;
	return text.length;
}
