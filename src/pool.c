/* pool.c - worker threads serving a bounded FIFO of intrusive jobs.
 *
 * One mutex guards the queue and the worker bookkeeping; workers sleep on
 * work_ready.  Worker i keeps running while i < target_threads, so shrinking
 * the pool retires the highest-numbered workers, which pool_resize() then
 * joins.  Signals are expected to be blocked by the caller before the pool
 * starts, so workers inherit a blocked mask.
 */
#include "autoconfig.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pool.h"

#define POOL_MAX_THREADS 1024

/* Queued jobs per awake worker before another worker is woken. */
#define POOL_JOBS_PER_WORKER 16

struct pool_worker {
	struct pool *pool;
	unsigned index;
	pthread_t thread;
};

struct pool {
	pthread_mutex_t lock;
	pthread_cond_t work_ready;
	struct pool_job *head;
	struct pool_job *tail;
	atomic_size_t depth;
	size_t queue_limit;
	unsigned target_threads;   /* workers with index >= this exit */
	unsigned started_threads;  /* workers [0, started_threads) exist */
	unsigned awake_threads;    /* workers not waiting for work */
	bool stopping;
	struct pool_worker workers[POOL_MAX_THREADS];
};

static void *pool_worker_main(void *argument)
{
	struct pool_worker *worker = argument;
	struct pool *pool = worker->pool;

	pthread_mutex_lock(&pool->lock);
	for (;;) {
		while (pool->head == NULL && !pool->stopping && worker->index < pool->target_threads) {
			pool->awake_threads--;
			pthread_cond_wait(&pool->work_ready, &pool->lock);
			pool->awake_threads++;
		}
		if (worker->index >= pool->target_threads)
			break;
		if (pool->head == NULL)
			break; /* stopping and drained */

		struct pool_job *job = pool->head;
		pool->head = job->next;
		if (pool->head == NULL)
			pool->tail = NULL;
		atomic_fetch_sub_explicit(&pool->depth, 1, memory_order_relaxed);
		pthread_mutex_unlock(&pool->lock);

		job->next = NULL;
		job->run(job);

		pthread_mutex_lock(&pool->lock);
	}
	pool->awake_threads--;
	pthread_mutex_unlock(&pool->lock);
	return NULL;
}

/* Starts workers up to pool->target_threads.  Caller holds no lock; only
 * the owning thread calls this.  Returns 0, or -1 (target lowered to what
 * could be started). */
static int pool_start_workers(struct pool *pool)
{
	for (unsigned i = pool->started_threads; i < pool->target_threads; i++) {
		struct pool_worker *worker = &pool->workers[i];
		int error;

		worker->pool = pool;
		worker->index = i;
		pthread_mutex_lock(&pool->lock);
		pool->awake_threads++;   /* counted until it first waits */
		pthread_mutex_unlock(&pool->lock);
		error = pthread_create(&worker->thread, NULL, pool_worker_main, worker);
		if (error != 0) {
			log_error("cannot start async worker thread: %s", strerror(error));
			pthread_mutex_lock(&pool->lock);
			pool->awake_threads--;
			pool->target_threads = i;
			pthread_mutex_unlock(&pool->lock);
			return -1;
		}
		pool->started_threads = i + 1;
	}
	return 0;
}

/* Joins workers at or above the target; they are on their way out. */
static void pool_join_retired(struct pool *pool)
{
	while (pool->started_threads > pool->target_threads) {
		pool->started_threads--;
		pthread_join(pool->workers[pool->started_threads].thread, NULL);
	}
}

static unsigned pool_clamp_threads(unsigned threads)
{
	if (threads < 1)
		return 1;
	if (threads > POOL_MAX_THREADS)
		return POOL_MAX_THREADS;
	return threads;
}

struct pool *pool_new(unsigned threads, size_t queue_limit)
{
	struct pool *pool = calloc(1, sizeof(*pool));

	if (pool == NULL) {
		log_error("cannot allocate the async pool: %s", strerror(errno));
		return NULL;
	}
	pthread_mutex_init(&pool->lock, NULL);
	pthread_cond_init(&pool->work_ready, NULL);
	atomic_init(&pool->depth, 0);
	pool->queue_limit = queue_limit;
	pool->target_threads = pool_clamp_threads(threads);
	if (pool_start_workers(pool) != 0 && pool->started_threads == 0) {
		pool_free(pool);
		return NULL;
	}
	return pool;
}

int pool_submit(struct pool *pool, struct pool_job *job)
{
	pthread_mutex_lock(&pool->lock);
	if (pool->stopping || atomic_load_explicit(&pool->depth, memory_order_relaxed) >= pool->queue_limit) {
		pthread_mutex_unlock(&pool->lock);
		return -1;
	}
	job->next = NULL;
	if (pool->tail != NULL)
		pool->tail->next = job;
	else
		pool->head = job;
	pool->tail = job;
	size_t depth = atomic_fetch_add_explicit(&pool->depth, 1, memory_order_relaxed) + 1;
	/* A worker that is awake takes queued jobs one after the other
	 * without sleeping, so waking another for every job would only add a
	 * context switch per job.  Wake one when none is awake, or when the
	 * queue grows faster than the awake ones drain it. */
	if (pool->awake_threads == 0 || depth > (size_t)pool->awake_threads * POOL_JOBS_PER_WORKER)
		pthread_cond_signal(&pool->work_ready);
	pthread_mutex_unlock(&pool->lock);
	return 0;
}

int pool_resize(struct pool *pool, unsigned threads, size_t queue_limit)
{
	threads = pool_clamp_threads(threads);

	pthread_mutex_lock(&pool->lock);
	pool->queue_limit = queue_limit;
	pool->target_threads = threads;
	pthread_cond_broadcast(&pool->work_ready);
	pthread_mutex_unlock(&pool->lock);

	pool_join_retired(pool);
	return pool_start_workers(pool);
}

size_t pool_depth(struct pool *pool)
{
	return atomic_load_explicit(&pool->depth, memory_order_relaxed);
}

unsigned pool_threads(struct pool *pool)
{
	unsigned threads;

	pthread_mutex_lock(&pool->lock);
	threads = pool->target_threads;
	pthread_mutex_unlock(&pool->lock);
	return threads;
}

void pool_free(struct pool *pool)
{
	if (pool == NULL)
		return;
	pthread_mutex_lock(&pool->lock);
	pool->stopping = true;
	pthread_cond_broadcast(&pool->work_ready);
	pthread_mutex_unlock(&pool->lock);

	for (unsigned i = 0; i < pool->started_threads; i++)
		pthread_join(pool->workers[i].thread, NULL);

	/* Every worker drained the queue before leaving, but if none could
	 * ever be started, run what is left here so no job is lost. */
	while (pool->head != NULL) {
		struct pool_job *job = pool->head;
		pool->head = job->next;
		job->next = NULL;
		job->run(job);
	}
	pthread_cond_destroy(&pool->work_ready);
	pthread_mutex_destroy(&pool->lock);
	free(pool);
}
