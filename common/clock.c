/* clock.c - see clock.h. */
#include "common/clock.h"

#include <errno.h>

void lkv_sleep_ns(int64_t ns)
{
    struct timespec req, rem;

    if (ns <= 0) {
        return;
    }
    req.tv_sec  = ns / 1000000000LL;
    req.tv_nsec = ns % 1000000000LL;
    while (nanosleep(&req, &rem) != 0 && errno == EINTR) {
        req = rem;
    }
}
