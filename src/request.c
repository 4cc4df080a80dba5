/* request.c - an API request body in, its fields out.
 *
 * json-c is the parser of record: it judges every body, valid or not.  Its
 * cost per call is fixed and large next to a small request (it allocates a
 * tokener, switches the thread's numeric locale, builds an object tree and
 * frees it all again: some 10,000 instructions, most of what a publish costs
 * beyond the HTTP stack).  So the shape nearly every client sends,
 * {"subject":"...","data":"..."} with no escapes in the strings, is read by
 * a fast reader that takes the fields straight out of the body.  It never
 * says a body is invalid; anything it does not recognise goes to json-c.
 * tests/test_request.c and tests/fuzz/fuzz_request.c hold the two readers
 * against each other.
 */
#include "autoconfig.h"

#include <stdint.h>
#include <string.h>

#include <json-c/json.h>

#include "request.h"

/* Request bodies are flat objects; anything nested deeper is refused
 * without recursing through it. */
#define REQUEST_JSON_MAX_DEPTH 8

static bool json_whitespace(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static void request_clear(struct request *request)
{
	request->subject = request->data = request->id = "";
	request->subject_length = request->data_length = request->id_length = 0;
	request->tree = NULL;
}

#define BYTES_OF(value) ((uint64_t)(value) * 0x0101010101010101u)

/* Whether every byte of the text is in 0x20..0x7f: printable ASCII and
 * DEL, which is what nearly every body is.  Such a text has no NUL, no
 * control character inside a string or anywhere else, and is UTF-8, so
 * it passes request_text_valid() without being walked byte by byte.
 * Eight bytes at a time: (x - 0x20 in each byte) sets a byte's high bit
 * when that byte is below 0x20 (and may set the next byte's through the
 * borrow, a false alarm that only costs the slow path), and x's own high
 * bits are the bytes from 0x80 up. */
static bool text_is_printable_ascii(const unsigned char *text, size_t length)
{
	uint64_t flags = 0, word;
	size_t i = 0;

	for (; i + 8 <= length; i += 8) {
		memcpy(&word, text + i, 8);
		flags |= (word - BYTES_OF(0x20)) | word;
	}
	if (i < length) {
		word = BYTES_OF(0x20);   /* spaces where the text has ended */
		memcpy(&word, text + i, length - i);
		flags |= (word - BYTES_OF(0x20)) | word;
	}
	return (flags & BYTES_OF(0x80)) == 0;
}

bool request_text_valid(const char *body, size_t length)
{
	const unsigned char *text = (const unsigned char *)body;
	bool in_string = false, escaped = false;
	size_t i = 0;

	if (text_is_printable_ascii(text, length))
		return true;
	while (i < length) {
		unsigned char byte = text[i];
		size_t extra;
		unsigned char low = 0x80, high = 0xbf;

		if (byte == 0 || (in_string && byte < 0x20))
			return false;
		if (byte < 0x80) {
			if (escaped)
				escaped = false;
			else if (byte == '"')
				in_string = !in_string;
			else if (byte == '\\' && in_string)
				escaped = true;
			i++;
			continue;
		}
		escaped = false;
		if (byte >= 0xc2 && byte <= 0xdf) {
			extra = 1;
		} else if (byte >= 0xe0 && byte <= 0xef) {
			extra = 2;
			if (byte == 0xe0)
				low = 0xa0;      /* overlong */
			else if (byte == 0xed)
				high = 0x9f;     /* surrogates */
		} else if (byte >= 0xf0 && byte <= 0xf4) {
			extra = 3;
			if (byte == 0xf0)
				low = 0x90;      /* overlong */
			else if (byte == 0xf4)
				high = 0x8f;     /* above U+10FFFF */
		} else {
			return false;
		}
		if (length - i <= extra)
			return false;
		if (text[i + 1] < low || text[i + 1] > high)
			return false;
		for (size_t k = 2; k <= extra; k++)
			if (text[i + k] < 0x80 || text[i + k] > 0xbf)
				return false;
		i += extra + 1;
	}
	return true;
}

/* ---- the fast reader ------------------------------------------------ */

static const char *skip_whitespace(const char *at, const char *end)
{
	while (at < end && json_whitespace(*at))
		at++;
	return at;
}

/* A string without escapes at *at.  On success its contents are
 * [*text, *text + *length) and *at is past the closing quote.  Raw control
 * characters cannot occur: request_text_valid() refused them. */
static bool flat_string(const char **at, const char *end, const char **text, size_t *length)
{
	const char *open = *at, *close;

	if (open == end || *open != '"')
		return false;
	close = memchr(open + 1, '"', (size_t)(end - open - 1));
	if (close == NULL || memchr(open + 1, '\\', (size_t)(close - open - 1)) != NULL)
		return false;
	*text = open + 1;
	*length = (size_t)(close - open - 1);
	*at = close + 1;
	return true;
}

static bool name_is(const char *name, size_t length, const char *expected, size_t expected_length)
{
	return length == expected_length && memcmp(name, expected, length) == 0;
}

/* Keeps a member the contract names; as with json-c, a later member of the
 * same name replaces an earlier one.  Returns false for any other member:
 * the optional fields of the newer requests are read from json-c's tree. */
static bool flat_member(struct request *request, const char *name, size_t name_length,
                        const char *value, size_t value_length)
{
	if (name_is(name, name_length, "subject", 7)) {
		request->subject = value;
		request->subject_length = value_length;
	} else if (name_is(name, name_length, "data", 4)) {
		request->data = value;
		request->data_length = value_length;
	} else if (name_is(name, name_length, "id", 2)) {
		request->id = value;
		request->id_length = value_length;
	} else {
		return false;
	}
	return true;
}

/* The object closed at close: only whitespace may follow. */
static bool flat_closed(struct request *request, const char *close, const char *end)
{
	if (skip_whitespace(close + 1, end) == end)
		return true;
	request_clear(request);
	return false;
}

bool request_read_flat(struct request *request, const char *body, size_t length)
{
	const char *at = body, *end = body + length;

	request_clear(request);
	at = skip_whitespace(at, end);
	if (at == end || *at != '{')
		return false;
	at = skip_whitespace(at + 1, end);
	if (at < end && *at == '}')
		return flat_closed(request, at, end);
	for (;;) {
		const char *name, *value;
		size_t name_length, value_length;

		if (!flat_string(&at, end, &name, &name_length))
			break;
		at = skip_whitespace(at, end);
		if (at == end || *at != ':')
			break;
		at = skip_whitespace(at + 1, end);
		if (!flat_string(&at, end, &value, &value_length))
			break;
		if (!flat_member(request, name, name_length, value, value_length))
			break;
		at = skip_whitespace(at, end);
		if (at < end && *at == '}')
			return flat_closed(request, at, end);
		if (at == end || *at != ',')
			break;
		at = skip_whitespace(at + 1, end);
	}
	request_clear(request);
	return false;
}

/* ---- the general reader (json-c) ------------------------------------ */

/* Takes the string member name of object into *value and *length.  A missing
 * member reads as "".  Returns false when the member exists but is not a
 * string (null included). */
static bool tree_string(struct json_object *object, const char *name,
                        const char **value, size_t *length)
{
	struct json_object *member;

	if (!json_object_object_get_ex(object, name, &member))
		return true;
	if (!json_object_is_type(member, json_type_string))
		return false;
	*value = json_object_get_string(member);
	*length = (size_t)json_object_get_string_len(member);
	return true;
}

/* Parses body as one JSON value, nothing but whitespace after it.  Returns
 * the value (caller puts it) or NULL. */
static struct json_object *tree_parse(const char *body, size_t length)
{
	struct json_tokener *tokener;
	struct json_object *tree;
	size_t end;

	if (length == 0 || length > (size_t)INT32_MAX)
		return NULL;
	/* A fresh tokener per request: json_tokener_reset() in json-c 0.16
	 * keeps half-parsed \u escape state, which would leak one client's
	 * truncated request into the next request parsed on this thread. */
	tokener = json_tokener_new_ex(REQUEST_JSON_MAX_DEPTH);
	if (tokener == NULL)
		return NULL;
	json_tokener_set_flags(tokener, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
	tree = json_tokener_parse_ex(tokener, body, (int)length);
	if (tree != NULL && json_tokener_get_error(tokener) != json_tokener_success) {
		json_object_put(tree);
		tree = NULL;
	}
	end = tree != NULL ? json_tokener_get_parse_end(tokener) : 0;
	json_tokener_free(tokener);
	if (tree != NULL && skip_whitespace(body + end, body + length) != body + length) {
		json_object_put(tree);
		tree = NULL;
	}
	return tree;
}

bool request_read_general(struct request *request, const char *body, size_t length)
{
	struct json_object *tree = tree_parse(body, length);

	request_clear(request);
	if (tree == NULL)
		return false;
	if (!json_object_is_type(tree, json_type_object)
	    || !tree_string(tree, "subject", &request->subject, &request->subject_length)
	    || !tree_string(tree, "data", &request->data, &request->data_length)
	    || !tree_string(tree, "id", &request->id, &request->id_length)) {
		json_object_put(tree);
		request_clear(request);
		return false;
	}
	request->tree = tree;
	return true;
}

/* ---- both ----------------------------------------------------------- */

bool request_read(struct request *request, const char *body, size_t length)
{
	request_clear(request);
	if (length == 0 || length > (size_t)INT32_MAX || !request_text_valid(body, length))
		return false;
	return request_read_flat(request, body, length)
	       || request_read_general(request, body, length);
}

/* ---- the optional fields ------------------------------------------- */

/* Whether the body has member name; *member is then its value, which is
 * NULL for a JSON null (present, and of no type a field takes). */
static bool request_member(const struct request *request, const char *name,
                           struct json_object **member)
{
	*member = NULL;
	return request->tree != NULL && json_object_object_get_ex(request->tree, name, member);
}

/* An integer of JSON, not a fraction or exponent form: json-c types those
 * as doubles. */
static bool tree_integer(struct json_object *value, int64_t min, int64_t max, int64_t *out)
{
	int64_t number;

	if (!json_object_is_type(value, json_type_int))
		return false;
	number = json_object_get_int64(value);
	/* json-c saturates what int64 cannot hold. */
	if (number < min || number > max)
		return false;
	*out = number;
	return true;
}

enum request_field request_integer(const struct request *request, const char *name,
                                   int64_t min, int64_t max, int64_t *value)
{
	struct json_object *member;

	if (!request_member(request, name, &member))
		return REQUEST_ABSENT;
	return tree_integer(member, min, max, value) ? REQUEST_PRESENT : REQUEST_INVALID;
}

enum request_field request_boolean(const struct request *request, const char *name, bool *value)
{
	struct json_object *member;

	if (!request_member(request, name, &member))
		return REQUEST_ABSENT;
	if (!json_object_is_type(member, json_type_boolean))
		return REQUEST_INVALID;
	*value = json_object_get_boolean(member);
	return REQUEST_PRESENT;
}

enum request_field request_string(const struct request *request, const char *name,
                                  const char **value, size_t *length)
{
	struct json_object *member;

	if (!request_member(request, name, &member))
		return REQUEST_ABSENT;
	if (!json_object_is_type(member, json_type_string))
		return REQUEST_INVALID;
	*value = json_object_get_string(member);
	*length = (size_t)json_object_get_string_len(member);
	return REQUEST_PRESENT;
}

enum request_field request_array(const struct request *request, const char *name, size_t *count)
{
	struct json_object *member;

	if (!request_member(request, name, &member))
		return REQUEST_ABSENT;
	if (!json_object_is_type(member, json_type_array))
		return REQUEST_INVALID;
	*count = json_object_array_length(member);
	return REQUEST_PRESENT;
}

bool request_array_integer(const struct request *request, const char *name, size_t index,
                           int64_t min, int64_t max, int64_t *value)
{
	struct json_object *array, *element;

	element = request_member(request, name, &array) ? json_object_array_get_idx(array, index) : NULL;

	return element != NULL && tree_integer(element, min, max, value);
}

bool request_array_message(const struct request *request, const char *name, size_t index,
                           struct request_message *message)
{
	struct json_object *array, *element;

	element = request_member(request, name, &array) ? json_object_array_get_idx(array, index) : NULL;

	struct json_object *ttl;

	message->subject = message->data = "";
	message->subject_length = message->data_length = 0;
	message->ttl = REQUEST_ABSENT;
	message->ttl_ms = 0;
	if (element == NULL || !json_object_is_type(element, json_type_object)
	    || !tree_string(element, "subject", &message->subject, &message->subject_length)
	    || !tree_string(element, "data", &message->data, &message->data_length))
		return false;
	if (json_object_object_get_ex(element, "ttl_ms", &ttl))
		message->ttl = tree_integer(ttl, 1, INT64_MAX, &message->ttl_ms)
		               ? REQUEST_PRESENT : REQUEST_INVALID;
	return true;
}

void request_release(struct request *request)
{
	json_object_put(request->tree);
	request_clear(request);
}
