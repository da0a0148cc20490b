/* model.c - model weights on a backend; see model.h. Single-threaded setup. */
#define LKV_LOG_MODULE "model"

#include "worker/model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

lkv_status_t lkv_model_rope_inv_freq(const lkv_model_config_t *cfg,
                                     float *inv_freq)
{
    int rd = cfg->rope_dim;

    if (rd <= 0 || (rd & 1) || rd > cfg->head_dim || !(cfg->rope_theta > 0)) {
        LKV_LOG_ERROR("invalid rope config: rope_dim %d (head_dim %d), "
                      "rope_theta %g",
                      rd, cfg->head_dim, (double)cfg->rope_theta);
        return LKV_ERR_INVALID;
    }
    for (int i = 0; i < rd / 2; i++) {
        /* HF: 1 / base ** (arange(0, dim, 2).float() / dim), in float32 */
        float expo  = (float)(2 * i) / (float)rd;
        inv_freq[i] = (float)(1.0 / pow((double)cfg->rope_theta, (double)expo));
    }
    if (cfg->rope_scaling.type == LKV_ROPE_SCALING_LLAMA3) {
        double factor = cfg->rope_scaling.factor;
        double lo     = cfg->rope_scaling.low_freq_factor;
        double hi     = cfg->rope_scaling.high_freq_factor;
        double old    = cfg->rope_scaling.original_max_pos;

        if (!(factor > 0) || !(lo > 0) || !(hi > lo) || !(old > 0)) {
            LKV_LOG_ERROR("invalid llama3 rope_scaling: factor %g, "
                          "low_freq_factor %g, high_freq_factor %g, "
                          "original_max_position_embeddings %g",
                          factor, lo, hi, old);
            return LKV_ERR_INVALID;
        }
        double low_wavelen  = old / lo;
        double high_wavelen = old / hi;
        for (int i = 0; i < rd / 2; i++) {
            double f       = inv_freq[i];
            double wavelen = 2.0 * M_PI / f;
            double out;
            if (wavelen > low_wavelen) {
                out = f / factor;
            } else if (wavelen < high_wavelen) {
                out = f;
            } else {
                double smooth = (old / wavelen - lo) / (hi - lo);
                out = (1.0 - smooth) * f / factor + smooth * f;
            }
            inv_freq[i] = (float)out;
        }
    }
    return LKV_OK;
}

static lkv_status_t own(lkv_model_t *m, void *p)
{
    if (m->n_owned == m->cap_owned) {
        int    cap = m->cap_owned ? m->cap_owned * 2 : 64;
        void **o   = realloc(m->owned, (size_t)cap * sizeof(*o));
        if (o == NULL) {
            return LKV_ERR_NOMEM;
        }
        m->owned     = o;
        m->cap_owned = cap;
    }
    m->owned[m->n_owned++] = p;
    return LKV_OK;
}

/* Put `bytes` of host memory on the backend (no copy on host backends). */
static lkv_status_t place(lkv_model_t *m, const void *host, size_t bytes,
                          const void **dst_p)
{
    void        *d;
    lkv_status_t st;

    if (m->on_host) {
        *dst_p = host;
        return LKV_OK;
    }
    st = LKV_KERN_CALL(m->be, mem_alloc, bytes, &d);
    if (st != LKV_OK) {
        LKV_LOG_ERROR("cannot allocate %zu bytes of backend memory for "
                      "weights: %s",
                      bytes, lkv_status_str(st));
        return st;
    }
    st = own(m, d);
    if (st != LKV_OK) {
        m->be->ops->mem_free(m->be, d);
        return st;
    }
    st = LKV_KERN_CALL(m->be, mem_upload, d, host, bytes);
    if (st != LKV_OK) {
        LKV_LOG_ERROR("uploading %zu bytes of weights failed: %s", bytes,
                      lkv_status_str(st));
        return st;
    }
    *dst_p = d;
    return LKV_OK;
}

static lkv_status_t weight(lkv_model_t *m, const lkv_tensor_t *t,
                           const char *name, int layer, int64_t rows,
                           int64_t cols, lkv_weight_t *w)
{
    if (t->data == NULL || t->rows != rows || t->cols != cols) {
        LKV_LOG_ERROR("tensor %s of layer %d has shape (%lld, %lld), "
                      "expected (%lld, %lld)%s",
                      name, layer, (long long)t->rows, (long long)t->cols,
                      (long long)rows, (long long)cols,
                      t->data == NULL ? " (missing)" : "");
        return LKV_ERR_INVALID;
    }
    size_t bytes = (size_t)rows * (size_t)cols * lkv_dtype_size(t->dtype);
    w->dtype     = t->dtype;
    m->weight_bytes += bytes;
    return place(m, t->data, bytes, &w->data);
}

/* Rows [r0, r0 + nr) of a (rows, cols) tensor: contiguous, no copy on host
 * backends. The whole tensor when r0 == 0 and nr == rows. */
static lkv_status_t weight_rows(lkv_model_t *m, const lkv_tensor_t *t,
                                const char *name, int layer, int64_t rows,
                                int64_t cols, int64_t r0, int64_t nr,
                                lkv_weight_t *w)
{
    if (r0 == 0 && nr == rows) {
        return weight(m, t, name, layer, rows, cols, w);
    }
    lkv_tensor_t part = *t;
    if (t->data != NULL && t->rows == rows && t->cols == cols) {
        part.data = (const uint8_t *)t->data +
                    (size_t)r0 * (size_t)cols * lkv_dtype_size(t->dtype);
        part.rows = nr;
    }
    return weight(m, &part, name, layer, nr, cols, w);
}

/* Columns [c0, c0 + nc) of a (rows, cols) tensor: gathered into a copy (held
 * by the model). The whole tensor when c0 == 0 and nc == cols. */
static lkv_status_t weight_cols(lkv_model_t *m, const lkv_tensor_t *t,
                                const char *name, int layer, int64_t rows,
                                int64_t cols, int64_t c0, int64_t nc,
                                lkv_weight_t *w)
{
    lkv_status_t st;

    if (c0 == 0 && nc == cols) {
        return weight(m, t, name, layer, rows, cols, w);
    }
    if (t->data == NULL || t->rows != rows || t->cols != cols) {
        return weight(m, t, name, layer, rows, cols, w); /* logs the shape */
    }
    size_t   es  = lkv_dtype_size(t->dtype);
    size_t   rb  = (size_t)nc * es;
    uint8_t *tmp = malloc((size_t)rows * rb);
    if (tmp == NULL) {
        return LKV_ERR_NOMEM;
    }
    for (int64_t r = 0; r < rows; r++) {
        memcpy(tmp + (size_t)r * rb,
               (const uint8_t *)t->data + ((size_t)r * (size_t)cols +
                                           (size_t)c0) * es,
               rb);
    }
    lkv_tensor_t part = *t;
    part.data         = tmp;
    part.cols         = nc;
    st                = weight(m, &part, name, layer, rows, nc, w);
    if (m->on_host && st == LKV_OK) {
        st = own(m, tmp); /* w points into tmp */
        if (st == LKV_OK) {
            return LKV_OK;
        }
    }
    free(tmp); /* uploaded (device) or failed */
    return st;
}

/* Biases go to the backend as f32 whatever their dtype in the file. */
static lkv_status_t bias_all(lkv_model_t *m, const lkv_tensor_t *t,
                             const char *name, int layer, int64_t n,
                             const float **b_p)
{
    float       *tmp = NULL;
    const void  *d;
    lkv_status_t st;

    *b_p = NULL;
    if (t->data == NULL) {
        if (m->cfg.qkv_bias) {
            LKV_LOG_ERROR("bias %s of layer %d is missing but the config "
                          "has qkv_bias",
                          name, layer);
            return LKV_ERR_INVALID;
        }
        return LKV_OK;
    }
    if (t->rows * t->cols != n) {
        LKV_LOG_ERROR("bias %s of layer %d has %lld values, expected %lld",
                      name, layer, (long long)(t->rows * t->cols),
                      (long long)n);
        return LKV_ERR_INVALID;
    }
    m->weight_bytes += (size_t)n * lkv_dtype_size(t->dtype);
    if (t->dtype == LKV_DTYPE_F32) {
        st = place(m, t->data, (size_t)n * sizeof(float), &d);
        if (st == LKV_OK) {
            *b_p = d;
        }
        return st;
    }
    tmp = malloc((size_t)n * sizeof(float));
    if (tmp == NULL) {
        return LKV_ERR_NOMEM;
    }
    const uint16_t *h = t->data;
    for (int64_t i = 0; i < n; i++) {
        tmp[i] = t->dtype == LKV_DTYPE_F16 ? lkv_f16_to_f32(h[i])
                                           : lkv_bf16_to_f32(h[i]);
    }
    if (m->on_host) {
        st = own(m, tmp);
        if (st != LKV_OK) {
            free(tmp);
            return st;
        }
        *b_p = tmp;
        return LKV_OK;
    }
    st = place(m, tmp, (size_t)n * sizeof(float), &d);
    free(tmp);
    if (st == LKV_OK) {
        *b_p = d;
    }
    return st;
}

/* Values [off, off + n) of a bias of n_all values. */
static lkv_status_t bias(lkv_model_t *m, const lkv_tensor_t *t,
                         const char *name, int layer, int64_t n_all,
                         int64_t off, int64_t n, const float **b_p)
{
    if ((off == 0 && n == n_all) || t->data == NULL ||
        t->rows * t->cols != n_all) {
        return bias_all(m, t, name, layer, n_all, b_p);
    }
    lkv_tensor_t part = *t;
    part.data = (const uint8_t *)t->data + (size_t)off * lkv_dtype_size(t->dtype);
    part.rows = 1;
    part.cols = n;
    return bias_all(m, &part, name, layer, n, b_p);
}

static lkv_status_t check_config(const lkv_model_config_t *c)
{
    if (c->dim <= 0 || c->hidden_dim <= 0 || c->n_layers <= 0 ||
        c->n_heads <= 0 || c->n_kv_heads <= 0 || c->head_dim <= 0 ||
        c->vocab_size <= 0 || c->n_heads % c->n_kv_heads != 0) {
        LKV_LOG_ERROR("inconsistent model config: dim %d, hidden_dim %d, "
                      "n_layers %d, n_heads %d, n_kv_heads %d, head_dim %d, "
                      "vocab_size %d",
                      c->dim, c->hidden_dim, c->n_layers, c->n_heads,
                      c->n_kv_heads, c->head_dim, c->vocab_size);
        return LKV_ERR_INVALID;
    }
    return LKV_OK;
}

lkv_status_t lkv_model_create(lkv_kern_backend_t *be,
                              const lkv_model_file_t *mf, lkv_model_t **m_p)
{
    return lkv_model_create_sharded(be, mf, NULL, NULL, m_p);
}

lkv_status_t lkv_model_create_sharded(lkv_kern_backend_t *be,
                                      const lkv_model_file_t *mf,
                                      const lkv_shard_t *shard,
                                      struct lkv_comm *comm,
                                      lkv_model_t **m_p)
{
    lkv_model_t               *m;
    const lkv_model_tensors_t *t;
    lkv_status_t               st;

    if (be == NULL || mf == NULL || m_p == NULL) {
        return LKV_ERR_INVALID;
    }
    m = calloc(1, sizeof(*m));
    if (m == NULL) {
        return LKV_ERR_NOMEM;
    }
    m->be      = be;
    m->mf      = mf;
    m->cfg     = *lkv_model_file_config(mf);
    m->on_host = be->ops == &lkv_kern_cpu_ops;
    t          = lkv_model_file_tensors(mf);
    LKV_CHECK_GOTO(check_config(&m->cfg), st, fail);
    m->shard = shard != NULL ? *shard : lkv_shard_single(&m->cfg);
    m->comm  = comm;

    /* c: the file's (whole-model) config while loading; m->cfg becomes this
     * rank's share at the end */
    lkv_model_config_t        full = m->cfg;
    const lkv_model_config_t *c    = &full;
    const lkv_shard_t        *sh   = &m->shard;
    int64_t                   qd   = (int64_t)c->n_heads * c->head_dim;
    int64_t                   kvd  = (int64_t)c->n_kv_heads * c->head_dim;
    int64_t                   hd   = c->head_dim;
    int64_t                   q0 = sh->q_head0 * hd, nq = sh->n_q_heads * hd;
    int64_t                   k0 = sh->kv_head0 * hd, nk = sh->n_kv_heads * hd;
    int64_t                   f0 = sh->ff0, nf = sh->n_ff;

    if (sh->layer0 < 0 || sh->layer1 > c->n_layers ||
        sh->layer0 >= sh->layer1 || q0 + nq > qd || k0 + nk > kvd ||
        f0 + nf > c->hidden_dim || nq <= 0 || nk <= 0 || nf <= 0) {
        LKV_LOG_ERROR("shard does not fit the model: layers %d..%d of %d, "
                      "query heads %d+%d, kv heads %d+%d, mlp columns "
                      "%d+%d",
                      sh->layer0, sh->layer1 - 1, c->n_layers, sh->q_head0,
                      sh->n_q_heads, sh->kv_head0, sh->n_kv_heads, sh->ff0,
                      sh->n_ff);
        st = LKV_ERR_INVALID;
        goto fail;
    }

    LKV_CHECK_GOTO(weight(m, &t->tok_embd, "tok_embd", -1, c->vocab_size,
                          c->dim, &m->tok_embd),
                   st, fail);
    LKV_CHECK_GOTO(weight(m, &t->out_norm, "out_norm", -1, 1, c->dim,
                          &m->out_norm),
                   st, fail);
    if (t->output.data == t->tok_embd.data || t->output.data == NULL) {
        m->output = m->tok_embd; /* tied: read once per pass, counted once */
    } else {
        LKV_CHECK_GOTO(weight(m, &t->output, "output", -1, c->vocab_size,
                              c->dim, &m->output),
                       st, fail);
    }
    m->layers = calloc((size_t)c->n_layers, sizeof(*m->layers));
    if (m->layers == NULL) {
        st = LKV_ERR_NOMEM;
        goto fail;
    }
    for (int l = sh->layer0; l < sh->layer1; l++) {
        const lkv_layer_tensors_t *lt = &t->layers[l];
        lkv_layer_weights_t       *lw = &m->layers[l];

        LKV_CHECK_GOTO(weight(m, &lt->attn_norm, "attn_norm", l, 1, c->dim,
                              &lw->attn_norm),
                       st, fail);
        LKV_CHECK_GOTO(weight_rows(m, &lt->wq, "wq", l, qd, c->dim, q0, nq,
                                   &lw->wq),
                       st, fail);
        LKV_CHECK_GOTO(weight_rows(m, &lt->wk, "wk", l, kvd, c->dim, k0, nk,
                                   &lw->wk),
                       st, fail);
        LKV_CHECK_GOTO(weight_rows(m, &lt->wv, "wv", l, kvd, c->dim, k0, nk,
                                   &lw->wv),
                       st, fail);
        LKV_CHECK_GOTO(bias(m, &lt->bq, "bq", l, qd, q0, nq, &lw->bq), st,
                       fail);
        LKV_CHECK_GOTO(bias(m, &lt->bk, "bk", l, kvd, k0, nk, &lw->bk), st,
                       fail);
        LKV_CHECK_GOTO(bias(m, &lt->bv, "bv", l, kvd, k0, nk, &lw->bv), st,
                       fail);
        LKV_CHECK_GOTO(weight_cols(m, &lt->wo, "wo", l, c->dim, qd, q0, nq,
                                   &lw->wo),
                       st, fail);
        LKV_CHECK_GOTO(weight(m, &lt->ffn_norm, "ffn_norm", l, 1, c->dim,
                              &lw->ffn_norm),
                       st, fail);
        LKV_CHECK_GOTO(weight_rows(m, &lt->w_gate, "w_gate", l, c->hidden_dim,
                                   c->dim, f0, nf, &lw->w_gate),
                       st, fail);
        LKV_CHECK_GOTO(weight_rows(m, &lt->w_up, "w_up", l, c->hidden_dim,
                                   c->dim, f0, nf, &lw->w_up),
                       st, fail);
        LKV_CHECK_GOTO(weight_cols(m, &lt->w_down, "w_down", l, c->dim,
                                   c->hidden_dim, f0, nf, &lw->w_down),
                       st, fail);
    }

    m->inv_freq_host = calloc((size_t)(c->rope_dim > 0 ? c->rope_dim : 2),
                              sizeof(float));
    if (m->inv_freq_host == NULL) {
        st = LKV_ERR_NOMEM;
        goto fail;
    }
    if (t->rope_freqs.data != NULL) {
        /* GGUF: llama3 scaling baked into per-frequency divisors */
        lkv_model_config_t plain = *c;
        plain.rope_scaling.type  = LKV_ROPE_SCALING_NONE;
        if (t->rope_freqs.dtype != LKV_DTYPE_F32 ||
            t->rope_freqs.rows * t->rope_freqs.cols != c->rope_dim / 2) {
            LKV_LOG_ERROR("rope_freqs tensor has %lld %s values, expected "
                          "%d f32",
                          (long long)(t->rope_freqs.rows * t->rope_freqs.cols),
                          lkv_dtype_name(t->rope_freqs.dtype),
                          c->rope_dim / 2);
            st = LKV_ERR_INVALID;
            goto fail;
        }
        LKV_CHECK_GOTO(lkv_model_rope_inv_freq(&plain, m->inv_freq_host), st,
                       fail);
        const float *div = t->rope_freqs.data;
        for (int i = 0; i < c->rope_dim / 2; i++) {
            m->inv_freq_host[i] /= div[i];
        }
    } else {
        LKV_CHECK_GOTO(lkv_model_rope_inv_freq(c, m->inv_freq_host), st,
                       fail);
    }
    {
        const void *d;
        LKV_CHECK_GOTO(place(m, m->inv_freq_host,
                             (size_t)(c->rope_dim / 2) * sizeof(float), &d),
                       st, fail);
        m->inv_freq = d;
    }
    m->cfg.n_heads    = sh->n_q_heads;
    m->cfg.n_kv_heads = sh->n_kv_heads;
    m->cfg.hidden_dim = sh->n_ff;
    *m_p = m;
    return LKV_OK;

fail:
    lkv_model_destroy(&m);
    return st;
}

void lkv_model_destroy(lkv_model_t **m_p)
{
    lkv_model_t *m;

    if (m_p == NULL || *m_p == NULL) {
        return;
    }
    m = *m_p;
    for (int i = 0; i < m->n_owned; i++) {
        if (m->on_host) {
            free(m->owned[i]);
        } else {
            m->be->ops->mem_free(m->be, m->owned[i]);
        }
    }
    free(m->owned);
    free(m->layers);
    free(m->inv_freq_host);
    free(m);
    *m_p = NULL;
}

size_t lkv_model_block_bytes(const lkv_model_t *m, int block_size,
                             lkv_dtype_t kv_dtype)
{
    return 2u * (size_t)block_size * (size_t)m->cfg.n_kv_heads *
           (size_t)m->cfg.head_dim * lkv_dtype_size(kv_dtype);
}
