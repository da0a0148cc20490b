/* scheduler.h - the continuous-batching scheduler of one instance: request
 * queue, KV metadata (kvstore/kv_alloc.h), per-step plans, SLO model.
 *
 * Pure and deterministic: no threads, no I/O, no clock reads. Every call that
 * depends on time takes `now_ns` from the caller (the real coordinator passes
 * lkv_now_ns(), the simulator passes its simulated clock), so the same inputs
 * always give the same plans. Two policies share this one interface:
 *
 *  - LKV_SCHED_POLICY_BASELINE: vLLM V0. FCFS admission only when device
 *    blocks for ALL layers of the prompt fit plus a watermark; preemption by
 *    recompute (free everything, requeue at the front) when decode cannot grow.
 *  - LKV_SCHED_POLICY_LAYERKV: LayerKV (docs/scheduling.md): per-layer
 *    admission, offloaded layers interleaved, TPOT slack (Eq. 1-2), prefill
 *    time model with online alpha (Eq. 3), offload volume bounded by link
 *    bandwidth (Eq. 4), reload or stream decode per request, output-length
 *    predictor, TTFT anti-starvation, optional up-front rejection;
 *    preemption by offloading the newest request's layers (swap), recompute
 *    only when the host tier is full.
 * Both: FCFS, stop at the first request that does not fit; the watermark is
 * not applied when nothing is running; a request that cannot fit even an
 * empty device pool finishes with LKV_ERR_NOSPACE.
 *
 * Step protocol (one plan in flight at a time):
 *
 *     lkv_sched_submit(...)            any time, as requests arrive
 *     loop:
 *       st = lkv_sched_next_plan(s, now, &plan)
 *       if st == LKV_AGAIN: nothing to run; wait for a submit, call again
 *       execute plan (worker or simulated executor)
 *       lkv_sched_on_result(s, &result, now)
 *       lkv_sched_take_events(s, &events, &n)   tokens, finishes
 *
 * Plan semantics (see common/step_plan.h): a plan carries deltas. Appends
 * come first (new blocks at the end of a (seq, layer) table), then moves:
 *  - OFFLOAD (device -> host/remote): issued in the prefill step of the
 *    layers it offloads; the worker copies after computing the layer. The
 *    device blocks stay allocated until a result lists the move in
 *    moves_done (this or a later step).
 *  - RELOAD (host/remote -> device): background; may complete in a later
 *    step. The request decodes only when all its layers are on the device.
 *  - STAGE (streamed layer, or a later prefill chunk of an offloaded layer):
 *    copy the layer's blocks into the device staging blocks `dst` before the
 *    layer runs, compute with them, then write back to `src` every block this
 *    step wrote into (the tail block for a decode token; the chunk's blocks
 *    for a prefill chunk), and drop the staging. A STAGE move always ends
 *    with its step: the scheduler releases the staging when it receives the
 *    step's result (listing it in moves_done is allowed, not required).
 * `finished` lists sequences whose state the worker drops (after any copy
 * that reads them ends). A plan with n_seqs == 0 but moves in flight is a
 * "wait step": execute nothing, report the moves that completed meanwhile.
 *
 * Sequence ids in plans are the scheduler's own (a fresh one each time a
 * request is admitted or re-admitted after preemption), never request ids;
 * events carry request ids.
 *
 * Ownership: the scheduler copies each request's prompt at submit. Every
 * array a plan or the event list points to is owned by the scheduler and
 * stays valid until the next call of the same function (next_plan,
 * take_events) or lkv_sched_destroy; the caller never frees them.
 *
 * Threading: not thread-safe. One owner thread calls every function.
 * Hot path: next_plan / on_result do no allocation in steady state (arrays
 * grow geometrically and are reused).
 */
#ifndef LKV_COORDINATOR_SCHEDULER_H
#define LKV_COORDINATOR_SCHEDULER_H

#include <stdbool.h>
#include <stdint.h>

#include "common/status.h"
#include "common/step_plan.h"
#include "kvstore/kv_alloc.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LKV_SCHED_MAX_STOP 8 /* stop token ids per config / per request */

#define LKV_SCHED_MAX_STAGING_WINDOW 16

typedef enum {
    LKV_SCHED_POLICY_BASELINE = 0,
    LKV_SCHED_POLICY_LAYERKV  = 1,
} lkv_sched_policy_t;

/* How many layers a LAYERKV admission offloads (PAPER.md 3.2, Eq. 4). */
typedef enum {
    /* Only as many as memory requires: enough that the device keeps room for
     * the watermark and the next queued request's prefill (default). */
    LKV_SCHED_OFFLOAD_NEEDED = 0,
    /* "Fewest GPU layers": as many as Eq. 4 (link time <= prefill time) and
     * the host tier allow, keeping at least min_retained_layers. */
    LKV_SCHED_OFFLOAD_MAX = 1,
} lkv_sched_offload_rule_t;

/* How a request with offloaded layers decodes (PAPER.md 2.4). */
typedef enum {
    LKV_SCHED_DECODE_AUTO   = 0, /* per request, per step: reload when the
                                    device has room, else stream when the
                                    link fits within the TPOT budget, else
                                    wait (default) */
    LKV_SCHED_DECODE_RELOAD = 1, /* only reload (design A) */
    LKV_SCHED_DECODE_STREAM = 2, /* only stream (design B): never reload;
                                    wait when the link or staging does not
                                    fit (experiments) */
} lkv_sched_decode_mode_t;

typedef struct {
    lkv_sched_policy_t policy;

    /* KV geometry and pools (passed on to kv_alloc). */
    int     n_layers;                    /* layers of this instance */
    int     block_size;                  /* tokens per layer-block */
    int64_t block_bytes;                 /* bytes of ONE layer-block (per
                                            rank: already divided by TP) */
    int32_t n_blocks[LKV_KV_TIER_COUNT]; /* device, host, remote capacity */
    int     max_seqs;                    /* live sequences (running + queued
                                            with KV); also max batch seqs */
    int     max_queue;                   /* waiting requests accepted; then
                                            submit returns LKV_ERR_BUSY */
    int     max_seq_len;                 /* model context (prompt + output) */

    /* Batching. */
    int   max_batch_tokens;  /* tokens per step (prefill + decode); one
                                prefill longer than this runs alone */
    float watermark;         /* fraction of device blocks kept free at
                                admission (vLLM: 0.01) */
    bool  chunked_prefill;   /* split prefills into chunks (both policies) */
    int   chunk_tokens;      /* chunk size when chunked_prefill */

    /* SLO defaults (a request's 0 means "use these"); 0 here = no SLO. */
    int64_t ttft_slo_ns;
    int64_t tpot_slo_ns;

    /* Links, bytes/s per direction and tier (Eq. 4; measured at start-up by
     * the caller). 0 disables offload to that tier. */
    double d2h_bytes_per_s[LKV_KV_TIER_COUNT]; /* device -> tier */
    double h2d_bytes_per_s[LKV_KV_TIER_COUNT]; /* tier -> device */

    /* Eq. 3 prior: prefill of chunk c at offset o costs
     *   f = pf_c0_ns + pf_c1_ns * sum(c) + pf_c2_ns * sum(c * (o + c))
     * (quadratic in tokens); refitted online from measured steps. */
    double pf_c0_ns;
    double pf_c1_ns; /* per prefill token */
    double pf_c2_ns; /* per token x attended token */
    double alpha;    /* initial correction factor (1.0) */
    bool   adapt;    /* refit f and correct alpha online (default true) */
    /* Decode-step model t_d = dc_c0 + dc_c1 * n_seqs + dc_c2 * ctx_tokens,
     * corrected online by a measured/predicted ratio. */
    double dc_c0_ns;
    double dc_c1_ns; /* per decoding sequence */
    double dc_c2_ns; /* per context token attended */

    /* LAYERKV knobs. */
    lkv_sched_offload_rule_t offload_rule;
    lkv_sched_decode_mode_t  decode_mode;
    int   min_retained_layers; /* layers kept on device per request (>= 1) */
    float ttft_guard;          /* anti-starvation: admit a queued request at
                                  TPOT cost once its remaining TTFT budget
                                  < ttft_guard x its predicted prefill time
                                  (default 1.5); 0 disables */
    float max_parked;          /* stop offloading at admission while the
                                  off-device KV of requests waiting for
                                  their layers exceeds this fraction of the
                                  device pool (0.5); those requests then
                                  reload before new ones are admitted */
    bool  reject_hopeless;     /* submit: LKV_ERR_REJECTED when the
                                  predicted TTFT already misses the SLO */
    int   prefill_staging_window; /* W: 0 = offloaded layers of a prefill
                                  are computed on the device (all layers'
                                  blocks needed) and then offloaded; W > 0 =
                                  they are appended in the host/remote tier
                                  and the prefill step stages them through a
                                  ring of W device staging sets (the j-th
                                  offloaded layer uses set j mod W), so
                                  admission needs device blocks for the
                                  retained layers + the ring only. Range
                                  0..LKV_SCHED_MAX_STAGING_WINDOW. */
    bool  offload_contiguous;  /* offload layers 0..k-1 instead of spreading
                                  them evenly (ablation; default false) */

    /* Output-length predictor (coordinator/predictor.h). */
    float pred_quantile; /* 0.9 */
    int   pred_window;   /* finished requests remembered per bucket (64) */
    int   pred_prior;    /* remaining-token guess before any history (128) */

    /* Stop conditions for every request (plus each request's own). */
    int     n_stop;
    int32_t stop_ids[LKV_SCHED_MAX_STOP];
} lkv_sched_config_t;

/* Defaults: LAYERKV, 32 layers, block 16, 256 KiB blocks, 1024 device and
 * 8192 host blocks, no remote, max_seqs 256, max_queue 4096, context 4096,
 * 8192 batch tokens, watermark 0.01, no chunking (chunk 512), no SLOs,
 * 16 GB/s links, prefill prior tuned for a 7B model on an A100-class GPU,
 * alpha 1, adapt on, NEEDED, AUTO, 1 retained layer, guard 1.5, parked
 * 0.5, no rejection, prefill staging window LKV_SCHED_DEFAULT_STAGING_WINDOW
 * (2), interleaved offload, p90/64/128, no stop ids. */
lkv_sched_config_t lkv_sched_config_default(void);

typedef struct lkv_sched lkv_sched_t;

/* Create a scheduler (and its kv_alloc). LKV_ERR_INVALID with one log line
 * naming the bad field; LKV_ERR_NOMEM. *s_p written only on success. */
lkv_status_t lkv_sched_create(const lkv_sched_config_t *cfg, lkv_sched_t **s_p);
/* Free everything; accepts NULL and *s_p == NULL; sets *s_p to NULL. */
void         lkv_sched_destroy(lkv_sched_t **s_p);

/* ---- requests ---------------------------------------------------------- */

typedef struct {
    uint64_t            id;         /* caller's id; unique among live ones */
    const int32_t      *prompt;     /* (n_prompt) copied at submit */
    int32_t             n_prompt;   /* >= 1 */
    int32_t             max_tokens; /* >= 1; clipped to the context */
    lkv_plan_sampling_t sampling;   /* passed through into plans */
    int64_t             ttft_slo_ns; /* 0: config default; < 0: none */
    int64_t             tpot_slo_ns; /* 0: config default; < 0: none */
    int64_t             arrival_ns;  /* on the caller's clock */
    int                 n_stop;      /* extra stop ids for this request */
    int32_t             stop_ids[LKV_SCHED_MAX_STOP];
    bool                ignore_stop; /* ignore config stop ids (benchmarks) */
} lkv_sched_request_t;

/* Queue a request. Errors (nothing is queued):
 *  LKV_ERR_INVALID  bad field (n_prompt < 1, max_tokens < 1, duplicate id,
 *                   n_stop out of range);
 *  LKV_ERR_TOOLONG  prompt + 1 > max_seq_len, or the prompt can never fit the
 *                   device pool under this policy;
 *  LKV_ERR_BUSY     max_queue requests already waiting (retry later);
 *  LKV_ERR_REJECTED reject_hopeless and the predicted TTFT misses the
 *                   request's TTFT SLO; *retry_after_ns_p (may be NULL) gets
 *                   the predicted time until the queue drains enough;
 *  LKV_ERR_NOMEM.
 * lkv_sched_last_error() then says what was wrong and what to do. */
lkv_status_t lkv_sched_submit(lkv_sched_t *s, const lkv_sched_request_t *req,
                              int64_t now_ns, int64_t *retry_after_ns_p);

/* Cancel a live request. A queued one is dropped at once; a running one
 * finishes at the next plan (its blocks are freed once no copy reads them).
 * Either way a FINISHED event with reason CANCELLED follows.
 * LKV_ERR_NOTFOUND if the id is not live (already finished: not an error
 * the caller must act on). */
lkv_status_t lkv_sched_cancel(lkv_sched_t *s, uint64_t id, int64_t now_ns);

/* ---- steps --------------------------------------------------------------- */

/* Build the next step plan. *plan_p points into the scheduler (valid until
 * the next next_plan or destroy). Returns LKV_OK with a plan, LKV_AGAIN when
 * there is nothing to run (no request can run and no move is in flight),
 * LKV_ERR_BUSY if the previous plan's result has not been passed to
 * lkv_sched_on_result, LKV_ERR_NOMEM. Requests that can never run (e.g. a
 * lone request whose decode no longer fits) finish with reason ERROR here. */
lkv_status_t lkv_sched_next_plan(lkv_sched_t *s, int64_t now_ns,
                                 const lkv_step_plan_t **plan_p);

/* Consume the result of the outstanding plan (result->step_id must match).
 * Appends sampled tokens, checks stop conditions, completes moves listed in
 * moves_done / moves_failed (any step's), updates the time models from
 * step_ns, and queues events. A failed step (result->status < 0) or
 * sequence (seqs[i].status < 0) finishes the affected requests with reason
 * ERROR. Errors: LKV_ERR_INVALID (no plan outstanding, step id mismatch,
 * unknown move id; nothing changed), LKV_ERR_NOMEM. The result is borrowed
 * for the call only. */
lkv_status_t lkv_sched_on_result(lkv_sched_t *s, const lkv_step_result_t *res,
                                 int64_t now_ns);

/* ---- events -------------------------------------------------------------- */

typedef enum {
    LKV_SCHED_EV_TOKEN    = 0, /* a new token (first: the first token) */
    LKV_SCHED_EV_FINISHED = 1, /* last event of a request; timing filled */
} lkv_sched_event_kind_t;

typedef enum {
    LKV_SCHED_FINISH_NONE      = 0,
    LKV_SCHED_FINISH_STOP      = 1, /* sampled a stop token (included) */
    LKV_SCHED_FINISH_LENGTH    = 2, /* max_tokens or context reached */
    LKV_SCHED_FINISH_CANCELLED = 3, /* lkv_sched_cancel */
    LKV_SCHED_FINISH_ERROR     = 4, /* status says why */
} lkv_sched_finish_t;

const char *lkv_sched_finish_str(lkv_sched_finish_t reason); /* "stop", ... */

/* Per-request timing record, all on the caller's clock; 0 = not yet. */
typedef struct {
    int64_t arrival_ns;
    int64_t first_scheduled_ns; /* first plan that ran its prefill */
    int64_t first_token_ns;     /* TTFT = first_token_ns - arrival_ns */
    int64_t last_token_ns;
    int64_t finish_ns;
    int32_t n_prompt;
    int32_t n_generated;        /* output tokens, incl. the first */
    int32_t n_preemptions;      /* recomputes */
    int32_t n_offloaded_layers; /* layers offloaded at (last) admission */
    int64_t queue_ns;           /* first_scheduled_ns - arrival_ns */
    int64_t ttft_slo_ns;        /* effective; -1 = none */
    int64_t tpot_slo_ns;
    bool    ttft_violated;      /* TTFT > SLO */
    bool    tpot_violated;      /* (finish - first)/(n_generated - 1) > SLO */
    bool    streamed;           /* decoded at least one step streaming */
    bool    anti_starved;       /* admitted by the TTFT guard */
} lkv_sched_timing_t;

typedef struct {
    lkv_sched_event_kind_t kind;
    uint64_t               id;
    int32_t                token;  /* TOKEN: the token */
    bool                   first;  /* TOKEN: it is the first token */
    int64_t                time_ns;
    lkv_sched_finish_t     reason; /* FINISHED */
    lkv_status_t           status; /* FINISHED: LKV_OK or the error */
    lkv_sched_timing_t     timing; /* FINISHED: final record */
} lkv_sched_event_t;

/* Events queued since the previous call, in order. The array is owned by the
 * scheduler and valid until the next take_events or destroy. *n_p = 0 when
 * none. Never fails. */
void lkv_sched_take_events(lkv_sched_t *s, const lkv_sched_event_t **ev_p,
                           int *n_p);

/* ---- queries ------------------------------------------------------------- */

typedef struct {
    int32_t n_waiting;    /* queued, not yet (re)admitted */
    int32_t n_running;    /* admitted: prefilling or decoding */
    int32_t n_prefilling; /* admitted, prompt not complete (chunked) */
    int32_t n_partial;    /* first token out, layers still off-device */
    int32_t n_moves_inflight;
    int32_t blocks_used[LKV_KV_TIER_COUNT];
    int32_t blocks_total[LKV_KV_TIER_COUNT]; /* a remote tier marked down
                                                 counts only the blocks it
                                                 still holds */

    uint64_t steps;
    uint64_t submitted;
    uint64_t finished;     /* any reason */
    uint64_t preemptions;  /* recompute preemptions */
    uint64_t swap_preemptions; /* LAYERKV: preempted by offloading layers */
    uint64_t rejections;   /* LKV_ERR_REJECTED at submit */
    uint64_t cancellations;
    uint64_t errors;
    uint64_t anti_starvation_admits;
    uint64_t ttft_violations; /* finished requests over their TTFT SLO */
    uint64_t tpot_violations;
    uint64_t offload_moves, reload_moves, stage_moves; /* offload_moves also
                                 counts layers a staging-window prefill
                                 places off the device (no move needed) */
    int64_t  offloaded_bytes; /* device -> host/remote, completed moves
                                 and staging-window write-backs */
    int64_t  reloaded_bytes;  /* host/remote -> device, completed */
    int64_t  staged_bytes;    /* streamed in (STAGE) */

    /* Model state (LAYERKV; also updated under BASELINE for metrics). */
    double  alpha;           /* Eq. 3 correction */
    double  pf_coef[3];      /* current f coefficients (ns) */
    double  dc_ratio;        /* decode model correction */
    int64_t last_t_allow_ns; /* Eq. 2 of the last plan; INT64_MAX = none */
    int64_t parked_blocks;   /* off-device blocks of partially resident
                                requests at the last plan (LAYERKV) */
} lkv_sched_stats_t;

void lkv_sched_stats(const lkv_sched_t *s, lkv_sched_stats_t *out);

/* Blocks of `tier` held by layer `layer` across all requests (metrics). */
int32_t lkv_sched_layer_blocks(const lkv_sched_t *s, lkv_kv_tier_t tier,
                               int layer);

/* Timing record of a live request; LKV_ERR_NOTFOUND if not live. */
lkv_status_t lkv_sched_request_timing(const lkv_sched_t *s, uint64_t id,
                                      lkv_sched_timing_t *out);

/* True when no request is live and no move is in flight. */
bool lkv_sched_idle(const lkv_sched_t *s);

/* The allocator (read-only: tests check invariants, metrics read counts). */
const lkv_kv_alloc_t *lkv_sched_kv(const lkv_sched_t *s);

/* Text of the last error returned by submit/create/next_plan/on_result
 * ("" if none); valid until the next call. */
const char *lkv_sched_last_error(const lkv_sched_t *s);

const char *lkv_sched_policy_name(lkv_sched_policy_t p); /* "baseline", ... */
/* Parse "baseline" / "layerkv"; LKV_ERR_INVALID otherwise. */
lkv_status_t lkv_sched_policy_parse(const char *name, lkv_sched_policy_t *p);

#ifdef __cplusplus
}
#endif

#endif /* LKV_COORDINATOR_SCHEDULER_H */
