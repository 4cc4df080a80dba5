/* fuzz_hash.c - libFuzzer harness: the incrementally resized hash table
 * (hash.c) that holds the broker's subjects and subscribers.
 *
 * Keys are the decimal text of numbers 0..1023; a presence array is the
 * model.  Each operation is an opcode byte (modulo 5) and a two-byte key
 * number (modulo 1024), missing bytes read as 0:
 *   0 insert the key if absent       3 insert keys key..key+n-1 (n: a byte)
 *   1 remove the key if present      4 remove keys key..key+n-1
 *   2 look the key up
 * After every operation the count must match; every 64th operation, and at
 * the end, every key is looked up, so the growing and shrinking (while old
 * and new bucket arrays coexist) is checked from all sides.
 */
#include "autoconfig.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "fuzz_model.h"
#include "hash.h"

#define KEYS 1024
#define MAX_OPERATIONS 4096

struct item {
	struct hash_node node;
	char key[8];
	size_t length;
	bool present;
};

int LLVMFuzzerTestOneInput(const uint8_t *input, size_t size);

static bool item_match(const struct hash_node *node, const void *key, size_t length)
{
	const struct item *item = hash_entry(node, struct item, node);

	return item->length == length && memcmp(item->key, key, length) == 0;
}

static struct hash_node *lookup(struct hash_table *table, struct item *item)
{
	return hash_table_find(table, hash_table_hash(table, item->key, item->length), item->key,
	                       item->length, item_match);
}

static void check_one(struct hash_table *table, struct item *item)
{
	struct hash_node *node = lookup(table, item);

	if (item->present)
		FUZZ_CHECK(node == &item->node, "key %s not found (or another node found)", item->key);
	else
		FUZZ_CHECK(node == NULL, "removed key %s still found", item->key);
}

static void insert(struct hash_table *table, struct item *item, size_t *count)
{
	if (item->present)
		return;
	hash_table_insert(table, &item->node, hash_table_hash(table, item->key, item->length));
	item->present = true;
	(*count)++;
}

static void remove_item(struct hash_table *table, struct item *item, size_t *count)
{
	if (!item->present)
		return;
	hash_table_remove(table, &item->node);
	item->present = false;
	(*count)--;
}

int LLVMFuzzerTestOneInput(const uint8_t *input, size_t size)
{
	static struct item items[KEYS];
	static bool keys_ready;
	struct hash_table table;
	size_t position = 0, count = 0;

	if (!keys_ready) {
		for (size_t i = 0; i < KEYS; i++)
			items[i].length = (size_t)snprintf(items[i].key, sizeof(items[i].key), "%zu", i);
		keys_ready = true;
	}
	for (size_t i = 0; i < KEYS; i++) {
		items[i].present = false;
		items[i].node = (struct hash_node){ NULL, 0 };
	}
	FUZZ_CHECK(hash_table_init(&table) == 0, "hash_table_init failed");

	for (unsigned operation = 0; operation < MAX_OPERATIONS && position < size; operation++) {
		uint8_t opcode = input[position++] % 5;
		size_t key = position < size ? input[position++] : 0;
		size_t n;

		key = (key << 8 | (position < size ? input[position++] : 0)) % KEYS;
		switch (opcode) {
		case 0:
			insert(&table, &items[key], &count);
			break;
		case 1:
			remove_item(&table, &items[key], &count);
			break;
		case 2:
			check_one(&table, &items[key]);
			break;
		case 3:
		case 4:
			n = position < size ? input[position++] : 0;
			for (size_t i = 0; i < n; i++) {
				struct item *item = &items[(key + i) % KEYS];

				if (opcode == 3)
					insert(&table, item, &count);
				else
					remove_item(&table, item, &count);
			}
			break;
		}
		FUZZ_CHECK(hash_table_count(&table) == count, "count %zu, expected %zu", hash_table_count(&table),
		           count);
		if (operation % 64 == 63) {
			for (size_t i = 0; i < KEYS; i++)
				check_one(&table, &items[i]);
		}
	}
	for (size_t i = 0; i < KEYS; i++)
		check_one(&table, &items[i]);
	for (size_t i = 0; i < KEYS; i++)
		remove_item(&table, &items[i], &count);
	FUZZ_CHECK(hash_table_count(&table) == 0, "table not empty after removing everything");
	hash_table_destroy(&table);
	return 0;
}
