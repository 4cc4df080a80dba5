/* broker_internal.h - what the broker core's files share: its structures
 * and the functions that run with the broker's lock held.  For broker.c,
 * publish.c and consume.c only; everyone else uses broker.h.
 */
#ifndef GOPHERMQ_BROKER_INTERNAL_H
#define GOPHERMQ_BROKER_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "broker.h"
#include "delivery.h"
#include "hash.h"
#include "queue.h"
#include "wildcard.h"

struct broker_subject {
	struct hash_node node;                    /* in broker->subjects */
	struct queue *queues;                     /* via queue->subject_next/prev */
	size_t queue_count;
	size_t subscriber_count;
	bool pattern;                             /* has wildcards: also in broker->wildcards */
	size_t name_length;
	char name[];                              /* NUL-terminated as well */
};

struct broker_group {
	struct hash_node node;                    /* in broker->groups */
	struct queue queue;
	size_t member_count;
	bool listed;                              /* compaction: its queue is listed */
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
	size_t streaming;                         /* its streams open now */
	char id[BROKER_ID_LENGTH + 1];
};

struct journal;

struct broker {
	pthread_mutex_t lock;
	struct journal *journal;     /* NULL: nothing is recorded */
	struct hash_table subjects;  /* every subscribed subject, patterns too */
	struct wildcard_tree wildcards;  /* the patterns among them */
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
	struct timer_heap expiry_timers;   /* queues by expiry_check_ms */
	struct broker_waiter *wake_list;   /* to wake once the lock is released */
	/* The timer thread. */
	pthread_cond_t timer_cond;
	pthread_t timer_thread;
	bool timer_running;
	bool timer_stop;
	bool timers_changed;         /* an earlier deadline since the thread looked */
	bool closing;                /* broker_wake_all(): park no more fetches */
};

static inline uint64_t add_saturated(uint64_t a, uint64_t b)
{
	return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static inline size_t broker_max_subject_length(struct broker *broker)
{
	return __atomic_load_n(&broker->max_subject_length, __ATOMIC_RELAXED);
}

static inline bool delivery_in_flight(const struct delivery *delivery)
{
	return delivery->timer_index != DELIVERY_NO_TIMER && !delivery->delayed;
}

/* broker.c */

/* Releases the lock, then wakes the waiters completed meanwhile. */
void broker_unlock(struct broker *broker);
/* Tells the timer thread about a deadline earlier than it knew. */
void broker_timers_changed(struct broker *broker);
bool broker_subject_match(const struct hash_node *node, const void *key, size_t length);
bool broker_subscriber_match(const struct hash_node *node, const void *key, size_t length);
bool broker_group_match(const struct hash_node *node, const void *key, size_t length);
/* broker_subscribe() with the id given (replay: an id already in use is
 * left as it is), or a new one when id is NULL. */
enum broker_status broker_subscribe_as(struct broker *broker, const char *subject, size_t subject_length,
                                       const struct broker_subscription *options, const char *id,
                                       char id_out[BROKER_ID_LENGTH + 1]);
/* Unlinks and frees subscriber (see broker.c); returns the copies freed. */
uint64_t broker_remove_subscriber(struct broker *broker, struct broker_subscriber *subscriber);
/* Stamps activity now: the subscriber moves to the tail of the activity list. */
void broker_touch(struct broker *broker, struct broker_subscriber *subscriber);
/* Finds subscriber id of subject and returns it with the lock held, or
 * NULL with *status set and the lock not held. */
struct broker_subscriber *broker_lock_subscriber(struct broker *broker,
                                                 const char *subject_name, size_t subject_length,
                                                 const char *id, size_t id_length,
                                                 enum broker_status *status);

/* publish.c */

/* Publishes message to subject_name (literal, valid) with the lock held:
 * a copy on every queue of the subject and of the patterns matching it,
 * all or nothing. */
enum broker_status broker_publish_locked(struct broker *broker, const char *subject_name,
                                         size_t subject_length, uint64_t subject_hash,
                                         struct broker_message *message);

/* Calls visit for every queue a publish to subject (literal and valid)
 * reaches now, until it returns non-zero.  Returns 0, visit's result, or
 * -1 when out of memory.  Lock held. */
int broker_publish_queues(struct broker *broker, const char *subject, size_t length,
                          int (*visit)(struct queue *queue, void *context), void *context);

/* expiry.c */

/* Notes that a copy of message now waits in queue (fresh, given back or
 * queued for retry), so that it is swept when it expires. */
void broker_expiry_note(struct broker *broker, struct queue *queue, const struct broker_message *message);
/* As broker_expiry_note(), for a copy just pushed to the fresh ring, which
 * also tracks whether the ring's copies expire in ring order: every push
 * must come here, those of messages that never expire too. */
static inline void broker_expiry_note_fresh(struct broker *broker, struct queue *queue,
                                            const struct broker_message *message)
{
	uint64_t deadline = message->expires_ms;

	if (queue->fresh.count == 1)
		queue->expiry_unordered = false;
	else if (deadline != 0 && (queue->last_expiry == 0 || deadline < queue->last_expiry))
		queue->expiry_unordered = true;
	queue->last_expiry = deadline;
	if (deadline != 0)
		broker_expiry_note(broker, queue, message);
}
/* Removes every waiting copy of queue whose deadline has passed.  Returns
 * how many. */
size_t broker_expiry_sweep(struct broker *broker, struct queue *queue, uint64_t now);
/* Sweeps queue first when one of its waiting copies may have expired. */
static inline void broker_expiry_due(struct broker *broker, struct queue *queue)
{
	uint64_t now;

	if (queue->next_expiry != 0 && queue->next_expiry <= (now = broker->clock_ms()))
		broker_expiry_sweep(broker, queue, now);
}
/* Sweeps the queues whose check time has come; returns the ms until the
 * next one, or UINT64_MAX. */
uint64_t broker_expiry_run(struct broker *broker, uint64_t now);
/* Takes queue out of the sweep's heap (it is being freed). */
void broker_expiry_forget(struct broker *broker, struct queue *queue);
/* The deadline on the broker's clock of a message accepted now with
 * ttl_ms (0: the default of the limits; 0 there too: never). */
uint64_t broker_expiry_deadline(struct broker *broker, uint64_t ttl_ms);

/* consume.c */

/* Frees a delivery and its copy, wherever it is. */
void broker_delivery_remove(struct broker *broker, struct queue *queue, struct delivery *delivery);

/* Puts an in-flight or delayed delivery back in its queue's retry list
 * and, when serve, hands it to a waiter. */
void broker_requeue(struct broker *broker, struct queue *queue, struct delivery *delivery, bool serve);
/* Dead-letters or drops an in-flight copy that used up max_deliver and
 * returns true; when memory is short keeps it in flight a little longer
 * and returns false. */
bool broker_delivery_exhausted(struct broker *broker, struct queue *queue, struct delivery *delivery);
/* Hands available messages to the queue's waiters, oldest waiter first. */
void broker_serve_waiters(struct broker *broker, struct queue *queue);
/* Completes every waiter of subscriber with BROKER_BAD_ID. */
void broker_cancel_waiters(struct broker *broker, struct broker_subscriber *subscriber);

/* durable.c: the journal's records of changes, with the lock held.  Those
 * returning bool or a pointer refuse the change when they fail. */
bool durable_subscribe(struct broker *broker, const char *id, const struct broker_subject *subject,
                       const char *group, size_t group_length, const struct queue_ack_options *ack);
void durable_unsubscribe(struct broker *broker, const char *id);
/* messages[i] is at (char *)messages + i * message_stride. */
bool durable_publish(struct broker *broker, uint64_t first_seq, const struct broker_publish_item *items,
                     size_t count);
unsigned char *durable_take_begin(struct broker *broker, const struct queue *queue, size_t count);
unsigned char *durable_take_put(unsigned char *p, uint64_t seq, uint32_t attempt, bool ack);
void durable_take_commit(struct broker *broker, const struct queue *queue, size_t count);
void durable_settled(struct broker *broker, const struct queue *queue, const uint64_t *seqs, size_t count);
void durable_returned(struct broker *broker, const struct queue *queue,
                      struct broker_message *const *messages, size_t count);

#endif
