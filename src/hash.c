/* hash.c - intrusive chained hash table with incremental resizing, and
 * SipHash-2-4 (Aumasson and Bernstein, "SipHash: a fast short-input PRF",
 * 2012), written from the paper's description. */
#include "autoconfig.h"

#include <assert.h>
#include <stdlib.h>

#include "hash.h"
#include "uuid.h"

#define HASH_MIN_BUCKETS 8
/* Old buckets moved per insert or remove while resizing (times the
 * old/new size ratio when shrinking, so the old array drains before the
 * new one can fill up). */
#define HASH_MIGRATE_STEP 4

/* --- SipHash-2-4 ------------------------------------------------------- */

static inline uint64_t hash_rotate_left(uint64_t value, unsigned bits)
{
	return (value << bits) | (value >> (64 - bits));
}

static inline uint64_t hash_load_le64(const uint8_t *bytes)
{
	uint64_t value = 0;

	for (unsigned i = 0; i < 8; i++)
		value |= (uint64_t)bytes[i] << (8 * i);
	return value;
}

struct siphash_state {
	uint64_t v0, v1, v2, v3;
};

static inline void siphash_round(struct siphash_state *s)
{
	s->v0 += s->v1;
	s->v1 = hash_rotate_left(s->v1, 13);
	s->v1 ^= s->v0;
	s->v0 = hash_rotate_left(s->v0, 32);
	s->v2 += s->v3;
	s->v3 = hash_rotate_left(s->v3, 16);
	s->v3 ^= s->v2;
	s->v0 += s->v3;
	s->v3 = hash_rotate_left(s->v3, 21);
	s->v3 ^= s->v0;
	s->v2 += s->v1;
	s->v1 = hash_rotate_left(s->v1, 17);
	s->v1 ^= s->v2;
	s->v2 = hash_rotate_left(s->v2, 32);
}

/* Two compression rounds per 8-byte word m. */
static inline void siphash_compress(struct siphash_state *s, uint64_t m)
{
	s->v3 ^= m;
	siphash_round(s);
	siphash_round(s);
	s->v0 ^= m;
}

uint64_t hash_siphash24(const uint8_t key[16], const void *data, size_t length)
{
	const uint8_t *in = data;
	const uint64_t k0 = hash_load_le64(key), k1 = hash_load_le64(key + 8);
	struct siphash_state s = {
		.v0 = k0 ^ UINT64_C(0x736f6d6570736575),  /* "somepseu" */
		.v1 = k1 ^ UINT64_C(0x646f72616e646f6d),  /* "dorandom" */
		.v2 = k0 ^ UINT64_C(0x6c7967656e657261),  /* "lygenera" */
		.v3 = k1 ^ UINT64_C(0x7465646279746573),  /* "tedbytes" */
	};
	size_t whole = length & ~(size_t)7;
	uint64_t last = (uint64_t)(length & 0xff) << 56;

	for (size_t i = 0; i < whole; i += 8)
		siphash_compress(&s, hash_load_le64(in + i));

	/* The 0..7 remaining bytes, little-endian, under the length byte. */
	for (size_t i = 0; i < (length & 7); i++)
		last |= (uint64_t)in[whole + i] << (8 * i);
	siphash_compress(&s, last);

	s.v2 ^= 0xff;
	for (int i = 0; i < 4; i++)
		siphash_round(&s);
	return s.v0 ^ s.v1 ^ s.v2 ^ s.v3;
}

/* --- the table --------------------------------------------------------- */

int hash_table_init(struct hash_table *table)
{
	*table = (struct hash_table){0};
	if (uuid_random_bytes(table->key, sizeof(table->key)) != 0)
		return -1;
	table->buckets = calloc(HASH_MIN_BUCKETS, sizeof(*table->buckets));
	if (!table->buckets)
		return -1;
	table->mask = HASH_MIN_BUCKETS - 1;
	return 0;
}

void hash_table_destroy(struct hash_table *table)
{
	free(table->buckets);
	free(table->old_buckets);
	*table = (struct hash_table){0};
}

uint64_t hash_table_hash(const struct hash_table *table, const void *key, size_t length)
{
	return hash_siphash24(table->key, key, length);
}

/* The chain a node with this hash is in, or goes to.  While resizing, an
 * old bucket not yet migrated keeps receiving its nodes, so every node
 * has exactly one possible chain and a lookup searches only that one. */
static struct hash_node **hash_table_chain(const struct hash_table *table, uint64_t hash)
{
	if (table->old_buckets) {
		size_t old_index = (size_t)hash & table->old_mask;

		if (old_index >= table->migrated)
			return &table->old_buckets[old_index];
	}
	return &table->buckets[(size_t)hash & table->mask];
}

struct hash_node *hash_table_find(const struct hash_table *table, uint64_t hash,
                                  const void *key, size_t length, hash_match_fn *match)
{
	for (struct hash_node *node = *hash_table_chain(table, hash); node; node = node->next)
		if (node->hash == hash && match(node, key, length))
			return node;
	return NULL;
}

/* Moves up to steps old buckets into the new array; frees the old array
 * once it is empty. */
static void hash_table_migrate(struct hash_table *table, size_t steps)
{
	while (table->old_buckets && steps-- > 0) {
		struct hash_node *node = table->old_buckets[table->migrated];

		table->old_buckets[table->migrated] = NULL;
		while (node) {
			struct hash_node *next = node->next;
			struct hash_node **chain = &table->buckets[(size_t)node->hash & table->mask];

			node->next = *chain;
			*chain = node;
			node = next;
		}
		if (table->migrated++ == table->old_mask) {
			free(table->old_buckets);
			table->old_buckets = NULL;
			table->old_mask = 0;
			table->migrated = 0;
		}
	}
}

/* One step of an ongoing resize, scaled so that shrinking drains the
 * (larger) old array before the new one can fill. */
static void hash_table_migrate_step(struct hash_table *table)
{
	size_t ratio;

	if (!table->old_buckets)
		return;
	ratio = (table->old_mask + 1) / (table->mask + 1);
	hash_table_migrate(table, HASH_MIGRATE_STEP * (ratio > 1 ? ratio : 1));
}

/* Starts moving to bucket_count buckets (a power of two).  On allocation
 * failure keeps the current array. */
static void hash_table_start_resize(struct hash_table *table, size_t bucket_count)
{
	struct hash_node **buckets;

	if (table->old_buckets)  /* rare: a resize before the last one ended */
		hash_table_migrate(table, SIZE_MAX);
	if (bucket_count == table->mask + 1)
		return;
	buckets = calloc(bucket_count, sizeof(*buckets));
	if (!buckets)
		return;
	table->old_buckets = table->buckets;
	table->old_mask = table->mask;
	table->migrated = 0;
	table->buckets = buckets;
	table->mask = bucket_count - 1;
}

void hash_table_insert(struct hash_table *table, struct hash_node *node, uint64_t hash)
{
	struct hash_node **chain;
	size_t size = table->mask + 1;

	hash_table_migrate_step(table);
	if (table->count >= size && size <= SIZE_MAX / 2 / sizeof(*table->buckets))
		hash_table_start_resize(table, size * 2);

	node->hash = hash;
	chain = hash_table_chain(table, hash);
	node->next = *chain;
	*chain = node;
	table->count++;
}

void hash_table_remove(struct hash_table *table, struct hash_node *node)
{
	struct hash_node **link = hash_table_chain(table, node->hash);
	size_t size;

	while (*link != node) {
		assert(*link != NULL);
		link = &(*link)->next;
	}
	*link = node->next;
	node->next = NULL;
	table->count--;

	hash_table_migrate_step(table);
	size = table->mask + 1;
	if (!table->old_buckets && size > HASH_MIN_BUCKETS && table->count < size / 8) {
		size_t target = HASH_MIN_BUCKETS;

		while (target < table->count * 2)
			target *= 2;
		hash_table_start_resize(table, target);
	}
}
