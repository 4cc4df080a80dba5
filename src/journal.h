/* journal.h - the append-only log that makes the broker's state durable.
 *
 * The data directory holds numbered segment files, 0000000000000001.log
 * and up, and a lock file.  A segment is preallocated to its full size
 * (so that a full disk is found when a segment is made, never in the
 * middle of a record) and mapped: appending a record is a copy into the
 * page cache under the journal's lock, so a record survives the process
 * as soon as it is appended, and a power failure once it is synced.
 *
 * Segment layout (integers little-endian):
 *
 *     header  "GMQJRNL\n" | u32 version | u32 flags | u64 segment number
 *     record  u32 length | u32 crc32c | u8 type | payload    (length = 1 + payload)
 *     ...
 *     zeros   (the preallocated rest: a length of 0 ends the segment)
 *
 * The crc covers the type and the payload.  A segment with the BASE flag
 * starts with a snapshot of the whole state: replay begins at the newest
 * base segment and ignores older ones (compaction writes a base segment
 * as NAME.new, syncs it, renames it and syncs the directory, then deletes
 * what it replaces).
 *
 * Record types and payloads (journal.c encodes, replay.c decodes):
 *   SUBSCRIBE    id[36] | u16 subject | u8 group | u8 flags(1 = ack) |
 *                u64 ack_wait_ms | u32 max_deliver | u16 dead_letter |
 *                the three strings
 *   UNSUBSCRIBE  id[36]                        (also idle expiry)
 *   PUBLISH      u64 first seq | u32 count | count x (u16 subject | u32 length |
 *                subject | data)               (one record per batch: all or nothing)
 *   CONSUMED     queue | u32 count | count x u64 seq           (plain fetch)
 *   DELIVERED    queue | u32 count | count x (u64 seq | u32 attempt)  (ack fetch)
 *   SETTLED      queue | u32 count | count x u64 seq    (acked, dead-lettered, dropped)
 *   RETURNED     queue | u32 count | count x copy     (a fetch's reply was not sent)
 *   HOLD         queue | u32 count | count x copy     (snapshot: what a queue holds)
 *   SEQ          u64 last seq                         (snapshot)
 *   PUBLISH_TTL  as PUBLISH, each message u16 subject | u32 length |
 *                u64 deadline | subject | data
 *   RETURNED_TTL, HOLD_TTL  as RETURNED and HOLD, with copy-ttl
 * where queue = u16 length | key: a subscriber id, or "subject\0group\0"
 * for a group's queue; copy = u64 seq | u32 held | u32 length | data, held
 * being the attempts so far, with bit 31 set for an ack queue's delivery;
 * copy-ttl = u64 seq | u32 held | u32 length | u64 deadline | u16 subject |
 * subject | data, the subject the message was published to and its
 * deadline in wall-clock ms since the epoch (0 = never).  This version
 * writes the _TTL forms; the older three are still read (their message's
 * subject is the queue's).
 */
#ifndef GOPHERMQ_JOURNAL_H
#define GOPHERMQ_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JOURNAL_MAGIC "GMQJRNL\n"
#define JOURNAL_VERSION 1u
#define JOURNAL_HEADER_SIZE 24u
#define JOURNAL_RECORD_HEADER_SIZE 9u     /* length, crc, type */
#define JOURNAL_FLAG_BASE 1u

enum journal_record_type {
	JOURNAL_SUBSCRIBE = 1,
	JOURNAL_UNSUBSCRIBE,
	JOURNAL_PUBLISH,
	JOURNAL_CONSUMED,
	JOURNAL_DELIVERED,
	JOURNAL_SETTLED,
	JOURNAL_RETURNED,
	JOURNAL_HOLD,
	JOURNAL_SEQ,
	JOURNAL_PUBLISH_TTL,
	JOURNAL_RETURNED_TTL,
	JOURNAL_HOLD_TTL,
};

enum journal_fsync {
	JOURNAL_FSYNC_NEVER,      /* the kernel writes back: survives a crash of the process */
	JOURNAL_FSYNC_EVERYSEC,   /* synced once a second: at most about a second lost on power failure */
	JOURNAL_FSYNC_ALWAYS,     /* synced before the answer, one sync shared by concurrent requests */
};

/* Upper bounds (seconds) of the sync latency histogram's buckets. */
#define JOURNAL_SYNC_BUCKETS 10
extern const double journal_sync_bounds[JOURNAL_SYNC_BUCKETS];

struct journal_stats {
	uint64_t bytes;             /* the log since the newest base segment */
	uint64_t segments;
	uint64_t syncs;
	uint64_t sync_nanoseconds;  /* summed */
	uint64_t sync_buckets[JOURNAL_SYNC_BUCKETS];   /* not cumulative; + Inf = syncs */
	uint64_t write_errors;      /* records refused: no room, or I/O errors */
	uint64_t compactions;
	uint64_t last_compaction;   /* wall clock, seconds; 0 = never */
	bool failed;                /* refusing records now */
};

struct journal;

/* A request waiting for its records to be synced (fsync = always).  The
 * caller owns the memory and sets done; journal_wait() fills the rest. */
struct journal_waiter {
	void (*done)(struct journal_waiter *waiter, bool synced);
	struct journal_waiter *next;
	uint64_t position;
};

/* CRC-32C (Castagnoli) of length bytes, continuing from crc (0 to start). */
uint32_t journal_crc32c(uint32_t crc, const void *data, size_t length);

/* Takes the data directory: creates it if missing, locks it against a
 * second daemon.  Returns NULL with error filled (a sentence) on failure. */
struct journal *journal_open(const char *directory, uint64_t segment_size,
                             char *error, size_t error_size);

/* Starts appending: a new segment after every existing one, and the
 * thread that syncs.  Returns 0, or -1 with error filled. */
int journal_start(struct journal *journal, enum journal_fsync mode, char *error, size_t error_size);

/* Syncs what was appended, stops the thread, unmaps, unlocks, frees. */
void journal_close(struct journal *journal);

const char *journal_directory(const struct journal *journal);

void journal_set_fsync(struct journal *journal, enum journal_fsync mode);
enum journal_fsync journal_get_fsync(struct journal *journal);

/* --- appending (any thread) --------------------------------------------- */

/* A record being built: journal_begin() reserves room for payload bytes
 * and returns where to write them; journal_commit() seals it with the
 * payload bytes actually written (at most those reserved), or
 * journal_abort() drops it.  Returns NULL when the record cannot be stored
 * (no room on disk, an I/O error): the caller must then refuse the change.
 * Between the two the journal's lock is held: nothing else may be
 * appended. */
void *journal_begin(struct journal *journal, enum journal_record_type type, size_t payload);
void journal_commit(struct journal *journal, size_t payload);
void journal_abort(struct journal *journal);

/* Where the next record will start: every record appended so far is
 * synced once journal_synced() reaches it. */
uint64_t journal_position(struct journal *journal);

/* With fsync = always: when position is synced already returns false;
 * otherwise queues waiter, whose done() the sync thread calls once
 * position is synced (synced = true) or the sync failed (false), and
 * returns true. */
bool journal_wait(struct journal *journal, uint64_t position, struct journal_waiter *waiter);

/* Syncs everything appended so far now.  Returns 0 or -1. */
int journal_sync(struct journal *journal);

/* --- replay and compaction ---------------------------------------------- */

/* Calls record() for every record of the log, from the newest base
 * segment on, in order.  A record() returning -1 stops the replay.  A
 * torn or corrupt tail (nothing valid after it) is cut off and logged; a
 * bad record with valid data after it stops the replay: returns -1 with
 * error naming the file and offset.  progress(), when set, gets the bytes
 * read and the total now and then. */
int journal_replay(struct journal *journal,
                   int (*record)(void *context, enum journal_record_type type,
                                 const unsigned char *payload, size_t length),
                   void (*progress)(void *context, uint64_t done, uint64_t total),
                   void *context, char *error, size_t error_size);

/* Compaction: journal_compact_begin() makes the base segment to come
 * (NAME.new) and switches appends to a fresh segment after it; the caller
 * then appends the snapshot with journal_snapshot_begin/commit, and
 * journal_compact_end() syncs it, renames it into place, syncs the
 * directory and deletes every older segment.  Returns 0, or -1 (the
 * attempt is dropped and the old segments kept).  The snapshot records
 * collect in memory, so that they can be made under the broker's lock;
 * journal_snapshot_flush(), called without that lock, writes them out
 * once there are enough (returns 0, or -1 when writing failed). */
int journal_compact_begin(struct journal *journal);
void *journal_snapshot_begin(struct journal *journal, enum journal_record_type type, size_t payload);
void journal_snapshot_commit(struct journal *journal, size_t payload);
int journal_snapshot_flush(struct journal *journal);
int journal_compact_end(struct journal *journal, bool ok);

/* Bytes in the segments a compaction would replace (the log since the
 * newest base segment), for deciding when to compact. */
uint64_t journal_log_bytes(struct journal *journal);

void journal_get_stats(struct journal *journal, struct journal_stats *stats);

#endif
