/* broker_fixture.h - what the broker core's unit tests share: argument
 * macros, a test broker on a fake millisecond clock, its stats, and a
 * waiter that counts its wake-ups.  Included by one test file each; every
 * function is static inline so that a file may leave some unused. */
#ifndef GOPHERMQ_TESTS_BROKER_FIXTURE_H
#define GOPHERMQ_TESTS_BROKER_FIXTURE_H

#include <check.h>
#include <stdint.h>
#include <time.h>

#include "broker.h"

#define S(literal) (literal), (sizeof(literal) - 1)
#define ID(id) (id), (size_t)BROKER_ID_LENGTH
/* A list of seqs as two arguments: array, count. */
#define SEQS(...) (const uint64_t[]){ __VA_ARGS__ }, \
	(sizeof((const uint64_t[]){ __VA_ARGS__ }) / sizeof(uint64_t))

typedef char subscriber_id[BROKER_ID_LENGTH + 1];

enum {
	ACK_WAIT = 1000, /* ms: the test brokers' default ack wait */
};

/* The brokers' clock: moved only by advance(). */
static uint64_t fake_ms;

static inline uint64_t fake_clock(void)
{
	return __atomic_load_n(&fake_ms, __ATOMIC_RELAXED);
}

static inline void advance(uint64_t ms)
{
	__atomic_add_fetch(&fake_ms, ms, __ATOMIC_RELAXED);
}

static inline uint64_t real_ms(void)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (uint64_t)now.tv_sec * 1000u + (uint64_t)now.tv_nsec / 1000000u;
}

static inline struct broker_limits test_limits(void)
{
	return (struct broker_limits){ .ack_wait_ms = ACK_WAIT, .max_parked_fetches = 100 };
}

/* A broker on the fake clock, which starts at 1,000,000 ms. */
static inline struct broker *new_broker_with(const struct broker_limits *limits)
{
	struct broker *broker = broker_new(limits);

	ck_assert_ptr_nonnull(broker);
	fake_ms = 1000000;
	broker_set_clock(broker, fake_clock);
	return broker;
}

static inline struct broker *new_broker(void)
{
	struct broker_limits limits = test_limits();

	return new_broker_with(&limits);
}

static inline struct broker_stats stats_of(struct broker *broker)
{
	struct broker_stats stats;

	broker_get_stats(broker, &stats);
	return stats;
}

/* Nothing held, in flight or parked. */
static inline void assert_empty(struct broker *broker)
{
	struct broker_stats stats = stats_of(broker);

	ck_assert_uint_eq(stats.pending, 0);
	ck_assert_uint_eq(stats.pending_bytes, 0);
	ck_assert_uint_eq(stats.in_flight, 0);
	ck_assert_uint_eq(stats.parked, 0);
}

/* A waiter that counts how often the broker woke it. */
struct recorder {
	struct broker_waiter waiter;
	int wakes;
};

static inline void record_wake(struct broker_waiter *waiter)
{
	struct recorder *recorder = waiter->context;

	__atomic_add_fetch(&recorder->wakes, 1, __ATOMIC_RELEASE);
}

static inline int wakes_of(struct recorder *recorder)
{
	return __atomic_load_n(&recorder->wakes, __ATOMIC_ACQUIRE);
}

#endif
