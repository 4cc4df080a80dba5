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
	char id[BROKER_ID_LENGTH + 1];
};

struct journal;

struct broker {
	pthread_mutex_t lock;
	struct journal *journal;     /* NULL: nothing is recorded */
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

/* Queues message on every queue of subject, all or nothing. */
enum broker_status broker_publish_locked(struct broker *broker, struct broker_subject *subject,
                                         struct broker_message *message);

/* consume.c */

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
bool durable_publish(struct broker *broker, uint64_t first_seq, struct broker_subject *const *subjects,
                     struct broker_message *const *messages, size_t message_stride, size_t count);
unsigned char *durable_take_begin(struct broker *broker, const struct queue *queue, size_t count);
unsigned char *durable_take_put(unsigned char *p, uint64_t seq, uint32_t attempt, bool ack);
void durable_take_commit(struct broker *broker, const struct queue *queue, size_t count);
void durable_settled(struct broker *broker, const struct queue *queue, const uint64_t *seqs, size_t count);
void durable_returned(struct broker *broker, const struct queue *queue,
                      struct broker_message *const *messages, size_t count);

#endif
