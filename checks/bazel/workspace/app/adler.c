/* Prints the Adler-32 of each file named on the command line. */
#include <stdio.h>
#include <stdlib.h>

#include "lib/checksum.h"

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    FILE *f = fopen(argv[i], "rb");
    if (f == NULL) {
      perror(argv[i]);
      return 1;
    }
    static unsigned char buffer[1 << 16];
    unsigned long a = 1, b = 0;
    size_t n;
    while ((n = fread(buffer, 1, sizeof buffer, f)) > 0) {
      for (size_t j = 0; j < n; j++) {
        a = (a + buffer[j]) % 65521;
        b = (b + a) % 65521;
      }
    }
    fclose(f);
    printf("%08lx %s\n", (b << 16) | a, argv[i]);
  }
  return 0;
}
