#include <stdio.h>

#include "atomhello.h"

const char *atomhello_version(void) { return ATOMHELLO_VERSION; }

const char *atomhello_arch(void) {
#if defined(__aarch64__)
    return "aarch64";
#elif defined(__x86_64__)
    return "x86_64";
#elif defined(__arm__)
    return "arm";
#else
    return "unknown";
#endif
}

char *atomhello_greet(char *buf, unsigned long size, const char *who) {
    snprintf(buf, size, "hello from %s", who);
    return buf;
}
