/* kv_alloc.c - the layer-wise KV metadata allocator (see kv_alloc.h).
 *
 * Layout: per tier a free stack of block indices; per sequence a slot with
 * two records per layer: its counts and states (token count, block count,
 * tier, state: what the per-token path reads, 12 bytes) and its tables (the
 * block table and an auxiliary table holding the destination blocks of a
 * move or the device staging blocks of a stage). Tables have a fixed
 * capacity (max_blocks_per_layer) and are allocated lazily the first time a
 * slot's layer needs them, then kept for reuse, so pointers handed out in
 * lkv_kv_copy_t stay valid until the copy ends and the steady state
 * allocates nothing.
 *
 * Sequence ids map to slots through an open-addressing hash (linear probing,
 * backward-shift deletion) behind a one-entry memo of the last lookup. A
 * sequence freed while some of its layers are MOVING or STAGED becomes a
 * "zombie": its id leaves the hash at once (it can be re-added), the pinned
 * blocks stay owned by the zombie slot, and the slot is released by the last
 * move_end/move_abort/stage_end. Those calls resolve (seq_id, layer) to the
 * OLDEST pending copy of that kind: zombies first (in the order they were
 * freed), then the live sequence. There are 2*max_seqs slots, so up to
 * max_seqs zombies can wait while max_seqs sequences live.
 *
 * Threading: none (one owner thread).
 */
#include "kvstore/kv_alloc.h"

#include <stdlib.h>
#include <string.h>

#define LKV_LOG_MODULE "kv_alloc"
#include "common/log.h"

typedef enum {
    LAYER_IDLE   = 0,
    LAYER_MOVING = 1,
    LAYER_STAGED = 2,
} layer_state_t;

/* A (sequence, layer) is split in two records: the counts and states that
 * every per-layer query and append reads (12 bytes, so a sequence's layers
 * share a few cache lines), and its block tables, read only when blocks
 * come or go. */
typedef struct {
    int32_t n_tokens;
    int32_t n_blocks;
    uint8_t tier;     /* tier of blocks (valid when n_blocks > 0) */
    uint8_t state;    /* layer_state_t */
    uint8_t aux_tier; /* MOVING: destination tier; STAGED: DEVICE */
} layer_t;

typedef struct {
    lkv_kv_block_t *blocks; /* (max_blocks_per_layer) or NULL */
    lkv_kv_block_t *aux;    /* (max_blocks_per_layer) or NULL */
    int32_t         ring1;  /* STAGED on staging ring ring1-1 (its first
                               n_blocks blocks, mirrored in aux); 0 = own
                               staging blocks */
} table_t;

/* A staging ring slot: device blocks owned by the ring itself, shared by the
 * layers staged on it (one at a time on the worker: block-level hazard
 * tracking there orders their copies). */
typedef struct {
    bool            used;
    int32_t         n_blocks;
    int32_t         users;  /* layers STAGED on it */
    lkv_kv_block_t *blocks; /* (max_blocks_per_layer) or NULL */
} ring_t;

/* The last successful id -> slot lookup. Queries come in bursts over the
 * layers of one sequence, so most lookups hit it and skip the hash. It lives
 * behind a pointer so that const queries can update it. */
typedef struct {
    uint64_t seq_id;
    int32_t  slot; /* -1: empty */
} lookup_memo_t;

typedef enum {
    SLOT_FREE   = 0,
    SLOT_LIVE   = 1,
    SLOT_ZOMBIE = 2,
} slot_state_t;

typedef struct {
    uint64_t seq_id;
    uint64_t gen;       /* order of seq_free for zombies */
    int      state;     /* slot_state_t */
    int      n_pending; /* layers MOVING or STAGED */
    layer_t *layers;    /* (n_layers) */
    table_t *tables;    /* (n_layers) */
} slot_t;

struct lkv_kv_alloc {
    lkv_kv_alloc_config_t cfg;
    /* per tier */
    lkv_kv_block_t *free_stack[LKV_KV_TIER_COUNT]; /* (n_blocks) */
    int32_t         n_free[LKV_KV_TIER_COUNT];
    int32_t        *layer_used[LKV_KV_TIER_COUNT]; /* (n_layers) */
    /* sequences */
    int       n_slots;
    slot_t   *slots;     /* (n_slots) */
    int32_t  *free_slot; /* stack of free slot indices (n_slots) */
    int       n_free_slots;
    int       n_live;
    int       n_zombies;
    uint64_t  next_gen;
    /* hash: seq_id -> slot; -1 = empty */
    uint32_t  hash_mask;
    uint64_t *hash_keys;
    int32_t  *hash_vals;
    lookup_memo_t *memo;
    /* lkv_kv_alloc_check scratch: one mark per block per tier */
    uint8_t  *marks[LKV_KV_TIER_COUNT];
    int32_t  *scratch_used; /* (n_layers) */
    int32_t  *scratch_need; /* (n_layers) lkv_kv_append_all scratch */
    /* staging rings (grown on demand; ids are indices) */
    ring_t   *rings;
    int       n_rings; /* entries in rings (used or not) */
    int32_t   ring_blocks; /* device blocks owned by rings */
    int32_t  *scratch_users; /* (n_rings) lkv_kv_alloc_check scratch */
};

const char *lkv_kv_tier_name(lkv_kv_tier_t tier)
{
    switch (tier) {
    case LKV_KV_TIER_DEVICE:
        return "device";
    case LKV_KV_TIER_HOST:
        return "host";
    case LKV_KV_TIER_REMOTE:
        return "remote";
    default:
        return "unknown";
    }
}

lkv_kv_alloc_config_t lkv_kv_alloc_config_default(void)
{
    lkv_kv_alloc_config_t cfg = {
        .n_layers             = 32,
        .block_size           = 16,
        .n_blocks             = {4096, 16384, 0},
        .max_seqs             = 256,
        .max_blocks_per_layer = 512,
    };
    return cfg;
}

/* ---- hash ---------------------------------------------------------------- */

static uint32_t hash_u64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return (uint32_t)x;
}

static int hash_find(const lkv_kv_alloc_t *a, uint64_t key)
{
    uint32_t i = hash_u64(key) & a->hash_mask;
    while (a->hash_vals[i] >= 0) {
        if (a->hash_keys[i] == key) {
            return a->hash_vals[i];
        }
        i = (i + 1) & a->hash_mask;
    }
    return -1;
}

static void hash_insert(lkv_kv_alloc_t *a, uint64_t key, int32_t val)
{
    uint32_t i = hash_u64(key) & a->hash_mask;
    while (a->hash_vals[i] >= 0) {
        i = (i + 1) & a->hash_mask;
    }
    a->hash_keys[i] = key;
    a->hash_vals[i] = val;
}

static void hash_remove(lkv_kv_alloc_t *a, uint64_t key)
{
    uint32_t i = hash_u64(key) & a->hash_mask;
    while (a->hash_vals[i] >= 0 && a->hash_keys[i] != key) {
        i = (i + 1) & a->hash_mask;
    }
    if (a->hash_vals[i] < 0) {
        return;
    }
    /* backward-shift deletion keeps probe chains intact */
    uint32_t j = i;
    for (;;) {
        a->hash_vals[i] = -1;
        for (;;) {
            j = (j + 1) & a->hash_mask;
            if (a->hash_vals[j] < 0) {
                return;
            }
            uint32_t home = hash_u64(a->hash_keys[j]) & a->hash_mask;
            /* move j to i unless home lies cyclically in (i, j] */
            if (i <= j ? (i < home && home <= j) : (i < home || home <= j)) {
                continue;
            }
            break;
        }
        a->hash_keys[i] = a->hash_keys[j];
        a->hash_vals[i] = a->hash_vals[j];
        i               = j;
    }
}

/* Slot of live sequence seq_id, or -1. */
static int slot_find(const lkv_kv_alloc_t *a, uint64_t seq_id)
{
    lookup_memo_t *m = a->memo;

    if (m->slot >= 0 && m->seq_id == seq_id) {
        return m->slot;
    }
    int s = hash_find(a, seq_id);
    if (s >= 0) {
        m->seq_id = seq_id;
        m->slot   = s;
    }
    return s;
}

/* ---- helpers -------------------------------------------------------------- */

static int blocks_for_tokens(const lkv_kv_alloc_t *a, int64_t n_tokens)
{
    return (int)((n_tokens + a->cfg.block_size - 1) / a->cfg.block_size);
}

/* Blocks that n more tokens add to a layer: the same as
 * blocks_for_tokens(n_tokens + n) - n_blocks (the layer's blocks hold its
 * tokens with less than one block to spare), without a division unless the
 * tokens overflow the last block. */
static int grow_blocks(const lkv_kv_alloc_t *a, const layer_t *ly, int64_t n)
{
    int64_t room = (int64_t)ly->n_blocks * a->cfg.block_size - ly->n_tokens;

    if (n <= room) {
        return 0;
    }
    return (int)((n - room + a->cfg.block_size - 1) / a->cfg.block_size);
}

static bool tier_ok(int tier)
{
    return tier >= 0 && tier < LKV_KV_TIER_COUNT;
}

static lkv_kv_block_t pop_block(lkv_kv_alloc_t *a, int tier, int layer)
{
    a->layer_used[tier][layer]++;
    return a->free_stack[tier][--a->n_free[tier]];
}

static void push_blocks(lkv_kv_alloc_t *a, int tier, int layer,
                        const lkv_kv_block_t *b, int n)
{
    lkv_kv_block_t *top = a->free_stack[tier] + a->n_free[tier];

    /* reversed, so the next pops return b in its own order */
    for (int i = 0; i < n; i++) {
        top[i] = b[n - 1 - i];
    }
    a->n_free[tier] += n;
    a->layer_used[tier][layer] -= n;
}

static lkv_status_t ensure_table(lkv_kv_alloc_t *a, lkv_kv_block_t **t)
{
    if (*t == NULL) {
        *t = malloc((size_t)a->cfg.max_blocks_per_layer * sizeof(**t));
        if (*t == NULL) {
            return LKV_ERR_NOMEM;
        }
    }
    return LKV_OK;
}

/* (seq_id, layer) of a live sequence, or NULL; its tables to *tb_p if
 * tb_p is not NULL. */
static layer_t *live_layer(const lkv_kv_alloc_t *a, uint64_t seq_id, int layer,
                           table_t **tb_p)
{
    if (layer < 0 || layer >= a->cfg.n_layers) {
        return NULL;
    }
    int s = slot_find(a, seq_id);
    if (s < 0) {
        return NULL;
    }
    if (tb_p != NULL) {
        *tb_p = &a->slots[s].tables[layer];
    }
    return &a->slots[s].layers[layer];
}

/* Resolve the pending copy of (seq_id, layer) in `want` state: the oldest
 * zombie first, then the live sequence. */
static lkv_status_t find_pending(lkv_kv_alloc_t *a, uint64_t seq_id, int layer,
                                 int want, slot_t **slot_p, layer_t **l_p)
{
    if (layer < 0 || layer >= a->cfg.n_layers) {
        return LKV_ERR_INVALID;
    }
    slot_t *best = NULL;
    if (a->n_zombies > 0) {
        for (int i = 0; i < a->n_slots; i++) {
            slot_t *z = &a->slots[i];
            if (z->state == SLOT_ZOMBIE && z->seq_id == seq_id &&
                z->layers[layer].state == want &&
                (best == NULL || z->gen < best->gen)) {
                best = z;
            }
        }
    }
    if (best == NULL) {
        int s = slot_find(a, seq_id);
        if (s < 0) {
            return LKV_ERR_NOTFOUND;
        }
        best = &a->slots[s];
        if (best->layers[layer].state != want) {
            return LKV_ERR_INVALID; /* no such copy in flight */
        }
    }
    *slot_p = best;
    *l_p    = &best->layers[layer];
    return LKV_OK;
}

/* Release a zombie slot once its last copy ended. */
static void slot_release_if_done(lkv_kv_alloc_t *a, slot_t *slot)
{
    if (slot->state != SLOT_ZOMBIE || slot->n_pending > 0) {
        return;
    }
    slot->state                       = SLOT_FREE;
    a->free_slot[a->n_free_slots++]   = (int32_t)(slot - a->slots);
    a->n_zombies--;
}

/* A copy of (slot, layer) ended (its own blocks already settled): the layer
 * is idle again; a freed sequence's layer gives its blocks back and the slot
 * is released with its last copy. */
static void copy_ended(lkv_kv_alloc_t *a, slot_t *slot, int layer)
{
    layer_t *ly = &slot->layers[layer];

    ly->state = LAYER_IDLE;
    slot->n_pending--;
    if (slot->state == SLOT_ZOMBIE) {
        push_blocks(a, ly->tier, layer, slot->tables[layer].blocks,
                    ly->n_blocks);
        ly->n_blocks = 0;
        ly->n_tokens = 0;
        slot_release_if_done(a, slot);
    }
}

/* ---- create / destroy ---------------------------------------------------- */

lkv_status_t lkv_kv_alloc_create(const lkv_kv_alloc_config_t *cfg,
                                 lkv_kv_alloc_t **a_p)
{
    if (cfg == NULL || a_p == NULL) {
        return LKV_ERR_INVALID;
    }
    if (cfg->n_layers <= 0 || cfg->block_size <= 0 || cfg->max_seqs <= 0 ||
        cfg->max_blocks_per_layer <= 0 || cfg->max_seqs > (1 << 24) ||
        cfg->n_layers > (1 << 16)) {
        LKV_LOG_ERROR("kv allocator needs n_layers (%d), block_size (%d), "
                      "max_seqs (%d) and max_blocks_per_layer (%d) > 0",
                      cfg->n_layers, cfg->block_size, cfg->max_seqs,
                      cfg->max_blocks_per_layer);
        return LKV_ERR_INVALID;
    }
    for (int t = 0; t < LKV_KV_TIER_COUNT; t++) {
        if (cfg->n_blocks[t] < 0) {
            LKV_LOG_ERROR("kv allocator: %s tier has %d blocks (need >= 0)",
                          lkv_kv_tier_name((lkv_kv_tier_t)t),
                          (int)cfg->n_blocks[t]);
            return LKV_ERR_INVALID;
        }
    }
    lkv_kv_alloc_t *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        return LKV_ERR_NOMEM;
    }
    a->cfg     = *cfg;
    a->n_slots = 2 * cfg->max_seqs;
    for (int t = 0; t < LKV_KV_TIER_COUNT; t++) {
        size_t n         = (size_t)cfg->n_blocks[t];
        a->free_stack[t] = malloc((n ? n : 1) * sizeof(lkv_kv_block_t));
        a->marks[t]      = malloc(n ? n : 1);
        a->layer_used[t] = calloc((size_t)cfg->n_layers, sizeof(int32_t));
        if (!a->free_stack[t] || !a->marks[t] || !a->layer_used[t]) {
            goto fail;
        }
        /* pop order: block 0 first */
        for (int32_t i = 0; i < cfg->n_blocks[t]; i++) {
            a->free_stack[t][i] = cfg->n_blocks[t] - 1 - i;
        }
        a->n_free[t] = cfg->n_blocks[t];
    }
    a->scratch_used = calloc((size_t)cfg->n_layers, sizeof(int32_t));
    a->scratch_need = calloc((size_t)cfg->n_layers, sizeof(int32_t));
    a->slots        = calloc((size_t)a->n_slots, sizeof(slot_t));
    a->free_slot    = malloc((size_t)a->n_slots * sizeof(int32_t));
    if (!a->scratch_used || !a->scratch_need || !a->slots || !a->free_slot) {
        goto fail;
    }
    for (int i = 0; i < a->n_slots; i++) {
        a->slots[i].layers = calloc((size_t)cfg->n_layers, sizeof(layer_t));
        a->slots[i].tables = calloc((size_t)cfg->n_layers, sizeof(table_t));
        if (a->slots[i].layers == NULL || a->slots[i].tables == NULL) {
            goto fail;
        }
        a->free_slot[i] = a->n_slots - 1 - i;
    }
    a->n_free_slots = a->n_slots;
    uint32_t cap    = 16;
    while (cap < (uint32_t)a->n_slots * 2) {
        cap <<= 1;
    }
    a->hash_mask = cap - 1;
    a->hash_keys = calloc(cap, sizeof(uint64_t));
    a->hash_vals = malloc(cap * sizeof(int32_t));
    a->memo      = malloc(sizeof(*a->memo));
    if (!a->hash_keys || !a->hash_vals || !a->memo) {
        goto fail;
    }
    a->memo->slot = -1;
    for (uint32_t i = 0; i < cap; i++) {
        a->hash_vals[i] = -1;
    }
    *a_p = a;
    return LKV_OK;
fail:
    lkv_kv_alloc_destroy(&a);
    return LKV_ERR_NOMEM;
}

void lkv_kv_alloc_destroy(lkv_kv_alloc_t **a_p)
{
    if (a_p == NULL || *a_p == NULL) {
        return;
    }
    lkv_kv_alloc_t *a = *a_p;
    for (int t = 0; t < LKV_KV_TIER_COUNT; t++) {
        free(a->free_stack[t]);
        free(a->marks[t]);
        free(a->layer_used[t]);
    }
    if (a->slots != NULL) {
        for (int i = 0; i < a->n_slots; i++) {
            if (a->slots[i].tables != NULL) {
                for (int l = 0; l < a->cfg.n_layers; l++) {
                    free(a->slots[i].tables[l].blocks);
                    free(a->slots[i].tables[l].aux);
                }
            }
            free(a->slots[i].tables);
            free(a->slots[i].layers);
        }
    }
    for (int i = 0; i < a->n_rings; i++) {
        free(a->rings[i].blocks);
    }
    free(a->rings);
    free(a->scratch_users);
    free(a->slots);
    free(a->free_slot);
    free(a->scratch_used);
    free(a->scratch_need);
    free(a->hash_keys);
    free(a->hash_vals);
    free(a->memo);
    free(a);
    *a_p = NULL;
}

/* ---- sequences ------------------------------------------------------------ */

lkv_status_t lkv_kv_seq_add(lkv_kv_alloc_t *a, uint64_t seq_id)
{
    if (a == NULL) {
        return LKV_ERR_INVALID;
    }
    if (hash_find(a, seq_id) >= 0) {
        return LKV_ERR_BUSY;
    }
    if (a->n_live >= a->cfg.max_seqs || a->n_free_slots == 0) {
        return LKV_ERR_NOSPACE;
    }
    int     s    = a->free_slot[--a->n_free_slots];
    slot_t *slot = &a->slots[s];
    slot->seq_id    = seq_id;
    slot->state     = SLOT_LIVE;
    slot->n_pending = 0;
    for (int l = 0; l < a->cfg.n_layers; l++) {
        layer_t *ly  = &slot->layers[l];
        ly->n_tokens = 0;
        ly->n_blocks = 0;
        ly->tier     = LKV_KV_TIER_DEVICE;
        ly->state    = LAYER_IDLE;
        slot->tables[l].ring1 = 0;
    }
    hash_insert(a, seq_id, s);
    a->n_live++;
    return LKV_OK;
}

lkv_status_t lkv_kv_seq_free(lkv_kv_alloc_t *a, uint64_t seq_id)
{
    if (a == NULL) {
        return LKV_ERR_INVALID;
    }
    int s = slot_find(a, seq_id);
    if (s < 0) {
        return LKV_ERR_NOTFOUND;
    }
    slot_t *slot = &a->slots[s];
    a->memo->slot = -1;
    for (int l = 0; l < a->cfg.n_layers; l++) {
        layer_t *ly = &slot->layers[l];
        if (ly->state != LAYER_IDLE) {
            continue; /* pinned: released when its copy ends */
        }
        push_blocks(a, ly->tier, l, slot->tables[l].blocks, ly->n_blocks);
        ly->n_blocks = 0;
        ly->n_tokens = 0;
    }
    hash_remove(a, seq_id);
    a->n_live--;
    if (slot->n_pending > 0) {
        slot->state = SLOT_ZOMBIE;
        slot->gen   = a->next_gen++;
        a->n_zombies++;
    } else {
        slot->state                     = SLOT_FREE;
        a->free_slot[a->n_free_slots++] = s;
    }
    return LKV_OK;
}

bool lkv_kv_seq_exists(const lkv_kv_alloc_t *a, uint64_t seq_id)
{
    return a != NULL && slot_find(a, seq_id) >= 0;
}

/* ---- append --------------------------------------------------------------- */

int lkv_kv_blocks_needed(const lkv_kv_alloc_t *a, uint64_t seq_id, int layer,
                         int n_tokens)
{
    if (a == NULL || n_tokens < 0) {
        return -1;
    }
    const layer_t *ly = live_layer(a, seq_id, layer, NULL);
    if (ly == NULL) {
        return -1;
    }
    return grow_blocks(a, ly, n_tokens);
}

/* The checks of an append of n_tokens to ly in `tier` that do not depend on
 * free space; the blocks it needs go to *need_p. */
static lkv_status_t append_check(const lkv_kv_alloc_t *a, const layer_t *ly,
                                 int n_tokens, int tier, int *need_p)
{
    if (ly->state == LAYER_MOVING) {
        return LKV_ERR_BUSY;
    }
    if (ly->n_blocks > 0 && ly->tier != tier) {
        return LKV_ERR_INVALID;
    }
    int64_t total = (int64_t)ly->n_tokens + n_tokens;
    int     need  = grow_blocks(a, ly, n_tokens);
    if (ly->n_blocks + need > a->cfg.max_blocks_per_layer || total > INT32_MAX) {
        return LKV_ERR_INVALID;
    }
    *need_p = need;
    return LKV_OK;
}

/* The staging ring a layer staged on a ring takes its staging blocks from,
 * else NULL. */
static const ring_t *staging_ring(const lkv_kv_alloc_t *a, const layer_t *ly,
                                  const table_t *tb)
{
    return ly->state == LAYER_STAGED && tb->ring1 > 0
               ? &a->rings[tb->ring1 - 1]
               : NULL;
}

/* Grow ly (layer `layer`, tables tb) by n_tokens in `need` new blocks of
 * `tier`, written to out; a staged layer also gets matching staging blocks
 * (own device blocks, or its ring's). The caller checked append_check, the
 * free space and the tables. */
static void append_apply(lkv_kv_alloc_t *a, layer_t *ly, table_t *tb,
                         int layer, int n_tokens, int need, int tier,
                         lkv_kv_block_t *out)
{
    if (need == 0) {
        ly->n_tokens += n_tokens; /* the tables are not touched */
        return;
    }
    bool          staged = ly->state == LAYER_STAGED;
    const ring_t *ring   = staging_ring(a, ly, tb);

    for (int i = 0; i < need; i++) {
        lkv_kv_block_t b = pop_block(a, tier, layer);
        tb->blocks[ly->n_blocks + i] = b;
        out[i]                       = b;
        if (ring != NULL) {
            tb->aux[ly->n_blocks + i] = ring->blocks[ly->n_blocks + i];
        } else if (staged) {
            tb->aux[ly->n_blocks + i] =
                pop_block(a, LKV_KV_TIER_DEVICE, layer);
        }
    }
    if (ly->n_blocks == 0 && need > 0) {
        ly->tier = (uint8_t)tier;
    }
    ly->n_blocks += need;
    ly->n_tokens += n_tokens;
}

lkv_status_t lkv_kv_append(lkv_kv_alloc_t *a, uint64_t seq_id, int layer,
                           int n_tokens, lkv_kv_tier_t tier,
                           lkv_kv_block_t *new_blocks, int max_new,
                           int *n_new_p)
{
    int need = 0;

    if (a == NULL || n_tokens < 0 || !tier_ok(tier) || max_new < 0 ||
        (max_new > 0 && new_blocks == NULL)) {
        return LKV_ERR_INVALID;
    }
    table_t *tb = NULL;
    layer_t *ly = live_layer(a, seq_id, layer, &tb);
    if (ly == NULL) {
        return LKV_ERR_INVALID;
    }
    LKV_CHECK(append_check(a, ly, n_tokens, tier, &need));
    if (need > max_new) {
        return LKV_ERR_INVALID;
    }
    bool          staged = ly->state == LAYER_STAGED;
    const ring_t *ring   = staging_ring(a, ly, tb);
    if (need > 0) {
        if (a->n_free[tier] < need ||
            (staged && ring == NULL &&
             a->n_free[LKV_KV_TIER_DEVICE] < need) ||
            (ring != NULL && ring->n_blocks < ly->n_blocks + need)) {
            return LKV_ERR_NOSPACE;
        }
        LKV_CHECK(ensure_table(a, &tb->blocks));
    }
    append_apply(a, ly, tb, layer, n_tokens, need, tier, new_blocks);
    if (n_new_p != NULL) {
        *n_new_p = need;
    }
    return LKV_OK;
}

lkv_status_t lkv_kv_append_all(lkv_kv_alloc_t *a, uint64_t seq_id,
                               int n_tokens, lkv_kv_tier_t tier,
                               lkv_kv_block_t *new_blocks, int max_new,
                               int32_t *n_new_per_layer, int *n_new_p)
{
    int  total = 0, staging = 0;
    bool ring_short = false;

    if (a == NULL || n_tokens < 0 || !tier_ok(tier) || max_new < 0 ||
        (max_new > 0 && new_blocks == NULL)) {
        return LKV_ERR_INVALID;
    }
    int s = slot_find(a, seq_id);
    if (s < 0) {
        return LKV_ERR_INVALID;
    }
    layer_t *layers = a->slots[s].layers;
    table_t *tables = a->slots[s].tables;
    int32_t *needs  = a->scratch_need;
    /* pass 1: every check, as the per-layer appends would make them */
    for (int l = 0; l < a->cfg.n_layers; l++) {
        const layer_t *ly   = &layers[l];
        const ring_t  *ring = staging_ring(a, ly, &tables[l]);
        int            need = 0;

        LKV_CHECK(append_check(a, ly, n_tokens, tier, &need));
        needs[l] = need;
        if (ring != NULL && ring->n_blocks < ly->n_blocks + need) {
            ring_short = true;
        }
        if (ly->state == LAYER_STAGED && ring == NULL) {
            staging += need; /* off-device layer: tier is not DEVICE */
        }
        total += need;
    }
    if (total > max_new) {
        return LKV_ERR_INVALID;
    }
    if (ring_short || a->n_free[tier] < total ||
        a->n_free[LKV_KV_TIER_DEVICE] < staging) {
        return LKV_ERR_NOSPACE;
    }
    for (int l = 0; l < a->cfg.n_layers && total > 0; l++) {
        if (needs[l] > 0) {
            LKV_CHECK(ensure_table(a, &tables[l].blocks));
        }
    }
    /* pass 2: layer after layer, so blocks come off the free lists in the
     * order n_layers lkv_kv_append calls would take them */
    total = 0;
    for (int l = 0; l < a->cfg.n_layers; l++) {
        append_apply(a, &layers[l], &tables[l], l, n_tokens, needs[l], tier,
                     new_blocks + total);
        if (n_new_per_layer != NULL) {
            n_new_per_layer[l] = needs[l];
        }
        total += needs[l];
    }
    if (n_new_p != NULL) {
        *n_new_p = total;
    }
    return LKV_OK;
}

/* ---- move / stage ---------------------------------------------------------- */

/* Layer `layer` of sequence seq_id (and its slot and table) with no copy
 * in flight: INVALID (layer out of range), NOTFOUND (no such sequence),
 * BUSY (a copy is in flight). */
static lkv_status_t idle_layer(lkv_kv_alloc_t *a, uint64_t seq_id, int layer,
                               slot_t **slot_p, layer_t **ly_p,
                               table_t **tb_p)
{
    int s;

    if (layer < 0 || layer >= a->cfg.n_layers) {
        return LKV_ERR_INVALID;
    }
    s = slot_find(a, seq_id);
    if (s < 0) {
        return LKV_ERR_NOTFOUND;
    }
    *slot_p = &a->slots[s];
    *ly_p   = &a->slots[s].layers[layer];
    *tb_p   = &a->slots[s].tables[layer];
    return (*ly_p)->state == LAYER_IDLE ? LKV_OK : LKV_ERR_BUSY;
}

static lkv_status_t begin_copy(lkv_kv_alloc_t *a, uint64_t seq_id, int layer,
                               lkv_kv_tier_t dst_tier, int kind,
                               lkv_kv_copy_t *copy_p)
{
    if (a == NULL || copy_p == NULL || !tier_ok(dst_tier)) {
        return LKV_ERR_INVALID;
    }
    slot_t  *slot;
    layer_t *ly;
    table_t *tb;
    LKV_CHECK(idle_layer(a, seq_id, layer, &slot, &ly, &tb));
    if (ly->n_blocks == 0 || ly->tier == dst_tier) {
        return LKV_ERR_INVALID;
    }
    if (a->n_free[dst_tier] < ly->n_blocks) {
        return LKV_ERR_NOSPACE;
    }
    LKV_CHECK(ensure_table(a, &tb->aux));
    for (int i = 0; i < ly->n_blocks; i++) {
        tb->aux[i] = pop_block(a, dst_tier, layer);
    }
    ly->state    = (uint8_t)kind;
    ly->aux_tier = (uint8_t)dst_tier;
    slot->n_pending++;
    copy_p->seq_id   = seq_id;
    copy_p->layer    = layer;
    copy_p->src_tier = (lkv_kv_tier_t)ly->tier;
    copy_p->dst_tier = dst_tier;
    copy_p->n_blocks = ly->n_blocks;
    copy_p->src      = tb->blocks;
    copy_p->dst      = tb->aux;
    return LKV_OK;
}

lkv_status_t lkv_kv_move_begin(lkv_kv_alloc_t *a, uint64_t seq_id, int layer,
                               lkv_kv_tier_t dst_tier, lkv_kv_copy_t *copy_p)
{
    return begin_copy(a, seq_id, layer, dst_tier, LAYER_MOVING, copy_p);
}

lkv_status_t lkv_kv_move_end(lkv_kv_alloc_t *a, uint64_t seq_id, int layer)
{
    slot_t  *slot;
    layer_t *ly;
    table_t *tb;

    if (a == NULL) {
        return LKV_ERR_INVALID;
    }
    LKV_CHECK(find_pending(a, seq_id, layer, LAYER_MOVING, &slot, &ly));
    tb = &slot->tables[layer];
    push_blocks(a, ly->tier, layer, tb->blocks, ly->n_blocks);
    /* the destination table becomes the layer's table */
    lkv_kv_block_t *t = tb->blocks;
    tb->blocks        = tb->aux;
    tb->aux           = t;
    ly->tier          = ly->aux_tier;
    copy_ended(a, slot, layer);
    return LKV_OK;
}

lkv_status_t lkv_kv_move_abort(lkv_kv_alloc_t *a, uint64_t seq_id, int layer)
{
    slot_t  *slot;
    layer_t *ly;
    table_t *tb;

    if (a == NULL) {
        return LKV_ERR_INVALID;
    }
    LKV_CHECK(find_pending(a, seq_id, layer, LAYER_MOVING, &slot, &ly));
    tb = &slot->tables[layer];
    push_blocks(a, ly->aux_tier, layer, tb->aux, ly->n_blocks);
    copy_ended(a, slot, layer);
    return LKV_OK;
}

lkv_status_t lkv_kv_stage_begin(lkv_kv_alloc_t *a, uint64_t seq_id, int layer,
                                lkv_kv_copy_t *copy_p)
{
    return begin_copy(a, seq_id, layer, LKV_KV_TIER_DEVICE, LAYER_STAGED,
                      copy_p);
}

lkv_status_t lkv_kv_stage_end(lkv_kv_alloc_t *a, uint64_t seq_id, int layer)
{
    slot_t  *slot;
    layer_t *ly;
    table_t *tb;

    if (a == NULL) {
        return LKV_ERR_INVALID;
    }
    LKV_CHECK(find_pending(a, seq_id, layer, LAYER_STAGED, &slot, &ly));
    tb = &slot->tables[layer];
    if (tb->ring1 > 0) {
        a->rings[tb->ring1 - 1].users--; /* the ring keeps its blocks */
        tb->ring1 = 0;
    } else {
        push_blocks(a, LKV_KV_TIER_DEVICE, layer, tb->aux, ly->n_blocks);
    }
    copy_ended(a, slot, layer);
    return LKV_OK;
}

/* ---- staging rings ---------------------------------------------------------- */

lkv_status_t lkv_kv_ring_create(lkv_kv_alloc_t *a, int n_blocks, int *ring_p)
{
    int id = -1;

    if (a == NULL || ring_p == NULL || n_blocks <= 0 ||
        n_blocks > a->cfg.max_blocks_per_layer) {
        return LKV_ERR_INVALID;
    }
    if (a->n_free[LKV_KV_TIER_DEVICE] < n_blocks) {
        return LKV_ERR_NOSPACE;
    }
    for (int i = 0; i < a->n_rings && id < 0; i++) {
        if (!a->rings[i].used) {
            id = i;
        }
    }
    if (id < 0) {
        int      cap = a->n_rings == 0 ? 8 : a->n_rings * 2;
        ring_t  *r   = realloc(a->rings, (size_t)cap * sizeof(*r));
        int32_t *u;

        if (r == NULL) {
            return LKV_ERR_NOMEM;
        }
        a->rings = r;
        u = realloc(a->scratch_users, (size_t)cap * sizeof(*u));
        if (u == NULL) {
            return LKV_ERR_NOMEM;
        }
        a->scratch_users = u;
        memset(&r[a->n_rings], 0, (size_t)(cap - a->n_rings) * sizeof(*r));
        id         = a->n_rings;
        a->n_rings = cap;
    }
    ring_t *ring = &a->rings[id];
    LKV_CHECK(ensure_table(a, &ring->blocks));
    for (int i = 0; i < n_blocks; i++) {
        ring->blocks[i] =
            a->free_stack[LKV_KV_TIER_DEVICE][--a->n_free[LKV_KV_TIER_DEVICE]];
    }
    ring->used     = true;
    ring->n_blocks = n_blocks;
    ring->users    = 0;
    a->ring_blocks += n_blocks;
    *ring_p = id;
    return LKV_OK;
}

static ring_t *ring_get(const lkv_kv_alloc_t *a, int ring)
{
    if (a == NULL || ring < 0 || ring >= a->n_rings || !a->rings[ring].used) {
        return NULL;
    }
    return &a->rings[ring];
}

lkv_status_t lkv_kv_ring_destroy(lkv_kv_alloc_t *a, int ring)
{
    ring_t *r = ring_get(a, ring);

    if (r == NULL) {
        return LKV_ERR_INVALID;
    }
    if (r->users > 0) {
        return LKV_ERR_BUSY;
    }
    for (int i = r->n_blocks - 1; i >= 0; i--) {
        a->free_stack[LKV_KV_TIER_DEVICE][a->n_free[LKV_KV_TIER_DEVICE]++] =
            r->blocks[i];
    }
    a->ring_blocks -= r->n_blocks;
    r->used     = false;
    r->n_blocks = 0;
    return LKV_OK;
}

lkv_status_t lkv_kv_ring_blocks(const lkv_kv_alloc_t *a, int ring,
                                const lkv_kv_block_t **blocks_p, int *n_p)
{
    const ring_t *r = ring_get(a, ring);

    if (r == NULL) {
        return LKV_ERR_INVALID;
    }
    if (blocks_p != NULL) {
        *blocks_p = r->blocks;
    }
    if (n_p != NULL) {
        *n_p = r->n_blocks;
    }
    return LKV_OK;
}

lkv_status_t lkv_kv_stage_begin_ring(lkv_kv_alloc_t *a, uint64_t seq_id,
                                     int layer, int ring,
                                     lkv_kv_copy_t *copy_p)
{
    ring_t *r = ring_get(a, ring);

    if (r == NULL || copy_p == NULL) {
        return LKV_ERR_INVALID;
    }
    slot_t  *slot;
    layer_t *ly;
    table_t *tb;
    LKV_CHECK(idle_layer(a, seq_id, layer, &slot, &ly, &tb));
    if (ly->n_blocks == 0 || ly->tier == LKV_KV_TIER_DEVICE) {
        return LKV_ERR_INVALID;
    }
    if (r->n_blocks < ly->n_blocks) {
        return LKV_ERR_NOSPACE;
    }
    LKV_CHECK(ensure_table(a, &tb->aux));
    memcpy(tb->aux, r->blocks, (size_t)ly->n_blocks * sizeof(*tb->aux));
    ly->state    = LAYER_STAGED;
    ly->aux_tier = LKV_KV_TIER_DEVICE;
    tb->ring1    = ring + 1;
    r->users++;
    slot->n_pending++;
    copy_p->seq_id   = seq_id;
    copy_p->layer    = layer;
    copy_p->src_tier = (lkv_kv_tier_t)ly->tier;
    copy_p->dst_tier = LKV_KV_TIER_DEVICE;
    copy_p->n_blocks = ly->n_blocks;
    copy_p->src      = tb->blocks;
    copy_p->dst      = tb->aux;
    return LKV_OK;
}

/* ---- queries --------------------------------------------------------------- */

int32_t lkv_kv_free_blocks(const lkv_kv_alloc_t *a, lkv_kv_tier_t tier)
{
    return a != NULL && tier_ok(tier) ? a->n_free[tier] : 0;
}

int32_t lkv_kv_used_blocks(const lkv_kv_alloc_t *a, lkv_kv_tier_t tier)
{
    return a != NULL && tier_ok(tier) ? a->cfg.n_blocks[tier] - a->n_free[tier]
                                      : 0;
}

int32_t lkv_kv_total_blocks(const lkv_kv_alloc_t *a, lkv_kv_tier_t tier)
{
    return a != NULL && tier_ok(tier) ? a->cfg.n_blocks[tier] : 0;
}

int32_t lkv_kv_layer_used_blocks(const lkv_kv_alloc_t *a, lkv_kv_tier_t tier,
                                 int layer)
{
    if (a == NULL || !tier_ok(tier) || layer < 0 || layer >= a->cfg.n_layers) {
        return 0;
    }
    return a->layer_used[tier][layer];
}

lkv_kv_res_t lkv_kv_layer_residency(const lkv_kv_alloc_t *a, uint64_t seq_id,
                                    int layer)
{
    if (a == NULL) {
        return LKV_KV_RES_NONE;
    }
    const layer_t *ly = live_layer(a, seq_id, layer, NULL);
    if (ly == NULL || ly->n_blocks == 0) {
        return LKV_KV_RES_NONE;
    }
    if (ly->state == LAYER_MOVING) {
        return LKV_KV_RES_MOVING;
    }
    switch (ly->tier) {
    case LKV_KV_TIER_DEVICE:
        return LKV_KV_RES_DEVICE;
    case LKV_KV_TIER_HOST:
        return LKV_KV_RES_HOST;
    default:
        return LKV_KV_RES_REMOTE;
    }
}

int lkv_kv_layer_tokens(const lkv_kv_alloc_t *a, uint64_t seq_id, int layer)
{
    if (a == NULL) {
        return -1;
    }
    const layer_t *ly = live_layer(a, seq_id, layer, NULL);
    return ly != NULL ? ly->n_tokens : -1;
}

lkv_status_t lkv_kv_layer_blocks(const lkv_kv_alloc_t *a, uint64_t seq_id,
                                 int layer, lkv_kv_tier_t *tier_p,
                                 const lkv_kv_block_t **blocks_p, int *n_p)
{
    if (a == NULL) {
        return LKV_ERR_INVALID;
    }
    if (layer < 0 || layer >= a->cfg.n_layers) {
        return LKV_ERR_INVALID;
    }
    table_t       *tb = NULL;
    const layer_t *ly = live_layer(a, seq_id, layer, &tb);
    if (ly == NULL) {
        return LKV_ERR_NOTFOUND;
    }
    if (tier_p != NULL) {
        *tier_p = (lkv_kv_tier_t)ly->tier;
    }
    if (blocks_p != NULL) {
        *blocks_p = tb->blocks;
    }
    if (n_p != NULL) {
        *n_p = ly->n_blocks;
    }
    return LKV_OK;
}

lkv_status_t lkv_kv_stage_blocks(const lkv_kv_alloc_t *a, uint64_t seq_id,
                                 int layer, const lkv_kv_block_t **blocks_p,
                                 int *n_p)
{
    if (a == NULL || layer < 0 || layer >= a->cfg.n_layers) {
        return LKV_ERR_INVALID;
    }
    table_t       *tb = NULL;
    const layer_t *ly = live_layer(a, seq_id, layer, &tb);
    if (ly == NULL) {
        return LKV_ERR_NOTFOUND;
    }
    if (ly->state != LAYER_STAGED) {
        return LKV_ERR_INVALID;
    }
    if (blocks_p != NULL) {
        *blocks_p = tb->aux;
    }
    if (n_p != NULL) {
        *n_p = ly->n_blocks;
    }
    return LKV_OK;
}

int lkv_kv_live_seqs(const lkv_kv_alloc_t *a)
{
    return a != NULL ? a->n_live : 0;
}

/* ---- invariants ------------------------------------------------------------- */

#define CHECK_FAIL(...)                                                        \
    do {                                                                       \
        LKV_LOG_ERROR(__VA_ARGS__);                                            \
        return LKV_ERR_INTERNAL;                                               \
    } while (0)

static lkv_status_t mark_blocks(const lkv_kv_alloc_t *a, int tier,
                                const lkv_kv_block_t *b, int n,
                                const char *what, uint64_t seq_id, int layer)
{
    if (n > 0 && b == NULL) {
        CHECK_FAIL("invariant: %s table of seq %llu layer %d missing", what,
                   (unsigned long long)seq_id, layer);
    }
    for (int i = 0; i < n; i++) {
        if (b[i] < 0 || b[i] >= a->cfg.n_blocks[tier]) {
            CHECK_FAIL("invariant: %s block %d of seq %llu layer %d out of "
                       "range for %s tier",
                       what, (int)b[i], (unsigned long long)seq_id, layer,
                       lkv_kv_tier_name((lkv_kv_tier_t)tier));
        }
        if (a->marks[tier][b[i]] != 0) {
            CHECK_FAIL("invariant: %s block %d (%s) of seq %llu layer %d is "
                       "also %s",
                       what, (int)b[i], lkv_kv_tier_name((lkv_kv_tier_t)tier),
                       (unsigned long long)seq_id, layer,
                       a->marks[tier][b[i]] == 1 ? "free" : "owned elsewhere");
        }
        a->marks[tier][b[i]] = 2;
    }
    return LKV_OK;
}

lkv_status_t lkv_kv_alloc_check(const lkv_kv_alloc_t *a)
{
    if (a == NULL) {
        return LKV_ERR_INVALID;
    }
    for (int t = 0; t < LKV_KV_TIER_COUNT; t++) {
        int32_t n = a->cfg.n_blocks[t];
        if (a->n_free[t] < 0 || a->n_free[t] > n) {
            CHECK_FAIL("invariant: %s tier free count %d not in 0..%d",
                       lkv_kv_tier_name((lkv_kv_tier_t)t), (int)a->n_free[t],
                       (int)n);
        }
        memset(a->marks[t], 0, (size_t)n);
        for (int32_t i = 0; i < a->n_free[t]; i++) {
            lkv_kv_block_t b = a->free_stack[t][i];
            if (b < 0 || b >= n) {
                CHECK_FAIL("invariant: free block %d out of range in %s tier",
                           (int)b, lkv_kv_tier_name((lkv_kv_tier_t)t));
            }
            if (a->marks[t][b] != 0) {
                CHECK_FAIL("invariant: block %d is on the %s free list twice",
                           (int)b, lkv_kv_tier_name((lkv_kv_tier_t)t));
            }
            a->marks[t][b] = 1;
        }
    }
    int live = 0, zombies = 0, free_slots = 0;
    for (int t = 0; t < LKV_KV_TIER_COUNT; t++) {
        memset(a->scratch_used, 0, (size_t)a->cfg.n_layers * sizeof(int32_t));
        for (int s = 0; s < a->n_slots; s++) {
            const slot_t *slot = &a->slots[s];
            if (slot->state == SLOT_FREE) {
                continue;
            }
            for (int l = 0; l < a->cfg.n_layers; l++) {
                const layer_t *ly = &slot->layers[l];
                const table_t *tb = &slot->tables[l];
                if (ly->n_blocks > 0 && ly->tier == t) {
                    LKV_CHECK(mark_blocks(a, t, tb->blocks, ly->n_blocks,
                                          "owned", slot->seq_id, l));
                    a->scratch_used[l] += ly->n_blocks;
                }
                if (ly->state == LAYER_STAGED && tb->ring1 > 0) {
                    continue; /* ring blocks: marked with their ring */
                }
                if (ly->state != LAYER_IDLE && ly->aux_tier == t) {
                    LKV_CHECK(mark_blocks(a, t, tb->aux, ly->n_blocks,
                                          ly->state == LAYER_MOVING
                                              ? "move destination"
                                              : "staging",
                                          slot->seq_id, l));
                    a->scratch_used[l] += ly->n_blocks;
                }
            }
        }
        int32_t owned = 0;
        if (t == LKV_KV_TIER_DEVICE) {
            int32_t rb = 0;
            for (int i = 0; i < a->n_rings; i++) {
                if (a->rings[i].used) {
                    LKV_CHECK(mark_blocks(a, t, a->rings[i].blocks,
                                          a->rings[i].n_blocks, "staging ring",
                                          0, i));
                    rb += a->rings[i].n_blocks;
                }
            }
            if (rb != a->ring_blocks) {
                CHECK_FAIL("invariant: staging rings own %d blocks, counter "
                           "says %d",
                           (int)rb, (int)a->ring_blocks);
            }
            owned += rb;
        }
        for (int l = 0; l < a->cfg.n_layers; l++) {
            if (a->scratch_used[l] != a->layer_used[t][l]) {
                CHECK_FAIL("invariant: layer %d uses %d %s blocks but its "
                           "counter says %d",
                           l, (int)a->scratch_used[l],
                           lkv_kv_tier_name((lkv_kv_tier_t)t),
                           (int)a->layer_used[t][l]);
            }
            owned += a->scratch_used[l];
        }
        if (owned + a->n_free[t] != a->cfg.n_blocks[t]) {
            CHECK_FAIL("invariant: %s tier has %d owned + %d free != %d blocks",
                       lkv_kv_tier_name((lkv_kv_tier_t)t), (int)owned,
                       (int)a->n_free[t], (int)a->cfg.n_blocks[t]);
        }
    }
    if (a->n_rings > 0) {
        memset(a->scratch_users, 0, (size_t)a->n_rings * sizeof(int32_t));
    }
    for (int s = 0; s < a->n_slots; s++) {
        const slot_t *slot = &a->slots[s];
        if (slot->state == SLOT_FREE) {
            free_slots++;
            continue;
        }
        for (int l = 0; l < a->cfg.n_layers; l++) {
            const layer_t *ly = &slot->layers[l];
            const table_t *tb = &slot->tables[l];
            if (tb->ring1 == 0) {
                continue;
            }
            const ring_t *r = ring_get(a, tb->ring1 - 1);
            if (ly->state != LAYER_STAGED || r == NULL ||
                r->n_blocks < ly->n_blocks ||
                memcmp(tb->aux, r->blocks,
                       (size_t)ly->n_blocks * sizeof(*tb->aux)) != 0) {
                CHECK_FAIL("invariant: seq %llu layer %d staging does not "
                           "match its ring %d",
                           (unsigned long long)slot->seq_id, l,
                           (int)tb->ring1 - 1);
            }
            a->scratch_users[tb->ring1 - 1]++;
        }
    }
    for (int i = 0; i < a->n_rings; i++) {
        if (a->scratch_users[i] != (a->rings[i].used ? a->rings[i].users : 0)) {
            CHECK_FAIL("invariant: staging ring %d has %d staged layers, "
                       "counter says %d",
                       i, (int)a->scratch_users[i], (int)a->rings[i].users);
        }
    }
    for (int s = 0; s < a->n_slots; s++) {
        const slot_t *slot = &a->slots[s];
        if (slot->state == SLOT_FREE) {
            continue;
        }
        int pending = 0;
        for (int l = 0; l < a->cfg.n_layers; l++) {
            const layer_t *ly = &slot->layers[l];
            if (ly->state != LAYER_IDLE) {
                pending++;
                if (ly->n_blocks == 0) {
                    CHECK_FAIL("invariant: seq %llu layer %d copies no blocks",
                               (unsigned long long)slot->seq_id, l);
                }
                if (ly->aux_tier == ly->tier ||
                    (ly->state == LAYER_STAGED &&
                     ly->aux_tier != LKV_KV_TIER_DEVICE)) {
                    CHECK_FAIL("invariant: seq %llu layer %d copy tiers wrong",
                               (unsigned long long)slot->seq_id, l);
                }
            }
            if (ly->n_blocks != blocks_for_tokens(a, ly->n_tokens)) {
                CHECK_FAIL("invariant: seq %llu layer %d has %d tokens in %d "
                           "blocks",
                           (unsigned long long)slot->seq_id, l,
                           (int)ly->n_tokens, (int)ly->n_blocks);
            }
            if (slot->state == SLOT_ZOMBIE && ly->state == LAYER_IDLE &&
                ly->n_blocks != 0) {
                CHECK_FAIL("invariant: freed seq %llu still owns layer %d",
                           (unsigned long long)slot->seq_id, l);
            }
        }
        if (pending != slot->n_pending) {
            CHECK_FAIL("invariant: seq %llu has %d copies, counter says %d",
                       (unsigned long long)slot->seq_id, pending,
                       slot->n_pending);
        }
        if (slot->state == SLOT_LIVE) {
            live++;
            if (hash_find(a, slot->seq_id) != s) {
                CHECK_FAIL("invariant: seq %llu not found in the id map",
                           (unsigned long long)slot->seq_id);
            }
        } else {
            zombies++;
            if (pending == 0) {
                CHECK_FAIL("invariant: freed seq %llu kept with no copies",
                           (unsigned long long)slot->seq_id);
            }
        }
    }
    if (live != a->n_live || zombies != a->n_zombies ||
        free_slots != a->n_free_slots || live > a->cfg.max_seqs) {
        CHECK_FAIL("invariant: %d live / %d freed-with-copies / %d free slots, "
                   "counters say %d / %d / %d",
                   live, zombies, free_slots, a->n_live, a->n_zombies,
                   a->n_free_slots);
    }
    int in_hash = 0;
    for (uint32_t i = 0; i <= a->hash_mask; i++) {
        if (a->hash_vals[i] >= 0) {
            in_hash++;
            const slot_t *slot = &a->slots[a->hash_vals[i]];
            if (slot->state != SLOT_LIVE || slot->seq_id != a->hash_keys[i]) {
                CHECK_FAIL("invariant: id map entry %llu points to a wrong "
                           "slot",
                           (unsigned long long)a->hash_keys[i]);
            }
        }
    }
    if (in_hash != live) {
        CHECK_FAIL("invariant: id map holds %d ids for %d live sequences",
                   in_hash, live);
    }
    const lookup_memo_t *m = a->memo;
    if (m->slot >= 0 &&
        (m->slot >= a->n_slots || a->slots[m->slot].state != SLOT_LIVE ||
         a->slots[m->slot].seq_id != m->seq_id)) {
        CHECK_FAIL("invariant: lookup memo maps seq %llu to a wrong slot",
                   (unsigned long long)m->seq_id);
    }
    return LKV_OK;
}
