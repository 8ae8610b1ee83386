/* atom-hello: links libatomhello (built in stock/) and zlib (a system library), so a
 * production image is only complete when both, and zlib's own needs, came along. */
#include <stdio.h>
#include <string.h>
#include <sys/utsname.h>
#include <zlib.h>

#include <atomhello.h>

int main(int argc, char **argv) {
    const char *who = argc > 1 ? argv[1] : "atom";
    char greeting[128];
    struct utsname host;
    uLong crc = crc32(0L, Z_NULL, 0);

    crc = crc32(crc, (const Bytef *)who, (uInt)strlen(who));
    uname(&host);
    atomhello_greet(greeting, sizeof greeting, who);
    printf("atom-hello: zlib %s, libatomhello %s (%s), running on %s: %s, crc32 %08lx\n",
           zlibVersion(), atomhello_version(), atomhello_arch(), host.machine, greeting, crc);
    return 0;
}
