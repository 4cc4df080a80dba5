/* output.c - printing messages for fetch and tail. */
#include "autoconfig.h"

#include <string.h>

#include "output.h"

static bool string_field(json_object *object, const char *name, const char **text, size_t *length)
{
	json_object *field;
	if (!json_object_object_get_ex(object, name, &field) || !json_object_is_type(field, json_type_string))
		return false;
	*text = json_object_get_string(field);
	*length = (size_t)json_object_get_string_len(field);
	return true;
}

static bool integer_field(json_object *object, const char *name, long long *value)
{
	json_object *field;
	if (!json_object_object_get_ex(object, name, &field) || !json_object_is_type(field, json_type_int))
		return false;
	*value = (long long)json_object_get_int64(field);
	return true;
}

bool output_message_from_json(json_object *object, struct output_message *message)
{
	return json_object_is_type(object, json_type_object) &&
	       integer_field(object, "seq", &message->seq) &&
	       string_field(object, "subject", &message->subject, &message->subject_length) &&
	       integer_field(object, "attempt", &message->attempt) &&
	       string_field(object, "data", &message->data, &message->data_length);
}

static void print_json(FILE *out, const struct output_message *message)
{
	json_object *object = json_object_new_object();
	json_object_object_add(object, "seq", json_object_new_int64(message->seq));
	json_object_object_add(object, "subject",
	                       json_object_new_string_len(message->subject, (int)message->subject_length));
	json_object_object_add(object, "attempt", json_object_new_int64(message->attempt));
	json_object_object_add(object, "data", json_object_new_string_len(message->data, (int)message->data_length));
	fputs(json_object_to_json_string_ext(object, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE), out);
	json_object_put(object);
}

/* The template with each known {field} replaced; anything else as is. */
static void print_template(FILE *out, const char *template, const struct output_message *message)
{
	for (const char *at = template; *at != '\0';) {
		if (strncmp(at, "{seq}", 5) == 0) {
			fprintf(out, "%lld", message->seq);
			at += 5;
		} else if (strncmp(at, "{subject}", 9) == 0) {
			fwrite(message->subject, 1, message->subject_length, out);
			at += 9;
		} else if (strncmp(at, "{attempt}", 9) == 0) {
			fprintf(out, "%lld", message->attempt);
			at += 9;
		} else if (strncmp(at, "{data}", 6) == 0) {
			fwrite(message->data, 1, message->data_length, out);
			at += 6;
		} else {
			fputc(*at++, out);
		}
	}
}

void output_print(FILE *out, const struct output_format *format, const struct output_message *message)
{
	switch (format->kind) {
	case OUTPUT_DATA:
		fwrite(message->data, 1, message->data_length, out);
		break;
	case OUTPUT_JSON:
		print_json(out, message);
		break;
	case OUTPUT_FORMAT:
		print_template(out, format->template, message);
		break;
	}
	fputc('\n', out);
}
