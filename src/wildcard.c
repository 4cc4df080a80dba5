/* wildcard.c - the token trie of wildcard subscriptions (see wildcard.h). */
#include "autoconfig.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wildcard.h"

#define MATCH_STACK_INLINE 32

struct wildcard_node {
	struct hash_node edge;            /* in tree->edges (all but the root) */
	struct wildcard_node *parent;
	struct wildcard_node *any_one;    /* the "*" child */
	struct wildcard_node *any_rest;   /* the ">" child */
	void *value;                      /* the pattern that ends here, or NULL */
	size_t children;
	size_t token_length;
	char token[];
};

/* What a literal edge is looked up by. */
struct edge_key {
	const struct wildcard_node *parent;
	const char *token;
};

static bool edge_match(const struct hash_node *node, const void *key, size_t length)
{
	const struct wildcard_node *child = hash_entry(node, struct wildcard_node, edge);
	const struct edge_key *edge = key;

	return child->parent == edge->parent && child->token_length == length &&
	       memcmp(child->token, edge->token, length) == 0;
}

/* The token's keyed hash, mixed with its parent's address so that equal
 * tokens under different parents spread over the table. */
static uint64_t edge_hash(const struct wildcard_tree *tree, const struct wildcard_node *parent,
                          const char *token, size_t length)
{
	return hash_table_hash(&tree->edges, token, length) ^
	       ((uint64_t)(uintptr_t)parent * 0x9e3779b97f4a7c15ull);
}

static struct wildcard_node *literal_child(const struct wildcard_tree *tree,
                                           const struct wildcard_node *parent,
                                           const char *token, size_t length)
{
	struct edge_key key = { parent, token };
	struct hash_node *node;

	if (parent->children == 0)
		return NULL;
	node = hash_table_find(&tree->edges, edge_hash(tree, parent, token, length), &key, length, edge_match);
	return node ? hash_entry(node, struct wildcard_node, edge) : NULL;
}

static bool is_any_one(const char *token, size_t length);
static bool is_any_rest(const char *token, size_t length);

/* The child of node for token, wildcard or literal, or NULL.  ">" is the
 * wildcard only as the last token (last). */
static struct wildcard_node *child_of(const struct wildcard_tree *tree, const struct wildcard_node *node,
                                      const char *token, size_t length, bool last)
{
	if (is_any_one(token, length))
		return node->any_one;
	if (last && is_any_rest(token, length))
		return node->any_rest;
	return literal_child(tree, node, token, length);
}

static size_t token_end(const char *subject, size_t length, size_t start)
{
	const char *dot = memchr(subject + start, '.', length - start);

	return dot ? (size_t)(dot - subject) : length;
}

static bool is_any_one(const char *token, size_t length)
{
	return length == 1 && token[0] == '*';
}

static bool is_any_rest(const char *token, size_t length)
{
	return length == 1 && token[0] == '>';
}

bool wildcard_is_pattern(const char *subject, size_t length)
{
	for (size_t start = 0; start < length;) {
		size_t end = token_end(subject, length, start);

		if (is_any_one(subject + start, end - start) ||
		    (end == length && is_any_rest(subject + start, end - start)))
			return true;
		start = end + 1;
	}
	return false;
}

int wildcard_tree_init(struct wildcard_tree *tree)
{
	tree->root = NULL;
	tree->patterns = 0;
	return hash_table_init(&tree->edges);
}

static struct wildcard_node *node_new(struct wildcard_node *parent, const char *token, size_t length)
{
	struct wildcard_node *node = calloc(1, sizeof(*node) + length);

	if (!node)
		return NULL;
	node->parent = parent;
	node->token_length = length;
	memcpy(node->token, token, length);
	return node;
}

static bool node_unused(const struct wildcard_node *node)
{
	return !node->value && !node->any_one && !node->any_rest && node->children == 0;
}

/* Unlinks and frees node and then every ancestor left unused. */
static void prune(struct wildcard_tree *tree, struct wildcard_node *node)
{
	while (node && node_unused(node)) {
		struct wildcard_node *parent = node->parent;

		if (!parent)
			tree->root = NULL;
		else {
			if (parent->any_one == node)
				parent->any_one = NULL;
			else if (parent->any_rest == node)
				parent->any_rest = NULL;
			hash_table_remove(&tree->edges, &node->edge);
			parent->children--;
		}
		free(node);
		node = parent;
	}
}

int wildcard_insert(struct wildcard_tree *tree, const char *pattern, size_t length, void *value)
{
	struct wildcard_node *node;

	if (!tree->root && !(tree->root = node_new(NULL, "", 0)))
		return -1;
	node = tree->root;
	for (size_t start = 0; start < length;) {
		size_t end = token_end(pattern, length, start), size = end - start;
		const char *token = pattern + start;
		struct wildcard_node *child = child_of(tree, node, token, size, end == length);

		if (!child) {
			child = node_new(node, token, size);
			if (!child) {
				prune(tree, node);
				return -1;
			}
			if (is_any_one(token, size))
				node->any_one = child;
			else if (end == length && is_any_rest(token, size))
				node->any_rest = child;
			hash_table_insert(&tree->edges, &child->edge, edge_hash(tree, node, token, size));
			node->children++;
		}
		node = child;
		start = end + 1;
	}
	node->value = value;
	tree->patterns++;
	return 0;
}

void wildcard_remove(struct wildcard_tree *tree, const char *pattern, size_t length)
{
	struct wildcard_node *node = tree->root;

	for (size_t start = 0; node && start < length;) {
		size_t end = token_end(pattern, length, start);

		node = child_of(tree, node, pattern + start, end - start, end == length);
		start = end + 1;
	}
	if (!node || !node->value)
		return;
	node->value = NULL;
	tree->patterns--;
	prune(tree, node);
}

/* A node to visit and where in the subject its children's token starts. */
struct match_step {
	const struct wildcard_node *node;
	size_t start;
};

int wildcard_match(const struct wildcard_tree *tree, const char *subject, size_t length,
                   int (*visit)(void *value, void *context), void *context)
{
	struct match_step inline_stack[MATCH_STACK_INLINE], *stack = inline_stack;
	size_t depth = 0, capacity = MATCH_STACK_INLINE;
	int result = 0;

	if (!tree->root)
		return 0;
	stack[depth++] = (struct match_step){ tree->root, 0 };
	while (depth > 0 && result == 0) {
		struct match_step step = stack[--depth];
		const struct wildcard_node *children[2];
		size_t end, count = 0;

		if (step.start > length) {
			/* Every token consumed: a pattern ending here matches. */
			if (step.node->value)
				result = visit(step.node->value, context);
			continue;
		}
		/* ">" takes this token and all after it. */
		if (step.node->any_rest && step.node->any_rest->value &&
		    (result = visit(step.node->any_rest->value, context)) != 0)
			break;
		end = token_end(subject, length, step.start);
		if (step.node->any_one)
			children[count++] = step.node->any_one;
		if ((children[count] = literal_child(tree, step.node, subject + step.start, end - step.start)))
			count++;
		if (depth + count > capacity) {
			struct match_step *grown = malloc(2 * capacity * sizeof(*grown));

			if (!grown) {
				result = -1;
				break;
			}
			memcpy(grown, stack, depth * sizeof(*grown));
			if (stack != inline_stack)
				free(stack);
			stack = grown;
			capacity *= 2;
		}
		for (size_t i = 0; i < count; i++)
			stack[depth++] = (struct match_step){ children[i], end + 1 };
	}
	if (stack != inline_stack)
		free(stack);
	return result;
}

void wildcard_tree_destroy(struct wildcard_tree *tree)
{
	/* Every node but the root is in the table; values are the caller's. */
	struct hash_node **arrays[2] = { tree->edges.buckets, tree->edges.old_buckets };
	size_t masks[2] = { tree->edges.mask, tree->edges.old_mask };

	for (int a = 0; a < 2; a++) {
		for (size_t i = 0; arrays[a] && i <= masks[a]; i++) {
			struct hash_node *edge = arrays[a][i];

			while (edge) {
				struct hash_node *next = edge->next;

				free(hash_entry(edge, struct wildcard_node, edge));
				edge = next;
			}
			arrays[a][i] = NULL;
		}
	}
	free(tree->root);
	tree->root = NULL;
	tree->patterns = 0;
	hash_table_destroy(&tree->edges);
}
