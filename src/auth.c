/* auth.c - bearer tokens from a file, checked in constant time, swappable
 * on reload under a read-write lock. */
#include "autoconfig.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "auth.h"

/* Longest accepted token line; longer lines are refused as malformed. */
#define AUTH_TOKEN_MAX 512

struct auth_tokens {
	char **tokens;
	size_t *lengths;
	size_t count;
};

struct auth_guard {
	pthread_rwlock_t lock;
	atomic_bool enabled;   /* fast path: no lock at all when off */
	struct auth_tokens *tokens;
};

static void auth_tokens_add(struct auth_tokens *set, char *token, size_t length, size_t *capacity,
                            int *failed)
{
	if (set->count == *capacity) {
		size_t grown = *capacity ? *capacity * 2 : 4;
		char **tokens = realloc(set->tokens, grown * sizeof(*tokens));
		if (tokens == NULL) {
			*failed = 1;
			return;
		}
		set->tokens = tokens;
		size_t *lengths = realloc(set->lengths, grown * sizeof(*lengths));
		if (lengths == NULL) {
			*failed = 1;
			return;
		}
		set->lengths = lengths;
		*capacity = grown;
	}
	set->tokens[set->count] = strndup(token, length);
	if (set->tokens[set->count] == NULL) {
		*failed = 1;
		return;
	}
	set->lengths[set->count] = length;
	set->count++;
}

static int is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

struct auth_tokens *auth_tokens_load(const char *path, char *error, size_t error_size)
{
	struct auth_tokens *set;
	struct stat status;
	char line[AUTH_TOKEN_MAX + 2];
	size_t capacity = 0;
	unsigned line_number = 0;
	int failed = 0;
	FILE *file = fopen(path, "re");

	if (file == NULL) {
		snprintf(error, error_size, "%s: cannot open token file: %s", path, strerror(errno));
		return NULL;
	}
	if (fstat(fileno(file), &status) != 0) {
		snprintf(error, error_size, "%s: %s", path, strerror(errno));
		fclose(file);
		return NULL;
	}
	if (status.st_mode & (S_IROTH | S_IWOTH)) {
		snprintf(error, error_size, "%s: token file is accessible by others (mode %03o); "
		         "run: chmod o-rwx %s", path, (unsigned)(status.st_mode & 0777), path);
		fclose(file);
		return NULL;
	}
	set = calloc(1, sizeof(*set));
	if (set == NULL) {
		snprintf(error, error_size, "%s: out of memory", path);
		fclose(file);
		return NULL;
	}
	while (!failed && fgets(line, sizeof(line), file) != NULL) {
		size_t length = strlen(line);
		char *start = line;

		line_number++;
		if (length == sizeof(line) - 1 && line[length - 1] != '\n' && !feof(file)) {
			snprintf(error, error_size, "%s:%u: token longer than %d bytes", path, line_number,
			         AUTH_TOKEN_MAX);
			failed = 2;
			break;
		}
		while (*start != '\0' && is_space(*start))
			start++;
		length = strlen(start);
		while (length > 0 && is_space(start[length - 1]))
			length--;
		if (length == 0 || start[0] == '#')
			continue;
		for (size_t i = 0; i < length; i++) {
			if ((unsigned char)start[i] <= ' ' || start[i] == 0x7f) {
				snprintf(error, error_size, "%s:%u: a token may not contain spaces or control characters",
				         path, line_number);
				failed = 2;
				break;
			}
		}
		if (!failed)
			auth_tokens_add(set, start, length, &capacity, &failed);
	}
	if (!failed && ferror(file)) {
		snprintf(error, error_size, "%s: read error", path);
		failed = 2;
	}
	fclose(file);
	if (failed == 1)
		snprintf(error, error_size, "%s: out of memory", path);
	if (!failed && set->count == 0) {
		snprintf(error, error_size, "%s: no token in file", path);
		failed = 2;
	}
	if (failed) {
		auth_tokens_free(set);
		return NULL;
	}
	return set;
}

void auth_tokens_free(struct auth_tokens *tokens)
{
	if (tokens == NULL)
		return;
	for (size_t i = 0; i < tokens->count; i++) {
		/* Secrets should not linger in freed memory. */
		explicit_bzero(tokens->tokens[i], tokens->lengths[i]);
		free(tokens->tokens[i]);
	}
	free(tokens->tokens);
	free(tokens->lengths);
	free(tokens);
}

/* Compares a (a_length bytes) with b (b_length bytes) in time that depends
 * only on a_length. */
static int constant_time_equal(const char *a, size_t a_length, const char *b, size_t b_length)
{
	unsigned char difference = (unsigned char)(a_length != b_length);

	for (size_t i = 0; i < a_length; i++) {
		unsigned char other = i < b_length ? (unsigned char)b[i] : 0;
		difference |= (unsigned char)((unsigned char)a[i] ^ other);
	}
	return difference == 0;
}

bool auth_tokens_allow(const struct auth_tokens *tokens, const char *header)
{
	static const char scheme[] = "Bearer ";
	const size_t scheme_length = sizeof(scheme) - 1;
	const char *presented;
	size_t presented_length;
	int allowed = 0;

	if (tokens == NULL || header == NULL)
		return false;
	if (strncasecmp(header, scheme, scheme_length) != 0)
		return false;
	presented = header + scheme_length;
	while (*presented == ' ')
		presented++;
	presented_length = strlen(presented);
	while (presented_length > 0 && presented[presented_length - 1] == ' ')
		presented_length--;
	if (presented_length == 0 || presented_length > AUTH_TOKEN_MAX)
		return false;
	for (size_t i = 0; i < tokens->count; i++)
		allowed |= constant_time_equal(presented, presented_length, tokens->tokens[i], tokens->lengths[i]);
	return allowed != 0;
}

struct auth_guard *auth_guard_new(struct auth_tokens *tokens)
{
	struct auth_guard *guard = calloc(1, sizeof(*guard));

	if (guard == NULL)
		return NULL;
	pthread_rwlock_init(&guard->lock, NULL);
	guard->tokens = tokens;
	atomic_init(&guard->enabled, tokens != NULL);
	return guard;
}

void auth_guard_free(struct auth_guard *guard)
{
	if (guard == NULL)
		return;
	auth_tokens_free(guard->tokens);
	pthread_rwlock_destroy(&guard->lock);
	free(guard);
}

void auth_guard_replace(struct auth_guard *guard, struct auth_tokens *tokens)
{
	struct auth_tokens *old;

	pthread_rwlock_wrlock(&guard->lock);
	old = guard->tokens;
	guard->tokens = tokens;
	atomic_store(&guard->enabled, tokens != NULL);
	pthread_rwlock_unlock(&guard->lock);
	auth_tokens_free(old);
}

bool auth_guard_enabled(struct auth_guard *guard)
{
	return guard != NULL && atomic_load_explicit(&guard->enabled, memory_order_acquire);
}

bool auth_guard_allow(struct auth_guard *guard, const char *header)
{
	bool allowed;

	if (!auth_guard_enabled(guard))
		return true;
	pthread_rwlock_rdlock(&guard->lock);
	/* Switched off between the check above and the lock: allow. */
	allowed = guard->tokens == NULL || auth_tokens_allow(guard->tokens, header);
	pthread_rwlock_unlock(&guard->lock);
	return allowed;
}
