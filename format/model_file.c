/* model_file.c - open a model file by path (format dispatch), own its
 * mappings and buffers, and validate the config against the tensors.
 *
 * Threading: open/close on one thread; an open model file is immutable.
 */
#define LKV_LOG_MODULE "format"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "format/fmt_impl.h"

bool fmt_ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

lkv_status_t fmt_mf_new(const char *path, const char *format,
                        lkv_model_file_t **mf_p)
{
    lkv_model_file_t *mf = calloc(1, sizeof(*mf));
    if (mf == NULL) {
        return LKV_ERR_NOMEM;
    }
    mf->path = strdup(path);
    if (mf->path == NULL) {
        free(mf);
        return LKV_ERR_NOMEM;
    }
    snprintf(mf->format, sizeof(mf->format), "%s", format);
    lkv_model_config_t *c = &mf->cfg;
    snprintf(c->arch, sizeof(c->arch), "llama");
    c->norm_eps                      = 1e-5f;
    c->rope_theta                    = 10000.0f;
    c->rope_style                    = LKV_ROPE_ADJACENT;
    c->rope_scaling.type             = LKV_ROPE_SCALING_NONE;
    c->rope_scaling.factor           = 1.0f;
    c->rope_scaling.low_freq_factor  = 1.0f;
    c->rope_scaling.high_freq_factor = 4.0f;
    c->bos_id                        = -1;
    c->eos_id                        = -1;
    *mf_p                            = mf;
    return LKV_OK;
}

static bool is_builtin(const char *path)
{
    return strncmp(path, LKV_BUILTIN_PREFIX, strlen(LKV_BUILTIN_PREFIX)) == 0;
}

lkv_status_t fmt_mf_map(lkv_model_file_t *mf, const char *path,
                        const uint8_t **data_p, size_t *len_p)
{
    if (is_builtin(path)) {
        return fmt_builtin_model(path, data_p, len_p);
    }
    if (mf->n_maps >= FMT_MAX_MAPS) {
        LKV_LOG_ERROR("%s: too many files to map (max %d)", path,
                      FMT_MAX_MAPS);
        return LKV_ERR_UNSUPPORTED;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        LKV_LOG_ERROR("%s: cannot open: %s", path, strerror(e));
        return e == ENOENT ? LKV_ERR_NOTFOUND : LKV_ERR_IO;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        LKV_LOG_ERROR("%s: not a regular file", path);
        close(fd);
        return LKV_ERR_IO;
    }
    size_t len  = (size_t)st.st_size;
    void  *addr = NULL;
    if (len > 0) {
        addr = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (addr == MAP_FAILED) {
            LKV_LOG_ERROR("%s: mmap of %zu bytes failed: %s", path, len,
                          strerror(errno));
            close(fd);
            return LKV_ERR_IO;
        }
    }
    close(fd);
    mf->maps[mf->n_maps].addr = addr;
    mf->maps[mf->n_maps].len  = len;
    mf->n_maps++;
    *data_p = addr;
    *len_p  = len;
    return LKV_OK;
}

lkv_status_t fmt_mf_alloc(lkv_model_file_t *mf, size_t bytes, void **p)
{
    if (mf->n_bufs == mf->cap_bufs) {
        int    cap = mf->cap_bufs ? mf->cap_bufs * 2 : 16;
        void **nb  = realloc(mf->bufs, (size_t)cap * sizeof(*nb));
        if (nb == NULL) {
            return LKV_ERR_NOMEM;
        }
        mf->bufs     = nb;
        mf->cap_bufs = cap;
    }
    void *b = calloc(1, bytes ? bytes : 1);
    if (b == NULL) {
        LKV_LOG_ERROR("%s: out of memory allocating %zu bytes", mf->path,
                      bytes);
        return LKV_ERR_NOMEM;
    }
    mf->bufs[mf->n_bufs++] = b;
    *p                     = b;
    return LKV_OK;
}

lkv_status_t fmt_mf_to_f32(lkv_model_file_t *mf, lkv_tensor_t *t)
{
    if (t->data == NULL || t->dtype == LKV_DTYPE_F32) {
        return LKV_OK;
    }
    size_t n = (size_t)(t->rows * t->cols);
    float *f = NULL;
    LKV_CHECK(fmt_mf_alloc(mf, n * sizeof(float), (void **)&f));
    const uint16_t *h = t->data;
    for (size_t i = 0; i < n; i++) {
        uint16_t v;
        memcpy(&v, h + i, sizeof(v)); /* the source may be unaligned */
        f[i] = t->dtype == LKV_DTYPE_F16 ? lkv_f16_to_f32(v) : lkv_bf16_to_f32(v);
    }
    t->data  = f;
    t->dtype = LKV_DTYPE_F32;
    return LKV_OK;
}

lkv_status_t fmt_mf_align(lkv_model_file_t *mf, lkv_tensor_t *t)
{
    size_t es = lkv_dtype_size(t->dtype);
    if (t->data == NULL || es == 0 || (uintptr_t)t->data % es == 0) {
        return LKV_OK;
    }
    size_t bytes = (size_t)(t->rows * t->cols) * es;
    void  *p     = NULL;
    LKV_CHECK(fmt_mf_alloc(mf, bytes, &p));
    memcpy(p, t->data, bytes);
    t->data = p;
    return LKV_OK;
}

lkv_status_t fmt_read_file(const char *path, char **text_p, size_t *len_p)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        int e = errno;
        LKV_LOG_ERROR("%s: cannot open: %s", path, strerror(e));
        return e == ENOENT ? LKV_ERR_NOTFOUND : LKV_ERR_IO;
    }
    lkv_status_t st  = LKV_OK;
    char        *buf = NULL;
    size_t       len = 0, cap = 0;
    for (;;) {
        if (len + 65536 + 1 > cap) {
            size_t ncap = cap ? cap * 2 : 65536 * 2;
            char  *nb   = realloc(buf, ncap);
            if (nb == NULL) {
                st = LKV_ERR_NOMEM;
                goto out;
            }
            buf = nb;
            cap = ncap;
        }
        size_t n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
        if (n == 0) {
            if (ferror(f)) {
                LKV_LOG_ERROR("%s: read error", path);
                st = LKV_ERR_IO;
            }
            break;
        }
    }
out:
    fclose(f);
    if (st != LKV_OK) {
        free(buf);
        return st;
    }
    buf[len] = '\0';
    *text_p  = buf;
    if (len_p != NULL) {
        *len_p = len;
    }
    return LKV_OK;
}

void fmt_cfg_add_stop(lkv_model_config_t *cfg, int32_t id)
{
    if (id < 0 || cfg->n_stop_ids >= LKV_MAX_STOP_IDS) {
        return;
    }
    for (int i = 0; i < cfg->n_stop_ids; i++) {
        if (cfg->stop_ids[i] == id) {
            return;
        }
    }
    cfg->stop_ids[cfg->n_stop_ids++] = id;
}

static bool is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static void mf_free(lkv_model_file_t *mf)
{
    if (mf == NULL) {
        return;
    }
    lkv_tok_destroy(&mf->tok);
    for (int i = 0; i < mf->n_maps; i++) {
        if (mf->maps[i].addr != NULL) {
            munmap(mf->maps[i].addr, mf->maps[i].len);
        }
    }
    for (int i = 0; i < mf->n_bufs; i++) {
        free(mf->bufs[i]);
    }
    free(mf->bufs);
    free(mf->tensors.layers);
    free(mf->path);
    free(mf);
}

lkv_status_t lkv_model_file_open(const char *path, const char *tokenizer_path,
                                 lkv_model_file_t **mf_p)
{
    if (path == NULL || mf_p == NULL || path[0] == '\0') {
        LKV_LOG_ERROR("model path is empty");
        return LKV_ERR_INVALID;
    }
    const char *format;
    lkv_status_t (*open_fn)(lkv_model_file_t *, const char *, const char *);
    const char *arg = path;
    if (strncmp(path, "dummy:", 6) == 0) {
        format  = "dummy";
        open_fn = fmt_open_dummy;
        arg     = path + 6;
    } else if (is_builtin(path)) {
        format  = "gguf";
        open_fn = fmt_open_gguf;
    } else if (is_dir(path)) {
        format  = "safetensors";
        open_fn = fmt_open_hf;
    } else if (fmt_ends_with(path, ".gguf")) {
        format  = "gguf";
        open_fn = fmt_open_gguf;
    } else if (fmt_ends_with(path, ".bin")) {
        format  = "llama2c";
        open_fn = fmt_open_llama2c;
    } else if (fmt_ends_with(path, "config.json") ||
               fmt_ends_with(path, ".safetensors")) {
        /* a file inside an HF directory: open the directory */
        format  = "safetensors";
        open_fn = fmt_open_hf;
    } else {
        struct stat st;
        if (stat(path, &st) != 0) {
            LKV_LOG_ERROR("%s: no such file or directory", path);
            return LKV_ERR_NOTFOUND;
        }
        /* sniff the magic */
        FILE    *f        = fopen(path, "rb");
        uint8_t  magic[4] = {0};
        if (f != NULL) {
            if (fread(magic, 1, 4, f) != 4) {
                memset(magic, 0, sizeof(magic));
            }
            fclose(f);
        }
        if (memcmp(magic, "GGUF", 4) == 0) {
            format  = "gguf";
            open_fn = fmt_open_gguf;
        } else {
            LKV_LOG_ERROR("%s: unknown model format (expected a .gguf file, "
                          "a llama2.c .bin checkpoint, a Hugging Face "
                          "directory with config.json, or dummy:CONFIG)",
                          path);
            return LKV_ERR_UNSUPPORTED;
        }
    }

    char *dir = NULL;
    if (open_fn == fmt_open_hf && !is_dir(path)) {
        dir = strdup(path);
        if (dir == NULL) {
            return LKV_ERR_NOMEM;
        }
        char *slash = strrchr(dir, '/');
        if (slash != NULL) {
            *slash = '\0';
        } else {
            strcpy(dir, ".");
        }
        arg = dir;
    }

    lkv_model_file_t *mf = NULL;
    lkv_status_t      st = fmt_mf_new(path, format, &mf);
    if (st == LKV_OK) {
        st = open_fn(mf, arg, tokenizer_path);
    }
    if (st == LKV_OK) {
        st = fmt_mf_finish(mf);
    }
    free(dir);
    if (st != LKV_OK) {
        mf_free(mf);
        return st;
    }
    *mf_p = mf;
    return LKV_OK;
}

void lkv_model_file_close(lkv_model_file_t **mf_p)
{
    if (mf_p == NULL || *mf_p == NULL) {
        return;
    }
    mf_free(*mf_p);
    *mf_p = NULL;
}

const lkv_model_config_t *lkv_model_file_config(const lkv_model_file_t *mf)
{
    return &mf->cfg;
}

const lkv_model_tensors_t *lkv_model_file_tensors(const lkv_model_file_t *mf)
{
    return &mf->tensors;
}

const lkv_tokenizer_t *lkv_model_file_tokenizer(const lkv_model_file_t *mf)
{
    return mf->tok;
}

const char *lkv_model_file_format(const lkv_model_file_t *mf)
{
    return mf->format;
}

size_t lkv_model_file_weight_bytes(const lkv_model_file_t *mf)
{
    return mf->weight_bytes;
}

/* ---- validation ---- */

static lkv_status_t check_tensor(const lkv_model_file_t *mf, const char *name,
                                 int layer, const lkv_tensor_t *t,
                                 int64_t rows, int64_t cols, bool optional)
{
    char where[64];
    if (layer >= 0) {
        snprintf(where, sizeof(where), "layer %d %s", layer, name);
    } else {
        snprintf(where, sizeof(where), "%s", name);
    }
    if (t->data == NULL) {
        if (optional) {
            return LKV_OK;
        }
        LKV_LOG_ERROR("%s: tensor %s is missing", mf->path, where);
        return LKV_ERR_FORMAT;
    }
    /* a 1-D tensor may be given as (n, 1) by some writers */
    bool ok = (t->rows == rows && t->cols == cols) ||
              (rows == 1 && t->rows == cols && t->cols == 1);
    if (!ok) {
        LKV_LOG_ERROR("%s: tensor %s has shape (%lld, %lld), expected "
                      "(%lld, %lld) from the config",
                      mf->path, where, (long long)t->rows, (long long)t->cols,
                      (long long)rows, (long long)cols);
        return LKV_ERR_FORMAT;
    }
    if (t->dtype != LKV_DTYPE_F32 && t->dtype != LKV_DTYPE_F16 &&
        t->dtype != LKV_DTYPE_BF16) {
        LKV_LOG_ERROR("%s: tensor %s has an unsupported dtype %d", mf->path,
                      where, (int)t->dtype);
        return LKV_ERR_UNSUPPORTED;
    }
    return LKV_OK;
}

static size_t tensor_bytes(const lkv_tensor_t *t)
{
    if (t->data == NULL) {
        return 0;
    }
    return (size_t)(t->rows * t->cols) * lkv_dtype_size(t->dtype);
}

lkv_status_t fmt_mf_finish(lkv_model_file_t *mf)
{
    lkv_model_config_t *c = &mf->cfg;
    if (c->dim <= 0 || c->hidden_dim <= 0 || c->n_layers <= 0 ||
        c->n_heads <= 0 || c->vocab_size <= 0) {
        LKV_LOG_ERROR("%s: config is incomplete or invalid (dim %d, "
                      "hidden_dim %d, n_layers %d, n_heads %d, vocab %d)",
                      mf->path, c->dim, c->hidden_dim, c->n_layers, c->n_heads,
                      c->vocab_size);
        return LKV_ERR_FORMAT;
    }
    if (c->dim > (1 << 20) || c->hidden_dim > (1 << 22) ||
        c->n_layers > 4096 || c->n_heads > 4096 || c->vocab_size > (1 << 24)) {
        LKV_LOG_ERROR("%s: config values are implausibly large (dim %d, "
                      "hidden_dim %d, n_layers %d, n_heads %d, vocab %d)",
                      mf->path, c->dim, c->hidden_dim, c->n_layers, c->n_heads,
                      c->vocab_size);
        return LKV_ERR_FORMAT;
    }
    if (c->n_kv_heads <= 0) {
        c->n_kv_heads = c->n_heads;
    }
    if (c->n_kv_heads > c->n_heads || c->n_heads % c->n_kv_heads != 0) {
        LKV_LOG_ERROR("%s: n_heads %d is not a multiple of n_kv_heads %d",
                      mf->path, c->n_heads, c->n_kv_heads);
        return LKV_ERR_FORMAT;
    }
    if (c->head_dim <= 0) {
        if (c->dim % c->n_heads != 0) {
            LKV_LOG_ERROR("%s: dim %d is not a multiple of n_heads %d",
                          mf->path, c->dim, c->n_heads);
            return LKV_ERR_FORMAT;
        }
        c->head_dim = c->dim / c->n_heads;
    }
    if (c->head_dim > 4096 || c->head_dim % 2 != 0) {
        LKV_LOG_ERROR("%s: head_dim %d must be even and at most 4096",
                      mf->path, c->head_dim);
        return LKV_ERR_FORMAT;
    }
    if (c->rope_dim <= 0) {
        c->rope_dim = c->head_dim;
    }
    if (c->rope_dim > c->head_dim || c->rope_dim % 2 != 0) {
        LKV_LOG_ERROR("%s: rope dimension %d must be even and <= head_dim %d",
                      mf->path, c->rope_dim, c->head_dim);
        return LKV_ERR_FORMAT;
    }
    if (c->max_seq_len <= 0) {
        c->max_seq_len = 2048;
    }
    if (!(c->norm_eps > 0.0f) || !(c->norm_eps < 1.0f)) {
        LKV_LOG_ERROR("%s: rms norm epsilon %g is out of range (0, 1)",
                      mf->path, (double)c->norm_eps);
        return LKV_ERR_FORMAT;
    }
    if (!(c->rope_theta > 0.0f) || !isfinite(c->rope_theta)) {
        LKV_LOG_ERROR("%s: rope theta %g must be positive", mf->path,
                      (double)c->rope_theta);
        return LKV_ERR_FORMAT;
    }
    if (c->rope_scaling.type == LKV_ROPE_SCALING_LLAMA3 &&
        (!(c->rope_scaling.factor > 0.0f) ||
         !(c->rope_scaling.high_freq_factor > c->rope_scaling.low_freq_factor) ||
         c->rope_scaling.original_max_pos <= 0)) {
        LKV_LOG_ERROR("%s: llama3 rope_scaling needs factor > 0, "
                      "high_freq_factor > low_freq_factor and "
                      "original_max_position_embeddings > 0",
                      mf->path);
        return LKV_ERR_FORMAT;
    }
    if (c->bos_id >= c->vocab_size) {
        c->bos_id = -1;
    }
    if (c->eos_id >= c->vocab_size) {
        c->eos_id = -1;
    }
    for (int i = 0; i < c->n_stop_ids; i++) {
        if (c->stop_ids[i] < 0 || c->stop_ids[i] >= c->vocab_size) {
            LKV_LOG_ERROR("%s: stop id %d is outside the vocabulary (%d)",
                          mf->path, c->stop_ids[i], c->vocab_size);
            return LKV_ERR_FORMAT;
        }
    }
    if (mf->tok != NULL && lkv_tok_vocab_size(mf->tok) > c->vocab_size) {
        LKV_LOG_ERROR("%s: tokenizer has %d tokens but the model's vocabulary "
                      "is %d",
                      mf->path, lkv_tok_vocab_size(mf->tok), c->vocab_size);
        return LKV_ERR_FORMAT;
    }

    lkv_model_tensors_t *t = &mf->tensors;
    if (t->layers == NULL) {
        LKV_LOG_ERROR("%s: no layer tensors", mf->path);
        return LKV_ERR_FORMAT;
    }
    bool same_out = t->output.data == t->tok_embd.data;
    LKV_CHECK(fmt_mf_align(mf, &t->tok_embd));
    LKV_CHECK(fmt_mf_align(mf, &t->out_norm));
    LKV_CHECK(fmt_mf_align(mf, &t->rope_freqs));
    if (same_out) {
        t->output.data = t->tok_embd.data;
    } else {
        LKV_CHECK(fmt_mf_align(mf, &t->output));
    }
    for (int l = 0; l < c->n_layers; l++) {
        lkv_layer_tensors_t *L      = &t->layers[l];
        lkv_tensor_t        *all[] = {&L->attn_norm, &L->wq,       &L->wk,
                                      &L->wv,        &L->bq,       &L->bk,
                                      &L->bv,        &L->wo,       &L->ffn_norm,
                                      &L->w_gate,    &L->w_up,     &L->w_down};
        for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
            LKV_CHECK(fmt_mf_align(mf, all[i]));
        }
    }
    int64_t q_out  = (int64_t)c->n_heads * c->head_dim;
    int64_t kv_out = (int64_t)c->n_kv_heads * c->head_dim;
    LKV_CHECK(check_tensor(mf, "token embedding", -1, &t->tok_embd,
                           c->vocab_size, c->dim, false));
    LKV_CHECK(check_tensor(mf, "output norm", -1, &t->out_norm, 1, c->dim,
                           false));
    if (t->output.data == NULL || c->tied_output) {
        t->output      = t->tok_embd;
        c->tied_output = true;
    }
    LKV_CHECK(check_tensor(mf, "output", -1, &t->output, c->vocab_size, c->dim,
                           false));
    LKV_CHECK(check_tensor(mf, "rope_freqs", -1, &t->rope_freqs, 1,
                           c->rope_dim / 2, true));
    if (t->rope_freqs.data != NULL && t->rope_freqs.dtype != LKV_DTYPE_F32) {
        LKV_LOG_ERROR("%s: rope_freqs must be f32", mf->path);
        return LKV_ERR_UNSUPPORTED;
    }
    size_t bytes = tensor_bytes(&t->tok_embd) + tensor_bytes(&t->out_norm);
    if (!c->tied_output) {
        bytes += tensor_bytes(&t->output);
    }
    bool any_bias = false;
    for (int l = 0; l < c->n_layers; l++) {
        lkv_layer_tensors_t *L = &t->layers[l];
        LKV_CHECK(check_tensor(mf, "attn_norm", l, &L->attn_norm, 1, c->dim,
                               false));
        LKV_CHECK(check_tensor(mf, "wq", l, &L->wq, q_out, c->dim, false));
        LKV_CHECK(check_tensor(mf, "wk", l, &L->wk, kv_out, c->dim, false));
        LKV_CHECK(check_tensor(mf, "wv", l, &L->wv, kv_out, c->dim, false));
        LKV_CHECK(check_tensor(mf, "bq", l, &L->bq, 1, q_out, !c->qkv_bias));
        LKV_CHECK(check_tensor(mf, "bk", l, &L->bk, 1, kv_out, !c->qkv_bias));
        LKV_CHECK(check_tensor(mf, "bv", l, &L->bv, 1, kv_out, !c->qkv_bias));
        LKV_CHECK(check_tensor(mf, "wo", l, &L->wo, c->dim, q_out, false));
        LKV_CHECK(check_tensor(mf, "ffn_norm", l, &L->ffn_norm, 1, c->dim,
                               false));
        LKV_CHECK(check_tensor(mf, "w_gate", l, &L->w_gate, c->hidden_dim,
                               c->dim, false));
        LKV_CHECK(check_tensor(mf, "w_up", l, &L->w_up, c->hidden_dim, c->dim,
                               false));
        LKV_CHECK(check_tensor(mf, "w_down", l, &L->w_down, c->dim,
                               c->hidden_dim, false));
        const lkv_tensor_t *all[] = {&L->attn_norm, &L->wq,     &L->wk,
                                     &L->wv,        &L->bq,     &L->bk,
                                     &L->bv,        &L->wo,     &L->ffn_norm,
                                     &L->w_gate,    &L->w_up,   &L->w_down};
        for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
            bytes += tensor_bytes(all[i]);
        }
        any_bias = any_bias || L->bq.data != NULL;
        /* the kernels take f32 biases */
        const lkv_tensor_t *bias[] = {&L->bq, &L->bk, &L->bv};
        for (int i = 0; i < 3; i++) {
            if (bias[i]->data != NULL && bias[i]->dtype != LKV_DTYPE_F32) {
                LKV_LOG_ERROR("%s: layer %d bias is %s; loaders must convert "
                              "biases to f32",
                              mf->path, l, lkv_dtype_name(bias[i]->dtype));
                return LKV_ERR_INTERNAL;
            }
        }
    }
    if (any_bias) {
        c->qkv_bias = true;
    }
    mf->weight_bytes = bytes;
    if (c->eos_id < 0 && mf->tok != NULL) {
        c->eos_id = lkv_tok_eos(mf->tok);
    }
    if (c->bos_id < 0 && mf->tok != NULL) {
        c->bos_id = lkv_tok_bos(mf->tok);
    }
    if (c->n_stop_ids == 0) {
        fmt_cfg_add_stop(c, c->eos_id);
    }
    return LKV_OK;
}
