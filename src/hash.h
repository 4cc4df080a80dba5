/* hash.h - an intrusive chained hash table keyed with SipHash-2-4.
 *
 * Embed a struct hash_node in your own struct and recover it with
 * hash_entry().  The table never allocates or frees nodes, only its bucket
 * arrays, so inserting cannot fail: when a larger bucket array cannot be
 * allocated the table simply keeps longer chains.
 *
 * The table grows by doubling once it holds as many nodes as buckets and
 * shrinks when it falls below an eighth of that.  Resizing is incremental
 * (as in redis' dict): both bucket arrays live side by side while every
 * insert and remove moves a few old buckets over, so no single operation
 * pays for rehashing the whole table.  Nodes carry their full hash, so a
 * move never rehashes a key.
 *
 * Hashes come from SipHash-2-4 under a random 128-bit key drawn per table
 * at init, so clients cannot choose keys that collide (hash flooding).
 *
 * Not thread-safe: callers lock around every call.  hash_table_hash() only
 * reads the key, which never changes after init, so it may run unlocked.
 */
#ifndef GOPHERMQ_HASH_H
#define GOPHERMQ_HASH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define hash_entry(node_pointer, type, member) \
	((type *)(void *)((char *)(node_pointer) - offsetof(type, member)))

struct hash_node {
	struct hash_node *next;
	uint64_t hash;
};

struct hash_table {
	struct hash_node **buckets;      /* where new nodes go; mask + 1 entries */
	size_t mask;                     /* bucket count - 1 (a power of two) */
	struct hash_node **old_buckets;  /* being drained into buckets, or NULL */
	size_t old_mask;
	size_t migrated;                 /* old buckets below this index are empty */
	size_t count;                    /* nodes in the table */
	uint8_t key[16];                 /* SipHash key */
};

/* True when node is the node for key (length bytes). */
typedef bool hash_match_fn(const struct hash_node *node, const void *key, size_t length);

/* Prepares an empty table with a fresh random key.  Returns 0, or -1 when
 * out of memory or without random bytes. */
int hash_table_init(struct hash_table *table);

/* Frees the bucket arrays; the nodes still linked are the caller's. */
void hash_table_destroy(struct hash_table *table);

/* The table's keyed hash of key. */
uint64_t hash_table_hash(const struct hash_table *table, const void *key, size_t length);

/* Returns the node with this hash for which match() is true, or NULL. */
struct hash_node *hash_table_find(const struct hash_table *table, uint64_t hash,
                                  const void *key, size_t length, hash_match_fn *match);

/* Links node, whose key hashes to hash.  The caller makes sure no node with
 * an equal key is in the table.  Never fails. */
void hash_table_insert(struct hash_table *table, struct hash_node *node, uint64_t hash);

/* Unlinks node, which must be in the table. */
void hash_table_remove(struct hash_table *table, struct hash_node *node);

static inline size_t hash_table_count(const struct hash_table *table)
{
	return table->count;
}

/* SipHash-2-4 of data under a 16-byte key. */
uint64_t hash_siphash24(const uint8_t key[16], const void *data, size_t length);

#endif
