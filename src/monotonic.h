/* monotonic.h - milliseconds of the monotonic clock, for timeouts and ticks.
 *
 * CLOCK_MONOTONIC_COARSE: the time of the last scheduler tick (1-10 ms
 * behind), read without touching the hardware clock, a fifth of the cost
 * of CLOCK_MONOTONIC here.  Every request stamps its connection's idle
 * time with it; nothing that needs better than a tick may use it. */
#ifndef GOPHERMQ_MONOTONIC_H
#define GOPHERMQ_MONOTONIC_H

#include <stdint.h>
#include <time.h>

static inline uint64_t monotonic_ms(void)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &now);
	return (uint64_t)now.tv_sec * 1000u + (uint64_t)now.tv_nsec / 1000000u;
}

#endif
