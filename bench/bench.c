/* bench.c - `layerkv bench` engine: paced submission through liblayerkv,
 * per-request records, summary statistics (same definitions as the
 * simulator), JSON members and per-request CSV.
 * Threading: lkv_bench_run's caller paces and reports; the client's I/O
 * thread runs on_event, which touches shared state only under run_t.mu.
 */
#define LKV_LOG_MODULE "bench"
#include "bench/bench.h"
#include "bench/summary_keys.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "common/log.h"

lkv_bench_config_t lkv_bench_config_default(void)
{
    lkv_bench_config_t c = {
        .token_lo        = 300,
        .token_hi        = 500,
        .seed            = 1,
        .max_inflight    = 0,
        .drain_timeout_s = 0,
        .progress        = true,
        .label           = "",
    };
    return c;
}

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z          = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z          = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void lkv_bench_make_prompt(uint64_t seed, int64_t index, int32_t len,
                           int32_t lo, int32_t hi, int32_t *out)
{
    uint64_t s    = seed * 0x100000001b3ULL ^ (uint64_t)index * 0x9e3779b97f4a7c15ULL;
    uint64_t span = (uint64_t)(hi - lo) + 1;
    for (int32_t i = 0; i < len; i++) {
        out[i] = lo + (int32_t)(splitmix64(&s) % span);
    }
}

/* ---- the run ---- */

typedef struct run run_t;

typedef struct {
    run_t  *run;
    int64_t idx;
} req_ctx_t;

struct run {
    pthread_mutex_t          mu;
    pthread_cond_t           cv;
    const lkv_bench_req_t   *reqs;
    lkv_bench_record_t      *recs;
    int64_t                  t0_ns;
    int64_t                  n;
    int64_t                  n_sent, n_done, n_ok, n_rejected, n_failed;
    int64_t                  tokens;
    int                      inflight;
    double                   sum_ttft_s;
    char                     first_error[256];
};

static void on_event(const lkv_client_event_t *ev, void *user)
{
    req_ctx_t          *x   = user;
    run_t              *R   = x->run;
    lkv_bench_record_t *r   = &R->recs[x->idx];
    int64_t             now = lkv_now_ns();
    double sched_s = (now - R->t0_ns - R->reqs[x->idx].arrival_ns) * 1e-9;
    bool   terminal = false;

    pthread_mutex_lock(&R->mu);
    switch (ev->kind) {
    case LKV_CLIENT_EV_ACCEPTED:
        r->n_prompt_tokens = (int32_t)ev->n_prompt_tokens;
        break;
    case LKV_CLIENT_EV_TOKEN:
        if (r->n_token_events == 0) {
            r->client_ttft_s = sched_s;
        }
        r->n_token_events++;
        R->tokens++;
        break;
    case LKV_CLIENT_EV_DONE:
        terminal           = true;
        r->n_prompt_tokens = (int32_t)ev->n_prompt_tokens;
        r->n_tokens        = (int32_t)ev->n_tokens;
        r->ttft_s          = ev->ttft_ms * 1e-3;
        r->queue_s         = ev->queue_ms * 1e-3;
        r->tpot_s          = ev->tpot_ms * 1e-3;
        snprintf(r->finish_reason, sizeof r->finish_reason, "%s",
                 ev->finish_reason != NULL ? ev->finish_reason : "?");
        if (ev->finish == LKV_CLIENT_FINISH_STOP ||
            ev->finish == LKV_CLIENT_FINISH_LENGTH) {
            r->outcome = LKV_BENCH_OK;
            R->n_ok++;
            R->sum_ttft_s += r->ttft_s;
        } else {
            r->outcome = LKV_BENCH_FAILED;
            r->status  = ev->status != LKV_OK ? ev->status : LKV_ERR_CANCELLED;
            R->n_failed++;
        }
        break;
    case LKV_CLIENT_EV_ERROR:
        terminal  = true;
        r->status = ev->status;
        snprintf(r->finish_reason, sizeof r->finish_reason, "error");
        /* local failures (server silent, handle closing) are failures;
         * anything the server answered before accepting is a rejection */
        if (ev->status == LKV_ERR_TIMEOUT || ev->status == LKV_ERR_CANCELLED) {
            r->outcome = LKV_BENCH_FAILED;
            R->n_failed++;
        } else {
            r->outcome = LKV_BENCH_REJECTED;
            R->n_rejected++;
        }
        if (R->first_error[0] == '\0') {
            snprintf(R->first_error, sizeof R->first_error, "%s: %s",
                     lkv_status_str(ev->status),
                     ev->message != NULL ? ev->message : "");
        }
        break;
    }
    if (terminal) {
        r->e2e_s    = sched_s;
        r->finish_s = (now - R->t0_ns) * 1e-9;
        R->inflight--;
        R->n_done++;
        pthread_cond_broadcast(&R->cv);
    }
    pthread_mutex_unlock(&R->mu);
}

/* caller holds R->mu */
static void progress_line(run_t *R, const lkv_bench_config_t *cfg,
                          int64_t now)
{
    double t = (now - R->t0_ns) * 1e-9;
    fprintf(stderr,
            "\r%s%s%6.1fs  sent %lld/%lld  inflight %d  done %lld (ok %lld, "
            "rejected %lld, failed %lld)  %.1f tok/s  mean ttft %.3fs   ",
            cfg->label != NULL ? cfg->label : "",
            (cfg->label != NULL && cfg->label[0]) ? "  " : "", t,
            (long long)R->n_sent, (long long)R->n, R->inflight,
            (long long)R->n_done, (long long)R->n_ok,
            (long long)R->n_rejected, (long long)R->n_failed,
            t > 0 ? R->tokens / t : 0.0,
            R->n_ok > 0 ? R->sum_ttft_s / R->n_ok : 0.0);
    fflush(stderr);
}

/* wait on the condition for at most ns (monotonic clock); caller holds mu */
static void cv_wait_ns(run_t *R, int64_t ns)
{
    int64_t         dl = lkv_now_ns() + ns;
    struct timespec ts = {.tv_sec  = (time_t)(dl / 1000000000LL),
                          .tv_nsec = (long)(dl % 1000000000LL)};
    (void)pthread_cond_timedwait(&R->cv, &R->mu, &ts);
}

lkv_status_t lkv_bench_run(lkv_client_t *c, const lkv_bench_config_t *cfg,
                           const lkv_bench_req_t *reqs, int64_t n,
                           lkv_bench_record_t *recs, double *wall_s_p)
{
    if (c == NULL || cfg == NULL || (n > 0 && (reqs == NULL || recs == NULL)) ||
        n < 0) {
        return LKV_ERR_INVALID;
    }
    if (cfg->token_lo < 0 || cfg->token_hi < cfg->token_lo) {
        LKV_LOG_ERROR("bench: bad prompt token range [%d, %d]: need 0 <= lo <= hi",
                      cfg->token_lo, cfg->token_hi);
        return LKV_ERR_INVALID;
    }
    int32_t max_plen = 1;
    for (int64_t i = 0; i < n; i++) {
        if (reqs[i].prompt_len < 1 || reqs[i].output_len < 1) {
            LKV_LOG_ERROR("bench: request %lld has prompt %d / output %d "
                          "tokens: both must be >= 1",
                          (long long)i, reqs[i].prompt_len, reqs[i].output_len);
            return LKV_ERR_INVALID;
        }
        if (reqs[i].prompt_len > max_plen) {
            max_plen = reqs[i].prompt_len;
        }
    }
    memset(recs, 0, (size_t)n * sizeof *recs);

    lkv_status_t st   = LKV_OK;
    run_t        R    = {.reqs = reqs, .recs = recs, .n = n};
    req_ctx_t   *ctx  = calloc((size_t)(n > 0 ? n : 1), sizeof *ctx);
    uint64_t    *ids  = calloc((size_t)(n > 0 ? n : 1), sizeof *ids);
    int32_t     *toks = malloc((size_t)max_plen * sizeof *toks);
    bool         sync_ok = false;
    if (ctx == NULL || ids == NULL || toks == NULL) {
        st = LKV_ERR_NOMEM;
        goto out_free;
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&R.mu, NULL);
    pthread_cond_init(&R.cv, &ca);
    pthread_condattr_destroy(&ca);
    sync_ok = true;

    const int64_t tick = 1000000000LL; /* progress period */
    R.t0_ns            = lkv_now_ns();
    int64_t next_progress = R.t0_ns + tick;
    int64_t i             = 0;

    pthread_mutex_lock(&R.mu);
    while (i < n) {
        int64_t now = lkv_now_ns();
        if (cfg->progress && now >= next_progress) {
            progress_line(&R, cfg, now);
            next_progress = now + tick;
        }
        if (cfg->max_inflight > 0 && R.inflight >= cfg->max_inflight) {
            cv_wait_ns(&R, 100000000LL);
            continue;
        }
        int64_t target = R.t0_ns + reqs[i].arrival_ns;
        if (now < target) {
            int64_t d = target - now;
            int64_t p = next_progress - now;
            pthread_mutex_unlock(&R.mu);
            lkv_sleep_ns(d < p ? d : p);
            pthread_mutex_lock(&R.mu);
            continue;
        }
        /* submit request i (the lock is released around the call: the I/O
         * thread's callbacks need it) */
        ctx[i].run = &R;
        ctx[i].idx = i;
        recs[i].submit_delay_s = (now - target) * 1e-9;
        R.inflight++;
        R.n_sent++;
        pthread_mutex_unlock(&R.mu);

        lkv_bench_make_prompt(cfg->seed, i, reqs[i].prompt_len, cfg->token_lo,
                              cfg->token_hi, toks);
        lkv_client_request_t rq = lkv_client_request_default();
        rq.tokens               = toks;
        rq.n_tokens             = reqs[i].prompt_len;
        rq.max_tokens           = reqs[i].output_len;
        rq.temperature          = cfg->temperature;
        if (cfg->temperature > 0) {
            rq.has_seed = true;
            rq.seed     = cfg->seed * 1000003ULL + (uint64_t)i;
        }
        rq.ttft_slo_ms          = cfg->ttft_slo_ms_req;
        rq.tpot_slo_ms          = cfg->tpot_slo_ms_req;
        lkv_status_t sst = lkv_client_submit(c, &rq, on_event, &ctx[i], &ids[i]);

        pthread_mutex_lock(&R.mu);
        if (sst != LKV_OK) {
            recs[i].outcome = LKV_BENCH_FAILED;
            recs[i].status  = sst;
            snprintf(recs[i].finish_reason, sizeof recs[i].finish_reason,
                     "error");
            R.inflight--;
            R.n_done++;
            R.n_failed++;
            if (R.first_error[0] == '\0') {
                snprintf(R.first_error, sizeof R.first_error,
                         "submit failed: %s", lkv_status_str(sst));
            }
        }
        i++;
    }
    /* drain */
    int64_t deadline = cfg->drain_timeout_s > 0
                           ? lkv_now_ns() + (int64_t)(cfg->drain_timeout_s * 1e9)
                           : INT64_MAX;
    bool timed_out = false;
    while (R.n_done < n) {
        int64_t now = lkv_now_ns();
        if (now >= deadline) {
            timed_out = true;
            break;
        }
        if (cfg->progress && now >= next_progress) {
            progress_line(&R, cfg, now);
            next_progress = now + tick;
        }
        cv_wait_ns(&R, 200000000LL);
    }
    if (cfg->progress) {
        progress_line(&R, cfg, lkv_now_ns());
        fputc('\n', stderr);
    }
    pthread_mutex_unlock(&R.mu);

    if (timed_out) {
        LKV_LOG_WARN("bench: %lld requests still running %.1f s after the last "
                     "submission; cancelling them (raise --drain-timeout-s)",
                     (long long)(n - R.n_done), cfg->drain_timeout_s);
        for (int64_t k = 0; k < n; k++) {
            pthread_mutex_lock(&R.mu);
            bool pending = recs[k].outcome == LKV_BENCH_PENDING;
            pthread_mutex_unlock(&R.mu);
            if (pending) {
                (void)lkv_client_cancel(c, ids[k]);
            }
        }
        /* every submitted request ends with one terminal event (bounded by
         * the client's server timeout); wait so no callback outlives ctx */
        for (int64_t k = 0; k < n; k++) {
            (void)lkv_client_wait(c, ids[k], -1);
        }
    }
    if (R.first_error[0] != '\0') {
        LKV_LOG_WARN("bench: %lld rejected, %lld failed; first error: %s",
                     (long long)R.n_rejected, (long long)R.n_failed,
                     R.first_error);
    }
    if (wall_s_p != NULL) {
        *wall_s_p = (lkv_now_ns() - R.t0_ns) * 1e-9;
    }
out_free:
    if (sync_ok) {
        pthread_cond_destroy(&R.cv);
        pthread_mutex_destroy(&R.mu);
    }
    free(toks);
    free(ids);
    free(ctx);
    return st;
}

/* ---- statistics ---- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double lkv_bench_pct(const double *v, int64_t n, double q)
{
    if (n <= 0) {
        return 0.0;
    }
    double  pos = q * (double)(n - 1);
    int64_t lo  = (int64_t)floor(pos);
    int64_t hi  = lo + 1 < n ? lo + 1 : lo;
    return v[lo] + (pos - (double)lo) * (v[hi] - v[lo]);
}

static bool violated(const lkv_bench_record_t *r, double ttft_slo_s,
                     double tpot_slo_s)
{
    if (r->outcome != LKV_BENCH_OK) {
        return true;
    }
    return (ttft_slo_s > 0 && r->ttft_s > ttft_slo_s) ||
           (tpot_slo_s > 0 && r->n_tokens > 1 && r->tpot_s > tpot_slo_s);
}

lkv_status_t lkv_bench_summarise(const lkv_bench_req_t *reqs,
                                 const lkv_bench_record_t *recs, int64_t n,
                                 double ttft_slo_s, double tpot_slo_s,
                                 lkv_bench_summary_t *out)
{
    if (out == NULL || n < 0 || (n > 0 && (reqs == NULL || recs == NULL))) {
        return LKV_ERR_INVALID;
    }
    lkv_bench_summary_t s = {.n_requests = n};
    size_t  sz = (size_t)(n > 0 ? n : 1) * sizeof(double);
    double *a = malloc(sz), *b = malloc(sz), *q = malloc(sz), *c = malloc(sz);
    if (a == NULL || b == NULL || q == NULL || c == NULL) {
        free(a);
        free(b);
        free(q);
        free(c);
        return LKV_ERR_NOMEM;
    }
    int64_t na = 0, nb = 0, viol = 0, ttft_ok = 0, tpot_ok = 0;
    double  s_ttft = 0, s_q = 0, s_pf = 0, s_tpot = 0, s_e2e = 0, s_cttft = 0,
           s_delay = 0, last_finish = 0;
    for (int64_t i = 0; i < n; i++) {
        const lkv_bench_record_t *r = &recs[i];
        viol += violated(r, ttft_slo_s, tpot_slo_s);
        s_delay += r->submit_delay_s;
        if (r->outcome == LKV_BENCH_REJECTED) {
            s.n_rejected++;
            continue;
        }
        if (r->outcome != LKV_BENCH_OK) {
            s.n_failed++;
            continue;
        }
        s.n_completed++;
        s.output_tokens += r->n_tokens;
        s.prompt_tokens += r->n_prompt_tokens;
        s_ttft += r->ttft_s;
        s_q += r->queue_s;
        s_pf += r->ttft_s - r->queue_s;
        s_e2e += r->e2e_s;
        s_cttft += r->client_ttft_s;
        if (r->finish_s > last_finish) {
            last_finish = r->finish_s;
        }
        a[na] = r->ttft_s;
        q[na] = r->queue_s;
        c[na] = r->client_ttft_s;
        na++;
        ttft_ok += !(ttft_slo_s > 0 && r->ttft_s > ttft_slo_s);
        if (r->n_tokens > 1) {
            s_tpot += r->tpot_s;
            b[nb++] = r->tpot_s;
            tpot_ok += !(tpot_slo_s > 0 && r->tpot_s > tpot_slo_s);
        } else {
            tpot_ok++;
        }
    }
    if (na > 0) {
        s.mean_ttft_s        = s_ttft / na;
        s.mean_queue_s       = s_q / na;
        s.mean_prefill_s     = s_pf / na;
        s.mean_e2e_s         = s_e2e / na;
        s.mean_client_ttft_s = s_cttft / na;
        s.ttft_attainment    = (double)ttft_ok / na;
        s.tpot_attainment    = (double)tpot_ok / na;
        qsort(a, (size_t)na, sizeof *a, cmp_double);
        qsort(q, (size_t)na, sizeof *q, cmp_double);
        qsort(c, (size_t)na, sizeof *c, cmp_double);
        s.p50_ttft_s        = lkv_bench_pct(a, na, 0.50);
        s.p90_ttft_s        = lkv_bench_pct(a, na, 0.90);
        s.p99_ttft_s        = lkv_bench_pct(a, na, 0.99);
        s.p99_queue_s       = lkv_bench_pct(q, na, 0.99);
        s.p99_client_ttft_s = lkv_bench_pct(c, na, 0.99);
    }
    if (nb > 0) {
        s.mean_tpot_s = s_tpot / nb;
        qsort(b, (size_t)nb, sizeof *b, cmp_double);
        s.p50_tpot_s = lkv_bench_pct(b, nb, 0.50);
        s.p99_tpot_s = lkv_bench_pct(b, nb, 0.99);
    }
    if (n > 0) {
        s.slo_violation_rate  = (double)viol / n;
        s.mean_submit_delay_s = s_delay / n;
        double t0             = reqs[0].arrival_ns * 1e-9;
        s.makespan_s          = last_finish > t0 ? last_finish - t0 : 0.0;
    }
    if (s.makespan_s > 0) {
        s.throughput_tok_s = s.output_tokens / s.makespan_s;
        s.throughput_req_s = s.n_completed / s.makespan_s;
    }
    free(a);
    free(b);
    free(q);
    free(c);
    *out = s;
    return LKV_OK;
}

void lkv_bench_summary_write_json(const lkv_bench_summary_t *s, int indent,
                                  FILE *f)
{
#define JD(name_) fprintf(f, "%*s\"" #name_ "\": %.9g,\n", indent, "", s->name_);
#define JI(name_)                                                   \
    fprintf(f, "%*s\"" #name_ "\": %lld,\n", indent, "", (long long)s->name_);
    LKV_SUMMARY_KEYS(JD, JI)
    JI(prompt_tokens)
    JD(mean_client_ttft_s)
    JD(p99_client_ttft_s)
    JD(mean_submit_delay_s)
#undef JD
#undef JI
}

static const char *outcome_str(lkv_bench_outcome_t o)
{
    switch (o) {
    case LKV_BENCH_OK:
        return "ok";
    case LKV_BENCH_REJECTED:
        return "rejected";
    case LKV_BENCH_FAILED:
        return "failed";
    case LKV_BENCH_PENDING:
        break;
    }
    return "pending";
}

void lkv_bench_write_csv(const lkv_bench_req_t *reqs,
                         const lkv_bench_record_t *recs, int64_t n,
                         double rate, double ttft_slo_s, double tpot_slo_s,
                         bool with_header, FILE *f)
{
    if (with_header) {
        fprintf(f, "id,arrival_s,prompt_len,output_len,instance,status,"
                   "ttft_s,queue_s,tpot_s,e2e_s,n_generated,preemptions,"
                   "offloaded_layers,slo_violated,rate,prefill_s,"
                   "client_ttft_s,submit_delay_s,finish_reason,error\n");
    }
    for (int64_t i = 0; i < n; i++) {
        const lkv_bench_record_t *r = &recs[i];
        /* preemptions / offloaded layers are not reported per request by
         * the protocol: -1 = unknown (the JSON has server-wide totals) */
        fprintf(f,
                "%lld,%.6f,%d,%d,0,%s,%.6f,%.6f,%.6f,%.6f,%d,-1,-1,%d,%.6g,"
                "%.6f,%.6f,%.6f,%s,%s\n",
                (long long)i, reqs[i].arrival_ns * 1e-9, reqs[i].prompt_len,
                reqs[i].output_len, outcome_str(r->outcome), r->ttft_s,
                r->queue_s, r->tpot_s, r->e2e_s, r->n_tokens,
                violated(r, ttft_slo_s, tpot_slo_s) ? 1 : 0, rate,
                r->ttft_s - r->queue_s, r->client_ttft_s, r->submit_delay_s,
                r->finish_reason[0] ? r->finish_reason : "-",
                r->status != LKV_OK ? lkv_status_name(r->status) : "");
    }
}
