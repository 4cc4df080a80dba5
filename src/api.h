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

/* A reply.  body points either to static text (body_static) or to a
 * malloc'ed buffer the caller must free(). */
struct api_reply {
	unsigned status;
	char *body;
	size_t body_length;
	int body_static;
};

/* Handles one request body (body_length bytes, need not be NUL-terminated).
 * Always fills reply; never fails (out of memory gives a 500 reply). */
void api_handle(struct api_context *context, enum api_endpoint endpoint,
                const char *body, size_t body_length, struct api_reply *reply);

/* Fills reply with a static {"message":...} error body. */
void api_reply_error(struct api_reply *reply, unsigned status, const char *message_json);

void api_reply_free(struct api_reply *reply);

#endif
