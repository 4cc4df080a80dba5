/* stream.h - GET /api/stream: a subscriber's messages as Server-Sent
 * Events, independent of the HTTP transport.
 *
 * A stream is a held request, not a thread: the transport asks it for
 * bytes whenever the client's socket has room (api_stream_read).  When it
 * has nothing to send, the stream parks a broker waiter and the transport
 * suspends the request until resume(transport) is called.  So a client
 * that does not read is simply not asked: its messages stay queued,
 * counted against the pending limits, expiring, there for a newer stream.
 * Each read takes only the messages whose events fit in the room it is
 * offered (at most STREAM_BATCH_MESSAGES), and the stream keeps none of
 * them afterwards but the rest of an event it began.
 *
 * Each message is one event, "id: SEQ", "event: message", "data: {seq,
 * subject, attempt, data}"; ": keepalive" comments come every
 * stream_keepalive_ms of silence.  For a plain subscription an event
 * handed to the transport is consumed; for an ack subscription the
 * message stays in flight until /api/ack, and a stream opened with a last
 * event id L first sends again the subscriber's in-flight messages with
 * seq > L.  A subscriber has at most one stream: opening another ends the
 * older one.  Messages taken but not yet handed to the transport when a
 * stream ends go back to the queue.
 */
#ifndef GOPHERMQ_STREAM_H
#define GOPHERMQ_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "api.h"

#define STREAM_BATCH_MESSAGES 256

struct api_stream;

/* What a transport asks for the stream's next bytes gets back. */
#define API_STREAM_PARKED 0        /* nothing now: suspend and attach */
#define API_STREAM_END (-1)        /* the stream is over: end the response */

/* Opens a stream of subscriber id of subject.  last_event_id is the
 * Last-Event-ID (header or query) or NULL.  Returns the stream, or NULL
 * with an error reply in reply (400, 404, 409, 500). */
struct api_stream *api_stream_open(struct api_context *context,
                                   const char *subject, size_t subject_length,
                                   const char *id, size_t id_length,
                                   const char *last_event_id, struct api_reply *reply);

/* Writes the stream's next bytes, at most max, to buffer.  Returns how
 * many (> 0), API_STREAM_PARKED or API_STREAM_END.  peer_gone: the client
 * has closed its side; nothing more is taken from the queue for it. */
ssize_t api_stream_read(struct api_stream *stream, char *buffer, size_t max, bool peer_gone);

/* After API_STREAM_PARKED, with the request suspended: resume(transport)
 * is called once, from any thread, when the stream has something to send
 * (or must end).  Returns false when that is so already: the transport
 * then resumes by itself. */
bool api_stream_attach(struct api_stream *stream, void (*resume)(void *transport), void *transport);

/* Ends a stream from outside its request (its client went away, or
 * shutdown): a parked stream is woken to end.  Any thread. */
void api_stream_end(struct api_stream *stream);

/* Ends every open stream (shutdown): their unsent messages stay queued. */
void api_stream_end_all(void);

/* The request is over (ended, or the connection closed): gives back what
 * was taken and not handed to the transport, and frees stream. */
void api_stream_close(struct api_stream *stream);

/* Streams open now, and events sent since start. */
uint64_t api_stream_open_count(void);
uint64_t api_stream_events_sent(void);

#endif
