/* ceiling.c - the cheapest HTTP server the benchmarks compare gophermqd with.
 *
 * libmicrohttpd with an epoll internal thread and a pool of one thread per
 * CPU it may run on, sized as gophermqd sizes its own (the fastest MHD mode
 * measured on the benchmark machines), and the two settings of gophermqd's
 * that make libmicrohttpd cheaper per request: MHD_USE_TURBO and an 8 KiB
 * connection memory pool (MHD clears the pool between requests; at its
 * 32 KiB default that is about a tenth of this server's CPU time).  Every
 * request is answered the same way whatever its method or path: the whole
 * body is read and discarded, and the reply is the fixed JSON a successful
 * publish gets, with the Content-Type the broker uses.  Whatever CPU time
 * gophermqd spends per request beyond this server's is the broker's own cost.
 *
 * Usage: ceiling [-p PORT] [-t THREADS] [-a ADDRESS] [-m BYTES]
 *   -p PORT     port to listen on; 0 (the default) picks a free one
 *   -t THREADS  MHD thread pool size; 0 (the default) = one per CPU in
 *               its affinity mask
 *   -a ADDRESS  IPv4 address to bind; default 127.0.0.1 (loopback only)
 *   -m BYTES    MHD_OPTION_CONNECTION_MEMORY_LIMIT; default gophermqd's
 *               (HTTP_CONNECTION_MEMORY, 8 KiB); 0 keeps MHD's own (32 KiB)
 * Prints the port it listens on, on a line of its own on stdout, once it
 * accepts connections.  SIGTERM or SIGINT stops it cleanly (exit status 0).
 */
#include "autoconfig.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>

/* gophermqd's settings, thread count and Content-Type, to compare like
 * with like. */
#include "cpus.h"
#include "http_server.h"

#if MHD_VERSION < 0x00097002
#define CEILING_RESULT int
#else
#define CEILING_RESULT enum MHD_Result
#endif

static const char reply_body[] = "{\"status\":\"ok\"}\n";

/* The one reply, shared by every connection (MHD counts its references). */
static struct MHD_Response *reply;

/* A non-NULL marker for "this request's headers have been seen". */
static int request_started;

/* MHD access handler: swallows the body, then queues the shared reply. */
static CEILING_RESULT ceiling_answer(void *closure, struct MHD_Connection *connection,
                                     const char *url, const char *method, const char *version,
                                     const char *upload_data, size_t *upload_data_size,
                                     void **request_state)
{
	(void)closure;
	(void)url;
	(void)method;
	(void)version;
	(void)upload_data;

	if (*request_state == NULL) {
		*request_state = &request_started;
		return MHD_YES;
	}
	if (*upload_data_size != 0) {
		*upload_data_size = 0;
		return MHD_YES;
	}
	return MHD_queue_response(connection, MHD_HTTP_OK, reply);
}

static void ceiling_usage(FILE *stream)
{
	fputs("usage: ceiling [-p PORT] [-t THREADS] [-a ADDRESS] [-m BYTES]\n", stream);
}

/* Parses a decimal number in [0, max]; returns -1 when it is not one. */
static long ceiling_parse_number(const char *text, long max)
{
	char *end;
	long value;

	errno = 0;
	value = strtol(text, &end, 10);
	if (errno != 0 || end == text || *end != '\0' || value < 0 || value > max)
		return -1;
	return value;
}

int main(int argc, char **argv)
{
	struct sockaddr_in address;
	const union MHD_DaemonInfo *info;
	struct MHD_Daemon *daemon_handle;
	const char *bind_address = "127.0.0.1";
	long port = 0;
	long threads = 0;
	long memory_limit = HTTP_CONNECTION_MEMORY;
	struct MHD_OptionItem pool_options[] = {
		{ MHD_OPTION_END, 0, NULL },   /* the pool, once threads is known */
		{ MHD_OPTION_END, 0, NULL },
	};
	sigset_t stop_signals;
	int signal_number;
	int option;

	while ((option = getopt(argc, argv, "p:t:a:m:h")) != -1) {
		switch (option) {
		case 'p':
			port = ceiling_parse_number(optarg, 65535);
			if (port < 0) {
				fprintf(stderr, "ceiling: bad port '%s'\n", optarg);
				return 2;
			}
			break;
		case 't':
			threads = ceiling_parse_number(optarg, 1024);
			if (threads < 0) {
				fprintf(stderr, "ceiling: bad thread count '%s'\n", optarg);
				return 2;
			}
			break;
		case 'a':
			bind_address = optarg;
			break;
		case 'm':
			memory_limit = ceiling_parse_number(optarg, 1L << 30);
			if (memory_limit < 0) {
				fprintf(stderr, "ceiling: bad memory limit '%s'\n", optarg);
				return 2;
			}
			break;
		case 'h':
			ceiling_usage(stdout);
			return 0;
		default:
			ceiling_usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		ceiling_usage(stderr);
		return 2;
	}
	if (threads == 0)
		threads = (long)cpus_usable();

	memset(&address, 0, sizeof(address));
	address.sin_family = AF_INET;
	address.sin_port = htons((unsigned short)port);
	if (inet_pton(AF_INET, bind_address, &address.sin_addr) != 1) {
		fprintf(stderr, "ceiling: bad IPv4 address '%s'\n", bind_address);
		return 2;
	}

	/* Only the main thread takes the stop signals: block them before MHD
	 * starts its threads, which inherit the mask. */
	sigemptyset(&stop_signals);
	sigaddset(&stop_signals, SIGTERM);
	sigaddset(&stop_signals, SIGINT);
	if (pthread_sigmask(SIG_BLOCK, &stop_signals, NULL) != 0) {
		fputs("ceiling: cannot block signals\n", stderr);
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);

	reply = MHD_create_response_from_buffer(sizeof(reply_body) - 1, (void *)reply_body,
	                                        MHD_RESPMEM_PERSISTENT);
	if (reply == NULL ||
	    MHD_add_response_header(reply, MHD_HTTP_HEADER_CONTENT_TYPE,
	                            HTTP_JSON_CONTENT_TYPE) != MHD_YES) {
		fputs("ceiling: cannot build the reply\n", stderr);
		return 1;
	}

	pool_options[0] = http_server_pool_option((unsigned)threads);
	daemon_handle = MHD_start_daemon(MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ERROR_LOG
	                                 | MHD_USE_TURBO,
	                                 0, NULL, NULL, ceiling_answer, NULL,
	                                 MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&address,
	                                 MHD_OPTION_ARRAY, pool_options,
	                                 MHD_OPTION_CONNECTION_LIMIT, (unsigned int)10000,
	                                 MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned int)1024,
	                                 memory_limit > 0 ? MHD_OPTION_CONNECTION_MEMORY_LIMIT
	                                                  : MHD_OPTION_END,
	                                 (size_t)memory_limit,
	                                 MHD_OPTION_END);
	if (daemon_handle == NULL) {
		fprintf(stderr, "ceiling: cannot listen on %s:%ld\n", bind_address, port);
		MHD_destroy_response(reply);
		return 1;
	}
	info = MHD_get_daemon_info(daemon_handle, MHD_DAEMON_INFO_BIND_PORT);
	if (info == NULL || info->port == 0) {
		fputs("ceiling: cannot tell which port it listens on\n", stderr);
		MHD_stop_daemon(daemon_handle);
		MHD_destroy_response(reply);
		return 1;
	}
	printf("%u\n", (unsigned)info->port);
	fflush(stdout);

	do {
		signal_number = 0;
	} while (sigwait(&stop_signals, &signal_number) != 0 || signal_number == 0);

	MHD_stop_daemon(daemon_handle);
	MHD_destroy_response(reply);
	return 0;
}
