/* simulator.c - see simulator.h. */
#define LKV_LOG_MODULE "sim"
#include "sim/simulator.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "bench/summary_keys.h"
#include "common/log.h"
#include "sim/sim_exec.h"

lkv_sim_config_t lkv_sim_config_default(void)
{
    lkv_sim_config_t c = {
        .cost             = lkv_sim_cost_config_default(),
        .work             = lkv_sim_workload_config_default(),
        .policy           = LKV_SCHED_POLICY_LAYERKV,
        .instances        = 1,
        .route            = LKV_SIM_ROUTE_LEAST_TTFT,
        .ttft_slo_s       = 10.0,
        .tpot_slo_s       = 0.2,
        .host_gib         = 256.0,
        .num_blocks       = 0,
        .max_seqs         = 128,
        .max_batch_tokens = 4096,
        .chunked_prefill  = false,
        .chunk_tokens     = 512,
        .watermark        = 0.01f,
        .decode_mode      = LKV_SCHED_DECODE_AUTO,
        .offload_rule     = LKV_SCHED_OFFLOAD_NEEDED,
        .staging_window   = -1,
    };
    return c;
}

/* ---- fitting the scheduler's priors to the cost model (what a deployment
 * does by profiling at start-up) ---- */

static bool solve3(double a[3][4], double x[3])
{
    for (int c = 0; c < 3; c++) {
        int p = c;
        for (int r = c + 1; r < 3; r++) {
            if (fabs(a[r][c]) > fabs(a[p][c])) {
                p = r;
            }
        }
        if (fabs(a[p][c]) < 1e-300) {
            return false;
        }
        for (int k = 0; k < 4; k++) {
            double t = a[c][k];
            a[c][k]  = a[p][k];
            a[p][k]  = t;
        }
        for (int r = 0; r < 3; r++) {
            if (r != c) {
                double f = a[r][c] / a[c][c];
                for (int k = c; k < 4; k++) {
                    a[r][k] -= f * a[c][k];
                }
            }
        }
    }
    for (int c = 0; c < 3; c++) {
        x[c] = a[c][3] / a[c][c];
    }
    return true;
}

/* Weighted (relative-error) least squares y = x0 + x1*f1 + x2*f2. */
typedef struct {
    double a[3][4];
} ls3_t;

static void ls3_add(ls3_t *ls, double f1, double f2, double y)
{
    double f[3] = {1.0, f1, f2}, w = 1.0 / (y * y);
    for (int i = 0; i < 3; i++) {
        for (int j = 0; j < 3; j++) {
            ls->a[i][j] += w * f[i] * f[j];
        }
        ls->a[i][3] += w * f[i] * y;
    }
}

static void fit_priors(const lkv_sim_cost_t *cost, int max_len,
                       lkv_sched_config_t *sc)
{
    ls3_t  pf = {{{0}}}, dc = {{{0}}};
    double x[3];
    for (double c = 64; c <= max_len * 1.0001; c *= 1.4142) {
        lkv_sim_batch_t b = {
            .n_tokens = (int32_t)c, .n_prefill = 1, .prefill_c2_sum = c * c};
        ls3_add(&pf, c, c * c, lkv_sim_cost_step_ns(cost, &b));
    }
    if (solve3(pf.a, x)) {
        sc->pf_c0_ns = x[0] > 0 ? x[0] : 0;
        sc->pf_c1_ns = x[1] > 0 ? x[1] : 0;
        sc->pf_c2_ns = x[2] > 0 ? x[2] : 0;
    }
    for (int n = 1; n <= 256; n *= 2) {
        for (int kv = 256; kv <= max_len; kv *= 2) {
            lkv_sim_batch_t b = {
                .n_tokens = n, .n_decode = n, .decode_kv_sum = (int64_t)n * kv};
            ls3_add(&dc, n, (double)n * kv, lkv_sim_cost_step_ns(cost, &b));
        }
    }
    if (solve3(dc.a, x)) {
        sc->dc_c0_ns = x[0] > 0 ? x[0] : 0;
        sc->dc_c1_ns = x[1] > 0 ? x[1] : 0;
        sc->dc_c2_ns = x[2] > 0 ? x[2] : 0;
    }
}

/* ---- per-request records ---- */

enum {
    RF_FIRST    = 1,
    RF_DONE     = 2,
    RF_FAILED   = 4,
    RF_REJECTED = 8,
    RF_VIOLATED = 16
};

typedef struct {
    float   ttft_s, queue_s, tpot_s, e2e_s;
    int32_t n_gen;
    int16_t inst;
    uint8_t flags;
    uint8_t n_off;
    uint8_t n_preempt;
} rec_t;

typedef struct {
    lkv_sched_t      *sched;
    lkv_sim_exec_t   *exec;
    bool              busy;
    int64_t           end_ns;
    lkv_step_result_t res;
    int64_t           pending_tokens; /* prompts without a first token */
} inst_t;

typedef struct {
    const lkv_sim_config_t *cfg;
    lkv_sim_cost_t         *cost;
    lkv_sim_req_t          *reqs;
    int64_t                 n;
    rec_t                  *rec;
    inst_t                 *inst;
    int                     n_inst;
    int32_t                *prompt_buf;
    int                     rr;
    int64_t                 n_done;
    int64_t                 last_finish_ns;
    double                  tok_ns; /* per-token prefill estimate (router) */
} sim_t;

static lkv_status_t drain_events(sim_t *S, int i)
{
    const lkv_sched_event_t *ev;
    int                      n;
    inst_t                  *in = &S->inst[i];
    lkv_sched_take_events(in->sched, &ev, &n);
    for (int k = 0; k < n; k++) {
        uint64_t id = ev[k].id;
        if (id >= (uint64_t)S->n) {
            LKV_LOG_ERROR("event for unknown request %llu",
                          (unsigned long long)id);
            return LKV_ERR_INTERNAL;
        }
        rec_t *r = &S->rec[id];
        if (ev[k].kind == LKV_SCHED_EV_TOKEN) {
            if (!(r->flags & RF_FIRST)) {
                r->flags |= RF_FIRST;
                in->pending_tokens -= S->reqs[id].prompt_len;
            }
            continue;
        }
        const lkv_sched_timing_t *t = &ev[k].timing;
        if (!(r->flags & RF_FIRST)) {
            in->pending_tokens -= S->reqs[id].prompt_len;
            r->flags |= RF_FIRST;
        }
        r->flags |= RF_DONE;
        S->n_done++;
        if (ev[k].time_ns > S->last_finish_ns) {
            S->last_finish_ns = ev[k].time_ns;
        }
        r->n_gen = t->n_generated;
        r->n_off =
            (uint8_t)(t->n_offloaded_layers > 255 ? 255
                                                  : t->n_offloaded_layers);
        r->n_preempt =
            (uint8_t)(t->n_preemptions > 255 ? 255 : t->n_preemptions);
        if (ev[k].reason != LKV_SCHED_FINISH_LENGTH &&
            ev[k].reason != LKV_SCHED_FINISH_STOP) {
            r->flags |= RF_FAILED | RF_VIOLATED;
            if (!S->cfg->quiet) {
                LKV_LOG_WARN("request %llu finished with %s (%s)",
                             (unsigned long long)id,
                             lkv_sched_finish_str(ev[k].reason),
                             lkv_status_str(ev[k].status));
            }
            continue;
        }
        r->ttft_s  = (float)((t->first_token_ns - t->arrival_ns) * 1e-9);
        r->queue_s = (float)(t->queue_ns * 1e-9);
        r->e2e_s   = (float)((t->finish_ns - t->arrival_ns) * 1e-9);
        r->tpot_s  = t->n_generated > 1
                         ? (float)((t->finish_ns - t->first_token_ns) * 1e-9 /
                                  (t->n_generated - 1))
                         : 0.0f;
        if ((S->cfg->ttft_slo_s > 0 && r->ttft_s > S->cfg->ttft_slo_s) ||
            (S->cfg->tpot_slo_s > 0 && t->n_generated > 1 &&
             r->tpot_s > S->cfg->tpot_slo_s)) {
            r->flags |= RF_VIOLATED;
        }
    }
    return LKV_OK;
}

static lkv_status_t start_step(sim_t *S, int i, int64_t now, int64_t next_arr)
{
    inst_t                *in = &S->inst[i];
    const lkv_step_plan_t *plan;
    lkv_status_t           st = lkv_sched_next_plan(in->sched, now, &plan);
    if (st == LKV_AGAIN) {
        in->busy = false;
        return drain_events(S, i); /* e.g. requests finished with ERROR */
    }
    if (st < 0) {
        LKV_LOG_ERROR("instance %d: next_plan failed: %s (%s)", i,
                      lkv_status_str(st), lkv_sched_last_error(in->sched));
        return st;
    }
    LKV_CHECK(drain_events(S, i));
    if (plan->n_seqs == 0 && lkv_sim_exec_pending(in->exec) == 0 &&
        next_arr == INT64_MAX && plan->n_moves == 0 && plan->n_finished == 0 &&
        plan->n_appends == 0) {
        lkv_sched_stats_t ss;
        lkv_sched_stats(in->sched, &ss);
        LKV_LOG_ERROR("instance %d: the scheduler waits on copies the "
                      "executor does not have in flight (%d waiting, %d "
                      "running, %d moves in flight)",
                      i, ss.n_waiting, ss.n_running, ss.n_moves_inflight);
        return LKV_ERR_INTERNAL;
    }
    LKV_CHECK(lkv_sim_exec_step(in->exec, plan, now, next_arr, &in->res,
                                &in->end_ns));
    in->busy = true;
    return LKV_OK;
}

static int route(sim_t *S, const lkv_sim_req_t *rq)
{
    if (S->n_inst == 1) {
        return 0;
    }
    if (S->cfg->route == LKV_SIM_ROUTE_ROUND_ROBIN) {
        return S->rr++ % S->n_inst;
    }
    /* predicted TTFT ~ prefill tokens ahead of it + KV pressure: the device
     * tokens in use, weighted as they delay admission under memory pressure */
    int    best       = 0;
    double best_score = INFINITY;
    for (int i = 0; i < S->n_inst; i++) {
        const lkv_kv_alloc_t *kv = lkv_sched_kv(S->inst[i].sched);
        double used = (double)lkv_kv_used_blocks(kv, LKV_KV_TIER_DEVICE) /
                      (double)lkv_kv_total_blocks(kv, LKV_KV_TIER_DEVICE);
        double score =
            (double)(S->inst[i].pending_tokens + rq->prompt_len) * S->tok_ns +
            (used > 0.8 ? (used - 0.8) * 5e9 : 0.0) +
            (S->inst[i].busy ? 0.0 : -1.0);
        if (score < best_score) {
            best_score = score;
            best       = i;
        }
    }
    return best;
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static double pct(float *v, int64_t n, double q)
{
    if (n == 0) {
        return 0.0;
    }
    double  pos = q * (double)(n - 1);
    int64_t lo  = (int64_t)floor(pos);
    int64_t hi  = lo + 1 < n ? lo + 1 : lo;
    return v[lo] + (pos - (double)lo) * (v[hi] - v[lo]);
}

static void summarise(sim_t *S, lkv_sim_result_t *out)
{
    const lkv_sim_config_t *cfg = S->cfg;
    float  *a  = malloc((size_t)(S->n > 0 ? S->n : 1) * sizeof(float));
    float  *b  = malloc((size_t)(S->n > 0 ? S->n : 1) * sizeof(float));
    int64_t na = 0, nb = 0, viol = 0, ttft_ok = 0, tpot_ok = 0;
    double  s_ttft = 0, s_q = 0, s_tpot = 0, s_e2e = 0, s_off = 0, s_pf = 0;
    int64_t n_off = 0, tokens = 0;
    for (int64_t i = 0; i < S->n; i++) {
        rec_t *r = &S->rec[i];
        if (r->flags & RF_REJECTED) {
            out->n_rejected++;
        }
        if (r->flags & RF_VIOLATED) {
            viol++;
        }
        if (!(r->flags & RF_DONE) || (r->flags & RF_FAILED)) {
            if (r->flags & RF_FAILED) {
                out->n_failed++;
            }
            continue;
        }
        out->n_completed++;
        tokens += r->n_gen;
        s_ttft += r->ttft_s;
        s_q += r->queue_s;
        s_pf += r->ttft_s - r->queue_s;
        s_e2e += r->e2e_s;
        s_off += r->n_off;
        n_off += r->n_off > 0;
        if (a != NULL) {
            a[na] = r->ttft_s;
        }
        na++;
        ttft_ok += !(cfg->ttft_slo_s > 0 && r->ttft_s > cfg->ttft_slo_s);
        if (r->n_gen > 1) {
            s_tpot += r->tpot_s;
            if (b != NULL) {
                b[nb] = r->tpot_s;
            }
            nb++;
            tpot_ok += !(cfg->tpot_slo_s > 0 && r->tpot_s > cfg->tpot_slo_s);
        } else {
            tpot_ok++;
        }
    }
    out->n_requests    = S->n;
    out->output_tokens = tokens;
    if (na > 0) {
        out->mean_ttft_s           = s_ttft / na;
        out->mean_queue_s          = s_q / na;
        out->mean_prefill_s        = s_pf / na;
        out->mean_e2e_s            = s_e2e / na;
        out->mean_offloaded_layers = s_off / na;
        out->frac_offloaded        = (double)n_off / na;
        out->ttft_attainment       = (double)ttft_ok / na;
        out->tpot_attainment       = (double)tpot_ok / na;
        if (a != NULL) {
            qsort(a, (size_t)na, sizeof(float), cmp_float);
            out->p50_ttft_s = pct(a, na, 0.50);
            out->p90_ttft_s = pct(a, na, 0.90);
            out->p99_ttft_s = pct(a, na, 0.99);
        }
    }
    if (nb > 0) {
        out->mean_tpot_s = s_tpot / nb;
        if (b != NULL) {
            qsort(b, (size_t)nb, sizeof(float), cmp_float);
            out->p50_tpot_s = pct(b, nb, 0.50);
            out->p99_tpot_s = pct(b, nb, 0.99);
        }
    }
    /* p99 queue */
    if (a != NULL) {
        int64_t k = 0;
        for (int64_t i = 0; i < S->n; i++) {
            if ((S->rec[i].flags & RF_DONE) && !(S->rec[i].flags & RF_FAILED)) {
                a[k++] = S->rec[i].queue_s;
            }
        }
        qsort(a, (size_t)k, sizeof(float), cmp_float);
        out->p99_queue_s = pct(a, k, 0.99);
    }
    out->slo_violation_rate = S->n > 0 ? (double)viol / S->n : 0.0;
    int64_t t0              = S->n > 0 ? S->reqs[0].arrival_ns : 0;
    out->makespan_s         = (S->last_finish_ns - t0) * 1e-9;
    if (out->makespan_s > 0) {
        out->throughput_tok_s = tokens / out->makespan_s;
        out->throughput_req_s = out->n_completed / out->makespan_s;
    }
    free(a);
    free(b);
}

lkv_status_t lkv_sim_run(const lkv_sim_config_t *cfg, lkv_sim_result_t *out)
{
    lkv_status_t st = LKV_OK;
    sim_t        S;
    int64_t      wall0 = lkv_now_ns();

    memset(&S, 0, sizeof(S));
    memset(out, 0, sizeof(*out));
    S.cfg = cfg;
    if (cfg->instances < 1 || cfg->instances > 4096 || cfg->max_seqs < 1 ||
        cfg->max_batch_tokens < 1 || !(cfg->host_gib >= 0) ||
        cfg->num_blocks < 0) {
        LKV_LOG_ERROR("invalid simulation config: instances 1..4096, "
                      "max batch >= 1, batch tokens >= 1, host GiB >= 0");
        return LKV_ERR_INVALID;
    }
    lkv_sim_cost_config_t cc = cfg->cost;
    cc.max_batch_tokens      = cfg->max_batch_tokens;
    LKV_CHECK(lkv_sim_cost_create(&cc, &S.cost));
    const lkv_sim_model_t *m = lkv_sim_cost_model(S.cost);
    LKV_CHECK_GOTO(lkv_sim_workload_generate(&cfg->work, &S.reqs, &S.n), st,
                   out);
    int32_t max_prompt = 1, max_len = m->max_context;
    for (int64_t i = 0; i < S.n; i++) {
        if (S.reqs[i].prompt_len > max_prompt) {
            max_prompt = S.reqs[i].prompt_len;
        }
        if (S.reqs[i].prompt_len + S.reqs[i].output_len > max_len) {
            max_len = S.reqs[i].prompt_len + S.reqs[i].output_len;
        }
    }
    S.rec        = calloc((size_t)S.n, sizeof(rec_t));
    S.prompt_buf = calloc((size_t)max_prompt, sizeof(int32_t));
    S.inst       = calloc((size_t)cfg->instances, sizeof(inst_t));
    if (S.rec == NULL || S.prompt_buf == NULL || S.inst == NULL) {
        st = LKV_ERR_NOMEM;
        goto out;
    }
    S.n_inst = cfg->instances;

    /* scheduler config from the cost model */
    lkv_sched_config_t sc           = lkv_sched_config_default();
    sc.policy                       = cfg->policy;
    sc.n_layers                     = m->n_layers;
    sc.block_size                   = cfg->cost.block_size;
    sc.block_bytes                  = lkv_sim_cost_block_bytes(S.cost);
    sc.n_blocks[LKV_KV_TIER_DEVICE] = cfg->num_blocks > 0
                                          ? cfg->num_blocks * m->n_layers
                                          : lkv_sim_cost_device_blocks(S.cost);
    double host_blocks = cfg->host_gib * 1073741824.0 / (double)sc.block_bytes;
    sc.n_blocks[LKV_KV_TIER_HOST] =
        host_blocks > 2e9 ? 2000000000 : (int32_t)host_blocks;
    sc.n_blocks[LKV_KV_TIER_REMOTE] = 0;
    sc.max_seqs                     = cfg->max_seqs;
    sc.max_queue                    = (int)(S.n < (1 << 24) ? S.n : (1 << 24));
    sc.max_seq_len                  = max_len;
    sc.max_batch_tokens             = cfg->max_batch_tokens;
    sc.watermark                    = cfg->watermark;
    sc.chunked_prefill              = cfg->chunked_prefill;
    sc.chunk_tokens                 = cfg->chunk_tokens;
    sc.ttft_slo_ns                  = (int64_t)(cfg->ttft_slo_s * 1e9);
    sc.tpot_slo_ns                  = (int64_t)(cfg->tpot_slo_s * 1e9);
    for (int t = 0; t < LKV_KV_TIER_COUNT; t++) {
        sc.d2h_bytes_per_s[t] = 0;
        sc.h2d_bytes_per_s[t] = 0;
    }
    sc.d2h_bytes_per_s[LKV_KV_TIER_HOST] =
        lkv_sim_cost_link_bytes_per_s(S.cost);
    sc.h2d_bytes_per_s[LKV_KV_TIER_HOST] =
        lkv_sim_cost_link_bytes_per_s(S.cost);
    sc.decode_mode  = (lkv_sched_decode_mode_t)cfg->decode_mode;
    sc.offload_rule = (lkv_sched_offload_rule_t)cfg->offload_rule;
    sc.offload_contiguous = cfg->contiguous_layers;
    if (cfg->staging_window >= 0) {
        sc.prefill_staging_window = cfg->staging_window;
    }
    sc.n_stop       = 0;
    fit_priors(S.cost, max_len, &sc);
    S.tok_ns           = sc.pf_c1_ns + sc.pf_c2_ns * 2048;
    out->device_blocks = sc.n_blocks[LKV_KV_TIER_DEVICE];

    lkv_sim_exec_config_t ec = {.cost         = S.cost,
                                .block_size   = cfg->cost.block_size,
                                .sync_offload = cfg->sync_offload};
    for (int i = 0; i < S.n_inst; i++) {
        st = lkv_sched_create(&sc, &S.inst[i].sched);
        if (st < 0) {
            LKV_LOG_ERROR("scheduler config rejected: %s",
                          S.inst[i].sched != NULL
                              ? lkv_sched_last_error(S.inst[i].sched)
                              : lkv_status_str(st));
            goto out;
        }
        LKV_CHECK_GOTO(lkv_sim_exec_create(&ec, &S.inst[i].exec), st, out);
    }
    if (!cfg->quiet) {
        fprintf(stderr, "sim: %s; %lld requests, %d instance(s), policy %s\n",
                lkv_sim_cost_describe(S.cost), (long long)S.n, S.n_inst,
                lkv_sched_policy_name(cfg->policy));
    }

    /* ---- event loop ---- */
    int64_t next  = 0;
    int64_t now   = 0;
    int64_t stall = 0;
    for (;;) {
        int64_t t_arr = next < S.n ? S.reqs[next].arrival_ns : INT64_MAX;
        int     bi    = -1;
        int64_t t_end = INT64_MAX;
        for (int i = 0; i < S.n_inst; i++) {
            if (S.inst[i].busy && S.inst[i].end_ns < t_end) {
                t_end = S.inst[i].end_ns;
                bi    = i;
            }
        }
        if (t_arr == INT64_MAX && bi < 0) {
            break;
        }
        int64_t t = t_arr <= t_end ? t_arr : t_end;
        stall     = t > now ? 0 : stall + 1;
        now       = t;
        if (stall > 10000000) {
            LKV_LOG_ERROR("simulation stalled at t=%.6f s (no time progress "
                          "in 1e7 events)",
                          now * 1e-9);
            st = LKV_ERR_INTERNAL;
            goto out;
        }
        if (t_arr <= t_end) {
            const lkv_sim_req_t *rq = &S.reqs[next];
            int                  i  = route(&S, rq);
            lkv_sched_request_t  r  = {0};
            r.id                    = (uint64_t)next;
            r.prompt                = S.prompt_buf;
            r.n_prompt              = rq->prompt_len;
            r.max_tokens            = rq->output_len;
            r.ttft_slo_ns           = cfg->no_slo_scheduler ? -1 : 0;
            r.tpot_slo_ns           = cfg->no_slo_scheduler ? -1 : 0;
            r.arrival_ns            = rq->arrival_ns;
            r.ignore_stop           = true;
            S.rec[next].inst        = (int16_t)i;
            lkv_status_t sst = lkv_sched_submit(S.inst[i].sched, &r, now, NULL);
            if (sst < 0) {
                S.rec[next].flags |=
                    RF_REJECTED | RF_DONE | RF_FAILED | RF_VIOLATED | RF_FIRST;
                S.n_done++;
                if (!cfg->quiet && sst != LKV_ERR_REJECTED) {
                    LKV_LOG_WARN("request %lld not accepted: %s (%s)",
                                 (long long)next, lkv_status_str(sst),
                                 lkv_sched_last_error(S.inst[i].sched));
                }
            } else {
                S.inst[i].pending_tokens += rq->prompt_len;
            }
            next++;
            int64_t na = next < S.n ? S.reqs[next].arrival_ns : INT64_MAX;
            if (!S.inst[i].busy) {
                LKV_CHECK_GOTO(start_step(&S, i, now, na), st, out);
            }
            continue;
        }
        inst_t *in = &S.inst[bi];
        st         = lkv_sched_on_result(in->sched, &in->res, now);
        if (st < 0) {
            LKV_LOG_ERROR("instance %d: on_result failed: %s (%s)", bi,
                          lkv_status_str(st), lkv_sched_last_error(in->sched));
            goto out;
        }
        in->busy = false;
        LKV_CHECK_GOTO(drain_events(&S, bi), st, out);
        LKV_CHECK_GOTO(start_step(&S, bi, now, t_arr), st, out);
    }

    summarise(&S, out);
    /* scheduler and executor counters */
    double busy_c = 0, busy_d = 0, busy_h = 0, tail = 0;
    for (int i = 0; i < S.n_inst; i++) {
        lkv_sched_stats_t    ss;
        lkv_sim_exec_stats_t es;
        lkv_sched_stats(S.inst[i].sched, &ss);
        lkv_sim_exec_stats(S.inst[i].exec, &es);
        out->preemptions += ss.preemptions;
        out->offload_moves += ss.offload_moves;
        out->reload_moves += ss.reload_moves;
        out->stage_moves += ss.stage_moves;
        out->anti_starvation_admits += ss.anti_starvation_admits;
        out->offloaded_bytes += ss.offloaded_bytes;
        out->reloaded_bytes += ss.reloaded_bytes;
        out->staged_bytes += ss.staged_bytes;
        out->steps += es.steps;
        out->wait_steps += es.wait_steps;
        busy_c += (double)es.compute_ns;
        busy_d += (double)es.d2h_busy_ns;
        busy_h += (double)es.h2d_busy_ns;
        tail += (double)es.tail_ns;
    }
    if (out->makespan_s > 0) {
        double span        = out->makespan_s * 1e9 * S.n_inst;
        out->compute_util  = busy_c / span;
        out->link_d2h_util = busy_d / span;
        out->link_h2d_util = busy_h / span;
    }
    out->copy_tail_s = tail * 1e-9;

    if (cfg->csv_path != NULL) {
        FILE *f = fopen(cfg->csv_path, "w");
        if (f == NULL) {
            LKV_LOG_ERROR("cannot write %s", cfg->csv_path);
            st = LKV_ERR_IO;
            goto out;
        }
        fprintf(f, "id,arrival_s,prompt_len,output_len,instance,status,"
                   "ttft_s,queue_s,tpot_s,e2e_s,n_generated,preemptions,"
                   "offloaded_layers,slo_violated\n");
        for (int64_t i = 0; i < S.n; i++) {
            const rec_t *r = &S.rec[i];
            fprintf(f,
                    "%lld,%.6f,%d,%d,%d,%s,%.6f,%.6f,%.6f,%.6f,%d,%d,%d,%d\n",
                    (long long)i, S.reqs[i].arrival_ns * 1e-9,
                    S.reqs[i].prompt_len, S.reqs[i].output_len, r->inst,
                    (r->flags & RF_REJECTED) ? "rejected"
                    : (r->flags & RF_FAILED) ? "failed"
                                             : "ok",
                    r->ttft_s, r->queue_s, r->tpot_s, r->e2e_s, r->n_gen,
                    r->n_preempt, r->n_off, (r->flags & RF_VIOLATED) ? 1 : 0);
        }
        fclose(f);
    }
out:
    if (S.inst != NULL) {
        for (int i = 0; i < cfg->instances; i++) {
            lkv_sched_destroy(&S.inst[i].sched);
            lkv_sim_exec_destroy(&S.inst[i].exec);
        }
    }
    free(S.inst);
    free(S.rec);
    free(S.prompt_buf);
    free(S.reqs);
    lkv_sim_cost_destroy(&S.cost);
    out->sim_wall_s = (lkv_now_ns() - wall0) * 1e-9;
    return st;
}

void lkv_sim_result_write_json(const lkv_sim_result_t *r,
                               const lkv_sim_config_t *cfg, FILE *f)
{
    const lkv_sim_workload_config_t *w = &cfg->work;
    fprintf(f, "{\n");
    fprintf(f, "  \"source\": \"sim\",\n");
    fprintf(f, "  \"policy\": \"%s\",\n", lkv_sched_policy_name(cfg->policy));
    fprintf(f, "  \"model\": \"%s\",\n  \"gpu\": \"%s\",\n  \"tp\": %d,\n",
            cfg->cost.model, cfg->cost.gpu, cfg->cost.tp);
    fprintf(f, "  \"instances\": %d,\n", cfg->instances);
    if (w->trace != NULL) {
        fprintf(f, "  \"trace\": \"%s\",\n", w->trace);
    } else {
        fprintf(f, "  \"prompt_len\": %d,\n  \"output_len\": %d,\n",
                w->prompt_len, w->output_len);
    }
    fprintf(f, "  \"rate\": %.6g,\n  \"seed\": %llu,\n", w->rate,
            (unsigned long long)w->seed);
    fprintf(f, "  \"ttft_slo_s\": %.6g,\n  \"tpot_slo_s\": %.6g,\n",
            cfg->ttft_slo_s, cfg->tpot_slo_s);
    fprintf(f, "  \"link_gbps\": %.6g,\n", cfg->cost.link_gbps);
    fprintf(f,
            "  \"ablation\": {\"no_slo_scheduler\": %s, \"sync_offload\": "
            "%s, \"contiguous_layers\": %s},\n",
            cfg->no_slo_scheduler ? "true" : "false",
            cfg->sync_offload ? "true" : "false",
            cfg->contiguous_layers ? "true" : "false");
#define JD(name_) fprintf(f, "  \"" #name_ "\": %.9g,\n", r->name_);
#define JI(name_)                                                              \
    fprintf(f, "  \"" #name_ "\": %lld,\n", (long long)r->name_);
    LKV_SUMMARY_KEYS(JD, JI)
    JI(preemptions)
    JI(offload_moves)
    JI(reload_moves)
    JI(stage_moves)
    JI(anti_starvation_admits)
    JI(offloaded_bytes)
    JI(reloaded_bytes)
    JI(staged_bytes)
    JI(steps)
    JI(wait_steps)
    JD(mean_offloaded_layers)
    JD(frac_offloaded)
    JD(compute_util)
    JD(link_d2h_util)
    JD(link_h2d_util)
    JD(copy_tail_s)
    JI(device_blocks)
#undef JD
#undef JI
    fprintf(f, "  \"sim_wall_s\": %.6g\n}\n", r->sim_wall_s);
}
