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

/* Biases go to the backend as f32 whatever their dtype in the file. */
static lkv_status_t bias(lkv_model_t *m, const lkv_tensor_t *t,
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

    const lkv_model_config_t *c   = &m->cfg;
    int64_t                   qd  = (int64_t)c->n_heads * c->head_dim;
    int64_t                   kvd = (int64_t)c->n_kv_heads * c->head_dim;

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
    for (int l = 0; l < c->n_layers; l++) {
        const lkv_layer_tensors_t *lt = &t->layers[l];
        lkv_layer_weights_t       *lw = &m->layers[l];

        LKV_CHECK_GOTO(weight(m, &lt->attn_norm, "attn_norm", l, 1, c->dim,
                              &lw->attn_norm),
                       st, fail);
        LKV_CHECK_GOTO(weight(m, &lt->wq, "wq", l, qd, c->dim, &lw->wq), st,
                       fail);
        LKV_CHECK_GOTO(weight(m, &lt->wk, "wk", l, kvd, c->dim, &lw->wk), st,
                       fail);
        LKV_CHECK_GOTO(weight(m, &lt->wv, "wv", l, kvd, c->dim, &lw->wv), st,
                       fail);
        LKV_CHECK_GOTO(bias(m, &lt->bq, "bq", l, qd, &lw->bq), st, fail);
        LKV_CHECK_GOTO(bias(m, &lt->bk, "bk", l, kvd, &lw->bk), st, fail);
        LKV_CHECK_GOTO(bias(m, &lt->bv, "bv", l, kvd, &lw->bv), st, fail);
        LKV_CHECK_GOTO(weight(m, &lt->wo, "wo", l, c->dim, qd, &lw->wo), st,
                       fail);
        LKV_CHECK_GOTO(weight(m, &lt->ffn_norm, "ffn_norm", l, 1, c->dim,
                              &lw->ffn_norm),
                       st, fail);
        LKV_CHECK_GOTO(weight(m, &lt->w_gate, "w_gate", l, c->hidden_dim,
                              c->dim, &lw->w_gate),
                       st, fail);
        LKV_CHECK_GOTO(weight(m, &lt->w_up, "w_up", l, c->hidden_dim, c->dim,
                              &lw->w_up),
                       st, fail);
        LKV_CHECK_GOTO(weight(m, &lt->w_down, "w_down", l, c->dim,
                              c->hidden_dim, &lw->w_down),
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
