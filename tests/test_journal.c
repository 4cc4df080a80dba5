/* test_journal.c - unit tests of durability: the journal's files and the
 * broker's records of its changes, replayed into a fresh broker; a
 * journal that cannot store refuses the change and changes nothing;
 * compaction keeps the state.  Each test has a data directory of its own
 * under $TMPDIR. */
#include "autoconfig.h"

#include <check.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "broker.h"
#include "journal.h"

#define S(literal) (literal), (sizeof(literal) - 1)
#define ID(id) (id), (size_t)BROKER_ID_LENGTH

static char directory[256];

static void make_directory(void)
{
	const char *tmp = getenv("TMPDIR");

	snprintf(directory, sizeof(directory), "%s/gophermq-journal-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(directory));
}

static void remove_directory(void)
{
	DIR *dir = opendir(directory);
	struct dirent *entry;
	char path[512];

	while (dir && (entry = readdir(dir)) != NULL) {
		if (entry->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", directory, entry->d_name);
		unlink(path);
	}
	if (dir)
		closedir(dir);
	rmdir(directory);
}

/* A started journal on the test's directory and a broker recording in it. */
static struct broker *open_recording(struct journal **journal_out, uint64_t segment_size)
{
	struct broker_limits limits = { .ack_wait_ms = 60000, .max_parked_fetches = 10 };
	struct broker *broker = broker_new(&limits);
	char error[256];
	struct journal *journal = journal_open(directory, segment_size, error, sizeof(error));

	ck_assert_msg(journal != NULL, "%s", error);
	ck_assert_ptr_nonnull(broker);
	ck_assert_int_eq(broker_replay(broker, journal, NULL, NULL, error, sizeof(error)), 0);
	ck_assert_msg(journal_start(journal, JOURNAL_FSYNC_NEVER, error, sizeof(error)) == 0, "%s", error);
	broker_set_journal(broker, journal);
	*journal_out = journal;
	return broker;
}

static void close_recording(struct broker *broker, struct journal *journal)
{
	broker_free(broker);
	journal_close(journal);
}

static void publish(struct broker *broker, const char *subject, const char *data, enum broker_status expected)
{
	struct broker_message *message = broker_message_new(NULL, 0, data, strlen(data));

	ck_assert_ptr_nonnull(message);
	ck_assert_int_eq(broker_publish(broker, subject, strlen(subject), message), expected);
	broker_message_release(message);
}

/* Fetches up to max (0 = all) and checks the data, joined by spaces. */
static void expect_fetch(struct broker *broker, const char *subject, const char *id, size_t max,
                         const char *expected, uint64_t *seqs)
{
	struct broker_fetch_options options = { .max = max };
	struct broker_batch batch;
	char got[1024] = "";

	ck_assert_int_eq(broker_fetch(broker, subject, strlen(subject), ID(id), &options, &batch), BROKER_OK);
	for (size_t i = 0; i < batch.count; i++) {
		if (i > 0)
			strcat(got, " ");
		strncat(got, batch.messages[i]->data, batch.messages[i]->length);
		if (seqs)
			seqs[i] = batch.messages[i]->seq;
	}
	broker_batch_release(&batch);
	ck_assert_str_eq(got, expected);
}

START_TEST(test_crc32c_known_answer)
{
	/* The check value of CRC-32C (RFC 3720's polynomial). */
	ck_assert_uint_eq(journal_crc32c(0, "123456789", 9), 0xe3069283u);
	ck_assert_uint_eq(journal_crc32c(journal_crc32c(0, "1234", 4), "56789", 5), 0xe3069283u);
	ck_assert_uint_eq(journal_crc32c(0, "", 0), 0);
}
END_TEST

START_TEST(test_replay_rebuilds_subscribers_queues_and_seq)
{
	struct journal *journal;
	struct broker *broker;
	char plain[BROKER_ID_LENGTH + 1], acked[BROKER_ID_LENGTH + 1];
	struct broker_subscription ack = { .ack = true, .max_deliver = 3 };
	struct broker_stats stats;
	uint64_t seqs[8];
	size_t settled;

	make_directory();
	broker = open_recording(&journal, 1 << 20);
	ck_assert_int_eq(broker_subscribe(broker, S("orders"), NULL, plain), BROKER_OK);
	ck_assert_int_eq(broker_subscribe(broker, S("orders"), &ack, acked), BROKER_OK);
	publish(broker, "orders", "a", BROKER_OK);
	publish(broker, "orders", "b", BROKER_OK);
	publish(broker, "orders", "c", BROKER_OK);
	expect_fetch(broker, "orders", plain, 1, "a", NULL);
	expect_fetch(broker, "orders", acked, 2, "a b", seqs);
	ck_assert_int_eq(broker_ack(broker, S("orders"), ID(acked), seqs, 1, &settled), BROKER_OK);
	ck_assert_uint_eq(settled, 1);
	close_recording(broker, journal);

	broker = open_recording(&journal, 1 << 20);
	broker_get_stats(broker, &stats);
	ck_assert_uint_eq(stats.subscribers, 2);
	ck_assert_uint_eq(stats.last_seq, 3);
	ck_assert_uint_eq(stats.pending, 4);          /* b c for each */
	expect_fetch(broker, "orders", plain, 0, "b c", NULL);
	{
		struct broker_fetch_options options = { 0 };
		struct broker_batch batch;

		ck_assert_int_eq(broker_fetch(broker, S("orders"), ID(acked), &options, &batch), BROKER_OK);
		ck_assert_uint_eq(batch.count, 2);
		ck_assert_uint_eq(batch.attempts[0], 2);   /* b was in flight at the restart */
		ck_assert_uint_eq(batch.attempts[1], 1);
		broker_batch_release(&batch);
	}
	publish(broker, "orders", "d", BROKER_OK);
	broker_get_stats(broker, &stats);
	ck_assert_uint_eq(stats.last_seq, 4);
	close_recording(broker, journal);
	remove_directory();
}
END_TEST

START_TEST(test_a_journal_that_cannot_store_refuses_and_changes_nothing)
{
	struct journal *journal;
	struct broker *broker;
	char id[BROKER_ID_LENGTH + 1], other[BROKER_ID_LENGTH + 1];
	struct broker_stats before, after;
	struct rlimit saved, small;
	void (*saved_handler)(int);

	make_directory();
	/* Segments of 64 KiB; the process may not make files larger than
	 * 64 KiB + 100 bytes, so the second segment cannot be made. */
	broker = open_recording(&journal, 65536);
	ck_assert_int_eq(broker_subscribe(broker, S("big"), NULL, id), BROKER_OK);
	ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &saved), 0);
	small = saved;
	small.rlim_cur = 65536 + 100;
	saved_handler = signal(SIGXFSZ, SIG_IGN);
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &small), 0);
	{
		char data[70000];
		struct broker_message *message;

		memset(data, 'x', sizeof(data));
		message = broker_message_new(NULL, 0, data, sizeof(data));
		broker_get_stats(broker, &before);
		ck_assert_int_eq(broker_publish(broker, S("big"), message), BROKER_STORAGE);
		broker_message_release(message);
	}
	/* Failed, the journal refuses every record for a while, even small
	 * ones that would fit: a subscribe is refused too. */
	ck_assert_int_eq(broker_subscribe(broker, S("big"), NULL, other), BROKER_STORAGE);
	broker_get_stats(broker, &after);
	ck_assert_uint_eq(after.subscribers, before.subscribers);
	ck_assert_uint_eq(after.pending, before.pending);
	ck_assert_uint_eq(after.last_seq, before.last_seq);
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &saved), 0);
	signal(SIGXFSZ, saved_handler);
	{
		struct journal_stats stats;

		journal_get_stats(journal, &stats);
		ck_assert_uint_gt(stats.write_errors, 0);
		ck_assert(stats.failed);
	}
	close_recording(broker, journal);
	remove_directory();
}
END_TEST

START_TEST(test_compaction_keeps_the_state_and_drops_old_segments)
{
	struct journal *journal;
	struct broker *broker;
	char plain[BROKER_ID_LENGTH + 1], member[BROKER_ID_LENGTH + 1];
	struct broker_subscription group = { .group = "g", .group_length = 1, .ack = true };
	struct broker_stats stats;
	struct journal_stats journal_stats;
	uint64_t seqs[64];
	char data[32];

	make_directory();
	broker = open_recording(&journal, 65536);
	ck_assert_int_eq(broker_subscribe(broker, S("c"), NULL, plain), BROKER_OK);
	ck_assert_int_eq(broker_subscribe(broker, S("c"), &group, member), BROKER_OK);
	for (int i = 0; i < 3000; i++) {
		snprintf(data, sizeof(data), "m%d", i);
		publish(broker, "c", data, BROKER_OK);
	}
	{
		struct broker_fetch_options options = { .max = 2990 };
		struct broker_batch batch;

		ck_assert_int_eq(broker_fetch(broker, S("c"), ID(plain), &options, &batch), BROKER_OK);
		broker_batch_release(&batch);
		ck_assert_int_eq(broker_fetch(broker, S("c"), ID(member), &options, &batch), BROKER_OK);
		broker_batch_release(&batch);
	}
	/* The group's first 2990 are in flight; ack all but the last 2. */
	for (uint64_t seq = 1; seq <= 2988; seq += 64) {
		size_t count = 0, settled;

		for (uint64_t s = seq; s < seq + 64 && s <= 2988; s++)
			seqs[count++] = s;
		ck_assert_int_eq(broker_ack(broker, S("c"), ID(member), seqs, count, &settled), BROKER_OK);
	}
	ck_assert_int_eq(broker_compact(broker, journal), 0);
	journal_get_stats(journal, &journal_stats);
	ck_assert_uint_eq(journal_stats.compactions, 1);
	publish(broker, "c", "after", BROKER_OK);
	close_recording(broker, journal);

	broker = open_recording(&journal, 65536);
	journal_get_stats(journal, &journal_stats);
	ck_assert_uint_le(journal_stats.segments, 3);
	broker_get_stats(broker, &stats);
	ck_assert_uint_eq(stats.last_seq, 3001);
	expect_fetch(broker, "c", plain, 0, "m2990 m2991 m2992 m2993 m2994 m2995 m2996 m2997 m2998 m2999 after", NULL);
	{
		struct broker_fetch_options options = { .max = 3 };
		struct broker_batch batch;

		ck_assert_int_eq(broker_fetch(broker, S("c"), ID(member), &options, &batch), BROKER_OK);
		ck_assert_uint_eq(batch.count, 3);
		ck_assert_uint_eq(batch.messages[0]->seq, 2989);
		ck_assert_uint_eq(batch.attempts[0], 2);
		ck_assert_uint_eq(batch.messages[2]->seq, 2991);
		ck_assert_uint_eq(batch.attempts[2], 1);
		broker_batch_release(&batch);
	}
	close_recording(broker, journal);
	remove_directory();
}
END_TEST

START_TEST(test_a_second_journal_on_the_same_directory_is_refused)
{
	char error[256];
	struct journal *first, *second;

	make_directory();
	first = journal_open(directory, 65536, error, sizeof(error));
	ck_assert_ptr_nonnull(first);
	second = journal_open(directory, 65536, error, sizeof(error));
	ck_assert_ptr_null(second);
	ck_assert_msg(strstr(error, "is in use by another gophermqd") != NULL, "%s", error);
	journal_close(first);
	remove_directory();
}
END_TEST

static Suite *journal_suite(void)
{
	Suite *suite = suite_create("journal");
	TCase *files = tcase_create("files");
	TCase *replay = tcase_create("replay");

	tcase_add_test(files, test_crc32c_known_answer);
	tcase_add_test(files, test_a_second_journal_on_the_same_directory_is_refused);
	tcase_add_test(replay, test_replay_rebuilds_subscribers_queues_and_seq);
	tcase_add_test(replay, test_a_journal_that_cannot_store_refuses_and_changes_nothing);
	tcase_add_test(replay, test_compaction_keeps_the_state_and_drops_old_segments);
	suite_add_tcase(suite, files);
	suite_add_tcase(suite, replay);
	return suite;
}

int main(void)
{
	SRunner *runner = srunner_create(journal_suite());
	int failed;

	srunner_run_all(runner, CK_VERBOSE);
	failed = srunner_ntests_failed(runner);
	srunner_free(runner);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
