/* tail.c - gophermq tail: subscribe, print messages as they arrive,
 * acknowledge what was printed, unsubscribe at the end.
 *
 * Messages come from the subscriber's event stream (/api/stream), or with
 * --poll from held fetches.  The end is SIGINT or SIGTERM, --count
 * messages, or stdout closing; in each case the subscriber is removed.  A
 * broker that goes away is retried for TAIL_RETRY_S: one restarted with
 * persistence still knows the subscriber, and the stream resumes after the
 * last event printed (Last-Event-ID).
 */
#include "autoconfig.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdio_ext.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client.h"
#include "http.h"
#include "requests.h"
#include "sse.h"

#define TAIL_RETRY_S 30
#define TAIL_POLL_WAIT_MS 30000
#define TAIL_POLL_MAX 100

struct tail {
	const struct client_options *options;
	const char *subject;
	char *id;
	struct http_session *control; /* subscribe, fetch, ack, unsubscribe */
	struct http_session *stream;
	struct sse_parser parser;
	long long printed;
	long long *acks;              /* printed, not yet acknowledged */
	size_t ack_count, ack_size;
	int failure;                  /* an exit code that ends the tail */
	bool done;                    /* --count reached, or stdout closed */
};

static bool finished(const struct tail *tail)
{
	return client_stop_requested != 0 || tail->done || tail->failure != EXIT_OK;
}

/* Prints one message and notes its seq for acknowledgement. */
static bool print_message(struct tail *tail, const struct output_message *message)
{
	output_print(stdout, &tail->options->output, message);
	if (tail->options->ack) {
		if (tail->ack_count == tail->ack_size) {
			size_t size = tail->ack_size ? tail->ack_size * 2 : 64;
			long long *grown = realloc(tail->acks, size * sizeof *grown);
			if (grown == NULL) {
				client_error("out of memory");
				tail->failure = EXIT_USAGE;
				return false;
			}
			tail->acks = grown;
			tail->ack_size = size;
		}
		tail->acks[tail->ack_count++] = message->seq;
	}
	tail->printed++;
	if (tail->options->count > 0 && tail->printed >= tail->options->count)
		tail->done = true;
	return !tail->done;
}

/* Flushes what was printed, then acknowledges it. */
static void settle_printed(struct tail *tail)
{
	if (fflush(stdout) != 0) {
		if (errno == EPIPE) {
			/* The reader went away (| head): a normal end. */
			__fpurge(stdout);
			clearerr(stdout);
			tail->done = true;
		} else {
			client_error("cannot write the output: %s", strerror(errno));
			tail->failure = EXIT_USAGE;
		}
		tail->ack_count = 0;
		return;
	}
	if (tail->ack_count == 0)
		return;
	long long settled;
	int result = request_settle(tail->control, "tail", "/api/ack", tail->subject, tail->id, tail->acks,
	                            tail->ack_count, -1, &settled);
	tail->ack_count = 0;
	if (result != EXIT_OK)
		tail->failure = result;
}

static bool on_event(const struct sse_event *event, void *context)
{
	struct tail *tail = context;
	if (strcmp(event->type, "message") != 0)
		return true;
	json_object *object = json_tokener_parse(event->data);
	struct output_message message;
	bool keep_going;
	if (object == NULL || !output_message_from_json(object, &message)) {
		client_error("tail: the broker sent an event that is not a message");
		tail->failure = EXIT_UNREACHABLE;
		keep_going = false;
	} else {
		keep_going = print_message(tail, &message);
	}
	json_object_put(object);
	return keep_going;
}

static bool on_stream_bytes(const char *data, size_t length, void *context)
{
	struct tail *tail = context;
	if (!sse_feed(&tail->parser, data, length) && tail->parser.failed) {
		client_error("out of memory");
		tail->failure = EXIT_USAGE;
	}
	settle_printed(tail);
	return !finished(tail);
}

/* Sleeps a little before the next attempt; a signal cuts it short. */
static void pause_before_retry(unsigned attempt)
{
	long ms = attempt < 4 ? 100L << attempt : 1000;
	struct timespec delay = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
	nanosleep(&delay, NULL);
}

static time_t now_s(void)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return now.tv_sec;
}

/* Keeps going after a lost connection until TAIL_RETRY_S have passed
 * since the last good answer; then says why and fails. */
static bool may_retry(struct tail *tail, struct http_session *session, time_t last_good, unsigned *attempt)
{
	if (now_s() - last_good >= TAIL_RETRY_S) {
		client_error("tail: cannot reach %s: %s (gave up after %d s)", tail->options->url, http_last_error(session),
		             TAIL_RETRY_S);
		tail->failure = EXIT_UNREACHABLE;
		return false;
	}
	pause_before_retry((*attempt)++);
	return true;
}

static void follow_stream(struct tail *tail)
{
	char *subject = http_escape(tail->subject);
	char *id = http_escape(tail->id);
	size_t size = strlen(subject ? subject : "") + strlen(id ? id : "") + sizeof "/api/stream?subject=&id=";
	char *path = malloc(size);
	if (subject == NULL || id == NULL || path == NULL) {
		client_error("out of memory");
		tail->failure = EXIT_USAGE;
		free(subject), free(id), free(path);
		return;
	}
	snprintf(path, size, "/api/stream?subject=%s&id=%s", subject, id);
	http_session_interrupt_on(tail->stream, &client_stop_requested);
	struct http_reply reply = {0};
	time_t last_good = now_s();
	unsigned attempt = 0;
	while (!finished(tail)) {
		/* A new connection starts a new event stream, resumed after
		 * the last event printed. */
		sse_restart(&tail->parser);
		const char *last_id = tail->parser.last_id[0] != '\0' ? tail->parser.last_id : NULL;
		int result = http_stream(tail->stream, path, last_id, on_stream_bytes, tail, &reply);
		if (finished(tail))
			break;
		if (result == EXIT_OK && reply.status == 200) {
			/* The broker ended the stream (shutdown, or a newer
			 * stream of this subscriber): open it again. */
			last_good = now_s();
			attempt = 0;
			pause_before_retry(attempt++);
		} else if (result == EXIT_OK) {
			http_print_refusal("tail", &reply, NULL);
			tail->failure = EXIT_REFUSED;
		} else if (result == EXIT_UNREACHABLE) {
			if (!may_retry(tail, tail->stream, last_good, &attempt))
				break;
		} else {
			tail->failure = result;
		}
	}
	http_reply_clear(&reply);
	free(path);
	free(subject);
	free(id);
}

static void follow_fetches(struct tail *tail)
{
	time_t last_good = now_s();
	unsigned attempt = 0;
	while (!finished(tail)) {
		int64_t max = TAIL_POLL_MAX;
		if (tail->options->count > 0 && tail->options->count - tail->printed < max)
			max = tail->options->count - tail->printed;
		json_object *answer, *messages;
		http_session_interrupt_on(tail->control, &client_stop_requested);
		int result = request_fetch(tail->control, "tail", tail->subject, tail->id, max, TAIL_POLL_WAIT_MS, &answer,
		                           &messages);
		http_session_interrupt_on(tail->control, NULL);
		if (client_stop_requested != 0) {
			json_object_put(answer);
			break;
		}
		/* No answer at all (not one we cannot use): try again. */
		if (result == EXIT_UNREACHABLE && http_last_error(tail->control)[0] != '\0') {
			if (!may_retry(tail, tail->control, last_good, &attempt))
				break;
			continue;
		}
		last_good = now_s();
		attempt = 0;
		if (result != EXIT_OK) {
			tail->failure = result;
			continue;
		}
		size_t count = json_object_array_length(messages);
		for (size_t i = 0; i < count && tail->failure == EXIT_OK; i++) {
			struct output_message message;
			if (!output_message_from_json(json_object_array_get_idx(messages, i), &message)) {
				client_error("tail: the broker sent a message without seq, subject, attempt or data");
				tail->failure = EXIT_UNREACHABLE;
			} else {
				print_message(tail, &message);
			}
		}
		settle_printed(tail);
		json_object_put(answer);
	}
}

int command_tail(const struct client_options *options, const struct client_args *args)
{
	struct tail tail = {.options = options, .subject = args->values[0]};
	sse_init(&tail.parser, on_event, &tail);
	tail.control = http_session_new(options);
	tail.stream = options->poll || tail.control == NULL ? NULL : http_session_new(options);
	if (tail.control == NULL || (!options->poll && tail.stream == NULL)) {
		http_session_free(tail.control);
		return EXIT_USAGE;
	}
	int result = request_subscribe(tail.control, "tail", options, tail.subject, &tail.id);
	if (result == EXIT_OK) {
		client_catch_stop_signals();
		signal(SIGPIPE, SIG_IGN);
		if (options->poll)
			follow_fetches(&tail);
		else
			follow_stream(&tail);
		/* Whatever ended it, the subscriber goes (a broker that cannot
		 * be reached will expire it by subscriber_ttl). */
		if (tail.failure != EXIT_UNREACHABLE) {
			int removed = request_unsubscribe(tail.control, "tail", tail.subject, tail.id);
			/* A broker that forgot the subscriber needs nothing more. */
			if (tail.failure == EXIT_OK && removed != EXIT_REFUSED)
				tail.failure = removed;
		}
		result = tail.failure;
	}
	sse_free(&tail.parser);
	free(tail.acks);
	free(tail.id);
	http_session_free(tail.stream);
	http_session_free(tail.control);
	return result;
}
