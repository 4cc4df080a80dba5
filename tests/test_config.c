/* test_config.c - unit tests of config.c: defaults, every option, every
 * kind of bad value, error messages with file and line, restart-only
 * changes, and agreement of the shipped etc/gophermq.conf with the code. */
#include "autoconfig.h"

#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "journal.h"

#ifndef SHIPPED_CONF
#error "compile with -DSHIPPED_CONF='\"/path/to/etc/gophermq.conf\"'"
#endif

/* The specification, written out independently of config.c: name, default
 * as written in the file, reloadable, and a valid non-default value. */
static const struct expected_option {
	const char *name;
	const char *default_text;
	bool reloadable;
	const char *other_value;
} expected_options[] = {
	{ "listen",                  "\"127.0.0.1\"", false, "\"::1\"" },
	{ "port",                    "8082",          false, "1" },
	{ "metrics_listen",          "\"127.0.0.1\"", false, "\"10.0.0.1\"" },
	{ "metrics_port",            "9001",          false, "2" },
	{ "max_pending",             "1000000",       true,  "3" },
	{ "max_pending_bytes",       "268435456",     true,  "4" },
	{ "max_message_size",        "1048576",       true,  "5" },
	{ "max_subject_length",      "256",           true,  "6" },
	{ "pool_size",               "4",             true,  "7" },
	{ "async_queue_size",        "10000",         true,  "8" },
	{ "http_threads",            "0",             false, "9" },
	{ "max_connections",         "1024",          false, "10" },
	{ "connection_timeout",      "30",            false, "11" },
	{ "subscriber_ttl",          "3600",          true,  "12" },
	{ "ack_wait_ms",             "30000",         true,  "13" },
	{ "fetch_max_batch",         "0",             true,  "14" },
	{ "fetch_max_wait_ms",       "30000",         true,  "15" },
	{ "max_batch_messages",      "1000",          true,  "16" },
	{ "max_batch_bytes",         "8388608",       true,  "2048" },
	{ "max_parked_fetches",      "10000",         true,  "18" },
	{ "message_ttl_ms",          "0",             true,  "19" },
	{ "stream_keepalive_s",      "15",            true,  "20" },
	{ "cors_origin",             "\"\"",          false, "\"*\"" },
	{ "persistence",             "\"none\"",      false, "\"log\"" },
	{ "data_dir",                "\"/var/lib/gophermq\"", false, "\"/e\"" },
	{ "fsync",                   "\"everysec\"",  true,  "\"always\"" },
	{ "segment_size",            "67108864",      false, "65536" },
	{ "compact_min_size",        "67108864",      true,  "131072" },
	{ "log_level",               "\"info\"",      true,  "\"debug\"" },
	{ "auth_token_file",         "\"\"",          true,  "\"/a\"" },
	{ "metrics_auth_token_file", "\"\"",          true,  "\"/b\"" },
	{ "tls_cert_file",           "\"\"",          false, "\"/c\"" },
	{ "tls_key_file",            "\"\"",          false, "\"/d\"" },
};
#define EXPECTED_COUNT (sizeof(expected_options) / sizeof(expected_options[0]))

/* Integer options and their valid ranges; maximum -1 = none. */
static const struct integer_range {
	const char *name;
	long long minimum;
	long long maximum;
} integer_ranges[] = {
	{ "port", 0, 65535 },
	{ "metrics_port", 0, 65535 },
	{ "max_pending", 0, -1 },
	{ "max_pending_bytes", 0, -1 },
	{ "max_message_size", 1, 1073741824 },
	{ "max_subject_length", 1, 65536 },
	{ "pool_size", 1, 1024 },
	{ "async_queue_size", 1, 10000000 },
	{ "http_threads", 0, 256 },
	{ "max_connections", 1, 1000000 },
	{ "connection_timeout", 0, 86400 },
	{ "subscriber_ttl", 0, -1 },
	{ "ack_wait_ms", 1, 86400000 },
	{ "fetch_max_batch", 0, 1000000000 },
	{ "fetch_max_wait_ms", 0, 3600000 },
	{ "max_batch_messages", 1, 1000000 },
	{ "max_batch_bytes", 1024, 1073741824 },
	{ "max_parked_fetches", 0, 10000000 },
	{ "message_ttl_ms", 0, 31536000000LL },
	{ "stream_keepalive_s", 1, 3600 },
	{ "segment_size", 65536, 1073741824 },
	{ "compact_min_size", 65536, -1 },
};
#define INTEGER_COUNT (sizeof(integer_ranges) / sizeof(integer_ranges[0]))

/* ------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------ */

/* Writes text to a new temporary file; returns its path (free it). */
static char *file_write(const char *text)
{
	const char *directory = getenv("TMPDIR");
	char *path;
	FILE *file;
	int fd;

	size_t size;

	if (directory == NULL || directory[0] == '\0')
		directory = "/tmp";
	size = strlen(directory) + sizeof("/test_config.XXXXXX");
	path = malloc(size);
	ck_assert_ptr_nonnull(path);
	snprintf(path, size, "%s/test_config.XXXXXX", directory);
	fd = mkstemp(path);
	ck_assert_msg(fd >= 0, "mkstemp %s: %s", path, strerror(errno));
	file = fdopen(fd, "w");
	ck_assert_ptr_nonnull(file);
	ck_assert_int_eq(fputs(text, file) >= 0, 1);
	ck_assert_int_eq(fclose(file), 0);
	return path;
}

/* Loads text as a config file.  *path_out (if given) gets the file's
 * name, already removed; free it. */
static int text_load(const char *text, struct config *config, char *error, size_t error_size,
                     char **path_out)
{
	char *path = file_write(text);
	int result = config_load(path, config, error, error_size);

	unlink(path);
	if (path_out != NULL)
		*path_out = path;
	else
		free(path);
	return result;
}

/* Loads text, which must be rejected, and checks the error is exactly
 * "<file>:<line>: <message>". */
static void text_rejected_with(const char *text, int line, const char *message)
{
	struct config config;
	char error[512];
	char expected[1024];
	char *path;

	ck_assert_msg(text_load(text, &config, error, sizeof(error), &path) == -1,
	              "accepted: %s", text);
	snprintf(expected, sizeof(expected), "%s:%d: %s", path, line, message);
	ck_assert_str_eq(error, expected);
	free(path);
}

/* Loads text, which must be rejected, and returns the error (static). */
static const char *text_rejected(const char *text)
{
	static char error[512];
	struct config config;

	ck_assert_msg(text_load(text, &config, error, sizeof(error), NULL) == -1, "accepted: %s", text);
	ck_assert_msg(error[0] != '\0', "no error text for: %s", text);
	ck_assert_ptr_null(strchr(error, '\n'));
	return error;
}

static void text_accepted(const char *text, struct config *config)
{
	char error[512] = "";

	ck_assert_msg(text_load(text, config, error, sizeof(error), NULL) == 0,
	              "rejected: %s: %s", text, error);
}

static void config_assert_equal(const struct config *a, const struct config *b)
{
	ck_assert_str_eq(a->listen, b->listen);
	ck_assert_uint_eq(a->port, b->port);
	ck_assert_str_eq(a->metrics_listen, b->metrics_listen);
	ck_assert_uint_eq(a->metrics_port, b->metrics_port);
	ck_assert_uint_eq(a->max_pending, b->max_pending);
	ck_assert_uint_eq(a->max_pending_bytes, b->max_pending_bytes);
	ck_assert_uint_eq(a->max_message_size, b->max_message_size);
	ck_assert_uint_eq(a->max_subject_length, b->max_subject_length);
	ck_assert_uint_eq(a->pool_size, b->pool_size);
	ck_assert_uint_eq(a->async_queue_size, b->async_queue_size);
	ck_assert_uint_eq(a->http_threads, b->http_threads);
	ck_assert_uint_eq(a->max_connections, b->max_connections);
	ck_assert_uint_eq(a->connection_timeout, b->connection_timeout);
	ck_assert_uint_eq(a->subscriber_ttl, b->subscriber_ttl);
	ck_assert_uint_eq(a->ack_wait_ms, b->ack_wait_ms);
	ck_assert_uint_eq(a->fetch_max_batch, b->fetch_max_batch);
	ck_assert_uint_eq(a->fetch_max_wait_ms, b->fetch_max_wait_ms);
	ck_assert_uint_eq(a->max_batch_messages, b->max_batch_messages);
	ck_assert_uint_eq(a->max_batch_bytes, b->max_batch_bytes);
	ck_assert_uint_eq(a->max_parked_fetches, b->max_parked_fetches);
	ck_assert_uint_eq(a->message_ttl_ms, b->message_ttl_ms);
	ck_assert_uint_eq(a->stream_keepalive_s, b->stream_keepalive_s);
	ck_assert_str_eq(a->cors_origin, b->cors_origin);
	ck_assert_uint_eq(a->persistence, b->persistence);
	ck_assert_str_eq(a->data_dir, b->data_dir);
	ck_assert_uint_eq(a->fsync, b->fsync);
	ck_assert_uint_eq(a->segment_size, b->segment_size);
	ck_assert_uint_eq(a->compact_min_size, b->compact_min_size);
	ck_assert_int_eq(a->log_level, b->log_level);
	ck_assert_str_eq(a->auth_token_file, b->auth_token_file);
	ck_assert_str_eq(a->metrics_auth_token_file, b->metrics_auth_token_file);
	ck_assert_str_eq(a->tls_cert_file, b->tls_cert_file);
	ck_assert_str_eq(a->tls_key_file, b->tls_key_file);
}

static bool string_equal(const char *a, const char *b)
{
	return (a == NULL || b == NULL) ? a == b : strcmp(a, b) == 0;
}

static bool config_equal(const struct config *a, const struct config *b)
{
	return string_equal(a->listen, b->listen) && a->port == b->port &&
	       string_equal(a->metrics_listen, b->metrics_listen) && a->metrics_port == b->metrics_port &&
	       a->max_pending == b->max_pending && a->max_pending_bytes == b->max_pending_bytes &&
	       a->max_message_size == b->max_message_size &&
	       a->max_subject_length == b->max_subject_length && a->pool_size == b->pool_size &&
	       a->async_queue_size == b->async_queue_size && a->http_threads == b->http_threads &&
	       a->max_connections == b->max_connections &&
	       a->connection_timeout == b->connection_timeout &&
	       a->subscriber_ttl == b->subscriber_ttl && a->ack_wait_ms == b->ack_wait_ms &&
	       a->fetch_max_batch == b->fetch_max_batch &&
	       a->fetch_max_wait_ms == b->fetch_max_wait_ms &&
	       a->max_batch_messages == b->max_batch_messages &&
	       a->max_batch_bytes == b->max_batch_bytes &&
	       a->max_parked_fetches == b->max_parked_fetches &&
	       a->message_ttl_ms == b->message_ttl_ms &&
	       a->stream_keepalive_s == b->stream_keepalive_s &&
	       string_equal(a->cors_origin, b->cors_origin) &&
	       a->persistence == b->persistence && string_equal(a->data_dir, b->data_dir) &&
	       a->fsync == b->fsync && a->segment_size == b->segment_size &&
	       a->compact_min_size == b->compact_min_size && a->log_level == b->log_level &&
	       string_equal(a->auth_token_file, b->auth_token_file) &&
	       string_equal(a->metrics_auth_token_file, b->metrics_auth_token_file) &&
	       string_equal(a->tls_cert_file, b->tls_cert_file) &&
	       string_equal(a->tls_key_file, b->tls_key_file);
}

static bool config_is_zero(const struct config *config)
{
	static const struct config zero;

	return memcmp(config, &zero, sizeof(zero)) == 0;
}

static const struct expected_option *expected_find(const char *name)
{
	for (size_t i = 0; i < EXPECTED_COUNT; i++) {
		if (strcmp(expected_options[i].name, name) == 0)
			return &expected_options[i];
	}
	return NULL;
}

/* Collects the options config_restart_changes() reports. */
struct reported {
	size_t count;
	char names[64][64];
};

static void reported_add(const char *option, void *context)
{
	struct reported *reported = context;

	ck_assert_uint_lt(reported->count, 64);
	snprintf(reported->names[reported->count++], sizeof(reported->names[0]), "%s", option);
}

static bool reported_has(const struct reported *reported, const char *name)
{
	for (size_t i = 0; i < reported->count; i++) {
		if (strcmp(reported->names[i], name) == 0)
			return true;
	}
	return false;
}

/* ------------------------------------------------------------------------
 * Defaults and valid files
 * ------------------------------------------------------------------------ */

START_TEST(test_defaults_are_the_documented_values)
{
	struct config config;

	ck_assert_int_eq(config_set_defaults(&config), 0);
	ck_assert_str_eq(config.listen, "127.0.0.1");
	ck_assert_uint_eq(config.port, 8082);
	ck_assert_str_eq(config.metrics_listen, "127.0.0.1");
	ck_assert_uint_eq(config.metrics_port, 9001);
	ck_assert_uint_eq(config.max_pending, 1000000);
	ck_assert_uint_eq(config.max_pending_bytes, 268435456);
	ck_assert_uint_eq(config.max_message_size, 1048576);
	ck_assert_uint_eq(config.max_subject_length, 256);
	ck_assert_uint_eq(config.pool_size, 4);
	ck_assert_uint_eq(config.async_queue_size, 10000);
	ck_assert_uint_eq(config.http_threads, 0);
	ck_assert_uint_eq(config.max_connections, 1024);
	ck_assert_uint_eq(config.connection_timeout, 30);
	ck_assert_uint_eq(config.subscriber_ttl, 3600);
	ck_assert_uint_eq(config.ack_wait_ms, 30000);
	ck_assert_uint_eq(config.fetch_max_batch, 0);
	ck_assert_uint_eq(config.fetch_max_wait_ms, 30000);
	ck_assert_uint_eq(config.max_batch_messages, 1000);
	ck_assert_uint_eq(config.max_batch_bytes, 8388608);
	ck_assert_uint_eq(config.max_parked_fetches, 10000);
	ck_assert_uint_eq(config.persistence, CONFIG_PERSISTENCE_NONE);
	ck_assert_str_eq(config.data_dir, "/var/lib/gophermq");
	ck_assert_uint_eq(config.fsync, JOURNAL_FSYNC_EVERYSEC);
	ck_assert_uint_eq(config.segment_size, 67108864);
	ck_assert_uint_eq(config.compact_min_size, 67108864);
	ck_assert_int_eq(config.log_level, LOG_LEVEL_INFO);
	ck_assert_str_eq(config.auth_token_file, "");
	ck_assert_str_eq(config.metrics_auth_token_file, "");
	ck_assert_str_eq(config.tls_cert_file, "");
	ck_assert_str_eq(config.tls_key_file, "");
	config_clear(&config);
	ck_assert(config_is_zero(&config));
}
END_TEST

START_TEST(test_empty_file_gives_defaults)
{
	struct config defaults, config;

	ck_assert_int_eq(config_set_defaults(&defaults), 0);
	text_accepted("", &config);
	config_assert_equal(&config, &defaults);
	config_clear(&config);
	text_accepted("# only a comment\n\n   \n", &config);
	config_assert_equal(&config, &defaults);
	config_clear(&config);
	config_clear(&defaults);
}
END_TEST

START_TEST(test_every_option_takes_a_non_default_value)
{
	struct config config;
	size_t count;

	config_options(&count);
	ck_assert_uint_eq(count, 33);  /* every option is set below */
	text_accepted("listen = \"::1\"\n"
	              "port = 1\n"
	              "metrics_listen = \"10.0.0.1\"\n"
	              "metrics_port = 2\n"
	              "max_pending = 3\n"
	              "max_pending_bytes = 4\n"
	              "max_message_size = 5\n"
	              "max_subject_length = 6\n"
	              "pool_size = 7\n"
	              "async_queue_size = 8\n"
	              "http_threads = 9\n"
	              "max_connections = 10\n"
	              "connection_timeout = 11\n"
	              "subscriber_ttl = 12\n"
	              "ack_wait_ms = 13\n"
	              "fetch_max_batch = 14\n"
	              "fetch_max_wait_ms = 15\n"
	              "max_batch_messages = 16\n"
	              "max_batch_bytes = 2048\n"
	              "max_parked_fetches = 18\n"
	              "message_ttl_ms = 19\n"
	              "stream_keepalive_s = 20\n"
	              "cors_origin = \"*\"\n"
	              "persistence = \"log\"\n"
	              "data_dir = \"/e\"\n"
	              "fsync = \"always\"\n"
	              "segment_size = 65536\n"
	              "compact_min_size = 131072\n"
	              "log_level = \"debug\"\n"
	              "auth_token_file = \"/a\"\n"
	              "metrics_auth_token_file = \"/b\"\n"
	              "tls_cert_file = \"/c\"\n"
	              "tls_key_file = \"/d\"\n", &config);
	ck_assert_str_eq(config.listen, "::1");
	ck_assert_uint_eq(config.port, 1);
	ck_assert_str_eq(config.metrics_listen, "10.0.0.1");
	ck_assert_uint_eq(config.metrics_port, 2);
	ck_assert_uint_eq(config.max_pending, 3);
	ck_assert_uint_eq(config.max_pending_bytes, 4);
	ck_assert_uint_eq(config.max_message_size, 5);
	ck_assert_uint_eq(config.max_subject_length, 6);
	ck_assert_uint_eq(config.pool_size, 7);
	ck_assert_uint_eq(config.async_queue_size, 8);
	ck_assert_uint_eq(config.http_threads, 9);
	ck_assert_uint_eq(config.max_connections, 10);
	ck_assert_uint_eq(config.connection_timeout, 11);
	ck_assert_uint_eq(config.subscriber_ttl, 12);
	ck_assert_uint_eq(config.ack_wait_ms, 13);
	ck_assert_uint_eq(config.fetch_max_batch, 14);
	ck_assert_uint_eq(config.fetch_max_wait_ms, 15);
	ck_assert_uint_eq(config.max_batch_messages, 16);
	ck_assert_uint_eq(config.max_batch_bytes, 2048);
	ck_assert_uint_eq(config.max_parked_fetches, 18);
	ck_assert_uint_eq(config.message_ttl_ms, 19);
	ck_assert_uint_eq(config.stream_keepalive_s, 20);
	ck_assert_str_eq(config.cors_origin, "*");
	ck_assert_uint_eq(config.persistence, CONFIG_PERSISTENCE_LOG);
	ck_assert_str_eq(config.data_dir, "/e");
	ck_assert_uint_eq(config.fsync, JOURNAL_FSYNC_ALWAYS);
	ck_assert_uint_eq(config.segment_size, 65536);
	ck_assert_uint_eq(config.compact_min_size, 131072);
	ck_assert_int_eq(config.log_level, LOG_LEVEL_DEBUG);
	ck_assert_str_eq(config.auth_token_file, "/a");
	ck_assert_str_eq(config.metrics_auth_token_file, "/b");
	ck_assert_str_eq(config.tls_cert_file, "/c");
	ck_assert_str_eq(config.tls_key_file, "/d");
	config_clear(&config);
}
END_TEST

START_TEST(test_options_not_in_file_keep_their_defaults)
{
	struct config config;

	text_accepted("pool_size = 9\n", &config);
	ck_assert_uint_eq(config.pool_size, 9);
	ck_assert_uint_eq(config.port, 8082);
	ck_assert_str_eq(config.listen, "127.0.0.1");
	ck_assert_int_eq(config.log_level, LOG_LEVEL_INFO);
	config_clear(&config);
}
END_TEST

START_TEST(test_range_limits_are_accepted)
{
	for (size_t i = 0; i < INTEGER_COUNT; i++) {
		const struct integer_range *range = &integer_ranges[i];
		struct config config;
		char text[128];

		snprintf(text, sizeof(text), "%s = %lld\n", range->name, range->minimum);
		text_accepted(text, &config);
		config_clear(&config);
		if (range->maximum >= 0)
			snprintf(text, sizeof(text), "%s = %lld\n", range->name, range->maximum);
		else
			snprintf(text, sizeof(text), "%s = 9223372036854775807\n", range->name);
		text_accepted(text, &config);
		config_clear(&config);
	}
}
END_TEST

START_TEST(test_every_log_level_is_accepted)
{
	static const struct { const char *name; enum log_level level; } levels[] = {
		{ "error", LOG_LEVEL_ERROR }, { "warning", LOG_LEVEL_WARNING },
		{ "notice", LOG_LEVEL_NOTICE }, { "info", LOG_LEVEL_INFO }, { "debug", LOG_LEVEL_DEBUG },
	};

	for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++) {
		struct config config;
		char text[64];

		snprintf(text, sizeof(text), "log_level = \"%s\"\n", levels[i].name);
		text_accepted(text, &config);
		ck_assert_int_eq(config.log_level, levels[i].level);
		config_clear(&config);
	}
}
END_TEST

START_TEST(test_ipv4_and_ipv6_listen_addresses_are_accepted)
{
	struct config config;

	text_accepted("listen = \"0.0.0.0\"\nmetrics_listen = \"::\"\n", &config);
	ck_assert_str_eq(config.listen, "0.0.0.0");
	ck_assert_str_eq(config.metrics_listen, "::");
	config_clear(&config);
	text_accepted("listen = \"fe80::1:2\"\nmetrics_listen = \"::ffff:10.1.2.3\"\n", &config);
	ck_assert_str_eq(config.listen, "fe80::1:2");
	config_clear(&config);
}
END_TEST

START_TEST(test_later_setting_of_an_option_wins)
{
	struct config config;

	text_accepted("port = 1\nport = 2\n", &config);
	ck_assert_uint_eq(config.port, 2);
	config_clear(&config);
}
END_TEST

START_TEST(test_comment_characters_inside_quoted_strings_are_kept)
{
	struct config config;

	text_accepted("auth_token_file = \"/a#b//c/*d*/\" # trailing comment\n"
	              "metrics_auth_token_file = '/x#y' // another\n"
	              "/* a block\n   comment # with port = 1 inside */ port = 5\n"
	              "tls_cert_file = \"/q\\\"#\"\n"
	              "tls_key_file = \"/k\"\n", &config);
	ck_assert_str_eq(config.auth_token_file, "/a#b//c/*d*/");
	ck_assert_str_eq(config.metrics_auth_token_file, "/x#y");
	ck_assert_uint_eq(config.port, 5);
	ck_assert_str_eq(config.tls_cert_file, "/q\"#");
	config_clear(&config);
}
END_TEST

START_TEST(test_delivery_options_take_valid_values)
{
	struct config config;

	text_accepted("ack_wait_ms = 86400000\nfetch_max_batch = 1000000000\n"
	              "fetch_max_wait_ms = 0\nmax_batch_messages = 1\n"
	              "max_batch_bytes = 1073741824\nmax_parked_fetches = 0\n", &config);
	ck_assert_uint_eq(config.ack_wait_ms, 86400000);
	ck_assert_uint_eq(config.fetch_max_batch, 1000000000);
	ck_assert_uint_eq(config.fetch_max_wait_ms, 0);
	ck_assert_uint_eq(config.max_batch_messages, 1);
	ck_assert_uint_eq(config.max_batch_bytes, 1073741824);
	ck_assert_uint_eq(config.max_parked_fetches, 0);
	ck_assert_uint_eq(config.subscriber_ttl, 3600);  /* the others keep their defaults */
	config_clear(&config);

	text_accepted("ack_wait_ms = 5000\nmax_batch_bytes = 65536\n", &config);
	ck_assert_uint_eq(config.ack_wait_ms, 5000);
	ck_assert_uint_eq(config.max_batch_bytes, 65536);
	ck_assert_uint_eq(config.fetch_max_batch, 0);
	ck_assert_uint_eq(config.fetch_max_wait_ms, 30000);
	ck_assert_uint_eq(config.max_batch_messages, 1000);
	ck_assert_uint_eq(config.max_parked_fetches, 10000);
	config_clear(&config);
}
END_TEST

START_TEST(test_durability_options_take_their_choices)
{
	static const struct { const char *text; unsigned fsync; } modes[] = {
		{ "never", JOURNAL_FSYNC_NEVER }, { "everysec", JOURNAL_FSYNC_EVERYSEC },
		{ "always", JOURNAL_FSYNC_ALWAYS },
	};
	struct config config;

	/* the stored index is the enum the journal takes */
	ck_assert_int_eq(JOURNAL_FSYNC_NEVER, 0);
	ck_assert_int_eq(JOURNAL_FSYNC_EVERYSEC, 1);
	ck_assert_int_eq(JOURNAL_FSYNC_ALWAYS, 2);

	text_accepted("persistence = \"log\"\nfsync = \"always\"\n", &config);
	ck_assert_uint_eq(config.persistence, CONFIG_PERSISTENCE_LOG);
	ck_assert_uint_eq(config.fsync, JOURNAL_FSYNC_ALWAYS);
	ck_assert_uint_eq(config.fsync, 2);
	ck_assert_str_eq(config.data_dir, "/var/lib/gophermq");  /* the others keep their defaults */
	ck_assert_uint_eq(config.segment_size, 67108864);
	ck_assert_uint_eq(config.compact_min_size, 67108864);
	config_clear(&config);

	text_accepted("persistence = \"none\"\n", &config);
	ck_assert_uint_eq(config.persistence, CONFIG_PERSISTENCE_NONE);
	ck_assert_uint_eq(config.fsync, JOURNAL_FSYNC_EVERYSEC);
	config_clear(&config);

	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
		char text[64];

		snprintf(text, sizeof(text), "fsync = \"%s\"\n", modes[i].text);
		text_accepted(text, &config);
		ck_assert_uint_eq(config.fsync, modes[i].fsync);
		config_clear(&config);
	}

	text_accepted("data_dir = \"/srv/gophermq data\"\nsegment_size = 1073741824\n"
	              "compact_min_size = 65536\n", &config);
	ck_assert_str_eq(config.data_dir, "/srv/gophermq data");
	ck_assert_uint_eq(config.segment_size, 1073741824);
	ck_assert_uint_eq(config.compact_min_size, 65536);
	ck_assert_uint_eq(config.persistence, CONFIG_PERSISTENCE_NONE);
	config_clear(&config);
}
END_TEST

/* ------------------------------------------------------------------------
 * Bad values
 * ------------------------------------------------------------------------ */

START_TEST(test_negative_integer_is_rejected_with_file_line_and_option)
{
	text_rejected_with("# comment\n\nmax_pending = -5\n", 3,
	                   "max_pending: value -5 is out of range (0..)");
	for (size_t i = 0; i < INTEGER_COUNT; i++) {
		char text[128];

		snprintf(text, sizeof(text), "%s = -1\n", integer_ranges[i].name);
		ck_assert_ptr_nonnull(strstr(text_rejected(text), "is out of range"));
	}
}
END_TEST

START_TEST(test_integer_outside_range_is_rejected)
{
	text_rejected_with("port = 65536\n", 1, "port: value 65536 is out of range (0..65535)");
	text_rejected_with("pool_size = 0\n", 1, "pool_size: value 0 is out of range (1..1024)");
	text_rejected_with("max_pending = 9223372036854775808\n", 1,
	                   "max_pending: value 9223372036854775808 is out of range (0..)");
	for (size_t i = 0; i < INTEGER_COUNT; i++) {
		const struct integer_range *range = &integer_ranges[i];
		char text[128];

		if (range->minimum > 0) {
			snprintf(text, sizeof(text), "%s = %lld\n", range->name, range->minimum - 1);
			ck_assert_ptr_nonnull(strstr(text_rejected(text), "is out of range"));
		}
		if (range->maximum >= 0)
			snprintf(text, sizeof(text), "%s = %lld\n", range->name, range->maximum + 1);
		else
			snprintf(text, sizeof(text), "%s = 99999999999999999999\n", range->name);
		ck_assert_ptr_nonnull(strstr(text_rejected(text), "is out of range"));
	}
}
END_TEST

START_TEST(test_delivery_option_out_of_range_is_rejected_with_file_line_and_option)
{
	text_rejected_with("# comment\nack_wait_ms = 0\n", 2,
	                   "ack_wait_ms: value 0 is out of range (1..86400000)");
	text_rejected_with("ack_wait_ms = 86400001\n", 1,
	                   "ack_wait_ms: value 86400001 is out of range (1..86400000)");
	text_rejected_with("fetch_max_batch = -1\n", 1,
	                   "fetch_max_batch: value -1 is out of range (0..1000000000)");
	text_rejected_with("port = 1\nfetch_max_batch = 1000000001\n", 2,
	                   "fetch_max_batch: value 1000000001 is out of range (0..1000000000)");
	text_rejected_with("fetch_max_wait_ms = 3600001\n", 1,
	                   "fetch_max_wait_ms: value 3600001 is out of range (0..3600000)");
	text_rejected_with("max_batch_messages = 0\n", 1,
	                   "max_batch_messages: value 0 is out of range (1..1000000)");
	text_rejected_with("max_batch_messages = 1000001\n", 1,
	                   "max_batch_messages: value 1000001 is out of range (1..1000000)");
	text_rejected_with("\n\nmax_batch_bytes = 1023\n", 3,
	                   "max_batch_bytes: value 1023 is out of range (1024..1073741824)");
	text_rejected_with("max_batch_bytes = 1073741825\n", 1,
	                   "max_batch_bytes: value 1073741825 is out of range (1024..1073741824)");
	text_rejected_with("max_parked_fetches = 10000001\n", 1,
	                   "max_parked_fetches: value 10000001 is out of range (0..10000000)");
	text_rejected_with("max_parked_fetches = 99999999999999999999\n", 1,
	                   "max_parked_fetches: value 99999999999999999999 is out of range (0..10000000)");
	text_rejected_with("ack_wait_ms = 30s\n", 1, "ack_wait_ms: value '30s' is not an integer");
}
END_TEST

START_TEST(test_non_integer_is_rejected)
{
	static const char *const bad[] = { "abc", "1.5", "0x10", "12abc", "\"\"", "\" 5\"", "\"+5\"", "1e3", "true" };

	text_rejected_with("port = 80a\n", 1, "port: value '80a' is not an integer");
	for (size_t i = 0; i < INTEGER_COUNT; i++) {
		for (size_t j = 0; j < sizeof(bad) / sizeof(bad[0]); j++) {
			char text[128];

			snprintf(text, sizeof(text), "%s = %s\n", integer_ranges[i].name, bad[j]);
			ck_assert_msg(strstr(text_rejected(text), "is not an integer") != NULL,
			              "%s: %s", text, text_rejected(text));
		}
	}
}
END_TEST

START_TEST(test_bad_listen_address_is_rejected)
{
	static const char *const bad[] = { "localhost", "", "1.2.3", "256.1.1.1", "::1::2", "[::1]",
		                           "127.0.0.1:80", "fe80::1%eth0", " 127.0.0.1" };

	text_rejected_with("\nlisten = \"localhost\"\n", 2,
	                   "listen: value 'localhost' is not an IPv4 or IPv6 address");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char text[128];

		snprintf(text, sizeof(text), "listen = \"%s\"\n", bad[i]);
		ck_assert_ptr_nonnull(strstr(text_rejected(text), "listen: value"));
		snprintf(text, sizeof(text), "metrics_listen = \"%s\"\n", bad[i]);
		ck_assert_ptr_nonnull(strstr(text_rejected(text), "metrics_listen: value"));
	}
}
END_TEST

START_TEST(test_bad_log_level_is_rejected)
{
	text_rejected_with("log_level = \"loud\"\n", 1,
	                   "log_level: value 'loud' is not one of error, warning, notice, info, debug");
	ck_assert_ptr_nonnull(strstr(text_rejected("log_level = \"\"\n"), "log_level: value ''"));
	ck_assert_ptr_nonnull(strstr(text_rejected("log_level = INFO\n"), "log_level: value 'INFO'"));
	ck_assert_ptr_nonnull(strstr(text_rejected("log_level = 3\n"), "log_level: value '3'"));
}
END_TEST

START_TEST(test_bad_durability_choice_is_rejected_with_the_choices)
{
	text_rejected_with("fsync = \"sometimes\"\n", 1,
	                   "fsync: value 'sometimes' is not one of never, everysec, always");
	text_rejected_with("# comment\n\npersistence = \"disk\"\n", 3,
	                   "persistence: value 'disk' is not one of none, log");
	text_rejected_with("persistence = \"log\"\nfsync = \"\"\n", 2,
	                   "fsync: value '' is not one of never, everysec, always");
	/* choices are exact: no other case, no numbers, no surrounding space */
	ck_assert_ptr_nonnull(strstr(text_rejected("fsync = \"ALWAYS\"\n"), "fsync: value 'ALWAYS'"));
	ck_assert_ptr_nonnull(strstr(text_rejected("fsync = 2\n"), "fsync: value '2' is not one of"));
	ck_assert_ptr_nonnull(strstr(text_rejected("fsync = \" always\"\n"), "fsync: value ' always'"));
	ck_assert_ptr_nonnull(strstr(text_rejected("persistence = \"Log\"\n"),
	                             "persistence: value 'Log' is not one of none, log"));
	ck_assert_ptr_nonnull(strstr(text_rejected("persistence = 1\n"), "persistence: value '1'"));
}
END_TEST

START_TEST(test_durability_size_out_of_range_is_rejected_with_file_line_and_option)
{
	text_rejected_with("segment_size = 65535\n", 1,
	                   "segment_size: value 65535 is out of range (65536..1073741824)");
	text_rejected_with("port = 1\nsegment_size = 1073741825\n", 2,
	                   "segment_size: value 1073741825 is out of range (65536..1073741824)");
	text_rejected_with("compact_min_size = 65535\n", 1,
	                   "compact_min_size: value 65535 is out of range (65536..)");
	text_rejected_with("compact_min_size = 64M\n", 1, "compact_min_size: value '64M' is not an integer");
}
END_TEST

START_TEST(test_tls_certificate_without_key_is_rejected)
{
	text_rejected_with("port = 1\ntls_cert_file = \"/c\"\n", 2, "tls_cert_file: set without tls_key_file");
}
END_TEST

START_TEST(test_tls_key_without_certificate_is_rejected)
{
	text_rejected_with("tls_key_file = \"/k\"\n", 1, "tls_key_file: set without tls_cert_file");
	text_rejected_with("tls_key_file = \"/k\"\ntls_cert_file = \"\"\n", 1,
	                   "tls_key_file: set without tls_cert_file");
}
END_TEST

START_TEST(test_error_text_stays_on_one_line)
{
	const char *error = text_rejected("log_level = \"in\nfo\"\n");

	ck_assert_ptr_nonnull(strstr(error, "log_level: value 'in?fo'"));
}
END_TEST

/* ------------------------------------------------------------------------
 * Syntax errors and files
 * ------------------------------------------------------------------------ */

START_TEST(test_unknown_option_error_names_option_and_line)
{
	text_rejected_with("port = 1\n# a comment\nbogus_option = 3\n", 3, "no such option 'bogus_option'");
}
END_TEST

START_TEST(test_syntax_error_reports_its_line)
{
	text_rejected_with("port = 1\n\nmax_pending 5\n", 3, "missing equal sign after option 'max_pending'");
	text_rejected_with("port = = 1\n", 1, "unexpected token '='");
	text_rejected_with("port = {1, 2}\n", 1, "unexpected token '{'");
	text_rejected_with("port += 1\n", 1, "attempt to append to non-list option 'port'");
	ck_assert_ptr_nonnull(strstr(text_rejected("listen = \"127.0.0.1\n"), ":2: "));
}
END_TEST

START_TEST(test_line_numbers_count_each_comment_line_once)
{
	/* libconfuse 3.3 alone would count these comments as 9 lines too many */
	text_rejected_with("# one\n## two\n// three\n/* four\n five */\n\nport = -1 # seven\n", 7,
	                   "port: value -1 is out of range (0..65535)");
	text_rejected_with("# one\n# two\n# three\nbogus = 1\n", 4, "no such option 'bogus'");
}
END_TEST

START_TEST(test_unterminated_block_comment_is_rejected)
{
	text_rejected_with("port = 1\n/* never closed\nmax_pending = 2\n", 2, "unterminated /* comment");
}
END_TEST

START_TEST(test_missing_file_is_rejected_with_its_name)
{
	static const char path[] = "/nonexistent-directory/gophermq.conf";
	struct config config;
	char error[512];

	ck_assert_int_eq(config_load(path, &config, error, sizeof(error)), -1);
	ck_assert_str_eq(error, "/nonexistent-directory/gophermq.conf: cannot open: No such file or directory");
	ck_assert(config_is_zero(&config));
}
END_TEST

START_TEST(test_directory_is_rejected)
{
	struct config config;
	char error[512];

	ck_assert_int_eq(config_load("/", &config, error, sizeof(error)), -1);
	ck_assert_str_eq(error, "/: cannot read: Is a directory");
}
END_TEST

START_TEST(test_unreadable_file_is_rejected)
{
	struct config config;
	char error[512];
	char *path;

	if (geteuid() == 0)
		return;  /* root reads anything */
	path = file_write("port = 1\n");
	ck_assert_int_eq(chmod(path, 0), 0);
	ck_assert_int_eq(config_load(path, &config, error, sizeof(error)), -1);
	ck_assert_ptr_nonnull(strstr(error, "cannot open: Permission denied"));
	ck_assert_ptr_nonnull(strstr(error, path));
	unlink(path);
	free(path);
}
END_TEST

START_TEST(test_file_with_nul_byte_is_rejected)
{
	struct config config;
	char error[512];
	char *path = file_write("port = 1\n");
	FILE *file = fopen(path, "a");

	ck_assert_ptr_nonnull(file);
	fputc('\0', file);
	fclose(file);
	ck_assert_int_eq(config_load(path, &config, error, sizeof(error)), -1);
	ck_assert_ptr_nonnull(strstr(error, "contains a NUL byte"));
	unlink(path);
	free(path);
}
END_TEST

START_TEST(test_failed_load_leaves_config_cleared)
{
	struct config config;
	char error[512];

	ck_assert_int_eq(text_load("port = 1\nlisten = \"x\"\n", &config, error, sizeof(error), NULL), -1);
	ck_assert(config_is_zero(&config));
	ck_assert_int_eq(text_load("tls_cert_file = \"/c\"\n", &config, error, sizeof(error), NULL), -1);
	ck_assert(config_is_zero(&config));
	ck_assert_int_eq(text_load("port = \n", &config, error, sizeof(error), NULL), -1);
	ck_assert(config_is_zero(&config));
	config_clear(&config);  /* harmless on a cleared config */
}
END_TEST

START_TEST(test_small_or_missing_error_buffer_is_safe)
{
	struct config config;
	char error[8];

	memset(error, 'x', sizeof(error));
	ck_assert_int_eq(text_load("port = -1\n", &config, error, sizeof(error), NULL), -1);
	ck_assert_uint_eq(strlen(error), sizeof(error) - 1);
	ck_assert_int_eq(text_load("port = -1\n", &config, NULL, 0, NULL), -1);
	ck_assert_int_eq(config_load("/nonexistent-directory/x", &config, NULL, 0), -1);
}
END_TEST

START_TEST(test_one_load_after_another_starts_afresh)
{
	struct config config;
	char error[512];

	/* a load that fails inside a quoted string must not disturb the next */
	ck_assert_int_eq(text_load("listen = \"\\9\"\n", &config, error, sizeof(error), NULL), -1);
	text_accepted("port = 7\n", &config);
	ck_assert_uint_eq(config.port, 7);
	config_clear(&config);
}
END_TEST

/* ------------------------------------------------------------------------
 * Restart-only changes and the option table
 * ------------------------------------------------------------------------ */

START_TEST(test_restart_changes_reports_exactly_the_changed_restart_only_options)
{
	static const char *const restart_only[] = {
		"listen", "port", "metrics_listen", "metrics_port", "http_threads",
		"max_connections", "connection_timeout", "persistence", "data_dir", "segment_size",
		"tls_cert_file", "tls_key_file", "cors_origin",
	};
	struct config defaults, changed;
	struct reported reported = { 0 };
	char text[2048] = "";

	ck_assert_int_eq(config_set_defaults(&defaults), 0);
	for (size_t i = 0; i < EXPECTED_COUNT; i++) {
		char line[128];

		snprintf(line, sizeof(line), "%s = %s\n", expected_options[i].name, expected_options[i].other_value);
		strcat(text, line);
	}
	text_accepted(text, &changed);
	ck_assert_uint_eq(config_restart_changes(&defaults, &changed, reported_add, &reported), 13);
	ck_assert_uint_eq(reported.count, 13);
	for (size_t i = 0; i < sizeof(restart_only) / sizeof(restart_only[0]); i++)
		ck_assert_msg(reported_has(&reported, restart_only[i]), "%s not reported", restart_only[i]);
	ck_assert_uint_eq(config_restart_changes(&changed, &defaults, NULL, NULL), 13);
	config_clear(&changed);
	config_clear(&defaults);
}
END_TEST

START_TEST(test_restart_changes_ignores_reloadable_options)
{
	struct config defaults, changed;
	struct reported reported = { 0 };

	ck_assert_int_eq(config_set_defaults(&defaults), 0);
	text_accepted("max_pending = 1\nmax_pending_bytes = 2\nmax_message_size = 3\n"
	              "max_subject_length = 4\npool_size = 5\nasync_queue_size = 6\n"
	              "subscriber_ttl = 7\nlog_level = \"error\"\nauth_token_file = \"/a\"\n"
	              "metrics_auth_token_file = \"/b\"\nack_wait_ms = 8\nfetch_max_batch = 9\n"
	              "fetch_max_wait_ms = 10\nmax_batch_messages = 11\nmax_batch_bytes = 1024\n"
	              "max_parked_fetches = 12\nfsync = \"never\"\ncompact_min_size = 65536\n",
	              &changed);
	ck_assert_uint_eq(config_restart_changes(&defaults, &changed, reported_add, &reported), 0);
	ck_assert_uint_eq(reported.count, 0);
	ck_assert_uint_eq(config_restart_changes(&defaults, &defaults, reported_add, &reported), 0);
	config_clear(&changed);
	config_clear(&defaults);
}
END_TEST

START_TEST(test_each_option_alone_changes_only_itself)
{
	struct config defaults;

	ck_assert_int_eq(config_set_defaults(&defaults), 0);
	for (size_t i = 0; i < EXPECTED_COUNT; i++) {
		const struct expected_option *option = &expected_options[i];
		struct reported reported = { 0 };
		struct config changed;
		char text[256];
		size_t expected_reports = option->reloadable ? 0 : 1;

		snprintf(text, sizeof(text), "%s = %s\n", option->name, option->other_value);
		/* the TLS files only come in pairs */
		if (strcmp(option->name, "tls_cert_file") == 0) {
			strcat(text, "tls_key_file = \"/d\"\n");
			expected_reports = 2;
		} else if (strcmp(option->name, "tls_key_file") == 0) {
			strcat(text, "tls_cert_file = \"/c\"\n");
			expected_reports = 2;
		}
		text_accepted(text, &changed);
		ck_assert_uint_eq(config_restart_changes(&defaults, &changed, reported_add, &reported),
		                  expected_reports);
		if (!option->reloadable)
			ck_assert_msg(reported_has(&reported, option->name), "%s not reported", option->name);
		config_clear(&changed);
	}
	config_clear(&defaults);
}
END_TEST

START_TEST(test_keep_restart_options_copies_only_the_restart_only_options)
{
	struct config running, fresh;
	char text[2048] = "";

	for (size_t i = 0; i < EXPECTED_COUNT; i++) {
		char line[128];

		snprintf(line, sizeof(line), "%s = %s\n", expected_options[i].name, expected_options[i].other_value);
		strcat(text, line);
	}
	text_accepted(text, &running);
	ck_assert_int_eq(config_set_defaults(&fresh), 0);
	ck_assert_int_eq(config_keep_restart_options(&fresh, &running), 0);
	/* restart-only: taken from running */
	ck_assert_str_eq(fresh.listen, "::1");
	ck_assert_uint_eq(fresh.port, 1);
	ck_assert_str_eq(fresh.metrics_listen, "10.0.0.1");
	ck_assert_uint_eq(fresh.metrics_port, 2);
	ck_assert_uint_eq(fresh.http_threads, 9);
	ck_assert_uint_eq(fresh.max_connections, 10);
	ck_assert_uint_eq(fresh.connection_timeout, 11);
	ck_assert_uint_eq(fresh.persistence, CONFIG_PERSISTENCE_LOG);
	ck_assert_str_eq(fresh.data_dir, "/e");
	ck_assert_uint_eq(fresh.segment_size, 65536);
	ck_assert_str_eq(fresh.tls_cert_file, "/c");
	ck_assert_str_eq(fresh.tls_key_file, "/d");
	ck_assert_ptr_ne(fresh.listen, running.listen);  /* copies, not shared */
	ck_assert_ptr_ne(fresh.data_dir, running.data_dir);
	/* reloadable: kept from the new file (here the defaults) */
	ck_assert_uint_eq(fresh.max_pending, 1000000);
	ck_assert_uint_eq(fresh.max_pending_bytes, 268435456);
	ck_assert_uint_eq(fresh.max_message_size, 1048576);
	ck_assert_uint_eq(fresh.max_subject_length, 256);
	ck_assert_uint_eq(fresh.pool_size, 4);
	ck_assert_uint_eq(fresh.async_queue_size, 10000);
	ck_assert_uint_eq(fresh.subscriber_ttl, 3600);
	ck_assert_uint_eq(fresh.ack_wait_ms, 30000);
	ck_assert_uint_eq(fresh.fetch_max_batch, 0);
	ck_assert_uint_eq(fresh.fetch_max_wait_ms, 30000);
	ck_assert_uint_eq(fresh.max_batch_messages, 1000);
	ck_assert_uint_eq(fresh.max_batch_bytes, 8388608);
	ck_assert_uint_eq(fresh.max_parked_fetches, 10000);
	ck_assert_uint_eq(fresh.fsync, JOURNAL_FSYNC_EVERYSEC);
	ck_assert_uint_eq(fresh.compact_min_size, 67108864);
	ck_assert_int_eq(fresh.log_level, LOG_LEVEL_INFO);
	ck_assert_str_eq(fresh.auth_token_file, "");
	ck_assert_str_eq(fresh.metrics_auth_token_file, "");
	ck_assert_uint_eq(config_restart_changes(&running, &fresh, NULL, NULL), 0);
	config_clear(&running);
	config_clear(&fresh);
}
END_TEST

START_TEST(test_option_table_matches_the_specification)
{
	size_t count;
	const struct config_option_info *options = config_options(&count);

	ck_assert_uint_eq(count, EXPECTED_COUNT);
	for (size_t i = 0; i < count; i++) {
		ck_assert_str_eq(options[i].name, expected_options[i].name);
		ck_assert_str_eq(options[i].default_text, expected_options[i].default_text);
		ck_assert_msg(options[i].reloadable == expected_options[i].reloadable,
		              "%s: reloadable", options[i].name);
	}
	ck_assert_ptr_eq(config_options(NULL), options);
}
END_TEST

START_TEST(test_option_table_defaults_equal_config_set_defaults)
{
	size_t count;
	const struct config_option_info *options = config_options(&count);
	struct config defaults;

	ck_assert_int_eq(config_set_defaults(&defaults), 0);
	for (size_t i = 0; i < count; i++) {
		const struct expected_option *expected = expected_find(options[i].name);
		struct config config;
		char text[256];
		char error[512];

		/* writing the default gives the defaults */
		snprintf(text, sizeof(text), "%s = %s\n", options[i].name, options[i].default_text);
		text_accepted(text, &config);
		config_assert_equal(&config, &defaults);
		config_clear(&config);
		/* and the name reaches a member: another value changes something */
		ck_assert_ptr_nonnull(expected);
		snprintf(text, sizeof(text), "%s = %s\n%s", options[i].name, expected->other_value,
		         strncmp(options[i].name, "tls_", 4) != 0 ? "" :
		         strcmp(options[i].name, "tls_cert_file") == 0 ? "tls_key_file = \"/d\"\n" :
		                                                         "tls_cert_file = \"/c\"\n");
		ck_assert_int_eq(text_load(text, &config, error, sizeof(error), NULL), 0);
		ck_assert_msg(!config_equal(&config, &defaults), "%s changed nothing",
		              options[i].name);
		config_clear(&config);
	}
	config_clear(&defaults);
}
END_TEST

/* ------------------------------------------------------------------------
 * The shipped etc/gophermq.conf
 * ------------------------------------------------------------------------ */

START_TEST(test_shipped_config_loads_as_the_defaults)
{
	struct config defaults, config;
	char error[512] = "";

	ck_assert_int_eq(config_set_defaults(&defaults), 0);
	ck_assert_msg(config_load(SHIPPED_CONF, &config, error, sizeof(error)) == 0, "%s", error);
	config_assert_equal(&config, &defaults);
	config_clear(&config);
	config_clear(&defaults);
}
END_TEST

/* The shipped file shows each option as "#name = default"; uncommented,
 * those lines must load, give the defaults, and list every option once,
 * in table order, with the table's default text. */
START_TEST(test_shipped_config_shows_every_option_once_with_its_default)
{
	size_t count;
	const struct config_option_info *options = config_options(&count);
	struct config defaults, config;
	size_t seen[64] = { 0 };
	size_t next = 0;
	char *uncommented = NULL;
	size_t uncommented_size = 0;
	FILE *out = open_memstream(&uncommented, &uncommented_size);
	FILE *in = fopen(SHIPPED_CONF, "r");
	char line[1024];
	char error[512] = "";

	ck_assert_ptr_nonnull(out);
	ck_assert_msg(in != NULL, "%s: %s", SHIPPED_CONF, strerror(errno));
	ck_assert_uint_le(count, 64);
	while (fgets(line, sizeof(line), in) != NULL) {
		char name[128];
		const char *value;
		size_t i;

		if (line[0] != '#' || line[1] < 'a' || line[1] > 'z')
			continue;  /* prose comments start "# " */
		ck_assert_msg(sscanf(line + 1, "%127[a-z_] = ", name) == 1, "odd line: %s", line);
		value = strstr(line, " = ");
		ck_assert_ptr_nonnull(value);
		value += 3;
		line[strcspn(line, "\n")] = '\0';
		for (i = 0; i < count && strcmp(options[i].name, name) != 0; i++)
			;
		ck_assert_msg(i < count, "unknown option %s in the shipped file", name);
		ck_assert_msg(i == next, "%s is out of table order", name);
		next++;
		seen[i]++;
		ck_assert_str_eq(value, options[i].default_text);
		fprintf(out, "%s\n", line + 1);
	}
	fclose(in);
	fclose(out);
	for (size_t i = 0; i < count; i++)
		ck_assert_msg(seen[i] == 1, "%s appears %zu times", options[i].name, seen[i]);

	ck_assert_int_eq(config_set_defaults(&defaults), 0);
	ck_assert_msg(text_load(uncommented, &config, error, sizeof(error), NULL) == 0, "%s", error);
	config_assert_equal(&config, &defaults);
	config_clear(&config);
	config_clear(&defaults);
	free(uncommented);
}
END_TEST

static Suite *config_suite(void)
{
	Suite *suite = suite_create("config");
	TCase *valid = tcase_create("valid");
	TCase *invalid = tcase_create("invalid");
	TCase *files = tcase_create("files");
	TCase *table = tcase_create("table");

	tcase_add_test(valid, test_defaults_are_the_documented_values);
	tcase_add_test(valid, test_empty_file_gives_defaults);
	tcase_add_test(valid, test_every_option_takes_a_non_default_value);
	tcase_add_test(valid, test_options_not_in_file_keep_their_defaults);
	tcase_add_test(valid, test_range_limits_are_accepted);
	tcase_add_test(valid, test_every_log_level_is_accepted);
	tcase_add_test(valid, test_ipv4_and_ipv6_listen_addresses_are_accepted);
	tcase_add_test(valid, test_later_setting_of_an_option_wins);
	tcase_add_test(valid, test_comment_characters_inside_quoted_strings_are_kept);
	tcase_add_test(valid, test_delivery_options_take_valid_values);
	tcase_add_test(valid, test_durability_options_take_their_choices);
	suite_add_tcase(suite, valid);

	tcase_add_test(invalid, test_negative_integer_is_rejected_with_file_line_and_option);
	tcase_add_test(invalid, test_integer_outside_range_is_rejected);
	tcase_add_test(invalid, test_delivery_option_out_of_range_is_rejected_with_file_line_and_option);
	tcase_add_test(invalid, test_non_integer_is_rejected);
	tcase_add_test(invalid, test_bad_listen_address_is_rejected);
	tcase_add_test(invalid, test_bad_log_level_is_rejected);
	tcase_add_test(invalid, test_bad_durability_choice_is_rejected_with_the_choices);
	tcase_add_test(invalid, test_durability_size_out_of_range_is_rejected_with_file_line_and_option);
	tcase_add_test(invalid, test_tls_certificate_without_key_is_rejected);
	tcase_add_test(invalid, test_tls_key_without_certificate_is_rejected);
	tcase_add_test(invalid, test_error_text_stays_on_one_line);
	tcase_add_test(invalid, test_unknown_option_error_names_option_and_line);
	tcase_add_test(invalid, test_syntax_error_reports_its_line);
	tcase_add_test(invalid, test_line_numbers_count_each_comment_line_once);
	tcase_add_test(invalid, test_unterminated_block_comment_is_rejected);
	suite_add_tcase(suite, invalid);

	tcase_add_test(files, test_missing_file_is_rejected_with_its_name);
	tcase_add_test(files, test_directory_is_rejected);
	tcase_add_test(files, test_unreadable_file_is_rejected);
	tcase_add_test(files, test_file_with_nul_byte_is_rejected);
	tcase_add_test(files, test_failed_load_leaves_config_cleared);
	tcase_add_test(files, test_small_or_missing_error_buffer_is_safe);
	tcase_add_test(files, test_one_load_after_another_starts_afresh);
	suite_add_tcase(suite, files);

	tcase_add_test(table, test_restart_changes_reports_exactly_the_changed_restart_only_options);
	tcase_add_test(table, test_restart_changes_ignores_reloadable_options);
	tcase_add_test(table, test_each_option_alone_changes_only_itself);
	tcase_add_test(table, test_keep_restart_options_copies_only_the_restart_only_options);
	tcase_add_test(table, test_option_table_matches_the_specification);
	tcase_add_test(table, test_option_table_defaults_equal_config_set_defaults);
	tcase_add_test(table, test_shipped_config_loads_as_the_defaults);
	tcase_add_test(table, test_shipped_config_shows_every_option_once_with_its_default);
	suite_add_tcase(suite, table);
	return suite;
}

int main(void)
{
	SRunner *runner = srunner_create(config_suite());
	int failed;

	srunner_run_all(runner, CK_ENV);  /* CK_VERBOSITY, default normal */
	failed = srunner_ntests_failed(runner);
	srunner_free(runner);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
