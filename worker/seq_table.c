/* seq_table.c - worker-side per-sequence, per-layer block tables; see
 * seq_table.h. Single-threaded. */
#define LKV_LOG_MODULE "seq_table"

#include "worker/seq_table.h"

#include <stdlib.h>
#include <string.h>

#include "common/log.h"

struct lkv_seq_table {
    int              n_layers;
    int              max_seqs;
    int              max_blocks;
    int              n_live;
    lkv_seq_entry_t *entries; /* (max_seqs) */
    lkv_seq_entry_t *last;    /* last found: plans group deltas by seq */
    lkv_seq_layer_t *layers;  /* (max_seqs * n_layers) */
    int32_t         *blocks;  /* (max_seqs * n_layers * max_blocks) */
};

lkv_status_t lkv_seq_table_create(int n_layers, int max_seqs, int max_blocks,
                                  lkv_seq_table_t **t_p)
{
    lkv_seq_table_t *t;
    size_t           nl;

    if (n_layers <= 0 || max_seqs <= 0 || max_blocks <= 0 || t_p == NULL) {
        LKV_LOG_ERROR("invalid sequence table size: %d layers, %d sequences, "
                      "%d blocks per layer",
                      n_layers, max_seqs, max_blocks);
        return LKV_ERR_INVALID;
    }
    t = calloc(1, sizeof(*t));
    if (t == NULL) {
        return LKV_ERR_NOMEM;
    }
    nl            = (size_t)max_seqs * (size_t)n_layers;
    t->n_layers   = n_layers;
    t->max_seqs   = max_seqs;
    t->max_blocks = max_blocks;
    t->entries    = calloc((size_t)max_seqs, sizeof(*t->entries));
    t->layers     = calloc(nl, sizeof(*t->layers));
    t->blocks     = malloc(nl * (size_t)max_blocks * sizeof(int32_t));
    if (t->entries == NULL || t->layers == NULL || t->blocks == NULL) {
        lkv_seq_table_destroy(&t);
        return LKV_ERR_NOMEM;
    }
    for (int s = 0; s < max_seqs; s++) {
        t->entries[s].layers = t->layers + (size_t)s * (size_t)n_layers;
        for (int l = 0; l < n_layers; l++) {
            size_t i            = (size_t)s * (size_t)n_layers + (size_t)l;
            t->layers[i].blocks = t->blocks + i * (size_t)max_blocks;
        }
    }
    *t_p = t;
    return LKV_OK;
}

void lkv_seq_table_destroy(lkv_seq_table_t **t_p)
{
    if (t_p == NULL || *t_p == NULL) {
        return;
    }
    free((*t_p)->entries);
    free((*t_p)->layers);
    free((*t_p)->blocks);
    free(*t_p);
    *t_p = NULL;
}

int lkv_seq_table_max_blocks(const lkv_seq_table_t *t)
{
    return t->max_blocks;
}

int lkv_seq_table_n_live(const lkv_seq_table_t *t)
{
    return t->n_live;
}

lkv_seq_entry_t *lkv_seq_table_find(lkv_seq_table_t *t, uint64_t seq_id)
{
    if (t->last != NULL && t->last->live && t->last->seq_id == seq_id) {
        return t->last;
    }
    for (int s = 0; s < t->max_seqs; s++) {
        if (t->entries[s].live && t->entries[s].seq_id == seq_id) {
            t->last = &t->entries[s];
            return t->last;
        }
    }
    return NULL;
}

lkv_status_t lkv_seq_table_get(lkv_seq_table_t *t, uint64_t seq_id,
                               lkv_seq_entry_t **e_p)
{
    lkv_seq_entry_t *e = lkv_seq_table_find(t, seq_id);

    if (e != NULL) {
        *e_p = e;
        return LKV_OK;
    }
    for (int s = 0; s < t->max_seqs; s++) {
        e = &t->entries[s];
        if (e->live) {
            continue;
        }
        e->live     = true;
        e->seq_id   = seq_id;
        e->rng_init = false;
        e->rng      = 0;
        for (int l = 0; l < t->n_layers; l++) {
            e->layers[l].tier         = 0;
            e->layers[l].n_blocks     = 0;
            e->layers[l].stage_slot   = -1;
            e->layers[l].reload_slot  = -1;
            e->layers[l].offload_slot = -1;
        }
        t->n_live++;
        *e_p = e;
        return LKV_OK;
    }
    LKV_LOG_ERROR("worker sequence table is full (%d live sequences); "
                  "raise the worker's max sequences",
                  t->max_seqs);
    return LKV_ERR_NOSPACE;
}

lkv_status_t lkv_seq_table_remove(lkv_seq_table_t *t, uint64_t seq_id)
{
    lkv_seq_entry_t *e = lkv_seq_table_find(t, seq_id);

    if (e == NULL) {
        return LKV_ERR_NOTFOUND;
    }
    e->live = false;
    t->n_live--;
    return LKV_OK;
}

lkv_status_t lkv_seq_table_append(lkv_seq_table_t *t, lkv_seq_entry_t *e,
                                  int layer, uint8_t tier,
                                  const int32_t *blocks, int n)
{
    lkv_seq_layer_t *ly;

    if (layer < 0 || layer >= t->n_layers || n < 0) {
        LKV_LOG_ERROR("append to layer %d of seq %llu: no such layer",
                      layer, (unsigned long long)e->seq_id);
        return LKV_ERR_INVALID;
    }
    ly = &e->layers[layer];
    if (ly->n_blocks > 0 && ly->tier != tier) {
        LKV_LOG_ERROR("append of %s blocks to layer %d of seq %llu, whose "
                      "blocks are in tier %d",
                      tier == 0 ? "device" : "host", layer,
                      (unsigned long long)e->seq_id, ly->tier);
        return LKV_ERR_INVALID;
    }
    if (ly->n_blocks + n > t->max_blocks) {
        LKV_LOG_ERROR("layer %d of seq %llu would hold %d blocks, table "
                      "capacity is %d",
                      layer, (unsigned long long)e->seq_id, ly->n_blocks + n,
                      t->max_blocks);
        return LKV_ERR_INVALID;
    }
    memcpy(ly->blocks + ly->n_blocks, blocks, (size_t)n * sizeof(int32_t));
    ly->n_blocks += n;
    ly->tier = tier;
    return LKV_OK;
}

lkv_status_t lkv_seq_table_set(lkv_seq_table_t *t, lkv_seq_entry_t *e,
                               int layer, uint8_t tier, const int32_t *blocks,
                               int n)
{
    lkv_seq_layer_t *ly;

    if (layer < 0 || layer >= t->n_layers || n < 0 || n > t->max_blocks) {
        LKV_LOG_ERROR("layer %d of seq %llu cannot hold %d blocks",
                      layer, (unsigned long long)e->seq_id, n);
        return LKV_ERR_INVALID;
    }
    ly = &e->layers[layer];
    memmove(ly->blocks, blocks, (size_t)n * sizeof(int32_t));
    ly->n_blocks = n;
    ly->tier     = tier;
    return LKV_OK;
}
