/* auth.h - bearer-token access control.
 *
 * A token file holds one token per line; blank lines and lines starting
 * with '#' are ignored, surrounding white space is trimmed.  The file must
 * not be readable or writable by "others" (mode o-rw), as with any secret.
 * A request is authorized when its "Authorization: Bearer TOKEN" header
 * names one of the tokens.
 */
#ifndef GOPHERMQ_AUTH_H
#define GOPHERMQ_AUTH_H

#include <stdbool.h>
#include <stddef.h>

struct auth_tokens;

/* Reads path.  Returns the token set, or NULL with a reason naming the
 * file in error (unreadable, readable by others, no token in it, ...). */
struct auth_tokens *auth_tokens_load(const char *path, char *error, size_t error_size);
void auth_tokens_free(struct auth_tokens *tokens);

/* True when header (the Authorization header's value, may be NULL) is
 * "Bearer " followed by one of tokens.  Each comparison takes time that
 * depends only on the lengths, not on where the bytes differ, and every
 * token is compared, so the answer's timing does not reveal a prefix. */
bool auth_tokens_allow(const struct auth_tokens *tokens, const char *header);

/* A token set that can be swapped while other threads check requests. */
struct auth_guard;

/* Returns a guard holding tokens (NULL = authentication off), or NULL
 * when out of memory.  The guard owns tokens. */
struct auth_guard *auth_guard_new(struct auth_tokens *tokens);
void auth_guard_free(struct auth_guard *guard);

/* Replaces the token set (NULL = off) and frees the old one once no
 * thread is checking against it. */
void auth_guard_replace(struct auth_guard *guard, struct auth_tokens *tokens);

/* True when authentication is off or header carries a valid token. */
bool auth_guard_allow(struct auth_guard *guard, const char *header);

/* True when a token set is in force: a caller may skip looking up the
 * header when it is not (auth_guard_allow() would allow anything). */
bool auth_guard_enabled(struct auth_guard *guard);

#endif
