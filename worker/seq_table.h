/* seq_table.h - the worker's per-sequence, per-layer block tables.
 *
 * Mirrors the scheduler's kvstore allocator decisions as they arrive in step
 * plans: each (sequence, layer) holds a list of block indices, all in one
 * tier (device or host), plus step-local state the step executor attaches
 * (a staging table for a streamed layer, a pending reload or offload).
 * Storage is preallocated for max_seqs sequences of n_layers layers with
 * max_blocks block-table entries each; no allocation after create.
 *
 * Threading: not thread-safe; owned by the step thread.
 */
#ifndef LKV_WORKER_SEQ_TABLE_H
#define LKV_WORKER_SEQ_TABLE_H

#include <stdbool.h>
#include <stdint.h>

#include "common/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    uint8_t  tier;     /* lkv_kv_tier_t of blocks (meaningful if n_blocks) */
    int32_t  n_blocks;
    int32_t *blocks;   /* (max_blocks) */
    /* step executor state: index of a move slot, -1 when none */
    int32_t  stage_slot;   /* streamed this step: staging blocks */
    int32_t  reload_slot;  /* reload in flight */
    int32_t  offload_slot; /* offload planned or in flight */
} lkv_seq_layer_t;

typedef struct {
    uint64_t         seq_id;
    bool             live;
    bool             rng_init; /* rng seeded from the first sampling params */
    uint64_t         rng;
    lkv_seq_layer_t *layers; /* (n_layers) */
} lkv_seq_entry_t;

typedef struct lkv_seq_table lkv_seq_table_t;

/* Errors: LKV_ERR_INVALID (non-positive sizes), LKV_ERR_NOMEM. */
lkv_status_t lkv_seq_table_create(int n_layers, int max_seqs, int max_blocks,
                                  lkv_seq_table_t **t_p);
void         lkv_seq_table_destroy(lkv_seq_table_t **t_p);

int lkv_seq_table_max_blocks(const lkv_seq_table_t *t);
int lkv_seq_table_n_live(const lkv_seq_table_t *t);

/* The entry of seq_id, or NULL. */
lkv_seq_entry_t *lkv_seq_table_find(lkv_seq_table_t *t, uint64_t seq_id);
/* The entry of seq_id, created (empty layers) if new. LKV_ERR_NOSPACE when
 * max_seqs sequences are live. */
lkv_status_t     lkv_seq_table_get(lkv_seq_table_t *t, uint64_t seq_id,
                                   lkv_seq_entry_t **e_p);
/* Forget seq_id; LKV_ERR_NOTFOUND if unknown. */
lkv_status_t     lkv_seq_table_remove(lkv_seq_table_t *t, uint64_t seq_id);

/* Append n blocks of `tier` to the layer's table. LKV_ERR_INVALID if the
 * layer already holds blocks of another tier or the table would overflow;
 * the entry is unchanged then. */
lkv_status_t lkv_seq_table_append(lkv_seq_table_t *t, lkv_seq_entry_t *e,
                                  int layer, uint8_t tier,
                                  const int32_t *blocks, int n);
/* Replace the layer's table (after a move completed). LKV_ERR_INVALID if n
 * exceeds the capacity. */
lkv_status_t lkv_seq_table_set(lkv_seq_table_t *t, lkv_seq_entry_t *e,
                               int layer, uint8_t tier, const int32_t *blocks,
                               int n);

#ifdef __cplusplus
}
#endif

#endif /* LKV_WORKER_SEQ_TABLE_H */
