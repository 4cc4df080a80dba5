/* requests.h - the API requests more than one command makes: subscribe,
 * unsubscribe, fetch, ack and nack, each one call that prints its own
 * errors and returns a gophermq(1) exit code.
 */
#ifndef GOPHERMQ_CLIENT_REQUESTS_H
#define GOPHERMQ_CLIENT_REQUESTS_H

#include <stddef.h>

#include "client.h"
#include "http.h"

/* Subscribes with the options' group and ack settings; *id is the new
 * subscriber's id (free() it). */
int request_subscribe(struct http_session *session, const char *command, const struct client_options *options,
                      const char *subject, char **id);

int request_unsubscribe(struct http_session *session, const char *command, const char *subject, const char *id);

/* Fetches up to max messages (0: the broker's limit), holding the request
 * up to wait_ms; *messages is the answer's "messages" array, owned by
 * *answer (json_object_put it).  Status 0 in *interrupted: the session's
 * interrupt flag ended the wait. */
int request_fetch(struct http_session *session, const char *command, const char *subject, const char *id,
                  int64_t max, int64_t wait_ms, json_object **answer, json_object **messages);

/* POSTs seqs to /api/ack or /api/nack (path); *settled is the broker's
 * count.  delay_ms < 0: none. */
int request_settle(struct http_session *session, const char *command, const char *path, const char *subject,
                   const char *id, const long long *seqs, size_t count, int64_t delay_ms, long long *settled);

#endif
