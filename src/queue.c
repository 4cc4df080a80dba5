/* queue.c - a consumer's messages in seq order: ring, returned, retry. */
#include "autoconfig.h"

#include <stdlib.h>
#include <string.h>

#include "broker.h"
#include "queue.h"

#define QUEUE_RING_INITIAL 2      /* slots allocated for a second pending copy */
#define QUEUE_RETRY_INITIAL 8

/* --- the ring ---------------------------------------------------------- */

int queue_ring_reserve(struct queue_ring *ring, size_t extra, queue_realloc_fn *allocate)
{
	struct broker_message **slots;
	size_t capacity, old_capacity = ring->capacity;

	if (extra == 0 || (ring->capacity == 0 && ring->count == 0 && extra == 1))
		return 0;
	if (ring->capacity >= ring->count && extra <= ring->capacity - ring->count)
		return 0;
	if (extra > SIZE_MAX / 4 / sizeof(*slots) - ring->count)
		return -1;
	capacity = old_capacity ? old_capacity : QUEUE_RING_INITIAL;
	while (capacity < ring->count + extra)
		capacity *= 2;
	if (old_capacity == 0) {
		slots = allocate(NULL, capacity * sizeof(*slots));
		if (!slots)
			return -1;
		if (ring->count == 1)
			slots[0] = ring->single;
		ring->slots = slots;
		ring->capacity = capacity;
		ring->head = 0;
		return 0;
	}
	slots = allocate(ring->slots, capacity * sizeof(*slots));
	if (!slots)
		return -1;
	/* [head, old capacity) then [0, tail): move the wrapped part behind
	 * the first so that the ring is contiguous in the larger array. */
	if (ring->head + ring->count > old_capacity)
		memcpy(slots + old_capacity, slots, (ring->head + ring->count - old_capacity) * sizeof(*slots));
	ring->slots = slots;
	ring->capacity = capacity;
	return 0;
}

void queue_ring_push(struct queue_ring *ring, struct broker_message *message)
{
	if (ring->capacity == 0)
		ring->single = message;
	else
		ring->slots[(ring->head + ring->count) & (ring->capacity - 1)] = message;
	ring->count++;
}

struct broker_message *queue_ring_at(const struct queue_ring *ring, size_t index)
{
	if (ring->capacity == 0)
		return ring->single;
	return ring->slots[(ring->head + index) & (ring->capacity - 1)];
}

struct broker_message *queue_ring_pop(struct queue_ring *ring)
{
	struct broker_message *message = queue_ring_at(ring, 0);

	if (ring->capacity > 0)
		ring->head = (ring->head + 1) & (ring->capacity - 1);
	ring->count--;
	return message;
}

static void queue_reverse(struct broker_message **slots, size_t count)
{
	for (size_t i = 0, j = count; i < j / 2; i++) {
		struct broker_message *swap = slots[i];

		slots[i] = slots[j - 1 - i];
		slots[j - 1 - i] = swap;
	}
}

struct broker_message **queue_ring_take_all(struct queue_ring *ring, queue_realloc_fn *allocate)
{
	struct broker_message **slots;

	if (ring->capacity == 0) {
		slots = allocate(NULL, sizeof(*slots));
		if (!slots)
			return NULL;
		slots[0] = ring->single;
	} else {
		slots = ring->slots;
		if (ring->head + ring->count <= ring->capacity) {
			if (ring->head > 0)
				memmove(slots, slots + ring->head, ring->count * sizeof(*slots));
		} else {
			/* Wrapped: rotating the whole array left by head puts
			 * [head, capacity) first, followed by [0, tail). */
			queue_reverse(slots, ring->head);
			queue_reverse(slots + ring->head, ring->capacity - ring->head);
			queue_reverse(slots, ring->capacity);
		}
	}
	*ring = (struct queue_ring){0};
	return slots;
}

void queue_ring_clear(struct queue_ring *ring)
{
	for (size_t i = 0; i < ring->count; i++)
		broker_message_release(queue_ring_at(ring, i));
	if (ring->capacity > 0)
		free(ring->slots);
	*ring = (struct queue_ring){0};
}

/* --- returned messages ------------------------------------------------- */

int queue_give_back(struct queue *queue, struct broker_message **messages, size_t count,
                    queue_realloc_fn *allocate)
{
	struct broker_message **merged, **old = queue->returned + queue->returned_head;
	size_t old_count = queue->returned_count, i = 0, j = 0, k = 0;

	if (count == 0) {
		free(messages);
		return 0;
	}
	if (old_count == 0) {
		free(queue->returned);
		queue->returned = messages;
		queue->returned_head = 0;
		queue->returned_count = count;
		return 0;
	}
	/* Two replies failed for the same consumer: merge by seq. */
	if (count > SIZE_MAX / sizeof(*merged) - old_count)
		return -1;
	merged = allocate(NULL, (count + old_count) * sizeof(*merged));
	if (!merged)
		return -1;
	while (i < old_count || j < count) {
		if (j == count || (i < old_count && old[i]->seq < messages[j]->seq))
			merged[k++] = old[i++];
		else
			merged[k++] = messages[j++];
	}
	free(queue->returned);
	free(messages);
	queue->returned = merged;
	queue->returned_head = 0;
	queue->returned_count = k;
	return 0;
}

/* --- retry list -------------------------------------------------------- */

/* Where seq is or would go among the count queued deliveries of retry. */
static size_t queue_retry_position(struct delivery *const *retry, size_t count, uint64_t seq)
{
	size_t low = 0, high = count;

	while (low < high) {
		size_t middle = low + (high - low) / 2;

		if (retry[middle]->message->seq < seq)
			low = middle + 1;
		else
			high = middle;
	}
	return low;
}

int queue_retry_insert(struct queue *queue, struct delivery *delivery, queue_realloc_fn *allocate)
{
	struct delivery **retry = queue->retry;
	uint64_t seq = delivery->message->seq;
	size_t count = queue->retry_count, position;

	if (queue->retry_head + queue->retry_count == queue->retry_capacity) {
		if (queue->retry_head > 0) {
			memmove(retry, retry + queue->retry_head, queue->retry_count * sizeof(*retry));
			queue->retry_head = 0;
		} else {
			size_t capacity = queue->retry_capacity ? queue->retry_capacity * 2 : QUEUE_RETRY_INITIAL;

			if (capacity > SIZE_MAX / sizeof(*retry))
				return -1;
			retry = allocate(queue->retry, capacity * sizeof(*retry));
			if (!retry)
				return -1;
			queue->retry = retry;
			queue->retry_capacity = capacity;
		}
	}
	retry += queue->retry_head;
	/* Usually the newest comes back last: check the end first. */
	if (count > 0 && retry[count - 1]->message->seq < seq) {
		position = count;
	} else {
		position = queue_retry_position(retry, count, seq);
		memmove(retry + position + 1, retry + position, (count - position) * sizeof(*retry));
	}
	retry[position] = delivery;
	queue->retry_count++;
	delivery->owner.queue = queue;
	return 0;
}

void queue_retry_remove(struct queue *queue, struct delivery *delivery)
{
	struct delivery **retry = queue->retry + queue->retry_head;
	size_t position = queue_retry_position(retry, queue->retry_count, delivery->message->seq);

	if (position == 0)
		queue->retry_head++;
	else
		memmove(retry + position, retry + position + 1,
		        (queue->retry_count - position - 1) * sizeof(*retry));
	queue->retry_count--;
	if (queue->retry_count == 0)
		queue->retry_head = 0;
}

/* --- availability ------------------------------------------------------ */

size_t queue_available(const struct queue *queue)
{
	return queue->returned_count + queue->retry_count + queue->fresh.count;
}

struct broker_message *queue_available_at(const struct queue *queue, size_t index,
                                          struct delivery **delivery)
{
	*delivery = NULL;
	if (index < queue->returned_count)
		return queue->returned[queue->returned_head + index];
	index -= queue->returned_count;
	if (index < queue->retry_count) {
		*delivery = queue->retry[queue->retry_head + index];
		return (*delivery)->message;
	}
	return queue_ring_at(&queue->fresh, index - queue->retry_count);
}

/* --- waiters ----------------------------------------------------------- */

void queue_waiter_append(struct queue *queue, struct broker_waiter *waiter)
{
	waiter->queue_next = NULL;
	waiter->queue_prev = queue->waiters_tail;
	if (queue->waiters_tail)
		queue->waiters_tail->queue_next = waiter;
	else
		queue->waiters = waiter;
	queue->waiters_tail = waiter;
}

void queue_waiter_remove(struct queue *queue, struct broker_waiter *waiter)
{
	if (waiter->queue_prev)
		waiter->queue_prev->queue_next = waiter->queue_next;
	else
		queue->waiters = waiter->queue_next;
	if (waiter->queue_next)
		waiter->queue_next->queue_prev = waiter->queue_prev;
	else
		queue->waiters_tail = waiter->queue_prev;
	waiter->queue_prev = waiter->queue_next = NULL;
}
