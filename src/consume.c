/* consume.c - what consumers do: fetch (now, or held until a message
 * arrives), give back, acknowledge; in-flight deliveries, their deadlines
 * and the timer thread that keeps them.  See broker.c for the model. */
#include "autoconfig.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "broker_internal.h"

#define BROKER_RETRY_LATER_MS 100    /* when a copy cannot be requeued for lack of memory */
#define TAKE_NOT_RECORDED (-2)       /* queue_take(): the journal refused the take */

/* --- deliveries -------------------------------------------------------- */

/* Frees a delivery and its copy, wherever it is.  Lock held. */
void broker_delivery_remove(struct broker *broker, struct queue *queue, struct delivery *delivery)
{
	if (delivery->timer_index != DELIVERY_NO_TIMER) {
		if (!delivery->delayed) {
			queue->in_flight--;
			broker->stats.in_flight--;
		}
		timer_heap_remove(&broker->delivery_timers, delivery);
	} else {
		queue_retry_remove(queue, delivery);
	}
	delivery_table_remove(&queue->deliveries, delivery);
	queue->held--;
	queue->held_bytes -= delivery->message->length;
	broker->stats.pending--;
	broker->stats.pending_bytes -= delivery->message->length;
	broker_message_release(delivery->message);
	free(delivery);
}


/* Puts a delivery that is in flight or delayed back in its queue's retry
 * list and, when serve, hands it to a waiter; when the list cannot grow,
 * tries again a little later.  Lock held. */
void broker_requeue(struct broker *broker, struct queue *queue, struct delivery *delivery,
                             bool serve)
{
	if (!delivery->delayed) {
		queue->in_flight--;
		broker->stats.in_flight--;
	}
	if (queue_retry_insert(queue, delivery, broker->allocate) != 0) {
		delivery->owner.queue = queue;
		delivery->delayed = 1;
		delivery->deadline_ms = broker->clock_ms() + BROKER_RETRY_LATER_MS;
		timer_heap_update(&broker->delivery_timers, delivery);
		return;
	}
	timer_heap_remove(&broker->delivery_timers, delivery);
	delivery->timer_index = DELIVERY_NO_TIMER;
	delivery->delayed = 0;
	broker_expiry_note(broker, queue, delivery->message);
	if (serve)
		broker_serve_waiters(broker, queue);
}

/* Dead-letters or drops an in-flight copy that has used up max_deliver.
 * When the dead letter cannot be stored for lack of memory, the copy
 * stays in flight and is tried again a little later: returns false then,
 * true when the copy is gone.  Lock held. */
bool broker_delivery_exhausted(struct broker *broker, struct queue *queue, struct delivery *delivery)
{
	struct queue_ack_options *ack = queue->ack;
	struct broker_message *copy;
	enum broker_status status = BROKER_NO_SUBSCRIBER;
	size_t length = delivery->message->length;

	/* (A dead letter names a literal subject; the API sees to it.) */
	if (ack->dead_letter_length > 0 && broker_subject_literal(ack->dead_letter, ack->dead_letter_length)) {
		copy = broker_message_new(ack->dead_letter, ack->dead_letter_length, delivery->message->data, length);
		status = BROKER_NO_MEMORY;
		if (copy) {
			/* The dead letter may use the room the original frees. */
			broker->stats.pending--;
			broker->stats.pending_bytes -= length;
			status = broker_publish_locked(broker, ack->dead_letter, ack->dead_letter_length,
			                               hash_table_hash(&broker->subjects, ack->dead_letter,
			                                               ack->dead_letter_length), copy);
			broker->stats.pending++;
			broker->stats.pending_bytes += length;
			broker_message_release(copy);
		}
	}
	if (status == BROKER_NO_MEMORY || status == BROKER_STORAGE) {
		delivery->deadline_ms = broker->clock_ms() + BROKER_RETRY_LATER_MS;
		timer_heap_update(&broker->delivery_timers, delivery);
		return false;
	}
	if (status == BROKER_OK)
		broker->stats.dead_lettered++;
	else
		broker->stats.max_deliver_dropped++;
	if (broker->journal)
		durable_settled(broker, queue, &delivery->message->seq, 1);
	broker_delivery_remove(broker, queue, delivery);
	return true;
}

/* A delivery in flight was not acknowledged (its deadline passed, or it
 * was nacked): deliver it again after delay_ms, or give up on it after
 * max_deliver attempts.  Lock held. */
static void delivery_failed(struct broker *broker, struct delivery *delivery, uint64_t delay_ms)
{
	struct queue *queue = delivery->owner.consumer->queue;

	if (queue->ack->max_deliver > 0 && delivery->attempt >= queue->ack->max_deliver) {
		broker_delivery_exhausted(broker, queue, delivery);
		return;
	}
	if (delay_ms > 0) {
		queue->in_flight--;
		broker->stats.in_flight--;
		delivery->owner.queue = queue;
		delivery->delayed = 1;
		delivery->deadline_ms = add_saturated(broker->clock_ms(), delay_ms);
		if (timer_heap_update(&broker->delivery_timers, delivery))
			broker_timers_changed(broker);
		return;
	}
	broker_requeue(broker, queue, delivery, true);
}

/* --- taking messages from a queue ---------------------------------------- */

static void batch_clear(struct broker_batch *batch)
{
	*batch = (struct broker_batch){0};
}

void broker_batch_release(struct broker_batch *batch)
{
	for (size_t i = 0; i < batch->count; i++)
		broker_message_release(batch->messages[i]);
	if (batch->run)
		free(batch->run);
	else
		free(batch->messages);
	batch_clear(batch);
}

void broker_batch_drop_front(struct broker_batch *batch, size_t count)
{
	size_t left = batch->count - count;

	for (size_t i = 0; i < count; i++)
		broker_message_release(batch->messages[i]);
	memmove(batch->messages, batch->messages + count, left * sizeof(batch->messages[0]));
	if (batch->attempts)
		memmove(batch->attempts, batch->attempts + count, left * sizeof(batch->attempts[0]));
	batch->count = left;
	if (batch->run)
		batch->run->count = left;
}

/* How many available messages a fetch with these options takes. */
static size_t queue_take_count(const struct broker *broker, const struct queue *queue,
                               const struct broker_fetch_options *options)
{
	size_t available = queue_available(queue), count = available, bytes = 0;

	if (options->max > 0 && options->max < count)
		count = options->max;
	if (broker->limits.fetch_max_batch > 0 && broker->limits.fetch_max_batch < count)
		count = broker->limits.fetch_max_batch;
	if (options->max_bytes > 0) {
		for (size_t i = 0; i < count; i++) {
			struct delivery *delivery;
			const struct broker_message *message = queue_available_at(queue, i, &delivery);
			size_t length = options->cost ? options->cost(message, options->cost_context) : message->length;

			if (i > 0 && (length > options->max_bytes || bytes > options->max_bytes - length))
				return i;
			bytes += length;
		}
	}
	return count;
}

/* Copies references to the first count available messages into batch
 * without removing them.  Returns 0, or -1 when out of memory. */
static int queue_peek(struct broker *broker, struct queue *queue, size_t count,
                      struct broker_batch *batch)
{
	struct broker_message **messages;

	if (count == 0)
		return 0;
	messages = broker->allocate(NULL, count * (sizeof(*messages) + sizeof(uint32_t)));
	if (!messages)
		return -1;
	batch->messages = messages;
	batch->attempts = (uint32_t *)(void *)(messages + count);
	for (size_t i = 0; i < count; i++) {
		struct delivery *delivery;

		messages[i] = queue_available_at(queue, i, &delivery);
		broker_message_retain(messages[i]);
		batch->attempts[i] = delivery ? delivery->attempt + 1 : 1;
	}
	batch->count = count;
	batch->peeked = true;
	return 0;
}

/* At-most-once: removes the first count available messages into batch.
 * Returns 0, or -1 when out of memory (nothing removed). */
static int queue_take_plain(struct broker *broker, struct queue *queue, size_t count,
                            struct broker_batch *batch)
{
	struct queue_run *run;
	uint64_t bytes = 0;
	unsigned char *record = NULL;

	if (count == 0)
		return 0;
	/* The batch is a run of its own, so that a reply that cannot be sent
	 * can give it back without allocating. */
	run = queue_run_new(count, broker->allocate);
	if (!run)
		return -1;
	if (broker->journal && !(record = durable_take_begin(broker, queue, count))) {
		free(run);
		return TAKE_NOT_RECORDED;
	}
	for (size_t i = 0; i < count; i++) {
		struct broker_message *message = queue->returned ? queue_returned_pop(queue)
		                                                 : queue_ring_pop(&queue->fresh);

		run->messages[i] = message;
		bytes += message->length;
		if (record)
			record = durable_take_put(record, message->seq, 0, false);
	}
	if (record)
		durable_take_commit(broker, queue, count);
	run->count = count;
	queue_ring_trim(&queue->fresh);
	batch->messages = run->messages;
	batch->run = run;
	batch->count = count;
	queue->held -= count;
	queue->held_bytes -= bytes;
	broker->stats.pending -= count;
	broker->stats.pending_bytes -= bytes;
	broker->stats.delivered += count;
	return 0;
}

/* At-least-once: hands the first count available messages to consumer,
 * in flight until acked.  Returns 0, or -1 when out of memory (nothing
 * changed). */
static int queue_take_acked(struct broker *broker, struct queue *queue,
                            struct broker_subscriber *consumer, size_t count,
                            struct broker_batch *batch)
{
	size_t from_retry = count < queue->retry_count ? count : queue->retry_count;
	size_t fresh = count - from_retry;
	struct delivery **spare = NULL;
	struct broker_message **messages;
	unsigned char *record = NULL;
	uint64_t deadline;
	bool earliest = false;

	if (count == 0)
		return 0;
	messages = broker->allocate(NULL, count * (sizeof(*messages) + sizeof(uint32_t)));
	if (!messages)
		return -1;
	if (fresh > 0) {
		spare = broker->allocate(NULL, fresh * sizeof(*spare));
		if (!spare)
			goto fail;
		for (size_t i = 0; i < fresh; i++) {
			spare[i] = broker->allocate(NULL, sizeof(struct delivery));
			if (!spare[i]) {
				while (i-- > 0)
					free(spare[i]);
				goto fail;
			}
		}
	}
	if (timer_heap_reserve(&broker->delivery_timers, count, broker->allocate) != 0) {
		for (size_t i = 0; i < fresh; i++)
			free(spare[i]);
		goto fail;
	}
	if (broker->journal && !(record = durable_take_begin(broker, queue, count))) {
		for (size_t i = 0; i < fresh; i++)
			free(spare[i]);
		free(spare);
		free(messages);
		return TAKE_NOT_RECORDED;
	}

	batch->messages = messages;
	batch->attempts = (uint32_t *)(void *)(messages + count);
	batch->count = count;
	batch->in_flight = true;
	deadline = add_saturated(broker->clock_ms(), queue->ack->ack_wait_ms);
	for (size_t i = 0; i < count; i++) {
		struct delivery *delivery;

		if (i < from_retry) {
			delivery = queue->retry[queue->retry_head];
			queue_retry_remove(queue, delivery);
			if (delivery->attempt < (UINT32_MAX >> 1))
				delivery->attempt++;
			/* A copy given back unsent comes again as attempt 1. */
			if (delivery->attempt > 1)
				broker->stats.redelivered++;
		} else {
			delivery = spare[i - from_retry];
			delivery->message = queue_ring_pop(&queue->fresh);
			delivery->attempt = 1;
			delivery->timer_index = DELIVERY_NO_TIMER;
			delivery_table_insert(&queue->deliveries, delivery, broker->allocate);
		}
		delivery->owner.consumer = consumer;
		delivery->delayed = 0;
		delivery->deadline_ms = deadline;
		earliest |= timer_heap_push(&broker->delivery_timers, delivery);
		messages[i] = delivery->message;
		broker_message_retain(delivery->message);
		batch->attempts[i] = delivery->attempt;
		if (record)
			record = durable_take_put(record, delivery->message->seq, delivery->attempt, true);
	}
	if (record)
		durable_take_commit(broker, queue, count);
	free(spare);
	queue->in_flight += count;
	broker->stats.in_flight += count;
	broker->stats.delivered += count;
	if (earliest)
		broker_timers_changed(broker);
	return 0;

fail:
	free(spare);
	free(messages);
	return -1;
}

/* Takes messages for consumer from its queue as options say.  Returns 0,
 * -1 when out of memory or TAKE_NOT_RECORDED when the journal cannot
 * record the take (nothing changed, batch empty).  Lock held. */
static int queue_take(struct broker *broker, struct broker_subscriber *consumer,
                      const struct broker_fetch_options *options, struct broker_batch *batch)
{
	struct queue *queue = consumer->queue;
	size_t count;

	broker_expiry_due(broker, queue);
	count = queue_take_count(broker, queue, options);
	batch_clear(batch);
	batch->ack_queue = queue->ack != NULL;
	if (options->peek)
		return queue_peek(broker, queue, count, batch);
	if (queue->ack)
		return queue_take_acked(broker, queue, consumer, count, batch);
	return queue_take_plain(broker, queue, count, batch);
}

/* --- parked fetches ---------------------------------------------------- */

/* Completes a parked waiter with status and its batch; it is woken once
 * the lock is released.  Lock held. */
static void waiter_complete(struct broker *broker, struct broker_waiter *waiter,
                            enum broker_status status)
{
	struct broker_subscriber *subscriber = waiter->subscriber;

	queue_waiter_remove(subscriber->queue, waiter);
	timer_heap_remove(&broker->waiter_timers, waiter);
	subscriber->parked--;
	if (!waiter->stream)
		broker->stats.parked--;
	waiter->batch.ack_queue = subscriber->queue->ack != NULL;
	waiter->subscriber = NULL;
	waiter->status = status;
	waiter->wake_next = broker->wake_list;
	broker->wake_list = waiter;
}

/* Hands available messages to the queue's waiters, oldest waiter first.
 * Lock held. */
void broker_serve_waiters(struct broker *broker, struct queue *queue)
{
	if (queue->waiters)
		broker_expiry_due(broker, queue);
	while (queue->waiters && queue_available(queue) > 0) {
		struct broker_waiter *waiter = queue->waiters;

		if (queue_take(broker, waiter->subscriber, &waiter->options, &waiter->batch) != 0)
			return;   /* out of memory: it waits on, or times out */
		waiter_complete(broker, waiter, BROKER_OK);
	}
}

/* Completes every waiter of subscriber with BROKER_BAD_ID.  Lock held. */
void broker_cancel_waiters(struct broker *broker, struct broker_subscriber *subscriber)
{
	struct broker_waiter *waiter = subscriber->queue->waiters;

	while (waiter && subscriber->parked > 0) {
		struct broker_waiter *next = waiter->queue_next;

		if (waiter->subscriber == subscriber) {
			batch_clear(&waiter->batch);
			waiter_complete(broker, waiter, BROKER_BAD_ID);
		}
		waiter = next;
	}
}

/* --- timers ------------------------------------------------------------ */

/* Handles every deadline up to now.  Returns ms until the next, or
 * UINT64_MAX.  Lock held. */
static uint64_t broker_run_timers_locked(struct broker *broker)
{
	uint64_t now = broker->clock_ms(), next = UINT64_MAX;
	struct delivery *delivery;
	struct broker_waiter *waiter;

	while ((delivery = timer_heap_first(&broker->delivery_timers)) && delivery->deadline_ms <= now) {
		if (delivery->delayed)
			broker_requeue(broker, delivery->owner.queue, delivery, true);
		else
			delivery_failed(broker, delivery, 0);
	}
	while ((waiter = timer_heap_first(&broker->waiter_timers)) && waiter->deadline_ms <= now) {
		batch_clear(&waiter->batch);
		waiter_complete(broker, waiter, BROKER_OK);
	}
	if ((delivery = timer_heap_first(&broker->delivery_timers)))
		next = delivery->deadline_ms - now;
	if ((waiter = timer_heap_first(&broker->waiter_timers)) && waiter->deadline_ms - now < next)
		next = waiter->deadline_ms - now;
	if (timer_heap_first(&broker->expiry_timers)) {
		uint64_t expiry = broker_expiry_run(broker, now);

		next = expiry < next ? expiry : next;
	}
	return next;
}

uint64_t broker_run_timers(struct broker *broker)
{
	uint64_t next;

	pthread_mutex_lock(&broker->lock);
	next = broker_run_timers_locked(broker);
	broker_unlock(broker);
	return next;
}

static void *broker_timer_main(void *argument)
{
	struct broker *broker = argument;

	pthread_mutex_lock(&broker->lock);
	while (!broker->timer_stop) {
		uint64_t next;
		struct timespec until;

		broker->timers_changed = false;
		next = broker_run_timers_locked(broker);
		if (broker->wake_list) {
			broker_unlock(broker);
			pthread_mutex_lock(&broker->lock);
			continue;
		}
		if (broker->timers_changed || broker->timer_stop)
			continue;
		clock_gettime(CLOCK_MONOTONIC, &until);
		if (next > 3600u * 1000u)
			next = 3600u * 1000u;
		/* One ms more: the clock is read in whole ms. */
		next += 1;
		until.tv_sec += (time_t)(next / 1000u);
		until.tv_nsec += (long)(next % 1000u) * 1000000L;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&broker->timer_cond, &broker->lock, &until);
	}
	pthread_mutex_unlock(&broker->lock);
	return NULL;
}

int broker_timer_start(struct broker *broker)
{
	int error;

	pthread_mutex_lock(&broker->lock);
	broker->timer_stop = false;
	broker->timer_running = true;
	pthread_mutex_unlock(&broker->lock);
	error = pthread_create(&broker->timer_thread, NULL, broker_timer_main, broker);
	if (error != 0) {
		pthread_mutex_lock(&broker->lock);
		broker->timer_running = false;
		pthread_mutex_unlock(&broker->lock);
		errno = error;
		return -1;
	}
	return 0;
}

void broker_timer_stop(struct broker *broker)
{
	pthread_mutex_lock(&broker->lock);
	if (!broker->timer_running) {
		pthread_mutex_unlock(&broker->lock);
		return;
	}
	broker->timer_stop = true;
	pthread_cond_signal(&broker->timer_cond);
	pthread_mutex_unlock(&broker->lock);
	pthread_join(broker->timer_thread, NULL);
	pthread_mutex_lock(&broker->lock);
	broker->timer_running = false;
	pthread_mutex_unlock(&broker->lock);
}

void broker_wake_all(struct broker *broker)
{
	struct broker_waiter *waiter;

	pthread_mutex_lock(&broker->lock);
	broker->closing = true;
	while ((waiter = timer_heap_first(&broker->waiter_timers))) {
		/* "What they have": messages arrived would have woken it. */
		batch_clear(&waiter->batch);
		waiter_complete(broker, waiter, BROKER_OK);
	}
	broker_unlock(broker);
}

bool broker_waiter_cancel(struct broker *broker, struct broker_waiter *waiter)
{
	bool parked;

	pthread_mutex_lock(&broker->lock);
	parked = waiter->subscriber != NULL;
	if (parked) {
		batch_clear(&waiter->batch);
		waiter_complete(broker, waiter, BROKER_OK);
		/* The caller answers it: not woken. */
		broker->wake_list = waiter->wake_next;
	}
	broker_unlock(broker);
	return parked;
}

/* --- fetch ------------------------------------------------------------- */

static const struct broker_fetch_options fetch_everything = { 0, 0, false, NULL, NULL };

enum broker_status broker_fetch_wait(struct broker *broker,
                                     const char *subject, size_t subject_length,
                                     const char *id, size_t id_length,
                                     const struct broker_fetch_options *options,
                                     uint64_t wait_ms, struct broker_waiter *waiter)
{
	enum broker_status status;
	struct broker_subscriber *subscriber;

	batch_clear(&waiter->batch);
	if (!options)
		options = &fetch_everything;
	subscriber = broker_lock_subscriber(broker, subject, subject_length, id, id_length, &status);
	if (!subscriber)
		return status;
	/* Deadlines that have passed count before this fetch is served. */
	if (timer_heap_first(&broker->delivery_timers))
		broker_run_timers_locked(broker);
	broker_touch(broker, subscriber);
	broker_expiry_due(broker, subscriber->queue);
	if (wait_ms > 0 && !broker->closing && queue_available(subscriber->queue) == 0 &&
	    (waiter->stream || broker->stats.parked < broker->limits.max_parked_fetches) &&
	    timer_heap_reserve(&broker->waiter_timers, 1, broker->allocate) == 0) {
		waiter->subscriber = subscriber;
		waiter->options = *options;
		waiter->deadline_ms = add_saturated(broker->clock_ms(), wait_ms);
		waiter->status = BROKER_OK;
		queue_waiter_append(subscriber->queue, waiter);
		if (timer_heap_push(&broker->waiter_timers, waiter))
			broker_timers_changed(broker);
		subscriber->parked++;
		if (!waiter->stream)
			broker->stats.parked++;
		broker_unlock(broker);
		return BROKER_PARKED;
	}
	switch (queue_take(broker, subscriber, options, &waiter->batch)) {
	case 0:
		status = BROKER_OK;
		break;
	case TAKE_NOT_RECORDED:
		status = BROKER_STORAGE;
		break;
	default:
		status = BROKER_NO_MEMORY;
		break;
	}
	broker_unlock(broker);
	return status;
}

enum broker_status broker_fetch(struct broker *broker,
                                const char *subject, size_t subject_length,
                                const char *id, size_t id_length,
                                const struct broker_fetch_options *options,
                                struct broker_batch *batch)
{
	struct broker_waiter waiter;
	enum broker_status status;

	status = broker_fetch_wait(broker, subject, subject_length, id, id_length, options, 0, &waiter);
	*batch = waiter.batch;
	return status;
}

void broker_batch_give_back(struct broker *broker, const char *id, size_t id_length,
                            struct broker_batch *batch)
{
	struct broker_subscriber *subscriber = NULL;
	struct hash_node *node;
	struct queue *queue;
	uint64_t bytes = 0;

	if (batch->count == 0 || batch->peeked || id_length != BROKER_ID_LENGTH) {
		broker_batch_release(batch);
		return;
	}
	pthread_mutex_lock(&broker->lock);
	node = hash_table_find(&broker->subscribers, hash_table_hash(&broker->subscribers, id, id_length),
	                       id, id_length, broker_subscriber_match);
	if (node)
		subscriber = hash_entry(node, struct broker_subscriber, node);
	if (!subscriber || (batch->in_flight && !subscriber->queue->ack) ||
	    (!batch->in_flight && subscriber->queue->ack)) {
		broker_unlock(broker);
		broker_batch_release(batch);
		return;
	}
	queue = subscriber->queue;
	if (batch->in_flight) {
		/* The deliveries hold their own references: take them back
		 * from the consumer as if never handed out.  Only the copies
		 * still as this batch got them: one queued again meanwhile (a
		 * stream resuming from a last event id, its ack wait) and
		 * taken since, by a newer stream of the same subscriber, has a
		 * higher attempt and is that one's now. */
		for (size_t i = 0; i < batch->count; i++) {
			struct delivery *delivery = delivery_table_find(&queue->deliveries, batch->messages[i]->seq);

			if (delivery && delivery_in_flight(delivery) && delivery->owner.consumer == subscriber &&
			    (!batch->attempts || delivery->attempt == batch->attempts[i])) {
				delivery->attempt--;
				broker_requeue(broker, queue, delivery, false);
			}
		}
		broker_serve_waiters(broker, queue);
		broker_unlock(broker);
		broker_batch_release(batch);
		return;
	}
	for (size_t i = 0; i < batch->count; i++) {
		bytes += batch->messages[i]->length;
		broker_expiry_note(broker, queue, batch->messages[i]);
	}
	if (broker->journal)
		durable_returned(broker, queue, batch->messages, batch->count);
	queue_give_back(queue, batch->run, broker->allocate);
	queue->held += batch->count;
	queue->held_bytes += bytes;
	broker->stats.pending += batch->count;
	broker->stats.pending_bytes += bytes;
	batch_clear(batch);
	broker_serve_waiters(broker, queue);
	broker_unlock(broker);
}

/* --- streams ------------------------------------------------------------ */

enum broker_status broker_stream_opened(struct broker *broker, const char *subject, size_t subject_length,
                                        const char *id, size_t id_length)
{
	enum broker_status status;
	struct broker_subscriber *subscriber;

	subscriber = broker_lock_subscriber(broker, subject, subject_length, id, id_length, &status);
	if (!subscriber)
		return status;
	subscriber->streaming++;
	broker_touch(broker, subscriber);
	broker_unlock(broker);
	return BROKER_OK;
}

enum broker_status broker_stream_resend(struct broker *broker, const char *subject, size_t subject_length,
                                        const char *id, size_t id_length, uint64_t after, size_t *resent)
{
	enum broker_status status;
	struct broker_subscriber *subscriber;
	struct queue *queue;

	*resent = 0;
	subscriber = broker_lock_subscriber(broker, subject, subject_length, id, id_length, &status);
	if (!subscriber)
		return status;
	queue = subscriber->queue;
	if (queue->ack) {
		/* Requeueing moves deliveries between the timers and the
		 * retry list; the table is left as it is. */
		for (size_t i = 0; queue->deliveries.buckets && i <= queue->deliveries.mask; i++) {
			for (struct delivery *d = queue->deliveries.buckets[i]; d; d = d->table_next) {
				if (!delivery_in_flight(d) || d->owner.consumer != subscriber || d->message->seq <= after)
					continue;
				broker_requeue(broker, queue, d, false);
				(*resent)++;
			}
		}
		broker_serve_waiters(broker, queue);
	}
	broker_unlock(broker);
	return BROKER_OK;
}

void broker_stream_closed(struct broker *broker, const char *id, size_t id_length)
{
	struct hash_node *node;

	if (id_length != BROKER_ID_LENGTH)
		return;
	pthread_mutex_lock(&broker->lock);
	node = hash_table_find(&broker->subscribers, hash_table_hash(&broker->subscribers, id, id_length),
	                       id, id_length, broker_subscriber_match);
	if (node) {
		struct broker_subscriber *subscriber = hash_entry(node, struct broker_subscriber, node);

		if (subscriber->streaming > 0)
			subscriber->streaming--;
		broker_touch(broker, subscriber);
	}
	pthread_mutex_unlock(&broker->lock);
}

/* --- acknowledgements -------------------------------------------------- */

enum settle_kind { SETTLE_ACK, SETTLE_NACK, SETTLE_EXTEND };

static enum broker_status broker_settle(struct broker *broker, const char *subject, size_t subject_length,
                                        const char *id, size_t id_length, enum settle_kind kind,
                                        const uint64_t *seqs, size_t count, uint64_t delay_ms,
                                        size_t *settled)
{
	enum broker_status status;
	struct broker_subscriber *subscriber;
	struct queue *queue;
	bool earliest = false;
	uint64_t *acked = NULL;
	size_t acked_count = 0;

	*settled = 0;
	subscriber = broker_lock_subscriber(broker, subject, subject_length, id, id_length, &status);
	if (!subscriber)
		return status;
	queue = subscriber->queue;
	if (!queue->ack) {
		pthread_mutex_unlock(&broker->lock);
		return BROKER_NOT_ACK;
	}
	broker_touch(broker, subscriber);
	if (kind == SETTLE_ACK && broker->journal)
		acked = malloc(count * sizeof(*acked));
	for (size_t i = 0; i < count; i++) {
		struct delivery *delivery = delivery_table_find(&queue->deliveries, seqs[i]);

		if (!delivery || !delivery_in_flight(delivery) || delivery->owner.consumer != subscriber)
			continue;
		(*settled)++;
		switch (kind) {
		case SETTLE_ACK:
			broker->stats.acked++;
			if (acked)
				acked[acked_count++] = seqs[i];
			else if (broker->journal)
				durable_settled(broker, queue, &seqs[i], 1);
			broker_delivery_remove(broker, queue, delivery);
			break;
		case SETTLE_NACK:
			broker->stats.nacked++;
			delivery_failed(broker, delivery, delay_ms);
			break;
		case SETTLE_EXTEND:
			delivery->deadline_ms = add_saturated(broker->clock_ms(), queue->ack->ack_wait_ms);
			earliest |= timer_heap_update(&broker->delivery_timers, delivery);
			break;
		}
	}
	if (acked) {
		durable_settled(broker, queue, acked, acked_count);
		free(acked);
	}
	if (earliest)
		broker_timers_changed(broker);
	broker_unlock(broker);
	return BROKER_OK;
}

enum broker_status broker_ack(struct broker *broker, const char *subject, size_t subject_length,
                              const char *id, size_t id_length,
                              const uint64_t *seqs, size_t count, size_t *settled)
{
	return broker_settle(broker, subject, subject_length, id, id_length, SETTLE_ACK,
	                     seqs, count, 0, settled);
}

enum broker_status broker_nack(struct broker *broker, const char *subject, size_t subject_length,
                               const char *id, size_t id_length,
                               const uint64_t *seqs, size_t count, uint64_t delay_ms,
                               size_t *settled)
{
	return broker_settle(broker, subject, subject_length, id, id_length, SETTLE_NACK,
	                     seqs, count, delay_ms, settled);
}

enum broker_status broker_extend(struct broker *broker, const char *subject, size_t subject_length,
                                 const char *id, size_t id_length,
                                 const uint64_t *seqs, size_t count, size_t *settled)
{
	return broker_settle(broker, subject, subject_length, id, id_length, SETTLE_EXTEND,
	                     seqs, count, 0, settled);
}

