/* broker.c - subjects, subscribers and their pending queues.
 *
 * Data structures (all guarded by broker->lock):
 *  - subjects: hash table name -> struct broker_subject.  A subject exists
 *    exactly while it has subscribers; it links them in a doubly linked
 *    list, which is what a publish walks.
 *  - subscribers: hash table id -> struct broker_subscriber.  Each has a
 *    queue of message pointers (its pending copies, oldest first) and sits
 *    in the activity list, ordered by last subscribe/fetch, oldest at the
 *    head, so expiry pops from the head only.
 *  - A payload lives once in a refcounted struct broker_message; a copy
 *    for a subscriber is one pointer in its queue (8 bytes, 16 at most
 *    with the ring's doubling slack; no allocation per copy).
 *
 * Keys are hashed (SipHash) before the lock is taken; messages are created
 * by the caller, and expired subscribers' memory is freed after the lock is
 * released, so critical sections link, unlink and count, and at most grow
 * a ring (amortised) or allocate one pointer for a fetched batch.
 *
 * Room left for later features:
 *  - long-poll fetch: a waiter (condition or callback) hangs off a
 *    subscriber; broker_publish's push loop is where it would be woken.
 *  - wildcard subjects: a second structure (a token trie) consulted by
 *    publish next to the exact-match table; broker_subject_valid is where
 *    '*' and '>' tokens would be recognised.
 *  - consumer groups: the ring is a struct broker_queue of its own, so a
 *    group can own one queue that several members fetch from.
 *  - acks/redelivery: fetch hands out references rather than freeing, so
 *    a fetched batch could be parked in an in-flight list until acked.
 */
#include "autoconfig.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "broker.h"
#include "hash.h"
#include "uuid.h"

#define BROKER_RING_INITIAL 2     /* ring slots allocated for a second pending copy */
#define BROKER_EXPIRE_BATCH 256   /* subscribers expired per lock hold */

/* A subscriber's pending copies, oldest first: a growable ring of message
 * pointers.  Most queues hold zero or one message between fetches, so a
 * queue without a ring (capacity 0) keeps its one message inline in
 * single, and a ring is allocated only for a second one. */
struct broker_queue {
	union {
		struct broker_message **slots;   /* capacity > 0: the ring */
		struct broker_message *single;   /* capacity 0 and count 1 */
	};
	size_t capacity;                         /* 0 or a power of two */
	size_t head;
	size_t count;
};

struct broker_subscriber;

struct broker_subject {
	struct hash_node node;                    /* in broker->subjects */
	struct broker_subscriber *subscribers;    /* list via subject_prev/next */
	size_t subscriber_count;
	size_t name_length;
	char name[];                              /* NUL-terminated as well */
};

/* The fields a publish touches come first, within one 64-byte line. */
struct broker_subscriber {
	struct hash_node node;                    /* in broker->subscribers */
	struct broker_subscriber *subject_next;   /* the subject's subscribers */
	struct broker_queue queue;
	uint64_t pending_bytes;                   /* payload bytes in queue */
	struct broker_subscriber *subject_prev;
	struct broker_subject *subject;
	struct broker_subscriber *idle_prev, *idle_next;  /* activity order */
	uint64_t last_active;                     /* broker clock, seconds */
	char id[BROKER_ID_LENGTH + 1];
};

struct broker {
	pthread_mutex_t lock;
	struct hash_table subjects;
	struct hash_table subscribers;
	struct broker_subscriber *idle_head, *idle_tail;
	struct broker_limits limits;
	size_t max_subject_length;   /* copy of limits', atomic: read unlocked */
	uint64_t (*clock_seconds)(void);
	void *(*ring_realloc)(void *pointer, size_t size);
	struct broker_stats stats;   /* subscribers and subjects come from the tables */
};

/* --- messages ---------------------------------------------------------- */

/* Bytes allocated for all live messages (of every broker), and the most
 * there have been since broker_message_memory_mark().  A peak is tracked
 * here rather than sampled, because a backlog can fill and drain between
 * two looks. */
static uint64_t message_bytes, message_bytes_peak;

static size_t broker_message_size(size_t length)
{
	return sizeof(struct broker_message) + length + 1;
}

void broker_message_memory(uint64_t *held, uint64_t *peak)
{
	*held = __atomic_load_n(&message_bytes, __ATOMIC_RELAXED);
	*peak = __atomic_load_n(&message_bytes_peak, __ATOMIC_RELAXED);
}

void broker_message_memory_mark(void)
{
	__atomic_store_n(&message_bytes_peak, __atomic_load_n(&message_bytes, __ATOMIC_RELAXED),
	                 __ATOMIC_RELAXED);
}

struct broker_message *broker_message_new(const char *data, size_t length)
{
	struct broker_message *message;

	if (length > SIZE_MAX - sizeof(*message) - 1)
		return NULL;
	message = malloc(broker_message_size(length));
	if (!message)
		return NULL;
	uint64_t held = __atomic_add_fetch(&message_bytes, broker_message_size(length), __ATOMIC_RELAXED);
	uint64_t peak = __atomic_load_n(&message_bytes_peak, __ATOMIC_RELAXED);
	while (held > peak && !__atomic_compare_exchange_n(&message_bytes_peak, &peak, held, true,
	                                                   __ATOMIC_RELAXED, __ATOMIC_RELAXED))
		;
	message->refcount = 1;
	message->reserved = 0;
	message->length = length;
	if (length > 0)
		memcpy(message->data, data, length);
	message->data[length] = '\0';
	return message;
}

void broker_message_release(struct broker_message *message)
{
	if (message && __atomic_sub_fetch(&message->refcount, 1, __ATOMIC_ACQ_REL) == 0) {
		__atomic_sub_fetch(&message_bytes, broker_message_size(message->length), __ATOMIC_RELAXED);
		free(message);
	}
}

void broker_batch_release(struct broker_batch *batch)
{
	for (size_t i = 0; i < batch->count; i++)
		broker_message_release(batch->messages[i]);
	free(batch->messages);
	batch->messages = NULL;
	batch->count = 0;
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

static struct broker_subject *broker_subject_new(const char *name, size_t length)
{
	struct broker_subject *subject = malloc(sizeof(*subject) + length + 1);

	if (!subject)
		return NULL;
	subject->node = (struct hash_node){0};
	subject->subscribers = NULL;
	subject->subscriber_count = 0;
	subject->name_length = length;
	memcpy(subject->name, name, length);
	subject->name[length] = '\0';
	return subject;
}

/* --- queues ------------------------------------------------------------ */

/* Makes room for one more pointer.  Returns 0, or -1 when out of memory
 * (the queue is unchanged, though perhaps larger). */
static int broker_queue_reserve(struct broker_queue *queue,
                                void *(*ring_realloc)(void *, size_t))
{
	struct broker_message **slots;
	size_t capacity;

	if (queue->count < queue->capacity || (queue->capacity == 0 && queue->count == 0))
		return 0;
	if (queue->capacity == 0) {  /* the inline message moves to a new ring */
		slots = ring_realloc(NULL, BROKER_RING_INITIAL * sizeof(*slots));
		if (!slots)
			return -1;
		slots[0] = queue->single;
		queue->slots = slots;
		queue->capacity = BROKER_RING_INITIAL;
		queue->head = 0;
		return 0;
	}
	capacity = queue->capacity * 2;
	if (capacity > SIZE_MAX / 2 / sizeof(*slots))
		return -1;
	slots = ring_realloc(queue->slots, capacity * sizeof(*slots));
	if (!slots)
		return -1;
	/* The ring was full: [head, old capacity) then [0, head).  Move the
	 * wrapped part behind the first so the ring is contiguous again. */
	if (queue->head > 0)
		memcpy(slots + queue->capacity, slots, queue->head * sizeof(*slots));
	queue->slots = slots;
	queue->capacity = capacity;
	return 0;
}

/* Appends message; room must have been reserved. */
static void broker_queue_push(struct broker_queue *queue, struct broker_message *message)
{
	if (queue->capacity == 0)
		queue->single = message;
	else
		queue->slots[(queue->head + queue->count) & (queue->capacity - 1)] = message;
	queue->count++;
}

static struct broker_message *broker_queue_at(const struct broker_queue *queue, size_t index)
{
	if (queue->capacity == 0)
		return queue->single;
	return queue->slots[(queue->head + index) & (queue->capacity - 1)];
}

static void broker_reverse(struct broker_message **slots, size_t count)
{
	for (size_t i = 0, j = count; i < j / 2; i++) {
		struct broker_message *swap = slots[i];

		slots[i] = slots[j - 1 - i];
		slots[j - 1 - i] = swap;
	}
}

/* Empties the non-empty queue and returns an array (malloc'ed; the caller
 * owns it and the references in it) of its messages, oldest first, their
 * count in *count.  The ring itself becomes that array, and the next
 * publish starts afresh; only an inline message needs a (one-pointer)
 * allocation.  Returns NULL, with the queue unchanged, when that fails. */
static struct broker_message **broker_queue_take_all(struct broker_queue *queue, size_t *count,
                                                     void *(*ring_realloc)(void *, size_t))
{
	struct broker_message **slots;

	if (queue->capacity == 0) {
		slots = ring_realloc(NULL, sizeof(*slots));
		if (!slots)
			return NULL;
		slots[0] = queue->single;
	} else {
		slots = queue->slots;
		if (queue->head + queue->count <= queue->capacity) {
			if (queue->head > 0)
				memmove(slots, slots + queue->head, queue->count * sizeof(*slots));
		} else {
			/* Wrapped: rotating the whole array left by head puts
			 * [head, capacity) first, followed by [0, tail). */
			broker_reverse(slots, queue->head);
			broker_reverse(slots + queue->head, queue->capacity - queue->head);
			broker_reverse(slots, queue->capacity);
		}
	}
	*count = queue->count;
	*queue = (struct broker_queue){0};
	return slots;
}

/* Drops every reference in the queue and frees its ring. */
static void broker_queue_clear(struct broker_queue *queue)
{
	for (size_t i = 0; i < queue->count; i++)
		broker_message_release(broker_queue_at(queue, i));
	if (queue->capacity > 0)
		free(queue->slots);
	*queue = (struct broker_queue){0};
}

/* --- broker ------------------------------------------------------------ */

static uint64_t broker_clock_monotonic(void)
{
	struct timespec now;

	if (clock_gettime(CLOCK_MONOTONIC, &now) != 0)
		return 0;
	return (uint64_t)now.tv_sec;
}

static void *broker_default_realloc(void *pointer, size_t size)
{
	return realloc(pointer, size);
}

struct broker *broker_new(const struct broker_limits *limits)
{
	struct broker *broker = calloc(1, sizeof(*broker));

	if (!broker)
		return NULL;
	if (hash_table_init(&broker->subjects) != 0)
		goto fail;
	if (hash_table_init(&broker->subscribers) != 0)
		goto fail_subjects;
	if (pthread_mutex_init(&broker->lock, NULL) != 0)
		goto fail_subscribers;
	if (limits)
		broker->limits = *limits;
	broker->max_subject_length = broker->limits.max_subject_length;
	broker->clock_seconds = broker_clock_monotonic;
	broker->ring_realloc = broker_default_realloc;
	return broker;

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
	subscriber->last_active = broker->clock_seconds();
	if (broker->idle_tail != subscriber) {
		broker_idle_unlink(broker, subscriber);
		broker_idle_append(broker, subscriber);
	}
}

/* Unlinks subscriber from every table and list and takes its pending copies
 * off the counters; removes its subject if it was the last subscriber.
 * Returns the subject to free (after unlocking), or NULL.  Lock held. */
static struct broker_subject *broker_detach(struct broker *broker,
                                            struct broker_subscriber *subscriber)
{
	struct broker_subject *subject = subscriber->subject;

	broker_idle_unlink(broker, subscriber);
	hash_table_remove(&broker->subscribers, &subscriber->node);

	if (subscriber->subject_prev)
		subscriber->subject_prev->subject_next = subscriber->subject_next;
	else
		subject->subscribers = subscriber->subject_next;
	if (subscriber->subject_next)
		subscriber->subject_next->subject_prev = subscriber->subject_prev;
	subscriber->subject = NULL;

	broker->stats.pending -= subscriber->queue.count;
	broker->stats.pending_bytes -= subscriber->pending_bytes;
	subscriber->pending_bytes = 0;

	if (--subject->subscriber_count > 0)
		return NULL;
	hash_table_remove(&broker->subjects, &subject->node);
	return subject;
}

static void broker_subscriber_free(struct broker_subscriber *subscriber)
{
	broker_queue_clear(&subscriber->queue);
	free(subscriber);
}

void broker_free(struct broker *broker)
{
	struct broker_subscriber *subscriber;

	if (!broker)
		return;
	while ((subscriber = broker->idle_head) != NULL) {
		free(broker_detach(broker, subscriber));
		broker_subscriber_free(subscriber);
	}
	hash_table_destroy(&broker->subscribers);
	hash_table_destroy(&broker->subjects);
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

void broker_set_clock(struct broker *broker, uint64_t (*clock_seconds)(void))
{
	pthread_mutex_lock(&broker->lock);
	broker->clock_seconds = clock_seconds ? clock_seconds : broker_clock_monotonic;
	pthread_mutex_unlock(&broker->lock);
}

void broker_set_ring_realloc(struct broker *broker, void *(*ring_realloc)(void *pointer, size_t size))
{
	pthread_mutex_lock(&broker->lock);
	broker->ring_realloc = ring_realloc ? ring_realloc : broker_default_realloc;
	pthread_mutex_unlock(&broker->lock);
}

static size_t broker_max_subject_length(struct broker *broker)
{
	return __atomic_load_n(&broker->max_subject_length, __ATOMIC_RELAXED);
}

enum broker_status broker_subscribe(struct broker *broker,
                                    const char *subject_name, size_t subject_length,
                                    char id_out[BROKER_ID_LENGTH + 1])
{
	struct broker_subscriber *subscriber;
	struct broker_subject *subject, *spare = NULL;
	struct hash_node *node;
	uint64_t subject_hash, id_hash;

	if (!broker_subject_valid(subject_name, subject_length, broker_max_subject_length(broker)))
		return BROKER_INVALID_SUBJECT;
	subject_hash = hash_table_hash(&broker->subjects, subject_name, subject_length);

	subscriber = calloc(1, sizeof(*subscriber));
	if (!subscriber)
		return BROKER_NO_MEMORY;
	uuid_generate_v4(subscriber->id);
	id_hash = hash_table_hash(&broker->subscribers, subscriber->id, BROKER_ID_LENGTH);

	pthread_mutex_lock(&broker->lock);
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
			free(subscriber);
			return BROKER_NO_MEMORY;
		}
		pthread_mutex_lock(&broker->lock);
	}
	subject = hash_entry(node, struct broker_subject, node);

	/* 122 random bits: a collision is astronomically unlikely, but an id
	 * must never name two subscribers. */
	while (hash_table_find(&broker->subscribers, id_hash, subscriber->id,
	                       BROKER_ID_LENGTH, broker_subscriber_match)) {
		uuid_generate_v4(subscriber->id);
		id_hash = hash_table_hash(&broker->subscribers, subscriber->id, BROKER_ID_LENGTH);
	}
	hash_table_insert(&broker->subscribers, &subscriber->node, id_hash);

	subscriber->subject = subject;
	subscriber->subject_next = subject->subscribers;
	if (subject->subscribers)
		subject->subscribers->subject_prev = subscriber;
	subject->subscribers = subscriber;
	subject->subscriber_count++;

	subscriber->last_active = broker->clock_seconds();
	broker_idle_append(broker, subscriber);
	memcpy(id_out, subscriber->id, BROKER_ID_LENGTH + 1);
	pthread_mutex_unlock(&broker->lock);

	free(spare);
	return BROKER_OK;
}

/* Whether copies more copies of length bytes fit the limits.  Lock held. */
static bool broker_fits_limits(const struct broker *broker, uint64_t copies, size_t length)
{
	const struct broker_limits *limits = &broker->limits;
	const struct broker_stats *stats = &broker->stats;
	uint64_t bytes;

	if (limits->max_pending > 0 &&
	    (stats->pending > limits->max_pending || copies > limits->max_pending - stats->pending))
		return false;
	if (limits->max_pending_bytes > 0 &&
	    (__builtin_mul_overflow(copies, (uint64_t)length, &bytes) ||
	     stats->pending_bytes > limits->max_pending_bytes ||
	     bytes > limits->max_pending_bytes - stats->pending_bytes))
		return false;
	return true;
}

enum broker_status broker_publish(struct broker *broker,
                                  const char *subject_name, size_t subject_length,
                                  struct broker_message *message)
{
	struct broker_subscriber *subscriber;
	struct broker_subject *subject;
	struct hash_node *node;
	enum broker_status status = BROKER_OK;
	uint64_t hash;
	size_t copies;

	if (!broker_subject_valid(subject_name, subject_length, broker_max_subject_length(broker)))
		return BROKER_INVALID_SUBJECT;
	hash = hash_table_hash(&broker->subjects, subject_name, subject_length);

	pthread_mutex_lock(&broker->lock);
	node = hash_table_find(&broker->subjects, hash, subject_name, subject_length,
	                       broker_subject_match);
	if (!node) {
		status = BROKER_NO_SUBSCRIBER;
		goto out;
	}
	subject = hash_entry(node, struct broker_subject, node);
	copies = subject->subscriber_count;

	if (!broker_fits_limits(broker, copies, message->length)) {
		broker->stats.overflows++;
		status = BROKER_OVERFLOW;
		goto out;
	}
	/* The refcount is 32 bits wide: refuse rather than wrap it. */
	if (copies > UINT32_MAX - __atomic_load_n(&message->refcount, __ATOMIC_RELAXED)) {
		status = BROKER_NO_MEMORY;
		goto out;
	}

	/* All or nothing: make room everywhere before queueing anywhere. */
	for (subscriber = subject->subscribers; subscriber; subscriber = subscriber->subject_next) {
		if (broker_queue_reserve(&subscriber->queue, broker->ring_realloc) != 0) {
			status = BROKER_NO_MEMORY;
			goto out;
		}
	}
	for (subscriber = subject->subscribers; subscriber; subscriber = subscriber->subject_next) {
		broker_queue_push(&subscriber->queue, message);
		subscriber->pending_bytes += message->length;
	}
	__atomic_add_fetch(&message->refcount, (uint32_t)copies, __ATOMIC_RELAXED);
	broker->stats.pending += copies;
	broker->stats.pending_bytes += (uint64_t)copies * message->length;
	broker->stats.published++;
out:
	pthread_mutex_unlock(&broker->lock);
	return status;
}

/* What a fetch that matches no subscriber answers, its subject's syntax
 * being valid: a subject over the length limit is invalid, as for any
 * other request; any other subject means a bad id. */
static enum broker_status broker_fetch_missed(struct broker *broker, size_t subject_length)
{
	size_t max_length = broker_max_subject_length(broker);

	return max_length > 0 && subject_length > max_length ? BROKER_INVALID_SUBJECT : BROKER_BAD_ID;
}

enum broker_status broker_fetch(struct broker *broker,
                                const char *subject_name, size_t subject_length,
                                const char *id, size_t id_length,
                                struct broker_batch *batch)
{
	struct broker_subscriber *subscriber;
	struct broker_subject *subject;
	struct hash_node *node;
	uint64_t hash;

	batch->messages = NULL;
	batch->count = 0;
	/* The length limit spares a subscriber's own subject: when a reload
	 * lowers max_subject_length, subscribers of longer subjects can still
	 * fetch what they were sent (subscribing and publishing to such
	 * subjects is refused).  Only a miss is judged by the limit. */
	if (!broker_subject_valid(subject_name, subject_length, 0))
		return BROKER_INVALID_SUBJECT;
	if (id_length != BROKER_ID_LENGTH)
		return broker_fetch_missed(broker, subject_length);
	hash = hash_table_hash(&broker->subscribers, id, id_length);

	pthread_mutex_lock(&broker->lock);
	node = hash_table_find(&broker->subscribers, hash, id, id_length, broker_subscriber_match);
	if (!node) {
		pthread_mutex_unlock(&broker->lock);
		return broker_fetch_missed(broker, subject_length);
	}
	subscriber = hash_entry(node, struct broker_subscriber, node);
	subject = subscriber->subject;
	if (subject->name_length != subject_length ||
	    memcmp(subject->name, subject_name, subject_length) != 0) {
		pthread_mutex_unlock(&broker->lock);
		return broker_fetch_missed(broker, subject_length);
	}

	if (subscriber->queue.count > 0) {
		batch->messages = broker_queue_take_all(&subscriber->queue, &batch->count,
		                                        broker->ring_realloc);
		if (!batch->messages) {
			pthread_mutex_unlock(&broker->lock);
			return BROKER_NO_MEMORY;
		}
		broker->stats.pending -= batch->count;
		broker->stats.pending_bytes -= subscriber->pending_bytes;
		broker->stats.delivered += batch->count;
		subscriber->pending_bytes = 0;
	}
	broker_touch(broker, subscriber);
	pthread_mutex_unlock(&broker->lock);
	return BROKER_OK;
}

size_t broker_expire_idle(struct broker *broker, uint64_t now_seconds, uint64_t ttl_seconds)
{
	size_t total = 0, removed;

	if (ttl_seconds == 0)
		return 0;
	/* In rounds, so that expiring a crowd never holds the lock long. */
	do {
		struct broker_subscriber *expired = NULL, *subscriber;
		struct broker_subject *subjects_to_free[BROKER_EXPIRE_BATCH];
		size_t subject_count = 0;

		removed = 0;
		pthread_mutex_lock(&broker->lock);
		while (removed < BROKER_EXPIRE_BATCH && (subscriber = broker->idle_head) != NULL &&
		       subscriber->last_active <= now_seconds &&
		       now_seconds - subscriber->last_active > ttl_seconds) {
			size_t copies = subscriber->queue.count;
			struct broker_subject *subject = broker_detach(broker, subscriber);

			if (subject)
				subjects_to_free[subject_count++] = subject;
			broker->stats.expired_subscribers++;
			broker->stats.expired_messages += copies;
			subscriber->idle_next = expired;  /* reuse the link for our list */
			expired = subscriber;
			removed++;
		}
		pthread_mutex_unlock(&broker->lock);

		while ((subscriber = expired) != NULL) {
			expired = subscriber->idle_next;
			broker_subscriber_free(subscriber);
		}
		for (size_t i = 0; i < subject_count; i++)
			free(subjects_to_free[i]);
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
	}
	return "unknown status";
}
