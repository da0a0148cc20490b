/* policy_layerkv.c - the LayerKV policy (docs/scheduling.md):
 *  - Eq. 1-2: T_allow = min over the requests a prefill step stalls
 *    (decoding, reloading or streaming; not those parked off the device
 *    waiting for room, which the parked-KV cap covers) of
 *    D_r = S*(g+m) - tau - m*t_d;
 *  - Eq. 3: the step's predicted prefill time alpha*f(x) must fit T_allow
 *    (FCFS, stop at the first request that does not fit), unless the
 *    request is about to miss its TTFT deadline (anti-starvation, one step
 *    ahead) or has missed it (then admitted as the baseline would);
 *  - memory: every layer of the first chunk transiently (W = 0), or the
 *    retained layers plus the staging ring (W > 0), plus the watermark;
 *  - Eq. 4: at most floor(T_pf * BW / S_blk) blocks offloaded per step;
 *    rule NEEDED offloads what keeps room for the next queued prefill, MAX
 *    as many as allowed; offloaded layers are spread evenly; nothing is
 *    offloaded while the parked-KV cap is exceeded, nor for a request
 *    whose TTFT is lost and that either passes T_allow only by the guard or
 *    is followed by another lost one (no TTFT left to save);
 *  - partially resident requests: reload when the device has room, else
 *    stream when the link time fits the TPOT budget, else wait.
 * Threading: one owner thread.
 */
#include "coordinator/sched_impl.h"

#include <math.h>

static bool has_first_token(const sched_req_t *r)
{
    return !r->prefilling && r->t.first_token_ns != 0;
}

static void layerkv_begin(lkv_sched_t *s, sched_step_t *st)
{
    double ctx = 0.0, t_d, t_allow = INFINITY;
    int    n   = 0;

    for (int i = 0; i < s->running.n; i++) {
        if (has_first_token(s->running.v[i])) {
            n++;
            ctx += s->running.v[i]->n_total;
        }
    }
    t_d       = lkv_slo_decode_ns(s->slo, n, ctx);
    st->t_d_ns = t_d;
    /* Eq. 1-2 over the requests a prefill in this step stalls; KV parked
     * off the device by requests waiting for room to decode is counted
     * for the parked-KV cap instead */
    st->parked = 0;
    for (int i = 0; i < s->running.n; i++) {
        const sched_req_t *r = s->running.v[i];
        int64_t            parked = 0;
        double             d, m, g, tau;

        if (!has_first_token(r) || r->seq_id == 0) {
            continue;
        }
        for (int l = 0; l < s->cfg.n_layers; l++) {
            lkv_kv_res_t res = lkv_kv_layer_residency(s->kv, r->seq_id, l);

            if (res == LKV_KV_RES_HOST || res == LKV_KV_RES_REMOTE) {
                parked += sched_blocks_for(
                    s, lkv_kv_layer_tokens(s->kv, r->seq_id, l));
            }
        }
        st->parked += parked;
        if (r->tpot_slo_ns <= 0 || (parked > 0 && r->path != PATH_STREAM)) {
            continue;
        }
        m   = sched_pred_remaining(s, r);
        g   = r->t.n_generated - 1; /* tokens after the first */
        tau = (double)(st->now_ns - r->t.first_token_ns);
        d   = lkv_slo_tpot_slack_ns((double)r->tpot_slo_ns, g, m, tau, t_d);
        if (d < t_allow) {
            t_allow = d;
        }
    }
    st->over_parked = (double)st->parked >
                      (double)s->cfg.max_parked *
                          (double)s->cfg.n_blocks[LKV_KV_TIER_DEVICE];
    s->st.parked_blocks = st->parked;
    st->t_allow_ns = t_allow;
}

/* Time the step that admits q takes to give q its first token: its prefill
 * plus the decodes that ride along. */
static double first_token_ns(const lkv_sched_t *s, const sched_step_t *st,
                             const sched_req_t *q)
{
    return lkv_slo_prefill_ns(s->slo, q->n_total,
                              (double)q->n_total * q->n_total) +
           st->t_d_ns;
}

/* q can no longer get its first token within its TTFT SLO although it
 * could have without queueing (an SLO below q's own first-token time says
 * nothing about the schedule and is left to the other rules). */
static bool ttft_missed(const lkv_sched_t *s, const sched_step_t *st,
                        const sched_req_t *q)
{
    double need = first_token_ns(s, st, q);

    return q->ttft_slo_ns > 0 && (double)q->ttft_slo_ns >= need &&
           (double)(q->t.arrival_ns + q->ttft_slo_ns - st->now_ns) < need;
}

/* Anti-starvation: q's remaining TTFT budget is short compared with the
 * step that would give it its first token, counting the step being planned
 * (q's next chance is at the end of it: its decodes and the prefills
 * already in it). Also true once q's TTFT is lost: it is then admitted as
 * the baseline would (layerkv_admit offloads nothing for it), so the
 * policy never serves less than the baseline under overload. */
static bool about_to_starve(const lkv_sched_t *s, const sched_step_t *st,
                            const sched_req_t *q)
{
    double left, need, step;

    if (q->ttft_slo_ns <= 0 || !(s->cfg.ttft_guard > 0.0f)) {
        return false;
    }
    left = (double)(q->t.arrival_ns + q->ttft_slo_ns - st->now_ns);
    need = first_token_ns(s, st, q);
    step = lkv_slo_prefill_ns(s->slo, st->pf_x1, st->pf_x2) + st->t_d_ns;
    return left < (double)s->cfg.ttft_guard * need + step;
}

static lkv_status_t layerkv_admit(lkv_sched_t *s, sched_step_t *st,
                                  sched_req_t *q, int c, int *n_off_p,
                                  bool *anti_p)
{
    const int L      = s->cfg.n_layers;
    int64_t   n_c    = sched_blocks_for(s, c);
    int64_t   n_full = sched_blocks_for(s, q->n_total);
    int64_t   free_dev = sched_device_free(s) - sched_prefill_reserve(s);
    double    t_pf   = sched_prefill_with(s, st, c, q->n_cached);
    int64_t   k_max, k, wm;
    int       w    = sched_staging_window(s);
    bool      anti = false;
    bool      no_off;

    *n_off_p = 0;
    *anti_p  = false;
    /* Eq. 2 + 3: the step's prefill time must fit the smallest slack */
    if (t_pf > st->t_allow_ns) {
        if (!about_to_starve(s, st, q)) {
            return LKV_AGAIN;
        }
        anti = true;
    }
    /* offloading serves TTFT: none while enough KV waits off the device
     * already, nor for a request whose TTFT is lost when it is admitted
     * past T_allow (the baseline's treatment: it waits for room) or when
     * the next request's TTFT is lost too (no room to make for it) */
    no_off = st->over_parked ||
             (ttft_missed(s, st, q) &&
              (anti || s->waiting.n < 2 ||
               ttft_missed(s, st, s->waiting.v[1])));
    /* transient device need: every layer of the chunk (W = 0); with a
     * staging window only the retained layers + the ring (checked below,
     * once k is known) */
    wm = s->running.n > 0 ? s->watermark_blocks : 0;
    if (w == 0 && (int64_t)L * n_c + wm > free_dev) {
        return LKV_AGAIN;
    }
    /* Eq. 4: link time of the step's offloads <= its prefill time */
    {
        double  bw   = s->cfg.d2h_bytes_per_s[LKV_KV_TIER_HOST];
        int64_t off_free = 0;

        if (bw <= 0.0 || lkv_kv_free_blocks(s->kv, LKV_KV_TIER_HOST) < n_full) {
            bw = s->cfg.d2h_bytes_per_s[LKV_KV_TIER_REMOTE];
            if (bw > 0.0) {
                off_free = lkv_kv_free_blocks(s->kv, LKV_KV_TIER_REMOTE);
            }
        } else {
            off_free = lkv_kv_free_blocks(s->kv, LKV_KV_TIER_HOST);
        }
        double x_max = floor(t_pf * 1e-9 * bw / (double)s->cfg.block_bytes) -
                       (double)st->off_blocks;
        k_max = x_max > 0.0 ? (int64_t)(x_max / (double)n_c) : 0;
        if (k_max > L - s->cfg.min_retained_layers) {
            k_max = L - s->cfg.min_retained_layers;
        }
        if (k_max > off_free / n_full) {
            k_max = off_free / n_full; /* host full: back-pressure */
        }
        if (k_max < 0 || bw <= 0.0) {
            k_max = 0;
        }
    }
    if (no_off) {
        k = 0; /* enough KV waits off the device already, or offloading
                  cannot save q's TTFT: admit only what fits, reloads go
                  first */
    } else if (s->cfg.offload_rule == LKV_SCHED_OFFLOAD_MAX) {
        k = k_max;
    } else {
        /* keep room, after this step's offloads land, for the next queued
         * request's first chunk on every layer plus the watermark */
        int64_t reserve = s->watermark_blocks;
        int64_t after;

        if (s->waiting.n > 1) {
            const sched_req_t *nx = s->waiting.v[1];
            int32_t            cn = nx->n_total;

            if (s->cfg.chunked_prefill && cn > s->cfg.chunk_tokens) {
                cn = s->cfg.chunk_tokens;
            }
            reserve += (int64_t)L * sched_blocks_for(s, cn);
        }
        after = free_dev - (int64_t)L * n_c; /* with k = 0 */
        k     = 0;
        if (after < reserve) {
            k = (reserve - after + n_c - 1) / n_c;
        }
        if (k > k_max) {
            k = k_max;
        }
    }
    if (w > 0) {
        /* device until the prompt is in: L - k retained layers + min(W, k)
         * ring sets, at the full prompt (later chunks grow both); offload
         * more (up to k_max) when that is what makes it fit */
        int64_t fit = free_dev - wm;

        while (!no_off && k < k_max &&
               ((int64_t)L - k + (k < w ? k : w)) * n_full > fit) {
            k++;
        }
        if (((int64_t)L - k + (k < w ? k : w)) * n_full > fit &&
            (int64_t)L * n_c > fit) {
            return LKV_AGAIN; /* admits at least what W = 0 admits */
        }
    }
    *n_off_p = (int)k;
    *anti_p  = anti;
    return LKV_OK;
}

/* Device blocks the queue head would take if admitted this step (0 when it
 * would not be admitted anyway: T_allow, or no room for it at all). */
static int64_t head_need(lkv_sched_t *s, const sched_step_t *st)
{
    const sched_req_t *q;
    int32_t            c;
    int64_t            need;

    if (s->waiting.n == 0 || s->running.n >= s->cfg.max_seqs) {
        return 0;
    }
    q = s->waiting.v[0];
    c = q->n_total;
    if (s->cfg.chunked_prefill && c > s->cfg.chunk_tokens) {
        c = s->cfg.chunk_tokens;
    }
    if (sched_prefill_with(s, st, c, 0) > st->t_allow_ns &&
        !about_to_starve(s, st, q)) {
        return 0;
    }
    need = (int64_t)s->cfg.n_layers * sched_blocks_for(s, c) +
           s->watermark_blocks;
    return need <= sched_device_free(s) ? need : 0;
}

/* r's TPOT slack (Eq. 1) is below two decode steps: it must move now. */
static bool slack_tight(const lkv_sched_t *s, const sched_step_t *st,
                        const sched_req_t *r)
{
    double t_d = st->t_d_ns > 0.0 ? st->t_d_ns
                                  : lkv_slo_decode_ns(s->slo, 1, r->n_total);
    double d;

    if (r->tpot_slo_ns <= 0 || r->t.first_token_ns == 0) {
        return false;
    }
    d = lkv_slo_tpot_slack_ns((double)r->tpot_slo_ns, r->t.n_generated - 1,
                              sched_pred_remaining(s, r),
                              (double)(st->now_ns - r->t.first_token_ns), t_d);
    return d < 2.0 * t_d;
}

/* Partially resident requests: reload / stream / wait. A reload or staging
 * does not take the memory the queue head is about to be admitted into,
 * unless the request's own TPOT slack is running out. */
static lkv_status_t layerkv_partial(lkv_sched_t *s, sched_step_t *st)
{
    const int L = s->cfg.n_layers;

    for (int i = 0; i < s->running.n; i++) {
        sched_req_t *r = s->running.v[i];
        int64_t      off_blocks = 0, growth = 0, free_dev, wm;
        double       link_ns = 0.0, budget;
        int          n_off = 0;
        bool         moving = false;

        if (r->prefilling || r->in_plan || r->n_cached != r->n_total - 1) {
            continue;
        }
        for (int l = 0; l < L; l++) {
            lkv_kv_res_t res = lkv_kv_layer_residency(s->kv, r->seq_id, l);
            int64_t      nb;

            growth += lkv_kv_blocks_needed(s->kv, r->seq_id, l, 1);
            if (res == LKV_KV_RES_MOVING) {
                moving = true;
                break;
            }
            if (res != LKV_KV_RES_HOST && res != LKV_KV_RES_REMOTE) {
                continue;
            }
            nb = sched_blocks_for(s, lkv_kv_layer_tokens(s->kv, r->seq_id, l));
            off_blocks += nb;
            n_off++;
            link_ns += (double)nb * (double)s->cfg.block_bytes * 1e9 /
                       fmax(s->cfg.h2d_bytes_per_s[res == LKV_KV_RES_HOST
                                                       ? LKV_KV_TIER_HOST
                                                       : LKV_KV_TIER_REMOTE],
                            1.0);
        }
        if (moving || n_off == 0) {
            continue;
        }
        free_dev = sched_device_free(s);
        wm       = st->force ? 0 : s->watermark_blocks;
        if (!st->force && !st->over_parked && !slack_tight(s, st, r)) {
            int64_t hn = head_need(s, st);

            if (hn > 0 && free_dev - (off_blocks + growth) < hn) {
                continue; /* the queue head goes first */
            }
        }
        /* reload: room for every off-device layer and the next token */
        if (s->cfg.decode_mode != LKV_SCHED_DECODE_STREAM &&
            free_dev - wm >= off_blocks + growth) {
            for (int l = 0; l < L; l++) {
                lkv_kv_res_t res = lkv_kv_layer_residency(s->kv, r->seq_id, l);

                if (res == LKV_KV_RES_HOST || res == LKV_KV_RES_REMOTE) {
                    LKV_CHECK(sched_issue_move(s, r, l, LKV_KV_TIER_DEVICE,
                                               LKV_PLAN_MOVE_RELOAD));
                }
            }
            r->path = PATH_RELOAD;
            continue;
        }
        if (s->cfg.decode_mode == LKV_SCHED_DECODE_RELOAD) {
            continue;
        }
        /* stream: the link time of this step's staged layers must hide
         * under the step within the TPOT budget */
        budget = lkv_slo_decode_ns(s->slo, st->n_decode + 1,
                                   st->dc_ctx + r->n_total);
        if (r->tpot_slo_ns > 0 && (double)r->tpot_slo_ns > budget) {
            budget = (double)r->tpot_slo_ns;
        }
        if (!st->force && st->link_h2d_ns + link_ns > budget) {
            continue;
        }
        if (free_dev - wm < off_blocks + growth) {
            continue;
        }
        lkv_status_t rc = sched_place_decode(s, r, true);
        if (rc == LKV_ERR_NOSPACE || rc == LKV_ERR_BUSY) {
            continue;
        }
        LKV_CHECK(rc);
        st->link_h2d_ns += link_ns;
        r->path        = PATH_STREAM;
        r->t.streamed  = true;
    }
    return LKV_OK;
}

const sched_policy_ops_t lkv_sched_policy_layerkv = {
    .name            = "layerkv",
    .begin_admission = layerkv_begin,
    .admit           = layerkv_admit,
    .partial         = layerkv_partial,
};
