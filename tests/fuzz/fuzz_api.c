/* fuzz_api.c - libFuzzer harness: arbitrary request bodies through
 * api_handle(), the code path every HTTP request body takes (JSON parse,
 * validation, broker call, reply JSON).
 *
 * Input: one or more requests, separated by a line holding only "%%"
 * (the bytes "\n%%\n").  A request is one selector byte and the body:
 *   'p' publish          'a' async publish, no worker pool (validated, 503)
 *   's' subscribe        'A' async publish through a real one-thread pool
 *   'f' fetch            'b' batch publish (/api/publish/batch)
 *   'k' ack              'n' nack              'e' extend
 *   'u' unsubscribe
 *   'F' fetch whose client goes away if it is held (api_hold_cancel)
 *   't' no request: the broker's clock advances by the decimal number of
 *       ms the body starts with (at most 100000000) and its timers run
 *   any other byte: its value modulo 12 picks one of these
 * In a body, "$0" .. "$9" is replaced by the 36-character id of subscriber
 * n (modulo the number known so far), so requests can name real
 * subscribers although ids are random.  At most 32 requests per input are
 * run.
 *
 * Each input starts from fresh state, so a finding reproduces from its
 * input alone: a broker on a fake clock with small limits (8 pending
 * copies, 256 pending bytes, subjects of at most 32 bytes, data of at
 * most 64 bytes, fetch_max_batch 6, at most 4 messages per batch, ack
 * wait 30 s by default, fetch_max_wait_ms 500, 2 held fetches), six
 * subscribers (0: "a"; 1 and 2: "a.b"; 3: "orders.eu-west.1"; 4: "q" with
 * ack, ack_wait_ms 1000, max_deliver 2, dead_letter "a"; 5: "q" in group
 * "g" with ack) and three pending messages (seqs 1 and 2 to "a.b", one
 * with a NUL byte, quotes and UTF-8; seq 3 to "a").
 *
 * Every reply is checked against the contract: a JSON object ending in a
 * newline, the status and exact body predicted from the request (read here
 * with json-c, independently of request.c) and a reference model of the
 * broker (fuzz_model.h): error texts and their order, the batch index,
 * fetched data byte for byte, seqs, attempts, counts.  A fetch that is held
 * (wait_ms) is answered at once by broker_wake_all() (empty), after which
 * the broker holds no more fetches; or, with 'F', its client goes away
 * (api_hold_cancel: taken back, nothing taken).  After every request the broker's
 * counters must equal the model's; at the end the clock jumps past every
 * deadline, every subscriber is drained and acked and nothing may be left;
 * then everything is freed, so LeakSanitizer sees any leak.  When the model
 * cannot predict the broker (fuzz_model.h) the replies are only checked to
 * be clean JSON with a known status.
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
#include "broker.h"
#include "fuzz_model.h"
#include "log.h"
#include "metrics.h"
#include "pool.h"

#define MAX_REQUESTS 32
#define SEPARATOR "\n%%\n"
#define MAX_MESSAGE_SIZE 64
#define MAX_BATCH_MESSAGES 4
#define FETCH_MAX_WAIT_MS 500
#define JSON_DEPTH 8   /* as request.c: request bodies are flat objects */
#define START_MS (1000u * 1000u)
#define MAX_ADVANCE_MS 100000000u
/* Past every deadline the broker may hold (ack wait, nack delay, retry). */
#define DRAIN_JUMP_MS (2u * BROKER_ACK_WAIT_MAX_MS + 1000u)

enum mode {
	MODE_PUBLISH,
	MODE_ASYNC_NO_POOL,
	MODE_ASYNC_POOL,
	MODE_SUBSCRIBE,
	MODE_FETCH,
	MODE_BATCH,
	MODE_ACK,
	MODE_NACK,
	MODE_EXTEND,
	MODE_UNSUBSCRIBE,
	MODE_CLOCK,
	MODE_FETCH_GONE,
	MODE_COUNT,
};

/* FUZZ_VERBOSE=1 prints every request and reply (to reproduce a finding). */
static bool verbose;
static const struct broker_limits limits = {
	.max_pending = 8,
	.max_pending_bytes = 256,
	.max_subject_length = 32,
	.ack_wait_ms = 30000,
	.fetch_max_batch = 6,
	.max_parked_fetches = 2,
};

static uint64_t fake_now_ms;

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
	bool closing;                 /* broker_wake_all() was called */
};

/* The reply the contract demands: status and error message (NULL for
 * success), and for a batch publish error the index; alternative is a
 * second message the contract allows as well (NULL: none). */
struct expected {
	unsigned status;
	const char *message;
	const char *alternative;
	size_t index;                 /* SIZE_MAX: no index member */
	bool hold;                    /* a fetch the broker must hold */
};

/* What a request that passed validation asks for. */
struct call {
	struct broker_subscription subscription;
	struct broker_fetch_options fetch;
	uint64_t wait_ms;
	bool meta;
	uint64_t *seqs;
	size_t seq_count;
	uint64_t delay_ms;
	struct model_item *items;
	size_t item_count;
	bool ttl;                    /* a message carries a valid ttl_ms */
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

static uint64_t fake_clock(void)
{
	return fake_now_ms;
}

static enum mode mode_of(uint8_t selector)
{
	switch (selector) {
	case 'p': return MODE_PUBLISH;
	case 'a': return MODE_ASYNC_NO_POOL;
	case 'A': return MODE_ASYNC_POOL;
	case 's': return MODE_SUBSCRIBE;
	case 'f': return MODE_FETCH;
	case 'b': return MODE_BATCH;
	case 'k': return MODE_ACK;
	case 'n': return MODE_NACK;
	case 'e': return MODE_EXTEND;
	case 'u': return MODE_UNSUBSCRIBE;
	case 't': return MODE_CLOCK;
	case 'F': return MODE_FETCH_GONE;
	default: return (enum mode)(selector % MODE_COUNT);
	}
}

static const char *endpoint_of(enum mode mode)
{
	switch (mode) {
	case MODE_PUBLISH: return "/api/publish";
	case MODE_ASYNC_NO_POOL:
	case MODE_ASYNC_POOL: return "/api/publish/async";
	case MODE_SUBSCRIBE: return "/api/subscribe";
	case MODE_BATCH: return "/api/publish/batch";
	case MODE_ACK: return "/api/ack";
	case MODE_NACK: return "/api/nack";
	case MODE_EXTEND: return "/api/extend";
	case MODE_UNSUBSCRIBE: return "/api/unsubscribe";
	case MODE_FETCH:
	case MODE_FETCH_GONE:
	default: return "/api/fetch";
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
 * string (null too) = invalid body. */
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

/* --- the new fields, as the contract reads them ------------------------ */

enum field { ABSENT, PRESENT, INVALID };

/* A JSON integer (json-c's int type: no fraction, no exponent; what does
 * not fit int64 saturates) within [min, max].  null is a wrong type. */
static enum field field_integer(struct json_object *object, const char *name, int64_t min, int64_t max,
                                int64_t *value)
{
	struct json_object *member;

	if (!json_object_object_get_ex(object, name, &member))
		return ABSENT;
	if (!json_object_is_type(member, json_type_int))
		return INVALID;
	*value = json_object_get_int64(member);
	return *value >= min && *value <= max ? PRESENT : INVALID;
}

static enum field field_boolean(struct json_object *object, const char *name, bool *value)
{
	struct json_object *member;

	if (!json_object_object_get_ex(object, name, &member))
		return ABSENT;
	if (!json_object_is_type(member, json_type_boolean))
		return INVALID;
	*value = json_object_get_boolean(member);
	return PRESENT;
}

static enum field field_string(struct json_object *object, const char *name, const char **value, size_t *length)
{
	if (!json_object_object_get_ex(object, name, NULL))
		return ABSENT;
	return member_string(object, name, value, length) ? PRESENT : INVALID;
}

static enum field field_array(struct json_object *object, const char *name, struct json_object **array)
{
	if (!json_object_object_get_ex(object, name, array))
		return ABSENT;
	return json_object_is_type(*array, json_type_array) ? PRESENT : INVALID;
}

/* --- predictions ------------------------------------------------------- */

static struct expected expect_error(unsigned status, const char *message)
{
	return (struct expected){ status, message, NULL, SIZE_MAX, false };
}

static struct expected expect_ok(void)
{
	return (struct expected){ 200, NULL, NULL, SIZE_MAX, false };
}

static struct expected expect_status(enum broker_status status)
{
	switch (status) {
	case BROKER_OK: return expect_ok();
	case BROKER_INVALID_SUBJECT: return expect_error(400, "invalid subject");
	case BROKER_NO_SUBSCRIBER: return expect_error(404, "subscriber not found");
	case BROKER_OVERFLOW: return expect_error(429, "broker overflow");
	case BROKER_BAD_ID: return expect_error(404, "bad id");
	case BROKER_GROUP_MISMATCH: return expect_error(409, "group options differ");
	case BROKER_NOT_ACK: return expect_error(409, "not an ack subscription");
	case BROKER_NO_MEMORY:
	default: return expect_error(500, "server error");
	}
}

static bool subject_valid(const char *subject, size_t length)
{
	return model_subject_valid(subject, length, limits.max_subject_length);
}

/* A message's ttl_ms: absent, valid (1 ms to a year) or invalid.  The
 * model does not follow expiry: a publish that stores a message with a
 * ttl makes it uncertain. */
static enum field ttl_field(struct json_object *object, struct call *call)
{
	int64_t ttl_ms;
	enum field field = field_integer(object, "ttl_ms", 1, (int64_t)BROKER_TTL_MAX_MS, &ttl_ms);

	call->ttl |= field == PRESENT;
	return field;
}

/* Subscribe: body, subject, then group, ack, ack_wait_ms, max_deliver,
 * dead_letter; the ack options only with "ack":true, dead_letter only with
 * max_deliver >= 1, a valid subject other than the subscription's own. */
static struct expected predict_subscribe(struct run *run, const struct request *request, struct call *call)
{
	struct json_object *object = request->object;
	struct broker_subscription *options = &call->subscription;
	enum field field;
	int64_t number;

	if (!subject_valid(request->subject, request->subject_length))
		return expect_error(400, "invalid subject");
	field = field_string(object, "group", &options->group, &options->group_length);
	if (field == INVALID || (field == PRESENT && !model_group_valid(options->group, options->group_length)))
		return expect_error(400, "invalid group");
	if (field_boolean(object, "ack", &options->ack) == INVALID)
		return expect_error(400, "invalid ack");
	field = field_integer(object, "ack_wait_ms", 1, BROKER_ACK_WAIT_MAX_MS, &number);
	if (field == INVALID || (field == PRESENT && !options->ack))
		return expect_error(400, "invalid ack_wait_ms");
	options->ack_wait_ms = field == PRESENT ? (uint64_t)number : 0;
	field = field_integer(object, "max_deliver", 0, BROKER_MAX_DELIVER_MAX, &number);
	/* Without ack only 0, the default (no limit), is accepted: it asks
	 * for nothing a plain subscription does not have. */
	if (field == INVALID || (field == PRESENT && !options->ack && number > 0))
		return expect_error(400, "invalid max_deliver");
	options->max_deliver = field == PRESENT ? (uint32_t)number : 0;
	field = field_string(object, "dead_letter", &options->dead_letter, &options->dead_letter_length);
	if (field == INVALID ||
	    (field == PRESENT && (options->max_deliver == 0 ||
	                          !subject_valid(options->dead_letter, options->dead_letter_length) ||
	                          !model_subject_literal(options->dead_letter, options->dead_letter_length) ||
	                          model_bytes_equal(options->dead_letter, options->dead_letter_length,
	                                            request->subject, request->subject_length))))
		return expect_error(400, "invalid dead_letter");
	return expect_status(model_subscribe_status(&run->model, request->subject, request->subject_length, options));
}

/* Fetch: body, the subject's syntax, then max, max_bytes, wait_ms, meta,
 * peek (before a bad id), then the subscriber. */
static struct expected predict_fetch(struct run *run, const struct request *request, struct call *call)
{
	struct json_object *object = request->object;
	struct model *model = &run->model;
	enum broker_status status;
	int64_t number;
	enum field field;
	size_t subscriber;

	if (!model_subject_valid(request->subject, request->subject_length, 0))
		return expect_error(400, "invalid subject");
	field = field_integer(object, "max", 1, INT64_MAX, &number);
	if (field == INVALID)
		return expect_error(400, "invalid max");
	call->fetch.max = field == PRESENT ? (size_t)number : 0;
	field = field_integer(object, "max_bytes", 1, INT64_MAX, &number);
	if (field == INVALID)
		return expect_error(400, "invalid max_bytes");
	call->fetch.max_bytes = field == PRESENT ? (size_t)number : 0;
	field = field_integer(object, "wait_ms", 0, INT64_MAX, &number);
	if (field == INVALID)
		return expect_error(400, "invalid wait_ms");
	call->wait_ms = field == PRESENT ? ((uint64_t)number < FETCH_MAX_WAIT_MS ? (uint64_t)number : FETCH_MAX_WAIT_MS) : 0;
	if (field_boolean(object, "meta", &call->meta) == INVALID)
		return expect_error(400, "invalid meta");
	if (field_boolean(object, "peek", &call->fetch.peek) == INVALID)
		return expect_error(400, "invalid peek");
	status = model_lookup_status(model, request->subject, request->subject_length, request->id, request->id_length);
	if (status != BROKER_OK)
		return expect_status(status);
	/* Held when nothing is available once the passed deadlines count
	 * (the clock only moves in 't' steps, which run the timers). */
	subscriber = model_find(model, request->subject, request->subject_length, request->id, request->id_length);
	if (call->wait_ms > 0 && !run->closing && model->stats.parked < limits.max_parked_fetches &&
	    model_take_count(model, model_queue_of(model, subscriber),
	                     &(struct broker_fetch_options){ 0, 0, false, NULL, NULL }) == 0) {
		struct expected hold = expect_ok();

		hold.hold = true;
		return hold;
	}
	return expect_ok();
}

/* Ack, nack, extend: body, the subject's syntax, seqs (present, an array
 * of integers >= 1) and delay_ms (nack; the contract does not order the
 * two), then the subscriber and its kind. */
static struct expected predict_settle(struct run *run, enum mode mode, const struct request *request,
                                      struct call *call)
{
	struct json_object *object = request->object, *array;
	const char *seqs_error = NULL, *delay_error = NULL;
	enum field field;
	int64_t number;

	if (!model_subject_valid(request->subject, request->subject_length, 0))
		return expect_error(400, "invalid subject");
	field = field_array(object, "seqs", &array);
	if (field != PRESENT)
		return expect_error(400, "invalid seqs");
	call->seq_count = json_object_array_length(array);
	call->seqs = model_alloc(NULL, (call->seq_count + 1) * sizeof(*call->seqs));
	for (size_t i = 0; i < call->seq_count && seqs_error == NULL; i++) {
		struct json_object *element = json_object_array_get_idx(array, i);

		if (!json_object_is_type(element, json_type_int) || json_object_get_int64(element) < 1)
			seqs_error = "invalid seqs";
		else
			call->seqs[i] = (uint64_t)json_object_get_int64(element);
	}
	if (mode == MODE_NACK) {
		field = field_integer(object, "delay_ms", 0, BROKER_DELAY_MAX_MS, &number);
		if (field == INVALID)
			delay_error = "invalid delay_ms";
		call->delay_ms = field == PRESENT ? (uint64_t)number : 0;
	}
	if (seqs_error != NULL || delay_error != NULL) {
		struct expected error = expect_error(400, seqs_error ? seqs_error : delay_error);

		error.alternative = seqs_error ? delay_error : NULL;
		return error;
	}
	return expect_status(model_settle_status(&run->model, request->subject, request->subject_length,
	                                         request->id, request->id_length));
}

/* Batch publish: messages (a non-empty array of at most
 * max_batch_messages), then each message in order (an object whose
 * subject and data are strings; a valid subject; data not too large),
 * then the broker (no subscriber, does not fit), all or nothing. */
static struct expected predict_batch(struct run *run, const struct request *request, struct call *call)
{
	struct json_object *array;
	struct expected error;
	enum broker_status status;
	size_t index;

	if (field_array(request->object, "messages", &array) != PRESENT || json_object_array_length(array) == 0)
		return expect_error(400, "invalid messages");
	if (json_object_array_length(array) > MAX_BATCH_MESSAGES)
		return expect_error(413, "batch too large");
	call->item_count = json_object_array_length(array);
	call->items = model_alloc(NULL, call->item_count * sizeof(*call->items));
	for (size_t i = 0; i < call->item_count; i++) {
		struct json_object *element = json_object_array_get_idx(array, i);
		struct model_item *item = &call->items[i];

		if (!json_object_is_type(element, json_type_object) ||
		    !member_string(element, "subject", &item->subject, &item->subject_length) ||
		    !member_string(element, "data", &item->data, &item->length))
			error = expect_error(400, "request's body is invalid");
		else if (!subject_valid(item->subject, item->subject_length) ||
		         !model_subject_literal(item->subject, item->subject_length))
			error = expect_error(400, "invalid subject");
		else if (item->length > MAX_MESSAGE_SIZE)
			error = expect_error(413, "message too large");
		else if (ttl_field(element, call) == INVALID)
			error = expect_error(400, "invalid ttl_ms");
		else
			continue;
		error.index = i;
		return error;
	}
	status = model_batch_status(&run->model, call->items, call->item_count, &index);
	if (status == BROKER_OK)
		return expect_ok();
	error = expect_status(status);
	error.index = index;
	return error;
}

static struct expected predict(struct run *run, enum mode mode, const struct request *request, struct call *call)
{
	const struct model *model = &run->model;

	if (request->object == NULL)
		return expect_error(400, "request's body is invalid");
	switch (mode) {
	case MODE_SUBSCRIBE:
		return predict_subscribe(run, request, call);
	case MODE_PUBLISH:
		if (request->data_length > MAX_MESSAGE_SIZE)
			return expect_error(413, "message too large");
		if (ttl_field(request->object, call) == INVALID)
			return subject_valid(request->subject, request->subject_length) &&
			       model_subject_literal(request->subject, request->subject_length)
			       ? expect_error(400, "invalid ttl_ms") : expect_error(400, "invalid subject");
		return expect_status(model_publish_status(model, request->subject, request->subject_length,
		                                          request->data_length));
	case MODE_ASYNC_NO_POOL:
	case MODE_ASYNC_POOL:
		if (!subject_valid(request->subject, request->subject_length) ||
		    !model_subject_literal(request->subject, request->subject_length))
			return expect_error(400, "invalid subject");
		if (request->data_length > MAX_MESSAGE_SIZE)
			return expect_error(413, "message too large");
		if (ttl_field(request->object, call) == INVALID)
			return expect_error(400, "invalid ttl_ms");
		if (mode == MODE_ASYNC_NO_POOL)
			return expect_error(503, "async queue full");
		return expect_ok();
	case MODE_BATCH:
		return predict_batch(run, request, call);
	case MODE_ACK:
	case MODE_NACK:
	case MODE_EXTEND:
		return predict_settle(run, mode, request, call);
	case MODE_UNSUBSCRIBE:
		return expect_status(model_lookup_status(model, request->subject, request->subject_length,
		                                         request->id, request->id_length));
	case MODE_FETCH:
	default:
		return predict_fetch(run, request, call);
	}
}

/* --- checking replies --------------------------------------------------- */

static const char *member_text(struct json_object *object, const char *name, size_t *length)
{
	struct json_object *member;

	if (!json_object_object_get_ex(object, name, &member) || !json_object_is_type(member, json_type_string))
		return NULL;
	*length = (size_t)json_object_get_string_len(member);
	return json_object_get_string(member);
}

/* A member that is a JSON integer >= 0, or -1. */
static int64_t member_number(struct json_object *object, const char *name)
{
	struct json_object *member;

	if (!json_object_object_get_ex(object, name, &member) || !json_object_is_type(member, json_type_int) ||
	    json_object_get_int64(member) < 0)
		return -1;
	return json_object_get_int64(member);
}

static bool text_is(const char *text, size_t length, const char *expected, size_t expected_length)
{
	return text != NULL && model_bytes_equal(text, length, expected, expected_length);
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

/* {"status":"ok"} or {"status":"ok","count":n} */
static void check_ok(struct json_object *object, const struct api_reply *reply, int64_t count)
{
	size_t length;
	const char *text = member_text(object, "status", &length);

	FUZZ_CHECK(text_is(text, length, "ok", 2) && json_object_object_length(object) == (count < 0 ? 1 : 2),
	           "reply %.*s, expected status ok", (int)reply->body_length, reply->body);
	if (count >= 0)
		FUZZ_CHECK(member_number(object, "count") == count, "reply %.*s, expected count %lld",
		           (int)reply->body_length, reply->body, (long long)count);
}

/* The fetch reply: the plain form (data) or the meta form (messages with
 * seq, subject, attempt, data), equal to the model's take. */
static void check_fetched(struct run *run, struct json_object *object, const struct request *request,
                          const struct api_reply *reply, const struct model_take *take, bool meta)
{
	struct json_object *list;
	const char *text;
	size_t length;
	uint64_t last_seq = 0;

	FUZZ_CHECK(json_object_object_length(object) == 3, "fetch reply has extra members: %.*s",
	           (int)reply->body_length, reply->body);
	text = member_text(object, "subject", &length);
	FUZZ_CHECK(text_is(text, length, request->subject, request->subject_length), "fetch reply does not echo the subject");
	text = member_text(object, "id", &length);
	FUZZ_CHECK(text_is(text, length, request->id, request->id_length), "fetch reply does not echo the id");
	FUZZ_CHECK(json_object_object_get_ex(object, meta ? "messages" : "data", &list) &&
	           json_object_is_type(list, json_type_array), "fetch reply has no %s array: %.*s",
	           meta ? "messages" : "data", (int)reply->body_length, reply->body);
	if (run->model.uncertain)
		return;
	FUZZ_CHECK(json_object_array_length(list) == take->count, "fetch returned %zu messages, expected %zu: %.*s",
	           json_object_array_length(list), take->count, (int)reply->body_length, reply->body);
	for (size_t i = 0; i < take->count; i++) {
		struct json_object *item = json_object_array_get_idx(list, i);
		int64_t seq, attempt;

		if (!meta) {
			FUZZ_CHECK(json_object_is_type(item, json_type_string), "data item %zu is no string", i);
			model_check_taken(&run->model, take, i, 0, json_object_get_string(item),
			                  (size_t)json_object_get_string_len(item), 0);
			continue;
		}
		FUZZ_CHECK(json_object_is_type(item, json_type_object) && json_object_object_length(item) == 4,
		           "message %zu is not {seq, subject, attempt, data}", i);
		seq = member_number(item, "seq");
		attempt = member_number(item, "attempt");
		FUZZ_CHECK(seq > 0 && (uint64_t)seq > last_seq, "message %zu: seq %lld after %llu", i, (long long)seq,
		           (unsigned long long)last_seq);
		last_seq = (uint64_t)seq;
		FUZZ_CHECK(attempt >= 1, "message %zu: attempt %lld", i, (long long)attempt);
		/* A wildcard subscription's messages name the literal
		 * subjects they were published to. */
		text = member_text(item, "subject", &length);
		FUZZ_CHECK(text != NULL && (text_is(text, length, request->subject, request->subject_length) ||
		                            (model_subject_literal(text, length) &&
		                             model_pattern_matches(request->subject, request->subject_length,
		                                                   text, length))),
		           "message %zu: not the subject published to", i);
		text = member_text(item, "data", &length);
		FUZZ_CHECK(text != NULL, "message %zu: data is no string", i);
		model_check_taken(&run->model, take, i, (uint64_t)seq, text, length, (uint32_t)attempt);
	}
}

/* Parses a reply: clean JSON text, one object, ending in a newline. */
static struct json_object *reply_parse(const struct api_reply *reply)
{
	struct json_object *object;

	FUZZ_CHECK(reply->body != NULL && reply->body_length > 0, "empty reply body");
	FUZZ_CHECK(reply->body[reply->body_length - 1] == '\n', "reply does not end with a newline: %.*s",
	           (int)reply->body_length, reply->body);
	FUZZ_CHECK(json_text_clean(reply->body, reply->body_length),
	           "reply is not clean JSON text (bad UTF-8 or raw control character): %.*s",
	           (int)reply->body_length, reply->body);
	object = json_parse_exact(reply->body, reply->body_length, JSON_TOKENER_DEFAULT_DEPTH);
	FUZZ_CHECK(object != NULL && json_object_is_type(object, json_type_object),
	           "reply is not one JSON object: %.*s", (int)reply->body_length, reply->body);
	return object;
}

static bool status_known(unsigned status)
{
	static const unsigned known[] = { 200, 400, 404, 409, 413, 429, 500, 503 };

	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
		if (status == known[i])
			return true;
	return false;
}

/* Checks an error reply against the prediction. */
static void check_error(struct json_object *object, const struct expected *expected, const struct api_reply *reply)
{
	size_t length;
	const char *text = member_text(object, "message", &length);
	int members = expected->index == SIZE_MAX ? 1 : 2;

	FUZZ_CHECK(json_object_object_length(object) == members && text != NULL &&
	           (text_is(text, length, expected->message, strlen(expected->message)) ||
	            (expected->alternative &&
	             text_is(text, length, expected->alternative, strlen(expected->alternative)))),
	           "error body %.*s, expected message \"%s\"%s%s%s", (int)reply->body_length, reply->body,
	           expected->message, expected->alternative ? " or \"" : "",
	           expected->alternative ? expected->alternative : "", expected->alternative ? "\"" : "");
	if (expected->index != SIZE_MAX)
		FUZZ_CHECK(member_number(object, "index") == (int64_t)expected->index, "error body %.*s, expected index %zu",
		           (int)reply->body_length, reply->body, expected->index);
}

/* --- running one request ------------------------------------------------ */

static void on_resume(void *transport)
{
	*(bool *)transport = true;
}

/* Applies a successful request to the model and checks the reply's body. */
static void apply_success(struct run *run, enum mode mode, const struct request *request, struct call *call,
                          struct json_object *object, const struct api_reply *reply)
{
	struct model *model = &run->model;
	size_t length, subscriber;
	const char *text;

	switch (mode) {
	case MODE_PUBLISH:
	case MODE_ASYNC_POOL:
		check_ok(object, reply, -1);
		if (mode == MODE_PUBLISH)
			model_publish_apply(model, request->subject, request->subject_length, request->data,
			                    request->data_length, BROKER_OK);
		break;
	case MODE_SUBSCRIBE: {
		const char *id = member_text(object, "id", &length);
		bool group = call->subscription.group_length > 0;

		FUZZ_CHECK(json_object_object_length(object) == (group ? 3 : 2) && id != NULL && uuid_v4_text(id, length),
		           "subscribe reply %.*s", (int)reply->body_length, reply->body);
		text = member_text(object, "subject", &length);
		FUZZ_CHECK(text_is(text, length, request->subject, request->subject_length),
		           "subscribe reply does not echo the subject: %.*s", (int)reply->body_length, reply->body);
		if (group) {
			text = member_text(object, "group", &length);
			FUZZ_CHECK(text_is(text, length, call->subscription.group, call->subscription.group_length),
			           "subscribe reply does not echo the group: %.*s", (int)reply->body_length, reply->body);
		}
		model_subscribe(model, request->subject, request->subject_length, &call->subscription, id,
		                fake_now_ms / 1000u);
		break;
	}
	case MODE_BATCH:
		check_ok(object, reply, (int64_t)call->item_count);
		model_batch_apply(model, call->items, call->item_count, BROKER_OK);
		break;
	case MODE_ACK:
	case MODE_NACK:
	case MODE_EXTEND:
		subscriber = model_find(model, request->subject, request->subject_length, request->id, request->id_length);
		check_ok(object, reply, (int64_t)model_settle(model, subscriber,
		                                             mode == MODE_ACK ? MODEL_ACK : mode == MODE_NACK ? MODEL_NACK
		                                                                                           : MODEL_EXTEND,
		                                             call->seqs, call->seq_count, call->delay_ms, fake_now_ms));
		break;
	case MODE_UNSUBSCRIBE:
		check_ok(object, reply, -1);
		model_remove_subscriber(model, model_find(model, request->subject, request->subject_length, request->id,
		                                          request->id_length));
		break;
	case MODE_FETCH:
	case MODE_ASYNC_NO_POOL:
	default:
		FUZZ_CHECK(false, "unexpected success in mode %d", (int)mode);
	}
}

/* A fetch: the reply (after its hold, when held) against the model's
 * take. */
static void run_fetch(struct run *run, enum mode mode, const struct request *request, struct call *call,
                      const struct expected *expected, struct api_reply *reply)
{
	struct model *model = &run->model;
	size_t subscriber = model_find(model, request->subject, request->subject_length, request->id, request->id_length);
	struct model_take take = { 0 };
	struct json_object *object;
	bool meta;

	if (reply->hold != NULL) {
		bool resumed = false;

		FUZZ_CHECK(reply->status == 0 && reply->body == NULL, "a held fetch has a reply");
		FUZZ_CHECK(model->uncertain || expected->hold, "fetch held; expected an answer at once");
		FUZZ_CHECK(api_hold_attach(reply->hold, on_resume, &resumed), "held fetch answered before it was attached");
		/* While held: parked, touched, nothing taken. */
		model_run_timers(model, fake_now_ms);
		model_touch(model, subscriber, fake_now_ms);
		model->stats.parked++;
		model_check_stats(model, run->context.broker);
		model->stats.parked--;
		if (mode == MODE_FETCH_GONE) {
			/* Its client went away: taken back, nothing taken, not
			 * resumed (the transport resumes it itself). */
			FUZZ_CHECK(api_hold_cancel(&run->context, reply->hold), "api_hold_cancel: answered already");
			FUZZ_CHECK(!resumed, "api_hold_cancel resumed the held fetch");
		} else {
			/* Shutdown answers it with what it has: nothing. */
			broker_wake_all(run->context.broker);
			run->closing = true;
			FUZZ_CHECK(resumed, "broker_wake_all did not resume the held fetch");
		}
		api_hold_reply(&run->context, reply->hold, reply);
		FUZZ_CHECK(reply->hold == NULL, "api_hold_reply left a hold");
		take.subscriber = subscriber;
		take.ack = model_queue_of(model, subscriber)->ack;
		take.peek = call->fetch.peek;
	} else {
		FUZZ_CHECK(model->uncertain || !expected->hold, "fetch answered at once; expected it held");
		model_fetch(model, subscriber, &call->fetch, fake_now_ms, &take);
	}
	object = reply_parse(reply);
	FUZZ_CHECK(reply->status == 200, "fetch status %u: %.*s", reply->status, (int)reply->body_length, reply->body);
	meta = call->meta || model_queue_of(model, subscriber)->ack;
	check_fetched(run, object, request, reply, &take, meta);
	json_object_put(object);
	model_take_free(&take);
}

static void run_clock(struct run *run, const uint8_t *raw, size_t length)
{
	uint64_t advance = 0, got, want;

	for (size_t i = 0; i < length && raw[i] >= '0' && raw[i] <= '9' && advance <= MAX_ADVANCE_MS; i++)
		advance = advance * 10 + (raw[i] - '0');
	if (advance > MAX_ADVANCE_MS)
		advance = MAX_ADVANCE_MS;
	fake_now_ms += advance;
	got = broker_run_timers(run->context.broker);
	want = model_run_timers(&run->model, fake_now_ms);
	if (verbose)
		fprintf(stderr, "clock +%llu ms -> next deadline in %llu ms%s\n", (unsigned long long)advance,
		        (unsigned long long)got, run->model.uncertain ? " (model uncertain)" : "");
	FUZZ_CHECK(run->model.uncertain || got == want, "broker_run_timers: next deadline in %llu ms, expected %llu",
	           (unsigned long long)got, (unsigned long long)want);
	model_check_stats(&run->model, run->context.broker);
}

static void request_run(struct run *run, enum mode mode, const uint8_t *raw, size_t raw_length)
{
	struct request request;
	struct expected expected;
	struct api_reply reply;
	struct call call;
	struct pool *pool = NULL;
	size_t length;
	char *body;
	enum broker_status async_status = BROKER_OK;

	if (mode == MODE_CLOCK) {
		run_clock(run, raw, raw_length);
		return;
	}
	body = body_expand(&run->model, raw, raw_length, &length);
	memset(&call, 0, sizeof(call));
	request_read(&request, body, length);
	expected = predict(run, mode, &request, &call);
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
		fprintf(stderr, "%s [%.*s] -> %u %.*s", endpoint_of(mode), (int)length, body, reply.status,
		        reply.hold ? 5 : (int)reply.body_length, reply.hold ? "held\n" : reply.body);

	if ((mode == MODE_FETCH || mode == MODE_FETCH_GONE) && expected.status == 200 &&
	    (reply.hold != NULL || reply.status == 200) && !run->model.uncertain) {
		run_fetch(run, mode, &request, &call, &expected, &reply);
	} else if (reply.hold != NULL) {
		/* Unpredicted (or the model gave up): still answer it. */
		FUZZ_CHECK(run->model.uncertain, "unexpected hold: expected %u", expected.status);
		broker_wake_all(run->context.broker);
		run->closing = true;
		api_hold_reply(&run->context, reply.hold, &reply);
		json_object_put(reply_parse(&reply));
	} else {
		struct json_object *object = reply_parse(&reply);

		FUZZ_CHECK(status_known(reply.status), "unknown status %u", reply.status);
		if (!run->model.uncertain) {
			FUZZ_CHECK(reply.status == expected.status, "status %u, expected %u (%s); reply %.*s", reply.status,
			           expected.status, expected.message ? expected.message : "success",
			           (int)reply.body_length, reply.body);
			if (expected.message != NULL)
				check_error(object, &expected, &reply);
			else if (mode != MODE_FETCH && mode != MODE_FETCH_GONE)
				apply_success(run, mode, &request, &call, object, &reply);
		} else if (reply.status == 200 && mode == MODE_SUBSCRIBE) {
			/* Keep ids usable for "$n". */
			size_t id_length;
			const char *id = member_text(object, "id", &id_length);

			if (id != NULL && id_length == BROKER_ID_LENGTH)
				model_subscribe(&run->model, request.subject, request.subject_length, NULL, id, 0);
		}
		json_object_put(object);
	}
	if (call.ttl && reply.status == 200)
		run->model.uncertain = true;
	if (mode == MODE_ASYNC_POOL && expected.status == 200)
		model_publish_apply(&run->model, request.subject, request.subject_length, request.data,
		                    request.data_length, async_status);
	else if ((mode == MODE_PUBLISH || mode == MODE_BATCH) && expected.status == 429)
		model_publish_apply(&run->model, "", 0, "", 0, BROKER_OVERFLOW);
	api_reply_free(&reply);
	FUZZ_CHECK(reply.body == NULL && reply.body_length == 0, "api_reply_free left a body");
	json_object_put(request.object);
	free(call.seqs);
	free(call.items);
	free(body);
	model_check_stats(&run->model, run->context.broker);
}

/* Subscribes and publishes through the broker directly, keeping the model
 * in step. */
static void state_prepare(struct run *run)
{
	static const struct {
		const char *subject;
		struct broker_subscription options;
	} subscribers[] = {
		{ "a", { 0 } },
		{ "a.b", { 0 } },
		{ "a.b", { 0 } },
		{ "orders.eu-west.1", { 0 } },
		{ "q", { .ack = true, .ack_wait_ms = 1000, .max_deliver = 2, .dead_letter = "a", .dead_letter_length = 1 } },
		{ "q", { .group = "g", .group_length = 1, .ack = true } },
	};
	static const struct { const char *subject; const char *data; size_t length; } messages[] = {
#define MESSAGE(subject, text) { subject, text, sizeof(text) - 1 }
		MESSAGE("a.b", "hello"),
		MESSAGE("a.b", "nul\0 \"q\" \\ \xc3\xa9 \x01 </script>"),
		MESSAGE("a", ""),
#undef MESSAGE
	};

	for (size_t i = 0; i < sizeof(subscribers) / sizeof(subscribers[0]); i++) {
		char id[BROKER_ID_LENGTH + 1];
		const char *subject = subscribers[i].subject;
		enum broker_status status = broker_subscribe(run->context.broker, subject, strlen(subject),
		                                             &subscribers[i].options, id);

		FUZZ_CHECK(status == BROKER_OK, "prepare: subscribe %s", broker_status_name(status));
		model_subscribe(&run->model, subject, strlen(subject), &subscribers[i].options, id, fake_now_ms / 1000u);
	}
	for (size_t i = 0; i < sizeof(messages) / sizeof(messages[0]); i++) {
		struct broker_message *message = broker_message_new(NULL, 0, messages[i].data, messages[i].length);
		enum broker_status status;

		FUZZ_CHECK(message != NULL, "broker_message_new failed");
		status = broker_publish(run->context.broker, messages[i].subject, strlen(messages[i].subject),
		                        message);
		FUZZ_CHECK(status == BROKER_OK, "prepare: publish %s", broker_status_name(status));
		model_publish_apply(&run->model, messages[i].subject, strlen(messages[i].subject),
		                    messages[i].data, messages[i].length, status);
		broker_message_release(message);
	}
	model_check_stats(&run->model, run->context.broker);
}

int LLVMFuzzerTestOneInput(const uint8_t *input, size_t size)
{
	struct run run;
	size_t start = 0, requests = 0;

	memset(&run, 0, sizeof(run));
	fake_now_ms = START_MS;
	run.context.broker = broker_new(&limits);
	FUZZ_CHECK(run.context.broker != NULL, "broker_new failed");
	broker_set_clock(run.context.broker, fake_clock);
	atomic_init(&run.context.max_message_size, MAX_MESSAGE_SIZE);
	atomic_init(&run.context.max_subject_length, limits.max_subject_length);
	atomic_init(&run.context.fetch_max_wait_ms, FETCH_MAX_WAIT_MS);
	atomic_init(&run.context.max_batch_messages, MAX_BATCH_MESSAGES);
	atomic_init(&run.context.max_batch_bytes, 8192);
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

	fake_now_ms += DRAIN_JUMP_MS;
	model_drain(&run.model, run.context.broker, fake_now_ms);
	broker_wake_all(run.context.broker);
	broker_free(run.context.broker);
	model_free(&run.model);
	return 0;
}
