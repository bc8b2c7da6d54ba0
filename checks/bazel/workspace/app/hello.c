#include <stdio.h>

#include "lib/checksum.h"
#include "lib/greet.h"

int main(void) {
  printf("%s (adler32 %08lx)\n", greeting(), greeting_checksum());
  return 0;
}
