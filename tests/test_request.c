/* Unit tests of request.c: request bodies in, fields out.
 *
 * Two readers make up request_read(): a fast one for flat objects of plain
 * strings and json-c for everything else.  Each case below says what the
 * body means and which reader must take it; every case, and a few hundred
 * thousand generated bodies, also check the contract between the two:
 * whatever the fast reader takes, json-c reads the same way. */
#include "autoconfig.h"

#include <check.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "request.h"

enum reader { INVALID, FLAT, GENERAL };

struct request_case {
	const char *body;
	size_t length;              /* 0: strlen(body) */
	enum reader reader;         /* who must take it; INVALID: nobody */
	const char *subject, *data, *id;
	size_t data_length;         /* 0: strlen(data) */
};

static const struct request_case cases[] = {
	/* What clients send. */
	{ "{\"subject\":\"orders\",\"data\":\"hello\"}", 0, FLAT, "orders", "hello", "", 0 },
	{ "{\"subject\":\"orders\",\"id\":\"0f8e2c1a-0000-4000-8000-000000000000\"}", 0, FLAT,
	  "orders", "", "0f8e2c1a-0000-4000-8000-000000000000", 0 },
	{ "{\"subject\":\"a.b\"}", 0, FLAT, "a.b", "", "", 0 },
	{ "{}", 0, FLAT, "", "", "", 0 },
	{ " \t\r\n{ \"subject\" : \"a\" ,\n\"data\" :\t\"b\" , \"id\" : \"c\" } \r\n", 0, FLAT, "a", "b", "c", 0 },
	{ "{ }", 0, FLAT, "", "", "", 0 },
	{ "{\"data\":\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"}", 0, FLAT, "",
	  "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "", 0 },
	{ "{\"data\":\"/ <> ' \x7f\"}", 0, FLAT, "", "/ <> ' \x7f", "", 0 },
	/* A repeated member: the last wins, as in json-c.  Other members
	 * (the optional fields of newer requests, or anything else) are left
	 * to json-c, whose tree the handlers read them from; the original
	 * fields come out the same. */
	{ "{\"subject\":\"a\",\"subject\":\"b\"}", 0, FLAT, "b", "", "", 0 },
	{ "{\"x\":\"1\",\"subject\":\"a\",\"Subject\":\"b\",\"subjects\":\"c\"}", 0, GENERAL, "a", "", "", 0 },
	{ "{\"\":\"\",\"data\":\"\"}", 0, GENERAL, "", "", "", 0 },
	{ "{\"subject\":\"a\",\"group\":\"g\"}", 0, GENERAL, "a", "", "", 0 },

	/* Valid, but for json-c: escapes, other types, nesting. */
	{ "{\"subject\":\"a\\\"b\"}", 0, GENERAL, "a\"b", "", "", 0 },
	{ "{\"data\":\"line\\nbreak \\/ \\\\ \\t\"}", 0, GENERAL, "", "line\nbreak / \\ \t", "", 0 },
	{ "{\"data\":\"\\u00e9\\ud83d\\ude00\"}", 0, GENERAL, "", "\xc3\xa9\xf0\x9f\x98\x80", "", 0 },
	{ "{\"data\":\"a\\u0000b\"}", 0, GENERAL, "", "a\0b", "", 3 },
	{ "{\"sub\\u006aect\":\"a\"}", 0, GENERAL, "a", "", "", 0 },
	{ "{\"subject\":\"a\",\"n\":1,\"f\":-2.5e3,\"t\":true,\"z\":null}", 0, GENERAL, "a", "", "", 0 },
	{ "{\"subject\":\"a\",\"o\":{\"x\":[1,\"2\",{}]}}", 0, GENERAL, "a", "", "", 0 },
	{ "{\"subject\":1,\"subject\":\"b\"}", 0, GENERAL, "b", "", "", 0 },

	/* Invalid: the contract's types. */
	{ "{\"subject\":null}", 0, INVALID, NULL, NULL, NULL, 0 },
	{ "{\"data\":42}", 0, INVALID, NULL, NULL, NULL, 0 },
	{ "{\"id\":[\"x\"]}", 0, INVALID, NULL, NULL, NULL, 0 },
	{ "{\"subject\":\"a\",\"subject\":1}", 0, INVALID, NULL, NULL, NULL, 0 },
	{ "[\"subject\",\"a\"]", 0, INVALID, NULL, NULL, NULL, 0 },
	{ "\"subject\"", 0, INVALID, NULL, NULL, NULL, 0 },
	{ "null", 0, INVALID, NULL, NULL, NULL, 0 },
	/* Invalid: JSON syntax. */
	{ "", 0, INVALID, NULL, NULL, NULL, 0 },
	{ "   ", 0, INVALID, NULL, NULL, NULL, 0 },
	{ "{", 0, INVALID, NULL, NULL, NULL, 0 },
	{ "{\"subject\":\"a\"", 0, INVALID, NULL, NULL, NULL, 0 },
	{ "{\"subject\":\"a", 0, INVALID, NULL, NULL, NULL, 0 },
	{ "{\"subject\":\"a\",}", 0, INVALID, NULL, NULL, NULL, 0 },
	{ "{,\"subject\":\"a\"}", 0, INVALID, NULL, NULL, NULL, 0 },
	{ "{\"subject\":\"a\" \"data\":\"b\"}", 0, INVALID, NULL, NULL, NULL, 0 },
	{ "{\"subject\" \"a\"}", 0, INVALID, NULL, NULL, NULL, 0 },
	{ "{\"subject\"::\"a\"}", 0, INVALID, NULL, NULL, NULL, 0 },
	{ "{\"subject\":\"a\"}}", 0, INVALID, NULL, NULL, NULL, 0 },
	{ "{\"subject\":\"a\"}x", 0, INVALID, NULL, NULL, NULL, 0 },
	{ "{\"subject\":\"a\"}{}", 0, INVALID, NULL, NULL, NULL, 0 },
	{ "{\"subject\":\"a\"}\v", 0, INVALID, NULL, NULL, NULL, 0 },
	{ "\f{\"subject\":\"a\"}", 0, INVALID, NULL, NULL, NULL, 0 },
	{ "{'subject':'a'}", 0, INVALID, NULL, NULL, NULL, 0 },
	{ "{subject:\"a\"}", 0, INVALID, NULL, NULL, NULL, 0 },
	{ "{\"subject\":\"a\\x\"}", 0, INVALID, NULL, NULL, NULL, 0 },
	{ "{\"subject\":\"a\\u12\"}", 0, INVALID, NULL, NULL, NULL, 0 },
	{ "{\"a\":[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]}", 0, INVALID, NULL, NULL, NULL, 0 },
	{ "\xef\xbb\xbf{\"subject\":\"a\"}", 0, INVALID, NULL, NULL, NULL, 0 },
	/* Invalid: the text itself (RFC 8259 / RFC 3629). */
	{ "{\"data\":\"a\nb\"}", 0, INVALID, NULL, NULL, NULL, 0 },
	{ "{\"data\":\"a\tb\"}", 0, INVALID, NULL, NULL, NULL, 0 },
	{ "{\"data\":\"a\0b\"}", 14, INVALID, NULL, NULL, NULL, 0 },
	{ "{\"data\":\"\xc3\x28\"}", 0, INVALID, NULL, NULL, NULL, 0 },
	{ "{\"data\":\"\xc0\xaf\"}", 0, INVALID, NULL, NULL, NULL, 0 },
	{ "{\"data\":\"\xe0\x80\xaf\"}", 0, INVALID, NULL, NULL, NULL, 0 },
	{ "{\"data\":\"\xed\xa0\x80\"}", 0, INVALID, NULL, NULL, NULL, 0 },
	{ "{\"data\":\"\xf4\x90\x80\x80\"}", 0, INVALID, NULL, NULL, NULL, 0 },
	{ "{\"data\":\"\xff\"}", 0, INVALID, NULL, NULL, NULL, 0 },
	{ "{\"data\":\"\xe2\x82\"}", 0, INVALID, NULL, NULL, NULL, 0 },
};

static size_t case_length(const struct request_case *test)
{
	return test->length != 0 ? test->length : strlen(test->body);
}

static void assert_field(const char *what, size_t index, const char *value, size_t length,
                         const char *expected, size_t expected_length)
{
	ck_assert_msg(length == expected_length && memcmp(value, expected, length) == 0,
	              "case %zu: %s is \"%.*s\" (%zu bytes), expected \"%.*s\" (%zu bytes)", index, what,
	              (int)length, value, length, (int)expected_length, expected, expected_length);
}

static void assert_same_fields(const struct request *a, const struct request *b, const char *context)
{
	ck_assert_msg(a->subject_length == b->subject_length
	              && memcmp(a->subject, b->subject, a->subject_length) == 0
	              && a->data_length == b->data_length
	              && memcmp(a->data, b->data, a->data_length) == 0
	              && a->id_length == b->id_length
	              && memcmp(a->id, b->id, a->id_length) == 0,
	              "the readers disagree on the fields of %s", context);
}

/* The contract between the readers, for one body: what the fast reader
 * takes, json-c takes with the same fields; request_read() is text check,
 * then fast reader, then json-c. */
static void check_readers_agree(const char *body, size_t length, const char *context)
{
	struct request flat, general, combined;
	bool text_valid = request_text_valid(body, length);
	bool flat_took = text_valid && request_read_flat(&flat, body, length);
	bool general_took = text_valid && request_read_general(&general, body, length);
	bool combined_took = request_read(&combined, body, length);

	if (flat_took) {
		ck_assert_msg(general_took, "the fast reader took %s, json-c refuses it", context);
		ck_assert_ptr_null(flat.tree);
		assert_same_fields(&flat, &general, context);
	}
	ck_assert_msg(combined_took == general_took, "request_read() and json-c disagree on %s", context);
	if (combined_took)
		assert_same_fields(&combined, &general, context);
	if (flat_took)
		request_release(&flat);
	if (general_took)
		request_release(&general);
	if (combined_took)
		request_release(&combined);
}

START_TEST(test_case)
{
	const struct request_case *test = &cases[_i];
	size_t length = case_length(test);
	struct request request;
	bool took = request_read(&request, test->body, length);

	check_readers_agree(test->body, length, test->body);
	if (test->reader == INVALID) {
		ck_assert_msg(!took, "case %d (%s) was taken", _i, test->body);
		ck_assert_ptr_null(request.tree);
		ck_assert_uint_eq(request.subject_length + request.data_length + request.id_length, 0);
		return;
	}
	ck_assert_msg(took, "case %d (%s) was refused", _i, test->body);
	ck_assert_msg((request.tree == NULL) == (test->reader == FLAT),
	              "case %d (%s) was taken by the %s reader", _i, test->body,
	              request.tree == NULL ? "fast" : "general");
	assert_field("subject", (size_t)_i, request.subject, request.subject_length,
	             test->subject, strlen(test->subject));
	assert_field("data", (size_t)_i, request.data, request.data_length, test->data,
	             test->data_length != 0 ? test->data_length : strlen(test->data));
	assert_field("id", (size_t)_i, request.id, request.id_length, test->id, strlen(test->id));
	request_release(&request);
	ck_assert_ptr_null(request.tree);
}
END_TEST

/* Every byte value, raw inside a string: control characters and lone
 * bytes above 0x7f (not UTF-8) are refused, printable ASCII is taken.
 * The quote and the backslash end or escape the string, so they are
 * left to the table of cases. */
START_TEST(test_every_byte_in_a_string)
{
	for (unsigned value = 0; value < 256; value++) {
		char body[] = "{\"subject\":\"s\",\"data\":\"a?b\"}";
		char *mark = strchr(body, '?');
		bool printable = value >= 0x20 && value < 0x80;
		struct request request;

		if (value == '"' || value == '\\')
			continue;
		*mark = (char)value;
		ck_assert_msg(request_read(&request, body, sizeof(body) - 1) == printable,
		              "byte 0x%02x inside a string was %s", value, printable ? "refused" : "taken");
		if (printable) {
			ck_assert_uint_eq(request.data_length, 3);
			ck_assert_int_eq((unsigned char)request.data[1], value);
			request_release(&request);
		}
	}
}
END_TEST

/* The fast reader's fields point into the body itself: no copy. */
START_TEST(test_flat_points_into_body)
{
	static const char body[] = "{\"subject\":\"s\",\"data\":\"payload\"}";
	struct request request;

	ck_assert(request_read(&request, body, sizeof(body) - 1));
	ck_assert_ptr_null(request.tree);
	ck_assert_ptr_eq(request.subject, body + 12);
	ck_assert_ptr_eq(request.data, body + 23);
	request_release(&request);
}
END_TEST

/* A body need not be NUL-terminated: nothing past length is read (under
 * ASan/valgrind a read of the byte after it would be reported; here the
 * byte after it would make the body valid if it were read). */
START_TEST(test_reads_only_length)
{
	static const char body[] = "{\"subject\":\"a\"}";
	struct request request;

	ck_assert(!request_read(&request, body, sizeof(body) - 2));
	ck_assert(!request_read(&request, body, 1));
	ck_assert(request_read(&request, body, sizeof(body) - 1));
	request_release(&request);
}
END_TEST

/* Generated bodies: objects of members drawn from a list, half of them
 * then mutated (a random token inserted or a byte deleted), so that valid
 * bodies for both readers and near misses are all common.  The two readers
 * must agree on every one.  Deterministic (fixed seed);
 * tests/fuzz/fuzz_request.c does the same without a plan. */
static const char *const members[] = {
	"\"subject\":\"s\"", "\"data\":\"d\"", "\"id\":\"i\"", "\"x\":\"\"",
	" \"data\" : \"caf\xc3\xa9\" ", "\"subject\":\"a\\\"b\"", "\"\\u0069d\":\"u\"",
	"\"n\":1", "\"data\":null", "\"o\":{}", "\"subject\":[]",
};
static const char *const tokens[] = {
	"{", "}", "[", "]", ":", ",", " ", "\n", "\"subject\"", "\"data\"", "\"\"",
	"\"a\\\"b\"", "1", "null", "\"", "\\", "x",
};

static uint64_t random_next(uint64_t *state)
{
	/* xorshift64* */
	*state ^= *state >> 12;
	*state ^= *state << 25;
	*state ^= *state >> 27;
	return *state * 2685821657736338717ULL;
}

#define PICK(array, state) (array[random_next(state) % (sizeof(array) / sizeof(array[0]))])

static size_t generate_body(char *body, uint64_t *state)
{
	size_t length = 0, count = random_next(state) % 5;

	body[length++] = '{';
	for (size_t k = 0; k < count; k++) {
		const char *member = PICK(members, state);
		if (k > 0)
			body[length++] = ',';
		memcpy(body + length, member, strlen(member));
		length += strlen(member);
	}
	body[length++] = '}';
	for (uint64_t mutations = random_next(state) % 4; mutations > 1; mutations--) {
		size_t at = random_next(state) % (length + 1);
		if (random_next(state) % 2 == 0 && length > 1) {
			memmove(body + at, body + at + 1, length - at - (at < length));
			length -= at < length;
		} else {
			const char *token = PICK(tokens, state);
			size_t token_length = strlen(token);
			memmove(body + at + token_length, body + at, length - at);
			memcpy(body + at, token, token_length);
			length += token_length;
		}
	}
	return length;
}

START_TEST(test_generated_bodies_agree)
{
	uint64_t state = 0x9e3779b97f4a7c15ULL;
	size_t flat_taken = 0, general_taken = 0, refused = 0;
	char body[512];

	for (int round = 0; round < 200000; round++) {
		size_t length = generate_body(body, &state);
		struct request request;

		check_readers_agree(body, length, "a generated body");
		if (!request_read(&request, body, length)) {
			refused++;
			continue;
		}
		if (request.tree == NULL)
			flat_taken++;
		else
			general_taken++;
		request_release(&request);
	}
	/* The generator must reach both readers and refusals, or it tests
	 * nothing. */
	ck_assert_uint_gt(flat_taken, 10000);
	ck_assert_uint_gt(general_taken, 10000);
	ck_assert_uint_gt(refused, 10000);
}
END_TEST

static Suite *request_suite(void)
{
	Suite *suite = suite_create("request");
	TCase *tcase = tcase_create("readers");

	tcase_add_loop_test(tcase, test_case, 0, (int)(sizeof(cases) / sizeof(cases[0])));
	tcase_add_test(tcase, test_every_byte_in_a_string);
	tcase_add_test(tcase, test_flat_points_into_body);
	tcase_add_test(tcase, test_reads_only_length);
	tcase_add_test(tcase, test_generated_bodies_agree);
	suite_add_tcase(suite, tcase);
	return suite;
}

int main(void)
{
	SRunner *runner = srunner_create(request_suite());
	int failed;

	srunner_run_all(runner, CK_NORMAL);
	failed = srunner_ntests_failed(runner);
	srunner_free(runner);
	return failed == 0 ? 0 : 1;
}
