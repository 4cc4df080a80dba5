/* http_api.h - the API's HTTP listener (libmicrohttpd): routing, request
 * bodies, limits on connections, and readiness.  Request semantics live in
 * api.c; this module only moves bytes and status codes. */
#ifndef GOPHERMQ_HTTP_API_H
#define GOPHERMQ_HTTP_API_H

#include <stddef.h>

#include "api.h"
#include "auth.h"

struct http_api_options {
	const char *listen;          /* IPv4 or IPv6 literal */
	unsigned port;               /* 0 = any free port */
	unsigned threads;            /* HTTP worker threads; 0 = one per CPU */
	unsigned max_connections;
	unsigned connection_timeout; /* seconds; 0 = never */
	struct auth_guard *auth;     /* tokens for every path but /ready; may be NULL */
	const char *tls_cert_file;   /* PEM; "" or NULL = plain HTTP */
	const char *tls_key_file;    /* PEM */
	const char *cors_origin;     /* Access-Control-Allow-Origin; "" or NULL = none */
};

struct http_api;

/* Binds and starts serving.  api must outlive the listener.  Returns NULL
 * with a reason in error on failure. */
struct http_api *http_api_start(const struct http_api_options *options, struct api_context *api,
                                char *error, size_t error_size);

/* The port actually bound (useful with port 0). */
unsigned http_api_port(const struct http_api *http);

/* The threads serving requests: http_threads, or the CPUs the daemon may
 * run on when that is 0. */
unsigned http_api_threads(const struct http_api *http);

unsigned http_api_connections(const struct http_api *http);

/* Shuts down connections that have gone longer than connection_timeout
 * without finishing a request since they were accepted or finished their
 * previous one: idle connections, and clients trickling their request
 * (slowloris) or reading their reply that slowly.  This is the only
 * timeout of API connections; libmicrohttpd's idle timer is not used.
 * Also makes libmicrohttpd notice clients that closed their side
 * mid-request (http_api.c says why).  Call about once a second from any
 * thread.  Returns how many connections were cut off. */
unsigned http_api_sweep(struct http_api *http);

/* Turns new connections away (closed once accepted) and makes /ready
 * answer 503; requests in flight are finished and their connections
 * closed after the reply.  Waits at most timeout_ms for in-flight requests
 * to complete.  Returns how many were still in flight when it gave up. */
unsigned http_api_quiesce(struct http_api *http, unsigned timeout_ms);

/* Closes every connection and frees the listener. */
void http_api_stop(struct http_api *http);

#endif
