/* metrics_http.h - HTTP endpoint for Prometheus scrapes: GET /metrics
 * answers the text exposition (coordinator/metrics.h), GET /health answers
 * "ok", anything else 404. libmicrohttpd with its own polling thread.
 *
 * Threading: the server runs on libmicrohttpd's internal thread and only
 * reads the metrics object (which is thread-safe); start/stop from one
 * thread.
 */
#ifndef LKV_COORDINATOR_METRICS_HTTP_H
#define LKV_COORDINATOR_METRICS_HTTP_H

#include <stdint.h>

#include "common/status.h"
#include "coordinator/metrics.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lkv_metrics_http lkv_metrics_http_t;

/* Listen on "HOST:PORT" (HOST an IPv4 address or "localhost"; PORT 0 picks
 * a free one, see lkv_metrics_http_port). m is borrowed and must outlive
 * the server. Errors: LKV_ERR_INVALID (bad address: the log says the
 * expected form), LKV_ERR_BUSY (port in use), LKV_ERR_IO, LKV_ERR_NOMEM. */
lkv_status_t lkv_metrics_http_start(const char *listen, lkv_metrics_t *m,
                                    lkv_metrics_http_t **h_p);
/* The port actually bound. */
int          lkv_metrics_http_port(const lkv_metrics_http_t *h);
/* Stop the server (waits for its thread); NULL-safe, sets *h_p to NULL. */
void         lkv_metrics_http_stop(lkv_metrics_http_t **h_p);

#ifdef __cplusplus
}
#endif

#endif /* LKV_COORDINATOR_METRICS_HTTP_H */
