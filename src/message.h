/* message.h - a published payload, stored once and shared by reference.
 *
 * A message is created by the caller of a publish with one reference, gets
 * its broker-wide sequence number when the broker accepts it, and is freed
 * when the last reference (the creator's, a queue's, a delivery's or a
 * fetched batch's) is released.
 */
#ifndef GOPHERMQ_MESSAGE_H
#define GOPHERMQ_MESSAGE_H

#include <stddef.h>
#include <stdint.h>

/* Immutable once published.  data[length] is always a NUL byte, but data
 * may itself contain NUL bytes: always use length.  The subject it was
 * published to follows the data (broker_message_subject()): a wildcard
 * subscriber's copies come from many subjects. */
struct broker_message {
	uint32_t refcount;       /* atomic: one per queued copy and holder */
	uint32_t length;         /* bytes of data; max_message_size is at most 1 GiB */
	uint64_t seq;            /* set once by the broker that accepts it; 0 before */
	/* Before the publish: its time to live in ms (0 = the broker's
	 * default).  Once accepted: the deadline on the broker's clock after
	 * which no copy is delivered (0 = never). */
	uint64_t expires_ms;
	uint32_t subject_length;
	char data[];             /* data, NUL, subject, NUL */
};

/* Creates a message holding a copy of data, published to subject (which
 * may be empty for a message the broker is told its subject of), with one
 * reference owned by the caller.  Returns NULL when out of memory or when
 * a length does not fit 32 bits. */
struct broker_message *broker_message_new(const char *subject, size_t subject_length,
                                          const char *data, size_t length);

/* The subject the message was published to, NUL-terminated. */
static inline const char *broker_message_subject(const struct broker_message *message)
{
	return message->data + message->length + 1;
}

/* Takes one more reference. */
void broker_message_retain(struct broker_message *message);

/* Drops one reference; frees the message with the last.  NULL is ignored. */
void broker_message_release(struct broker_message *message);

/* Bytes allocated for the messages alive now, in all brokers (counted when
 * a message is created and when its last reference goes), and the most
 * there have been since the last broker_message_memory_mark() (or start). */
void broker_message_memory(uint64_t *held, uint64_t *peak);
void broker_message_memory_mark(void);

#endif
