/* sse.c - Server-Sent Events parsing, as the HTML standard's "event
 * stream interpretation" says: lines end with CRLF, LF or CR; a blank line
 * dispatches the event; "field: value" lines set data (appended), event
 * and id; lines starting with ":" are comments; other fields are ignored.
 */
#include "autoconfig.h"

#include <stdlib.h>
#include <string.h>

#include "sse.h"

void sse_init(struct sse_parser *parser, sse_event_fn *on_event, void *context)
{
	memset(parser, 0, sizeof *parser);
	parser->on_event = on_event;
	parser->context = context;
}

void sse_free(struct sse_parser *parser)
{
	free(parser->line);
	free(parser->data);
	free(parser->type);
	memset(parser, 0, sizeof *parser);
}

void sse_restart(struct sse_parser *parser)
{
	parser->line_length = 0;
	parser->data_length = 0;
	parser->has_data = false;
	free(parser->type);
	parser->type = NULL;
	parser->skip_lf = false;
	parser->failed = false;
}

/* Appends bytes to a growing buffer, keeping room for a NUL. */
static bool append(char **buffer, size_t *length, size_t *size, const char *bytes, size_t count)
{
	if (*length + count + 1 > *size) {
		size_t wanted = *size ? *size : 256;
		while (wanted < *length + count + 1)
			wanted *= 2;
		char *grown = realloc(*buffer, wanted);
		if (grown == NULL)
			return false;
		*buffer = grown;
		*size = wanted;
	}
	memcpy(*buffer + *length, bytes, count);
	*length += count;
	(*buffer)[*length] = '\0';
	return true;
}

static bool dispatch(struct sse_parser *parser)
{
	bool keep_going = true;
	if (parser->has_data) {
		struct sse_event event = {
			.type = parser->type != NULL ? parser->type : "message",
			.data = parser->data != NULL ? parser->data : "",
			.data_length = parser->data_length,
			.last_id = parser->last_id,
		};
		keep_going = parser->on_event(&event, parser->context);
	}
	parser->data_length = 0;
	parser->has_data = false;
	free(parser->type);
	parser->type = NULL;
	return keep_going;
}

/* Handles one complete line (without its end). */
static bool process_line(struct sse_parser *parser, const char *line, size_t length)
{
	if (length == 0)
		return dispatch(parser);
	if (line[0] == ':')
		return true;
	const char *colon = memchr(line, ':', length);
	size_t name_length = colon != NULL ? (size_t)(colon - line) : length;
	const char *value = colon != NULL ? colon + 1 : line + length;
	size_t value_length = (size_t)(line + length - value);
	if (value_length > 0 && value[0] == ' ') {
		value++;
		value_length--;
	}
	if (name_length == 4 && memcmp(line, "data", 4) == 0) {
		if (parser->has_data && !append(&parser->data, &parser->data_length, &parser->data_size, "\n", 1))
			return parser->failed = true, false;
		if (!append(&parser->data, &parser->data_length, &parser->data_size, value, value_length))
			return parser->failed = true, false;
		parser->has_data = true;
	} else if (name_length == 5 && memcmp(line, "event", 5) == 0) {
		/* Not strndup(): value is not NUL-terminated. */
		free(parser->type);
		parser->type = malloc(value_length + 1);
		if (parser->type == NULL)
			return parser->failed = true, false;
		memcpy(parser->type, value, value_length);
		parser->type[value_length] = '\0';
	} else if (name_length == 2 && memcmp(line, "id", 2) == 0) {
		if (memchr(value, '\0', value_length) == NULL && value_length < sizeof parser->last_id) {
			memcpy(parser->last_id, value, value_length);
			parser->last_id[value_length] = '\0';
		}
	}
	return true;
}

bool sse_feed(struct sse_parser *parser, const char *bytes, size_t length)
{
	if (parser->failed)
		return false;
	size_t at = 0;
	if (parser->skip_lf && length > 0) {
		parser->skip_lf = false;
		if (bytes[0] == '\n')
			at = 1;
	}
	while (at < length) {
		size_t start = at;
		while (at < length && bytes[at] != '\n' && bytes[at] != '\r')
			at++;
		if (at == length) {
			/* An unfinished line: keep it for the next bytes. */
			if (!append(&parser->line, &parser->line_length, &parser->line_size, bytes + start, at - start))
				return parser->failed = true, false;
			break;
		}
		bool ended_by_cr = bytes[at] == '\r';
		const char *line = bytes + start;
		size_t line_length = at - start;
		if (parser->line_length > 0) {
			if (!append(&parser->line, &parser->line_length, &parser->line_size, line, line_length))
				return parser->failed = true, false;
			line = parser->line;
			line_length = parser->line_length;
		}
		at++;
		if (ended_by_cr) {
			if (at < length && bytes[at] == '\n')
				at++;
			else if (at == length)
				parser->skip_lf = true;
		}
		bool keep_going = process_line(parser, line, line_length);
		parser->line_length = 0;
		if (!keep_going)
			return false;
	}
	return true;
}
