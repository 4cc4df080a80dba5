/* pool.h - a fixed set of worker threads serving a bounded FIFO job queue.
 *
 * Jobs are intrusive: embed a struct pool_job in your own struct and recover
 * it with a cast or container_of in run().  The pool never allocates per job.
 */
#ifndef GOPHERMQ_POOL_H
#define GOPHERMQ_POOL_H

#include <stddef.h>

struct pool_job {
	struct pool_job *next;
	/* Runs on a worker thread and owns the job: it must free it. */
	void (*run)(struct pool_job *job);
};

struct pool;

/* Starts threads workers (at least 1) serving a queue of at most
 * queue_limit waiting jobs.  Returns NULL on failure (logged). */
struct pool *pool_new(unsigned threads, size_t queue_limit);

/* Queues job.  Returns 0, or -1 when the queue is full or the pool is
 * shutting down; then the caller still owns job. */
int pool_submit(struct pool *pool, struct pool_job *job);

/* Changes the number of workers and the queue limit while running.  Queued
 * jobs are kept even when more than the new limit are waiting.  Returns 0,
 * or -1 when new threads could not be started (the pool keeps what it has). */
int pool_resize(struct pool *pool, unsigned threads, size_t queue_limit);

/* Jobs waiting (not yet running). */
size_t pool_depth(struct pool *pool);
unsigned pool_threads(struct pool *pool);

/* Refuses new jobs, runs every queued job to completion, joins the workers
 * and frees the pool. */
void pool_free(struct pool *pool);

#endif
