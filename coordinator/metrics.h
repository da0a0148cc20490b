/* metrics.h - the coordinator's Prometheus metrics: vLLM's metric meanings
 * with a layerkv_ prefix (TTFT, TPOT, queue and prefill time histograms;
 * running / waiting gauges; KV blocks per tier and per layer; offload and
 * reload bytes; SLO violations; rejections; preemptions; token counters),
 * rendered in the Prometheus text exposition format 0.0.4.
 *
 * The coordinator thread records (observe_* at request finish, set_state
 * once per loop turn); the HTTP thread (coordinator/metrics_http.h) renders.
 * Threading: every function is thread-safe (one mutex; recording holds it
 * for a few hundred nanoseconds, rendering for the time of one snprintf pass).
 */
#ifndef LKV_COORDINATOR_METRICS_H
#define LKV_COORDINATOR_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "kvstore/kv_alloc.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lkv_metrics lkv_metrics_t;

/* n_layers: layers per instance (for the per-layer gauge). Errors:
 * LKV_ERR_INVALID (n_layers < 1), LKV_ERR_NOMEM. */
lkv_status_t lkv_metrics_create(int n_layers, const char *model_name,
                                const char *policy, lkv_metrics_t **m_p);
void         lkv_metrics_destroy(lkv_metrics_t **m_p);

/* One finished request (any reason). Times in ns; a value < 0 = not
 * measured (e.g. no first token): that histogram is not observed. */
typedef struct {
    int64_t     queue_ns;   /* arrival -> first scheduled */
    int64_t     prefill_ns; /* first scheduled -> first token */
    int64_t     ttft_ns;    /* arrival -> first token */
    int64_t     tpot_ns;    /* mean time per output token after the first */
    int64_t     e2e_ns;     /* arrival -> finish */
    int32_t     n_prompt;
    int32_t     n_generated;
    const char *finish_reason; /* "stop", "length", "cancelled", "error" */
    bool        ttft_violated;
    bool        tpot_violated;
} lkv_metrics_request_t;

void lkv_metrics_observe_request(lkv_metrics_t *m,
                                 const lkv_metrics_request_t *r);

/* A request refused before it ran; reason is a short label value
 * ("invalid", "toolong", "busy", "slo", "protocol", ...). */
void lkv_metrics_count_rejected(lkv_metrics_t *m, const char *reason);

/* Server state, summed over instances (counters are cumulative totals). */
typedef struct {
    int32_t        n_running;
    int32_t        n_waiting;
    int32_t        blocks_used[LKV_KV_TIER_COUNT];
    int32_t        blocks_total[LKV_KV_TIER_COUNT];
    const int32_t *layer_blocks[LKV_KV_TIER_COUNT]; /* (n_layers) or NULL */
    int64_t        offload_bytes;
    int64_t        reload_bytes;
    int64_t        stage_bytes;
    uint64_t       preemptions;      /* recompute */
    uint64_t       swap_preemptions; /* layerkv: by offloading layers */
    uint64_t       steps;
    int32_t        n_instances_up;
} lkv_metrics_state_t;

void lkv_metrics_set_state(lkv_metrics_t *m, const lkv_metrics_state_t *s);

/* Render the whole exposition into a malloc'd NUL-terminated string
 * (*text_p, caller frees; *len_p its length). Errors: LKV_ERR_NOMEM. */
lkv_status_t lkv_metrics_render(lkv_metrics_t *m, char **text_p,
                                size_t *len_p);

#ifdef __cplusplus
}
#endif

#endif /* LKV_COORDINATOR_METRICS_H */
