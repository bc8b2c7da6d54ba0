#ifndef BB_CHECKS_GREET_H
#define BB_CHECKS_GREET_H

const char *greeting(void);

#endif
