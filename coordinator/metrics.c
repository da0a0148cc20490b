/* metrics.c - Prometheus metrics of the coordinator (see metrics.h).
 * Threading: one mutex guards everything. */
#define LKV_LOG_MODULE "metrics"

#include "coordinator/metrics.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

#define N_REASONS 4
#define MAX_REJECT_LABELS 12

/* Bucket bounds in seconds (vLLM's TTFT / TPOT / request-time buckets,
 * extended downwards for small models on a CPU). */
static const double ttft_bounds[] = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06,
                                     0.08,  0.1,   0.25, 0.5,  0.75, 1.0,
                                     2.5,   5.0,   7.5,  10.0, 20.0, 40.0};
static const double tpot_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01,
                                     0.015,  0.02,  0.025,  0.03,  0.04,
                                     0.05,   0.075, 0.1,    0.15,  0.2,
                                     0.3,    0.4,   0.5,    0.75,  1.0,
                                     2.5};
static const double time_bounds[] = {0.0005, 0.001, 0.005, 0.01, 0.05, 0.1,
                                     0.3,    0.6,   0.8,   1.0,  1.5,  2.0,
                                     2.5,    5.0,   10.0,  15.0, 20.0, 30.0,
                                     40.0,   50.0,  60.0};
static const double tok_bounds[] = {1,   2,   5,    10,   20,   50,  100,
                                    200, 500, 1000, 2000, 5000, 10000};

#define NB(a) ((int)(sizeof(a) / sizeof((a)[0])))

typedef struct {
    const double *bounds;
    int           n_bounds;
    uint64_t      counts[32]; /* per bucket (not cumulative) + overflow */
    double        sum;
    uint64_t      count;
} hist_t;

static const char *const reason_names[N_REASONS] = {"stop", "length",
                                                    "cancelled", "error"};

struct lkv_metrics {
    pthread_mutex_t     mu;
    int                 n_layers;
    char                model[256];
    char                policy[32];
    hist_t              ttft, tpot, queue, prefill, e2e, prompt_len, gen_len;
    uint64_t            prompt_tokens, generation_tokens;
    uint64_t            finished[N_REASONS];
    uint64_t            slo_ttft, slo_tpot;
    char                rej_label[MAX_REJECT_LABELS][24];
    uint64_t            rej_count[MAX_REJECT_LABELS];
    int                 n_rej;
    lkv_metrics_state_t st;
    int32_t            *layer_blocks; /* (LKV_KV_TIER_COUNT * n_layers) */
};

static void hist_init(hist_t *h, const double *b, int n)
{
    memset(h, 0, sizeof(*h));
    h->bounds   = b;
    h->n_bounds = n;
}

static void hist_observe(hist_t *h, double v)
{
    int i = 0;

    while (i < h->n_bounds && v > h->bounds[i]) {
        i++;
    }
    h->counts[i]++;
    h->sum += v;
    h->count++;
}

lkv_status_t lkv_metrics_create(int n_layers, const char *model_name,
                                const char *policy, lkv_metrics_t **m_p)
{
    lkv_metrics_t *m;

    if (n_layers < 1 || m_p == NULL) {
        return LKV_ERR_INVALID;
    }
    m = calloc(1, sizeof(*m));
    if (m == NULL) {
        return LKV_ERR_NOMEM;
    }
    m->layer_blocks = calloc((size_t)n_layers * LKV_KV_TIER_COUNT,
                             sizeof(int32_t));
    if (m->layer_blocks == NULL) {
        free(m);
        return LKV_ERR_NOMEM;
    }
    pthread_mutex_init(&m->mu, NULL);
    m->n_layers = n_layers;
    snprintf(m->model, sizeof(m->model), "%s", model_name ? model_name : "");
    snprintf(m->policy, sizeof(m->policy), "%s", policy ? policy : "");
    /* label values must not carry quotes, backslashes or newlines */
    for (char *p = m->model; *p; p++) {
        if (*p == '"' || *p == '\\' || *p == '\n') {
            *p = '_';
        }
    }
    hist_init(&m->ttft, ttft_bounds, NB(ttft_bounds));
    hist_init(&m->tpot, tpot_bounds, NB(tpot_bounds));
    hist_init(&m->queue, time_bounds, NB(time_bounds));
    hist_init(&m->prefill, time_bounds, NB(time_bounds));
    hist_init(&m->e2e, time_bounds, NB(time_bounds));
    hist_init(&m->prompt_len, tok_bounds, NB(tok_bounds));
    hist_init(&m->gen_len, tok_bounds, NB(tok_bounds));
    *m_p = m;
    return LKV_OK;
}

void lkv_metrics_destroy(lkv_metrics_t **m_p)
{
    if (m_p == NULL || *m_p == NULL) {
        return;
    }
    pthread_mutex_destroy(&(*m_p)->mu);
    free((*m_p)->layer_blocks);
    free(*m_p);
    *m_p = NULL;
}

void lkv_metrics_observe_request(lkv_metrics_t *m,
                                 const lkv_metrics_request_t *r)
{
    if (m == NULL || r == NULL) {
        return;
    }
    pthread_mutex_lock(&m->mu);
    if (r->queue_ns >= 0) {
        hist_observe(&m->queue, (double)r->queue_ns * 1e-9);
    }
    if (r->prefill_ns >= 0) {
        hist_observe(&m->prefill, (double)r->prefill_ns * 1e-9);
    }
    if (r->ttft_ns >= 0) {
        hist_observe(&m->ttft, (double)r->ttft_ns * 1e-9);
    }
    if (r->tpot_ns >= 0) {
        hist_observe(&m->tpot, (double)r->tpot_ns * 1e-9);
    }
    if (r->e2e_ns >= 0) {
        hist_observe(&m->e2e, (double)r->e2e_ns * 1e-9);
    }
    hist_observe(&m->prompt_len, (double)r->n_prompt);
    hist_observe(&m->gen_len, (double)r->n_generated);
    m->prompt_tokens += (uint64_t)(r->n_prompt > 0 ? r->n_prompt : 0);
    m->generation_tokens += (uint64_t)(r->n_generated > 0 ? r->n_generated
                                                           : 0);
    for (int i = 0; i < N_REASONS; i++) {
        if (r->finish_reason != NULL &&
            strcmp(r->finish_reason, reason_names[i]) == 0) {
            m->finished[i]++;
        }
    }
    m->slo_ttft += r->ttft_violated ? 1 : 0;
    m->slo_tpot += r->tpot_violated ? 1 : 0;
    pthread_mutex_unlock(&m->mu);
}

void lkv_metrics_count_rejected(lkv_metrics_t *m, const char *reason)
{
    int i;

    if (m == NULL) {
        return;
    }
    if (reason == NULL || reason[0] == '\0') {
        reason = "other";
    }
    pthread_mutex_lock(&m->mu);
    for (i = 0; i < m->n_rej; i++) {
        if (strcmp(m->rej_label[i], reason) == 0) {
            break;
        }
    }
    if (i == m->n_rej) {
        if (m->n_rej == MAX_REJECT_LABELS) {
            i = m->n_rej - 1; /* last label soaks up the rest */
        } else {
            snprintf(m->rej_label[i], sizeof(m->rej_label[i]), "%s", reason);
            m->n_rej++;
        }
    }
    m->rej_count[i]++;
    pthread_mutex_unlock(&m->mu);
}

void lkv_metrics_set_state(lkv_metrics_t *m, const lkv_metrics_state_t *s)
{
    if (m == NULL || s == NULL) {
        return;
    }
    pthread_mutex_lock(&m->mu);
    m->st = *s;
    for (int t = 0; t < LKV_KV_TIER_COUNT; t++) {
        int32_t *dst = m->layer_blocks + (size_t)t * (size_t)m->n_layers;
        if (s->layer_blocks[t] != NULL) {
            memcpy(dst, s->layer_blocks[t],
                   (size_t)m->n_layers * sizeof(int32_t));
        } else {
            memset(dst, 0, (size_t)m->n_layers * sizeof(int32_t));
        }
        m->st.layer_blocks[t] = NULL; /* never dereferenced later */
    }
    pthread_mutex_unlock(&m->mu);
}

/* ---- rendering ---- */

typedef struct {
    char  *p;
    size_t len, cap;
    bool   oom;
} sbuf_t;

static void sb_printf(sbuf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void sb_printf(sbuf_t *b, const char *fmt, ...)
{
    va_list ap;
    int     n;

    if (b->oom) {
        return;
    }
    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = true;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap * 2 + (size_t)n + 1;
        char  *p   = realloc(b->p, cap);
        if (p == NULL) {
            b->oom = true;
            return;
        }
        b->p   = p;
        b->cap = cap;
    }
}

static void head(sbuf_t *b, const char *name, const char *type,
                 const char *help)
{
    sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void render_hist(sbuf_t *b, const char *name, const char *help,
                        const hist_t *h, const char *labels)
{
    uint64_t cum = 0;

    head(b, name, "histogram", help);
    for (int i = 0; i < h->n_bounds; i++) {
        cum += h->counts[i];
        sb_printf(b, "%s_bucket{%s,le=\"%g\"} %llu\n", name, labels,
                  h->bounds[i], (unsigned long long)cum);
    }
    cum += h->counts[h->n_bounds];
    sb_printf(b, "%s_bucket{%s,le=\"+Inf\"} %llu\n", name, labels,
              (unsigned long long)cum);
    sb_printf(b, "%s_sum{%s} %.9g\n", name, labels, h->sum);
    sb_printf(b, "%s_count{%s} %llu\n", name, labels,
              (unsigned long long)h->count);
}

static const char *const tier_names[LKV_KV_TIER_COUNT] = {"device", "host",
                                                          "remote"};

lkv_status_t lkv_metrics_render(lkv_metrics_t *m, char **text_p,
                                size_t *len_p)
{
    sbuf_t b = {0};
    char   lab[320];

    if (m == NULL || text_p == NULL) {
        return LKV_ERR_INVALID;
    }
    b.cap = 16384;
    b.p   = malloc(b.cap);
    if (b.p == NULL) {
        return LKV_ERR_NOMEM;
    }
    b.p[0] = '\0';
    pthread_mutex_lock(&m->mu);
    snprintf(lab, sizeof(lab), "model_name=\"%s\"", m->model);
    const lkv_metrics_state_t *s = &m->st;

    head(&b, "layerkv_num_requests_running", "gauge",
         "Number of requests in model execution batches (admitted).");
    sb_printf(&b, "layerkv_num_requests_running{%s} %d\n", lab, s->n_running);
    head(&b, "layerkv_num_requests_waiting", "gauge",
         "Number of requests waiting to be admitted.");
    sb_printf(&b, "layerkv_num_requests_waiting{%s} %d\n", lab, s->n_waiting);
    head(&b, "layerkv_kv_blocks_used", "gauge",
         "KV layer-blocks in use per tier.");
    for (int t = 0; t < LKV_KV_TIER_COUNT; t++) {
        sb_printf(&b, "layerkv_kv_blocks_used{%s,tier=\"%s\"} %d\n", lab,
                  tier_names[t], s->blocks_used[t]);
    }
    head(&b, "layerkv_kv_blocks_capacity", "gauge",
         "KV layer-block capacity per tier.");
    for (int t = 0; t < LKV_KV_TIER_COUNT; t++) {
        sb_printf(&b, "layerkv_kv_blocks_capacity{%s,tier=\"%s\"} %d\n", lab,
                  tier_names[t], s->blocks_total[t]);
    }
    head(&b, "layerkv_kv_cache_usage_perc", "gauge",
         "Fraction of device KV layer-blocks in use (1 = 100%).");
    sb_printf(&b, "layerkv_kv_cache_usage_perc{%s} %.6g\n", lab,
              s->blocks_total[0] > 0
                  ? (double)s->blocks_used[0] / (double)s->blocks_total[0]
                  : 0.0);
    head(&b, "layerkv_kv_layer_blocks_used", "gauge",
         "KV layer-blocks in use per tier and layer.");
    for (int t = 0; t < LKV_KV_TIER_COUNT; t++) {
        if (s->blocks_total[t] == 0) {
            continue;
        }
        for (int l = 0; l < m->n_layers; l++) {
            sb_printf(&b,
                      "layerkv_kv_layer_blocks_used{%s,tier=\"%s\","
                      "layer=\"%d\"} %d\n",
                      lab, tier_names[t], l,
                      m->layer_blocks[(size_t)t * (size_t)m->n_layers +
                                      (size_t)l]);
        }
    }
    head(&b, "layerkv_kv_offload_bytes_total", "counter",
         "Bytes of KV copied device -> host/remote (completed moves).");
    sb_printf(&b, "layerkv_kv_offload_bytes_total{%s} %lld\n", lab,
              (long long)s->offload_bytes);
    head(&b, "layerkv_kv_reload_bytes_total", "counter",
         "Bytes of KV copied host/remote -> device (reloads and streamed "
         "stages).");
    sb_printf(&b, "layerkv_kv_reload_bytes_total{%s} %lld\n", lab,
              (long long)(s->reload_bytes + s->stage_bytes));
    head(&b, "layerkv_num_preemptions_total", "counter",
         "Cumulative preemptions (recompute, plus layerkv swap-outs).");
    sb_printf(&b, "layerkv_num_preemptions_total{%s} %llu\n", lab,
              (unsigned long long)(s->preemptions + s->swap_preemptions));
    head(&b, "layerkv_num_recompute_preemptions_total", "counter",
         "Cumulative preemptions by recompute.");
    sb_printf(&b, "layerkv_num_recompute_preemptions_total{%s} %llu\n", lab,
              (unsigned long long)s->preemptions);
    head(&b, "layerkv_steps_total", "counter", "Step plans executed.");
    sb_printf(&b, "layerkv_steps_total{%s} %llu\n", lab,
              (unsigned long long)s->steps);
    head(&b, "layerkv_instances_up", "gauge",
         "Instances with a connected worker.");
    sb_printf(&b, "layerkv_instances_up{%s} %d\n", lab, s->n_instances_up);

    head(&b, "layerkv_prompt_tokens_total", "counter",
         "Number of prefill tokens processed (finished requests).");
    sb_printf(&b, "layerkv_prompt_tokens_total{%s} %llu\n", lab,
              (unsigned long long)m->prompt_tokens);
    head(&b, "layerkv_generation_tokens_total", "counter",
         "Number of generation tokens processed (finished requests).");
    sb_printf(&b, "layerkv_generation_tokens_total{%s} %llu\n", lab,
              (unsigned long long)m->generation_tokens);
    head(&b, "layerkv_request_success_total", "counter",
         "Count of finished requests by finish reason.");
    for (int i = 0; i < N_REASONS; i++) {
        sb_printf(&b,
                  "layerkv_request_success_total{%s,finished_reason=\"%s\"} "
                  "%llu\n",
                  lab, reason_names[i], (unsigned long long)m->finished[i]);
    }
    head(&b, "layerkv_slo_violations_total", "counter",
         "Finished requests over their TTFT or TPOT target.");
    sb_printf(&b, "layerkv_slo_violations_total{%s,kind=\"ttft\"} %llu\n",
              lab, (unsigned long long)m->slo_ttft);
    sb_printf(&b, "layerkv_slo_violations_total{%s,kind=\"tpot\"} %llu\n",
              lab, (unsigned long long)m->slo_tpot);
    head(&b, "layerkv_requests_rejected_total", "counter",
         "Requests refused before they ran, by reason.");
    if (m->n_rej == 0) {
        sb_printf(&b, "layerkv_requests_rejected_total{%s,reason=\"slo\"} 0\n",
                  lab);
    }
    for (int i = 0; i < m->n_rej; i++) {
        sb_printf(&b, "layerkv_requests_rejected_total{%s,reason=\"%s\"} "
                      "%llu\n",
                  lab, m->rej_label[i], (unsigned long long)m->rej_count[i]);
    }

    render_hist(&b, "layerkv_time_to_first_token_seconds",
                "Histogram of time to first token in seconds.", &m->ttft, lab);
    render_hist(&b, "layerkv_time_per_output_token_seconds",
                "Histogram of time per output token in seconds.", &m->tpot,
                lab);
    render_hist(&b, "layerkv_request_queue_time_seconds",
                "Histogram of time spent waiting for admission in seconds.",
                &m->queue, lab);
    render_hist(&b, "layerkv_request_prefill_time_seconds",
                "Histogram of time from admission to first token in "
                "seconds.",
                &m->prefill, lab);
    render_hist(&b, "layerkv_e2e_request_latency_seconds",
                "Histogram of end to end request latency in seconds.", &m->e2e,
                lab);
    render_hist(&b, "layerkv_request_prompt_tokens",
                "Number of prefill tokens per finished request.",
                &m->prompt_len, lab);
    render_hist(&b, "layerkv_request_generation_tokens",
                "Number of generation tokens per finished request.",
                &m->gen_len, lab);
    head(&b, "layerkv_info", "gauge", "Server information (always 1).");
    sb_printf(&b, "layerkv_info{%s,policy=\"%s\",version=\"0.1.0\"} 1\n", lab,
              m->policy);
    pthread_mutex_unlock(&m->mu);
    if (b.oom) {
        free(b.p);
        return LKV_ERR_NOMEM;
    }
    *text_p = b.p;
    if (len_p != NULL) {
        *len_p = b.len;
    }
    return LKV_OK;
}
