/* message.c - refcounted payloads and the count of the memory they hold. */
#include "autoconfig.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "message.h"

/* Bytes allocated for all live messages (of every broker), and the most
 * there have been since broker_message_memory_mark().  A peak is tracked
 * here rather than sampled, because a backlog can fill and drain between
 * two looks. */
static uint64_t message_bytes, message_bytes_peak;

static size_t message_size(const struct broker_message *message)
{
	return offsetof(struct broker_message, data) + message->length + 1 + message->subject_length + 1;
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

struct broker_message *broker_message_new(const char *subject, size_t subject_length,
                                          const char *data, size_t length)
{
	struct broker_message *message;

	if (length > UINT32_MAX || subject_length > UINT32_MAX ||
	    length + subject_length > SIZE_MAX - offsetof(struct broker_message, data) - 2)
		return NULL;
	message = malloc(offsetof(struct broker_message, data) + length + subject_length + 2);
	if (!message)
		return NULL;
	message->length = (uint32_t)length;
	message->subject_length = (uint32_t)subject_length;
	uint64_t held = __atomic_add_fetch(&message_bytes, message_size(message), __ATOMIC_RELAXED);
	uint64_t peak = __atomic_load_n(&message_bytes_peak, __ATOMIC_RELAXED);
	while (held > peak && !__atomic_compare_exchange_n(&message_bytes_peak, &peak, held, true,
	                                                   __ATOMIC_RELAXED, __ATOMIC_RELAXED))
		;
	message->refcount = 1;
	message->seq = 0;
	message->expires_ms = 0;
	if (length > 0)
		memcpy(message->data, data, length);
	message->data[length] = '\0';
	if (subject_length > 0)
		memcpy(message->data + length + 1, subject, subject_length);
	message->data[length + 1 + subject_length] = '\0';
	return message;
}

void broker_message_retain(struct broker_message *message)
{
	__atomic_add_fetch(&message->refcount, 1, __ATOMIC_RELAXED);
}

void broker_message_release(struct broker_message *message)
{
	if (message && __atomic_sub_fetch(&message->refcount, 1, __ATOMIC_ACQ_REL) == 0) {
		__atomic_sub_fetch(&message_bytes, message_size(message), __ATOMIC_RELAXED);
		free(message);
	}
}
