/* http_api.c - the API listener: routes requests, collects bodies, enforces
 * connection and body limits, and hands bodies to api_handle().
 *
 * libmicrohttpd runs an epoll loop per worker thread (a thread pool, no
 * thread per connection).  Each connection carries one struct connection
 * from accept to close, reused by every request on it, so a keep-alive
 * client costs no allocation per request.
 */
#include "autoconfig.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "cpus.h"
#include "http_api.h"
#include "http_server.h"
#include "log.h"
#include "metrics.h"
#include "monotonic.h"
#include "stream.h"

/* Room for the JSON envelope around max_message_size bytes of data. */
#define BODY_ENVELOPE 4096

/* Body buffers larger than this are released after the request instead of
 * being kept for the connection's next request. */
#define BODY_KEEP_LIMIT 65536

/* Held fetches whose client went away that one sweep ends; more wait for
 * the next sweep. */
#define SWEEP_ABANDONED_MAX 256

#define REPLY_SHUTTING_DOWN      "{\"message\":\"shutting down\"}\n"

/* Per-connection state, also used as the per-request context. */
struct connection {
	struct connection *previous;   /* in http_api.connections_list */
	struct connection *next;
	int fd;
	bool cut_off;                  /* shut down by http_api_sweep */
	/* CLOCK_MONOTONIC ms when the connection was accepted or last
	 * finished a request: the current request's time starts there. */
	_Atomic uint64_t idle_since_ms;
	char *body;
	size_t body_length;
	size_t body_capacity;
	bool body_too_large;
	const struct api_endpoint *endpoint;   /* the route; NULL: none */
	struct MHD_Connection *mhd;
	/* A held fetch, suspended.  Set and cleared under connections_lock,
	 * so that the sweep may end it while it is alive. */
	struct api_hold *hold;
	/* An open stream (GET /api/stream), set and cleared under
	 * connections_lock like hold. */
	struct api_stream *stream;
	bool stream_request;      /* the route is /api/stream */
	bool preflight;           /* OPTIONS, with cors_origin set */
	struct timespec started;
	bool has_early_reply;     /* answer with early, whatever the body */
	bool replied;             /* a reply is queued; drop the rest */
	struct http_reply early;
};

struct http_api {
	struct MHD_Daemon *daemon;
	struct api_context *api;
	struct auth_guard *auth;
	unsigned port;
	unsigned threads;
	unsigned max_connections;
	atomic_uint connections;
	atomic_uint requests_in_flight;
	atomic_bool quiescing;
	unsigned connection_timeout;   /* seconds; 0 = never */
	pthread_mutex_t connections_lock;
	struct connection *connections_list;
	/* Fixed replies prepared once and queued by reference. */
	struct MHD_Response *prepared[API_TEXT_COUNT];
	char *allow_origin;         /* cors_origin, or NULL */
	char *tls_cert;   /* PEM text, kept while the daemon runs */
	char *tls_key;
};

/* Largest certificate or key file read. */
#define TLS_FILE_MAX (1024 * 1024)

/* Reads a whole PEM file into a NUL-terminated malloc'ed string.  Returns
 * NULL with a reason in error. */
static char *tls_file_read(const char *option, const char *path, char *error, size_t error_size)
{
	FILE *file = fopen(path, "re");
	char *text;
	size_t length;

	if (file == NULL) {
		snprintf(error, error_size, "%s: cannot open %s: %s", option, path, strerror(errno));
		return NULL;
	}
	text = malloc(TLS_FILE_MAX + 1);
	if (text == NULL) {
		fclose(file);
		snprintf(error, error_size, "%s: out of memory", option);
		return NULL;
	}
	length = fread(text, 1, TLS_FILE_MAX + 1, file);
	if (ferror(file) || length == 0 || length > TLS_FILE_MAX) {
		snprintf(error, error_size, "%s: cannot read %s (empty, unreadable or over 1 MiB)", option, path);
		fclose(file);
		free(text);
		return NULL;
	}
	fclose(file);
	text[length] = '\0';
	return text;
}

static void http_api_free(struct http_api *http)
{
	pthread_mutex_destroy(&http->connections_lock);
	for (size_t i = 0; i < API_TEXT_COUNT; i++)
		if (http->prepared[i] != NULL)
			MHD_destroy_response(http->prepared[i]);
	if (http->tls_key != NULL)
		explicit_bzero(http->tls_key, strlen(http->tls_key));
	free(http->tls_key);
	free(http->allow_origin);
	free(http->tls_cert);
	free(http);
}

static double seconds_since(const struct timespec *start)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - start->tv_sec) + (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

/* The largest body the request's endpoint takes. */
static size_t body_limit(const struct http_api *http, const struct connection *state)
{
	uint64_t max_size;

	if (state->endpoint != NULL && state->endpoint->body == API_BODY_BATCH)
		return (size_t)atomic_load_explicit(&http->api->max_batch_bytes, memory_order_relaxed);
	max_size = atomic_load_explicit(&http->api->max_message_size, memory_order_relaxed);
	return (size_t)max_size + BODY_ENVELOPE;
}

/* Appends a chunk of body, or marks the request too large (and then
 * ignores the rest).  Returns false only when out of memory. */
static bool body_append(struct http_api *http, struct connection *state, const char *data, size_t size)
{
	if (state->body_too_large)
		return true;
	if (size > body_limit(http, state) - state->body_length) {
		state->body_too_large = true;
		return true;
	}
	if (state->body_length + size > state->body_capacity) {
		size_t capacity = state->body_capacity ? state->body_capacity : 1024;
		while (capacity < state->body_length + size)
			capacity *= 2;
		char *body = realloc(state->body, capacity);
		if (body == NULL)
			return false;
		state->body = body;
		state->body_capacity = capacity;
	}
	memcpy(state->body + state->body_length, data, size);
	state->body_length += size;
	return true;
}

/* Decides a reply that needs no body (errors, /ready).  It is sent on the
 * request's last call, after any body was read and dropped: a reply queued
 * before that would make libmicrohttpd close a keep-alive connection. */
static enum MHD_Result reply_early(struct connection *state, unsigned status,
                                   const char *body)
{
	state->early = (struct http_reply) {
		.status = status,
		.content_type = HTTP_JSON_CONTENT_TYPE,
		.body = (char *)body,
		.length = strlen(body),
	};
	state->has_early_reply = true;
	return MHD_YES;
}

static enum MHD_Result request_finish(struct http_api *http, struct MHD_Connection *connection,
                                      struct connection *state);

/* A declared Content-Length above the limit is refused before the body is
 * read.  A client waiting for "100 Continue" gets the 413 at once and never
 * sends the body; others have it read and dropped. */
static enum MHD_Result request_check_length(struct http_api *http, struct MHD_Connection *connection,
                                            struct connection *state)
{
	const char *declared = MHD_lookup_connection_value(connection, MHD_HEADER_KIND,
	                                                   MHD_HTTP_HEADER_CONTENT_LENGTH);
	char *end;
	unsigned long long length;

	if (declared == NULL)
		return MHD_YES;
	errno = 0;
	length = strtoull(declared, &end, 10);
	if (errno == 0 && *end == '\0' && length <= body_limit(http, state))
		return MHD_YES;
	state->body_too_large = true;
	if (MHD_lookup_connection_value(connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT) == NULL)
		return MHD_YES;
	state->replied = true;
	return request_finish(http, connection, state);
}

/* The first call for a request: route it and check its token. */
static enum MHD_Result request_begin(struct http_api *http, struct MHD_Connection *connection,
                                     struct connection *state, const char *url, const char *method)
{
	state->body_length = 0;
	state->body_too_large = false;
	state->has_early_reply = false;
	state->replied = false;
	state->stream_request = false;
	state->preflight = false;
	state->endpoint = NULL;
	clock_gettime(CLOCK_MONOTONIC, &state->started);

	if (strcmp(url, "/ready") == 0) {
		if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
			return reply_early(state, MHD_HTTP_METHOD_NOT_ALLOWED, HTTP_REPLY_METHOD_NOT_ALLOWED);
		if (atomic_load_explicit(&http->quiescing, memory_order_relaxed))
			return reply_early(state, MHD_HTTP_SERVICE_UNAVAILABLE, REPLY_SHUTTING_DOWN);
		reply_early(state, MHD_HTTP_NO_CONTENT, "");
		state->early.content_type = NULL;
		return MHD_YES;
	}

	/* A browser's CORS preflight carries no token: with cors_origin set,
	 * an API path answers it. */
	if (http->allow_origin != NULL && strcmp(method, MHD_HTTP_METHOD_OPTIONS) == 0 &&
	    api_endpoint_find(url) != NULL) {
		state->preflight = true;
		return MHD_YES;
	}

	/* Everything but the health check needs a token when auth is on. */
	if (auth_guard_enabled(http->auth) &&
	    !auth_guard_allow(http->auth, MHD_lookup_connection_value(connection, MHD_HEADER_KIND,
	                                                              MHD_HTTP_HEADER_AUTHORIZATION))) {
		metrics_count(METRICS_UNAUTHORIZED);
		http_server_unauthorized(&state->early);
		state->has_early_reply = true;
		return MHD_YES;
	}

	state->endpoint = api_endpoint_find(url);
	if (state->endpoint == NULL)
		return reply_early(state, MHD_HTTP_NOT_FOUND, HTTP_REPLY_NOT_FOUND);
	if (state->endpoint->handle == NULL) {
		if (strcmp(method, MHD_HTTP_METHOD_GET) != 0) {
			state->endpoint = NULL;
			return reply_early(state, MHD_HTTP_METHOD_NOT_ALLOWED, HTTP_REPLY_METHOD_NOT_ALLOWED);
		}
		state->stream_request = true;
		return MHD_YES;
	}
	if (strcmp(method, MHD_HTTP_METHOD_POST) != 0) {
		state->endpoint = NULL;
		return reply_early(state, MHD_HTTP_METHOD_NOT_ALLOWED, HTTP_REPLY_METHOD_NOT_ALLOWED);
	}
	return request_check_length(http, connection, state);
}

/* The broker's answer to a held fetch is ready: from any thread. */
static void request_resume(void *transport)
{
	struct connection *state = transport;

	MHD_resume_connection(state->mhd);
}

/* Parks the request until its held fetch is answered: suspended, it costs
 * no thread and no polling. */
static enum MHD_Result request_hold(struct http_api *http, struct MHD_Connection *connection,
                                    struct connection *state, struct api_hold *hold)
{
	state->mhd = connection;
	MHD_suspend_connection(connection);
	pthread_mutex_lock(&http->connections_lock);
	state->hold = hold;
	pthread_mutex_unlock(&http->connections_lock);
	if (!api_hold_attach(hold, request_resume, state))
		MHD_resume_connection(connection);   /* answered already */
	return MHD_YES;
}

static enum MHD_Result request_reply(struct http_api *http, struct MHD_Connection *connection,
                                     struct connection *state, struct api_reply *reply);

/* The first call after a held fetch was resumed. */
static enum MHD_Result request_resumed(struct http_api *http, struct MHD_Connection *connection,
                                       struct connection *state)
{
	struct api_reply reply;
	struct api_hold *hold;

	pthread_mutex_lock(&http->connections_lock);
	hold = state->hold;
	state->hold = NULL;
	pthread_mutex_unlock(&http->connections_lock);
	atomic_store_explicit(&state->idle_since_ms, monotonic_ms(), memory_order_relaxed);
	api_hold_reply(http->api, hold, &reply);
	return request_reply(http, connection, state, &reply);
}

static bool peer_gone_and_read(int fd);

/* A stream has something to send: from any thread. */
static void stream_resume(void *transport)
{
	struct connection *state = transport;

	MHD_resume_connection(state->mhd);
}

/* libmicrohttpd asks for the stream's next bytes whenever the socket has
 * room: a client that does not read is not asked. */
static ssize_t stream_reader(void *context, uint64_t position, char *buffer, size_t max)
{
	struct connection *state = context;
	ssize_t length;

	(void)position;
	length = api_stream_read(state->stream, buffer, max, peer_gone_and_read(state->fd));
	if (length > 0)
		return length;
	if (length == API_STREAM_END)
		return MHD_CONTENT_READER_END_OF_STREAM;
	/* Nothing to send: suspended until the stream is woken. */
	MHD_suspend_connection(state->mhd);
	if (!api_stream_attach(state->stream, stream_resume, state))
		MHD_resume_connection(state->mhd);
	return 0;
}

/* GET /api/stream?subject=S&id=ID[&last_event_id=L]: the reply is the
 * stream, or an error. */
static enum MHD_Result stream_start(struct http_api *http, struct MHD_Connection *connection,
                                    struct connection *state)
{
	const char *subject = MHD_lookup_connection_value(connection, MHD_GET_ARGUMENT_KIND, "subject");
	const char *id = MHD_lookup_connection_value(connection, MHD_GET_ARGUMENT_KIND, "id");
	const char *last = MHD_lookup_connection_value(connection, MHD_HEADER_KIND, "Last-Event-ID");
	struct api_reply reply;
	struct api_stream *stream;
	struct MHD_Response *response;
	enum MHD_Result result;

	if (last == NULL)
		last = MHD_lookup_connection_value(connection, MHD_GET_ARGUMENT_KIND, "last_event_id");
	stream = api_stream_open(http->api, subject ? subject : "", subject ? strlen(subject) : 0,
	                         id ? id : "", id ? strlen(id) : 0, last, &reply);
	if (stream == NULL)
		return request_reply(http, connection, state, &reply);
	state->mhd = connection;
	pthread_mutex_lock(&http->connections_lock);
	state->stream = stream;
	pthread_mutex_unlock(&http->connections_lock);
	response = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_reader, state, NULL);
	if (response == NULL)
		return MHD_NO;   /* request_completed closes the stream */
	MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream; charset=UTF-8");
	MHD_add_response_header(response, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
	/* Proxies such as nginx would buffer the events otherwise. */
	MHD_add_response_header(response, "X-Accel-Buffering", "no");
	if (http->allow_origin != NULL)
		MHD_add_response_header(response, MHD_HTTP_HEADER_ACCESS_CONTROL_ALLOW_ORIGIN, http->allow_origin);
	metrics_observe_request((size_t)(state->endpoint - api_endpoints), 200, seconds_since(&state->started));
	result = MHD_queue_response(connection, MHD_HTTP_OK, response);
	MHD_destroy_response(response);
	return result;
}

/* The answer to a CORS preflight: what a page of the allowed origin may
 * send (JSON bodies, a token, a stream's Last-Event-ID). */
static enum MHD_Result preflight_reply(struct http_api *http, struct MHD_Connection *connection)
{
	struct MHD_Response *response = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
	enum MHD_Result result;

	if (response == NULL)
		return MHD_NO;
	MHD_add_response_header(response, MHD_HTTP_HEADER_ACCESS_CONTROL_ALLOW_ORIGIN, http->allow_origin);
	MHD_add_response_header(response, "Access-Control-Allow-Methods", "GET, POST");
	MHD_add_response_header(response, "Access-Control-Allow-Headers",
	                        "Content-Type, Authorization, Last-Event-ID");
	MHD_add_response_header(response, "Access-Control-Max-Age", "600");
	result = MHD_queue_response(connection, MHD_HTTP_NO_CONTENT, response);
	MHD_destroy_response(response);
	return result;
}

/* The last call for a request: the whole body is in state. */
static enum MHD_Result request_finish(struct http_api *http, struct MHD_Connection *connection,
                                      struct connection *state)
{
	struct api_reply reply;
	bool quiescing = atomic_load_explicit(&http->quiescing, memory_order_relaxed);

	if (state->has_early_reply && !state->body_too_large) {
		state->early.close_connection = quiescing;
		state->early.allow_origin = http->allow_origin;
		return http_server_reply(connection, &state->early);
	}
	if (state->stream_request)
		return stream_start(http, connection, state);
	if (state->preflight)
		return preflight_reply(http, connection);
	if (state->body_too_large) {
		api_reply_static(&reply, MHD_HTTP_CONTENT_TOO_LARGE,
		                 state->endpoint != NULL && state->endpoint->body == API_BODY_BATCH
		                 ? API_TEXT_BATCH_TOO_LARGE : API_TEXT_TOO_LARGE);
	} else {
		api_handle(http->api, state->endpoint, state->body, state->body_length, &reply);
		if (reply.hold != NULL)
			return request_hold(http, connection, state, reply.hold);
	}
	return request_reply(http, connection, state, &reply);
}

/* Sends reply and counts it. */
static enum MHD_Result request_reply(struct http_api *http, struct MHD_Connection *connection,
                                     struct connection *state, struct api_reply *reply_pointer)
{
	struct api_reply reply = *reply_pointer;
	struct http_reply http_reply;
	bool quiescing = atomic_load_explicit(&http->quiescing, memory_order_relaxed);

	if (state->endpoint != NULL)
		metrics_observe_request((size_t)(state->endpoint - api_endpoints), reply.status,
		                        seconds_since(&state->started));

	/* After an oversized body the rest of it is not worth reading. */
	if (reply.text != API_TEXT_NONE && !state->body_too_large && !quiescing)
		return MHD_queue_response(connection, reply.status, http->prepared[reply.text]);

	http_reply = (struct http_reply) {
		.status = reply.status,
		.content_type = HTTP_JSON_CONTENT_TYPE,
		.body = reply.body,
		.length = reply.body_length,
		.owned = reply.text == API_TEXT_NONE,
		.close_connection = state->body_too_large || quiescing,
		.header_name = reply.status == MHD_HTTP_TOO_MANY_REQUESTS ? MHD_HTTP_HEADER_RETRY_AFTER : NULL,
		.header_value = "1",
		.allow_origin = http->allow_origin,
	};
	return http_server_reply(connection, &http_reply);
}

static enum MHD_Result http_api_handle(void *context, struct MHD_Connection *connection,
                                       const char *url, const char *method, const char *version,
                                       const char *upload_data, size_t *upload_data_size,
                                       void **request_context)
{
	struct http_api *http = context;
	struct connection *state = *request_context;

	if (state == NULL) {
		const union MHD_ConnectionInfo *info =
			MHD_get_connection_info(connection, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
		state = info != NULL ? info->socket_context : NULL;
		if (state == NULL)
			return MHD_NO;
		*request_context = state;
		atomic_fetch_add_explicit(&http->requests_in_flight, 1, memory_order_relaxed);
		return request_begin(http, connection, state, url, method);
	}
	if (state->hold != NULL)
		return request_resumed(http, connection, state);
	if (*upload_data_size != 0) {
		size_t size = *upload_data_size;

		*upload_data_size = 0;
		if (state->replied)
			return MHD_YES;
		if (state->has_early_reply) {
			/* Read and dropped, within the usual body limit. */
			if (size > body_limit(http, state) - state->body_length)
				state->body_too_large = true;
			else
				state->body_length += size;
		} else if (!body_append(http, state, upload_data, size)) {
			return MHD_NO;
		}
		/* An oversized body is read to its end and dropped, then
		 * answered: closing while the client still sends would reset
		 * the connection and lose the 413. */
		return MHD_YES;
	}
	if (state->replied)
		return MHD_YES;
	state->replied = true;
	return request_finish(http, connection, state);
}

static void http_api_request_completed(void *context, struct MHD_Connection *connection,
                                       void **request_context, enum MHD_RequestTerminationCode code)
{
	struct http_api *http = context;
	struct connection *state = *request_context;

	if (state == NULL)
		return;
	*request_context = NULL;
	if (state->hold != NULL) {
		/* Woken, then closed before the answer: a suspended request
		 * is never ended, so its waker is done with it. */
		struct api_hold *hold;

		pthread_mutex_lock(&http->connections_lock);
		hold = state->hold;
		state->hold = NULL;
		pthread_mutex_unlock(&http->connections_lock);
		api_hold_drop(http->api, hold);
	}
	if (state->stream != NULL) {
		struct api_stream *stream;

		pthread_mutex_lock(&http->connections_lock);
		stream = state->stream;
		state->stream = NULL;
		pthread_mutex_unlock(&http->connections_lock);
		api_stream_close(stream);
	}
	atomic_fetch_sub_explicit(&http->requests_in_flight, 1, memory_order_relaxed);
	atomic_store_explicit(&state->idle_since_ms, monotonic_ms(), memory_order_relaxed);
	if (state->body_capacity > BODY_KEEP_LIMIT) {
		free(state->body);
		state->body = NULL;
		state->body_capacity = 0;
	}
	state->body_length = 0;
}

static void http_api_connection_event(void *context, struct MHD_Connection *connection,
                                      void **socket_context, enum MHD_ConnectionNotificationCode code)
{
	struct http_api *http = context;

	if (code == MHD_CONNECTION_NOTIFY_STARTED) {
		/* calloc may fail; http_api_handle then refuses the request. */
		struct connection *state = calloc(1, sizeof(struct connection));
		const union MHD_ConnectionInfo *info =
			MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);

		*socket_context = state;
		atomic_fetch_add_explicit(&http->connections, 1, memory_order_relaxed);
		if (state == NULL)
			return;
		state->fd = info != NULL ? info->connect_fd : -1;
		atomic_init(&state->idle_since_ms, monotonic_ms());
		pthread_mutex_lock(&http->connections_lock);
		state->next = http->connections_list;
		if (state->next != NULL)
			state->next->previous = state;
		http->connections_list = state;
		pthread_mutex_unlock(&http->connections_lock);
	} else if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
		struct connection *state = *socket_context;

		/* libmicrohttpd closes the socket only after this returns, so
		 * while a state is listed its fd is this connection's. */
		if (state != NULL) {
			pthread_mutex_lock(&http->connections_lock);
			if (state->previous != NULL)
				state->previous->next = state->next;
			else
				http->connections_list = state->next;
			if (state->next != NULL)
				state->next->previous = state->previous;
			pthread_mutex_unlock(&http->connections_lock);
			free(state->body);
			free(state);
		}
		*socket_context = NULL;
		atomic_fetch_sub_explicit(&http->connections, 1, memory_order_relaxed);
	}
}

/* Accept policy: a global connection limit (libmicrohttpd's own limit is
 * split evenly between pool threads). */
static enum MHD_Result http_api_accept(void *context, const struct sockaddr *address, socklen_t length)
{
	struct http_api *http = context;

	/* Shutting down: new connections are closed at once (see
	 * http_api_quiesce). */
	if (atomic_load_explicit(&http->quiescing, memory_order_relaxed))
		return MHD_NO;
	if (atomic_load_explicit(&http->connections, memory_order_relaxed) >= http->max_connections) {
		metrics_count(METRICS_CONNECTIONS_REFUSED);
		return MHD_NO;
	}
	return MHD_YES;
}

struct http_api *http_api_start(const struct http_api_options *options, struct api_context *api,
                                char *error, size_t error_size)
{
	struct sockaddr_storage address;
	bool is_ipv6;
	struct http_api *http;
	/* epoll: a poll() loop costs a quarter of the CPU time of a small
	 * request at 50 connections (the wait queue of every socket is set up
	 * and torn down on every call).  See http_api_sweep for the one
	 * weakness of libmicrohttpd's epoll loop that matters here. */
	unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ERROR_LOG | MHD_ALLOW_SUSPEND_RESUME
	                 | MHD_USE_TURBO;

	if (http_server_address(options->listen, options->port, &address, &is_ipv6) != 0) {
		snprintf(error, error_size, "listen address '%s' is not a numeric IP address", options->listen);
		return NULL;
	}
	if (is_ipv6)
		flags |= MHD_USE_IPv6;
	http = calloc(1, sizeof(*http));
	if (http == NULL) {
		snprintf(error, error_size, "out of memory");
		return NULL;
	}
	http->api = api;
	http->auth = options->auth;
	if (options->cors_origin != NULL && options->cors_origin[0] != '\0' &&
	    (http->allow_origin = strdup(options->cors_origin)) == NULL) {
		snprintf(error, error_size, "out of memory");
		http_api_free(http);
		return NULL;
	}
	for (size_t i = 0; i < API_TEXT_COUNT; i++) {
		size_t length;
		const char *text = api_reply_text((enum api_reply_text)i, &length);

		http->prepared[i] = MHD_create_response_from_buffer(length, (void *)text, MHD_RESPMEM_PERSISTENT);
		if (http->prepared[i] == NULL
		    || MHD_add_response_header(http->prepared[i], MHD_HTTP_HEADER_CONTENT_TYPE, HTTP_JSON_CONTENT_TYPE) != MHD_YES
		    || (i == API_TEXT_OVERFLOW
		        && MHD_add_response_header(http->prepared[i], MHD_HTTP_HEADER_RETRY_AFTER, "1") != MHD_YES)
		    || (http->allow_origin != NULL
		        && MHD_add_response_header(http->prepared[i], MHD_HTTP_HEADER_ACCESS_CONTROL_ALLOW_ORIGIN,
		                                   http->allow_origin) != MHD_YES)) {
			snprintf(error, error_size, "out of memory");
			http_api_free(http);
			return NULL;
		}
	}
	if (options->tls_cert_file != NULL && options->tls_cert_file[0] != '\0') {
		http->tls_cert = tls_file_read("tls_cert_file", options->tls_cert_file, error, error_size);
		http->tls_key = http->tls_cert != NULL
		                ? tls_file_read("tls_key_file", options->tls_key_file, error, error_size) : NULL;
		if (http->tls_key == NULL) {
			http_api_free(http);
			return NULL;
		}
		flags |= MHD_USE_TLS;
	}
	http->threads = options->threads ? options->threads : cpus_usable();
	http->max_connections = options->max_connections;
	http->connection_timeout = options->connection_timeout;
	pthread_mutex_init(&http->connections_lock, NULL);
	atomic_init(&http->connections, 0);
	atomic_init(&http->requests_in_flight, 0);
	atomic_init(&http->quiescing, false);

	struct MHD_OptionItem pool_options[] = {
		http_server_pool_option(http->threads),
		{ MHD_OPTION_END, 0, NULL },
	};
	struct MHD_OptionItem tls_options[] = {
		{ MHD_OPTION_HTTPS_MEM_CERT, 0, http->tls_cert },
		{ MHD_OPTION_HTTPS_MEM_KEY, 0, http->tls_key },
		{ MHD_OPTION_END, 0, NULL },
	};
	/* An empty array unless TLS is on: libmicrohttpd warns about TLS
	 * options given to a plain daemon. */
	if (http->tls_cert == NULL)
		tls_options[0].option = MHD_OPTION_END;

	http->daemon = MHD_start_daemon(flags, (uint16_t)options->port,
		http_api_accept, http,
		http_api_handle, http,
		MHD_OPTION_EXTERNAL_LOGGER, http_server_log, NULL,
		MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&address,
		MHD_OPTION_ARRAY, pool_options,
		/* The accept policy enforces the real limit; this is a
		 * backstop per pool thread. */
		MHD_OPTION_CONNECTION_LIMIT, options->max_connections + http->threads,
		/* No MHD_OPTION_CONNECTION_TIMEOUT: http_api_sweep() closes
		 * every connection that connection_timeout would (idle ones
		 * too), and libmicrohttpd's own timer reads the clock some
		 * seven times per request. */
		/* libmicrohttpd clears each connection's memory pool for every
		 * request; the 32 KiB default costs more than parsing the JSON.
		 * Request headers, the read buffer and reply headers fit in
		 * 8 KiB; bodies are collected outside the pool. */
		MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HTTP_CONNECTION_MEMORY,
		MHD_OPTION_NOTIFY_COMPLETED, http_api_request_completed, http,
		MHD_OPTION_NOTIFY_CONNECTION, http_api_connection_event, http,
		MHD_OPTION_ARRAY, tls_options,
		MHD_OPTION_END);
	if (http->daemon == NULL) {
		snprintf(error, error_size, "cannot listen on %s port %u (address in use, not permitted%s?)",
		         options->listen, options->port, http->tls_cert ? ", or a bad TLS certificate or key" : "");
		http_api_free(http);
		return NULL;
	}
	http->port = http_server_bound_port(http->daemon);
	return http;
}

unsigned http_api_port(const struct http_api *http)
{
	return http->port;
}

unsigned http_api_threads(const struct http_api *http)
{
	return http->threads;
}

unsigned http_api_connections(const struct http_api *http)
{
	return atomic_load_explicit(&http->connections, memory_order_relaxed);
}

/* Whether the client has closed its side of fd and every byte it sent has
 * been read by libmicrohttpd. */
static bool peer_gone_and_read(int fd)
{
	struct pollfd peer = { .fd = fd, .events = POLLRDHUP };
	int unread;

	if (poll(&peer, 1, 0) != 1 || (peer.revents & (POLLRDHUP | POLLHUP | POLLERR)) == 0)
		return false;
	return ioctl(fd, FIONREAD, &unread) == 0 && unread == 0;
}

unsigned http_api_sweep(struct http_api *http)
{
	uint64_t now = monotonic_ms(), limit = (uint64_t)http->connection_timeout * 1000u;
	unsigned cut = 0;
	struct MHD_Connection *abandoned[SWEEP_ABANDONED_MAX];
	size_t abandoned_count = 0;

	pthread_mutex_lock(&http->connections_lock);
	for (struct connection *state = http->connections_list; state != NULL; state = state->next) {
		uint64_t since = atomic_load_explicit(&state->idle_since_ms, memory_order_relaxed);

		if (state->cut_off || state->fd < 0)
			continue;
		if (state->stream != NULL) {
			/* A stream is open by design, never cut off for time;
			 * one whose client went away while it waited ends. */
			if (peer_gone_and_read(state->fd))
				api_stream_end(state->stream);
			continue;
		}
		if (state->hold != NULL) {
			/* A held fetch is waiting by design, never cut off for
			 * time.  Its client may have gone, though: end the wait
			 * taking nothing, so no message is sent to a closed
			 * socket and its max_parked_fetches slot is free. */
			if (abandoned_count < SWEEP_ABANDONED_MAX && peer_gone_and_read(state->fd) &&
			    api_hold_cancel(http->api, state->hold))
				abandoned[abandoned_count++] = state->mhd;
			continue;
		}
		if (limit != 0 && now >= since && now - since > limit) {
			/* The owning thread sees the socket end and cleans up. */
			shutdown(state->fd, SHUT_RDWR);
			state->cut_off = true;
			cut++;
		} else if (peer_gone_and_read(state->fd)) {
			/* libmicrohttpd 0.9.75's edge-triggered epoll loop can
			 * miss a FIN that comes with the last bytes of a
			 * half-sent request; the connection would then sit in
			 * CLOSE-WAIT, holding a max_connections slot, until
			 * connection_timeout.  Reading already ends at the FIN,
			 * so shutting down the read side changes nothing but
			 * raising a fresh event: libmicrohttpd sees the end of
			 * the stream and goes on as usual (closes, or finishes
			 * a reply to a client that only half-closed). */
			shutdown(state->fd, SHUT_RD);
		}
	}
	pthread_mutex_unlock(&http->connections_lock);
	/* Suspended until resumed here: they cannot have been closed. */
	for (size_t i = 0; i < abandoned_count; i++)
		MHD_resume_connection(abandoned[i]);
	return cut;
}

unsigned http_api_quiesce(struct http_api *http, unsigned timeout_ms)
{
	unsigned waited_ms = 0;
	unsigned in_flight;

	/* Not MHD_quiesce_daemon(): on an epoll daemon with its own threads
	 * it races with those threads over removing the listening socket
	 * from their epoll sets, and the loser aborts the process
	 * ("Failed to remove listen FD from epoll set", libmicrohttpd
	 * 0.9.75).  The accept policy turns new connections away instead;
	 * the socket closes with MHD_stop_daemon(). */
	atomic_store(&http->quiescing, true);
	for (;;) {
		in_flight = atomic_load(&http->requests_in_flight);
		if (in_flight == 0 || waited_ms >= timeout_ms)
			break;
		usleep(10 * 1000);
		waited_ms += 10;
	}
	return in_flight;
}

void http_api_stop(struct http_api *http)
{
	if (http == NULL)
		return;
	MHD_stop_daemon(http->daemon);
	http_api_free(http);
}
