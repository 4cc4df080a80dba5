/* escape.h - JSON string literals for reply bodies.
 *
 * The escaping is json-c's (with JSON_C_TO_STRING_NOSLASHESCAPE), byte for
 * byte: '"' and '\\' escaped, \b \f \n \r \t as such, other control
 * characters as \u00xx (lower-case hex), everything else as it is.  Input
 * is UTF-8 the request reader has already validated; it may hold NUL.
 */
#ifndef GOPHERMQ_ESCAPE_H
#define GOPHERMQ_ESCAPE_H

#include <stddef.h>

/* Bytes of the literal for text, quotes included.  Never more than
 * 6 * length + 2. */
size_t escape_json_length(const char *text, size_t length);

/* Writes the literal for text (escape_json_length() bytes, not
 * NUL-terminated) at out; returns the end of what it wrote. */
char *escape_json(char *out, const char *text, size_t length);

#endif
