/* http.c - libcurl requests to a broker, answers mapped onto exit codes.
 *
 * One session is one curl easy handle: its connection is kept between
 * requests.  Errors are reported in one line each; libcurl itself never
 * writes to the terminal (no verbose mode, the error buffer is ours).
 */
#include "autoconfig.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "http.h"

/* A held request needs this much time beyond its wait for the answer to
 * travel back. */
#define HTTP_MARGIN_MS 5000
/* Longest token line read from a token file. */
#define TOKEN_MAX 4096

struct http_session {
	CURL *curl;
	struct curl_slist *headers;       /* Authorization, Content-Type */
	const struct client_options *options;
	volatile sig_atomic_t *interrupt; /* abandon transfers when non-zero */
	char error[CURL_ERROR_SIZE];
};

/* Where a transfer's body goes: collected, or handed to a sink. */
struct http_body {
	struct http_session *session;
	struct http_reply *reply;
	http_sink_fn *sink;       /* NULL: collect everything */
	void *sink_context;
	bool sink_ended;          /* the sink asked to stop */
};

static bool curl_ready;

/* Reads the first line of a token file, without its line end. */
static char *read_token(const char *path)
{
	FILE *file = fopen(path, "r");
	if (file == NULL) {
		client_error("cannot read token file %s: %s", path, strerror(errno));
		return NULL;
	}
	char line[TOKEN_MAX];
	bool got = fgets(line, sizeof line, file) != NULL;
	fclose(file);
	if (!got) {
		client_error("token file %s is empty", path);
		return NULL;
	}
	line[strcspn(line, "\r\n")] = '\0';
	if (line[0] == '\0') {
		client_error("token file %s: the first line holds no token", path);
		return NULL;
	}
	return strdup(line);
}

struct http_session *http_session_new(const struct client_options *options)
{
	if (!curl_ready) {
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
			client_error("cannot initialise libcurl");
			return NULL;
		}
		curl_ready = true;
	}
	struct http_session *session = calloc(1, sizeof *session);
	if (session == NULL) {
		client_error("out of memory");
		return NULL;
	}
	session->options = options;
	session->curl = curl_easy_init();
	if (session->curl == NULL) {
		client_error("cannot initialise libcurl");
		free(session);
		return NULL;
	}
	session->headers = curl_slist_append(NULL, "Content-Type: application/json");
	if (options->token_file != NULL) {
		char *token = read_token(options->token_file);
		if (token == NULL) {
			http_session_free(session);
			return NULL;
		}
		size_t size = strlen(token) + sizeof "Authorization: Bearer ";
		char *header = malloc(size);
		if (header != NULL) {
			snprintf(header, size, "Authorization: Bearer %s", token);
			session->headers = curl_slist_append(session->headers, header);
			explicit_bzero(header, size);
			free(header);
		}
		explicit_bzero(token, strlen(token));
		free(token);
	}
	return session;
}

void http_session_free(struct http_session *session)
{
	if (session == NULL)
		return;
	curl_slist_free_all(session->headers);
	curl_easy_cleanup(session->curl);
	free(session);
}

void http_session_interrupt_on(struct http_session *session, volatile sig_atomic_t *flag)
{
	session->interrupt = flag;
}

void http_reply_clear(struct http_reply *reply)
{
	free(reply->body);
	reply->body = NULL;
	reply->length = 0;
	reply->status = 0;
}

const char *http_last_error(const struct http_session *session)
{
	return session->error;
}

char *http_escape(const char *text)
{
	char *escaped = curl_easy_escape(NULL, text, 0);
	if (escaped == NULL)
		return NULL;
	char *copy = strdup(escaped);
	curl_free(escaped);
	return copy;
}

static bool reply_append(struct http_reply *reply, const char *data, size_t length)
{
	char *grown = realloc(reply->body, reply->length + length + 1);
	if (grown == NULL)
		return false;
	memcpy(grown + reply->length, data, length);
	reply->length += length;
	grown[reply->length] = '\0';
	reply->body = grown;
	return true;
}

static size_t on_body(char *data, size_t size, size_t count, void *context)
{
	struct http_body *body = context;
	size_t length = size * count;
	if (body->reply->status == 0)
		curl_easy_getinfo(body->session->curl, CURLINFO_RESPONSE_CODE, &body->reply->status);
	if (body->sink != NULL && body->reply->status == 200) {
		if (!body->sink(data, length, body->sink_context)) {
			body->sink_ended = true;
			return CURL_WRITEFUNC_ERROR;
		}
		return length;
	}
	return reply_append(body->reply, data, length) ? length : CURL_WRITEFUNC_ERROR;
}

static int on_progress(void *context, curl_off_t dltotal, curl_off_t dlnow,
                       curl_off_t ultotal, curl_off_t ulnow)
{
	const struct http_session *session = context;
	return session->interrupt != NULL && *session->interrupt != 0;
}

/* Sets what every request of the session shares. */
static void prepare(struct http_session *session, const char *url, struct http_body *body)
{
	CURL *curl = session->curl;
	curl_easy_reset(curl);
	session->error[0] = '\0';
	curl_easy_setopt(curl, CURLOPT_URL, url);
	curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, session->error);
	curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(curl, CURLOPT_HTTPHEADER, session->headers);
	curl_easy_setopt(curl, CURLOPT_USERAGENT, "gophermq/" PACKAGE_VERSION);
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(curl, CURLOPT_WRITEDATA, body);
	curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(curl, CURLOPT_XFERINFODATA, session);
	curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, session->options->timeout_s);
	/* Only http and https, also after a redirect (none is followed). */
	curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
	if (session->options->cacert != NULL)
		curl_easy_setopt(curl, CURLOPT_CAINFO, session->options->cacert);
}

/* Runs the prepared transfer.  EXIT_OK when an answer came or the user
 * interrupted it or the sink ended it; EXIT_UNREACHABLE otherwise, with
 * session->error saying why. */
static int perform(struct http_session *session, struct http_body *body)
{
	CURLcode code = curl_easy_perform(session->curl);
	if (code == CURLE_OK) {
		curl_easy_getinfo(session->curl, CURLINFO_RESPONSE_CODE, &body->reply->status);
		return EXIT_OK;
	}
	if (body->sink_ended || (session->interrupt != NULL && *session->interrupt != 0)) {
		session->error[0] = '\0';
		return EXIT_OK;
	}
	if (session->error[0] == '\0')
		snprintf(session->error, sizeof session->error, "%s", curl_easy_strerror(code));
	return EXIT_UNREACHABLE;
}

static void print_unreachable(const struct http_session *session, const char *url)
{
	client_error("cannot reach %s: %s", url, session->error);
}

int http_get(struct http_session *session, const char *url, struct http_reply *reply)
{
	struct http_body body = {.session = session, .reply = reply};
	http_reply_clear(reply);
	prepare(session, url, &body);
	curl_easy_setopt(session->curl, CURLOPT_TIMEOUT, session->options->timeout_s);
	int result = perform(session, &body);
	if (result != EXIT_OK)
		print_unreachable(session, url);
	return result;
}

/* The API URL of a path, or NULL. */
static char *api_url(const struct http_session *session, const char *path)
{
	size_t size = strlen(session->options->url) + strlen(path) + 1;
	char *url = malloc(size);
	if (url != NULL)
		snprintf(url, size, "%s%s", session->options->url, path);
	return url;
}

/* The broker's answer as a JSON object, or NULL (json_object_put it). */
static json_object *reply_object(const struct http_reply *reply)
{
	json_object *object = reply->body != NULL ? json_tokener_parse(reply->body) : NULL;
	if (object != NULL && !json_object_is_type(object, json_type_object)) {
		json_object_put(object);
		object = NULL;
	}
	return object;
}

void http_print_refusal(const char *command, const struct http_reply *reply, const char *detail)
{
	json_object *object = reply_object(reply), *field;
	char text[256];
	if (object != NULL && json_object_object_get_ex(object, "message", &field) &&
	    json_object_is_type(field, json_type_string)) {
		snprintf(text, sizeof text, "%s", json_object_get_string(field));
	} else if (reply->body != NULL && reply->length > 0) {
		/* Not the broker's answer (a proxy's page, say): its first line. */
		snprintf(text, sizeof text, "%.*s", (int)strcspn(reply->body, "\r\n"), reply->body);
	} else {
		snprintf(text, sizeof text, "(no message)");
	}
	client_error("%s: %ld %s%s%s%s", command, reply->status, text, detail != NULL ? " (" : "",
	             detail != NULL ? detail : "", detail != NULL ? ")" : "");
	json_object_put(object);
}

long http_refusal_index(const struct http_reply *reply)
{
	json_object *object = reply_object(reply), *field;
	long index = -1;
	if (object != NULL && json_object_object_get_ex(object, "index", &field) &&
	    json_object_is_type(field, json_type_int))
		index = (long)json_object_get_int64(field);
	json_object_put(object);
	return index;
}

int http_post(struct http_session *session, const char *path, json_object *request, int64_t extra_ms,
              struct http_reply *reply)
{
	http_reply_clear(reply);
	char *url = api_url(session, path);
	if (url == NULL) {
		client_error("out of memory");
		return EXIT_USAGE;
	}
	struct http_body body = {.session = session, .reply = reply};
	prepare(session, url, &body);
	const char *text = json_object_to_json_string_ext(request, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
	curl_easy_setopt(session->curl, CURLOPT_POSTFIELDS, text);
	curl_easy_setopt(session->curl, CURLOPT_TIMEOUT_MS,
	                 (long)(session->options->timeout_s * 1000 + (extra_ms > 0 ? extra_ms + HTTP_MARGIN_MS : 0)));
	int result = perform(session, &body);
	if (result != EXIT_OK)
		print_unreachable(session, url);
	free(url);
	return result;
}

int http_api_call(struct http_session *session, const char *command, const char *path,
                  json_object *request, int64_t extra_ms, json_object **answer)
{
	*answer = NULL;
	struct http_reply reply = {0};
	int result = http_post(session, path, request, extra_ms, &reply);
	if (result != EXIT_OK || reply.status == 0) {
		/* unreachable (said), or interrupted: the caller looks at its flag */
	} else if (reply.status < 200 || reply.status > 299) {
		http_print_refusal(command, &reply, NULL);
		result = EXIT_REFUSED;
	} else {
		*answer = reply.body != NULL ? json_tokener_parse(reply.body) : NULL;
		if (*answer == NULL || !json_object_is_type(*answer, json_type_object)) {
			client_error("%s: %s%s answered %ld with something that is not a JSON object", command,
			             session->options->url, path, reply.status);
			json_object_put(*answer);
			*answer = NULL;
			result = EXIT_UNREACHABLE;
		}
	}
	http_reply_clear(&reply);
	return result;
}

int http_stream(struct http_session *session, const char *path, const char *last_event_id,
                http_sink_fn *sink, void *context, struct http_reply *reply)
{
	char *url = api_url(session, path);
	if (url == NULL) {
		client_error("out of memory");
		return EXIT_USAGE;
	}
	http_reply_clear(reply);
	struct http_body body = {.session = session, .reply = reply, .sink = sink, .sink_context = context};
	prepare(session, url, &body);
	struct curl_slist *headers = NULL;
	for (const struct curl_slist *header = session->headers; header != NULL; header = header->next)
		if (strncmp(header->data, "Content-Type:", 13) != 0)
			headers = curl_slist_append(headers, header->data);
	headers = curl_slist_append(headers, "Accept: text/event-stream");
	char id_header[64];
	if (last_event_id != NULL) {
		snprintf(id_header, sizeof id_header, "Last-Event-ID: %s", last_event_id);
		headers = curl_slist_append(headers, id_header);
	}
	curl_easy_setopt(session->curl, CURLOPT_HTTPHEADER, headers);
	/* No overall timeout: the broker sends a keepalive comment every
	 * stream_keepalive_s; a connection silent for much longer is dead. */
	curl_easy_setopt(session->curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(session->curl, CURLOPT_LOW_SPEED_TIME,
	                 session->options->timeout_s > 60 ? session->options->timeout_s : 60L);
	int result = perform(session, &body);
	curl_slist_free_all(headers);
	free(url);
	return result;
}
