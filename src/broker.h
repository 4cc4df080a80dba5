/* broker.h - the message broker core: subjects, subscribers, pending queues.
 *
 * The core knows nothing of HTTP, JSON or configuration files.  Every
 * function is thread-safe: one mutex guards the broker's tables, and a
 * published payload is stored once, shared by reference among the
 * subscribers that receive it.
 *
 * Accounting: "pending" counts message copies waiting in subscriber queues
 * (a publish to a subject with 3 subscribers adds 3); "pending bytes" is the
 * sum of the payload lengths of those copies.  A publish either queues a copy
 * for every current subscriber of its subject or queues nothing.
 */
#ifndef GOPHERMQ_BROKER_H
#define GOPHERMQ_BROKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A subscriber id is a UUID v4 in its 36-character text form. */
#define BROKER_ID_LENGTH 36

enum broker_status {
	BROKER_OK = 0,
	BROKER_INVALID_SUBJECT,  /* subject fails broker_subject_valid() */
	BROKER_NO_SUBSCRIBER,    /* publish: the subject has no subscriber */
	BROKER_OVERFLOW,         /* publish: max_pending or max_pending_bytes would be exceeded */
	BROKER_BAD_ID,           /* fetch: id is not a subscriber of that subject */
	BROKER_NO_MEMORY,        /* allocation failed; nothing was changed */
};

struct broker_limits {
	uint64_t max_pending;        /* message copies for all subscribers; 0 = unlimited */
	uint64_t max_pending_bytes;  /* payload bytes of those copies; 0 = unlimited */
	size_t max_subject_length;   /* bytes; 0 = unlimited */
};

/* A published payload.  Immutable once created; freed when the last
 * reference is released.  data[length] is always a NUL byte, but data may
 * itself contain NUL bytes: always use length. */
struct broker_message {
	uint32_t refcount;       /* atomic: one per queued copy and holder */
	uint32_t reserved;
	size_t length;
	char data[];
};

/* Messages handed out by broker_fetch(), oldest first.  The batch owns one
 * reference to each message; broker_batch_release() drops them. */
struct broker_batch {
	struct broker_message **messages;
	size_t count;
};

struct broker_stats {
	uint64_t pending;          /* message copies waiting */
	uint64_t pending_bytes;    /* their payload bytes */
	uint64_t subscribers;
	uint64_t subjects;         /* subjects with at least one subscriber */
	uint64_t published;        /* successful publishes (not copies) */
	uint64_t delivered;        /* copies handed out by fetch */
	uint64_t overflows;        /* publishes refused with BROKER_OVERFLOW */
	uint64_t expired_subscribers;
	uint64_t expired_messages; /* copies freed with an expired subscriber */
};

struct broker;

/* Returns a new, empty broker, or NULL when out of memory. */
struct broker *broker_new(const struct broker_limits *limits);

/* Frees the broker and every pending message.  No other thread may use it. */
void broker_free(struct broker *broker);

/* Replaces the limits.  Copies already pending stay even if they now exceed
 * the new limits; only later publishes are refused. */
void broker_set_limits(struct broker *broker, const struct broker_limits *limits);

/* True when subject (length bytes, not NUL-terminated) is a valid subject:
 * non-empty, no space/tab/CR/LF, no empty dot-separated token, and at most
 * max_length bytes (0 = no length limit). */
bool broker_subject_valid(const char *subject, size_t length, size_t max_length);

/* Creates a message holding a copy of data, with one reference owned by the
 * caller.  Returns NULL when out of memory. */
struct broker_message *broker_message_new(const char *data, size_t length);
void broker_message_release(struct broker_message *message);

/* Bytes allocated for the messages alive now, in all brokers (counted when
 * a message is created and when its last reference goes), and the most
 * there have been since the last broker_message_memory_mark() (or start). */
void broker_message_memory(uint64_t *held, uint64_t *peak);
void broker_message_memory_mark(void);

/* Adds a subscriber to subject and writes its id, NUL-terminated, to
 * id_out.  Returns BROKER_OK, BROKER_INVALID_SUBJECT or BROKER_NO_MEMORY. */
enum broker_status broker_subscribe(struct broker *broker,
                                    const char *subject, size_t subject_length,
                                    char id_out[BROKER_ID_LENGTH + 1]);

/* Queues message for every current subscriber of subject, taking one new
 * reference per subscriber; the caller keeps its own reference.  Returns
 * BROKER_OK, BROKER_INVALID_SUBJECT, BROKER_NO_SUBSCRIBER, BROKER_OVERFLOW or
 * BROKER_NO_MEMORY; on any error nothing was queued. */
enum broker_status broker_publish(struct broker *broker,
                                  const char *subject, size_t subject_length,
                                  struct broker_message *message);

/* Removes every pending message of subscriber id on subject and hands them
 * to batch (which the caller must release with broker_batch_release, also
 * when it is empty).  Counts as activity for idle expiry.  Returns
 * BROKER_OK, BROKER_INVALID_SUBJECT, BROKER_BAD_ID or BROKER_NO_MEMORY
 * (nothing removed).  The subject length limit does not apply when
 * subject is the subscriber's own (a limit lowered since it subscribed). */
enum broker_status broker_fetch(struct broker *broker,
                                const char *subject, size_t subject_length,
                                const char *id, size_t id_length,
                                struct broker_batch *batch);

void broker_batch_release(struct broker_batch *batch);

/* Removes subscribers whose last subscribe or fetch is older than
 * ttl_seconds, freeing their pending messages.  now_seconds is a
 * CLOCK_MONOTONIC reading; ttl_seconds 0 expires nothing.  Costs time
 * proportional to the number removed, not to the number of subscribers.
 * Returns how many subscribers were removed. */
size_t broker_expire_idle(struct broker *broker, uint64_t now_seconds, uint64_t ttl_seconds);

/* Replaces the clock the broker reads (seconds, CLOCK_MONOTONIC by
 * default) to stamp subscriber activity.  For tests. */
void broker_set_clock(struct broker *broker, uint64_t (*clock_seconds)(void));

/* Replaces the realloc() that grows subscriber queues and allocates
 * fetched batches (NULL restores realloc), so tests can make an allocation
 * fail in the middle of a publish or fetch.  For tests. */
void broker_set_ring_realloc(struct broker *broker,
                             void *(*ring_realloc)(void *pointer, size_t size));

void broker_get_stats(struct broker *broker, struct broker_stats *stats);

/* Human-readable name of a status, for logs. */
const char *broker_status_name(enum broker_status status);

#endif
