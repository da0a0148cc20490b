/* model_file.h - open a model on disk as a config, host tensor views and a
 * tokenizer, whatever the file format.
 *
 * Formats (chosen from the path):
 *   *.gguf                 GGUF v3, llama/mistral/qwen2 architectures
 *   DIR/ (config.json)     Hugging Face safetensors directory, single file or
 *                          sharded (model.safetensors.index.json), tokenizer.json
 *   *.bin                  llama2.c checkpoint (legacy version 0); the
 *                          tokenizer is tokenizer_path, else tok<vocab>.bin
 *                          or tokenizer.bin in the same directory
 *   dummy:CONFIG.json      seeded random weights for any HF-style config
 *                          (for performance work; tokenizer is a byte-level
 *                          stand-in: ids 0..255 are bytes, 256 is BOS; see
 *                          format/dummy.c). dummy:NAME for built-ins: tiny,
 *                          110m, llama2-7b, llama2-13b, llama2-70b,
 *                          llama3-8b, mistral-7b, qwen2-7b
 *   builtin:stories260K    the bundled model (models/stories260K), built
 *                          into the binary (LKV_DEFAULT_MODEL: what every
 *                          command loads when given no --model)
 * RoPE: GGUF llama/mistral and llama2.c use adjacent pairs (their Q/K are
 * stored permuted for it); GGUF qwen2 and every HF safetensors model use
 * rotate-half (LKV_ROPE_HALVES), nothing is permuted.
 * Tensor dtypes: F32, F16, BF16 as stored; biases are always f32 (converted
 * at load when needed). GGUF dims are innermost first and are exposed as
 * row-major (rows, cols) like everything else.
 * Weights are mmapped where the file layout allows; tensor views point into
 * the mapping (or into memory owned by the model file) and stay valid until
 * lkv_model_file_close().
 *
 * Every failure logs one error naming the file and the problem (missing,
 * truncated, inconsistent shapes, unsupported dtype) and returns a status;
 * nothing aborts on a bad file.
 *
 * This module (format/) sits below worker/ and coordinator/: the coordinator
 * uses the config and the tokenizer, the worker uses the tensors.
 * Threading: an open model file is immutable and may be shared by threads.
 */
#ifndef LKV_FORMAT_MODEL_FILE_H
#define LKV_FORMAT_MODEL_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "kernels/kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LKV_MAX_STOP_IDS 8

/* The model commands load when given no --model: the bundled stories260K,
 * built into the binary (format/builtin_model.c). */
#define LKV_BUILTIN_PREFIX "builtin:"
#define LKV_DEFAULT_MODEL  "builtin:stories260K"

typedef enum {
    LKV_ROPE_SCALING_NONE   = 0,
    LKV_ROPE_SCALING_LLAMA3 = 1,
} lkv_rope_scaling_type_t;

typedef struct {
    char             arch[32];    /* "llama", "mistral", "qwen2" */
    int              dim;         /* hidden size */
    int              hidden_dim;  /* MLP intermediate size */
    int              n_layers;
    int              n_heads;     /* query heads */
    int              n_kv_heads;  /* key/value heads (GQA when < n_heads) */
    int              head_dim;    /* usually dim / n_heads */
    int              vocab_size;
    int              max_seq_len; /* trained context, tokens */
    float            norm_eps;
    float            rope_theta;
    int              rope_dim;    /* rotated dims per head (<= head_dim) */
    lkv_rope_style_t rope_style;
    struct {
        lkv_rope_scaling_type_t type;
        float                   factor;
        float                   low_freq_factor;
        float                   high_freq_factor;
        int                     original_max_pos;
    } rope_scaling;
    bool    qkv_bias;    /* q/k/v projections have biases (qwen2) */
    bool    tied_output; /* output projection == token embedding */
    int32_t bos_id;      /* -1 when none */
    int32_t eos_id;      /* -1 when none */
    int32_t stop_ids[LKV_MAX_STOP_IDS]; /* generation stops on any of these */
    int     n_stop_ids;
} lkv_model_config_t;

/* Stop ids, per format (the first that applies):
 *   llama2c      eos (2) and bos (1): llama2.c models end a story with BOS.
 *   gguf         eos; tokenizer.ggml.eot_token_id / eom_token_id when set;
 *                bos as well when tokenizer.ggml.model is "llama" and the
 *                file has no tokenizer.chat_template (a base SPM model such
 *                as stories260K, converted from llama2.c).
 *   safetensors  config.json eos_token_id (a number or a list) and
 *                generation_config.json eos_token_id when present.
 *   dummy        none: random weights never "finish"; callers cap tokens.
 */

/* A host view of one weight tensor: row-major (rows, cols); 1-D tensors have
 * rows == 1. data is NULL for tensors the model does not have (biases). */
typedef struct {
    const void *data;
    lkv_dtype_t dtype;
    int64_t     rows;
    int64_t     cols;
} lkv_tensor_t;

typedef struct {
    lkv_tensor_t attn_norm; /* (1, dim) */
    lkv_tensor_t wq;        /* (n_heads*head_dim, dim) */
    lkv_tensor_t wk;        /* (n_kv_heads*head_dim, dim) */
    lkv_tensor_t wv;        /* (n_kv_heads*head_dim, dim) */
    lkv_tensor_t bq, bk, bv;/* (1, out) or absent */
    lkv_tensor_t wo;        /* (dim, n_heads*head_dim) */
    lkv_tensor_t ffn_norm;  /* (1, dim) */
    lkv_tensor_t w_gate;    /* (hidden_dim, dim) */
    lkv_tensor_t w_up;      /* (hidden_dim, dim) */
    lkv_tensor_t w_down;    /* (dim, hidden_dim) */
} lkv_layer_tensors_t;

typedef struct {
    lkv_tensor_t         tok_embd; /* (vocab, dim) */
    lkv_tensor_t         out_norm; /* (1, dim) */
    lkv_tensor_t         output;   /* (vocab, dim); == tok_embd when tied */
    lkv_layer_tensors_t *layers;   /* (n_layers) */
    /* (1, rope_dim/2) f32 per-frequency divisors: GGUF "rope_freqs.weight"
     * (llama.cpp stores Llama-3 rope scaling this way: inv_freq[i] /=
     * rope_freqs[i]). Absent (data NULL) otherwise; then rope_scaling in the
     * config says what to do. */
    lkv_tensor_t         rope_freqs;
} lkv_model_tensors_t;

typedef struct lkv_tokenizer  lkv_tokenizer_t; /* see format/tokenizer.h */
typedef struct lkv_model_file lkv_model_file_t;

/* Open `path` (see the format list above). tokenizer_path overrides the
 * tokenizer (required for llama2.c .bin checkpoints; NULL otherwise).
 * Errors: LKV_ERR_NOTFOUND (missing file), LKV_ERR_FORMAT (truncated,
 * corrupt, inconsistent), LKV_ERR_UNSUPPORTED (dtype/architecture),
 * LKV_ERR_NOMEM. On failure *mf_p is untouched. */
lkv_status_t lkv_model_file_open(const char *path, const char *tokenizer_path,
                                 lkv_model_file_t **mf_p);
void         lkv_model_file_close(lkv_model_file_t **mf_p);

/* Borrowed views, valid until close. The tokenizer is NULL when the file
 * has none (a GGUF without tokenizer.ggml.*, an HF directory without
 * tokenizer.json) and no tokenizer_path was given. */
const lkv_model_config_t  *lkv_model_file_config(const lkv_model_file_t *mf);
const lkv_model_tensors_t *lkv_model_file_tensors(const lkv_model_file_t *mf);
const lkv_tokenizer_t     *lkv_model_file_tokenizer(const lkv_model_file_t *mf);
/* The format's name: "gguf", "safetensors", "llama2c", "dummy". */
const char                *lkv_model_file_format(const lkv_model_file_t *mf);

/* Total bytes of all weight tensors (for bandwidth figures). */
size_t lkv_model_file_weight_bytes(const lkv_model_file_t *mf);

#ifdef __cplusplus
}
#endif

#endif /* LKV_FORMAT_MODEL_FILE_H */
