/* uuid.c - random UUIDs from the kernel's CSPRNG. */
#include "autoconfig.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "uuid.h"

/* Reads length bytes from /dev/urandom.  Returns 0 or -1 (errno set). */
static int uuid_read_urandom(unsigned char *buffer, size_t length)
{
	int fd;

	do
		fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC | O_NOCTTY);
	while (fd < 0 && errno == EINTR);
	if (fd < 0)
		return -1;

	while (length > 0) {
		ssize_t got = read(fd, buffer, length);

		if (got < 0) {
			if (errno == EINTR)
				continue;
			int saved = errno;
			close(fd);
			errno = saved;
			return -1;
		}
		if (got == 0) {  /* not a real urandom */
			close(fd);
			errno = EIO;
			return -1;
		}
		buffer += got;
		length -= (size_t)got;
	}
	close(fd);
	return 0;
}

int uuid_random_bytes(void *buffer, size_t length)
{
	unsigned char *bytes = buffer;
	size_t done = 0;

	/* getrandom() without flags blocks only until the pool is first
	 * seeded at boot; afterwards it can be interrupted by a signal or
	 * return short reads above 256 bytes, both of which we retry. */
	while (done < length) {
		ssize_t got = getrandom(bytes + done, length - done, 0);

		if (got < 0) {
			if (errno == EINTR)
				continue;
			/* ENOSYS (old kernel, seccomp filter) and the like. */
			return uuid_read_urandom(bytes + done, length - done);
		}
		done += (size_t)got;
	}
	return 0;
}

void uuid_generate_v4(char out[UUID_TEXT_LENGTH + 1])
{
	static const char hex[] = "0123456789abcdef";
	unsigned char bytes[16];
	size_t position = 0;

	if (uuid_random_bytes(bytes, sizeof(bytes)) != 0) {
		fprintf(stderr, "gophermqd: no random bytes from getrandom() or /dev/urandom: %s\n",
		        strerror(errno));
		abort();
	}

	bytes[6] = (unsigned char)((bytes[6] & 0x0f) | 0x40);  /* version 4 */
	bytes[8] = (unsigned char)((bytes[8] & 0x3f) | 0x80);  /* variant 10xx (RFC 4122) */

	for (size_t i = 0; i < sizeof(bytes); i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			out[position++] = '-';
		out[position++] = hex[bytes[i] >> 4];
		out[position++] = hex[bytes[i] & 0x0f];
	}
	out[position] = '\0';
}
