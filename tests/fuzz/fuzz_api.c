/* fuzz_api.c - libFuzzer harness: arbitrary request bodies through
 * api_handle(), the code path every HTTP request body takes (JSON parse,
 * validation, broker call, reply JSON).
 *
 * Input: one or more requests, separated by a line holding only "%%"
 * (the bytes "\n%%\n").  A request is one selector byte and the body:
 *   'p' publish          'a' async publish, no worker pool (validated, 503)
 *   's' subscribe        'A' async publish through a real one-thread pool
 *   'f' fetch            any other byte: its value modulo 5 picks one of these
 * In a body, "$0" .. "$9" is replaced by the 36-character id of subscriber
 * n (modulo the number known so far), so fetches can name real subscribers
 * although ids are random.  At most 32 requests per input are run.
 *
 * Each input starts from fresh state, so a finding reproduces from its
 * input alone: a broker with small limits (8 pending copies, 256 pending
 * bytes, subjects of at most 32 bytes, data of at most 64 bytes), four
 * subscribers (0: "a", 1 and 2: "a.b", 3: "orders.eu-west.1") and three
 * pending messages (two to "a.b", one with a NUL byte, quotes and UTF-8;
 * one to "a").
 *
 * Every reply is checked against the contract: a JSON object ending in a
 * newline, the status and exact body predicted by a reference model of the
 * broker (fuzz_model.h), fetched data equal byte for byte to what was
 * published.  At the end every subscriber is drained and the counters must
 * be zero; then everything is freed, so LeakSanitizer sees any leak.
 */
#include "autoconfig.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "api.h"

/* The endpoints the original API has, by path. */
#define API_PUBLISH "/api/publish"
#define API_PUBLISH_ASYNC "/api/publish/async"
#define API_SUBSCRIBE "/api/subscribe"
#define API_FETCH "/api/fetch"
#include "broker.h"
#include "fuzz_model.h"
#include "log.h"
#include "metrics.h"
#include "pool.h"

#define MAX_REQUESTS 32
#define SEPARATOR "\n%%\n"
#define MAX_MESSAGE_SIZE 64
#define JSON_DEPTH 8   /* as api.c: request bodies are flat objects */

enum mode {
	MODE_PUBLISH,
	MODE_ASYNC_NO_POOL,
	MODE_ASYNC_POOL,
	MODE_SUBSCRIBE,
	MODE_FETCH,
	MODE_COUNT,
};

/* FUZZ_VERBOSE=1 prints every request and reply (to reproduce a finding). */
static bool verbose;

static const struct broker_limits limits = {
	.max_pending = 8,
	.max_pending_bytes = 256,
	.max_subject_length = 32,
};

/* The fields of a request as the harness reads them itself. */
struct request {
	struct json_object *object;   /* NULL: the body is invalid */
	const char *subject, *data, *id;
	size_t subject_length, data_length, id_length;
};

/* Runs while the whole input is handled. */
struct run {
	struct api_context context;
	struct model model;
};

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *input, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	metrics_init(NULL, 0);
	verbose = getenv("FUZZ_VERBOSE") != NULL;
	/* api.c logs failed async publishes at debug level: keep them quiet
	 * but still formatted, by enabling debug only with FUZZ_DEBUG_LOG. */
	log_set_level(getenv("FUZZ_DEBUG_LOG") ? LOG_LEVEL_DEBUG : LOG_LEVEL_ERROR);
	return 0;
}

static enum mode mode_of(uint8_t selector)
{
	switch (selector) {
	case 'p': return MODE_PUBLISH;
	case 'a': return MODE_ASYNC_NO_POOL;
	case 'A': return MODE_ASYNC_POOL;
	case 's': return MODE_SUBSCRIBE;
	case 'f': return MODE_FETCH;
	default: return (enum mode)(selector % MODE_COUNT);
	}
}

static const char *endpoint_of(enum mode mode)
{
	switch (mode) {
	case MODE_PUBLISH: return API_PUBLISH;
	case MODE_ASYNC_NO_POOL:
	case MODE_ASYNC_POOL: return API_PUBLISH_ASYNC;
	case MODE_SUBSCRIBE: return API_SUBSCRIBE;
	case MODE_FETCH:
	default: return API_FETCH;
	}
}

/* Copies body into an exactly sized heap buffer (so ASan sees any read past
 * its end), replacing "$n" by subscriber ids.  Returns the buffer. */
static char *body_expand(const struct model *model, const uint8_t *body, size_t length, size_t *expanded_length)
{
	size_t out = 0;
	char *buffer;

	for (int pass = 0; pass < 2; pass++) {
		buffer = pass == 0 ? NULL : model_alloc(NULL, out);
		out = 0;
		for (size_t i = 0; i < length; i++) {
			if (body[i] == '$' && i + 1 < length && body[i + 1] >= '0' && body[i + 1] <= '9'
			    && model->count > 0) {
				const struct model_subscriber *subscriber =
					&model->subscribers[(size_t)(body[i + 1] - '0') % model->count];
				if (buffer != NULL)
					memcpy(buffer + out, subscriber->id, BROKER_ID_LENGTH);
				out += BROKER_ID_LENGTH;
				i++;
				continue;
			}
			if (buffer != NULL)
				buffer[out] = (char)body[i];
			out++;
		}
	}
	*expanded_length = out;
	return buffer;
}

/* Reads a member the way the contract says: missing = "", present but no
 * string = invalid body. */
static bool member_string(struct json_object *object, const char *name, const char **value, size_t *length)
{
	struct json_object *member;

	if (!json_object_object_get_ex(object, name, &member)) {
		*value = "";
		*length = 0;
		return true;
	}
	if (!json_object_is_type(member, json_type_string))
		return false;
	*value = json_object_get_string(member);
	*length = (size_t)json_object_get_string_len(member);
	return true;
}

static bool json_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Parses text (length bytes) as one JSON value with nothing but whitespace
 * around it.  Returns the value (caller puts it) or NULL. */
static struct json_object *json_parse_exact(const char *text, size_t length, int depth)
{
	struct json_tokener *tokener = json_tokener_new_ex(depth);
	struct json_object *object;
	size_t end;

	FUZZ_CHECK(tokener != NULL, "json_tokener_new_ex failed");
	json_tokener_set_flags(tokener, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
	object = length > 0 ? json_tokener_parse_ex(tokener, text, (int)length) : NULL;
	if (object != NULL && json_tokener_get_error(tokener) != json_tokener_success) {
		json_object_put(object);
		object = NULL;
	}
	end = object != NULL ? json_tokener_get_parse_end(tokener) : 0;
	json_tokener_free(tokener);
	while (object != NULL && end < length && json_space(text[end]))
		end++;
	if (object != NULL && end != length) {
		json_object_put(object);
		object = NULL;
	}
	return object;
}

/* The next code point of well-formed UTF-8 (RFC 3629) at text[*i], or -1
 * for an ill-formed sequence (overlong, surrogate, above U+10FFFF,
 * truncated, stray continuation byte). */
static long utf8_next(const unsigned char *text, size_t length, size_t *i)
{
	static const long minimum[4] = { 0, 0x80, 0x800, 0x10000 };
	unsigned char lead = text[(*i)++];
	size_t extra = lead < 0x80 ? 0 : lead >= 0xf0 ? 3 : lead >= 0xe0 ? 2 : lead >= 0xc0 ? 1 : 4;
	long code = extra == 0 ? lead : lead & (0x3f >> extra);

	if (extra > 3 || lead > 0xf4)
		return -1;
	for (size_t k = 0; k < extra; k++, (*i)++) {
		if (*i >= length || (text[*i] & 0xc0) != 0x80)
			return -1;
		code = code << 6 | (text[*i] & 0x3f);
	}
	if (code < minimum[extra] || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff))
		return -1;
	return code;
}

/* What RFC 8259 asks of JSON text beyond json-c's checks: UTF-8 that is
 * well-formed, no NUL byte, and no raw control character inside a string. */
static bool json_text_clean(const char *text, size_t length)
{
	const unsigned char *bytes = (const unsigned char *)text;
	bool in_string = false;
	size_t i = 0;

	while (i < length) {
		long code = utf8_next(bytes, length, &i);

		if (code <= 0 || (in_string && code < 0x20))
			return false;
		if (in_string && code == '\\') {
			if (i < length && bytes[i] >= 0x20 && bytes[i] < 0x80)
				i++;   /* the escaped character */
		} else if (code == '"') {
			in_string = !in_string;
		}
	}
	return true;
}

static void request_read(struct request *request, const char *body, size_t length)
{
	memset(request, 0, sizeof(*request));
	request->object = json_text_clean(body, length) ? json_parse_exact(body, length, JSON_DEPTH) : NULL;
	if (request->object != NULL &&
	    (!json_object_is_type(request->object, json_type_object) ||
	     !member_string(request->object, "subject", &request->subject, &request->subject_length) ||
	     !member_string(request->object, "data", &request->data, &request->data_length) ||
	     !member_string(request->object, "id", &request->id, &request->id_length))) {
		json_object_put(request->object);
		request->object = NULL;
	}
}

/* The reply the contract demands, as (status, message) for errors, or
 * status 200 with message NULL. */
struct expected {
	unsigned status;
	const char *message;
};

static struct expected expect_status(enum broker_status status)
{
	switch (status) {
	case BROKER_OK: return (struct expected){ 200, NULL };
	case BROKER_INVALID_SUBJECT: return (struct expected){ 400, "invalid subject" };
	case BROKER_NO_SUBSCRIBER: return (struct expected){ 404, "subscriber not found" };
	case BROKER_OVERFLOW: return (struct expected){ 429, "broker overflow" };
	case BROKER_BAD_ID: return (struct expected){ 404, "bad id" };
	case BROKER_NO_MEMORY:
	default: return (struct expected){ 500, "server error" };
	}
}

static struct expected predict(struct run *run, enum mode mode, const struct request *request)
{
	const struct model *model = &run->model;

	if (request->object == NULL)
		return (struct expected){ 400, "request's body is invalid" };
	switch (mode) {
	case MODE_SUBSCRIBE:
		if (!model_subject_valid(request->subject, request->subject_length, limits.max_subject_length))
			return (struct expected){ 400, "invalid subject" };
		return (struct expected){ 200, NULL };
	case MODE_PUBLISH:
		if (request->data_length > MAX_MESSAGE_SIZE)
			return (struct expected){ 413, "message too large" };
		return expect_status(model_publish_status(model, request->subject, request->subject_length,
		                                          request->data_length));
	case MODE_ASYNC_NO_POOL:
	case MODE_ASYNC_POOL:
		if (!model_subject_valid(request->subject, request->subject_length, limits.max_subject_length))
			return (struct expected){ 400, "invalid subject" };
		if (request->data_length > MAX_MESSAGE_SIZE)
			return (struct expected){ 413, "message too large" };
		if (mode == MODE_ASYNC_NO_POOL)
			return (struct expected){ 503, "async queue full" };
		return (struct expected){ 200, NULL };
	case MODE_FETCH:
	default:
		return expect_status(model_fetch_status(&run->model, request->subject, request->subject_length,
		                                        request->id, request->id_length));
	}
}

static const char *member_text(struct json_object *object, const char *name, size_t *length)
{
	struct json_object *member;

	if (!json_object_object_get_ex(object, name, &member) || !json_object_is_type(member, json_type_string))
		return NULL;
	*length = (size_t)json_object_get_string_len(member);
	return json_object_get_string(member);
}

static bool uuid_v4_text(const char *text, size_t length)
{
	static const char hex[] = "0123456789abcdef";

	if (length != BROKER_ID_LENGTH)
		return false;
	for (size_t i = 0; i < length; i++) {
		bool dash = i == 8 || i == 13 || i == 18 || i == 23;

		if (dash ? text[i] != '-' : (text[i] == '\0' || strchr(hex, text[i]) == NULL))
			return false;
	}
	return text[14] == '4' && strchr("89ab", text[19]) != NULL;
}

/* Checks the reply against the prediction and applies a success to the
 * model. */
static void reply_check(struct run *run, enum mode mode, const struct request *request,
                        const struct expected *expected, const struct api_reply *reply)
{
	struct json_object *object;
	const char *text;
	size_t length;

	FUZZ_CHECK(reply->body != NULL && reply->body_length > 0, "empty reply body");
	FUZZ_CHECK(reply->body[reply->body_length - 1] == '\n', "reply does not end with a newline: %.*s",
	           (int)reply->body_length, reply->body);
	FUZZ_CHECK(reply->status == expected->status, "status %u, expected %u (%s); reply %.*s",
	           reply->status, expected->status, expected->message ? expected->message : "success",
	           (int)reply->body_length, reply->body);
	FUZZ_CHECK(json_text_clean(reply->body, reply->body_length),
	           "reply is not clean JSON text (bad UTF-8 or raw control character): %.*s",
	           (int)reply->body_length, reply->body);
	object = json_parse_exact(reply->body, reply->body_length, JSON_TOKENER_DEFAULT_DEPTH);
	FUZZ_CHECK(object != NULL && json_object_is_type(object, json_type_object),
	           "reply is not one JSON object: %.*s", (int)reply->body_length, reply->body);

	if (expected->message != NULL) {
		text = member_text(object, "message", &length);
		FUZZ_CHECK(json_object_object_length(object) == 1 && text != NULL &&
		           length == strlen(expected->message) && memcmp(text, expected->message, length) == 0,
		           "error body %.*s, expected message \"%s\"", (int)reply->body_length, reply->body,
		           expected->message);
		json_object_put(object);
		return;
	}

	switch (mode) {
	case MODE_PUBLISH:
	case MODE_ASYNC_POOL:
		text = member_text(object, "status", &length);
		FUZZ_CHECK(json_object_object_length(object) == 1 && text != NULL && length == 2 &&
		           memcmp(text, "ok", 2) == 0, "publish reply %.*s", (int)reply->body_length, reply->body);
		if (mode == MODE_PUBLISH)
			model_publish_apply(&run->model, request->subject, request->subject_length,
			                    request->data, request->data_length, BROKER_OK);
		break;
	case MODE_SUBSCRIBE: {
		const char *id = member_text(object, "id", &length);

		FUZZ_CHECK(json_object_object_length(object) == 2 && id != NULL && uuid_v4_text(id, length),
		           "subscribe reply %.*s", (int)reply->body_length, reply->body);
		text = member_text(object, "subject", &length);
		FUZZ_CHECK(text != NULL && length == request->subject_length &&
		           memcmp(text, request->subject, length) == 0,
		           "subscribe reply does not echo the subject: %.*s", (int)reply->body_length, reply->body);
		model_subscribe(&run->model, request->subject, request->subject_length, id, 0);
		break;
	}
	case MODE_FETCH: {
		struct model_subscriber *subscriber = model_find(&run->model, request->subject,
		                                                 request->subject_length, request->id,
		                                                 request->id_length);
		struct json_object *data;

		FUZZ_CHECK(subscriber != NULL, "fetch succeeded for an unknown subscriber");
		FUZZ_CHECK(json_object_object_length(object) == 3, "fetch reply has extra members: %.*s",
		           (int)reply->body_length, reply->body);
		text = member_text(object, "subject", &length);
		FUZZ_CHECK(text != NULL && length == request->subject_length &&
		           memcmp(text, request->subject, length) == 0, "fetch reply does not echo the subject");
		text = member_text(object, "id", &length);
		FUZZ_CHECK(text != NULL && length == request->id_length && memcmp(text, request->id, length) == 0,
		           "fetch reply does not echo the id");
		FUZZ_CHECK(json_object_object_get_ex(object, "data", &data) &&
		           json_object_is_type(data, json_type_array), "fetch reply has no data array");
		for (size_t i = 0; i < json_object_array_length(data); i++) {
			struct json_object *item = json_object_array_get_idx(data, i);

			FUZZ_CHECK(json_object_is_type(item, json_type_string), "data item %zu is no string", i);
			model_check_message(subscriber, i, json_object_get_string(item),
			                    (size_t)json_object_get_string_len(item));
		}
		model_fetched(&run->model, subscriber, json_object_array_length(data), 0);
		break;
	}
	case MODE_ASYNC_NO_POOL:
	default:
		FUZZ_CHECK(false, "unexpected success in mode %d", (int)mode);
	}
	json_object_put(object);
}

static void request_run(struct run *run, enum mode mode, const uint8_t *raw, size_t raw_length)
{
	struct request request;
	struct expected expected;
	struct api_reply reply;
	struct pool *pool = NULL;
	size_t length;
	char *body = body_expand(&run->model, raw, raw_length, &length);
	enum broker_status async_status = BROKER_OK;

	request_read(&request, body, length);
	expected = predict(run, mode, &request);
	if (mode == MODE_ASYNC_POOL) {
		pool = pool_new(1, 1);
		FUZZ_CHECK(pool != NULL, "pool_new failed");
		/* What the worker's publish will meet. */
		if (expected.status == 200)
			async_status = model_publish_status(&run->model, request.subject, request.subject_length,
			                                    request.data_length);
	}
	run->context.pool = pool;

	memset(&reply, 0xa5, sizeof(reply));
	api_handle(&run->context, api_endpoint_find(endpoint_of(mode)), body, length, &reply);
	if (pool != NULL) {
		/* Runs the queued publish to completion: deterministic. */
		pool_free(pool);
		run->context.pool = NULL;
	}
	if (verbose)
		fprintf(stderr, "request mode %d body [%.*s] -> %u %.*s", (int)mode, (int)length, body,
		        reply.status, (int)reply.body_length, reply.body);
	reply_check(run, mode, &request, &expected, &reply);
	if (mode == MODE_ASYNC_POOL && expected.status == 200)
		model_publish_apply(&run->model, request.subject, request.subject_length, request.data,
		                    request.data_length, async_status);
	else if (mode == MODE_PUBLISH && expected.status == 429)
		model_publish_apply(&run->model, request.subject, request.subject_length, request.data,
		                    request.data_length, BROKER_OVERFLOW);
	api_reply_free(&reply);
	FUZZ_CHECK(reply.body == NULL && reply.body_length == 0, "api_reply_free left a body");
	json_object_put(request.object);
	free(body);
	model_check_stats(&run->model, run->context.broker);
}

/* Subscribes and publishes through the broker directly, keeping the model
 * in step. */
static void state_prepare(struct run *run)
{
	static const char *const subjects[] = { "a", "a.b", "a.b", "orders.eu-west.1" };
	static const struct { const char *subject; const char *data; size_t length; } messages[] = {
#define MESSAGE(subject, text) { subject, text, sizeof(text) - 1 }
		MESSAGE("a.b", "hello"),
		MESSAGE("a.b", "nul\0 \"q\" \\ \xc3\xa9 \x01 </script>"),
		MESSAGE("a", ""),
#undef MESSAGE
	};

	for (size_t i = 0; i < sizeof(subjects) / sizeof(subjects[0]); i++) {
		char id[BROKER_ID_LENGTH + 1];
		enum broker_status status = broker_subscribe(run->context.broker, subjects[i],
		                                             strlen(subjects[i]), NULL, id);

		FUZZ_CHECK(status == BROKER_OK, "prepare: subscribe %s", broker_status_name(status));
		model_subscribe(&run->model, subjects[i], strlen(subjects[i]), id, 0);
	}
	for (size_t i = 0; i < sizeof(messages) / sizeof(messages[0]); i++) {
		struct broker_message *message = broker_message_new(messages[i].data, messages[i].length);
		enum broker_status status;

		FUZZ_CHECK(message != NULL, "broker_message_new failed");
		status = broker_publish(run->context.broker, messages[i].subject, strlen(messages[i].subject),
		                        message);
		FUZZ_CHECK(status == BROKER_OK, "prepare: publish %s", broker_status_name(status));
		model_publish_apply(&run->model, messages[i].subject, strlen(messages[i].subject),
		                    messages[i].data, messages[i].length, status);
		broker_message_release(message);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *input, size_t size)
{
	struct run run;
	size_t start = 0, requests = 0;

	memset(&run, 0, sizeof(run));
	run.context.broker = broker_new(&limits);
	FUZZ_CHECK(run.context.broker != NULL, "broker_new failed");
	atomic_init(&run.context.max_message_size, MAX_MESSAGE_SIZE);
	atomic_init(&run.context.max_subject_length, limits.max_subject_length);
	model_init(&run.model, &limits);
	state_prepare(&run);

	while (start < size && requests < MAX_REQUESTS) {
		const uint8_t *found = memmem(input + start, size - start, SEPARATOR, strlen(SEPARATOR));
		size_t end = found != NULL ? (size_t)(found - input) : size;

		if (end > start) {
			request_run(&run, mode_of(input[start]), input + start + 1, end - start - 1);
			requests++;
		}
		start = found != NULL ? end + strlen(SEPARATOR) : size;
	}

	model_drain(&run.model, run.context.broker, 0);
	broker_free(run.context.broker);
	model_free(&run.model);
	return 0;
}
