/* Unit tests of the API's request semantics (api.c): bodies in, status and
 * JSON replies out, through a real broker and worker pool but no HTTP. */
#include "autoconfig.h"

#include <check.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"

/* The endpoints the original API has, by path. */
#define API_PUBLISH "/api/publish"
#define API_PUBLISH_ASYNC "/api/publish/async"
#define API_SUBSCRIBE "/api/subscribe"
#define API_FETCH "/api/fetch"
#include "broker.h"
#include "pool.h"

static struct broker *broker;
static struct pool *pool;
static struct api_context context;

static void setup_limits(uint64_t max_pending, uint64_t max_pending_bytes)
{
	struct broker_limits limits = {
		.max_pending = max_pending,
		.max_pending_bytes = max_pending_bytes,
		.max_subject_length = 64,
	};

	broker = broker_new(&limits);
	ck_assert_ptr_nonnull(broker);
	pool = pool_new(2, 100);
	ck_assert_ptr_nonnull(pool);
	context.broker = broker;
	context.pool = pool;
	atomic_init(&context.max_message_size, 1000);
	atomic_init(&context.max_subject_length, 64);
}

static void setup(void)
{
	setup_limits(0, 0);
}

static void teardown(void)
{
	pool_free(pool);
	broker_free(broker);
	pool = NULL;
	broker = NULL;
}

/* Sends body to endpoint; returns the status and stores the reply body,
 * NUL-terminated and malloc'ed, in *text. */
static unsigned call(const char *endpoint, const char *body, size_t length, char **text)
{
	struct api_reply reply;
	unsigned status;

	api_handle(&context, api_endpoint_find(endpoint), body, length, &reply);
	status = reply.status;
	*text = strndup(reply.body, reply.body_length);
	ck_assert_ptr_nonnull(*text);
	ck_assert_uint_eq(strlen(*text), reply.body_length);
	api_reply_free(&reply);
	return status;
}

static void expect(const char *endpoint, const char *body, unsigned status, const char *reply_body)
{
	char *text;

	ck_assert_uint_eq(call(endpoint, body, strlen(body), &text), status);
	ck_assert_str_eq(text, reply_body);
	free(text);
}

/* Subscribes to subject and copies the new id into id. */
static void subscribe(const char *subject, char id[BROKER_ID_LENGTH + 1])
{
	char body[256], *text;
	struct json_object *reply, *member;

	snprintf(body, sizeof(body), "{\"subject\":\"%s\"}", subject);
	ck_assert_uint_eq(call(API_SUBSCRIBE, body, strlen(body), &text), 200);
	reply = json_tokener_parse(text);
	ck_assert_ptr_nonnull(reply);
	ck_assert(json_object_object_get_ex(reply, "id", &member));
	ck_assert_int_eq(json_object_get_string_len(member), BROKER_ID_LENGTH);
	memcpy(id, json_object_get_string(member), BROKER_ID_LENGTH + 1);
	ck_assert(json_object_object_get_ex(reply, "subject", &member));
	ck_assert_str_eq(json_object_get_string(member), subject);
	json_object_put(reply);
	free(text);
}

/* Fetches for id on subject and returns the parsed "data" array (caller
 * puts the returned reply object). */
static struct json_object *fetch(const char *subject, const char *id, struct json_object **data)
{
	char body[256], *text;
	struct json_object *reply;

	snprintf(body, sizeof(body), "{\"subject\":\"%s\",\"id\":\"%s\"}", subject, id);
	ck_assert_uint_eq(call(API_FETCH, body, strlen(body), &text), 200);
	reply = json_tokener_parse(text);
	ck_assert_ptr_nonnull(reply);
	ck_assert(json_object_object_get_ex(reply, "data", data));
	ck_assert(json_object_is_type(*data, json_type_array));
	free(text);
	return reply;
}

#define BODY_INVALID "{\"message\":\"request's body is invalid\"}\n"
#define INVALID_SUBJECT "{\"message\":\"invalid subject\"}\n"
#define OK "{\"status\":\"ok\"}\n"

START_TEST(test_subscribe_publish_fetch_round_trip)
{
	char id[BROKER_ID_LENGTH + 1];
	struct json_object *reply, *data;

	subscribe("orders.eu", id);
	expect(API_PUBLISH, "{\"subject\":\"orders.eu\",\"data\":\"one\"}", 200, OK);
	expect(API_PUBLISH, "{\"subject\":\"orders.eu\",\"data\":\"two\"}", 200, OK);
	reply = fetch("orders.eu", id, &data);
	ck_assert_uint_eq(json_object_array_length(data), 2);
	ck_assert_str_eq(json_object_get_string(json_object_array_get_idx(data, 0)), "one");
	ck_assert_str_eq(json_object_get_string(json_object_array_get_idx(data, 1)), "two");
	json_object_put(reply);

	reply = fetch("orders.eu", id, &data);
	ck_assert_uint_eq(json_object_array_length(data), 0);
	json_object_put(reply);
}
END_TEST

START_TEST(test_fetch_reply_echoes_subject_and_id_and_ends_with_newline)
{
	char id[BROKER_ID_LENGTH + 1], body[256], expected[256], *text;

	subscribe("a.b", id);
	snprintf(body, sizeof(body), "{\"subject\":\"a.b\",\"id\":\"%s\"}", id);
	ck_assert_uint_eq(call(API_FETCH, body, strlen(body), &text), 200);
	snprintf(expected, sizeof(expected), "{\"subject\":\"a.b\",\"id\":\"%s\",\"data\":[]}\n", id);
	ck_assert_str_eq(text, expected);
	free(text);
}
END_TEST

START_TEST(test_data_round_trips_byte_for_byte_including_nul_and_escapes)
{
	static const char body[] = "{\"subject\":\"s\",\"data\":\"a\\u0000b \\\"q\\\" \\\\ \\n/\\/ \xc3\xa9 \\ud83d\\ude00\"}";
	static const char expected[] = "a\0b \"q\" \\ \n// \xc3\xa9 \xf0\x9f\x98\x80";
	char id[BROKER_ID_LENGTH + 1];
	struct json_object *reply, *data, *item;

	subscribe("s", id);
	expect(API_PUBLISH, body, 200, OK);
	reply = fetch("s", id, &data);
	ck_assert_uint_eq(json_object_array_length(data), 1);
	item = json_object_array_get_idx(data, 0);
	ck_assert_int_eq(json_object_get_string_len(item), (int)sizeof(expected) - 1);
	ck_assert_mem_eq(json_object_get_string(item), expected, sizeof(expected) - 1);
	json_object_put(reply);
}
END_TEST

START_TEST(test_bodies_that_are_not_a_json_object_with_string_fields_are_invalid)
{
	static const char *const bodies[] = {
		"", "   ", "not json", "[]", "[1,2]", "42", "\"subject\"", "null", "true",
		"{\"subject\":\"a\"", "{\"subject\":\"a\",}", "{'subject':'a'}",
		"{\"subject\":1}", "{\"subject\":null}", "{\"subject\":[\"a\"]}", "{\"subject\":{}}",
		"{\"subject\":\"a\",\"data\":{}}", "{\"subject\":\"a\",\"data\":7}",
		"{\"subject\":\"a\",\"id\":null}", "{\"subject\":\"a\",\"id\":1.5}",
		"{\"subject\":\"a\"} trailing", "{\"subject\":\"a\"}{}",
		"{\"subject\":\"\xff\xfe\"}", "{\"subject\":\"a\",\"data\":\"\xc3\x28\"}",
		/* overlong '/', a UTF-16 surrogate, above U+10FFFF */
		"{\"subject\":\"a.\xc0\xaf\"}", "{\"subject\":\"a\",\"data\":\"\xed\xa0\x80\"}",
		"{\"subject\":\"a\",\"data\":\"\xf4\x90\x80\x80\"}",
		/* raw control characters inside strings */
		"{\"subject\":\"a\nb\"}", "{\"subject\":\"a\",\"data\":\"tab\there\"}",
	};

	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		expect(API_SUBSCRIBE, bodies[i], 400, BODY_INVALID);
		expect(API_PUBLISH, bodies[i], 400, BODY_INVALID);
		expect(API_PUBLISH_ASYNC, bodies[i], 400, BODY_INVALID);
		expect(API_FETCH, bodies[i], 400, BODY_INVALID);
	}
}
END_TEST

START_TEST(test_deeply_nested_json_is_refused_as_invalid)
{
	size_t depth = 100000;
	char *body = malloc(depth * 2 + 32), *text;
	size_t length = 0;

	ck_assert_ptr_nonnull(body);
	length += (size_t)sprintf(body, "{\"subject\":\"a\",\"x\":");
	for (size_t i = 0; i < depth; i++)
		body[length++] = '[';
	for (size_t i = 0; i < depth; i++)
		body[length++] = ']';
	body[length++] = '}';
	ck_assert_uint_eq(call(API_PUBLISH, body, length, &text), 400);
	ck_assert_str_eq(text, BODY_INVALID);
	free(text);
	free(body);
}
END_TEST

START_TEST(test_unknown_fields_are_ignored)
{
	char id[BROKER_ID_LENGTH + 1];

	subscribe("x", id);
	expect(API_PUBLISH, "{\"subject\":\"x\",\"data\":\"d\",\"extra\":{\"n\":[1,2]},\"z\":null}", 200, OK);
}
END_TEST

START_TEST(test_invalid_subjects_are_refused_on_every_endpoint)
{
	static const char *const bodies[] = {
		"{}", "{\"subject\":\"\"}", "{\"subject\":\"a b\"}", "{\"subject\":\"a\\tb\"}",
		"{\"subject\":\"a\\nb\"}", "{\"subject\":\"a\\rb\"}", "{\"subject\":\"a..b\"}",
		"{\"subject\":\".a\"}", "{\"subject\":\"a.\"}", "{\"subject\":\".\"}",
		"{\"subject\":\"a\\u0000b\"}",
		"{\"subject\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}", /* 65 > 64 */
	};

	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		expect(API_SUBSCRIBE, bodies[i], 400, INVALID_SUBJECT);
		expect(API_PUBLISH, bodies[i], 400, INVALID_SUBJECT);
		expect(API_PUBLISH_ASYNC, bodies[i], 400, INVALID_SUBJECT);
		expect(API_FETCH, bodies[i], 400, INVALID_SUBJECT);
	}
}
END_TEST

START_TEST(test_publish_without_subscriber_is_not_found)
{
	expect(API_PUBLISH, "{\"subject\":\"nobody.home\",\"data\":\"x\"}", 404,
	       "{\"message\":\"subscriber not found\"}\n");
}
END_TEST

START_TEST(test_fetch_with_unknown_or_foreign_id_is_bad_id)
{
	char id[BROKER_ID_LENGTH + 1], body[256];

	subscribe("mine", id);
	expect(API_FETCH, "{\"subject\":\"mine\",\"id\":\"00000000-0000-4000-8000-000000000000\"}", 404,
	       "{\"message\":\"bad id\"}\n");
	expect(API_FETCH, "{\"subject\":\"mine\"}", 404, "{\"message\":\"bad id\"}\n");
	snprintf(body, sizeof(body), "{\"subject\":\"theirs\",\"id\":\"%s\"}", id);
	expect(API_FETCH, body, 404, "{\"message\":\"bad id\"}\n");
}
END_TEST

START_TEST(test_data_above_max_message_size_is_too_large)
{
	char id[BROKER_ID_LENGTH + 1];
	char body[1200];
	struct json_object *reply, *data;

	subscribe("big", id);
	snprintf(body, sizeof(body), "{\"subject\":\"big\",\"data\":\"%01001d\"}", 0);
	expect(API_PUBLISH, body, 413, "{\"message\":\"message too large\"}\n");
	expect(API_PUBLISH_ASYNC, body, 413, "{\"message\":\"message too large\"}\n");
	snprintf(body, sizeof(body), "{\"subject\":\"big\",\"data\":\"%01000d\"}", 0);
	expect(API_PUBLISH, body, 200, OK);
	reply = fetch("big", id, &data);
	ck_assert_uint_eq(json_object_array_length(data), 1);
	ck_assert_int_eq(json_object_get_string_len(json_object_array_get_idx(data, 0)), 1000);
	json_object_put(reply);
}
END_TEST

START_TEST(test_overflow_is_429_and_stores_nothing)
{
	char first[BROKER_ID_LENGTH + 1], second[BROKER_ID_LENGTH + 1];
	struct json_object *reply, *data;

	teardown();
	setup_limits(3, 0);
	subscribe("t", first);
	subscribe("t", second);
	expect(API_PUBLISH, "{\"subject\":\"t\",\"data\":\"1\"}", 200, OK);
	/* 2 pending, a second publish needs 2 more copies: refused whole. */
	expect(API_PUBLISH, "{\"subject\":\"t\",\"data\":\"2\"}", 429, "{\"message\":\"broker overflow\"}\n");
	reply = fetch("t", first, &data);
	ck_assert_uint_eq(json_object_array_length(data), 1);
	json_object_put(reply);
	reply = fetch("t", second, &data);
	ck_assert_uint_eq(json_object_array_length(data), 1);
	json_object_put(reply);
	/* Fetching freed the room at once. */
	expect(API_PUBLISH, "{\"subject\":\"t\",\"data\":\"3\"}", 200, OK);
}
END_TEST

START_TEST(test_async_publish_is_delivered_once_the_pool_drains)
{
	char id[BROKER_ID_LENGTH + 1];
	struct broker_stats stats;

	subscribe("async", id);
	expect(API_PUBLISH_ASYNC, "{\"subject\":\"async\",\"data\":\"later\"}", 200, OK);
	expect(API_PUBLISH_ASYNC, "{\"subject\":\"nobody\",\"data\":\"lost\"}", 200, OK);
	pool_free(pool);
	pool = NULL;
	context.pool = NULL;
	broker_get_stats(broker, &stats);
	ck_assert_uint_eq(stats.published, 1);
	ck_assert_uint_eq(stats.pending, 1);
}
END_TEST

START_TEST(test_async_publish_without_pool_is_refused)
{
	pool_free(pool);
	pool = NULL;
	context.pool = NULL;
	expect(API_PUBLISH_ASYNC, "{\"subject\":\"a\",\"data\":\"x\"}", 503, "{\"message\":\"async queue full\"}\n");
}
END_TEST

struct blocker {
	struct pool_job job;
	pthread_mutex_t lock;
	pthread_cond_t changed;
	bool running;
	bool release;
};

static void blocker_run(struct pool_job *job)
{
	struct blocker *blocker = (struct blocker *)job;

	pthread_mutex_lock(&blocker->lock);
	blocker->running = true;
	pthread_cond_broadcast(&blocker->changed);
	while (!blocker->release)
		pthread_cond_wait(&blocker->changed, &blocker->lock);
	pthread_mutex_unlock(&blocker->lock);
}

START_TEST(test_async_publish_with_full_queue_is_503)
{
	struct blocker blocker = { .job.run = blocker_run };
	char id[BROKER_ID_LENGTH + 1];

	pthread_mutex_init(&blocker.lock, NULL);
	pthread_cond_init(&blocker.changed, NULL);
	pool_free(pool);
	pool = pool_new(1, 1);
	context.pool = pool;
	subscribe("q", id);
	ck_assert_int_eq(pool_submit(pool, &blocker.job), 0);
	pthread_mutex_lock(&blocker.lock);
	while (!blocker.running)
		pthread_cond_wait(&blocker.changed, &blocker.lock);
	pthread_mutex_unlock(&blocker.lock);

	expect(API_PUBLISH_ASYNC, "{\"subject\":\"q\",\"data\":\"fits\"}", 200, OK);
	expect(API_PUBLISH_ASYNC, "{\"subject\":\"q\",\"data\":\"full\"}", 503, "{\"message\":\"async queue full\"}\n");

	pthread_mutex_lock(&blocker.lock);
	blocker.release = true;
	pthread_cond_broadcast(&blocker.changed);
	pthread_mutex_unlock(&blocker.lock);
	/* The blocker lives on this stack: wait until its worker is done. */
	pool_free(pool);
	pool = NULL;
	context.pool = NULL;
}
END_TEST

static Suite *api_suite(void)
{
	Suite *suite = suite_create("api");
	TCase *core = tcase_create("core");

	tcase_add_checked_fixture(core, setup, teardown);
	tcase_add_test(core, test_subscribe_publish_fetch_round_trip);
	tcase_add_test(core, test_fetch_reply_echoes_subject_and_id_and_ends_with_newline);
	tcase_add_test(core, test_data_round_trips_byte_for_byte_including_nul_and_escapes);
	tcase_add_test(core, test_bodies_that_are_not_a_json_object_with_string_fields_are_invalid);
	tcase_add_test(core, test_deeply_nested_json_is_refused_as_invalid);
	tcase_add_test(core, test_unknown_fields_are_ignored);
	tcase_add_test(core, test_invalid_subjects_are_refused_on_every_endpoint);
	tcase_add_test(core, test_publish_without_subscriber_is_not_found);
	tcase_add_test(core, test_fetch_with_unknown_or_foreign_id_is_bad_id);
	tcase_add_test(core, test_data_above_max_message_size_is_too_large);
	tcase_add_test(core, test_overflow_is_429_and_stores_nothing);
	tcase_add_test(core, test_async_publish_is_delivered_once_the_pool_drains);
	tcase_add_test(core, test_async_publish_without_pool_is_refused);
	tcase_add_test(core, test_async_publish_with_full_queue_is_503);
	suite_add_tcase(suite, core);
	return suite;
}

int main(void)
{
	SRunner *runner = srunner_create(api_suite());
	int failed;

	srunner_run_all(runner, CK_VERBOSE);
	failed = srunner_ntests_failed(runner);
	srunner_free(runner);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
