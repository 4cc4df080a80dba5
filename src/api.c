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
static void reply_broker_status(struct api_reply *reply, enum broker_status status)
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
	case BROKER_NO_MEMORY:
	default:
		api_reply_static(reply, 500, API_TEXT_SERVER_ERROR);
		break;
	}
}

/* A reply body built for one request: its size is counted first, then
 * it is written into one allocation. */
struct reply_builder {
	size_t length;     /* counted, then written */
	bool overflow;
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

static void builder_put(struct reply_builder *builder, const char *text, size_t length)
{
	memcpy(builder->end, text, length);
	builder->end += length;
}

#define builder_put_text(builder, text) builder_put(builder, text, sizeof(text) - 1)

static void builder_put_string(struct reply_builder *builder, const char *text, size_t length)
{
	builder->end = escape_json(builder->end, text, length);
}

/* Hands the body over to reply. */
static void builder_finish(struct reply_builder *builder, struct api_reply *reply, unsigned status)
{
	*builder->end = '\0';
	reply->status = status;
	reply->body = builder->body;
	reply->body_length = (size_t)(builder->end - builder->body);
	reply->text = API_TEXT_NONE;
}

/* The broker validates subjects itself; an async publish is checked here
 * too so that a bad subject is refused before the request is answered. */
static bool subject_valid(struct api_context *context, const struct request *request)
{
	size_t max_length = (size_t)atomic_load_explicit(&context->max_subject_length, memory_order_relaxed);
	return broker_subject_valid(request->subject, request->subject_length, max_length);
}

static bool data_too_large(struct api_context *context, const struct request *request)
{
	uint64_t max_size = atomic_load_explicit(&context->max_message_size, memory_order_relaxed);
	return max_size != 0 && request->data_length > max_size;
}

#define SUBSCRIBE_REPLY_ID       "{\"id\":"
#define SUBSCRIBE_REPLY_SUBJECT  ",\"subject\":"
#define REPLY_END                "}\n"

static void handle_subscribe(struct api_context *context, const struct request *request,
                             struct api_reply *reply)
{
	char id[BROKER_ID_LENGTH + 1];
	enum broker_status status;
	struct reply_builder builder = { 0 };

	status = broker_subscribe(context->broker, request->subject, request->subject_length, id);
	if (status != BROKER_OK) {
		reply_broker_status(reply, status);
		return;
	}
	builder_count(&builder, sizeof(SUBSCRIBE_REPLY_ID SUBSCRIBE_REPLY_SUBJECT REPLY_END) - 1);
	builder_count_string(&builder, id, BROKER_ID_LENGTH);
	builder_count_string(&builder, request->subject, request->subject_length);
	if (!builder_start(&builder)) {
		/* The subscriber exists but its id cannot be told: let it
		 * expire rather than guess. */
		api_reply_static(reply, 500, API_TEXT_SERVER_ERROR);
		return;
	}
	builder_put_text(&builder, SUBSCRIBE_REPLY_ID);
	builder_put_string(&builder, id, BROKER_ID_LENGTH);
	builder_put_text(&builder, SUBSCRIBE_REPLY_SUBJECT);
	builder_put_string(&builder, request->subject, request->subject_length);
	builder_put_text(&builder, REPLY_END);
	builder_finish(&builder, reply, 200);
}

static void handle_publish(struct api_context *context, const struct request *request,
                           struct api_reply *reply)
{
	struct broker_message *message;

	if (data_too_large(context, request)) {
		api_reply_static(reply, 413, API_TEXT_TOO_LARGE);
		return;
	}
	message = broker_message_new(request->data, request->data_length);
	if (message == NULL) {
		api_reply_static(reply, 500, API_TEXT_SERVER_ERROR);
		return;
	}
	reply_broker_status(reply, broker_publish(context->broker, request->subject,
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

	if (!subject_valid(context, request)) {
		api_reply_static(reply, 400, API_TEXT_INVALID_SUBJECT);
		return;
	}
	if (data_too_large(context, request)) {
		api_reply_static(reply, 413, API_TEXT_TOO_LARGE);
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
	work->message = broker_message_new(request->data, request->data_length);
	if (work->message == NULL) {
		free(work);
		api_reply_static(reply, 500, API_TEXT_SERVER_ERROR);
		return;
	}
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

#define FETCH_REPLY_SUBJECT  "{\"subject\":"
#define FETCH_REPLY_ID       ",\"id\":"
#define FETCH_REPLY_DATA     ",\"data\":["
#define FETCH_REPLY_END      "]}\n"

static void handle_fetch(struct api_context *context, const struct request *request,
                         struct api_reply *reply)
{
	struct broker_batch batch = { NULL, 0 };
	struct reply_builder builder = { 0 };
	enum broker_status status;

	status = broker_fetch(context->broker, request->subject, request->subject_length,
	                      request->id, request->id_length, &batch);
	if (status != BROKER_OK) {
		reply_broker_status(reply, status);
		return;
	}

	builder_count(&builder, sizeof(FETCH_REPLY_SUBJECT FETCH_REPLY_ID FETCH_REPLY_DATA FETCH_REPLY_END) - 1);
	builder_count_string(&builder, request->subject, request->subject_length);
	builder_count_string(&builder, request->id, request->id_length);
	for (size_t i = 0; i < batch.count; i++)
		builder_count_string(&builder, batch.messages[i]->data, batch.messages[i]->length);
	builder_count(&builder, batch.count > 0 ? batch.count - 1 : 0);   /* commas */
	if (!builder_start(&builder)) {
		/* The messages were taken from the queue and cannot be put back
		 * in order; this only happens when memory is exhausted. */
		log_error("fetch: out of memory building the reply; %zu message(s) lost", batch.count);
		api_reply_static(reply, 500, API_TEXT_SERVER_ERROR);
		broker_batch_release(&batch);
		return;
	}
	builder_put_text(&builder, FETCH_REPLY_SUBJECT);
	builder_put_string(&builder, request->subject, request->subject_length);
	builder_put_text(&builder, FETCH_REPLY_ID);
	builder_put_string(&builder, request->id, request->id_length);
	builder_put_text(&builder, FETCH_REPLY_DATA);
	for (size_t i = 0; i < batch.count; i++) {
		if (i > 0)
			builder_put_text(&builder, ",");
		builder_put_string(&builder, batch.messages[i]->data, batch.messages[i]->length);
	}
	builder_put_text(&builder, FETCH_REPLY_END);
	builder_finish(&builder, reply, 200);
	broker_batch_release(&batch);
}

void api_handle(struct api_context *context, enum api_endpoint endpoint,
                const char *body, size_t body_length, struct api_reply *reply)
{
	struct request request;

	if (!request_read(&request, body, body_length)) {
		api_reply_static(reply, 400, API_TEXT_BODY_INVALID);
		return;
	}

	switch (endpoint) {
	case API_SUBSCRIBE:
		handle_subscribe(context, &request, reply);
		break;
	case API_PUBLISH:
		handle_publish(context, &request, reply);
		break;
	case API_PUBLISH_ASYNC:
		handle_publish_async(context, &request, reply);
		break;
	case API_FETCH:
		handle_fetch(context, &request, reply);
		break;
	default:
		api_reply_static(reply, 500, API_TEXT_SERVER_ERROR);
		break;
	}
	request_release(&request);
}
