/* shard.c - TP/PP partition of a model; see shard.h. Pure functions. */
#define LKV_LOG_MODULE "shard"

#include "worker/shard.h"

#include <errno.h>
#include <stdlib.h>

#include "common/log.h"

lkv_shard_t lkv_shard_single(const lkv_model_config_t *cfg)
{
    lkv_shard_t s = {0};

    s.tp = s.pp = 1;
    s.layer1     = cfg->n_layers;
    s.n_q_heads  = cfg->n_heads;
    s.n_kv_heads = cfg->n_kv_heads;
    s.n_ff       = cfg->hidden_dim;
    return s;
}

lkv_status_t lkv_shard_plan(const lkv_model_config_t *cfg, int tp, int tp_rank,
                            int pp, int pp_rank, const int *stage_layers,
                            lkv_shard_t *out)
{
    lkv_shard_t s = {0};
    int         nl = cfg->n_layers, nh = cfg->n_heads, nkv = cfg->n_kv_heads;

    if (tp < 1 || pp < 1 || tp_rank < 0 || tp_rank >= tp || pp_rank < 0 ||
        pp_rank >= pp || pp > LKV_SHARD_MAX_STAGES || out == NULL ||
        nl <= 0 || nh <= 0 || nkv <= 0 || nh % nkv != 0) {
        LKV_LOG_ERROR("invalid shard request: tp %d rank %d, pp %d stage %d "
                      "(model: %d layers, %d heads, %d kv heads)",
                      tp, tp_rank, pp, pp_rank, nl, nh, nkv);
        return LKV_ERR_INVALID;
    }
    if (nh % tp != 0 || cfg->hidden_dim % tp != 0 ||
        (nkv % tp != 0 && tp % nkv != 0)) {
        LKV_LOG_ERROR("--tp %d does not divide the model: %d query heads, "
                      "%d kv heads, hidden_dim %d (tp must divide the query "
                      "heads and hidden_dim, and divide or be a multiple of "
                      "the kv heads)",
                      tp, nh, nkv, cfg->hidden_dim);
        return LKV_ERR_INVALID;
    }
    if (pp > nl) {
        LKV_LOG_ERROR("--pp %d exceeds the model's %d layers", pp, nl);
        return LKV_ERR_INVALID;
    }
    s.tp        = tp;
    s.tp_rank   = tp_rank;
    s.pp        = pp;
    s.pp_rank   = pp_rank;
    s.n_q_heads = nh / tp;
    s.q_head0   = tp_rank * s.n_q_heads;
    if (nkv >= tp) {
        s.n_kv_heads = nkv / tp;
        s.kv_head0   = tp_rank * s.n_kv_heads;
    } else {
        int group = nh / nkv; /* query heads per kv head */
        if (group % s.n_q_heads != 0) {
            LKV_LOG_ERROR("--tp %d splits a kv head's %d query heads "
                          "unevenly; use a tp that divides %d",
                          tp, group, nh);
            return LKV_ERR_INVALID;
        }
        s.n_kv_heads = 1; /* replicated */
        s.kv_head0   = s.q_head0 / group;
    }
    s.n_ff = cfg->hidden_dim / tp;
    s.ff0  = tp_rank * s.n_ff;

    int l0 = 0;
    for (int st = 0; st < pp; st++) {
        int cnt;
        if (stage_layers != NULL) {
            cnt = stage_layers[st];
            if (cnt < 1) {
                LKV_LOG_ERROR("--pp-layers: stage %d has %d layers (each "
                              "stage needs at least one)",
                              st, cnt);
                return LKV_ERR_INVALID;
            }
        } else {
            cnt = nl / pp + (st < nl % pp ? 1 : 0);
        }
        if (st == pp_rank) {
            s.layer0 = l0;
            s.layer1 = l0 + cnt;
        }
        l0 += cnt;
    }
    if (l0 != nl) {
        LKV_LOG_ERROR("--pp-layers counts sum to %d, the model has %d layers",
                      l0, nl);
        return LKV_ERR_INVALID;
    }
    *out = s;
    return LKV_OK;
}

lkv_status_t lkv_shard_parse_layers(const char *text, int *counts, int max,
                                    int *n_p)
{
    const char *p = text;
    int         n = 0;

    if (text == NULL || *text == '\0') {
        LKV_LOG_ERROR("--pp-layers expects counts such as 3,2");
        return LKV_ERR_INVALID;
    }
    while (*p != '\0') {
        char *end;
        errno  = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno != 0 || v < 1 || v > 100000 || n >= max ||
            (*end != ',' && *end != '\0') || (*end == ',' && end[1] == '\0')) {
            LKV_LOG_ERROR("--pp-layers '%s': expected up to %d positive "
                          "counts separated by commas, e.g. 3,2",
                          text, max);
            return LKV_ERR_INVALID;
        }
        counts[n++] = (int)v;
        p           = *end == ',' ? end + 1 : end;
    }
    *n_p = n;
    return LKV_OK;
}
