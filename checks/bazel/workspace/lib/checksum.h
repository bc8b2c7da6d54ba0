#ifndef BB_CHECKS_CHECKSUM_H
#define BB_CHECKS_CHECKSUM_H

#include <stddef.h>

/* Adler-32 of a buffer. */
unsigned long adler32(const unsigned char *data, size_t len);

/* Adler-32 of the greeting. */
unsigned long greeting_checksum(void);

#endif
