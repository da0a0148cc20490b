/* log.h - leveled logging to stderr.
 *
 * The level is tested before the arguments are evaluated, so disabled
 * messages cost one compare. Messages are lowercase, without a trailing
 * period, values after words ("block 17 of seq 4"). Each .c file may
 * #define LKV_LOG_MODULE "name" before including this header.
 *
 * Threading: lkv_log_emit() may be called from any thread; each message is
 * written with one fprintf (lines from different threads do not interleave).
 * lkv_log_level is set once at start-up, before threads start.
 */
#ifndef LKV_COMMON_LOG_H
#define LKV_COMMON_LOG_H

#include <stdarg.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    LKV_LOG_LEVEL_ERROR = 0, /* this operation failed */
    LKV_LOG_LEVEL_WARN,      /* unexpected, but we continue */
    LKV_LOG_LEVEL_INFO,      /* lifecycle: start, stop, membership */
    LKV_LOG_LEVEL_DEBUG,     /* per object, not per token */
    LKV_LOG_LEVEL_TRACE      /* per request / step */
} lkv_log_level_t;

extern lkv_log_level_t lkv_log_level;

#ifndef LKV_LOG_MODULE
#define LKV_LOG_MODULE "lkv"
#endif

void lkv_log_emit(lkv_log_level_t level, const char *module, const char *file,
                  int line, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Parse "error|warn|info|debug|trace"; returns 0 on success, -1 otherwise. */
int lkv_log_level_parse(const char *text, lkv_log_level_t *level_p);

/* Set the level from $LKV_LOG_LEVEL when it is set and valid. */
void lkv_log_init_from_env(void);

/* A prefix such as "[rank 1] " printed before every message (copied). */
void lkv_log_set_prefix(const char *prefix);

__attribute__((noreturn)) void lkv_panic(const char *file, int line,
                                         const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define LKV_LOG(level_, ...)                                                   \
    do {                                                                       \
        if ((level_) <= lkv_log_level) {                                       \
            lkv_log_emit((level_), LKV_LOG_MODULE, __FILE__, __LINE__,         \
                         __VA_ARGS__);                                         \
        }                                                                      \
    } while (0)

#define LKV_LOG_ERROR(...) LKV_LOG(LKV_LOG_LEVEL_ERROR, __VA_ARGS__)
#define LKV_LOG_WARN(...)  LKV_LOG(LKV_LOG_LEVEL_WARN, __VA_ARGS__)
#define LKV_LOG_INFO(...)  LKV_LOG(LKV_LOG_LEVEL_INFO, __VA_ARGS__)
#define LKV_LOG_DEBUG(...) LKV_LOG(LKV_LOG_LEVEL_DEBUG, __VA_ARGS__)
#define LKV_LOG_TRACE(...) LKV_LOG(LKV_LOG_LEVEL_TRACE, __VA_ARGS__)

/* Invariants whose violation means memory is already wrong. Always on.
 * Never use on user or peer input: return LKV_ERR_INVALID instead. */
#define LKV_ASSERT(cond_)                                                      \
    ((cond_) ? (void)0                                                         \
             : lkv_panic(__FILE__, __LINE__, "assertion failed: %s", #cond_))
#ifdef NDEBUG
#define LKV_DASSERT(cond_) ((void)0)
#else
#define LKV_DASSERT(cond_) LKV_ASSERT(cond_)
#endif

#ifdef __cplusplus
}
#endif

#endif /* LKV_COMMON_LOG_H */
