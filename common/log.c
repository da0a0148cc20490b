/* log.c - leveled logging to stderr; see log.h. */
#include "common/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

lkv_log_level_t lkv_log_level = LKV_LOG_LEVEL_WARN;

static char log_prefix[64];

static const char *const level_names[] = {"error", "warn", "info", "debug",
                                          "trace"};

void lkv_log_set_prefix(const char *prefix)
{
    snprintf(log_prefix, sizeof(log_prefix), "%s", prefix ? prefix : "");
}

int lkv_log_level_parse(const char *text, lkv_log_level_t *level_p)
{
    for (int i = 0; i <= (int)LKV_LOG_LEVEL_TRACE; i++) {
        if (text != NULL && strcmp(text, level_names[i]) == 0) {
            *level_p = (lkv_log_level_t)i;
            return 0;
        }
    }
    return -1;
}

void lkv_log_init_from_env(void)
{
    const char     *env = getenv("LKV_LOG_LEVEL");
    lkv_log_level_t level;

    if (env != NULL && lkv_log_level_parse(env, &level) == 0) {
        lkv_log_level = level;
    }
}

void lkv_log_emit(lkv_log_level_t level, const char *module, const char *file,
                  int line, const char *fmt, ...)
{
    char    msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (level >= LKV_LOG_LEVEL_DEBUG) {
        fprintf(stderr, "%slayerkv %s %s: %s (%s:%d)\n", log_prefix,
                level_names[level], module, msg, file, line);
    } else {
        fprintf(stderr, "%slayerkv %s %s: %s\n", log_prefix, level_names[level],
                module, msg);
    }
}

void lkv_panic(const char *file, int line, const char *fmt, ...)
{
    char    msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    fprintf(stderr, "%slayerkv panic: %s (%s:%d)\n", log_prefix, msg, file,
            line);
    abort();
}
