/* sse.h - an incremental parser of a text/event-stream body (the
 * Server-Sent Events format of the HTML standard): bytes go in as they
 * arrive, whole events come out.
 */
#ifndef GOPHERMQ_CLIENT_SSE_H
#define GOPHERMQ_CLIENT_SSE_H

#include <stdbool.h>
#include <stddef.h>

/* One dispatched event.  Strings are NUL-terminated and valid only during
 * the callback; data lines are joined with "\n". */
struct sse_event {
	const char *type;   /* "message" when the event named none */
	const char *data;
	size_t data_length;
	const char *last_id; /* the stream's last event id so far ("" if none) */
};

/* Receives each event; returns false to stop parsing (sse_feed then
 * returns false too). */
typedef bool sse_event_fn(const struct sse_event *event, void *context);

struct sse_parser {
	char *line;          /* the line being received */
	size_t line_length, line_size;
	char *data;          /* data of the event being received */
	size_t data_length, data_size;
	bool has_data;
	char *type;
	char last_id[64];
	bool skip_lf;        /* the previous line ended with CR: a LF next is part of it */
	bool failed;         /* out of memory */
	sse_event_fn *on_event;
	void *context;
};

void sse_init(struct sse_parser *parser, sse_event_fn *on_event, void *context);
void sse_free(struct sse_parser *parser);

/* Forgets the event being received, for the body of a new connection;
 * the last event id stays (it is what a reconnection resumes from). */
void sse_restart(struct sse_parser *parser);

/* Parses the next bytes of the body; false when on_event stopped it or
 * memory ran out (parser->failed). */
bool sse_feed(struct sse_parser *parser, const char *bytes, size_t length);

#endif
