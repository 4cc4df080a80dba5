/* cpus.h - how many CPUs this process may run on.
 *
 * The CPUs in its affinity mask (taskset, systemd's CPUAffinity=, a cpuset),
 * which may be fewer than the machine has online: a pool of "one thread per
 * CPU" sized from the online count would put more busy threads on the
 * allowed CPUs than they can run at once.  Falls back to the online count
 * when the mask cannot be read (more CPUs than a cpu_set_t holds).
 * Needs _GNU_SOURCE (autoconfig.h defines it) for sched_getaffinity. */
#ifndef GOPHERMQ_CPUS_H
#define GOPHERMQ_CPUS_H

#include <sched.h>
#include <unistd.h>

static inline unsigned cpus_usable(void)
{
	cpu_set_t allowed;
	long online;

	if (sched_getaffinity(0, sizeof(allowed), &allowed) == 0) {
		int count = CPU_COUNT(&allowed);

		if (count > 0)
			return (unsigned)count;
	}
	online = sysconf(_SC_NPROCESSORS_ONLN);
	return online > 0 ? (unsigned)online : 1;
}

#endif
