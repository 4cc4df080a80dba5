/* config.h - the daemon's configuration: parse, validate, compare.
 *
 * A configuration is read whole into a fresh struct config and validated
 * before anyone uses it; reload builds a new one and swaps it in only on
 * success.  Every option appears once in the table in config.c, with its
 * default and whether a reload (SIGHUP) applies it.
 */
#ifndef GOPHERMQ_CONFIG_H
#define GOPHERMQ_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "log.h"

enum config_persistence {
	CONFIG_PERSISTENCE_NONE,
	CONFIG_PERSISTENCE_LOG,
};

struct config {
	char *listen;                 /* API listen address (IPv4/IPv6 literal) */
	unsigned port;                /* API port; 0 = any free port */
	char *metrics_listen;
	unsigned metrics_port;        /* 0 = any free port */
	uint64_t max_pending;         /* message copies, all subscribers; 0 = unlimited */
	uint64_t max_pending_bytes;   /* 0 = unlimited */
	uint64_t max_message_size;    /* largest request body and payload, bytes */
	uint64_t max_subject_length;  /* bytes */
	unsigned pool_size;           /* async publish workers */
	unsigned async_queue_size;    /* async publishes waiting for a worker */
	unsigned http_threads;        /* HTTP worker threads; 0 = one per usable CPU */
	unsigned max_connections;     /* concurrent API connections */
	unsigned connection_timeout;  /* idle seconds before a connection is closed; 0 = never */
	uint64_t subscriber_ttl;      /* idle seconds before a subscriber expires; 0 = never */
	uint64_t ack_wait_ms;         /* default ack wait of an ack subscription, ms */
	unsigned fetch_max_batch;     /* most messages one fetch returns; 0 = no cap */
	uint64_t fetch_max_wait_ms;   /* a fetch's wait_ms is clamped to this, ms */
	unsigned max_batch_messages;  /* most messages in one batch publish */
	uint64_t max_batch_bytes;     /* largest batch publish body, bytes */
	unsigned max_parked_fetches;  /* most fetches held waiting; 0 = none held */
	uint64_t message_ttl_ms;      /* time to live of a message published without ttl_ms; 0 = none */
	unsigned stream_keepalive_s;  /* seconds between keepalive comments on a stream */
	char *cors_origin;            /* Access-Control-Allow-Origin of API replies; "" = none */
	unsigned persistence;         /* enum config_persistence */
	char *data_dir;               /* the journal's directory */
	unsigned fsync;               /* enum journal_fsync */
	uint64_t segment_size;        /* bytes preallocated per journal segment */
	uint64_t compact_min_size;    /* log bytes before a compaction is considered */
	enum log_level log_level;
	char *auth_token_file;        /* "" = no API authentication */
	char *metrics_auth_token_file;/* "" = no metrics authentication */
	char *tls_cert_file;          /* "" = plain HTTP */
	char *tls_key_file;
};

/* Fills config with the built-in defaults.  Strings are allocated; release
 * with config_clear().  Returns 0, or -1 when out of memory. */
int config_set_defaults(struct config *config);

/* Reads and validates path into config (which need not be initialised).
 * Options not in the file keep their defaults.  On failure returns -1,
 * leaves config cleared, and writes a one-line reason naming the file, the
 * line where known and the option into error (at most error_size bytes).
 * Returns 0 on success. */
int config_load(const char *path, struct config *config, char *error, size_t error_size);

/* Frees the strings of config and zeroes it. */
void config_clear(struct config *config);

/* Calls report(name, context) for every option whose value differs between
 * old and new and which a reload cannot apply (it needs a restart).
 * Returns how many such options there were. */
size_t config_restart_changes(const struct config *old_config, const struct config *new_config,
                              void (*report)(const char *option, void *context), void *context);

/* Copies into new_config the values of every option a reload cannot apply,
 * taken from running, so that new_config describes what actually runs.
 * Returns 0, or -1 when out of memory (new_config unchanged). */
int config_keep_restart_options(struct config *new_config, const struct config *running);

/* Describes every option, in file order, for documentation tests. */
struct config_option_info {
	const char *name;
	const char *default_text;  /* as written in the config file */
	bool reloadable;
};
const struct config_option_info *config_options(size_t *count);

#endif
