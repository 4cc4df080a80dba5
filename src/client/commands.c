/* commands.c - the one-request commands of gophermq(1): pub, sub, fetch,
 * ack, nack and unsub.  main.c has checked the argument counts.
 */
#include "autoconfig.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "http.h"
#include "requests.h"

/* A batch request holds at most this much data, as JSON, unless one
 * line is larger (the broker's default max_batch_bytes is 8 MiB). */
#define BATCH_BYTES_MAX (1024 * 1024)

/* Reads all of stdin into *data (free() it); one trailing newline is
 * dropped, as the shell's $(…) does. */
static int read_stdin(char **data, size_t *length)
{
	size_t size = 4096, used = 0;
	char *buffer = malloc(size);
	if (buffer == NULL) {
		client_error("out of memory");
		return EXIT_USAGE;
	}
	for (;;) {
		if (used == size) {
			char *grown = realloc(buffer, size * 2);
			if (grown == NULL) {
				free(buffer);
				client_error("out of memory");
				return EXIT_USAGE;
			}
			buffer = grown;
			size *= 2;
		}
		size_t got = fread(buffer + used, 1, size - used, stdin);
		used += got;
		if (got == 0)
			break;
	}
	if (ferror(stdin)) {
		client_error("cannot read stdin: %s", strerror(errno));
		free(buffer);
		return EXIT_USAGE;
	}
	if (used > 0 && buffer[used - 1] == '\n')
		used--;
	*data = buffer;
	*length = used;
	return EXIT_OK;
}

static json_object *message_object(const struct client_options *options, const char *subject, const char *data,
                                   size_t length)
{
	json_object *message = json_object_new_object();
	json_object_object_add(message, "subject", json_object_new_string(subject));
	json_object_object_add(message, "data", json_object_new_string_len(data, (int)length));
	if (options->ttl_ms > 0)
		json_object_object_add(message, "ttl_ms", json_object_new_int64(options->ttl_ms));
	return message;
}

/* Messages read from stdin and not sent yet: lines first_line.. (1-based)
 * of which published lines came before. */
struct batch {
	json_object *messages;
	size_t bytes;             /* their data, as JSON */
	long first_line;
	long published;
};

/* Sends the batch as one request and starts the next one; a refusal
 * names the line of the message the broker pointed at. */
static int send_batch(struct http_session *session, struct batch *batch)
{
	long count = (long)json_object_array_length(batch->messages);
	json_object *request = json_object_new_object();
	json_object_object_add(request, "messages", batch->messages);
	struct http_reply reply = {0};
	int result = http_post(session, "/api/publish/batch", request, 0, &reply);
	json_object_put(request);
	if (result == EXIT_OK && (reply.status < 200 || reply.status > 299)) {
		long index = http_refusal_index(&reply);
		char detail[80];
		snprintf(detail, sizeof detail, "line %ld; %ld earlier line%s published",
		         batch->first_line + (index > 0 ? index : 0), batch->published, batch->published == 1 ? "" : "s");
		http_print_refusal("pub", &reply, detail);
		result = EXIT_REFUSED;
	}
	http_reply_clear(&reply);
	batch->published += count;
	batch->first_line += count;
	batch->messages = json_object_new_array();
	batch->bytes = 0;
	return result;
}

/* How many bytes data takes as a JSON string's content. */
static size_t json_length(const char *data, size_t length)
{
	size_t total = length;
	for (size_t i = 0; i < length; i++) {
		unsigned char c = (unsigned char)data[i];
		if (c < 0x20)
			total += 5; /* \u00XX (at worst) */
		else if (c == '"' || c == '\\')
			total += 1;
	}
	return total;
}

/* pub --batch: one message a line of stdin, in batch requests. */
static int publish_lines(struct http_session *session, const struct client_options *options, const char *subject)
{
	char *line = NULL;
	size_t line_size = 0;
	ssize_t length;
	struct batch batch = {.messages = json_object_new_array(), .first_line = 1};
	int result = EXIT_OK;
	while (result == EXIT_OK && (length = getline(&line, &line_size, stdin)) >= 0) {
		if (length > 0 && line[length - 1] == '\n')
			length--;
		/* A line that would take the request past BATCH_BYTES_MAX
		 * starts the next one. */
		size_t line_bytes = json_length(line, (size_t)length);
		if (json_object_array_length(batch.messages) > 0 && batch.bytes + line_bytes > BATCH_BYTES_MAX) {
			result = send_batch(session, &batch);
			if (result != EXIT_OK)
				break;
		}
		json_object_array_add(batch.messages, message_object(options, subject, line, (size_t)length));
		batch.bytes += line_bytes;
		if ((long)json_object_array_length(batch.messages) >= options->batch_size)
			result = send_batch(session, &batch);
	}
	if (result == EXIT_OK && ferror(stdin)) {
		client_error("cannot read stdin: %s", strerror(errno));
		result = EXIT_USAGE;
	}
	if (result == EXIT_OK && json_object_array_length(batch.messages) > 0)
		result = send_batch(session, &batch);
	json_object_put(batch.messages);
	free(line);
	return result;
}

int command_pub(const struct client_options *options, const struct client_args *args)
{
	const char *subject = args->values[0];
	struct http_session *session = http_session_new(options);
	if (session == NULL)
		return EXIT_USAGE;
	int result;
	if (options->batch) {
		result = publish_lines(session, options, subject);
	} else {
		char *data = NULL;
		size_t length = 0;
		if (args->count > 1 && strcmp(args->values[1], "-") != 0) {
			result = EXIT_OK;
			length = strlen(args->values[1]);
		} else {
			result = read_stdin(&data, &length);
		}
		if (result == EXIT_OK) {
			json_object *request = message_object(options, subject, data != NULL ? data : args->values[1], length);
			json_object *answer;
			result = http_api_call(session, "pub", "/api/publish", request, 0, &answer);
			json_object_put(request);
			json_object_put(answer);
		}
		free(data);
	}
	http_session_free(session);
	return result;
}

int command_sub(const struct client_options *options, const struct client_args *args)
{
	struct http_session *session = http_session_new(options);
	if (session == NULL)
		return EXIT_USAGE;
	char *id;
	int result = request_subscribe(session, "sub", options, args->values[0], &id);
	if (result == EXIT_OK)
		printf("%s\n", id);
	free(id);
	http_session_free(session);
	return result;
}

int command_fetch(const struct client_options *options, const struct client_args *args)
{
	struct http_session *session = http_session_new(options);
	if (session == NULL)
		return EXIT_USAGE;
	json_object *answer, *messages;
	int result = request_fetch(session, "fetch", args->values[0], args->values[1], options->max, options->wait_ms,
	                           &answer, &messages);
	if (result == EXIT_OK) {
		size_t count = json_object_array_length(messages);
		for (size_t i = 0; i < count; i++) {
			struct output_message message;
			if (!output_message_from_json(json_object_array_get_idx(messages, i), &message)) {
				client_error("fetch: the broker sent a message without seq, subject, attempt or data");
				result = EXIT_UNREACHABLE;
				break;
			}
			output_print(stdout, &options->output, &message);
		}
		json_object_put(answer);
	}
	http_session_free(session);
	return result;
}

/* ack and nack: SUBJECT ID SEQ...; prints the broker's count. */
static int settle(const struct client_options *options, const struct client_args *args, const char *command,
                  const char *path, int64_t delay_ms)
{
	size_t count = (size_t)args->count - 2;
	long long *seqs = calloc(count, sizeof *seqs);
	if (seqs == NULL) {
		client_error("out of memory");
		return EXIT_USAGE;
	}
	for (size_t i = 0; i < count; i++) {
		int64_t seq;
		if (!client_parse_number(args->values[i + 2], 1, INT64_MAX, "seq", &seq)) {
			free(seqs);
			return EXIT_USAGE;
		}
		seqs[i] = (long long)seq;
	}
	int result = EXIT_USAGE;
	struct http_session *session = http_session_new(options);
	if (session != NULL) {
		long long settled;
		result = request_settle(session, command, path, args->values[0], args->values[1], seqs, count, delay_ms,
		                        &settled);
		if (result == EXIT_OK)
			printf("%lld\n", settled);
		http_session_free(session);
	}
	free(seqs);
	return result;
}

int command_ack(const struct client_options *options, const struct client_args *args)
{
	return settle(options, args, "ack", "/api/ack", -1);
}

int command_nack(const struct client_options *options, const struct client_args *args)
{
	return settle(options, args, "nack", "/api/nack", options->delay_ms);
}

int command_unsub(const struct client_options *options, const struct client_args *args)
{
	struct http_session *session = http_session_new(options);
	if (session == NULL)
		return EXIT_USAGE;
	int result = request_unsubscribe(session, "unsub", args->values[0], args->values[1]);
	http_session_free(session);
	return result;
}
