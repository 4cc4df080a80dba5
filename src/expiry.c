/* expiry.c - per-message expiry: a message published with a time to live
 * is never delivered after it, and its waiting copies are removed.
 *
 * A copy that waits in a queue (fresh, given back, or queued for retry)
 * past its message's deadline is removed, freed and counted:
 *  - before any fetch, held fetch or stream takes from the queue
 *    (queue->next_expiry says whether one may have expired), so nothing
 *    is handed out late;
 *  - by a sweep at queue->expiry_check_ms, run from the broker's timer
 *    thread, so that an unread queue's expired copies stop counting
 *    against the pending limits.  The queues to sweep form a min-heap.
 * When every fresh copy expires in the order it was queued (one ttl for
 * a subject, the usual case) the expired ones are a prefix of the ring
 * and a sweep costs what it removes; otherwise it scans the queue, and a
 * large queue is then swept at most every QUEUE_SIZE / EXPIRY_SCAN_RATE
 * ms.  Copies in flight have been delivered and do not expire; a delayed
 * one is looked at when it is queued again.  No expiry is journaled:
 * replay drops the copies whose deadline (stored as wall-clock time) has
 * passed.
 */
#include "autoconfig.h"

#include <stdlib.h>

#include "broker_internal.h"

#define EXPIRY_SCAN_RATE 1024        /* copies scanned per ms of delay, unordered queues */
#define EXPIRY_SCAN_DELAY_MAX 1000   /* ms */

uint64_t broker_expiry_deadline(struct broker *broker, uint64_t ttl_ms)
{
	if (ttl_ms == 0)
		ttl_ms = broker->limits.message_ttl_ms;
	return ttl_ms == 0 ? 0 : add_saturated(broker->clock_ms(), ttl_ms);
}

/* Lists queue to be swept at time at, or earlier than it was.  Short of
 * memory it stays unlisted: fetches still never hand out an expired copy.
 * Lock held. */
static void expiry_schedule(struct broker *broker, struct queue *queue, uint64_t at)
{
	if (queue->expiry_listed) {
		if (at >= queue->expiry_check_ms)
			return;
		queue->expiry_check_ms = at;
		if (timer_heap_update(&broker->expiry_timers, queue))
			broker_timers_changed(broker);
		return;
	}
	if (timer_heap_reserve(&broker->expiry_timers, 1, broker->allocate) != 0)
		return;
	queue->expiry_check_ms = at;
	queue->expiry_listed = true;
	if (timer_heap_push(&broker->expiry_timers, queue))
		broker_timers_changed(broker);
}

void broker_expiry_forget(struct broker *broker, struct queue *queue)
{
	if (queue->expiry_listed) {
		timer_heap_remove(&broker->expiry_timers, queue);
		queue->expiry_listed = false;
	}
}

void broker_expiry_note(struct broker *broker, struct queue *queue, const struct broker_message *message)
{
	uint64_t deadline = message->expires_ms;

	if (deadline == 0)
		return;
	if (queue->next_expiry == 0 || deadline < queue->next_expiry) {
		queue->next_expiry = deadline;
		expiry_schedule(broker, queue, deadline);
	}
}

struct sweep {
	struct broker *broker;
	struct queue *queue;
	uint64_t now;
	uint64_t next;           /* earliest deadline among the copies kept */
};

static bool sweep_expired(struct sweep *sweep, const struct broker_message *message)
{
	uint64_t deadline = message->expires_ms;

	if (deadline == 0)
		return false;
	if (deadline > sweep->now) {
		if (sweep->next == 0 || deadline < sweep->next)
			sweep->next = deadline;
		return false;
	}
	sweep->queue->held--;
	sweep->queue->held_bytes -= message->length;
	sweep->broker->stats.pending--;
	sweep->broker->stats.pending_bytes -= message->length;
	sweep->broker->stats.expired_copies++;
	return true;
}

static bool sweep_message(struct broker_message *message, void *context)
{
	if (!sweep_expired(context, message))
		return false;
	broker_message_release(message);
	return true;
}

static bool sweep_delivery(struct delivery *delivery, void *context)
{
	struct sweep *sweep = context;

	if (!sweep_expired(sweep, delivery->message))
		return false;
	delivery_table_remove(&sweep->queue->deliveries, delivery);
	broker_message_release(delivery->message);
	free(delivery);
	return true;
}

size_t broker_expiry_sweep(struct broker *broker, struct queue *queue, uint64_t now)
{
	struct sweep sweep = { broker, queue, now, 0 };
	struct queue_ring *ring = &queue->fresh;
	size_t removed = 0;

	if (queue->returned)
		removed += queue_returned_remove_if(queue, sweep_message, &sweep);
	if (queue->retry_count > 0)
		removed += queue_retry_remove_if(queue, sweep_delivery, &sweep);
	if (queue->expiry_unordered) {
		removed += queue_ring_remove_if(ring, sweep_message, &sweep);
		if (ring->count <= 1)
			queue->expiry_unordered = false;
	} else {
		/* The expired ones are the oldest; the first kept expires first. */
		while (ring->count > 0 && sweep_message(queue_ring_at(ring, 0), &sweep)) {
			queue_ring_pop(ring);
			removed++;
		}
	}
	queue_ring_trim(ring);
	queue->next_expiry = sweep.next;
	broker_expiry_forget(broker, queue);
	if (sweep.next != 0) {
		uint64_t at = sweep.next;

		if (queue->expiry_unordered) {
			uint64_t delay = ring->count / EXPIRY_SCAN_RATE;

			delay = delay < EXPIRY_SCAN_DELAY_MAX ? delay : EXPIRY_SCAN_DELAY_MAX;
			if (at < now + delay)
				at = now + delay;
		}
		expiry_schedule(broker, queue, at);
	}
	return removed;
}

uint64_t broker_expiry_run(struct broker *broker, uint64_t now)
{
	struct queue *queue;

	while ((queue = timer_heap_first(&broker->expiry_timers)) && queue->expiry_check_ms <= now)
		broker_expiry_sweep(broker, queue, now);
	return queue ? queue->expiry_check_ms - now : UINT64_MAX;
}
