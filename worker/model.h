/* model.h - a model file's weights placed on a compute backend, plus what the
 * forward pass precomputes once (RoPE inverse frequencies, f32 biases).
 *
 * On the CPU backend the weight pointers are the model file's host views (no
 * copy; the file must stay open while the model lives). On other backends
 * every tensor is uploaded with mem_upload and owned by the model.
 *
 * Threading: immutable after creation; may be shared by the threads that use
 * the same backend handle.
 */
#ifndef LKV_WORKER_MODEL_H
#define LKV_WORKER_MODEL_H

#include <stdbool.h>
#include <stddef.h>

#include "common/status.h"
#include "format/model_file.h"
#include "kernels/kernels.h"
#include "worker/shard.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One weight on the backend: data is backend memory (NULL if absent). */
typedef struct {
    const void *data;
    lkv_dtype_t dtype;
} lkv_weight_t;

typedef struct {
    lkv_weight_t attn_norm, wq, wk, wv, wo;
    const float *bq, *bk, *bv; /* f32 biases in backend memory, or NULL */
    lkv_weight_t ffn_norm, w_gate, w_up, w_down;
} lkv_layer_weights_t;

typedef struct lkv_model {
    lkv_model_config_t   cfg;
    lkv_kern_backend_t  *be;        /* borrowed */
    const lkv_model_file_t *mf;     /* borrowed; must outlive the model */
    lkv_weight_t         tok_embd;  /* (vocab, dim) */
    lkv_weight_t         out_norm;  /* (dim) */
    lkv_weight_t         output;    /* (vocab, dim) */
    lkv_layer_weights_t *layers;    /* (n_layers) */
    const float         *inv_freq;  /* (rope_dim / 2) backend memory */
    float               *inv_freq_host; /* (rope_dim / 2) host copy */
    size_t               weight_bytes;  /* bytes read per forward pass */
    /* private: allocations to release on destroy */
    void               **owned;
    int                  n_owned;
    int                  cap_owned;
    bool                 on_host;   /* backend memory is host memory */
    /* tensor/pipeline parallelism (worker/shard.h, worker/comm.h): cfg's
     * n_heads, n_kv_heads and hidden_dim are this rank's share; n_layers
     * stays the model's, layers[] outside [layer0, layer1) are empty */
    lkv_shard_t          shard;
    struct lkv_comm     *comm;      /* borrowed; NULL: single process */
} lkv_model_t;

/* Compute the RoPE inverse frequencies of cfg into inv_freq (rope_dim / 2
 * floats): theta^(-2i/rope_dim), then llama3 rope_scaling as in HF
 * transformers (_compute_llama3_parameters) when cfg asks for it.
 * Errors: LKV_ERR_INVALID (rope_dim odd or <= 0, bad scaling factors). */
lkv_status_t lkv_model_rope_inv_freq(const lkv_model_config_t *cfg,
                                     float *inv_freq);

/* Place mf's weights on be. Both are borrowed and must outlive the model.
 * Errors: LKV_ERR_INVALID (inconsistent config or a tensor with the wrong
 * shape), LKV_ERR_NOMEM, LKV_ERR_DEVICE (upload failed). */
lkv_status_t lkv_model_create(lkv_kern_backend_t *be,
                              const lkv_model_file_t *mf, lkv_model_t **m_p);
void         lkv_model_destroy(lkv_model_t **m_p);

/* As lkv_model_create, holding only the heads, MLP columns and layers of
 * shard (lkv_shard_plan) and using comm (borrowed, may be NULL when shard is
 * tp 1 x pp 1) for the forward pass's all-reduces and stage transfers.
 * shard NULL = the whole model. Errors as lkv_model_create. */
lkv_status_t lkv_model_create_sharded(lkv_kern_backend_t *be,
                                      const lkv_model_file_t *mf,
                                      const lkv_shard_t *shard,
                                      struct lkv_comm *comm,
                                      lkv_model_t **m_p);

/* Bytes of one layer-block (K and V of block_size tokens of one layer). */
size_t lkv_model_block_bytes(const lkv_model_t *m, int block_size,
                             lkv_dtype_t kv_dtype);

#ifdef __cplusplus
}
#endif

#endif /* LKV_WORKER_MODEL_H */
