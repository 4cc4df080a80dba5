/* http_server.c - helpers shared by the API and metrics listeners. */
#include "autoconfig.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_server.h"
#include "log.h"

int http_server_address(const char *listen, unsigned port, struct sockaddr_storage *address,
                        bool *is_ipv6)
{
	memset(address, 0, sizeof(*address));
	struct sockaddr_in *ipv4 = (struct sockaddr_in *)address;
	if (inet_pton(AF_INET, listen, &ipv4->sin_addr) == 1) {
		ipv4->sin_family = AF_INET;
		ipv4->sin_port = htons((uint16_t)port);
		*is_ipv6 = false;
		return 0;
	}
	struct sockaddr_in6 *ipv6 = (struct sockaddr_in6 *)address;
	if (inet_pton(AF_INET6, listen, &ipv6->sin6_addr) == 1) {
		ipv6->sin6_family = AF_INET6;
		ipv6->sin6_port = htons((uint16_t)port);
		*is_ipv6 = true;
		return 0;
	}
	return -1;
}

void http_server_log(void *context, const char *format, va_list args)
{
	char line[512];
	size_t length;

	vsnprintf(line, sizeof(line), format, args);
	length = strlen(line);
	while (length > 0 && (line[length - 1] == '\n' || line[length - 1] == '\r'))
		line[--length] = '\0';
	log_warning("http: %s", line);
}

unsigned http_server_bound_port(struct MHD_Daemon *daemon)
{
	const union MHD_DaemonInfo *info = MHD_get_daemon_info(daemon, MHD_DAEMON_INFO_BIND_PORT);

	return info != NULL ? info->port : 0;
}

void http_server_unauthorized(struct http_reply *reply)
{
	static const char body[] = "{\"message\":\"unauthorized\"}\n";

	*reply = (struct http_reply) {
		.status = MHD_HTTP_UNAUTHORIZED,
		.content_type = HTTP_JSON_CONTENT_TYPE,
		.body = (char *)body,
		.length = sizeof(body) - 1,
		.header_name = MHD_HTTP_HEADER_WWW_AUTHENTICATE,
		.header_value = "Bearer realm=\"gophermq\"",
	};
}

enum MHD_Result http_server_reply(struct MHD_Connection *connection, const struct http_reply *reply)
{
	struct MHD_Response *response;
	enum MHD_Result result;

	if (reply->owned)
		response = MHD_create_response_from_buffer_with_free_callback(reply->length, reply->body, free);
	else
		response = MHD_create_response_from_buffer(reply->length, reply->body, MHD_RESPMEM_PERSISTENT);
	if (response == NULL) {
		if (reply->owned)
			free(reply->body);
		return MHD_NO;
	}
	if (reply->content_type != NULL)
		MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, reply->content_type);
	if (reply->close_connection)
		MHD_add_response_header(response, MHD_HTTP_HEADER_CONNECTION, "close");
	if (reply->header_name != NULL)
		MHD_add_response_header(response, reply->header_name, reply->header_value);
	if (reply->allow_origin != NULL)
		MHD_add_response_header(response, MHD_HTTP_HEADER_ACCESS_CONTROL_ALLOW_ORIGIN, reply->allow_origin);
	result = MHD_queue_response(connection, reply->status, response);
	MHD_destroy_response(response);
	return result;
}
