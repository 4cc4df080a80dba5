/* test_delivery.c - unit tests of the delivery model of the broker core:
 * seqs, fetch options, ack queues, groups, parked fetches, give-back, and
 * allocation failure in the middle of each, through broker.h only.
 *
 * Time is a fake clock in milliseconds, driven by hand and served with
 * broker_run_timers(); only one test starts the timer thread. */
#include "autoconfig.h"

#include <check.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "broker.h"
#include "broker_fixture.h"
#include "uuid.h"

/* A list of attempts as two arguments: array, count. */
#define ATTEMPTS(...) (const uint32_t[]){ __VA_ARGS__ }, \
	(sizeof((const uint32_t[]){ __VA_ARGS__ }) / sizeof(uint32_t))

enum {
	RETRY_SLACK = 500,    /* ms: more than the broker's retry delay for a copy it could not requeue */
	MAX_RECEIVED = 256,
};

static uint32_t refcount_of(const struct broker_message *message)
{
	return __atomic_load_n(&message->refcount, __ATOMIC_RELAXED);
}

/* --- subscribing ------------------------------------------------------- */

static enum broker_status try_subscribe(struct broker *broker, const char *subject,
                                        const struct broker_subscription *options, subscriber_id id)
{
	return broker_subscribe(broker, subject, strlen(subject), options, id);
}

static void subscribe(struct broker *broker, const char *subject, subscriber_id id)
{
	ck_assert_int_eq(try_subscribe(broker, subject, NULL, id), BROKER_OK);
}

/* An ack subscription; ack_wait_ms 0 = the default, dead_letter NULL = none. */
static void subscribe_ack(struct broker *broker, const char *subject, uint64_t ack_wait_ms,
                          uint32_t max_deliver, const char *dead_letter, subscriber_id id)
{
	struct broker_subscription options = {
		.ack = true,
		.ack_wait_ms = ack_wait_ms,
		.max_deliver = max_deliver,
		.dead_letter = dead_letter,
		.dead_letter_length = dead_letter ? strlen(dead_letter) : 0,
	};

	ck_assert_int_eq(try_subscribe(broker, subject, &options, id), BROKER_OK);
}

static void subscribe_group(struct broker *broker, const char *subject, const char *group, bool ack,
                            subscriber_id id)
{
	struct broker_subscription options = { .group = group, .group_length = strlen(group), .ack = ack };

	ck_assert_int_eq(try_subscribe(broker, subject, &options, id), BROKER_OK);
}

static enum broker_status unsubscribe(struct broker *broker, const char *subject, const char *id)
{
	return broker_unsubscribe(broker, subject, strlen(subject), ID(id));
}

/* --- publishing -------------------------------------------------------- */

static struct broker_message *new_message(const char *data)
{
	struct broker_message *message = broker_message_new(NULL, 0, data, strlen(data));

	ck_assert_ptr_nonnull(message);
	return message;
}

static enum broker_status try_publish(struct broker *broker, const char *subject,
                                      struct broker_message *message)
{
	return broker_publish(broker, subject, strlen(subject), message);
}

/* Publishes message (the caller keeps its reference) and returns its seq. */
static uint64_t publish_message(struct broker *broker, const char *subject, struct broker_message *message)
{
	ck_assert_int_eq(try_publish(broker, subject, message), BROKER_OK);
	ck_assert_uint_gt(message->seq, 0);
	return message->seq;
}

/* Publishes a new message of data and returns its seq. */
static uint64_t publish(struct broker *broker, const char *subject, const char *data)
{
	struct broker_message *message = new_message(data);
	uint64_t seq = publish_message(broker, subject, message);

	broker_message_release(message);
	return seq;
}

/* --- fetching ---------------------------------------------------------- */

static enum broker_status try_fetch(struct broker *broker, const char *subject, const char *id,
                                    const struct broker_fetch_options *options, struct broker_batch *batch)
{
	return broker_fetch(broker, subject, strlen(subject), ID(id), options, batch);
}

/* Fetches at most max messages (0: no limit). */
static void fetch(struct broker *broker, const char *subject, const char *id, size_t max,
                  struct broker_batch *batch)
{
	struct broker_fetch_options options = { .max = max };

	ck_assert_int_eq(try_fetch(broker, subject, id, &options, batch), BROKER_OK);
}

static void peek(struct broker *broker, const char *subject, const char *id, struct broker_batch *batch)
{
	struct broker_fetch_options options = { .peek = true };

	ck_assert_int_eq(try_fetch(broker, subject, id, &options, batch), BROKER_OK);
	ck_assert(batch->count == 0 || batch->peeked);
}

/* Fetches everything available and returns how many messages that was. */
static size_t fetch_count(struct broker *broker, const char *subject, const char *id)
{
	struct broker_batch batch;
	size_t count;

	fetch(broker, subject, id, 0, &batch);
	count = batch.count;
	broker_batch_release(&batch);
	return count;
}

static uint32_t attempt_of(const struct broker_batch *batch, size_t index)
{
	return batch->attempts ? batch->attempts[index] : 1;
}

/* Asserts that batch holds the messages named seqs, in that order. */
static void assert_seqs(const struct broker_batch *batch, const uint64_t *seqs, size_t count)
{
	ck_assert_uint_eq(batch->count, count);
	for (size_t i = 0; i < count; i++)
		ck_assert_msg(batch->messages[i]->seq == seqs[i],
		              "message %zu has seq %" PRIu64 ", expected %" PRIu64,
		              i, batch->messages[i]->seq, seqs[i]);
}

static void assert_attempts(const struct broker_batch *batch, const uint32_t *attempts, size_t count)
{
	ck_assert_uint_eq(batch->count, count);
	for (size_t i = 0; i < count; i++)
		ck_assert_msg(attempt_of(batch, i) == attempts[i], "message %zu (seq %" PRIu64 "): attempt %"
		              PRIu32 ", expected %" PRIu32, i, batch->messages[i]->seq,
		              attempt_of(batch, i), attempts[i]);
}

/* --- settling ---------------------------------------------------------- */

static enum broker_status try_ack(struct broker *broker, const char *subject, const char *id,
                                  const uint64_t *seqs, size_t count, size_t *settled)
{
	return broker_ack(broker, subject, strlen(subject), id, strlen(id), seqs, count, settled);
}

/* Each returns how many of seqs were settled. */
static size_t ack(struct broker *broker, const char *subject, const char *id,
                  const uint64_t *seqs, size_t count)
{
	size_t settled = 12345;

	ck_assert_int_eq(try_ack(broker, subject, id, seqs, count, &settled), BROKER_OK);
	return settled;
}

static size_t nack(struct broker *broker, const char *subject, const char *id, uint64_t delay_ms,
                   const uint64_t *seqs, size_t count)
{
	size_t settled = 12345;

	ck_assert_int_eq(broker_nack(broker, subject, strlen(subject), ID(id), seqs, count, delay_ms,
	                             &settled), BROKER_OK);
	return settled;
}

static size_t extend(struct broker *broker, const char *subject, const char *id,
                     const uint64_t *seqs, size_t count)
{
	size_t settled = 12345;

	ck_assert_int_eq(broker_extend(broker, subject, strlen(subject), ID(id), seqs, count, &settled),
	                 BROKER_OK);
	return settled;
}

/* Acks every message of batch, which must all still be in flight. */
static void ack_batch(struct broker *broker, const char *subject, const char *id,
                      const struct broker_batch *batch)
{
	uint64_t seqs[MAX_RECEIVED];

	ck_assert_uint_le(batch->count, MAX_RECEIVED);
	for (size_t i = 0; i < batch->count; i++)
		seqs[i] = batch->messages[i]->seq;
	ck_assert_uint_eq(ack(broker, subject, id, seqs, batch->count), batch->count);
}

/* --- parked fetches ---------------------------------------------------- */

/* A waiter whose wake() counts its calls. */
static enum broker_status fetch_wait(struct broker *broker, const char *subject, const char *id,
                                     size_t max, uint64_t wait_ms, struct recorder *recorder)
{
	struct broker_fetch_options options = { .max = max };

	memset(recorder, 0, sizeof(*recorder));
	recorder->waiter.wake = record_wake;
	recorder->waiter.context = recorder;
	return broker_fetch_wait(broker, subject, strlen(subject), ID(id), &options, wait_ms,
	                         &recorder->waiter);
}

/* Asserts that a parked fetch was woken once with status and count messages. */
static void assert_woken(struct recorder *recorder, enum broker_status status, size_t count)
{
	ck_assert_int_eq(wakes_of(recorder), 1);
	ck_assert_int_eq(recorder->waiter.status, status);
	ck_assert_uint_eq(recorder->waiter.batch.count, count);
}

/* --- what consumers received --------------------------------------------- */

struct received {
	uint64_t seqs[MAX_RECEIVED];
	uint32_t attempts[MAX_RECEIVED];
	size_t count;
};

static void receive(struct received *received, const struct broker_batch *batch)
{
	for (size_t i = 0; i < batch->count; i++) {
		ck_assert_uint_lt(received->count, MAX_RECEIVED);
		received->seqs[received->count] = batch->messages[i]->seq;
		received->attempts[received->count] = attempt_of(batch, i);
		received->count++;
	}
}

/* Fetches everything subscriber id can take now into received, acking what
 * comes from an ack queue; returns how many messages that was. */
static size_t drain_into(struct broker *broker, const char *subject, const char *id,
                         struct received *received)
{
	size_t total = 0;

	for (;;) {
		struct broker_batch batch;

		fetch(broker, subject, id, 0, &batch);
		if (batch.count == 0) {
			broker_batch_release(&batch);
			return total;
		}
		receive(received, &batch);
		if (batch.in_flight)
			ack_batch(broker, subject, id, &batch);
		total += batch.count;
		broker_batch_release(&batch);
	}
}

/* Members take one message at a time in turn until none gets any. */
static void drain_group_into(struct broker *broker, const char *subject, char (*ids)[BROKER_ID_LENGTH + 1],
                             size_t members, struct received *received)
{
	for (bool taken = true; taken;) {
		taken = false;
		for (size_t i = 0; i < members; i++) {
			struct broker_batch batch;

			fetch(broker, subject, ids[i], 1, &batch);
			taken |= batch.count > 0;
			receive(received, &batch);
			if (batch.in_flight)
				ack_batch(broker, subject, ids[i], &batch);
			broker_batch_release(&batch);
		}
	}
}

static int compare_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Asserts that received holds exactly seqs, each once, in that order. */
static void assert_received(const struct received *received, const uint64_t *seqs, size_t count)
{
	for (size_t i = 0; i < received->count && i < count; i++)
		ck_assert_msg(received->seqs[i] == seqs[i], "received #%zu: seq %" PRIu64 ", expected %" PRIu64,
		              i, received->seqs[i], seqs[i]);
	ck_assert_msg(received->count == count, "received %zu messages, expected %zu", received->count, count);
}

static void assert_received_any_order(struct received *received, const uint64_t *seqs, size_t count)
{
	qsort(received->seqs, received->count, sizeof(received->seqs[0]), compare_u64);
	assert_received(received, seqs, count);
}

/* ======================================================================= */
/* --- seqs -------------------------------------------------------------- */

START_TEST(test_first_publish_gets_seq_1_and_later_ones_strictly_higher)
{
	struct broker *broker = new_broker();
	subscriber_id id;
	uint64_t last;

	ck_assert_uint_eq(stats_of(broker).last_seq, 0);
	subscribe(broker, "a", id);
	last = publish(broker, "a", "first");
	ck_assert_uint_eq(last, 1);
	for (int i = 0; i < 200; i++) {
		uint64_t seq = publish(broker, "a", "next");

		ck_assert_uint_gt(seq, last);
		last = seq;
	}
	ck_assert_uint_eq(stats_of(broker).last_seq, last);
	broker_free(broker);
}
END_TEST

/* One counter for the broker; every copy of a message carries its seq. */
START_TEST(test_seqs_are_broker_wide_and_shared_by_every_copy)
{
	struct broker *broker = new_broker();
	subscriber_id a1, a2, b;
	struct broker_batch batch;
	uint64_t first, second, third;

	subscribe(broker, "a", a1);
	subscribe(broker, "a", a2);
	subscribe(broker, "b", b);
	first = publish(broker, "a", "1");
	second = publish(broker, "b", "2");
	third = publish(broker, "a", "3");
	ck_assert_uint_eq(first, 1);
	ck_assert_uint_eq(second, 2);
	ck_assert_uint_eq(third, 3);
	fetch(broker, "a", a1, 0, &batch);
	assert_seqs(&batch, SEQS(1, 3));
	broker_batch_release(&batch);
	fetch(broker, "a", a2, 0, &batch);
	assert_seqs(&batch, SEQS(1, 3));
	broker_batch_release(&batch);
	fetch(broker, "b", b, 0, &batch);
	assert_seqs(&batch, SEQS(2));
	broker_batch_release(&batch);
	broker_free(broker);
}
END_TEST

START_TEST(test_batch_publish_gives_consecutive_seqs_in_array_order)
{
	static const char *const subjects[] = { "a", "b", "a", "a", "b" };
	enum { COUNT = 5 };
	struct broker *broker = new_broker();
	struct broker_publish_item items[COUNT];
	struct broker_message *messages[COUNT];
	struct broker_batch batch;
	subscriber_id a, b;
	size_t failed = 99;

	subscribe(broker, "a", a);
	subscribe(broker, "b", b);
	ck_assert_uint_eq(publish(broker, "a", "before"), 1);
	for (size_t i = 0; i < COUNT; i++) {
		messages[i] = new_message("item");
		items[i] = (struct broker_publish_item){ subjects[i], 1, messages[i] };
	}
	ck_assert_int_eq(broker_publish_batch(broker, items, COUNT, &failed), BROKER_OK);
	for (size_t i = 0; i < COUNT; i++)
		ck_assert_uint_eq(messages[i]->seq, 2 + i);
	ck_assert_uint_eq(stats_of(broker).last_seq, 6);
	ck_assert_uint_eq(stats_of(broker).published, 6);
	ck_assert_uint_eq(publish(broker, "b", "after"), 7);

	fetch(broker, "a", a, 0, &batch);
	assert_seqs(&batch, SEQS(1, 2, 4, 5));
	broker_batch_release(&batch);
	fetch(broker, "b", b, 0, &batch);
	assert_seqs(&batch, SEQS(3, 6, 7));
	broker_batch_release(&batch);
	for (size_t i = 0; i < COUNT; i++) {
		ck_assert_uint_eq(refcount_of(messages[i]), 1);
		broker_message_release(messages[i]);
	}
	broker_free(broker);
}
END_TEST

/* A refused publish names nothing; a seq once given is never given again,
 * not even when the subject went away and came back. */
START_TEST(test_refused_publishes_take_no_seq_and_seqs_are_never_reused)
{
	struct broker_limits limits = test_limits();
	struct broker *broker;
	struct broker_message *message = new_message("refused"), *other = new_message("other");
	struct broker_publish_item items[2] = { { S("a"), message }, { S("nobody"), other } };
	subscriber_id id;
	size_t failed = 99;
	uint64_t seq;

	limits.max_pending = 2;
	broker = new_broker_with(&limits);
	subscribe(broker, "a", id);
	ck_assert_uint_eq(publish(broker, "a", "1"), 1);
	ck_assert_int_eq(try_publish(broker, "nobody", message), BROKER_NO_SUBSCRIBER);
	ck_assert_int_eq(try_publish(broker, "a..b", message), BROKER_INVALID_SUBJECT);
	ck_assert_uint_eq(message->seq, 0);
	ck_assert_uint_eq(publish(broker, "a", "2"), 2);
	ck_assert_int_eq(try_publish(broker, "a", message), BROKER_OVERFLOW);
	/* The first message that fails is named: 0, which does not fit,
	 * before 1, which has no subscriber. */
	ck_assert_int_eq(broker_publish_batch(broker, items, 2, &failed), BROKER_OVERFLOW);
	ck_assert_uint_eq(failed, 0);
	ck_assert_uint_eq(message->seq, 0);
	ck_assert_uint_eq(other->seq, 0);
	ck_assert_uint_eq(refcount_of(message), 1);
	ck_assert_uint_eq(stats_of(broker).last_seq, 2);

	ck_assert_uint_eq(fetch_count(broker, "a", id), 2);
	ck_assert_int_eq(unsubscribe(broker, "a", id), BROKER_OK);
	ck_assert_uint_eq(stats_of(broker).subjects, 0);
	subscribe(broker, "a", id);
	seq = publish_message(broker, "a", message);
	ck_assert_uint_gt(seq, 2);
	ck_assert_uint_eq(stats_of(broker).last_seq, seq);
	broker_message_release(message);
	broker_message_release(other);
	broker_free(broker);
}
END_TEST

/* --- fetch options ----------------------------------------------------- */

START_TEST(test_fetch_max_takes_the_oldest_and_leaves_the_rest_pending)
{
	struct broker *broker = new_broker();
	struct broker_batch batch;
	subscriber_id id;

	subscribe(broker, "s", id);
	for (int i = 0; i < 5; i++)
		publish(broker, "s", "m");
	fetch(broker, "s", id, 2, &batch);
	assert_seqs(&batch, SEQS(1, 2));
	broker_batch_release(&batch);
	ck_assert_uint_eq(stats_of(broker).pending, 3);
	fetch(broker, "s", id, 2, &batch);
	assert_seqs(&batch, SEQS(3, 4));
	broker_batch_release(&batch);
	fetch(broker, "s", id, 10, &batch);
	assert_seqs(&batch, SEQS(5));
	broker_batch_release(&batch);
	ck_assert_uint_eq(fetch_count(broker, "s", id), 0);
	ck_assert_uint_eq(stats_of(broker).pending, 0);
	ck_assert_uint_eq(stats_of(broker).pending_bytes, 0);
	ck_assert_uint_eq(stats_of(broker).delivered, 5);
	broker_free(broker);
}
END_TEST

START_TEST(test_fetch_max_bytes_stops_before_exceeding_but_takes_at_least_one)
{
	struct broker *broker = new_broker();
	struct broker_fetch_options options = { 0 };
	struct broker_batch batch;
	subscriber_id id;

	subscribe(broker, "s", id);
	publish(broker, "s", "aaa");          /* 1 */
	publish(broker, "s", "bbb");          /* 2 */
	publish(broker, "s", "cc");           /* 3 */
	publish(broker, "s", "dddddddddd");   /* 4: 10 bytes */
	publish(broker, "s", "e");            /* 5 */
	publish(broker, "s", "");             /* 6 */
	publish(broker, "s", "");             /* 7 */
	publish(broker, "s", "f");            /* 8 */

	options.max_bytes = 6;   /* 3 + 3 fit exactly, + 2 would not */
	ck_assert_int_eq(try_fetch(broker, "s", id, &options, &batch), BROKER_OK);
	assert_seqs(&batch, SEQS(1, 2));
	broker_batch_release(&batch);
	options.max_bytes = 1;   /* 2 bytes is too many, but one is always taken */
	ck_assert_int_eq(try_fetch(broker, "s", id, &options, &batch), BROKER_OK);
	assert_seqs(&batch, SEQS(3));
	broker_batch_release(&batch);
	options.max_bytes = 10;
	ck_assert_int_eq(try_fetch(broker, "s", id, &options, &batch), BROKER_OK);
	assert_seqs(&batch, SEQS(4));
	broker_batch_release(&batch);
	options.max_bytes = 1;   /* 1 + 0 + 0 + 1 would be 2 */
	ck_assert_int_eq(try_fetch(broker, "s", id, &options, &batch), BROKER_OK);
	assert_seqs(&batch, SEQS(5, 6, 7));
	broker_batch_release(&batch);
	options.max_bytes = 100;
	options.max = 1;
	publish(broker, "s", "g");
	ck_assert_int_eq(try_fetch(broker, "s", id, &options, &batch), BROKER_OK);
	assert_seqs(&batch, SEQS(8));
	broker_batch_release(&batch);
	ck_assert_uint_eq(stats_of(broker).pending, 1);
	ck_assert_uint_eq(stats_of(broker).pending_bytes, 1);
	broker_free(broker);
}
END_TEST

START_TEST(test_fetch_max_batch_caps_every_fetch)
{
	struct broker_limits limits = test_limits();
	struct broker *broker;
	struct broker_batch batch;
	subscriber_id plain, acked;

	limits.fetch_max_batch = 3;
	broker = new_broker_with(&limits);
	subscribe(broker, "s", plain);
	subscribe_ack(broker, "s", 0, 0, NULL, acked);
	for (int i = 0; i < 10; i++)
		publish(broker, "s", "m");

	ck_assert_int_eq(try_fetch(broker, "s", plain, NULL, &batch), BROKER_OK);
	assert_seqs(&batch, SEQS(1, 2, 3));
	broker_batch_release(&batch);
	fetch(broker, "s", plain, 5, &batch);
	assert_seqs(&batch, SEQS(4, 5, 6));
	broker_batch_release(&batch);
	fetch(broker, "s", plain, 2, &batch);
	assert_seqs(&batch, SEQS(7, 8));
	broker_batch_release(&batch);
	ck_assert_int_eq(try_fetch(broker, "s", acked, NULL, &batch), BROKER_OK);
	assert_seqs(&batch, SEQS(1, 2, 3));
	ck_assert_uint_eq(stats_of(broker).in_flight, 3);
	broker_batch_release(&batch);

	limits.fetch_max_batch = 0;   /* live */
	broker_set_limits(broker, &limits);
	fetch(broker, "s", acked, 0, &batch);
	assert_seqs(&batch, SEQS(4, 5, 6, 7, 8, 9, 10));
	broker_batch_release(&batch);
	broker_free(broker);
}
END_TEST

/* Peek removes nothing and starts no ack timer; it shows each message's
 * attempt as the one its next delivery will have. */
START_TEST(test_peek_leaves_messages_and_timers_alone)
{
	struct broker *broker = new_broker();
	struct broker_message *first = new_message("first"), *second = new_message("second");
	struct broker_batch batch;
	struct broker_stats stats;
	subscriber_id id;

	subscribe_ack(broker, "s", 0, 0, NULL, id);
	publish_message(broker, "s", first);
	publish_message(broker, "s", second);

	peek(broker, "s", id, &batch);
	assert_seqs(&batch, SEQS(1, 2));
	assert_attempts(&batch, ATTEMPTS(1, 1));
	ck_assert(batch.peeked);
	ck_assert(!batch.in_flight);
	ck_assert(batch.ack_queue);
	ck_assert_uint_eq(refcount_of(first), 3);   /* ours, the queue's, the batch's */
	broker_batch_give_back(broker, ID(id), &batch);   /* only releases a peek */
	ck_assert_uint_eq(batch.count, 0);
	ck_assert_uint_eq(refcount_of(first), 2);
	stats = stats_of(broker);
	ck_assert_uint_eq(stats.pending, 2);
	ck_assert_uint_eq(stats.in_flight, 0);
	ck_assert_uint_eq(stats.delivered, 0);
	ck_assert_uint_eq(broker_run_timers(broker), UINT64_MAX);   /* no timer started */

	fetch(broker, "s", id, 1, &batch);
	assert_seqs(&batch, SEQS(1));
	broker_batch_release(&batch);
	ck_assert_uint_eq(nack(broker, "s", id, 0, SEQS(1)), 1);
	peek(broker, "s", id, &batch);
	assert_seqs(&batch, SEQS(1, 2));
	assert_attempts(&batch, ATTEMPTS(2, 1));
	broker_batch_release(&batch);
	peek(broker, "s", id, &batch);   /* again: the same */
	assert_attempts(&batch, ATTEMPTS(2, 1));
	broker_batch_release(&batch);
	ck_assert_uint_eq(broker_run_timers(broker), UINT64_MAX);

	advance(10 * ACK_WAIT);
	ck_assert_uint_eq(broker_run_timers(broker), UINT64_MAX);
	fetch(broker, "s", id, 0, &batch);
	assert_seqs(&batch, SEQS(1, 2));
	assert_attempts(&batch, ATTEMPTS(2, 1));
	ack_batch(broker, "s", id, &batch);
	broker_batch_release(&batch);
	ck_assert_uint_eq(refcount_of(first), 1);
	ck_assert_uint_eq(refcount_of(second), 1);
	broker_message_release(first);
	broker_message_release(second);
	broker_free(broker);
}
END_TEST

START_TEST(test_peek_of_a_plain_queue_shows_what_the_next_fetch_takes)
{
	struct broker *broker = new_broker();
	struct broker_batch batch;
	subscriber_id id;

	subscribe(broker, "s", id);
	publish(broker, "s", "x");
	publish(broker, "s", "y");
	peek(broker, "s", id, &batch);
	assert_seqs(&batch, SEQS(1, 2));
	assert_attempts(&batch, ATTEMPTS(1, 1));
	ck_assert(!batch.ack_queue);
	broker_batch_release(&batch);
	ck_assert_uint_eq(stats_of(broker).pending, 2);
	fetch(broker, "s", id, 0, &batch);
	assert_seqs(&batch, SEQS(1, 2));
	ck_assert(!batch.peeked);
	ck_assert(!batch.in_flight);
	broker_batch_release(&batch);
	peek(broker, "s", id, &batch);
	ck_assert_uint_eq(batch.count, 0);
	broker_batch_release(&batch);
	broker_free(broker);
}
END_TEST

/* --- ack queues -------------------------------------------------------- */

START_TEST(test_ack_fetch_keeps_copies_in_flight_until_acked)
{
	struct broker *broker = new_broker();
	struct broker_message *messages[3];
	struct broker_batch batch;
	struct broker_stats stats;
	subscriber_id id;

	subscribe_ack(broker, "s", 0, 0, NULL, id);
	for (int i = 0; i < 3; i++) {
		messages[i] = new_message("four");
		publish_message(broker, "s", messages[i]);
	}
	fetch(broker, "s", id, 0, &batch);
	assert_seqs(&batch, SEQS(1, 2, 3));
	assert_attempts(&batch, ATTEMPTS(1, 1, 1));
	ck_assert(batch.in_flight);
	ck_assert(batch.ack_queue);
	ck_assert_uint_eq(refcount_of(messages[0]), 3);   /* ours, the delivery's, the batch's */
	broker_batch_release(&batch);
	ck_assert_uint_eq(refcount_of(messages[0]), 2);
	stats = stats_of(broker);
	ck_assert_uint_eq(stats.in_flight, 3);
	ck_assert_uint_eq(stats.pending, 3);
	ck_assert_uint_eq(stats.pending_bytes, 12);
	ck_assert_uint_eq(stats.delivered, 3);
	ck_assert_uint_eq(fetch_count(broker, "s", id), 0);   /* in flight is not available */

	ck_assert_uint_eq(ack(broker, "s", id, SEQS(1, 3)), 2);
	ck_assert_uint_eq(refcount_of(messages[0]), 1);
	ck_assert_uint_eq(refcount_of(messages[1]), 2);
	ck_assert_uint_eq(refcount_of(messages[2]), 1);
	stats = stats_of(broker);
	ck_assert_uint_eq(stats.acked, 2);
	ck_assert_uint_eq(stats.in_flight, 1);
	ck_assert_uint_eq(stats.pending, 1);
	ck_assert_uint_eq(stats.pending_bytes, 4);
	ck_assert_uint_eq(ack(broker, "s", id, SEQS(1)), 0);   /* once only */
	ck_assert_uint_eq(ack(broker, "s", id, SEQS(2)), 1);
	stats = stats_of(broker);
	ck_assert_uint_eq(stats.pending, 0);
	ck_assert_uint_eq(stats.pending_bytes, 0);
	ck_assert_uint_eq(stats.in_flight, 0);
	ck_assert_uint_eq(broker_run_timers(broker), UINT64_MAX);
	for (int i = 0; i < 3; i++) {
		ck_assert_uint_eq(refcount_of(messages[i]), 1);
		broker_message_release(messages[i]);
	}
	broker_free(broker);
}
END_TEST

START_TEST(test_ack_settles_only_seqs_in_flight_for_that_subscriber)
{
	struct broker *broker = new_broker();
	struct broker_batch batch;
	subscriber_id a, b, plain, unknown;
	size_t settled;

	subscribe_ack(broker, "s", 0, 0, NULL, a);
	subscribe_ack(broker, "s", 0, 0, NULL, b);
	subscribe(broker, "s", plain);
	uuid_generate_v4(unknown);
	for (int i = 0; i < 3; i++)
		publish(broker, "s", "m");
	fetch(broker, "s", a, 0, &batch);
	broker_batch_release(&batch);
	fetch(broker, "s", b, 1, &batch);
	assert_seqs(&batch, SEQS(1));
	broker_batch_release(&batch);

	/* b: 2 and 3 are queued, not in flight; 42 does not exist */
	ck_assert_uint_eq(ack(broker, "s", b, SEQS(2, 3, 1, 42)), 1);
	ck_assert_uint_eq(nack(broker, "s", a, 500, SEQS(2)), 1);
	ck_assert_uint_eq(ack(broker, "s", a, SEQS(2)), 0);    /* delayed, not in flight */
	ck_assert_uint_eq(extend(broker, "s", a, SEQS(2)), 0);
	ck_assert_uint_eq(ack(broker, "s", a, SEQS(1, 3, 1)), 2);
	ck_assert_uint_eq(ack(broker, "s", a, NULL, 0), 0);
	ck_assert_uint_eq(stats_of(broker).acked, 3);
	ck_assert_uint_eq(stats_of(broker).pending, 3 + 2 + 1);   /* plain 3, b 2, a's delayed 2 */

	ck_assert_int_eq(try_ack(broker, "s", plain, SEQS(1), &settled), BROKER_NOT_ACK);
	ck_assert_int_eq(broker_nack(broker, S("s"), ID(plain), SEQS(1), 0, &settled), BROKER_NOT_ACK);
	ck_assert_int_eq(broker_extend(broker, S("s"), ID(plain), SEQS(1), &settled), BROKER_NOT_ACK);
	ck_assert_int_eq(try_ack(broker, "s", unknown, SEQS(1), &settled), BROKER_BAD_ID);
	ck_assert_int_eq(try_ack(broker, "other", a, SEQS(1), &settled), BROKER_BAD_ID);
	ck_assert_int_eq(try_ack(broker, "s..", a, SEQS(1), &settled), BROKER_INVALID_SUBJECT);
	ck_assert_uint_eq(settled, 0);
	ck_assert_uint_eq(fetch_count(broker, "s", plain), 3);
	broker_free(broker);
}
END_TEST

START_TEST(test_unacked_message_is_redelivered_after_ack_wait_with_attempt_2_before_newer)
{
	struct broker *broker = new_broker();
	struct broker_batch batch;
	subscriber_id id;

	subscribe_ack(broker, "s", 0, 0, NULL, id);
	publish(broker, "s", "old");
	fetch(broker, "s", id, 0, &batch);
	assert_attempts(&batch, ATTEMPTS(1));
	broker_batch_release(&batch);
	advance(400);
	publish(broker, "s", "new");
	ck_assert_uint_eq(broker_run_timers(broker), ACK_WAIT - 400);
	advance(ACK_WAIT - 400 - 1);
	ck_assert_uint_eq(broker_run_timers(broker), 1);
	peek(broker, "s", id, &batch);
	assert_seqs(&batch, SEQS(2));
	broker_batch_release(&batch);
	ck_assert_uint_eq(stats_of(broker).in_flight, 1);

	advance(1);
	ck_assert_uint_eq(broker_run_timers(broker), UINT64_MAX);
	ck_assert_uint_eq(stats_of(broker).in_flight, 0);
	ck_assert_uint_eq(stats_of(broker).pending, 2);
	fetch(broker, "s", id, 0, &batch);
	assert_seqs(&batch, SEQS(1, 2));
	assert_attempts(&batch, ATTEMPTS(2, 1));
	ck_assert_uint_eq(stats_of(broker).redelivered, 1);
	ck_assert_uint_eq(stats_of(broker).delivered, 3);
	ack_batch(broker, "s", id, &batch);
	broker_batch_release(&batch);
	ck_assert_uint_eq(stats_of(broker).pending, 0);
	broker_free(broker);
}
END_TEST

/* Deadlines hold to the ms: a fetch after the ack wait gets the message
 * even when no timer ran in between. */
START_TEST(test_fetch_after_the_ack_wait_gets_the_redelivery_without_a_timer_run)
{
	struct broker *broker = new_broker();
	struct broker_batch batch;
	subscriber_id id;

	subscribe_ack(broker, "s", 250, 0, NULL, id);
	publish(broker, "s", "x");
	fetch(broker, "s", id, 0, &batch);
	broker_batch_release(&batch);
	advance(249);
	ck_assert_uint_eq(fetch_count(broker, "s", id), 0);
	advance(1);
	fetch(broker, "s", id, 0, &batch);
	assert_seqs(&batch, SEQS(1));
	assert_attempts(&batch, ATTEMPTS(2));
	broker_batch_release(&batch);
	advance(250);
	fetch(broker, "s", id, 0, &batch);
	assert_attempts(&batch, ATTEMPTS(3));
	ack_batch(broker, "s", id, &batch);
	broker_batch_release(&batch);
	broker_free(broker);
}
END_TEST

START_TEST(test_nack_redelivers_at_once_before_newer_messages)
{
	struct broker *broker = new_broker();
	struct broker_batch batch;
	subscriber_id id;

	subscribe_ack(broker, "s", 0, 0, NULL, id);
	for (int i = 0; i < 3; i++)
		publish(broker, "s", "m");
	fetch(broker, "s", id, 2, &batch);
	broker_batch_release(&batch);
	ck_assert_uint_eq(nack(broker, "s", id, 0, SEQS(2)), 1);
	ck_assert_uint_eq(stats_of(broker).in_flight, 1);
	ck_assert_uint_eq(stats_of(broker).nacked, 1);
	fetch(broker, "s", id, 0, &batch);
	assert_seqs(&batch, SEQS(2, 3));
	assert_attempts(&batch, ATTEMPTS(2, 1));
	broker_batch_release(&batch);
	ck_assert_uint_eq(nack(broker, "s", id, 0, SEQS(3, 1)), 2);
	fetch(broker, "s", id, 0, &batch);
	assert_seqs(&batch, SEQS(1, 3));
	assert_attempts(&batch, ATTEMPTS(2, 2));
	broker_batch_release(&batch);
	ck_assert_uint_eq(ack(broker, "s", id, SEQS(1, 2, 3)), 3);
	ck_assert_uint_eq(stats_of(broker).pending, 0);
	ck_assert_uint_eq(stats_of(broker).redelivered, 3);
	broker_free(broker);
}
END_TEST

START_TEST(test_nack_with_delay_redelivers_after_the_delay)
{
	struct broker *broker = new_broker();
	struct broker_batch batch;
	subscriber_id id;

	subscribe_ack(broker, "s", 0, 0, NULL, id);
	publish(broker, "s", "1");
	publish(broker, "s", "2");
	fetch(broker, "s", id, 0, &batch);
	broker_batch_release(&batch);
	ck_assert_uint_eq(nack(broker, "s", id, 500, SEQS(1)), 1);
	ck_assert_uint_eq(stats_of(broker).in_flight, 1);
	ck_assert_uint_eq(stats_of(broker).pending, 2);
	ck_assert_uint_eq(broker_run_timers(broker), 500);
	ck_assert_uint_eq(fetch_count(broker, "s", id), 0);
	advance(499);
	ck_assert_uint_eq(fetch_count(broker, "s", id), 0);
	advance(1);
	fetch(broker, "s", id, 0, &batch);
	assert_seqs(&batch, SEQS(1));
	assert_attempts(&batch, ATTEMPTS(2));
	broker_batch_release(&batch);
	/* 2 still waits for its own deadline, from the first fetch */
	ck_assert_uint_eq(broker_run_timers(broker), ACK_WAIT - 500);
	ck_assert_uint_eq(ack(broker, "s", id, SEQS(1, 2)), 2);
	ck_assert_uint_eq(broker_run_timers(broker), UINT64_MAX);
	broker_free(broker);
}
END_TEST

START_TEST(test_extend_restarts_the_ack_wait)
{
	struct broker *broker = new_broker();
	struct broker_batch batch;
	subscriber_id id;

	subscribe_ack(broker, "s", 0, 0, NULL, id);
	publish(broker, "s", "slow work");
	fetch(broker, "s", id, 0, &batch);
	broker_batch_release(&batch);
	advance(800);
	ck_assert_uint_eq(extend(broker, "s", id, SEQS(1, 99)), 1);
	ck_assert_uint_eq(broker_run_timers(broker), ACK_WAIT);
	advance(200);   /* the first deadline */
	ck_assert_uint_eq(broker_run_timers(broker), ACK_WAIT - 200);
	ck_assert_uint_eq(fetch_count(broker, "s", id), 0);
	ck_assert_uint_eq(stats_of(broker).in_flight, 1);
	advance(ACK_WAIT - 200 - 1);
	ck_assert_uint_eq(fetch_count(broker, "s", id), 0);
	advance(1);
	fetch(broker, "s", id, 0, &batch);
	assert_attempts(&batch, ATTEMPTS(2));
	ack_batch(broker, "s", id, &batch);
	broker_batch_release(&batch);
	broker_free(broker);
}
END_TEST

START_TEST(test_max_deliver_dead_letters_a_new_message_with_the_same_data)
{
	static const char payload[] = "pay\0load";
	struct broker *broker = new_broker();
	struct broker_message *message = broker_message_new(NULL, 0, payload, sizeof(payload));
	struct broker_batch batch;
	struct broker_stats stats;
	subscriber_id worker, timed, dead;

	ck_assert_ptr_nonnull(message);
	subscribe_ack(broker, "work", 0, 2, "dead", worker);
	subscribe(broker, "dead", dead);
	publish_message(broker, "work", message);
	fetch(broker, "work", worker, 0, &batch);
	assert_attempts(&batch, ATTEMPTS(1));
	broker_batch_release(&batch);
	ck_assert_uint_eq(nack(broker, "work", worker, 0, SEQS(1)), 1);
	fetch(broker, "work", worker, 0, &batch);
	assert_attempts(&batch, ATTEMPTS(2));
	broker_batch_release(&batch);
	ck_assert_uint_eq(nack(broker, "work", worker, 0, SEQS(1)), 1);   /* the last allowed */

	stats = stats_of(broker);
	ck_assert_uint_eq(stats.dead_lettered, 1);
	ck_assert_uint_eq(stats.max_deliver_dropped, 0);
	ck_assert_uint_eq(stats.in_flight, 0);
	ck_assert_uint_eq(stats.pending, 1);            /* the dead letter's copy */
	ck_assert_uint_eq(stats.last_seq, 2);
	ck_assert_uint_eq(refcount_of(message), 1);     /* the original is gone from the broker */
	ck_assert_uint_eq(fetch_count(broker, "work", worker), 0);
	fetch(broker, "dead", dead, 0, &batch);
	assert_seqs(&batch, SEQS(2));
	ck_assert_ptr_ne(batch.messages[0], message);
	ck_assert_uint_eq(batch.messages[0]->length, sizeof(payload));
	ck_assert_mem_eq(batch.messages[0]->data, payload, sizeof(payload));
	broker_batch_release(&batch);

	/* by ack timeout too */
	subscribe_ack(broker, "timed", 0, 1, "dead", timed);
	publish(broker, "timed", "late");
	fetch(broker, "timed", timed, 0, &batch);
	broker_batch_release(&batch);
	advance(ACK_WAIT);
	ck_assert_uint_eq(broker_run_timers(broker), UINT64_MAX);
	ck_assert_uint_eq(stats_of(broker).dead_lettered, 2);
	fetch(broker, "dead", dead, 0, &batch);
	assert_seqs(&batch, SEQS(4));
	ck_assert_str_eq(batch.messages[0]->data, "late");
	broker_batch_release(&batch);
	ck_assert_uint_eq(stats_of(broker).pending, 0);
	broker_message_release(message);
	broker_free(broker);
}
END_TEST

START_TEST(test_max_deliver_drops_a_message_when_no_one_takes_dead_letters)
{
	struct broker *broker = new_broker();
	struct broker_message *message = new_message("x");
	struct broker_batch batch;
	struct broker_stats stats;
	subscriber_id lettered, plain;

	subscribe_ack(broker, "s", 0, 1, "nowhere", lettered);
	subscribe_ack(broker, "t", 0, 1, NULL, plain);
	publish_message(broker, "s", message);
	publish(broker, "t", "y");
	fetch(broker, "s", lettered, 0, &batch);
	broker_batch_release(&batch);
	fetch(broker, "t", plain, 0, &batch);
	broker_batch_release(&batch);
	ck_assert_uint_eq(nack(broker, "s", lettered, 0, SEQS(1)), 1);
	advance(ACK_WAIT);
	broker_run_timers(broker);

	stats = stats_of(broker);
	ck_assert_uint_eq(stats.max_deliver_dropped, 2);
	ck_assert_uint_eq(stats.dead_lettered, 0);
	ck_assert_uint_eq(stats.pending, 0);
	ck_assert_uint_eq(stats.pending_bytes, 0);
	ck_assert_uint_eq(stats.in_flight, 0);
	ck_assert_uint_eq(stats.last_seq, 2);
	ck_assert_uint_eq(refcount_of(message), 1);
	ck_assert_uint_eq(fetch_count(broker, "s", lettered), 0);
	ck_assert_uint_eq(fetch_count(broker, "t", plain), 0);
	broker_message_release(message);
	broker_free(broker);
}
END_TEST

/* The exhausted original is removed before its dead letter is published,
 * so at the pending limit the dead letter takes the room it frees. */
START_TEST(test_dead_letter_may_use_the_room_its_original_frees)
{
	struct broker_limits limits = test_limits();
	struct broker *broker;
	struct broker_batch batch;
	subscriber_id worker, dead;

	limits.max_pending = 1;
	broker = new_broker_with(&limits);
	subscribe_ack(broker, "work", 0, 1, "dead", worker);
	subscribe(broker, "dead", dead);
	publish(broker, "work", "last try");
	fetch(broker, "work", worker, 0, &batch);
	broker_batch_release(&batch);
	ck_assert_uint_eq(nack(broker, "work", worker, 0, SEQS(1)), 1);
	ck_assert_uint_eq(stats_of(broker).dead_lettered, 1);
	ck_assert_uint_eq(stats_of(broker).max_deliver_dropped, 0);
	ck_assert_uint_eq(stats_of(broker).overflows, 0);
	fetch(broker, "dead", dead, 0, &batch);
	assert_seqs(&batch, SEQS(2));
	ck_assert_str_eq(batch.messages[0]->data, "last try");
	broker_batch_release(&batch);
	broker_free(broker);
}
END_TEST

START_TEST(test_in_flight_copies_count_in_pending_and_against_the_limits)
{
	struct broker_limits limits = test_limits();
	struct broker *broker;
	struct broker_message *two_bytes = new_message("hh"), *empty = new_message("");
	struct broker_batch batch;
	subscriber_id id;

	limits.max_pending = 3;
	limits.max_pending_bytes = 8;
	broker = new_broker_with(&limits);
	subscribe_ack(broker, "s", 0, 0, NULL, id);
	publish(broker, "s", "abcd");
	publish(broker, "s", "efg");
	fetch(broker, "s", id, 0, &batch);
	broker_batch_release(&batch);
	ck_assert_uint_eq(stats_of(broker).in_flight, 2);
	ck_assert_uint_eq(stats_of(broker).pending, 2);
	ck_assert_uint_eq(stats_of(broker).pending_bytes, 7);
	ck_assert_int_eq(try_publish(broker, "s", two_bytes), BROKER_OVERFLOW);   /* 9 bytes */
	publish(broker, "s", "h");                                                 /* 8 bytes, 3 copies */
	ck_assert_int_eq(try_publish(broker, "s", empty), BROKER_OVERFLOW);       /* 4 copies */
	ck_assert_uint_eq(nack(broker, "s", id, 100, SEQS(1)), 1);                /* delayed counts too */
	ck_assert_int_eq(try_publish(broker, "s", empty), BROKER_OVERFLOW);
	ck_assert_uint_eq(ack(broker, "s", id, SEQS(2)), 1);
	ck_assert_uint_eq(stats_of(broker).pending, 2);
	ck_assert_uint_eq(stats_of(broker).pending_bytes, 5);
	ck_assert_int_eq(try_publish(broker, "s", empty), BROKER_OK);
	ck_assert_uint_eq(stats_of(broker).overflows, 3);
	broker_message_release(two_bytes);
	broker_message_release(empty);
	broker_free(broker);
}
END_TEST

START_TEST(test_unsubscribe_frees_in_flight_and_delayed_copies_with_their_timers)
{
	struct broker *broker = new_broker();
	struct broker_message *messages[3];
	struct broker_batch batch;
	struct broker_stats stats;
	subscriber_id id;

	subscribe_ack(broker, "s", 0, 0, NULL, id);
	for (int i = 0; i < 3; i++) {
		messages[i] = new_message("m");
		publish_message(broker, "s", messages[i]);
	}
	fetch(broker, "s", id, 2, &batch);
	ck_assert_uint_eq(nack(broker, "s", id, 300, SEQS(2)), 1);
	ck_assert_int_eq(unsubscribe(broker, "s", id), BROKER_OK);
	ck_assert_int_eq(unsubscribe(broker, "s", id), BROKER_BAD_ID);
	stats = stats_of(broker);
	ck_assert_uint_eq(stats.pending, 0);
	ck_assert_uint_eq(stats.pending_bytes, 0);
	ck_assert_uint_eq(stats.in_flight, 0);
	ck_assert_uint_eq(stats.subjects, 0);
	ck_assert_uint_eq(stats.subscribers, 0);
	ck_assert_uint_eq(broker_run_timers(broker), UINT64_MAX);
	advance(10 * ACK_WAIT);
	ck_assert_uint_eq(broker_run_timers(broker), UINT64_MAX);
	ck_assert_uint_eq(refcount_of(messages[0]), 2);   /* ours and the batch's */
	broker_batch_release(&batch);
	for (int i = 0; i < 3; i++) {
		ck_assert_uint_eq(refcount_of(messages[i]), 1);
		broker_message_release(messages[i]);
	}
	broker_free(broker);
}
END_TEST

/* --- groups ------------------------------------------------------------ */

START_TEST(test_group_members_split_messages_while_a_plain_subscriber_gets_all)
{
	enum { MEMBERS = 3, COUNT = 30 };
	struct broker *broker = new_broker();
	subscriber_id members[MEMBERS], plain;
	struct received received = { .count = 0 }, all = { .count = 0 };
	uint64_t seqs[COUNT];
	size_t per_member[MEMBERS] = { 0 };
	struct broker_stats stats;

	for (int i = 0; i < MEMBERS; i++)
		subscribe_group(broker, "jobs", "workers", false, members[i]);
	subscribe(broker, "jobs", plain);
	for (int i = 0; i < COUNT; i++)
		seqs[i] = publish(broker, "jobs", "job");
	stats = stats_of(broker);
	ck_assert_uint_eq(stats.pending, 2 * COUNT);
	ck_assert_uint_eq(stats.groups, 1);
	ck_assert_uint_eq(stats.subscribers, MEMBERS + 1);
	ck_assert_uint_eq(stats.subjects, 1);

	for (bool taken = true; taken;) {
		taken = false;
		for (int i = 0; i < MEMBERS; i++) {
			struct broker_batch batch;

			fetch(broker, "jobs", members[i], 2, &batch);
			per_member[i] += batch.count;
			taken |= batch.count > 0;
			receive(&received, &batch);
			broker_batch_release(&batch);
		}
	}
	for (int i = 0; i < MEMBERS; i++)
		ck_assert_uint_gt(per_member[i], 0);
	assert_received_any_order(&received, seqs, COUNT);
	drain_into(broker, "jobs", plain, &all);
	assert_received(&all, seqs, COUNT);
	ck_assert_uint_eq(stats_of(broker).pending, 0);
	broker_free(broker);
}
END_TEST

START_TEST(test_group_counts_as_one_copy_for_max_pending)
{
	struct broker_limits limits = test_limits();
	struct broker *broker;
	struct broker_batch batch;
	subscriber_id members[3], plain;

	limits.max_pending = 2;
	broker = new_broker_with(&limits);
	for (int i = 0; i < 3; i++)
		subscribe_group(broker, "s", "g", true, members[i]);
	subscribe(broker, "s", plain);
	publish(broker, "s", "one");
	ck_assert_uint_eq(stats_of(broker).pending, 2);
	{
		struct broker_message *message = new_message("two");

		ck_assert_int_eq(try_publish(broker, "s", message), BROKER_OVERFLOW);
		fetch(broker, "s", members[1], 0, &batch);   /* in flight still counts */
		ck_assert_int_eq(try_publish(broker, "s", message), BROKER_OVERFLOW);
		ck_assert_uint_eq(fetch_count(broker, "s", plain), 1);
		ck_assert_int_eq(try_publish(broker, "s", message), BROKER_OVERFLOW);
		ack_batch(broker, "s", members[1], &batch);
		broker_batch_release(&batch);
		ck_assert_uint_eq(stats_of(broker).pending, 0);
		ck_assert_int_eq(try_publish(broker, "s", message), BROKER_OK);
		broker_message_release(message);
	}
	broker_free(broker);
}
END_TEST

START_TEST(test_group_refuses_a_member_with_other_ack_options)
{
	struct broker *broker = new_broker();
	struct broker_subscription first = {
		.group = "g", .group_length = 1, .ack = true, .ack_wait_ms = 500, .max_deliver = 3,
		.dead_letter = "dl", .dead_letter_length = 2,
	};
	struct broker_subscription other;
	subscriber_id id, refused;

	ck_assert_int_eq(try_subscribe(broker, "s", &first, id), BROKER_OK);
	other = first;
	other.ack = false;
	other.ack_wait_ms = 0;
	other.max_deliver = 0;
	other.dead_letter = NULL;
	other.dead_letter_length = 0;
	ck_assert_int_eq(try_subscribe(broker, "s", &other, refused), BROKER_GROUP_MISMATCH);
	other = first;
	other.ack_wait_ms = 600;
	ck_assert_int_eq(try_subscribe(broker, "s", &other, refused), BROKER_GROUP_MISMATCH);
	other = first;
	other.max_deliver = 4;
	ck_assert_int_eq(try_subscribe(broker, "s", &other, refused), BROKER_GROUP_MISMATCH);
	other = first;
	other.dead_letter = "dx";
	ck_assert_int_eq(try_subscribe(broker, "s", &other, refused), BROKER_GROUP_MISMATCH);
	other = first;
	other.dead_letter_length = 0;
	ck_assert_int_eq(try_subscribe(broker, "s", &other, refused), BROKER_GROUP_MISMATCH);
	ck_assert_uint_eq(stats_of(broker).subscribers, 1);
	ck_assert_uint_eq(stats_of(broker).groups, 1);

	ck_assert_int_eq(try_subscribe(broker, "s", &first, refused), BROKER_OK);
	ck_assert_uint_eq(stats_of(broker).subscribers, 2);
	/* the same name on another subject is another group */
	other = first;
	other.ack = false;
	ck_assert_int_eq(try_subscribe(broker, "t", &other, refused), BROKER_OK);
	ck_assert_uint_eq(stats_of(broker).groups, 2);
	/* a plain group refuses an ack member */
	ck_assert_int_eq(try_subscribe(broker, "t", &first, refused), BROKER_GROUP_MISMATCH);
	/* an unset ack_wait_ms is the default */
	other = first;
	other.group = "d";
	other.ack_wait_ms = 0;
	ck_assert_int_eq(try_subscribe(broker, "s", &other, refused), BROKER_OK);
	ck_assert_int_eq(try_subscribe(broker, "s", &other, refused), BROKER_OK);
	other.ack_wait_ms = ACK_WAIT;
	ck_assert_int_eq(try_subscribe(broker, "s", &other, refused), BROKER_OK);
	ck_assert_uint_eq(stats_of(broker).groups, 3);
	broker_free(broker);
}
END_TEST

/* broker.c: "an unset ack_wait_ms means the default of the time the group
 * was made": a member asking no ack_wait_ms asks for nothing different,
 * also after a reload changed the default. */
START_TEST(test_group_member_with_default_ack_wait_joins_after_the_default_changed)
{
	struct broker_limits limits = test_limits();
	struct broker *broker = new_broker();
	subscriber_id first, second;

	subscribe_group(broker, "s", "g", true, first);
	limits.ack_wait_ms = 2 * ACK_WAIT;
	broker_set_limits(broker, &limits);
	{
		struct broker_subscription options = { .group = "g", .group_length = 1, .ack = true };

		ck_assert_int_eq(try_subscribe(broker, "s", &options, second), BROKER_OK);
	}
	broker_free(broker);
}
END_TEST

START_TEST(test_group_member_settles_only_what_was_delivered_to_it)
{
	struct broker *broker = new_broker();
	struct broker_batch batch;
	subscriber_id one, two;

	subscribe_group(broker, "s", "g", true, one);
	subscribe_group(broker, "s", "g", true, two);
	publish(broker, "s", "1");
	publish(broker, "s", "2");
	fetch(broker, "s", one, 1, &batch);
	assert_seqs(&batch, SEQS(1));
	broker_batch_release(&batch);
	fetch(broker, "s", two, 0, &batch);
	assert_seqs(&batch, SEQS(2));
	broker_batch_release(&batch);
	ck_assert_uint_eq(ack(broker, "s", two, SEQS(1)), 0);
	ck_assert_uint_eq(nack(broker, "s", one, 0, SEQS(2)), 0);
	ck_assert_uint_eq(extend(broker, "s", two, SEQS(1)), 0);
	ck_assert_uint_eq(stats_of(broker).in_flight, 2);
	ck_assert_uint_eq(ack(broker, "s", one, SEQS(1, 2)), 1);
	ck_assert_uint_eq(ack(broker, "s", two, SEQS(1, 2)), 1);
	ck_assert_uint_eq(stats_of(broker).pending, 0);
	broker_free(broker);
}
END_TEST

START_TEST(test_leaving_member_hands_its_in_flight_messages_to_the_next_member)
{
	struct broker *broker = new_broker();
	struct broker_batch batch;
	struct recorder waiting;
	struct broker_stats stats;
	subscriber_id one, two;
	size_t settled;

	subscribe_group(broker, "s", "g", true, one);
	subscribe_group(broker, "s", "g", true, two);
	for (int i = 0; i < 3; i++)
		publish(broker, "s", "m");
	fetch(broker, "s", one, 2, &batch);
	assert_seqs(&batch, SEQS(1, 2));
	broker_batch_release(&batch);
	fetch(broker, "s", two, 0, &batch);
	assert_seqs(&batch, SEQS(3));
	broker_batch_release(&batch);
	ck_assert_int_eq(fetch_wait(broker, "s", two, 0, 10 * ACK_WAIT, &waiting), BROKER_PARKED);

	ck_assert_int_eq(unsubscribe(broker, "s", one), BROKER_OK);
	assert_woken(&waiting, BROKER_OK, 2);
	assert_seqs(&waiting.waiter.batch, SEQS(1, 2));
	assert_attempts(&waiting.waiter.batch, ATTEMPTS(2, 2));
	ck_assert(waiting.waiter.batch.in_flight);
	broker_batch_release(&waiting.waiter.batch);
	stats = stats_of(broker);
	ck_assert_uint_eq(stats.in_flight, 3);
	ck_assert_uint_eq(stats.pending, 3);
	ck_assert_uint_eq(stats.groups, 1);
	ck_assert_uint_eq(stats.subscribers, 1);
	ck_assert_uint_eq(stats.parked, 0);
	ck_assert_int_eq(try_ack(broker, "s", one, SEQS(1), &settled), BROKER_BAD_ID);
	ck_assert_uint_eq(ack(broker, "s", two, SEQS(1, 2, 3)), 3);
	ck_assert_uint_eq(stats_of(broker).pending, 0);
	broker_free(broker);
}
END_TEST

/* Without a parked fetch, the left member's messages wait in the group's
 * queue, before newer ones. */
START_TEST(test_leaving_member_requeues_in_seq_order_before_newer_messages)
{
	struct broker *broker = new_broker();
	struct broker_batch batch;
	subscriber_id one, two;

	subscribe_group(broker, "s", "g", true, one);
	subscribe_group(broker, "s", "g", true, two);
	for (int i = 0; i < 20; i++)
		publish(broker, "s", "m");
	fetch(broker, "s", one, 10, &batch);
	broker_batch_release(&batch);
	fetch(broker, "s", two, 5, &batch);
	broker_batch_release(&batch);
	ck_assert_uint_eq(nack(broker, "s", one, 0, SEQS(4)), 1);
	ck_assert_int_eq(unsubscribe(broker, "s", one), BROKER_OK);
	ck_assert_uint_eq(stats_of(broker).in_flight, 5);
	fetch(broker, "s", two, 0, &batch);
	assert_seqs(&batch, SEQS(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 16, 17, 18, 19, 20));
	assert_attempts(&batch, ATTEMPTS(2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1));
	broker_batch_release(&batch);
	broker_free(broker);
}
END_TEST

START_TEST(test_group_and_subject_go_with_the_last_member)
{
	struct broker *broker = new_broker();
	struct broker_message *message = new_message("m");
	struct broker_batch batch;
	struct broker_stats stats;
	subscriber_id one, two;

	subscribe_group(broker, "s", "g", true, one);
	subscribe_group(broker, "s", "g", true, two);
	publish_message(broker, "s", message);
	fetch(broker, "s", one, 0, &batch);
	broker_batch_release(&batch);
	ck_assert_int_eq(unsubscribe(broker, "s", one), BROKER_OK);
	stats = stats_of(broker);
	ck_assert_uint_eq(stats.groups, 1);
	ck_assert_uint_eq(stats.subjects, 1);
	ck_assert_uint_eq(stats.pending, 1);
	ck_assert_uint_eq(stats.in_flight, 0);
	ck_assert_int_eq(unsubscribe(broker, "s", two), BROKER_OK);
	stats = stats_of(broker);
	ck_assert_uint_eq(stats.groups, 0);
	ck_assert_uint_eq(stats.subjects, 0);
	ck_assert_uint_eq(stats.subscribers, 0);
	ck_assert_uint_eq(stats.pending, 0);
	ck_assert_uint_eq(stats.pending_bytes, 0);
	ck_assert_uint_eq(stats.in_flight, 0);
	ck_assert_uint_eq(refcount_of(message), 1);
	ck_assert_uint_eq(broker_run_timers(broker), UINT64_MAX);
	ck_assert_int_eq(try_publish(broker, "s", message), BROKER_NO_SUBSCRIBER);
	/* a new group of that name takes any options */
	subscribe_group(broker, "s", "g", false, one);
	ck_assert_uint_eq(stats_of(broker).groups, 1);
	broker_message_release(message);
	broker_free(broker);
}
END_TEST

/* --- parked fetches ---------------------------------------------------- */

START_TEST(test_fetch_wait_answers_at_once_when_messages_are_available)
{
	struct broker *broker = new_broker();
	struct recorder recorder;
	subscriber_id id;

	subscribe(broker, "s", id);
	publish(broker, "s", "1");
	publish(broker, "s", "2");
	ck_assert_int_eq(fetch_wait(broker, "s", id, 0, 5000, &recorder), BROKER_OK);
	assert_seqs(&recorder.waiter.batch, SEQS(1, 2));
	broker_batch_release(&recorder.waiter.batch);
	ck_assert_int_eq(wakes_of(&recorder), 0);
	ck_assert_uint_eq(stats_of(broker).parked, 0);
	/* no wait: answered at once, empty */
	ck_assert_int_eq(fetch_wait(broker, "s", id, 0, 0, &recorder), BROKER_OK);
	ck_assert_uint_eq(recorder.waiter.batch.count, 0);
	broker_batch_release(&recorder.waiter.batch);
	ck_assert_int_eq(wakes_of(&recorder), 0);
	broker_free(broker);
}
END_TEST

START_TEST(test_parked_fetch_is_woken_by_a_publish_with_the_message)
{
	struct broker *broker = new_broker();
	struct recorder recorder;
	subscriber_id id;
	uint64_t seq;

	subscribe(broker, "s", id);
	ck_assert_int_eq(fetch_wait(broker, "s", id, 0, 5000, &recorder), BROKER_PARKED);
	ck_assert_uint_eq(stats_of(broker).parked, 1);
	ck_assert_int_eq(wakes_of(&recorder), 0);
	ck_assert_uint_eq(broker_run_timers(broker), 5000);
	seq = publish(broker, "s", "hello");
	assert_woken(&recorder, BROKER_OK, 1);
	ck_assert_uint_eq(recorder.waiter.batch.messages[0]->seq, seq);
	ck_assert_str_eq(recorder.waiter.batch.messages[0]->data, "hello");
	ck_assert(!recorder.waiter.batch.ack_queue);
	ck_assert_uint_eq(stats_of(broker).parked, 0);
	ck_assert_uint_eq(stats_of(broker).pending, 0);
	ck_assert_uint_eq(stats_of(broker).delivered, 1);
	broker_batch_release(&recorder.waiter.batch);
	publish(broker, "s", "again");
	ck_assert_int_eq(wakes_of(&recorder), 1);   /* exactly once */
	ck_assert_uint_eq(stats_of(broker).pending, 1);
	ck_assert_uint_eq(broker_run_timers(broker), UINT64_MAX);
	broker_free(broker);
}
END_TEST

START_TEST(test_parked_fetch_is_woken_by_a_batch_publish_up_to_its_max)
{
	struct broker *broker = new_broker();
	struct broker_message *messages[3];
	struct broker_publish_item items[3];
	struct recorder recorder;
	subscriber_id id, other;
	size_t failed;

	subscribe(broker, "s", id);
	subscribe(broker, "t", other);
	for (int i = 0; i < 3; i++) {
		messages[i] = new_message("m");
		items[i] = (struct broker_publish_item){ i == 1 ? "t" : "s", 1, messages[i] };
	}
	ck_assert_int_eq(fetch_wait(broker, "s", id, 1, 5000, &recorder), BROKER_PARKED);
	ck_assert_int_eq(broker_publish_batch(broker, items, 3, &failed), BROKER_OK);
	assert_woken(&recorder, BROKER_OK, 1);
	assert_seqs(&recorder.waiter.batch, SEQS(1));
	broker_batch_release(&recorder.waiter.batch);
	ck_assert_uint_eq(stats_of(broker).pending, 2);
	ck_assert_uint_eq(fetch_count(broker, "s", id), 1);
	for (int i = 0; i < 3; i++)
		broker_message_release(messages[i]);
	broker_free(broker);
}
END_TEST

START_TEST(test_parked_fetch_is_woken_by_a_nack_and_by_redeliveries)
{
	struct broker *broker = new_broker();
	struct broker_batch batch;
	struct recorder recorder;
	subscriber_id id;

	subscribe_ack(broker, "s", 0, 0, NULL, id);
	publish(broker, "s", "m");
	fetch(broker, "s", id, 0, &batch);
	broker_batch_release(&batch);

	ck_assert_int_eq(fetch_wait(broker, "s", id, 0, 100 * ACK_WAIT, &recorder), BROKER_PARKED);
	ck_assert_uint_eq(nack(broker, "s", id, 0, SEQS(1)), 1);
	assert_woken(&recorder, BROKER_OK, 1);
	assert_attempts(&recorder.waiter.batch, ATTEMPTS(2));
	ck_assert(recorder.waiter.batch.in_flight);
	ck_assert(recorder.waiter.batch.ack_queue);
	broker_batch_release(&recorder.waiter.batch);
	ck_assert_uint_eq(stats_of(broker).in_flight, 1);

	ck_assert_int_eq(fetch_wait(broker, "s", id, 0, 100 * ACK_WAIT, &recorder), BROKER_PARKED);
	ck_assert_uint_eq(nack(broker, "s", id, 300, SEQS(1)), 1);
	ck_assert_int_eq(wakes_of(&recorder), 0);
	advance(299);
	broker_run_timers(broker);
	ck_assert_int_eq(wakes_of(&recorder), 0);
	advance(1);
	broker_run_timers(broker);
	assert_woken(&recorder, BROKER_OK, 1);
	assert_attempts(&recorder.waiter.batch, ATTEMPTS(3));
	broker_batch_release(&recorder.waiter.batch);

	ck_assert_int_eq(fetch_wait(broker, "s", id, 0, 100 * ACK_WAIT, &recorder), BROKER_PARKED);
	advance(ACK_WAIT - 1);
	broker_run_timers(broker);
	ck_assert_int_eq(wakes_of(&recorder), 0);
	advance(1);
	broker_run_timers(broker);
	assert_woken(&recorder, BROKER_OK, 1);
	assert_attempts(&recorder.waiter.batch, ATTEMPTS(4));
	ack_batch(broker, "s", id, &recorder.waiter.batch);
	broker_batch_release(&recorder.waiter.batch);
	ck_assert_uint_eq(stats_of(broker).pending, 0);
	ck_assert_uint_eq(stats_of(broker).parked, 0);
	broker_free(broker);
}
END_TEST

START_TEST(test_parked_fetch_gets_an_empty_batch_when_its_wait_passes)
{
	struct broker *broker = new_broker();
	struct recorder recorder;
	subscriber_id id;

	subscribe(broker, "s", id);
	ck_assert_int_eq(fetch_wait(broker, "s", id, 0, 500, &recorder), BROKER_PARKED);
	advance(499);
	ck_assert_uint_eq(broker_run_timers(broker), 1);
	ck_assert_int_eq(wakes_of(&recorder), 0);
	advance(1);
	ck_assert_uint_eq(broker_run_timers(broker), UINT64_MAX);
	assert_woken(&recorder, BROKER_OK, 0);
	broker_batch_release(&recorder.waiter.batch);
	ck_assert_uint_eq(stats_of(broker).parked, 0);
	publish(broker, "s", "late");
	ck_assert_int_eq(wakes_of(&recorder), 1);
	ck_assert_uint_eq(stats_of(broker).pending, 1);
	ck_assert_uint_eq(fetch_count(broker, "s", id), 1);
	broker_free(broker);
}
END_TEST

START_TEST(test_unsubscribe_wakes_its_parked_fetches_with_bad_id)
{
	struct broker *broker = new_broker();
	struct recorder first, second, other, member, other_member;
	subscriber_id id, stays, one, two;

	subscribe(broker, "s", id);
	subscribe(broker, "s", stays);
	subscribe_group(broker, "s", "g", true, one);
	subscribe_group(broker, "s", "g", true, two);
	ck_assert_int_eq(fetch_wait(broker, "s", id, 0, 5000, &first), BROKER_PARKED);
	ck_assert_int_eq(fetch_wait(broker, "s", id, 0, 5000, &second), BROKER_PARKED);
	ck_assert_int_eq(fetch_wait(broker, "s", stays, 0, 5000, &other), BROKER_PARKED);
	ck_assert_int_eq(fetch_wait(broker, "s", one, 0, 5000, &member), BROKER_PARKED);
	ck_assert_int_eq(fetch_wait(broker, "s", two, 0, 5000, &other_member), BROKER_PARKED);
	ck_assert_uint_eq(stats_of(broker).parked, 5);

	ck_assert_int_eq(unsubscribe(broker, "s", id), BROKER_OK);
	assert_woken(&first, BROKER_BAD_ID, 0);
	assert_woken(&second, BROKER_BAD_ID, 0);
	ck_assert_int_eq(wakes_of(&other), 0);
	ck_assert_int_eq(unsubscribe(broker, "s", one), BROKER_OK);
	assert_woken(&member, BROKER_BAD_ID, 0);
	ck_assert_int_eq(wakes_of(&other_member), 0);
	ck_assert_uint_eq(stats_of(broker).parked, 2);

	publish(broker, "s", "m");
	assert_woken(&other, BROKER_OK, 1);
	assert_woken(&other_member, BROKER_OK, 1);
	broker_batch_release(&other.waiter.batch);
	broker_batch_release(&other_member.waiter.batch);
	ck_assert_uint_eq(stats_of(broker).parked, 0);
	broker_free(broker);
}
END_TEST

START_TEST(test_wake_all_answers_every_parked_fetch_and_parks_no_more)
{
	struct broker *broker = new_broker();
	struct recorder recorders[3], late;
	subscriber_id ids[3];

	subscribe(broker, "a", ids[0]);
	subscribe(broker, "b", ids[1]);
	subscribe_ack(broker, "c", 0, 0, NULL, ids[2]);
	ck_assert_int_eq(fetch_wait(broker, "a", ids[0], 0, 5000, &recorders[0]), BROKER_PARKED);
	ck_assert_int_eq(fetch_wait(broker, "b", ids[1], 0, 6000, &recorders[1]), BROKER_PARKED);
	ck_assert_int_eq(fetch_wait(broker, "c", ids[2], 0, 7000, &recorders[2]), BROKER_PARKED);
	broker_wake_all(broker);
	for (int i = 0; i < 3; i++) {
		assert_woken(&recorders[i], BROKER_OK, 0);
		broker_batch_release(&recorders[i].waiter.batch);
	}
	ck_assert_uint_eq(stats_of(broker).parked, 0);
	ck_assert_uint_eq(broker_run_timers(broker), UINT64_MAX);

	ck_assert_int_eq(fetch_wait(broker, "a", ids[0], 0, 5000, &late), BROKER_OK);
	ck_assert_uint_eq(late.waiter.batch.count, 0);
	ck_assert_int_eq(wakes_of(&late), 0);
	publish(broker, "c", "m");
	ck_assert_int_eq(fetch_wait(broker, "c", ids[2], 0, 5000, &late), BROKER_OK);
	ck_assert_uint_eq(late.waiter.batch.count, 1);
	ack_batch(broker, "c", ids[2], &late.waiter.batch);
	broker_batch_release(&late.waiter.batch);
	ck_assert_uint_eq(stats_of(broker).parked, 0);
	broker_free(broker);
}
END_TEST

START_TEST(test_max_parked_fetches_bounds_the_held_fetches)
{
	struct broker_limits limits = test_limits();
	struct broker *broker;
	struct recorder recorders[4];
	subscriber_id ids[4];

	limits.max_parked_fetches = 2;
	broker = new_broker_with(&limits);
	for (int i = 0; i < 4; i++) {
		char subject[8];

		snprintf(subject, sizeof(subject), "s%d", i);
		subscribe(broker, subject, ids[i]);
	}
	ck_assert_int_eq(fetch_wait(broker, "s0", ids[0], 0, 5000, &recorders[0]), BROKER_PARKED);
	ck_assert_int_eq(fetch_wait(broker, "s1", ids[1], 0, 5000, &recorders[1]), BROKER_PARKED);
	ck_assert_int_eq(fetch_wait(broker, "s2", ids[2], 0, 5000, &recorders[2]), BROKER_OK);
	ck_assert_uint_eq(recorders[2].waiter.batch.count, 0);
	broker_batch_release(&recorders[2].waiter.batch);
	ck_assert_uint_eq(stats_of(broker).parked, 2);

	publish(broker, "s0", "m");
	assert_woken(&recorders[0], BROKER_OK, 1);
	broker_batch_release(&recorders[0].waiter.batch);
	ck_assert_int_eq(fetch_wait(broker, "s2", ids[2], 0, 5000, &recorders[2]), BROKER_PARKED);
	limits.max_parked_fetches = 0;
	broker_set_limits(broker, &limits);
	ck_assert_int_eq(fetch_wait(broker, "s3", ids[3], 0, 5000, &recorders[3]), BROKER_OK);
	broker_batch_release(&recorders[3].waiter.batch);
	ck_assert_uint_eq(stats_of(broker).parked, 2);
	broker_wake_all(broker);
	assert_woken(&recorders[1], BROKER_OK, 0);
	assert_woken(&recorders[2], BROKER_OK, 0);
	broker_free(broker);
}
END_TEST

START_TEST(test_group_waiters_each_get_different_messages)
{
	enum { MEMBERS = 3 };
	struct broker *broker = new_broker();
	struct broker_message *messages[2];
	struct broker_publish_item items[2];
	struct recorder recorders[MEMBERS], acked[2];
	subscriber_id members[MEMBERS], ack_members[2];
	size_t failed;

	for (int i = 0; i < MEMBERS; i++) {
		subscribe_group(broker, "s", "g", false, members[i]);
		ck_assert_int_eq(fetch_wait(broker, "s", members[i], 1, 5000, &recorders[i]), BROKER_PARKED);
	}
	for (int i = 0; i < 2; i++) {
		messages[i] = new_message("m");
		items[i] = (struct broker_publish_item){ "s", 1, messages[i] };
	}
	ck_assert_int_eq(broker_publish_batch(broker, items, 2, &failed), BROKER_OK);
	assert_woken(&recorders[0], BROKER_OK, 1);
	assert_seqs(&recorders[0].waiter.batch, SEQS(1));
	assert_woken(&recorders[1], BROKER_OK, 1);
	assert_seqs(&recorders[1].waiter.batch, SEQS(2));
	ck_assert_int_eq(wakes_of(&recorders[2]), 0);
	publish(broker, "s", "third");
	assert_woken(&recorders[2], BROKER_OK, 1);
	assert_seqs(&recorders[2].waiter.batch, SEQS(3));
	for (int i = 0; i < MEMBERS; i++)
		broker_batch_release(&recorders[i].waiter.batch);
	ck_assert_uint_eq(stats_of(broker).pending, 0);

	/* ack members: a nacked message goes to the other member's fetch */
	for (int i = 0; i < 2; i++) {
		subscribe_group(broker, "t", "g", true, ack_members[i]);
		ck_assert_int_eq(fetch_wait(broker, "t", ack_members[i], 0, 5000, &acked[i]), BROKER_PARKED);
	}
	publish(broker, "t", "work");
	assert_woken(&acked[0], BROKER_OK, 1);
	ck_assert_int_eq(wakes_of(&acked[1]), 0);
	ck_assert_uint_eq(nack(broker, "t", ack_members[0], 0, SEQS(4)), 1);
	assert_woken(&acked[1], BROKER_OK, 1);
	assert_seqs(&acked[1].waiter.batch, SEQS(4));
	assert_attempts(&acked[1].waiter.batch, ATTEMPTS(2));
	ack_batch(broker, "t", ack_members[1], &acked[1].waiter.batch);
	broker_batch_release(&acked[0].waiter.batch);
	broker_batch_release(&acked[1].waiter.batch);
	ck_assert_uint_eq(stats_of(broker).pending, 0);
	for (int i = 0; i < 2; i++)
		broker_message_release(messages[i]);
	broker_free(broker);
}
END_TEST

/* --- give-back --------------------------------------------------------- */

START_TEST(test_give_back_returns_a_plain_batch_before_newer_messages)
{
	struct broker *broker = new_broker();
	struct broker_message *messages[3];
	struct broker_batch batch;
	subscriber_id id;

	subscribe(broker, "s", id);
	for (int i = 0; i < 3; i++) {
		messages[i] = new_message("abc");
		publish_message(broker, "s", messages[i]);
	}
	fetch(broker, "s", id, 0, &batch);
	publish(broker, "s", "d");
	ck_assert_uint_eq(stats_of(broker).pending, 1);
	broker_batch_give_back(broker, ID(id), &batch);
	ck_assert_uint_eq(batch.count, 0);
	ck_assert_uint_eq(stats_of(broker).pending, 4);
	ck_assert_uint_eq(stats_of(broker).pending_bytes, 10);
	ck_assert_uint_eq(refcount_of(messages[0]), 2);
	fetch(broker, "s", id, 0, &batch);
	assert_seqs(&batch, SEQS(1, 2, 3, 4));
	broker_batch_release(&batch);
	for (int i = 0; i < 3; i++) {
		ck_assert_uint_eq(refcount_of(messages[i]), 1);
		broker_message_release(messages[i]);
	}
	ck_assert_uint_eq(stats_of(broker).pending, 0);
	broker_free(broker);
}
END_TEST

START_TEST(test_give_backs_merge_in_seq_order)
{
	struct broker *broker = new_broker();
	struct broker_batch first, second, third, batch;
	subscriber_id id;

	subscribe(broker, "s", id);
	for (int i = 0; i < 5; i++)
		publish(broker, "s", "m");
	fetch(broker, "s", id, 2, &first);    /* 1 2 */
	fetch(broker, "s", id, 2, &second);   /* 3 4 */
	publish(broker, "s", "m");             /* 6 */
	broker_batch_give_back(broker, ID(id), &second);
	broker_batch_give_back(broker, ID(id), &first);
	fetch(broker, "s", id, 3, &batch);
	assert_seqs(&batch, SEQS(1, 2, 3));
	fetch(broker, "s", id, 1, &third);
	assert_seqs(&third, SEQS(4));
	broker_batch_give_back(broker, ID(id), &batch);
	broker_batch_give_back(broker, ID(id), &third);
	ck_assert_uint_eq(stats_of(broker).pending, 6);
	fetch(broker, "s", id, 0, &batch);
	assert_seqs(&batch, SEQS(1, 2, 3, 4, 5, 6));
	broker_batch_release(&batch);
	ck_assert_uint_eq(stats_of(broker).pending, 0);
	broker_free(broker);
}
END_TEST

START_TEST(test_give_back_returns_an_acked_batchas_if_never_fetched)
{
	struct broker *broker = new_broker();
	struct broker_batch batch, later;
	subscriber_id id, one, two;

	subscribe_ack(broker, "s", 0, 0, NULL, id);
	for (int i = 0; i < 3; i++)
		publish(broker, "s", "m");
	fetch(broker, "s", id, 2, &later);   /* 1 2 */
	fetch(broker, "s", id, 0, &batch);   /* 3 */
	publish(broker, "s", "m");           /* 4 */
	broker_batch_give_back(broker, ID(id), &batch);
	broker_batch_give_back(broker, ID(id), &later);
	ck_assert_uint_eq(batch.count, 0);
	ck_assert_uint_eq(later.count, 0);
	ck_assert_uint_eq(stats_of(broker).in_flight, 0);
	ck_assert_uint_eq(stats_of(broker).pending, 4);
	ck_assert_uint_eq(broker_run_timers(broker), UINT64_MAX);   /* no ack timer left */
	advance(10 * ACK_WAIT);
	fetch(broker, "s", id, 0, &batch);
	assert_seqs(&batch, SEQS(1, 2, 3, 4));
	assert_attempts(&batch, ATTEMPTS(1, 1, 1, 1));
	ack_batch(broker, "s", id, &batch);
	broker_batch_release(&batch);

	/* a group member's batch goes back to the group */
	subscribe_group(broker, "g", "w", true, one);
	subscribe_group(broker, "g", "w", true, two);
	publish(broker, "g", "m");
	fetch(broker, "g", one, 0, &batch);
	ck_assert_uint_eq(fetch_count(broker, "g", two), 0);
	broker_batch_give_back(broker, ID(one), &batch);
	fetch(broker, "g", two, 0, &batch);
	assert_seqs(&batch, SEQS(5));
	assert_attempts(&batch, ATTEMPTS(1));
	ack_batch(broker, "g", two, &batch);
	broker_batch_release(&batch);
	ck_assert_uint_eq(stats_of(broker).pending, 0);
	broker_free(broker);
}
END_TEST

/* struct broker_stats: redelivered counts "deliveries with attempt > 1";
 * a batch given back was never delivered. */
START_TEST(test_give_back_counts_no_redelivery)
{
	struct broker *broker = new_broker();
	struct broker_batch batch;
	subscriber_id id;

	subscribe_ack(broker, "s", 0, 0, NULL, id);
	publish(broker, "s", "m");
	fetch(broker, "s", id, 0, &batch);
	broker_batch_give_back(broker, ID(id), &batch);
	fetch(broker, "s", id, 0, &batch);
	assert_attempts(&batch, ATTEMPTS(1));
	ck_assert_uint_eq(stats_of(broker).redelivered, 0);
	ack_batch(broker, "s", id, &batch);
	broker_batch_release(&batch);
	broker_free(broker);
}
END_TEST

START_TEST(test_give_back_to_a_gone_subscriber_releases_the_batch)
{
	struct broker *broker = new_broker();
	struct broker_message *plain_message = new_message("p"), *ack_message = new_message("a");
	struct broker_batch plain_batch, acked_batch;
	subscriber_id plain, acked;

	subscribe(broker, "p", plain);
	subscribe_ack(broker, "a", 0, 0, NULL, acked);
	publish_message(broker, "p", plain_message);
	publish_message(broker, "a", ack_message);
	fetch(broker, "p", plain, 0, &plain_batch);
	fetch(broker, "a", acked, 0, &acked_batch);
	ck_assert_int_eq(unsubscribe(broker, "p", plain), BROKER_OK);
	ck_assert_int_eq(unsubscribe(broker, "a", acked), BROKER_OK);
	broker_batch_give_back(broker, ID(plain), &plain_batch);
	broker_batch_give_back(broker, ID(acked), &acked_batch);
	ck_assert_uint_eq(plain_batch.count, 0);
	ck_assert_uint_eq(acked_batch.count, 0);
	ck_assert_uint_eq(refcount_of(plain_message), 1);
	ck_assert_uint_eq(refcount_of(ack_message), 1);
	ck_assert_uint_eq(stats_of(broker).pending, 0);
	broker_message_release(plain_message);
	broker_message_release(ack_message);
	broker_free(broker);
}
END_TEST

START_TEST(test_give_back_serves_a_parked_fetch)
{
	struct broker *broker = new_broker();
	struct broker_batch batch;
	struct recorder recorder;
	subscriber_id id;

	subscribe(broker, "s", id);
	publish(broker, "s", "m");
	fetch(broker, "s", id, 0, &batch);
	ck_assert_int_eq(fetch_wait(broker, "s", id, 0, 5000, &recorder), BROKER_PARKED);
	broker_batch_give_back(broker, ID(id), &batch);
	assert_woken(&recorder, BROKER_OK, 1);
	assert_seqs(&recorder.waiter.batch, SEQS(1));
	broker_batch_release(&recorder.waiter.batch);
	ck_assert_uint_eq(stats_of(broker).pending, 0);
	broker_free(broker);
}
END_TEST

/* --- allocation failure ------------------------------------------------ */

static int allocations_left;      /* that succeed before the first failure */
static bool fail_only_one;        /* the allocations after the failed one succeed */
static int allocation_failures;

static void *failing_realloc(void *pointer, size_t size)
{
	if (allocations_left-- > 0 || (fail_only_one && allocation_failures > 0))
		return realloc(pointer, size);
	allocation_failures++;
	return NULL;
}

static void fail_allocations(struct broker *broker, int after, bool only_one)
{
	allocations_left = after;
	fail_only_one = only_one;
	allocation_failures = 0;
	broker_set_realloc(broker, failing_realloc);
}

/* Restores realloc and returns how many allocations failed. */
static int restore_allocations(struct broker *broker)
{
	broker_set_realloc(broker, NULL);
	return allocation_failures;
}

/* A scenario builds a broker, runs one operation with allocation number
 * after (0 = the first) failing, and every later one too unless only_one,
 * checks what followed, frees everything and returns how many
 * allocations failed. */
typedef int scenario_fn(int after, bool only_one);

/* Runs scenario for after = 0, 1, ... until a run where nothing failed:
 * every allocation the operation makes fails once. */
static void fail_every_allocation(scenario_fn *scenario)
{
	for (int after = 0;; after++) {
		int failures;

		ck_assert_int_lt(after, 10000);
		failures = scenario(after, false);
		scenario(after, true);
		if (failures == 0) {
			ck_assert_msg(after > 0, "the operation allocated nothing: no failure was tried");
			break;
		}
	}
}

static void release_all(struct broker_message **messages, size_t count)
{
	for (size_t i = 0; i < count; i++) {
		ck_assert_msg(refcount_of(messages[i]) == 1, "message %zu (seq %" PRIu64 ") has refcount %"
		              PRIu32 " with the broker empty", i, messages[i]->seq, refcount_of(messages[i]));
		broker_message_release(messages[i]);
	}
}

/* Batch publish to "a" (two plain subscribers, one of them with a message
 * inline, an ack subscriber and a group of two) and "b" (a ring that must
 * grow): all or nothing. */
static int scenario_batch_publish(int after, bool only_one)
{
	enum { ITEMS = 6 };
	static const char *const subjects[ITEMS] = { "a", "b", "a", "b", "a", "a" };
	struct broker *broker = new_broker();
	struct broker_message *messages[ITEMS], *old[4];
	struct broker_publish_item items[ITEMS];
	subscriber_id plain, backlog, acked, members[2], other;
	struct broker_stats before, now;
	struct received received;
	uint64_t expected_a[1 + ITEMS], expected_b[3 + ITEMS];
	size_t count_a = 0, count_b = 0, failed = 99;
	enum broker_status status;
	int failures;

	subscribe(broker, "a", backlog);
	subscribe_ack(broker, "a", 0, 0, NULL, acked);
	subscribe_group(broker, "a", "g", false, members[0]);
	subscribe_group(broker, "a", "g", false, members[1]);
	subscribe(broker, "b", other);
	old[0] = new_message("old a");
	expected_a[count_a++] = publish_message(broker, "a", old[0]);
	subscribe(broker, "a", plain);   /* empty: its first copy goes inline */
	for (int i = 1; i < 4; i++) {
		old[i] = new_message("old b");
		expected_b[count_b++] = publish_message(broker, "b", old[i]);
	}
	for (size_t i = 0; i < ITEMS; i++) {
		messages[i] = new_message(i % 2 ? "odd" : "even");
		items[i] = (struct broker_publish_item){ subjects[i], 1, messages[i] };
	}
	before = stats_of(broker);

	fail_allocations(broker, after, only_one);
	status = broker_publish_batch(broker, items, ITEMS, &failed);
	failures = restore_allocations(broker);
	now = stats_of(broker);
	if (failures > 0) {
		ck_assert_int_eq(status, BROKER_NO_MEMORY);
		ck_assert_uint_lt(failed, ITEMS);
		for (size_t i = 0; i < ITEMS; i++) {
			ck_assert_uint_eq(messages[i]->seq, 0);
			ck_assert_uint_eq(refcount_of(messages[i]), 1);
		}
		ck_assert_uint_eq(now.pending, before.pending);
		ck_assert_uint_eq(now.pending_bytes, before.pending_bytes);
		ck_assert_uint_eq(now.published, before.published);
		ck_assert_uint_eq(now.last_seq, before.last_seq);
	} else {
		ck_assert_int_eq(status, BROKER_OK);
		for (size_t i = 0; i < ITEMS; i++) {
			ck_assert_uint_eq(messages[i]->seq, before.last_seq + 1 + i);
			ck_assert_uint_eq(refcount_of(messages[i]), subjects[i][0] == 'a' ? 1 + 4 : 1 + 1);
			if (subjects[i][0] == 'a')
				expected_a[count_a++] = messages[i]->seq;
			else
				expected_b[count_b++] = messages[i]->seq;
		}
		ck_assert_uint_eq(now.pending, before.pending + 4 * 4 + 2);
		ck_assert_uint_eq(now.published, before.published + ITEMS);
	}

	received.count = 0;
	drain_into(broker, "a", plain, &received);
	assert_received(&received, expected_a + 1, count_a - 1);
	received.count = 0;
	drain_into(broker, "a", backlog, &received);
	assert_received(&received, expected_a, count_a);
	received.count = 0;
	drain_into(broker, "a", acked, &received);
	assert_received(&received, expected_a, count_a);
	received.count = 0;
	drain_group_into(broker, "a", members, 2, &received);
	assert_received_any_order(&received, expected_a, count_a);
	received.count = 0;
	drain_into(broker, "b", other, &received);
	assert_received(&received, expected_b, count_b);
	assert_empty(broker);
	release_all(old, 4);
	release_all(messages, ITEMS);
	broker_free(broker);
	return failures;
}

START_TEST(test_batch_publish_queues_nothing_when_any_allocation_fails)
{
	fail_every_allocation(scenario_batch_publish);
}
END_TEST

/* A plain fetch of scenario_max messages (0: all) from a queue holding two
 * given-back messages and four fresh ones. */
static size_t scenario_max;

static int scenario_plain_fetch(int after, bool only_one)
{
	enum { COUNT = 6 };
	struct broker *broker = new_broker();
	struct broker_message *messages[COUNT];
	struct broker_fetch_options options = { .max = scenario_max };
	struct broker_batch batch, given;
	struct broker_stats before, now;
	struct received received = { .count = 0 };
	uint64_t seqs[COUNT];
	size_t expected = scenario_max ? scenario_max : COUNT;
	enum broker_status status;
	int failures;
	subscriber_id id;

	subscribe(broker, "s", id);
	for (int i = 0; i < COUNT; i++) {
		messages[i] = new_message("plain");
		seqs[i] = publish_message(broker, "s", messages[i]);
	}
	fetch(broker, "s", id, 2, &given);
	broker_batch_give_back(broker, ID(id), &given);
	before = stats_of(broker);

	fail_allocations(broker, after, only_one);
	status = try_fetch(broker, "s", id, &options, &batch);
	failures = restore_allocations(broker);
	now = stats_of(broker);
	if (status == BROKER_NO_MEMORY) {
		ck_assert_int_gt(failures, 0);
		ck_assert_uint_eq(batch.count, 0);
		ck_assert_uint_eq(now.pending, before.pending);
		ck_assert_uint_eq(now.pending_bytes, before.pending_bytes);
		ck_assert_uint_eq(now.delivered, before.delivered);
		for (int i = 0; i < COUNT; i++)
			ck_assert_uint_eq(refcount_of(messages[i]), 2);
	} else {
		ck_assert_int_eq(status, BROKER_OK);
		assert_seqs(&batch, seqs, expected);
		ck_assert_uint_eq(now.pending, before.pending - expected);
		ck_assert_uint_eq(now.delivered, before.delivered + expected);
		receive(&received, &batch);
	}
	broker_batch_release(&batch);
	drain_into(broker, "s", id, &received);
	assert_received(&received, seqs, COUNT);
	assert_empty(broker);
	release_all(messages, COUNT);
	broker_free(broker);
	return failures;
}

START_TEST(test_plain_fetch_takes_nothing_when_an_allocation_fails)
{
	static const size_t maxes[] = { 1, 2, 3, 0 };

	for (size_t i = 0; i < sizeof(maxes) / sizeof(maxes[0]); i++) {
		scenario_max = maxes[i];
		fail_every_allocation(scenario_plain_fetch);
	}
}
END_TEST

/* A whole fetch of a queue holding one message (inline, not in a ring). */
static int scenario_plain_fetch_inline(int after, bool only_one)
{
	struct broker *broker = new_broker();
	struct broker_message *message = new_message("single");
	struct received received = { .count = 0 };
	struct broker_batch batch;
	enum broker_status status;
	int failures;
	subscriber_id id;
	uint64_t seq;

	subscribe(broker, "s", id);
	seq = publish_message(broker, "s", message);
	fail_allocations(broker, after, only_one);
	status = try_fetch(broker, "s", id, NULL, &batch);
	failures = restore_allocations(broker);
	if (status == BROKER_NO_MEMORY) {
		ck_assert_uint_eq(batch.count, 0);
		ck_assert_uint_eq(stats_of(broker).pending, 1);
		ck_assert_uint_eq(refcount_of(message), 2);
	} else {
		ck_assert_int_eq(status, BROKER_OK);
		receive(&received, &batch);
	}
	broker_batch_release(&batch);
	drain_into(broker, "s", id, &received);
	assert_received(&received, SEQS(seq));
	assert_empty(broker);
	release_all(&message, 1);
	broker_free(broker);
	return failures;
}

START_TEST(test_plain_fetch_of_a_single_message_keeps_it_when_an_allocation_fails)
{
	fail_every_allocation(scenario_plain_fetch_inline);
}
END_TEST

/* An ack fetch of scenario_max messages (0: all) from a queue where 1 is
 * in flight, 2 was nacked (queued for attempt 2) and 3-6 are fresh. */
static int scenario_ack_fetch(int after, bool only_one)
{
	enum { COUNT = 6 };
	struct broker *broker = new_broker();
	struct broker_message *messages[COUNT];
	struct broker_fetch_options options = { .max = scenario_max };
	struct broker_batch batch;
	struct broker_stats before, now;
	struct received received = { .count = 0 };
	uint64_t seqs[COUNT];
	size_t expected = scenario_max ? scenario_max : COUNT - 1;
	enum broker_status status;
	int failures;
	subscriber_id id;

	subscribe_ack(broker, "s", 0, 0, NULL, id);
	for (int i = 0; i < COUNT; i++) {
		messages[i] = new_message("acked");
		seqs[i] = publish_message(broker, "s", messages[i]);
	}
	fetch(broker, "s", id, 2, &batch);
	broker_batch_release(&batch);
	ck_assert_uint_eq(nack(broker, "s", id, 0, SEQS(seqs[1])), 1);
	before = stats_of(broker);

	fail_allocations(broker, after, only_one);
	status = try_fetch(broker, "s", id, &options, &batch);
	failures = restore_allocations(broker);
	now = stats_of(broker);
	ck_assert_uint_eq(now.pending, before.pending);
	ck_assert_uint_eq(now.pending_bytes, before.pending_bytes);
	if (status == BROKER_NO_MEMORY) {
		ck_assert_int_gt(failures, 0);
		ck_assert_uint_eq(batch.count, 0);
		ck_assert_uint_eq(now.in_flight, before.in_flight);
		ck_assert_uint_eq(now.delivered, before.delivered);
		ck_assert_uint_eq(now.redelivered, before.redelivered);
		ck_assert_uint_eq(refcount_of(messages[2]), 2);
		/* no ack timer was started: the next deadline is still 1's */
		ck_assert_uint_eq(broker_run_timers(broker), ACK_WAIT);
	} else {
		ck_assert_int_eq(status, BROKER_OK);
		assert_seqs(&batch, seqs + 1, expected);
		ck_assert_uint_eq(attempt_of(&batch, 0), 2);
		for (size_t i = 1; i < expected; i++)
			ck_assert_uint_eq(attempt_of(&batch, i), 1);
		ck_assert_uint_eq(now.in_flight, before.in_flight + expected);
		ck_assert_uint_eq(now.delivered, before.delivered + expected);
		receive(&received, &batch);
		ack_batch(broker, "s", id, &batch);
	}
	broker_batch_release(&batch);
	drain_into(broker, "s", id, &received);
	assert_received(&received, seqs + 1, COUNT - 1);
	ck_assert_uint_eq(received.attempts[0], 2);
	for (size_t i = 1; i < received.count; i++)
		ck_assert_uint_eq(received.attempts[i], 1);
	ck_assert_uint_eq(ack(broker, "s", id, SEQS(seqs[0])), 1);
	ck_assert_uint_eq(broker_run_timers(broker), UINT64_MAX);
	assert_empty(broker);
	release_all(messages, COUNT);
	broker_free(broker);
	return failures;
}

START_TEST(test_ack_fetch_changes_nothing_when_an_allocation_fails)
{
	static const size_t maxes[] = { 1, 2, 3, 0 };

	for (size_t i = 0; i < sizeof(maxes) / sizeof(maxes[0]); i++) {
		scenario_max = maxes[i];
		fail_every_allocation(scenario_ack_fetch);
	}
}
END_TEST

/* The first ack fetch of a queue, of more messages than the delivery
 * table's first size: the table itself may fail to grow (it then chains
 * longer) without the fetch failing. */
static int scenario_first_ack_fetch(int after, bool only_one)
{
	enum { COUNT = 40 };
	struct broker *broker = new_broker();
	struct broker_message *messages[COUNT];
	struct broker_batch batch;
	struct received received = { .count = 0 };
	uint64_t seqs[COUNT];
	enum broker_status status;
	int failures;
	subscriber_id id;

	subscribe_ack(broker, "s", 0, 0, NULL, id);
	for (int i = 0; i < COUNT; i++) {
		messages[i] = new_message("first");
		seqs[i] = publish_message(broker, "s", messages[i]);
	}
	fail_allocations(broker, after, only_one);
	status = try_fetch(broker, "s", id, NULL, &batch);
	failures = restore_allocations(broker);
	ck_assert_uint_eq(stats_of(broker).pending, COUNT);
	if (status == BROKER_NO_MEMORY) {
		ck_assert_uint_eq(batch.count, 0);
		ck_assert_uint_eq(stats_of(broker).in_flight, 0);
		ck_assert_uint_eq(stats_of(broker).delivered, 0);
		ck_assert_uint_eq(broker_run_timers(broker), UINT64_MAX);
		broker_batch_release(&batch);
		fetch(broker, "s", id, 0, &batch);
	} else {
		ck_assert_int_eq(status, BROKER_OK);
	}
	assert_seqs(&batch, seqs, COUNT);
	ck_assert_uint_eq(stats_of(broker).in_flight, COUNT);
	/* every delivery is found by its seq: settle them in a scrambled order */
	for (int i = 0; i < COUNT; i += 2)
		ck_assert_uint_eq(ack(broker, "s", id, SEQS(seqs[COUNT - 1 - i])), 1);
	for (int i = 1; i < COUNT; i += 2)
		ck_assert_uint_eq(nack(broker, "s", id, 0, SEQS(seqs[COUNT - 1 - i])), 1);
	broker_batch_release(&batch);
	drain_into(broker, "s", id, &received);
	ck_assert_uint_eq(received.count, COUNT / 2);
	for (size_t i = 0; i < received.count; i++) {
		ck_assert_uint_eq(received.seqs[i], seqs[2 * i]);
		ck_assert_uint_eq(received.attempts[i], 2);
	}
	assert_empty(broker);
	release_all(messages, COUNT);
	broker_free(broker);
	return failures;
}

START_TEST(test_first_ack_fetch_survives_a_delivery_table_that_cannot_grow)
{
	fail_every_allocation(scenario_first_ack_fetch);
}
END_TEST

/* A fetch with a wait that cannot be parked for lack of memory is
 * answered at once, empty, and takes nothing. */
static int scenario_park(int after, bool only_one)
{
	struct broker *broker = new_broker();
	struct recorder recorder;
	enum broker_status status;
	int failures;
	subscriber_id id;
	uint64_t seq;

	subscribe(broker, "s", id);
	fail_allocations(broker, after, only_one);
	status = fetch_wait(broker, "s", id, 0, 5000, &recorder);
	failures = restore_allocations(broker);
	if (status == BROKER_PARKED) {
		ck_assert_uint_eq(stats_of(broker).parked, 1);
		seq = publish(broker, "s", "m");
		assert_woken(&recorder, BROKER_OK, 1);
		assert_seqs(&recorder.waiter.batch, SEQS(seq));
	} else {
		ck_assert_int_gt(failures, 0);
		ck_assert_int_eq(status, BROKER_OK);
		ck_assert_uint_eq(recorder.waiter.batch.count, 0);
		ck_assert_uint_eq(stats_of(broker).parked, 0);
		ck_assert_int_eq(wakes_of(&recorder), 0);
		ck_assert_uint_eq(broker_run_timers(broker), UINT64_MAX);
	}
	broker_batch_release(&recorder.waiter.batch);
	assert_empty(broker);
	broker_free(broker);
	return failures;
}

START_TEST(test_fetch_wait_that_cannot_park_is_answered_at_once)
{
	fail_every_allocation(scenario_park);
}
END_TEST

/* A message that used up max_deliver is dead-lettered to a subject that
 * has a subscriber (whose queue must grow for it).  The contract drops it
 * only when the dead-letter subject has no subscriber. */
static int scenario_dead_letter(int after, bool only_one)
{
	struct broker *broker = new_broker();
	struct broker_message *message = new_message("exhausted");
	struct received received = { .count = 0 };
	struct broker_batch batch;
	struct broker_stats stats;
	size_t nacked;
	int failures;
	subscriber_id worker, dead;

	subscribe_ack(broker, "work", 0, 1, "dead", worker);
	subscribe(broker, "dead", dead);
	publish(broker, "dead", "already there");   /* inline: the next copy needs a ring */
	publish_message(broker, "work", message);
	fetch(broker, "work", worker, 0, &batch);
	broker_batch_release(&batch);

	fail_allocations(broker, after, only_one);
	nacked = nack(broker, "work", worker, 0, SEQS(message->seq));
	failures = restore_allocations(broker);
	ck_assert_uint_eq(nacked, 1);
	advance(RETRY_SLACK);
	broker_run_timers(broker);
	stats = stats_of(broker);
	ck_assert_uint_eq(stats.max_deliver_dropped, 0);
	ck_assert_uint_eq(stats.dead_lettered, 1);
	drain_into(broker, "dead", dead, &received);
	ck_assert_uint_eq(received.count, 2);
	ck_assert_uint_gt(received.seqs[1], message->seq);
	ck_assert_uint_eq(fetch_count(broker, "work", worker), 0);
	assert_empty(broker);
	release_all(&message, 1);
	broker_free(broker);
	return failures;
}

START_TEST(test_dead_letter_is_not_dropped_when_an_allocation_fails)
{
	fail_every_allocation(scenario_dead_letter);
}
END_TEST

/* Ack 2 and nack 10 of 12 in-flight messages: the retry list must grow
 * past its first size.  An ack never fails; a nacked message that cannot
 * be queued again at once comes back a little later, never lost. */
static int scenario_ack_and_nack(int after, bool only_one)
{
	enum { COUNT = 12 };
	struct broker *broker = new_broker();
	struct broker_message *messages[COUNT];
	struct broker_batch batch;
	struct broker_stats before, now;
	struct received received = { .count = 0 };
	uint64_t seqs[COUNT];
	size_t acked, nacked;
	int failures;
	subscriber_id id;

	subscribe_ack(broker, "s", 0, 0, NULL, id);
	for (int i = 0; i < COUNT; i++) {
		messages[i] = new_message("settle");
		seqs[i] = publish_message(broker, "s", messages[i]);
	}
	fetch(broker, "s", id, 0, &batch);
	broker_batch_release(&batch);
	before = stats_of(broker);

	fail_allocations(broker, after, only_one);
	acked = ack(broker, "s", id, seqs, 2);
	nacked = nack(broker, "s", id, 0, seqs + 2, COUNT - 2);
	failures = restore_allocations(broker);
	now = stats_of(broker);
	ck_assert_uint_eq(acked, 2);
	ck_assert_uint_eq(nacked, COUNT - 2);
	ck_assert_uint_eq(now.acked, before.acked + 2);
	ck_assert_uint_eq(now.nacked, before.nacked + COUNT - 2);
	ck_assert_uint_eq(now.in_flight, 0);
	ck_assert_uint_eq(now.pending, COUNT - 2);
	ck_assert_uint_eq(now.pending_bytes, (COUNT - 2) * messages[0]->length);
	ck_assert_uint_eq(refcount_of(messages[0]), 1);
	ck_assert_uint_eq(refcount_of(messages[2]), 2);

	advance(RETRY_SLACK);
	broker_run_timers(broker);
	drain_into(broker, "s", id, &received);
	assert_received(&received, seqs + 2, COUNT - 2);
	for (size_t i = 0; i < received.count; i++)
		ck_assert_uint_eq(received.attempts[i], 2);
	ck_assert_uint_eq(broker_run_timers(broker), UINT64_MAX);
	assert_empty(broker);
	release_all(messages, COUNT);
	broker_free(broker);
	return failures;
}

START_TEST(test_ack_and_nack_lose_nothing_when_an_allocation_fails)
{
	fail_every_allocation(scenario_ack_and_nack);
}
END_TEST

/* 12 messages pass their ack wait while their subscriber has a fetch
 * parked: broker_run_timers() queues them again and serves the fetch. */
static int scenario_redelivery(int after, bool only_one)
{
	enum { COUNT = 12 };
	struct broker *broker = new_broker();
	struct broker_message *messages[COUNT];
	struct broker_batch batch;
	struct recorder recorder;
	struct broker_stats now;
	struct received received = { .count = 0 };
	uint64_t seqs[COUNT];
	int failures;
	subscriber_id id;

	subscribe_ack(broker, "s", 0, 0, NULL, id);
	for (int i = 0; i < COUNT; i++) {
		messages[i] = new_message("redeliver");
		seqs[i] = publish_message(broker, "s", messages[i]);
	}
	fetch(broker, "s", id, 0, &batch);
	broker_batch_release(&batch);
	ck_assert_int_eq(fetch_wait(broker, "s", id, 0, 100 * ACK_WAIT, &recorder), BROKER_PARKED);
	advance(ACK_WAIT);

	fail_allocations(broker, after, only_one);
	broker_run_timers(broker);
	failures = restore_allocations(broker);
	now = stats_of(broker);
	ck_assert_uint_eq(now.pending, COUNT);
	ck_assert_uint_eq(now.pending_bytes, COUNT * messages[0]->length);
	if (wakes_of(&recorder) > 0) {
		assert_woken(&recorder, BROKER_OK, now.in_flight);
		ck_assert_uint_gt(now.in_flight, 0);
	} else {
		ck_assert_uint_eq(now.in_flight, 0);
		ck_assert_uint_eq(now.parked, 1);
	}

	advance(RETRY_SLACK);
	broker_run_timers(broker);
	broker_wake_all(broker);
	assert_woken(&recorder, BROKER_OK, recorder.waiter.batch.count);
	receive(&received, &recorder.waiter.batch);
	if (recorder.waiter.batch.count > 0)
		ack_batch(broker, "s", id, &recorder.waiter.batch);
	broker_batch_release(&recorder.waiter.batch);
	drain_into(broker, "s", id, &received);
	assert_received_any_order(&received, seqs, COUNT);
	for (size_t i = 0; i < received.count; i++)
		ck_assert_uint_eq(received.attempts[i], 2);
	ck_assert_uint_eq(stats_of(broker).redelivered, COUNT);
	ck_assert_uint_eq(broker_run_timers(broker), UINT64_MAX);
	assert_empty(broker);
	release_all(messages, COUNT);
	broker_free(broker);
	return failures;
}

START_TEST(test_redelivery_loses_nothing_when_an_allocation_fails)
{
	fail_every_allocation(scenario_redelivery);
}
END_TEST

/* A publish serves parked fetches, plain and ack; when a fetch cannot
 * take the message for lack of memory, the message stays queued. */
static int scenario_publish_to_parked(int after, bool only_one)
{
	struct broker *broker = new_broker();
	struct broker_message *message = new_message("wake up");
	struct recorder plain_waiter, ack_waiter;
	struct received plain_received = { .count = 0 }, ack_received = { .count = 0 };
	enum broker_status status;
	int failures;
	subscriber_id plain, acked;

	subscribe(broker, "s", plain);
	subscribe_ack(broker, "s", 0, 0, NULL, acked);
	ck_assert_int_eq(fetch_wait(broker, "s", plain, 0, 5000, &plain_waiter), BROKER_PARKED);
	ck_assert_int_eq(fetch_wait(broker, "s", acked, 0, 5000, &ack_waiter), BROKER_PARKED);

	fail_allocations(broker, after, only_one);
	status = try_publish(broker, "s", message);
	failures = restore_allocations(broker);
	if (status != BROKER_OK) {
		ck_assert_int_eq(status, BROKER_NO_MEMORY);
		ck_assert_uint_eq(message->seq, 0);
		ck_assert_uint_eq(stats_of(broker).pending, 0);
	} else {
		/* a served plain fetch took its copy; an ack one keeps it pending */
		ck_assert_uint_eq(stats_of(broker).pending, 2 - (uint64_t)wakes_of(&plain_waiter));
	}
	broker_wake_all(broker);
	assert_woken(&plain_waiter, BROKER_OK, plain_waiter.waiter.batch.count);
	assert_woken(&ack_waiter, BROKER_OK, ack_waiter.waiter.batch.count);
	receive(&plain_received, &plain_waiter.waiter.batch);
	receive(&ack_received, &ack_waiter.waiter.batch);
	if (ack_waiter.waiter.batch.count > 0)
		ack_batch(broker, "s", acked, &ack_waiter.waiter.batch);
	broker_batch_release(&plain_waiter.waiter.batch);
	broker_batch_release(&ack_waiter.waiter.batch);
	drain_into(broker, "s", plain, &plain_received);
	drain_into(broker, "s", acked, &ack_received);
	if (status == BROKER_OK) {
		assert_received(&plain_received, SEQS(message->seq));
		assert_received(&ack_received, SEQS(message->seq));
		ck_assert_uint_eq(ack_received.attempts[0], 1);
	} else {
		ck_assert_uint_eq(plain_received.count + ack_received.count, 0);
	}
	assert_empty(broker);
	release_all(&message, 1);
	broker_free(broker);
	return failures;
}

START_TEST(test_publish_to_parked_fetches_loses_nothing_when_an_allocation_fails)
{
	fail_every_allocation(scenario_publish_to_parked);
}
END_TEST

/* Plain batches given back in turn must merge in seq order, also when
 * their seqs interleave and memory runs out.  Fetches of [1,2] and [3,4];
 * [1,2] back; fetches of [1] and [2,5]; then [3,4] (the only returned
 * run), [2,5] and [1] back (each merged), with allocation number after
 * failing. */
static int scenario_plain_give_back(int after, bool only_one)
{
	enum { COUNT = 6 };
	struct broker *broker = new_broker();
	struct broker_message *messages[COUNT];
	struct broker_batch low, middle, one, mixed;
	struct received received = { .count = 0 };
	uint64_t seqs[COUNT];
	int failures;
	subscriber_id id;

	subscribe(broker, "s", id);
	for (int i = 0; i < COUNT; i++) {
		messages[i] = new_message("back");
		seqs[i] = publish_message(broker, "s", messages[i]);
	}
	fetch(broker, "s", id, 2, &low);
	fetch(broker, "s", id, 2, &middle);
	broker_batch_give_back(broker, ID(id), &low);
	fetch(broker, "s", id, 1, &one);
	fetch(broker, "s", id, 2, &mixed);
	ck_assert_uint_eq(mixed.messages[0]->seq, seqs[1]);
	ck_assert_uint_eq(mixed.messages[1]->seq, seqs[4]);

	fail_allocations(broker, after, only_one);
	broker_batch_give_back(broker, ID(id), &middle);
	broker_batch_give_back(broker, ID(id), &mixed);
	broker_batch_give_back(broker, ID(id), &one);
	failures = restore_allocations(broker);
	ck_assert_uint_eq(middle.count + mixed.count + one.count, 0);
	ck_assert_uint_eq(stats_of(broker).pending, COUNT);
	ck_assert_uint_eq(stats_of(broker).pending_bytes, COUNT * messages[0]->length);
	drain_into(broker, "s", id, &received);
	assert_received(&received, seqs, COUNT);
	assert_empty(broker);
	release_all(messages, COUNT);
	broker_free(broker);
	return failures;
}

START_TEST(test_plain_give_backs_lose_nothing_and_keep_seq_order_when_an_allocation_fails)
{
	fail_every_allocation(scenario_plain_give_back);
}
END_TEST

/* 12 in-flight messages given back to an ack queue that also holds a
 * fresh one. */
static int scenario_ack_give_back(int after, bool only_one)
{
	enum { COUNT = 13 };
	struct broker *broker = new_broker();
	struct broker_message *messages[COUNT];
	struct broker_batch batch;
	struct received received = { .count = 0 };
	uint64_t seqs[COUNT];
	int failures;
	subscriber_id id;

	subscribe_ack(broker, "s", 0, 0, NULL, id);
	for (int i = 0; i < COUNT - 1; i++) {
		messages[i] = new_message("back");
		seqs[i] = publish_message(broker, "s", messages[i]);
	}
	fetch(broker, "s", id, 0, &batch);
	messages[COUNT - 1] = new_message("back");
	seqs[COUNT - 1] = publish_message(broker, "s", messages[COUNT - 1]);

	fail_allocations(broker, after, only_one);
	broker_batch_give_back(broker, ID(id), &batch);
	failures = restore_allocations(broker);
	ck_assert_uint_eq(batch.count, 0);
	ck_assert_uint_eq(stats_of(broker).in_flight, 0);
	ck_assert_uint_eq(stats_of(broker).pending, COUNT);
	ck_assert_uint_eq(refcount_of(messages[0]), 2);

	advance(RETRY_SLACK);
	broker_run_timers(broker);
	drain_into(broker, "s", id, &received);
	assert_received(&received, seqs, COUNT);
	for (size_t i = 0; i < received.count; i++)
		ck_assert_uint_eq(received.attempts[i], 1);
	ck_assert_uint_eq(broker_run_timers(broker), UINT64_MAX);
	assert_empty(broker);
	release_all(messages, COUNT);
	broker_free(broker);
	return failures;
}

START_TEST(test_ack_give_back_loses_nothing_when_an_allocation_fails)
{
	fail_every_allocation(scenario_ack_give_back);
}
END_TEST

/* --- the timer thread -------------------------------------------------- */

/* Polls until recorder was woken or timeout_ms passed. */
static bool wait_for_wake(struct recorder *recorder, uint64_t timeout_ms)
{
	uint64_t until = real_ms() + timeout_ms;
	struct timespec pause = { 0, 1000000 };

	while (wakes_of(recorder) == 0) {
		if (real_ms() > until)
			return false;
		nanosleep(&pause, NULL);
	}
	return true;
}

START_TEST(test_timer_thread_serves_ack_deadlines_and_waits_in_real_time)
{
	struct broker_limits limits = test_limits();
	struct broker *broker = broker_new(&limits);   /* the real clock */
	struct recorder redelivery, timeout;
	struct broker_batch batch;
	enum broker_status status;
	subscriber_id acked, plain;
	uint64_t start, seq;

	ck_assert_ptr_nonnull(broker);
	broker_timer_stop(broker);   /* not running: harmless */
	subscribe_ack(broker, "t", 200, 0, NULL, acked);
	subscribe(broker, "u", plain);
	seq = publish(broker, "t", "x");
	ck_assert_int_eq(broker_timer_start(broker), 0);
	start = real_ms();
	fetch(broker, "t", acked, 0, &batch);
	broker_batch_release(&batch);
	status = fetch_wait(broker, "t", acked, 0, 60000, &redelivery);
	ck_assert_int_eq(fetch_wait(broker, "u", plain, 0, 20, &timeout), BROKER_PARKED);

	ck_assert_msg(wait_for_wake(&timeout, 10000), "the 20 ms wait did not end");
	ck_assert_uint_ge(real_ms() - start, 20);
	assert_woken(&timeout, BROKER_OK, 0);
	broker_batch_release(&timeout.waiter.batch);
	if (status == BROKER_PARKED) {
		ck_assert_msg(wait_for_wake(&redelivery, 10000), "the ack deadline was not served");
		assert_woken(&redelivery, BROKER_OK, 1);
	} else {
		ck_assert_int_eq(status, BROKER_OK);   /* a very slow run: the deadline had passed */
	}
	ck_assert_uint_ge(real_ms() - start, 200);
	assert_seqs(&redelivery.waiter.batch, SEQS(seq));
	assert_attempts(&redelivery.waiter.batch, ATTEMPTS(2));
	ack_batch(broker, "t", acked, &redelivery.waiter.batch);
	broker_batch_release(&redelivery.waiter.batch);

	broker_timer_stop(broker);
	broker_timer_stop(broker);
	ck_assert_int_eq(broker_timer_start(broker), 0);   /* again after a stop */
	ck_assert_int_eq(fetch_wait(broker, "u", plain, 0, 10, &timeout), BROKER_PARKED);
	ck_assert_msg(wait_for_wake(&timeout, 10000), "the restarted thread did not serve a wait");
	broker_batch_release(&timeout.waiter.batch);
	assert_empty(broker);
	broker_free(broker);   /* stops the thread */
}
END_TEST

/* --- main -------------------------------------------------------------- */

static Suite *delivery_suite(void)
{
	Suite *suite = suite_create("delivery");
	TCase *seqs = tcase_create("seqs");
	TCase *fetching = tcase_create("fetch options");
	TCase *acks = tcase_create("ack queues");
	TCase *groups = tcase_create("groups");
	TCase *waiters = tcase_create("parked fetches");
	TCase *give_back = tcase_create("give-back");
	TCase *memory = tcase_create("allocation failure");
	TCase *timer = tcase_create("timer thread");

	tcase_add_test(seqs, test_first_publish_gets_seq_1_and_later_ones_strictly_higher);
	tcase_add_test(seqs, test_seqs_are_broker_wide_and_shared_by_every_copy);
	tcase_add_test(seqs, test_batch_publish_gives_consecutive_seqs_in_array_order);
	tcase_add_test(seqs, test_refused_publishes_take_no_seq_and_seqs_are_never_reused);
	suite_add_tcase(suite, seqs);

	tcase_add_test(fetching, test_fetch_max_takes_the_oldest_and_leaves_the_rest_pending);
	tcase_add_test(fetching, test_fetch_max_bytes_stops_before_exceeding_but_takes_at_least_one);
	tcase_add_test(fetching, test_fetch_max_batch_caps_every_fetch);
	tcase_add_test(fetching, test_peek_leaves_messages_and_timers_alone);
	tcase_add_test(fetching, test_peek_of_a_plain_queue_shows_what_the_next_fetch_takes);
	suite_add_tcase(suite, fetching);

	tcase_add_test(acks, test_ack_fetch_keeps_copies_in_flight_until_acked);
	tcase_add_test(acks, test_ack_settles_only_seqs_in_flight_for_that_subscriber);
	tcase_add_test(acks, test_unacked_message_is_redelivered_after_ack_wait_with_attempt_2_before_newer);
	tcase_add_test(acks, test_fetch_after_the_ack_wait_gets_the_redelivery_without_a_timer_run);
	tcase_add_test(acks, test_nack_redelivers_at_once_before_newer_messages);
	tcase_add_test(acks, test_nack_with_delay_redelivers_after_the_delay);
	tcase_add_test(acks, test_extend_restarts_the_ack_wait);
	tcase_add_test(acks, test_max_deliver_dead_letters_a_new_message_with_the_same_data);
	tcase_add_test(acks, test_max_deliver_drops_a_message_when_no_one_takes_dead_letters);
	tcase_add_test(acks, test_dead_letter_may_use_the_room_its_original_frees);
	tcase_add_test(acks, test_in_flight_copies_count_in_pending_and_against_the_limits);
	tcase_add_test(acks, test_unsubscribe_frees_in_flight_and_delayed_copies_with_their_timers);
	suite_add_tcase(suite, acks);

	tcase_add_test(groups, test_group_members_split_messages_while_a_plain_subscriber_gets_all);
	tcase_add_test(groups, test_group_counts_as_one_copy_for_max_pending);
	tcase_add_test(groups, test_group_refuses_a_member_with_other_ack_options);
	tcase_add_test(groups, test_group_member_with_default_ack_wait_joins_after_the_default_changed);
	tcase_add_test(groups, test_group_member_settles_only_what_was_delivered_to_it);
	tcase_add_test(groups, test_leaving_member_hands_its_in_flight_messages_to_the_next_member);
	tcase_add_test(groups, test_leaving_member_requeues_in_seq_order_before_newer_messages);
	tcase_add_test(groups, test_group_and_subject_go_with_the_last_member);
	suite_add_tcase(suite, groups);

	tcase_add_test(waiters, test_fetch_wait_answers_at_once_when_messages_are_available);
	tcase_add_test(waiters, test_parked_fetch_is_woken_by_a_publish_with_the_message);
	tcase_add_test(waiters, test_parked_fetch_is_woken_by_a_batch_publish_up_to_its_max);
	tcase_add_test(waiters, test_parked_fetch_is_woken_by_a_nack_and_by_redeliveries);
	tcase_add_test(waiters, test_parked_fetch_gets_an_empty_batch_when_its_wait_passes);
	tcase_add_test(waiters, test_unsubscribe_wakes_its_parked_fetches_with_bad_id);
	tcase_add_test(waiters, test_wake_all_answers_every_parked_fetch_and_parks_no_more);
	tcase_add_test(waiters, test_max_parked_fetches_bounds_the_held_fetches);
	tcase_add_test(waiters, test_group_waiters_each_get_different_messages);
	suite_add_tcase(suite, waiters);

	tcase_add_test(give_back, test_give_back_returns_a_plain_batch_before_newer_messages);
	tcase_add_test(give_back, test_give_backs_merge_in_seq_order);
	tcase_add_test(give_back, test_give_back_returns_an_acked_batchas_if_never_fetched);
	tcase_add_test(give_back, test_give_back_counts_no_redelivery);
	tcase_add_test(give_back, test_give_back_to_a_gone_subscriber_releases_the_batch);
	tcase_add_test(give_back, test_give_back_serves_a_parked_fetch);
	suite_add_tcase(suite, give_back);

	tcase_set_timeout(memory, 120);
	tcase_add_test(memory, test_batch_publish_queues_nothing_when_any_allocation_fails);
	tcase_add_test(memory, test_plain_fetch_takes_nothing_when_an_allocation_fails);
	tcase_add_test(memory, test_plain_fetch_of_a_single_message_keeps_it_when_an_allocation_fails);
	tcase_add_test(memory, test_ack_fetch_changes_nothing_when_an_allocation_fails);
	tcase_add_test(memory, test_first_ack_fetch_survives_a_delivery_table_that_cannot_grow);
	tcase_add_test(memory, test_ack_and_nack_lose_nothing_when_an_allocation_fails);
	tcase_add_test(memory, test_redelivery_loses_nothing_when_an_allocation_fails);
	tcase_add_test(memory, test_publish_to_parked_fetches_loses_nothing_when_an_allocation_fails);
	tcase_add_test(memory, test_fetch_wait_that_cannot_park_is_answered_at_once);
	tcase_add_test(memory, test_dead_letter_is_not_dropped_when_an_allocation_fails);
	tcase_add_test(memory, test_plain_give_backs_lose_nothing_and_keep_seq_order_when_an_allocation_fails);
	tcase_add_test(memory, test_ack_give_back_loses_nothing_when_an_allocation_fails);
	suite_add_tcase(suite, memory);

	tcase_set_timeout(timer, 60);
	tcase_add_test(timer, test_timer_thread_serves_ack_deadlines_and_waits_in_real_time);
	suite_add_tcase(suite, timer);

	return suite;
}

int main(void)
{
	SRunner *runner = srunner_create(delivery_suite());
	int failed;

	srunner_run_all(runner, CK_VERBOSE);
	failed = srunner_ntests_failed(runner);
	srunner_free(runner);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
