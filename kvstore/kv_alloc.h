/* kv_alloc.h - the layer-wise KV metadata allocator (pure C, no device calls).
 *
 * The scheduler (coordinator/), the simulator (sim/) and tests use it; it
 * decides which block of which tier holds which tokens of which layer of which
 * sequence. Workers mirror its decisions through step-plan deltas and own the
 * memory (kvstore/kv_pool.h).
 *
 * Model: three tiers (DEVICE, HOST, REMOTE), each a pool of n_blocks
 * layer-blocks; a layer-block holds K and V of block_size tokens of ONE layer.
 * Each (sequence, layer) has one block table (a list of block indices, all in
 * one tier) and a residency: NONE (no tokens yet), DEVICE, HOST, REMOTE, or
 * MOVING (a move to another tier is in flight; the source blocks are read by
 * the copy and cannot be freed or reused until move_end/move_abort).
 *
 * Invariants (lkv_kv_alloc_check verifies them): every block of every tier is
 * either free or owned by exactly one (sequence, layer, logical index) or by
 * one in-flight move/stage; free + owned = n_blocks per tier; no block read by
 * an in-flight copy is on a free list.
 *
 * All operations are all-or-nothing: an error leaves the allocator unchanged.
 * LKV_ERR_NOSPACE (a tier is full) is back-pressure, never logged.
 * Threading: not thread-safe; one owner thread (the scheduler's). The const
 * queries too: they remember the last sequence looked up.
 */
#ifndef LKV_KVSTORE_KV_ALLOC_H
#define LKV_KVSTORE_KV_ALLOC_H

#include <stdbool.h>
#include <stdint.h>

#include "common/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    LKV_KV_TIER_DEVICE = 0,
    LKV_KV_TIER_HOST   = 1,
    LKV_KV_TIER_REMOTE = 2,
    LKV_KV_TIER_COUNT  = 3,
} lkv_kv_tier_t;

typedef enum {
    LKV_KV_RES_NONE   = 0,
    LKV_KV_RES_DEVICE = 1,
    LKV_KV_RES_HOST   = 2,
    LKV_KV_RES_REMOTE = 3,
    LKV_KV_RES_MOVING = 4,
} lkv_kv_res_t;

typedef int32_t lkv_kv_block_t; /* index of a layer-block within its tier */

const char *lkv_kv_tier_name(lkv_kv_tier_t tier); /* "device", "host", "remote" */

typedef struct {
    int     n_layers;
    int     block_size;                  /* tokens per layer-block */
    int32_t n_blocks[LKV_KV_TIER_COUNT]; /* capacity per tier (0 allowed) */
    int     max_seqs;                    /* live sequences at once */
    int     max_blocks_per_layer;        /* per (seq, layer) table capacity */
} lkv_kv_alloc_config_t;

/* n_layers 32, block_size 16, 4096 device / 16384 host / 0 remote blocks,
 * max_seqs 256, max_blocks_per_layer 512. Tables are allocated lazily at
 * max_blocks_per_layer entries per (slot, layer) that ever holds blocks. */
lkv_kv_alloc_config_t lkv_kv_alloc_config_default(void);

typedef struct lkv_kv_alloc lkv_kv_alloc_t;

lkv_status_t lkv_kv_alloc_create(const lkv_kv_alloc_config_t *cfg,
                                 lkv_kv_alloc_t **a_p);
void         lkv_kv_alloc_destroy(lkv_kv_alloc_t **a_p);

/* Register sequence seq_id (no blocks yet). LKV_ERR_BUSY if it exists,
 * LKV_ERR_NOSPACE if max_seqs are live, or if max_seqs freed sequences still
 * wait for in-flight copies (end those copies first). */
lkv_status_t lkv_kv_seq_add(lkv_kv_alloc_t *a, uint64_t seq_id);
/* Release every block of the sequence. Blocks read by an in-flight move or
 * stage are released when that copy ends (move_end/abort, stage_end); the
 * sequence id can be reused at once. LKV_ERR_NOTFOUND if unknown. */
lkv_status_t lkv_kv_seq_free(lkv_kv_alloc_t *a, uint64_t seq_id);
bool         lkv_kv_seq_exists(const lkv_kv_alloc_t *a, uint64_t seq_id);

/* Blocks that appending n_tokens to (seq, layer) would allocate (in the
 * layer's tier; as many again on the device while the layer is staged).
 * -1 for an unknown sequence, a bad layer or n_tokens < 0. */
int lkv_kv_blocks_needed(const lkv_kv_alloc_t *a, uint64_t seq_id, int layer,
                         int n_tokens);

/* Grow (seq, layer) by n_tokens, allocating new blocks in `tier` (which must
 * be the layer's residency, or any tier while residency is NONE). The new
 * block indices are written to new_blocks (capacity max_new) and their count
 * to *n_new_p. Errors: LKV_ERR_NOSPACE (tier full), LKV_ERR_BUSY (layer is
 * MOVING), LKV_ERR_INVALID (wrong tier, unknown seq, table capacity). */
lkv_status_t lkv_kv_append(lkv_kv_alloc_t *a, uint64_t seq_id, int layer,
                           int n_tokens, lkv_kv_tier_t tier,
                           lkv_kv_block_t *new_blocks, int max_new,
                           int *n_new_p);

/* Grow EVERY layer of seq_id by n_tokens in `tier` in one call (the decode
 * path: one token on all layers): the same blocks, taken in the same order,
 * as lkv_kv_append on layers 0..n_layers-1 one after another, but all or
 * nothing and with one sequence lookup. new_blocks (capacity max_new)
 * receives the new blocks layer after layer; n_new_per_layer (n_layers
 * entries, or NULL) how many each layer got; *n_new_p (or NULL) their total.
 * Errors: LKV_ERR_BUSY (a layer is MOVING) or LKV_ERR_INVALID (a layer holds
 * blocks in another tier, unknown seq, table capacity, max_new too small)
 * if any layer would give them, checked before LKV_ERR_NOSPACE (the tier,
 * the device for staged layers, or a staged layer's ring lacks the blocks
 * of all layers together). */
lkv_status_t lkv_kv_append_all(lkv_kv_alloc_t *a, uint64_t seq_id,
                               int n_tokens, lkv_kv_tier_t tier,
                               lkv_kv_block_t *new_blocks, int max_new,
                               int32_t *n_new_per_layer, int *n_new_p);

/* A copy of one layer's blocks between tiers, as the worker executes it. */
typedef struct {
    uint64_t              seq_id;
    int                   layer;
    lkv_kv_tier_t         src_tier;
    lkv_kv_tier_t         dst_tier;
    int                   n_blocks;
    const lkv_kv_block_t *src; /* borrowed from the allocator; valid until */
    const lkv_kv_block_t *dst; /* the move/stage ends */
} lkv_kv_copy_t;

/* Start moving (seq, layer) to dst_tier: allocates the destination blocks,
 * sets residency MOVING and pins the source blocks. Errors: NOSPACE, BUSY
 * (already moving or staged), INVALID (same tier, no blocks, bad layer),
 * NOTFOUND (unknown seq).
 *
 * move_end/move_abort/stage_end of a sequence freed meanwhile release its
 * pinned blocks. They resolve (seq_id, layer) to the OLDEST in-flight copy of
 * that kind: copies of freed sequences first (in the order the sequences were
 * freed), then the live sequence with that id. Errors: NOTFOUND (no sequence
 * with that id), INVALID (no such copy in flight, bad layer). */
lkv_status_t lkv_kv_move_begin(lkv_kv_alloc_t *a, uint64_t seq_id, int layer,
                               lkv_kv_tier_t dst_tier, lkv_kv_copy_t *copy_p);
/* The copy finished: free the source blocks; the layer now lives in dst. */
lkv_status_t lkv_kv_move_end(lkv_kv_alloc_t *a, uint64_t seq_id, int layer);
/* The copy failed or was cancelled: free dst blocks, residency back to src. */
lkv_status_t lkv_kv_move_abort(lkv_kv_alloc_t *a, uint64_t seq_id, int layer);

/* Streaming: allocate device staging blocks mirroring (seq, layer)'s blocks
 * (which stay where they are, pinned for reading) for one step. Appends to
 * the layer stay allowed while staged (they allocate in the layer's tier and
 * matching staging blocks). Errors: NOSPACE (device tier), BUSY (moving or
 * already staged), INVALID (layer on the device already, no blocks, bad
 * layer), NOTFOUND (unknown seq). stage_end frees the staging blocks (and,
 * for a sequence freed meanwhile, the pinned blocks); see move_end for how
 * it finds the copy. */
lkv_status_t lkv_kv_stage_begin(lkv_kv_alloc_t *a, uint64_t seq_id, int layer,
                                lkv_kv_copy_t *copy_p);
lkv_status_t lkv_kv_stage_end(lkv_kv_alloc_t *a, uint64_t seq_id, int layer);
/* The device staging blocks of a staged layer (same order and count as its
 * table; borrowed until stage_end). INVALID if the layer is not staged,
 * NOTFOUND for an unknown seq. */
lkv_status_t lkv_kv_stage_blocks(const lkv_kv_alloc_t *a, uint64_t seq_id,
                                 int layer, const lkv_kv_block_t **blocks_p,
                                 int *n_p);

/* Staging rings (prefill staging window): a ring slot is a set of device
 * blocks owned by the ring itself, not by any layer, that several layers of
 * one step are staged into one after another (the worker orders their copies
 * by block-level hazard tracking). ring_create takes n_blocks device blocks
 * (NOSPACE if the device tier lacks them, INVALID for n_blocks outside
 * 1..max_blocks_per_layer) and writes the ring id; ring_destroy returns them
 * (BUSY while a layer is still staged on it, INVALID for an unknown id).
 * stage_begin_ring stages (seq, layer) like stage_begin but on the first
 * n_blocks blocks of the ring instead of new blocks (NOSPACE if the ring is
 * smaller than the layer's table, INVALID for an unknown ring; else as
 * stage_begin); appends while so staged take staging blocks from the ring
 * (NOSPACE past its size); stage_end leaves the blocks with the ring.
 * lkv_kv_alloc_check verifies that each ring block is owned by that ring
 * alone and that its user count matches the layers staged on it. */
lkv_status_t lkv_kv_ring_create(lkv_kv_alloc_t *a, int n_blocks, int *ring_p);
lkv_status_t lkv_kv_ring_destroy(lkv_kv_alloc_t *a, int ring);
lkv_status_t lkv_kv_ring_blocks(const lkv_kv_alloc_t *a, int ring,
                                const lkv_kv_block_t **blocks_p, int *n_p);
lkv_status_t lkv_kv_stage_begin_ring(lkv_kv_alloc_t *a, uint64_t seq_id,
                                     int layer, int ring,
                                     lkv_kv_copy_t *copy_p);

/* Queries. */
int32_t      lkv_kv_free_blocks(const lkv_kv_alloc_t *a, lkv_kv_tier_t tier);
int32_t      lkv_kv_used_blocks(const lkv_kv_alloc_t *a, lkv_kv_tier_t tier);
int32_t      lkv_kv_total_blocks(const lkv_kv_alloc_t *a, lkv_kv_tier_t tier);
/* Blocks of `tier` owned by layer `layer` across all sequences (metrics). */
int32_t      lkv_kv_layer_used_blocks(const lkv_kv_alloc_t *a,
                                      lkv_kv_tier_t tier, int layer);
/* NONE for an unknown sequence or a layer without blocks. A staged layer
 * reports the tier its blocks live in (HOST or REMOTE). */
lkv_kv_res_t lkv_kv_layer_residency(const lkv_kv_alloc_t *a, uint64_t seq_id,
                                    int layer);
/* Tokens of (seq, layer); -1 for an unknown sequence or bad layer. */
int          lkv_kv_layer_tokens(const lkv_kv_alloc_t *a, uint64_t seq_id,
                                 int layer);
/* Live sequences (not counting freed ones whose copies are in flight). */
int          lkv_kv_live_seqs(const lkv_kv_alloc_t *a);
/* The layer's current table (borrowed until the next mutating call). While
 * MOVING this is the source table in the source tier. NOTFOUND for an
 * unknown seq, INVALID for a bad layer. */
lkv_status_t lkv_kv_layer_blocks(const lkv_kv_alloc_t *a, uint64_t seq_id,
                                 int layer, lkv_kv_tier_t *tier_p,
                                 const lkv_kv_block_t **blocks_p, int *n_p);

/* Verify every invariant; LKV_ERR_INTERNAL (with one log line naming the
 * first violation) if any fails. O(total blocks). */
lkv_status_t lkv_kv_alloc_check(const lkv_kv_alloc_t *a);

#ifdef __cplusplus
}
#endif

#endif /* LKV_KVSTORE_KV_ALLOC_H */
