/* broker.h - the message broker core: subjects, subscriptions, queues,
 * deliveries and parked fetches.
 *
 * The core knows nothing of HTTP, JSON or configuration files.  Every
 * function is thread-safe: one mutex guards the broker's tables, and a
 * published payload is stored once, shared by reference among the queues
 * that receive it.  broker.c's header comment describes the structures.
 *
 * Accounting: "pending" counts the message copies the broker holds for
 * consumers (a publish to a subject with 3 subscribers adds 3; a group
 * counts as one), in every state: waiting, in flight until acknowledged,
 * delayed.  "pending bytes" sums their payload lengths.  A publish either
 * queues a copy for every consumer of its subject or queues nothing.
 */
#ifndef GOPHERMQ_BROKER_H
#define GOPHERMQ_BROKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "message.h"

struct queue_run;

/* A subscriber id is a UUID v4 in its 36-character text form. */
#define BROKER_ID_LENGTH 36

/* Longest group name, and the largest values of the subscription options. */
#define BROKER_GROUP_MAX_LENGTH 64
#define BROKER_ACK_WAIT_MAX_MS 86400000u
#define BROKER_MAX_DELIVER_MAX 1000000u
#define BROKER_DELAY_MAX_MS 86400000u
#define BROKER_TTL_MAX_MS (365ull * 86400000u)

enum broker_status {
	BROKER_OK = 0,
	BROKER_INVALID_SUBJECT,  /* subject fails broker_subject_valid() */
	BROKER_NO_SUBSCRIBER,    /* publish: the subject has no subscriber */
	BROKER_OVERFLOW,         /* publish: max_pending or max_pending_bytes would be exceeded */
	BROKER_BAD_ID,           /* id is not a subscriber of that subject */
	BROKER_NO_MEMORY,        /* allocation failed; nothing was changed */
	BROKER_GROUP_MISMATCH,   /* subscribe: the group has other ack options */
	BROKER_NOT_ACK,          /* ack/nack/extend on an at-most-once subscription */
	BROKER_PARKED,           /* fetch: held; the waiter's wake() comes later */
	BROKER_STORAGE,          /* the journal cannot store the change; nothing was changed */
};

struct broker_limits {
	uint64_t max_pending;        /* message copies for all consumers; 0 = unlimited */
	uint64_t max_pending_bytes;  /* payload bytes of those copies; 0 = unlimited */
	size_t max_subject_length;   /* bytes; 0 = unlimited */
	uint64_t ack_wait_ms;        /* default ack deadline of ack subscriptions */
	size_t fetch_max_batch;      /* most messages one fetch takes; 0 = no cap */
	size_t max_parked_fetches;   /* held fetches at once; more are answered at once */
	uint64_t message_ttl_ms;     /* time to live of a message published without one; 0 = none */
};

/* Options of a subscription; zeroed = the original at-most-once kind. */
struct broker_subscription {
	const char *group;           /* NULL or group_length 0: no group */
	size_t group_length;
	bool ack;
	uint64_t ack_wait_ms;        /* 0 = the limits' default */
	uint32_t max_deliver;        /* 0 = no limit */
	const char *dead_letter;     /* NULL or length 0: none */
	size_t dead_letter_length;
};

/* What a fetch takes; zeroed = everything available, removed. */
struct broker_fetch_options {
	size_t max;                  /* most messages; 0 = no limit (fetch_max_batch applies) */
	size_t max_bytes;            /* stop before the data exceeds this, but take one; 0 = none */
	bool peek;                   /* look only: remove nothing, start no timer */
	/* When set, max_bytes bounds the sum of cost(message) rather than of
	 * the data's lengths (a stream: the bytes of the events).  Called
	 * with the broker's lock held. */
	size_t (*cost)(const struct broker_message *message, void *context);
	void *cost_context;
};

/* Messages handed out by a fetch, oldest first.  The batch owns one
 * reference to each message; broker_batch_release() drops them, or
 * broker_batch_give_back() returns them to the queue.  attempts is NULL
 * when every attempt is 1. */
struct broker_batch {
	struct broker_message **messages;
	uint32_t *attempts;
	size_t count;
	bool in_flight;              /* the messages wait for an ack */
	bool peeked;                 /* references only: nothing was removed */
	bool ack_queue;              /* fetched from an ack subscription's queue */
	struct queue_run *run;       /* at-most-once: the storage of messages */
};

/* A fetch held until a message arrives or its time is up.  The caller owns
 * the memory and sets wake and context; the broker fills the rest. */
struct broker_waiter {
	/* Called exactly once for a parked waiter, without the broker's lock,
	 * from whichever thread completed it.  After it the broker no longer
	 * touches the waiter. */
	void (*wake)(struct broker_waiter *waiter);
	void *context;
	/* A stream's waiter, parked again and again: not limited by
	 * max_parked_fetches nor counted among the parked fetches. */
	bool stream;
	/* The outcome, valid in wake(): BROKER_OK with batch (perhaps empty),
	 * or BROKER_BAD_ID when the subscriber went away meanwhile. */
	enum broker_status status;
	struct broker_batch batch;
	/* The broker's. */
	struct broker_waiter *queue_prev, *queue_next;
	struct broker_waiter *wake_next;
	struct broker_subscriber *subscriber;
	struct broker_fetch_options options;
	uint64_t deadline_ms;
	uint32_t timer_index;
};

struct broker_stats {
	uint64_t pending;          /* message copies held */
	uint64_t pending_bytes;    /* their payload bytes */
	uint64_t subscribers;
	uint64_t subjects;         /* subjects with at least one subscriber */
	uint64_t groups;
	uint64_t published;        /* successful publishes (messages, not copies) */
	uint64_t delivered;        /* copies handed out by fetch (redeliveries too) */
	uint64_t overflows;        /* publishes refused with BROKER_OVERFLOW */
	uint64_t expired_subscribers;
	uint64_t expired_messages; /* copies freed with an expired subscriber */
	uint64_t expired_copies;   /* copies removed unfetched when their message's ttl passed */
	uint64_t wildcard_subjects;  /* subscribed subjects with wildcards */
	uint64_t in_flight;        /* deliveries waiting for an ack */
	uint64_t acked;
	uint64_t nacked;
	uint64_t redelivered;      /* deliveries with attempt > 1 */
	uint64_t dead_lettered;    /* published to a dead_letter subject */
	uint64_t max_deliver_dropped;  /* dropped after max_deliver, not dead-lettered */
	uint64_t parked;           /* fetches held now */
	uint64_t last_seq;
};

struct broker;

/* Returns a new, empty broker, or NULL when out of memory. */
struct broker *broker_new(const struct broker_limits *limits);

/* Frees the broker and every pending message.  No other thread may use it,
 * no fetch may be parked (broker_wake_all first) and the timer thread must
 * be stopped. */
void broker_free(struct broker *broker);

/* Replaces the limits.  Copies already pending stay even if they now exceed
 * the new limits; only later publishes are refused. */
void broker_set_limits(struct broker *broker, const struct broker_limits *limits);

/* True when subject (length bytes, not NUL-terminated) is a valid subject:
 * non-empty, no space/tab/CR/LF/NUL, no empty dot-separated token, and at
 * most max_length bytes (0 = no length limit). */
bool broker_subject_valid(const char *subject, size_t length, size_t max_length);

/* True when a valid subject has no "*" or ">" token: one that can be
 * published to.  A subscription's subject may have them: "*" stands for
 * any one token, ">" as the last token for one or more (elsewhere it is
 * an ordinary token, which no publish can name). */
bool broker_subject_literal(const char *subject, size_t length);

/* True when name is a valid group name: 1-64 letters, digits, - or _. */
bool broker_group_valid(const char *name, size_t length);

/* Adds a subscriber to subject and writes its id, NUL-terminated, to
 * id_out.  options may be NULL.  Returns BROKER_OK,
 * BROKER_INVALID_SUBJECT, BROKER_GROUP_MISMATCH or BROKER_NO_MEMORY.  The
 * caller has validated the options' ranges (group name, dead_letter). */
enum broker_status broker_subscribe(struct broker *broker,
                                    const char *subject, size_t subject_length,
                                    const struct broker_subscription *options,
                                    char id_out[BROKER_ID_LENGTH + 1]);

/* Removes subscriber id of subject with its pending messages; a group
 * member's in-flight messages go back to the group.  Its parked fetches are
 * woken with BROKER_BAD_ID.  Returns BROKER_OK, BROKER_INVALID_SUBJECT or
 * BROKER_BAD_ID. */
enum broker_status broker_unsubscribe(struct broker *broker,
                                      const char *subject, size_t subject_length,
                                      const char *id, size_t id_length);

/* Queues message for every consumer of subject, taking one new reference
 * per consumer, and gives it the next seq; the caller keeps its own
 * reference.  Returns BROKER_OK, BROKER_INVALID_SUBJECT,
 * BROKER_NO_SUBSCRIBER, BROKER_OVERFLOW or BROKER_NO_MEMORY; on any error
 * nothing was queued. */
enum broker_status broker_publish(struct broker *broker,
                                  const char *subject, size_t subject_length,
                                  struct broker_message *message);

/* One message of a batch publish. */
struct broker_publish_item {
	const char *subject;
	size_t subject_length;
	struct broker_message *message;
};

/* Publishes count messages all or nothing, with consecutive seqs in array
 * order.  On an error, *failed is the index of the first message that
 * caused it and nothing was queued. */
enum broker_status broker_publish_batch(struct broker *broker,
                                        const struct broker_publish_item *items, size_t count,
                                        size_t *failed);

/* Takes messages of subscriber id on subject into batch (which the caller
 * must release or give back, also when empty).  options may be NULL (take
 * everything, up to fetch_max_batch).  For an ack subscription the taken
 * messages are in flight until acked.  Counts as activity for idle expiry.
 * Returns BROKER_OK, BROKER_INVALID_SUBJECT, BROKER_BAD_ID or
 * BROKER_NO_MEMORY (nothing taken).  The subject length limit does not
 * apply when subject is the subscriber's own (a limit lowered since it
 * subscribed). */
enum broker_status broker_fetch(struct broker *broker,
                                const char *subject, size_t subject_length,
                                const char *id, size_t id_length,
                                const struct broker_fetch_options *options,
                                struct broker_batch *batch);

/* As broker_fetch(), but when nothing is available and wait_ms > 0 (and
 * fewer than max_parked_fetches are held) parks waiter and returns
 * BROKER_PARKED: waiter->wake() is then called once, from another thread,
 * when messages arrived (taken into waiter->batch), wait_ms passed (empty
 * batch), the subscriber went away (BROKER_BAD_ID) or at
 * broker_wake_all().  It may be called before this function returns.
 * Otherwise returns as broker_fetch() with the batch in waiter->batch. */
enum broker_status broker_fetch_wait(struct broker *broker,
                                     const char *subject, size_t subject_length,
                                     const char *id, size_t id_length,
                                     const struct broker_fetch_options *options,
                                     uint64_t wait_ms, struct broker_waiter *waiter);

/* A stream of subscriber id of subject begins: it counts as activity
 * until broker_stream_closed().  Returns BROKER_OK, BROKER_INVALID_SUBJECT
 * or BROKER_BAD_ID. */
enum broker_status broker_stream_opened(struct broker *broker, const char *subject, size_t subject_length,
                                        const char *id, size_t id_length);
/* The subscriber's in-flight messages (ack subscriptions) with seq > after
 * are queued again at once, before newer messages, and handed to the
 * waiters parked then; *resent says how many.  A stream resuming from a
 * last event id calls it once the subscriber's older stream has stopped
 * waiting, so that they are not handed to that one.  Returns as
 * broker_stream_opened(). */
enum broker_status broker_stream_resend(struct broker *broker, const char *subject, size_t subject_length,
                                        const char *id, size_t id_length, uint64_t after, size_t *resent);
void broker_stream_closed(struct broker *broker, const char *id, size_t id_length);

/* Returns the messages of a batch that could not be delivered (its reply
 * could not be built or sent) to subscriber id's queue, in seq order and
 * before newer messages, as if never fetched; releases them if the
 * subscriber is gone.  Empties batch. */
void broker_batch_give_back(struct broker *broker, const char *id, size_t id_length,
                            struct broker_batch *batch);

void broker_batch_release(struct broker_batch *batch);

/* Drops the first count messages of batch (delivered: their references
 * go), keeping the rest in order, so that only those are given back. */
void broker_batch_drop_front(struct broker_batch *batch, size_t count);

/* Settles the listed seqs of subscriber id's in-flight messages (for a
 * group member, those delivered to it); seqs that are not are ignored.
 * *settled is how many were.  Return BROKER_OK, BROKER_INVALID_SUBJECT,
 * BROKER_BAD_ID or BROKER_NOT_ACK.
 *  - ack: done, the copies are freed;
 *  - nack: deliver again after delay_ms (0: at once), before newer
 *    messages (or dead-letter it when max_deliver is reached);
 *  - extend: restart the ack deadline. */
enum broker_status broker_ack(struct broker *broker, const char *subject, size_t subject_length,
                              const char *id, size_t id_length,
                              const uint64_t *seqs, size_t count, size_t *settled);
enum broker_status broker_nack(struct broker *broker, const char *subject, size_t subject_length,
                               const char *id, size_t id_length,
                               const uint64_t *seqs, size_t count, uint64_t delay_ms,
                               size_t *settled);
enum broker_status broker_extend(struct broker *broker, const char *subject, size_t subject_length,
                                 const char *id, size_t id_length,
                                 const uint64_t *seqs, size_t count, size_t *settled);

/* Handles every deadline that has passed on the broker's clock: ack
 * deadlines (redelivery, dead letters), nack delays and parked fetches'
 * wait.  Returns the milliseconds until the next deadline, or UINT64_MAX
 * when there is none. */
uint64_t broker_run_timers(struct broker *broker);

/* Starts and stops a thread that runs broker_run_timers() at every
 * deadline.  Start returns 0, or -1 when the thread cannot be created. */
int broker_timer_start(struct broker *broker);
void broker_timer_stop(struct broker *broker);

/* Takes back a parked waiter whose client went away: it completes with an
 * empty batch (nothing taken) and wake() is NOT called.  Returns true when
 * it was still parked; false when it had completed already (wake() has
 * been or is being called). */
bool broker_waiter_cancel(struct broker *broker, struct broker_waiter *waiter);

/* Answers every parked fetch with what it has now, and from then on holds
 * no fetch (shutdown). */
void broker_wake_all(struct broker *broker);

/* Removes subscribers whose last subscribe or fetch is older than
 * ttl_seconds, freeing their pending messages.  now_seconds is a reading of
 * the broker's clock in seconds; ttl_seconds 0 expires nothing.  Costs time
 * proportional to the number removed, not to the number of subscribers.
 * Returns how many subscribers were removed. */
size_t broker_expire_idle(struct broker *broker, uint64_t now_seconds, uint64_t ttl_seconds);

/* Replaces the clock the broker reads (milliseconds, CLOCK_MONOTONIC by
 * default) for deadlines and subscriber activity.  For tests. */
void broker_set_clock(struct broker *broker, uint64_t (*clock_ms)(void));

/* Replaces the realloc() behind every allocation the broker makes under
 * its lock (queues, batches, deliveries, timers; NULL restores realloc), so
 * tests can make an allocation fail in the middle of an operation.  For
 * tests. */
void broker_set_realloc(struct broker *broker, void *(*allocate)(void *pointer, size_t size));

void broker_get_stats(struct broker *broker, struct broker_stats *stats);

/* --- durability (journal.h has the files, durable.c the records) --- */

struct journal;

/* From now on records every change in journal (NULL: none).  Set before
 * serving, after broker_replay(). */
void broker_set_journal(struct broker *broker, struct journal *journal);

/* Rebuilds an empty broker from journal's log: subscribers with their
 * ids, groups, queued copies and deliveries (queued again, with their
 * attempt counts), and the seq counter.  Returns 0, or -1 with error
 * filled (the log is unreadable past some point). */
int broker_replay(struct broker *broker, struct journal *journal,
                  void (*progress)(void *context, uint64_t done, uint64_t total), void *context,
                  char *error, size_t error_size);

/* Writes the live state as a new base segment and deletes the segments it
 * replaces, holding the lock only for a chunk of a queue at a time.
 * Returns 0 or -1 (logged; the old segments are kept). */
int broker_compact(struct broker *broker, struct journal *journal);

/* Human-readable name of a status, for logs. */
const char *broker_status_name(enum broker_status status);

#endif
