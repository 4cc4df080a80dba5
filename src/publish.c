/* publish.c - single and batch publishes: a copy for every queue of the
 * subject, all or nothing, each message numbered in the order accepted. */
#include "autoconfig.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "broker_internal.h"

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

/* Queues message on every queue of subject.  Lock held. */
enum broker_status broker_publish_locked(struct broker *broker, struct broker_subject *subject,
                                         struct broker_message *message)
{
	size_t copies = subject->queue_count;
	uint64_t bytes;
	struct queue *queue;
	bool waiting = false;

	if (__builtin_mul_overflow((uint64_t)copies, (uint64_t)message->length, &bytes) ||
	    !broker_fits_limits(broker, copies, bytes)) {
		broker->stats.overflows++;
		return BROKER_OVERFLOW;
	}
	/* The refcount is 32 bits wide: refuse rather than wrap it. */
	if (copies > UINT32_MAX - __atomic_load_n(&message->refcount, __ATOMIC_RELAXED))
		return BROKER_NO_MEMORY;

	/* All or nothing: make room everywhere before queueing anywhere. */
	for (queue = subject->queues; queue; queue = queue->subject_next)
		if (queue_ring_reserve(&queue->fresh, 1, broker->allocate) != 0)
			return BROKER_NO_MEMORY;
	if (broker->journal &&
	    !durable_publish(broker, broker->stats.last_seq + 1, &subject, &message, 0, 1))
		return BROKER_STORAGE;
	message->seq = ++broker->stats.last_seq;
	for (queue = subject->queues; queue; queue = queue->subject_next) {
		queue_ring_push(&queue->fresh, message);
		queue->held++;
		queue->held_bytes += message->length;
		waiting |= queue->waiters != NULL;
	}
	__atomic_add_fetch(&message->refcount, (uint32_t)copies, __ATOMIC_RELAXED);
	broker->stats.pending += copies;
	broker->stats.pending_bytes += bytes;
	broker->stats.published++;
	if (waiting)
		for (queue = subject->queues; queue; queue = queue->subject_next)
			broker_serve_waiters(broker, queue);
	return BROKER_OK;
}

enum broker_status broker_publish(struct broker *broker,
                                  const char *subject_name, size_t subject_length,
                                  struct broker_message *message)
{
	struct hash_node *node;
	enum broker_status status;
	uint64_t hash;

	if (!broker_subject_valid(subject_name, subject_length, broker_max_subject_length(broker)))
		return BROKER_INVALID_SUBJECT;
	hash = hash_table_hash(&broker->subjects, subject_name, subject_length);

	pthread_mutex_lock(&broker->lock);
	node = hash_table_find(&broker->subjects, hash, subject_name, subject_length,
	                       broker_subject_match);
	if (!node)
		status = BROKER_NO_SUBSCRIBER;
	else
		status = broker_publish_locked(broker, hash_entry(node, struct broker_subject, node), message);
	broker_unlock(broker);
	return status;
}

/* Clears the batch_reserve counts of the queues of subjects[0..count). */
static void batch_reserve_clear(struct broker_subject **subjects, size_t count)
{
	for (size_t i = 0; i < count; i++)
		for (struct queue *queue = subjects[i]->queues; queue; queue = queue->subject_next)
			queue->batch_reserve = 0;
}

enum broker_status broker_publish_batch(struct broker *broker,
                                        const struct broker_publish_item *items, size_t count,
                                        size_t *failed)
{
	struct broker_subject **subjects;
	uint64_t *hashes, copies = 0, bytes = 0;
	enum broker_status status = BROKER_OK;
	size_t max_length = broker_max_subject_length(broker);

	*failed = 0;
	for (size_t i = 0; i < count; i++) {
		if (!broker_subject_valid(items[i].subject, items[i].subject_length, max_length)) {
			*failed = i;
			return BROKER_INVALID_SUBJECT;
		}
	}
	if (count == 0)
		return BROKER_OK;
	if (count > SIZE_MAX / (sizeof(*subjects) + sizeof(*hashes)))
		return BROKER_NO_MEMORY;
	hashes = broker->allocate(NULL, count * (sizeof(*subjects) + sizeof(*hashes)));
	if (!hashes)
		return BROKER_NO_MEMORY;
	subjects = (struct broker_subject **)(void *)(hashes + count);
	for (size_t i = 0; i < count; i++)
		hashes[i] = hash_table_hash(&broker->subjects, items[i].subject, items[i].subject_length);

	pthread_mutex_lock(&broker->lock);
	for (size_t i = 0; i < count; i++) {
		struct hash_node *node = hash_table_find(&broker->subjects, hashes[i], items[i].subject,
		                                         items[i].subject_length, broker_subject_match);
		if (!node) {
			*failed = i;
			status = BROKER_NO_SUBSCRIBER;
			goto out;
		}
		subjects[i] = hash_entry(node, struct broker_subject, node);
	}
	for (size_t i = 0; i < count; i++) {
		uint64_t item_copies = subjects[i]->queue_count, item_bytes;

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
	/* All or nothing: room in every queue for all its copies first. */
	for (size_t i = 0; i < count; i++)
		for (struct queue *queue = subjects[i]->queues; queue; queue = queue->subject_next)
			queue->batch_reserve++;
	for (size_t i = 0; i < count; i++) {
		for (struct queue *queue = subjects[i]->queues; queue; queue = queue->subject_next) {
			if (queue->batch_reserve > 0 &&
			    queue_ring_reserve(&queue->fresh, queue->batch_reserve, broker->allocate) != 0) {
				batch_reserve_clear(subjects, count);
				*failed = i;
				status = BROKER_NO_MEMORY;
				goto out;
			}
			queue->batch_reserve = 0;
		}
	}
	if (broker->journal &&
	    !durable_publish(broker, broker->stats.last_seq + 1, subjects, &items[0].message,
	                     sizeof(*items), count)) {
		*failed = 0;
		status = BROKER_STORAGE;
		goto out;
	}
	for (size_t i = 0; i < count; i++) {
		struct broker_message *message = items[i].message;

		message->seq = ++broker->stats.last_seq;
		for (struct queue *queue = subjects[i]->queues; queue; queue = queue->subject_next) {
			queue_ring_push(&queue->fresh, message);
			queue->held++;
			queue->held_bytes += message->length;
		}
		__atomic_add_fetch(&message->refcount, (uint32_t)subjects[i]->queue_count, __ATOMIC_RELAXED);
	}
	broker->stats.pending += copies;
	broker->stats.pending_bytes += bytes;
	broker->stats.published += count;
	for (size_t i = 0; i < count; i++)
		for (struct queue *queue = subjects[i]->queues; queue; queue = queue->subject_next)
			if (queue->waiters)
				broker_serve_waiters(broker, queue);
out:
	broker_unlock(broker);
	free(hashes);
	return status;
}

