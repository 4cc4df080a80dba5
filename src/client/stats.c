/* stats.c - gophermq stats: the broker's state from its Prometheus
 * metrics as a short table, with each request method's rate since the
 * previous look.
 *
 * One-shot calls remember the request counters of their metrics URL in
 * $XDG_CACHE_HOME/gophermq/ (or ~/.cache/gophermq/), so the next call can
 * tell the rate; --watch keeps them in memory and refreshes until SIGINT
 * or SIGTERM, then exits 0.
 */
#include "autoconfig.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "http.h"

#define METHOD_MAX 24
#define METHOD_NAME_MAX 32

/* The gauges of the table, in its order: label, metric family. */
static const struct {
	const char *label;
	const char *family;
} gauges[] = {
	{"pending messages", "gophermq_pending_messages"},
	{"pending bytes", "gophermq_pending_bytes"},
	{"in flight", "gophermq_inflight_messages"},
	{"subscribers", "gophermq_subscribers"},
	{"subjects", "gophermq_subjects"},
	{"groups", "gophermq_groups"},
	{"streams", "gophermq_streams"},
	{"held fetches", "gophermq_parked_fetches"},
};
#define GAUGE_COUNT (sizeof gauges / sizeof gauges[0])

struct method_count {
	char name[METHOD_NAME_MAX];
	double requests;
};

/* One look at the broker. */
struct sample {
	double gauges[GAUGE_COUNT];
	bool has_gauge[GAUGE_COUNT];
	struct method_count methods[METHOD_MAX];
	size_t method_count;
	double taken_s; /* wall clock */
};

static double wall_clock_s(void)
{
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	return (double)now.tv_sec + (double)now.tv_nsec / 1e9;
}

static struct method_count *method_slot(struct sample *sample, const char *name, size_t length)
{
	if (length == 0 || length >= METHOD_NAME_MAX)
		return NULL;
	for (size_t i = 0; i < sample->method_count; i++)
		if (strlen(sample->methods[i].name) == length && memcmp(sample->methods[i].name, name, length) == 0)
			return &sample->methods[i];
	if (sample->method_count == METHOD_MAX)
		return NULL;
	struct method_count *slot = &sample->methods[sample->method_count++];
	memcpy(slot->name, name, length);
	slot->name[length] = '\0';
	slot->requests = 0;
	return slot;
}

/* Reads the families the table shows out of the exposition text. */
static void parse_metrics(char *text, struct sample *sample)
{
	static const char request_family[] = "gophermq_client_request_rate{";
	for (char *line = strtok(text, "\n"); line != NULL; line = strtok(NULL, "\n")) {
		if (line[0] == '#')
			continue;
		char *value = strrchr(line, ' ');
		if (value == NULL)
			continue;
		char *end;
		double number = strtod(value + 1, &end);
		if (end == value + 1)
			continue;
		*value = '\0';
		if (strncmp(line, request_family, sizeof request_family - 1) == 0) {
			const char *method = strstr(line, "method=\"");
			if (method != NULL) {
				method += 8;
				struct method_count *slot = method_slot(sample, method, strcspn(method, "\""));
				if (slot != NULL)
					slot->requests += number;
			}
			continue;
		}
		for (size_t i = 0; i < GAUGE_COUNT; i++)
			if (strcmp(line, gauges[i].family) == 0) {
				sample->gauges[i] = number;
				sample->has_gauge[i] = true;
			}
	}
}

static int take_sample(struct http_session *session, const char *url, struct sample *sample)
{
	memset(sample, 0, sizeof *sample);
	struct http_reply reply = {0};
	int result = http_get(session, url, &reply);
	if (result != EXIT_OK)
		return result;
	if (reply.status != 200) {
		http_print_refusal("stats", &reply, NULL);
		result = EXIT_REFUSED;
	} else if (reply.body == NULL || strstr(reply.body, "gophermq_") == NULL) {
		client_error("stats: %s holds no GopherMQ metrics", url);
		result = EXIT_UNREACHABLE;
	} else {
		sample->taken_s = wall_clock_s();
		parse_metrics(reply.body, sample);
	}
	http_reply_clear(&reply);
	return result;
}

static const struct method_count *find_method(const struct sample *sample, const char *name)
{
	for (size_t i = 0; i < sample->method_count; i++)
		if (strcmp(sample->methods[i].name, name) == 0)
			return &sample->methods[i];
	return NULL;
}

static void print_table(const char *url, const struct sample *now, const struct sample *before)
{
	printf("broker             %s\n", url);
	for (size_t i = 0; i < GAUGE_COUNT; i++) {
		if (now->has_gauge[i])
			printf("%-18s %.0f\n", gauges[i].label, now->gauges[i]);
		else
			printf("%-18s -\n", gauges[i].label);
	}
	double elapsed = before != NULL ? now->taken_s - before->taken_s : 0;
	printf("\n%-18s %12s %12s\n", "method", "requests", "per second");
	for (size_t i = 0; i < now->method_count; i++) {
		const struct method_count *method = &now->methods[i];
		const struct method_count *earlier = before != NULL ? find_method(before, method->name) : NULL;
		double previous = earlier != NULL ? earlier->requests : 0;
		if (before != NULL && elapsed > 0 && method->requests >= previous)
			printf("%-18s %12.0f %12.1f\n", method->name, method->requests,
			       (method->requests - previous) / elapsed);
		else
			printf("%-18s %12.0f %12s\n", method->name, method->requests, "-");
	}
}

/* The file remembering the last sample of a metrics URL, or NULL. */
static char *state_path(const char *url)
{
	const char *cache = getenv("XDG_CACHE_HOME");
	const char *home = getenv("HOME");
	char directory[4096];
	if (cache != NULL && cache[0] == '/')
		snprintf(directory, sizeof directory, "%s/gophermq", cache);
	else if (home != NULL && home[0] == '/')
		snprintf(directory, sizeof directory, "%s/.cache/gophermq", home);
	else
		return NULL;
	/* FNV-1a of the URL names the file: one per broker. */
	unsigned long long hash = 1469598103934665603ULL;
	for (const char *c = url; *c != '\0'; c++)
		hash = (hash ^ (unsigned char)*c) * 1099511628211ULL;
	size_t size = strlen(directory) + 40;
	char *path = malloc(size);
	if (path != NULL)
		snprintf(path, size, "%s/stats-%016llx", directory, hash);
	return path;
}

static bool load_sample(const char *path, struct sample *sample)
{
	memset(sample, 0, sizeof *sample);
	FILE *file = fopen(path, "r");
	if (file == NULL)
		return false;
	bool ok = fscanf(file, "%lf\n", &sample->taken_s) == 1;
	char name[METHOD_NAME_MAX];
	double requests;
	while (ok && fscanf(file, "%31s %lf\n", name, &requests) == 2) {
		struct method_count *slot = method_slot(sample, name, strlen(name));
		if (slot != NULL)
			slot->requests = requests;
	}
	fclose(file);
	return ok;
}

/* Saves the counters for the next call; a cache that cannot be written
 * only costs the rates. */
static void save_sample(const char *path, const struct sample *sample)
{
	char directory[4096];
	snprintf(directory, sizeof directory, "%s", path);
	char *slash = strrchr(directory, '/');
	if (slash == NULL)
		return;
	*slash = '\0';
	char *parent = strrchr(directory, '/');
	if (parent != NULL) {
		*parent = '\0';
		mkdir(directory, 0700);
		*parent = '/';
	}
	mkdir(directory, 0700);
	char temporary[4200];
	snprintf(temporary, sizeof temporary, "%s.%ld", path, (long)getpid());
	FILE *file = fopen(temporary, "w");
	if (file == NULL)
		return;
	fprintf(file, "%.3f\n", sample->taken_s);
	for (size_t i = 0; i < sample->method_count; i++)
		fprintf(file, "%s %.0f\n", sample->methods[i].name, sample->methods[i].requests);
	if (fclose(file) != 0 || rename(temporary, path) != 0)
		unlink(temporary);
}

int command_stats(const struct client_options *options, const struct client_args *args)
{
	struct http_session *session = http_session_new(options);
	if (session == NULL)
		return EXIT_USAGE;
	struct sample samples[2];
	struct sample *now = &samples[0], *before = &samples[1];
	bool has_before = false;
	int result = EXIT_OK;
	if (!options->watch) {
		char *path = state_path(options->metrics_url);
		has_before = path != NULL && load_sample(path, before);
		result = take_sample(session, options->metrics_url, now);
		if (result == EXIT_OK) {
			print_table(options->metrics_url, now, has_before ? before : NULL);
			if (path != NULL)
				save_sample(path, now);
		}
		free(path);
	} else {
		bool terminal = isatty(STDOUT_FILENO);
		client_catch_stop_signals();
		while (client_stop_requested == 0) {
			result = take_sample(session, options->metrics_url, now);
			if (result != EXIT_OK)
				break;
			if (terminal)
				fputs("\033[H\033[2J", stdout);
			else if (has_before)
				fputc('\n', stdout);
			print_table(options->metrics_url, now, has_before ? before : NULL);
			fflush(stdout);
			struct sample *swap = before;
			before = now;
			now = swap;
			has_before = true;
			struct timespec pause = {.tv_sec = options->watch_s};
			nanosleep(&pause, NULL);
		}
	}
	http_session_free(session);
	return result;
}
