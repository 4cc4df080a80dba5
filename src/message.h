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
 * may itself contain NUL bytes: always use length. */
struct broker_message {
	uint32_t refcount;       /* atomic: one per queued copy and holder */
	uint32_t length;         /* bytes of data; max_message_size is at most 1 GiB */
	uint64_t seq;            /* set once by the broker that accepts it; 0 before */
	char data[];
};

/* Creates a message holding a copy of data, with one reference owned by the
 * caller.  The 16-byte header keeps a small message in the allocation size
 * class it had before it carried a seq.  Returns NULL when out of memory or
 * when length does not fit 32 bits. */
struct broker_message *broker_message_new(const char *data, size_t length);

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
