/* publish.c - single and batch publishes: a copy for every queue of the
 * subject and of the wildcard subscriptions that match it, all or nothing,
 * each message numbered in the order accepted. */
#include "autoconfig.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "broker_internal.h"

#define TARGETS_INLINE 8

/* The subjects whose queues receive a publish: the literal subject itself
 * and every matching pattern.  Each queue is on exactly one of them. */
struct publish_targets {
	struct broker_subject **subjects;
	size_t count, capacity;
	struct broker *broker;
	struct broker_subject *inline_subjects[TARGETS_INLINE];
};

static void targets_init(struct publish_targets *targets, struct broker *broker)
{
	targets->subjects = targets->inline_subjects;
	targets->count = 0;
	targets->capacity = TARGETS_INLINE;
	targets->broker = broker;
}

static void targets_free(struct publish_targets *targets)
{
	if (targets->subjects != targets->inline_subjects)
		free(targets->subjects);
}

static int targets_add(void *value, void *context)
{
	struct publish_targets *targets = context;

	if (targets->count == targets->capacity) {
		struct broker_subject **grown;
		size_t capacity = 2 * targets->capacity;

		if (targets->subjects == targets->inline_subjects) {
			grown = targets->broker->allocate(NULL, capacity * sizeof(*grown));
			if (grown)
				memcpy(grown, targets->subjects, targets->count * sizeof(*grown));
		} else {
			grown = targets->broker->allocate(targets->subjects, capacity * sizeof(*grown));
		}
		if (!grown)
			return -1;
		targets->subjects = grown;
		targets->capacity = capacity;
	}
	targets->subjects[targets->count++] = value;
	return 0;
}

/* Adds the subjects that receive a publish to name (literal and valid,
 * hash its hash in broker->subjects).  Returns 0, or -1 when out of
 * memory.  Lock held. */
static int targets_collect(struct broker *broker, const char *name, size_t length, uint64_t hash,
                           struct publish_targets *targets)
{
	struct hash_node *node = hash_table_find(&broker->subjects, hash, name, length, broker_subject_match);

	if (node && targets_add(hash_entry(node, struct broker_subject, node), targets) != 0)
		return -1;
	if (wildcard_count(&broker->wildcards) == 0)
		return 0;
	return wildcard_match(&broker->wildcards, name, length, targets_add, targets) == 0 ? 0 : -1;
}

static uint64_t targets_copies(struct broker_subject *const *subjects, size_t count)
{
	uint64_t copies = 0;

	for (size_t i = 0; i < count; i++)
		copies += subjects[i]->queue_count;
	return copies;
}

/* --- publish ----------------------------------------------------------- */

/* Whether copies more copies of length bytes fit the limits, on top of
 * extra_copies and extra_bytes not yet counted.  Lock held. */
static bool broker_fits_limits(const struct broker *broker, uint64_t copies, uint64_t bytes)
{
	const struct broker_limits *limits = &broker->limits;
	const struct broker_stats *stats = &broker->stats;

	if (limits->max_pending > 0 &&
	    (stats->pending > limits->max_pending || copies > limits->max_pending - stats->pending))
		return false;
	if (limits->max_pending_bytes > 0 &&
	    (stats->pending_bytes > limits->max_pending_bytes ||
	     bytes > limits->max_pending_bytes - stats->pending_bytes))
		return false;
	return true;
}

/* Pushes message onto every queue of subjects (room reserved).  Lock held. */
static void targets_push(struct broker *broker, struct broker_subject *const *subjects, size_t count,
                         struct broker_message *message)
{
	for (size_t i = 0; i < count; i++) {
		for (struct queue *queue = subjects[i]->queues; queue; queue = queue->subject_next) {
			queue_ring_push(&queue->fresh, message);
			queue->held++;
			queue->held_bytes += message->length;
			broker_expiry_note_fresh(broker, queue, message);
		}
	}
}

static void targets_serve(struct broker *broker, struct broker_subject *const *subjects, size_t count)
{
	for (size_t i = 0; i < count; i++)
		for (struct queue *queue = subjects[i]->queues; queue; queue = queue->subject_next)
			if (queue->waiters)
				broker_serve_waiters(broker, queue);
}

/* Publishes to the collected targets.  Lock held. */
static enum broker_status publish_to(struct broker *broker, const struct publish_targets *targets,
                                     const char *subject_name, size_t subject_length,
                                     struct broker_message *message)
{
	uint64_t copies = targets_copies(targets->subjects, targets->count), bytes;
	struct broker_publish_item item = { subject_name, subject_length, message };

	if (copies == 0)
		return BROKER_NO_SUBSCRIBER;
	if (__builtin_mul_overflow(copies, (uint64_t)message->length, &bytes) ||
	    !broker_fits_limits(broker, copies, bytes)) {
		broker->stats.overflows++;
		return BROKER_OVERFLOW;
	}
	/* The refcount is 32 bits wide: refuse rather than wrap it. */
	if (copies > UINT32_MAX - __atomic_load_n(&message->refcount, __ATOMIC_RELAXED))
		return BROKER_NO_MEMORY;

	/* All or nothing: make room everywhere before queueing anywhere. */
	for (size_t i = 0; i < targets->count; i++)
		for (struct queue *queue = targets->subjects[i]->queues; queue; queue = queue->subject_next)
			if (queue_ring_reserve(&queue->fresh, 1, broker->allocate) != 0)
				return BROKER_NO_MEMORY;
	message->expires_ms = broker_expiry_deadline(broker, message->expires_ms);
	if (broker->journal && !durable_publish(broker, broker->stats.last_seq + 1, &item, 1))
		return BROKER_STORAGE;
	message->seq = ++broker->stats.last_seq;
	targets_push(broker, targets->subjects, targets->count, message);
	__atomic_add_fetch(&message->refcount, (uint32_t)copies, __ATOMIC_RELAXED);
	broker->stats.pending += copies;
	broker->stats.pending_bytes += bytes;
	broker->stats.published++;
	targets_serve(broker, targets->subjects, targets->count);
	return BROKER_OK;
}

enum broker_status broker_publish_locked(struct broker *broker, const char *subject_name,
                                         size_t subject_length, uint64_t subject_hash,
                                         struct broker_message *message)
{
	struct publish_targets targets;
	enum broker_status status = BROKER_NO_MEMORY;

	targets_init(&targets, broker);
	if (targets_collect(broker, subject_name, subject_length, subject_hash, &targets) == 0)
		status = publish_to(broker, &targets, subject_name, subject_length, message);
	targets_free(&targets);
	return status;
}

int broker_publish_queues(struct broker *broker, const char *subject, size_t length,
                          int (*visit)(struct queue *queue, void *context), void *context)
{
	struct publish_targets targets;
	int result;

	targets_init(&targets, broker);
	result = targets_collect(broker, subject, length, hash_table_hash(&broker->subjects, subject, length),
	                         &targets);
	for (size_t i = 0; i < targets.count && result == 0; i++)
		for (struct queue *queue = targets.subjects[i]->queues; queue && result == 0;
		     queue = queue->subject_next)
			result = visit(queue, context);
	targets_free(&targets);
	return result;
}

enum broker_status broker_publish(struct broker *broker,
                                  const char *subject_name, size_t subject_length,
                                  struct broker_message *message)
{
	enum broker_status status;
	uint64_t hash;

	if (!broker_subject_valid(subject_name, subject_length, broker_max_subject_length(broker)) ||
	    !broker_subject_literal(subject_name, subject_length))
		return BROKER_INVALID_SUBJECT;
	hash = hash_table_hash(&broker->subjects, subject_name, subject_length);

	pthread_mutex_lock(&broker->lock);
	status = broker_publish_locked(broker, subject_name, subject_length, hash, message);
	broker_unlock(broker);
	return status;
}

/* Clears the batch_reserve counts of the queues of subjects[0..count). */
static void batch_reserve_clear(struct broker_subject *const *subjects, size_t count)
{
	for (size_t i = 0; i < count; i++)
		for (struct queue *queue = subjects[i]->queues; queue; queue = queue->subject_next)
			queue->batch_reserve = 0;
}

enum broker_status broker_publish_batch(struct broker *broker,
                                        const struct broker_publish_item *items, size_t count,
                                        size_t *failed)
{
	struct publish_targets targets;
	size_t *first;                 /* item i's subjects: targets[first[i], first[i + 1]) */
	uint64_t *hashes, copies = 0, bytes = 0;
	enum broker_status status = BROKER_OK;
	size_t max_length = broker_max_subject_length(broker);

	*failed = 0;
	for (size_t i = 0; i < count; i++) {
		if (!broker_subject_valid(items[i].subject, items[i].subject_length, max_length) ||
		    !broker_subject_literal(items[i].subject, items[i].subject_length)) {
			*failed = i;
			return BROKER_INVALID_SUBJECT;
		}
	}
	if (count == 0)
		return BROKER_OK;
	if (count > SIZE_MAX / (sizeof(*first) + sizeof(*hashes)) - 1)
		return BROKER_NO_MEMORY;
	hashes = broker->allocate(NULL, count * sizeof(*hashes) + (count + 1) * sizeof(*first));
	if (!hashes)
		return BROKER_NO_MEMORY;
	first = (size_t *)(void *)(hashes + count);
	for (size_t i = 0; i < count; i++)
		hashes[i] = hash_table_hash(&broker->subjects, items[i].subject, items[i].subject_length);

	targets_init(&targets, broker);
	pthread_mutex_lock(&broker->lock);
	/* In index order, so that the error names the first message that
	 * fails, whether for want of a subscriber or of room. */
	for (size_t i = 0; i < count; i++) {
		uint64_t item_copies, item_bytes;

		first[i] = targets.count;
		if (targets_collect(broker, items[i].subject, items[i].subject_length, hashes[i], &targets) != 0) {
			*failed = i;
			status = BROKER_NO_MEMORY;
			goto out;
		}
		item_copies = targets_copies(targets.subjects + first[i], targets.count - first[i]);
		if (item_copies == 0) {
			*failed = i;
			status = BROKER_NO_SUBSCRIBER;
			goto out;
		}
		if (__builtin_mul_overflow(item_copies, (uint64_t)items[i].message->length, &item_bytes) ||
		    __builtin_add_overflow(bytes, item_bytes, &bytes) ||
		    !broker_fits_limits(broker, copies += item_copies, bytes)) {
			broker->stats.overflows++;
			*failed = i;
			status = BROKER_OVERFLOW;
			goto out;
		}
		if (item_copies > UINT32_MAX - __atomic_load_n(&items[i].message->refcount, __ATOMIC_RELAXED)) {
			*failed = i;
			status = BROKER_NO_MEMORY;
			goto out;
		}
	}
	first[count] = targets.count;
	/* All or nothing: room in every queue for all its copies first. */
	for (size_t i = 0; i < targets.count; i++)
		for (struct queue *queue = targets.subjects[i]->queues; queue; queue = queue->subject_next)
			queue->batch_reserve++;
	for (size_t i = 0; i < targets.count; i++) {
		for (struct queue *queue = targets.subjects[i]->queues; queue; queue = queue->subject_next) {
			if (queue->batch_reserve > 0 &&
			    queue_ring_reserve(&queue->fresh, queue->batch_reserve, broker->allocate) != 0) {
				batch_reserve_clear(targets.subjects, targets.count);
				*failed = 0;
				status = BROKER_NO_MEMORY;
				goto out;
			}
			queue->batch_reserve = 0;
		}
	}
	for (size_t i = 0; i < count; i++)
		items[i].message->expires_ms = broker_expiry_deadline(broker, items[i].message->expires_ms);
	if (broker->journal && !durable_publish(broker, broker->stats.last_seq + 1, items, count)) {
		*failed = 0;
		status = BROKER_STORAGE;
		goto out;
	}
	for (size_t i = 0; i < count; i++) {
		struct broker_message *message = items[i].message;
		size_t subjects = first[i + 1] - first[i];

		message->seq = ++broker->stats.last_seq;
		targets_push(broker, targets.subjects + first[i], subjects, message);
		__atomic_add_fetch(&message->refcount,
		                   (uint32_t)targets_copies(targets.subjects + first[i], subjects), __ATOMIC_RELAXED);
	}
	broker->stats.pending += copies;
	broker->stats.pending_bytes += bytes;
	broker->stats.published += count;
	targets_serve(broker, targets.subjects, targets.count);
out:
	broker_unlock(broker);
	targets_free(&targets);
	free(hashes);
	return status;
}
