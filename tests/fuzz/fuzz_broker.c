/* fuzz_broker.c - libFuzzer harness: the broker core driven by a byte code,
 * checked step by step against the reference model in fuzz_model.h.
 *
 * Each input starts a fresh broker (max_pending 16, max_pending_bytes 512,
 * subjects of at most 32 bytes) on a fake clock at 1000 s and runs up to
 * 256 operations.  An operation is one opcode byte (modulo 9) and its
 * arguments, read from the input; a missing argument byte reads as 0:
 *   0 subscribe   subject
 *   1 publish     subject, data
 *   2 fetch       subscriber index, variant (0-3: right subject and id;
 *                 4: another subject; 5: id one byte short; 6: id with a
 *                 flipped character; 7: an id nobody has)
 *   3 clock       advance by a byte of seconds
 *   4 expire      ttl byte (0 = never)
 *   5 limits      max_pending byte % 32, max_pending_bytes 2 bytes,
 *                 max_subject_length byte % 48 (0 = unlimited)
 *   6 publish     like 1, with ring growth failing after n (byte % 4)
 *                 successful reallocations: all or nothing must hold
 *   7 validate    subject, max_length byte: broker_subject_valid against
 *                 the model's rule
 *   8 publish     like 1 but the same payload many times (byte % 64 + 1),
 *                 to grow and wrap the rings
 * A subject is one byte: below 0xf0 it picks one of a table of valid and
 * invalid subjects; otherwise the next byte is a length and that many input
 * bytes follow.  Data is a length byte and that many bytes.
 *
 * After every operation broker_get_stats() must equal the model's
 * counters; at the end every subscriber is drained, each batch must equal
 * the model's queue byte for byte, and the broker is freed (LeakSanitizer
 * reports anything left).
 */
#include "autoconfig.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "broker.h"
#include "fuzz_model.h"

#define MAX_OPERATIONS 256

struct reader {
	const uint8_t *data;
	size_t size, position;
};

static uint64_t fake_now;
static int realloc_budget;   /* < 0: never fail */

int LLVMFuzzerTestOneInput(const uint8_t *input, size_t size);

static uint64_t fake_clock(void)
{
	return fake_now * 1000u;   /* the broker counts milliseconds */
}

static void *failing_realloc(void *pointer, size_t size)
{
	if (realloc_budget == 0)
		return NULL;
	if (realloc_budget > 0)
		realloc_budget--;
	return realloc(pointer, size);
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

static void check_status(enum broker_status got, enum broker_status want, const char *what)
{
	FUZZ_CHECK(got == want, "%s returned %s, expected %s", what, broker_status_name(got),
	           broker_status_name(want));
}

static void op_subscribe(struct broker *broker, struct model *model, struct reader *reader)
{
	char id[BROKER_ID_LENGTH + 1];
	size_t length;
	const char *subject = read_subject(reader, &length);
	bool valid = model_subject_valid(subject, length, model->limits.max_subject_length);
	enum broker_status status;

	memset(id, 'Z', sizeof(id));
	status = broker_subscribe(broker, subject, length, NULL, id);
	check_status(status, valid ? BROKER_OK : BROKER_INVALID_SUBJECT, "subscribe");
	if (status == BROKER_OK) {
		FUZZ_CHECK(id[BROKER_ID_LENGTH] == '\0' && strlen(id) == BROKER_ID_LENGTH, "id not terminated");
		model_subscribe(model, subject, length, id, fake_now);
	}
}

static void op_publish(struct broker *broker, struct model *model, struct reader *reader,
                       int budget, unsigned repeat)
{
	size_t subject_length, length;
	const char *subject = read_subject(reader, &subject_length);
	const char *data;
	struct broker_message *message;
	uint64_t queued = 0;

	length = read_byte(reader);
	data = read_bytes(reader, &length);
	message = broker_message_new(data, length);
	FUZZ_CHECK(message != NULL, "broker_message_new failed");
	FUZZ_CHECK(message->length == length && message->data[length] == '\0', "message header wrong");
	for (unsigned i = 0; i < repeat; i++) {
		enum broker_status want = model_publish_status(model, subject, subject_length, length);
		enum broker_status got;

		if (budget >= 0) {
			realloc_budget = budget;
			broker_set_realloc(broker, failing_realloc);
		}
		got = broker_publish(broker, subject, subject_length, message);
		if (budget >= 0) {
			broker_set_realloc(broker, NULL);
			realloc_budget = -1;
		}
		/* A failed ring growth may turn success into BROKER_NO_MEMORY,
		 * and then nothing may have been queued anywhere. */
		if (!(budget >= 0 && want == BROKER_OK && got == BROKER_NO_MEMORY))
			check_status(got, want, "publish");
		if (got == BROKER_OK) {
			for (size_t k = 0; k < model->count; k++)
				queued += model_same_subject(&model->subscribers[k], subject, subject_length);
		}
		model_publish_apply(model, subject, subject_length, data, length, got);
		model_check_stats(model, broker);
	}
	/* One reference is ours, one per queued copy. */
	FUZZ_CHECK(message->refcount == 1 + queued, "message refcount %u, expected %llu",
	           (unsigned)message->refcount, (unsigned long long)(1 + queued));
	broker_message_release(message);
}

static void op_fetch(struct broker *broker, struct model *model, struct reader *reader)
{
	char id[BROKER_ID_LENGTH + 1];
	const char *subject;
	size_t subject_length, id_length = BROKER_ID_LENGTH;
	struct model_subscriber *subscriber;
	struct broker_batch batch;
	enum broker_status status, want;
	uint8_t index = read_byte(reader);
	uint8_t variant = read_byte(reader) % 8;

	if (model->count == 0)
		return;
	subscriber = &model->subscribers[index % model->count];
	subject = subscriber->subject;
	subject_length = subscriber->subject_length;
	memcpy(id, subscriber->id, sizeof(id));
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
	want = model_fetch_status(model, subject, subject_length, id, id_length);
	memset(&batch, 0x5a, sizeof(batch));
	status = broker_fetch(broker, subject, subject_length, id, id_length, NULL, &batch);
	check_status(status, want, "fetch");
	if (status == BROKER_OK) {
		model_check_batch(model, model_find(model, subject, subject_length, id, id_length), &batch, fake_now);
	} else {
		FUZZ_CHECK(batch.messages == NULL && batch.count == 0, "failed fetch left a batch");
	}
	broker_batch_release(&batch);
}

static void op_expire(struct broker *broker, struct model *model, struct reader *reader)
{
	uint64_t ttl = read_byte(reader);
	size_t want = model_expire(model, fake_now, ttl);
	size_t got = broker_expire_idle(broker, fake_now, ttl);

	FUZZ_CHECK(got == want, "expired %zu subscribers, expected %zu", got, want);
}

static void op_limits(struct broker *broker, struct model *model, struct reader *reader)
{
	struct broker_limits limits;

	limits.max_pending = read_byte(reader) % 32;
	limits.max_pending_bytes = read_byte(reader);
	limits.max_pending_bytes = limits.max_pending_bytes << 8 | read_byte(reader);
	limits.max_subject_length = read_byte(reader) % 48;
	broker_set_limits(broker, &limits);
	model->limits = limits;
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

int LLVMFuzzerTestOneInput(const uint8_t *input, size_t size)
{
	static const struct broker_limits limits = {
		.max_pending = 16,
		.max_pending_bytes = 512,
		.max_subject_length = 32,
	};
	struct reader reader = { input, size, 0 };
	struct model model;
	struct broker *broker = broker_new(&limits);

	FUZZ_CHECK(broker != NULL, "broker_new failed");
	fake_now = 1000;
	realloc_budget = -1;
	broker_set_clock(broker, fake_clock);
	model_init(&model, &limits);

	for (unsigned operation = 0; operation < MAX_OPERATIONS && reader.position < reader.size; operation++) {
		switch (read_byte(&reader) % 9) {
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
			fake_now += read_byte(&reader);
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
		}
		model_check_stats(&model, broker);
	}

	/* The drain keeps whatever limits the input left: a lowered
	 * max_subject_length must not keep any subscriber from its messages. */
	model_drain(&model, broker, fake_now);
	broker_free(broker);
	model_free(&model);
	return 0;
}
