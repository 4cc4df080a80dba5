/* http_server.h - what both HTTP listeners share: turning a listen address
 * into a socket address, routing libmicrohttpd's log into ours, and sending
 * a reply with the project's headers. */
#ifndef GOPHERMQ_HTTP_SERVER_H
#define GOPHERMQ_HTTP_SERVER_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <microhttpd.h>

/* What both listeners answer in JSON; bodies end in a newline, as the
 * original's framework wrote them. */
#define HTTP_JSON_CONTENT_TYPE "application/json; charset=UTF-8"
#define HTTP_REPLY_NOT_FOUND "{\"message\":\"Not Found\"}\n"
#define HTTP_REPLY_METHOD_NOT_ALLOWED "{\"message\":\"Method Not Allowed\"}\n"
#define HTTP_REPLY_SERVER_ERROR "{\"message\":\"server error\"}\n"

/* libmicrohttpd's per-connection memory for the API listener, cleared for
 * every request: request headers up to about 7 KiB fit (larger ones get
 * 431).  loadtest/ceiling.c uses it too, to measure against the same. */
#define HTTP_CONNECTION_MEMORY (8 * 1024)

/* The MHD_OPTION_ARRAY entry for a pool of threads threads.  One thread is
 * libmicrohttpd's single internal thread, not a pool: the entry is then an
 * end marker, as libmicrohttpd warns about a pool size of one (or zero).
 * loadtest/ceiling.c sizes its threads with it too. */
static inline struct MHD_OptionItem http_server_pool_option(unsigned threads)
{
	struct MHD_OptionItem item = { MHD_OPTION_THREAD_POOL_SIZE, (intptr_t)threads, NULL };

	if (threads < 2)
		item.option = MHD_OPTION_END;
	return item;
}

/* Fills reply with the 401 for a missing or wrong bearer token. */
struct http_reply;
void http_server_unauthorized(struct http_reply *reply);

/* Fills address from a numeric IPv4/IPv6 literal and a port.  Returns 0, or
 * -1 when listen is not a numeric address. */
int http_server_address(const char *listen, unsigned port, struct sockaddr_storage *address,
                        bool *is_ipv6);

/* MHD_OPTION_EXTERNAL_LOGGER callback: libmicrohttpd's messages, logged at
 * warning level. */
void http_server_log(void *context, const char *format, va_list args);

/* Reads the port a started daemon is bound to, or 0. */
unsigned http_server_bound_port(struct MHD_Daemon *daemon);

/* How a reply is sent. */
struct http_reply {
	unsigned status;
	const char *content_type;  /* NULL: no Content-Type */
	char *body;
	size_t length;
	bool owned;                /* body was malloc'ed; the response frees it */
	bool close_connection;     /* add "Connection: close" */
	const char *header_name;   /* NULL, or one more header ... */
	const char *header_value;  /* ... with this value */
	const char *allow_origin;  /* NULL, or Access-Control-Allow-Origin */
};

/* Queues reply on connection.  An owned body is freed in every case.
 * Returns MHD_queue_response's result (MHD_NO when out of memory). */
enum MHD_Result http_server_reply(struct MHD_Connection *connection, const struct http_reply *reply);

#endif
