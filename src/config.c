/* config.c - the configuration file: one option table, parsed with
 * libconfuse, validated with line numbers, compared for reload. */
#include "autoconfig.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <confuse.h>

#include "config.h"

/* How a value is checked and where it is stored in struct config. */
enum option_kind {
	KIND_UNSIGNED,  /* integer in minimum..maximum, stored as unsigned */
	KIND_UINT64,    /* integer in minimum..maximum, stored as uint64_t */
	KIND_ADDRESS,   /* IPv4 or IPv6 literal, stored as char * */
	KIND_PATH,      /* any string ("" = unset), stored as char * */
	KIND_LOG_LEVEL, /* a level name, stored as enum log_level */
	KIND_CHOICE,    /* one of the spec's choices, stored as its index (unsigned) */
};

struct option_spec {
	const char *name;
	enum option_kind kind;
	size_t offset;            /* of the member in struct config */
	size_t size;              /* of that member, checked against kind */
	const char *default_text; /* as written in the file; the defaults come from it */
	long long minimum;        /* integers only */
	long long maximum;        /* integers only; NO_MAXIMUM = none */
	bool reloadable;          /* a reload applies it; else it needs a restart */
	const char *const *choices;  /* KIND_CHOICE: NULL-terminated, in enum order */
};

#define RELOAD true
#define RESTART false
#define NO_MAXIMUM LLONG_MAX

/* The option name is the member name, so the two cannot drift apart. */
#define OPTION(member, kind, default_text, minimum, maximum, reloadable) \
	{ #member, kind, offsetof(struct config, member), sizeof(((struct config *)0)->member), \
	  default_text, minimum, maximum, reloadable, NULL }
#define OPTION_CHOICE(member, choices, default_text, reloadable) \
	{ #member, KIND_CHOICE, offsetof(struct config, member), sizeof(((struct config *)0)->member), \
	  default_text, 0, 0, reloadable, choices }

/* In the order of enum config_persistence and enum journal_fsync. */
static const char *const persistence_choices[] = { "none", "log", NULL };
static const char *const fsync_choices[] = { "never", "everysec", "always", NULL };

/* Every option, once, in the order of the shipped gophermq.conf. */
static const struct option_spec option_table[] = {
	OPTION(listen,                  KIND_ADDRESS,   "\"127.0.0.1\"", 0, 0,          RESTART),
	OPTION(port,                    KIND_UNSIGNED,  "8082",          0, 65535,      RESTART),
	OPTION(metrics_listen,          KIND_ADDRESS,   "\"127.0.0.1\"", 0, 0,          RESTART),
	OPTION(metrics_port,            KIND_UNSIGNED,  "9001",          0, 65535,      RESTART),
	OPTION(max_pending,             KIND_UINT64,    "1000000",       0, NO_MAXIMUM, RELOAD),
	OPTION(max_pending_bytes,       KIND_UINT64,    "268435456",     0, NO_MAXIMUM, RELOAD),
	OPTION(max_message_size,        KIND_UINT64,    "1048576",       1, 1073741824, RELOAD),
	OPTION(max_subject_length,      KIND_UINT64,    "256",           1, 65536,      RELOAD),
	OPTION(pool_size,               KIND_UNSIGNED,  "4",             1, 1024,       RELOAD),
	OPTION(async_queue_size,        KIND_UNSIGNED,  "10000",         1, 10000000,   RELOAD),
	OPTION(http_threads,            KIND_UNSIGNED,  "0",             0, 256,        RESTART),
	OPTION(max_connections,         KIND_UNSIGNED,  "1024",          1, 1000000,    RESTART),
	OPTION(connection_timeout,      KIND_UNSIGNED,  "30",            0, 86400,      RESTART),
	OPTION(subscriber_ttl,          KIND_UINT64,    "3600",          0, NO_MAXIMUM, RELOAD),
	OPTION(ack_wait_ms,             KIND_UINT64,    "30000",         1, 86400000,   RELOAD),
	OPTION(fetch_max_batch,         KIND_UNSIGNED,  "0",             0, 1000000000, RELOAD),
	OPTION(fetch_max_wait_ms,       KIND_UINT64,    "30000",         0, 3600000,    RELOAD),
	OPTION(max_batch_messages,      KIND_UNSIGNED,  "1000",          1, 1000000,    RELOAD),
	OPTION(max_batch_bytes,         KIND_UINT64,    "8388608",       1024, 1073741824, RELOAD),
	OPTION(max_parked_fetches,      KIND_UNSIGNED,  "10000",         0, 10000000,   RELOAD),
	OPTION(message_ttl_ms,          KIND_UINT64,    "0",             0, 31536000000LL, RELOAD),
	OPTION(stream_keepalive_s,      KIND_UNSIGNED,  "15",            1, 3600,       RELOAD),
	OPTION(cors_origin,             KIND_PATH,      "\"\"",          0, 0,          RESTART),
	OPTION_CHOICE(persistence,      persistence_choices, "\"none\"", RESTART),
	OPTION(data_dir,                KIND_PATH,      "\"/var/lib/gophermq\"", 0, 0, RESTART),
	OPTION_CHOICE(fsync,            fsync_choices,  "\"everysec\"",  RELOAD),
	OPTION(segment_size,            KIND_UINT64,    "67108864",      65536, 1073741824, RESTART),
	OPTION(compact_min_size,        KIND_UINT64,    "67108864",      65536, NO_MAXIMUM, RELOAD),
	OPTION(log_level,               KIND_LOG_LEVEL, "\"info\"",      0, 0,          RELOAD),
	OPTION(auth_token_file,         KIND_PATH,      "\"\"",          0, 0,          RELOAD),
	OPTION(metrics_auth_token_file, KIND_PATH,      "\"\"",          0, 0,          RELOAD),
	OPTION(tls_cert_file,           KIND_PATH,      "\"\"",          0, 0,          RESTART),
	OPTION(tls_key_file,            KIND_PATH,      "\"\"",          0, 0,          RESTART),
};

#define OPTION_COUNT (sizeof(option_table) / sizeof(option_table[0]))

/* A configuration file larger than this is surely the wrong file. */
#define CONFIG_FILE_MAX (1024 * 1024)

/* The parsed form of one valid value. */
struct option_value {
	long long number;       /* KIND_UNSIGNED, KIND_UINT64, KIND_CHOICE */
	const char *string;     /* KIND_ADDRESS, KIND_PATH */
	enum log_level level;   /* KIND_LOG_LEVEL */
};

static const struct option_spec *option_find(const char *name)
{
	for (size_t i = 0; i < OPTION_COUNT; i++) {
		if (strcmp(option_table[i].name, name) == 0)
			return &option_table[i];
	}
	return NULL;
}

/* Parses a base-10 integer: an optional '-' and digits, nothing else.
 * Returns 0, or -1 with errno ERANGE (too large for long long) or EINVAL. */
static int integer_parse(const char *text, long long *number)
{
	const char *digits = text[0] == '-' ? text + 1 : text;

	if (digits[0] == '\0' || strspn(digits, "0123456789") != strlen(digits)) {
		errno = EINVAL;
		return -1;
	}
	errno = 0;
	*number = strtoll(text, NULL, 10);
	if (errno != 0)
		return -1;
	return 0;
}

/* Checks text against spec.  Returns 0 and fills *value (whose string
 * points into text), or -1 and writes why into reason. */
static int option_parse(const struct option_spec *spec, const char *text, struct option_value *value,
                        char *reason, size_t reason_size)
{
	unsigned char address[sizeof(struct in6_addr)];
	char range[64];

	memset(value, 0, sizeof(*value));
	switch (spec->kind) {
	case KIND_UNSIGNED:
	case KIND_UINT64:
		if (spec->maximum == NO_MAXIMUM)
			snprintf(range, sizeof(range), "%lld..", spec->minimum);
		else
			snprintf(range, sizeof(range), "%lld..%lld", spec->minimum, spec->maximum);
		if (integer_parse(text, &value->number) != 0) {
			if (errno == ERANGE)
				snprintf(reason, reason_size, "value %s is out of range (%s)", text, range);
			else
				snprintf(reason, reason_size, "value '%s' is not an integer", text);
			return -1;
		}
		if (value->number < spec->minimum || value->number > spec->maximum) {
			snprintf(reason, reason_size, "value %s is out of range (%s)", text, range);
			return -1;
		}
		return 0;
	case KIND_ADDRESS:
		if (inet_pton(AF_INET, text, address) != 1 && inet_pton(AF_INET6, text, address) != 1) {
			snprintf(reason, reason_size, "value '%s' is not an IPv4 or IPv6 address", text);
			return -1;
		}
		value->string = text;
		return 0;
	case KIND_PATH:
		value->string = text;
		return 0;
	case KIND_LOG_LEVEL:
		if (log_level_parse(text, &value->level) != 0) {
			snprintf(reason, reason_size,
			         "value '%s' is not one of error, warning, notice, info, debug", text);
			return -1;
		}
		return 0;
	case KIND_CHOICE: {
		size_t used;

		for (long long i = 0; spec->choices[i]; i++)
			if (strcmp(spec->choices[i], text) == 0) {
				value->number = i;
				return 0;
			}
		used = (size_t)snprintf(reason, reason_size, "value '%s' is not one of", text);
		for (size_t i = 0; spec->choices[i] && used < reason_size; i++)
			used += (size_t)snprintf(reason + used, reason_size - used, "%s %s",
			                         i > 0 ? "," : "", spec->choices[i]);
		return -1;
	}
	}
	snprintf(reason, reason_size, "unknown option kind");
	return -1;
}

/* Stores a parsed value into config, replacing (and freeing) any string
 * there.  Returns 0, or -1 when out of memory. */
static int option_store(const struct option_spec *spec, const struct option_value *value,
                        struct config *config)
{
	char *member = (char *)config + spec->offset;
	char *copy;

	switch (spec->kind) {
	case KIND_UNSIGNED:
	case KIND_CHOICE:
		assert(spec->size == sizeof(unsigned) && spec->maximum <= UINT_MAX);
		*(unsigned *)(void *)member = (unsigned)value->number;
		return 0;
	case KIND_UINT64:
		assert(spec->size == sizeof(uint64_t));
		*(uint64_t *)(void *)member = (uint64_t)value->number;
		return 0;
	case KIND_ADDRESS:
	case KIND_PATH:
		assert(spec->size == sizeof(char *));
		copy = strdup(value->string);
		if (copy == NULL)
			return -1;
		free(*(char **)(void *)member);
		*(char **)(void *)member = copy;
		return 0;
	case KIND_LOG_LEVEL:
		assert(spec->size == sizeof(enum log_level));
		*(enum log_level *)(void *)member = value->level;
		return 0;
	}
	return -1;
}

static bool option_is_string(const struct option_spec *spec)
{
	return spec->kind == KIND_ADDRESS || spec->kind == KIND_PATH;
}

static const char *option_string(const struct option_spec *spec, const struct config *config)
{
	const char *string = *(char *const *)(const void *)((const char *)config + spec->offset);

	return string != NULL ? string : "";
}

static bool option_equal(const struct option_spec *spec, const struct config *a, const struct config *b)
{
	const char *member_a = (const char *)a + spec->offset;
	const char *member_b = (const char *)b + spec->offset;

	if (option_is_string(spec))
		return strcmp(option_string(spec, a), option_string(spec, b)) == 0;
	return memcmp(member_a, member_b, spec->size) == 0;
}

int config_set_defaults(struct config *config)
{
	memset(config, 0, sizeof(*config));
	for (size_t i = 0; i < OPTION_COUNT; i++) {
		const struct option_spec *spec = &option_table[i];
		struct option_value value;
		char text[64];
		char reason[128];
		size_t length = strlen(spec->default_text);

		/* String defaults are quoted, as in the file; none has escapes. */
		if (spec->default_text[0] == '"' && length >= 2)
			snprintf(text, sizeof(text), "%.*s", (int)(length - 2), spec->default_text + 1);
		else
			snprintf(text, sizeof(text), "%s", spec->default_text);
		if (option_parse(spec, text, &value, reason, sizeof(reason)) != 0 ||
		    option_store(spec, &value, config) != 0) {
			config_clear(config);
			return -1;
		}
	}
	return 0;
}

void config_clear(struct config *config)
{
	for (size_t i = 0; i < OPTION_COUNT; i++) {
		const struct option_spec *spec = &option_table[i];

		if (option_is_string(spec))
			free(*(char **)(void *)((char *)config + spec->offset));
	}
	memset(config, 0, sizeof(*config));
}

/* ------------------------------------------------------------------------
 * Loading a file
 * ------------------------------------------------------------------------ */

/* The load in progress.  libconfuse's callbacks take no user pointer and
 * its scanner keeps global state, so loads are serialised by load_lock and
 * the callbacks find their load here. */
struct load_context {
	const char *path;
	char *error;
	size_t error_size;
	bool failed;                /* error holds the first error */
	int lines[OPTION_COUNT];    /* where each option was last set; 0 = not set */
};

static pthread_mutex_t load_lock = PTHREAD_MUTEX_INITIALIZER;
static struct load_context *current_load;

/* Writes "path:line: message" (or "path: message" for line 0) into the
 * load's error buffer, unless an earlier error is already there.  Control
 * characters (from quoted values) become '?' to keep it one line. */
static void load_verror(struct load_context *load, int line, const char *format, va_list args)
	__attribute__((format(printf, 3, 0)));
static void load_verror(struct load_context *load, int line, const char *format, va_list args)
{
	int used;

	if (load->failed)
		return;
	load->failed = true;
	if (load->error == NULL || load->error_size == 0)
		return;
	if (line > 0)
		used = snprintf(load->error, load->error_size, "%s:%d: ", load->path, line);
	else
		used = snprintf(load->error, load->error_size, "%s: ", load->path);
	if (used >= 0 && (size_t)used < load->error_size)
		vsnprintf(load->error + used, load->error_size - (size_t)used, format, args);
	for (char *c = load->error; *c != '\0'; c++) {
		if ((unsigned char)*c < 0x20 || *c == 0x7f)
			*c = '?';
	}
}

static void load_error(struct load_context *load, int line, const char *format, ...)
	__attribute__((format(printf, 3, 4)));
static void load_error(struct load_context *load, int line, const char *format, ...)
{
	va_list args;

	va_start(args, format);
	load_verror(load, line, format, args);
	va_end(args);
}

/* libconfuse's error function: its own messages (syntax, unknown option)
 * go into the caller's buffer instead of stderr. */
static void confuse_error(cfg_t *cfg, const char *format, va_list args)
	__attribute__((format(printf, 2, 0)));
static void confuse_error(cfg_t *cfg, const char *format, va_list args)
{
	if (current_load != NULL)
		load_verror(current_load, cfg->line, format, args);
}

/* libconfuse's parse callback, called for each value as it is read (so
 * cfg->line is the value's line).  Every option is a libconfuse string and
 * is checked here: this gives one error style, base-10 integers only, and
 * the line for each option.  Returns 0 to accept, -1 to stop parsing. */
static int confuse_check_value(cfg_t *cfg, cfg_opt_t *opt, const char *text, void *result)
{
	const struct option_spec *spec = option_find(opt->name);
	struct option_value value;
	char reason[256];

	if (spec == NULL || text == NULL || current_load == NULL)
		return -1;
	if (option_parse(spec, text, &value, reason, sizeof(reason)) != 0) {
		load_error(current_load, cfg->line, "%s: %s", spec->name, reason);
		return -1;
	}
	current_load->lines[spec - option_table] = cfg->line;
	*(const char **)result = text;
	return 0;
}

/* Reads the whole of path into a NUL-terminated buffer the caller frees.
 * Returns NULL with the reason in load on failure. */
static char *file_read(struct load_context *load)
{
	size_t length = 0;
	char *text;
	int fd;

	fd = open(load->path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		load_error(load, 0, "cannot open: %s", strerror(errno));
		return NULL;
	}
	text = malloc(CONFIG_FILE_MAX + 1);
	if (text == NULL) {
		load_error(load, 0, "out of memory");
		close(fd);
		return NULL;
	}
	for (;;) {
		ssize_t got = read(fd, text + length, CONFIG_FILE_MAX + 1 - length);

		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			load_error(load, 0, "cannot read: %s", strerror(errno));
			goto fail;
		}
		if (got == 0)
			break;
		length += (size_t)got;
		if (length > CONFIG_FILE_MAX) {
			load_error(load, 0, "larger than %d bytes", CONFIG_FILE_MAX);
			goto fail;
		}
	}
	close(fd);
	text[length] = '\0';
	if (strlen(text) != length) {
		load_error(load, 0, "contains a NUL byte");
		free(text);
		return NULL;
	}
	return text;

fail:
	close(fd);
	free(text);
	return NULL;
}

/* Returns the character after the quoted string starting at text (at its
 * end if unterminated), skipping escapes and, in "...", ${VAR} references,
 * as libconfuse's scanner does. */
static char *quoted_skip(char *text)
{
	char quote = *text++;

	while (*text != '\0' && *text != quote) {
		if (text[0] == '\\' && text[1] != '\0')
			text += 2;
		else if (quote == '"' && text[0] == '$' && text[1] == '{' && strchr(text + 2, '}') != NULL)
			text = strchr(text + 2, '}') + 1;
		else
			text++;
	}
	return *text == quote ? text + 1 : text;
}

/* libconfuse 3.3 counts each '#' or '//' comment as three lines and each
 * block comment as one line too many, so its line numbers drift after the
 * first comment (the shipped file is mostly comments).  This replaces every
 * comment with spaces, keeping newlines, following the rules of its
 * scanner, so that it counts lines right.  Returns 0, or the line of an
 * unterminated block comment. */
static int comments_blank(char *text)
{
	int line = 1;

	while (*text != '\0') {
		if (text[0] == '#' || (text[0] == '/' && text[1] == '/')) {
			while (*text != '\0' && *text != '\n')
				*text++ = ' ';
		} else if (text[0] == '/' && text[1] == '*') {
			char *end = strstr(text + 2, "*/");

			if (end == NULL)
				return line;
			for (; text < end + 2; text++) {
				if (*text == '\n')
					line++;
				else
					*text = ' ';
			}
		} else if (text[0] == '"' || text[0] == '\'') {
			char *end = quoted_skip(text);

			for (; text < end; text++) {
				if (*text == '\n')
					line++;
			}
		} else if (text[0] == '$' && text[1] == '{' && strchr(text + 2, '}') != NULL) {
			text = strchr(text + 2, '}') + 1;
		} else {
			if (*text == '\n')
				line++;
			text++;
		}
	}
	return 0;
}

/* Parses text (comments already blanked) and stores every option it sets
 * over the defaults already in config.  Returns 0, or -1 with the reason in
 * load.  Call with load_lock held and current_load == load. */
static int options_parse(struct load_context *load, const char *text, struct config *config)
{
	cfg_opt_t options[OPTION_COUNT + 1];
	cfg_t *cfg;
	int result = -1;

	for (size_t i = 0; i < OPTION_COUNT; i++)
		options[i] = (cfg_opt_t)CFG_STR_CB(option_table[i].name, NULL, CFGF_NODEFAULT,
		                                   confuse_check_value);
	options[OPTION_COUNT] = (cfg_opt_t)CFG_END();

	cfg = cfg_init(options, CFGF_NONE);
	if (cfg == NULL) {
		load_error(load, 0, "out of memory");
		return -1;
	}
	cfg_set_error_function(cfg, confuse_error);
	if (cfg_parse_buf(cfg, text) != CFG_SUCCESS) {
		load_error(load, 0, "cannot parse");  /* only if libconfuse said nothing */
		goto out;
	}
	for (size_t i = 0; i < OPTION_COUNT; i++) {
		const struct option_spec *spec = &option_table[i];
		struct option_value value;
		char reason[256];

		if (cfg_size(cfg, spec->name) == 0)
			continue;
		if (option_parse(spec, cfg_getstr(cfg, spec->name), &value, reason, sizeof(reason)) != 0) {
			load_error(load, load->lines[i], "%s: %s", spec->name, reason);
			goto out;
		}
		if (option_store(spec, &value, config) != 0) {
			load_error(load, 0, "out of memory");
			goto out;
		}
	}
	result = 0;
out:
	cfg_free(cfg);
	return result;
}

/* Checks what no single option can: the TLS files come as a pair; and
 * that cors_origin can be sent as a header value. */
static int config_validate(struct load_context *load, const struct config *config)
{
	const struct option_spec *cors = option_find("cors_origin");
	const struct option_spec *cert = option_find("tls_cert_file");
	const struct option_spec *key = option_find("tls_key_file");
	bool have_cert = config->tls_cert_file[0] != '\0';
	bool have_key = config->tls_key_file[0] != '\0';

	if (have_cert && !have_key) {
		load_error(load, load->lines[cert - option_table], "tls_cert_file: set without tls_key_file");
		return -1;
	}
	if (have_key && !have_cert) {
		load_error(load, load->lines[key - option_table], "tls_key_file: set without tls_cert_file");
		return -1;
	}
	for (const char *c = config->cors_origin; *c; c++) {
		if ((unsigned char)*c < 0x21 || (unsigned char)*c > 0x7e) {
			load_error(load, load->lines[cors - option_table],
			           "cors_origin: not an origin (no spaces or control characters)");
			return -1;
		}
	}
	return 0;
}

int config_load(const char *path, struct config *config, char *error, size_t error_size)
{
	struct load_context load = { .path = path, .error = error, .error_size = error_size };
	char *text;
	int result = -1;
	int line;

	memset(config, 0, sizeof(*config));
	if (error != NULL && error_size > 0)
		error[0] = '\0';

	text = file_read(&load);
	if (text == NULL)
		return -1;
	line = comments_blank(text);
	if (line != 0) {
		load_error(&load, line, "unterminated /* comment");
		free(text);
		return -1;
	}
	if (config_set_defaults(config) != 0) {
		load_error(&load, 0, "out of memory");
		free(text);
		return -1;
	}

	pthread_mutex_lock(&load_lock);
	current_load = &load;
	if (options_parse(&load, text, config) == 0 && config_validate(&load, config) == 0)
		result = 0;
	current_load = NULL;
	pthread_mutex_unlock(&load_lock);

	free(text);
	if (result != 0)
		config_clear(config);
	return result;
}

/* ------------------------------------------------------------------------
 * Comparing and describing
 * ------------------------------------------------------------------------ */

size_t config_restart_changes(const struct config *old_config, const struct config *new_config,
                              void (*report)(const char *option, void *context), void *context)
{
	size_t changes = 0;

	for (size_t i = 0; i < OPTION_COUNT; i++) {
		const struct option_spec *spec = &option_table[i];

		if (spec->reloadable || option_equal(spec, old_config, new_config))
			continue;
		changes++;
		if (report != NULL)
			report(spec->name, context);
	}
	return changes;
}

/* All copies are made before anything is replaced, so that running out of
 * memory leaves new_config as it was. */
int config_keep_restart_options(struct config *new_config, const struct config *running)
{
	char *copies[OPTION_COUNT] = { NULL };

	for (size_t i = 0; i < OPTION_COUNT; i++) {
		const struct option_spec *spec = &option_table[i];

		if (spec->reloadable || !option_is_string(spec))
			continue;
		copies[i] = strdup(option_string(spec, running));
		if (copies[i] == NULL) {
			for (size_t j = 0; j < i; j++)
				free(copies[j]);
			return -1;
		}
	}
	for (size_t i = 0; i < OPTION_COUNT; i++) {
		const struct option_spec *spec = &option_table[i];
		char *member = (char *)new_config + spec->offset;

		if (spec->reloadable)
			continue;
		if (option_is_string(spec)) {
			free(*(char **)(void *)member);
			*(char **)(void *)member = copies[i];
		} else {
			memcpy(member, (const char *)running + spec->offset, spec->size);
		}
	}
	return 0;
}

static struct config_option_info option_infos[OPTION_COUNT];
static pthread_once_t option_infos_once = PTHREAD_ONCE_INIT;

static void option_infos_fill(void)
{
	for (size_t i = 0; i < OPTION_COUNT; i++) {
		option_infos[i].name = option_table[i].name;
		option_infos[i].default_text = option_table[i].default_text;
		option_infos[i].reloadable = option_table[i].reloadable;
	}
}

const struct config_option_info *config_options(size_t *count)
{
	pthread_once(&option_infos_once, option_infos_fill);
	if (count != NULL)
		*count = OPTION_COUNT;
	return option_infos;
}
