/* queue.c - a consumer's messages in seq order: ring, returned, retry. */
#include "autoconfig.h"

#include <stdlib.h>
#include <string.h>

#include "broker.h"
#include "queue.h"

#define QUEUE_RING_INITIAL 2      /* slots allocated for a second pending copy */
#define QUEUE_RETRY_INITIAL 8
#define QUEUE_RING_KEEP 16        /* slots an emptied ring keeps for the next publishes */

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

void queue_ring_trim(struct queue_ring *ring)
{
	if (ring->count == 0 && ring->capacity > QUEUE_RING_KEEP) {
		free(ring->slots);
		*ring = (struct queue_ring){0};
	}
}

void queue_ring_clear(struct queue_ring *ring)
{
	for (size_t i = 0; i < ring->count; i++)
		broker_message_release(queue_ring_at(ring, i));
	if (ring->capacity > 0)
		free(ring->slots);
	*ring = (struct queue_ring){0};
}

size_t queue_ring_remove_if(struct queue_ring *ring,
                            bool (*drop)(struct broker_message *message, void *context), void *context)
{
	size_t kept = 0, count = ring->count;

	for (size_t i = 0; i < count; i++) {
		struct broker_message *message = queue_ring_at(ring, i);

		if (drop(message, context))
			continue;
		if (ring->capacity == 0)
			ring->single = message;
		else
			ring->slots[(ring->head + kept) & (ring->capacity - 1)] = message;
		kept++;
	}
	ring->count = kept;
	if (kept == 0)
		ring->head = 0;
	return count - kept;
}

/* --- returned messages ------------------------------------------------- */

struct queue_run *queue_run_new(size_t count, queue_realloc_fn *allocate)
{
	struct queue_run *run;

	if (count > (SIZE_MAX - sizeof(*run)) / sizeof(run->messages[0]))
		return NULL;
	run = allocate(NULL, sizeof(*run) + count * sizeof(run->messages[0]));
	if (run) {
		run->next = NULL;
		run->head = 0;
		run->count = 0;
	}
	return run;
}

static int run_seq_compare(const void *a, const void *b)
{
	uint64_t x = (*(struct broker_message *const *)a)->seq;
	uint64_t y = (*(struct broker_message *const *)b)->seq;

	return x < y ? -1 : x > y;
}

/* The index-th message of the runs from first on, as one array. */
static struct broker_message **runs_at(struct queue_run *first, size_t index)
{
	while (index >= first->count) {
		index -= first->count;
		first = first->next;
	}
	return &first->messages[first->head + index];
}

static void runs_sift_down(struct queue_run *first, size_t root, size_t count)
{
	for (size_t child; (child = 2 * root + 1) < count; root = child) {
		struct broker_message **parent = runs_at(first, root), **larger = runs_at(first, child), *swap;

		if (child + 1 < count && (*runs_at(first, child + 1))->seq > (*larger)->seq)
			larger = runs_at(first, ++child);
		if ((*parent)->seq > (*larger)->seq)
			return;
		swap = *parent;
		*parent = *larger;
		*larger = swap;
	}
}

/* Sorts the count messages of the runs from first on by seq, in place
 * across the runs (each keeps its size): heapsort, as it needs no memory. */
static void runs_sort(struct queue_run *first, size_t count)
{
	for (size_t root = count / 2; root-- > 0;)
		runs_sift_down(first, root, count);
	for (size_t end = count; end-- > 1;) {
		struct broker_message **top = runs_at(first, 0), **last = runs_at(first, end), *swap = *top;

		*top = *last;
		*last = swap;
		runs_sift_down(first, 0, end);
	}
}

void queue_give_back(struct queue *queue, struct queue_run *run, queue_realloc_fn *allocate)
{
	struct queue_run *merged, **link;
	size_t total = queue->returned_count + run->count;

	if (run->count == 0) {
		free(run);
		return;
	}
	run->next = NULL;
	if (!queue->returned) {
		queue->returned = run;
		queue->returned_count = run->count;
		return;
	}
	/* Two replies failed for this consumer: one run in seq order. */
	merged = queue_run_new(total, allocate);
	if (merged) {
		for (struct queue_run *each = queue->returned, *next; each; each = next) {
			next = each->next;
			memcpy(merged->messages + merged->count, each->messages + each->head,
			       each->count * sizeof(each->messages[0]));
			merged->count += each->count;
			free(each);
		}
		memcpy(merged->messages + merged->count, run->messages + run->head,
		       run->count * sizeof(run->messages[0]));
		merged->count += run->count;
		free(run);
		qsort(merged->messages, merged->count, sizeof(merged->messages[0]), run_seq_compare);
		queue->returned = merged;
		queue->returned_count = total;
		return;
	}
	/* No memory for one run: keep the runs, sorted across them. */
	for (link = &queue->returned; *link; link = &(*link)->next)
		;
	*link = run;
	queue->returned_count = total;
	runs_sort(queue->returned, total);
}

struct broker_message *queue_returned_pop(struct queue *queue)
{
	struct queue_run *run = queue->returned;
	struct broker_message *message = run->messages[run->head++];

	run->count--;
	queue->returned_count--;
	if (run->count == 0) {
		queue->returned = run->next;
		free(run);
	}
	return message;
}

void queue_returned_clear(struct queue *queue)
{
	while (queue->returned)
		broker_message_release(queue_returned_pop(queue));
}

size_t queue_returned_remove_if(struct queue *queue,
                                bool (*drop)(struct broker_message *message, void *context), void *context)
{
	size_t removed = 0;

	for (struct queue_run **link = &queue->returned; *link;) {
		struct queue_run *run = *link;
		size_t kept = 0;

		for (size_t i = run->head; i < run->head + run->count; i++)
			if (!drop(run->messages[i], context))
				run->messages[run->head + kept++] = run->messages[i];
		removed += run->count - kept;
		run->count = kept;
		if (kept == 0) {
			*link = run->next;
			free(run);
		} else {
			link = &run->next;
		}
	}
	queue->returned_count -= removed;
	return removed;
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

size_t queue_retry_remove_if(struct queue *queue, bool (*drop)(struct delivery *delivery, void *context),
                             void *context)
{
	struct delivery **retry = queue->retry + queue->retry_head;
	size_t kept = 0, count = queue->retry_count;

	for (size_t i = 0; i < count; i++)
		if (!drop(retry[i], context))
			retry[kept++] = retry[i];
	queue->retry_count = kept;
	if (kept == 0)
		queue->retry_head = 0;
	return count - kept;
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
	if (index < queue->returned_count) {
		for (struct queue_run *run = queue->returned;; run = run->next) {
			if (index < run->count)
				return run->messages[run->head + index];
			index -= run->count;
		}
	}
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
