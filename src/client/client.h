/* client.h - what the commands of gophermq(1) share: the options the user
 * gave, the exit codes, and the command functions of the dispatch table.
 */
#ifndef GOPHERMQ_CLIENT_H
#define GOPHERMQ_CLIENT_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "output.h"

/* The exit codes gophermq(1) documents. */
enum client_exit {
	EXIT_OK = 0,
	EXIT_USAGE = 1,       /* bad command line, or a local error (files, stdin) */
	EXIT_REFUSED = 2,     /* the broker answered with an error status */
	EXIT_UNREACHABLE = 3, /* no answer from the broker, or one we cannot use */
};

/* Everything the command line said; a command reads what applies to it
 * (main.c refuses an option that does not apply). */
struct client_options {
	/* global */
	const char *url;         /* API base URL, without a trailing slash */
	const char *metrics_url;
	const char *token_file;
	const char *cacert;
	long timeout_s;          /* per request */

	/* Numbers left out are 0 (delay_ms: -1): "not given". */

	/* pub */
	int64_t ttl_ms;
	bool batch;
	long batch_size;

	/* sub, tail */
	const char *group;
	bool ack;
	int64_t ack_wait_ms;
	int64_t max_deliver;
	const char *dead_letter;

	/* fetch */
	int64_t max;
	int64_t wait_ms;

	/* nack */
	int64_t delay_ms;

	/* tail */
	int64_t count;           /* 0: until interrupted */
	bool poll;

	/* stats */
	bool watch;
	long watch_s;

	/* fetch, tail */
	struct output_format output;
};

/* The positional arguments after the command's name. */
struct client_args {
	int count;
	char **values;
};

typedef int client_command_fn(const struct client_options *options, const struct client_args *args);

client_command_fn command_pub;
client_command_fn command_sub;
client_command_fn command_fetch;
client_command_fn command_ack;
client_command_fn command_nack;
client_command_fn command_unsub;
client_command_fn command_tail;
client_command_fn command_stats;

/* Set by SIGINT or SIGTERM once client_catch_stop_signals() ran: the
 * commands that run until interrupted (tail, stats --watch) end cleanly. */
extern volatile sig_atomic_t client_stop_requested;
void client_catch_stop_signals(void);

/* Prints "gophermq: MESSAGE" on one line of stderr. */
void client_error(const char *format, ...) __attribute__((format(printf, 1, 2)));

/* Parses a whole decimal number in [min, max]; false (and an error line
 * naming what) otherwise. */
bool client_parse_number(const char *text, int64_t min, int64_t max, const char *what, int64_t *out);

#endif
