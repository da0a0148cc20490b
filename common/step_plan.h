/* step_plan.h - what the scheduler asks a worker to do in one step, and what
 * the worker reports back. Plain data shared by coordinator/, worker/, sim/
 * and the wire codec (transport/); it carries deltas, never whole tables.
 *
 * Per step the worker:
 *  1. applies `appends` (new blocks at the end of (seq, layer) tables) and
 *     starts `moves` of kind RELOAD (background host->device copies that
 *     complete in this or a later step) and STAGE (prefetch of a streamed
 *     layer into device staging blocks, waited for before that layer runs);
 *  2. runs the forward pass over `seqs` (prefill chunks and decode tokens
 *     mixed), writing new K/V into the tables;
 *  3. after computing layer l, starts the OFFLOAD moves of layer l
 *     (device->host/remote), overlapped with layer l+1;
 *  4. drops state of `finished` sequences once no copy reads their blocks.
 * The result lists sampled tokens and every move that completed; the
 * scheduler frees the source blocks of a move only after it is reported done.
 *
 * Ownership: arrays are owned by whoever built the plan/result (an arena in
 * the coordinator, the decoder's buffer on the worker side).
 */
#ifndef LKV_COMMON_STEP_PLAN_H
#define LKV_COMMON_STEP_PLAN_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    float    temperature;
    int32_t  top_k;
    float    top_p;
    uint64_t seed;
} lkv_plan_sampling_t;

typedef struct {
    uint64_t            seq_id;
    int32_t             n_tokens; /* new tokens this step (prefill chunk or 1) */
    const int32_t      *tokens;   /* (n_tokens) */
    int32_t             pos0;     /* position of tokens[0] */
    bool                sample;   /* sample a token after the last position */
    lkv_plan_sampling_t sampling;
} lkv_plan_seq_t;

typedef struct {
    uint64_t       seq_id;
    int32_t        layer;
    uint8_t        tier; /* lkv_kv_tier_t */
    int32_t        n_blocks;
    const int32_t *blocks; /* (n_blocks) appended to the layer's table */
} lkv_plan_append_t;

typedef enum {
    LKV_PLAN_MOVE_OFFLOAD = 0, /* after the layer is computed this step */
    LKV_PLAN_MOVE_RELOAD  = 1, /* background; becomes the layer's table */
    LKV_PLAN_MOVE_STAGE   = 2, /* streamed layer: copy in before the layer
                                  runs, use for this step only, write the
                                  tail block back, then drop the staging */
} lkv_plan_move_kind_t;

typedef struct {
    uint64_t       move_id; /* unique per coordinator */
    uint64_t       seq_id;
    int32_t        layer;
    uint8_t        kind;     /* lkv_plan_move_kind_t */
    uint8_t        src_tier; /* lkv_kv_tier_t */
    uint8_t        dst_tier;
    int32_t        n_blocks;
    const int32_t *src; /* (n_blocks) */
    const int32_t *dst; /* (n_blocks) */
} lkv_plan_move_t;

typedef struct {
    uint64_t                 step_id;
    int32_t                  n_seqs;
    const lkv_plan_seq_t    *seqs;
    int32_t                  n_appends;
    const lkv_plan_append_t *appends;
    int32_t                  n_moves;
    const lkv_plan_move_t   *moves;
    int32_t                  n_finished;
    const uint64_t          *finished;
} lkv_step_plan_t;

typedef struct {
    uint64_t seq_id;
    int32_t  token;  /* sampled token, -1 if the seq did not sample */
    int32_t  status; /* lkv_status_t for this sequence */
} lkv_result_seq_t;

typedef struct {
    uint64_t                step_id;
    int32_t                 status; /* lkv_status_t for the whole step */
    int32_t                 n_seqs;
    const lkv_result_seq_t *seqs;
    int32_t                 n_moves_done;
    const uint64_t         *moves_done; /* move ids completed (any step) */
    int32_t                 n_moves_failed;
    const uint64_t         *moves_failed;
    int64_t                 step_ns;    /* wall time of the step */
    int64_t                 compute_ns; /* forward pass alone */
    int64_t                 bytes_d2h;  /* offloaded this step */
    int64_t                 bytes_h2d;  /* reloaded / staged this step */
} lkv_step_result_t;

#ifdef __cplusplus
}
#endif

#endif /* LKV_COMMON_STEP_PLAN_H */
