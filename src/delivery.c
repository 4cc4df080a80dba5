/* delivery.c - the seq table of a queue's deliveries and the timer heap. */
#include "autoconfig.h"

#include <stdlib.h>
#include <string.h>

#include "delivery.h"

#define DELIVERY_TABLE_INITIAL 16

static size_t delivery_bucket(const struct delivery_table *table, uint64_t seq)
{
	/* Fibonacci hashing: the high bits of seq times 2^64/phi. */
	return (size_t)((seq * UINT64_C(0x9E3779B97F4A7C15)) >> 32) & table->mask;
}

static bool delivery_table_allocated(const struct delivery_table *table)
{
	return table->buckets != NULL && table->buckets != &table->inline_bucket;
}

/* Moves every delivery into a table of bucket_count buckets; when that
 * cannot be allocated the table stays as it is (longer chains). */
static void delivery_table_resize(struct delivery_table *table, size_t bucket_count,
                                  delivery_realloc_fn *allocate)
{
	struct delivery **old = table->buckets;
	size_t old_count = old ? table->mask + 1 : 0;
	struct delivery **buckets;

	if (bucket_count > SIZE_MAX / sizeof(*buckets))
		return;
	buckets = allocate(NULL, bucket_count * sizeof(*buckets));
	if (!buckets) {
		if (!old) {
			table->buckets = &table->inline_bucket;
			table->mask = 0;
		}
		return;
	}
	memset(buckets, 0, bucket_count * sizeof(*buckets));
	table->buckets = buckets;
	table->mask = bucket_count - 1;
	for (size_t i = 0; i < old_count; i++) {
		struct delivery *delivery = old[i];

		while (delivery) {
			struct delivery *next = delivery->table_next;
			size_t bucket = delivery_bucket(table, delivery->message->seq);

			delivery->table_next = buckets[bucket];
			buckets[bucket] = delivery;
			delivery = next;
		}
	}
	if (old != &table->inline_bucket)
		free(old);
	table->inline_bucket = NULL;
}

void delivery_table_insert(struct delivery_table *table, struct delivery *delivery,
                           delivery_realloc_fn *allocate)
{
	size_t bucket;

	if (!delivery_table_allocated(table))
		delivery_table_resize(table, DELIVERY_TABLE_INITIAL, allocate);
	else if (table->count >= table->mask + 1)
		delivery_table_resize(table, (table->mask + 1) * 2, allocate);
	bucket = delivery_bucket(table, delivery->message->seq);
	delivery->table_next = table->buckets[bucket];
	table->buckets[bucket] = delivery;
	table->count++;
}

struct delivery *delivery_table_find(const struct delivery_table *table, uint64_t seq)
{
	struct delivery *delivery;

	if (!table->buckets)
		return NULL;
	for (delivery = table->buckets[delivery_bucket(table, seq)]; delivery;
	     delivery = delivery->table_next)
		if (delivery->message->seq == seq)
			return delivery;
	return NULL;
}

void delivery_table_remove(struct delivery_table *table, struct delivery *delivery)
{
	struct delivery **link = &table->buckets[delivery_bucket(table, delivery->message->seq)];

	while (*link != delivery)
		link = &(*link)->table_next;
	*link = delivery->table_next;
	delivery->table_next = NULL;
	table->count--;
}

void delivery_table_drain(struct delivery_table *table, void (*visit)(struct delivery *, void *),
                          void *context)
{
	if (table->buckets) {
		for (size_t i = 0; i <= table->mask; i++) {
			struct delivery *delivery = table->buckets[i];

			while (delivery) {
				struct delivery *next = delivery->table_next;

				visit(delivery, context);
				delivery = next;
			}
		}
	}
	if (delivery_table_allocated(table))
		free(table->buckets);
	*table = (struct delivery_table){0};
}

/* --- timer heap -------------------------------------------------------- */

uint64_t timer_heap_deadline(const struct timer_heap *heap, const void *item)
{
	uint64_t deadline;

	memcpy(&deadline, (const char *)item + heap->deadline_offset, sizeof(deadline));
	return deadline;
}

static void timer_heap_set_index(struct timer_heap *heap, void *item, uint32_t index)
{
	memcpy((char *)item + heap->index_offset, &index, sizeof(index));
}

static uint32_t timer_heap_index(const struct timer_heap *heap, const void *item)
{
	uint32_t index;

	memcpy(&index, (const char *)item + heap->index_offset, sizeof(index));
	return index;
}

static void timer_heap_place(struct timer_heap *heap, size_t index, void *item)
{
	heap->items[index] = item;
	timer_heap_set_index(heap, item, (uint32_t)index);
}

/* Moves the item at index up while it is earlier than its parent. */
static size_t timer_heap_sift_up(struct timer_heap *heap, size_t index)
{
	void *item = heap->items[index];
	uint64_t deadline = timer_heap_deadline(heap, item);

	while (index > 0) {
		size_t parent = (index - 1) / 2;

		if (timer_heap_deadline(heap, heap->items[parent]) <= deadline)
			break;
		timer_heap_place(heap, index, heap->items[parent]);
		index = parent;
	}
	timer_heap_place(heap, index, item);
	return index;
}

static void timer_heap_sift_down(struct timer_heap *heap, size_t index)
{
	void *item = heap->items[index];
	uint64_t deadline = timer_heap_deadline(heap, item);

	for (;;) {
		size_t child = 2 * index + 1;

		if (child >= heap->count)
			break;
		if (child + 1 < heap->count &&
		    timer_heap_deadline(heap, heap->items[child + 1]) <
		    timer_heap_deadline(heap, heap->items[child]))
			child++;
		if (timer_heap_deadline(heap, heap->items[child]) >= deadline)
			break;
		timer_heap_place(heap, index, heap->items[child]);
		index = child;
	}
	timer_heap_place(heap, index, item);
}

int timer_heap_reserve(struct timer_heap *heap, size_t extra, delivery_realloc_fn *allocate)
{
	size_t capacity = heap->capacity ? heap->capacity : 64;
	void **items;

	if (extra <= heap->capacity - heap->count)
		return 0;
	if (extra > UINT32_MAX - 1 - heap->count)
		return -1;
	while (capacity < heap->count + extra)
		capacity *= 2;
	items = allocate(heap->items, capacity * sizeof(*items));
	if (!items)
		return -1;
	heap->items = items;
	heap->capacity = capacity;
	return 0;
}

bool timer_heap_push(struct timer_heap *heap, void *item)
{
	size_t index = heap->count++;

	heap->items[index] = item;
	return timer_heap_sift_up(heap, index) == 0;
}

void timer_heap_remove(struct timer_heap *heap, void *item)
{
	size_t index = timer_heap_index(heap, item);
	void *last = heap->items[--heap->count];

	timer_heap_set_index(heap, item, UINT32_MAX);
	if (index == heap->count)
		return;
	heap->items[index] = last;
	if (timer_heap_sift_up(heap, index) == index)
		timer_heap_sift_down(heap, index);
}

bool timer_heap_update(struct timer_heap *heap, void *item)
{
	size_t index = timer_heap_index(heap, item);

	if (timer_heap_sift_up(heap, index) == index)
		timer_heap_sift_down(heap, index);
	return heap->items[0] == item;
}

void *timer_heap_first(const struct timer_heap *heap)
{
	return heap->count ? heap->items[0] : NULL;
}

void timer_heap_free(struct timer_heap *heap)
{
	free(heap->items);
	heap->items = NULL;
	heap->count = heap->capacity = 0;
}
