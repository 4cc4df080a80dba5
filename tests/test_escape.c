/* Unit tests of escape.c: JSON string literals, held byte for byte against
 * json-c's own serialiser (plain, no slash escaping), which wrote every
 * reply body before. */
#include "autoconfig.h"

#include <check.h>
#include <json-c/json.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "escape.h"

/* Checks text against json-c: same literal, and a length that is exactly
 * what escape_json() writes. */
static void check_like_json_c(const char *text, size_t length)
{
	struct json_object *string = json_object_new_string_len(text, (int)length);
	const char *expected;
	size_t expected_length, counted = escape_json_length(text, length);
	char *out = malloc(6 * length + 2), *end;

	ck_assert_ptr_nonnull(string);
	ck_assert_ptr_nonnull(out);
	expected = json_object_to_json_string_length(string,
	                                             JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE,
	                                             &expected_length);
	end = escape_json(out, text, length);
	ck_assert_uint_eq((size_t)(end - out), counted);
	ck_assert_msg(counted == expected_length && memcmp(out, expected, counted) == 0,
	              "escape_json wrote %.*s, json-c writes %s", (int)counted, out, expected);
	free(out);
	json_object_put(string);
}

START_TEST(test_every_byte)
{
	for (int byte = 0; byte < 256; byte++) {
		char text[3] = { 'a', (char)byte, 'b' };
		check_like_json_c(text + 1, 1);
		check_like_json_c(text, 3);
	}
}
END_TEST

START_TEST(test_known_literals)
{
	char out[64], *end;

	end = escape_json(out, "a\"b\\c/d\n\x01\x7f\xc3\xa9", 12);
	ck_assert_uint_eq((size_t)(end - out), escape_json_length("a\"b\\c/d\n\x01\x7f\xc3\xa9", 12));
	*end = '\0';
	ck_assert_str_eq(out, "\"a\\\"b\\\\c/d\\n\\u0001\x7f\xc3\xa9\"");
	end = escape_json(out, "", 0);
	ck_assert_uint_eq((size_t)(end - out), 2);
	ck_assert_int_eq(memcmp(out, "\"\"", 2), 0);
	end = escape_json(out, "x\0y", 3);
	*end = '\0';
	ck_assert_str_eq(out, "\"x\\u0000y\"");
}
END_TEST

START_TEST(test_random_strings)
{
	uint64_t state = 0x2545f4914f6cdd1dULL;
	char text[300];

	for (int round = 0; round < 20000; round++) {
		size_t length = 0;

		state ^= state << 13, state ^= state >> 7, state ^= state << 17;
		length = state % sizeof(text);
		for (size_t i = 0; i < length; i++) {
			state ^= state << 13, state ^= state >> 7, state ^= state << 17;
			/* Mostly plain text, with every kind of byte mixed in. */
			text[i] = (char)(state % 4 == 0 ? (state >> 8) & 0xff : 'a' + (state >> 8) % 26);
		}
		check_like_json_c(text, length);
	}
}
END_TEST

static Suite *escape_suite(void)
{
	Suite *suite = suite_create("escape");
	TCase *tcase = tcase_create("json");

	tcase_add_test(tcase, test_every_byte);
	tcase_add_test(tcase, test_known_literals);
	tcase_add_test(tcase, test_random_strings);
	suite_add_tcase(suite, tcase);
	return suite;
}

int main(void)
{
	SRunner *runner = srunner_create(escape_suite());
	int failed;

	srunner_run_all(runner, CK_NORMAL);
	failed = srunner_ntests_failed(runner);
	srunner_free(runner);
	return failed == 0 ? 0 : 1;
}
