/* test_wildcard.c - unit tests of the token trie of wildcard subscriptions
 * (wildcard.h): which patterns match which literal subjects (NATS
 * semantics: "*" one token, ">" the last token, one or more), insert and
 * remove in any order, pruning of the nodes a removed pattern alone used,
 * and subjects and patterns deep and numerous enough to outgrow the
 * matcher's inline stack. */
#include "autoconfig.h"

#include <check.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wildcard.h"

#define S(literal) (literal), (sizeof(literal) - 1)

enum { MAX_MATCHES = 4096 };

/* What a match visited: the values, in visiting order. */
struct matches {
	void *values[MAX_MATCHES];
	size_t count;
	size_t stop_after;       /* visit returns 7 at this many visits; 0 = never */
};

static int collect(void *value, void *context)
{
	struct matches *matches = context;

	ck_assert_uint_lt(matches->count, MAX_MATCHES);
	matches->values[matches->count++] = value;
	return matches->stop_after != 0 && matches->count == matches->stop_after ? 7 : 0;
}

static void tree_init(struct wildcard_tree *tree)
{
	ck_assert_int_eq(wildcard_tree_init(tree), 0);
}

/* The value a pattern is stored with: the pattern string itself, so that a
 * failure names it. */
static void insert(struct wildcard_tree *tree, const char *pattern)
{
	ck_assert_int_eq(wildcard_insert(tree, pattern, strlen(pattern), (void *)pattern), 0);
}

static void remove_pattern(struct wildcard_tree *tree, const char *pattern)
{
	wildcard_remove(tree, pattern, strlen(pattern));
}

static void match(const struct wildcard_tree *tree, const char *subject, struct matches *matches)
{
	matches->count = 0;
	matches->stop_after = 0;
	ck_assert_int_eq(wildcard_match(tree, subject, strlen(subject), collect, matches), 0);
}

static int compare_strings(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Asserts that subject matches exactly the patterns of the NULL-terminated
 * list expected (in any order), each once. */
static void assert_matches(const struct wildcard_tree *tree, const char *subject, const char *const *expected)
{
	static struct matches matches;
	const char *got[MAX_MATCHES], *want[MAX_MATCHES];
	size_t wanted = 0;
	char got_text[1024] = "", want_text[1024] = "";

	match(tree, subject, &matches);
	while (expected[wanted])
		want[wanted] = expected[wanted], wanted++;
	for (size_t i = 0; i < matches.count; i++)
		got[i] = matches.values[i];
	qsort(got, matches.count, sizeof(got[0]), compare_strings);
	qsort(want, wanted, sizeof(want[0]), compare_strings);
	for (size_t i = 0; i < matches.count && i < 20; i++)
		snprintf(got_text + strlen(got_text), sizeof(got_text) - strlen(got_text), " '%s'", got[i]);
	for (size_t i = 0; i < wanted && i < 20; i++)
		snprintf(want_text + strlen(want_text), sizeof(want_text) - strlen(want_text), " '%s'", want[i]);
	ck_assert_msg(matches.count == wanted, "'%s' matched%s, expected%s", subject, got_text, want_text);
	for (size_t i = 0; i < wanted; i++)
		ck_assert_msg(strcmp(got[i], want[i]) == 0, "'%s' matched%s, expected%s", subject, got_text,
		              want_text);
}

#define MATCHES(tree, subject, ...) assert_matches((tree), (subject), (const char *const[]){ __VA_ARGS__ })

/* Asserts that the tree is back to its empty state: no pattern, no node. */
static void assert_empty(const struct wildcard_tree *tree)
{
	ck_assert_uint_eq(wildcard_count(tree), 0);
	ck_assert_ptr_null(tree->root);
	ck_assert_uint_eq(hash_table_count(&tree->edges), 0);
}

/* --- patterns --------------------------------------------------------- */

START_TEST(test_is_pattern_only_for_whole_wildcard_tokens)
{
	ck_assert(wildcard_is_pattern(S("*")));
	ck_assert(wildcard_is_pattern(S(">")));
	ck_assert(wildcard_is_pattern(S("a.*")));
	ck_assert(wildcard_is_pattern(S("*.b")));
	ck_assert(wildcard_is_pattern(S("a.*.c")));
	ck_assert(wildcard_is_pattern(S("a.>")));
	ck_assert(wildcard_is_pattern(S("a.*.>")));
	ck_assert(!wildcard_is_pattern(S("a")));
	ck_assert(!wildcard_is_pattern(S("a.b.c")));
	ck_assert(!wildcard_is_pattern(S("a*")));
	ck_assert(!wildcard_is_pattern(S("*a")));
	ck_assert(!wildcard_is_pattern(S("b>")));
	ck_assert(!wildcard_is_pattern(S(">b")));
	ck_assert(!wildcard_is_pattern(S("a.**")));
	ck_assert(!wildcard_is_pattern(S("a.>>")));
	ck_assert(!wildcard_is_pattern(S("a.*b.c")));
	ck_assert(!wildcard_is_pattern(S("x.a>")));
}
END_TEST

/* --- matching ---------------------------------------------------------- */

START_TEST(test_the_matching_table)
{
	struct wildcard_tree tree;

	tree_init(&tree);
	insert(&tree, "a.*");
	insert(&tree, "a.>");
	insert(&tree, "*.b");
	insert(&tree, "a.*.c");
	insert(&tree, "*");
	insert(&tree, "*.*");
	insert(&tree, "*.*.*");
	ck_assert_uint_eq(wildcard_count(&tree), 7);

	MATCHES(&tree, "a", "*", NULL);
	MATCHES(&tree, "a.b", "a.*", "a.>", "*.b", "*.*", NULL);
	MATCHES(&tree, "a.b.c", "a.>", "a.*.c", "*.*.*", NULL);
	MATCHES(&tree, "x.b", "*.b", "*.*", NULL);
	MATCHES(&tree, "a.b.c.d", "a.>", NULL);
	MATCHES(&tree, "a.x.c", "a.>", "a.*.c", "*.*.*", NULL);
	MATCHES(&tree, "b.a", "*.*", NULL);
	MATCHES(&tree, "x.y.z.w", NULL);
	MATCHES(&tree, "aa.b", "*.b", "*.*", NULL);
	MATCHES(&tree, "a.bb", "a.*", "a.>", "*.*", NULL);
	wildcard_tree_destroy(&tree);
}
END_TEST

START_TEST(test_greater_than_alone_matches_every_subject)
{
	struct wildcard_tree tree;

	tree_init(&tree);
	insert(&tree, ">");
	MATCHES(&tree, "a", ">", NULL);
	MATCHES(&tree, "a.b", ">", NULL);
	MATCHES(&tree, "a.b.c.d.e.f", ">", NULL);
	MATCHES(&tree, "*x", ">", NULL);
	remove_pattern(&tree, ">");
	MATCHES(&tree, "a", NULL);
	assert_empty(&tree);
	wildcard_tree_destroy(&tree);
}
END_TEST

START_TEST(test_star_alone_matches_exactly_one_token)
{
	struct wildcard_tree tree;

	tree_init(&tree);
	insert(&tree, "*");
	MATCHES(&tree, "a", "*", NULL);
	MATCHES(&tree, "abc", "*", NULL);
	MATCHES(&tree, "a.b", NULL);
	MATCHES(&tree, "a.b.c", NULL);
	remove_pattern(&tree, "*");
	assert_empty(&tree);
	wildcard_tree_destroy(&tree);
}
END_TEST

START_TEST(test_greater_than_needs_at_least_one_token)
{
	struct wildcard_tree tree;

	tree_init(&tree);
	insert(&tree, "a.>");
	insert(&tree, "a.b.>");
	MATCHES(&tree, "a", NULL);
	MATCHES(&tree, "a.b", "a.>", NULL);
	MATCHES(&tree, "a.b.c", "a.>", "a.b.>", NULL);
	MATCHES(&tree, "b.a", NULL);
	MATCHES(&tree, "ab.c", NULL);
	wildcard_tree_destroy(&tree);
}
END_TEST

START_TEST(test_wildcard_characters_inside_a_token_are_literal)
{
	struct wildcard_tree tree;

	tree_init(&tree);
	insert(&tree, "a*.*");
	insert(&tree, "b>.>");
	MATCHES(&tree, "a*.x", "a*.*", NULL);
	MATCHES(&tree, "a.x", NULL);
	MATCHES(&tree, "ab.x", NULL);
	MATCHES(&tree, "b>.x.y", "b>.>", NULL);
	MATCHES(&tree, "b.x.y", NULL);
	wildcard_tree_destroy(&tree);
}
END_TEST

START_TEST(test_literal_tokens_under_different_parents_are_different_edges)
{
	struct wildcard_tree tree;

	tree_init(&tree);
	insert(&tree, "x.a.*");
	insert(&tree, "y.a.>");
	insert(&tree, "*.a.b");
	MATCHES(&tree, "x.a.b", "x.a.*", "*.a.b", NULL);
	MATCHES(&tree, "y.a.b", "y.a.>", "*.a.b", NULL);
	MATCHES(&tree, "y.a.c", "y.a.>", NULL);
	MATCHES(&tree, "x.a.c", "x.a.*", NULL);
	MATCHES(&tree, "z.a.c", NULL);
	MATCHES(&tree, "a.x.a", NULL);
	wildcard_tree_destroy(&tree);
}
END_TEST

START_TEST(test_a_literal_pattern_matches_only_itself)
{
	struct wildcard_tree tree;

	/* The broker keeps literal subjects elsewhere, but the trie takes
	 * them too. */
	tree_init(&tree);
	insert(&tree, "a.b");
	insert(&tree, "a.*");
	MATCHES(&tree, "a.b", "a.b", "a.*", NULL);
	MATCHES(&tree, "a.c", "a.*", NULL);
	MATCHES(&tree, "a", NULL);
	wildcard_tree_destroy(&tree);
}
END_TEST

START_TEST(test_match_stops_when_visit_says_so_and_returns_its_result)
{
	struct wildcard_tree tree;
	struct matches matches = { .stop_after = 2 };

	tree_init(&tree);
	insert(&tree, ">");
	insert(&tree, "a.>");
	insert(&tree, "a.*");
	insert(&tree, "*.b");
	ck_assert_int_eq(wildcard_match(&tree, S("a.b"), collect, &matches), 7);
	ck_assert_uint_eq(matches.count, 2);
	wildcard_tree_destroy(&tree);
}
END_TEST

START_TEST(test_an_empty_tree_matches_nothing)
{
	struct wildcard_tree tree;
	struct matches matches;

	tree_init(&tree);
	match(&tree, "a.b", &matches);
	ck_assert_uint_eq(matches.count, 0);
	ck_assert_uint_eq(wildcard_count(&tree), 0);
	wildcard_tree_destroy(&tree);
}
END_TEST

/* --- removing and pruning ---------------------------------------------- */

START_TEST(test_remove_stops_the_matches_and_prunes_every_node)
{
	static const char *const patterns[] = { "a.*", "a.>", "*.b", ">", "a.*.c", "*", "a.b.*.d.>" };
	size_t count = sizeof(patterns) / sizeof(patterns[0]);
	struct wildcard_tree tree;

	tree_init(&tree);
	for (size_t i = 0; i < count; i++)
		insert(&tree, patterns[i]);
	ck_assert_uint_eq(wildcard_count(&tree), count);
	remove_pattern(&tree, "a.*");
	MATCHES(&tree, "a.b", "a.>", "*.b", ">", NULL);
	remove_pattern(&tree, ">");
	MATCHES(&tree, "a.b", "a.>", "*.b", NULL);
	MATCHES(&tree, "q", "*", NULL);
	remove_pattern(&tree, "a.>");
	MATCHES(&tree, "a.b", "*.b", NULL);
	MATCHES(&tree, "a.b.c", "a.*.c", NULL);
	MATCHES(&tree, "a.b.x.d.e", "a.b.*.d.>", NULL);
	remove_pattern(&tree, "a.b.*.d.>");
	MATCHES(&tree, "a.b.x.d.e", NULL);
	remove_pattern(&tree, "*");
	remove_pattern(&tree, "*.b");
	MATCHES(&tree, "a.b.c", "a.*.c", NULL);
	ck_assert_uint_eq(wildcard_count(&tree), 1);
	remove_pattern(&tree, "a.*.c");
	MATCHES(&tree, "a.b.c", NULL);
	assert_empty(&tree);
	/* And it fills up again. */
	insert(&tree, "a.*");
	MATCHES(&tree, "a.b", "a.*", NULL);
	remove_pattern(&tree, "a.*");
	assert_empty(&tree);
	wildcard_tree_destroy(&tree);
}
END_TEST

START_TEST(test_a_pattern_and_its_prefix_are_independent)
{
	struct wildcard_tree tree;

	/* Remove the prefix first ... */
	tree_init(&tree);
	insert(&tree, "a.*");
	insert(&tree, "a.*.c");
	MATCHES(&tree, "a.b", "a.*", NULL);
	MATCHES(&tree, "a.b.c", "a.*.c", NULL);
	remove_pattern(&tree, "a.*");
	MATCHES(&tree, "a.b", NULL);
	MATCHES(&tree, "a.b.c", "a.*.c", NULL);
	ck_assert_uint_eq(wildcard_count(&tree), 1);
	remove_pattern(&tree, "a.*.c");
	assert_empty(&tree);

	/* ... or the longer one first. */
	insert(&tree, "a.*");
	insert(&tree, "a.*.c");
	remove_pattern(&tree, "a.*.c");
	MATCHES(&tree, "a.b", "a.*", NULL);
	MATCHES(&tree, "a.b.c", NULL);
	remove_pattern(&tree, "a.*");
	assert_empty(&tree);

	/* A ">" pattern and a longer one through the same node. */
	insert(&tree, "a.>");
	insert(&tree, "a");
	insert(&tree, "a.b.>");
	remove_pattern(&tree, "a.>");
	MATCHES(&tree, "a", "a", NULL);
	MATCHES(&tree, "a.b", NULL);
	MATCHES(&tree, "a.b.c", "a.b.>", NULL);
	remove_pattern(&tree, "a");
	MATCHES(&tree, "a.b.c", "a.b.>", NULL);
	remove_pattern(&tree, "a.b.>");
	assert_empty(&tree);
	wildcard_tree_destroy(&tree);
}
END_TEST

START_TEST(test_removing_a_pattern_not_in_the_tree_changes_nothing)
{
	struct wildcard_tree tree;
	size_t edges;

	tree_init(&tree);
	remove_pattern(&tree, "a.*");           /* empty tree */
	assert_empty(&tree);
	insert(&tree, "a.*.c");
	insert(&tree, "x.>");
	edges = hash_table_count(&tree.edges);
	remove_pattern(&tree, "a.*");           /* a node on a path, no pattern */
	remove_pattern(&tree, "a");
	remove_pattern(&tree, "a.*.c.d");       /* longer than any path */
	remove_pattern(&tree, "a.b.c");         /* literal where the path has "*" */
	remove_pattern(&tree, "a.>");           /* ">" where the path has "*" */
	remove_pattern(&tree, "x.*");           /* "*" where the path has ">" */
	remove_pattern(&tree, "x");
	remove_pattern(&tree, "q.r");
	ck_assert_uint_eq(wildcard_count(&tree), 2);
	ck_assert_uint_eq(hash_table_count(&tree.edges), edges);
	MATCHES(&tree, "a.b.c", "a.*.c", NULL);
	MATCHES(&tree, "x.y.z", "x.>", NULL);
	wildcard_tree_destroy(&tree);
}
END_TEST

START_TEST(test_destroy_frees_a_tree_that_still_has_patterns)
{
	struct wildcard_tree tree;
	static char names[3000][24];

	/* Enough edges for the table to be growing (two bucket arrays) at
	 * some point: valgrind and ASan check that destroy frees them all. */
	tree_init(&tree);
	for (int i = 0; i < 3000; i++) {
		snprintf(names[i], sizeof(names[i]), "d%d.*.e%d", i % 97, i);
		insert(&tree, names[i]);
	}
	wildcard_tree_destroy(&tree);
	ck_assert_ptr_null(tree.root);
	ck_assert_uint_eq(wildcard_count(&tree), 0);
}
END_TEST

/* --- many patterns, deep subjects ------------------------------------- */

START_TEST(test_many_patterns_match_only_their_own_subjects)
{
	enum { COUNT = 2000 };
	static char patterns[COUNT][40];
	struct wildcard_tree tree;
	static struct matches matches;
	char subject[64];

	tree_init(&tree);
	for (int i = 0; i < COUNT; i++) {
		switch (i % 4) {
		case 0: snprintf(patterns[i], sizeof(patterns[i]), "svc%d.*", i); break;
		case 1: snprintf(patterns[i], sizeof(patterns[i]), "svc%d.>", i); break;
		case 2: snprintf(patterns[i], sizeof(patterns[i]), "*.svc%d", i); break;
		default: snprintf(patterns[i], sizeof(patterns[i]), "svc%d.*.end", i); break;
		}
		insert(&tree, patterns[i]);
	}
	ck_assert_uint_eq(wildcard_count(&tree), COUNT);
	for (int i = 0; i < COUNT; i++) {
		switch (i % 4) {
		case 0:
			snprintf(subject, sizeof(subject), "svc%d.x", i);
			MATCHES(&tree, subject, patterns[i], NULL);
			snprintf(subject, sizeof(subject), "svc%d.x.y", i);
			MATCHES(&tree, subject, NULL);
			break;
		case 1:
			snprintf(subject, sizeof(subject), "svc%d.x.y.z", i);
			MATCHES(&tree, subject, patterns[i], NULL);
			snprintf(subject, sizeof(subject), "svc%d", i);
			MATCHES(&tree, subject, NULL);
			break;
		case 2:
			snprintf(subject, sizeof(subject), "q.svc%d", i);
			MATCHES(&tree, subject, patterns[i], NULL);
			break;
		default:
			snprintf(subject, sizeof(subject), "svc%d.x.end", i);
			MATCHES(&tree, subject, patterns[i], NULL);
			snprintf(subject, sizeof(subject), "svc%d.x.nope", i);
			MATCHES(&tree, subject, NULL);
			break;
		}
	}
	/* A subject every "*.svcN" could match only by its second token. */
	match(&tree, "svc0.svc2", &matches);
	ck_assert_uint_eq(matches.count, 2);    /* svc0.* and *.svc2 */
	/* Remove every other pattern, then check all again. */
	for (int i = 0; i < COUNT; i += 2)
		remove_pattern(&tree, patterns[i]);
	ck_assert_uint_eq(wildcard_count(&tree), COUNT / 2);
	for (int i = 0; i < COUNT; i++) {
		if (i % 4 == 0 || i % 4 == 1) {
			snprintf(subject, sizeof(subject), "svc%d.x", i);
			if (i % 2 == 0)
				MATCHES(&tree, subject, NULL);
			else
				MATCHES(&tree, subject, patterns[i], NULL);
		} else {
			snprintf(subject, sizeof(subject), "q.svc%d", i);
			MATCHES(&tree, subject, NULL);   /* even: removed; odd i % 4 == 3 needs 3 tokens */
		}
	}
	for (int i = 1; i < COUNT; i += 2)
		remove_pattern(&tree, patterns[i]);
	assert_empty(&tree);
	wildcard_tree_destroy(&tree);
}
END_TEST

START_TEST(test_one_subject_matching_thousands_of_patterns_visits_each_once)
{
	enum { COUNT = 1000 };
	static char patterns[COUNT][32];
	struct wildcard_tree tree;
	static struct matches matches;

	/* "*.*.kN" and "k.>" style patterns that all match one subject. */
	tree_init(&tree);
	insert(&tree, ">");
	insert(&tree, "*.*.*");
	insert(&tree, "m.>");
	insert(&tree, "m.n.>");
	insert(&tree, "m.*.>");
	insert(&tree, "*.n.o");
	for (int i = 0; i < COUNT - 6; i++) {
		snprintf(patterns[i], sizeof(patterns[i]), "m.n.o%d", i);
		insert(&tree, patterns[i]);
	}
	MATCHES(&tree, "m.n.o", ">", "*.*.*", "m.>", "m.n.>", "m.*.>", "*.n.o", NULL);
	match(&tree, "m.n.o5", &matches);
	ck_assert_uint_eq(matches.count, 6);    /* >, *.*.*, m.>, m.n.>, m.*.>, m.n.o5 */
	wildcard_tree_destroy(&tree);
}
END_TEST

/* A subject or pattern of count tokens: token i is tokens[i] or, when
 * tokens is NULL, "t". */
static void build(char *out, size_t size, size_t count, const char *const *tokens)
{
	size_t used = 0;

	out[0] = '\0';
	for (size_t i = 0; i < count; i++) {
		int written = snprintf(out + used, size - used, "%s%s", i ? "." : "", tokens ? tokens[i] : "t");

		ck_assert(written > 0 && (size_t)written < size - used);
		used += (size_t)written;
	}
}

START_TEST(test_deep_subjects_outgrow_the_inline_stack)
{
	enum { DEPTH = 100 };
	static char patterns[DEPTH + 2][DEPTH * 2 + 8];
	static const char *tokens[DEPTH];
	static struct matches matches;
	char subject[DEPTH * 2 + 8];
	struct wildcard_tree tree;

	/* Pattern k (k < DEPTH) is "t" everywhere but "*" at token k: a match
	 * of t.t....t leaves one branch per level on the stack, far more than
	 * the 32 it holds inline. */
	tree_init(&tree);
	for (size_t k = 0; k < DEPTH; k++) {
		for (size_t i = 0; i < DEPTH; i++)
			tokens[i] = i == k ? "*" : "t";
		build(patterns[k], sizeof(patterns[k]), DEPTH, tokens);
		insert(&tree, patterns[k]);
	}
	for (size_t i = 0; i < DEPTH; i++)
		tokens[i] = "*";
	build(patterns[DEPTH], sizeof(patterns[DEPTH]), DEPTH, tokens);    /* all stars */
	insert(&tree, patterns[DEPTH]);
	for (size_t i = 0; i < DEPTH; i++)
		tokens[i] = "t";
	tokens[DEPTH - 1] = ">";
	build(patterns[DEPTH + 1], sizeof(patterns[DEPTH + 1]), DEPTH, tokens);   /* t.t...t.> */
	insert(&tree, patterns[DEPTH + 1]);

	build(subject, sizeof(subject), DEPTH, NULL);
	match(&tree, subject, &matches);
	ck_assert_uint_eq(matches.count, DEPTH + 2);
	for (size_t i = 0; i < matches.count; i++)
		for (size_t j = 0; j < i; j++)
			ck_assert_ptr_ne(matches.values[i], matches.values[j]);

	/* One token more: only t...t.> (whose > takes the last two). */
	strcat(subject, ".t");
	MATCHES(&tree, subject, patterns[DEPTH + 1], NULL);
	/* One token less: nothing. */
	build(subject, sizeof(subject), DEPTH - 1, NULL);
	MATCHES(&tree, subject, NULL);
	/* A different token in the middle: only the pattern with "*" there,
	 * the all-stars one and none else. */
	for (size_t i = 0; i < DEPTH; i++)
		tokens[i] = i == 50 ? "u" : "t";
	build(subject, sizeof(subject), DEPTH, tokens);
	MATCHES(&tree, subject, patterns[50], patterns[DEPTH], NULL);

	for (size_t k = 0; k < DEPTH + 2; k++)
		remove_pattern(&tree, patterns[k]);
	assert_empty(&tree);
	wildcard_tree_destroy(&tree);
}
END_TEST

START_TEST(test_a_subject_of_many_tokens_against_short_patterns)
{
	enum { DEPTH = 500 };
	static char subject[DEPTH * 2 + 8];
	struct wildcard_tree tree;

	tree_init(&tree);
	insert(&tree, "t.>");
	insert(&tree, "*.>");
	insert(&tree, "t.*");
	insert(&tree, ">");
	build(subject, sizeof(subject), DEPTH, NULL);
	MATCHES(&tree, subject, "t.>", "*.>", ">", NULL);
	wildcard_tree_destroy(&tree);
}
END_TEST

static Suite *wildcard_suite(void)
{
	Suite *suite = suite_create("wildcard");
	TCase *patterns = tcase_create("patterns");
	TCase *matching = tcase_create("matching");
	TCase *removing = tcase_create("removing");
	TCase *scale = tcase_create("scale");

	tcase_add_test(patterns, test_is_pattern_only_for_whole_wildcard_tokens);
	suite_add_tcase(suite, patterns);

	tcase_add_test(matching, test_the_matching_table);
	tcase_add_test(matching, test_greater_than_alone_matches_every_subject);
	tcase_add_test(matching, test_star_alone_matches_exactly_one_token);
	tcase_add_test(matching, test_greater_than_needs_at_least_one_token);
	tcase_add_test(matching, test_wildcard_characters_inside_a_token_are_literal);
	tcase_add_test(matching, test_literal_tokens_under_different_parents_are_different_edges);
	tcase_add_test(matching, test_a_literal_pattern_matches_only_itself);
	tcase_add_test(matching, test_match_stops_when_visit_says_so_and_returns_its_result);
	tcase_add_test(matching, test_an_empty_tree_matches_nothing);
	suite_add_tcase(suite, matching);

	tcase_add_test(removing, test_remove_stops_the_matches_and_prunes_every_node);
	tcase_add_test(removing, test_a_pattern_and_its_prefix_are_independent);
	tcase_add_test(removing, test_removing_a_pattern_not_in_the_tree_changes_nothing);
	tcase_add_test(removing, test_destroy_frees_a_tree_that_still_has_patterns);
	suite_add_tcase(suite, removing);

	tcase_add_test(scale, test_many_patterns_match_only_their_own_subjects);
	tcase_add_test(scale, test_one_subject_matching_thousands_of_patterns_visits_each_once);
	tcase_add_test(scale, test_deep_subjects_outgrow_the_inline_stack);
	tcase_add_test(scale, test_a_subject_of_many_tokens_against_short_patterns);
	suite_add_tcase(suite, scale);
	return suite;
}

int main(void)
{
	SRunner *runner = srunner_create(wildcard_suite());
	int failed;

	srunner_run_all(runner, CK_VERBOSE);
	failed = srunner_ntests_failed(runner);
	srunner_free(runner);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
