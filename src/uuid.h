/* uuid.h - random (version 4) UUIDs and the process's source of secret
 * random bytes, both read from the kernel's CSPRNG. */
#ifndef GOPHERMQ_UUID_H
#define GOPHERMQ_UUID_H

#include <stddef.h>

/* Length of the text form, without the terminating NUL. */
#define UUID_TEXT_LENGTH 36

/* Fills buffer with length bytes from getrandom(2), falling back to
 * /dev/urandom when the system call is unavailable or fails.  Retries on
 * EINTR and short reads.  Returns 0, or -1 (errno set) when neither source
 * works; buffer is then unspecified and must not be used. */
int uuid_random_bytes(void *buffer, size_t length);

/* Writes a new random UUID v4 to out as 36 lowercase characters in the
 * 8-4-4-4-12 form plus a NUL.  The randomness cannot be guessed, so the
 * id can serve as a bearer token.  Aborts the process, after a message on
 * stderr, if the kernel gives no random bytes at all (never seen on Linux
 * >= 3.17): handing out predictable ids would be worse. */
void uuid_generate_v4(char out[UUID_TEXT_LENGTH + 1]);

#endif
