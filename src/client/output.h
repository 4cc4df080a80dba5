/* output.h - how fetch and tail print a message: its data alone, one JSON
 * object, or a user's format with {seq}, {subject}, {attempt}, {data}.
 */
#ifndef GOPHERMQ_CLIENT_OUTPUT_H
#define GOPHERMQ_CLIENT_OUTPUT_H

#include <stdbool.h>
#include <stdio.h>

#include <json-c/json.h>

enum output_kind {
	OUTPUT_DATA,   /* the data, then a newline */
	OUTPUT_JSON,   /* {"seq":…,"subject":…,"attempt":…,"data":…}, then a newline */
	OUTPUT_FORMAT, /* the user's template, then a newline */
};

struct output_format {
	enum output_kind kind;
	const char *template; /* OUTPUT_FORMAT */
};

/* A message as the broker describes it in a fetch's "messages" or a
 * stream event's data: {"seq":n,"subject":s,"attempt":k,"data":d}. */
struct output_message {
	long long seq;
	const char *subject;
	size_t subject_length;
	long long attempt;
	const char *data;
	size_t data_length;
};

/* Reads a message object; false when a field is missing or mistyped. */
bool output_message_from_json(json_object *object, struct output_message *message);

/* Writes one message to out as format says. */
void output_print(FILE *out, const struct output_format *format, const struct output_message *message);

#endif
