/* layerkv/client.h - liblayerkv: the C client of a layerkv server.
 *
 * Speaks docs/protocol.md over a ZeroMQ DEALER socket. Typical use:
 *
 *     lkv_client_t *c;
 *     lkv_client_connect("tcp://127.0.0.1:5555", NULL, &c);
 *     lkv_client_request_t rq = lkv_client_request_default();
 *     rq.prompt = "Once upon a time"; rq.max_tokens = 32; rq.temperature = 0;
 *     uint64_t id;
 *     lkv_client_submit(c, &rq, on_event, state, &id);  // streams to on_event
 *     lkv_client_wait(c, id, -1);                       // until DONE/ERROR
 *     lkv_client_close(&c);
 *
 * Threading: a client handle may be used from any number of threads at
 * once. One I/O thread per handle owns the socket; API calls hand it work
 * over an inproc pipe. **Event callbacks run on that I/O thread**, one at a
 * time, in the order the server sent them; a callback must not block for
 * long (it stalls every request of the handle), may call lkv_client_submit
 * and lkv_client_cancel, and must not call lkv_client_wait, _health, _stats
 * or _close (they return LKV_ERR_BUSY there).
 *
 * Every successful submit gets exactly one terminal event: DONE (the server
 * finished it: stop, length, cancelled or error) or ERROR (the server
 * rejected it, or locally: LKV_ERR_TIMEOUT when the server stopped
 * answering, LKV_ERR_CANCELLED when the handle was closed first).
 *
 * Connecting is asynchronous (ZeroMQ reconnects in the background), so a
 * server that is absent or dies is detected by the server timeout: when
 * requests are pending and nothing at all arrives from the server for
 * opts.server_timeout_ms (health pings are sent meanwhile), every pending
 * request fails with LKV_ERR_TIMEOUT. A client never hangs forever.
 */
#ifndef LAYERKV_CLIENT_H
#define LAYERKV_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lkv_client lkv_client_t;

typedef struct {
    int server_timeout_ms;  /* no message from the server while something is
                               pending -> LKV_ERR_TIMEOUT (default 30000) */
    int request_timeout_ms; /* total deadline per request from submit;
                               0 = none (default) */
    int ping_interval_ms;   /* health ping while waiting (default 1000) */
    int sndhwm;             /* messages queued to an absent server before
                               submit fails with LKV_ERR_BUSY (default 10000) */
} lkv_client_opts_t;

lkv_client_opts_t lkv_client_opts_default(void);

/* Create a handle connected (asynchronously) to endpoint ("tcp://HOST:PORT"
 * or "ipc:///path"; inproc:// cannot reach a server because the handle has
 * its own ZeroMQ context). Starts the I/O thread; opts NULL = defaults.
 * Errors: LKV_ERR_INVALID (NULL or malformed endpoint), LKV_ERR_NOMEM,
 * LKV_ERR_IO. */
lkv_status_t lkv_client_connect(const char *endpoint,
                                const lkv_client_opts_t *opts,
                                lkv_client_t **client_p);

/* Fail every pending request with LKV_ERR_CANCELLED (callbacks run, the
 * server is sent a cancel), stop the I/O thread, free the handle. Blocks
 * until the I/O thread has exited, plus at most 200 ms to flush those
 * cancels when the server is slow to take them.
 * NULL-safe; sets *client_p to NULL. Not from a callback. */
void lkv_client_close(lkv_client_t **client_p);

/* ---- requests ---- */

typedef struct {
    const char    *prompt;     /* UTF-8 text, or NULL when tokens are used */
    size_t         prompt_len; /* 0 = strlen(prompt) */
    const int32_t *tokens;     /* prompt token ids (copied), or NULL */
    int            n_tokens;
    int            max_tokens;  /* 1..65536 (default 64) */
    float          temperature; /* 0 = greedy (default 1) */
    int            top_k;       /* 0 = off (default) */
    float          top_p;       /* (0,1] (default 1) */
    bool           has_seed;
    uint64_t       seed;
    const int32_t *stop_ids; /* up to 64 ids that end the completion */
    int            n_stop_ids;
    double         ttft_slo_ms; /* 0 = server default */
    double         tpot_slo_ms; /* 0 = server default */
} lkv_client_request_t;

lkv_client_request_t lkv_client_request_default(void);

typedef enum {
    LKV_CLIENT_EV_ACCEPTED = 0, /* validated and queued by the server */
    LKV_CLIENT_EV_TOKEN    = 1, /* one generated token */
    LKV_CLIENT_EV_DONE     = 2, /* terminal: finished (see finish) */
    LKV_CLIENT_EV_ERROR    = 3, /* terminal: rejected or failed locally */
} lkv_client_event_kind_t;

typedef enum {
    LKV_CLIENT_FINISH_STOP      = 0, /* EOS or a stop id */
    LKV_CLIENT_FINISH_LENGTH    = 1, /* max_tokens or model context */
    LKV_CLIENT_FINISH_CANCELLED = 2,
    LKV_CLIENT_FINISH_ERROR     = 3, /* failed after acceptance: status */
} lkv_client_finish_t;

/* Pointers inside are valid only during the callback. */
typedef struct {
    lkv_client_event_kind_t kind;
    uint64_t                request; /* id returned by lkv_client_submit */
    /* ACCEPTED, DONE */
    uint32_t n_prompt_tokens;
    /* TOKEN */
    uint32_t    index; /* 0-based output position */
    int32_t     token;
    const char *text; /* whole UTF-8 characters, may be "" */
    size_t      text_len;
    /* DONE */
    lkv_client_finish_t finish;
    const char         *finish_reason; /* "stop", "length", ... */
    uint32_t            n_tokens;
    double              ttft_ms;
    double              tpot_ms;
    double              queue_ms;
    /* ERROR, and DONE with finish ERROR */
    lkv_status_t status;         /* LKV_OK unless an error */
    const char  *message;        /* what happened and what to do, or "" */
    int64_t      retry_after_ms; /* >= 0 when the server suggests a retry */
} lkv_client_event_t;

typedef void (*lkv_client_event_fn)(const lkv_client_event_t *ev,
                                    void *user);

/* Submit a completion; events go to fn(ev, user) on the I/O thread (fn NULL:
 * to lkv_client_poll, user ignored). The request is copied; *request_p gets its id (unique per handle). Does not
 * block on the network. Errors: LKV_ERR_INVALID (both or neither of
 * prompt/tokens, out-of-range parameter; nothing is sent), LKV_ERR_NOMEM,
 * LKV_ERR_CANCELLED (handle closing). */
lkv_status_t lkv_client_submit(lkv_client_t *c, const lkv_client_request_t *rq,
                               lkv_client_event_fn fn, void *user,
                               uint64_t *request_p);

/* ---- polling instead of callbacks ----
 * A request submitted with fn == NULL queues its events inside the handle;
 * lkv_client_poll() hands them out in arrival order (across all such
 * requests; ev->request tells which). The queue is unbounded: poll until
 * each request's terminal event. */

/* Next queued event, or LKV_ERR_TIMEOUT after timeout_ms (< 0 = forever,
 * 0 = don't wait). *ev_p is heap memory with its strings: release it with
 * lkv_client_event_free. Errors: LKV_ERR_TIMEOUT, LKV_ERR_BUSY (from a
 * callback), LKV_ERR_INVALID. */
lkv_status_t lkv_client_poll(lkv_client_t *c, int timeout_ms,
                             lkv_client_event_t **ev_p);
void         lkv_client_event_free(lkv_client_event_t *ev); /* NULL-safe */

/* Ask the server to stop a request; it then ends with DONE/cancelled (or
 * whatever terminal event was already on its way). Non-blocking.
 * Errors: LKV_ERR_NOTFOUND (not pending: finished or unknown). */
lkv_status_t lkv_client_cancel(lkv_client_t *c, uint64_t request);

/* Block until the request's terminal event callback has returned, or
 * timeout_ms (< 0 = forever; the server timeout still bounds it). LKV_OK
 * also when the request is not pending. Errors: LKV_ERR_TIMEOUT,
 * LKV_ERR_BUSY (called from a callback). */
lkv_status_t lkv_client_wait(lkv_client_t *c, uint64_t request,
                             int timeout_ms);

/* Number of requests still pending. */
int lkv_client_pending(lkv_client_t *c);

/* ---- queries (blocking, bounded by timeout_ms; <= 0 = server timeout) --- */

typedef struct {
    char     status[16];  /* "ok", "starting", "draining" */
    char     model[256];  /* truncated if longer */
    char     version[64];
    double   uptime_s;
    uint32_t n_running;
    uint32_t n_waiting;
    double   rtt_ms; /* measured round trip of this call */
} lkv_client_health_t;

/* Errors: LKV_ERR_TIMEOUT (no answer), LKV_ERR_BUSY (from a callback),
 * or the server's error code. */
lkv_status_t lkv_client_health(lkv_client_t *c, int timeout_ms,
                               lkv_client_health_t *out);

/* Server state as JSON (*json_p) and aligned "key  value" text (*text_p);
 * either pointer may be NULL. Strings are malloc'd: free() them.
 * Errors as lkv_client_health, plus LKV_ERR_NOMEM. */
lkv_status_t lkv_client_stats(lkv_client_t *c, int timeout_ms, char **json_p,
                              char **text_p);

#ifdef __cplusplus
}
#endif

#endif /* LAYERKV_CLIENT_H */
