/* stream.c - Server-Sent Event streams of a subscriber's messages (see
 * stream.h).  Each stream's bytes are produced on its request's thread;
 * other threads only wake it (the broker, when messages arrive or its
 * keepalive wait ends) or end it (a newer stream of the same subscriber,
 * the sweep of abandoned connections, shutdown), under streams_lock. */
#include "autoconfig.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "escape.h"
#include "log.h"
#include "stream.h"

#define STREAM_OPEN_COMMENT ": open\n\n"
#define STREAM_KEEPALIVE ": keepalive\n\n"
#define EVENT_ID "id: "
#define EVENT_HEAD "\nevent: message\ndata: {\"seq\":"
#define EVENT_SUBJECT ",\"subject\":"
#define EVENT_ATTEMPT ",\"attempt\":"
#define EVENT_DATA ",\"data\":"
#define EVENT_END "}\n\n"

enum wait_state { WAIT_PARKED, WAIT_ATTACHED, WAIT_WOKEN };

struct api_stream {
	struct broker_waiter waiter;
	struct api_context *context;
	struct api_stream *previous, *next;     /* the open streams; streams_lock */
	atomic_int wait;                        /* enum wait_state, while parked */
	atomic_bool ended;                      /* end at the next read */
	void (*resume)(void *transport);
	void *transport;
	/* The request thread's own. */
	bool parked;                            /* waiter is parked, or woken and unread */
	bool opened;                            /* the first comment went out */
	bool finished;                          /* ends once out is handed over */
	struct broker_batch batch;              /* taken messages ... */
	size_t sent;                            /* ... of which this many were formatted */
	char *out;                              /* the bytes being handed over */
	size_t out_length, out_done, out_capacity;
	size_t subject_length, id_length;
	char names[];                           /* subject, NUL, id, NUL */
};

static pthread_mutex_t streams_lock = PTHREAD_MUTEX_INITIALIZER;
static struct api_stream *streams;
static atomic_uint_fast64_t streams_open;
static atomic_uint_fast64_t events_sent;

static const char *stream_id(const struct api_stream *stream)
{
	return stream->names + stream->subject_length + 1;
}

uint64_t api_stream_open_count(void)
{
	return atomic_load_explicit(&streams_open, memory_order_relaxed);
}

uint64_t api_stream_events_sent(void)
{
	return atomic_load_explicit(&events_sent, memory_order_relaxed);
}

/* The broker's wake(), and the end of a wait taken back by
 * api_stream_end(): any thread. */
static void stream_wake(struct broker_waiter *waiter)
{
	struct api_stream *stream = (struct api_stream *)waiter;

	if (atomic_exchange(&stream->wait, WAIT_WOKEN) == WAIT_ATTACHED)
		stream->resume(stream->transport);
}

/* Marks stream to end and wakes it when it waits.  streams_lock held. */
static void stream_end_locked(struct api_stream *stream)
{
	atomic_store(&stream->ended, true);
	if (broker_waiter_cancel(stream->context->broker, &stream->waiter))
		stream_wake(&stream->waiter);
}

void api_stream_end(struct api_stream *stream)
{
	pthread_mutex_lock(&streams_lock);
	stream_end_locked(stream);
	pthread_mutex_unlock(&streams_lock);
}

void api_stream_end_all(void)
{
	pthread_mutex_lock(&streams_lock);
	for (struct api_stream *stream = streams; stream; stream = stream->next)
		stream_end_locked(stream);
	pthread_mutex_unlock(&streams_lock);
}

/* Parses a Last-Event-ID: a seq, digits only.  False for anything else
 * (a browser echoes whatever id it was sent last). */
static bool parse_event_id(const char *text, uint64_t *seq)
{
	uint64_t value = 0;

	if (!text || !*text)
		return false;
	for (const char *c = text; *c; c++) {
		if (*c < '0' || *c > '9' || value > (UINT64_MAX - (uint64_t)(*c - '0')) / 10)
			return false;
		value = value * 10 + (uint64_t)(*c - '0');
	}
	*seq = value;
	return true;
}

struct api_stream *api_stream_open(struct api_context *context,
                                   const char *subject, size_t subject_length,
                                   const char *id, size_t id_length,
                                   const char *last_event_id, struct api_reply *reply)
{
	struct api_stream *stream;
	enum broker_status status;
	uint64_t after = 0;
	bool resend = parse_event_id(last_event_id, &after);
	size_t resent = 0;

	if (!broker_subject_valid(subject, subject_length, 0)) {
		api_reply_static(reply, 400, API_TEXT_INVALID_SUBJECT);
		return NULL;
	}
	stream = calloc(1, sizeof(*stream) + subject_length + id_length + 2);
	if (!stream) {
		api_reply_static(reply, 500, API_TEXT_SERVER_ERROR);
		return NULL;
	}
	stream->context = context;
	stream->waiter.wake = stream_wake;
	stream->waiter.stream = true;
	atomic_init(&stream->wait, WAIT_WOKEN);
	atomic_init(&stream->ended, false);
	stream->subject_length = subject_length;
	stream->id_length = id_length;
	memcpy(stream->names, subject, subject_length);
	memcpy(stream->names + subject_length + 1, id, id_length);

	/* One stream per subscriber: the older one ends.  It stops waiting
	 * before the in-flight messages are sent again, or a parked older
	 * stream would be handed them and send them to its client. */
	pthread_mutex_lock(&streams_lock);
	status = broker_stream_opened(context->broker, subject, subject_length, id, id_length);
	if (status != BROKER_OK) {
		pthread_mutex_unlock(&streams_lock);
		free(stream);
		api_reply_status(reply, status);
		return NULL;
	}
	for (struct api_stream *other = streams; other; other = other->next)
		if (other->id_length == id_length && memcmp(stream_id(other), id, id_length) == 0)
			stream_end_locked(other);
	/* A subscriber gone meanwhile ends this stream at its first take. */
	if (resend)
		(void)broker_stream_resend(context->broker, subject, subject_length, id, id_length, after, &resent);
	stream->next = streams;
	if (streams)
		streams->previous = stream;
	streams = stream;
	pthread_mutex_unlock(&streams_lock);
	atomic_fetch_add_explicit(&streams_open, 1, memory_order_relaxed);
	if (resent > 0)
		log_debug("stream of %.*s: %zu in-flight message(s) after %" PRIu64 " sent again",
		          (int)id_length, id, resent, after);
	return stream;
}

/* Makes room for length more bytes in out.  Returns false when out of
 * memory. */
static bool out_reserve(struct api_stream *stream, size_t length)
{
	size_t capacity = stream->out_capacity ? stream->out_capacity : 256;
	char *grown;

	if (stream->out_length + length <= stream->out_capacity)
		return true;
	while (capacity < stream->out_length + length)
		capacity *= 2;
	grown = realloc(stream->out, capacity);
	if (!grown)
		return false;
	stream->out = grown;
	stream->out_capacity = capacity;
	return true;
}

static void out_put(struct api_stream *stream, const char *text, size_t length)
{
	memcpy(stream->out + stream->out_length, text, length);
	stream->out_length += length;
}

static void out_put_number(struct api_stream *stream, uint64_t number)
{
	stream->out_length += (size_t)sprintf(stream->out + stream->out_length, "%" PRIu64, number);
}

#define out_put_text(stream, text) out_put(stream, text, sizeof(text) - 1)

#define ATTEMPT_DIGITS_MAX 10

static size_t decimal_digits(uint64_t number)
{
	size_t digits = 1;

	while (number >= 10) {
		number /= 10;
		digits++;
	}
	return digits;
}

/* The subject a message's event names: the one it was published to. */
static const char *event_subject(const struct api_stream *stream, const struct broker_message *message,
                                 size_t *length)
{
	if (message->subject_length > 0) {
		*length = message->subject_length;
		return broker_message_subject(message);
	}
	*length = stream->subject_length;
	return stream->names;
}

/* The bytes of message's event (its attempt counted at its widest): what
 * a take may put in the room the transport offers.  Broker's lock held. */
static size_t event_cost(const struct broker_message *message, void *context)
{
	size_t subject_length;
	const char *subject = event_subject(context, message, &subject_length);

	return sizeof(EVENT_ID EVENT_HEAD EVENT_SUBJECT EVENT_ATTEMPT EVENT_DATA EVENT_END) - 1 +
	       2 * decimal_digits(message->seq) + ATTEMPT_DIGITS_MAX +
	       escape_json_length(subject, subject_length) + escape_json_length(message->data, message->length);
}

/* Formats the event of the batch's next message into out.  False when
 * out of memory. */
static bool format_event(struct api_stream *stream)
{
	const struct broker_message *message = stream->batch.messages[stream->sent];
	uint32_t attempt = stream->batch.attempts ? stream->batch.attempts[stream->sent] : 1;
	size_t subject_length;
	const char *subject = event_subject(stream, message, &subject_length);
	size_t size = event_cost(message, stream) + 1;

	stream->out_length = stream->out_done = 0;
	if (!out_reserve(stream, size))
		return false;
	out_put_text(stream, EVENT_ID);
	out_put_number(stream, message->seq);
	out_put_text(stream, EVENT_HEAD);
	out_put_number(stream, message->seq);
	out_put_text(stream, EVENT_SUBJECT);
	stream->out_length = (size_t)(escape_json(stream->out + stream->out_length, subject, subject_length) -
	                              stream->out);
	out_put_text(stream, EVENT_ATTEMPT);
	out_put_number(stream, attempt);
	out_put_text(stream, EVENT_DATA);
	stream->out_length = (size_t)(escape_json(stream->out + stream->out_length, message->data,
	                                          message->length) - stream->out);
	out_put_text(stream, EVENT_END);
	stream->sent++;
	atomic_fetch_add_explicit(&events_sent, 1, memory_order_relaxed);
	return true;
}

static bool format_text(struct api_stream *stream, const char *text, size_t length)
{
	stream->out_length = stream->out_done = 0;
	if (!out_reserve(stream, length))
		return false;
	out_put(stream, text, length);
	return true;
}

/* Gives back the batch's messages not yet formatted (as if never taken)
 * and drops the rest: those were sent.  Request thread. */
static void batch_finish(struct api_stream *stream)
{
	struct broker_batch *batch = &stream->batch;
	size_t sent = stream->sent, left = batch->count - sent;

	if (left > 0 && sent > 0)
		broker_batch_drop_front(batch, sent);
	if (left > 0)
		broker_batch_give_back(stream->context->broker, stream_id(stream), stream->id_length, batch);
	else
		broker_batch_release(batch);
	stream->sent = 0;
}

/* Takes the next messages whose events fit in room bytes (at least one),
 * or parks.  Returns 1 when messages were taken, API_STREAM_PARKED or
 * API_STREAM_END. */
static int stream_take(struct api_stream *stream, size_t room)
{
	struct api_context *context = stream->context;
	struct broker_fetch_options options = { STREAM_BATCH_MESSAGES, room, false, event_cost, stream };
	uint64_t keepalive = atomic_load_explicit(&context->stream_keepalive_ms, memory_order_relaxed);
	enum broker_status status;

	atomic_store(&stream->wait, WAIT_PARKED);
	status = broker_fetch_wait(context->broker, stream->names, stream->subject_length, stream_id(stream),
	                           stream->id_length, &options, keepalive ? keepalive : 15000, &stream->waiter);
	if (status == BROKER_PARKED) {
		stream->parked = true;
		return API_STREAM_PARKED;
	}
	atomic_store(&stream->wait, WAIT_WOKEN);
	stream->batch = stream->waiter.batch;
	stream->waiter.batch = (struct broker_batch){ 0 };
	stream->sent = 0;
	/* Not parked and nothing taken: the broker is closing, or short of
	 * memory.  Either way the client reconnects later. */
	if (status != BROKER_OK || stream->batch.count == 0) {
		broker_batch_release(&stream->batch);
		return API_STREAM_END;
	}
	return 1;
}

/* The bytes of out that fit go to buffer at *written.  True when all of
 * out went. */
static bool out_copy(struct api_stream *stream, char *buffer, size_t max, size_t *written)
{
	size_t length = stream->out_length - stream->out_done;

	if (length > max - *written)
		length = max - *written;
	memcpy(buffer + *written, stream->out + stream->out_done, length);
	stream->out_done += length;
	*written += length;
	return stream->out_done == stream->out_length;
}

/* One call hands over at most one take, sized to the room it is offered,
 * and keeps nothing it took but the rest of an event it began: a client
 * that stops reading holds no message back from a newer stream, from
 * expiry or from the pending limits. */
ssize_t api_stream_read(struct api_stream *stream, char *buffer, size_t max, bool peer_gone)
{
	size_t written = 0;

	while (written < max) {
		if (stream->out_done < stream->out_length) {
			if (!out_copy(stream, buffer, max, &written))
				break;
			continue;
		}
		if (stream->finished)
			break;
		if (!stream->opened) {
			stream->opened = true;
			if (!format_text(stream, STREAM_OPEN_COMMENT, sizeof(STREAM_OPEN_COMMENT) - 1))
				stream->finished = true;
			continue;
		}
		if (stream->parked) {
			/* Woken: the waiter's outcome is in. */
			if (atomic_load(&stream->wait) != WAIT_WOKEN)
				break;
			stream->parked = false;
			stream->batch = stream->waiter.batch;
			stream->waiter.batch = (struct broker_batch){ 0 };
			stream->sent = 0;
			if (stream->waiter.status != BROKER_OK) {
				broker_batch_release(&stream->batch);
				stream->finished = true;
				continue;
			}
			if (stream->batch.count == 0) {
				/* The wait ended: a keepalive, unless the stream is over. */
				if (atomic_load(&stream->ended) || peer_gone ||
				    !format_text(stream, STREAM_KEEPALIVE, sizeof(STREAM_KEEPALIVE) - 1))
					stream->finished = true;
				continue;
			}
		}
		if (stream->sent < stream->batch.count) {
			if (atomic_load(&stream->ended) || peer_gone || !format_event(stream))
				stream->finished = true;
			continue;
		}
		if (stream->batch.count > 0) {
			batch_finish(stream);
			break;       /* the next call takes more, into the room it has */
		}
		if (written > 0)
			break;
		if (atomic_load(&stream->ended) || peer_gone) {
			stream->finished = true;
			continue;
		}
		switch (stream_take(stream, max)) {
		case API_STREAM_PARKED:
			return API_STREAM_PARKED;
		case API_STREAM_END:
			stream->finished = true;
			break;
		default:
			break;
		}
	}
	/* What was taken and did not fit (a woken take sized for other
	 * room) goes back at once. */
	if (stream->batch.count > 0)
		batch_finish(stream);
	if (written > 0)
		return (ssize_t)written;
	if (stream->finished)
		return API_STREAM_END;
	return API_STREAM_PARKED;
}

bool api_stream_attach(struct api_stream *stream, void (*resume)(void *transport), void *transport)
{
	int expected = WAIT_PARKED;

	stream->resume = resume;
	stream->transport = transport;
	return atomic_compare_exchange_strong(&stream->wait, &expected, WAIT_ATTACHED);
}

void api_stream_close(struct api_stream *stream)
{
	pthread_mutex_lock(&streams_lock);
	if (stream->previous)
		stream->previous->next = stream->next;
	else
		streams = stream->next;
	if (stream->next)
		stream->next->previous = stream->previous;
	pthread_mutex_unlock(&streams_lock);

	if (stream->parked && !broker_waiter_cancel(stream->context->broker, &stream->waiter)) {
		/* Woken meanwhile: what it took goes back. */
		stream->batch = stream->waiter.batch;
		stream->waiter.batch = (struct broker_batch){ 0 };
		stream->sent = 0;
	}
	if (stream->batch.count > 0)
		batch_finish(stream);
	broker_stream_closed(stream->context->broker, stream_id(stream), stream->id_length);
	atomic_fetch_sub_explicit(&streams_open, 1, memory_order_relaxed);
	free(stream->out);
	free(stream);
}
