/* Unit tests of the async worker pool. */
#include "autoconfig.h"

#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

#include "pool.h"

struct counting_job {
	struct pool_job job;
	atomic_int *counter;
	int sequence;
	int *order;       /* when set, order[position] = sequence */
	atomic_int *position;
};

static void counting_job_run(struct pool_job *job)
{
	struct counting_job *work = (struct counting_job *)job;

	if (work->order != NULL)
		work->order[atomic_fetch_add(work->position, 1)] = work->sequence;
	atomic_fetch_add(work->counter, 1);
	free(work);
}

static struct pool_job *counting_job_new(atomic_int *counter)
{
	struct counting_job *work = calloc(1, sizeof(*work));

	ck_assert_ptr_nonnull(work);
	work->job.run = counting_job_run;
	work->counter = counter;
	return &work->job;
}

/* A job that blocks its worker until released, to fill the queue. */
struct gate {
	pthread_mutex_t lock;
	pthread_cond_t changed;
	bool open;
	bool entered;
};

struct gate_job {
	struct pool_job job;
	struct gate *gate;
};

static void gate_job_run(struct pool_job *job)
{
	struct gate *gate = ((struct gate_job *)job)->gate;

	pthread_mutex_lock(&gate->lock);
	gate->entered = true;
	pthread_cond_broadcast(&gate->changed);
	while (!gate->open)
		pthread_cond_wait(&gate->changed, &gate->lock);
	pthread_mutex_unlock(&gate->lock);
	free(job);
}

static void gate_init(struct gate *gate)
{
	pthread_mutex_init(&gate->lock, NULL);
	pthread_cond_init(&gate->changed, NULL);
	gate->open = false;
	gate->entered = false;
}

static void gate_submit_and_wait_entered(struct pool *pool, struct gate *gate)
{
	struct gate_job *job = calloc(1, sizeof(*job));

	ck_assert_ptr_nonnull(job);
	job->job.run = gate_job_run;
	job->gate = gate;
	ck_assert_int_eq(pool_submit(pool, &job->job), 0);
	pthread_mutex_lock(&gate->lock);
	while (!gate->entered)
		pthread_cond_wait(&gate->changed, &gate->lock);
	pthread_mutex_unlock(&gate->lock);
}

static void gate_open(struct gate *gate)
{
	pthread_mutex_lock(&gate->lock);
	gate->open = true;
	pthread_cond_broadcast(&gate->changed);
	pthread_mutex_unlock(&gate->lock);
}

START_TEST(test_every_submitted_job_runs_before_free_returns)
{
	atomic_int counter = 0;
	struct pool *pool = pool_new(3, 100000);

	ck_assert_ptr_nonnull(pool);
	for (int i = 0; i < 10000; i++) {
		struct pool_job *job = counting_job_new(&counter);
		while (pool_submit(pool, job) != 0)
			usleep(100);
	}
	pool_free(pool);
	ck_assert_int_eq(atomic_load(&counter), 10000);
}
END_TEST

START_TEST(test_single_worker_runs_jobs_in_submission_order)
{
	atomic_int counter = 0, position = 0;
	int order[100];
	struct pool *pool = pool_new(1, 1000);
	struct gate gate;

	gate_init(&gate);
	gate_submit_and_wait_entered(pool, &gate);
	for (int i = 0; i < 100; i++) {
		struct counting_job *work = (struct counting_job *)counting_job_new(&counter);
		work->sequence = i;
		work->order = order;
		work->position = &position;
		ck_assert_int_eq(pool_submit(pool, &work->job), 0);
	}
	ck_assert_uint_eq(pool_depth(pool), 100);
	gate_open(&gate);
	pool_free(pool);
	for (int i = 0; i < 100; i++)
		ck_assert_int_eq(order[i], i);
}
END_TEST

START_TEST(test_full_queue_refuses_job_and_caller_keeps_it)
{
	atomic_int counter = 0;
	struct pool *pool = pool_new(1, 2);
	struct gate gate;
	struct pool_job *refused;

	gate_init(&gate);
	gate_submit_and_wait_entered(pool, &gate);
	ck_assert_int_eq(pool_submit(pool, counting_job_new(&counter)), 0);
	ck_assert_int_eq(pool_submit(pool, counting_job_new(&counter)), 0);
	refused = counting_job_new(&counter);
	ck_assert_int_eq(pool_submit(pool, refused), -1);
	ck_assert_uint_eq(pool_depth(pool), 2);
	free(refused);
	gate_open(&gate);
	pool_free(pool);
	ck_assert_int_eq(atomic_load(&counter), 2);
}
END_TEST

START_TEST(test_resize_grows_and_shrinks_without_losing_jobs)
{
	atomic_int counter = 0;
	struct pool *pool = pool_new(2, 100000);

	ck_assert_uint_eq(pool_threads(pool), 2);
	for (int round = 0; round < 6; round++) {
		unsigned threads = (round % 2) ? 1 : 8;
		for (int i = 0; i < 1000; i++)
			ck_assert_int_eq(pool_submit(pool, counting_job_new(&counter)), 0);
		ck_assert_int_eq(pool_resize(pool, threads, 100000), 0);
		ck_assert_uint_eq(pool_threads(pool), threads);
	}
	pool_free(pool);
	ck_assert_int_eq(atomic_load(&counter), 6000);
}
END_TEST

START_TEST(test_resize_lowers_the_queue_limit_but_keeps_queued_jobs)
{
	atomic_int counter = 0;
	struct pool *pool = pool_new(1, 10);
	struct gate gate;
	struct pool_job *refused;

	gate_init(&gate);
	gate_submit_and_wait_entered(pool, &gate);
	for (int i = 0; i < 5; i++)
		ck_assert_int_eq(pool_submit(pool, counting_job_new(&counter)), 0);
	ck_assert_int_eq(pool_resize(pool, 1, 2), 0);
	refused = counting_job_new(&counter);
	ck_assert_int_eq(pool_submit(pool, refused), -1);
	free(refused);
	gate_open(&gate);
	pool_free(pool);
	ck_assert_int_eq(atomic_load(&counter), 5);
}
END_TEST

static Suite *pool_suite(void)
{
	Suite *suite = suite_create("pool");
	TCase *core = tcase_create("core");

	tcase_add_test(core, test_every_submitted_job_runs_before_free_returns);
	tcase_add_test(core, test_single_worker_runs_jobs_in_submission_order);
	tcase_add_test(core, test_full_queue_refuses_job_and_caller_keeps_it);
	tcase_add_test(core, test_resize_grows_and_shrinks_without_losing_jobs);
	tcase_add_test(core, test_resize_lowers_the_queue_limit_but_keeps_queued_jobs);
	suite_add_tcase(suite, core);
	return suite;
}

int main(void)
{
	SRunner *runner = srunner_create(pool_suite());
	int failed;

	srunner_run_all(runner, CK_VERBOSE);
	failed = srunner_ntests_failed(runner);
	srunner_free(runner);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
