/* fuzz_broker.c - libFuzzer harness: the broker core driven by a byte code,
 * checked step by step against the reference model in fuzz_model.h.
 *
 * Each input starts a fresh broker (max_pending 16, max_pending_bytes 512,
 * subjects of at most 32 bytes, ack_wait_ms 3000, 2 held fetches) on a
 * fake millisecond clock at 1000 s and runs up to 256 operations.  An
 * operation is one opcode byte (modulo 20) and its arguments, read from
 * the input; a missing argument byte reads as 0:
 *   0 subscribe   subject (no options)
 *   1 publish     subject, data
 *   2 fetch       subscriber index, variant (0-3: right subject and id;
 *                 4: another subject; 5: id one byte short; 6: id with a
 *                 flipped character; 7: an id nobody has); no options
 *   3 clock       advance by a byte of seconds (timers not run: the next
 *                 fetch runs them)
 *   4 expire      ttl byte (0 = never)
 *   5 limits      max_pending byte % 32, max_pending_bytes 2 bytes,
 *                 max_subject_length byte % 48 (0 = unlimited), ack_wait_ms
 *                 byte (a table), fetch_max_batch byte % 4 (0 = no cap),
 *                 max_parked_fetches byte % 4
 *   6 publish     like 1, with allocations failing after n (byte % 4)
 *                 successful ones: all or nothing must hold
 *   7 validate    subject, max_length byte: broker_subject_valid against
 *                 the model's rule
 *   8 publish     like 1 but the same payload many times (byte % 64 + 1),
 *                 to grow and wrap the rings
 *   9 subscribe   with options: subject, flags byte (1 ack, 2 group, 4
 *                 ack_wait_ms, 8 max_deliver, 16 dead_letter, 32 join the
 *                 group of subscriber <next byte> with its options, 64 then
 *                 change one of them (next byte) so that they differ),
 *                 group name byte, ack_wait_ms byte, max_deliver byte,
 *                 dead_letter subject
 *  10 fetch       with options: subscriber index, max byte % 5 (0 = none),
 *                 max_bytes byte (< 128: none, else byte - 127), flags
 *                 byte (1 peek, 2 allocations fail after <next byte % 6>,
 *                 4 give the batch back, 8 with allocations failing after
 *                 <next byte % 4>, 16 keep the batch in one of 4 slots
 *                 instead, as a reply being sent)
 *  11 settle      subscriber index, kind byte % 3 (ack, nack, extend),
 *                 variant byte % 8 (0-5 right; 6 flipped id; 7 another
 *                 subject), seq count byte % 5, each seq a byte (< 0xc0:
 *                 one the subscriber has in flight; < 0xf0: any message's;
 *                 else byte - 0xf0), nack delay byte (< 128: 0, else
 *                 (byte - 127) * 7 ms)
 *  12 timers      advance the clock by 2 bytes % 4096 ms, broker_run_timers
 *                 (its answer, the ms to the next deadline, is checked)
 *  13 unsubscribe subscriber index, variant byte % 4 (0-1 right; 2 flipped
 *                 id; 3 another subject)
 *  14 batch       message count byte % 5 + 1, then per message subject and
 *                 data; allocation budget byte (>= 0xf0: none, else % 4)
 *  15 group name  length byte % 70 and bytes: broker_group_valid against
 *                 the model's rule
 *  16 held batch  slot byte % 4, action byte (1 give back, else release;
 *                 2 with allocations failing after <next byte % 4>)
 *  17 fetch wait  broker_fetch_wait() into held-fetch slot byte % 3:
 *                 subscriber index, max byte % 9, max_bytes byte, flags
 *                 byte (1 peek), wait_ms (byte % 8) * 100; a held fetch is
 *                 answered later by what serves it (publish, batch, nack,
 *                 timers, give-back, a member leaving), its wait running
 *                 out (timers), unsubscribe (bad id) or broker_wake_all()
 *  18 wake all    broker_wake_all(): held fetches answered, none held after
 *  19 cancel      broker_waiter_cancel() of held-fetch slot byte % 3 (its
 *                 client went away): taken back, no wake(), nothing taken
 * A subject is one byte: below 0xf0 it picks one of a table of valid and
 * invalid subjects; otherwise the next byte is a length and that many input
 * bytes follow.  Data is a length byte and that many bytes.
 *
 * After every operation broker_get_stats() must equal the model's
 * counters (pending and pending bytes count every copy held, in flight and
 * delayed ones too), and the held fetches the broker answered (wake()) must
 * be those the model answered, with the same status and batch.  At the end the clock jumps past every deadline, the
 * timers run, every subscriber fetches and acks everything, each batch
 * must equal the model's, nothing may be left pending, and the broker is
 * freed (LeakSanitizer reports anything left).  When the model cannot
 * predict the broker (fuzz_model.h: same-instant dead letters) the input
 * runs on unchecked.
 */
#include "autoconfig.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"
#include "fuzz_model.h"

#define MAX_OPERATIONS 256
#define START_MS (1000u * 1000u)
/* Past every deadline the broker may hold (ack wait, nack delay, retry). */
#define DRAIN_JUMP_MS (2u * BROKER_ACK_WAIT_MAX_MS + 1000u)

struct reader {
	const uint8_t *data;
	size_t size, position;
};

static uint64_t fake_now_ms;
static bool verbose;         /* FUZZ_VERBOSE=1: print every operation */
static int realloc_budget;   /* < 0: never fail */
static struct model *current_model;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *input, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	verbose = getenv("FUZZ_VERBOSE") != NULL;
	return 0;
}

#define TRACE(...) do { if (verbose) fprintf(stderr, __VA_ARGS__); } while (0)

/* A check that holds while the model can predict the broker. */
#define EXPECT(condition, ...) FUZZ_CHECK(current_model->uncertain || (condition), __VA_ARGS__)

static uint64_t fake_clock(void)
{
	return fake_now_ms;
}

static void *failing_realloc(void *pointer, size_t size)
{
	if (realloc_budget == 0)
		return NULL;
	if (realloc_budget > 0)
		realloc_budget--;
	return realloc(pointer, size);
}

static bool fetches_held(void);

/* Makes the broker's allocations fail after budget more (< 0: never).  Not
 * while a fetch is held: serving it may then fail, and it waits on
 * (contract enough, but not what the model predicts). */
static void allocations_fail_after(struct broker *broker, int budget)
{
	if (budget < 0 || fetches_held())
		return;
	realloc_budget = budget;
	broker_set_realloc(broker, failing_realloc);
}

static void allocations_restore(struct broker *broker)
{
	broker_set_realloc(broker, NULL);
	realloc_budget = -1;
}

static uint8_t read_byte(struct reader *reader)
{
	return reader->position < reader->size ? reader->data[reader->position++] : 0;
}

/* Up to length bytes, fewer at the end of the input. */
static const char *read_bytes(struct reader *reader, size_t *length)
{
	const char *bytes = (const char *)reader->data + reader->position;
	size_t available = reader->size - reader->position;

	if (*length > available)
		*length = available;
	reader->position += *length;
	return bytes;
}

static const char *read_subject(struct reader *reader, size_t *length)
{
	static const struct { const char *text; size_t length; } table[] = {
		{ "a", 1 }, { "a.b", 3 }, { "b", 1 }, { "a.b.c", 5 }, { "x.y", 3 },
		{ "orders.eu-west.1", 16 }, { "", 0 }, { "a..b", 4 }, { ".a", 2 }, { "a.", 2 },
		{ ".", 1 }, { "a b", 3 }, { "a\tb", 3 }, { "a\rb", 3 }, { "a\nb", 3 }, { "a\0b", 3 },
		{ "\xc3\xa9t\xc3\xa9", 6 }, { "0123456789.0123456789.0123456789", 32 },
		{ "0123456789.0123456789.0123456789x", 33 }, { "A", 1 }, { "a.B", 3 },
		{ "dl", 2 }, { "a.*", 3 }, { "a.>", 3 }, { ">", 1 }, { "*.b", 3 }, { "a.*.c", 5 },
		{ "*", 1 }, { "a.>.b", 5 }, { "a*.b>", 5 },
	};
	uint8_t choice = read_byte(reader);

	if (choice >= 0xf0) {
		*length = read_byte(reader);
		return read_bytes(reader, length);
	}
	choice %= sizeof(table) / sizeof(table[0]);
	*length = table[choice].length;
	return table[choice].text;
}

static const char *read_data(struct reader *reader, size_t *length)
{
	*length = read_byte(reader);
	return read_bytes(reader, length);
}

/* A live or gone subscriber, by an index byte; MODEL_NONE when there is
 * none yet. */
static size_t read_subscriber(struct model *model, struct reader *reader)
{
	uint8_t index = read_byte(reader);

	return model->count == 0 ? MODEL_NONE : index % model->count;
}

static void trace_batch(const char *what, size_t subscriber, enum broker_status status,
                        const struct broker_batch *batch)
{
	if (!verbose)
		return;
	fprintf(stderr, "t=%llu %s #%zu -> %s", (unsigned long long)fake_now_ms, what, subscriber,
	        broker_status_name(status));
	for (size_t i = 0; status == BROKER_OK && i < batch->count; i++)
		fprintf(stderr, " %llu/%u", (unsigned long long)batch->messages[i]->seq,
		        batch->attempts ? (unsigned)batch->attempts[i] : 1u);
	fputc('\n', stderr);
}

static void check_status(enum broker_status got, enum broker_status want, const char *what)
{
	EXPECT(got == want, "%s returned %s, expected %s", what, broker_status_name(got), broker_status_name(want));
}

static uint64_t now_seconds(void)
{
	return fake_now_ms / 1000u;
}

static void op_subscribe(struct broker *broker, struct model *model, struct reader *reader)
{
	char id[BROKER_ID_LENGTH + 1];
	size_t length;
	const char *subject = read_subject(reader, &length);
	enum broker_status want = model_subscribe_status(model, subject, length, NULL);
	enum broker_status status;

	memset(id, 'Z', sizeof(id));
	status = broker_subscribe(broker, subject, length, NULL, id);
	TRACE("subscribe \"%.*s\" -> %s #%zu\n", (int)length, subject, broker_status_name(status), model->count);
	check_status(status, want, "subscribe");
	if (status == BROKER_OK) {
		FUZZ_CHECK(id[BROKER_ID_LENGTH] == '\0' && strlen(id) == BROKER_ID_LENGTH, "id not terminated");
		model_subscribe(model, subject, length, NULL, id, now_seconds());
	}
}

static void op_subscribe_options(struct broker *broker, struct model *model, struct reader *reader)
{
	static const char *const groups[] = { "g", "h", "G-1", "w_2" };
	static const uint64_t waits[] = { 0, 1, 5, 100, 1000, 3000, 30000, BROKER_ACK_WAIT_MAX_MS };
	char id[BROKER_ID_LENGTH + 1];
	struct broker_subscription options = { 0 };
	size_t length, dead_letter_length;
	const char *subject = read_subject(reader, &length);
	uint8_t flags = read_byte(reader);
	uint8_t group = read_byte(reader), wait = read_byte(reader), max_deliver = read_byte(reader);
	const char *dead_letter = read_subject(reader, &dead_letter_length);
	enum broker_status want, status;

	options.ack = flags & 1;
	if (flags & 2) {
		options.group = groups[group % 4];
		options.group_length = strlen(options.group);
	}
	if (flags & 4)
		options.ack_wait_ms = waits[wait % 8];
	if (flags & 8)
		options.max_deliver = max_deliver % 4;
	if (flags & 32) {
		/* Join an existing group with its own options. */
		size_t member = read_subscriber(model, reader);
		const struct model_queue *queue = member != MODEL_NONE ? model_queue_of(model, member) : NULL;

		if (queue != NULL && queue->group_length > 0) {
			subject = queue->subject;
			length = queue->subject_length;
			options.group = queue->group;
			options.group_length = queue->group_length;
			options.ack = queue->ack;
			options.ack_wait_ms = (flags & 4) ? queue->ack_wait_ms : 0;
			options.max_deliver = queue->max_deliver;
			dead_letter = queue->dead_letter;
			dead_letter_length = queue->dead_letter_length;
			flags |= 16;
		}
		if (flags & 64) {
			switch (read_byte(reader) % 4) {
			case 0: options.ack = !options.ack; break;
			case 1: options.ack_wait_ms++; break;
			case 2: options.max_deliver++; break;
			default: dead_letter_length = 0; break;
			}
		}
	}
	/* The caller validates dead_letter (broker.h): a valid subject, not
	 * the subscription's own, and only with max_deliver. */
	if ((flags & 16) && options.max_deliver > 0 && dead_letter_length > 0 &&
	    model_subject_valid(dead_letter, dead_letter_length, 0) &&
	    !model_bytes_equal(dead_letter, dead_letter_length, subject, length)) {
		options.dead_letter = dead_letter;
		options.dead_letter_length = dead_letter_length;
	}

	want = model_subscribe_status(model, subject, length, &options);
	memset(id, 'Z', sizeof(id));
	status = broker_subscribe(broker, subject, length, &options, id);
	TRACE("subscribe \"%.*s\" group %.*s ack %d wait %llu max_deliver %u dead_letter \"%.*s\" -> %s #%zu\n",
	      (int)length, subject, (int)options.group_length, options.group ? options.group : "", options.ack,
	      (unsigned long long)options.ack_wait_ms, (unsigned)options.max_deliver, (int)options.dead_letter_length,
	      options.dead_letter ? options.dead_letter : "", broker_status_name(status), model->count);
	check_status(status, want, "subscribe with options");
	if (status == BROKER_OK) {
		FUZZ_CHECK(id[BROKER_ID_LENGTH] == '\0' && strlen(id) == BROKER_ID_LENGTH, "id not terminated");
		model_subscribe(model, subject, length, &options, id, now_seconds());
	}
}

static void op_publish(struct broker *broker, struct model *model, struct reader *reader,
                       int budget, unsigned repeat)
{
	size_t subject_length, length;
	const char *subject = read_subject(reader, &subject_length);
	const char *data = read_data(reader, &length);

	/* A message is published once (it takes a seq): a new one each time. */
	for (unsigned i = 0; i < repeat; i++) {
		struct broker_message *message = broker_message_new(NULL, 0, data, length);
		enum broker_status want = model_publish_status(model, subject, subject_length, length);
		enum broker_status got;

		FUZZ_CHECK(message != NULL, "broker_message_new failed");
		FUZZ_CHECK(message->length == length && message->data[length] == '\0' && message->seq == 0,
		           "message header wrong");
		allocations_fail_after(broker, budget);
		got = broker_publish(broker, subject, subject_length, message);
		allocations_restore(broker);
		TRACE("publish \"%.*s\" %zu bytes (budget %d) -> %s seq %llu\n", (int)subject_length, subject, length,
		      budget, broker_status_name(got), (unsigned long long)message->seq);
		/* A failed ring growth may turn success into BROKER_NO_MEMORY,
		 * and then nothing may have been queued anywhere. */
		if (!(budget >= 0 && want == BROKER_OK && got == BROKER_NO_MEMORY))
			check_status(got, want, "publish");
		if (got == BROKER_OK) {
			EXPECT(message->seq == model->stats.last_seq + 1, "publish gave seq %llu, expected %llu",
			       (unsigned long long)message->seq, (unsigned long long)model->stats.last_seq + 1);
		} else {
			EXPECT(message->seq == 0, "refused publish gave seq %llu", (unsigned long long)message->seq);
		}
		model_publish_apply(model, subject, subject_length, data, length, got);
		/* One reference is ours, one per copy the broker holds, one per
		 * held fetch it answered with the message. */
		if (got == BROKER_OK)
			EXPECT(message->refcount == 1 + model_references(model, model->message_count - 1),
			       "message refcount %u, expected %llu", (unsigned)message->refcount,
			       (unsigned long long)(1 + model_references(model, model->message_count - 1)));
		else
			EXPECT(message->refcount == 1, "refused message refcount %u", (unsigned)message->refcount);
		broker_message_release(message);
		model_check_stats(model, broker);
	}
}

static void op_batch(struct broker *broker, struct model *model, struct reader *reader)
{
	struct broker_publish_item items[5];
	struct model_item model_items[5];
	size_t count = read_byte(reader) % 5 + 1, failed = SIZE_MAX, want_index;
	int budget;
	enum broker_status want, got;

	for (size_t i = 0; i < count; i++) {
		model_items[i].subject = read_subject(reader, &model_items[i].subject_length);
		model_items[i].data = read_data(reader, &model_items[i].length);
		items[i].subject = model_items[i].subject;
		items[i].subject_length = model_items[i].subject_length;
		items[i].message = broker_message_new(NULL, 0, model_items[i].data, model_items[i].length);
		FUZZ_CHECK(items[i].message != NULL, "broker_message_new failed");
	}
	budget = read_byte(reader);
	budget = budget >= 0xf0 ? -1 : budget % 4;
	want = model_batch_status(model, model_items, count, &want_index);
	allocations_fail_after(broker, budget);
	got = broker_publish_batch(broker, items, count, &failed);
	allocations_restore(broker);
	TRACE("batch of %zu (budget %d) -> %s at %zu, seqs from %llu\n", count, budget, broker_status_name(got), failed,
	      (unsigned long long)items[0].message->seq);
	if (budget >= 0 && got == BROKER_NO_MEMORY && want != BROKER_INVALID_SUBJECT) {
		/* Nothing stored, nothing counted. */
		want = BROKER_NO_MEMORY;
	} else {
		check_status(got, want, "batch publish");
		if (got != BROKER_OK)
			EXPECT(failed == want_index, "batch publish failed at %zu, expected %zu (%s)", failed,
			       want_index, broker_status_name(got));
	}
	for (size_t i = 0; i < count; i++) {
		EXPECT(got != BROKER_OK || items[i].message->seq == model->stats.last_seq + 1 + i,
		       "batch message %zu has seq %llu, expected %llu", i, (unsigned long long)items[i].message->seq,
		       (unsigned long long)(model->stats.last_seq + 1 + i));
		EXPECT(got == BROKER_OK || items[i].message->seq == 0, "refused batch message %zu got seq %llu", i,
		       (unsigned long long)items[i].message->seq);
	}
	model_batch_apply(model, model_items, count, want);
	for (size_t i = 0; i < count; i++) {
		/* See op_publish. */
		uint64_t references = got == BROKER_OK ? model_references(model, model->message_count - count + i) : 0;

		EXPECT(items[i].message->refcount == 1 + references, "batch message %zu refcount %u, expected %llu", i,
		       (unsigned)items[i].message->refcount, (unsigned long long)(1 + references));
		broker_message_release(items[i].message);
	}
}

static void run_timers(struct broker *broker, struct model *model);

static void op_fetch(struct broker *broker, struct model *model, struct reader *reader)
{
	char id[BROKER_ID_LENGTH + 1];
	const char *subject;
	size_t subject_length, id_length = BROKER_ID_LENGTH, subscriber = read_subscriber(model, reader);
	struct broker_batch batch;
	enum broker_status status, want;
	uint8_t variant = read_byte(reader) % 8;
	const struct model_queue *queue;

	if (subscriber == MODEL_NONE)
		return;
	queue = model_queue_of(model, subscriber);
	subject = queue->subject;
	subject_length = queue->subject_length;
	memcpy(id, model->subscribers[subscriber].id, sizeof(id));
	switch (variant) {
	case 4:
		subject = read_subject(reader, &subject_length);
		break;
	case 5:
		id_length--;
		break;
	case 6:
		id[read_byte(reader) % BROKER_ID_LENGTH] ^= 0x01;
		break;
	case 7:
		memcpy(id, "00000000-0000-4000-8000-000000000000", sizeof(id));
		break;
	default:
		break;
	}
	want = model_lookup_status(model, subject, subject_length, id, id_length);
	memset(&batch, 0x5a, sizeof(batch));
	status = broker_fetch(broker, subject, subject_length, id, id_length, NULL, &batch);
	trace_batch("fetch", subscriber, status, &batch);
	check_status(status, want, "fetch");
	if (want == BROKER_OK) {
		struct model_take take;

		model_fetch(model, subscriber, NULL, fake_now_ms, &take);
		if (status == BROKER_OK)
			model_check_batch(model, &take, &batch);
		model_take_free(&take);
	}
	if (status != BROKER_OK)
		FUZZ_CHECK(batch.messages == NULL && batch.count == 0, "failed fetch left a batch");
	broker_batch_release(&batch);
}

/* Runs the timers on both sides and compares what they say is next. */
static void run_timers(struct broker *broker, struct model *model)
{
	uint64_t got = broker_run_timers(broker);
	uint64_t want = model_run_timers(model, fake_now_ms);

	TRACE("t=%llu timers -> next in %llu%s\n", (unsigned long long)fake_now_ms, (unsigned long long)got,
	      model->uncertain ? " (model uncertain)" : "");
	EXPECT(got == want, "broker_run_timers: next deadline in %llu ms, expected %llu", (unsigned long long)got,
	       (unsigned long long)want);
}

/* Batches fetched and not yet given back or released. */
#define HELD_SLOTS 4
struct held {
	bool used;
	struct broker_batch batch;
	struct model_take take;
};
static struct held held[HELD_SLOTS];
static unsigned held_next;

static void held_release(struct held *slot)
{
	if (!slot->used)
		return;
	broker_batch_release(&slot->batch);
	model_take_free(&slot->take);
	slot->used = false;
}

/* Gives a batch back (its reply could not be sent), with allocations
 * failing after budget (< 0: never), on both sides; frees take. */
static void give_back(struct broker *broker, struct model *model, struct broker_batch *batch,
                      struct model_take *take, int budget)
{
	allocations_fail_after(broker, budget);
	broker_batch_give_back(broker, model->subscribers[take->subscriber].id, BROKER_ID_LENGTH, batch);
	allocations_restore(broker);
	FUZZ_CHECK(batch->count == 0 && batch->messages == NULL, "give-back left a batch");
	model_give_back(model, take);
	if (budget >= 0 && take->ack) {
		/* A copy that could not be queued again is retried 100 ms
		 * later; past that, both outcomes are the same. */
		fake_now_ms += 100;
		model->now_ms = fake_now_ms;
		run_timers(broker, model);
	}
	model_take_free(take);
}

static void op_fetch_options(struct broker *broker, struct model *model, struct reader *reader)
{
	size_t subscriber = read_subscriber(model, reader);
	struct broker_fetch_options asked = { 0 };
	const struct broker_fetch_options *options = &asked;
	uint8_t max = read_byte(reader) % 5, max_bytes = read_byte(reader), flags = read_byte(reader);
	int budget = (flags & 2) ? read_byte(reader) % 6 : -1;
	int give_back_budget = (flags & 8) ? read_byte(reader) % 4 : -1;
	const struct model_queue *queue;
	const struct model_subscriber *who;
	struct broker_batch batch;
	struct model_take take;
	enum broker_status status, want;

	if (subscriber == MODEL_NONE)
		return;
	asked.max = max;
	asked.max_bytes = max_bytes < 128 ? 0 : max_bytes - 127u;
	asked.peek = flags & 1;
	who = &model->subscribers[subscriber];
	queue = &model->queues[who->queue];
	want = model_lookup_status(model, queue->subject, queue->subject_length, who->id, BROKER_ID_LENGTH);
	if (budget >= 0) {
		/* Nothing due, so that a failing allocation meets the fetch
		 * alone, never a redelivery. */
		run_timers(broker, model);
		model_check_stats(model, broker);
	}
	memset(&batch, 0x5a, sizeof(batch));
	allocations_fail_after(broker, budget);
	status = broker_fetch(broker, queue->subject, queue->subject_length, who->id, BROKER_ID_LENGTH, options, &batch);
	allocations_restore(broker);
	TRACE("fetch max %zu max_bytes %zu peek %d budget %d give back %d (budget %d):\n", options->max,
	      options->max_bytes, options->peek, budget, (flags & 4) != 0, give_back_budget);
	trace_batch("  fetch", subscriber, status, &batch);
	if (want != BROKER_OK) {
		check_status(status, want, "fetch with options");
		FUZZ_CHECK(batch.messages == NULL && batch.count == 0, "failed fetch left a batch");
		return;
	}
	if (budget >= 0 && status == BROKER_NO_MEMORY) {
		/* Nothing taken; the fetch still counts as activity. */
		FUZZ_CHECK(batch.messages == NULL && batch.count == 0, "failed fetch left a batch");
		model_touch(model, subscriber, fake_now_ms);
		return;
	}
	check_status(status, BROKER_OK, "fetch with options");
	model_fetch(model, subscriber, options, fake_now_ms, &take);
	model_check_batch(model, &take, &batch);
	if (flags & 16) {
		/* Kept, as a reply being sent is: given back or released
		 * later (op 16), after other fetches perhaps. */
		struct held *slot = &held[held_next++ % HELD_SLOTS];

		held_release(slot);
		slot->used = true;
		slot->batch = batch;
		slot->take = take;
		return;
	}
	if (!(flags & 4)) {
		broker_batch_release(&batch);
		model_take_free(&take);
		return;
	}
	/* The reply could not be sent: back to the queue, as if never
	 * fetched.  (The subscriber is the one that fetched.) */
	model_check_stats(model, broker);
	give_back(broker, model, &batch, &take, give_back_budget);
}

/* Held fetches: a broker_waiter per model waiter slot. */
struct slot {
	struct broker_waiter waiter;
	bool parked;                 /* broker_fetch_wait() said BROKER_PARKED */
	unsigned wakes;
};
static struct slot slots[MODEL_WAITERS];

static bool fetches_held(void)
{
	for (size_t i = 0; i < MODEL_WAITERS; i++)
		if (slots[i].parked)
			return true;
	return false;
}

static void on_wake(struct broker_waiter *waiter)
{
	((struct slot *)waiter->context)->wakes++;
}

static void model_waiter_clear(struct model_waiter *waiter)
{
	model_take_free(&waiter->take);
	memset(waiter, 0, sizeof(*waiter));
}

/* After every operation: the fetches the broker answered are those the
 * model answered, with the same status and batch. */
static void check_waiters(struct model *model)
{
	for (size_t i = 0; i < MODEL_WAITERS; i++) {
		struct slot *slot = &slots[i];
		struct model_waiter *waiter = &model->waiters[i];

		if (!slot->parked) {
			EXPECT(!waiter->parked && !waiter->completed, "held fetch %zu: model holds it", i);
			if (model->uncertain)
				model_waiter_clear(waiter);
			continue;
		}
		FUZZ_CHECK(slot->wakes <= 1, "held fetch %zu woken %u times", i, slot->wakes);
		if (slot->wakes == 0) {
			EXPECT(waiter->parked, "held fetch %zu: still held, expected an answer (%s, %zu messages)", i,
			       broker_status_name(waiter->status), waiter->take.count);
			continue;
		}
		TRACE("held fetch %zu of #%zu answered: ", i, waiter->subscriber);
		trace_batch("", i, slot->waiter.status, &slot->waiter.batch);
		EXPECT(waiter->completed, "held fetch %zu answered (%s, %zu messages), expected it still held", i,
		       broker_status_name(slot->waiter.status), slot->waiter.batch.count);
		check_status(slot->waiter.status, waiter->status, "held fetch");
		if (slot->waiter.status == BROKER_OK)
			model_check_batch(model, &waiter->take, &slot->waiter.batch);
		else
			FUZZ_CHECK(slot->waiter.batch.count == 0, "held fetch answered %s with messages",
			           broker_status_name(slot->waiter.status));
		broker_batch_release(&slot->waiter.batch);
		slot->parked = false;
		model_waiter_clear(waiter);
	}
}

static void op_fetch_wait(struct broker *broker, struct model *model, struct reader *reader)
{
	size_t index = read_byte(reader) % MODEL_WAITERS;
	size_t subscriber = read_subscriber(model, reader);
	struct broker_fetch_options asked = { 0 };
	const struct broker_fetch_options *options = &asked;
	uint8_t max = read_byte(reader) % 9, max_bytes = read_byte(reader), flags = read_byte(reader);
	uint64_t wait_ms = (read_byte(reader) % 8) * 100u;
	struct slot *slot = &slots[index];
	const struct model_queue *queue;
	const struct model_subscriber *who;
	enum broker_status want, status;
	bool parked;

	if (subscriber == MODEL_NONE || slot->parked)
		return;
	asked.max = max;
	asked.max_bytes = max_bytes < 128 ? 0 : max_bytes - 127u;
	asked.peek = flags & 1;
	who = &model->subscribers[subscriber];
	queue = &model->queues[who->queue];
	want = model_lookup_status(model, queue->subject, queue->subject_length, who->id, BROKER_ID_LENGTH);
	memset(&slot->waiter, 0, sizeof(slot->waiter));
	slot->waiter.wake = on_wake;
	slot->waiter.context = slot;
	slot->wakes = 0;
	status = broker_fetch_wait(broker, queue->subject, queue->subject_length, who->id, BROKER_ID_LENGTH, options,
	                           wait_ms, &slot->waiter);
	TRACE("t=%llu fetch #%zu wait %llu max %zu max_bytes %zu peek %d into slot %zu -> %s\n",
	      (unsigned long long)fake_now_ms, subscriber, (unsigned long long)wait_ms, options->max,
	      options->max_bytes, options->peek, index, broker_status_name(status));
	if (want != BROKER_OK) {
		check_status(status, want, "fetch with wait_ms");
		FUZZ_CHECK(slot->waiter.batch.count == 0, "failed fetch left a batch");
		return;
	}
	if (model->uncertain)
		model_waiter_clear(&model->waiters[index]);
	parked = model_fetch_wait(model, subscriber, options, wait_ms, fake_now_ms, index);
	FUZZ_CHECK(slot->wakes == 0, "held fetch woken before broker_fetch_wait returned");
	if (status == BROKER_PARKED) {
		EXPECT(parked, "fetch with wait_ms held, expected an answer at once");
		slot->parked = true;
		return;
	}
	check_status(status, BROKER_OK, "fetch with wait_ms");
	EXPECT(!parked, "fetch with wait_ms answered at once, expected it held");
	trace_batch("  at once", subscriber, status, &slot->waiter.batch);
	if (!parked)
		model_check_batch(model, &model->waiters[index].take, &slot->waiter.batch);
	broker_batch_release(&slot->waiter.batch);
	model_waiter_clear(&model->waiters[index]);
}

/* The client of a held fetch went away: broker_waiter_cancel() takes it
 * back without wake() and without taking anything. */
static void op_cancel(struct broker *broker, struct model *model, struct reader *reader)
{
	size_t index = read_byte(reader) % MODEL_WAITERS;
	struct slot *slot = &slots[index];
	struct model_waiter *waiter = &model->waiters[index];
	bool cancelled;

	if (!slot->parked)
		return;
	cancelled = broker_waiter_cancel(broker, &slot->waiter);
	TRACE("cancel held fetch %zu -> %s\n", index, cancelled ? "taken back" : "answered already");
	FUZZ_CHECK(cancelled == (slot->wakes == 0), "broker_waiter_cancel says %d after %u wake()", cancelled,
	           slot->wakes);
	EXPECT(cancelled == waiter->parked, "broker_waiter_cancel says %d, model holds it: %d", cancelled,
	       waiter->parked);
	if (!cancelled)
		return;   /* check_waiters() takes the answer */
	FUZZ_CHECK(slot->waiter.batch.count == 0 && slot->waiter.batch.messages == NULL,
	           "cancelled held fetch took messages");
	broker_batch_release(&slot->waiter.batch);
	slot->parked = false;
	model_waiter_clear(waiter);
}

static void op_held(struct broker *broker, struct model *model, struct reader *reader)
{
	struct held *slot = &held[read_byte(reader) % HELD_SLOTS];
	uint8_t action = read_byte(reader);
	int budget = (action & 2) ? read_byte(reader) % 4 : -1;

	if (!slot->used)
		return;
	slot->used = false;
	TRACE("held batch of #%zu, %zu messages: %s (budget %d)\n", slot->take.subscriber, slot->take.count,
	      (action & 1) ? "give back" : "release", budget);
	if (action & 1) {
		give_back(broker, model, &slot->batch, &slot->take, budget);
	} else {
		broker_batch_release(&slot->batch);
		model_take_free(&slot->take);
	}
}

static void op_settle(struct broker *broker, struct model *model, struct reader *reader)
{
	static const char *const names[] = { "ack", "nack", "extend" };
	size_t subscriber = read_subscriber(model, reader);
	enum model_settle kind = (enum model_settle)(read_byte(reader) % 3);
	uint8_t variant = read_byte(reader) % 8;
	size_t count = read_byte(reader) % 5, in_flight_count, settled = SIZE_MAX;
	uint64_t seqs[4], *in_flight, delay_ms;
	char id[BROKER_ID_LENGTH + 1];
	const char *subject;
	size_t subject_length;
	enum broker_status want, status;

	if (subscriber == MODEL_NONE)
		return;
	in_flight = model_in_flight(model, subscriber, &in_flight_count);
	for (size_t i = 0; i < count; i++) {
		uint8_t choice = read_byte(reader);

		if (choice < 0xc0 && in_flight_count > 0)
			seqs[i] = in_flight[choice % in_flight_count];
		else if (choice < 0xf0 && model->message_count > 0)
			seqs[i] = model->messages[choice % model->message_count].seq;
		else
			seqs[i] = choice >= 0xf0 ? choice - 0xf0u : choice;
	}
	free(in_flight);
	delay_ms = read_byte(reader);
	delay_ms = delay_ms < 128 ? 0 : (delay_ms - 127) * 7;
	subject = model_queue_of(model, subscriber)->subject;
	subject_length = model_queue_of(model, subscriber)->subject_length;
	memcpy(id, model->subscribers[subscriber].id, sizeof(id));
	if (variant == 6)
		id[read_byte(reader) % BROKER_ID_LENGTH] ^= 0x01;
	else if (variant == 7)
		subject = read_subject(reader, &subject_length);

	want = model_settle_status(model, subject, subject_length, id, BROKER_ID_LENGTH);
	switch (kind) {
	case MODEL_ACK:
		status = broker_ack(broker, subject, subject_length, id, BROKER_ID_LENGTH, seqs, count, &settled);
		break;
	case MODEL_NACK:
		status = broker_nack(broker, subject, subject_length, id, BROKER_ID_LENGTH, seqs, count, delay_ms,
		                     &settled);
		break;
	case MODEL_EXTEND:
	default:
		status = broker_extend(broker, subject, subject_length, id, BROKER_ID_LENGTH, seqs, count, &settled);
		break;
	}
	if (verbose) {
		fprintf(stderr, "t=%llu %s #%zu variant %u delay %llu seqs", (unsigned long long)fake_now_ms,
		        names[kind], subscriber, variant, (unsigned long long)delay_ms);
		for (size_t i = 0; i < count; i++)
			fprintf(stderr, " %llu", (unsigned long long)seqs[i]);
		fprintf(stderr, " -> %s %zu\n", broker_status_name(status), settled);
	}
	check_status(status, want, names[kind]);
	if (want == BROKER_OK) {
		size_t expected = model_settle(model, model_find(model, subject, subject_length, id, BROKER_ID_LENGTH),
		                               kind, seqs, count, delay_ms, fake_now_ms);

		EXPECT(settled == expected, "%s settled %zu of %zu seqs, expected %zu", names[kind], settled, count,
		       expected);
	} else {
		EXPECT(settled == 0, "refused %s settled %zu", names[kind], settled);
	}
}

static void op_timers(struct broker *broker, struct model *model, struct reader *reader)
{
	uint64_t high = read_byte(reader);

	fake_now_ms += (high << 8 | read_byte(reader)) % 4096;
	model->now_ms = fake_now_ms;
	run_timers(broker, model);
}

static void op_unsubscribe(struct broker *broker, struct model *model, struct reader *reader)
{
	size_t subscriber = read_subscriber(model, reader);
	uint8_t variant = read_byte(reader) % 4;
	char id[BROKER_ID_LENGTH + 1];
	const char *subject;
	size_t subject_length;
	enum broker_status want, status;

	if (subscriber == MODEL_NONE)
		return;
	subject = model_queue_of(model, subscriber)->subject;
	subject_length = model_queue_of(model, subscriber)->subject_length;
	memcpy(id, model->subscribers[subscriber].id, sizeof(id));
	if (variant == 2)
		id[read_byte(reader) % BROKER_ID_LENGTH] ^= 0x01;
	else if (variant == 3)
		subject = read_subject(reader, &subject_length);
	want = model_lookup_status(model, subject, subject_length, id, BROKER_ID_LENGTH);
	status = broker_unsubscribe(broker, subject, subject_length, id, BROKER_ID_LENGTH);
	TRACE("unsubscribe #%zu variant %u -> %s\n", subscriber, variant, broker_status_name(status));
	check_status(status, want, "unsubscribe");
	if (want == BROKER_OK)
		model_remove_subscriber(model, model_find(model, subject, subject_length, id, BROKER_ID_LENGTH));
}

static void op_expire(struct broker *broker, struct model *model, struct reader *reader)
{
	uint64_t ttl = read_byte(reader);
	size_t want = model_expire(model, now_seconds(), ttl);
	size_t got = broker_expire_idle(broker, now_seconds(), ttl);

	TRACE("t=%llu expire ttl %llu -> %zu\n", (unsigned long long)fake_now_ms, (unsigned long long)ttl, got);
	EXPECT(got == want, "expired %zu subscribers, expected %zu", got, want);
}

static void op_limits(struct broker *broker, struct model *model, struct reader *reader)
{
	static const uint64_t waits[] = { 1, 10, 1000, 3000 };
	struct broker_limits limits = { 0 };

	limits.max_pending = read_byte(reader) % 32;
	limits.max_pending_bytes = read_byte(reader);
	limits.max_pending_bytes = limits.max_pending_bytes << 8 | read_byte(reader);
	limits.max_subject_length = read_byte(reader) % 48;
	limits.ack_wait_ms = waits[read_byte(reader) % 4];
	limits.fetch_max_batch = read_byte(reader) % 4;
	limits.max_parked_fetches = read_byte(reader) % 4;
	broker_set_limits(broker, &limits);
	model->limits = limits;
	TRACE("limits pending %llu bytes %llu subject %zu ack_wait %llu fetch_max_batch %zu\n",
	      (unsigned long long)limits.max_pending, (unsigned long long)limits.max_pending_bytes,
	      limits.max_subject_length, (unsigned long long)limits.ack_wait_ms, limits.fetch_max_batch);
}

static void op_validate(struct reader *reader)
{
	size_t length;
	const char *subject = read_subject(reader, &length);
	size_t max_length = read_byte(reader) % 40;

	FUZZ_CHECK(broker_subject_valid(subject, length, max_length) ==
	           model_subject_valid(subject, length, max_length),
	           "broker_subject_valid(\"%.*s\", %zu, %zu) disagrees with the contract",
	           (int)length, subject, length, max_length);
}

static void op_group_name(struct reader *reader)
{
	size_t length = read_byte(reader) % 70;
	const char *name = read_bytes(reader, &length);

	FUZZ_CHECK(broker_group_valid(name, length) == model_group_valid(name, length),
	           "broker_group_valid(\"%.*s\", %zu) disagrees with the contract", (int)length, name, length);
}

int LLVMFuzzerTestOneInput(const uint8_t *input, size_t size)
{
	static const struct broker_limits limits = {
		.max_pending = 16,
		.max_pending_bytes = 512,
		.max_subject_length = 32,
		.ack_wait_ms = 3000,
		.max_parked_fetches = 2,
	};
	struct reader reader = { input, size, 0 };
	struct model model;
	struct broker *broker = broker_new(&limits);

	FUZZ_CHECK(broker != NULL, "broker_new failed");
	fake_now_ms = START_MS;
	realloc_budget = -1;
	held_next = 0;
	memset(slots, 0, sizeof(slots));
	broker_set_clock(broker, fake_clock);
	model_init(&model, &limits);
	model.now_ms = fake_now_ms;
	current_model = &model;

	for (unsigned operation = 0; operation < MAX_OPERATIONS && reader.position < reader.size; operation++) {
		model.now_ms = fake_now_ms;
		switch (read_byte(&reader) % 20) {
		case 0:
			op_subscribe(broker, &model, &reader);
			break;
		case 1:
			op_publish(broker, &model, &reader, -1, 1);
			break;
		case 2:
			op_fetch(broker, &model, &reader);
			break;
		case 3:
			fake_now_ms += 1000u * read_byte(&reader);
			TRACE("clock -> %llu\n", (unsigned long long)fake_now_ms);
			break;
		case 4:
			op_expire(broker, &model, &reader);
			break;
		case 5:
			op_limits(broker, &model, &reader);
			break;
		case 6:
			op_publish(broker, &model, &reader, read_byte(&reader) % 4, 1);
			break;
		case 7:
			op_validate(&reader);
			break;
		case 8:
			op_publish(broker, &model, &reader, -1, (unsigned)(read_byte(&reader) % 64) + 1);
			break;
		case 9:
			op_subscribe_options(broker, &model, &reader);
			break;
		case 10:
			op_fetch_options(broker, &model, &reader);
			break;
		case 11:
			op_settle(broker, &model, &reader);
			break;
		case 12:
			op_timers(broker, &model, &reader);
			break;
		case 13:
			op_unsubscribe(broker, &model, &reader);
			break;
		case 14:
			op_batch(broker, &model, &reader);
			break;
		case 15:
			op_group_name(&reader);
			break;
		case 16:
			op_held(broker, &model, &reader);
			break;
		case 17:
			op_fetch_wait(broker, &model, &reader);
			break;
		case 18:
			TRACE("wake all\n");
			broker_wake_all(broker);
			model_wake_all(&model);
			break;
		case 19:
			op_cancel(broker, &model, &reader);
			break;
		}
		check_waiters(&model);
		model_check_stats(&model, broker);
	}

	/* The drain keeps whatever limits the input left: a lowered
	 * max_subject_length must not keep any subscriber from its messages. */
	for (size_t i = 0; i < HELD_SLOTS; i++)
		held_release(&held[i]);
	/* Shutdown: held fetches are answered with what they have. */
	TRACE("end: wake all\n");
	broker_wake_all(broker);
	model_wake_all(&model);
	check_waiters(&model);
	for (size_t i = 0; i < MODEL_WAITERS; i++)
		if (slots[i].parked) {
			broker_batch_release(&slots[i].waiter.batch);
			slots[i].parked = false;
		}
	fake_now_ms += DRAIN_JUMP_MS;
	model.now_ms = fake_now_ms;
	TRACE("drain at t=%llu%s\n", (unsigned long long)fake_now_ms, model.uncertain ? " (model uncertain)" : "");
	model_drain(&model, broker, fake_now_ms);
	broker_free(broker);
	model_free(&model);
	current_model = NULL;
	return 0;
}
