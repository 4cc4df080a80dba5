/* fuzz_model.h - what the fuzz harnesses share: a finding macro and a
 * reference model of the broker, written from the contract in broker.h and
 * /work/shared/API.md ("Beyond the original") rather than from broker.c.
 *
 * The model keeps every consumer queue (a plain subscriber's own, or a
 * group's) as a list of message copies in seq order, each available, in
 * flight (with its consumer, attempt and ack deadline) or delayed by a
 * nack.  From it a harness predicts the status of every broker call, the
 * exact batch of every fetch (seq, data, attempt), the count of every
 * ack/nack/extend, what a clock step redelivers, drops or dead-letters,
 * and every counter of broker_get_stats().  It is deliberately naive
 * (linear scans, a copy per queued message): inputs are small.
 *
 * Held fetches (broker_fetch_wait) are modelled too: parked in order,
 * served by whatever makes a message available on their queue, answered
 * empty when their wait runs out or at broker_wake_all(), bad id when
 * their subscriber goes.
 *
 * What the contract leaves open and the model therefore does not predict:
 * the order in which copies failing at one instant are handled (deadlines
 * on the same millisecond; a group member's in-flight copies when it
 * leaves).  It shows only when two different dead letters are made at
 * once (which seq each gets), when a dead letter may meet a limit (which
 * copies went before it), or when two copies become available at once to
 * a held fetch (which one it takes).  The model then sets `uncertain`, and
 * the harness stops comparing for the rest of that input (it still runs
 * it, for the sanitizers).  That happens in a few percent of inputs.
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

#define MODEL_NONE SIZE_MAX

/* One accepted message: every copy of it shares this record. */
struct model_message {
	uint64_t seq;
	char *data;
	size_t length;
};

enum model_state {
	MODEL_AVAILABLE,             /* a fetch may take it */
	MODEL_IN_FLIGHT,             /* handed out, waiting for an ack */
	MODEL_DELAYED,               /* nacked with a delay */
};

struct model_copy {
	size_t message;              /* index in model->messages */
	enum model_state state;
	uint32_t attempt;            /* deliveries so far (ack queues) */
	size_t consumer;             /* in flight: the subscriber's index */
	uint64_t deadline;           /* in flight: ack deadline; delayed: due (ms) */
};

/* A plain subscriber's own queue, or a group's. */
struct model_queue {
	char *subject;
	size_t subject_length;
	char *group;                 /* group_length 0: one subscriber's */
	size_t group_length;
	bool ack;
	uint64_t ack_wait_ms;
	uint32_t max_deliver;
	char *dead_letter;           /* dead_letter_length 0: none */
	size_t dead_letter_length;
	struct model_copy *copies;   /* in seq order */
	size_t count, capacity;
	uint64_t bytes;              /* payload bytes of the copies */
	size_t members;              /* subscribers reading it; 0: gone */
};

struct model_subscriber {
	char id[BROKER_ID_LENGTH + 1];
	size_t queue;
	uint64_t last_active;        /* broker clock, seconds */
	uint64_t activity;           /* order of last subscribe or fetch */
	bool gone;                   /* unsubscribed or expired */
};

/* What one fetch handed out (or peeked at), in order. */
struct model_take {
	size_t *messages;            /* indices in model->messages */
	uint32_t *attempts;
	size_t count;
	size_t subscriber;
	bool ack;                    /* taken from an ack queue */
	bool peek;
};

/* A fetch held by the broker (broker_fetch_wait), in a harness's slot. */
#define MODEL_WAITERS 3
struct model_waiter {
	bool parked;
	size_t subscriber;
	struct broker_fetch_options options;
	uint64_t deadline;           /* ms */
	uint64_t order;              /* served before waiters of higher order */
	/* Its answer, once it is no longer parked: */
	bool completed;
	enum broker_status status;   /* BROKER_OK or BROKER_BAD_ID */
	struct model_take take;      /* empty when the wait ran out */
};

struct model {
	struct model_message *messages;
	size_t message_count, message_capacity;
	struct model_queue *queues;
	size_t queue_count, queue_capacity;
	struct model_subscriber *subscribers;
	size_t count, capacity;      /* subscribers, including gone ones */
	struct broker_limits limits;
	/* The counters broker_get_stats() must report; pending, pending_bytes,
	 * subscribers, subjects, groups and in_flight are computed from the
	 * queues instead. */
	struct broker_stats stats;
	bool uncertain;              /* see the header comment */
	/* Held fetches; the broker's clock (kept in step by the harness, for
	 * what a held fetch takes when something else serves it); whether
	 * broker_wake_all() was called. */
	struct model_waiter waiters[MODEL_WAITERS];
	uint64_t waiter_order;
	uint64_t activity;           /* last subscriber activity stamp */
	uint64_t now_ms;
	bool closing;
};

static inline void model_serve(struct model *model, size_t queue_index);

static inline void *model_alloc(void *pointer, size_t size)
{
	void *grown = realloc(pointer, size ? size : 1);

	FUZZ_CHECK(grown != NULL, "harness out of memory");
	return grown;
}

static inline char *model_copy_bytes(const char *bytes, size_t length)
{
	char *copy = model_alloc(NULL, length + 1);

	if (length > 0)
		memcpy(copy, bytes, length);
	copy[length] = '\0';
	return copy;
}

static inline uint64_t model_add_saturated(uint64_t a, uint64_t b)
{
	return a > UINT64_MAX - b ? UINT64_MAX : a + b;
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

/* The length of the token of subject that starts at start. */
static inline size_t model_token_length(const char *subject, size_t length, size_t start)
{
	size_t end = start;

	while (end < length && subject[end] != '.')
		end++;
	return end - start;
}

/* A subject a message can be published to: no "*" or ">" token. */
static inline bool model_subject_literal(const char *subject, size_t length)
{
	for (size_t start = 0; start < length;) {
		size_t token = model_token_length(subject, length, start);

		if (token == 1 && (subject[start] == '*' || subject[start] == '>'))
			return false;
		start += token + 1;
	}
	return true;
}

/* Whether a subscription to pattern gets a publish to the literal
 * subject: token by token, "*" any one token, ">" as the last token one
 * or more (elsewhere an ordinary token, which no literal subject has). */
static inline bool model_pattern_matches(const char *pattern, size_t pattern_length,
                                         const char *subject, size_t length)
{
	size_t p = 0, s = 0;

	for (;;) {
		size_t pt, st;

		if (p >= pattern_length || s >= length)
			return p >= pattern_length && s >= length;
		pt = model_token_length(pattern, pattern_length, p);
		st = model_token_length(subject, length, s);
		if (pt == 1 && pattern[p] == '>' && p + pt == pattern_length)
			return true;
		if (!(pt == 1 && pattern[p] == '*') &&
		    (pt != st || memcmp(pattern + p, subject + s, pt) != 0))
			return false;
		p += pt + 1;
		s += st + 1;
	}
}

/* A group name: 1-64 letters, digits, '-' or '_'. */
static inline bool model_group_valid(const char *name, size_t length)
{
	if (length == 0 || length > BROKER_GROUP_MAX_LENGTH)
		return false;
	for (size_t i = 0; i < length; i++) {
		char c = name[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_'))
			return false;
	}
	return true;
}

static inline bool model_bytes_equal(const char *a, size_t a_length, const char *b, size_t b_length)
{
	return a_length == b_length && (a_length == 0 || memcmp(a, b, a_length) == 0);
}

static inline void model_init(struct model *model, const struct broker_limits *limits)
{
	memset(model, 0, sizeof(*model));
	model->limits = *limits;
}

static inline void model_free(struct model *model)
{
	for (size_t i = 0; i < model->message_count; i++)
		free(model->messages[i].data);
	for (size_t i = 0; i < model->queue_count; i++) {
		free(model->queues[i].subject);
		free(model->queues[i].group);
		free(model->queues[i].dead_letter);
		free(model->queues[i].copies);
	}
	for (size_t i = 0; i < MODEL_WAITERS; i++) {
		free(model->waiters[i].take.messages);
		free(model->waiters[i].take.attempts);
	}
	free(model->messages);
	free(model->queues);
	free(model->subscribers);
	memset(model, 0, sizeof(*model));
}

static inline void model_take_free(struct model_take *take)
{
	free(take->messages);
	free(take->attempts);
	memset(take, 0, sizeof(*take));
}

/* A held fetch answered with nothing: its wait ran out, broker_wake_all(),
 * or (BROKER_BAD_ID) its subscriber went away. */
static inline void model_waiter_answer(struct model *model, struct model_waiter *waiter, enum broker_status status)
{
	waiter->parked = false;
	waiter->completed = true;
	waiter->status = status;
	memset(&waiter->take, 0, sizeof(waiter->take));
	waiter->take.subscriber = waiter->subscriber;
	waiter->take.ack = model->queues[model->subscribers[waiter->subscriber].queue].ack;
	waiter->take.peek = waiter->options.peek;
}

static inline struct model_queue *model_queue_of(struct model *model, size_t subscriber)
{
	return &model->queues[model->subscribers[subscriber].queue];
}

static inline const struct model_message *model_message_of(const struct model *model,
                                                           const struct model_copy *copy)
{
	return &model->messages[copy->message];
}

static inline bool model_queue_of_subject(const struct model_queue *queue, const char *subject, size_t length)
{
	return queue->members > 0 && model_bytes_equal(queue->subject, queue->subject_length, subject, length);
}

/* Whether a publish to subject fills queue. */
static inline bool model_queue_receives(const struct model_queue *queue, const char *subject, size_t length)
{
	return queue->members > 0 && model_subject_literal(subject, length) &&
	       model_pattern_matches(queue->subject, queue->subject_length, subject, length);
}

/* How many queues (copies) a publish to subject fills. */
static inline uint64_t model_copies(const struct model *model, const char *subject, size_t length)
{
	uint64_t copies = 0;

	for (size_t i = 0; i < model->queue_count; i++)
		copies += model_queue_receives(&model->queues[i], subject, length);
	return copies;
}

/* References to message the broker holds: one per copy (in a queue, in
 * flight or delayed), one per message in an answered held fetch's batch
 * not yet released. */
static inline uint64_t model_references(const struct model *model, size_t message)
{
	uint64_t references = 0;

	for (size_t i = 0; i < model->queue_count; i++)
		for (size_t k = 0; k < model->queues[i].count; k++)
			references += model->queues[i].copies[k].message == message;
	for (size_t i = 0; i < MODEL_WAITERS; i++)
		for (size_t k = 0; model->waiters[i].completed && k < model->waiters[i].take.count; k++)
			references += model->waiters[i].take.messages[k] == message;
	return references;
}

/* --- computed counters ------------------------------------------------ */

static inline uint64_t model_pending(const struct model *model, uint64_t *bytes, uint64_t *in_flight)
{
	uint64_t copies = 0;

	*bytes = 0;
	if (in_flight)
		*in_flight = 0;
	for (size_t i = 0; i < model->queue_count; i++) {
		const struct model_queue *queue = &model->queues[i];

		copies += queue->count;
		*bytes += queue->bytes;
		for (size_t k = 0; in_flight && queue->ack && k < queue->count; k++)
			*in_flight += queue->copies[k].state == MODEL_IN_FLIGHT;
	}
	return copies;
}

static inline void model_stats(const struct model *model, struct broker_stats *stats)
{
	*stats = model->stats;
	stats->pending = model_pending(model, &stats->pending_bytes, &stats->in_flight);
	for (size_t i = 0; i < MODEL_WAITERS; i++)
		stats->parked += model->waiters[i].parked;
	stats->subscribers = stats->subjects = stats->groups = 0;
	for (size_t i = 0; i < model->count; i++)
		stats->subscribers += !model->subscribers[i].gone;
	for (size_t i = 0; i < model->queue_count; i++) {
		const struct model_queue *queue = &model->queues[i];
		bool first = true;

		if (queue->members == 0)
			continue;
		stats->groups += queue->group_length > 0;
		for (size_t k = 0; k < i; k++)
			if (model_queue_of_subject(&model->queues[k], queue->subject, queue->subject_length))
				first = false;
		stats->subjects += first;
	}
}

/* Compares the broker's counters with the model's. */
static inline void model_check_stats(const struct model *model, struct broker *broker)
{
	struct broker_stats got, want;

	if (model->uncertain)
		return;
	broker_get_stats(broker, &got);
	model_stats(model, &want);
#define MODEL_STAT(field)                                                              \
	FUZZ_CHECK(got.field == want.field, "stats." #field " is %llu, expected %llu", \
	           (unsigned long long)got.field, (unsigned long long)want.field)
	MODEL_STAT(pending);
	MODEL_STAT(pending_bytes);
	MODEL_STAT(subscribers);
	MODEL_STAT(subjects);
	MODEL_STAT(groups);
	MODEL_STAT(published);
	MODEL_STAT(delivered);
	MODEL_STAT(overflows);
	MODEL_STAT(expired_subscribers);
	MODEL_STAT(expired_messages);
	MODEL_STAT(in_flight);
	MODEL_STAT(acked);
	MODEL_STAT(nacked);
	MODEL_STAT(redelivered);
	MODEL_STAT(dead_lettered);
	MODEL_STAT(max_deliver_dropped);
	MODEL_STAT(parked);
	MODEL_STAT(last_seq);
#undef MODEL_STAT
}

/* --- subscribers -------------------------------------------------------- */

/* The ack deadline a subscription gets when it names none. */
static inline uint64_t model_default_ack_wait(const struct model *model)
{
	return model->limits.ack_wait_ms ? model->limits.ack_wait_ms : 1;
}

/* The live group queue of subject and name, or MODEL_NONE. */
static inline size_t model_group_find(const struct model *model, const char *subject, size_t length,
                                      const char *group, size_t group_length)
{
	for (size_t i = 0; i < model->queue_count; i++) {
		const struct model_queue *queue = &model->queues[i];

		if (queue->group_length > 0 && model_queue_of_subject(queue, subject, length) &&
		    model_bytes_equal(queue->group, queue->group_length, group, group_length))
			return i;
	}
	return MODEL_NONE;
}

static inline size_t model_option_group_length(const struct broker_subscription *options)
{
	return options && options->group ? options->group_length : 0;
}

/* What broker_subscribe() must return.  The options' ranges are the
 * caller's to check (broker.h); ack options mean nothing without ack. */
static inline enum broker_status model_subscribe_status(const struct model *model, const char *subject,
                                                        size_t length,
                                                        const struct broker_subscription *options)
{
	size_t group_length = model_option_group_length(options);
	size_t group;
	const struct model_queue *queue;
	bool ack = options && options->ack;
	size_t dead_letter_length;

	if (!model_subject_valid(subject, length, model->limits.max_subject_length))
		return BROKER_INVALID_SUBJECT;
	if (group_length == 0)
		return BROKER_OK;
	group = model_group_find(model, subject, length, options->group, group_length);
	if (group == MODEL_NONE)
		return BROKER_OK;
	queue = &model->queues[group];
	if (queue->ack != ack)
		return BROKER_GROUP_MISMATCH;
	if (!ack)
		return BROKER_OK;
	dead_letter_length = options->dead_letter ? options->dead_letter_length : 0;
	/* A member that names no ack_wait_ms takes the group's. */
	if ((options->ack_wait_ms != 0 && queue->ack_wait_ms != options->ack_wait_ms) ||
	    queue->max_deliver != options->max_deliver ||
	    !model_bytes_equal(queue->dead_letter, queue->dead_letter_length,
	                       options->dead_letter, dead_letter_length))
		return BROKER_GROUP_MISMATCH;
	return BROKER_OK;
}

/* Records a subscriber the broker created with id (model_subscribe_status
 * said BROKER_OK).  Returns its index. */
static inline size_t model_subscribe(struct model *model, const char *subject, size_t length,
                                     const struct broker_subscription *options, const char *id,
                                     uint64_t now_seconds)
{
	struct model_subscriber *subscriber;
	size_t group_length = model_option_group_length(options);
	size_t queue_index = group_length > 0
	                     ? model_group_find(model, subject, length, options->group, group_length)
	                     : MODEL_NONE;

	for (size_t i = 0; i < model->count; i++)
		FUZZ_CHECK(model->subscribers[i].gone || memcmp(model->subscribers[i].id, id, BROKER_ID_LENGTH) != 0,
		           "subscribe handed out id %.36s twice", id);
	if (queue_index == MODEL_NONE) {
		struct model_queue *queue;

		if (model->queue_count == model->queue_capacity) {
			model->queue_capacity = model->queue_capacity ? model->queue_capacity * 2 : 8;
			model->queues = model_alloc(model->queues, model->queue_capacity * sizeof(*model->queues));
		}
		queue_index = model->queue_count++;
		queue = &model->queues[queue_index];
		memset(queue, 0, sizeof(*queue));
		queue->subject = model_copy_bytes(subject, length);
		queue->subject_length = length;
		if (group_length > 0) {
			queue->group = model_copy_bytes(options->group, group_length);
			queue->group_length = group_length;
		}
		if (options && options->ack) {
			queue->ack = true;
			queue->ack_wait_ms = options->ack_wait_ms ? options->ack_wait_ms : model_default_ack_wait(model);
			queue->max_deliver = options->max_deliver;
			if (options->dead_letter && options->dead_letter_length > 0) {
				queue->dead_letter = model_copy_bytes(options->dead_letter, options->dead_letter_length);
				queue->dead_letter_length = options->dead_letter_length;
			}
		}
	}
	model->queues[queue_index].members++;
	if (model->count == model->capacity) {
		model->capacity = model->capacity ? model->capacity * 2 : 8;
		model->subscribers = model_alloc(model->subscribers, model->capacity * sizeof(*subscriber));
	}
	subscriber = &model->subscribers[model->count];
	memset(subscriber, 0, sizeof(*subscriber));
	memcpy(subscriber->id, id, BROKER_ID_LENGTH);
	subscriber->queue = queue_index;
	subscriber->last_active = now_seconds;
	subscriber->activity = ++model->activity;
	return model->count++;
}

/* The live subscriber that (subject, id) names, or MODEL_NONE. */
static inline size_t model_find(const struct model *model, const char *subject, size_t subject_length,
                                const char *id, size_t id_length)
{
	if (id_length != BROKER_ID_LENGTH)
		return MODEL_NONE;
	for (size_t i = 0; i < model->count; i++) {
		const struct model_subscriber *subscriber = &model->subscribers[i];
		const struct model_queue *queue = &model->queues[subscriber->queue];

		if (!subscriber->gone && memcmp(subscriber->id, id, BROKER_ID_LENGTH) == 0 &&
		    model_bytes_equal(queue->subject, queue->subject_length, subject, subject_length))
			return i;
	}
	return MODEL_NONE;
}

/* The status of a request that names a subscriber (fetch, ack, nack,
 * extend, unsubscribe).  The length limit does not apply to a
 * subscriber's own subject. */
static inline enum broker_status model_lookup_status(const struct model *model, const char *subject,
                                                     size_t subject_length, const char *id, size_t id_length)
{
	if (!model_subject_valid(subject, subject_length, 0))
		return BROKER_INVALID_SUBJECT;
	if (model_find(model, subject, subject_length, id, id_length) != MODEL_NONE)
		return BROKER_OK;
	return model_subject_valid(subject, subject_length, model->limits.max_subject_length)
	       ? BROKER_BAD_ID : BROKER_INVALID_SUBJECT;
}

static inline void model_touch(struct model *model, size_t subscriber, uint64_t now_ms)
{
	model->subscribers[subscriber].last_active = now_ms / 1000u;
	model->subscribers[subscriber].activity = ++model->activity;
}

static inline void model_queue_clear(struct model_queue *queue)
{
	free(queue->copies);
	queue->copies = NULL;
	queue->count = queue->capacity = 0;
	queue->bytes = 0;
}

/* --- publish ------------------------------------------------------------ */

/* Whether copies more copies, bytes more bytes fit the limits. */
static inline bool model_fits(const struct model *model, uint64_t copies, uint64_t bytes)
{
	uint64_t pending_bytes, pending = model_pending(model, &pending_bytes, NULL);
	const struct broker_limits *limits = &model->limits;

	if (limits->max_pending != 0 && (pending > limits->max_pending || copies > limits->max_pending - pending))
		return false;
	if (limits->max_pending_bytes != 0 &&
	    (pending_bytes > limits->max_pending_bytes || bytes > limits->max_pending_bytes - pending_bytes))
		return false;
	return true;
}

/* The status broker_publish() must return for length bytes to subject. */
static inline enum broker_status model_publish_status(const struct model *model, const char *subject,
                                                      size_t subject_length, size_t length)
{
	uint64_t copies;

	if (!model_subject_valid(subject, subject_length, model->limits.max_subject_length) ||
	    !model_subject_literal(subject, subject_length))
		return BROKER_INVALID_SUBJECT;
	copies = model_copies(model, subject, subject_length);
	if (copies == 0)
		return BROKER_NO_SUBSCRIBER;
	if (!model_fits(model, copies, copies * length))
		return BROKER_OVERFLOW;
	return BROKER_OK;
}

static inline void model_queue_append(struct model *model, struct model_queue *queue, size_t message)
{
	if (queue->count == queue->capacity) {
		queue->capacity = queue->capacity ? queue->capacity * 2 : 4;
		queue->copies = model_alloc(queue->copies, queue->capacity * sizeof(*queue->copies));
	}
	memset(&queue->copies[queue->count], 0, sizeof(queue->copies[0]));
	queue->copies[queue->count].message = message;
	queue->copies[queue->count].state = MODEL_AVAILABLE;
	queue->count++;
	queue->bytes += model->messages[message].length;
}

/* Accepts a message: the next seq, a copy for every queue of subject. */
static inline size_t model_accept(struct model *model, const char *subject, size_t subject_length,
                                  const char *data, size_t length)
{
	struct model_message *message;

	if (model->message_count == model->message_capacity) {
		model->message_capacity = model->message_capacity ? model->message_capacity * 2 : 16;
		model->messages = model_alloc(model->messages, model->message_capacity * sizeof(*model->messages));
	}
	message = &model->messages[model->message_count];
	message->seq = ++model->stats.last_seq;
	message->data = model_copy_bytes(data, length);
	message->length = length;
	for (size_t i = 0; i < model->queue_count; i++)
		if (model_queue_receives(&model->queues[i], subject, subject_length))
			model_queue_append(model, &model->queues[i], model->message_count);
	model->stats.published++;
	return model->message_count++;
}

/* A message became available on every queue of subject: their held
 * fetches are served. */
static inline void model_serve_subject(struct model *model, const char *subject, size_t length)
{
	for (size_t i = 0; i < model->queue_count; i++)
		if (model_queue_receives(&model->queues[i], subject, length))
			model_serve(model, i);
}

/* Applies the outcome status of a publish the broker reported. */
static inline void model_publish_apply(struct model *model, const char *subject, size_t subject_length,
                                       const char *data, size_t length, enum broker_status status)
{
	if (status == BROKER_OVERFLOW)
		model->stats.overflows++;
	if (status != BROKER_OK)
		return;
	model_accept(model, subject, subject_length, data, length);
	model_serve_subject(model, subject, subject_length);
}

/* One message of a batch publish, as the model reads it. */
struct model_item {
	const char *subject;
	size_t subject_length;
	const char *data;
	size_t length;
};

/* The status broker_publish_batch() must return, with *index the first
 * failing message.  Subjects are judged first; then, in array order, the
 * first message that has no subscriber or does not fit (with all those
 * before it) fails the batch. */
static inline enum broker_status model_batch_status(const struct model *model, const struct model_item *items,
                                                    size_t count, size_t *index)
{
	uint64_t copies = 0, bytes = 0;

	*index = 0;
	for (size_t i = 0; i < count; i++) {
		if (!model_subject_valid(items[i].subject, items[i].subject_length, model->limits.max_subject_length) ||
		    !model_subject_literal(items[i].subject, items[i].subject_length)) {
			*index = i;
			return BROKER_INVALID_SUBJECT;
		}
	}
	for (size_t i = 0; i < count; i++) {
		uint64_t item_copies = model_copies(model, items[i].subject, items[i].subject_length);

		*index = i;
		if (item_copies == 0)
			return BROKER_NO_SUBSCRIBER;
		copies += item_copies;
		bytes += item_copies * items[i].length;
		if (!model_fits(model, copies, bytes))
			return BROKER_OVERFLOW;
	}
	*index = 0;
	return BROKER_OK;
}

static inline void model_batch_apply(struct model *model, const struct model_item *items, size_t count,
                                     enum broker_status status)
{
	if (status == BROKER_OVERFLOW)
		model->stats.overflows++;
	if (status != BROKER_OK)
		return;
	for (size_t i = 0; i < count; i++)
		model_accept(model, items[i].subject, items[i].subject_length, items[i].data, items[i].length);
	/* Held fetches are served once the whole batch is queued. */
	for (size_t i = 0; i < count; i++)
		model_serve_subject(model, items[i].subject, items[i].subject_length);
}

/* --- deliveries --------------------------------------------------------- */

static inline size_t model_copy_find(const struct model *model, const struct model_queue *queue, uint64_t seq)
{
	for (size_t k = 0; k < queue->count; k++)
		if (model_message_of(model, &queue->copies[k])->seq == seq)
			return k;
	return MODEL_NONE;
}

static inline void model_copy_remove(struct model *model, struct model_queue *queue, size_t k)
{
	queue->bytes -= model_message_of(model, &queue->copies[k])->length;
	memmove(&queue->copies[k], &queue->copies[k + 1], (queue->count - k - 1) * sizeof(queue->copies[0]));
	queue->count--;
}

/* A copy of queue used up its deliveries: it is removed and, when the
 * queue names a dead_letter subject with subscribers, its data published
 * there as a new message (counted as dead-lettered; dropped and counted
 * otherwise, also when that publish overflows). */
static inline void model_exhausted(struct model *model, size_t queue_index, size_t k)
{
	struct model_queue *queue = &model->queues[queue_index];
	size_t message = queue->copies[k].message;
	const char *dead_letter = queue->dead_letter;
	size_t dead_letter_length = queue->dead_letter_length;
	uint64_t copies = dead_letter_length > 0 ? model_copies(model, dead_letter, dead_letter_length) : 0;
	bool lettered = false;

	model_copy_remove(model, queue, k);
	if (copies > 0) {
		if (model_fits(model, copies, copies * model->messages[message].length)) {
			/* model_accept may move model->messages */
			char *data = model_copy_bytes(model->messages[message].data, model->messages[message].length);

			/* "published there as a new message": counted as one */
			model_accept(model, dead_letter, dead_letter_length, data, model->messages[message].length);
			model_serve_subject(model, dead_letter, dead_letter_length);
			free(data);
			lettered = true;
		} else {
			model->stats.overflows++;
		}
	}
	if (lettered)
		model->stats.dead_lettered++;
	else
		model->stats.max_deliver_dropped++;
}

/* A copy in flight was not acknowledged (deadline passed, or nacked):
 * available again after delay_ms, or exhausted after max_deliver. */
static inline void model_failed(struct model *model, size_t queue_index, size_t k, uint64_t delay_ms,
                                uint64_t now_ms)
{
	struct model_queue *queue = &model->queues[queue_index];
	struct model_copy *copy = &queue->copies[k];

	if (queue->max_deliver > 0 && copy->attempt >= queue->max_deliver) {
		model_exhausted(model, queue_index, k);
		return;
	}
	if (delay_ms > 0) {
		copy->state = MODEL_DELAYED;
		copy->deadline = model_add_saturated(now_ms, delay_ms);
	} else {
		copy->state = MODEL_AVAILABLE;
		model_serve(model, queue_index);
	}
}

/* The earliest deadline of a copy in flight or delayed, or UINT64_MAX. */
static inline uint64_t model_next_deadline(const struct model *model)
{
	uint64_t next = UINT64_MAX;

	for (size_t i = 0; i < model->queue_count; i++)
		for (size_t k = 0; model->queues[i].ack && k < model->queues[i].count; k++) {
			const struct model_copy *copy = &model->queues[i].copies[k];

			if (copy->state != MODEL_AVAILABLE && copy->deadline < next)
				next = copy->deadline;
		}
	return next;
}

/* Whether a held fetch waits on queue. */
static inline bool model_queue_waited(const struct model *model, size_t queue_index)
{
	for (size_t i = 0; i < MODEL_WAITERS; i++)
		if (model->waiters[i].parked && model->subscribers[model->waiters[i].subscriber].queue == queue_index)
			return true;
	return false;
}

/* Copies that fail at one instant (deadlines on the same millisecond, or
 * a group member's in-flight copies when it leaves): (queue, seq) pairs. */
struct model_due {
	size_t *queues;
	uint64_t *seqs;
	size_t count;
};

static inline void model_due_add(const struct model *model, struct model_due *due, size_t queue, size_t k)
{
	due->queues = model_alloc(due->queues, (due->count + 1) * sizeof(*due->queues));
	due->seqs = model_alloc(due->seqs, (due->count + 1) * sizeof(*due->seqs));
	due->queues[due->count] = queue;
	due->seqs[due->count] = model_message_of(model, &model->queues[queue].copies[k])->seq;
	due->count++;
}

/* Handles the copies of due (delayed ones become available, in-flight
 * ones fail), in seq order, and frees due.  The broker handles them in an
 * order of its own; when that order can matter, the model gives up
 * predicting (see the header comment). */
static inline void model_due_run(struct model *model, struct model_due *due, uint64_t now_ms)
{
	size_t exhausted = 0, lettered = 0;
	uint64_t worst_copies = 0, worst_bytes = 0;
	const struct model_message *first = NULL;
	const struct model_queue *first_queue = NULL;
	bool alike = true;

	for (size_t d = 0; d < due->count; d++) {
		const struct model_queue *queue = &model->queues[due->queues[d]];
		const struct model_copy *copy = &queue->copies[model_copy_find(model, queue, due->seqs[d])];
		const struct model_message *message = model_message_of(model, copy);
		uint64_t copies;

		if (copy->state != MODEL_IN_FLIGHT || queue->max_deliver == 0 || copy->attempt < queue->max_deliver)
			continue;
		exhausted++;
		copies = queue->dead_letter_length > 0 ? model_copies(model, queue->dead_letter, queue->dead_letter_length) : 0;
		if (copies == 0)
			continue;         /* dropped */
		worst_copies += copies;
		worst_bytes += copies * message->length;
		if (lettered++ == 0) {
			first = message;
			first_queue = queue;
		} else if (!model_bytes_equal(first->data, first->length, message->data, message->length) ||
		           !model_bytes_equal(first_queue->dead_letter, first_queue->dead_letter_length,
		                              queue->dead_letter, queue->dead_letter_length)) {
			alike = false;
		}
	}
	/* Different dead letters get their seqs in the broker's order; and
	 * when a limit may be reached, whether a dead letter fits depends on
	 * which copies went before it. */
	if ((lettered >= 2 && !alike) ||
	    (lettered >= 1 && exhausted >= 2 && !(alike && exhausted == lettered) &&
	     !model_fits(model, worst_copies, worst_bytes)))
		model->uncertain = true;
	/* A held fetch takes what the first of them makes available on its
	 * queue: when two or more do, which comes first is the broker's. */
	for (size_t i = 0; i < model->queue_count && !model->uncertain; i++) {
		size_t arriving = 0;

		if (!model_queue_waited(model, i))
			continue;
		for (size_t d = 0; d < due->count; d++) {
			const struct model_queue *queue = &model->queues[due->queues[d]];
			const struct model_copy *copy = &queue->copies[model_copy_find(model, queue, due->seqs[d])];
			bool exhausts = copy->state == MODEL_IN_FLIGHT && queue->max_deliver > 0 &&
			                copy->attempt >= queue->max_deliver;

			if (!exhausts)
				arriving += due->queues[d] == i;
			else if (queue->dead_letter_length > 0)
				arriving += model_queue_receives(&model->queues[i], queue->dead_letter,
				                                 queue->dead_letter_length);
		}
		if (arriving >= 2)
			model->uncertain = true;
	}
	for (size_t a = 1; a < due->count; a++)
		for (size_t b = a; b > 0 && due->seqs[b - 1] > due->seqs[b]; b--) {
			uint64_t seq = due->seqs[b];
			size_t queue = due->queues[b];

			due->seqs[b] = due->seqs[b - 1];
			due->queues[b] = due->queues[b - 1];
			due->seqs[b - 1] = seq;
			due->queues[b - 1] = queue;
		}
	for (size_t d = 0; d < due->count; d++) {
		struct model_queue *queue = &model->queues[due->queues[d]];
		size_t k = model_copy_find(model, queue, due->seqs[d]);

		FUZZ_CHECK(k != MODEL_NONE, "model: due copy vanished");
		if (queue->copies[k].state == MODEL_DELAYED) {
			queue->copies[k].state = MODEL_AVAILABLE;
			model_serve(model, due->queues[d]);
		} else
			model_failed(model, due->queues[d], k, 0, now_ms);
	}
	free(due->queues);
	free(due->seqs);
	memset(due, 0, sizeof(*due));
}

/* Handles every deadline up to now_ms, earliest first: a delayed copy
 * becomes available, a copy in flight fails (redelivery, or exhausted).
 * Returns the ms until the next deadline, or UINT64_MAX (as
 * broker_run_timers()). */
static inline uint64_t model_run_timers(struct model *model, uint64_t now_ms)
{
	uint64_t deadline;

	while ((deadline = model_next_deadline(model)) <= now_ms) {
		struct model_due due = { 0 };

		for (size_t i = 0; i < model->queue_count; i++)
			for (size_t k = 0; model->queues[i].ack && k < model->queues[i].count; k++) {
				const struct model_copy *copy = &model->queues[i].copies[k];

				if (copy->state != MODEL_AVAILABLE && copy->deadline == deadline)
					model_due_add(model, &due, i, k);
			}
		model_due_run(model, &due, now_ms);
	}
	/* Then held fetches whose wait ran out: answered with nothing. */
	for (size_t i = 0; i < MODEL_WAITERS; i++) {
		struct model_waiter *waiter = &model->waiters[i];

		if (waiter->parked && waiter->deadline <= now_ms)
			model_waiter_answer(model, waiter, BROKER_OK);
	}
	deadline = model_next_deadline(model);
	for (size_t i = 0; i < MODEL_WAITERS; i++)
		if (model->waiters[i].parked && model->waiters[i].deadline < deadline)
			deadline = model->waiters[i].deadline;
	return deadline == UINT64_MAX ? UINT64_MAX : deadline - now_ms;
}

/* Removes a subscriber: its queue goes with it, or for a group member its
 * in-flight copies go back to the group (the attempt stands; a copy that
 * has used up max_deliver is exhausted instead) and the group's queue
 * goes with its last member.  Returns the copies freed. */
static inline uint64_t model_remove_subscriber(struct model *model, size_t index)
{
	struct model_subscriber *subscriber = &model->subscribers[index];
	size_t queue_index = subscriber->queue;
	struct model_queue *queue = &model->queues[queue_index];
	struct model_due exhausted = { 0 };
	uint64_t freed = 0;

	/* Its held fetches: 404 bad id. */
	for (size_t i = 0; i < MODEL_WAITERS; i++) {
		struct model_waiter *waiter = &model->waiters[i];

		if (waiter->parked && waiter->subscriber == index)
			model_waiter_answer(model, waiter, BROKER_BAD_ID);
	}
	subscriber->gone = true;
	if (queue->group_length > 0) {
		for (size_t k = 0; k < queue->count; k++) {
			struct model_copy *copy = &queue->copies[k];

			if (copy->state != MODEL_IN_FLIGHT || copy->consumer != index)
				continue;
			if (queue->max_deliver > 0 && copy->attempt >= queue->max_deliver)
				model_due_add(model, &exhausted, queue_index, k);
			else
				copy->state = MODEL_AVAILABLE;
		}
		/* The broker visits them in an order of its own. */
		model_due_run(model, &exhausted, model->now_ms);
		/* What came back goes to the other members' held fetches. */
		model_serve(model, queue_index);
	}
	queue = &model->queues[queue_index];
	if (--queue->members == 0) {
		freed = queue->count;
		model_queue_clear(queue);
	}
	return freed;
}

/* Expires, in the model, subscribers idle for more than ttl seconds at
 * now, the longest idle first (a group member leaving may dead-letter
 * into another subscriber that expires too).  Returns how many. */
static inline size_t model_expire(struct model *model, uint64_t now, uint64_t ttl)
{
	size_t removed = 0;

	if (ttl == 0)
		return 0;
	for (;;) {
		size_t oldest = MODEL_NONE;
		bool parked = false;

		for (size_t i = 0; i < model->count; i++) {
			const struct model_subscriber *subscriber = &model->subscribers[i];

			if (!subscriber->gone && subscriber->last_active <= now && now - subscriber->last_active > ttl &&
			    (oldest == MODEL_NONE || subscriber->activity < model->subscribers[oldest].activity))
				oldest = i;
		}
		if (oldest == MODEL_NONE)
			return removed;
		for (size_t w = 0; w < MODEL_WAITERS; w++)
			parked |= model->waiters[w].parked && model->waiters[w].subscriber == oldest;
		if (parked) {
			/* Waiting in a held fetch is activity. */
			model_touch(model, oldest, now * 1000u);
			model->subscribers[oldest].last_active = now;
			continue;
		}
		model->stats.expired_messages += model_remove_subscriber(model, oldest);
		model->stats.expired_subscribers++;
		removed++;
	}
}

/* --- fetch -------------------------------------------------------------- */

/* How many messages a fetch with options takes from queue. */
static inline size_t model_take_count(const struct model *model, const struct model_queue *queue,
                                      const struct broker_fetch_options *options)
{
	size_t available = 0, count, bytes = 0, taken = 0;

	for (size_t k = 0; k < queue->count; k++)
		available += queue->copies[k].state == MODEL_AVAILABLE;
	count = available;
	if (options && options->max > 0 && options->max < count)
		count = options->max;
	if (model->limits.fetch_max_batch > 0 && model->limits.fetch_max_batch < count)
		count = model->limits.fetch_max_batch;
	if (!options || options->max_bytes == 0)
		return count;
	for (size_t k = 0; k < queue->count && taken < count; k++) {
		size_t length;

		if (queue->copies[k].state != MODEL_AVAILABLE)
			continue;
		length = model_message_of(model, &queue->copies[k])->length;
		/* Always at least one; then stop before exceeding max_bytes. */
		if (taken > 0 && bytes + length > options->max_bytes)
			break;
		bytes += length;
		taken++;
	}
	return taken;
}

/* Deliveries in flight or delayed, all queues. */
static inline size_t model_timers(const struct model *model)
{
	size_t timers = 0;

	for (size_t i = 0; i < model->queue_count; i++)
		for (size_t k = 0; model->queues[i].ack && k < model->queues[i].count; k++)
			timers += model->queues[i].copies[k].state != MODEL_AVAILABLE;
	return timers;
}

/* Takes (or peeks at) the first messages available to subscriber as
 * options say, into *take. */
static inline void model_take(struct model *model, size_t subscriber, const struct broker_fetch_options *options,
                              uint64_t now_ms, struct model_take *take)
{
	struct model_queue *queue;
	size_t count, k = 0;
	bool peek = options && options->peek;

	queue = model_queue_of(model, subscriber);
	count = model_take_count(model, queue, options);
	memset(take, 0, sizeof(*take));
	take->messages = model_alloc(NULL, count * sizeof(*take->messages));
	take->attempts = model_alloc(NULL, count * sizeof(*take->attempts));
	take->subscriber = subscriber;
	take->ack = queue->ack;
	take->peek = peek;
	while (take->count < count) {
		struct model_copy *copy;

		FUZZ_CHECK(k < queue->count, "model: take ran out of copies");
		copy = &queue->copies[k];
		if (copy->state != MODEL_AVAILABLE) {
			k++;
			continue;
		}
		take->messages[take->count] = copy->message;
		if (peek) {
			/* The attempt its next delivery would have. */
			take->attempts[take->count++] = copy->attempt + 1;
			k++;
		} else if (queue->ack) {
			copy->attempt++;
			if (copy->attempt > 1)
				model->stats.redelivered++;
			copy->state = MODEL_IN_FLIGHT;
			copy->consumer = subscriber;
			copy->deadline = model_add_saturated(now_ms, queue->ack_wait_ms);
			take->attempts[take->count++] = copy->attempt;
			model->stats.delivered++;
			k++;
		} else {
			/* Taken out below, all at once. */
			take->attempts[take->count++] = 1;
			copy->state = MODEL_IN_FLIGHT;
			model->stats.delivered++;
			k++;
		}
	}
	if (!peek && !queue->ack) {
		size_t kept = 0;

		for (k = 0; k < queue->count; k++) {
			if (queue->copies[k].state == MODEL_IN_FLIGHT)
				queue->bytes -= model_message_of(model, &queue->copies[k])->length;
			else
				queue->copies[kept++] = queue->copies[k];
		}
		queue->count = kept;
	}
}

/* A fetch of subscriber (found): deadlines passed count first (the broker
 * looks at them when a delivery is in its timers), then the fetch is
 * activity, then the first messages available are taken. */
static inline void model_fetch(struct model *model, size_t subscriber, const struct broker_fetch_options *options,
                               uint64_t now_ms, struct model_take *take)
{
	if (model_timers(model) > 0)
		model_run_timers(model, now_ms);
	model_touch(model, subscriber, now_ms);
	model_take(model, subscriber, options, now_ms, take);
}

/* A fetch with wait_ms of subscriber (found) into waiter slot: held when
 * nothing is available (and the broker is not closing and holds fewer
 * than max_parked_fetches); returns whether it is.  Otherwise answered as
 * model_fetch(), into the slot's take. */
static inline bool model_fetch_wait(struct model *model, size_t subscriber, const struct broker_fetch_options *options,
                                    uint64_t wait_ms, uint64_t now_ms, size_t slot)
{
	struct model_waiter *waiter = &model->waiters[slot];
	struct broker_stats stats;

	FUZZ_CHECK(!waiter->parked && !waiter->completed, "model: waiter slot %zu busy", slot);
	memset(&waiter->take, 0, sizeof(waiter->take));
	if (model_timers(model) > 0)
		model_run_timers(model, now_ms);
	model_touch(model, subscriber, now_ms);
	model_stats(model, &stats);
	if (wait_ms > 0 && !model->closing && stats.parked < model->limits.max_parked_fetches &&
	    model_take_count(model, model_queue_of(model, subscriber), options) == 0) {
		waiter->parked = true;
		waiter->subscriber = subscriber;
		waiter->options = options ? *options : (struct broker_fetch_options){ 0, 0, false, NULL, NULL };
		waiter->deadline = model_add_saturated(now_ms, wait_ms);
		waiter->order = ++model->waiter_order;
		return true;
	}
	model_take(model, subscriber, options, now_ms, &waiter->take);
	return false;
}

/* Something became available on queue: its held fetches, oldest first,
 * take what their options say while anything is available (a peek takes
 * nothing, so the next one is served too). */
static inline void model_serve(struct model *model, size_t queue_index)
{
	for (;;) {
		struct model_waiter *first = NULL;

		for (size_t i = 0; i < MODEL_WAITERS; i++) {
			struct model_waiter *waiter = &model->waiters[i];

			if (waiter->parked && model->subscribers[waiter->subscriber].queue == queue_index &&
			    (first == NULL || waiter->order < first->order))
				first = waiter;
		}
		if (first == NULL || model_take_count(model, &model->queues[queue_index], NULL) == 0)
			return;
		first->parked = false;
		first->completed = true;
		first->status = BROKER_OK;
		model_take(model, first->subscriber, &first->options, model->now_ms, &first->take);
	}
}

/* broker_wake_all(): every held fetch is answered with nothing, and no
 * fetch is held any more. */
static inline void model_wake_all(struct model *model)
{
	for (size_t i = 0; i < MODEL_WAITERS; i++) {
		struct model_waiter *waiter = &model->waiters[i];

		if (waiter->parked)
			model_waiter_answer(model, waiter, BROKER_OK);
	}
	model->closing = true;
}

/* Checks message index of a fetch against the take: seq (0: not known,
 * the plain form has none), data, attempt (0: not known). */
static inline void model_check_taken(const struct model *model, const struct model_take *take, size_t index,
                                     uint64_t seq, const char *data, size_t length, uint32_t attempt)
{
	const struct model_message *message;

	FUZZ_CHECK(index < take->count, "fetch returned message %zu of only %zu expected", index + 1, take->count);
	message = &model->messages[take->messages[index]];
	FUZZ_CHECK(seq == 0 || seq == message->seq, "fetch: message %zu has seq %llu, expected %llu", index,
	           (unsigned long long)seq, (unsigned long long)message->seq);
	FUZZ_CHECK(model_bytes_equal(message->data, message->length, data, length),
	           "fetch: message %zu (seq %llu) differs (%zu bytes, expected %zu)", index,
	           (unsigned long long)message->seq, length, message->length);
	FUZZ_CHECK(attempt == 0 || attempt == take->attempts[index], "fetch: message %zu (seq %llu) has attempt %u, expected %u",
	           index, (unsigned long long)message->seq, (unsigned)attempt, (unsigned)take->attempts[index]);
}

/* Checks a batch the broker handed out against the take, whole. */
static inline void model_check_batch(const struct model *model, const struct model_take *take,
                                     const struct broker_batch *batch)
{
	if (model->uncertain)
		return;
	FUZZ_CHECK(batch->count == take->count, "fetch returned %zu messages, expected %zu", batch->count, take->count);
	FUZZ_CHECK(batch->count == 0 || batch->peeked == take->peek, "batch.peeked %d, expected %d",
	           batch->peeked, take->peek);
	FUZZ_CHECK(batch->ack_queue == take->ack, "batch.ack_queue %d, expected %d", batch->ack_queue, take->ack);
	FUZZ_CHECK(batch->in_flight == (take->ack && !take->peek && take->count > 0) || batch->count == 0,
	           "batch.in_flight %d", batch->in_flight);
	for (size_t i = 0; i < batch->count; i++) {
		const struct broker_message *message = batch->messages[i];

		FUZZ_CHECK(message->data[message->length] == '\0', "message data is not NUL-terminated");
		model_check_taken(model, take, i, message->seq, message->data, message->length,
		                  batch->attempts ? batch->attempts[i] : 1);
	}
}

/* Undoes a take whose messages could not be delivered: broker_batch_give_back()
 * puts them back as if never fetched (an ack queue's attempt included);
 * the delivery counters keep them. */
static inline void model_give_back(struct model *model, const struct model_take *take)
{
	struct model_queue *queue;

	if (take->peek || take->count == 0 || model->subscribers[take->subscriber].gone)
		return;
	queue = model_queue_of(model, take->subscriber);
	for (size_t i = 0; i < take->count; i++) {
		uint64_t seq = model->messages[take->messages[i]].seq;
		size_t k = model_copy_find(model, queue, seq);

		if (take->ack) {
			struct model_copy *copy;

			if (k == MODEL_NONE)
				continue;
			copy = &queue->copies[k];
			/* Only a copy still as this take got it: one that timed
			 * out and was taken again since (by the same subscriber)
			 * has a higher attempt and belongs to that take. */
			if (copy->state == MODEL_IN_FLIGHT && copy->consumer == take->subscriber &&
			    copy->attempt == take->attempts[i]) {
				copy->state = MODEL_AVAILABLE;
				copy->attempt--;
			}
			continue;
		}
		/* Plain: back in seq order. */
		FUZZ_CHECK(k == MODEL_NONE, "model: given back copy still queued");
		k = 0;
		while (k < queue->count && model_message_of(model, &queue->copies[k])->seq < seq)
			k++;
		model_queue_append(model, queue, take->messages[i]);
		memmove(&queue->copies[k + 1], &queue->copies[k], (queue->count - 1 - k) * sizeof(queue->copies[0]));
		memset(&queue->copies[k], 0, sizeof(queue->copies[k]));
		queue->copies[k].message = take->messages[i];
		queue->copies[k].state = MODEL_AVAILABLE;
	}
	model_serve(model, model->subscribers[take->subscriber].queue);
}

/* --- acknowledgements --------------------------------------------------- */

enum model_settle { MODEL_ACK, MODEL_NACK, MODEL_EXTEND };

/* The status of an ack, nack or extend. */
static inline enum broker_status model_settle_status(const struct model *model, const char *subject,
                                                     size_t subject_length, const char *id, size_t id_length)
{
	enum broker_status status = model_lookup_status(model, subject, subject_length, id, id_length);
	size_t subscriber;

	if (status != BROKER_OK)
		return status;
	subscriber = model_find(model, subject, subject_length, id, id_length);
	return model->queues[model->subscribers[subscriber].queue].ack ? BROKER_OK : BROKER_NOT_ACK;
}

/* Settles seqs of a subscriber of an ack queue (model_settle_status said
 * BROKER_OK), in array order; seqs not in flight for it are ignored.
 * Returns how many were settled. */
static inline size_t model_settle(struct model *model, size_t subscriber, enum model_settle kind,
                                  const uint64_t *seqs, size_t count, uint64_t delay_ms, uint64_t now_ms)
{
	size_t queue_index = model->subscribers[subscriber].queue;
	size_t settled = 0;

	model_touch(model, subscriber, now_ms);
	for (size_t i = 0; i < count; i++) {
		struct model_queue *queue = &model->queues[queue_index];
		size_t k = model_copy_find(model, queue, seqs[i]);

		if (k == MODEL_NONE || queue->copies[k].state != MODEL_IN_FLIGHT ||
		    queue->copies[k].consumer != subscriber)
			continue;
		settled++;
		switch (kind) {
		case MODEL_ACK:
			model->stats.acked++;
			model_copy_remove(model, queue, k);
			break;
		case MODEL_NACK:
			model->stats.nacked++;
			model_failed(model, queue_index, k, delay_ms, now_ms);
			break;
		case MODEL_EXTEND:
			queue->copies[k].deadline = model_add_saturated(now_ms, queue->ack_wait_ms);
			break;
		}
	}
	return settled;
}

/* The seqs subscriber has in flight, in seq order (caller frees). */
static inline uint64_t *model_in_flight(const struct model *model, size_t subscriber, size_t *count)
{
	const struct model_queue *queue = &model->queues[model->subscribers[subscriber].queue];
	uint64_t *seqs = model_alloc(NULL, (queue->count + 1) * sizeof(*seqs));

	*count = 0;
	for (size_t k = 0; k < queue->count; k++)
		if (queue->copies[k].state == MODEL_IN_FLIGHT && queue->copies[k].consumer == subscriber)
			seqs[(*count)++] = model_message_of(model, &queue->copies[k])->seq;
	return seqs;
}

/* --- the end of an input ------------------------------------------------ */

/* Everything still held must come out exactly as the model says.  The
 * broker's clock must read now_ms, past every deadline (more than
 * BROKER_ACK_WAIT_MAX_MS + BROKER_DELAY_MAX_MS after the last fetch or
 * nack): the timers redeliver or dead-letter what is in flight or delayed;
 * then every live subscriber fetches everything available and acks it.
 * Dead letters made by those timers are fetched in the same round.  At
 * the end nothing may be pending. */
static inline void model_drain(struct model *model, struct broker *broker, uint64_t now_ms)
{
	uint64_t next;

	if (model->uncertain)
		return;
	next = broker_run_timers(broker);
	FUZZ_CHECK(next == model_run_timers(model, now_ms), "drain: broker_run_timers says %llu ms to go",
	           (unsigned long long)next);
	for (size_t i = 0; i < model->count && !model->uncertain; i++) {
		struct model_subscriber *subscriber = &model->subscribers[i];
		size_t taken;

		if (subscriber->gone)
			continue;
		/* Round by round: fetch_max_batch caps every fetch. */
		do {
			const struct model_queue *queue = model_queue_of(model, i);
			struct model_take take;
			struct broker_batch batch;
			enum broker_status status;
			uint64_t *seqs;
			size_t count, settled;

			status = broker_fetch(broker, queue->subject, queue->subject_length, subscriber->id,
			                      BROKER_ID_LENGTH, NULL, &batch);
			FUZZ_CHECK(status == BROKER_OK, "draining %.36s: %s", subscriber->id, broker_status_name(status));
			model_fetch(model, i, NULL, now_ms, &take);
			model_check_batch(model, &take, &batch);
			taken = batch.count;
			broker_batch_release(&batch);
			model_take_free(&take);
			queue = model_queue_of(model, i);
			if (!queue->ack)
				continue;
			seqs = model_in_flight(model, i, &count);
			status = broker_ack(broker, queue->subject, queue->subject_length, subscriber->id,
			                    BROKER_ID_LENGTH, seqs, count, &settled);
			FUZZ_CHECK(status == BROKER_OK && settled == count, "draining %.36s: ack %s, %zu of %zu",
			           subscriber->id, broker_status_name(status), settled, count);
			FUZZ_CHECK(model_settle(model, i, MODEL_ACK, seqs, count, 0, now_ms) == count, "model: drain ack");
			free(seqs);
		} while (taken > 0 && !model->uncertain);
	}
	model_check_stats(model, broker);
	if (!model->uncertain) {
		struct broker_stats stats;

		model_stats(model, &stats);
		FUZZ_CHECK(stats.pending == 0 && stats.pending_bytes == 0, "model not drained: %llu pending",
		           (unsigned long long)stats.pending);
	}
}

#endif
