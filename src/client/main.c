/* main.c - gophermq(1): the command line, and one table row per command.
 *
 * Options may come before or after a command's arguments; each command
 * accepts the global options and those its row names, and refuses others.
 */
#include "autoconfig.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"

#define DEFAULT_URL "http://127.0.0.1:8082"
#define DEFAULT_METRICS_URL "http://127.0.0.1:9001/metrics"
#define DEFAULT_TIMEOUT_S 30
#define DEFAULT_BATCH_SIZE 500
#define DEFAULT_WATCH_S 2

/* Options that belong to some commands only: one bit each. */
enum {
	OPT_TTL = 1 << 0,
	OPT_BATCH = 1 << 1,
	OPT_BATCH_SIZE = 1 << 2,
	OPT_GROUP = 1 << 3,
	OPT_ACK = 1 << 4,
	OPT_ACK_WAIT = 1 << 5,
	OPT_MAX_DELIVER = 1 << 6,
	OPT_DEAD_LETTER = 1 << 7,
	OPT_MAX = 1 << 8,
	OPT_WAIT = 1 << 9,
	OPT_DELAY = 1 << 10,
	OPT_COUNT = 1 << 11,
	OPT_POLL = 1 << 12,
	OPT_JSON = 1 << 13,
	OPT_FORMAT = 1 << 14,
	OPT_WATCH = 1 << 15,
};
#define OPT_SUBSCRIBE (OPT_GROUP | OPT_ACK | OPT_ACK_WAIT | OPT_MAX_DELIVER | OPT_DEAD_LETTER)
#define OPT_OUTPUT (OPT_JSON | OPT_FORMAT)

struct command {
	const char *name;
	client_command_fn *run;
	int min_args, max_args;   /* max -1: any number */
	unsigned options;         /* the OPT_ bits it accepts */
	const char *synopsis;
};

static const struct command commands[] = {
	{"pub", command_pub, 1, 2, OPT_TTL | OPT_BATCH | OPT_BATCH_SIZE,
	 "pub SUBJECT [DATA|-] [--ttl MS] [--batch [--batch-size N]]"},
	{"sub", command_sub, 1, 1, OPT_SUBSCRIBE,
	 "sub SUBJECT [--group G] [--ack] [--ack-wait MS] [--max-deliver N] [--dead-letter SUBJECT]"},
	{"fetch", command_fetch, 2, 2, OPT_MAX | OPT_WAIT | OPT_OUTPUT,
	 "fetch SUBJECT ID [--max N] [--wait MS] [--json | --format FMT]"},
	{"ack", command_ack, 3, -1, 0, "ack SUBJECT ID SEQ..."},
	{"nack", command_nack, 3, -1, OPT_DELAY, "nack SUBJECT ID SEQ... [--delay MS]"},
	{"unsub", command_unsub, 2, 2, 0, "unsub SUBJECT ID"},
	{"tail", command_tail, 1, 1, OPT_SUBSCRIBE | OPT_COUNT | OPT_POLL | OPT_OUTPUT,
	 "tail SUBJECT [--group G] [--ack] [--ack-wait MS] [-C N] [--poll] [--json | --format FMT]"},
	{"stats", command_stats, 0, 1, OPT_WATCH, "stats [--watch [SECONDS]]"},
};

enum long_only {
	LONG_METRICS_URL = 256,
	LONG_CACERT,
	LONG_TIMEOUT,
	LONG_TTL,
	LONG_BATCH,
	LONG_BATCH_SIZE,
	LONG_ACK,
	LONG_ACK_WAIT,
	LONG_MAX_DELIVER,
	LONG_DEAD_LETTER,
	LONG_MAX,
	LONG_WAIT,
	LONG_DELAY,
	LONG_POLL,
	LONG_JSON,
	LONG_FORMAT,
	LONG_WATCH,
};

static const struct option long_options[] = {
	{"url", required_argument, NULL, 'u'},
	{"metrics-url", required_argument, NULL, LONG_METRICS_URL},
	{"token-file", required_argument, NULL, 'T'},
	{"cacert", required_argument, NULL, LONG_CACERT},
	{"timeout", required_argument, NULL, LONG_TIMEOUT},
	{"help", no_argument, NULL, 'h'},
	{"version", no_argument, NULL, 'V'},
	{"ttl", required_argument, NULL, LONG_TTL},
	{"batch", no_argument, NULL, LONG_BATCH},
	{"batch-size", required_argument, NULL, LONG_BATCH_SIZE},
	{"group", required_argument, NULL, 'g'},
	{"ack", no_argument, NULL, LONG_ACK},
	{"ack-wait", required_argument, NULL, LONG_ACK_WAIT},
	{"max-deliver", required_argument, NULL, LONG_MAX_DELIVER},
	{"dead-letter", required_argument, NULL, LONG_DEAD_LETTER},
	{"max", required_argument, NULL, LONG_MAX},
	{"wait", required_argument, NULL, LONG_WAIT},
	{"delay", required_argument, NULL, LONG_DELAY},
	{"count", required_argument, NULL, 'C'},
	{"poll", no_argument, NULL, LONG_POLL},
	{"json", no_argument, NULL, LONG_JSON},
	{"format", required_argument, NULL, LONG_FORMAT},
	{"watch", optional_argument, NULL, LONG_WATCH},
	{NULL, 0, NULL, 0},
};

volatile sig_atomic_t client_stop_requested;

static void on_stop_signal(int signal_number)
{
	client_stop_requested = signal_number;
}

void client_catch_stop_signals(void)
{
	/* No SA_RESTART: a sleep or a wait is cut short. */
	struct sigaction action = {.sa_handler = on_stop_signal};
	sigemptyset(&action.sa_mask);
	sigaction(SIGINT, &action, NULL);
	sigaction(SIGTERM, &action, NULL);
}

void client_error(const char *format, ...)
{
	va_list args;
	fflush(stdout);
	fputs("gophermq: ", stderr);
	va_start(args, format);
	vfprintf(stderr, format, args);
	va_end(args);
	fputc('\n', stderr);
}

bool client_parse_number(const char *text, int64_t min, int64_t max, const char *what, int64_t *out)
{
	char *end;
	errno = 0;
	long long value = strtoll(text, &end, 10);
	if (errno != 0 || end == text || *end != '\0' || value < min || value > max) {
		client_error("invalid %s '%s': a whole number from %lld to %lld (see gophermq --help)", what, text,
		             (long long)min, (long long)max);
		return false;
	}
	*out = value;
	return true;
}

static void print_help(void)
{
	printf("Usage: gophermq [OPTIONS] COMMAND [ARGUMENTS]\n\n"
	       "A client of the GopherMQ message broker.\n\nCommands:\n");
	for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
		printf("  gophermq %s\n", commands[i].synopsis);
	printf("\nOptions (any command):\n"
	       "  -u, --url URL          the broker's API (GOPHERMQ_URL, default " DEFAULT_URL ")\n"
	       "      --metrics-url URL  its metrics (GOPHERMQ_METRICS_URL, default " DEFAULT_METRICS_URL ")\n"
	       "  -T, --token-file FILE  send the token on its first line (GOPHERMQ_TOKEN_FILE)\n"
	       "      --cacert FILE      CA certificates to verify an https URL\n"
	       "      --timeout SECONDS  per request (default %d)\n"
	       "  -h, --help             print this help\n"
	       "  -V, --version          print the version\n\n"
	       "fetch and tail print each message's data on a line; --json prints\n"
	       "{\"seq\",\"subject\",\"attempt\",\"data\"} objects, --format FMT fills {seq},\n"
	       "{subject}, {attempt} and {data} in FMT.\n\n"
	       "Exit status: 0 done, 1 usage or local error, 2 refused by the broker,\n"
	       "3 broker unreachable.  See gophermq(1).\n",
	       DEFAULT_TIMEOUT_S);
}

static const struct command *find_command(const char *name)
{
	for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
		if (strcmp(commands[i].name, name) == 0)
			return &commands[i];
	return NULL;
}

/* An API base URL without its trailing slashes. */
static char *base_url(const char *url)
{
	if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) {
		client_error("invalid URL '%s': it must start with http:// or https://", url);
		return NULL;
	}
	char *copy = strdup(url);
	if (copy == NULL) {
		client_error("out of memory");
		return NULL;
	}
	size_t length = strlen(copy);
	while (length > 0 && copy[length - 1] == '/')
		copy[--length] = '\0';
	return copy;
}

static const char *option_name(int option)
{
	for (const struct option *entry = long_options; entry->name != NULL; entry++)
		if (entry->val == option)
			return entry->name;
	return "?";
}

/* The options that belong to some commands only, with their OPT_ bits. */
static const struct {
	int option;
	unsigned bit;
} command_options[] = {
	{LONG_TTL, OPT_TTL}, {LONG_BATCH, OPT_BATCH}, {LONG_BATCH_SIZE, OPT_BATCH_SIZE}, {'g', OPT_GROUP},
	{LONG_ACK, OPT_ACK}, {LONG_ACK_WAIT, OPT_ACK_WAIT}, {LONG_MAX_DELIVER, OPT_MAX_DELIVER},
	{LONG_DEAD_LETTER, OPT_DEAD_LETTER}, {LONG_MAX, OPT_MAX}, {LONG_WAIT, OPT_WAIT}, {LONG_DELAY, OPT_DELAY},
	{'C', OPT_COUNT}, {LONG_POLL, OPT_POLL}, {LONG_JSON, OPT_JSON}, {LONG_FORMAT, OPT_FORMAT},
	{LONG_WATCH, OPT_WATCH},
};
#define COMMAND_OPTION_COUNT (sizeof command_options / sizeof command_options[0])

static unsigned bit_of_option(int option)
{
	for (size_t i = 0; i < COMMAND_OPTION_COUNT; i++)
		if (command_options[i].option == option)
			return command_options[i].bit;
	return 0;
}

/* Parses a number option into *out, narrower than int64_t if need be. */
static bool take_long(const char *value, int64_t min, int64_t max, const char *what, long *out)
{
	int64_t number;
	if (!client_parse_number(value, min, max, what, &number))
		return false;
	*out = (long)number;
	return true;
}

/* Stores one option.  A number option left out keeps its default (0, or
 * -1 for --delay, where 0 means something), which the commands read as
 * "not given". */
static bool take_option(int option, const char *value, struct client_options *options)
{
	switch (option) {
	case 'u':
		options->url = value;
		return true;
	case LONG_METRICS_URL:
		options->metrics_url = value;
		return true;
	case 'T':
		options->token_file = value;
		return true;
	case LONG_CACERT:
		options->cacert = value;
		return true;
	case LONG_TIMEOUT:
		return take_long(value, 1, 86400, "--timeout", &options->timeout_s);
	case LONG_TTL:
		return client_parse_number(value, 1, INT64_MAX, "--ttl", &options->ttl_ms);
	case LONG_BATCH:
		options->batch = true;
		return true;
	case LONG_BATCH_SIZE:
		return take_long(value, 1, 1000000, "--batch-size", &options->batch_size);
	case 'g':
		options->group = value;
		return true;
	case LONG_ACK:
		options->ack = true;
		return true;
	case LONG_ACK_WAIT:
		return client_parse_number(value, 1, INT64_MAX, "--ack-wait", &options->ack_wait_ms);
	case LONG_MAX_DELIVER:
		return client_parse_number(value, 1, INT64_MAX, "--max-deliver", &options->max_deliver);
	case LONG_DEAD_LETTER:
		options->dead_letter = value;
		return true;
	case LONG_MAX:
		return client_parse_number(value, 1, INT64_MAX, "--max", &options->max);
	case LONG_WAIT:
		return client_parse_number(value, 0, INT64_MAX, "--wait", &options->wait_ms);
	case LONG_DELAY:
		return client_parse_number(value, 0, INT64_MAX, "--delay", &options->delay_ms);
	case 'C':
		return client_parse_number(value, 1, INT64_MAX, "--count", &options->count);
	case LONG_POLL:
		options->poll = true;
		return true;
	case LONG_JSON:
		options->output.kind = OUTPUT_JSON;
		return true;
	case LONG_FORMAT:
		options->output.kind = OUTPUT_FORMAT;
		options->output.template = value;
		return true;
	case LONG_WATCH:
		options->watch = true;
		return value == NULL || take_long(value, 1, 86400, "--watch", &options->watch_s);
	default:
		return false;
	}
}

/* The first option in used that command does not take, or 0. */
static int foreign_option(const struct command *command, unsigned used)
{
	for (size_t i = 0; i < COMMAND_OPTION_COUNT; i++)
		if (used & command_options[i].bit & ~command->options)
			return command_options[i].option;
	return 0;
}

/* Checks what the options and arguments say together. */
static bool check_command_line(const struct command *command, unsigned used, struct client_options *options,
                               struct client_args *args)
{
	int foreign = foreign_option(command, used);
	if (foreign != 0) {
		client_error("option --%s does not apply to %s (see gophermq --help)", option_name(foreign), command->name);
		return false;
	}
	/* stats --watch SECONDS: the interval may come as an argument. */
	if (command->run == command_stats && args->count == 1) {
		if (!options->watch) {
			client_error("stats takes no argument '%s' (see gophermq --help)", args->values[0]);
			return false;
		}
		if (!take_long(args->values[0], 1, 86400, "--watch", &options->watch_s))
			return false;
		args->count = 0;
	}
	if (args->count < command->min_args || (command->max_args >= 0 && args->count > command->max_args)) {
		client_error("usage: gophermq %s", command->synopsis);
		return false;
	}
	if ((used & OPT_JSON) && (used & OPT_FORMAT)) {
		client_error("--json and --format exclude each other");
		return false;
	}
	if (options->batch && args->count > 1) {
		client_error("pub --batch reads its messages from stdin: no DATA argument");
		return false;
	}
	if ((used & OPT_BATCH_SIZE) && !options->batch) {
		client_error("--batch-size needs --batch");
		return false;
	}
	return true;
}

int main(int argc, char **argv)
{
	struct client_options options = {
		.url = getenv("GOPHERMQ_URL"),
		.metrics_url = getenv("GOPHERMQ_METRICS_URL"),
		.token_file = getenv("GOPHERMQ_TOKEN_FILE"),
		.timeout_s = DEFAULT_TIMEOUT_S,
		.batch_size = DEFAULT_BATCH_SIZE,
		.delay_ms = -1,
		.watch_s = DEFAULT_WATCH_S,
		.output = {.kind = OUTPUT_DATA},
	};
	if (options.url == NULL || options.url[0] == '\0')
		options.url = DEFAULT_URL;
	if (options.metrics_url == NULL || options.metrics_url[0] == '\0')
		options.metrics_url = DEFAULT_METRICS_URL;
	if (options.token_file != NULL && options.token_file[0] == '\0')
		options.token_file = NULL;

	unsigned used = 0;
	int option;
	opterr = 0;
	while ((option = getopt_long(argc, argv, ":u:T:g:C:hV", long_options, NULL)) != -1) {
		switch (option) {
		case 'h':
			print_help();
			return EXIT_OK;
		case 'V':
			printf("gophermq %s\n", PACKAGE_VERSION);
			return EXIT_OK;
		case '?':
			if (optopt != 0)
				client_error("unknown option -%c (see gophermq --help)", optopt);
			else
				client_error("unknown option %s (see gophermq --help)", argv[optind - 1]);
			return EXIT_USAGE;
		case ':':
			client_error("option %s needs a value (see gophermq --help)", argv[optind - 1]);
			return EXIT_USAGE;
		default:
			if (!take_option(option, optarg, &options))
				return EXIT_USAGE;
			used |= bit_of_option(option);
		}
	}
	if (optind >= argc) {
		client_error("no command given (see gophermq --help)");
		return EXIT_USAGE;
	}
	const struct command *command = find_command(argv[optind]);
	if (command == NULL) {
		client_error("unknown command '%s' (see gophermq --help)", argv[optind]);
		return EXIT_USAGE;
	}
	struct client_args args = {.count = argc - optind - 1, .values = argv + optind + 1};
	if (!check_command_line(command, used, &options, &args))
		return EXIT_USAGE;

	char *url = base_url(options.url);
	if (url == NULL)
		return EXIT_USAGE;
	options.url = url;
	int result = command->run(&options, &args);
	free(url);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		client_error("cannot write the output: %s", strerror(errno));
		if (result == EXIT_OK)
			result = EXIT_USAGE;
	}
	return result;
}
