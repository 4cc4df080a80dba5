/* fuzz_model.h - what the fuzz harnesses share: a finding macro and a
 * reference model of the broker, written from the contract in broker.h and
 * /work/shared/API.md rather than from broker.c.
 *
 * The model keeps every subscriber with its own queue of message copies,
 * so a harness can predict the status of each broker call and compare
 * every fetched batch byte for byte.  It is deliberately naive (linear
 * scans, a copy per queued message): inputs are small.
 *
 * Header-only: each harness is a single translation unit plus the
 * daemon's own sources, so there is nothing to link.
 */
#ifndef GOPHERMQ_FUZZ_MODEL_H
#define GOPHERMQ_FUZZ_MODEL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"

/* A finding: print what was expected and abort, which libFuzzer reports
 * as a crash and saves the input. */
#define FUZZ_CHECK(condition, ...)                                              \
	do {                                                                    \
		if (!(condition)) {                                             \
			fprintf(stderr, "FUZZ FINDING at %s:%d: %s: ", __FILE__,  \
			        __LINE__, #condition);                          \
			fprintf(stderr, __VA_ARGS__);                           \
			fputc('\n', stderr);                                    \
			abort();                                                \
		}                                                               \
	} while (0)

struct model_message {
	char *data;
	size_t length;
};

struct model_subscriber {
	char id[BROKER_ID_LENGTH + 1];
	char *subject;
	size_t subject_length;
	struct model_message *queue;
	size_t count, capacity;
	uint64_t last_active;        /* model clock, seconds */
	bool gone;                   /* expired */
};

struct model {
	struct model_subscriber *subscribers;
	size_t count, capacity;      /* including expired ones (gone) */
	struct broker_limits limits;
	struct broker_stats stats;   /* what broker_get_stats must say */
};

static inline void *model_alloc(void *pointer, size_t size)
{
	void *grown = realloc(pointer, size ? size : 1);

	FUZZ_CHECK(grown != NULL, "harness out of memory");
	return grown;
}

/* The subject rule of the contract, written independently of broker.c:
 * non-empty, at most max_length bytes (0 = any), no space, tab, CR, LF or
 * NUL, and no empty dot-separated token. */
static inline bool model_subject_valid(const char *subject, size_t length, size_t max_length)
{
	size_t token = 0;

	if (length == 0 || (max_length != 0 && length > max_length))
		return false;
	for (size_t i = 0; i < length; i++) {
		char c = subject[i];

		if (c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\0')
			return false;
		if (c == '.') {
			if (token == 0)
				return false;
			token = 0;
		} else {
			token++;
		}
	}
	return token != 0;
}

static inline void model_init(struct model *model, const struct broker_limits *limits)
{
	memset(model, 0, sizeof(*model));
	model->limits = *limits;
}

static inline void model_queue_clear(struct model_subscriber *subscriber)
{
	for (size_t i = 0; i < subscriber->count; i++)
		free(subscriber->queue[i].data);
	free(subscriber->queue);
	subscriber->queue = NULL;
	subscriber->count = subscriber->capacity = 0;
}

static inline void model_free(struct model *model)
{
	for (size_t i = 0; i < model->count; i++) {
		model_queue_clear(&model->subscribers[i]);
		free(model->subscribers[i].subject);
	}
	free(model->subscribers);
	memset(model, 0, sizeof(*model));
}

static inline bool model_same_subject(const struct model_subscriber *subscriber,
                                      const char *subject, size_t length)
{
	return !subscriber->gone && subscriber->subject_length == length &&
	       memcmp(subscriber->subject, subject, length) == 0;
}

/* Records a subscriber the broker created with id. */
static inline struct model_subscriber *model_subscribe(struct model *model, const char *subject,
                                                       size_t length, const char *id, uint64_t now)
{
	struct model_subscriber *subscriber;
	bool new_subject = true;

	for (size_t i = 0; i < model->count; i++) {
		if (model_same_subject(&model->subscribers[i], subject, length))
			new_subject = false;
		FUZZ_CHECK(model->subscribers[i].gone || memcmp(model->subscribers[i].id, id, BROKER_ID_LENGTH) != 0,
		           "subscribe handed out id %.36s twice", id);
	}
	if (model->count == model->capacity) {
		model->capacity = model->capacity ? model->capacity * 2 : 8;
		model->subscribers = model_alloc(model->subscribers, model->capacity * sizeof(*subscriber));
	}
	subscriber = &model->subscribers[model->count++];
	memset(subscriber, 0, sizeof(*subscriber));
	memcpy(subscriber->id, id, BROKER_ID_LENGTH);
	subscriber->subject = model_alloc(NULL, length);
	memcpy(subscriber->subject, subject, length);
	subscriber->subject_length = length;
	subscriber->last_active = now;
	model->stats.subscribers++;
	if (new_subject)
		model->stats.subjects++;
	return subscriber;
}

/* The status broker_publish() must return for length bytes to subject. */
static inline enum broker_status model_publish_status(const struct model *model, const char *subject,
                                                      size_t subject_length, size_t length)
{
	uint64_t copies = 0;

	if (!model_subject_valid(subject, subject_length, model->limits.max_subject_length))
		return BROKER_INVALID_SUBJECT;
	for (size_t i = 0; i < model->count; i++)
		copies += model_same_subject(&model->subscribers[i], subject, subject_length);
	if (copies == 0)
		return BROKER_NO_SUBSCRIBER;
	if (model->limits.max_pending != 0 && model->stats.pending + copies > model->limits.max_pending)
		return BROKER_OVERFLOW;
	if (model->limits.max_pending_bytes != 0 &&
	    model->stats.pending_bytes + copies * length > model->limits.max_pending_bytes)
		return BROKER_OVERFLOW;
	return BROKER_OK;
}

/* Applies the outcome status of a publish the broker reported. */
static inline void model_publish_apply(struct model *model, const char *subject, size_t subject_length,
                                       const char *data, size_t length, enum broker_status status)
{
	if (status == BROKER_OVERFLOW)
		model->stats.overflows++;
	if (status != BROKER_OK)
		return;
	model->stats.published++;
	for (size_t i = 0; i < model->count; i++) {
		struct model_subscriber *subscriber = &model->subscribers[i];

		if (!model_same_subject(subscriber, subject, subject_length))
			continue;
		if (subscriber->count == subscriber->capacity) {
			subscriber->capacity = subscriber->capacity ? subscriber->capacity * 2 : 4;
			subscriber->queue = model_alloc(subscriber->queue,
			                                subscriber->capacity * sizeof(*subscriber->queue));
		}
		subscriber->queue[subscriber->count].data = model_alloc(NULL, length);
		if (length > 0)
			memcpy(subscriber->queue[subscriber->count].data, data, length);
		subscriber->queue[subscriber->count].length = length;
		subscriber->count++;
		model->stats.pending++;
		model->stats.pending_bytes += length;
	}
}

/* The subscriber that a fetch of (subject, id) names, or NULL. */
static inline struct model_subscriber *model_find(struct model *model, const char *subject,
                                                  size_t subject_length, const char *id, size_t id_length)
{
	if (id_length != BROKER_ID_LENGTH)
		return NULL;
	for (size_t i = 0; i < model->count; i++) {
		struct model_subscriber *subscriber = &model->subscribers[i];

		if (model_same_subject(subscriber, subject, subject_length) &&
		    memcmp(subscriber->id, id, BROKER_ID_LENGTH) == 0)
			return subscriber;
	}
	return NULL;
}

static inline enum broker_status model_fetch_status(struct model *model, const char *subject,
                                                    size_t subject_length, const char *id, size_t id_length)
{
	/* The length limit does not apply to a subscriber's own subject. */
	if (!model_subject_valid(subject, subject_length, 0))
		return BROKER_INVALID_SUBJECT;
	if (model_find(model, subject, subject_length, id, id_length))
		return BROKER_OK;
	return model_subject_valid(subject, subject_length, model->limits.max_subject_length)
	       ? BROKER_BAD_ID : BROKER_INVALID_SUBJECT;
}

/* Checks that message number index of a fetched batch is the subscriber's
 * next expected copy. */
static inline void model_check_message(const struct model_subscriber *subscriber, size_t index,
                                       const char *data, size_t length)
{
	FUZZ_CHECK(index < subscriber->count, "fetch of %.36s returned message %zu of only %zu",
	           subscriber->id, index + 1, subscriber->count);
	FUZZ_CHECK(subscriber->queue[index].length == length &&
	           (length == 0 || memcmp(subscriber->queue[index].data, data, length) == 0),
	           "fetch of %.36s: message %zu differs (%zu bytes, expected %zu)",
	           subscriber->id, index, length, subscriber->queue[index].length);
}

/* Empties the subscriber's model queue after a fetch that returned count
 * messages, all checked with model_check_message. */
static inline void model_fetched(struct model *model, struct model_subscriber *subscriber, size_t count,
                                 uint64_t now)
{
	FUZZ_CHECK(count == subscriber->count, "fetch of %.36s returned %zu messages, expected %zu",
	           subscriber->id, count, subscriber->count);
	for (size_t i = 0; i < subscriber->count; i++)
		model->stats.pending_bytes -= subscriber->queue[i].length;
	model->stats.pending -= subscriber->count;
	model->stats.delivered += subscriber->count;
	model_queue_clear(subscriber);
	subscriber->last_active = now;
}

/* Checks a fetched batch against the model and applies it. */
static inline void model_check_batch(struct model *model, struct model_subscriber *subscriber,
                                     const struct broker_batch *batch, uint64_t now)
{
	for (size_t i = 0; i < batch->count; i++)
		model_check_message(subscriber, i, batch->messages[i]->data, batch->messages[i]->length);
	for (size_t i = 0; i < batch->count; i++)
		FUZZ_CHECK(batch->messages[i]->data[batch->messages[i]->length] == '\0',
		           "message data is not NUL-terminated");
	model_fetched(model, subscriber, batch->count, now);
}

/* Expires, in the model, subscribers idle for more than ttl seconds at now.
 * Returns how many. */
static inline size_t model_expire(struct model *model, uint64_t now, uint64_t ttl)
{
	size_t removed = 0;

	if (ttl == 0)
		return 0;
	for (size_t i = 0; i < model->count; i++) {
		struct model_subscriber *subscriber = &model->subscribers[i];
		bool last_of_subject = true;

		if (subscriber->gone || now - subscriber->last_active <= ttl)
			continue;
		subscriber->gone = true;
		for (size_t j = 0; j < model->count; j++) {
			if (model_same_subject(&model->subscribers[j], subscriber->subject, subscriber->subject_length))
				last_of_subject = false;
		}
		if (last_of_subject)
			model->stats.subjects--;
		model->stats.subscribers--;
		model->stats.expired_subscribers++;
		model->stats.expired_messages += subscriber->count;
		model->stats.pending -= subscriber->count;
		for (size_t k = 0; k < subscriber->count; k++)
			model->stats.pending_bytes -= subscriber->queue[k].length;
		model_queue_clear(subscriber);
		removed++;
	}
	return removed;
}

/* Compares the broker's counters with the model's. */
static inline void model_check_stats(const struct model *model, struct broker *broker)
{
	struct broker_stats got;
	const struct broker_stats *want = &model->stats;

	broker_get_stats(broker, &got);
#define MODEL_STAT(field)                                                              \
	FUZZ_CHECK(got.field == want->field, "stats." #field " is %llu, expected %llu", \
	           (unsigned long long)got.field, (unsigned long long)want->field)
	MODEL_STAT(pending);
	MODEL_STAT(pending_bytes);
	MODEL_STAT(subscribers);
	MODEL_STAT(subjects);
	MODEL_STAT(published);
	MODEL_STAT(delivered);
	MODEL_STAT(overflows);
	MODEL_STAT(expired_subscribers);
	MODEL_STAT(expired_messages);
#undef MODEL_STAT
}

/* Fetches every live subscriber directly from the broker, checking each
 * batch, and then that nothing is pending any more. */
static inline void model_drain(struct model *model, struct broker *broker, uint64_t now)
{
	for (size_t i = 0; i < model->count; i++) {
		struct model_subscriber *subscriber = &model->subscribers[i];
		struct broker_batch batch;
		enum broker_status status;

		if (subscriber->gone)
			continue;
		status = broker_fetch(broker, subscriber->subject, subscriber->subject_length,
		                      subscriber->id, BROKER_ID_LENGTH, NULL, &batch);
		FUZZ_CHECK(status == BROKER_OK, "draining %.36s: %s", subscriber->id, broker_status_name(status));
		model_check_batch(model, subscriber, &batch, now);
		broker_batch_release(&batch);
	}
	model_check_stats(model, broker);
	FUZZ_CHECK(model->stats.pending == 0 && model->stats.pending_bytes == 0, "model not drained");
}

#endif
