/* fuzz_sse.c - libFuzzer harness: arbitrary bytes as the body of an event
 * stream through the client's parser (src/client/sse.c), and each event's
 * data through its message output (src/client/output.c).
 *
 * The first byte picks how the rest is cut into pieces (sizes 1 to 16 in
 * a cycle seeded by it); the events must come out the same, in the same
 * order and with the same last ids, as when the body arrives in one piece
 * (a stream's bytes come in any split the network makes).  Every event
 * whose data is a message object is printed in the three output forms.
 */
#include "autoconfig.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/output.h"
#include "client/sse.h"

int LLVMFuzzerTestOneInput(const uint8_t *input, size_t size);

/* A finding: say which expectation broke and abort (libFuzzer saves the
 * input). */
#define FUZZ_CHECK(condition)                                                           \
	do {                                                                            \
		if (!(condition)) {                                                     \
			fprintf(stderr, "FUZZ FINDING at %s:%d: %s\n", __FILE__, __LINE__, \
			        #condition);                                            \
			abort();                                                        \
		}                                                                       \
	} while (0)

#define EVENTS_MAX 64

/* What a parse produced: a digest of each event, in order. */
struct events {
	size_t count;
	size_t data_length[EVENTS_MAX];
	uint64_t digest[EVENTS_MAX]; /* FNV-1a of type, data and last id */
	FILE *sink;
};

static uint64_t fnv(uint64_t hash, const char *bytes, size_t length)
{
	for (size_t i = 0; i < length; i++)
		hash = (hash ^ (unsigned char)bytes[i]) * 1099511628211ULL;
	return hash;
}

static bool remember(const struct sse_event *event, void *context)
{
	struct events *events = context;
	if (events->count == EVENTS_MAX)
		return false;
	uint64_t hash = 1469598103934665603ULL;
	hash = fnv(hash, event->type, strlen(event->type) + 1);
	hash = fnv(hash, event->data, event->data_length);
	hash = fnv(hash, event->last_id, strlen(event->last_id) + 1);
	events->data_length[events->count] = event->data_length;
	events->digest[events->count] = hash;
	events->count++;
	/* Data is NUL-terminated for the JSON parser. */
	FUZZ_CHECK(event->data[event->data_length] == '\0');
	json_object *object = json_tokener_parse(event->data);
	struct output_message message;
	if (object != NULL && output_message_from_json(object, &message)) {
		static const struct output_format formats[] = {
			{.kind = OUTPUT_DATA},
			{.kind = OUTPUT_JSON},
			{.kind = OUTPUT_FORMAT, .template = "{seq} {subject} {attempt} {data} {"},
		};
		for (size_t i = 0; i < sizeof formats / sizeof formats[0]; i++)
			output_print(events->sink, &formats[i], &message);
	}
	json_object_put(object);
	return true;
}

static void parse(const char *body, size_t length, unsigned seed, struct events *events)
{
	struct sse_parser parser;
	sse_init(&parser, remember, events);
	size_t at = 0;
	unsigned step = seed;
	while (at < length) {
		size_t piece = seed == 0 ? length : 1 + (step++ % 16);
		if (piece > length - at)
			piece = length - at;
		if (!sse_feed(&parser, body + at, piece))
			break;
		at += piece;
	}
	FUZZ_CHECK(!parser.failed);
	sse_free(&parser);
}

int LLVMFuzzerTestOneInput(const uint8_t *input, size_t size)
{
	if (size == 0)
		return 0;
	unsigned seed = 1 + input[0];
	size_t length = size - 1;
	/* An exactly sized copy: reads past the end are caught. */
	char *body = malloc(length > 0 ? length : 1);
	if (length > 0)
		memcpy(body, input + 1, length);
	struct events whole = {0}, pieces = {0};
	whole.sink = pieces.sink = fopen("/dev/null", "w");
	FUZZ_CHECK(whole.sink != NULL);
	parse(body, length, 0, &whole);
	parse(body, length, seed, &pieces);
	FUZZ_CHECK(whole.count == pieces.count);
	for (size_t i = 0; i < whole.count; i++) {
		FUZZ_CHECK(whole.data_length[i] == pieces.data_length[i]);
		FUZZ_CHECK(whole.digest[i] == pieces.digest[i]);
	}
	fclose(whole.sink);
	free(body);
	return 0;
}
