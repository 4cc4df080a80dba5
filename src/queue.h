/* queue.h - one consumer's (a subscriber's or a group's) pending messages.
 *
 * Messages leave a queue in seq order.  Fresh copies wait in a ring of bare
 * message pointers (no allocation and 8 bytes per copy); copies that come
 * back wait in front of them, also in seq order:
 *  - at-most-once queues: a batch whose reply could not be sent is given
 *    back whole (a struct queue_run, the very array the batch was);
 *  - ack queues: struct delivery objects (delivery.h) for messages that
 *    were nacked or whose ack deadline passed (the "retry" array).
 * Everything that leaves a queue has a lower seq than anything in the
 * ring, so "returned/retry first, then the ring" is seq order.
 *
 * Nothing here locks or counts limits: the broker does, under its lock.
 */
#ifndef GOPHERMQ_QUEUE_H
#define GOPHERMQ_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "delivery.h"
#include "message.h"

struct broker_waiter;
struct broker_subject;

/* A growable ring of message pointers, oldest first.  Most queues hold zero
 * or one message between fetches, so a ring without slots (capacity 0)
 * keeps its one message inline in single. */
struct queue_ring {
	union {
		struct broker_message **slots;   /* capacity > 0 */
		struct broker_message *single;   /* capacity 0 and count 1 */
	};
	size_t capacity;                         /* 0 or a power of two */
	size_t head;
	size_t count;
};

/* A run of message pointers in seq order, from head: the array of a plain
 * fetch's batch and, given back, one of its queue's returned runs. */
struct queue_run {
	struct queue_run *next;
	size_t head;
	size_t count;
	struct broker_message *messages[];
};

/* The at-least-once settings of a queue (all of a group's members agree). */
struct queue_ack_options {
	uint64_t ack_wait_ms;
	uint32_t max_deliver;         /* 0 = no limit */
	size_t dead_letter_length;    /* 0 = none */
	char *dead_letter;            /* NUL-terminated, owned */
};

/* The fields a publish touches come first, within one 64-byte line. */
struct queue {
	struct queue_ring fresh;              /* never handed out, seq order */
	struct queue *subject_next;           /* the subject's queues */
	uint64_t held_bytes;                  /* payload bytes of every copy held */
	struct broker_waiter *waiters;        /* parked fetches, oldest first */
	uint64_t held;                        /* copies held: every state below */

	struct queue *subject_prev;
	struct broker_subject *subject;
	struct broker_waiter *waiters_tail;
	size_t batch_reserve;                 /* scratch of a batch publish */

	/* At-most-once: runs given back, ordered by their first seq. */
	struct queue_run *returned;
	size_t returned_count;                /* messages in them */

	/* Ack queues only (ack non-NULL). */
	struct queue_ack_options *ack;
	struct delivery **retry;              /* queued deliveries, seq order */
	size_t retry_head, retry_count, retry_capacity;
	struct delivery_table deliveries;     /* every delivery, by seq */
	uint64_t in_flight;                   /* deliveries in flight */

	/* Per-message expiry (expiry.c).  Copies waiting here (not those in
	 * flight or delayed) whose deadline has passed are removed before
	 * any fetch and by a sweep at expiry_check_ms. */
	uint64_t next_expiry;                 /* no waiting copy expires before; 0 = none expires */
	uint64_t last_expiry;                 /* of the newest fresh copy; 0 = never */
	uint64_t expiry_check_ms;             /* when the sweep looks next */
	uint32_t expiry_timer_index;          /* in the broker's expiry_timers, when listed */
	bool expiry_listed;
	bool expiry_unordered;                /* fresh copies do not expire in ring order */

	/* Its name in the journal: the subscriber's id or the group's key. */
	const char *key;
	size_t key_length;
	uint64_t last_seq;                    /* replay: the highest seq appended */
};

typedef void *queue_realloc_fn(void *pointer, size_t size);

/* --- the ring ---------------------------------------------------------- */

/* Makes room for extra more pointers.  Returns 0, or -1 when out of memory
 * (the ring unchanged, though perhaps larger). */
int queue_ring_reserve(struct queue_ring *ring, size_t extra, queue_realloc_fn *allocate);

/* Appends message; room must have been reserved. */
void queue_ring_push(struct queue_ring *ring, struct broker_message *message);

struct broker_message *queue_ring_at(const struct queue_ring *ring, size_t index);

/* Removes the oldest message and returns it (the reference passes to the
 * caller).  The ring must not be empty. */
struct broker_message *queue_ring_pop(struct queue_ring *ring);

/* Frees the slots of an empty ring that has grown large, so that a
 * drained backlog's memory goes back. */
void queue_ring_trim(struct queue_ring *ring);

/* Drops every reference and frees the slots. */
void queue_ring_clear(struct queue_ring *ring);

/* Removes the messages for which drop() returns true (drop() takes their
 * reference), keeping the others in order.  Returns how many it removed. */
size_t queue_ring_remove_if(struct queue_ring *ring,
                            bool (*drop)(struct broker_message *message, void *context), void *context);

/* --- returned messages (at-most-once) ------------------------------------ */

/* An empty run with room for count messages, or NULL. */
struct queue_run *queue_run_new(size_t count, queue_realloc_fn *allocate);

/* Gives back a run of messages (the references pass to the queue) in seq
 * order before everything else.  Never fails: when the runs cannot be
 * merged into one for lack of memory, run is linked in last and the
 * messages are sorted across the runs in place (the runs' concatenation
 * is always in seq order). */
void queue_give_back(struct queue *queue, struct queue_run *run, queue_realloc_fn *allocate);

/* Removes and returns the oldest returned message; there must be one. */
struct broker_message *queue_returned_pop(struct queue *queue);

/* Drops every returned message. */
void queue_returned_clear(struct queue *queue);

/* As queue_ring_remove_if(), for the returned messages. */
size_t queue_returned_remove_if(struct queue *queue,
                                bool (*drop)(struct broker_message *message, void *context), void *context);

/* --- retry list (ack queues) ----------------------------------------------- */

/* Inserts delivery in seq order.  Returns 0, or -1 when the list cannot
 * grow (nothing changed). */
int queue_retry_insert(struct queue *queue, struct delivery *delivery, queue_realloc_fn *allocate);

/* Removes delivery from the retry list, wherever it is. */
void queue_retry_remove(struct queue *queue, struct delivery *delivery);

/* Removes the queued deliveries for which drop() returns true from the
 * retry list (drop() disposes of them), keeping the others in order.
 * Returns how many it removed. */
size_t queue_retry_remove_if(struct queue *queue, bool (*drop)(struct delivery *delivery, void *context),
                             void *context);

/* --- order of availability --------------------------------------------- */

/* Messages a fetch could take now: returned or retried ones, then fresh. */
size_t queue_available(const struct queue *queue);

/* The index-th available message (0 = next to be taken) and, for an ack
 * queue, the delivery it already has (NULL for a fresh one). */
struct broker_message *queue_available_at(const struct queue *queue, size_t index,
                                          struct delivery **delivery);

/* --- waiters ----------------------------------------------------------- */

void queue_waiter_append(struct queue *queue, struct broker_waiter *waiter);
void queue_waiter_remove(struct queue *queue, struct broker_waiter *waiter);

#endif
