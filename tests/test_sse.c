/* test_sse.c - unit tests of the client's event-stream parser and its
 * message output (src/client/sse.c, src/client/output.c).
 */
#include "autoconfig.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "client/output.h"
#include "client/sse.h"

#define EVENTS_MAX 8

struct seen {
	int count;
	char type[EVENTS_MAX][32];
	char data[EVENTS_MAX][128];
	size_t data_length[EVENTS_MAX];
	char last_id[EVENTS_MAX][64];
	int stop_after; /* 0: never */
};

static bool remember(const struct sse_event *event, void *context)
{
	struct seen *seen = context;
	ck_assert_int_lt(seen->count, EVENTS_MAX);
	snprintf(seen->type[seen->count], sizeof seen->type[0], "%s", event->type);
	ck_assert_uint_lt(event->data_length, sizeof seen->data[0]);
	memcpy(seen->data[seen->count], event->data, event->data_length);
	seen->data_length[seen->count] = event->data_length;
	snprintf(seen->last_id[seen->count], sizeof seen->last_id[0], "%s", event->last_id);
	seen->count++;
	return seen->stop_after == 0 || seen->count < seen->stop_after;
}

/* Feeds text whole, then again one byte at a time: both must agree. */
static void parse_both_ways(const char *text, struct seen *whole, struct seen *bytewise)
{
	struct sse_parser parser;
	sse_init(&parser, remember, whole);
	sse_feed(&parser, text, strlen(text));
	sse_free(&parser);
	sse_init(&parser, remember, bytewise);
	for (size_t i = 0; text[i] != '\0'; i++)
		if (!sse_feed(&parser, text + i, 1))
			break;
	sse_free(&parser);
	ck_assert_int_eq(whole->count, bytewise->count);
	for (int i = 0; i < whole->count; i++) {
		ck_assert_str_eq(whole->type[i], bytewise->type[i]);
		ck_assert_uint_eq(whole->data_length[i], bytewise->data_length[i]);
		ck_assert_mem_eq(whole->data[i], bytewise->data[i], whole->data_length[i]);
		ck_assert_str_eq(whole->last_id[i], bytewise->last_id[i]);
	}
}

START_TEST(broker_events_parse)
{
	struct seen whole = {0}, bytewise = {0};
	parse_both_ways(": open\n\n"
	                "id: 1\nevent: message\ndata: {\"seq\":1}\n\n"
	                ": keepalive\n\n"
	                "id: 2\nevent: message\ndata: {\"seq\":2}\n\n",
	                &whole, &bytewise);
	ck_assert_int_eq(whole.count, 2);
	ck_assert_str_eq(whole.type[0], "message");
	ck_assert_str_eq(whole.data[0], "{\"seq\":1}");
	ck_assert_str_eq(whole.last_id[0], "1");
	ck_assert_str_eq(whole.data[1], "{\"seq\":2}");
	ck_assert_str_eq(whole.last_id[1], "2");
}
END_TEST

START_TEST(line_ends_and_fields)
{
	struct seen whole = {0}, bytewise = {0};
	/* CRLF, CR alone, LF; two data lines joined by LF; no space after
	 * the colon; an unknown field; an event without data is not sent. */
	parse_both_ways("data:a\r\ndata: b\r\r"
	                "event: other\nretry: 10\ndata\n\n"
	                "id: 7\r\n\r\n"
	                "data: c\n\n",
	                &whole, &bytewise);
	ck_assert_int_eq(whole.count, 3);
	ck_assert_str_eq(whole.data[0], "a\nb");
	ck_assert_str_eq(whole.type[0], "message");
	ck_assert_str_eq(whole.type[1], "other");
	ck_assert_uint_eq(whole.data_length[1], 0);
	ck_assert_str_eq(whole.data[2], "c");
	ck_assert_str_eq(whole.last_id[2], "7");
}
END_TEST

START_TEST(unfinished_event_waits)
{
	struct seen seen = {0};
	struct sse_parser parser;
	sse_init(&parser, remember, &seen);
	ck_assert(sse_feed(&parser, "data: half", 10));
	ck_assert(sse_feed(&parser, "\n", 1));
	ck_assert_int_eq(seen.count, 0);
	ck_assert(sse_feed(&parser, "\n", 1));
	ck_assert_int_eq(seen.count, 1);
	ck_assert_str_eq(seen.data[0], "half");
	sse_free(&parser);
}
END_TEST

START_TEST(restart_forgets_the_event_but_keeps_the_last_id)
{
	struct seen seen = {0};
	struct sse_parser parser;
	sse_init(&parser, remember, &seen);
	const char *text = "id: 5\ndata: whole\n\nevent: other\ndata: cut";
	ck_assert(sse_feed(&parser, text, strlen(text)));
	ck_assert_int_eq(seen.count, 1);
	/* The connection broke mid-event: the next one starts afresh. */
	sse_restart(&parser);
	ck_assert_str_eq(parser.last_id, "5");
	text = " off\n\ndata: next\n\n";
	ck_assert(sse_feed(&parser, text, strlen(text)));
	ck_assert_int_eq(seen.count, 2);
	ck_assert_str_eq(seen.type[1], "message");
	ck_assert_str_eq(seen.data[1], "next");
	ck_assert_str_eq(seen.last_id[1], "5");
	sse_free(&parser);
}
END_TEST

START_TEST(callback_stops_parsing)
{
	struct seen seen = {.stop_after = 1};
	struct sse_parser parser;
	sse_init(&parser, remember, &seen);
	const char *text = "data: 1\n\ndata: 2\n\n";
	ck_assert(!sse_feed(&parser, text, strlen(text)));
	ck_assert(!parser.failed);
	ck_assert_int_eq(seen.count, 1);
	sse_free(&parser);
}
END_TEST

/* Prints one message in a format and returns what came out. */
static char *printed(const struct output_format *format, const char *json)
{
	json_object *object = json_tokener_parse(json);
	ck_assert_ptr_nonnull(object);
	struct output_message message;
	ck_assert(output_message_from_json(object, &message));
	char *text = NULL;
	size_t length = 0;
	FILE *out = open_memstream(&text, &length);
	ck_assert_ptr_nonnull(out);
	output_print(out, format, &message);
	fclose(out);
	json_object_put(object);
	return text;
}

START_TEST(output_forms)
{
	const char *message = "{\"seq\":12,\"subject\":\"a.b\",\"attempt\":2,\"data\":\"x \\\"y\\\" \\u00e9\"}";
	struct output_format data = {.kind = OUTPUT_DATA};
	struct output_format json = {.kind = OUTPUT_JSON};
	struct output_format format = {.kind = OUTPUT_FORMAT, .template = "{seq}/{attempt} {subject}: {data} {other}"};
	char *text = printed(&data, message);
	ck_assert_str_eq(text, "x \"y\" \xc3\xa9\n");
	free(text);
	text = printed(&json, message);
	ck_assert_str_eq(text, "{\"seq\":12,\"subject\":\"a.b\",\"attempt\":2,\"data\":\"x \\\"y\\\" \xc3\xa9\"}\n");
	free(text);
	text = printed(&format, message);
	ck_assert_str_eq(text, "12/2 a.b: x \"y\" \xc3\xa9 {other}\n");
	free(text);
}
END_TEST

START_TEST(output_refuses_incomplete_messages)
{
	struct output_message message;
	const char *bad[] = {
		"{\"subject\":\"a\",\"attempt\":1,\"data\":\"x\"}",
		"{\"seq\":\"1\",\"subject\":\"a\",\"attempt\":1,\"data\":\"x\"}",
		"{\"seq\":1,\"subject\":\"a\",\"attempt\":1,\"data\":5}",
		"[1]",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		json_object *object = json_tokener_parse(bad[i]);
		ck_assert_ptr_nonnull(object);
		ck_assert(!output_message_from_json(object, &message));
		json_object_put(object);
	}
}
END_TEST

int main(void)
{
	Suite *suite = suite_create("client");
	TCase *sse = tcase_create("sse");
	tcase_add_test(sse, broker_events_parse);
	tcase_add_test(sse, line_ends_and_fields);
	tcase_add_test(sse, unfinished_event_waits);
	tcase_add_test(sse, callback_stops_parsing);
	tcase_add_test(sse, restart_forgets_the_event_but_keeps_the_last_id);
	suite_add_tcase(suite, sse);
	TCase *output = tcase_create("output");
	tcase_add_test(output, output_forms);
	tcase_add_test(output, output_refuses_incomplete_messages);
	suite_add_tcase(suite, output);
	SRunner *runner = srunner_create(suite);
	srunner_run_all(runner, CK_NORMAL);
	int failed = srunner_ntests_failed(runner);
	srunner_free(runner);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
