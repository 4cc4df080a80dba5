/* durable.c - the broker's side of durability: the journal records of its
 * changes, replaying them into an empty broker, and the snapshot that
 * compaction writes.  journal.h describes the records and the files.
 *
 * Records are appended with the broker's lock held, at the moment of the
 * change they describe, so the log's order is the broker's.  A change
 * whose record cannot be stored is refused (BROKER_STORAGE) before
 * anything is changed: subscribe, publish and fetch reserve their record
 * first.  A settled or returned delivery and an unsubscribe are kept even
 * when their record cannot be stored (the log then says less than the
 * broker did: an acked message may come again after a restart, which
 * at-least-once allows).
 *
 * Replay applies the records to an empty broker with the operations
 * below, each idempotent, because a snapshot is taken queue by queue while
 * the broker runs and the records appended meanwhile follow it in the log:
 *  - a subscribe of a known id, a publish or hold of a seq a queue has
 *    passed, a removal of a seq not held: all ignored;
 *  - a delivery's attempt count is set, not added to.
 * Deliveries come back queued (not in flight), with their attempt counts.
 */
#include "autoconfig.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "broker_internal.h"
#include "journal.h"
#include "log.h"

#define SNAPSHOT_CHUNK 4096           /* queue entries per lock hold, at most */
#define SNAPSHOT_CHUNK_BYTES (1u << 20) /* and about this much of their data */

/* --- encoding ------------------------------------------------------------ */

static unsigned char *put16(unsigned char *p, uint16_t value)
{
	p[0] = (unsigned char)value;
	p[1] = (unsigned char)(value >> 8);
	return p + 2;
}

static unsigned char *put32(unsigned char *p, uint32_t value)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(value >> (8 * i));
	return p + 4;
}

static unsigned char *put64(unsigned char *p, uint64_t value)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(value >> (8 * i));
	return p + 8;
}

static unsigned char *put_bytes(unsigned char *p, const void *data, size_t length)
{
	if (length > 0)
		memcpy(p, data, length);
	return p + length;
}

/* --- deadlines ------------------------------------------------------------- */

/* Message deadlines are on the broker's (monotonic) clock while it runs,
 * and in the log as wall-clock ms since the epoch, so that they keep
 * their meaning across a restart; 0 is "never" in both. */
static uint64_t durable_wall_ms(void)
{
	struct timespec now;

	clock_gettime(CLOCK_REALTIME, &now);
	return (uint64_t)now.tv_sec * 1000u + (uint64_t)now.tv_nsec / 1000000u;
}

static uint64_t durable_wall_deadline(uint64_t deadline, uint64_t clock_now, uint64_t wall_now)
{
	if (deadline == 0)
		return 0;
	return deadline > clock_now ? wall_now + (deadline - clock_now) : wall_now;
}

/* The deadline on the broker's clock, or 0 with *expired set when it has
 * passed. */
static uint64_t durable_clock_deadline(uint64_t wall_deadline, uint64_t clock_now, uint64_t wall_now,
                                       bool *expired)
{
	*expired = false;
	if (wall_deadline == 0)
		return 0;
	if (wall_deadline <= wall_now) {
		*expired = true;
		return 0;
	}
	return clock_now + (wall_deadline - wall_now);
}

/* What identifies a queue in the log: its subscriber's id, or its group's
 * key ("subject\0name\0"). */
static size_t queue_key_size(const struct queue *queue)
{
	return 2 + queue->key_length;
}

static unsigned char *put_queue(unsigned char *p, const struct queue *queue)
{
	p = put16(p, (uint16_t)queue->key_length);
	return put_bytes(p, queue->key, queue->key_length);
}

/* --- records of changes (lock held) -------------------------------------- */

bool durable_subscribe(struct broker *broker, const char *id, const struct broker_subject *subject,
                       const char *group, size_t group_length, const struct queue_ack_options *ack)
{
	size_t dead_letter = ack ? ack->dead_letter_length : 0;
	size_t size = BROKER_ID_LENGTH + 2 + 1 + 1 + 8 + 4 + 2 + subject->name_length + group_length + dead_letter;
	unsigned char *start = journal_begin(broker->journal, JOURNAL_SUBSCRIBE, size), *p = start;

	if (!p)
		return false;
	p = put_bytes(p, id, BROKER_ID_LENGTH);
	p = put16(p, (uint16_t)subject->name_length);
	*p++ = (unsigned char)group_length;
	*p++ = ack ? 1 : 0;
	p = put64(p, ack ? ack->ack_wait_ms : 0);
	p = put32(p, ack ? ack->max_deliver : 0);
	p = put16(p, (uint16_t)dead_letter);
	p = put_bytes(p, subject->name, subject->name_length);
	p = put_bytes(p, group, group_length);
	p = put_bytes(p, ack ? ack->dead_letter : "", dead_letter);
	journal_commit(broker->journal, (size_t)(p - start));
	return true;
}

void durable_unsubscribe(struct broker *broker, const char *id)
{
	unsigned char *p = journal_begin(broker->journal, JOURNAL_UNSUBSCRIBE, BROKER_ID_LENGTH);

	if (!p)
		return;
	put_bytes(p, id, BROKER_ID_LENGTH);
	journal_commit(broker->journal, BROKER_ID_LENGTH);
}

bool durable_publish(struct broker *broker, uint64_t first_seq, const struct broker_publish_item *items,
                     size_t count)
{
	size_t size = 8 + 4;
	unsigned char *start, *p;
	uint64_t clock_now = 0, wall_now = 0;

	for (size_t i = 0; i < count; i++) {
		size += 2 + 4 + 8 + items[i].subject_length + items[i].message->length;
		if (items[i].message->expires_ms != 0 && wall_now == 0) {
			clock_now = broker->clock_ms();
			wall_now = durable_wall_ms();
		}
	}
	start = p = journal_begin(broker->journal, JOURNAL_PUBLISH_TTL, size);
	if (!p)
		return false;
	p = put64(p, first_seq);
	p = put32(p, (uint32_t)count);
	for (size_t i = 0; i < count; i++) {
		const struct broker_message *message = items[i].message;

		p = put16(p, (uint16_t)items[i].subject_length);
		p = put32(p, message->length);
		p = put64(p, durable_wall_deadline(message->expires_ms, clock_now, wall_now));
		p = put_bytes(p, items[i].subject, items[i].subject_length);
		p = put_bytes(p, message->data, message->length);
	}
	journal_commit(broker->journal, (size_t)(p - start));
	return true;
}

/* A take's record: begun before the take (room for count entries),
 * filled as messages are taken, committed after. */
unsigned char *durable_take_begin(struct broker *broker, const struct queue *queue, size_t count)
{
	size_t entry = queue->ack ? 12 : 8;
	unsigned char *p = journal_begin(broker->journal, queue->ack ? JOURNAL_DELIVERED : JOURNAL_CONSUMED,
	                                 queue_key_size(queue) + 4 + count * entry);

	if (!p)
		return NULL;
	p = put_queue(p, queue);
	return put32(p, (uint32_t)count);
}

unsigned char *durable_take_put(unsigned char *p, uint64_t seq, uint32_t attempt, bool ack)
{
	p = put64(p, seq);
	return ack ? put32(p, attempt) : p;
}

void durable_take_commit(struct broker *broker, const struct queue *queue, size_t count)
{
	journal_commit(broker->journal, queue_key_size(queue) + 4 + count * (queue->ack ? 12u : 8u));
}

void durable_settled(struct broker *broker, const struct queue *queue, const uint64_t *seqs, size_t count)
{
	unsigned char *start, *p;

	if (count == 0)
		return;
	start = p = journal_begin(broker->journal, JOURNAL_SETTLED, queue_key_size(queue) + 4 + 8 * count);
	if (!p)
		return;
	p = put_queue(p, queue);
	p = put32(p, (uint32_t)count);
	for (size_t i = 0; i < count; i++)
		p = put64(p, seqs[i]);
	journal_commit(broker->journal, (size_t)(p - start));
}

/* The size of a copy-ttl, and its encoding. */
static size_t copy_size(const struct broker_message *message)
{
	return 8 + 4 + 4 + 8 + 2 + message->subject_length + message->length;
}

static unsigned char *put_copy(unsigned char *p, const struct broker_message *message, uint32_t held,
                               uint64_t clock_now, uint64_t wall_now)
{
	p = put64(p, message->seq);
	p = put32(p, held);
	p = put32(p, message->length);
	p = put64(p, durable_wall_deadline(message->expires_ms, clock_now, wall_now));
	p = put16(p, (uint16_t)message->subject_length);
	p = put_bytes(p, broker_message_subject(message), message->subject_length);
	return put_bytes(p, message->data, message->length);
}

void durable_returned(struct broker *broker, const struct queue *queue,
                      struct broker_message *const *messages, size_t count)
{
	size_t size = queue_key_size(queue) + 4;
	unsigned char *start, *p;
	uint64_t clock_now = broker->clock_ms(), wall_now = durable_wall_ms();

	for (size_t i = 0; i < count; i++)
		size += copy_size(messages[i]);
	start = p = journal_begin(broker->journal, JOURNAL_RETURNED_TTL, size);
	if (!p) {
		log_warning("journal: %zu message(s) given back could not be recorded; "
		            "after a restart they count as consumed", count);
		return;
	}
	p = put_queue(p, queue);
	p = put32(p, (uint32_t)count);
	for (size_t i = 0; i < count; i++)
		p = put_copy(p, messages[i], 0, clock_now, wall_now);
	journal_commit(broker->journal, (size_t)(p - start));
}

/* --- decoding -------------------------------------------------------------- */

struct reader {
	const unsigned char *p, *end;
	bool bad;
};

static bool need(struct reader *r, size_t n)
{
	if (r->bad || (size_t)(r->end - r->p) < n) {
		r->bad = true;
		return false;
	}
	return true;
}

static uint64_t get(struct reader *r, int bytes)
{
	uint64_t value = 0;

	if (!need(r, (size_t)bytes))
		return 0;
	for (int i = 0; i < bytes; i++)
		value |= (uint64_t)r->p[i] << (8 * i);
	r->p += bytes;
	return value;
}

static const char *get_bytes(struct reader *r, size_t n)
{
	const char *at = (const char *)r->p;

	if (!need(r, n))
		return NULL;
	r->p += n;
	return at;
}

/* --- replay ----------------------------------------------------------------- */

/* A seq -> message table for the snapshot's holds, so that a message held
 * by many queues is stored once again.  Open addressing; holds one
 * reference to each message. */
struct replay_messages {
	struct broker_message **slots;
	size_t mask, count;
};

struct replay {
	struct broker *broker;
	struct replay_messages shared;
	uint64_t records;
	uint64_t clock_now, wall_now;     /* when replay began: deadlines are converted with them */
	void (*progress)(void *context, uint64_t done, uint64_t total);
	void *context;
};

static void replay_progress(void *context, uint64_t done, uint64_t total)
{
	struct replay *replay = context;

	if (replay->progress)
		replay->progress(replay->context, done, total);
}

static struct broker_message *shared_find(struct replay_messages *table, uint64_t seq)
{
	if (!table->slots)
		return NULL;
	for (size_t i = (seq * 0x9e3779b97f4a7c15ull) & table->mask; table->slots[i]; i = (i + 1) & table->mask)
		if (table->slots[i]->seq == seq)
			return table->slots[i];
	return NULL;
}

static int shared_add(struct replay_messages *table, struct broker_message *message)
{
	if (2 * (table->count + 1) > table->mask + 1 || !table->slots) {
		size_t size = table->slots ? 2 * (table->mask + 1) : 1024;
		struct broker_message **slots = calloc(size, sizeof(*slots));

		if (!slots)
			return -1;
		for (size_t i = 0; table->slots && i <= table->mask; i++) {
			struct broker_message *old = table->slots[i];
			size_t j;

			if (!old)
				continue;
			for (j = (old->seq * 0x9e3779b97f4a7c15ull) & (size - 1); slots[j]; j = (j + 1) & (size - 1))
				;
			slots[j] = old;
		}
		free(table->slots);
		table->slots = slots;
		table->mask = size - 1;
	}
	{
		size_t i = (message->seq * 0x9e3779b97f4a7c15ull) & table->mask;

		while (table->slots[i])
			i = (i + 1) & table->mask;
		broker_message_retain(message);
		table->slots[i] = message;
		table->count++;
	}
	return 0;
}

static void shared_clear(struct replay_messages *table)
{
	for (size_t i = 0; table->slots && i <= table->mask; i++)
		broker_message_release(table->slots[i]);
	free(table->slots);
	*table = (struct replay_messages){0};
}

static struct queue *replay_queue(struct broker *broker, const char *key, size_t length)
{
	struct hash_node *node;

	if (length == BROKER_ID_LENGTH) {
		node = hash_table_find(&broker->subscribers, hash_table_hash(&broker->subscribers, key, length),
		                       key, length, broker_subscriber_match);
		return node ? hash_entry(node, struct broker_subscriber, node)->queue : NULL;
	}
	node = hash_table_find(&broker->groups, hash_table_hash(&broker->groups, key, length),
	                       key, length, broker_group_match);
	return node ? &hash_entry(node, struct broker_group, node)->queue : NULL;
}

static struct queue *read_queue(struct replay *replay, struct reader *r)
{
	size_t length = (size_t)get(r, 2);
	const char *key = get_bytes(r, length);

	return key ? replay_queue(replay->broker, key, length) : NULL;
}

/* A queued delivery of message (whose reference the caller passes) with
 * attempt, in queue's retry list and table, or NULL when out of memory.
 * Lock held. */
static struct delivery *replay_delivery_new(struct broker *broker, struct queue *queue,
                                            struct broker_message *message, uint32_t attempt)
{
	struct delivery *delivery = calloc(1, sizeof(*delivery));

	if (!delivery)
		return NULL;
	delivery->message = message;
	delivery->attempt = attempt;
	delivery->timer_index = DELIVERY_NO_TIMER;
	delivery->owner.queue = queue;
	if (queue_retry_insert(queue, delivery, broker->allocate) != 0) {
		free(delivery);
		return NULL;
	}
	delivery_table_insert(&queue->deliveries, delivery, broker->allocate);
	return delivery;
}

/* Appends message to queue as fresh, or as a queued delivery with its
 * attempts when delivered (ack queues); nothing when the queue has passed
 * its seq.  Lock held. */
static int replay_append(struct broker *broker, struct queue *queue, struct broker_message *message,
                         uint32_t attempt, bool delivered)
{
	if (message->seq <= queue->last_seq)
		return 0;
	if (queue->ack && delivered) {
		if (!replay_delivery_new(broker, queue, message, attempt))
			return -1;
	} else {
		if (queue_ring_reserve(&queue->fresh, 1, broker->allocate) != 0)
			return -1;
		queue_ring_push(&queue->fresh, message);
		broker_expiry_note_fresh(broker, queue, message);
	}
	if (queue->ack && delivered)
		broker_expiry_note(broker, queue, message);
	broker_message_retain(message);
	queue->last_seq = message->seq;
	queue->held++;
	queue->held_bytes += message->length;
	broker->stats.pending++;
	broker->stats.pending_bytes += message->length;
	return 0;
}

/* Removes the copy of seq a queue holds, if it does: a delivery, or the
 * next available message (copies leave a queue in seq order). */
static void replay_remove(struct broker *broker, struct queue *queue, uint64_t seq)
{
	struct delivery *delivery;
	struct broker_message *message;

	if (queue->ack && (delivery = delivery_table_find(&queue->deliveries, seq)) != NULL) {
		queue_retry_remove(queue, delivery);
		delivery_table_remove(&queue->deliveries, delivery);
		message = delivery->message;
		free(delivery);
	} else if (queue_available(queue) > 0 && queue_available_at(queue, 0, &delivery)->seq == seq) {
		message = queue->returned ? queue_returned_pop(queue) : queue_ring_pop(&queue->fresh);
	} else {
		return;
	}
	queue->held--;
	queue->held_bytes -= message->length;
	broker->stats.pending--;
	broker->stats.pending_bytes -= message->length;
	broker_message_release(message);
}

/* A delivery: the next available message becomes a queued delivery with
 * attempt, or a delivery's attempt count is set. */
static int replay_delivered(struct broker *broker, struct queue *queue, uint64_t seq, uint32_t attempt)
{
	struct delivery *delivery = delivery_table_find(&queue->deliveries, seq);

	if (delivery) {
		if (attempt > delivery->attempt)
			delivery->attempt = attempt;
		return 0;
	}
	if (queue->fresh.count == 0 || queue_ring_at(&queue->fresh, 0)->seq != seq)
		return 0;
	/* The ring's reference passes to the delivery. */
	if (!replay_delivery_new(broker, queue, queue_ring_at(&queue->fresh, 0), attempt))
		return -1;
	queue_ring_pop(&queue->fresh);
	return 0;
}

static int replay_subscribe(struct replay *replay, struct reader *r)
{
	const char *id = get_bytes(r, BROKER_ID_LENGTH), *subject, *group, *dead_letter;
	size_t subject_length = (size_t)get(r, 2), group_length = (size_t)get(r, 1);
	bool ack = get(r, 1) & 1;
	struct broker_subscription options = { 0 };
	char id_out[BROKER_ID_LENGTH + 1];

	options.ack = ack;
	options.ack_wait_ms = get(r, 8);
	options.max_deliver = (uint32_t)get(r, 4);
	options.dead_letter_length = (size_t)get(r, 2);
	subject = get_bytes(r, subject_length);
	group = get_bytes(r, group_length);
	dead_letter = get_bytes(r, options.dead_letter_length);
	if (r->bad || !id)
		return -1;
	options.group = group;
	options.group_length = group_length;
	options.dead_letter = dead_letter;
	return broker_subscribe_as(replay->broker, subject, subject_length, &options, id, id_out) ==
	       BROKER_OK ? 0 : -1;
}

static int replay_unsubscribe(struct replay *replay, struct reader *r)
{
	struct broker *broker = replay->broker;
	const char *id = get_bytes(r, BROKER_ID_LENGTH);
	struct hash_node *node;

	if (!id)
		return -1;
	pthread_mutex_lock(&broker->lock);
	node = hash_table_find(&broker->subscribers, hash_table_hash(&broker->subscribers, id, BROKER_ID_LENGTH),
	                       id, BROKER_ID_LENGTH, broker_subscriber_match);
	if (node)
		broker_remove_subscriber(broker, hash_entry(node, struct broker_subscriber, node));
	pthread_mutex_unlock(&broker->lock);
	return 0;
}

struct replay_copy {
	struct broker *broker;
	struct broker_message *message;
};

static int replay_copy_to(struct queue *queue, void *context)
{
	struct replay_copy *copy = context;

	return replay_append(copy->broker, queue, copy->message, 0, false);
}

static int replay_publish(struct replay *replay, struct reader *r, bool with_ttl)
{
	struct broker *broker = replay->broker;
	uint64_t seq = get(r, 8);
	size_t count = (size_t)get(r, 4);

	for (size_t i = 0; i < count; i++, seq++) {
		size_t subject_length = (size_t)get(r, 2), length = (size_t)get(r, 4);
		uint64_t deadline = with_ttl ? get(r, 8) : 0;
		const char *subject = get_bytes(r, subject_length), *data = get_bytes(r, length);
		struct broker_message *message;
		bool expired;
		int result;

		if (r->bad)
			return -1;
		if (seq > broker->stats.last_seq)
			broker->stats.last_seq = seq;
		deadline = durable_clock_deadline(deadline, replay->clock_now, replay->wall_now, &expired);
		if (expired)
			continue;
		message = broker_message_new(subject, subject_length, data, length);
		if (!message)
			return -1;
		message->seq = seq;
		message->expires_ms = deadline;
		{
			struct replay_copy copy = { broker, message };

			result = broker_publish_queues(broker, subject, subject_length, replay_copy_to, &copy);
		}
		broker_message_release(message);
		if (result != 0)
			return -1;
	}
	return 0;
}

static int replay_entries(struct replay *replay, struct reader *r, enum journal_record_type type)
{
	struct broker *broker = replay->broker;
	struct queue *queue = read_queue(replay, r);
	size_t count = (size_t)get(r, 4);

	for (size_t i = 0; i < count; i++) {
		uint64_t seq = get(r, 8);
		uint32_t attempt;

		if (r->bad)
			return -1;
		switch (type) {
		case JOURNAL_CONSUMED:
		case JOURNAL_SETTLED:
			if (queue)
				replay_remove(broker, queue, seq);
			break;
		case JOURNAL_DELIVERED:
			attempt = (uint32_t)get(r, 4);
			if (queue && queue->ack && replay_delivered(broker, queue, seq, attempt) != 0)
				return -1;
			break;
		case JOURNAL_RETURNED:
		case JOURNAL_HOLD:
		case JOURNAL_RETURNED_TTL:
		case JOURNAL_HOLD_TTL: {
			bool with_ttl = type == JOURNAL_RETURNED_TTL || type == JOURNAL_HOLD_TTL;
			bool returned = type == JOURNAL_RETURNED || type == JOURNAL_RETURNED_TTL;
			uint32_t held = (uint32_t)get(r, 4);
			size_t length = (size_t)get(r, 4);
			uint64_t deadline = with_ttl ? get(r, 8) : 0;
			size_t subject_length = with_ttl ? (size_t)get(r, 2) : 0;
			const char *subject = get_bytes(r, subject_length);
			const char *data = get_bytes(r, length);
			struct broker_message *message;
			bool expired;
			int result = 0;

			if (r->bad)
				return -1;
			if (returned)
				held = 0;
			deadline = durable_clock_deadline(deadline, replay->clock_now, replay->wall_now, &expired);
			if (!queue || expired)
				break;
			if (!with_ttl) {
				/* Written before wildcards: the queue's own subject. */
				subject = queue->subject->name;
				subject_length = queue->subject->name_length;
			}
			message = shared_find(&replay->shared, seq);
			if (message) {
				broker_message_retain(message);
			} else {
				message = broker_message_new(subject, subject_length, data, length);
				if (!message)
					return -1;
				message->seq = seq;
				message->expires_ms = deadline;
				if (!returned && shared_add(&replay->shared, message) != 0)
					result = -1;
			}
			if (returned) {
				/* Back in front, as the give-back put it. */
				struct queue_run *run = queue_run_new(1, broker->allocate);

				if (!run)
					result = -1;
				else {
					run->messages[0] = message;
					run->count = 1;
					broker_message_retain(message);
					queue_give_back(queue, run, broker->allocate);
					queue->held++;
					queue->held_bytes += message->length;
					broker->stats.pending++;
					broker->stats.pending_bytes += message->length;
					broker_expiry_note(broker, queue, message);
				}
			} else if (replay_append(broker, queue, message, held & 0x7fffffffu, held >> 31) != 0) {
				result = -1;
			}
			broker_message_release(message);
			if (result != 0)
				return -1;
			break;
		}
		default:
			return -1;
		}
	}
	return r->bad ? -1 : 0;
}

static int replay_record(void *context, enum journal_record_type type,
                         const unsigned char *payload, size_t length)
{
	struct replay *replay = context;
	struct reader r = { payload, payload + length, false };
	int result;

	replay->records++;
	switch (type) {
	case JOURNAL_SUBSCRIBE:
		return replay_subscribe(replay, &r);
	case JOURNAL_UNSUBSCRIBE:
		return replay_unsubscribe(replay, &r);
	case JOURNAL_SEQ: {
		uint64_t seq = get(&r, 8);

		if (r.bad)
			return -1;
		pthread_mutex_lock(&replay->broker->lock);
		if (seq > replay->broker->stats.last_seq)
			replay->broker->stats.last_seq = seq;
		pthread_mutex_unlock(&replay->broker->lock);
		return 0;
	}
	default:
		break;
	}
	pthread_mutex_lock(&replay->broker->lock);
	switch (type) {
	case JOURNAL_PUBLISH:
	case JOURNAL_PUBLISH_TTL:
		result = replay_publish(replay, &r, type == JOURNAL_PUBLISH_TTL);
		break;
	case JOURNAL_CONSUMED:
	case JOURNAL_DELIVERED:
	case JOURNAL_SETTLED:
	case JOURNAL_RETURNED:
	case JOURNAL_HOLD:
	case JOURNAL_RETURNED_TTL:
	case JOURNAL_HOLD_TTL:
		result = replay_entries(replay, &r, type);
		break;
	default:
		log_error("journal: record type %d is unknown to this gophermqd", (int)type);
		result = -1;
		break;
	}
	pthread_mutex_unlock(&replay->broker->lock);
	return result;
}

int broker_replay(struct broker *broker, struct journal *journal,
                  void (*progress)(void *context, uint64_t done, uint64_t total), void *context,
                  char *error, size_t error_size)
{
	struct replay replay = { broker, { NULL, 0, 0 }, 0, broker->clock_ms(), durable_wall_ms(),
	                         progress, context };
	struct journal *saved = broker->journal;
	int result;

	broker->journal = NULL;     /* replay writes nothing */
	result = journal_replay(journal, replay_record, replay_progress, &replay, error, error_size);
	shared_clear(&replay.shared);
	broker->journal = saved;
	return result;
}

void broker_set_journal(struct broker *broker, struct journal *journal)
{
	pthread_mutex_lock(&broker->lock);
	broker->journal = journal;
	pthread_mutex_unlock(&broker->lock);
}

/* --- snapshot ------------------------------------------------------------- */

struct held_copy {
	struct broker_message *message;
	uint32_t held;               /* attempt, | 1 << 31 for a delivery */
};

static int held_copy_compare(const void *a, const void *b)
{
	uint64_t x = ((const struct held_copy *)a)->message->seq, y = ((const struct held_copy *)b)->message->seq;

	return x < y ? -1 : x > y;
}

/* Writes the next copies queue holds with a seq above *after as one HOLD
 * record, at most SNAPSHOT_CHUNK of them and about SNAPSHOT_CHUNK_BYTES
 * of data (at least one), and advances *after.  Returns 1 when there may
 * be more, 0 when done, -1 on an error.  Lock held. */
static int snapshot_queue_chunk(struct broker *broker, struct journal *journal, const struct queue *queue,
                                uint64_t *after)
{
	uint64_t clock_now = broker->clock_ms(), wall_now = durable_wall_ms();
	struct held_copy *copies;
	size_t count = 0, capacity = SNAPSHOT_CHUNK + queue->deliveries.count + queue->returned_count;
	size_t size = queue_key_size(queue) + 4, lo = 0, hi = queue->fresh.count, taken, data = 0;
	unsigned char *start, *p;
	bool more_fresh;

	copies = malloc(capacity * sizeof(*copies));
	if (!copies)
		return -1;
	/* Deliveries and returned copies: all have seqs below the ring's. */
	for (size_t i = 0; queue->deliveries.buckets && i <= queue->deliveries.mask; i++)
		for (struct delivery *d = queue->deliveries.buckets[i]; d; d = d->table_next)
			if (d->message->seq > *after)
				copies[count++] = (struct held_copy){ d->message, d->attempt | 0x80000000u };
	for (struct queue_run *run = queue->returned; run; run = run->next)
		for (size_t i = run->head; i < run->head + run->count; i++)
			if (run->messages[i]->seq > *after)
				copies[count++] = (struct held_copy){ run->messages[i], 0 };
	/* Only those need sorting: the ring is in seq order already. */
	if (count > 1)
		qsort(copies, count, sizeof(*copies), held_copy_compare);
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (queue_ring_at(&queue->fresh, mid)->seq <= *after)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (size_t i = lo; i < queue->fresh.count && i - lo < SNAPSHOT_CHUNK; i++)
		copies[count++] = (struct held_copy){ queue_ring_at(&queue->fresh, i), 0 };
	more_fresh = queue->fresh.count - lo > SNAPSHOT_CHUNK;
	if (count == 0) {
		free(copies);
		return 0;
	}
	for (taken = 0; taken < count && taken < SNAPSHOT_CHUNK; taken++) {
		if (taken > 0 && data + copies[taken].message->length > SNAPSHOT_CHUNK_BYTES)
			break;
		data += copies[taken].message->length;
		size += copy_size(copies[taken].message);
	}
	start = p = journal_snapshot_begin(journal, JOURNAL_HOLD_TTL, size);
	if (!p) {
		free(copies);
		return -1;
	}
	p = put_queue(p, queue);
	p = put32(p, (uint32_t)taken);
	for (size_t i = 0; i < taken; i++)
		p = put_copy(p, copies[i].message, copies[i].held, clock_now, wall_now);
	journal_snapshot_commit(journal, (size_t)(p - start));
	*after = copies[taken - 1].message->seq;
	free(copies);
	return taken < count || more_fresh ? 1 : 0;
}

static int snapshot_subscriber(struct journal *journal, const struct broker_subscriber *subscriber)
{
	const struct queue *queue = subscriber->queue;
	const struct queue_ack_options *ack = queue->ack;
	const char *group = subscriber->group ? subscriber->group->key + subscriber->subject->name_length + 1 : "";
	size_t group_length = subscriber->group ? strlen(group) : 0;
	size_t dead_letter = ack ? ack->dead_letter_length : 0;
	size_t size = BROKER_ID_LENGTH + 2 + 1 + 1 + 8 + 4 + 2 + subscriber->subject->name_length +
	              group_length + dead_letter;
	unsigned char *start = journal_snapshot_begin(journal, JOURNAL_SUBSCRIBE, size), *p = start;

	if (!p)
		return -1;
	p = put_bytes(p, subscriber->id, BROKER_ID_LENGTH);
	p = put16(p, (uint16_t)subscriber->subject->name_length);
	*p++ = (unsigned char)group_length;
	*p++ = ack ? 1 : 0;
	p = put64(p, ack ? ack->ack_wait_ms : 0);
	p = put32(p, ack ? ack->max_deliver : 0);
	p = put16(p, (uint16_t)dead_letter);
	p = put_bytes(p, subscriber->subject->name, subscriber->subject->name_length);
	p = put_bytes(p, group, group_length);
	p = put_bytes(p, ack ? ack->dead_letter : "", dead_letter);
	journal_snapshot_commit(journal, (size_t)(p - start));
	return 0;
}

/* Finds subscriber id; lock held. */
static struct broker_subscriber *find_subscriber(struct broker *broker, const char *id)
{
	struct hash_node *node = hash_table_find(&broker->subscribers,
	                                         hash_table_hash(&broker->subscribers, id, BROKER_ID_LENGTH),
	                                         id, BROKER_ID_LENGTH, broker_subscriber_match);

	return node ? hash_entry(node, struct broker_subscriber, node) : NULL;
}

/* The keys of every queue (subscriber ids of plain subscribers, group
 * keys), each as u16 length | key, in one allocation.  Lock held. */
static char *queue_keys(struct broker *broker, size_t *count_out)
{
	size_t size = 0, count = 0;
	char *keys, *p;

	for (struct broker_subscriber *s = broker->idle_head; s; s = s->idle_next)
		size += 2 + s->queue->key_length;
	keys = p = malloc(size + 1);
	if (!keys)
		return NULL;
	for (struct broker_subscriber *s = broker->idle_head; s; s = s->idle_next) {
		if (s->group && s->group->listed)
			continue;
		if (s->group)
			s->group->listed = true;
		p = (char *)put_queue((unsigned char *)p, s->queue);
		count++;
	}
	for (struct broker_subscriber *s = broker->idle_head; s; s = s->idle_next)
		if (s->group)
			s->group->listed = false;
	*count_out = count;
	return keys;
}

int broker_compact(struct broker *broker, struct journal *journal)
{
	char *ids = NULL, *keys = NULL;
	const char *key;
	size_t count = 0, queues = 0;
	int result = 0;
	unsigned char *p;

	if (journal_compact_begin(journal) != 0)
		return -1;
	/* The subscribers and queues as they are now; later changes are in
	 * the log after the snapshot, and replaying them again is harmless. */
	pthread_mutex_lock(&broker->lock);
	ids = malloc((hash_table_count(&broker->subscribers) + 1) * BROKER_ID_LENGTH);
	if (ids)
		for (struct broker_subscriber *s = broker->idle_head; s; s = s->idle_next)
			memcpy(ids + BROKER_ID_LENGTH * count++, s->id, BROKER_ID_LENGTH);
	keys = queue_keys(broker, &queues);
	pthread_mutex_unlock(&broker->lock);
	if (!ids || !keys) {
		free(ids);
		free(keys);
		journal_compact_end(journal, false);
		return -1;
	}

	/* Every subscriber first: the holds name their queues. */
	for (size_t i = 0; i < count && result == 0; i++) {
		struct broker_subscriber *subscriber;

		pthread_mutex_lock(&broker->lock);
		subscriber = find_subscriber(broker, ids + BROKER_ID_LENGTH * i);
		if (subscriber)
			result = snapshot_subscriber(journal, subscriber);
		pthread_mutex_unlock(&broker->lock);
		if (result == 0)
			result = journal_snapshot_flush(journal);
	}
	/* Then each queue's copies, a chunk per lock hold. */
	key = keys;
	for (size_t i = 0; i < queues && result == 0; i++) {
		size_t length = (size_t)(unsigned char)key[0] | (size_t)(unsigned char)key[1] << 8;
		uint64_t after = 0;
		int more = 1;

		while (more == 1) {
			struct queue *queue;

			pthread_mutex_lock(&broker->lock);
			queue = replay_queue(broker, key + 2, length);
			more = queue ? snapshot_queue_chunk(broker, journal, queue, &after) : 0;
			pthread_mutex_unlock(&broker->lock);
			if (more < 0 || journal_snapshot_flush(journal) != 0) {
				result = -1;
				more = 0;
			}
		}
		key += 2 + length;
	}
	pthread_mutex_lock(&broker->lock);
	p = journal_snapshot_begin(journal, JOURNAL_SEQ, 8);
	if (p) {
		put64(p, broker->stats.last_seq);
		journal_snapshot_commit(journal, 8);
	} else {
		result = -1;
	}
	pthread_mutex_unlock(&broker->lock);
	free(ids);
	free(keys);
	return journal_compact_end(journal, result == 0);
}
