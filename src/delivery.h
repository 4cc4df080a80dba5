/* delivery.h - at-least-once copies of messages, found by seq and by time.
 *
 * A struct delivery is an ack-mode queue's copy of one message from the
 * moment it is first handed out until it is acknowledged, dead-lettered or
 * dropped.  In between it is in one of three states:
 *  - in flight: a consumer holds it; timer_index is its place in the
 *    broker's delivery timers, deadline_ms its ack deadline;
 *  - delayed: nacked with a delay; in the timers until deadline_ms, then
 *    queued again;
 *  - queued: waiting in its queue's retry list (seq order) for the next
 *    fetch; not in the timers.
 * Every delivery of a queue is in that queue's delivery_table, by seq, in
 * every state.  Nothing here locks: the broker's lock guards all of it.
 */
#ifndef GOPHERMQ_DELIVERY_H
#define GOPHERMQ_DELIVERY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "message.h"

#define DELIVERY_NO_TIMER UINT32_MAX

struct broker_subscriber;
struct queue;

typedef void *delivery_realloc_fn(void *pointer, size_t size);

struct delivery {
	struct delivery *table_next;      /* chain in the queue's delivery_table */
	struct broker_message *message;   /* one reference, owned */
	union {
		struct broker_subscriber *consumer;   /* in flight: who fetched it */
		struct queue *queue;                  /* delayed or queued: whose */
	} owner;
	uint64_t deadline_ms;             /* in flight: ack deadline; delayed: when due */
	uint32_t timer_index;             /* in the timers, or DELIVERY_NO_TIMER (queued) */
	uint32_t attempt : 31;            /* times handed out so far */
	uint32_t delayed : 1;             /* in the timers as delayed, not in flight */
};

/* A queue's deliveries by seq: chained buckets indexed by a multiplicative
 * hash of the seq (seqs are dense, so this spreads them evenly). */
struct delivery_table {
	struct delivery **buckets;        /* NULL, &inline_bucket or allocated */
	size_t mask;                      /* bucket count - 1 */
	size_t count;
	struct delivery *inline_bucket;   /* the one bucket while none can be allocated */
};

/* Links delivery.  Never fails: when the bucket array cannot grow, chains
 * get longer. */
void delivery_table_insert(struct delivery_table *table, struct delivery *delivery,
                           delivery_realloc_fn *allocate);
struct delivery *delivery_table_find(const struct delivery_table *table, uint64_t seq);
void delivery_table_remove(struct delivery_table *table, struct delivery *delivery);

/* Calls visit for every delivery (which may free it but not touch the
 * table), then frees the bucket array. */
void delivery_table_drain(struct delivery_table *table, void (*visit)(struct delivery *, void *),
                          void *context);

/* A binary min-heap of items ordered by a uint64_t deadline, each item
 * knowing its own index (a uint32_t) so that it can be moved or removed in
 * O(log n).  The offsets say where in an item the two fields are. */
struct timer_heap {
	void **items;
	size_t count;
	size_t capacity;
	size_t deadline_offset;
	size_t index_offset;
};

#define TIMER_HEAP_INIT(type, deadline, index) \
	{ NULL, 0, 0, offsetof(type, deadline), offsetof(type, index) }

/* Makes room for extra more items.  Returns 0, or -1 when out of memory
 * (the heap unchanged). */
int timer_heap_reserve(struct timer_heap *heap, size_t extra, delivery_realloc_fn *allocate);

/* Adds item (room reserved).  Returns true when it became the earliest. */
bool timer_heap_push(struct timer_heap *heap, void *item);

void timer_heap_remove(struct timer_heap *heap, void *item);

/* Restores order after item's deadline changed.  Returns true when it is
 * now the earliest. */
bool timer_heap_update(struct timer_heap *heap, void *item);

/* The earliest item, or NULL. */
void *timer_heap_first(const struct timer_heap *heap);

/* Deadline of item. */
uint64_t timer_heap_deadline(const struct timer_heap *heap, const void *item);

void timer_heap_free(struct timer_heap *heap);

#endif
