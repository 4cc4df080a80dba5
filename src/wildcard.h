/* wildcard.h - subscriptions whose subject has wildcards, found by the
 * literal subjects they match.
 *
 * A pattern is a subject some of whose tokens are wildcards: "*" stands
 * for exactly one token, ">" (the last token only) for one or more.  The
 * patterns form a trie of tokens whose edges are one hash table keyed by
 * (parent node, token), the wildcard edges also two pointers per node, so
 * matching a subject costs a hash lookup per token and node visited and
 * nothing for the patterns that share no prefix with it: a publish does
 * not get slower as unrelated wildcard subscriptions are added.
 *
 * Not thread-safe: the broker locks around every call.
 */
#ifndef GOPHERMQ_WILDCARD_H
#define GOPHERMQ_WILDCARD_H

#include <stdbool.h>
#include <stddef.h>

#include "hash.h"

struct wildcard_node;

struct wildcard_tree {
	struct hash_table edges;          /* (parent, token) -> child */
	struct wildcard_node *root;       /* NULL while there is no pattern */
	size_t patterns;
};

/* Returns 0, or -1 when out of memory or without random bytes. */
int wildcard_tree_init(struct wildcard_tree *tree);

/* Frees the tree; its values are the caller's. */
void wildcard_tree_destroy(struct wildcard_tree *tree);

/* True when one of subject's tokens is "*", or its last is ">".  The
 * subject must be a valid one (broker_subject_valid). */
bool wildcard_is_pattern(const char *subject, size_t length);

/* Adds pattern (a valid subject; a ">" not last is an ordinary token) with value, which must not
 * be NULL; the pattern must not be in the tree yet.  Returns 0, or -1 when
 * out of memory (the tree unchanged). */
int wildcard_insert(struct wildcard_tree *tree, const char *pattern, size_t length, void *value);

/* Removes pattern, which is in the tree, and the nodes only it used. */
void wildcard_remove(struct wildcard_tree *tree, const char *pattern, size_t length);

/* Calls visit(value, context) once for every pattern that matches the
 * literal subject, in no particular order, until visit returns non-zero.
 * Returns 0, visit's non-zero result, or -1 when out of memory (a subject
 * of very many tokens against very deep patterns). */
int wildcard_match(const struct wildcard_tree *tree, const char *subject, size_t length,
                   int (*visit)(void *value, void *context), void *context);

static inline size_t wildcard_count(const struct wildcard_tree *tree)
{
	return tree->patterns;
}

#endif
