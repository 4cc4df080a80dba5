/* requests.c - API requests shared by the client's commands. */
#include "autoconfig.h"

#include <stdlib.h>
#include <string.h>

#include "requests.h"

static json_object *subject_and_id(const char *subject, const char *id)
{
	json_object *request = json_object_new_object();
	json_object_object_add(request, "subject", json_object_new_string(subject));
	if (id != NULL)
		json_object_object_add(request, "id", json_object_new_string(id));
	return request;
}

int request_subscribe(struct http_session *session, const char *command, const struct client_options *options,
                      const char *subject, char **id)
{
	*id = NULL;
	json_object *request = subject_and_id(subject, NULL);
	if (options->group != NULL)
		json_object_object_add(request, "group", json_object_new_string(options->group));
	if (options->ack)
		json_object_object_add(request, "ack", json_object_new_boolean(1));
	if (options->ack_wait_ms > 0)
		json_object_object_add(request, "ack_wait_ms", json_object_new_int64(options->ack_wait_ms));
	if (options->max_deliver > 0)
		json_object_object_add(request, "max_deliver", json_object_new_int64(options->max_deliver));
	if (options->dead_letter != NULL)
		json_object_object_add(request, "dead_letter", json_object_new_string(options->dead_letter));
	json_object *answer;
	int result = http_api_call(session, command, "/api/subscribe", request, 0, &answer);
	json_object_put(request);
	if (result != EXIT_OK)
		return result;
	json_object *field;
	if (answer == NULL || !json_object_object_get_ex(answer, "id", &field) ||
	    !json_object_is_type(field, json_type_string)) {
		client_error("%s: the broker's answer to subscribe holds no id", command);
		json_object_put(answer);
		return EXIT_UNREACHABLE;
	}
	*id = strdup(json_object_get_string(field));
	json_object_put(answer);
	if (*id == NULL) {
		client_error("out of memory");
		return EXIT_USAGE;
	}
	return EXIT_OK;
}

int request_unsubscribe(struct http_session *session, const char *command, const char *subject, const char *id)
{
	json_object *request = subject_and_id(subject, id);
	json_object *answer;
	int result = http_api_call(session, command, "/api/unsubscribe", request, 0, &answer);
	json_object_put(request);
	json_object_put(answer);
	return result;
}

int request_fetch(struct http_session *session, const char *command, const char *subject, const char *id,
                  int64_t max, int64_t wait_ms, json_object **answer, json_object **messages)
{
	*messages = NULL;
	json_object *request = subject_and_id(subject, id);
	/* meta: every message with its seq, subject and attempt, also for a
	 * plain subscription. */
	json_object_object_add(request, "meta", json_object_new_boolean(1));
	if (max > 0)
		json_object_object_add(request, "max", json_object_new_int64(max));
	if (wait_ms > 0)
		json_object_object_add(request, "wait_ms", json_object_new_int64(wait_ms));
	int result = http_api_call(session, command, "/api/fetch", request, wait_ms, answer);
	json_object_put(request);
	if (result != EXIT_OK || *answer == NULL)
		return result;
	if (!json_object_object_get_ex(*answer, "messages", messages) ||
	    !json_object_is_type(*messages, json_type_array)) {
		client_error("%s: the broker's answer to fetch holds no messages", command);
		json_object_put(*answer);
		*answer = NULL;
		*messages = NULL;
		return EXIT_UNREACHABLE;
	}
	return EXIT_OK;
}

int request_settle(struct http_session *session, const char *command, const char *path, const char *subject,
                   const char *id, const long long *seqs, size_t count, int64_t delay_ms, long long *settled)
{
	*settled = 0;
	json_object *request = subject_and_id(subject, id);
	json_object *list = json_object_new_array_ext((int)count);
	for (size_t i = 0; i < count; i++)
		json_object_array_add(list, json_object_new_int64(seqs[i]));
	json_object_object_add(request, "seqs", list);
	if (delay_ms >= 0)
		json_object_object_add(request, "delay_ms", json_object_new_int64(delay_ms));
	json_object *answer;
	int result = http_api_call(session, command, path, request, 0, &answer);
	json_object_put(request);
	if (result != EXIT_OK)
		return result;
	json_object *field;
	if (answer != NULL && json_object_object_get_ex(answer, "count", &field) &&
	    json_object_is_type(field, json_type_int))
		*settled = (long long)json_object_get_int64(field);
	json_object_put(answer);
	return EXIT_OK;
}
