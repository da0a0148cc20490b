/* llama2c.c - llama2.c "legacy" (version 0) checkpoint loader.
 *
 * Layout (little-endian): int32 dim, hidden_dim, n_layers, n_heads,
 * n_kv_heads, vocab_size, seq_len; then float32 arrays without padding:
 * token_embedding (vocab, dim), rms_att (L, dim), wq (L, dim, dim),
 * wk (L, kv_dim, dim), wv (L, kv_dim, dim), wo (L, dim, dim), rms_ffn (L, dim),
 * w1 (L, hidden, dim), w2 (L, dim, hidden), w3 (L, hidden, dim),
 * rms_final (dim), freq_cis_real/imag (seq_len, head_size/2) each (unused),
 * then wcls (vocab, dim) when vocab_size was negative (unshared classifier).
 * Tensor views point into the mmapped file. RoPE is adjacent-pair.
 *
 * The tokenizer is tokenizer_path, else tok<vocab>.bin or tokenizer.bin next
 * to the checkpoint.
 *
 * Threading: called once from lkv_model_file_open().
 */
#define LKV_LOG_MODULE "format"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "format/fmt_impl.h"

static lkv_tensor_t f32_view(const float *p, int64_t rows, int64_t cols)
{
    return (lkv_tensor_t){.data = p, .dtype = LKV_DTYPE_F32, .rows = rows,
                          .cols = cols};
}

/* find a tokenizer next to the checkpoint; out gets a malloc'd path */
static char *sibling_tokenizer(const char *path, int vocab)
{
    const char *slash = strrchr(path, '/');
    size_t      dlen  = slash ? (size_t)(slash - path + 1) : 0;
    char        name[64];
    const char *cands[2] = {name, "tokenizer.bin"};
    snprintf(name, sizeof(name), "tok%d.bin", vocab);
    for (int i = 0; i < 2; i++) {
        size_t n = dlen + strlen(cands[i]) + 1;
        char  *p = malloc(n);
        if (p == NULL) {
            return NULL;
        }
        memcpy(p, path, dlen);
        strcpy(p + dlen, cands[i]);
        if (access(p, R_OK) == 0) {
            return p;
        }
        free(p);
    }
    return NULL;
}

lkv_status_t fmt_open_llama2c(lkv_model_file_t *mf, const char *path,
                              const char *tok_path)
{
    const uint8_t *data;
    size_t         len;
    LKV_CHECK(fmt_mf_map(mf, path, &data, &len));
    if (len >= 4 && memcmp(data, "ak42", 4) == 0) {
        LKV_LOG_ERROR("%s: llama2.c version-1/2 export (magic ak42) is not "
                      "supported; export with --version 0 (legacy) or use "
                      "GGUF",
                      path);
        return LKV_ERR_UNSUPPORTED;
    }
    if (len < 7 * sizeof(int32_t)) {
        LKV_LOG_ERROR("%s: truncated llama2.c checkpoint (%zu bytes, header "
                      "needs 28)",
                      path, len);
        return LKV_ERR_FORMAT;
    }
    int32_t h[7];
    memcpy(h, data, sizeof(h));
    int dim = h[0], hidden = h[1], n_layers = h[2], n_heads = h[3];
    int n_kv = h[4], vocab = h[5], seq_len = h[6];
    bool shared = vocab > 0;
    if (vocab < 0) {
        vocab = -vocab;
    }
    if (dim <= 0 || hidden <= 0 || n_layers <= 0 || n_heads <= 0 ||
        n_kv <= 0 || vocab <= 0 || seq_len <= 0 || dim % n_heads != 0 ||
        n_heads % n_kv != 0 || dim > (1 << 20) || hidden > (1 << 22) ||
        n_layers > 4096 || vocab > (1 << 24) || seq_len > (1 << 24)) {
        LKV_LOG_ERROR("%s: invalid llama2.c header (dim %d, hidden %d, layers "
                      "%d, heads %d, kv_heads %d, vocab %d, seq_len %d)",
                      path, h[0], h[1], h[2], h[3], h[4], h[5], h[6]);
        return LKV_ERR_FORMAT;
    }
    int64_t head   = dim / n_heads;
    int64_t kv_dim = head * n_kv;
    int64_t L      = n_layers;
    /* element counts of each array, in file order */
    int64_t n_emb = (int64_t)vocab * dim, n_rms = L * dim;
    int64_t n_wq = L * dim * dim, n_wk = L * kv_dim * dim;
    int64_t n_w1 = L * hidden * dim, n_fc = (int64_t)seq_len * (head / 2);
    int64_t total = n_emb + n_rms + n_wq + 2 * n_wk + n_wq + n_rms + 3 * n_w1 +
                    dim + 2 * n_fc + (shared ? 0 : n_emb);
    size_t expect = 28 + (size_t)total * 4;
    if (len != expect) {
        LKV_LOG_ERROR("%s: llama2.c checkpoint is %zu bytes but its header "
                      "(dim %d, layers %d, vocab %d, seq_len %d, %s "
                      "classifier) implies %zu; the file is %s",
                      path, len, dim, n_layers, vocab, seq_len,
                      shared ? "shared" : "unshared", expect,
                      len < expect ? "truncated" : "not a legacy checkpoint "
                                                   "or has trailing data");
        return LKV_ERR_FORMAT;
    }
    const float *p = (const float *)(data + 28);
    const float *emb = p;
    p += n_emb;
    const float *rms_att = p;
    p += n_rms;
    const float *wq = p;
    p += n_wq;
    const float *wk = p;
    p += n_wk;
    const float *wv = p;
    p += n_wk;
    const float *wo = p;
    p += n_wq;
    const float *rms_ffn = p;
    p += n_rms;
    const float *w1 = p;
    p += n_w1;
    const float *w2 = p;
    p += n_w1;
    const float *w3 = p;
    p += n_w1;
    const float *rms_final = p;
    p += dim;
    p += 2 * n_fc;
    const float *wcls = shared ? emb : p;

    lkv_model_config_t *c = &mf->cfg;
    snprintf(c->arch, sizeof(c->arch), "llama");
    c->dim         = dim;
    c->hidden_dim  = hidden;
    c->n_layers    = n_layers;
    c->n_heads     = n_heads;
    c->n_kv_heads  = n_kv;
    c->head_dim    = (int)head;
    c->vocab_size  = vocab;
    c->max_seq_len = seq_len;
    c->norm_eps    = 1e-5f;
    c->rope_theta  = 10000.0f;
    c->rope_dim    = (int)head;
    c->rope_style  = LKV_ROPE_ADJACENT;
    c->tied_output = shared;
    c->bos_id      = vocab > 1 ? 1 : -1;
    c->eos_id      = vocab > 2 ? 2 : -1;
    /* llama2.c models end a story by predicting BOS */
    fmt_cfg_add_stop(c, c->eos_id);
    fmt_cfg_add_stop(c, c->bos_id);

    lkv_model_tensors_t *t = &mf->tensors;
    t->layers = calloc((size_t)n_layers, sizeof(*t->layers));
    if (t->layers == NULL) {
        return LKV_ERR_NOMEM;
    }
    t->tok_embd = f32_view(emb, vocab, dim);
    t->out_norm = f32_view(rms_final, 1, dim);
    t->output   = f32_view(wcls, vocab, dim);
    for (int l = 0; l < n_layers; l++) {
        lkv_layer_tensors_t *ly = &t->layers[l];
        ly->attn_norm = f32_view(rms_att + l * dim, 1, dim);
        ly->wq        = f32_view(wq + l * dim * dim, dim, dim);
        ly->wk        = f32_view(wk + l * kv_dim * dim, kv_dim, dim);
        ly->wv        = f32_view(wv + l * kv_dim * dim, kv_dim, dim);
        ly->wo        = f32_view(wo + l * dim * dim, dim, dim);
        ly->ffn_norm  = f32_view(rms_ffn + l * dim, 1, dim);
        ly->w_gate    = f32_view(w1 + l * hidden * dim, hidden, dim);
        ly->w_down    = f32_view(w2 + l * hidden * dim, dim, hidden);
        ly->w_up      = f32_view(w3 + l * hidden * dim, hidden, dim);
    }

    char *found = NULL;
    if (tok_path == NULL) {
        found = sibling_tokenizer(path, vocab);
        if (found == NULL) {
            LKV_LOG_ERROR("%s: a llama2.c checkpoint needs its tokenizer.bin; "
                          "pass --tokenizer PATH (none found next to it as "
                          "tok%d.bin or tokenizer.bin)",
                          path, vocab);
            return LKV_ERR_NOTFOUND;
        }
        tok_path = found;
    }
    lkv_status_t st = lkv_tok_load_llama2c(tok_path, vocab, &mf->tok);
    free(found);
    return st;
}
