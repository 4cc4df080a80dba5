/* test_broker.c - unit tests of the broker core. */
#include "autoconfig.h"

#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"
#include "uuid.h"

#define S(literal) (literal), (sizeof(literal) - 1)

static uint64_t fake_now;

/* The broker's clock counts milliseconds; fake_now is in seconds. */
static uint64_t fake_clock(void)
{
	return __atomic_load_n(&fake_now, __ATOMIC_RELAXED) * 1000u;
}

static struct broker *new_broker(uint64_t max_pending, uint64_t max_pending_bytes)
{
	struct broker_limits limits = {
		.max_pending = max_pending,
		.max_pending_bytes = max_pending_bytes,
		.max_subject_length = 0,
	};
	struct broker *broker = broker_new(&limits);

	ck_assert_ptr_nonnull(broker);
	fake_now = 1000;
	broker_set_clock(broker, fake_clock);
	return broker;
}

static void subscribe(struct broker *broker, const char *subject, char id[BROKER_ID_LENGTH + 1])
{
	ck_assert_int_eq(broker_subscribe(broker, subject, strlen(subject), NULL, id), BROKER_OK);
}

static enum broker_status publish(struct broker *broker, const char *subject, const char *data)
{
	struct broker_message *message = broker_message_new(NULL, 0, data, strlen(data));
	enum broker_status status;

	ck_assert_ptr_nonnull(message);
	status = broker_publish(broker, subject, strlen(subject), message);
	broker_message_release(message);
	return status;
}

static enum broker_status fetch(struct broker *broker, const char *subject, const char *id,
                                struct broker_batch *batch)
{
	return broker_fetch(broker, subject, strlen(subject), id, strlen(id), NULL, batch);
}

/* Fetches and returns how many messages were pending. */
static size_t drain(struct broker *broker, const char *subject, const char *id)
{
	struct broker_batch batch;
	size_t count;

	ck_assert_int_eq(fetch(broker, subject, id, &batch), BROKER_OK);
	count = batch.count;
	broker_batch_release(&batch);
	return count;
}

static struct broker_stats stats_of(struct broker *broker)
{
	struct broker_stats stats;

	broker_get_stats(broker, &stats);
	return stats;
}

static uint32_t refcount_of(struct broker_message *message)
{
	return __atomic_load_n(&message->refcount, __ATOMIC_RELAXED);
}

/* --- subjects ---------------------------------------------------------- */

START_TEST(test_subject_accepts_tokens_separated_by_single_dots)
{
	ck_assert(broker_subject_valid(S("a"), 0));
	ck_assert(broker_subject_valid(S("orders"), 0));
	ck_assert(broker_subject_valid(S("orders.eu.created"), 0));
	ck_assert(broker_subject_valid(S("a.b.c.d.e"), 0));
	ck_assert(broker_subject_valid(S("with-dash_and*star>gt"), 0));
	ck_assert(broker_subject_valid(S("ünïcödé.✓"), 0));
}
END_TEST

START_TEST(test_subject_rejects_empty)
{
	ck_assert(!broker_subject_valid("", 0, 0));
	ck_assert(!broker_subject_valid(NULL, 0, 0));
	ck_assert(!broker_subject_valid("abc", 0, 10));
}
END_TEST

START_TEST(test_subject_rejects_space_tab_cr_lf)
{
	ck_assert(!broker_subject_valid(S("a b"), 0));
	ck_assert(!broker_subject_valid(S(" ab"), 0));
	ck_assert(!broker_subject_valid(S("ab "), 0));
	ck_assert(!broker_subject_valid(S("a\tb"), 0));
	ck_assert(!broker_subject_valid(S("a\rb"), 0));
	ck_assert(!broker_subject_valid(S("a\nb"), 0));
	ck_assert(!broker_subject_valid(S("a.b\r\n"), 0));
}
END_TEST

START_TEST(test_subject_rejects_empty_token)
{
	ck_assert(!broker_subject_valid(S("."), 0));
	ck_assert(!broker_subject_valid(S(".."), 0));
	ck_assert(!broker_subject_valid(S(".a"), 0));
	ck_assert(!broker_subject_valid(S("a."), 0));
	ck_assert(!broker_subject_valid(S("a..b"), 0));
	ck_assert(!broker_subject_valid(S("a.b..c.d"), 0));
}
END_TEST

START_TEST(test_subject_rejects_nul_byte)
{
	ck_assert(!broker_subject_valid(S("a\0b"), 0));
	ck_assert(!broker_subject_valid(S("\0"), 0));
	ck_assert(!broker_subject_valid(S("ab\0"), 0));
	/* the length counts, not a terminating NUL */
	ck_assert(broker_subject_valid("ab\0cd", 2, 0));
}
END_TEST

START_TEST(test_subject_length_limit_is_inclusive_and_zero_means_none)
{
	char long_subject[10001];

	ck_assert(broker_subject_valid(S("abcd"), 4));
	ck_assert(!broker_subject_valid(S("abcde"), 4));
	memset(long_subject, 'x', sizeof(long_subject) - 1);
	long_subject[sizeof(long_subject) - 1] = '\0';
	ck_assert(broker_subject_valid(long_subject, strlen(long_subject), 0));
	ck_assert(!broker_subject_valid(long_subject, strlen(long_subject), 9999));
}
END_TEST

/* A lowered limit refuses new subscriptions and publishes to longer
 * subjects at once, but their subscribers can still fetch what they were
 * sent; to anyone else a too long subject is invalid. */
START_TEST(test_operations_apply_the_subject_length_limit_live)
{
	struct broker *broker = new_broker(0, 0);
	struct broker_limits limits = { .max_subject_length = 3 };
	struct broker_batch batch;
	char id[BROKER_ID_LENGTH + 1], other[BROKER_ID_LENGTH + 1];

	subscribe(broker, "abcd", id);
	subscribe(broker, "abc", other);
	ck_assert_int_eq(publish(broker, "abcd", "sent before"), BROKER_OK);
	broker_set_limits(broker, &limits);
	ck_assert_int_eq(broker_subscribe(broker, S("abcd"), NULL, other), BROKER_INVALID_SUBJECT);
	ck_assert_int_eq(publish(broker, "abcd", "x"), BROKER_INVALID_SUBJECT);
	ck_assert_int_eq(fetch(broker, "abcd", id, &batch), BROKER_OK);
	ck_assert_uint_eq(batch.count, 1);
	ck_assert_str_eq(batch.messages[0]->data, "sent before");
	broker_batch_release(&batch);
	ck_assert_int_eq(fetch(broker, "abcd", other, &batch), BROKER_INVALID_SUBJECT);
	ck_assert_int_eq(fetch(broker, "abcde", id, &batch), BROKER_INVALID_SUBJECT);
	ck_assert_int_eq(fetch(broker, "abc", id, &batch), BROKER_BAD_ID);
	ck_assert_int_eq(fetch(broker, "a..bcd", id, &batch), BROKER_INVALID_SUBJECT);
	ck_assert_uint_eq(batch.count, 0);
	subscribe(broker, "abc", id);
	broker_free(broker);
}
END_TEST

START_TEST(test_invalid_subject_is_refused_by_every_operation)
{
	struct broker *broker = new_broker(0, 0);
	struct broker_batch batch;
	char id[BROKER_ID_LENGTH + 1];

	subscribe(broker, "ok", id);
	ck_assert_int_eq(broker_subscribe(broker, S("a..b"), NULL, id), BROKER_INVALID_SUBJECT);
	ck_assert_int_eq(broker_subscribe(broker, S("x\0y"), NULL, id), BROKER_INVALID_SUBJECT);
	ck_assert_int_eq(publish(broker, "a b", "x"), BROKER_INVALID_SUBJECT);
	ck_assert_int_eq(fetch(broker, "", id, &batch), BROKER_INVALID_SUBJECT);
	broker_batch_release(&batch);
	ck_assert_uint_eq(stats_of(broker).subjects, 1);
	broker_free(broker);
}
END_TEST

/* --- subscribe --------------------------------------------------------- */

/* True for 8-4-4-4-12 lowercase hex with version 4 and variant 10xx. */
static bool is_uuid_v4(const char *id)
{
	if (strlen(id) != 36 || id[14] != '4' || !strchr("89ab", id[19]))
		return false;
	for (size_t i = 0; i < 36; i++) {
		bool dash = i == 8 || i == 13 || i == 18 || i == 23;

		if (dash ? id[i] != '-' : !strchr("0123456789abcdef", id[i]))
			return false;
	}
	return true;
}

static void assert_uuid_v4_shape(const char *id)
{
	ck_assert_msg(is_uuid_v4(id), "not a lowercase UUID v4: \"%s\"", id);
}

static int compare_ids(const void *a, const void *b)
{
	return memcmp(a, b, BROKER_ID_LENGTH + 1);
}

START_TEST(test_subscribe_gives_unique_uuid_v4_ids)
{
	enum { COUNT = 2000 };
	struct broker *broker = new_broker(0, 0);
	char (*ids)[BROKER_ID_LENGTH + 1] = calloc(COUNT, sizeof(*ids));

	ck_assert_ptr_nonnull(ids);
	for (size_t i = 0; i < COUNT; i++) {
		subscribe(broker, i % 2 ? "odd" : "even", ids[i]);
		assert_uuid_v4_shape(ids[i]);
	}
	qsort(ids, COUNT, sizeof(*ids), compare_ids);
	for (size_t i = 1; i < COUNT; i++)
		ck_assert_str_ne(ids[i - 1], ids[i]);
	ck_assert_uint_eq(stats_of(broker).subscribers, COUNT);
	ck_assert_uint_eq(stats_of(broker).subjects, 2);
	free(ids);
	broker_free(broker);
}
END_TEST

START_TEST(test_uuid_generate_v4_sets_version_and_variant_bits)
{
	char id[UUID_TEXT_LENGTH + 1];
	int malformed = 0;

	/* the checker itself tells good from bad */
	ck_assert(is_uuid_v4("0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"));
	ck_assert(!is_uuid_v4("0F1E2D3C-4B5A-4978-8695-A4B3C2D1E0F9"));
	ck_assert(!is_uuid_v4("0f1e2d3c-4b5a-1978-8695-a4b3c2d1e0f9"));
	ck_assert(!is_uuid_v4("0f1e2d3c-4b5a-4978-c695-a4b3c2d1e0f9"));
	ck_assert(!is_uuid_v4("0f1e2d3c4b5a-4978-8695-a4b3c2d1e0f9-"));
	for (int i = 0; i < 10000; i++) {
		uuid_generate_v4(id);
		malformed += !is_uuid_v4(id);
	}
	ck_assert_int_eq(malformed, 0);
}
END_TEST

/* --- publish and fetch ------------------------------------------------- */

START_TEST(test_publish_without_subscriber_is_refused)
{
	struct broker *broker = new_broker(0, 0);
	char id[BROKER_ID_LENGTH + 1];

	ck_assert_int_eq(publish(broker, "nobody.here", "x"), BROKER_NO_SUBSCRIBER);
	subscribe(broker, "somebody", id);
	ck_assert_int_eq(publish(broker, "somebody.else", "x"), BROKER_NO_SUBSCRIBER);
	ck_assert_uint_eq(stats_of(broker).published, 0);
	ck_assert_uint_eq(stats_of(broker).pending, 0);
	broker_free(broker);
}
END_TEST

START_TEST(test_publish_fans_out_one_shared_payload)
{
	enum { SUBSCRIBERS = 5 };
	struct broker *broker = new_broker(0, 0);
	char ids[SUBSCRIBERS][BROKER_ID_LENGTH + 1];
	struct broker_batch batches[SUBSCRIBERS];
	struct broker_message *message = broker_message_new(NULL, 0, S("shared payload"));

	for (int i = 0; i < SUBSCRIBERS; i++)
		subscribe(broker, "news", ids[i]);
	ck_assert_int_eq(broker_publish(broker, S("news"), message), BROKER_OK);
	ck_assert_uint_eq(refcount_of(message), 1 + SUBSCRIBERS);
	ck_assert_uint_eq(stats_of(broker).pending, SUBSCRIBERS);
	ck_assert_uint_eq(stats_of(broker).pending_bytes, SUBSCRIBERS * message->length);

	for (int i = 0; i < SUBSCRIBERS; i++) {
		ck_assert_int_eq(fetch(broker, "news", ids[i], &batches[i]), BROKER_OK);
		ck_assert_uint_eq(batches[i].count, 1);
		ck_assert_ptr_eq(batches[i].messages[0], message);  /* not a copy */
	}
	ck_assert_uint_eq(refcount_of(message), 1 + SUBSCRIBERS);  /* now held by batches */
	for (int i = 0; i < SUBSCRIBERS; i++)
		broker_batch_release(&batches[i]);
	ck_assert_uint_eq(refcount_of(message), 1);
	ck_assert_uint_eq(stats_of(broker).delivered, SUBSCRIBERS);
	broker_message_release(message);
	broker_free(broker);
}
END_TEST

START_TEST(test_fetch_returns_messages_oldest_first)
{
	enum { COUNT = 1000 };
	struct broker *broker = new_broker(0, 0);
	char id[BROKER_ID_LENGTH + 1], text[32];
	struct broker_batch batch;
	int out_of_order = 0;

	subscribe(broker, "seq", id);
	for (int round = 0; round < 3; round++) {
		for (int i = 0; i < COUNT; i++) {
			snprintf(text, sizeof(text), "%d", i);
			ck_assert_int_eq(publish(broker, "seq", text), BROKER_OK);
		}
		ck_assert_int_eq(fetch(broker, "seq", id, &batch), BROKER_OK);
		ck_assert_uint_eq(batch.count, COUNT);
		for (int i = 0; i < COUNT; i++) {
			snprintf(text, sizeof(text), "%d", i);
			out_of_order += strcmp(batch.messages[i]->data, text) != 0;
		}
		ck_assert_int_eq(out_of_order, 0);
		broker_batch_release(&batch);
	}
	broker_free(broker);
}
END_TEST

START_TEST(test_fetch_of_empty_queue_gives_empty_batch)
{
	struct broker *broker = new_broker(0, 0);
	char id[BROKER_ID_LENGTH + 1];
	struct broker_batch batch = { .messages = (struct broker_message **)&batch, .count = 99 };

	subscribe(broker, "quiet", id);
	ck_assert_int_eq(fetch(broker, "quiet", id, &batch), BROKER_OK);
	ck_assert_uint_eq(batch.count, 0);
	broker_batch_release(&batch);
	broker_batch_release(&batch);  /* releasing twice is harmless */
	ck_assert_uint_eq(stats_of(broker).delivered, 0);
	broker_free(broker);
}
END_TEST

START_TEST(test_fetch_refuses_unknown_foreign_and_malformed_ids)
{
	struct broker *broker = new_broker(0, 0);
	char mine[BROKER_ID_LENGTH + 1], other[BROKER_ID_LENGTH + 1], unknown[UUID_TEXT_LENGTH + 1];
	struct broker_batch batch;

	subscribe(broker, "mine", mine);
	subscribe(broker, "other", other);
	ck_assert_int_eq(publish(broker, "mine", "m"), BROKER_OK);
	ck_assert_int_eq(publish(broker, "other", "o"), BROKER_OK);
	uuid_generate_v4(unknown);

	ck_assert_int_eq(fetch(broker, "mine", unknown, &batch), BROKER_BAD_ID);
	ck_assert_int_eq(fetch(broker, "mine", other, &batch), BROKER_BAD_ID);
	ck_assert_int_eq(fetch(broker, "other", mine, &batch), BROKER_BAD_ID);
	ck_assert_int_eq(fetch(broker, "mine.sub", mine, &batch), BROKER_BAD_ID);
	ck_assert_int_eq(broker_fetch(broker, S("mine"), mine, 35, NULL, &batch), BROKER_BAD_ID);
	ck_assert_int_eq(broker_fetch(broker, S("mine"), "", 0, NULL, &batch), BROKER_BAD_ID);
	ck_assert_int_eq(broker_fetch(broker, S("mine"), "x", 1, NULL, &batch), BROKER_BAD_ID);
	{
		char longer[BROKER_ID_LENGTH + 2];

		memcpy(longer, mine, BROKER_ID_LENGTH);
		longer[BROKER_ID_LENGTH] = '0';
		longer[BROKER_ID_LENGTH + 1] = '\0';
		ck_assert_int_eq(fetch(broker, "mine", longer, &batch), BROKER_BAD_ID);
	}
	ck_assert_uint_eq(batch.count, 0);
	broker_batch_release(&batch);
	/* nothing was taken by the refused fetches */
	ck_assert_uint_eq(stats_of(broker).pending, 2);
	ck_assert_uint_eq(drain(broker, "mine", mine), 1);
	ck_assert_uint_eq(drain(broker, "other", other), 1);
	broker_free(broker);
}
END_TEST

START_TEST(test_payload_with_nul_bytes_round_trips_by_length)
{
	static const char payload[] = "a\0b\0\0c\"\n\\u0000";
	struct broker *broker = new_broker(0, 0);
	struct broker_message *message = broker_message_new(NULL, 0, payload, sizeof(payload));
	char id[BROKER_ID_LENGTH + 1];
	struct broker_batch batch;

	ck_assert_ptr_nonnull(message);
	ck_assert_uint_eq(message->length, sizeof(payload));
	ck_assert_int_eq(message->data[message->length], '\0');
	subscribe(broker, "bin", id);
	ck_assert_int_eq(broker_publish(broker, S("bin"), message), BROKER_OK);
	broker_message_release(message);
	ck_assert_uint_eq(stats_of(broker).pending_bytes, sizeof(payload));

	ck_assert_int_eq(fetch(broker, "bin", id, &batch), BROKER_OK);
	ck_assert_uint_eq(batch.count, 1);
	ck_assert_uint_eq(batch.messages[0]->length, sizeof(payload));
	ck_assert_mem_eq(batch.messages[0]->data, payload, sizeof(payload));
	broker_batch_release(&batch);
	broker_free(broker);
}
END_TEST

START_TEST(test_empty_payload_is_a_message)
{
	struct broker *broker = new_broker(0, 1);
	char id[BROKER_ID_LENGTH + 1];

	subscribe(broker, "e", id);
	ck_assert_int_eq(publish(broker, "e", ""), BROKER_OK);
	ck_assert_int_eq(publish(broker, "e", ""), BROKER_OK);
	ck_assert_uint_eq(drain(broker, "e", id), 2);
	broker_free(broker);
}
END_TEST

/* --- limits ------------------------------------------------------------ */

START_TEST(test_count_limit_refuses_whole_publish_without_room_for_every_copy)
{
	struct broker *broker = new_broker(2, 0);
	char ids[3][BROKER_ID_LENGTH + 1];
	struct broker_message *message = broker_message_new(NULL, 0, S("x"));

	for (int i = 0; i < 3; i++)
		subscribe(broker, "three", ids[i]);
	ck_assert_int_eq(broker_publish(broker, S("three"), message), BROKER_OVERFLOW);
	ck_assert_uint_eq(refcount_of(message), 1);
	ck_assert_uint_eq(stats_of(broker).pending, 0);
	ck_assert_uint_eq(stats_of(broker).overflows, 1);
	ck_assert_uint_eq(stats_of(broker).published, 0);
	for (int i = 0; i < 3; i++)
		ck_assert_uint_eq(drain(broker, "three", ids[i]), 0);
	broker_message_release(message);
	broker_free(broker);
}
END_TEST

START_TEST(test_byte_limit_refuses_whole_publish_without_room_for_every_copy)
{
	struct broker *broker = new_broker(0, 10);
	char ids[3][BROKER_ID_LENGTH + 1];

	for (int i = 0; i < 3; i++)
		subscribe(broker, "three", ids[i]);
	/* 3 x 4 = 12 bytes > 10, though 2 copies (8 bytes) would fit */
	ck_assert_int_eq(publish(broker, "three", "four"), BROKER_OVERFLOW);
	ck_assert_uint_eq(stats_of(broker).pending, 0);
	ck_assert_uint_eq(stats_of(broker).pending_bytes, 0);
	ck_assert_uint_eq(stats_of(broker).overflows, 1);
	for (int i = 0; i < 3; i++)
		ck_assert_uint_eq(drain(broker, "three", ids[i]), 0);
	/* 3 x 3 = 9 bytes fit */
	ck_assert_int_eq(publish(broker, "three", "abc"), BROKER_OK);
	ck_assert_uint_eq(stats_of(broker).pending_bytes, 9);
	ck_assert_int_eq(publish(broker, "three", "a"), BROKER_OVERFLOW);
	broker_free(broker);
}
END_TEST

START_TEST(test_fetch_frees_room_at_once)
{
	struct broker *broker = new_broker(2, 0);
	char a[BROKER_ID_LENGTH + 1], b[BROKER_ID_LENGTH + 1];

	subscribe(broker, "pair", a);
	subscribe(broker, "pair", b);
	ck_assert_int_eq(publish(broker, "pair", "1"), BROKER_OK);
	ck_assert_int_eq(publish(broker, "pair", "2"), BROKER_OVERFLOW);
	ck_assert_uint_eq(drain(broker, "pair", a), 1);
	/* one copy left (b's): still no room for two */
	ck_assert_int_eq(publish(broker, "pair", "2"), BROKER_OVERFLOW);
	ck_assert_uint_eq(drain(broker, "pair", b), 1);
	ck_assert_int_eq(publish(broker, "pair", "2"), BROKER_OK);
	ck_assert_uint_eq(stats_of(broker).overflows, 2);
	broker_free(broker);
}
END_TEST

/* What messages hold is counted from creation until the last reference
 * goes, also while a fetched batch still holds them; the peak stays until
 * it is marked. */
START_TEST(test_message_memory_follows_the_last_reference)
{
	struct broker *broker = new_broker(0, 0);
	struct broker_batch batch;
	char id[BROKER_ID_LENGTH + 1], other[BROKER_ID_LENGTH + 1];
	uint64_t before, held, peak;
	struct broker_message *message;

	broker_message_memory_mark();
	broker_message_memory(&before, &peak);
	ck_assert_uint_eq(peak, before);
	message = broker_message_new(NULL, 0, "0123456789", 10);
	ck_assert_ptr_nonnull(message);
	broker_message_memory(&held, &peak);
	ck_assert_uint_ge(held - before, 10);
	ck_assert_uint_eq(peak, held);
	subscribe(broker, "a", id);
	subscribe(broker, "a", other);
	ck_assert_int_eq(broker_publish(broker, S("a"), message), BROKER_OK);
	broker_message_release(message);
	ck_assert_int_eq(fetch(broker, "a", id, &batch), BROKER_OK);
	ck_assert_uint_eq(drain(broker, "a", other), 1);
	broker_message_memory(&held, &peak);
	ck_assert_uint_ge(held - before, 10);
	broker_batch_release(&batch);
	broker_message_memory(&held, &peak);
	ck_assert_uint_eq(held, before);
	ck_assert_uint_ge(peak - held, 10);
	broker_message_memory_mark();
	broker_message_memory(&held, &peak);
	ck_assert_uint_eq(peak, held);
	broker_free(broker);
}
END_TEST

START_TEST(test_set_limits_applies_to_later_publishes_only)
{
	struct broker *broker = new_broker(0, 0);
	struct broker_limits tight = { .max_pending = 1 }, loose = { .max_pending = 10 };
	char id[BROKER_ID_LENGTH + 1];

	subscribe(broker, "s", id);
	for (int i = 0; i < 5; i++)
		ck_assert_int_eq(publish(broker, "s", "x"), BROKER_OK);
	broker_set_limits(broker, &tight);
	ck_assert_uint_eq(stats_of(broker).pending, 5);  /* kept */
	ck_assert_int_eq(publish(broker, "s", "x"), BROKER_OVERFLOW);
	broker_set_limits(broker, &loose);
	ck_assert_int_eq(publish(broker, "s", "x"), BROKER_OK);
	ck_assert_uint_eq(drain(broker, "s", id), 6);
	broker_free(broker);
}
END_TEST

static int reallocs_before_failure;

static void *failing_realloc(void *pointer, size_t size)
{
	if (reallocs_before_failure-- <= 0)
		return NULL;
	return realloc(pointer, size);
}

START_TEST(test_publish_queues_nothing_when_a_queue_cannot_grow)
{
	struct broker *broker = new_broker(0, 0);
	char ids[3][BROKER_ID_LENGTH + 1];
	struct broker_message *first = broker_message_new(NULL, 0, S("first"));
	struct broker_message *second = broker_message_new(NULL, 0, S("second"));

	for (int i = 0; i < 3; i++)
		subscribe(broker, "grow", ids[i]);
	/* a first message sits inline in each queue; a second one needs rings */
	ck_assert_int_eq(broker_publish(broker, S("grow"), first), BROKER_OK);
	reallocs_before_failure = 2;  /* the third subscriber's ring fails */
	broker_set_realloc(broker, failing_realloc);
	ck_assert_int_eq(broker_publish(broker, S("grow"), second), BROKER_NO_MEMORY);
	broker_set_realloc(broker, NULL);
	ck_assert_uint_eq(refcount_of(first), 4);
	ck_assert_uint_eq(refcount_of(second), 1);
	ck_assert_uint_eq(stats_of(broker).pending, 3);
	ck_assert_uint_eq(stats_of(broker).published, 1);
	for (int i = 0; i < 3; i++) {
		struct broker_batch batch;

		ck_assert_int_eq(fetch(broker, "grow", ids[i], &batch), BROKER_OK);
		ck_assert_uint_eq(batch.count, 1);
		ck_assert_ptr_eq(batch.messages[0], first);
		broker_batch_release(&batch);
	}

	ck_assert_int_eq(broker_publish(broker, S("grow"), second), BROKER_OK);
	ck_assert_int_eq(broker_publish(broker, S("grow"), second), BROKER_OK);
	for (int i = 0; i < 3; i++)
		ck_assert_uint_eq(drain(broker, "grow", ids[i]), 2);
	ck_assert_uint_eq(refcount_of(first), 1);
	ck_assert_uint_eq(refcount_of(second), 1);
	broker_message_release(first);
	broker_message_release(second);
	broker_free(broker);
}
END_TEST

START_TEST(test_fetch_keeps_messages_when_the_batch_cannot_be_allocated)
{
	struct broker *broker = new_broker(0, 0);
	char id[BROKER_ID_LENGTH + 1];
	struct broker_batch batch;

	subscribe(broker, "one", id);
	ck_assert_int_eq(publish(broker, "one", "kept"), BROKER_OK);  /* held inline */
	reallocs_before_failure = 0;
	broker_set_realloc(broker, failing_realloc);
	ck_assert_int_eq(fetch(broker, "one", id, &batch), BROKER_NO_MEMORY);
	ck_assert_uint_eq(batch.count, 0);
	broker_batch_release(&batch);
	broker_set_realloc(broker, NULL);
	ck_assert_uint_eq(stats_of(broker).pending, 1);
	ck_assert_uint_eq(stats_of(broker).delivered, 0);

	ck_assert_int_eq(fetch(broker, "one", id, &batch), BROKER_OK);
	ck_assert_uint_eq(batch.count, 1);
	ck_assert_str_eq(batch.messages[0]->data, "kept");
	broker_batch_release(&batch);
	broker_free(broker);
}
END_TEST

/* --- expiry ------------------------------------------------------------ */

START_TEST(test_expiry_removes_idle_subscribers_and_frees_their_messages)
{
	struct broker *broker = new_broker(0, 0);
	char idle1[BROKER_ID_LENGTH + 1], idle2[BROKER_ID_LENGTH + 1], active[BROKER_ID_LENGTH + 1];
	struct broker_message *message = broker_message_new(NULL, 0, S("payload"));
	struct broker_stats stats;

	subscribe(broker, "topic", idle1);
	subscribe(broker, "topic", idle2);
	subscribe(broker, "topic", active);
	ck_assert_int_eq(broker_publish(broker, S("topic"), message), BROKER_OK);
	ck_assert_int_eq(broker_publish(broker, S("topic"), message), BROKER_OK);
	ck_assert_uint_eq(refcount_of(message), 7);

	fake_now = 1050;
	ck_assert_uint_eq(drain(broker, "topic", active), 2);  /* activity at 1050 */
	ck_assert_int_eq(broker_publish(broker, S("topic"), message), BROKER_OK);

	ck_assert_uint_eq(broker_expire_idle(broker, 1060, 60), 0);  /* 60 s is not older than 60 */
	ck_assert_uint_eq(broker_expire_idle(broker, 1061, 60), 2);
	ck_assert_uint_eq(refcount_of(message), 2);  /* ours + active's pending copy */

	stats = stats_of(broker);
	ck_assert_uint_eq(stats.subscribers, 1);
	ck_assert_uint_eq(stats.subjects, 1);
	ck_assert_uint_eq(stats.expired_subscribers, 2);
	ck_assert_uint_eq(stats.expired_messages, 6);
	ck_assert_uint_eq(stats.pending, 1);
	ck_assert_uint_eq(stats.pending_bytes, message->length);

	{
		struct broker_batch batch;

		ck_assert_int_eq(fetch(broker, "topic", idle1, &batch), BROKER_BAD_ID);
		broker_batch_release(&batch);
	}
	ck_assert_uint_eq(drain(broker, "topic", active), 1);
	broker_message_release(message);
	broker_free(broker);
}
END_TEST

START_TEST(test_expiry_removes_subject_with_its_last_subscriber)
{
	struct broker *broker = new_broker(0, 0);
	char id[BROKER_ID_LENGTH + 1], other[BROKER_ID_LENGTH + 1];

	subscribe(broker, "short.lived", id);
	ck_assert_int_eq(publish(broker, "short.lived", "x"), BROKER_OK);
	fake_now = 2000;
	subscribe(broker, "long.lived", other);
	ck_assert_uint_eq(broker_expire_idle(broker, 1500, 10), 1);
	ck_assert_uint_eq(stats_of(broker).subjects, 1);
	ck_assert_uint_eq(stats_of(broker).pending, 0);
	ck_assert_int_eq(publish(broker, "short.lived", "x"), BROKER_NO_SUBSCRIBER);
	/* the subject comes back with a new subscriber */
	subscribe(broker, "short.lived", id);
	ck_assert_int_eq(publish(broker, "short.lived", "x"), BROKER_OK);
	broker_free(broker);
}
END_TEST

START_TEST(test_expiry_with_ttl_zero_or_clock_behind_expires_nothing)
{
	struct broker *broker = new_broker(0, 0);
	char id[BROKER_ID_LENGTH + 1];

	subscribe(broker, "s", id);
	ck_assert_uint_eq(broker_expire_idle(broker, UINT64_MAX, 0), 0);
	ck_assert_uint_eq(broker_expire_idle(broker, 10, 1), 0);  /* before the stamp */
	ck_assert_uint_eq(stats_of(broker).subscribers, 1);
	broker_free(broker);
}
END_TEST

START_TEST(test_expiry_of_many_subscribers_removes_exactly_the_idle_ones)
{
	enum { COUNT = 3000 };
	struct broker *broker = new_broker(0, 0);
	char (*ids)[BROKER_ID_LENGTH + 1] = calloc(COUNT, sizeof(*ids));

	ck_assert_ptr_nonnull(ids);
	for (int i = 0; i < COUNT; i++) {
		char subject[32];

		fake_now = 1000 + (uint64_t)i;
		snprintf(subject, sizeof(subject), "s.%d", i % 700);
		subscribe(broker, subject, ids[i]);
		ck_assert_int_eq(publish(broker, subject, "m"), BROKER_OK);
	}
	/* idle longer than 100 s at 3500: stamps below 3400, i.e. i < 2400 */
	ck_assert_uint_eq(broker_expire_idle(broker, 3500, 100), 2400);
	ck_assert_uint_eq(stats_of(broker).subscribers, COUNT - 2400);
	ck_assert_uint_eq(stats_of(broker).subjects, 600);
	ck_assert_uint_eq(broker_expire_idle(broker, UINT64_MAX, 1), COUNT - 2400);
	ck_assert_uint_eq(stats_of(broker).subjects, 0);
	ck_assert_uint_eq(stats_of(broker).pending, 0);
	ck_assert_uint_eq(stats_of(broker).pending_bytes, 0);
	free(ids);
	broker_free(broker);
}
END_TEST

/* --- stats ------------------------------------------------------------- */

START_TEST(test_stats_count_every_event)
{
	struct broker *broker = new_broker(4, 0);
	char a[BROKER_ID_LENGTH + 1], b[BROKER_ID_LENGTH + 1], c[BROKER_ID_LENGTH + 1];
	struct broker_stats stats;

	stats = stats_of(broker);
	ck_assert_uint_eq(stats.pending + stats.pending_bytes + stats.subscribers + stats.subjects +
	                  stats.published + stats.delivered + stats.overflows +
	                  stats.expired_subscribers + stats.expired_messages, 0);

	subscribe(broker, "x", a);
	subscribe(broker, "x", b);
	subscribe(broker, "y", c);
	ck_assert_int_eq(publish(broker, "x", "12345"), BROKER_OK);    /* 2 copies */
	ck_assert_int_eq(publish(broker, "y", "12"), BROKER_OK);       /* 1 copy */
	ck_assert_int_eq(publish(broker, "x", "1"), BROKER_OVERFLOW);  /* 3 + 2 > 4 */
	ck_assert_int_eq(publish(broker, "z", "1"), BROKER_NO_SUBSCRIBER);
	ck_assert_uint_eq(drain(broker, "x", a), 1);

	stats = stats_of(broker);
	ck_assert_uint_eq(stats.pending, 2);
	ck_assert_uint_eq(stats.pending_bytes, 7);
	ck_assert_uint_eq(stats.subscribers, 3);
	ck_assert_uint_eq(stats.subjects, 2);
	ck_assert_uint_eq(stats.published, 2);
	ck_assert_uint_eq(stats.delivered, 1);
	ck_assert_uint_eq(stats.overflows, 1);

	fake_now = 5000;
	ck_assert_uint_eq(drain(broker, "x", a), 0);
	ck_assert_uint_eq(broker_expire_idle(broker, 5000, 60), 2);  /* b and c */
	stats = stats_of(broker);
	ck_assert_uint_eq(stats.pending, 0);
	ck_assert_uint_eq(stats.pending_bytes, 0);
	ck_assert_uint_eq(stats.subscribers, 1);
	ck_assert_uint_eq(stats.subjects, 1);
	ck_assert_uint_eq(stats.expired_subscribers, 2);
	ck_assert_uint_eq(stats.expired_messages, 2);
	broker_free(broker);
}
END_TEST

START_TEST(test_status_names_are_distinct)
{
	const char *names[] = {
		broker_status_name(BROKER_OK), broker_status_name(BROKER_INVALID_SUBJECT),
		broker_status_name(BROKER_NO_SUBSCRIBER), broker_status_name(BROKER_OVERFLOW),
		broker_status_name(BROKER_BAD_ID), broker_status_name(BROKER_NO_MEMORY),
	};

	for (size_t i = 0; i < 6; i++)
		for (size_t j = i + 1; j < 6; j++)
			ck_assert_str_ne(names[i], names[j]);
}
END_TEST

/* --- concurrency ------------------------------------------------------- */

enum {
	THREAD_PUBLISHERS = 4,
	THREAD_FETCHERS = 3,
	THREAD_SUBSCRIBERS = 6,
	THREAD_MESSAGES = 20000,  /* per publisher */
	THREAD_CHURN = 1000,
};

struct thread_shared {
	struct broker *broker;
	char ids[THREAD_SUBSCRIBERS][BROKER_ID_LENGTH + 1];
	int publishers_done;
	uint64_t delivered[THREAD_FETCHERS];
	int errors;
};

struct thread_arg {
	struct thread_shared *shared;
	int index;
};

static void *thread_publish(void *data)
{
	struct thread_arg *arg = data;

	for (int i = 0; i < THREAD_MESSAGES; i++) {
		char text[32];
		int length = snprintf(text, sizeof(text), "%d:%d", arg->index, i);
		struct broker_message *message = broker_message_new(NULL, 0, text, (size_t)length);

		if (!message || broker_publish(arg->shared->broker, S("load"), message) != BROKER_OK)
			__atomic_add_fetch(&arg->shared->errors, 1, __ATOMIC_RELAXED);
		broker_message_release(message);
	}
	return NULL;
}

/* Fetches the subscribers with index % THREAD_FETCHERS == own index until
 * the publishers are done and nothing is left; checks per-publisher order. */
static void *thread_fetch(void *data)
{
	struct thread_arg *arg = data;
	struct thread_shared *shared = arg->shared;
	int last_seen[THREAD_SUBSCRIBERS][THREAD_PUBLISHERS];
	bool done = false;

	memset(last_seen, 0xff, sizeof(last_seen));  /* -1 */
	while (!done) {
		uint64_t round = 0;

		done = __atomic_load_n(&shared->publishers_done, __ATOMIC_ACQUIRE);
		for (int s = arg->index; s < THREAD_SUBSCRIBERS; s += THREAD_FETCHERS) {
			struct broker_batch batch;

			if (broker_fetch(shared->broker, S("load"), shared->ids[s], BROKER_ID_LENGTH,
			                 NULL, &batch) != BROKER_OK) {
				__atomic_add_fetch(&shared->errors, 1, __ATOMIC_RELAXED);
				continue;
			}
			for (size_t m = 0; m < batch.count; m++) {
				int publisher, sequence;

				if (sscanf(batch.messages[m]->data, "%d:%d", &publisher, &sequence) != 2 ||
				    publisher < 0 || publisher >= THREAD_PUBLISHERS ||
				    sequence <= last_seen[s][publisher])
					__atomic_add_fetch(&shared->errors, 1, __ATOMIC_RELAXED);
				else
					last_seen[s][publisher] = sequence;
			}
			round += batch.count;
			broker_batch_release(&batch);
		}
		shared->delivered[arg->index] += round;
		if (round > 0)
			done = false;  /* drain until a round after the end finds nothing */
	}
	return NULL;
}

/* Subscribes, publishes and fetches on other subjects meanwhile, so the
 * tables grow under the publishers' feet, and runs expiry passes. */
static void *thread_churn(void *data)
{
	struct thread_shared *shared = data;

	for (int i = 0; i < THREAD_CHURN; i++) {
		char subject[32], id[BROKER_ID_LENGTH + 1];
		struct broker_batch batch;
		int length = snprintf(subject, sizeof(subject), "churn.%d", i);
		struct broker_message *message = broker_message_new(NULL, 0, S("c"));

		if (!message ||
		    broker_subscribe(shared->broker, subject, (size_t)length, NULL, id) != BROKER_OK ||
		    broker_publish(shared->broker, subject, (size_t)length, message) != BROKER_OK ||
		    broker_fetch(shared->broker, subject, (size_t)length, id, BROKER_ID_LENGTH,
		                 NULL, &batch) != BROKER_OK || batch.count != 1)
			__atomic_add_fetch(&shared->errors, 1, __ATOMIC_RELAXED);
		broker_batch_release(&batch);
		broker_message_release(message);
		/* walks the activity list under the lock; nobody is idle yet */
		if (broker_expire_idle(shared->broker, 1000, 1) != 0)
			__atomic_add_fetch(&shared->errors, 1, __ATOMIC_RELAXED);
	}
	return NULL;
}

START_TEST(test_concurrent_publish_and_fetch_keep_exact_totals)
{
	struct thread_shared *shared = calloc(1, sizeof(*shared));
	struct thread_arg publisher_args[THREAD_PUBLISHERS], fetcher_args[THREAD_FETCHERS];
	pthread_t publishers[THREAD_PUBLISHERS], fetchers[THREAD_FETCHERS], churn;
	struct broker_stats stats;
	uint64_t delivered = 0;

	ck_assert_ptr_nonnull(shared);
	shared->broker = new_broker(0, 0);
	for (int s = 0; s < THREAD_SUBSCRIBERS; s++)
		subscribe(shared->broker, "load", shared->ids[s]);

	for (int i = 0; i < THREAD_FETCHERS; i++) {
		fetcher_args[i] = (struct thread_arg){ shared, i };
		ck_assert_int_eq(pthread_create(&fetchers[i], NULL, thread_fetch, &fetcher_args[i]), 0);
	}
	ck_assert_int_eq(pthread_create(&churn, NULL, thread_churn, shared), 0);
	for (int i = 0; i < THREAD_PUBLISHERS; i++) {
		publisher_args[i] = (struct thread_arg){ shared, i };
		ck_assert_int_eq(pthread_create(&publishers[i], NULL, thread_publish, &publisher_args[i]), 0);
	}
	for (int i = 0; i < THREAD_PUBLISHERS; i++)
		pthread_join(publishers[i], NULL);
	__atomic_store_n(&shared->publishers_done, 1, __ATOMIC_RELEASE);
	for (int i = 0; i < THREAD_FETCHERS; i++)
		pthread_join(fetchers[i], NULL);
	pthread_join(churn, NULL);

	ck_assert_int_eq(shared->errors, 0);
	for (int i = 0; i < THREAD_FETCHERS; i++)
		delivered += shared->delivered[i];
	stats = stats_of(shared->broker);
	ck_assert_uint_eq(stats.published, (uint64_t)THREAD_PUBLISHERS * THREAD_MESSAGES + THREAD_CHURN);
	/* every copy of every publish is delivered or still pending */
	ck_assert_uint_eq((stats.published - THREAD_CHURN) * THREAD_SUBSCRIBERS + THREAD_CHURN,
	                  stats.delivered + stats.pending);
	ck_assert_uint_eq(delivered, (uint64_t)THREAD_PUBLISHERS * THREAD_MESSAGES * THREAD_SUBSCRIBERS);
	ck_assert_uint_eq(stats.delivered, delivered + THREAD_CHURN);
	ck_assert_uint_eq(stats.pending, 0);
	ck_assert_uint_eq(stats.pending_bytes, 0);
	ck_assert_uint_eq(stats.subscribers, THREAD_SUBSCRIBERS + THREAD_CHURN);
	ck_assert_uint_eq(stats.subjects, 1 + THREAD_CHURN);

	/* the load subscribers come back later; the churn ones expire */
	fake_now = 2000;
	for (int s = 0; s < THREAD_SUBSCRIBERS; s++)
		ck_assert_uint_eq(drain(shared->broker, "load", shared->ids[s]), 0);
	ck_assert_uint_eq(broker_expire_idle(shared->broker, 1500, 100), THREAD_CHURN);
	stats = stats_of(shared->broker);
	ck_assert_uint_eq(stats.subscribers, THREAD_SUBSCRIBERS);
	ck_assert_uint_eq(stats.subjects, 1);
	ck_assert_uint_eq(stats.expired_subscribers, THREAD_CHURN);
	broker_free(shared->broker);
	free(shared);
}
END_TEST

/* --- main -------------------------------------------------------------- */

static Suite *broker_suite(void)
{
	Suite *suite = suite_create("broker");
	TCase *subjects = tcase_create("subjects");
	TCase *core = tcase_create("core");
	TCase *limits = tcase_create("limits");
	TCase *expiry = tcase_create("expiry");
	TCase *threads = tcase_create("threads");

	tcase_add_test(subjects, test_subject_accepts_tokens_separated_by_single_dots);
	tcase_add_test(subjects, test_subject_rejects_empty);
	tcase_add_test(subjects, test_subject_rejects_space_tab_cr_lf);
	tcase_add_test(subjects, test_subject_rejects_empty_token);
	tcase_add_test(subjects, test_subject_rejects_nul_byte);
	tcase_add_test(subjects, test_subject_length_limit_is_inclusive_and_zero_means_none);
	tcase_add_test(subjects, test_operations_apply_the_subject_length_limit_live);
	tcase_add_test(subjects, test_invalid_subject_is_refused_by_every_operation);
	suite_add_tcase(suite, subjects);

	tcase_add_test(core, test_subscribe_gives_unique_uuid_v4_ids);
	tcase_add_test(core, test_uuid_generate_v4_sets_version_and_variant_bits);
	tcase_add_test(core, test_publish_without_subscriber_is_refused);
	tcase_add_test(core, test_publish_fans_out_one_shared_payload);
	tcase_add_test(core, test_fetch_returns_messages_oldest_first);
	tcase_add_test(core, test_fetch_of_empty_queue_gives_empty_batch);
	tcase_add_test(core, test_fetch_refuses_unknown_foreign_and_malformed_ids);
	tcase_add_test(core, test_payload_with_nul_bytes_round_trips_by_length);
	tcase_add_test(core, test_empty_payload_is_a_message);
	tcase_add_test(core, test_stats_count_every_event);
	tcase_add_test(core, test_status_names_are_distinct);
	suite_add_tcase(suite, core);

	tcase_add_test(limits, test_count_limit_refuses_whole_publish_without_room_for_every_copy);
	tcase_add_test(limits, test_byte_limit_refuses_whole_publish_without_room_for_every_copy);
	tcase_add_test(limits, test_fetch_frees_room_at_once);
	tcase_add_test(limits, test_set_limits_applies_to_later_publishes_only);
	tcase_add_test(core, test_message_memory_follows_the_last_reference);
	tcase_add_test(limits, test_publish_queues_nothing_when_a_queue_cannot_grow);
	tcase_add_test(limits, test_fetch_keeps_messages_when_the_batch_cannot_be_allocated);
	suite_add_tcase(suite, limits);

	tcase_add_test(expiry, test_expiry_removes_idle_subscribers_and_frees_their_messages);
	tcase_add_test(expiry, test_expiry_removes_subject_with_its_last_subscriber);
	tcase_add_test(expiry, test_expiry_with_ttl_zero_or_clock_behind_expires_nothing);
	tcase_add_test(expiry, test_expiry_of_many_subscribers_removes_exactly_the_idle_ones);
	suite_add_tcase(suite, expiry);

	tcase_set_timeout(threads, 120);
	tcase_add_test(threads, test_concurrent_publish_and_fetch_keep_exact_totals);
	suite_add_tcase(suite, threads);

	return suite;
}

int main(void)
{
	SRunner *runner = srunner_create(broker_suite());
	int failed;

	srunner_run_all(runner, CK_VERBOSE);
	failed = srunner_ntests_failed(runner);
	srunner_free(runner);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
