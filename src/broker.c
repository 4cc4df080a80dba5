/* broker.c - subjects, subscriptions and the broker's life cycle.
 *
 * The core is three files around one lock: broker.c (this one: subjects,
 * subscribe, unsubscribe, idle expiry), publish.c (single and batch
 * publish) and consume.c (fetch, acks, deliveries, parked fetches, timers);
 * broker_internal.h holds what they share.
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
 *  - Durability (durable.c, journal.c): with a journal set, every change
 *    is recorded under the lock at the point it is made (subscribe,
 *    unsubscribe and expiry, publish, each take, ack and dead letter,
 *    give-back); the changes that create state reserve their record first
 *    and are refused with BROKER_STORAGE when it cannot be stored.
 *    broker_replay() rebuilds a fresh broker from the log and
 *    broker_compact() writes a snapshot.
 *
 * Room left for later features:
 *  - wildcard subjects: a token trie consulted next to the subject table
 *    yields more queues for broker_publish_locked to fill; the meta form's
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

#include "broker_internal.h"
#include "uuid.h"

#define BROKER_EXPIRE_BATCH 256      /* subscribers expired per lock hold */

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

/* Releases the lock, then wakes the waiters completed meanwhile. */
void broker_unlock(struct broker *broker)
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
void broker_timers_changed(struct broker *broker)
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

bool broker_subject_literal(const char *subject, size_t length)
{
	const char *end = subject + length;

	for (const char *token = subject; token < end;) {
		const char *dot = memchr(token, '.', (size_t)(end - token));
		size_t size = (size_t)((dot ? dot : end) - token);

		if (size == 1 && (token[0] == '*' || token[0] == '>'))
			return false;
		token += size + 1;
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

bool broker_subject_match(const struct hash_node *node, const void *key, size_t length)
{
	const struct broker_subject *subject = hash_entry(node, struct broker_subject, node);

	return subject->name_length == length && memcmp(subject->name, key, length) == 0;
}

bool broker_subscriber_match(const struct hash_node *node, const void *key, size_t length)
{
	const struct broker_subscriber *subscriber = hash_entry(node, struct broker_subscriber, node);

	return length == BROKER_ID_LENGTH && memcmp(subscriber->id, key, BROKER_ID_LENGTH) == 0;
}

bool broker_group_match(const struct hash_node *node, const void *key, size_t length)
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
	subject->pattern = wildcard_is_pattern(name, length);
	memcpy(subject->name, name, length);
	subject->name[length] = '\0';
	return subject;
}

/* Lists a new subject; a pattern goes into the wildcard tree as well.
 * Returns 0, or -1 when out of memory (nothing listed).  Lock held. */
static int subject_insert(struct broker *broker, struct broker_subject *subject, uint64_t hash)
{
	if (subject->pattern && wildcard_insert(&broker->wildcards, subject->name, subject->name_length,
	                                        subject) != 0)
		return -1;
	hash_table_insert(&broker->subjects, &subject->node, hash);
	return 0;
}

/* Unlists and frees a subject without subscribers.  Lock held. */
static void subject_free(struct broker *broker, struct broker_subject *subject)
{
	if (subject->pattern)
		wildcard_remove(&broker->wildcards, subject->name, subject->name_length);
	hash_table_remove(&broker->subjects, &subject->node);
	free(subject);
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
	if (wildcard_tree_init(&broker->wildcards) != 0)
		goto fail_groups;
	if (pthread_mutex_init(&broker->lock, NULL) != 0)
		goto fail_wildcards;
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
	broker->expiry_timers = (struct timer_heap)TIMER_HEAP_INIT(struct queue, expiry_check_ms,
	                                                           expiry_timer_index);
	return broker;

fail_lock:
	pthread_mutex_destroy(&broker->lock);
fail_wildcards:
	wildcard_tree_destroy(&broker->wildcards);
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
void broker_touch(struct broker *broker, struct broker_subscriber *subscriber)
{
	subscriber->last_active = broker->clock_ms() / 1000u;
	if (broker->idle_tail != subscriber) {
		broker_idle_unlink(broker, subscriber);
		broker_idle_append(broker, subscriber);
	}
}

static void broker_discard_delivery(struct delivery *delivery, void *context)
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
	broker_expiry_forget(broker, queue);
	broker->stats.pending -= queue->held;
	broker->stats.pending_bytes -= queue->held_bytes;
	broker->stats.in_flight -= queue->in_flight;
	queue_ring_clear(&queue->fresh);
	queue_returned_clear(queue);
	delivery_table_drain(&queue->deliveries, broker_discard_delivery, broker);
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
	struct queue *queue = leaving->member->queue;

	if (!delivery_in_flight(delivery) || delivery->owner.consumer != leaving->member)
		return;
	/* Handed out and not acknowledged: the next member gets it as the
	 * next attempt, unless that would pass max_deliver. */
	if (queue->ack->max_deliver > 0 && delivery->attempt >= queue->ack->max_deliver &&
	    broker_delivery_exhausted(leaving->broker, queue, delivery))
		return;
	/* (Short of memory for a dead letter, it must still leave the
	 * member that no longer exists.) */
	broker_requeue(leaving->broker, queue, delivery, false);
}

/* Unlinks subscriber from every table and list and frees what only it
 * held; a group member's in-flight copies go back to the group.  Returns
 * how many copies were freed.  Frees the subscriber, its subject and its
 * group when they become empty.  Lock held. */
uint64_t broker_remove_subscriber(struct broker *broker, struct broker_subscriber *subscriber)
{
	struct broker_subject *subject = subscriber->subject;
	struct broker_group *group = subscriber->group;
	uint64_t freed = 0;

	broker_cancel_waiters(broker, subscriber);
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
		broker_serve_waiters(broker, &group->queue);
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
	if (--subject->subscriber_count == 0)
		subject_free(broker, subject);
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
	timer_heap_free(&broker->expiry_timers);
	wildcard_tree_destroy(&broker->wildcards);
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

/* Whether a group's options are those a joining member asks for; a
 * member that leaves ack_wait_ms unset takes the group's. */
static bool ack_options_equal(const struct queue_ack_options *group, const struct queue_ack_options *asked)
{
	if (!group || !asked)
		return group == asked;
	return (asked->ack_wait_ms == 0 || group->ack_wait_ms == asked->ack_wait_ms) &&
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
	return broker_subscribe_as(broker, subject_name, subject_length, options, NULL, id_out);
}

/* Drops a subject made for a subscribe that was then refused.  Lock held. */
static void subject_drop_unused(struct broker *broker, struct broker_subject *subject)
{
	if (subject->subscriber_count == 0)
		subject_free(broker, subject);
}

enum broker_status broker_subscribe_as(struct broker *broker,
                                       const char *subject_name, size_t subject_length,
                                       const struct broker_subscription *options, const char *given_id,
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
	enum broker_status refused;

	if (!broker_subject_valid(subject_name, subject_length, given_id ? 0 : broker_max_subject_length(broker)))
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
	if (given_id) {
		memcpy(subscriber->id, given_id, BROKER_ID_LENGTH);
		subscriber->id[BROKER_ID_LENGTH] = '\0';
	} else {
		uuid_generate_v4(subscriber->id);
	}
	id_hash = hash_table_hash(&broker->subscribers, subscriber->id, BROKER_ID_LENGTH);

	pthread_mutex_lock(&broker->lock);
	/* A new subject is allocated unlocked; another thread may create the
	 * same subject meanwhile, so look again afterwards. */
	while (!(node = hash_table_find(&broker->subjects, subject_hash, subject_name,
	                                subject_length, broker_subject_match))) {
		if (spare) {
			if (subject_insert(broker, spare, subject_hash) != 0)
				goto no_memory;
			spare = NULL;
			continue;
		}
		pthread_mutex_unlock(&broker->lock);
		spare = broker_subject_new(subject_name, subject_length);
		pthread_mutex_lock(&broker->lock);
		if (!spare)
			goto no_memory;
	}
	subject = hash_entry(node, struct broker_subject, node);
	/* A group lives on its subject: when the subject had to be made,
	 * there is no group yet, and nothing was changed if this refuses. */
	if (group_length > 0 &&
	    (node = hash_table_find(&broker->groups, group_hash, spare_group->key, key_length,
	                            broker_group_match)) != NULL) {
		group = hash_entry(node, struct broker_group, node);
		if (!ack_options_equal(group->queue.ack, ack)) {
			refused = BROKER_GROUP_MISMATCH;
			goto refuse;
		}
	}

	/* 122 random bits: a collision is astronomically unlikely, but an id
	 * must never name two subscribers.  A replayed id that exists is the
	 * same subscriber, recorded twice. */
	while (hash_table_find(&broker->subscribers, id_hash, subscriber->id,
	                       BROKER_ID_LENGTH, broker_subscriber_match)) {
		if (given_id) {
			memcpy(id_out, subscriber->id, BROKER_ID_LENGTH + 1);
			refused = BROKER_OK;
			goto refuse;
		}
		uuid_generate_v4(subscriber->id);
		id_hash = hash_table_hash(&broker->subscribers, subscriber->id, BROKER_ID_LENGTH);
	}
	if (ack && ack->ack_wait_ms == 0)
		ack->ack_wait_ms = group ? group->queue.ack->ack_wait_ms
		                 : broker->limits.ack_wait_ms ? broker->limits.ack_wait_ms : 1;
	if (broker->journal &&
	    !durable_subscribe(broker, subscriber->id, subject, group_length ? options->group : NULL,
	                       group_length, ack)) {
		refused = BROKER_STORAGE;
		goto refuse;
	}
	hash_table_insert(&broker->subscribers, &subscriber->node, id_hash);
	subscriber->subject = subject;
	subject->subscriber_count++;

	if (group_length > 0) {
		if (!group) {
			group = spare_group;
			spare_group = NULL;
			group->queue.ack = ack;
			group->queue.key = group->key;
			group->queue.key_length = group->key_length;
			ack = NULL;
			hash_table_insert(&broker->groups, &group->node, group_hash);
			subject_link_queue(subject, &group->queue);
		}
		group->member_count++;
		subscriber->group = group;
		subscriber->queue = &group->queue;
	} else {
		subscriber->own.ack = ack;
		subscriber->own.key = subscriber->id;
		subscriber->own.key_length = BROKER_ID_LENGTH;
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

no_memory:
	refused = BROKER_NO_MEMORY;
	goto unlock;
refuse:
	/* Nothing was changed, but perhaps a subject made for this one. */
	subject_drop_unused(broker, subject);
unlock:
	pthread_mutex_unlock(&broker->lock);
	ack_options_free(ack);
	free(spare_group);
	free(subscriber);
	free(spare);
	return refused;
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
struct broker_subscriber *broker_lock_subscriber(struct broker *broker,
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
	if (broker->journal)
		durable_unsubscribe(broker, subscriber->id);
	broker_remove_subscriber(broker, subscriber);
	broker_unlock(broker);
	return BROKER_OK;
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
			if (subscriber->parked > 0 || subscriber->streaming > 0) {
				/* Waiting in a held fetch or streaming is activity. */
				broker_touch(broker, subscriber);
				continue;
			}
			if (broker->journal)
				durable_unsubscribe(broker, subscriber->id);
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
	stats->wildcard_subjects = wildcard_count(&broker->wildcards);
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
	case BROKER_STORAGE:
		return "insufficient storage";
	}
	return "unknown status";
}
