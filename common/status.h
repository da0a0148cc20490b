/* status.h - status codes returned by every fallible layerkv function.
 *
 * Negative values are errors, grouped by what must be torn down to recover:
 * the request (-1..-19), the peer connection (-20..-39) or the process
 * (<= -40). Positive values are non-error outcomes. errno, cudaError_t and
 * UCX/ZMQ codes never cross a module boundary: convert them where they are
 * first seen and log the native text there.
 */
#ifndef LKV_COMMON_STATUS_H
#define LKV_COMMON_STATUS_H

#ifdef __cplusplus
extern "C" {
#endif

/* clang-format off */
#define LKV_STATUS_MAP(X)                                                      \
    X(LKV_OK,               0, "success")                                      \
    X(LKV_INPROGRESS,       1, "queued; completion reported later")           \
    X(LKV_AGAIN,            2, "nothing to do now; try again")                 \
    /* request scope: fail or retry this request, keep the peer */             \
    X(LKV_ERR_INVALID,     -1, "invalid argument")                             \
    X(LKV_ERR_NOMEM,       -2, "out of host memory")                           \
    X(LKV_ERR_NOSPACE,     -3, "no free kv blocks")                            \
    X(LKV_ERR_UNSUPPORTED, -4, "not supported")                                \
    X(LKV_ERR_TIMEOUT,     -5, "timed out")                                    \
    X(LKV_ERR_NOTFOUND,    -6, "not found")                                    \
    X(LKV_ERR_FORMAT,      -7, "malformed file or message")                    \
    X(LKV_ERR_TOOLONG,     -8, "input longer than the model context")          \
    X(LKV_ERR_BUSY,        -9, "resource busy")                                \
    X(LKV_ERR_REJECTED,   -10, "rejected by admission control")               \
    X(LKV_ERR_CANCELLED,  -11, "cancelled")                                    \
    /* peer scope: close the endpoint, reschedule its requests */              \
    X(LKV_ERR_IO,         -20, "i/o error")                                    \
    X(LKV_ERR_PEER_LOST,  -21, "peer unreachable or disconnected")             \
    X(LKV_ERR_PROTOCOL,   -22, "protocol violation")                           \
    /* process scope: device or runtime state can't be trusted */              \
    X(LKV_ERR_DEVICE,     -40, "device error")                                 \
    X(LKV_ERR_INTERNAL,   -41, "internal error")
/* clang-format on */

typedef enum {
#define LKV_STATUS_ENUM_(name_, value_, text_) name_ = (value_),
    LKV_STATUS_MAP(LKV_STATUS_ENUM_)
#undef LKV_STATUS_ENUM_
} lkv_status_t;

#define LKV_STATUS_IS_PEER(st_)  (((st_) <= -20) && ((st_) > -40))
#define LKV_STATUS_IS_FATAL(st_) ((st_) <= -40)

/* Text for a status; never NULL ("unknown status" for values not in the map). */
const char *lkv_status_str(lkv_status_t status);

/* Symbolic name ("LKV_ERR_NOSPACE"); never NULL. */
const char *lkv_status_name(lkv_status_t status);

/* Propagate a failure to the caller. The callee already logged the cause. */
#define LKV_CHECK(call_)                                                       \
    do {                                                                       \
        lkv_status_t lkv_st_ = (call_);                                        \
        if (lkv_st_ < 0) {                                                     \
            return lkv_st_;                                                    \
        }                                                                      \
    } while (0)

/* Same, but store the status in st_ and jump to a cleanup label. */
#define LKV_CHECK_GOTO(call_, st_, label_)                                     \
    do {                                                                       \
        (st_) = (call_);                                                       \
        if ((st_) < 0) {                                                       \
            goto label_;                                                       \
        }                                                                      \
    } while (0)

#ifdef __cplusplus
}
#endif

#endif /* LKV_COMMON_STATUS_H */
