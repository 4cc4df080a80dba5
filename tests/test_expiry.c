/* test_expiry.c - unit tests of per-message expiry in the broker core
 * (API.md, "Per-message expiry"): a copy not fetched within its message's
 * ttl is removed and counted, frees its room in the pending limits, and is
 * never handed out late: not by a fetch, a held fetch, a peek, a give-back
 * or an ack subscription's redelivery.  Through broker.h only.
 *
 * Time is a fake clock in milliseconds, driven by hand and served with
 * broker_run_timers(); only the last test starts the timer thread. */
#include "autoconfig.h"

#include <check.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "broker.h"
#include "broker_fixture.h"

enum {
	TTL = 100,            /* ms: the short ttl most tests use */
	LONG_TTL = 1000000,   /* ms: a ttl no test reaches */
};

/* --- subscribing ------------------------------------------------------- */

static void subscribe_with(struct broker *broker, const char *subject,
                           const struct broker_subscription *options, subscriber_id id)
{
	ck_assert_int_eq(broker_subscribe(broker, subject, strlen(subject), options, id), BROKER_OK);
}

static void subscribe(struct broker *broker, const char *subject, subscriber_id id)
{
	subscribe_with(broker, subject, NULL, id);
}

static void subscribe_ack(struct broker *broker, const char *subject, subscriber_id id)
{
	struct broker_subscription options = { .ack = true };

	subscribe_with(broker, subject, &options, id);
}

static void subscribe_group(struct broker *broker, const char *subject, const char *group, subscriber_id id)
{
	struct broker_subscription options = { .group = group, .group_length = strlen(group) };

	subscribe_with(broker, subject, &options, id);
}

/* --- publishing -------------------------------------------------------- */

/* A message of data published to subject with ttl_ms (0: the default). */
static struct broker_message *new_message(const char *subject, const char *data, uint64_t ttl_ms)
{
	struct broker_message *message = broker_message_new(subject, strlen(subject), data, strlen(data));

	ck_assert_ptr_nonnull(message);
	message->expires_ms = ttl_ms;
	return message;
}

static enum broker_status try_publish(struct broker *broker, const char *subject, const char *data,
                                      uint64_t ttl_ms)
{
	struct broker_message *message = new_message(subject, data, ttl_ms);
	enum broker_status status = broker_publish(broker, subject, strlen(subject), message);

	broker_message_release(message);
	return status;
}

/* Publishes and returns the seq. */
static uint64_t publish(struct broker *broker, const char *subject, const char *data, uint64_t ttl_ms)
{
	struct broker_message *message = new_message(subject, data, ttl_ms);
	uint64_t seq;

	ck_assert_int_eq(broker_publish(broker, subject, strlen(subject), message), BROKER_OK);
	seq = message->seq;
	ck_assert_uint_gt(seq, 0);
	broker_message_release(message);
	return seq;
}

/* --- fetching ---------------------------------------------------------- */

static void fetch_with(struct broker *broker, const char *subject, const char *id,
                       const struct broker_fetch_options *options, struct broker_batch *batch)
{
	ck_assert_int_eq(broker_fetch(broker, subject, strlen(subject), ID(id), options, batch), BROKER_OK);
}

static void fetch(struct broker *broker, const char *subject, const char *id, struct broker_batch *batch)
{
	fetch_with(broker, subject, id, NULL, batch);
}

/* Asserts that batch holds the messages named seqs, in that order. */
static void assert_seqs(const struct broker_batch *batch, const uint64_t *seqs, size_t count)
{
	char got[512] = "";

	for (size_t i = 0; i < batch->count && strlen(got) < sizeof(got) - 32; i++)
		snprintf(got + strlen(got), sizeof(got) - strlen(got), " %" PRIu64, batch->messages[i]->seq);
	ck_assert_msg(batch->count == count, "got %zu messages (seqs%s), expected %zu", batch->count, got, count);
	for (size_t i = 0; i < count; i++)
		ck_assert_msg(batch->messages[i]->seq == seqs[i], "got seqs%s; #%zu expected %" PRIu64,
		              got, i, seqs[i]);
}

/* Fetches everything and asserts it is exactly seqs, in order. */
static void fetch_expect(struct broker *broker, const char *subject, const char *id,
                         const uint64_t *seqs, size_t count)
{
	struct broker_batch batch;

	fetch(broker, subject, id, &batch);
	assert_seqs(&batch, seqs, count);
	broker_batch_release(&batch);
}

/* Fetches and asserts that nothing came. */
static void fetch_nothing(struct broker *broker, const char *subject, const char *id)
{
	struct broker_batch batch;

	fetch(broker, subject, id, &batch);
	ck_assert_msg(batch.count == 0, "got %zu message(s), the first seq %" PRIu64, batch.count,
	              batch.count ? batch.messages[0]->seq : 0);
	broker_batch_release(&batch);
}

static size_t ack(struct broker *broker, const char *subject, const char *id, const uint64_t *seqs, size_t count)
{
	size_t settled = 12345;

	ck_assert_int_eq(broker_ack(broker, subject, strlen(subject), ID(id), seqs, count, &settled), BROKER_OK);
	return settled;
}

static size_t nack(struct broker *broker, const char *subject, const char *id, uint64_t delay_ms,
                   const uint64_t *seqs, size_t count)
{
	size_t settled = 12345;

	ck_assert_int_eq(broker_nack(broker, subject, strlen(subject), ID(id), seqs, count, delay_ms, &settled),
	                 BROKER_OK);
	return settled;
}

/* --- parked fetches ---------------------------------------------------- */

static enum broker_status fetch_wait(struct broker *broker, const char *subject, const char *id,
                                     uint64_t wait_ms, struct recorder *recorder)
{
	memset(recorder, 0, sizeof(*recorder));
	recorder->waiter.wake = record_wake;
	recorder->waiter.context = recorder;
	return broker_fetch_wait(broker, subject, strlen(subject), ID(id), NULL, wait_ms, &recorder->waiter);
}

/* ======================================================================= */
/* --- fetch ------------------------------------------------------------- */

START_TEST(test_a_copy_fetched_within_its_ttl_is_delivered)
{
	struct broker *broker = new_broker();
	subscriber_id id;
	uint64_t seq;

	subscribe(broker, "s", id);
	seq = publish(broker, "s", "x", TTL);
	advance(TTL - 1);
	broker_run_timers(broker);
	fetch_expect(broker, "s", id, SEQS(seq));
	ck_assert_uint_eq(stats_of(broker).expired_copies, 0);
	assert_empty(broker);
	broker_free(broker);
}
END_TEST

START_TEST(test_an_expired_copy_is_removed_at_the_fetch_and_counted)
{
	struct broker *broker = new_broker();
	subscriber_id id;

	subscribe(broker, "s", id);
	publish(broker, "s", "abcd", TTL);
	ck_assert_uint_eq(stats_of(broker).pending, 1);
	ck_assert_uint_eq(stats_of(broker).pending_bytes, 4);
	advance(TTL);                      /* no timer runs: the fetch itself must see it */
	fetch_nothing(broker, "s", id);
	ck_assert_uint_eq(stats_of(broker).expired_copies, 1);
	ck_assert_uint_eq(stats_of(broker).delivered, 0);
	assert_empty(broker);
	broker_free(broker);
}
END_TEST

START_TEST(test_run_timers_removes_expired_copies_without_a_fetch)
{
	struct broker *broker = new_broker();
	subscriber_id id, other;
	uint64_t next;

	subscribe(broker, "s", id);
	subscribe(broker, "s", other);
	publish(broker, "s", "abcd", TTL);
	ck_assert_uint_eq(stats_of(broker).pending, 2);
	/* The timers know the deadline: the next run is due by then. */
	next = broker_run_timers(broker);
	ck_assert_uint_le(next, TTL);
	advance(TTL);
	broker_run_timers(broker);
	ck_assert_uint_eq(stats_of(broker).expired_copies, 2);
	assert_empty(broker);
	ck_assert_uint_eq(broker_run_timers(broker), UINT64_MAX);
	fetch_nothing(broker, "s", id);
	fetch_nothing(broker, "s", other);
	ck_assert_uint_eq(stats_of(broker).expired_copies, 2);
	broker_free(broker);
}
END_TEST

START_TEST(test_a_message_without_ttl_never_expires)
{
	struct broker *broker = new_broker();
	subscriber_id id;
	uint64_t seq;

	subscribe(broker, "s", id);
	seq = publish(broker, "s", "x", 0);
	ck_assert_uint_eq(broker_run_timers(broker), UINT64_MAX);
	advance(400u * 86400000u);
	broker_run_timers(broker);
	fetch_expect(broker, "s", id, SEQS(seq));
	ck_assert_uint_eq(stats_of(broker).expired_copies, 0);
	broker_free(broker);
}
END_TEST

START_TEST(test_the_largest_ttl_is_kept_for_a_year)
{
	struct broker *broker = new_broker();
	subscriber_id id;
	uint64_t seq;

	subscribe(broker, "s", id);
	seq = publish(broker, "s", "x", BROKER_TTL_MAX_MS);
	advance(BROKER_TTL_MAX_MS - 1);
	broker_run_timers(broker);
	fetch_expect(broker, "s", id, SEQS(seq));
	publish(broker, "s", "y", BROKER_TTL_MAX_MS);
	advance(BROKER_TTL_MAX_MS);
	broker_run_timers(broker);
	ck_assert_uint_eq(stats_of(broker).expired_copies, 1);
	assert_empty(broker);
	broker_free(broker);
}
END_TEST

START_TEST(test_expired_copies_free_their_room_in_the_pending_limits)
{
	struct broker_limits limits = test_limits();
	struct broker *broker;
	subscriber_id id, wild;

	limits.max_pending = 2;
	limits.max_pending_bytes = 100;
	broker = new_broker_with(&limits);
	subscribe(broker, "s.a", id);
	subscribe(broker, "s.*", wild);
	publish(broker, "s.a", "12345", TTL);       /* two copies: the limit */
	ck_assert_int_eq(try_publish(broker, "s.a", "z", 0), BROKER_OVERFLOW);
	advance(TTL);
	broker_run_timers(broker);                  /* no fetch */
	ck_assert_uint_eq(stats_of(broker).expired_copies, 2);
	assert_empty(broker);
	ck_assert_int_eq(try_publish(broker, "s.a", "z", 0), BROKER_OK);
	ck_assert_uint_eq(stats_of(broker).pending, 2);
	broker_free(broker);
}
END_TEST

START_TEST(test_only_expired_copies_vanish_and_the_order_is_kept)
{
	struct broker *broker = new_broker();
	subscriber_id id;
	uint64_t long1, short1, none1, short2, long2, none2;

	subscribe(broker, "s", id);
	long1 = publish(broker, "s", "long1", LONG_TTL);
	short1 = publish(broker, "s", "short1", TTL);
	none1 = publish(broker, "s", "none1", 0);
	short2 = publish(broker, "s", "short2", 2 * TTL);
	long2 = publish(broker, "s", "long2", LONG_TTL);
	none2 = publish(broker, "s", "none2", 0);
	(void)short1;
	advance(TTL);
	broker_run_timers(broker);
	ck_assert_uint_eq(stats_of(broker).expired_copies, 1);
	ck_assert_uint_eq(stats_of(broker).pending, 5);
	advance(TTL);
	broker_run_timers(broker);
	ck_assert_uint_eq(stats_of(broker).expired_copies, 2);
	ck_assert_uint_eq(stats_of(broker).pending, 4);
	(void)short2;
	fetch_expect(broker, "s", id, SEQS(long1, none1, long2, none2));
	assert_empty(broker);
	broker_free(broker);
}
END_TEST

START_TEST(test_fetch_removes_every_expired_copy_without_timers)
{
	struct broker *broker = new_broker();
	subscriber_id id;
	uint64_t none1, long1;

	subscribe(broker, "s", id);
	none1 = publish(broker, "s", "none1", 0);
	publish(broker, "s", "short1", TTL);
	long1 = publish(broker, "s", "long1", LONG_TTL);
	publish(broker, "s", "short2", TTL);
	advance(TTL);
	fetch_expect(broker, "s", id, SEQS(none1, long1));
	ck_assert_uint_eq(stats_of(broker).expired_copies, 2);
	assert_empty(broker);
	broker_free(broker);
}
END_TEST

/* A queue that once held a copy with a ttl, swept empty, then gets a
 * message without a ttl followed by one with: the second must still
 * expire behind the first. */
START_TEST(test_a_ttl_behind_a_message_without_one_expires_after_an_earlier_sweep)
{
	struct broker *broker = new_broker();
	subscriber_id id;
	uint64_t plain;

	subscribe(broker, "s", id);
	publish(broker, "s", "early", TTL);
	advance(TTL);
	broker_run_timers(broker);
	ck_assert_uint_eq(stats_of(broker).expired_copies, 1);
	assert_empty(broker);

	plain = publish(broker, "s", "plain", 0);
	publish(broker, "s", "short", TTL);
	advance(TTL);
	broker_run_timers(broker);
	ck_assert_uint_eq(stats_of(broker).expired_copies, 2);
	ck_assert_uint_eq(stats_of(broker).pending, 1);
	fetch_expect(broker, "s", id, SEQS(plain));
	assert_empty(broker);
	broker_free(broker);
}
END_TEST

/* The same, where the earlier copy was fetched rather than expired. */
START_TEST(test_a_ttl_behind_a_message_without_one_expires_after_an_earlier_fetch)
{
	struct broker *broker = new_broker();
	subscriber_id id;
	uint64_t plain;

	subscribe(broker, "s", id);
	publish(broker, "s", "early", TTL);
	fetch_expect(broker, "s", id, SEQS(1));
	advance(TTL);
	broker_run_timers(broker);          /* sweeps an empty queue */
	plain = publish(broker, "s", "plain", 0);
	publish(broker, "s", "short", 2 * TTL);
	advance(2 * TTL);
	fetch_expect(broker, "s", id, SEQS(plain));
	ck_assert_uint_eq(stats_of(broker).expired_copies, 1);
	assert_empty(broker);
	broker_free(broker);
}
END_TEST

START_TEST(test_peek_shows_no_expired_copy)
{
	struct broker *broker = new_broker();
	struct broker_fetch_options options = { .peek = true };
	struct broker_batch batch;
	subscriber_id id;
	uint64_t kept;

	subscribe(broker, "s", id);
	publish(broker, "s", "short", TTL);
	kept = publish(broker, "s", "long", LONG_TTL);
	advance(TTL);
	fetch_with(broker, "s", id, &options, &batch);
	assert_seqs(&batch, SEQS(kept));
	broker_batch_release(&batch);
	ck_assert_uint_eq(stats_of(broker).expired_copies, 1);
	fetch_expect(broker, "s", id, SEQS(kept));
	broker_free(broker);
}
END_TEST

START_TEST(test_fetch_max_counts_only_live_copies)
{
	struct broker *broker = new_broker();
	struct broker_fetch_options options = { .max = 2 };
	struct broker_batch batch;
	subscriber_id id;
	uint64_t a, b, c;

	subscribe(broker, "s", id);
	publish(broker, "s", "x1", TTL);
	a = publish(broker, "s", "a", 0);
	publish(broker, "s", "x2", TTL);
	b = publish(broker, "s", "b", 0);
	c = publish(broker, "s", "c", 0);
	advance(TTL);
	fetch_with(broker, "s", id, &options, &batch);
	assert_seqs(&batch, SEQS(a, b));
	broker_batch_release(&batch);
	fetch_expect(broker, "s", id, SEQS(c));
	broker_free(broker);
}
END_TEST

/* --- the default ttl ---------------------------------------------------- */

START_TEST(test_message_ttl_ms_applies_to_messages_published_without_a_ttl)
{
	struct broker_limits limits = test_limits();
	struct broker *broker;
	subscriber_id id;
	uint64_t own, later;

	limits.message_ttl_ms = TTL;
	broker = new_broker_with(&limits);
	subscribe(broker, "s", id);
	publish(broker, "s", "default", 0);
	own = publish(broker, "s", "own", LONG_TTL);     /* its own ttl wins */
	advance(TTL);
	broker_run_timers(broker);
	ck_assert_uint_eq(stats_of(broker).expired_copies, 1);
	fetch_expect(broker, "s", id, SEQS(own));

	/* New limits apply to later publishes only. */
	publish(broker, "s", "before", 0);
	limits.message_ttl_ms = 0;
	broker_set_limits(broker, &limits);
	later = publish(broker, "s", "after", 0);
	advance(TTL);
	broker_run_timers(broker);
	ck_assert_uint_eq(stats_of(broker).expired_copies, 2);
	advance(LONG_TTL);
	fetch_expect(broker, "s", id, SEQS(later));
	limits.message_ttl_ms = 3 * TTL;
	broker_set_limits(broker, &limits);
	publish(broker, "s", "longer", 0);
	advance(3 * TTL - 1);
	broker_run_timers(broker);
	ck_assert_uint_eq(stats_of(broker).pending, 1);
	advance(1);
	broker_run_timers(broker);
	ck_assert_uint_eq(stats_of(broker).expired_copies, 3);
	assert_empty(broker);
	broker_free(broker);
}
END_TEST

/* --- batch publish ------------------------------------------------------ */

START_TEST(test_batch_publish_gives_each_message_its_own_ttl)
{
	struct broker *broker = new_broker();
	struct broker_publish_item items[4];
	static const uint64_t ttls[4] = { TTL, 0, 3 * TTL, TTL };
	static const char *const subjects[4] = { "s", "s", "t.x", "t.x" };
	subscriber_id id, wild;
	size_t failed = 99;
	struct broker_batch batch;

	subscribe(broker, "s", id);
	subscribe(broker, "t.*", wild);
	for (int i = 0; i < 4; i++) {
		items[i].subject = subjects[i];
		items[i].subject_length = strlen(subjects[i]);
		items[i].message = new_message(subjects[i], "d", ttls[i]);
	}
	ck_assert_int_eq(broker_publish_batch(broker, items, 4, &failed), BROKER_OK);
	advance(TTL);
	broker_run_timers(broker);
	ck_assert_uint_eq(stats_of(broker).expired_copies, 2);
	fetch(broker, "s", id, &batch);
	assert_seqs(&batch, SEQS(items[1].message->seq));
	broker_batch_release(&batch);
	fetch(broker, "t.*", wild, &batch);
	assert_seqs(&batch, SEQS(items[2].message->seq));
	broker_batch_release(&batch);
	for (int i = 0; i < 4; i++)
		broker_message_release(items[i].message);
	assert_empty(broker);
	broker_free(broker);
}
END_TEST

/* --- every queue on its own ---------------------------------------------- */

START_TEST(test_each_copy_expires_from_its_own_queue_and_is_counted_once)
{
	struct broker *broker = new_broker();
	subscriber_id plain, member1, member2, wild, rest, acker, fast;

	subscribe(broker, "a.b", plain);
	subscribe_group(broker, "a.b", "g", member1);
	subscribe_group(broker, "a.b", "g", member2);
	subscribe(broker, "a.*", wild);
	subscribe(broker, ">", rest);
	subscribe_ack(broker, "a.b", acker);
	subscribe(broker, "a.b", fast);
	publish(broker, "a.b", "x", TTL);
	ck_assert_uint_eq(stats_of(broker).pending, 6);   /* the group is one copy */
	fetch_expect(broker, "a.b", fast, SEQS(1));       /* fetched in time */
	advance(TTL);
	broker_run_timers(broker);
	ck_assert_uint_eq(stats_of(broker).expired_copies, 5);
	assert_empty(broker);
	fetch_nothing(broker, "a.b", plain);
	fetch_nothing(broker, "a.b", member1);
	fetch_nothing(broker, "a.b", member2);
	fetch_nothing(broker, "a.*", wild);
	fetch_nothing(broker, ">", rest);
	fetch_nothing(broker, "a.b", acker);
	ck_assert_uint_eq(stats_of(broker).expired_copies, 5);
	broker_free(broker);
}
END_TEST

START_TEST(test_unsubscribing_a_queue_with_copies_due_to_expire)
{
	struct broker *broker = new_broker();
	subscriber_id gone, stays, member;

	subscribe(broker, "s", gone);
	subscribe(broker, "s", stays);
	subscribe_group(broker, "s", "g", member);
	publish(broker, "s", "x", TTL);
	publish(broker, "s", "y", 2 * TTL);
	ck_assert_int_eq(broker_unsubscribe(broker, S("s"), ID(gone)), BROKER_OK);
	ck_assert_int_eq(broker_unsubscribe(broker, S("s"), ID(member)), BROKER_OK);
	ck_assert_uint_eq(stats_of(broker).pending, 2);
	advance(TTL);
	broker_run_timers(broker);
	ck_assert_uint_eq(stats_of(broker).expired_copies, 1);
	ck_assert_int_eq(broker_unsubscribe(broker, S("s"), ID(stays)), BROKER_OK);
	advance(TTL);
	ck_assert_uint_eq(broker_run_timers(broker), UINT64_MAX);
	ck_assert_uint_eq(stats_of(broker).expired_copies, 1);
	assert_empty(broker);
	broker_free(broker);
}
END_TEST

/* --- parked fetches ----------------------------------------------------- */

START_TEST(test_a_fetch_held_after_the_message_expired_waits_for_a_new_one)
{
	struct broker *broker = new_broker();
	struct recorder recorder;
	subscriber_id id;
	uint64_t fresh;

	subscribe(broker, "s", id);
	publish(broker, "s", "old", TTL);
	advance(TTL);                       /* no timer has run */
	ck_assert_int_eq(fetch_wait(broker, "s", id, 1000, &recorder), BROKER_PARKED);
	ck_assert_uint_eq(stats_of(broker).expired_copies, 1);
	broker_run_timers(broker);
	ck_assert_int_eq(wakes_of(&recorder), 0);
	fresh = publish(broker, "s", "new", LONG_TTL);   /* a long ttl is delivered */
	ck_assert_int_eq(wakes_of(&recorder), 1);
	ck_assert_int_eq(recorder.waiter.status, BROKER_OK);
	assert_seqs(&recorder.waiter.batch, SEQS(fresh));
	broker_batch_release(&recorder.waiter.batch);
	assert_empty(broker);
	broker_free(broker);
}
END_TEST

START_TEST(test_a_held_fetch_ends_empty_when_only_expired_copies_were_there)
{
	struct broker *broker = new_broker();
	struct recorder recorder;
	subscriber_id id;

	subscribe(broker, "s", id);
	publish(broker, "s", "old", TTL);
	advance(TTL);
	ck_assert_int_eq(fetch_wait(broker, "s", id, 500, &recorder), BROKER_PARKED);
	advance(499);
	broker_run_timers(broker);
	ck_assert_int_eq(wakes_of(&recorder), 0);
	advance(1);
	broker_run_timers(broker);
	ck_assert_int_eq(wakes_of(&recorder), 1);
	ck_assert_int_eq(recorder.waiter.status, BROKER_OK);
	ck_assert_uint_eq(recorder.waiter.batch.count, 0);
	broker_batch_release(&recorder.waiter.batch);
	assert_empty(broker);
	broker_free(broker);
}
END_TEST

/* --- ack subscriptions ---------------------------------------------------- */

START_TEST(test_a_nacked_copy_whose_ttl_passes_during_the_delay_is_not_redelivered)
{
	struct broker *broker = new_broker();
	struct recorder recorder;
	struct broker_batch batch;
	subscriber_id id;
	uint64_t seq, kept;

	subscribe_ack(broker, "s", id);
	seq = publish(broker, "s", "short", 3 * TTL);
	kept = publish(broker, "s", "long", LONG_TTL);
	fetch(broker, "s", id, &batch);
	assert_seqs(&batch, SEQS(seq, kept));
	broker_batch_release(&batch);
	ck_assert_uint_eq(nack(broker, "s", id, 5 * TTL, SEQS(seq, kept)), 2);
	ck_assert_int_eq(fetch_wait(broker, "s", id, 100000, &recorder), BROKER_PARKED);
	advance(5 * TTL);
	broker_run_timers(broker);
	/* The held fetch gets the live one only. */
	ck_assert_int_eq(wakes_of(&recorder), 1);
	assert_seqs(&recorder.waiter.batch, SEQS(kept));
	ck_assert_uint_eq(ack(broker, "s", id, SEQS(kept)), 1);
	broker_batch_release(&recorder.waiter.batch);
	ck_assert_uint_eq(stats_of(broker).expired_copies, 1);
	fetch_nothing(broker, "s", id);
	assert_empty(broker);
	broker_free(broker);
}
END_TEST

START_TEST(test_a_nacked_copy_that_expired_does_not_wake_a_held_fetch)
{
	struct broker *broker = new_broker();
	struct recorder recorder;
	struct broker_batch batch;
	subscriber_id id;
	uint64_t seq;

	subscribe_ack(broker, "s", id);
	seq = publish(broker, "s", "short", TTL);
	fetch(broker, "s", id, &batch);
	broker_batch_release(&batch);
	ck_assert_uint_eq(nack(broker, "s", id, 5 * TTL, SEQS(seq)), 1);
	ck_assert_int_eq(fetch_wait(broker, "s", id, 100000, &recorder), BROKER_PARKED);
	advance(5 * TTL);
	broker_run_timers(broker);
	ck_assert_int_eq(wakes_of(&recorder), 0);
	ck_assert_uint_eq(stats_of(broker).expired_copies, 1);
	ck_assert_uint_eq(stats_of(broker).pending, 0);
	ck_assert_uint_eq(stats_of(broker).in_flight, 0);
	ck_assert(broker_waiter_cancel(broker, &recorder.waiter));
	assert_empty(broker);
	broker_free(broker);
}
END_TEST

START_TEST(test_a_nacked_copy_that_expired_is_not_handed_to_a_later_fetch)
{
	struct broker *broker = new_broker();
	struct broker_batch batch;
	subscriber_id id;
	uint64_t seq;

	subscribe_ack(broker, "s", id);
	seq = publish(broker, "s", "short", TTL);
	fetch(broker, "s", id, &batch);
	broker_batch_release(&batch);
	ck_assert_uint_eq(nack(broker, "s", id, 5 * TTL, SEQS(seq)), 1);
	advance(5 * TTL);                   /* no timer runs: the fetch serves the deadline */
	fetch_nothing(broker, "s", id);
	ck_assert_uint_eq(stats_of(broker).expired_copies, 1);
	assert_empty(broker);
	broker_free(broker);
}
END_TEST

START_TEST(test_an_in_flight_copy_can_be_acked_after_its_ttl_but_is_not_redelivered)
{
	struct broker *broker = new_broker();
	struct broker_batch batch;
	subscriber_id id;
	uint64_t first, second;

	subscribe_ack(broker, "s", id);
	first = publish(broker, "s", "a", TTL);
	second = publish(broker, "s", "b", TTL);
	fetch(broker, "s", id, &batch);
	assert_seqs(&batch, SEQS(first, second));
	broker_batch_release(&batch);
	advance(TTL);
	broker_run_timers(broker);
	/* Delivered in time: in flight until acked. */
	ck_assert_uint_eq(stats_of(broker).in_flight, 2);
	ck_assert_uint_eq(ack(broker, "s", id, SEQS(first)), 1);
	/* The other one's ack wait passes: expired, it is not delivered again. */
	advance(ACK_WAIT);
	broker_run_timers(broker);
	fetch_nothing(broker, "s", id);
	ck_assert_uint_eq(stats_of(broker).expired_copies, 1);
	ck_assert_uint_eq(stats_of(broker).redelivered, 0);
	assert_empty(broker);
	broker_free(broker);
}
END_TEST

START_TEST(test_a_nacked_copy_still_live_is_redelivered)
{
	struct broker *broker = new_broker();
	struct broker_batch batch;
	subscriber_id id;
	uint64_t seq;

	subscribe_ack(broker, "s", id);
	seq = publish(broker, "s", "a", 10 * TTL);
	fetch(broker, "s", id, &batch);
	broker_batch_release(&batch);
	ck_assert_uint_eq(nack(broker, "s", id, TTL, SEQS(seq)), 1);
	advance(TTL);
	broker_run_timers(broker);
	fetch(broker, "s", id, &batch);
	assert_seqs(&batch, SEQS(seq));
	ck_assert_uint_eq(batch.attempts[0], 2);
	broker_batch_release(&batch);
	ck_assert_uint_eq(ack(broker, "s", id, SEQS(seq)), 1);
	ck_assert_uint_eq(stats_of(broker).expired_copies, 0);
	assert_empty(broker);
	broker_free(broker);
}
END_TEST

/* --- give-back ------------------------------------------------------------ */

START_TEST(test_a_plain_batch_given_back_after_the_ttl_is_not_delivered)
{
	struct broker *broker = new_broker();
	struct broker_batch batch;
	subscriber_id id;
	uint64_t live, newer;

	subscribe(broker, "s", id);
	publish(broker, "s", "short", TTL);
	live = publish(broker, "s", "long", LONG_TTL);
	publish(broker, "s", "short2", TTL);
	fetch(broker, "s", id, &batch);
	ck_assert_uint_eq(batch.count, 3);
	newer = publish(broker, "s", "newer", 0);
	advance(TTL);
	broker_batch_give_back(broker, ID(id), &batch);   /* the reply could not be sent */
	fetch_expect(broker, "s", id, SEQS(live, newer));
	ck_assert_uint_eq(stats_of(broker).expired_copies, 2);
	assert_empty(broker);
	broker_free(broker);
}
END_TEST

START_TEST(test_a_plain_batch_given_back_in_time_expires_later_on_time)
{
	struct broker *broker = new_broker();
	struct broker_batch batch;
	subscriber_id id;
	uint64_t kept;

	subscribe(broker, "s", id);
	publish(broker, "s", "short", TTL);
	kept = publish(broker, "s", "none", 0);
	fetch(broker, "s", id, &batch);
	advance(TTL / 2);
	broker_batch_give_back(broker, ID(id), &batch);
	ck_assert_uint_eq(stats_of(broker).pending, 2);
	advance(TTL / 2);
	broker_run_timers(broker);                        /* the sweep finds it */
	ck_assert_uint_eq(stats_of(broker).expired_copies, 1);
	ck_assert_uint_eq(stats_of(broker).pending, 1);
	fetch_expect(broker, "s", id, SEQS(kept));
	assert_empty(broker);
	broker_free(broker);
}
END_TEST

/* The give-back itself must note the deadline: the queue, emptied by the
 * fetch, may have been swept meanwhile and expect nothing to expire. */
START_TEST(test_a_batch_given_back_to_a_swept_queue_is_not_delivered_late)
{
	struct broker *broker = new_broker();
	struct broker_batch batch;
	subscriber_id id;

	subscribe(broker, "s", id);
	publish(broker, "s", "short", TTL);
	fetch(broker, "s", id, &batch);
	ck_assert_uint_eq(batch.count, 1);
	advance(TTL);
	broker_run_timers(broker);                        /* sweeps the empty queue */
	broker_batch_give_back(broker, ID(id), &batch);
	fetch_nothing(broker, "s", id);
	ck_assert_uint_eq(stats_of(broker).expired_copies, 1);
	assert_empty(broker);
	broker_free(broker);
}
END_TEST

START_TEST(test_a_live_batch_given_back_to_a_swept_queue_expires_on_time)
{
	struct broker *broker = new_broker();
	struct broker_batch batch;
	subscriber_id id;

	subscribe(broker, "s", id);
	publish(broker, "s", "given back", 2 * TTL);
	fetch(broker, "s", id, &batch);
	publish(broker, "s", "sooner", TTL);
	advance(TTL);
	broker_run_timers(broker);                        /* "sooner" goes, the queue is empty */
	ck_assert_uint_eq(stats_of(broker).expired_copies, 1);
	broker_batch_give_back(broker, ID(id), &batch);
	ck_assert_uint_eq(stats_of(broker).pending, 1);
	advance(TTL);
	broker_run_timers(broker);                        /* no fetch: the sweep finds it */
	ck_assert_uint_eq(stats_of(broker).expired_copies, 2);
	assert_empty(broker);
	fetch_nothing(broker, "s", id);
	broker_free(broker);
}
END_TEST

START_TEST(test_an_ack_batch_given_back_after_the_ttl_is_not_delivered)
{
	struct broker *broker = new_broker();
	struct broker_batch batch;
	subscriber_id id;
	uint64_t live;

	subscribe_ack(broker, "s", id);
	publish(broker, "s", "short", TTL);
	live = publish(broker, "s", "long", LONG_TTL);
	fetch(broker, "s", id, &batch);
	ck_assert_uint_eq(batch.count, 2);
	advance(TTL);
	broker_batch_give_back(broker, ID(id), &batch);
	fetch(broker, "s", id, &batch);
	assert_seqs(&batch, SEQS(live));
	ck_assert_uint_eq(ack(broker, "s", id, SEQS(live)), 1);
	broker_batch_release(&batch);
	ck_assert_uint_eq(stats_of(broker).expired_copies, 1);
	assert_empty(broker);
	broker_free(broker);
}
END_TEST

START_TEST(test_a_give_back_of_expired_copies_does_not_wake_a_held_fetch)
{
	struct broker *broker = new_broker();
	struct recorder recorder;
	struct broker_batch batch;
	subscriber_id member1, member2;

	subscribe_group(broker, "s", "g", member1);
	subscribe_group(broker, "s", "g", member2);
	publish(broker, "s", "short", TTL);
	fetch(broker, "s", member1, &batch);
	ck_assert_int_eq(fetch_wait(broker, "s", member2, 100000, &recorder), BROKER_PARKED);
	advance(TTL);
	broker_batch_give_back(broker, ID(member1), &batch);
	ck_assert_int_eq(wakes_of(&recorder), 0);
	ck_assert_uint_eq(stats_of(broker).expired_copies, 1);
	ck_assert(broker_waiter_cancel(broker, &recorder.waiter));
	assert_empty(broker);
	broker_free(broker);
}
END_TEST

/* --- the timer thread ---------------------------------------------------- */

START_TEST(test_the_timer_thread_sweeps_expired_copies_in_real_time)
{
	struct broker_limits limits = test_limits();
	struct broker *broker = broker_new(&limits);   /* the real clock */
	struct timespec pause = { 0, 2000000 };
	subscriber_id id;
	uint64_t start, until;

	ck_assert_ptr_nonnull(broker);
	subscribe(broker, "s", id);
	ck_assert_int_eq(broker_timer_start(broker), 0);
	/* The thread sleeps (nothing due) when the publish comes: it must
	 * learn of the new, earlier deadline. */
	nanosleep(&pause, NULL);
	start = real_ms();
	publish(broker, "s", "x", 50);
	publish(broker, "s", "y", 0);
	until = real_ms() + 10000;
	while (stats_of(broker).expired_copies == 0 && real_ms() < until)
		nanosleep(&pause, NULL);
	ck_assert_msg(stats_of(broker).expired_copies == 1, "the copy was not swept within 10 s");
	ck_assert_uint_ge(real_ms() - start, 50);
	ck_assert_uint_eq(stats_of(broker).pending, 1);
	broker_free(broker);
}
END_TEST

static Suite *expiry_suite(void)
{
	Suite *suite = suite_create("expiry");
	TCase *fetching = tcase_create("fetch");
	TCase *defaults = tcase_create("defaults");
	TCase *queues = tcase_create("queues");
	TCase *waiters = tcase_create("waiters");
	TCase *acks = tcase_create("ack");
	TCase *give_back = tcase_create("give_back");
	TCase *timer = tcase_create("timer");

	tcase_add_test(fetching, test_a_copy_fetched_within_its_ttl_is_delivered);
	tcase_add_test(fetching, test_an_expired_copy_is_removed_at_the_fetch_and_counted);
	tcase_add_test(fetching, test_run_timers_removes_expired_copies_without_a_fetch);
	tcase_add_test(fetching, test_a_message_without_ttl_never_expires);
	tcase_add_test(fetching, test_the_largest_ttl_is_kept_for_a_year);
	tcase_add_test(fetching, test_expired_copies_free_their_room_in_the_pending_limits);
	tcase_add_test(fetching, test_only_expired_copies_vanish_and_the_order_is_kept);
	tcase_add_test(fetching, test_fetch_removes_every_expired_copy_without_timers);
	tcase_add_test(fetching, test_a_ttl_behind_a_message_without_one_expires_after_an_earlier_sweep);
	tcase_add_test(fetching, test_a_ttl_behind_a_message_without_one_expires_after_an_earlier_fetch);
	tcase_add_test(fetching, test_peek_shows_no_expired_copy);
	tcase_add_test(fetching, test_fetch_max_counts_only_live_copies);
	suite_add_tcase(suite, fetching);

	tcase_add_test(defaults, test_message_ttl_ms_applies_to_messages_published_without_a_ttl);
	tcase_add_test(defaults, test_batch_publish_gives_each_message_its_own_ttl);
	suite_add_tcase(suite, defaults);

	tcase_add_test(queues, test_each_copy_expires_from_its_own_queue_and_is_counted_once);
	tcase_add_test(queues, test_unsubscribing_a_queue_with_copies_due_to_expire);
	suite_add_tcase(suite, queues);

	tcase_add_test(waiters, test_a_fetch_held_after_the_message_expired_waits_for_a_new_one);
	tcase_add_test(waiters, test_a_held_fetch_ends_empty_when_only_expired_copies_were_there);
	suite_add_tcase(suite, waiters);

	tcase_add_test(acks, test_a_nacked_copy_whose_ttl_passes_during_the_delay_is_not_redelivered);
	tcase_add_test(acks, test_a_nacked_copy_that_expired_does_not_wake_a_held_fetch);
	tcase_add_test(acks, test_a_nacked_copy_that_expired_is_not_handed_to_a_later_fetch);
	tcase_add_test(acks, test_an_in_flight_copy_can_be_acked_after_its_ttl_but_is_not_redelivered);
	tcase_add_test(acks, test_a_nacked_copy_still_live_is_redelivered);
	suite_add_tcase(suite, acks);

	tcase_add_test(give_back, test_a_plain_batch_given_back_after_the_ttl_is_not_delivered);
	tcase_add_test(give_back, test_a_plain_batch_given_back_in_time_expires_later_on_time);
	tcase_add_test(give_back, test_a_batch_given_back_to_a_swept_queue_is_not_delivered_late);
	tcase_add_test(give_back, test_a_live_batch_given_back_to_a_swept_queue_expires_on_time);
	tcase_add_test(give_back, test_an_ack_batch_given_back_after_the_ttl_is_not_delivered);
	tcase_add_test(give_back, test_a_give_back_of_expired_copies_does_not_wake_a_held_fetch);
	suite_add_tcase(suite, give_back);

	tcase_add_test(timer, test_the_timer_thread_sweeps_expired_copies_in_real_time);
	suite_add_tcase(suite, timer);
	return suite;
}

int main(void)
{
	SRunner *runner = srunner_create(expiry_suite());
	int failed;

	srunner_run_all(runner, CK_VERBOSE);
	failed = srunner_ntests_failed(runner);
	srunner_free(runner);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
