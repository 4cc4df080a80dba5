/* journal.c - segment files, appending, syncing, replay and the file side
 * of compaction.  The format is described in journal.h.
 *
 * Threads: appends come from the broker (under the broker's lock, then
 * this journal's lock); one sync thread syncs by the fsync mode, closes
 * the segments that appends have left and answers journal_wait()ers.
 * Positions are bytes appended since journal_start(), counted across
 * segments, so "synced up to P" means every record before P.
 */
#include "autoconfig.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "journal.h"
#include "log.h"

#define SEGMENT_NAME_FORMAT "%016llx.log"
#define SEGMENT_NAME_LENGTH 20                /* 16 hex digits and ".log" */
#define RETRY_AFTER_ERROR_MS 500              /* between attempts after a failure */
#define SNAPSHOT_BUFFER (1u << 20)

/* A segment appends have left: the sync thread cuts off its unused
 * preallocated rest, syncs and closes it. */
struct retired {
	struct retired *next;
	int fd;
	uint64_t used;
};

static void retired_finish(struct retired *retired, bool sync, int *result)
{
	if (ftruncate(retired->fd, (off_t)retired->used) != 0 && result)
		*result = -1;
	if (sync && fdatasync(retired->fd) != 0 && result)
		*result = -1;
	close(retired->fd);
	free(retired);
}

struct snapshot {
	int fd;
	uint64_t number;
	unsigned char *buffer;
	size_t capacity;
	size_t used;
	size_t record;            /* start of the record being built */
	bool failed;
};

struct journal {
	pthread_mutex_t lock;
	pthread_cond_t wake;          /* the sync thread: work to do, or stop */
	char *directory;
	int directory_fd;
	int lock_fd;
	uint64_t segment_size;
	enum journal_fsync mode;

	/* The segment appends go to. */
	int fd;
	unsigned char *map;
	uint64_t map_size;
	uint64_t used;                /* bytes of the segment in use */
	uint64_t number;              /* its number; the next is number + 1 */
	uint64_t base_number;         /* the newest base segment, 0 = none */
	bool directory_dirty;         /* a segment was made since the last directory sync */
	struct retired *retired;      /* left segments, still to sync and close */

	uint64_t position;            /* bytes appended */
	uint64_t synced;              /* bytes known to be on disk */
	uint64_t record_start;        /* journal_begin() .. journal_commit() */
	enum journal_record_type record_type;
	struct journal_waiter *waiters, **waiters_tail;
	size_t waiting;               /* waiters in the list */
	size_t gathering;             /* the sync thread waits for this many waiters; 0 = not */
	size_t last_group;            /* waiters the last sync answered */
	uint64_t last_sync_ns;        /* how long it took */

	bool failed;                  /* refusing records until retry_at */
	uint64_t retry_at;            /* monotonic ms */
	struct journal_stats stats;
	uint64_t log_bytes;           /* since the newest base segment */

	struct snapshot *snapshot;    /* a compaction under way */

	pthread_t thread;
	bool running, stop;
};

const double journal_sync_bounds[JOURNAL_SYNC_BUCKETS] = {
	0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1,
};

/* --- CRC-32C ----------------------------------------------------------- */

static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t crc = i;

		for (int bit = 0; bit < 8; bit++)
			crc = crc & 1 ? (crc >> 1) ^ 0x82f63b78u : crc >> 1;
		crc_table[0][i] = crc;
	}
	for (uint32_t i = 0; i < 256; i++)
		for (int t = 1; t < 8; t++)
			crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xff];
}

uint32_t journal_crc32c(uint32_t crc, const void *data, size_t length)
{
	const unsigned char *p = data;

	pthread_once(&crc_once, crc_init);
	crc = ~crc;
	while (length >= 8) {
		uint32_t low = ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
		                (uint32_t)p[3] << 24) ^ crc;
		crc = crc_table[7][low & 0xff] ^ crc_table[6][(low >> 8) & 0xff] ^
		      crc_table[5][(low >> 16) & 0xff] ^ crc_table[4][low >> 24] ^
		      crc_table[3][p[4]] ^ crc_table[2][p[5]] ^ crc_table[1][p[6]] ^ crc_table[0][p[7]];
		p += 8;
		length -= 8;
	}
	while (length-- > 0)
		crc = (crc >> 8) ^ crc_table[0][(crc ^ *p++) & 0xff];
	return ~crc;
}

/* --- little helpers ---------------------------------------------------- */

static void put32(unsigned char *p, uint32_t value)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(value >> (8 * i));
}

static void put64(unsigned char *p, uint64_t value)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(value >> (8 * i));
}

static uint32_t get32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t now_ms(void)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (uint64_t)now.tv_sec * 1000u + (uint64_t)now.tv_nsec / 1000000u;
}

static void segment_name(char name[SEGMENT_NAME_LENGTH + 8], uint64_t number, bool new)
{
	snprintf(name, SEGMENT_NAME_LENGTH + 8, SEGMENT_NAME_FORMAT "%s",
	         (unsigned long long)number, new ? ".new" : "");
}

static void header_write(unsigned char *header, uint32_t flags, uint64_t number)
{
	memcpy(header, JOURNAL_MAGIC, 8);
	put32(header + 8, JOURNAL_VERSION);
	put32(header + 12, flags);
	put64(header + 16, number);
}

/* --- opening ------------------------------------------------------------ */

struct journal *journal_open(const char *directory, uint64_t segment_size,
                             char *error, size_t error_size)
{
	struct journal *journal;
	char pid[32];
	int length;

	if (mkdir(directory, 0750) != 0 && errno != EEXIST) {
		snprintf(error, error_size, "cannot create data directory %s: %s", directory, strerror(errno));
		return NULL;
	}
	journal = calloc(1, sizeof(*journal));
	if (!journal || !(journal->directory = strdup(directory))) {
		free(journal);
		snprintf(error, error_size, "out of memory");
		return NULL;
	}
	journal->fd = journal->lock_fd = -1;
	journal->directory_fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (journal->directory_fd < 0) {
		snprintf(error, error_size, "cannot open data directory %s: %s", directory, strerror(errno));
		goto fail;
	}
	journal->lock_fd = openat(journal->directory_fd, "lock", O_RDWR | O_CREAT | O_CLOEXEC, 0640);
	if (journal->lock_fd < 0) {
		snprintf(error, error_size, "cannot open %s/lock: %s", directory, strerror(errno));
		goto fail;
	}
	if (flock(journal->lock_fd, LOCK_EX | LOCK_NB) != 0) {
		ssize_t got = pread(journal->lock_fd, pid, sizeof(pid) - 1, 0);

		pid[got > 0 ? got : 0] = '\0';
		pid[strcspn(pid, "\n")] = '\0';
		if (errno == EWOULDBLOCK || errno == EAGAIN)
			snprintf(error, error_size, "data directory %s is in use by another gophermqd%s%s",
			         directory, pid[0] ? " (pid " : "", pid[0] ? pid : "");
		else
			snprintf(error, error_size, "cannot lock %s/lock: %s", directory, strerror(errno));
		if (pid[0] && strlen(error) + 2 < error_size)
			strcat(error, ")");
		goto fail;
	}
	length = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
	if (ftruncate(journal->lock_fd, 0) != 0 || pwrite(journal->lock_fd, pid, (size_t)length, 0) != length)
		log_warning("journal: cannot write the pid to %s/lock: %s", directory, strerror(errno));
	pthread_mutex_init(&journal->lock, NULL);
	{
		pthread_condattr_t attributes;

		pthread_condattr_init(&attributes);
		pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC);
		pthread_cond_init(&journal->wake, &attributes);
		pthread_condattr_destroy(&attributes);
	}
	journal->segment_size = segment_size;
	journal->waiters_tail = &journal->waiters;
	return journal;

fail:
	if (journal->lock_fd >= 0)
		close(journal->lock_fd);
	if (journal->directory_fd >= 0)
		close(journal->directory_fd);
	free(journal->directory);
	free(journal);
	return NULL;
}

const char *journal_directory(const struct journal *journal)
{
	return journal->directory;
}

/* --- the segments on disk ----------------------------------------------- */

static int compare_numbers(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* The numbers of the segment files, ascending, in a malloc'ed array.
 * Leftover NAME.new files (a compaction that did not finish) are deleted.
 * Returns the count, or -1. */
static ssize_t segment_list(struct journal *journal, uint64_t **numbers_out)
{
	int fd = dup(journal->directory_fd);
	DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
	uint64_t *numbers = NULL, number;
	size_t count = 0, capacity = 0;
	struct dirent *entry;

	if (!dir) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	rewinddir(dir);
	while ((entry = readdir(dir)) != NULL) {
		size_t length = strlen(entry->d_name);

		if (length < SEGMENT_NAME_LENGTH || strspn(entry->d_name, "0123456789abcdef") != 16)
			continue;
		if (length == SEGMENT_NAME_LENGTH + 4 && strcmp(entry->d_name + 16, ".log.new") == 0) {
			log_notice("journal: deleting %s/%s, left by a compaction that did not finish",
			           journal->directory, entry->d_name);
			unlinkat(journal->directory_fd, entry->d_name, 0);
			continue;
		}
		if (length != SEGMENT_NAME_LENGTH || strcmp(entry->d_name + 16, ".log") != 0)
			continue;
		number = strtoull(entry->d_name, NULL, 16);
		if (count == capacity) {
			uint64_t *grown = realloc(numbers, (capacity = capacity ? 2 * capacity : 16) * sizeof(*numbers));

			if (!grown) {
				free(numbers);
				closedir(dir);
				return -1;
			}
			numbers = grown;
		}
		numbers[count++] = number;
	}
	closedir(dir);
	if (count > 1)
		qsort(numbers, count, sizeof(*numbers), compare_numbers);
	*numbers_out = numbers;
	return (ssize_t)count;
}

/* Makes segment number (preallocated, mapped, header written) and makes
 * it the one appends go to; the old one goes to the sync thread.  At
 * least room bytes of records must fit.  Lock held.  Returns 0 or -1
 * (logged once per failure streak). */
static int segment_create(struct journal *journal, uint64_t room)
{
	char name[SEGMENT_NAME_LENGTH + 8];
	uint64_t number = journal->number + 1, size = journal->segment_size;
	unsigned char *map;
	int fd, error;

	if (size < JOURNAL_HEADER_SIZE + room)
		size = JOURNAL_HEADER_SIZE + room;
	segment_name(name, number, false);
	fd = openat(journal->directory_fd, name, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
	if (fd < 0) {
		error = errno;
		goto fail;
	}
	error = posix_fallocate(fd, 0, (off_t)size);
	if (error != 0) {
		close(fd);
		unlinkat(journal->directory_fd, name, 0);
		goto fail;
	}
	map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED) {
		error = errno;
		close(fd);
		unlinkat(journal->directory_fd, name, 0);
		goto fail;
	}
	header_write(map, 0, number);
	if (journal->map) {
		struct retired *retired = malloc(sizeof(*retired));

		munmap(journal->map, journal->map_size);
		if (retired) {
			retired->fd = journal->fd;
			retired->used = journal->used;
			retired->next = journal->retired;
			journal->retired = retired;
		} else {
			fdatasync(journal->fd);
			close(journal->fd);
		}
	}
	journal->fd = fd;
	journal->map = map;
	journal->map_size = size;
	journal->used = JOURNAL_HEADER_SIZE;
	journal->number = number;
	__atomic_store_n(&journal->position, journal->position + JOURNAL_HEADER_SIZE, __ATOMIC_RELEASE);
	journal->log_bytes += JOURNAL_HEADER_SIZE;
	journal->directory_dirty = true;
	journal->stats.segments++;
	if (journal->failed) {
		log_notice("journal: storing again in %s/%s", journal->directory, name);
		journal->failed = false;
	}
	return 0;

fail:
	journal->stats.write_errors++;
	if (!journal->failed)
		log_error("journal: cannot make segment %s/%s of %llu bytes: %s; "
		          "changes are refused (507) until it can be made",
		          journal->directory, name, (unsigned long long)size, strerror(error));
	journal->failed = true;
	journal->retry_at = now_ms() + RETRY_AFTER_ERROR_MS;
	return -1;
}

/* --- the sync thread ---------------------------------------------------- */

static void waiters_answer(struct journal *journal, bool synced_ok)
{
	struct journal_waiter *done = NULL, **link = &journal->waiters;
	size_t answered = 0;

	while (*link) {
		struct journal_waiter *waiter = *link;

		if (!synced_ok || waiter->position <= journal->synced) {
			*link = waiter->next;
			waiter->next = done;
			done = waiter;
			journal->waiting--;
			answered++;
		} else {
			link = &waiter->next;
		}
	}
	journal->waiters_tail = link;
	journal->last_group = answered;
	pthread_mutex_unlock(&journal->lock);
	while (done) {
		struct journal_waiter *next = done->next;

		done->done(done, synced_ok);
		done = next;
	}
	pthread_mutex_lock(&journal->lock);
}

/* Syncs everything appended before now.  Lock held; released while the
 * disk works.  Returns 0 or -1. */
static int sync_locked(struct journal *journal)
{
	uint64_t target = journal->position, started;
	struct retired *retired = journal->retired;
	bool directory = journal->directory_dirty;
	int fd = journal->fd, result = 0;
	struct timespec begin, end;

	journal->retired = NULL;
	journal->directory_dirty = false;
	pthread_mutex_unlock(&journal->lock);

	clock_gettime(CLOCK_MONOTONIC, &begin);
	while (retired) {
		struct retired *next = retired->next;

		retired_finish(retired, true, &result);
		retired = next;
	}
	if (fd >= 0 && fdatasync(fd) != 0)
		result = -1;
	if (directory && fsync(journal->directory_fd) != 0)
		result = -1;
	clock_gettime(CLOCK_MONOTONIC, &end);
	started = (uint64_t)begin.tv_sec * 1000000000u + (uint64_t)begin.tv_nsec;

	pthread_mutex_lock(&journal->lock);
	{
		uint64_t took = (uint64_t)end.tv_sec * 1000000000u + (uint64_t)end.tv_nsec - started;

		journal->stats.syncs++;
		journal->stats.sync_nanoseconds += took;
		journal->last_sync_ns = took;
		for (size_t i = 0; i < JOURNAL_SYNC_BUCKETS; i++)
			if ((double)took / 1e9 <= journal_sync_bounds[i]) {
				journal->stats.sync_buckets[i]++;
				break;
			}
	}
	if (result == 0) {
		if (target > journal->synced)
			journal->synced = target;
		return 0;
	}
	journal->stats.write_errors++;
	if (!journal->failed)
		log_error("journal: syncing %s failed: %s; changes are refused (507) until a new segment "
		          "can be made and synced", journal->directory, strerror(errno));
	journal->failed = true;
	journal->retry_at = now_ms() + RETRY_AFTER_ERROR_MS;
	return -1;
}

/* Group commit (fsync = always).  While a sync runs the requests that
 * arrive meanwhile wait for the next one; when the last sync answered
 * several, more are on their way, and one sync for all of them costs less
 * than a sync each.  So before syncing wait until as many requests wait
 * as the last sync answered, but no longer than half of its time (and
 * GATHER_MAX_NS): a lone client is synced at once, many share a sync.
 * Lock held. */
#define GATHER_MAX_NS 1000000u

static void gather_locked(struct journal *journal)
{
	struct timespec until;
	uint64_t wait_ns = journal->last_sync_ns / 2;
	size_t wanted = journal->last_group;

	if (wanted < 2 || journal->waiting >= wanted)
		return;
	if (wait_ns > GATHER_MAX_NS)
		wait_ns = GATHER_MAX_NS;
	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_nsec += (long)wait_ns;
	if (until.tv_nsec >= 1000000000) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000;
	}
	journal->gathering = wanted;
	while (journal->waiting < wanted && !journal->stop && journal->mode == JOURNAL_FSYNC_ALWAYS)
		if (pthread_cond_timedwait(&journal->wake, &journal->lock, &until) != 0)
			break;
	journal->gathering = 0;
}

static void *sync_main(void *argument)
{
	struct journal *journal = argument;
	struct sched_param batch = { 0 };
	int error;

	/* Woken by its disk, this thread must not preempt the threads that
	 * serve requests on its CPU: a sync started at once would take only
	 * the requests served so far.  Left to run when they wait, it syncs
	 * all of them at once (group commit again, by the scheduler). */
	error = pthread_setschedparam(pthread_self(), SCHED_BATCH, &batch);
	if (error != 0)
		log_info("journal: the sync thread runs as any other (SCHED_BATCH refused: %s)", strerror(error));
	pthread_mutex_lock(&journal->lock);
	while (!journal->stop) {
		bool due = journal->position > journal->synced || journal->retired;

		if (journal->mode == JOURNAL_FSYNC_ALWAYS && due) {
			gather_locked(journal);
			waiters_answer(journal, sync_locked(journal) == 0);
			continue;
		}
		if (journal->mode == JOURNAL_FSYNC_EVERYSEC && due) {
			struct timespec until;

			clock_gettime(CLOCK_MONOTONIC, &until);
			until.tv_sec += 1;
			pthread_cond_timedwait(&journal->wake, &journal->lock, &until);
			if (journal->mode == JOURNAL_FSYNC_EVERYSEC || journal->stop)
				waiters_answer(journal, sync_locked(journal) == 0);
			continue;
		}
		if (journal->mode == JOURNAL_FSYNC_NEVER && journal->retired) {
			/* The kernel writes them back; only close them. */
			struct retired *retired = journal->retired;

			journal->retired = NULL;
			pthread_mutex_unlock(&journal->lock);
			while (retired) {
				struct retired *next = retired->next;

				retired_finish(retired, false, NULL);
				retired = next;
			}
			pthread_mutex_lock(&journal->lock);
			continue;
		}
		pthread_cond_wait(&journal->wake, &journal->lock);
	}
	sync_locked(journal);
	waiters_answer(journal, journal->position <= journal->synced);
	pthread_mutex_unlock(&journal->lock);
	return NULL;
}

int journal_start(struct journal *journal, enum journal_fsync mode, char *error, size_t error_size)
{
	uint64_t *numbers = NULL;
	ssize_t count = segment_list(journal, &numbers);

	if (count < 0) {
		snprintf(error, error_size, "cannot list data directory %s: %s", journal->directory, strerror(errno));
		return -1;
	}
	journal->number = count > 0 ? numbers[count - 1] : 0;
	journal->stats.segments = (uint64_t)count;
	free(numbers);
	journal->mode = mode;
	pthread_mutex_lock(&journal->lock);
	if (segment_create(journal, 0) != 0) {
		pthread_mutex_unlock(&journal->lock);
		snprintf(error, error_size, "cannot make a segment in data directory %s (see the log)",
		         journal->directory);
		return -1;
	}
	pthread_mutex_unlock(&journal->lock);
	journal->stop = false;
	if (pthread_create(&journal->thread, NULL, sync_main, journal) != 0) {
		snprintf(error, error_size, "cannot start the journal's sync thread");
		return -1;
	}
	journal->running = true;
	return 0;
}

void journal_close(struct journal *journal)
{
	if (!journal)
		return;
	if (journal->running) {
		pthread_mutex_lock(&journal->lock);
		journal->stop = true;
		pthread_cond_signal(&journal->wake);
		pthread_mutex_unlock(&journal->lock);
		pthread_join(journal->thread, NULL);
	} else if (journal->fd >= 0) {
		fdatasync(journal->fd);
	}
	while (journal->retired) {
		struct retired *next = journal->retired->next;

		retired_finish(journal->retired, true, NULL);
		journal->retired = next;
	}
	if (journal->snapshot)
		journal_compact_end(journal, false);
	if (journal->map)
		munmap(journal->map, journal->map_size);
	if (journal->fd >= 0) {
		/* The preallocated rest is not needed by the next start. */
		if (ftruncate(journal->fd, (off_t)journal->used) != 0 || fdatasync(journal->fd) != 0)
			log_warning("journal: cannot trim the last segment: %s", strerror(errno));
		close(journal->fd);
	}
	pthread_cond_destroy(&journal->wake);
	pthread_mutex_destroy(&journal->lock);
	close(journal->lock_fd);
	close(journal->directory_fd);
	free(journal->directory);
	free(journal);
}

void journal_set_fsync(struct journal *journal, enum journal_fsync mode)
{
	pthread_mutex_lock(&journal->lock);
	__atomic_store_n(&journal->mode, mode, __ATOMIC_RELAXED);
	pthread_cond_signal(&journal->wake);
	pthread_mutex_unlock(&journal->lock);
}

enum journal_fsync journal_get_fsync(struct journal *journal)
{
	return __atomic_load_n(&journal->mode, __ATOMIC_RELAXED);
}

/* --- appending ---------------------------------------------------------- */

void *journal_begin(struct journal *journal, enum journal_record_type type, size_t payload)
{
	uint64_t size = JOURNAL_RECORD_HEADER_SIZE + (uint64_t)payload;

	if (payload > UINT32_MAX - 1)
		return NULL;
	pthread_mutex_lock(&journal->lock);
	if (journal->failed || journal->used + size > journal->map_size) {
		if ((journal->failed && now_ms() < journal->retry_at) || segment_create(journal, size) != 0) {
			journal->stats.write_errors += journal->failed ? 0 : 1;
			pthread_mutex_unlock(&journal->lock);
			return NULL;
		}
	}
	journal->record_start = journal->used;
	journal->record_type = type;
	return journal->map + journal->used + JOURNAL_RECORD_HEADER_SIZE;
}

/* Seals the record begun last: type and crc first, its length last of
 * all, so that a record cut short by a crash reads as the end of the log. */
void journal_commit(struct journal *journal, size_t payload)
{
	unsigned char *record = journal->map + journal->record_start;
	bool idle = journal->position == journal->synced;

	record[8] = (unsigned char)journal->record_type;
	put32(record + 4, journal_crc32c(0, record + 8, 1 + payload));
	__atomic_thread_fence(__ATOMIC_RELEASE);
	put32(record, (uint32_t)(1 + payload));
	journal->used += JOURNAL_RECORD_HEADER_SIZE + payload;
	__atomic_store_n(&journal->position, journal->position + JOURNAL_RECORD_HEADER_SIZE + payload,
	                 __ATOMIC_RELEASE);
	journal->log_bytes += JOURNAL_RECORD_HEADER_SIZE + payload;
	if ((journal->mode == JOURNAL_FSYNC_ALWAYS && journal->gathering == 0) ||
	    (journal->mode == JOURNAL_FSYNC_EVERYSEC && idle))
		pthread_cond_signal(&journal->wake);
	pthread_mutex_unlock(&journal->lock);
}

/* Read without the lock: written only under it, and a stale value is
 * one a request of this thread has already passed. */
uint64_t journal_position(struct journal *journal)
{
	return __atomic_load_n(&journal->position, __ATOMIC_ACQUIRE);
}

bool journal_wait(struct journal *journal, uint64_t position, struct journal_waiter *waiter)
{
	pthread_mutex_lock(&journal->lock);
	if (position <= journal->synced) {
		pthread_mutex_unlock(&journal->lock);
		return false;
	}
	waiter->position = position;
	waiter->next = NULL;
	*journal->waiters_tail = waiter;
	journal->waiters_tail = &waiter->next;
	journal->waiting++;
	if (journal->gathering == 0 || journal->waiting >= journal->gathering)
		pthread_cond_signal(&journal->wake);
	pthread_mutex_unlock(&journal->lock);
	return true;
}

int journal_sync(struct journal *journal)
{
	int result;

	pthread_mutex_lock(&journal->lock);
	result = sync_locked(journal);
	pthread_mutex_unlock(&journal->lock);
	return result;
}

uint64_t journal_log_bytes(struct journal *journal)
{
	uint64_t bytes;

	pthread_mutex_lock(&journal->lock);
	bytes = journal->log_bytes;
	pthread_mutex_unlock(&journal->lock);
	return bytes;
}

void journal_get_stats(struct journal *journal, struct journal_stats *stats)
{
	pthread_mutex_lock(&journal->lock);
	*stats = journal->stats;
	stats->bytes = journal->log_bytes;
	stats->failed = journal->failed;
	pthread_mutex_unlock(&journal->lock);
}

/* --- replay ------------------------------------------------------------- */

struct segment_view {
	const unsigned char *data;
	uint64_t size;
	int fd;
	char name[SEGMENT_NAME_LENGTH + 8];
};

static int segment_map(struct journal *journal, uint64_t number, struct segment_view *view,
                       char *error, size_t error_size)
{
	struct stat status;

	segment_name(view->name, number, false);
	view->data = NULL;
	view->size = 0;
	view->fd = openat(journal->directory_fd, view->name, O_RDWR | O_CLOEXEC);
	if (view->fd < 0 || fstat(view->fd, &status) != 0) {
		snprintf(error, error_size, "cannot open %s/%s: %s", journal->directory, view->name, strerror(errno));
		if (view->fd >= 0)
			close(view->fd);
		return -1;
	}
	view->size = (uint64_t)status.st_size;
	if (view->size == 0)
		return 0;
	view->data = mmap(NULL, view->size, PROT_READ, MAP_SHARED, view->fd, 0);
	if (view->data == MAP_FAILED) {
		snprintf(error, error_size, "cannot map %s/%s: %s", journal->directory, view->name, strerror(errno));
		close(view->fd);
		return -1;
	}
	madvise((void *)view->data, view->size, MADV_SEQUENTIAL);
	return 0;
}

static void segment_unmap(struct segment_view *view)
{
	if (view->data)
		munmap((void *)view->data, view->size);
	close(view->fd);
}

/* Whether bytes [from, size) are all zero. */
static bool all_zero(const unsigned char *data, uint64_t from, uint64_t size)
{
	for (uint64_t i = from; i < size; i++)
		if (data[i] != 0)
			return false;
	return true;
}

/* Whether a whole record with a good crc starts anywhere in data from
 * from on: what tells a hole in the log (records after it) from a record
 * a crash stopped between its payload and its length (only its own
 * payload after it).  Rare, so a plain scan. */
static bool record_after(const unsigned char *data, uint64_t from, uint64_t size)
{
	uint64_t end = size;

	while (end > from && data[end - 1] == 0)
		end--;
	for (uint64_t q = from; q + JOURNAL_RECORD_HEADER_SIZE <= size && q < end; q++) {
		uint32_t length = get32(data + q);

		if (length == 0 || q + 8 + (uint64_t)length > size)
			continue;
		if (journal_crc32c(0, data + q + 8, length) == get32(data + q + 4))
			return true;
	}
	return false;
}

/* Reads a segment's header: 1 = a segment of this format (*flags set),
 * 0 = empty or too short to hold a header (made, never written), -1 = not
 * a segment or another version (error filled). */
static int header_read(struct journal *journal, const struct segment_view *view, uint32_t *flags,
                       char *error, size_t error_size)
{
	if (view->size < JOURNAL_HEADER_SIZE || all_zero(view->data, 0, JOURNAL_HEADER_SIZE))
		return 0;
	if (memcmp(view->data, JOURNAL_MAGIC, 8) != 0) {
		snprintf(error, error_size, "%s/%s is not a GopherMQ journal segment (bad magic)",
		         journal->directory, view->name);
		return -1;
	}
	if (get32(view->data + 8) != JOURNAL_VERSION) {
		snprintf(error, error_size, "%s/%s has journal format version %u; this gophermqd reads version %u",
		         journal->directory, view->name, get32(view->data + 8), JOURNAL_VERSION);
		return -1;
	}
	*flags = get32(view->data + 12);
	return 1;
}

int journal_replay(struct journal *journal,
                   int (*record)(void *context, enum journal_record_type type,
                                 const unsigned char *payload, size_t length),
                   void (*progress)(void *context, uint64_t done, uint64_t total),
                   void *context, char *error, size_t error_size)
{
	uint64_t *numbers = NULL, total = 0, done = 0, reported = 0;
	ssize_t count = segment_list(journal, &numbers);
	size_t first = 0;
	int result = 0;

	if (count < 0) {
		snprintf(error, error_size, "cannot list data directory %s: %s", journal->directory, strerror(errno));
		return -1;
	}
	/* The newest base segment, and the bytes from there on. */
	for (ssize_t i = 0; i < count; i++) {
		struct segment_view view;
		uint32_t flags = 0;
		int header;

		if (segment_map(journal, numbers[i], &view, error, error_size) != 0) {
			free(numbers);
			return -1;
		}
		header = header_read(journal, &view, &flags, error, error_size);
		segment_unmap(&view);
		if (header < 0) {
			free(numbers);
			return -1;
		}
		if (header > 0 && (flags & JOURNAL_FLAG_BASE)) {
			first = (size_t)i;
			total = 0;
		}
		total += view.size;
	}
	journal->base_number = count > 0 && first < (size_t)count ? numbers[first] : 0;

	for (size_t i = first; i < (size_t)count && result == 0; i++) {
		struct segment_view view;
		uint64_t offset = JOURNAL_HEADER_SIZE;
		uint32_t flags;
		bool last = i + 1 == (size_t)count, cut = false;
		int header;

		if (segment_map(journal, numbers[i], &view, error, error_size) != 0) {
			result = -1;
			break;
		}
		header = header_read(journal, &view, &flags, error, error_size);
		if (header <= 0) {
			if (header == 0)
				log_warning("journal: %s/%s holds no header (%llu bytes); skipped",
				            journal->directory, view.name, (unsigned long long)view.size);
			else
				result = -1;
			done += view.size;
			segment_unmap(&view);
			continue;
		}
		while (offset + JOURNAL_RECORD_HEADER_SIZE <= view.size) {
			const unsigned char *at = view.data + offset;
			uint32_t length = get32(at);
			uint64_t end = offset + 8 + (uint64_t)length;
			bool torn = end > view.size;

			if (length == 0) {
				/* Zeros to the end: the unused rest of a segment. */
				if (all_zero(view.data, offset, view.size))
					break;
				/* A record whose payload was written and its length
				 * not (killed in between) is a torn tail; a hole with
				 * records after it is damage. */
				torn = true;
				end = record_after(view.data, offset + 1, view.size) ? offset + 8 : view.size;
			}
			if (!torn && journal_crc32c(0, at + 8, length) != get32(at + 4))
				torn = true;
			if (torn) {
				uint64_t after = end > view.size ? view.size : end;

				if (!last || !all_zero(view.data, after, view.size)) {
					snprintf(error, error_size, "%s/%s: corrupt record at offset %llu with data "
					         "after it; the journal cannot be read past it (to start with what "
					         "precedes it, stop, back the directory up, and cut the file there "
					         "with truncate -s %llu and remove the later segments)",
					         journal->directory, view.name, (unsigned long long)offset,
					         (unsigned long long)offset);
					result = -1;
					break;
				}
				log_warning("journal: %s/%s: a torn or corrupt record at offset %llu ends the log; "
				            "%llu bytes dropped", journal->directory, view.name,
				            (unsigned long long)offset, (unsigned long long)(after - offset));
				if (ftruncate(view.fd, (off_t)offset) != 0 || fdatasync(view.fd) != 0)
					log_warning("journal: cannot cut %s/%s at %llu: %s", journal->directory,
					            view.name, (unsigned long long)offset, strerror(errno));
				cut = true;
				break;
			}
			if (record(context, (enum journal_record_type)at[8], at + 9, length - 1) != 0) {
				snprintf(error, error_size, "%s/%s: record at offset %llu cannot be applied",
				         journal->directory, view.name, (unsigned long long)offset);
				result = -1;
				break;
			}
			offset = end;
			if (progress && done + offset - reported > (64u << 20)) {
				reported = done + offset;
				progress(context, reported, total);
			}
		}
		/* A segment left by a crash still has its preallocated rest
		 * (zeros, past the last record): give it back. */
		if (result == 0 && !cut && offset < view.size &&
		    all_zero(view.data, offset, view.size) && ftruncate(view.fd, (off_t)offset) != 0)
			log_warning("journal: cannot trim %s/%s: %s", journal->directory, view.name, strerror(errno));
		journal->log_bytes += offset;
		done += view.size;
		segment_unmap(&view);
	}
	free(numbers);
	if (progress && result == 0)
		progress(context, total, total);
	return result;
}

/* --- compaction --------------------------------------------------------- */

int journal_compact_begin(struct journal *journal)
{
	struct snapshot *snapshot = calloc(1, sizeof(*snapshot));
	char name[SEGMENT_NAME_LENGTH + 8];

	if (!snapshot || !(snapshot->buffer = malloc(SNAPSHOT_BUFFER))) {
		free(snapshot);
		return -1;
	}
	snapshot->capacity = SNAPSHOT_BUFFER;
	pthread_mutex_lock(&journal->lock);
	if (journal->snapshot || journal->failed) {
		pthread_mutex_unlock(&journal->lock);
		free(snapshot->buffer);
		free(snapshot);
		return -1;
	}
	/* The base segment takes the next number; appends move past it. */
	snapshot->number = journal->number + 1;
	segment_name(name, snapshot->number, true);
	snapshot->fd = openat(journal->directory_fd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
	if (snapshot->fd < 0) {
		log_error("journal: cannot make %s/%s: %s", journal->directory, name, strerror(errno));
		goto fail;
	}
	journal->number++;
	if (segment_create(journal, 0) != 0) {
		journal->number--;
		close(snapshot->fd);
		unlinkat(journal->directory_fd, name, 0);
		goto fail;
	}
	/* From here the log since the base counts only what follows it. */
	journal->log_bytes = JOURNAL_HEADER_SIZE;
	header_write(snapshot->buffer, JOURNAL_FLAG_BASE, snapshot->number);
	snapshot->used = JOURNAL_HEADER_SIZE;
	journal->snapshot = snapshot;
	pthread_mutex_unlock(&journal->lock);
	return 0;

fail:
	pthread_mutex_unlock(&journal->lock);
	free(snapshot->buffer);
	free(snapshot);
	return -1;
}

/* Writes the whole buffer out and empties it. */
static int snapshot_flush(struct snapshot *snapshot)
{
	size_t written = 0;

	while (written < snapshot->used) {
		ssize_t n = write(snapshot->fd, snapshot->buffer + written, snapshot->used - written);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			snapshot->failed = true;
			return -1;
		}
		written += (size_t)n;
	}
	snapshot->used = 0;
	return 0;
}

/* Snapshot records are made by the one compacting thread, into a buffer
 * that grows to hold what one hold of the broker's lock puts in it;
 * journal_snapshot_flush() writes it out after the lock is released, so
 * that no publish waits while the kernel takes a megabyte. */
void *journal_snapshot_begin(struct journal *journal, enum journal_record_type type, size_t payload)
{
	struct snapshot *snapshot = journal->snapshot;
	size_t size = JOURNAL_RECORD_HEADER_SIZE + payload;

	if (!snapshot || snapshot->failed || payload > UINT32_MAX - 1)
		return NULL;
	if (size > snapshot->capacity - snapshot->used) {
		size_t capacity = snapshot->capacity * 2 > snapshot->used + size ?
		                  snapshot->capacity * 2 : snapshot->used + size;
		unsigned char *grown = realloc(snapshot->buffer, capacity);

		if (!grown) {
			snapshot->failed = true;
			return NULL;
		}
		snapshot->buffer = grown;
		snapshot->capacity = capacity;
	}
	snapshot->record = snapshot->used;
	snapshot->buffer[snapshot->record + 8] = (unsigned char)type;
	return snapshot->buffer + snapshot->record + JOURNAL_RECORD_HEADER_SIZE;
}

void journal_snapshot_commit(struct journal *journal, size_t payload)
{
	struct snapshot *snapshot = journal->snapshot;
	unsigned char *record = snapshot->buffer + snapshot->record;
	uint32_t length = (uint32_t)(1 + payload);

	put32(record, length);
	put32(record + 4, journal_crc32c(0, record + 8, length));
	snapshot->used = snapshot->record + 8 + length;
}

int journal_snapshot_flush(struct journal *journal)
{
	struct snapshot *snapshot = journal->snapshot;

	if (!snapshot || snapshot->failed)
		return -1;
	if (snapshot->used < SNAPSHOT_BUFFER)
		return 0;
	if (snapshot_flush(snapshot) != 0)
		return -1;
	if (snapshot->capacity > 2 * SNAPSHOT_BUFFER) {
		/* Back to its usual size after a chunk of large messages. */
		unsigned char *shrunk = realloc(snapshot->buffer, SNAPSHOT_BUFFER);

		if (shrunk) {
			snapshot->buffer = shrunk;
			snapshot->capacity = SNAPSHOT_BUFFER;
		}
	}
	return 0;
}

int journal_compact_end(struct journal *journal, bool ok)
{
	struct snapshot *snapshot = journal->snapshot;
	char name[SEGMENT_NAME_LENGTH + 8], final[SEGMENT_NAME_LENGTH + 8];
	uint64_t *numbers = NULL;
	ssize_t count;
	struct stat status;

	if (!snapshot)
		return -1;
	segment_name(name, snapshot->number, true);
	segment_name(final, snapshot->number, false);
	if (ok && !snapshot->failed && snapshot_flush(snapshot) == 0 &&
	    fdatasync(snapshot->fd) == 0 && fstat(snapshot->fd, &status) == 0 &&
	    renameat(journal->directory_fd, name, journal->directory_fd, final) == 0 &&
	    fsync(journal->directory_fd) == 0) {
		close(snapshot->fd);
		count = segment_list(journal, &numbers);
		for (ssize_t i = 0; i < count; i++) {
			if (numbers[i] >= snapshot->number)
				break;
			segment_name(name, numbers[i], false);
			if (unlinkat(journal->directory_fd, name, 0) == 0)
				journal->stats.segments -= journal->stats.segments > 0 ? 1 : 0;
		}
		free(numbers);
		pthread_mutex_lock(&journal->lock);
		journal->base_number = snapshot->number;
		journal->log_bytes += (uint64_t)status.st_size;
		journal->stats.compactions++;
		journal->stats.last_compaction = (uint64_t)time(NULL);
		journal->stats.segments++;
		journal->snapshot = NULL;
		pthread_mutex_unlock(&journal->lock);
		free(snapshot->buffer);
		free(snapshot);
		return 0;
	}
	log_error("journal: compaction into %s/%s failed: %s; the old segments are kept",
	          journal->directory, name, strerror(errno));
	close(snapshot->fd);
	unlinkat(journal->directory_fd, name, 0);
	pthread_mutex_lock(&journal->lock);
	journal->snapshot = NULL;
	pthread_mutex_unlock(&journal->lock);
	free(snapshot->buffer);
	free(snapshot);
	return -1;
}

void journal_abort(struct journal *journal)
{
	pthread_mutex_unlock(&journal->lock);
}
