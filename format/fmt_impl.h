/* fmt_impl.h - format/ private: the model-file object shared by the loaders
 * (gguf.c, llama2c.c, safetensors.c, dummy.c) and small helpers (file
 * mapping, owned buffers, validation).
 *
 * Threading: used only while a model file is being opened (one thread).
 */
#ifndef LKV_FORMAT_FMT_IMPL_H
#define LKV_FORMAT_FMT_IMPL_H

#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "format/model_file.h"
#include "format/tokenizer.h"

#define FMT_MAX_MAPS 64

typedef struct {
    void  *addr;
    size_t len;
} fmt_map_t;

struct lkv_model_file {
    char                format[16];
    char               *path;
    lkv_model_config_t  cfg;
    lkv_model_tensors_t tensors;
    lkv_tokenizer_t    *tok;
    fmt_map_t           maps[FMT_MAX_MAPS];
    int                 n_maps;
    void              **bufs; /* malloc'd blocks owned by the model file */
    int                 n_bufs;
    int                 cap_bufs;
    size_t              weight_bytes;
};

/* Allocate an empty model file with defaults (bos/eos -1, eps 1e-5, ...). */
lkv_status_t fmt_mf_new(const char *path, const char *format,
                        lkv_model_file_t **mf_p);

/* mmap `path` read-only into mf (kept until close). Empty files map to a
 * NULL address with len 0; "builtin:NAME" gives the built-in model's bytes.
 * Errors: NOTFOUND, IO, NOMEM (too many maps). */
lkv_status_t fmt_mf_map(lkv_model_file_t *mf, const char *path,
                        const uint8_t **data_p, size_t *len_p);

/* The bytes of built-in model `path` ("builtin:NAME"; the build's
 * LKV_EMBED_MODEL), borrowed for the life of the process. NOTFOUND (logged,
 * naming what this build has) for any other name. */
lkv_status_t fmt_builtin_model(const char *path, const uint8_t **data_p,
                               size_t *len_p);

/* calloc bytes owned by mf (freed at close). */
lkv_status_t fmt_mf_alloc(lkv_model_file_t *mf, size_t bytes, void **p);

/* Replace *t (a host view in f16/bf16/f32) with an f32 copy owned by mf
 * (biases: the kernels take f32 biases). No-op for absent tensors. */
lkv_status_t fmt_mf_to_f32(lkv_model_file_t *mf, lkv_tensor_t *t);

/* If t->data is not aligned to its element size (possible with odd GGUF
 * alignments or safetensors header lengths), replace it with an aligned
 * copy owned by mf, so kernels never do misaligned loads. */
lkv_status_t fmt_mf_align(lkv_model_file_t *mf, lkv_tensor_t *t);

/* Read a whole small file into a NUL-terminated malloc'd buffer (caller
 * frees). Errors: NOTFOUND, IO, NOMEM. */
lkv_status_t fmt_read_file(const char *path, char **text_p, size_t *len_p);

/* Check the config for sanity, derive defaults (head_dim, rope_dim, stop
 * ids) and verify every tensor's shape against it; logs one error naming
 * path and the first problem. Computes weight_bytes. */
lkv_status_t fmt_mf_finish(lkv_model_file_t *mf);

/* Add id to the stop list unless it is negative or already there. */
void fmt_cfg_add_stop(lkv_model_config_t *cfg, int32_t id);

/* The loaders: fill mf (config, tensors, tokenizer). They log their own
 * errors. tok_path may be NULL. */
lkv_status_t fmt_open_gguf(lkv_model_file_t *mf, const char *path,
                           const char *tok_path);
lkv_status_t fmt_open_llama2c(lkv_model_file_t *mf, const char *path,
                              const char *tok_path);
lkv_status_t fmt_open_hf(lkv_model_file_t *mf, const char *dir,
                         const char *tok_path);
lkv_status_t fmt_open_dummy(lkv_model_file_t *mf, const char *spec,
                            const char *tok_path);

/* Parse an HF config.json text into cfg (hf_config.c). `what` names the
 * source for errors. dtype_p gets torch_dtype (f32 when absent), seed_p
 * gets "seed" (0 when absent); either may be NULL. */
lkv_status_t fmt_hf_config_parse(const char *text, const char *what,
                                 lkv_model_config_t *cfg, lkv_dtype_t *dtype_p,
                                 uint64_t *seed_p);

/* double -> float / token id without undefined behaviour on values from a
 * file (out of range: +-inf / -1; NaN stays NaN / becomes -1). */
static inline float fmt_to_float(double d)
{
    if (d > FLT_MAX) {
        return INFINITY;
    }
    if (d < -FLT_MAX) {
        return -INFINITY;
    }
    return (float)d;
}

static inline int32_t fmt_to_id(double d)
{
    return (d >= 0.0 && d < 2147483647.0) ? (int32_t)d : -1;
}

/* True when s ends with suffix. */
bool fmt_ends_with(const char *s, const char *suffix);

#endif /* LKV_FORMAT_FMT_IMPL_H */
