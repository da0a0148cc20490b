/* forward.c - batched Llama forward pass over per-layer block tables; see
 * forward.h. Single-threaded (the step thread); no allocation per pass. */
#define LKV_LOG_MODULE "forward"

#include "worker/forward.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "worker/comm.h"

struct lkv_fwd {
    const lkv_model_t  *m;
    lkv_kern_backend_t *be;
    lkv_fwd_config_t    cfg;
    bool                on_host;

    /* activations, backend memory */
    float *x;      /* (T, dim) residual stream */
    float *xb;     /* (T, dim) */
    float *q;      /* (T, n_heads*head_dim) */
    float *att;    /* (T, n_heads*head_dim) */
    float *k, *v;  /* (T, n_kv_heads*head_dim) */
    float *hb;     /* (T, hidden_dim) */
    float *hb2;    /* (T, hidden_dim) */
    float *xs;     /* (R, dim) rows that produce logits */
    float *logits; /* (R, vocab) */
    int    n_rows; /* rows of the last pass */

    /* per-pass metadata: host arrays and their backend copies */
    int32_t *h_ids, *h_pos, *h_slots, *h_qstart, *h_ctx, *h_bt, *h_rows;
    int32_t *d_ids, *d_pos, *d_slots, *d_qstart, *d_ctx, *d_bt, *d_rows;
    /* device backends queue kernels asynchronously: every layer gets its own
     * table/slot region so an upload never overwrites what a queued kernel
     * of an earlier layer still reads (host backends: one region) */
    size_t   bt_layer_stride, slots_layer_stride;
    int32_t *cur_bt, *cur_slots; /* this layer's regions */

    void **owned; /* backend allocations */
    int    n_owned;
};

lkv_fwd_config_t lkv_fwd_config_default(void)
{
    lkv_fwd_config_t c;

    c.max_batch_tokens   = 512;
    c.max_seqs           = 64;
    c.max_logit_rows     = 64;
    c.max_blocks_per_seq = 64;
    c.block_size         = 16;
    c.kv_dtype           = LKV_DTYPE_F32;
    return c;
}

static lkv_status_t balloc(lkv_fwd_t *f, size_t bytes, void **p)
{
    lkv_status_t st = LKV_KERN_CALL(f->be, mem_alloc, bytes ? bytes : 4, p);
    if (st != LKV_OK) {
        LKV_LOG_ERROR("cannot allocate %zu bytes of forward scratch: %s",
                      bytes, lkv_status_str(st));
        return st;
    }
    f->owned[f->n_owned++] = *p;
    return LKV_OK;
}

#define N_BUFS 24

lkv_status_t lkv_fwd_create(const lkv_model_t *m, const lkv_fwd_config_t *cfg,
                            lkv_fwd_t **f_p)
{
    lkv_fwd_t                *f;
    lkv_status_t              st;
    const lkv_model_config_t *c = &m->cfg;

    if (cfg->max_batch_tokens <= 0 || cfg->max_seqs <= 0 ||
        cfg->max_logit_rows <= 0 || cfg->max_blocks_per_seq <= 0 ||
        cfg->block_size <= 0) {
        LKV_LOG_ERROR("invalid forward config: max_batch_tokens %d, "
                      "max_seqs %d, max_logit_rows %d, max_blocks_per_seq %d, "
                      "block_size %d",
                      cfg->max_batch_tokens, cfg->max_seqs,
                      cfg->max_logit_rows, cfg->max_blocks_per_seq,
                      cfg->block_size);
        return LKV_ERR_INVALID;
    }
    f = calloc(1, sizeof(*f));
    if (f == NULL) {
        return LKV_ERR_NOMEM;
    }
    f->owned = calloc(N_BUFS, sizeof(void *));
    if (f->owned == NULL) {
        free(f);
        return LKV_ERR_NOMEM;
    }
    f->m       = m;
    f->be      = m->be;
    f->cfg     = *cfg;
    f->on_host = m->on_host;

    size_t T   = (size_t)cfg->max_batch_tokens;
    size_t R   = (size_t)cfg->max_logit_rows;
    size_t S   = (size_t)cfg->max_seqs;
    size_t qd  = (size_t)c->n_heads * (size_t)c->head_dim;
    size_t kvd = (size_t)c->n_kv_heads * (size_t)c->head_dim;
    size_t fs  = sizeof(float);
    size_t is  = sizeof(int32_t);
    size_t bt  = S * (size_t)cfg->max_blocks_per_seq;

    LKV_CHECK_GOTO(balloc(f, T * (size_t)c->dim * fs, (void **)&f->x), st, fail);
    LKV_CHECK_GOTO(balloc(f, T * (size_t)c->dim * fs, (void **)&f->xb), st,
                   fail);
    LKV_CHECK_GOTO(balloc(f, T * qd * fs, (void **)&f->q), st, fail);
    LKV_CHECK_GOTO(balloc(f, T * qd * fs, (void **)&f->att), st, fail);
    LKV_CHECK_GOTO(balloc(f, T * kvd * fs, (void **)&f->k), st, fail);
    LKV_CHECK_GOTO(balloc(f, T * kvd * fs, (void **)&f->v), st, fail);
    LKV_CHECK_GOTO(balloc(f, T * (size_t)c->hidden_dim * fs, (void **)&f->hb),
                   st, fail);
    LKV_CHECK_GOTO(balloc(f, T * (size_t)c->hidden_dim * fs, (void **)&f->hb2),
                   st, fail);
    LKV_CHECK_GOTO(balloc(f, R * (size_t)c->dim * fs, (void **)&f->xs), st,
                   fail);
    LKV_CHECK_GOTO(balloc(f, R * (size_t)c->vocab_size * fs,
                          (void **)&f->logits),
                   st, fail);

    f->h_ids    = malloc(T * is);
    f->h_pos    = malloc(T * is);
    f->h_slots  = malloc(T * is);
    f->h_qstart = malloc((S + 1) * is);
    f->h_ctx    = malloc(S * is);
    f->h_bt     = calloc(bt, is);
    f->h_rows   = malloc(R * is);
    if (!f->h_ids || !f->h_pos || !f->h_slots || !f->h_qstart || !f->h_ctx ||
        !f->h_bt || !f->h_rows) {
        st = LKV_ERR_NOMEM;
        goto fail;
    }
    if (f->on_host) {
        f->d_ids    = f->h_ids;
        f->d_pos    = f->h_pos;
        f->d_slots  = f->h_slots;
        f->d_qstart = f->h_qstart;
        f->d_ctx    = f->h_ctx;
        f->d_bt     = f->h_bt;
        f->d_rows   = f->h_rows;
    } else {
        LKV_CHECK_GOTO(balloc(f, T * is, (void **)&f->d_ids), st, fail);
        LKV_CHECK_GOTO(balloc(f, T * is, (void **)&f->d_pos), st, fail);
        size_t nl             = (size_t)c->n_layers;
        f->bt_layer_stride    = bt;
        f->slots_layer_stride = T;
        LKV_CHECK_GOTO(balloc(f, nl * T * is, (void **)&f->d_slots), st,
                       fail);
        LKV_CHECK_GOTO(balloc(f, (S + 1) * is, (void **)&f->d_qstart), st,
                       fail);
        LKV_CHECK_GOTO(balloc(f, S * is, (void **)&f->d_ctx), st, fail);
        LKV_CHECK_GOTO(balloc(f, nl * bt * is, (void **)&f->d_bt), st, fail);
        LKV_CHECK_GOTO(balloc(f, R * is, (void **)&f->d_rows), st, fail);
    }
    *f_p = f;
    return LKV_OK;

fail:
    lkv_fwd_destroy(&f);
    return st;
}

void lkv_fwd_destroy(lkv_fwd_t **f_p)
{
    lkv_fwd_t *f;

    if (f_p == NULL || *f_p == NULL) {
        return;
    }
    f = *f_p;
    for (int i = 0; i < f->n_owned; i++) {
        f->be->ops->mem_free(f->be, f->owned[i]);
    }
    free(f->owned);
    free(f->h_ids);
    free(f->h_pos);
    free(f->h_slots);
    free(f->h_qstart);
    free(f->h_ctx);
    free(f->h_bt);
    free(f->h_rows);
    free(f);
    *f_p = NULL;
}

const lkv_fwd_config_t *lkv_fwd_config(const lkv_fwd_t *f)
{
    return &f->cfg;
}

const float *lkv_fwd_logits(const lkv_fwd_t *f)
{
    return f->logits;
}

static lkv_status_t upload(lkv_fwd_t *f, int32_t *dst, const int32_t *src,
                           size_t n)
{
    if (f->on_host || n == 0) {
        return LKV_OK;
    }
    return LKV_KERN_CALL(f->be, mem_upload, dst, src, n * sizeof(int32_t));
}

/* Validate the batch and fill the per-pass metadata that does not depend on
 * the layer. Returns the token count in *n_tok_p, logit rows in *n_rows_p. */
static lkv_status_t prepare(lkv_fwd_t *f, const lkv_fwd_batch_t *b,
                            int *n_tok_p, int *n_rows_p)
{
    const lkv_fwd_config_t *c     = &f->cfg;
    int                     vocab = f->m->cfg.vocab_size;
    int                     cap   = c->max_blocks_per_seq * c->block_size;
    int                     n_tok = 0, n_rows = 0;

    if (b->n_seqs <= 0 || b->n_seqs > c->max_seqs || b->seqs == NULL ||
        b->table == NULL || b->kv_pool == NULL) {
        LKV_LOG_ERROR("invalid batch: %d sequences (limit %d)%s", b->n_seqs,
                      c->max_seqs,
                      b->table == NULL || b->kv_pool == NULL
                          ? ", missing block tables or kv pool"
                          : "");
        return LKV_ERR_INVALID;
    }
    for (int s = 0; s < b->n_seqs; s++) {
        const lkv_fwd_seq_t *q = &b->seqs[s];

        if (q->n_tokens <= 0 || q->tokens == NULL || q->pos0 < 0 ||
            q->pos0 + q->n_tokens > cap ||
            (q->n_logits != 0 && q->n_logits != 1 &&
             q->n_logits != q->n_tokens)) {
            LKV_LOG_ERROR("invalid batch sequence %d: %d tokens at position "
                          "%d, %d logit rows (context capacity %d)",
                          s, q->n_tokens, q->pos0, q->n_logits, cap);
            return LKV_ERR_INVALID;
        }
        if (n_tok + q->n_tokens > c->max_batch_tokens ||
            n_rows + q->n_logits > c->max_logit_rows) {
            LKV_LOG_ERROR("batch exceeds its limits: more than %d tokens or "
                          "%d logit rows",
                          c->max_batch_tokens, c->max_logit_rows);
            return LKV_ERR_INVALID;
        }
        f->h_qstart[s] = n_tok;
        f->h_ctx[s]    = q->pos0 + q->n_tokens;
        for (int i = 0; i < q->n_tokens; i++) {
            int32_t id = q->tokens[i];
            if (id < 0 || id >= vocab) {
                LKV_LOG_ERROR("token id %d of batch sequence %d is outside "
                              "the vocabulary (size %d)",
                              id, s, vocab);
                return LKV_ERR_INVALID;
            }
            f->h_ids[n_tok + i] = id;
            f->h_pos[n_tok + i] = q->pos0 + i;
        }
        for (int i = q->n_tokens - q->n_logits; i < q->n_tokens; i++) {
            f->h_rows[n_rows++] = n_tok + i;
        }
        n_tok += q->n_tokens;
    }
    f->h_qstart[b->n_seqs] = n_tok;
    *n_tok_p               = n_tok;
    *n_rows_p              = n_rows;
    LKV_CHECK(upload(f, f->d_ids, f->h_ids, (size_t)n_tok));
    LKV_CHECK(upload(f, f->d_pos, f->h_pos, (size_t)n_tok));
    LKV_CHECK(upload(f, f->d_qstart, f->h_qstart, (size_t)b->n_seqs + 1));
    LKV_CHECK(upload(f, f->d_ctx, f->h_ctx, (size_t)b->n_seqs));
    LKV_CHECK(upload(f, f->d_rows, f->h_rows, (size_t)n_rows));
    return LKV_OK;
}

/* Block tables and KV slots of layer l. */
static lkv_status_t layer_tables(lkv_fwd_t *f, const lkv_fwd_batch_t *b,
                                 int l, int n_tok)
{
    const lkv_fwd_config_t *c      = &f->cfg;
    int                     stride = c->max_blocks_per_seq;
    int                     bs     = c->block_size;

    for (int s = 0; s < b->n_seqs; s++) {
        const lkv_fwd_seq_t *q = &b->seqs[s];
        const int32_t       *blocks;
        int                  n_blocks = 0;
        int                  need     = (q->pos0 + q->n_tokens + bs - 1) / bs;
        lkv_status_t         st;

        st = b->table(b->ctx, s, l, &blocks, &n_blocks);
        if (st != LKV_OK) {
            return st;
        }
        if (n_blocks < need || n_blocks > stride) {
            LKV_LOG_ERROR("layer %d of batch sequence %d has %d kv blocks, "
                          "needs %d for %d positions (table width %d)",
                          l, s, n_blocks, need, q->pos0 + q->n_tokens, stride);
            return LKV_ERR_INVALID;
        }
        memcpy(f->h_bt + (size_t)s * (size_t)stride, blocks,
               (size_t)need * sizeof(int32_t));
        int32_t *slots = f->h_slots + f->h_qstart[s];
        for (int i = 0; i < q->n_tokens; i++) {
            int p    = q->pos0 + i;
            slots[i] = blocks[p / bs] * bs + p % bs;
        }
    }
    f->cur_bt    = f->d_bt + (size_t)l * f->bt_layer_stride;
    f->cur_slots = f->d_slots + (size_t)l * f->slots_layer_stride;
    LKV_CHECK(upload(f, f->cur_bt, f->h_bt,
                     (size_t)b->n_seqs * (size_t)stride));
    LKV_CHECK(upload(f, f->cur_slots, f->h_slots, (size_t)n_tok));
    return LKV_OK;
}

#define K(call_) LKV_CHECK(call_)

/* One pass of sequences [s0, s1) of the prepared batch: their tokens are
 * rows t0.. of the activations, their logit rows r0.. of the logits. The
 * whole batch is one such pass, except under pipeline parallelism, where
 * micro-batches let stage s work on micro-batch m while stage s+1 works on
 * m-1. The per-layer hooks run once per step: before_layer in the first
 * micro-batch, kv_done in the last (after every micro-batch wrote the
 * layer's K/V). */
static lkv_status_t run_pass(lkv_fwd_t *f, const lkv_fwd_batch_t *b, int s0,
                             int s1, int r0, bool first_mb, bool last_mb)
{
    const lkv_model_t        *m  = f->m;
    const lkv_model_config_t *c  = &m->cfg;
    const lkv_shard_t        *sh = &m->shard;
    lkv_kern_backend_t       *be = f->be;
    int                       qd  = c->n_heads * c->head_dim;
    int                       kvd = c->n_kv_heads * c->head_dim;
    int                       t0  = f->h_qstart[s0];
    int                       n   = f->h_qstart[s1] - t0;
    int                       n_rows = 0;
    size_t                    n_act  = (size_t)n * (size_t)c->dim;
    size_t                    T0     = (size_t)t0;
    float                    *x   = f->x + T0 * (size_t)c->dim;
    float                    *xb  = f->xb + T0 * (size_t)c->dim;
    float                    *q   = f->q + T0 * (size_t)qd;
    float                    *k   = f->k + T0 * (size_t)kvd;
    float                    *v   = f->v + T0 * (size_t)kvd;
    float                    *hb  = f->hb + T0 * (size_t)c->hidden_dim;
    float                    *hb2 = f->hb2 + T0 * (size_t)c->hidden_dim;
    float                    *att = f->att + T0 * (size_t)qd;
    lkv_kern_attn_t           a;

    for (int s = s0; s < s1; s++) {
        n_rows += b->seqs[s].n_logits;
    }
    /* attention reads q and writes att by absolute row (q_start) */
    a.n_seqs      = s1 - s0;
    a.q_start     = f->d_qstart + s0;
    a.ctx_len     = f->d_ctx + s0;
    a.bt_stride   = f->cfg.max_blocks_per_seq;
    a.n_heads     = c->n_heads;
    a.n_kv_heads  = c->n_kv_heads;
    a.head_dim    = c->head_dim;
    a.block_size  = f->cfg.block_size;
    a.scale       = 1.0f / sqrtf((float)c->head_dim);

    /* pipeline: the first stage embeds, later ones take the residual
     * stream from the previous stage (worker/shard.h) */
    if (sh->pp_rank == 0) {
        K(LKV_KERN_CALL(be, embedding, x, m->tok_embd.data,
                        m->tok_embd.dtype, f->d_ids + t0, n, c->dim));
    } else {
        K(lkv_comm_pp_recv_prev(m->comm, x, n_act));
    }
    for (int l = 0; l < c->n_layers; l++) {
        const lkv_layer_weights_t *w = &m->layers[l];

        if (!lkv_shard_has_layer(sh, l)) {
            /* another stage's layer: keep the hooks' per-layer bookkeeping
             * (reloads applied, copies started) in step with that stage */
            if (first_mb && b->before_layer != NULL) {
                K(b->before_layer(b->ctx, l));
            }
            if (last_mb && b->kv_done != NULL) {
                K(b->kv_done(b->ctx, l));
            }
            continue;
        }
        K(LKV_KERN_CALL(be, rmsnorm, xb, x, w->attn_norm.data,
                        w->attn_norm.dtype, n, c->dim, c->norm_eps));
        K(LKV_KERN_CALL(be, matmul, q, xb, w->wq.data, w->wq.dtype, w->bq, n,
                        c->dim, qd));
        K(LKV_KERN_CALL(be, matmul, k, xb, w->wk.data, w->wk.dtype, w->bk, n,
                        c->dim, kvd));
        K(LKV_KERN_CALL(be, matmul, v, xb, w->wv.data, w->wv.dtype, w->bv, n,
                        c->dim, kvd));
        K(LKV_KERN_CALL(be, rope, q, f->d_pos + t0, n, c->n_heads,
                        c->head_dim, c->rope_dim, c->rope_style, m->inv_freq));
        K(LKV_KERN_CALL(be, rope, k, f->d_pos + t0, n, c->n_kv_heads,
                        c->head_dim, c->rope_dim, c->rope_style,
                        m->inv_freq));
        if (first_mb && b->before_layer != NULL) {
            K(b->before_layer(b->ctx, l));
        }
        K(layer_tables(f, b, l, f->h_qstart[b->n_seqs]));
        a.block_table = f->cur_bt + (size_t)s0 * (size_t)a.bt_stride;
        K(LKV_KERN_CALL(be, kv_write, b->kv_pool, f->cfg.kv_dtype,
                        f->cur_slots + t0, k, v, n, c->n_kv_heads,
                        c->head_dim, f->cfg.block_size));
        if (last_mb && b->kv_done != NULL) {
            K(b->kv_done(b->ctx, l));
        }
        K(LKV_KERN_CALL(be, attention, f->att, f->q, b->kv_pool,
                        f->cfg.kv_dtype, &a));
        K(LKV_KERN_CALL(be, matmul, xb, att, w->wo.data, w->wo.dtype, NULL, n,
                        qd, c->dim));
        if (sh->tp > 1) { /* row-split wo: sum the partial outputs */
            K(lkv_comm_tp_allreduce(m->comm, xb, n_act));
        }
        K(LKV_KERN_CALL(be, add, x, x, xb, n_act));

        K(LKV_KERN_CALL(be, rmsnorm, xb, x, w->ffn_norm.data,
                        w->ffn_norm.dtype, n, c->dim, c->norm_eps));
        K(LKV_KERN_CALL(be, matmul, hb, xb, w->w_gate.data, w->w_gate.dtype,
                        NULL, n, c->dim, c->hidden_dim));
        K(LKV_KERN_CALL(be, matmul, hb2, xb, w->w_up.data, w->w_up.dtype,
                        NULL, n, c->dim, c->hidden_dim));
        K(LKV_KERN_CALL(be, swiglu, hb, hb, hb2, (size_t)n * c->hidden_dim));
        K(LKV_KERN_CALL(be, matmul, xb, hb, w->w_down.data, w->w_down.dtype,
                        NULL, n, c->hidden_dim, c->dim));
        if (sh->tp > 1) { /* row-split w_down */
            K(lkv_comm_tp_allreduce(m->comm, xb, n_act));
        }
        K(LKV_KERN_CALL(be, add, x, x, xb, n_act));
    }
    if (sh->pp_rank + 1 < sh->pp) {
        K(lkv_comm_pp_send_next(m->comm, x, n_act));
    }
    if (n_rows > 0 && sh->pp_rank + 1 == sh->pp) {
        /* logit rows are absolute token rows (d_rows) */
        size_t R0 = (size_t)r0;
        float *xs = f->xs + R0 * (size_t)c->dim;
        K(LKV_KERN_CALL(be, gather_rows, xs, f->x, f->d_rows + r0, n_rows,
                        c->dim));
        K(LKV_KERN_CALL(be, rmsnorm, xs, xs, m->out_norm.data,
                        m->out_norm.dtype, n_rows, c->dim, c->norm_eps));
        K(LKV_KERN_CALL(be, matmul, f->logits + R0 * (size_t)c->vocab_size,
                        xs, m->output.data, m->output.dtype, NULL, n_rows,
                        c->dim, c->vocab_size));
    }
    return LKV_OK;
}

lkv_status_t lkv_fwd_run(lkv_fwd_t *f, const lkv_fwd_batch_t *b,
                         int *n_rows_p)
{
    const lkv_model_t        *m  = f->m;
    const lkv_model_config_t *c  = &m->cfg;
    const lkv_shard_t        *sh = &m->shard;
    int                       n, n_rows;

    f->n_rows = 0;
    K(prepare(f, b, &n, &n_rows));

    /* micro-batches: one per pipeline stage (host backends), split by
     * sequences at even token counts; a single pass otherwise */
    int n_mb = 1;
    if (sh->pp > 1 && f->on_host) {
        n_mb = sh->pp < b->n_seqs ? sh->pp : b->n_seqs;
    }
    int s0 = 0, r0 = 0;
    for (int mb = 0; mb < n_mb; mb++) {
        int s1 = b->n_seqs;
        if (mb + 1 < n_mb) {
            /* end where the token count passes (mb+1)/n_mb of the batch,
             * leaving at least one sequence for each later micro-batch */
            long goal = (long)n * (mb + 1) / n_mb;
            s1        = s0 + 1;
            while (s1 < b->n_seqs - (n_mb - mb - 1) &&
                   f->h_qstart[s1] < goal) {
                s1++;
            }
        }
        K(run_pass(f, b, s0, s1, r0, mb == 0, mb + 1 == n_mb));
        for (int s = s0; s < s1; s++) {
            r0 += b->seqs[s].n_logits;
        }
        s0 = s1;
    }
    if (n_rows > 0 && sh->pp > 1) {
        /* every stage samples the same tokens from the last stage's logits */
        K(lkv_comm_pp_bcast_from_last(m->comm, f->logits,
                                      (size_t)n_rows * (size_t)c->vocab_size));
    }
    f->n_rows = n_rows;
    *n_rows_p = n_rows;
    return LKV_OK;
}

lkv_status_t lkv_fwd_logits_download(lkv_fwd_t *f, int row0, int n,
                                     float *host)
{
    size_t vocab = (size_t)f->m->cfg.vocab_size;

    if (row0 < 0 || n < 0 || row0 + n > f->n_rows || host == NULL) {
        LKV_LOG_ERROR("logit rows %d..%d requested, the last pass produced %d",
                      row0, row0 + n - 1, f->n_rows);
        return LKV_ERR_INVALID;
    }
    if (f->be->ops->sync != NULL) {
        K(f->be->ops->sync(f->be, LKV_KERN_QUEUE_COMPUTE));
    }
    return LKV_KERN_CALL(f->be, mem_download, host,
                         f->logits + (size_t)row0 * vocab,
                         (size_t)n * vocab * sizeof(float));
}
