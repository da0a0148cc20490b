/* clock.h - monotonic time in nanoseconds and sleeping. Thread-safe. */
#ifndef LKV_COMMON_CLOCK_H
#define LKV_COMMON_CLOCK_H

#include <stdint.h>
#include <time.h>

#ifdef __cplusplus
extern "C" {
#endif

/* CLOCK_MONOTONIC in ns. */
static inline int64_t lkv_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Wall clock (CLOCK_REALTIME) in ns, for timestamps that leave the process. */
static inline int64_t lkv_wall_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Sleep for ns nanoseconds (restarts on EINTR). */
void lkv_sleep_ns(int64_t ns);

#ifdef __cplusplus
}
#endif

#endif /* LKV_COMMON_CLOCK_H */
