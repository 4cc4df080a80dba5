/* fuzz_request.c - libFuzzer harness: arbitrary bytes as a request body
 * through request.c's readers, held against each other.
 *
 * request_read() takes a body with a fast reader when it can and json-c
 * otherwise; the fast reader must never change an answer.  For every
 * input:
 *  - a text request_text_valid() refuses is refused by request_read();
 *  - otherwise request_read() agrees with json-c alone
 *    (request_read_general()): same verdict, same subject, data and id;
 *  - whatever the fast reader takes, json-c takes with the same fields,
 *    and the fast reader's fields lie inside the body.
 * The body is copied into an exactly sized heap buffer, so AddressSanitizer
 * sees any read past its end.  fuzz_api.c covers the same readers through
 * api_handle() against its own json-c oracle.
 */
#include "autoconfig.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_model.h"
#include "request.h"

int LLVMFuzzerTestOneInput(const uint8_t *input, size_t size);

static bool same_field(const char *a, size_t a_length, const char *b, size_t b_length)
{
	return a_length == b_length && (a_length == 0 || memcmp(a, b, a_length) == 0);
}

static bool same_fields(const struct request *a, const struct request *b)
{
	return same_field(a->subject, a->subject_length, b->subject, b->subject_length)
	       && same_field(a->data, a->data_length, b->data, b->data_length)
	       && same_field(a->id, a->id_length, b->id, b->id_length);
}

static bool inside(const char *field, size_t length, const char *body, size_t body_length)
{
	return length == 0 || (field >= body && field + length <= body + body_length);
}

int LLVMFuzzerTestOneInput(const uint8_t *input, size_t size)
{
	char *body = malloc(size > 0 ? size : 1);
	struct request combined, general, flat;
	bool valid, combined_took, general_took, flat_took;

	FUZZ_CHECK(body != NULL, "harness out of memory");
	if (size > 0)
		memcpy(body, input, size);

	valid = request_text_valid(body, size);
	combined_took = request_read(&combined, body, size);
	if (!valid) {
		FUZZ_CHECK(!combined_took, "a body with invalid text was taken");
		free(body);
		return 0;
	}
	general_took = request_read_general(&general, body, size);
	flat_took = request_read_flat(&flat, body, size);

	FUZZ_CHECK(combined_took == general_took, "request_read() says %d, json-c says %d",
	           combined_took, general_took);
	if (combined_took)
		FUZZ_CHECK(same_fields(&combined, &general), "request_read() and json-c read different fields");
	if (flat_took) {
		FUZZ_CHECK(general_took, "the fast reader took a body json-c refuses");
		FUZZ_CHECK(same_fields(&flat, &general), "the fast reader and json-c read different fields");
		FUZZ_CHECK(flat.tree == NULL, "the fast reader built a tree");
		FUZZ_CHECK(inside(flat.subject, flat.subject_length, body, size)
		           && inside(flat.data, flat.data_length, body, size)
		           && inside(flat.id, flat.id_length, body, size),
		           "a field of the fast reader lies outside the body");
		FUZZ_CHECK(combined.tree == NULL, "request_read() left a body the fast reader takes to json-c");
	} else {
		FUZZ_CHECK(flat.tree == NULL && flat.subject_length + flat.data_length + flat.id_length == 0,
		           "the fast reader kept fields of a body it declined");
	}
	if (combined_took)
		request_release(&combined);
	if (general_took)
		request_release(&general);
	if (flat_took)
		request_release(&flat);
	free(body);
	return 0;
}
