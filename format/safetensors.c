/* safetensors.c - Hugging Face model directory loader: config.json,
 * model.safetensors or sharded model-*.safetensors with
 * model.safetensors.index.json (F32/F16/BF16, mmapped), tokenizer.json,
 * generation_config.json (extra eos ids).
 *
 * safetensors layout: uint64 header_len, header_len bytes of JSON
 * {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]},
 *  "__metadata__": {...}}, then the data; offsets are relative to the byte
 * after the header. Linear weights are (out, in) row-major, used as is: HF
 * Q/K are laid out for rotate_half, so the config says LKV_ROPE_HALVES and
 * nothing is permuted.
 *
 * Threading: called once from lkv_model_file_open().
 */
#define LKV_LOG_MODULE "format"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "format/fmt_impl.h"

typedef struct {
    char        *name;
    lkv_dtype_t  dtype;
    int64_t      shape[2];
    int          n_dims;
    const void  *data;
    const char  *file; /* for errors (points into files[]) */
} st_tensor_t;

typedef struct {
    st_tensor_t *t;
    int          n, cap;
    char       **files;
    int          n_files;
} st_index_t;

static void index_free(st_index_t *ix)
{
    for (int i = 0; i < ix->n; i++) {
        free(ix->t[i].name);
    }
    free(ix->t);
    for (int i = 0; i < ix->n_files; i++) {
        free(ix->files[i]);
    }
    free(ix->files);
}

static char *path_join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char  *p = malloc(n);
    if (p != NULL) {
        snprintf(p, n, "%s/%s", dir, name);
    }
    return p;
}

static lkv_status_t parse_shard(lkv_model_file_t *mf, st_index_t *ix,
                                const char *path)
{
    const uint8_t *data;
    size_t         len;
    LKV_CHECK(fmt_mf_map(mf, path, &data, &len));
    uint64_t hlen;
    if (len < 8) {
        LKV_LOG_ERROR("%s: truncated safetensors file (%zu bytes)", path, len);
        return LKV_ERR_FORMAT;
    }
    memcpy(&hlen, data, 8);
    if (hlen > len - 8 || hlen > (100u << 20)) {
        LKV_LOG_ERROR("%s: safetensors header length %llu exceeds the file "
                      "(%zu bytes): truncated or not a safetensors file",
                      path, (unsigned long long)hlen, len);
        return LKV_ERR_FORMAT;
    }
    cJSON *root = cJSON_ParseWithLength((const char *)data + 8, (size_t)hlen);
    if (root == NULL || !cJSON_IsObject(root)) {
        LKV_LOG_ERROR("%s: safetensors header is not valid JSON", path);
        cJSON_Delete(root);
        return LKV_ERR_FORMAT;
    }
    const uint8_t *base = data + 8 + hlen;
    size_t         dlen = len - 8 - (size_t)hlen;
    lkv_status_t   st   = LKV_OK;
    const cJSON   *it;
    cJSON_ArrayForEach(it, root)
    {
        if (strcmp(it->string, "__metadata__") == 0) {
            continue;
        }
        const cJSON *dt  = cJSON_GetObjectItemCaseSensitive(it, "dtype");
        const cJSON *sh  = cJSON_GetObjectItemCaseSensitive(it, "shape");
        const cJSON *off = cJSON_GetObjectItemCaseSensitive(it, "data_offsets");
        if (!cJSON_IsString(dt) || !cJSON_IsArray(sh) || !cJSON_IsArray(off) ||
            cJSON_GetArraySize(off) != 2) {
            LKV_LOG_ERROR("%s: tensor %s has a malformed header entry", path,
                          it->string);
            st = LKV_ERR_FORMAT;
            break;
        }
        st_tensor_t t = {.file = path};
        size_t      es;
        if (strcmp(dt->valuestring, "F32") == 0) {
            t.dtype = LKV_DTYPE_F32;
            es      = 4;
        } else if (strcmp(dt->valuestring, "F16") == 0) {
            t.dtype = LKV_DTYPE_F16;
            es      = 2;
        } else if (strcmp(dt->valuestring, "BF16") == 0) {
            t.dtype = LKV_DTYPE_BF16;
            es      = 2;
        } else {
            /* other dtypes (I64 buffers etc.) are fine unless used */
            continue;
        }
        int    nd    = cJSON_GetArraySize(sh);
        double numel = 1;
        t.shape[0] = t.shape[1] = 1;
        if (nd < 1 || nd > 2) {
            continue; /* not a matrix or vector: not one of ours */
        }
        for (int d = 0; d < nd; d++) {
            const cJSON *v = cJSON_GetArrayItem(sh, d);
            if (!cJSON_IsNumber(v) || v->valuedouble < 0 ||
                v->valuedouble > 1e12) {
                LKV_LOG_ERROR("%s: tensor %s has an invalid shape", path,
                              it->string);
                st = LKV_ERR_FORMAT;
                break;
            }
            t.shape[d] = (int64_t)v->valuedouble;
            numel *= v->valuedouble;
        }
        if (st != LKV_OK) {
            break;
        }
        t.n_dims     = nd;
        const cJSON *b = cJSON_GetArrayItem(off, 0), *e = cJSON_GetArrayItem(off, 1);
        if (!cJSON_IsNumber(b) || !cJSON_IsNumber(e) || b->valuedouble < 0 ||
            e->valuedouble < b->valuedouble || e->valuedouble > (double)dlen ||
            e->valuedouble - b->valuedouble != numel * (double)es) {
            LKV_LOG_ERROR("%s: tensor %s data [%.0f, %.0f) does not fit its "
                          "shape or the file (%zu data bytes): truncated or "
                          "corrupt",
                          path, it->string, cJSON_IsNumber(b) ? b->valuedouble : -1.0,
                          cJSON_IsNumber(e) ? e->valuedouble : -1.0, dlen);
            st = LKV_ERR_FORMAT;
            break;
        }
        t.data = base + (size_t)b->valuedouble;
        t.name = strdup(it->string);
        if (t.name == NULL) {
            st = LKV_ERR_NOMEM;
            break;
        }
        if (ix->n == ix->cap) {
            int          cap = ix->cap ? ix->cap * 2 : 64;
            st_tensor_t *nt  = realloc(ix->t, (size_t)cap * sizeof(*nt));
            if (nt == NULL) {
                free(t.name);
                st = LKV_ERR_NOMEM;
                break;
            }
            ix->t   = nt;
            ix->cap = cap;
        }
        ix->t[ix->n++] = t;
    }
    cJSON_Delete(root);
    return st;
}

/* the shard files: from the index's weight_map, or model.safetensors */
static lkv_status_t find_shards(const char *dir, st_index_t *ix)
{
    char *ipath = path_join(dir, "model.safetensors.index.json");
    if (ipath == NULL) {
        return LKV_ERR_NOMEM;
    }
    if (access(ipath, F_OK) != 0) {
        free(ipath);
        ix->files = calloc(1, sizeof(char *));
        if (ix->files == NULL || (ix->files[0] = path_join(dir, "model.safetensors")) == NULL) {
            return LKV_ERR_NOMEM;
        }
        ix->n_files = 1;
        return LKV_OK;
    }
    char        *text = NULL;
    lkv_status_t st   = fmt_read_file(ipath, &text, NULL);
    cJSON       *root = st == LKV_OK ? cJSON_Parse(text) : NULL;
    const cJSON *wm   = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (st == LKV_OK && !cJSON_IsObject(wm)) {
        LKV_LOG_ERROR("%s: no weight_map object (invalid index)", ipath);
        st = LKV_ERR_FORMAT;
    }
    if (st == LKV_OK) {
        int n     = cJSON_GetArraySize(wm);
        ix->files = calloc((size_t)n + 1, sizeof(char *));
        if (ix->files == NULL) {
            st = LKV_ERR_NOMEM;
        }
        const cJSON *it;
        cJSON_ArrayForEach(it, wm)
        {
            if (st != LKV_OK) {
                break;
            }
            if (!cJSON_IsString(it) || strchr(it->valuestring, '/') != NULL) {
                LKV_LOG_ERROR("%s: weight_map entry %s is not a file name",
                              ipath, it->string);
                st = LKV_ERR_FORMAT;
                break;
            }
            bool seen = false;
            for (int i = 0; i < ix->n_files && !seen; i++) {
                const char *f = strrchr(ix->files[i], '/') + 1;
                seen          = strcmp(f, it->valuestring) == 0;
            }
            if (!seen) {
                ix->files[ix->n_files] = path_join(dir, it->valuestring);
                if (ix->files[ix->n_files] == NULL) {
                    st = LKV_ERR_NOMEM;
                    break;
                }
                ix->n_files++;
            }
        }
    }
    cJSON_Delete(root);
    free(text);
    free(ipath);
    return st;
}

static const st_tensor_t *find(const st_index_t *ix, const char *name)
{
    for (int i = 0; i < ix->n; i++) {
        if (strcmp(ix->t[i].name, name) == 0) {
            return &ix->t[i];
        }
    }
    return NULL;
}

static lkv_status_t view(const st_index_t *ix, const char *dir,
                         const char *name, bool optional, lkv_tensor_t *out)
{
    const st_tensor_t *t = find(ix, name);
    if (t == NULL) {
        if (optional) {
            return LKV_OK;
        }
        LKV_LOG_ERROR("%s: tensor %s is missing from the safetensors files",
                      dir, name);
        return LKV_ERR_FORMAT;
    }
    out->data  = t->data;
    out->dtype = t->dtype;
    if (t->n_dims == 1) {
        out->rows = 1;
        out->cols = t->shape[0];
    } else {
        out->rows = t->shape[0];
        out->cols = t->shape[1];
    }
    return LKV_OK;
}

static void read_generation_config(const char *dir, lkv_model_config_t *c)
{
    char *path = path_join(dir, "generation_config.json");
    char *text = NULL;
    if (path == NULL || access(path, R_OK) != 0 ||
        fmt_read_file(path, &text, NULL) != LKV_OK) {
        free(path);
        return;
    }
    cJSON       *root = cJSON_Parse(text);
    const cJSON *e    = cJSON_GetObjectItemCaseSensitive(root, "eos_token_id");
    if (cJSON_IsNumber(e)) {
        fmt_cfg_add_stop(c, fmt_to_id(e->valuedouble));
    } else if (cJSON_IsArray(e)) {
        const cJSON *it;
        cJSON_ArrayForEach(it, e)
        {
            if (cJSON_IsNumber(it)) {
                fmt_cfg_add_stop(c, fmt_to_id(it->valuedouble));
            }
        }
    }
    cJSON_Delete(root);
    free(text);
    free(path);
}

lkv_status_t fmt_open_hf(lkv_model_file_t *mf, const char *dir,
                         const char *tok_path)
{
    st_index_t   ix    = {0};
    char        *cpath = path_join(dir, "config.json");
    char        *text  = NULL;
    char        *tpath = NULL;
    lkv_status_t st;
    if (cpath == NULL) {
        return LKV_ERR_NOMEM;
    }
    if (access(cpath, F_OK) != 0) {
        LKV_LOG_ERROR("%s: not a model directory: a Hugging Face model "
                      "directory needs config.json",
                      dir);
        st = LKV_ERR_NOTFOUND;
        goto out;
    }
    st = fmt_read_file(cpath, &text, NULL);
    if (st != LKV_OK) {
        goto out;
    }
    lkv_model_config_t *c = &mf->cfg;
    LKV_CHECK_GOTO(fmt_hf_config_parse(text, cpath, c, NULL, NULL), st, out);
    if (c->n_layers <= 0 || c->n_layers > 4096) {
        LKV_LOG_ERROR("%s: num_hidden_layers %d is invalid", cpath, c->n_layers);
        st = LKV_ERR_FORMAT;
        goto out;
    }
    LKV_CHECK_GOTO(find_shards(dir, &ix), st, out);
    for (int i = 0; i < ix.n_files; i++) {
        LKV_CHECK_GOTO(parse_shard(mf, &ix, ix.files[i]), st, out);
    }
    lkv_model_tensors_t *t = &mf->tensors;
    t->layers = calloc((size_t)c->n_layers, sizeof(*t->layers));
    if (t->layers == NULL) {
        st = LKV_ERR_NOMEM;
        goto out;
    }
    LKV_CHECK_GOTO(view(&ix, dir, "model.embed_tokens.weight", false,
                        &t->tok_embd), st, out);
    LKV_CHECK_GOTO(view(&ix, dir, "model.norm.weight", false, &t->out_norm),
                   st, out);
    LKV_CHECK_GOTO(view(&ix, dir, "lm_head.weight", c->tied_output,
                        &t->output), st, out);
    if (c->tied_output) {
        t->output = t->tok_embd;
    }
    for (int l = 0; l < c->n_layers; l++) {
        lkv_layer_tensors_t *L = &t->layers[l];
        struct {
            const char   *name;
            lkv_tensor_t *dst;
            bool          optional;
        } m[] = {
            {"input_layernorm.weight", &L->attn_norm, false},
            {"self_attn.q_proj.weight", &L->wq, false},
            {"self_attn.k_proj.weight", &L->wk, false},
            {"self_attn.v_proj.weight", &L->wv, false},
            {"self_attn.q_proj.bias", &L->bq, !c->qkv_bias},
            {"self_attn.k_proj.bias", &L->bk, !c->qkv_bias},
            {"self_attn.v_proj.bias", &L->bv, !c->qkv_bias},
            {"self_attn.o_proj.weight", &L->wo, false},
            {"post_attention_layernorm.weight", &L->ffn_norm, false},
            {"mlp.gate_proj.weight", &L->w_gate, false},
            {"mlp.up_proj.weight", &L->w_up, false},
            {"mlp.down_proj.weight", &L->w_down, false},
        };
        for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++) {
            char name[128];
            snprintf(name, sizeof(name), "model.layers.%d.%s", l, m[i].name);
            LKV_CHECK_GOTO(view(&ix, dir, name, m[i].optional, m[i].dst), st,
                           out);
        }
        LKV_CHECK_GOTO(fmt_mf_to_f32(mf, &L->bq), st, out);
        LKV_CHECK_GOTO(fmt_mf_to_f32(mf, &L->bk), st, out);
        LKV_CHECK_GOTO(fmt_mf_to_f32(mf, &L->bv), st, out);
    }
    read_generation_config(dir, c);
    if (tok_path == NULL) {
        tpath = path_join(dir, "tokenizer.json");
        if (tpath == NULL) {
            st = LKV_ERR_NOMEM;
            goto out;
        }
        if (access(tpath, F_OK) != 0) {
            LKV_LOG_WARN("%s: no tokenizer.json; text input needs "
                         "--tokenizer",
                         dir);
            goto out;
        }
        tok_path = tpath;
    }
    st = fmt_ends_with(tok_path, ".json")
             ? lkv_tok_load_hf(tok_path, &mf->tok)
             : lkv_tok_load_llama2c(tok_path, c->vocab_size, &mf->tok);
    if (st == LKV_OK) {
        if (c->bos_id < 0) {
            c->bos_id = lkv_tok_bos(mf->tok);
        }
        if (c->eos_id < 0) {
            c->eos_id = lkv_tok_eos(mf->tok);
            fmt_cfg_add_stop(c, c->eos_id);
        }
    }
out:
    index_free(&ix);
    free(tpath);
    free(text);
    free(cpath);
    return st;
}
