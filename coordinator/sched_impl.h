/* sched_impl.h - scheduler internals shared by sched.c, sched_plan.c and the
 * policies (policy_baseline.c, policy_layerkv.c). Not a public header.
 * Threading: as scheduler.h (one owner thread).
 */
#ifndef LKV_COORDINATOR_SCHED_IMPL_H
#define LKV_COORDINATOR_SCHED_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "coordinator/predictor.h"
#include "coordinator/scheduler.h"
#include "coordinator/slo_model.h"

/* Default prefill staging window of the LAYERKV policy. */
#ifndef LKV_SCHED_DEFAULT_STAGING_WINDOW
#define LKV_SCHED_DEFAULT_STAGING_WINDOW 2
#endif

typedef enum {
    RQ_WAITING = 0, /* in s->waiting */
    RQ_RUNNING = 1, /* in s->running: prefilling, decoding or partial */
    RQ_ZOMBIE  = 2, /* finished for the caller; in s->zombies until no copy
                       reads its blocks, then freed */
} rq_state_t;

/* Decode path chosen for a request with layers off the device. */
typedef enum {
    PATH_NONE = 0, /* all layers on device */
    PATH_RELOAD,
    PATH_STREAM,
} rq_path_t;

typedef struct sched_req {
    uint64_t            id;     /* caller's request id */
    uint64_t            seq_id; /* kv/plan sequence id; 0 = none */
    rq_state_t          state;
    int32_t            *toks;     /* (cap) prompt then generated tokens */
    int32_t             cap;
    int32_t             n_prompt;
    int32_t             n_total;  /* prompt + generated */
    int32_t             n_cached; /* tokens whose KV the plan has computed */
    int32_t             max_tokens;
    lkv_plan_sampling_t sampling;
    int                 n_stop;
    int32_t             stop_ids[LKV_SCHED_MAX_STOP];
    bool                ignore_stop;
    int64_t             ttft_slo_ns; /* -1 = none */
    int64_t             tpot_slo_ns;
    int64_t             admit_ord;   /* admission order (preemption victim) */
    int                 n_moves;     /* OFFLOAD/RELOAD moves in flight */
    int                 n_off;       /* layers offloaded at admission */
    lkv_kv_tier_t       off_tier;    /* where they went */
    rq_path_t           path;
    bool                in_plan;     /* in the outstanding plan's seqs */
    bool                prefilling;  /* admitted, last chunk not planned */
    lkv_sched_timing_t  t;
} sched_req_t;

typedef struct {
    uint64_t     move_id;
    uint64_t     seq_id;
    sched_req_t *req; /* may be a zombie */
    int          layer;
    uint8_t      kind;
    int64_t      bytes;
} sched_move_t;

/* Growable array of T with count and capacity. */
#define SCHED_VEC(T)                                                           \
    struct {                                                                   \
        T  *v;                                                                 \
        int n, cap;                                                            \
    }

typedef SCHED_VEC(sched_req_t *) req_vec_t;

/* What one plan being built knows (reset each next_plan). */
typedef struct {
    int64_t now_ns;
    int     tok_budget;   /* tokens left for prefill in this step */
    int     n_prefill;    /* prefill seqs in the plan */
    double  pf_x1, pf_x2; /* Eq. 3 features of the prefills so far */
    int     n_decode;
    double  dc_ctx;       /* context tokens of decode seqs */
    double  t_allow_ns;   /* Eq. 2 (INFINITY = none) */
    double  t_d_ns;       /* predicted decode time of this step */
    int64_t off_blocks;   /* blocks offloaded in this step (Eq. 4) */
    double  link_h2d_ns;  /* stream link time booked this step */
    int64_t parked;       /* off-device blocks of partial requests */
    bool    over_parked;  /* parked > max_parked x device pool */
    bool    force;        /* partial hook: nothing else can run; reload
                             ignoring the watermark */
    int64_t dev_held;     /* device blocks that decodes waiting for copies
                             in flight count on: sched_device_free leaves
                             them out, so a reload, stream or admission in
                             this step cannot take them (else an offload
                             and a reload can trade the same blocks every
                             step while the waiting decode never runs) */
} sched_step_t;

/* Policy hooks. Each returns what the shared plan builder needs. */
typedef struct {
    const char *name;
    /* Called once per plan after decodes are placed: compute T_allow etc. */
    void (*begin_admission)(lkv_sched_t *s, sched_step_t *st);
    /* Try to admit waiting request q (its first chunk of c tokens). Writes
     * the number of layers to offload to *n_off_p. Returns LKV_OK to admit,
     * LKV_AGAIN to stop the FCFS scan (q waits), another status on error. */
    lkv_status_t (*admit)(lkv_sched_t *s, sched_step_t *st, sched_req_t *q,
                          int c, int *n_off_p, bool *anti_starved_p);
    /* Requests whose first token is out but layers are off the device:
     * issue reloads or stage for streaming (LAYERKV only; NULL otherwise). */
    lkv_status_t (*partial)(lkv_sched_t *s, sched_step_t *st);
} sched_policy_ops_t;

extern const sched_policy_ops_t lkv_sched_policy_baseline;
extern const sched_policy_ops_t lkv_sched_policy_layerkv;

struct lkv_sched {
    lkv_sched_config_t        cfg;
    const sched_policy_ops_t *ops;
    lkv_kv_alloc_t           *kv;
    lkv_slo_model_t          *slo;
    lkv_pred_t               *pred;
    int32_t                   watermark_blocks;

    req_vec_t waiting; /* FCFS; index 0 is the head */
    req_vec_t running; /* admission order */
    req_vec_t zombies;

    uint64_t next_seq_id;
    uint64_t next_move_id;
    int64_t  next_admit_ord;
    uint64_t step_id;
    bool     plan_outstanding;
    bool     admit_hold; /* after a deadlock break: admit nothing until a
                            running request makes progress */
    bool     remote_down; /* a move to or from REMOTE failed: the tier is no
                             longer used (sched.c) */

    SCHED_VEC(sched_move_t) moves; /* OFFLOAD/RELOAD in flight */

    /* plan under construction / outstanding */
    lkv_step_plan_t plan;
    SCHED_VEC(lkv_plan_seq_t) p_seqs;
    SCHED_VEC(sched_req_t *) p_reqs; /* p_reqs.v[i] runs p_seqs.v[i] */
    SCHED_VEC(lkv_plan_append_t) p_appends;
    SCHED_VEC(int32_t) p_append_off; /* offset in p_blocks per append */
    SCHED_VEC(lkv_plan_move_t) p_moves;
    SCHED_VEC(int32_t) p_move_off;   /* offset of src; dst follows */
    SCHED_VEC(uint64_t) p_finished;
    SCHED_VEC(int32_t) p_blocks;     /* block ids of appends and moves */
    SCHED_VEC(sched_move_t) p_stages; /* STAGE moves of the plan */
    SCHED_VEC(int) p_rings;           /* staging rings of the plan */
    SCHED_VEC(sched_move_t) p_new_moves; /* moves issued by this plan */
    sched_step_t step;               /* features of the outstanding plan */

    /* events: two buffers, one handed out, one filling */
    SCHED_VEC(lkv_sched_event_t) ev[2];
    int ev_fill;

    lkv_sched_stats_t st;
    char              err[256];
    lkv_kv_block_t   *tmp_blocks; /* (max_blocks_per_layer) scratch */
    int               tmp_cap;
};

/* vector growth: LKV_OK or LKV_ERR_NOMEM */
lkv_status_t sched_vec_grow(void **v, int *cap, int need, size_t elem);
#define SCHED_VEC_RESERVE(vec_, need_)                                         \
    sched_vec_grow((void **)&(vec_).v, &(vec_).cap, (need_), sizeof(*(vec_).v))

/* sched.c helpers used by the plan builder and policies */
void         sched_set_error(lkv_sched_t *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
lkv_status_t sched_emit(lkv_sched_t *s, const lkv_sched_event_t *ev);
/* Finish a live request for the caller: FINISHED event, counters,
 * predictor, and move it to the zombie list (running) or free it (queued). */
void         sched_finish(lkv_sched_t *s, sched_req_t *r,
                          lkv_sched_finish_t reason, lkv_status_t status,
                          int64_t now_ns);
void         sched_req_free(sched_req_t *r);

/* sched_plan.c */
lkv_status_t sched_build_plan(lkv_sched_t *s, int64_t now_ns);
/* Layers of r currently in `tier` / MOVING. */
int          sched_layers_in(const lkv_sched_t *s, const sched_req_t *r,
                             lkv_kv_res_t res);
/* Device blocks a chunk of c tokens of (new) request needs: all layers. */
int32_t      sched_blocks_for(const lkv_sched_t *s, int32_t n_tokens);
/* Which layers to offload when k of L go: spread evenly (layer l goes iff
 * (l*k) mod L < k; for k = L/2 this offloads the even layers and keeps the
 * odd ones, as in the paper's 8-layer example). */
bool         sched_layer_offloaded(int layer, int k, int n_layers);
/* The policy's choice: sched_layer_offloaded, or layers 0..k-1 with
 * cfg.offload_contiguous. */
bool         sched_offloads_layer(const lkv_sched_t *s, int layer, int k);
/* Staging window W in effect (0 for the baseline policy). */
int          sched_staging_window(const lkv_sched_t *s);
/* Issue a move (OFFLOAD / RELOAD) of (r, layer) to dst: kv move_begin plus
 * a plan entry. */
lkv_status_t sched_issue_move(lkv_sched_t *s, sched_req_t *r, int layer,
                              lkv_kv_tier_t dst, lkv_plan_move_kind_t kind);
/* Place r's decode token (append on every layer, stage off-device layers when
 * streaming) and add it to the plan. LKV_ERR_NOSPACE leaves nothing changed. */
lkv_status_t sched_place_decode(lkv_sched_t *s, sched_req_t *r, bool stream);
/* Prefill-time prediction of the step with an extra chunk (c at offset o). */
double       sched_prefill_with(const lkv_sched_t *s, const sched_step_t *st,
                                int c, int o);
/* Predicted remaining output tokens of r (predictor, clipped). */
int32_t      sched_pred_remaining(const lkv_sched_t *s, const sched_req_t *r);
int32_t      sched_device_free(const lkv_sched_t *s);
/* Device blocks still needed by admitted, unfinished prefills. */
int64_t      sched_prefill_reserve(const lkv_sched_t *s);

#endif /* LKV_COORDINATOR_SCHED_IMPL_H */
