/* main.c - gophermqd: command line, start-up, the main loop (signals,
 * reload, idle expiry, watchdog) and orderly shutdown.
 *
 * Threads: libmicrohttpd's API pool and metrics thread, and the async
 * publish workers.  Signals are blocked before any of them starts and are
 * read here from a signalfd, so reload and shutdown run in this thread only.
 */
#include "autoconfig.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "api.h"
#include "auth.h"
#include "broker.h"
#include "config.h"
#include "http_api.h"
#include "http_metrics.h"
#include "journal.h"
#include "log.h"
#include "metrics.h"
#include "monotonic.h"
#include "notify.h"
#include "pool.h"
#include "stream.h"

#ifndef GOPHERMQ_CONF
#define GOPHERMQ_CONF "/etc/gophermq.conf"
#endif

/* How long shutdown waits for requests in flight. */
#define SHUTDOWN_GRACE_MS 3000

/* Longest sleep of the main loop: idle expiry and status run this often. */
#define MAIN_LOOP_TICK_MS 1000

struct options {
	const char *config_path;
	const char *pid_file;
	bool foreground;
	bool check_only;
};

struct daemon {
	const char *config_path;
	struct config config;
	struct broker *broker;
	struct journal *journal;      /* NULL: persistence = none */
	double replay_seconds;
	pthread_t compactor;          /* a compaction in the background */
	bool compactor_started;
	atomic_bool compacting;
	struct pool *pool;
	struct api_context api;
	struct http_api *http;
	struct http_metrics *metrics;
	struct auth_guard *api_auth;
	struct auth_guard *metrics_auth;
	double start_time;
};

/* Token sets named by a configuration, loaded before it is applied. */
struct daemon_tokens {
	struct auth_tokens *api;      /* NULL: authentication off */
	struct auth_tokens *metrics;
};

/* Loads the token file at path ("" = none, *tokens NULL).  Returns 0, or
 * -1 with the reason in error. */
static int tokens_load(const char *option, const char *path, struct auth_tokens **tokens,
                       char *error, size_t error_size)
{
	char reason[400];

	*tokens = NULL;
	if (path[0] == '\0')
		return 0;
	*tokens = auth_tokens_load(path, reason, sizeof(reason));
	if (*tokens == NULL) {
		snprintf(error, error_size, "%s: %s", option, reason);
		return -1;
	}
	return 0;
}

static int daemon_tokens_load(const struct config *config, struct daemon_tokens *tokens,
                              char *error, size_t error_size)
{
	if (tokens_load("auth_token_file", config->auth_token_file, &tokens->api, error, error_size) != 0)
		return -1;
	if (tokens_load("metrics_auth_token_file", config->metrics_auth_token_file, &tokens->metrics,
	                error, error_size) != 0) {
		auth_tokens_free(tokens->api);
		tokens->api = NULL;
		return -1;
	}
	return 0;
}

static void usage(FILE *stream)
{
	fprintf(stream,
	        "Usage: gophermqd [-f] [-t] [-c FILE] [-p PIDFILE]\n"
	        "       gophermqd -V | -h\n"
	        "\n"
	        "GopherMQ message broker daemon: an HTTP/JSON API to publish, subscribe\n"
	        "and fetch messages, with Prometheus metrics.\n"
	        "\n"
	        "  -c FILE     read the configuration from FILE (default %s)\n"
	        "  -f          stay in the foreground and log to stderr as well as syslog\n"
	        "  -t          check the configuration file, then exit 0 if valid, 1 if not\n"
	        "  -p PIDFILE  write the daemon's process id to PIDFILE\n"
	        "  -V          print the version and exit\n"
	        "  -h          print this help and exit\n"
	        "\n"
	        "Signals: SIGHUP reloads the configuration; SIGTERM or SIGINT stop the daemon.\n"
	        "See gophermqd(8) and gophermq.conf(5).\n",
	        GOPHERMQ_CONF);
}

/* Returns 0 to go on, or an exit status + 1 to exit with. */
static int parse_options(int argc, char **argv, struct options *options)
{
	int option;

	options->config_path = GOPHERMQ_CONF;
	opterr = 0;
	while ((option = getopt(argc, argv, "c:fhp:tV")) != -1) {
		switch (option) {
		case 'c':
			options->config_path = optarg;
			break;
		case 'f':
			options->foreground = true;
			break;
		case 'p':
			options->pid_file = optarg;
			break;
		case 't':
			options->check_only = true;
			break;
		case 'V':
			printf("gophermqd %s\n", PACKAGE_VERSION);
			return 1 + EXIT_SUCCESS;
		case 'h':
			usage(stdout);
			return 1 + EXIT_SUCCESS;
		default:
			if (optopt == 'c' || optopt == 'p')
				fprintf(stderr, "gophermqd: option -%c needs an argument\n", optopt);
			else
				fprintf(stderr, "gophermqd: unknown option -%c\n", optopt);
			usage(stderr);
			return 1 + EXIT_FAILURE;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "gophermqd: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 1 + EXIT_FAILURE;
	}
	return 0;
}

/* True when stderr is the systemd journal (JOURNAL_STREAM names its
 * device:inode): syslog reaches the journal already, so writing to stderr
 * as well would log every line twice. */
static bool stderr_is_journal(void)
{
	const char *stream = getenv("JOURNAL_STREAM");
	unsigned long long device, inode;
	struct stat status;

	if (stream == NULL || sscanf(stream, "%llu:%llu", &device, &inode) != 2)
		return false;
	if (fstat(STDERR_FILENO, &status) != 0)
		return false;
	return (unsigned long long)status.st_dev == device && (unsigned long long)status.st_ino == inode;
}

static void broker_limits_from_config(const struct config *config, struct broker_limits *limits)
{
	limits->max_pending = config->max_pending;
	limits->max_pending_bytes = config->max_pending_bytes;
	limits->max_subject_length = (size_t)config->max_subject_length;
	limits->ack_wait_ms = config->ack_wait_ms;
	limits->fetch_max_batch = config->fetch_max_batch;
	limits->max_parked_fetches = config->max_parked_fetches;
	limits->message_ttl_ms = config->message_ttl_ms;
}

/* The API's reloadable limits. */
static void api_limits_from_config(struct api_context *api, const struct config *config)
{
	atomic_store(&api->max_message_size, config->max_message_size);
	atomic_store(&api->max_subject_length, config->max_subject_length);
	atomic_store(&api->fetch_max_wait_ms, config->fetch_max_wait_ms);
	atomic_store(&api->max_batch_messages, config->max_batch_messages);
	atomic_store(&api->max_batch_bytes, config->max_batch_bytes);
	atomic_store(&api->stream_keepalive_ms, (uint64_t)config->stream_keepalive_s * 1000u);
}

/* Applies every reloadable option of config to the running modules. */
static void daemon_apply_live_options(struct daemon *daemon, const struct config *config)
{
	struct broker_limits limits;

	broker_limits_from_config(config, &limits);
	broker_set_limits(daemon->broker, &limits);
	api_limits_from_config(&daemon->api, config);
	if (pool_resize(daemon->pool, config->pool_size, config->async_queue_size) != 0)
		log_warning("could not start all %u async workers; running with %u",
		            config->pool_size, pool_threads(daemon->pool));
	log_set_level(config->log_level);
	if (daemon->journal)
		journal_set_fsync(daemon->journal, (enum journal_fsync)config->fsync);
}

static void collect_metrics(struct metrics_snapshot *snapshot, void *context)
{
	struct daemon *daemon = context;

	broker_get_stats(daemon->broker, &snapshot->broker);
	snapshot->async_queue_depth = pool_depth(daemon->pool);
	snapshot->async_workers = pool_threads(daemon->pool);
	snapshot->connections = daemon->http != NULL ? http_api_connections(daemon->http) : 0;
	snapshot->streams = api_stream_open_count();
	snapshot->stream_events = api_stream_events_sent();
	snapshot->start_time_seconds = daemon->start_time;
	snapshot->persistence = daemon->journal != NULL;
	if (daemon->journal)
		journal_get_stats(daemon->journal, &snapshot->journal);
	snapshot->replay_seconds = daemon->replay_seconds;
}

static void report_restart_option(const char *option, void *context)
{
	const char *path = context;

	log_warning("reload: option '%s' changed in %s: needs restart, not applied", option, path);
}

/* Ends a refused reload: the running configuration was not touched. */
static void reload_refused(const char *reason)
{
	log_error("reload failed, keeping the running configuration: %s", reason);
	metrics_count(METRICS_RELOAD_FAILURES);
	notify_ready();
}

/* Re-reads the configuration file: parse, validate, then swap.  On any
 * error the running configuration stays exactly as it was. */
static void daemon_reload(struct daemon *daemon)
{
	struct config fresh;
	struct daemon_tokens tokens;
	char error[512];

	notify_reloading();
	log_info("reloading configuration from %s", daemon->config_path);
	if (config_load(daemon->config_path, &fresh, error, sizeof(error)) != 0) {
		reload_refused(error);
		return;
	}
	if (daemon_tokens_load(&fresh, &tokens, error, sizeof(error)) != 0) {
		config_clear(&fresh);
		reload_refused(error);
		return;
	}
	config_restart_changes(&daemon->config, &fresh, report_restart_option, (void *)daemon->config_path);
	if (config_keep_restart_options(&fresh, &daemon->config) != 0) {
		auth_tokens_free(tokens.api);
		auth_tokens_free(tokens.metrics);
		config_clear(&fresh);
		reload_refused("out of memory");
		return;
	}
	daemon_apply_live_options(daemon, &fresh);
	auth_guard_replace(daemon->api_auth, tokens.api);
	auth_guard_replace(daemon->metrics_auth, tokens.metrics);
	config_clear(&daemon->config);
	daemon->config = fresh;
	metrics_count(METRICS_RELOADS);
	log_notice("configuration reloaded from %s", daemon->config_path);
	notify_ready();
}

/* Messages live in many small allocations, and glibc gives memory back
 * to the system only from the top of its heaps, so a drained backlog would
 * keep the daemon's RSS at its peak.  Once the bytes held by messages are
 * MESSAGE_MEMORY_TRIM_BYTES or more below their peak since the last time,
 * malloc_trim() returns the free pages.  Messages are counted as they are
 * freed, so the memory is free by the time the drop is seen. */
#define MESSAGE_MEMORY_TRIM_BYTES (16u << 20)

static void daemon_return_memory(void)
{
	uint64_t held, peak;

	broker_message_memory(&held, &peak);
	if (peak < held || peak - held < MESSAGE_MEMORY_TRIM_BYTES)
		return;
	malloc_trim(0);
	log_debug("returned free memory after messages fell from %llu to %llu bytes",
	          (unsigned long long)peak, (unsigned long long)held);
	broker_message_memory_mark();
}

static void daemon_update_status(struct daemon *daemon)
{
	struct broker_stats stats;

	broker_get_stats(daemon->broker, &stats);
	notify_status("%llu subscribers, %llu messages pending, %llu published",
	              (unsigned long long)stats.subscribers, (unsigned long long)stats.pending,
	              (unsigned long long)stats.published);
}

static void format_endpoint(char *buffer, size_t size, const char *address, unsigned port)
{
	if (strchr(address, ':') != NULL)
		snprintf(buffer, size, "[%s]:%u", address, port);
	else
		snprintf(buffer, size, "%s:%u", address, port);
}

/* STATUS= while the journal is replayed. */
static void replay_progress(void *context, uint64_t done, uint64_t total)
{
	(void)context;
	notify_status("replaying the journal: %llu of %llu MiB",
	              (unsigned long long)(done >> 20), (unsigned long long)(total >> 20));
}

/* Opens the data directory, rebuilds the broker from its log and starts
 * recording.  Returns 0 or -1 (logged). */
static int daemon_open_journal(struct daemon *daemon)
{
	char error[512];
	struct timespec begin, end;
	struct broker_stats stats;

	daemon->journal = journal_open(daemon->config.data_dir, daemon->config.segment_size,
	                               error, sizeof(error));
	if (daemon->journal == NULL) {
		log_error("%s", error);
		return -1;
	}
	clock_gettime(CLOCK_MONOTONIC, &begin);
	if (broker_replay(daemon->broker, daemon->journal, replay_progress, daemon, error, sizeof(error)) != 0) {
		log_error("cannot read the journal: %s", error);
		return -1;
	}
	clock_gettime(CLOCK_MONOTONIC, &end);
	daemon->replay_seconds = (double)(end.tv_sec - begin.tv_sec) + (double)(end.tv_nsec - begin.tv_nsec) / 1e9;
	broker_get_stats(daemon->broker, &stats);
	log_notice("journal in %s replayed in %.3f s: subscribers %llu, messages pending %llu, last seq %llu",
	           daemon->config.data_dir, daemon->replay_seconds, (unsigned long long)stats.subscribers,
	           (unsigned long long)stats.pending, (unsigned long long)stats.last_seq);
	if (journal_start(daemon->journal, (enum journal_fsync)daemon->config.fsync, error, sizeof(error)) != 0) {
		log_error("%s", error);
		return -1;
	}
	broker_set_journal(daemon->broker, daemon->journal);
	daemon->api.journal = daemon->journal;
	return 0;
}

static void *compactor_main(void *argument)
{
	struct daemon *daemon = argument;
	struct timespec begin, end;

	clock_gettime(CLOCK_MONOTONIC, &begin);
	if (broker_compact(daemon->broker, daemon->journal) == 0) {
		clock_gettime(CLOCK_MONOTONIC, &end);
		log_info("journal compacted in %.3f s",
		         (double)(end.tv_sec - begin.tv_sec) + (double)(end.tv_nsec - begin.tv_nsec) / 1e9);
	}
	atomic_store(&daemon->compacting, false);
	return NULL;
}

/* Starts a compaction when the log since the last one has grown past
 * compact_min_size and past twice an estimate of the live state. */
static void daemon_maybe_compact(struct daemon *daemon)
{
	struct broker_stats stats;
	uint64_t log_bytes, live;

	if (!daemon->journal || atomic_load(&daemon->compacting))
		return;
	if (daemon->compactor_started) {
		pthread_join(daemon->compactor, NULL);
		daemon->compactor_started = false;
	}
	log_bytes = journal_log_bytes(daemon->journal);
	if (log_bytes < daemon->config.compact_min_size)
		return;
	broker_get_stats(daemon->broker, &stats);
	live = stats.pending_bytes + 32 * stats.pending + 128 * stats.subscribers;
	if (log_bytes < 2 * live)
		return;
	atomic_store(&daemon->compacting, true);
	if (pthread_create(&daemon->compactor, NULL, compactor_main, daemon) != 0) {
		atomic_store(&daemon->compacting, false);
		return;
	}
	daemon->compactor_started = true;
}

/* Starts the broker, the worker pool and both listeners.  Returns 0, or -1
 * with everything already started stopped again. */
static int daemon_start(struct daemon *daemon)
{
	struct broker_limits limits;
	struct http_api_options http_options;
	struct daemon_tokens tokens;
	char error[512], endpoint[128];
	unsigned http_threads;

	if (daemon_tokens_load(&daemon->config, &tokens, error, sizeof(error)) != 0) {
		log_error("%s", error);
		return -1;
	}
	daemon->api_auth = auth_guard_new(tokens.api);
	daemon->metrics_auth = auth_guard_new(tokens.metrics);
	if (daemon->api_auth == NULL || daemon->metrics_auth == NULL) {
		if (daemon->api_auth == NULL)
			auth_tokens_free(tokens.api);
		if (daemon->metrics_auth == NULL)
			auth_tokens_free(tokens.metrics);
		log_error("cannot set up authentication: out of memory");
		return -1;
	}

	broker_limits_from_config(&daemon->config, &limits);
	daemon->broker = broker_new(&limits);
	if (daemon->broker == NULL) {
		log_error("cannot create the broker: out of memory");
		return -1;
	}
	daemon->pool = pool_new(daemon->config.pool_size, daemon->config.async_queue_size);
	if (daemon->pool == NULL)
		return -1;
	daemon->api.broker = daemon->broker;
	daemon->api.pool = daemon->pool;
	api_limits_from_config(&daemon->api, &daemon->config);
	if (daemon->config.persistence == CONFIG_PERSISTENCE_LOG && daemon_open_journal(daemon) != 0)
		return -1;
	if (broker_timer_start(daemon->broker) != 0) {
		log_error("cannot start the timer thread: %s", strerror(errno));
		return -1;
	}

	http_options = (struct http_api_options) {
		.listen = daemon->config.listen,
		.port = daemon->config.port,
		.threads = daemon->config.http_threads,
		.max_connections = daemon->config.max_connections,
		.connection_timeout = daemon->config.connection_timeout,
		.auth = daemon->api_auth,
		.tls_cert_file = daemon->config.tls_cert_file,
		.tls_key_file = daemon->config.tls_key_file,
		.cors_origin = daemon->config.cors_origin,
	};
	daemon->http = http_api_start(&http_options, &daemon->api, error, sizeof(error));
	if (daemon->http == NULL) {
		log_error("%s", error);
		return -1;
	}
	format_endpoint(endpoint, sizeof(endpoint), daemon->config.listen, http_api_port(daemon->http));
	http_threads = http_api_threads(daemon->http);
	log_notice("api listening on %s%s with %u HTTP thread%s", endpoint,
	           daemon->config.tls_cert_file[0] ? " (TLS)" : "", http_threads,
	           http_threads == 1 ? "" : "s");

	daemon->metrics = http_metrics_start(daemon->config.metrics_listen, daemon->config.metrics_port,
	                                     daemon->metrics_auth, collect_metrics, daemon,
	                                     error, sizeof(error));
	if (daemon->metrics == NULL) {
		log_error("%s", error);
		return -1;
	}
	format_endpoint(endpoint, sizeof(endpoint), daemon->config.metrics_listen,
	                http_metrics_port(daemon->metrics));
	log_notice("metrics listening on %s", endpoint);
	return 0;
}

/* Stops serving in the order that loses nothing: no new connections,
 * requests in flight finish, then the async queue drains into the broker. */
static void daemon_stop(struct daemon *daemon)
{
	struct broker_stats stats;

	if (daemon->http != NULL) {
		unsigned left;

		/* Streams end, held fetches are answered with what they have,
		 * and no fetch is held from now on, so the requests in flight
		 * can finish. */
		api_stream_end_all();
		if (daemon->broker != NULL)
			broker_wake_all(daemon->broker);
		left = http_api_quiesce(daemon->http, SHUTDOWN_GRACE_MS);
		if (left != 0)
			log_warning("shutdown: %u request(s) still in flight after %u ms; closing", left,
			            SHUTDOWN_GRACE_MS);
		http_api_stop(daemon->http);
		daemon->http = NULL;
	}
	http_metrics_stop(daemon->metrics);
	daemon->metrics = NULL;
	pool_free(daemon->pool);
	daemon->pool = NULL;
	if (daemon->compactor_started) {
		pthread_join(daemon->compactor, NULL);
		daemon->compactor_started = false;
	}
	if (daemon->broker != NULL) {
		broker_get_stats(daemon->broker, &stats);
		log_notice("shutdown complete: %llu published, %llu delivered, %llu pending",
		           (unsigned long long)stats.published, (unsigned long long)stats.delivered,
		           (unsigned long long)stats.pending);
		broker_free(daemon->broker);
		daemon->broker = NULL;
	}
	/* Last: what the broker recorded is synced as the fsync mode says. */
	journal_close(daemon->journal);
	daemon->journal = NULL;
	auth_guard_free(daemon->api_auth);
	auth_guard_free(daemon->metrics_auth);
	daemon->api_auth = NULL;
	daemon->metrics_auth = NULL;
}

/* Runs until SIGTERM or SIGINT.  Returns 0, or -1 when signals cannot be
 * read. */
static int daemon_run(struct daemon *daemon, int signal_fd)
{
	uint64_t watchdog_usec = notify_watchdog_usec();
	uint64_t watchdog_interval_ms = watchdog_usec / 2000u;
	uint64_t next_watchdog_ms = 0;

	for (;;) {
		uint64_t now_ms = monotonic_ms();
		int timeout_ms = MAIN_LOOP_TICK_MS;
		struct pollfd poll_fd = { .fd = signal_fd, .events = POLLIN };

		if (watchdog_interval_ms != 0) {
			if (now_ms >= next_watchdog_ms) {
				notify_watchdog_ping();
				next_watchdog_ms = now_ms + watchdog_interval_ms;
			}
			if (next_watchdog_ms - now_ms < (uint64_t)timeout_ms)
				timeout_ms = (int)(next_watchdog_ms - now_ms);
		}

		int ready = poll(&poll_fd, 1, timeout_ms);
		if (ready < 0 && errno != EINTR) {
			log_error("poll: %s", strerror(errno));
			return -1;
		}
		if (ready > 0) {
			struct signalfd_siginfo info;
			ssize_t got = read(signal_fd, &info, sizeof(info));
			if (got == (ssize_t)sizeof(info)) {
				if (info.ssi_signo == SIGHUP) {
					daemon_reload(daemon);
				} else if (info.ssi_signo == SIGTERM || info.ssi_signo == SIGINT) {
					log_notice("received %s, shutting down",
					           info.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT");
					return 0;
				}
			}
		}

		if (daemon->config.subscriber_ttl != 0) {
			size_t expired = broker_expire_idle(daemon->broker, (uint64_t)(monotonic_ms() / 1000u),
			                                    daemon->config.subscriber_ttl);
			if (expired != 0)
				log_info("expired %zu idle subscriber(s)", expired);
		}
		unsigned cut = http_api_sweep(daemon->http);
		if (cut != 0)
			log_info("closed %u connection(s) that took longer than connection_timeout", cut);
		daemon_return_memory();
		daemon_maybe_compact(daemon);
		daemon_update_status(daemon);
	}
}

/* Forks into the background.  The parent waits until the child reports
 * start-up success or failure through a pipe and exits with that status,
 * so "gophermqd && echo started" tells the truth.  Returns the write end
 * of the pipe in the child. */
static int daemon_background(void)
{
	int status_pipe[2];
	pid_t child;

	if (pipe(status_pipe) != 0) {
		log_error("pipe: %s", strerror(errno));
		exit(EXIT_FAILURE);
	}
	child = fork();
	if (child < 0) {
		log_error("fork: %s", strerror(errno));
		exit(EXIT_FAILURE);
	}
	if (child > 0) {
		char status = 1;
		close(status_pipe[1]);
		if (read(status_pipe[0], &status, 1) != 1)
			status = 1;
		_exit(status == 0 ? EXIT_SUCCESS : EXIT_FAILURE);
	}
	close(status_pipe[0]);
	if (setsid() < 0)
		log_warning("setsid: %s", strerror(errno));
	if (chdir("/") != 0)
		log_warning("chdir /: %s", strerror(errno));
	return status_pipe[1];
}

static void background_report(int status_fd, bool started)
{
	char status = started ? 0 : 1;
	int null_fd;

	if (status_fd < 0)
		return;
	if (write(status_fd, &status, 1) != 1)
		log_warning("cannot report start-up to the parent: %s", strerror(errno));
	close(status_fd);
	null_fd = open("/dev/null", O_RDWR);
	if (null_fd >= 0) {
		dup2(null_fd, STDIN_FILENO);
		dup2(null_fd, STDOUT_FILENO);
		dup2(null_fd, STDERR_FILENO);
		if (null_fd > STDERR_FILENO)
			close(null_fd);
	}
}

static int pid_file_write(const char *path)
{
	FILE *file = fopen(path, "w");

	if (file == NULL) {
		log_error("cannot write pid file %s: %s", path, strerror(errno));
		return -1;
	}
	fprintf(file, "%ld\n", (long)getpid());
	if (fclose(file) != 0) {
		log_error("cannot write pid file %s: %s", path, strerror(errno));
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct options options = { 0 };
	struct daemon daemon = { 0 };
	char error[512];
	sigset_t signals;
	int signal_fd, status_fd = -1, exit_status = EXIT_FAILURE;
	int parsed = parse_options(argc, argv, &options);

	if (parsed != 0)
		return parsed - 1;

	if (options.check_only) {
		if (config_load(options.config_path, &daemon.config, error, sizeof(error)) != 0) {
			fprintf(stderr, "gophermqd: %s\n", error);
			return EXIT_FAILURE;
		}
		config_clear(&daemon.config);
		printf("gophermqd: configuration file %s is valid\n", options.config_path);
		return EXIT_SUCCESS;
	}

	log_open(options.foreground && !stderr_is_journal());
	daemon.config_path = options.config_path;
	if (config_load(options.config_path, &daemon.config, error, sizeof(error)) != 0) {
		log_error("%s", error);
		if (!options.foreground)
			fprintf(stderr, "gophermqd: %s\n", error);
		log_close();
		return EXIT_FAILURE;
	}
	log_set_level(daemon.config.log_level);

	if (!options.foreground)
		status_fd = daemon_background();

	/* Before any thread exists, so that every thread inherits the mask
	 * and the signals arrive only through the signalfd. */
	sigemptyset(&signals);
	sigaddset(&signals, SIGHUP);
	sigaddset(&signals, SIGINT);
	sigaddset(&signals, SIGTERM);
	signal(SIGPIPE, SIG_IGN);
	if (pthread_sigmask(SIG_BLOCK, &signals, NULL) != 0
	    || (signal_fd = signalfd(-1, &signals, SFD_CLOEXEC)) < 0) {
		log_error("cannot set up signal handling: %s", strerror(errno));
		background_report(status_fd, false);
		config_clear(&daemon.config);
		log_close();
		return EXIT_FAILURE;
	}

	/* A fixed threshold (glibc raises it after each large free otherwise)
	 * keeps big request bodies and fetch replies in mmap'ed chunks that
	 * go back to the system when freed, so RSS follows the load down. */
	mallopt(M_MMAP_THRESHOLD, 256 * 1024);
	{
		const char *labels[METRICS_MAX_METHODS];
		size_t count = api_endpoint_count < METRICS_MAX_METHODS ? api_endpoint_count : METRICS_MAX_METHODS;

		for (size_t i = 0; i < count; i++)
			labels[i] = api_endpoints[i].label;
		metrics_init(labels, count);
	}
	daemon.start_time = (double)time(NULL);
	if (daemon_start(&daemon) == 0 && (options.pid_file == NULL || pid_file_write(options.pid_file) == 0)) {
		background_report(status_fd, true);
		notify_ready();
		daemon_update_status(&daemon);
		log_notice("gophermqd %s started", PACKAGE_VERSION);
		if (daemon_run(&daemon, signal_fd) == 0)
			exit_status = EXIT_SUCCESS;
		notify_stopping();
	} else {
		background_report(status_fd, false);
	}

	daemon_stop(&daemon);
	if (options.pid_file != NULL && exit_status == EXIT_SUCCESS)
		unlink(options.pid_file);
	close(signal_fd);
	config_clear(&daemon.config);
	log_close();
	return exit_status;
}
