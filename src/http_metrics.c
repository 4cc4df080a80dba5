/* http_metrics.c - serves GET /metrics from one internal polling thread. */
#include "autoconfig.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_metrics.h"
#include "http_server.h"

#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

struct http_metrics {
	struct MHD_Daemon *daemon;
	struct auth_guard *auth;
	http_metrics_collect collect;
	void *context;
	unsigned port;
};

static enum MHD_Result reply_json(struct MHD_Connection *connection, unsigned status, const char *body)
{
	struct http_reply reply = {
		.status = status,
		.content_type = HTTP_JSON_CONTENT_TYPE,
		.body = (char *)body,
		.length = strlen(body),
	};
	return http_server_reply(connection, &reply);
}

static enum MHD_Result http_metrics_handle(void *context, struct MHD_Connection *connection,
                                           const char *url, const char *method, const char *version,
                                           const char *upload_data, size_t *upload_data_size,
                                           void **request_context)
{
	struct http_metrics *metrics = context;
	struct metrics_snapshot snapshot;
	struct http_reply reply;
	char *text;
	size_t length;

	/* Answer on the first call: /metrics takes no body. */
	if (!auth_guard_allow(metrics->auth, MHD_lookup_connection_value(connection, MHD_HEADER_KIND,
	                                                                 MHD_HTTP_HEADER_AUTHORIZATION))) {
		http_server_unauthorized(&reply);
		metrics_count(METRICS_UNAUTHORIZED);
		return http_server_reply(connection, &reply);
	}
	if (strcmp(url, "/metrics") != 0)
		return reply_json(connection, MHD_HTTP_NOT_FOUND, HTTP_REPLY_NOT_FOUND);
	if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
		return reply_json(connection, MHD_HTTP_METHOD_NOT_ALLOWED, HTTP_REPLY_METHOD_NOT_ALLOWED);

	memset(&snapshot, 0, sizeof(snapshot));
	metrics->collect(&snapshot, metrics->context);
	length = metrics_render(&snapshot, &text);
	if (text == NULL)
		return reply_json(connection, MHD_HTTP_INTERNAL_SERVER_ERROR, HTTP_REPLY_SERVER_ERROR);
	reply = (struct http_reply) {
		.status = MHD_HTTP_OK,
		.content_type = METRICS_CONTENT_TYPE,
		.body = text,
		.length = length,
		.owned = true,
	};
	return http_server_reply(connection, &reply);
}

struct http_metrics *http_metrics_start(const char *listen, unsigned port, struct auth_guard *auth,
                                        http_metrics_collect collect, void *context,
                                        char *error, size_t error_size)
{
	struct sockaddr_storage address;
	bool is_ipv6;
	struct http_metrics *metrics;
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ERROR_LOG;

	if (http_server_address(listen, port, &address, &is_ipv6) != 0) {
		snprintf(error, error_size, "metrics_listen address '%s' is not a numeric IP address", listen);
		return NULL;
	}
	if (is_ipv6)
		flags |= MHD_USE_IPv6;
	metrics = calloc(1, sizeof(*metrics));
	if (metrics == NULL) {
		snprintf(error, error_size, "out of memory");
		return NULL;
	}
	metrics->auth = auth;
	metrics->collect = collect;
	metrics->context = context;
	metrics->daemon = MHD_start_daemon(flags, (uint16_t)port, NULL, NULL,
		http_metrics_handle, metrics,
		MHD_OPTION_EXTERNAL_LOGGER, http_server_log, NULL,
		MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&address,
		MHD_OPTION_CONNECTION_LIMIT, 64U,
		MHD_OPTION_CONNECTION_TIMEOUT, 30U,
		MHD_OPTION_END);
	if (metrics->daemon == NULL) {
		snprintf(error, error_size, "cannot listen for metrics on %s port %u (address in use, or not permitted?)",
		         listen, port);
		free(metrics);
		return NULL;
	}
	metrics->port = http_server_bound_port(metrics->daemon);
	return metrics;
}

unsigned http_metrics_port(const struct http_metrics *metrics)
{
	return metrics->port;
}

void http_metrics_stop(struct http_metrics *metrics)
{
	if (metrics == NULL)
		return;
	MHD_stop_daemon(metrics->daemon);
	free(metrics);
}
