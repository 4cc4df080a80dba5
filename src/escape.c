/* escape.c - JSON string literals for reply bodies (see escape.h). */
#include "autoconfig.h"

#include <string.h>

#include "escape.h"

/* What a byte becomes: 1 = itself, 2 = a two-byte escape, 6 = \u00xx. */
static size_t escaped_size(unsigned char byte)
{
	if (byte >= 0x20)
		return byte == '"' || byte == '\\' ? 2 : 1;
	switch (byte) {
	case '\b': case '\t': case '\n': case '\f': case '\r':
		return 2;
	default:
		return 6;
	}
}

size_t escape_json_length(const char *text, size_t length)
{
	const unsigned char *bytes = (const unsigned char *)text;
	size_t total = 2;

	for (size_t i = 0; i < length; i++)
		total += escaped_size(bytes[i]);
	return total;
}

char *escape_json(char *out, const char *text, size_t length)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *bytes = (const unsigned char *)text;
	size_t plain_start = 0;

	*out++ = '"';
	for (size_t i = 0; i < length; i++) {
		unsigned char byte = bytes[i];

		if (escaped_size(byte) == 1)
			continue;
		memcpy(out, text + plain_start, i - plain_start);
		out += i - plain_start;
		plain_start = i + 1;
		*out++ = '\\';
		switch (byte) {
		case '\b': *out++ = 'b'; break;
		case '\t': *out++ = 't'; break;
		case '\n': *out++ = 'n'; break;
		case '\f': *out++ = 'f'; break;
		case '\r': *out++ = 'r'; break;
		case '"': *out++ = '"'; break;
		case '\\': *out++ = '\\'; break;
		default:
			*out++ = 'u';
			*out++ = '0';
			*out++ = '0';
			*out++ = hex[byte >> 4];
			*out++ = hex[byte & 0xf];
			break;
		}
	}
	memcpy(out, text + plain_start, length - plain_start);
	out += length - plain_start;
	*out++ = '"';
	return out;
}
