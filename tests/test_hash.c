/* test_hash.c - unit tests of the keyed hash and the intrusive hash table. */
#include "autoconfig.h"

#include <check.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"

#define S(literal) (literal), (sizeof(literal) - 1)

START_TEST(test_siphash24_matches_reference_vectors)
{
	/* key 00..0f, message 00..(n-1): the reference implementation's table */
	static const struct { size_t length; uint64_t hash; } vectors[] = {
		{ 0, UINT64_C(0x726fdb47dd0e0e31) },
		{ 1, UINT64_C(0x74f839c593dc67fd) },
		{ 2, UINT64_C(0x0d6c8009d9a94f5a) },
		{ 8, UINT64_C(0x93f5f5799a932462) },
		{ 15, UINT64_C(0xa129ca6149be45e5) },
	};
	uint8_t key[16], message[16];

	for (int i = 0; i < 16; i++)
		key[i] = message[i] = (uint8_t)i;
	for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++)
		ck_assert_uint_eq(hash_siphash24(key, message, vectors[i].length), vectors[i].hash);
}
END_TEST

START_TEST(test_hash_tables_have_independent_random_keys)
{
	struct hash_table a, b;

	ck_assert_int_eq(hash_table_init(&a), 0);
	ck_assert_int_eq(hash_table_init(&b), 0);
	ck_assert_mem_ne(a.key, b.key, sizeof(a.key));
	ck_assert_uint_ne(hash_table_hash(&a, S("subject")), hash_table_hash(&b, S("subject")));
	hash_table_destroy(&a);
	hash_table_destroy(&b);
}
END_TEST

struct test_item {
	struct hash_node node;
	uint32_t key;
};

static bool test_item_match(const struct hash_node *node, const void *key, size_t length)
{
	return memcmp(&hash_entry(node, struct test_item, node)->key, key, length) == 0;
}

static struct test_item *test_item_find(struct hash_table *table, uint32_t key)
{
	struct hash_node *node = hash_table_find(table, hash_table_hash(table, &key, sizeof(key)),
	                                         &key, sizeof(key), test_item_match);

	return node ? hash_entry(node, struct test_item, node) : NULL;
}

/* Counts keys in [first, end) (every step-th) not found where expected.
 * (One ck_assert per lookup would make Check's bookkeeping the cost.) */
static size_t test_items_misplaced(struct hash_table *table, struct test_item *items,
                                   uint32_t first, uint32_t end, uint32_t step, bool present)
{
	size_t misplaced = 0;

	for (uint32_t key = first; key < end; key += step)
		if (test_item_find(table, key) != (present ? &items[key] : NULL))
			misplaced++;
	return misplaced;
}

START_TEST(test_hash_table_finds_every_node_while_growing_and_shrinking)
{
	enum { COUNT = 50000 };
	struct hash_table table;
	struct test_item *items = calloc(COUNT, sizeof(*items));
	size_t misplaced = 0;

	ck_assert_ptr_nonnull(items);
	ck_assert_int_eq(hash_table_init(&table), 0);
	for (uint32_t i = 0; i < COUNT; i++) {
		items[i].key = i;
		hash_table_insert(&table, &items[i].node, hash_table_hash(&table, &i, sizeof(i)));
		/* spot checks in the middle of incremental resizes */
		if (i % 97 == 0)
			misplaced += test_items_misplaced(&table, items, 0, i + 1, 13, true);
	}
	ck_assert_uint_eq(misplaced, 0);
	ck_assert_uint_eq(hash_table_count(&table), COUNT);
	ck_assert_uint_ge(table.mask + 1, COUNT / 2);
	ck_assert_uint_eq(test_items_misplaced(&table, items, 0, COUNT, 1, true), 0);
	ck_assert_ptr_null(test_item_find(&table, COUNT));

	for (uint32_t i = 1; i < COUNT; i += 2)
		hash_table_remove(&table, &items[i].node);
	ck_assert_uint_eq(test_items_misplaced(&table, items, 0, COUNT, 2, true), 0);
	ck_assert_uint_eq(test_items_misplaced(&table, items, 1, COUNT, 2, false), 0);

	for (uint32_t i = 0; i < COUNT; i += 2) {
		hash_table_remove(&table, &items[i].node);
		if (i % 101 == 0) {
			misplaced += test_items_misplaced(&table, items, i + 2, COUNT, 26, true);
			misplaced += test_items_misplaced(&table, items, i, i + 1, 1, false);
		}
	}
	ck_assert_uint_eq(misplaced, 0);
	ck_assert_uint_eq(hash_table_count(&table), 0);
	/* shrunk back: at most the minimum plus an unfinished last step */
	ck_assert_uint_le(table.mask + 1, 64);
	hash_table_destroy(&table);
	free(items);
}
END_TEST

static Suite *hash_suite(void)
{
	Suite *suite = suite_create("hash");
	TCase *hash = tcase_create("hash");

	tcase_set_timeout(hash, 60);
	tcase_add_test(hash, test_siphash24_matches_reference_vectors);
	tcase_add_test(hash, test_hash_tables_have_independent_random_keys);
	tcase_add_test(hash, test_hash_table_finds_every_node_while_growing_and_shrinking);
	suite_add_tcase(suite, hash);
	return suite;
}

int main(void)
{
	SRunner *runner = srunner_create(hash_suite());
	int failed;

	srunner_run_all(runner, CK_VERBOSE);
	failed = srunner_ntests_failed(runner);
	srunner_free(runner);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
