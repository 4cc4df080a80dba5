/* http.h - the client's one way to talk to a broker: libcurl requests with
 * the user's URL, token, CA file and timeout, and the mapping of what comes
 * back onto gophermq(1)'s exit codes and one-line error messages.
 */
#ifndef GOPHERMQ_CLIENT_HTTP_H
#define GOPHERMQ_CLIENT_HTTP_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

#include "client.h"

struct http_session;

/* A complete answer: its status and body (NUL-terminated, owned). */
struct http_reply {
	long status;
	char *body;
	size_t length;
};

/* Opens a session for the options' broker, reading the token file if one
 * is set.  NULL after printing why (the exit code is then EXIT_USAGE). */
struct http_session *http_session_new(const struct client_options *options);
void http_session_free(struct http_session *session);

/* When set, a request in progress is abandoned as soon as *flag is
 * non-zero (tail's SIGINT/SIGTERM); http_* then return EXIT_OK with
 * status 0, and the caller checks the flag. */
void http_session_interrupt_on(struct http_session *session, volatile sig_atomic_t *flag);

void http_reply_clear(struct http_reply *reply);

/* GET of a full URL (the metrics endpoint).  EXIT_OK when an answer came,
 * whatever its status; EXIT_UNREACHABLE after printing why not. */
int http_get(struct http_session *session, const char *url, struct http_reply *reply);

/* POSTs a JSON object to an API path ("/api/publish").  EXIT_OK when an
 * answer came, whatever its status (0: interrupted); EXIT_UNREACHABLE
 * after printing why not.  extra_ms lengthens the timeout (a held fetch). */
int http_post(struct http_session *session, const char *path, json_object *request, int64_t extra_ms,
              struct http_reply *reply);

/* POSTs a JSON object to an API path ("/api/publish") and wants a 2xx
 * answer holding a JSON object, stored in *answer (caller puts it).
 * Otherwise prints "gophermq: COMMAND: STATUS MESSAGE" and returns
 * EXIT_REFUSED, or prints why there was no usable answer and returns
 * EXIT_UNREACHABLE.  extra_ms lengthens the timeout (a held fetch). */
int http_api_call(struct http_session *session, const char *command, const char *path,
                  json_object *request, int64_t extra_ms, json_object **answer);

/* Prints a refused answer: "gophermq: COMMAND: 404 bad id" (the broker's
 * message, or the start of a body that is not ours, e.g. a proxy's), then
 * " (DETAIL)" when detail is not NULL. */
void http_print_refusal(const char *command, const struct http_reply *reply, const char *detail);

/* The "index" a refused batch publish names, or -1. */
long http_refusal_index(const struct http_reply *reply);

/* Receives the body of a 200 answer as it arrives; returns false to end
 * the transfer (then http_stream returns EXIT_OK). */
typedef bool http_sink_fn(const char *data, size_t length, void *context);

/* GETs an API path (with its query) without a timeout, handing a 200
 * body to sink piece by piece; any other status is collected into reply.
 * last_event_id, when not NULL, is sent as Last-Event-ID.  A transfer
 * that ends (the broker closed it) returns EXIT_OK with reply->status
 * 200; EXIT_UNREACHABLE (quietly: the caller retries) when the broker
 * could not be reached or the connection broke. */
int http_stream(struct http_session *session, const char *path, const char *last_event_id,
                http_sink_fn *sink, void *context, struct http_reply *reply);

/* Why the last request got no answer; "" when it got one (whatever it
 * was) or was interrupted. */
const char *http_last_error(const struct http_session *session);

/* URL-encodes text for a query; free() the result. */
char *http_escape(const char *text);

#endif
