/* hf_config.c - parse a Hugging Face config.json (LlamaForCausalLM,
 * MistralForCausalLM, Qwen2ForCausalLM) into lkv_model_config_t, with cJSON.
 *
 * Reads both the transformers 4.x keys (rope_theta, rope_scaling,
 * torch_dtype) and the 5.x ones (rope_parameters, dtype). HF checkpoints
 * rotate Q/K with rotate_half, so rope_style is LKV_ROPE_HALVES.
 *
 * Threading: pure function.
 */
#define LKV_LOG_MODULE "format"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "format/fmt_impl.h"

static bool get_num(const cJSON *o, const char *key, double *v)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(it)) {
        return false;
    }
    *v = it->valuedouble;
    return true;
}

static int get_int(const cJSON *o, const char *key, int def)
{
    double v;
    if (!get_num(o, key, &v) || v < 0 || v > 2147483647.0) {
        return def;
    }
    return (int)v;
}

static const char *get_str(const cJSON *o, const char *key)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(it) ? it->valuestring : NULL;
}

static bool get_bool(const cJSON *o, const char *key, bool def)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    if (cJSON_IsBool(it)) {
        return cJSON_IsTrue(it);
    }
    return def;
}

/* rope scaling object: {"rope_type"|"type": ..., "factor": ...} */
static lkv_status_t parse_rope(const cJSON *rs, const char *what,
                               lkv_model_config_t *c)
{
    if (rs == NULL || cJSON_IsNull(rs)) {
        return LKV_OK;
    }
    if (!cJSON_IsObject(rs)) {
        LKV_LOG_ERROR("%s: rope_scaling must be an object or null", what);
        return LKV_ERR_FORMAT;
    }
    double theta;
    if (get_num(rs, "rope_theta", &theta)) {
        c->rope_theta = fmt_to_float(theta);
    }
    const char *type = get_str(rs, "rope_type");
    if (type == NULL) {
        type = get_str(rs, "type");
    }
    if (type == NULL || strcmp(type, "default") == 0) {
        return LKV_OK;
    }
    if (strcmp(type, "llama3") != 0) {
        LKV_LOG_ERROR("%s: rope scaling type \"%s\" is not supported (only "
                      "llama3)",
                      what, type);
        return LKV_ERR_UNSUPPORTED;
    }
    double f = 8.0, lo = 1.0, hi = 4.0;
    get_num(rs, "factor", &f);
    get_num(rs, "low_freq_factor", &lo);
    get_num(rs, "high_freq_factor", &hi);
    c->rope_scaling.type             = LKV_ROPE_SCALING_LLAMA3;
    c->rope_scaling.factor           = fmt_to_float(f);
    c->rope_scaling.low_freq_factor  = fmt_to_float(lo);
    c->rope_scaling.high_freq_factor = fmt_to_float(hi);
    c->rope_scaling.original_max_pos =
        get_int(rs, "original_max_position_embeddings", 8192);
    return LKV_OK;
}

/* eos_token_id: a number or a list of numbers */
static void parse_eos(const cJSON *root, lkv_model_config_t *c)
{
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(root, "eos_token_id");
    if (cJSON_IsNumber(e)) {
        c->eos_id = fmt_to_id(e->valuedouble);
        fmt_cfg_add_stop(c, c->eos_id);
    } else if (cJSON_IsArray(e)) {
        const cJSON *it;
        cJSON_ArrayForEach(it, e)
        {
            if (cJSON_IsNumber(it)) {
                if (c->eos_id < 0) {
                    c->eos_id = fmt_to_id(it->valuedouble);
                }
                fmt_cfg_add_stop(c, fmt_to_id(it->valuedouble));
            }
        }
    }
}

lkv_status_t fmt_hf_config_parse(const char *text, const char *what,
                                 lkv_model_config_t *c, lkv_dtype_t *dtype_p,
                                 uint64_t *seed_p)
{
    cJSON *root = cJSON_Parse(text);
    if (root == NULL || !cJSON_IsObject(root)) {
        const char *err = cJSON_GetErrorPtr();
        LKV_LOG_ERROR("%s: invalid JSON%s%.20s", what, err ? " near: " : "",
                      err ? err : "");
        cJSON_Delete(root);
        return LKV_ERR_FORMAT;
    }
    lkv_status_t st   = LKV_OK;
    const char  *arch = NULL;
    const cJSON *archs =
        cJSON_GetObjectItemCaseSensitive(root, "architectures");
    if (cJSON_IsArray(archs) && cJSON_GetArraySize(archs) > 0 &&
        cJSON_IsString(cJSON_GetArrayItem(archs, 0))) {
        arch = cJSON_GetArrayItem(archs, 0)->valuestring;
    }
    const char *mt = get_str(root, "model_type");
    if ((arch && strcmp(arch, "LlamaForCausalLM") == 0) ||
        (!arch && mt && strcmp(mt, "llama") == 0)) {
        snprintf(c->arch, sizeof(c->arch), "llama");
    } else if ((arch && strcmp(arch, "MistralForCausalLM") == 0) ||
               (!arch && mt && strcmp(mt, "mistral") == 0)) {
        snprintf(c->arch, sizeof(c->arch), "mistral");
    } else if ((arch && strcmp(arch, "Qwen2ForCausalLM") == 0) ||
               (!arch && mt && strcmp(mt, "qwen2") == 0)) {
        snprintf(c->arch, sizeof(c->arch), "qwen2");
        c->qkv_bias = true;
    } else if (arch == NULL && mt == NULL) {
        snprintf(c->arch, sizeof(c->arch), "llama"); /* dummy configs */
    } else {
        LKV_LOG_ERROR("%s: architecture %s is not supported "
                      "(LlamaForCausalLM, MistralForCausalLM, "
                      "Qwen2ForCausalLM)",
                      what, arch ? arch : mt);
        st = LKV_ERR_UNSUPPORTED;
        goto out;
    }
    c->dim         = get_int(root, "hidden_size", 0);
    c->hidden_dim  = get_int(root, "intermediate_size", 0);
    c->n_layers    = get_int(root, "num_hidden_layers", 0);
    c->n_heads     = get_int(root, "num_attention_heads", 0);
    c->n_kv_heads  = get_int(root, "num_key_value_heads", c->n_heads);
    c->head_dim    = get_int(root, "head_dim", 0);
    c->vocab_size  = get_int(root, "vocab_size", 0);
    c->max_seq_len = get_int(root, "max_position_embeddings", 2048);
    double v;
    if (get_num(root, "rms_norm_eps", &v)) {
        c->norm_eps = fmt_to_float(v);
    }
    if (get_num(root, "rope_theta", &v)) {
        c->rope_theta = fmt_to_float(v);
    }
    c->rope_style = LKV_ROPE_HALVES;
    c->rope_dim   = 0; /* = head_dim */
    if (get_num(root, "partial_rotary_factor", &v) && v != 1.0) {
        LKV_LOG_ERROR("%s: partial_rotary_factor %g is not supported", what, v);
        st = LKV_ERR_UNSUPPORTED;
        goto out;
    }
    LKV_CHECK_GOTO(parse_rope(cJSON_GetObjectItemCaseSensitive(root,
                                                               "rope_scaling"),
                              what, c),
                   st, out);
    LKV_CHECK_GOTO(parse_rope(cJSON_GetObjectItemCaseSensitive(
                                  root, "rope_parameters"),
                              what, c),
                   st, out);
    c->tied_output = get_bool(root, "tie_word_embeddings", false);
    if (get_bool(root, "attention_bias", false) ||
        get_bool(root, "mlp_bias", false)) {
        LKV_LOG_ERROR("%s: attention_bias / mlp_bias are not supported", what);
        st = LKV_ERR_UNSUPPORTED;
        goto out;
    }
    int bos = get_int(root, "bos_token_id", -1);
    c->bos_id = bos;
    parse_eos(root, c);
    if (dtype_p != NULL) {
        const char *dt = get_str(root, "torch_dtype");
        if (dt == NULL) {
            dt = get_str(root, "dtype");
        }
        *dtype_p = LKV_DTYPE_F32;
        if (dt != NULL) {
            if (strcmp(dt, "bfloat16") == 0) {
                *dtype_p = LKV_DTYPE_BF16;
            } else if (strcmp(dt, "float16") == 0) {
                *dtype_p = LKV_DTYPE_F16;
            } else if (strcmp(dt, "float32") != 0) {
                LKV_LOG_ERROR("%s: torch_dtype \"%s\" is not supported "
                              "(float32, bfloat16, float16)",
                              what, dt);
                st = LKV_ERR_UNSUPPORTED;
                goto out;
            }
        }
    }
    if (seed_p != NULL) {
        *seed_p = get_num(root, "seed", &v) && v >= 0 && v < 1.8e19 ? (uint64_t)v : 0;
    }
    if (c->dim <= 0 || c->hidden_dim <= 0 || c->n_layers <= 0 ||
        c->n_heads <= 0 || c->vocab_size <= 0) {
        LKV_LOG_ERROR("%s: hidden_size, intermediate_size, num_hidden_layers, "
                      "num_attention_heads and vocab_size must all be set and "
                      "positive",
                      what);
        st = LKV_ERR_FORMAT;
    }
out:
    cJSON_Delete(root);
    return st;
}
