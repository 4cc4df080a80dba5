/* broker.c - subjects, subscriptions, queues, deliveries, parked fetches.
 *
 * The model (all guarded by broker->lock):
 *  - A message (message.h) is stored once, refcounted, and named by its
 *    seq, given under the lock in the order publishes are accepted.
 *  - A subject (hash table name -> struct broker_subject) exists while it
 *    has subscribers.  It links the queues a publish fills: one per plain
 *    subscriber and one per group.
 *  - A subscriber (hash table id -> struct broker_subscriber) reads one
 *    queue: its own, or its group's.  Subscribers sit in the activity
 *    list, oldest subscribe/fetch first, so idle expiry pops from the head.
 *  - A group (hash table "subject\0name" -> struct broker_group) owns the
 *    queue its members share and exists while it has members.
 *  - A queue (queue.h) holds copies in seq order: fresh ones in a ring of
 *    bare pointers (8 bytes per copy, no allocation per copy), and in
 *    front of them copies that came back.  An ack queue also owns a
 *    struct delivery (delivery.h) for each copy handed out at least once
 *    and not yet acknowledged, found by seq in its delivery_table.
 *  - delivery_timers: one min-heap of every delivery in flight (by ack
 *    deadline) or delayed by a nack (by due time).  waiter_timers: a heap
 *    of parked fetches by the end of their wait.  broker_run_timers()
 *    serves both, from the timer thread and at the start of every fetch,
 *    so a deadline is kept to the millisecond; nothing ever scans the
 *    subscribers.
 *  - A parked fetch is a struct broker_waiter on its queue's waiter list.
 *    Whatever makes a message available on a queue (publish, nack,
 *    timeout, give-back) serves that queue's waiters in order; wake()
 *    callbacks run after the lock is released (broker_unlock).
 *
 * Keys are hashed (SipHash) before the lock is taken and messages are
 * created by the caller, so critical sections link, unlink and count, and
 * at most grow an array (amortised) or allocate a fetched batch.
 *
 * Room left for later features:
 *  - durability: every state change goes through a few functions here
 *    (publish_locked, queue_take, delivery_remove, the subscribe and
 *    unsubscribe paths): a journal records at those points.
 *  - wildcard subjects: a token trie consulted next to the subject table
 *    yields more queues for publish_locked to fill; the meta form's
 *    subject would then come from the message (published subject).
 *  - per-message expiry: a third heap, of messages by expiry.
 *  - streams: a stream is a waiter that stays parked after each wake.
 */
#include "autoconfig.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "broker.h"
#include "delivery.h"
#include "hash.h"
#include "queue.h"
#include "uuid.h"

#define BROKER_EXPIRE_BATCH 256      /* subscribers expired per lock hold */
#define BROKER_RETRY_LATER_MS 100    /* when a copy cannot be requeued for lack of memory */

struct broker_subject {
	struct hash_node node;                    /* in broker->subjects */
	struct queue *queues;                     /* via queue->subject_next/prev */
	size_t queue_count;
	size_t subscriber_count;
	size_t name_length;
	char name[];                              /* NUL-terminated as well */
};

struct broker_group {
	struct hash_node node;                    /* in broker->groups */
	struct queue queue;
	size_t member_count;
	size_t key_length;
	char key[];                               /* subject, NUL, name, NUL */
};

struct broker_subscriber {
	struct queue own;                         /* plain subscribers' queue; first: publish reads it */
	struct hash_node node;                    /* in broker->subscribers */
	struct queue *queue;                      /* &own or &group->queue */
	struct broker_group *group;
	struct broker_subject *subject;
	struct broker_subscriber *idle_prev, *idle_next;  /* activity order */
	uint64_t last_active;                     /* broker clock, seconds */
	size_t parked;                            /* its waiters parked now */
	char id[BROKER_ID_LENGTH + 1];
};

struct broker {
	pthread_mutex_t lock;
	struct hash_table subjects;
	struct hash_table subscribers;
	struct hash_table groups;
	struct broker_subscriber *idle_head, *idle_tail;
	struct broker_limits limits;
	size_t max_subject_length;   /* copy of limits', atomic: read unlocked */
	uint64_t (*clock_ms)(void);
	void *(*allocate)(void *pointer, size_t size);
	struct broker_stats stats;   /* subscribers, subjects, groups come from the tables */
	struct timer_heap delivery_timers;
	struct timer_heap waiter_timers;
	struct broker_waiter *wake_list;   /* to wake once the lock is released */
	/* The timer thread. */
	pthread_cond_t timer_cond;
	pthread_t timer_thread;
	bool timer_running;
	bool timer_stop;
	bool timers_changed;         /* an earlier deadline since the thread looked */
	bool closing;                /* broker_wake_all(): park no more fetches */
};

/* --- small helpers ----------------------------------------------------- */

static uint64_t broker_clock_monotonic(void)
{
	struct timespec now;

	if (clock_gettime(CLOCK_MONOTONIC, &now) != 0)
		return 0;
	return (uint64_t)now.tv_sec * 1000u + (uint64_t)now.tv_nsec / 1000000u;
}

static void *broker_default_realloc(void *pointer, size_t size)
{
	return realloc(pointer, size);
}

static uint64_t add_saturated(uint64_t a, uint64_t b)
{
	return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static size_t broker_max_subject_length(struct broker *broker)
{
	return __atomic_load_n(&broker->max_subject_length, __ATOMIC_RELAXED);
}

/* Releases the lock, then wakes the waiters completed meanwhile. */
static void broker_unlock(struct broker *broker)
{
	struct broker_waiter *waiter = broker->wake_list;

	broker->wake_list = NULL;
	pthread_mutex_unlock(&broker->lock);
	while (waiter) {
		struct broker_waiter *next = waiter->wake_next;

		waiter->wake(waiter);
		waiter = next;
	}
}

/* Tells the timer thread about a deadline earlier than it knew.  Lock held. */
static void broker_timers_changed(struct broker *broker)
{
	broker->timers_changed = true;
	if (broker->timer_running)
		pthread_cond_signal(&broker->timer_cond);
}

/* --- subjects ---------------------------------------------------------- */

/* The rules of the API contract, plus: a NUL byte makes a subject invalid.
 * JSON can carry one ("\u0000"), but it is no sensible subject and would
 * cut the subject short wherever it is handled as a C string (logs). */
bool broker_subject_valid(const char *subject, size_t length, size_t max_length)
{
	if (length == 0 || (max_length > 0 && length > max_length))
		return false;
	if (subject[0] == '.' || subject[length - 1] == '.')
		return false;
	for (size_t i = 0; i < length; i++) {
		switch (subject[i]) {
		case ' ': case '\t': case '\r': case '\n': case '\0':
			return false;
		case '.':
			/* i + 1 < length: the last byte is no dot */
			if (subject[i + 1] == '.')
				return false;
			break;
		default:
			break;
		}
	}
	return true;
}

bool broker_group_valid(const char *name, size_t length)
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

static bool broker_subject_match(const struct hash_node *node, const void *key, size_t length)
{
	const struct broker_subject *subject = hash_entry(node, struct broker_subject, node);

	return subject->name_length == length && memcmp(subject->name, key, length) == 0;
}

static bool broker_subscriber_match(const struct hash_node *node, const void *key, size_t length)
{
	const struct broker_subscriber *subscriber = hash_entry(node, struct broker_subscriber, node);

	return length == BROKER_ID_LENGTH && memcmp(subscriber->id, key, BROKER_ID_LENGTH) == 0;
}

static bool broker_group_match(const struct hash_node *node, const void *key, size_t length)
{
	const struct broker_group *group = hash_entry(node, struct broker_group, node);

	return group->key_length == length && memcmp(group->key, key, length) == 0;
}

static struct broker_subject *broker_subject_new(const char *name, size_t length)
{
	struct broker_subject *subject = malloc(sizeof(*subject) + length + 1);

	if (!subject)
		return NULL;
	*subject = (struct broker_subject){0};
	subject->name_length = length;
	memcpy(subject->name, name, length);
	subject->name[length] = '\0';
	return subject;
}

static void subject_link_queue(struct broker_subject *subject, struct queue *queue)
{
	queue->subject = subject;
	queue->subject_prev = NULL;
	queue->subject_next = subject->queues;
	if (subject->queues)
		subject->queues->subject_prev = queue;
	subject->queues = queue;
	subject->queue_count++;
}

static void subject_unlink_queue(struct broker_subject *subject, struct queue *queue)
{
	if (queue->subject_prev)
		queue->subject_prev->subject_next = queue->subject_next;
	else
		subject->queues = queue->subject_next;
	if (queue->subject_next)
		queue->subject_next->subject_prev = queue->subject_prev;
	queue->subject_next = queue->subject_prev = NULL;
	queue->subject = NULL;
	subject->queue_count--;
}

/* --- deliveries -------------------------------------------------------- */

static bool delivery_in_flight(const struct delivery *delivery)
{
	return delivery->timer_index != DELIVERY_NO_TIMER && !delivery->delayed;
}

/* Frees a delivery and its copy, wherever it is.  Lock held. */
static void delivery_remove(struct broker *broker, struct queue *queue, struct delivery *delivery)
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

static void queue_serve_waiters(struct broker *broker, struct queue *queue);
static enum broker_status publish_locked(struct broker *broker, struct broker_subject *subject,
                                         struct broker_message *message);

/* Puts a delivery that is in flight or delayed back in its queue's retry
 * list and, when serve, hands it to a waiter; when the list cannot grow,
 * tries again a little later.  Lock held. */
static void delivery_requeue(struct broker *broker, struct queue *queue, struct delivery *delivery,
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
	if (serve)
		queue_serve_waiters(broker, queue);
}

/* Dead-letters or drops a copy that has used up max_deliver.  Lock held. */
static void delivery_exhausted(struct broker *broker, struct queue *queue, struct delivery *delivery)
{
	struct queue_ack_options *ack = queue->ack;
	struct hash_node *node;
	struct broker_message *copy;
	bool lettered = false;

	if (ack->dead_letter_length > 0 &&
	    (node = hash_table_find(&broker->subjects,
	                            hash_table_hash(&broker->subjects, ack->dead_letter, ack->dead_letter_length),
	                            ack->dead_letter, ack->dead_letter_length, broker_subject_match)) != NULL &&
	    (copy = broker_message_new(delivery->message->data, delivery->message->length)) != NULL) {
		lettered = publish_locked(broker, hash_entry(node, struct broker_subject, node), copy) == BROKER_OK;
		broker_message_release(copy);
	}
	if (lettered)
		broker->stats.dead_lettered++;
	else
		broker->stats.max_deliver_dropped++;
	delivery_remove(broker, queue, delivery);
}

/* A delivery in flight was not acknowledged (its deadline passed, or it
 * was nacked): deliver it again after delay_ms, or give up on it after
 * max_deliver attempts.  Lock held. */
static void delivery_failed(struct broker *broker, struct delivery *delivery, uint64_t delay_ms)
{
	struct queue *queue = delivery->owner.consumer->queue;

	if (queue->ack->max_deliver > 0 && delivery->attempt >= queue->ack->max_deliver) {
		delivery_exhausted(broker, queue, delivery);
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
	delivery_requeue(broker, queue, delivery, true);
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
	free(batch->messages);
	batch_clear(batch);
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
			size_t length = queue_available_at(queue, i, &delivery)->length;

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
	struct broker_message **messages;
	uint64_t bytes = 0;
	size_t i = 0;

	if (count == 0)
		return 0;
	if (queue->returned_count == 0 && count == queue->fresh.count) {
		/* The common case: everything, in the ring's own array. */
		messages = queue_ring_take_all(&queue->fresh, broker->allocate);
		if (!messages)
			return -1;
		for (; i < count; i++)
			bytes += messages[i]->length;
	} else {
		messages = broker->allocate(NULL, count * sizeof(*messages));
		if (!messages)
			return -1;
		for (; i < count && queue->returned_count > 0; i++) {
			messages[i] = queue->returned[queue->returned_head++];
			queue->returned_count--;
			bytes += messages[i]->length;
		}
		if (queue->returned_count == 0) {
			free(queue->returned);
			queue->returned = NULL;
			queue->returned_head = 0;
		}
		for (; i < count; i++) {
			messages[i] = queue_ring_pop(&queue->fresh);
			bytes += messages[i]->length;
		}
	}
	batch->messages = messages;
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
	if (timer_heap_reserve(&broker->delivery_timers, fresh, broker->allocate) != 0) {
		for (size_t i = 0; i < fresh; i++)
			free(spare[i]);
		goto fail;
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
	}
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
 * or -1 when out of memory (nothing changed, batch empty).  Lock held. */
static int queue_take(struct broker *broker, struct broker_subscriber *consumer,
                      const struct broker_fetch_options *options, struct broker_batch *batch)
{
	struct queue *queue = consumer->queue;
	size_t count = queue_take_count(broker, queue, options);

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
	broker->stats.parked--;
	waiter->batch.ack_queue = subscriber->queue->ack != NULL;
	waiter->subscriber = NULL;
	waiter->status = status;
	waiter->wake_next = broker->wake_list;
	broker->wake_list = waiter;
}

/* Hands available messages to the queue's waiters, oldest waiter first.
 * Lock held. */
static void queue_serve_waiters(struct broker *broker, struct queue *queue)
{
	while (queue->waiters && queue_available(queue) > 0) {
		struct broker_waiter *waiter = queue->waiters;

		if (queue_take(broker, waiter->subscriber, &waiter->options, &waiter->batch) != 0)
			return;   /* out of memory: it waits on, or times out */
		waiter_complete(broker, waiter, BROKER_OK);
	}
}

/* Completes every waiter of subscriber with BROKER_BAD_ID.  Lock held. */
static void subscriber_cancel_waiters(struct broker *broker, struct broker_subscriber *subscriber)
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
			delivery_requeue(broker, delivery->owner.queue, delivery, true);
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

/* --- broker ------------------------------------------------------------ */

struct broker *broker_new(const struct broker_limits *limits)
{
	struct broker *broker = calloc(1, sizeof(*broker));
	pthread_condattr_t attributes;

	if (!broker)
		return NULL;
	if (hash_table_init(&broker->subjects) != 0)
		goto fail;
	if (hash_table_init(&broker->subscribers) != 0)
		goto fail_subjects;
	if (hash_table_init(&broker->groups) != 0)
		goto fail_subscribers;
	if (pthread_mutex_init(&broker->lock, NULL) != 0)
		goto fail_groups;
	if (pthread_condattr_init(&attributes) != 0)
		goto fail_lock;
	pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC);
	if (pthread_cond_init(&broker->timer_cond, &attributes) != 0) {
		pthread_condattr_destroy(&attributes);
		goto fail_lock;
	}
	pthread_condattr_destroy(&attributes);
	if (limits)
		broker->limits = *limits;
	broker->max_subject_length = broker->limits.max_subject_length;
	broker->clock_ms = broker_clock_monotonic;
	broker->allocate = broker_default_realloc;
	broker->delivery_timers = (struct timer_heap)TIMER_HEAP_INIT(struct delivery, deadline_ms, timer_index);
	broker->waiter_timers = (struct timer_heap)TIMER_HEAP_INIT(struct broker_waiter, deadline_ms, timer_index);
	return broker;

fail_lock:
	pthread_mutex_destroy(&broker->lock);
fail_groups:
	hash_table_destroy(&broker->groups);
fail_subscribers:
	hash_table_destroy(&broker->subscribers);
fail_subjects:
	hash_table_destroy(&broker->subjects);
fail:
	free(broker);
	return NULL;
}

static void broker_idle_unlink(struct broker *broker, struct broker_subscriber *subscriber)
{
	if (subscriber->idle_prev)
		subscriber->idle_prev->idle_next = subscriber->idle_next;
	else
		broker->idle_head = subscriber->idle_next;
	if (subscriber->idle_next)
		subscriber->idle_next->idle_prev = subscriber->idle_prev;
	else
		broker->idle_tail = subscriber->idle_prev;
	subscriber->idle_prev = subscriber->idle_next = NULL;
}

static void broker_idle_append(struct broker *broker, struct broker_subscriber *subscriber)
{
	subscriber->idle_prev = broker->idle_tail;
	subscriber->idle_next = NULL;
	if (broker->idle_tail)
		broker->idle_tail->idle_next = subscriber;
	else
		broker->idle_head = subscriber;
	broker->idle_tail = subscriber;
}

/* Stamps activity now and moves subscriber to the tail of the activity
 * list.  Lock held. */
static void broker_touch(struct broker *broker, struct broker_subscriber *subscriber)
{
	subscriber->last_active = broker->clock_ms() / 1000u;
	if (broker->idle_tail != subscriber) {
		broker_idle_unlink(broker, subscriber);
		broker_idle_append(broker, subscriber);
	}
}

static void delivery_discard(struct delivery *delivery, void *context)
{
	struct broker *broker = context;

	if (delivery->timer_index != DELIVERY_NO_TIMER)
		timer_heap_remove(&broker->delivery_timers, delivery);
	broker_message_release(delivery->message);
	free(delivery);
}

/* Takes everything a queue holds off the counters and frees it; the queue
 * is left empty and unlinked from nothing.  Lock held. */
static void queue_discard(struct broker *broker, struct queue *queue)
{
	broker->stats.pending -= queue->held;
	broker->stats.pending_bytes -= queue->held_bytes;
	broker->stats.in_flight -= queue->in_flight;
	queue_ring_clear(&queue->fresh);
	for (size_t i = 0; i < queue->returned_count; i++)
		broker_message_release(queue->returned[queue->returned_head + i]);
	free(queue->returned);
	delivery_table_drain(&queue->deliveries, delivery_discard, broker);
	free(queue->retry);
	if (queue->ack)
		free(queue->ack->dead_letter);
	free(queue->ack);
	*queue = (struct queue){0};
}

struct member_leaving {
	struct broker *broker;
	struct broker_subscriber *member;
};

static void delivery_leave_member(struct delivery *delivery, void *context)
{
	struct member_leaving *leaving = context;

	if (delivery_in_flight(delivery) && delivery->owner.consumer == leaving->member) {
		/* Handed out but not failed: the attempt stands, no max_deliver
		 * check; the next member gets it as the next attempt. */
		delivery_requeue(leaving->broker, leaving->member->queue, delivery, false);
	}
}

/* Unlinks subscriber from every table and list and frees what only it
 * held; a group member's in-flight copies go back to the group.  Returns
 * how many copies were freed.  Frees the subscriber, its subject and its
 * group when they become empty.  Lock held. */
static uint64_t broker_remove_subscriber(struct broker *broker, struct broker_subscriber *subscriber)
{
	struct broker_subject *subject = subscriber->subject;
	struct broker_group *group = subscriber->group;
	uint64_t freed = 0;

	subscriber_cancel_waiters(broker, subscriber);
	broker_idle_unlink(broker, subscriber);
	hash_table_remove(&broker->subscribers, &subscriber->node);

	if (group) {
		struct member_leaving leaving = { broker, subscriber };

		/* Visiting never changes the table: requeueing moves a
		 * delivery between the timers and the retry list. */
		for (size_t i = 0; group->queue.deliveries.buckets && i <= group->queue.deliveries.mask; i++)
			for (struct delivery *d = group->queue.deliveries.buckets[i], *next; d; d = next) {
				next = d->table_next;
				delivery_leave_member(d, &leaving);
			}
		queue_serve_waiters(broker, &group->queue);
		if (--group->member_count == 0) {
			freed = group->queue.held;
			subject_unlink_queue(subject, &group->queue);
			hash_table_remove(&broker->groups, &group->node);
			queue_discard(broker, &group->queue);
			free(group);
		}
	} else {
		freed = subscriber->own.held;
		subject_unlink_queue(subject, &subscriber->own);
		queue_discard(broker, &subscriber->own);
	}
	if (--subject->subscriber_count == 0) {
		hash_table_remove(&broker->subjects, &subject->node);
		free(subject);
	}
	free(subscriber);
	return freed;
}

void broker_free(struct broker *broker)
{
	struct broker_subscriber *subscriber;

	if (!broker)
		return;
	broker_timer_stop(broker);
	pthread_mutex_lock(&broker->lock);
	while ((subscriber = broker->idle_head) != NULL)
		broker_remove_subscriber(broker, subscriber);
	pthread_mutex_unlock(&broker->lock);
	timer_heap_free(&broker->delivery_timers);
	timer_heap_free(&broker->waiter_timers);
	hash_table_destroy(&broker->groups);
	hash_table_destroy(&broker->subscribers);
	hash_table_destroy(&broker->subjects);
	pthread_cond_destroy(&broker->timer_cond);
	pthread_mutex_destroy(&broker->lock);
	free(broker);
}

void broker_set_limits(struct broker *broker, const struct broker_limits *limits)
{
	pthread_mutex_lock(&broker->lock);
	broker->limits = *limits;
	__atomic_store_n(&broker->max_subject_length, limits->max_subject_length, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&broker->lock);
}

void broker_set_clock(struct broker *broker, uint64_t (*clock_ms)(void))
{
	pthread_mutex_lock(&broker->lock);
	broker->clock_ms = clock_ms ? clock_ms : broker_clock_monotonic;
	pthread_mutex_unlock(&broker->lock);
}

void broker_set_realloc(struct broker *broker, void *(*allocate)(void *pointer, size_t size))
{
	pthread_mutex_lock(&broker->lock);
	broker->allocate = allocate ? allocate : broker_default_realloc;
	pthread_mutex_unlock(&broker->lock);
}

/* --- subscribe and unsubscribe ------------------------------------------ */

/* The ack options a subscription asks for, in an allocated struct, or
 * NULL for none; *failed says when NULL means out of memory. */
static struct queue_ack_options *ack_options_new(const struct broker *broker,
                                                 const struct broker_subscription *options,
                                                 bool *failed)
{
	struct queue_ack_options *ack;

	*failed = false;
	if (!options || !options->ack)
		return NULL;
	ack = calloc(1, sizeof(*ack));
	if (!ack) {
		*failed = true;
		return NULL;
	}
	ack->ack_wait_ms = options->ack_wait_ms;
	ack->max_deliver = options->max_deliver;
	if (options->dead_letter && options->dead_letter_length > 0) {
		ack->dead_letter = malloc(options->dead_letter_length + 1);
		if (!ack->dead_letter) {
			free(ack);
			*failed = true;
			return NULL;
		}
		memcpy(ack->dead_letter, options->dead_letter, options->dead_letter_length);
		ack->dead_letter[options->dead_letter_length] = '\0';
		ack->dead_letter_length = options->dead_letter_length;
	}
	(void)broker;
	return ack;
}

static void ack_options_free(struct queue_ack_options *ack)
{
	if (ack)
		free(ack->dead_letter);
	free(ack);
}

/* Whether a group's options are those a joining member asks for; an
 * unset ack_wait_ms means the default of the time the group was made. */
static bool ack_options_equal(const struct queue_ack_options *group, const struct queue_ack_options *asked,
                              uint64_t default_wait_ms)
{
	if (!group || !asked)
		return group == asked;
	return group->ack_wait_ms == (asked->ack_wait_ms ? asked->ack_wait_ms : default_wait_ms) &&
	       group->max_deliver == asked->max_deliver &&
	       group->dead_letter_length == asked->dead_letter_length &&
	       (group->dead_letter_length == 0 ||
	        memcmp(group->dead_letter, asked->dead_letter, group->dead_letter_length) == 0);
}

enum broker_status broker_subscribe(struct broker *broker,
                                    const char *subject_name, size_t subject_length,
                                    const struct broker_subscription *options,
                                    char id_out[BROKER_ID_LENGTH + 1])
{
	struct broker_subscriber *subscriber;
	struct broker_subject *subject, *spare = NULL;
	struct broker_group *group = NULL, *spare_group = NULL;
	struct queue_ack_options *ack;
	struct hash_node *node;
	uint64_t subject_hash, id_hash, group_hash = 0;
	size_t group_length = options && options->group ? options->group_length : 0;
	size_t key_length = subject_length + 1 + group_length + 1;
	bool failed;

	if (!broker_subject_valid(subject_name, subject_length, broker_max_subject_length(broker)))
		return BROKER_INVALID_SUBJECT;
	subject_hash = hash_table_hash(&broker->subjects, subject_name, subject_length);

	subscriber = calloc(1, sizeof(*subscriber));
	if (!subscriber)
		return BROKER_NO_MEMORY;
	ack = ack_options_new(broker, options, &failed);
	if (failed) {
		free(subscriber);
		return BROKER_NO_MEMORY;
	}
	if (group_length > 0) {
		spare_group = calloc(1, sizeof(*spare_group) + key_length);
		if (!spare_group) {
			ack_options_free(ack);
			free(subscriber);
			return BROKER_NO_MEMORY;
		}
		memcpy(spare_group->key, subject_name, subject_length);
		spare_group->key[subject_length] = '\0';
		memcpy(spare_group->key + subject_length + 1, options->group, group_length);
		spare_group->key[key_length - 1] = '\0';
		spare_group->key_length = key_length;
		group_hash = hash_table_hash(&broker->groups, spare_group->key, key_length);
	}
	uuid_generate_v4(subscriber->id);
	id_hash = hash_table_hash(&broker->subscribers, subscriber->id, BROKER_ID_LENGTH);

	pthread_mutex_lock(&broker->lock);
	if (ack && ack->ack_wait_ms == 0 && !group_length)
		ack->ack_wait_ms = broker->limits.ack_wait_ms ? broker->limits.ack_wait_ms : 1;
	/* A new subject is allocated unlocked; another thread may create the
	 * same subject meanwhile, so look again afterwards. */
	while (!(node = hash_table_find(&broker->subjects, subject_hash, subject_name,
	                                subject_length, broker_subject_match))) {
		if (spare) {
			hash_table_insert(&broker->subjects, &spare->node, subject_hash);
			spare = NULL;
			continue;
		}
		pthread_mutex_unlock(&broker->lock);
		spare = broker_subject_new(subject_name, subject_length);
		if (!spare) {
			ack_options_free(ack);
			free(spare_group);
			free(subscriber);
			return BROKER_NO_MEMORY;
		}
		pthread_mutex_lock(&broker->lock);
	}
	subject = hash_entry(node, struct broker_subject, node);
	/* A group lives on its subject: when the subject had to be made,
	 * there is no group yet, and nothing was changed if this refuses. */
	if (group_length > 0 &&
	    (node = hash_table_find(&broker->groups, group_hash, spare_group->key, key_length,
	                            broker_group_match)) != NULL) {
		group = hash_entry(node, struct broker_group, node);
		if (!ack_options_equal(group->queue.ack, ack, broker->limits.ack_wait_ms)) {
			pthread_mutex_unlock(&broker->lock);
			ack_options_free(ack);
			free(spare_group);
			free(subscriber);
			free(spare);
			return BROKER_GROUP_MISMATCH;
		}
	}

	/* 122 random bits: a collision is astronomically unlikely, but an id
	 * must never name two subscribers. */
	while (hash_table_find(&broker->subscribers, id_hash, subscriber->id,
	                       BROKER_ID_LENGTH, broker_subscriber_match)) {
		uuid_generate_v4(subscriber->id);
		id_hash = hash_table_hash(&broker->subscribers, subscriber->id, BROKER_ID_LENGTH);
	}
	hash_table_insert(&broker->subscribers, &subscriber->node, id_hash);
	subscriber->subject = subject;
	subject->subscriber_count++;

	if (group_length > 0) {
		if (!group) {
			group = spare_group;
			spare_group = NULL;
			if (ack && ack->ack_wait_ms == 0)
				ack->ack_wait_ms = broker->limits.ack_wait_ms ? broker->limits.ack_wait_ms : 1;
			group->queue.ack = ack;
			ack = NULL;
			hash_table_insert(&broker->groups, &group->node, group_hash);
			subject_link_queue(subject, &group->queue);
		}
		group->member_count++;
		subscriber->group = group;
		subscriber->queue = &group->queue;
	} else {
		subscriber->own.ack = ack;
		ack = NULL;
		subscriber->queue = &subscriber->own;
		subject_link_queue(subject, &subscriber->own);
	}

	subscriber->last_active = broker->clock_ms() / 1000u;
	broker_idle_append(broker, subscriber);
	memcpy(id_out, subscriber->id, BROKER_ID_LENGTH + 1);
	pthread_mutex_unlock(&broker->lock);

	ack_options_free(ack);
	free(spare_group);
	free(spare);
	return BROKER_OK;
}

/* What a request that matches no subscriber answers, its subject's syntax
 * being valid: a subject over the length limit is invalid, as for any
 * other request; any other subject means a bad id. */
static enum broker_status broker_missed(struct broker *broker, size_t subject_length)
{
	size_t max_length = broker_max_subject_length(broker);

	return max_length > 0 && subject_length > max_length ? BROKER_INVALID_SUBJECT : BROKER_BAD_ID;
}

/* Finds subscriber id of subject.  Returns it with the lock held, or NULL
 * with *status set and the lock not held.  The length limit spares a
 * subscriber's own subject: when a reload lowers max_subject_length,
 * subscribers of longer subjects can still reach what they were sent. */
static struct broker_subscriber *broker_lock_subscriber(struct broker *broker,
                                                        const char *subject_name, size_t subject_length,
                                                        const char *id, size_t id_length,
                                                        enum broker_status *status)
{
	struct broker_subscriber *subscriber;
	struct hash_node *node;
	uint64_t hash;

	if (!broker_subject_valid(subject_name, subject_length, 0)) {
		*status = BROKER_INVALID_SUBJECT;
		return NULL;
	}
	if (id_length != BROKER_ID_LENGTH) {
		*status = broker_missed(broker, subject_length);
		return NULL;
	}
	hash = hash_table_hash(&broker->subscribers, id, id_length);
	pthread_mutex_lock(&broker->lock);
	node = hash_table_find(&broker->subscribers, hash, id, id_length, broker_subscriber_match);
	if (node) {
		subscriber = hash_entry(node, struct broker_subscriber, node);
		if (subscriber->subject->name_length == subject_length &&
		    memcmp(subscriber->subject->name, subject_name, subject_length) == 0)
			return subscriber;
	}
	pthread_mutex_unlock(&broker->lock);
	*status = broker_missed(broker, subject_length);
	return NULL;
}

enum broker_status broker_unsubscribe(struct broker *broker,
                                      const char *subject, size_t subject_length,
                                      const char *id, size_t id_length)
{
	enum broker_status status;
	struct broker_subscriber *subscriber = broker_lock_subscriber(broker, subject, subject_length,
	                                                              id, id_length, &status);

	if (!subscriber)
		return status;
	broker_remove_subscriber(broker, subscriber);
	broker_unlock(broker);
	return BROKER_OK;
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

/* Queues message on every queue of subject.  Lock held. */
static enum broker_status publish_locked(struct broker *broker, struct broker_subject *subject,
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
			queue_serve_waiters(broker, queue);
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
		status = publish_locked(broker, hash_entry(node, struct broker_subject, node), message);
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
				queue_serve_waiters(broker, queue);
out:
	broker_unlock(broker);
	free(hashes);
	return status;
}

/* --- fetch ------------------------------------------------------------- */

static const struct broker_fetch_options fetch_everything = { 0, 0, false };

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
	if (wait_ms > 0 && !broker->closing && queue_available(subscriber->queue) == 0 &&
	    broker->stats.parked < broker->limits.max_parked_fetches &&
	    timer_heap_reserve(&broker->waiter_timers, 1, broker->allocate) == 0) {
		waiter->subscriber = subscriber;
		waiter->options = *options;
		waiter->deadline_ms = add_saturated(broker->clock_ms(), wait_ms);
		waiter->status = BROKER_OK;
		queue_waiter_append(subscriber->queue, waiter);
		if (timer_heap_push(&broker->waiter_timers, waiter))
			broker_timers_changed(broker);
		subscriber->parked++;
		broker->stats.parked++;
		broker_unlock(broker);
		return BROKER_PARKED;
	}
	status = queue_take(broker, subscriber, options, &waiter->batch) == 0 ? BROKER_OK : BROKER_NO_MEMORY;
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
		 * from the consumer as if never handed out. */
		for (size_t i = 0; i < batch->count; i++) {
			struct delivery *delivery = delivery_table_find(&queue->deliveries, batch->messages[i]->seq);

			if (delivery && delivery_in_flight(delivery) && delivery->owner.consumer == subscriber) {
				delivery->attempt--;
				delivery_requeue(broker, queue, delivery, false);
			}
		}
		queue_serve_waiters(broker, queue);
		broker_unlock(broker);
		broker_batch_release(batch);
		return;
	}
	for (size_t i = 0; i < batch->count; i++)
		bytes += batch->messages[i]->length;
	if (queue_give_back(queue, batch->messages, batch->count, broker->allocate) != 0) {
		broker_unlock(broker);
		broker_batch_release(batch);
		return;
	}
	queue->held += batch->count;
	queue->held_bytes += bytes;
	broker->stats.pending += batch->count;
	broker->stats.pending_bytes += bytes;
	batch_clear(batch);
	queue_serve_waiters(broker, queue);
	broker_unlock(broker);
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
	for (size_t i = 0; i < count; i++) {
		struct delivery *delivery = delivery_table_find(&queue->deliveries, seqs[i]);

		if (!delivery || !delivery_in_flight(delivery) || delivery->owner.consumer != subscriber)
			continue;
		(*settled)++;
		switch (kind) {
		case SETTLE_ACK:
			broker->stats.acked++;
			delivery_remove(broker, queue, delivery);
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

/* --- idle expiry, stats ------------------------------------------------- */

size_t broker_expire_idle(struct broker *broker, uint64_t now_seconds, uint64_t ttl_seconds)
{
	size_t total = 0, removed;

	if (ttl_seconds == 0)
		return 0;
	/* In rounds, so that expiring a crowd never holds the lock long. */
	do {
		struct broker_subscriber *subscriber;

		removed = 0;
		pthread_mutex_lock(&broker->lock);
		while (removed < BROKER_EXPIRE_BATCH && (subscriber = broker->idle_head) != NULL &&
		       subscriber->last_active <= now_seconds &&
		       now_seconds - subscriber->last_active > ttl_seconds) {
			if (subscriber->parked > 0) {
				/* Waiting in a held fetch is activity. */
				broker_touch(broker, subscriber);
				continue;
			}
			broker->stats.expired_messages += broker_remove_subscriber(broker, subscriber);
			broker->stats.expired_subscribers++;
			removed++;
		}
		broker_unlock(broker);
		total += removed;
	} while (removed == BROKER_EXPIRE_BATCH);
	return total;
}

void broker_get_stats(struct broker *broker, struct broker_stats *stats)
{
	pthread_mutex_lock(&broker->lock);
	*stats = broker->stats;
	stats->subscribers = hash_table_count(&broker->subscribers);
	stats->subjects = hash_table_count(&broker->subjects);
	stats->groups = hash_table_count(&broker->groups);
	pthread_mutex_unlock(&broker->lock);
}

const char *broker_status_name(enum broker_status status)
{
	switch (status) {
	case BROKER_OK:
		return "ok";
	case BROKER_INVALID_SUBJECT:
		return "invalid subject";
	case BROKER_NO_SUBSCRIBER:
		return "no subscriber";
	case BROKER_OVERFLOW:
		return "overflow";
	case BROKER_BAD_ID:
		return "bad id";
	case BROKER_NO_MEMORY:
		return "out of memory";
	case BROKER_GROUP_MISMATCH:
		return "group options differ";
	case BROKER_NOT_ACK:
		return "not an ack subscription";
	case BROKER_PARKED:
		return "parked";
	}
	return "unknown status";
}
