/* fuzz_config.c - libFuzzer harness: arbitrary bytes as a configuration
 * file through config_load(), the code that parses gophermq.conf at start
 * and on every reload (SIGHUP).
 *
 * The input is written to a memfd and loaded through /proc/self/fd/N, so
 * no file is left behind.  Checked:
 *  - success: every string is set, every number is inside the range the
 *    shipped config documents, the TLS files come as a pair, and after
 *    config_keep_restart_options() no restart-only option differs from the
 *    running configuration (what a reload relies on);
 *  - failure: the config is left zeroed, the reason is one non-empty line
 *    that names the file, and a second load into a 9-byte error buffer
 *    fails the same way with the reason's first 8 bytes.
 * Everything is cleared afterwards, so LeakSanitizer sees leaks on both
 * paths (libconfuse's included).
 */
#include "autoconfig.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config.h"
#include "fuzz_model.h"

int LLVMFuzzerTestOneInput(const uint8_t *input, size_t size);

static bool all_zero(const void *memory, size_t size)
{
	const unsigned char *bytes = memory;

	for (size_t i = 0; i < size; i++)
		if (bytes[i] != 0)
			return false;
	return true;
}

static void check_loaded(const struct config *config)
{
	struct config running;

	FUZZ_CHECK(config->listen && config->metrics_listen && config->auth_token_file &&
	           config->metrics_auth_token_file && config->tls_cert_file && config->tls_key_file,
	           "a string option is NULL");
	FUZZ_CHECK(config->port <= 65535 && config->metrics_port <= 65535, "port out of range");
	FUZZ_CHECK(config->max_message_size >= 1 && config->max_message_size <= 1073741824,
	           "max_message_size %llu", (unsigned long long)config->max_message_size);
	FUZZ_CHECK(config->max_subject_length >= 1 && config->max_subject_length <= 65536,
	           "max_subject_length %llu", (unsigned long long)config->max_subject_length);
	FUZZ_CHECK(config->pool_size >= 1 && config->pool_size <= 1024, "pool_size %u", config->pool_size);
	FUZZ_CHECK(config->async_queue_size >= 1, "async_queue_size 0");
	FUZZ_CHECK(config->max_connections >= 1, "max_connections 0");
	FUZZ_CHECK(config->http_threads <= 256, "http_threads %u", config->http_threads);
	FUZZ_CHECK(config->connection_timeout <= 86400, "connection_timeout %u", config->connection_timeout);
	FUZZ_CHECK(config->log_level <= LOG_LEVEL_DEBUG, "log_level %d", (int)config->log_level);
	FUZZ_CHECK((config->tls_cert_file[0] == '\0') == (config->tls_key_file[0] == '\0'),
	           "TLS certificate and key not set together");

	FUZZ_CHECK(config_set_defaults(&running) == 0, "config_set_defaults failed");
	config_restart_changes(&running, config, NULL, NULL);
	FUZZ_CHECK(config_keep_restart_options((struct config *)config, &running) == 0,
	           "config_keep_restart_options failed");
	FUZZ_CHECK(config_restart_changes(&running, config, NULL, NULL) == 0,
	           "restart-only options still differ after config_keep_restart_options");
	config_clear(&running);
}

int LLVMFuzzerTestOneInput(const uint8_t *input, size_t size)
{
	char path[64], error[512], small_error[9];
	struct config config;
	int fd, result;
	size_t done = 0;

	fd = memfd_create("gophermq-fuzz.conf", MFD_CLOEXEC);
	FUZZ_CHECK(fd >= 0, "memfd_create failed");
	while (done < size) {
		ssize_t wrote = write(fd, input + done, size - done);

		FUZZ_CHECK(wrote > 0, "write to memfd failed");
		done += (size_t)wrote;
	}
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);

	memset(&config, 0xa5, sizeof(config));
	result = config_load(path, &config, error, sizeof(error));
	if (result == 0) {
		check_loaded(&config);
		config_clear(&config);
	} else {
		FUZZ_CHECK(result == -1, "config_load returned %d", result);
		FUZZ_CHECK(all_zero(&config, sizeof(config)), "a failed load left the config set");
		FUZZ_CHECK(memchr(error, '\0', sizeof(error)) != NULL, "error not terminated");
		FUZZ_CHECK(strncmp(error, path, strlen(path)) == 0, "error does not name the file: %s", error);
		for (const char *c = error; *c != '\0'; c++)
			FUZZ_CHECK((unsigned char)*c >= 0x20 && *c != 0x7f, "control character in error: %s", error);

		memset(small_error, 'x', sizeof(small_error));
		result = config_load(path, &config, small_error, sizeof(small_error));
		FUZZ_CHECK(result == -1, "second load of the same file succeeded");
		FUZZ_CHECK(strlen(small_error) < sizeof(small_error) &&
		           strncmp(small_error, error, sizeof(small_error) - 1) == 0,
		           "truncated error \"%s\" is not the start of \"%s\"", small_error, error);
		FUZZ_CHECK(config_load(path, &config, NULL, 0) == -1, "load without error buffer succeeded");
	}
	close(fd);
	return 0;
}
