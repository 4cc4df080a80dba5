/* api.c - request bodies in, replies out: the JSON side of the API.
 *
 * Reads a request body (request.c), checks the fields the contract names,
 * calls the broker and builds the JSON reply.  Nothing here knows about
 * sockets or HTTP framing.
 */
#include "autoconfig.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "escape.h"
#include "journal.h"
#include "log.h"
#include "metrics.h"
#include "request.h"

/* Every static reply body, exactly as the contract spells them; Echo, the
 * original's framework, ends JSON bodies with a newline and so do we. */
#define TEXT(string) { string, sizeof(string) - 1 }
static const struct {
	const char *text;
	size_t length;
} reply_texts[API_TEXT_COUNT] = {
	[API_TEXT_OK] = TEXT("{\"status\":\"ok\"}\n"),
	[API_TEXT_BODY_INVALID] = TEXT("{\"message\":\"request's body is invalid\"}\n"),
	[API_TEXT_INVALID_SUBJECT] = TEXT("{\"message\":\"invalid subject\"}\n"),
	[API_TEXT_NO_SUBSCRIBER] = TEXT("{\"message\":\"subscriber not found\"}\n"),
	[API_TEXT_OVERFLOW] = TEXT("{\"message\":\"broker overflow\"}\n"),
	[API_TEXT_BAD_ID] = TEXT("{\"message\":\"bad id\"}\n"),
	[API_TEXT_TOO_LARGE] = TEXT("{\"message\":\"message too large\"}\n"),
	[API_TEXT_QUEUE_FULL] = TEXT("{\"message\":\"async queue full\"}\n"),
	[API_TEXT_SERVER_ERROR] = TEXT("{\"message\":\"server error\"}\n"),
	[API_TEXT_BATCH_TOO_LARGE] = TEXT("{\"message\":\"batch too large\"}\n"),
	[API_TEXT_GROUP_MISMATCH] = TEXT("{\"message\":\"group options differ\"}\n"),
	[API_TEXT_NOT_ACK] = TEXT("{\"message\":\"not an ack subscription\"}\n"),
	[API_TEXT_INSUFFICIENT_STORAGE] = TEXT("{\"message\":\"insufficient storage\"}\n"),
	[API_TEXT_INVALID_GROUP] = TEXT("{\"message\":\"invalid group\"}\n"),
	[API_TEXT_INVALID_ACK] = TEXT("{\"message\":\"invalid ack\"}\n"),
	[API_TEXT_INVALID_ACK_WAIT] = TEXT("{\"message\":\"invalid ack_wait_ms\"}\n"),
	[API_TEXT_INVALID_MAX_DELIVER] = TEXT("{\"message\":\"invalid max_deliver\"}\n"),
	[API_TEXT_INVALID_DEAD_LETTER] = TEXT("{\"message\":\"invalid dead_letter\"}\n"),
	[API_TEXT_INVALID_MAX] = TEXT("{\"message\":\"invalid max\"}\n"),
	[API_TEXT_INVALID_MAX_BYTES] = TEXT("{\"message\":\"invalid max_bytes\"}\n"),
	[API_TEXT_INVALID_WAIT] = TEXT("{\"message\":\"invalid wait_ms\"}\n"),
	[API_TEXT_INVALID_META] = TEXT("{\"message\":\"invalid meta\"}\n"),
	[API_TEXT_INVALID_PEEK] = TEXT("{\"message\":\"invalid peek\"}\n"),
	[API_TEXT_INVALID_SEQS] = TEXT("{\"message\":\"invalid seqs\"}\n"),
	[API_TEXT_INVALID_DELAY] = TEXT("{\"message\":\"invalid delay_ms\"}\n"),
	[API_TEXT_INVALID_MESSAGES] = TEXT("{\"message\":\"invalid messages\"}\n"),
	[API_TEXT_INVALID_TTL] = TEXT("{\"message\":\"invalid ttl_ms\"}\n"),
};
#undef TEXT

/* An async publish waiting for a worker; owns its message reference. */
struct async_publish {
	struct pool_job job;
	struct broker *broker;
	struct broker_message *message;
	size_t subject_length;
	char subject[];
};

const char *api_reply_text(enum api_reply_text text, size_t *length)
{
	*length = reply_texts[text].length;
	return reply_texts[text].text;
}

void api_reply_static(struct api_reply *reply, unsigned status, enum api_reply_text text)
{
	reply->hold = NULL;
	reply->status = status;
	reply->body = (char *)reply_texts[text].text;
	reply->body_length = reply_texts[text].length;
	reply->text = text;
}

void api_reply_free(struct api_reply *reply)
{
	if (reply->text == API_TEXT_NONE)
		free(reply->body);
	reply->body = NULL;
	reply->body_length = 0;
}

/* Replies for the broker's refusals. */
void api_reply_status(struct api_reply *reply, enum broker_status status)
{
	switch (status) {
	case BROKER_OK:
		api_reply_static(reply, 200, API_TEXT_OK);
		break;
	case BROKER_INVALID_SUBJECT:
		api_reply_static(reply, 400, API_TEXT_INVALID_SUBJECT);
		break;
	case BROKER_NO_SUBSCRIBER:
		api_reply_static(reply, 404, API_TEXT_NO_SUBSCRIBER);
		break;
	case BROKER_OVERFLOW:
		api_reply_static(reply, 429, API_TEXT_OVERFLOW);
		break;
	case BROKER_BAD_ID:
		api_reply_static(reply, 404, API_TEXT_BAD_ID);
		break;
	case BROKER_GROUP_MISMATCH:
		api_reply_static(reply, 409, API_TEXT_GROUP_MISMATCH);
		break;
	case BROKER_NOT_ACK:
		api_reply_static(reply, 409, API_TEXT_NOT_ACK);
		break;
	case BROKER_STORAGE:
		api_reply_static(reply, 507, API_TEXT_INSUFFICIENT_STORAGE);
		break;
	case BROKER_NO_MEMORY:
	case BROKER_PARKED:
	default:
		api_reply_static(reply, 500, API_TEXT_SERVER_ERROR);
		break;
	}
}

/* A reply body built for one request: its size is counted first, then
 * it is written into one allocation. */
struct reply_builder {
	size_t length;     /* counted, then written */
	bool overflow;     /* more than counted (or than SIZE_MAX) */
	char *body;
	char *end;
};

static void builder_count(struct reply_builder *builder, size_t length)
{
	if (builder->length > SIZE_MAX - length)
		builder->overflow = true;
	else
		builder->length += length;
}

static void builder_count_string(struct reply_builder *builder, const char *text, size_t length)
{
	builder_count(builder, escape_json_length(text, length));
}

/* Allocates the body (and room for a NUL); false when that fails. */
static bool builder_start(struct reply_builder *builder)
{
	builder->body = builder->overflow || builder->length == SIZE_MAX ? NULL : malloc(builder->length + 1);
	builder->end = builder->body;
	return builder->body != NULL;
}

/* Whether length more bytes fit what was counted; marks the builder
 * failed when they do not. */
static bool builder_room(struct reply_builder *builder, size_t length)
{
	if (builder->overflow || length > builder->length - (size_t)(builder->end - builder->body)) {
		builder->overflow = true;
		return false;
	}
	return true;
}

static void builder_put(struct reply_builder *builder, const char *text, size_t length)
{
	if (!builder_room(builder, length))
		return;
	memcpy(builder->end, text, length);
	builder->end += length;
}

#define builder_put_text(builder, text) builder_put(builder, text, sizeof(text) - 1)

static void builder_put_string(struct reply_builder *builder, const char *text, size_t length)
{
	if (builder_room(builder, escape_json_length(text, length)))
		builder->end = escape_json(builder->end, text, length);
}

/* Writes a decimal number. */
static void builder_put_number(struct reply_builder *builder, uint64_t number)
{
	char digits[20];
	size_t count = 0;

	do {
		digits[count++] = (char)('0' + number % 10);
		number /= 10;
	} while (number > 0);
	if (!builder_room(builder, count))
		return;
	while (count > 0)
		*builder->end++ = digits[--count];
}

static void builder_count_number(struct reply_builder *builder, uint64_t number)
{
	size_t digits = 1;

	while (number >= 10) {
		number /= 10;
		digits++;
	}
	builder_count(builder, digits);
}

/* Hands the body over to reply.  The two passes must agree: a body that is
 * not exactly the length counted is a bug, answered 500 rather than sent.
 * Returns false then. */
static bool builder_finish(struct reply_builder *builder, struct api_reply *reply, unsigned status)
{
	size_t written = (size_t)(builder->end - builder->body);

	if (builder->overflow || written != builder->length) {
		log_error("reply builder wrote %zu bytes where it counted %zu", written, builder->length);
		free(builder->body);
		api_reply_static(reply, 500, API_TEXT_SERVER_ERROR);
		return false;
	}
	*builder->end = '\0';
	reply->hold = NULL;
	reply->status = status;
	reply->body = builder->body;
	reply->body_length = written;
	reply->text = API_TEXT_NONE;
	return true;
}

/* The broker validates subjects itself; an async publish is checked here
 * too so that a bad subject is refused before the request is answered. */
static bool subject_valid(struct api_context *context, const char *subject, size_t length)
{
	size_t max_length = (size_t)atomic_load_explicit(&context->max_subject_length, memory_order_relaxed);
	return broker_subject_valid(subject, length, max_length);
}

/* A subject a message can be published to: valid, without wildcards. */
static bool publish_subject_valid(struct api_context *context, const char *subject, size_t length)
{
	return subject_valid(context, subject, length) && broker_subject_literal(subject, length);
}

/* The ttl_ms of a publish: 0 when absent, -1 when invalid. */
static int64_t read_ttl(const struct request *request)
{
	int64_t ttl_ms;

	switch (request_integer(request, "ttl_ms", 1, (int64_t)BROKER_TTL_MAX_MS, &ttl_ms)) {
	case REQUEST_PRESENT:
		return ttl_ms;
	case REQUEST_INVALID:
		return -1;
	default:
		return 0;
	}
}

static bool data_too_large(struct api_context *context, size_t length)
{
	uint64_t max_size = atomic_load_explicit(&context->max_message_size, memory_order_relaxed);
	return max_size != 0 && length > max_size;
}

/* An error whose body names the batch message at fault:
 * {"message":TEXT,"index":i}. */
static void reply_error_at(struct api_reply *reply, unsigned status, enum api_reply_text text,
                           size_t index)
{
	static const char index_key[] = ",\"index\":";
	struct reply_builder builder = { 0 };
	/* The fixed text without its closing "}\n". */
	size_t message_length = reply_texts[text].length - 2;

	builder_count(&builder, message_length + sizeof(index_key) - 1 + 2);
	builder_count_number(&builder, index);
	if (!builder_start(&builder)) {
		api_reply_static(reply, status, text);
		return;
	}
	builder_put(&builder, reply_texts[text].text, message_length);
	builder_put(&builder, index_key, sizeof(index_key) - 1);
	builder_put_number(&builder, index);
	builder_put_text(&builder, "}\n");
	builder_finish(&builder, reply, status);
}

/* {"status":"ok","count":n} */
static void reply_ok_count(struct api_reply *reply, uint64_t count)
{
	static const char prefix[] = "{\"status\":\"ok\",\"count\":";
	struct reply_builder builder = { 0 };

	builder_count(&builder, sizeof(prefix) - 1 + 2);
	builder_count_number(&builder, count);
	if (!builder_start(&builder)) {
		api_reply_static(reply, 500, API_TEXT_SERVER_ERROR);
		return;
	}
	builder_put(&builder, prefix, sizeof(prefix) - 1);
	builder_put_number(&builder, count);
	builder_put_text(&builder, "}\n");
	builder_finish(&builder, reply, 200);
}

/* --- subscribe, unsubscribe -------------------------------------------- */

/* Reads the subscription options.  Returns true, or false with a 400 in
 * reply. */
static bool read_subscription(struct api_context *context, const struct request *request,
                              struct broker_subscription *options, struct api_reply *reply)
{
	int64_t number;
	enum request_field field;

	*options = (struct broker_subscription){0};
	field = request_string(request, "group", &options->group, &options->group_length);
	if (field == REQUEST_INVALID ||
	    (field == REQUEST_PRESENT && !broker_group_valid(options->group, options->group_length))) {
		api_reply_static(reply, 400, API_TEXT_INVALID_GROUP);
		return false;
	}
	if (request_boolean(request, "ack", &options->ack) == REQUEST_INVALID) {
		api_reply_static(reply, 400, API_TEXT_INVALID_ACK);
		return false;
	}
	/* The ack options mean nothing without ack: refuse them rather than
	 * let a client believe they apply. */
	field = request_integer(request, "ack_wait_ms", 1, BROKER_ACK_WAIT_MAX_MS, &number);
	if (field == REQUEST_INVALID || (field == REQUEST_PRESENT && !options->ack)) {
		api_reply_static(reply, 400, API_TEXT_INVALID_ACK_WAIT);
		return false;
	}
	options->ack_wait_ms = field == REQUEST_PRESENT ? (uint64_t)number : 0;
	field = request_integer(request, "max_deliver", 0, BROKER_MAX_DELIVER_MAX, &number);
	if (field == REQUEST_INVALID || (field == REQUEST_PRESENT && number > 0 && !options->ack)) {
		api_reply_static(reply, 400, API_TEXT_INVALID_MAX_DELIVER);
		return false;
	}
	options->max_deliver = field == REQUEST_PRESENT ? (uint32_t)number : 0;
	field = request_string(request, "dead_letter", &options->dead_letter, &options->dead_letter_length);
	if (field == REQUEST_INVALID ||
	    (field == REQUEST_PRESENT &&
	     (options->max_deliver == 0 ||
	      !publish_subject_valid(context, options->dead_letter, options->dead_letter_length) ||
	      (options->dead_letter_length == request->subject_length &&
	       memcmp(options->dead_letter, request->subject, request->subject_length) == 0)))) {
		api_reply_static(reply, 400, API_TEXT_INVALID_DEAD_LETTER);
		return false;
	}
	return true;
}

#define SUBSCRIBE_REPLY_ID       "{\"id\":"
#define SUBSCRIBE_REPLY_SUBJECT  ",\"subject\":"
#define SUBSCRIBE_REPLY_GROUP    ",\"group\":"
#define REPLY_END                "}\n"

static void handle_subscribe(struct api_context *context, const struct request *request,
                             struct api_reply *reply)
{
	char id[BROKER_ID_LENGTH + 1];
	struct broker_subscription options;
	enum broker_status status;
	struct reply_builder builder = { 0 };

	if (request->tree != NULL) {
		/* Options exist only in bodies json-c read. */
		if (!subject_valid(context, request->subject, request->subject_length)) {
			api_reply_static(reply, 400, API_TEXT_INVALID_SUBJECT);
			return;
		}
		if (!read_subscription(context, request, &options, reply))
			return;
	} else {
		options = (struct broker_subscription){0};
	}
	status = broker_subscribe(context->broker, request->subject, request->subject_length, &options, id);
	if (status != BROKER_OK) {
		api_reply_status(reply, status);
		return;
	}
	builder_count(&builder, sizeof(SUBSCRIBE_REPLY_ID SUBSCRIBE_REPLY_SUBJECT REPLY_END) - 1);
	builder_count_string(&builder, id, BROKER_ID_LENGTH);
	builder_count_string(&builder, request->subject, request->subject_length);
	if (options.group_length > 0) {
		builder_count(&builder, sizeof(SUBSCRIBE_REPLY_GROUP) - 1);
		builder_count_string(&builder, options.group, options.group_length);
	}
	if (!builder_start(&builder)) {
		/* The subscriber exists but its id cannot be told: take it
		 * back rather than leave it to expire. */
		broker_unsubscribe(context->broker, request->subject, request->subject_length,
		                   id, BROKER_ID_LENGTH);
		api_reply_static(reply, 500, API_TEXT_SERVER_ERROR);
		return;
	}
	builder_put_text(&builder, SUBSCRIBE_REPLY_ID);
	builder_put_string(&builder, id, BROKER_ID_LENGTH);
	builder_put_text(&builder, SUBSCRIBE_REPLY_SUBJECT);
	builder_put_string(&builder, request->subject, request->subject_length);
	if (options.group_length > 0) {
		builder_put_text(&builder, SUBSCRIBE_REPLY_GROUP);
		builder_put_string(&builder, options.group, options.group_length);
	}
	builder_put_text(&builder, REPLY_END);
	if (!builder_finish(&builder, reply, 200))
		broker_unsubscribe(context->broker, request->subject, request->subject_length,
		                   id, BROKER_ID_LENGTH);
}

static void handle_unsubscribe(struct api_context *context, const struct request *request,
                               struct api_reply *reply)
{
	api_reply_status(reply, broker_unsubscribe(context->broker, request->subject,
	                                              request->subject_length,
	                                              request->id, request->id_length));
}

/* --- publish ----------------------------------------------------------- */

static void handle_publish(struct api_context *context, const struct request *request,
                           struct api_reply *reply)
{
	struct broker_message *message;
	int64_t ttl_ms = read_ttl(request);

	/* The original's order (size, then subject), ttl_ms last. */
	if (data_too_large(context, request->data_length)) {
		api_reply_static(reply, 413, API_TEXT_TOO_LARGE);
		return;
	}
	if (ttl_ms < 0) {
		api_reply_static(reply, 400, publish_subject_valid(context, request->subject, request->subject_length)
		                             ? API_TEXT_INVALID_TTL : API_TEXT_INVALID_SUBJECT);
		return;
	}
	message = broker_message_new(request->subject, request->subject_length,
	                             request->data, request->data_length);
	if (message == NULL) {
		api_reply_static(reply, 500, API_TEXT_SERVER_ERROR);
		return;
	}
	message->expires_ms = (uint64_t)ttl_ms;
	api_reply_status(reply, broker_publish(context->broker, request->subject,
	                                          request->subject_length, message));
	broker_message_release(message);
}

static void async_publish_run(struct pool_job *job)
{
	struct async_publish *work = (struct async_publish *)job;
	enum broker_status status;

	status = broker_publish(work->broker, work->subject, work->subject_length, work->message);
	if (status != BROKER_OK) {
		metrics_count(METRICS_ASYNC_FAILED);
		log_debug("async publish to a subject of %zu bytes failed: %s",
		          work->subject_length, broker_status_name(status));
	}
	broker_message_release(work->message);
	free(work);
}

static void handle_publish_async(struct api_context *context, const struct request *request,
                                 struct api_reply *reply)
{
	struct async_publish *work;
	int64_t ttl_ms = read_ttl(request);

	if (!publish_subject_valid(context, request->subject, request->subject_length)) {
		api_reply_static(reply, 400, API_TEXT_INVALID_SUBJECT);
		return;
	}
	if (data_too_large(context, request->data_length)) {
		api_reply_static(reply, 413, API_TEXT_TOO_LARGE);
		return;
	}
	if (ttl_ms < 0) {
		api_reply_static(reply, 400, API_TEXT_INVALID_TTL);
		return;
	}
	if (context->pool == NULL) {
		metrics_count(METRICS_ASYNC_REJECTED);
		api_reply_static(reply, 503, API_TEXT_QUEUE_FULL);
		return;
	}
	work = malloc(sizeof(*work) + request->subject_length + 1);
	if (work == NULL) {
		api_reply_static(reply, 500, API_TEXT_SERVER_ERROR);
		return;
	}
	work->message = broker_message_new(request->subject, request->subject_length,
	                             request->data, request->data_length);
	if (work->message == NULL) {
		free(work);
		api_reply_static(reply, 500, API_TEXT_SERVER_ERROR);
		return;
	}
	work->message->expires_ms = (uint64_t)ttl_ms;
	work->job.next = NULL;
	work->job.run = async_publish_run;
	work->broker = context->broker;
	work->subject_length = request->subject_length;
	memcpy(work->subject, request->subject, request->subject_length);
	work->subject[request->subject_length] = '\0';
	if (pool_submit(context->pool, &work->job) != 0) {
		broker_message_release(work->message);
		free(work);
		metrics_count(METRICS_ASYNC_REJECTED);
		api_reply_static(reply, 503, API_TEXT_QUEUE_FULL);
		return;
	}
	api_reply_static(reply, 200, API_TEXT_OK);
}

static void publish_items_release(struct broker_publish_item *items, size_t count)
{
	for (size_t i = 0; i < count; i++)
		broker_message_release(items[i].message);
	free(items);
}

static void handle_publish_batch(struct api_context *context, const struct request *request,
                                 struct api_reply *reply)
{
	struct broker_publish_item *items;
	struct request_message message;
	enum broker_status status;
	size_t count, failed;

	if (request_array(request, "messages", &count) != REQUEST_PRESENT || count == 0) {
		api_reply_static(reply, 400, API_TEXT_INVALID_MESSAGES);
		return;
	}
	if (count > atomic_load_explicit(&context->max_batch_messages, memory_order_relaxed)) {
		api_reply_static(reply, 413, API_TEXT_BATCH_TOO_LARGE);
		return;
	}
	/* Every message is judged before anything is stored. */
	for (size_t i = 0; i < count; i++) {
		if (!request_array_message(request, "messages", i, &message)) {
			reply_error_at(reply, 400, API_TEXT_BODY_INVALID, i);
			return;
		}
		if (!publish_subject_valid(context, message.subject, message.subject_length)) {
			reply_error_at(reply, 400, API_TEXT_INVALID_SUBJECT, i);
			return;
		}
		if (data_too_large(context, message.data_length)) {
			reply_error_at(reply, 413, API_TEXT_TOO_LARGE, i);
			return;
		}
		if (message.ttl == REQUEST_INVALID ||
		    (message.ttl == REQUEST_PRESENT && message.ttl_ms > (int64_t)BROKER_TTL_MAX_MS)) {
			reply_error_at(reply, 400, API_TEXT_INVALID_TTL, i);
			return;
		}
	}
	items = calloc(count, sizeof(*items));
	if (items == NULL) {
		api_reply_static(reply, 500, API_TEXT_SERVER_ERROR);
		return;
	}
	for (size_t i = 0; i < count; i++) {
		request_array_message(request, "messages", i, &message);
		items[i].subject = message.subject;
		items[i].subject_length = message.subject_length;
		items[i].message = broker_message_new(message.subject, message.subject_length,
		                                      message.data, message.data_length);
		if (items[i].message == NULL) {
			publish_items_release(items, i);
			api_reply_static(reply, 500, API_TEXT_SERVER_ERROR);
			return;
		}
		items[i].message->expires_ms = message.ttl == REQUEST_PRESENT ? (uint64_t)message.ttl_ms : 0;
	}
	status = broker_publish_batch(context->broker, items, count, &failed);
	publish_items_release(items, count);
	switch (status) {
	case BROKER_OK:
		metrics_observe_batch(count);
		reply_ok_count(reply, count);
		break;
	case BROKER_INVALID_SUBJECT:
		reply_error_at(reply, 400, API_TEXT_INVALID_SUBJECT, failed);
		break;
	case BROKER_NO_SUBSCRIBER:
		reply_error_at(reply, 404, API_TEXT_NO_SUBSCRIBER, failed);
		break;
	case BROKER_OVERFLOW:
		reply_error_at(reply, 429, API_TEXT_OVERFLOW, failed);
		break;
	default:
		api_reply_status(reply, status);
		break;
	}
}

/* --- fetch ------------------------------------------------------------- */

/* A fetch parked in the broker.  state says who resumes the request: the
 * waker, once the transport attached; or the transport, when the waker
 * came first. */
enum hold_state { HOLD_PARKED, HOLD_ATTACHED, HOLD_WOKEN };

/* What a hold waits for: a message for a fetch, or (fsync = always) the
 * sync of the records behind a reply that is ready. */
enum hold_kind { HOLD_FETCH, HOLD_SYNC };

struct api_hold {
	struct broker_waiter waiter;
	struct journal_waiter synced;
	enum hold_kind kind;
	bool sync_ok;
	struct api_reply ready;        /* HOLD_SYNC: sent once synced */
	atomic_int state;
	void (*resume)(void *transport);
	void *transport;
	bool meta;
	size_t subject_length;
	size_t id_length;
	char names[];                  /* the subject, then the id */
};

struct fetch_request {
	struct broker_fetch_options options;
	uint64_t wait_ms;
	bool meta;
};

static bool read_fetch(struct api_context *context, const struct request *request,
                       struct fetch_request *fetch, struct api_reply *reply)
{
	int64_t number;
	enum request_field field;
	uint64_t max_wait = atomic_load_explicit(&context->fetch_max_wait_ms, memory_order_relaxed);

	*fetch = (struct fetch_request){ { 0, 0, false, NULL, NULL }, 0, false };
	field = request_integer(request, "max", 1, INT64_MAX, &number);
	if (field == REQUEST_INVALID) {
		api_reply_static(reply, 400, API_TEXT_INVALID_MAX);
		return false;
	}
	if (field == REQUEST_PRESENT)
		fetch->options.max = (uint64_t)number > SIZE_MAX ? SIZE_MAX : (size_t)number;
	field = request_integer(request, "max_bytes", 1, INT64_MAX, &number);
	if (field == REQUEST_INVALID) {
		api_reply_static(reply, 400, API_TEXT_INVALID_MAX_BYTES);
		return false;
	}
	if (field == REQUEST_PRESENT)
		fetch->options.max_bytes = (uint64_t)number > SIZE_MAX ? SIZE_MAX : (size_t)number;
	field = request_integer(request, "wait_ms", 0, INT64_MAX, &number);
	if (field == REQUEST_INVALID) {
		api_reply_static(reply, 400, API_TEXT_INVALID_WAIT);
		return false;
	}
	if (field == REQUEST_PRESENT)
		fetch->wait_ms = (uint64_t)number < max_wait ? (uint64_t)number : max_wait;
	if (request_boolean(request, "meta", &fetch->meta) == REQUEST_INVALID) {
		api_reply_static(reply, 400, API_TEXT_INVALID_META);
		return false;
	}
	if (request_boolean(request, "peek", &fetch->options.peek) == REQUEST_INVALID) {
		api_reply_static(reply, 400, API_TEXT_INVALID_PEEK);
		return false;
	}
	return true;
}

#define FETCH_REPLY_SUBJECT   "{\"subject\":"
#define FETCH_REPLY_ID        ",\"id\":"
#define FETCH_REPLY_DATA      ",\"data\":["
#define FETCH_REPLY_MESSAGES  ",\"messages\":["
#define FETCH_REPLY_END       "]}\n"
#define META_SEQ              "{\"seq\":"
#define META_SUBJECT          ",\"subject\":"
#define META_ATTEMPT          ",\"attempt\":"
#define META_DATA             ",\"data\":"
#define META_END              "}"

/* The subject message was published to; a message made without one
 * (only tests make those) was published to the subscription's. */
static const char *message_subject(const struct broker_message *message, const char *subscribed)
{
	return message->subject_length > 0 ? broker_message_subject(message) : subscribed;
}

static size_t message_subject_length(const struct broker_message *message, size_t subscribed)
{
	return message->subject_length > 0 ? message->subject_length : subscribed;
}

/* Builds the reply to a fetch of subject and id that took batch: the
 * original form, or the meta form (seq, subject, attempt per message).
 * When the reply cannot be built the messages go back to the queue. */
static void reply_fetched(struct api_context *context, const char *subject, size_t subject_length,
                          const char *id, size_t id_length, bool meta,
                          struct broker_batch *batch, struct api_reply *reply)
{
	struct reply_builder builder = { 0 };

	meta = meta || batch->ack_queue;
	builder_count(&builder, sizeof(FETCH_REPLY_SUBJECT FETCH_REPLY_ID FETCH_REPLY_END) - 1);
	builder_count(&builder, meta ? sizeof(FETCH_REPLY_MESSAGES) - 1 : sizeof(FETCH_REPLY_DATA) - 1);
	builder_count_string(&builder, subject, subject_length);
	builder_count_string(&builder, id, id_length);
	for (size_t i = 0; i < batch->count; i++) {
		builder_count_string(&builder, batch->messages[i]->data, batch->messages[i]->length);
		if (meta) {
			builder_count(&builder, sizeof(META_SEQ META_SUBJECT META_ATTEMPT META_DATA META_END) - 1);
			builder_count_number(&builder, batch->messages[i]->seq);
			builder_count_string(&builder, message_subject(batch->messages[i], subject),
			                     message_subject_length(batch->messages[i], subject_length));
			builder_count_number(&builder, batch->attempts ? batch->attempts[i] : 1);
		}
	}
	builder_count(&builder, batch->count > 0 ? batch->count - 1 : 0);   /* commas */
	if (!builder_start(&builder)) {
		log_error("fetch: out of memory building the reply; %zu message(s) given back", batch->count);
		broker_batch_give_back(context->broker, id, id_length, batch);
		api_reply_static(reply, 500, API_TEXT_SERVER_ERROR);
		return;
	}
	builder_put_text(&builder, FETCH_REPLY_SUBJECT);
	builder_put_string(&builder, subject, subject_length);
	builder_put_text(&builder, FETCH_REPLY_ID);
	builder_put_string(&builder, id, id_length);
	if (meta)
		builder_put_text(&builder, FETCH_REPLY_MESSAGES);
	else
		builder_put_text(&builder, FETCH_REPLY_DATA);
	for (size_t i = 0; i < batch->count; i++) {
		if (i > 0)
			builder_put_text(&builder, ",");
		if (meta) {
			builder_put_text(&builder, META_SEQ);
			builder_put_number(&builder, batch->messages[i]->seq);
			builder_put_text(&builder, META_SUBJECT);
			builder_put_string(&builder, message_subject(batch->messages[i], subject),
			                   message_subject_length(batch->messages[i], subject_length));
			builder_put_text(&builder, META_ATTEMPT);
			builder_put_number(&builder, batch->attempts ? batch->attempts[i] : 1);
			builder_put_text(&builder, META_DATA);
		}
		builder_put_string(&builder, batch->messages[i]->data, batch->messages[i]->length);
		if (meta)
			builder_put_text(&builder, META_END);
	}
	builder_put_text(&builder, FETCH_REPLY_END);
	if (builder_finish(&builder, reply, 200))
		broker_batch_release(batch);
	else
		broker_batch_give_back(context->broker, id, id_length, batch);
}

/* The broker's wake(): from whichever thread completed the fetch. */
static void hold_wake(struct broker_waiter *waiter)
{
	struct api_hold *hold = (struct api_hold *)waiter;

	if (atomic_exchange(&hold->state, HOLD_WOKEN) == HOLD_ATTACHED)
		hold->resume(hold->transport);
}

/* The journal's done(): from its sync thread. */
static void hold_synced(struct journal_waiter *waiter, bool synced)
{
	struct api_hold *hold = (struct api_hold *)(void *)((char *)waiter - offsetof(struct api_hold, synced));

	hold->sync_ok = synced;
	if (atomic_exchange(&hold->state, HOLD_WOKEN) == HOLD_ATTACHED)
		hold->resume(hold->transport);
}

/* With fsync = always, turns a ready reply to a request that appended to
 * the journal into a hold until everything appended so far is synced.
 * Any other reply is left as it is. */
static void reply_when_synced(struct api_context *context, bool appended, struct api_reply *reply)
{
	struct api_hold *hold;
	uint64_t now;

	if (!appended || !context->journal || reply->hold || reply->status != 200 ||
	    journal_get_fsync(context->journal) != JOURNAL_FSYNC_ALWAYS)
		return;
	now = journal_position(context->journal);
	hold = calloc(1, sizeof(*hold));
	if (!hold) {
		/* Answered after a sync of its own, on this thread. */
		if (journal_sync(context->journal) != 0) {
			api_reply_free(reply);
			api_reply_static(reply, 507, API_TEXT_INSUFFICIENT_STORAGE);
		}
		return;
	}
	hold->kind = HOLD_SYNC;
	hold->ready = *reply;
	hold->synced.done = hold_synced;
	atomic_init(&hold->state, HOLD_PARKED);
	if (!journal_wait(context->journal, now, &hold->synced))
		hold->sync_ok = true, atomic_store(&hold->state, HOLD_WOKEN);
	*reply = (struct api_reply){ 0, NULL, 0, API_TEXT_NONE, hold };
}

bool api_hold_attach(struct api_hold *hold, void (*resume)(void *transport), void *transport)
{
	int expected = HOLD_PARKED;

	hold->resume = resume;
	hold->transport = transport;
	return atomic_compare_exchange_strong(&hold->state, &expected, HOLD_ATTACHED);
}

bool api_hold_cancel(struct api_context *context, struct api_hold *hold)
{
	/* A reply waiting for a sync is answered by the sync, soon. */
	if (hold->kind == HOLD_SYNC)
		return false;
	return broker_waiter_cancel(context->broker, &hold->waiter);
}

void api_hold_drop(struct api_context *context, struct api_hold *hold)
{
	if (hold->kind == HOLD_SYNC) {
		api_reply_free(&hold->ready);
	} else if (!broker_waiter_cancel(context->broker, &hold->waiter)) {
		log_info("fetch: client gone before its held fetch was answered; %zu message(s) given back",
		         hold->waiter.batch.count);
		broker_batch_give_back(context->broker, hold->names + hold->subject_length, hold->id_length,
		                       &hold->waiter.batch);
	}
	free(hold);
}

void api_hold_reply(struct api_context *context, struct api_hold *hold, struct api_reply *reply)
{
	bool taken;

	if (hold->kind == HOLD_SYNC) {
		*reply = hold->ready;
		if (!hold->sync_ok) {
			api_reply_free(reply);
			api_reply_static(reply, 507, API_TEXT_INSUFFICIENT_STORAGE);
		}
		free(hold);
		return;
	}
	/* The messages were taken, and the take recorded, when the fetch was
	 * served; the reply waits for everything appended until now. */
	taken = hold->waiter.status == BROKER_OK && hold->waiter.batch.count > 0 &&
	        !hold->waiter.batch.peeked;
	if (hold->waiter.status != BROKER_OK)
		api_reply_status(reply, hold->waiter.status);
	else
		reply_fetched(context, hold->names, hold->subject_length,
		              hold->names + hold->subject_length, hold->id_length,
		              hold->meta, &hold->waiter.batch, reply);
	free(hold);
	reply_when_synced(context, taken, reply);
}

static void handle_fetch(struct api_context *context, const struct request *request,
                         struct api_reply *reply)
{
	struct fetch_request fetch = { { 0, 0, false, NULL, NULL }, 0, false };
	struct broker_batch batch;
	enum broker_status status;
	struct api_hold *hold;

	if (request->tree != NULL) {
		/* A bad subject is named before bad options, as subscribe does
		 * (the length limit is judged later: a subscriber's own subject
		 * is spared it). */
		if (!broker_subject_valid(request->subject, request->subject_length, 0)) {
			api_reply_static(reply, 400, API_TEXT_INVALID_SUBJECT);
			return;
		}
		if (!read_fetch(context, request, &fetch, reply))
			return;
	}
	if (fetch.wait_ms == 0) {
		status = broker_fetch(context->broker, request->subject, request->subject_length,
		                      request->id, request->id_length, &fetch.options, &batch);
		if (status != BROKER_OK) {
			api_reply_status(reply, status);
			return;
		}
		reply_fetched(context, request->subject, request->subject_length,
		              request->id, request->id_length, fetch.meta, &batch, reply);
		return;
	}
	hold = calloc(1, sizeof(*hold) + request->subject_length + request->id_length);
	if (hold == NULL) {
		api_reply_static(reply, 500, API_TEXT_SERVER_ERROR);
		return;
	}
	hold->waiter.wake = hold_wake;
	hold->meta = fetch.meta;
	hold->subject_length = request->subject_length;
	hold->id_length = request->id_length;
	memcpy(hold->names, request->subject, request->subject_length);
	memcpy(hold->names + request->subject_length, request->id, request->id_length);
	atomic_init(&hold->state, HOLD_PARKED);
	status = broker_fetch_wait(context->broker, request->subject, request->subject_length,
	                           request->id, request->id_length, &fetch.options, fetch.wait_ms,
	                           &hold->waiter);
	if (status == BROKER_PARKED) {
		reply->status = 0;
		reply->body = NULL;
		reply->body_length = 0;
		reply->text = API_TEXT_NONE;
		reply->hold = hold;
		return;
	}
	if (status != BROKER_OK)
		api_reply_status(reply, status);
	else
		reply_fetched(context, request->subject, request->subject_length,
		              request->id, request->id_length, fetch.meta, &hold->waiter.batch, reply);
	free(hold);
}

/* --- acknowledgements -------------------------------------------------- */

enum settle_kind { SETTLE_ACK, SETTLE_NACK, SETTLE_EXTEND };

static void handle_settle(struct api_context *context, const struct request *request,
                          struct api_reply *reply, enum settle_kind kind)
{
	uint64_t *seqs = NULL;
	int64_t number, delay_ms = 0;
	size_t count = 0, settled = 0;
	enum broker_status status;

	if (!broker_subject_valid(request->subject, request->subject_length, 0)) {
		api_reply_static(reply, 400, API_TEXT_INVALID_SUBJECT);
		return;
	}
	if (request_array(request, "seqs", &count) != REQUEST_PRESENT) {
		api_reply_static(reply, 400, API_TEXT_INVALID_SEQS);
		return;
	}
	if (kind == SETTLE_NACK &&
	    request_integer(request, "delay_ms", 0, BROKER_DELAY_MAX_MS, &delay_ms) == REQUEST_INVALID) {
		api_reply_static(reply, 400, API_TEXT_INVALID_DELAY);
		return;
	}
	if (count > 0) {
		seqs = malloc(count * sizeof(*seqs));
		if (seqs == NULL) {
			api_reply_static(reply, 500, API_TEXT_SERVER_ERROR);
			return;
		}
	}
	for (size_t i = 0; i < count; i++) {
		if (!request_array_integer(request, "seqs", i, 1, INT64_MAX, &number)) {
			free(seqs);
			api_reply_static(reply, 400, API_TEXT_INVALID_SEQS);
			return;
		}
		seqs[i] = (uint64_t)number;
	}
	switch (kind) {
	case SETTLE_ACK:
		status = broker_ack(context->broker, request->subject, request->subject_length,
		                    request->id, request->id_length, seqs, count, &settled);
		break;
	case SETTLE_NACK:
		status = broker_nack(context->broker, request->subject, request->subject_length,
		                     request->id, request->id_length, seqs, count, (uint64_t)delay_ms, &settled);
		break;
	case SETTLE_EXTEND:
	default:
		status = broker_extend(context->broker, request->subject, request->subject_length,
		                       request->id, request->id_length, seqs, count, &settled);
		break;
	}
	free(seqs);
	if (status == BROKER_OK)
		reply_ok_count(reply, settled);
	else
		api_reply_status(reply, status);
}

static void handle_ack(struct api_context *context, const struct request *request,
                       struct api_reply *reply)
{
	handle_settle(context, request, reply, SETTLE_ACK);
}

static void handle_nack(struct api_context *context, const struct request *request,
                        struct api_reply *reply)
{
	handle_settle(context, request, reply, SETTLE_NACK);
}

static void handle_extend(struct api_context *context, const struct request *request,
                          struct api_reply *reply)
{
	handle_settle(context, request, reply, SETTLE_EXTEND);
}

/* --- the table --------------------------------------------------------- */

const struct api_endpoint api_endpoints[] = {
	{ "/api/publish",       "publish",       API_BODY_MESSAGE, handle_publish },
	{ "/api/publish/async", "publish_async", API_BODY_MESSAGE, handle_publish_async },
	{ "/api/publish/batch", "publish_batch", API_BODY_BATCH,   handle_publish_batch },
	{ "/api/subscribe",     "subscribe",     API_BODY_MESSAGE, handle_subscribe },
	{ "/api/unsubscribe",   "unsubscribe",   API_BODY_MESSAGE, handle_unsubscribe },
	{ "/api/fetch",         "fetch",         API_BODY_MESSAGE, handle_fetch },
	{ "/api/ack",           "ack",           API_BODY_MESSAGE, handle_ack },
	{ "/api/nack",          "nack",          API_BODY_MESSAGE, handle_nack },
	{ "/api/extend",        "extend",        API_BODY_MESSAGE, handle_extend },
	{ "/api/stream",        "stream",        API_BODY_NONE,    NULL },
};
const size_t api_endpoint_count = sizeof(api_endpoints) / sizeof(api_endpoints[0]);

const struct api_endpoint *api_endpoint_find(const char *path)
{
	for (size_t i = 0; i < api_endpoint_count; i++)
		if (strcmp(path, api_endpoints[i].path) == 0)
			return &api_endpoints[i];
	return NULL;
}

void api_handle(struct api_context *context, const struct api_endpoint *endpoint,
                const char *body, size_t body_length, struct api_reply *reply)
{
	struct request request;

	bool always = context->journal && journal_get_fsync(context->journal) == JOURNAL_FSYNC_ALWAYS;
	uint64_t position = always ? journal_position(context->journal) : 0;

	reply->hold = NULL;
	if (endpoint->handle == NULL) {
		/* Not a POST endpoint (the transport serves streams itself). */
		api_reply_static(reply, 500, API_TEXT_SERVER_ERROR);
		return;
	}
	if (!request_read(&request, body, body_length)) {
		api_reply_static(reply, 400, API_TEXT_BODY_INVALID);
		return;
	}
	endpoint->handle(context, &request, reply);
	request_release(&request);
	/* Another request's records may have moved the position too; waiting
	 * for them costs only the time of that sync. */
	if (always)
		reply_when_synced(context, journal_position(context->journal) != position, reply);
}
