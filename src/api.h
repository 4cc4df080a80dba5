/* api.h - the API's request semantics, independent of the HTTP transport.
 *
 * api_handle() takes an endpoint and a request body, validates and parses
 * it (JSON), calls the broker and produces the status and JSON body to send
 * back.  The HTTP layer only routes, reads bodies and writes replies, so
 * tests and fuzzers can drive the exact code path of a request body here.
 */
#ifndef GOPHERMQ_API_H
#define GOPHERMQ_API_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "broker.h"
#include "pool.h"

enum api_endpoint {
	API_PUBLISH = 0,
	API_PUBLISH_ASYNC,
	API_SUBSCRIBE,
	API_FETCH,
};

/* What api_handle() needs: shared by all HTTP threads.  The limits may be
 * changed by a reload at any time, hence atomics; the pointers are fixed
 * while serving. */
struct api_context {
	struct broker *broker;
	struct pool *pool;                     /* NULL: async publishes get 503 */
	_Atomic uint64_t max_message_size;     /* bytes of decoded data; 0 = none */
	_Atomic uint64_t max_subject_length;   /* same value as the broker's limit */
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
	API_TEXT_COUNT,
};

/* A reply.  With text API_TEXT_NONE, body is malloc'ed and the caller must
 * free it (api_reply_free); otherwise it is static text. */
struct api_reply {
	unsigned status;
	char *body;
	size_t body_length;
	enum api_reply_text text;
};

/* The body of a fixed reply and its length. */
const char *api_reply_text(enum api_reply_text text, size_t *length);

/* Handles one request body (body_length bytes, need not be NUL-terminated).
 * Always fills reply; never fails (out of memory gives a 500 reply). */
void api_handle(struct api_context *context, enum api_endpoint endpoint,
                const char *body, size_t body_length, struct api_reply *reply);

/* Fills reply with a fixed body. */
void api_reply_static(struct api_reply *reply, unsigned status, enum api_reply_text text);

void api_reply_free(struct api_reply *reply);

#endif
