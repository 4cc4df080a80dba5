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
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "http_api.h"
#include "http_server.h"
#include "log.h"
#include "metrics.h"

#define JSON_CONTENT_TYPE "application/json; charset=UTF-8"

/* Room for the JSON envelope around max_message_size bytes of data. */
#define BODY_ENVELOPE 4096

/* Body buffers larger than this are released after the request instead of
 * being kept for the connection's next request. */
#define BODY_KEEP_LIMIT 65536

#define REPLY_NOT_FOUND          "{\"message\":\"Not Found\"}\n"
#define REPLY_METHOD_NOT_ALLOWED "{\"message\":\"Method Not Allowed\"}\n"
#define REPLY_TOO_LARGE          "{\"message\":\"message too large\"}\n"
#define REPLY_SHUTTING_DOWN      "{\"message\":\"shutting down\"}\n"
#define REPLY_SERVER_ERROR       "{\"message\":\"server error\"}\n"

enum route {
	ROUTE_PUBLISH,
	ROUTE_PUBLISH_ASYNC,
	ROUTE_SUBSCRIBE,
	ROUTE_FETCH,
	ROUTE_READY,
	ROUTE_UNKNOWN,
};

static const struct {
	const char *path;
	enum route route;
	enum api_endpoint endpoint;
	enum metrics_method method;
} api_routes[] = {
	{ "/api/publish", ROUTE_PUBLISH, API_PUBLISH, METRICS_PUBLISH },
	{ "/api/publish/async", ROUTE_PUBLISH_ASYNC, API_PUBLISH_ASYNC, METRICS_PUBLISH_ASYNC },
	{ "/api/subscribe", ROUTE_SUBSCRIBE, API_SUBSCRIBE, METRICS_SUBSCRIBE },
	{ "/api/fetch", ROUTE_FETCH, API_FETCH, METRICS_FETCH },
};
#define API_ROUTE_COUNT (sizeof(api_routes) / sizeof(api_routes[0]))

/* Per-connection state, also used as the per-request context. */
struct connection {
	char *body;
	size_t body_length;
	size_t body_capacity;
	bool body_too_large;
	size_t route_index;
	struct timespec started;
};

struct http_api {
	struct MHD_Daemon *daemon;
	struct api_context *api;
	unsigned port;
	unsigned threads;
	unsigned max_connections;
	atomic_uint connections;
	atomic_uint requests_in_flight;
	atomic_bool quiescing;
};

static double seconds_since(const struct timespec *start)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - start->tv_sec) + (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

static size_t body_limit(const struct http_api *http)
{
	uint64_t max_size = atomic_load_explicit(&http->api->max_message_size, memory_order_relaxed);

	return (size_t)max_size + BODY_ENVELOPE;
}

/* Appends a chunk of body, or marks the request too large (and then
 * ignores the rest).  Returns false only when out of memory. */
static bool body_append(struct http_api *http, struct connection *state, const char *data, size_t size)
{
	if (state->body_too_large)
		return true;
	if (size > body_limit(http) - state->body_length) {
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

static enum MHD_Result reply_static(struct http_api *http, struct MHD_Connection *connection,
                                    unsigned status, const char *body)
{
	struct http_reply reply = {
		.status = status,
		.content_type = JSON_CONTENT_TYPE,
		.body = (char *)body,
		.length = strlen(body),
		.close_connection = atomic_load_explicit(&http->quiescing, memory_order_relaxed),
	};
	return http_server_reply(connection, &reply);
}

/* The first call for a request: route it.  Requests that need no body are
 * answered at once. */
static enum MHD_Result request_begin(struct http_api *http, struct MHD_Connection *connection,
                                     struct connection *state, const char *url, const char *method)
{
	state->body_length = 0;
	state->body_too_large = false;
	state->route_index = API_ROUTE_COUNT;
	clock_gettime(CLOCK_MONOTONIC, &state->started);

	for (size_t i = 0; i < API_ROUTE_COUNT; i++) {
		if (strcmp(url, api_routes[i].path) == 0) {
			if (strcmp(method, MHD_HTTP_METHOD_POST) != 0)
				return reply_static(http, connection, MHD_HTTP_METHOD_NOT_ALLOWED, REPLY_METHOD_NOT_ALLOWED);
			state->route_index = i;
			return MHD_YES;
		}
	}
	if (strcmp(url, "/ready") == 0) {
		if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
			return reply_static(http, connection, MHD_HTTP_METHOD_NOT_ALLOWED, REPLY_METHOD_NOT_ALLOWED);
		if (atomic_load_explicit(&http->quiescing, memory_order_relaxed))
			return reply_static(http, connection, MHD_HTTP_SERVICE_UNAVAILABLE, REPLY_SHUTTING_DOWN);
		struct http_reply ready = { .status = MHD_HTTP_NO_CONTENT, .body = (char *)"" };
		return http_server_reply(connection, &ready);
	}
	return reply_static(http, connection, MHD_HTTP_NOT_FOUND, REPLY_NOT_FOUND);
}

/* The last call for a request: the whole body is in state. */
static enum MHD_Result request_finish(struct http_api *http, struct MHD_Connection *connection,
                                      struct connection *state)
{
	struct api_reply reply;
	struct http_reply http_reply;

	if (state->body_too_large) {
		api_reply_error(&reply, MHD_HTTP_CONTENT_TOO_LARGE, REPLY_TOO_LARGE);
	} else {
		api_handle(http->api, api_routes[state->route_index].endpoint,
		           state->body, state->body_length, &reply);
	}

	metrics_observe_request(api_routes[state->route_index].method, reply.status,
	                        seconds_since(&state->started));

	http_reply = (struct http_reply) {
		.status = reply.status,
		.content_type = JSON_CONTENT_TYPE,
		.body = reply.body,
		.length = reply.body_length,
		.owned = !reply.body_static,
		/* After an oversized body the rest of it is not worth reading. */
		.close_connection = state->body_too_large
		                    || atomic_load_explicit(&http->quiescing, memory_order_relaxed),
		.retry_after = reply.status == MHD_HTTP_TOO_MANY_REQUESTS ? "1" : NULL,
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
	if (*upload_data_size != 0) {
		if (!body_append(http, state, upload_data, *upload_data_size))
			return reply_static(http, connection, MHD_HTTP_INTERNAL_SERVER_ERROR, REPLY_SERVER_ERROR);
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (state->route_index >= API_ROUTE_COUNT)
		return MHD_YES; /* answered in request_begin */
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
	atomic_fetch_sub_explicit(&http->requests_in_flight, 1, memory_order_relaxed);
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
		*socket_context = calloc(1, sizeof(struct connection));
		atomic_fetch_add_explicit(&http->connections, 1, memory_order_relaxed);
	} else if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
		struct connection *state = *socket_context;
		if (state != NULL) {
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

	if (atomic_load_explicit(&http->connections, memory_order_relaxed) >= http->max_connections) {
		metrics_count(METRICS_CONNECTIONS_REFUSED);
		return MHD_NO;
	}
	return MHD_YES;
}

static unsigned cpu_count(void)
{
	long count = sysconf(_SC_NPROCESSORS_ONLN);

	return count > 0 ? (unsigned)count : 1;
}

struct http_api *http_api_start(const struct http_api_options *options, struct api_context *api,
                                char *error, size_t error_size)
{
	struct sockaddr_storage address;
	bool is_ipv6;
	struct http_api *http;
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
	http->threads = options->threads ? options->threads : cpu_count();
	http->max_connections = options->max_connections;
	atomic_init(&http->connections, 0);
	atomic_init(&http->requests_in_flight, 0);
	atomic_init(&http->quiescing, false);

	http->daemon = MHD_start_daemon(flags, (uint16_t)options->port,
		http_api_accept, http,
		http_api_handle, http,
		MHD_OPTION_EXTERNAL_LOGGER, http_server_log, NULL,
		MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&address,
		MHD_OPTION_THREAD_POOL_SIZE, http->threads,
		/* The accept policy enforces the real limit; this is a
		 * backstop per pool thread. */
		MHD_OPTION_CONNECTION_LIMIT, options->max_connections + http->threads,
		MHD_OPTION_CONNECTION_TIMEOUT, options->connection_timeout,
		MHD_OPTION_NOTIFY_COMPLETED, http_api_request_completed, http,
		MHD_OPTION_NOTIFY_CONNECTION, http_api_connection_event, http,
		MHD_OPTION_LISTENING_ADDRESS_REUSE, 1,
		MHD_OPTION_END);
	if (http->daemon == NULL) {
		snprintf(error, error_size, "cannot listen on %s port %u (address in use, or not permitted?)",
		         options->listen, options->port);
		free(http);
		return NULL;
	}
	http->port = http_server_bound_port(http->daemon);
	return http;
}

unsigned http_api_port(const struct http_api *http)
{
	return http->port;
}

unsigned http_api_connections(const struct http_api *http)
{
	return atomic_load_explicit(&http->connections, memory_order_relaxed);
}

unsigned http_api_threads(const struct http_api *http)
{
	return http->threads;
}

unsigned http_api_quiesce(struct http_api *http, unsigned timeout_ms)
{
	unsigned waited_ms = 0;
	unsigned in_flight;

	atomic_store(&http->quiescing, true);
	MHD_quiesce_daemon(http->daemon);
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
	free(http);
}
