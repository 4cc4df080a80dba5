/* api.h - the API's request semantics, independent of the HTTP transport.
 *
 * api_endpoints[] is the one table of the API: each row names a path, the
 * "method" label of its metrics, how large its body may be, and the handler
 * that turns a request body into a reply.  The HTTP layer routes by it and
 * the metrics take their labels from it, so a new endpoint is one row and
 * one handler.
 *
 * api_handle() validates and parses a body (JSON), calls the broker and
 * produces the status and JSON body to send back, or a hold: a fetch
 * parked until a message arrives (see struct api_hold).  The HTTP layer only
 * routes, reads bodies and writes replies, so tests and fuzzers can drive
 * the exact code path of a request body here.
 */
#ifndef GOPHERMQ_API_H
#define GOPHERMQ_API_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "broker.h"
#include "pool.h"

/* What api_handle() needs: shared by all HTTP threads.  The limits may be
 * changed by a reload at any time, hence atomics; the pointers are fixed
 * while serving. */
struct journal;

struct api_context {
	struct broker *broker;
	struct journal *journal;               /* NULL: persistence = none */
	struct pool *pool;                     /* NULL: async publishes get 503 */
	_Atomic uint64_t max_message_size;     /* bytes of decoded data; 0 = none */
	_Atomic uint64_t max_subject_length;   /* same value as the broker's limit */
	_Atomic uint64_t fetch_max_wait_ms;    /* longest wait_ms a fetch gets */
	_Atomic uint64_t max_batch_messages;   /* messages per batch publish */
	_Atomic uint64_t max_batch_bytes;      /* body of a batch publish */
	_Atomic uint64_t stream_keepalive_ms;  /* silence before a stream's keepalive comment */
};

/* The fixed reply bodies, so that the transport can prepare each once. */
enum api_reply_text {
	API_TEXT_NONE = -1,          /* a body built for this request */
	API_TEXT_OK = 0,
	API_TEXT_BODY_INVALID,
	API_TEXT_INVALID_SUBJECT,
	API_TEXT_NO_SUBSCRIBER,
	API_TEXT_OVERFLOW,
	API_TEXT_BAD_ID,
	API_TEXT_TOO_LARGE,
	API_TEXT_QUEUE_FULL,
	API_TEXT_SERVER_ERROR,
	API_TEXT_BATCH_TOO_LARGE,
	API_TEXT_GROUP_MISMATCH,
	API_TEXT_NOT_ACK,
	API_TEXT_INVALID_GROUP,
	API_TEXT_INVALID_ACK,
	API_TEXT_INVALID_ACK_WAIT,
	API_TEXT_INVALID_MAX_DELIVER,
	API_TEXT_INVALID_DEAD_LETTER,
	API_TEXT_INVALID_MAX,
	API_TEXT_INVALID_MAX_BYTES,
	API_TEXT_INVALID_WAIT,
	API_TEXT_INVALID_META,
	API_TEXT_INVALID_PEEK,
	API_TEXT_INVALID_SEQS,
	API_TEXT_INVALID_DELAY,
	API_TEXT_INVALID_MESSAGES,
	API_TEXT_INVALID_TTL,
	API_TEXT_INSUFFICIENT_STORAGE,
	API_TEXT_COUNT,
};

struct api_hold;

/* A reply.  With text API_TEXT_NONE, body is malloc'ed and the caller must
 * free it (api_reply_free); otherwise it is static text.  When hold is set
 * there is no reply yet (status 0): see api_hold_attach(). */
struct api_reply {
	unsigned status;
	char *body;
	size_t body_length;
	enum api_reply_text text;
	struct api_hold *hold;
};

struct request;

/* Which limit bounds a body: max_message_size plus room for the JSON
 * around it, or max_batch_bytes. */
enum api_body_kind {
	API_BODY_MESSAGE,
	API_BODY_BATCH,
	API_BODY_NONE,               /* GET /api/stream */
};

struct api_endpoint {
	const char *path;
	const char *label;           /* the metrics' method label */
	enum api_body_kind body;
	/* POST: turns the body into a reply.  NULL: GET /api/stream, whose
	 * query names the subscriber (stream.h). */
	void (*handle)(struct api_context *context, const struct request *request,
	               struct api_reply *reply);
};

extern const struct api_endpoint api_endpoints[];
extern const size_t api_endpoint_count;

/* The row for path (NUL-terminated), or NULL. */
const struct api_endpoint *api_endpoint_find(const char *path);

/* The body of a fixed reply and its length. */
const char *api_reply_text(enum api_reply_text text, size_t *length);

/* Handles one request body (body_length bytes, need not be NUL-terminated).
 * Always fills reply; never fails (out of memory gives a 500 reply). */
void api_handle(struct api_context *context, const struct api_endpoint *endpoint,
                const char *body, size_t body_length, struct api_reply *reply);

/* A held fetch.  The transport suspends the request, then attaches resume
 * and its own pointer: resume(transport) is called once, from any thread,
 * when the answer is ready.  Returns false when the answer was ready
 * before (the transport then resumes by itself).  Either way it later
 * calls api_hold_reply() from the request's thread. */
bool api_hold_attach(struct api_hold *hold, void (*resume)(void *transport), void *transport);

/* Ends a held fetch whose client went away, taking nothing: returns true
 * when it was still held, and the transport must then resume the request
 * itself (resume() will not be called); false when it was answered
 * already.  hold must still be alive: not yet passed to api_hold_reply(). */
bool api_hold_cancel(struct api_context *context, struct api_hold *hold);

/* Drops a hold whose request ended before its answer could be sent (the
 * client went away after it was woken): a fetch's messages go back to
 * the queue, as a reply that could not be sent.  Frees hold. */
void api_hold_drop(struct api_context *context, struct api_hold *hold);

/* Fills reply with the held fetch's answer and frees hold. */
void api_hold_reply(struct api_context *context, struct api_hold *hold, struct api_reply *reply);

/* Fills reply with what a broker status means (BROKER_OK: "ok"). */
void api_reply_status(struct api_reply *reply, enum broker_status status);

/* Fills reply with a fixed body. */
void api_reply_static(struct api_reply *reply, unsigned status, enum api_reply_text text);

void api_reply_free(struct api_reply *reply);

#endif
