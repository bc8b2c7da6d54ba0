#include "lib/checksum.h"

#include <string.h>

#include "lib/greet.h"

unsigned long adler32(const unsigned char *data, size_t len) {
  unsigned long a = 1, b = 0;
  for (size_t i = 0; i < len; i++) {
    a = (a + data[i]) % 65521;
    b = (b + a) % 65521;
  }
  return (b << 16) | a;
}

unsigned long greeting_checksum(void) {
  const char *g = greeting();
  return adler32((const unsigned char *)g, strlen(g));
}
