/* request.h - reading an API request body into its fields.
 *
 * Every request body of the API is one JSON object whose members
 * "subject", "data" and "id" are strings; a missing member reads as "",
 * a member of any other type makes the body invalid, other members are
 * ignored.  request_read() is the one entry point; the readers it is made
 * of are exposed so that tests can hold them against each other.
 */
#ifndef GOPHERMQ_REQUEST_H
#define GOPHERMQ_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct json_object;

/* The fields of a request.  They point into the body read or into tree,
 * are not NUL-terminated and may hold NUL bytes (from "\u0000"). */
struct request {
	const char *subject;
	size_t subject_length;
	const char *data;
	size_t data_length;
	const char *id;
	size_t id_length;
	struct json_object *tree;   /* json-c's parse, when the general reader took it */
};

/* Reads body (length bytes, need not be NUL-terminated) into request.
 * Returns false for an invalid body; request then holds nothing.  After
 * true the fields are valid until request_release() and as long as body
 * is. */
bool request_read(struct request *request, const char *body, size_t length);

void request_release(struct request *request);

/* The optional fields of the newer requests, read from json-c's tree (the
 * fast reader leaves any body with other members to json-c).  Each says
 * whether the member is absent, present and valid (value set) or present
 * with the wrong type or out of [min, max]. */
enum request_field {
	REQUEST_ABSENT = 0,
	REQUEST_PRESENT,
	REQUEST_INVALID,
};

/* A JSON integer (no fraction, no exponent) within [min, max]. */
enum request_field request_integer(const struct request *request, const char *name,
                                   int64_t min, int64_t max, int64_t *value);
enum request_field request_boolean(const struct request *request, const char *name, bool *value);
/* A string, pointing into the tree: valid until request_release(). */
enum request_field request_string(const struct request *request, const char *name,
                                  const char **value, size_t *length);
/* An array; *count is its length. */
enum request_field request_array(const struct request *request, const char *name, size_t *count);

/* Element index of array name (request_array() said PRESENT) as an integer
 * within [min, max]; false when it is not one. */
bool request_array_integer(const struct request *request, const char *name, size_t index,
                           int64_t min, int64_t max, int64_t *value);

/* One message of a batch publish: an object whose subject and data, when
 * present, are strings (missing ones read as ""). */
struct request_message {
	const char *subject;
	size_t subject_length;
	const char *data;
	size_t data_length;
	enum request_field ttl;      /* its "ttl_ms" member */
	int64_t ttl_ms;              /* when present: a positive integer */
};

/* Element index of array name as a message; false when it is not one (a
 * ttl_ms out of range is a message, with ttl REQUEST_INVALID). */
bool request_array_message(const struct request *request, const char *name, size_t index,
                           struct request_message *message);

/* The parts of request_read(), for tests.
 *
 * request_text_valid(): the body is strict UTF-8 (RFC 3629) without NUL
 * bytes, and no JSON string in it holds a raw control character.
 *
 * request_read_flat(): the fast reader, for a text request_text_valid()
 * accepted.  It takes only the shape nearly every client sends, a flat
 * object whose members are all strings without escapes, and returns false
 * for anything else without judging it.  Whatever it takes, json-c reads
 * the same way: request_read_general() returns true with equal fields.
 *
 * request_read_general(): json-c (strict, nesting depth 8); the judge of
 * every body the fast reader leaves. */
bool request_text_valid(const char *body, size_t length);
bool request_read_flat(struct request *request, const char *body, size_t length);
bool request_read_general(struct request *request, const char *body, size_t length);

#endif
