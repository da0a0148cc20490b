/* gguf.c - GGUF (v2/v3) reader: header, metadata key/values of every type
 * (arrays included), tensor infos, data section (general.alignment, default
 * 32); builds the model config (llama, mistral, qwen2 keys), F32/F16/BF16
 * tensor views into the mmapped file, and the tokenizer from the
 * tokenizer.ggml.* keys ("llama" sentencepiece vocabularies and "gpt2"
 * byte-level BPE with merges).
 *
 * GGUF dims are innermost first: a tensor with dims [ne0, ne1] is ne1 rows
 * of ne0, exposed as a row-major (ne1, ne0) view. Every count, length and
 * offset is checked against the file size before use.
 *
 * Threading: called once from lkv_model_file_open().
 */
#define LKV_LOG_MODULE "format"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "format/fmt_impl.h"
#include "format/tok_impl.h"

enum {
    GT_U8 = 0, GT_I8, GT_U16, GT_I16, GT_U32, GT_I32, GT_F32, GT_BOOL,
    GT_STRING, GT_ARRAY, GT_U64, GT_I64, GT_F64, GT_COUNT
};

enum { GGML_F32 = 0, GGML_F16 = 1, GGML_BF16 = 30 };

typedef struct {
    const char    *key;
    size_t         key_len;
    uint32_t       type;
    uint64_t       u;   /* unsigned / bool value */
    int64_t        i;   /* signed value */
    double         f;   /* float value */
    const char    *str; /* GT_STRING */
    size_t         str_len;
    uint32_t       arr_type; /* GT_ARRAY */
    uint64_t       arr_n;
    const uint8_t *arr_data;
} gguf_kv_t;

typedef struct {
    const char *name;
    size_t      name_len;
    uint32_t    n_dims;
    uint64_t    dims[4];
    uint32_t    type;
    uint64_t    offset;
    const void *data;
} gguf_tensor_t;

typedef struct {
    const char    *path;
    const uint8_t *data;
    size_t         len;
    size_t         pos;
    uint32_t       version;
    gguf_kv_t     *kv;
    uint64_t       n_kv;
    gguf_tensor_t *ti;
    uint64_t       n_ti;
} gguf_t;

static bool need(gguf_t *g, size_t n, const char *what)
{
    if (n > g->len - g->pos) {
        LKV_LOG_ERROR("%s: truncated GGUF file: %s at offset %zu needs %zu "
                      "bytes, file is %zu bytes",
                      g->path, what, g->pos, n, g->len);
        return false;
    }
    return true;
}

static bool rd_u32(gguf_t *g, uint32_t *v, const char *what)
{
    if (!need(g, 4, what)) {
        return false;
    }
    memcpy(v, g->data + g->pos, 4);
    g->pos += 4;
    return true;
}

static bool rd_u64(gguf_t *g, uint64_t *v, const char *what)
{
    if (!need(g, 8, what)) {
        return false;
    }
    memcpy(v, g->data + g->pos, 8);
    g->pos += 8;
    return true;
}

static bool rd_str(gguf_t *g, const char **s, size_t *n, const char *what)
{
    uint64_t len;
    if (!rd_u64(g, &len, what) || !need(g, len, what)) {
        return false;
    }
    *s = (const char *)g->data + g->pos;
    *n = (size_t)len;
    g->pos += (size_t)len;
    return true;
}

static size_t type_size(uint32_t t)
{
    static const size_t sz[GT_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return t < GT_COUNT ? sz[t] : 0;
}

/* float -> integer without undefined behaviour for NaN / out of range */
static int64_t f2i(double f)
{
    return (f >= -9.2e18 && f <= 9.2e18) ? (int64_t)f : 0;
}

static bool rd_scalar(gguf_t *g, uint32_t type, gguf_kv_t *kv)
{
    size_t n = type_size(type);
    if (!need(g, n, "metadata value")) {
        return false;
    }
    const uint8_t *p = g->data + g->pos;
    union {
        uint8_t  u8;
        int8_t   i8;
        uint16_t u16;
        int16_t  i16;
        uint32_t u32;
        int32_t  i32;
        float    f32;
        uint64_t u64;
        int64_t  i64;
        double   f64;
    } v;
    memcpy(&v, p, n);
    switch (type) {
    case GT_U8:
    case GT_BOOL: kv->i = v.u8; break;
    case GT_I8: kv->i = v.i8; break;
    case GT_U16: kv->i = v.u16; break;
    case GT_I16: kv->i = v.i16; break;
    case GT_U32: kv->i = v.u32; break;
    case GT_I32: kv->i = v.i32; break;
    case GT_I64: kv->i = v.i64; break;
    case GT_U64: kv->i = (int64_t)v.u64; break;
    case GT_F32: kv->i = f2i(v.f32); break;
    case GT_F64: kv->i = f2i(v.f64); break;
    default: return false;
    }
    kv->u = type == GT_U64 ? v.u64 : (uint64_t)kv->i;
    kv->f = type == GT_F32   ? (double)v.f32
            : type == GT_F64 ? v.f64
            : type == GT_U64 ? (double)v.u64
                             : (double)kv->i;
    g->pos += n;
    return true;
}

static lkv_status_t parse(gguf_t *g)
{
    uint32_t magic;
    uint64_t n_ti, n_kv;
    if (!rd_u32(g, &magic, "magic")) {
        return LKV_ERR_FORMAT;
    }
    if (memcmp(&magic, "GGUF", 4) != 0) {
        LKV_LOG_ERROR("%s: not a GGUF file (bad magic)", g->path);
        return LKV_ERR_FORMAT;
    }
    if (!rd_u32(g, &g->version, "version")) {
        return LKV_ERR_FORMAT;
    }
    if (g->version != 2 && g->version != 3) {
        LKV_LOG_ERROR("%s: GGUF version %u is not supported (2 or 3)", g->path,
                      g->version);
        return LKV_ERR_UNSUPPORTED;
    }
    if (!rd_u64(g, &n_ti, "tensor count") || !rd_u64(g, &n_kv, "kv count")) {
        return LKV_ERR_FORMAT;
    }
    /* every kv needs >= 12 bytes, every tensor info >= 24 */
    if (n_kv > g->len / 12 || n_ti > g->len / 24) {
        LKV_LOG_ERROR("%s: GGUF header claims %" PRIu64 " tensors and %" PRIu64
                      " metadata keys, more than a %zu-byte file can hold",
                      g->path, n_ti, n_kv, g->len);
        return LKV_ERR_FORMAT;
    }
    g->kv = calloc(n_kv ? n_kv : 1, sizeof(*g->kv));
    g->ti = calloc(n_ti ? n_ti : 1, sizeof(*g->ti));
    if (g->kv == NULL || g->ti == NULL) {
        return LKV_ERR_NOMEM;
    }
    for (uint64_t k = 0; k < n_kv; k++) {
        gguf_kv_t *kv = &g->kv[k];
        if (!rd_str(g, &kv->key, &kv->key_len, "metadata key") ||
            !rd_u32(g, &kv->type, "metadata type")) {
            return LKV_ERR_FORMAT;
        }
        g->n_kv = k + 1;
        if (kv->type == GT_STRING) {
            if (!rd_str(g, &kv->str, &kv->str_len, "metadata string")) {
                return LKV_ERR_FORMAT;
            }
        } else if (kv->type == GT_ARRAY) {
            if (!rd_u32(g, &kv->arr_type, "array type") ||
                !rd_u64(g, &kv->arr_n, "array length")) {
                return LKV_ERR_FORMAT;
            }
            kv->arr_data = g->data + g->pos;
            if (kv->arr_type == GT_STRING) {
                for (uint64_t i = 0; i < kv->arr_n; i++) {
                    const char *s;
                    size_t      n;
                    if (!rd_str(g, &s, &n, "array string")) {
                        return LKV_ERR_FORMAT;
                    }
                }
            } else if (type_size(kv->arr_type) > 0) {
                size_t es = type_size(kv->arr_type);
                if (kv->arr_n > (g->len - g->pos) / es) {
                    need(g, g->len, "metadata array");
                    return LKV_ERR_FORMAT;
                }
                g->pos += (size_t)kv->arr_n * es;
            } else {
                LKV_LOG_ERROR("%s: metadata key %.*s has unsupported array "
                              "element type %u",
                              g->path, (int)kv->key_len, kv->key, kv->arr_type);
                return LKV_ERR_FORMAT;
            }
        } else if (type_size(kv->type) > 0) {
            if (!rd_scalar(g, kv->type, kv)) {
                return LKV_ERR_FORMAT;
            }
        } else {
            LKV_LOG_ERROR("%s: metadata key %.*s has invalid type %u", g->path,
                          (int)kv->key_len, kv->key, kv->type);
            return LKV_ERR_FORMAT;
        }
    }
    for (uint64_t t = 0; t < n_ti; t++) {
        gguf_tensor_t *ti = &g->ti[t];
        if (!rd_str(g, &ti->name, &ti->name_len, "tensor name") ||
            !rd_u32(g, &ti->n_dims, "tensor dims")) {
            return LKV_ERR_FORMAT;
        }
        if (ti->n_dims == 0 || ti->n_dims > 4) {
            LKV_LOG_ERROR("%s: tensor %.*s has %u dims (1..4 allowed)",
                          g->path, (int)ti->name_len, ti->name, ti->n_dims);
            return LKV_ERR_FORMAT;
        }
        for (uint32_t d = 0; d < ti->n_dims; d++) {
            if (!rd_u64(g, &ti->dims[d], "tensor dim")) {
                return LKV_ERR_FORMAT;
            }
        }
        if (!rd_u32(g, &ti->type, "tensor type") ||
            !rd_u64(g, &ti->offset, "tensor offset")) {
            return LKV_ERR_FORMAT;
        }
        g->n_ti = t + 1;
    }
    return LKV_OK;
}

static const gguf_kv_t *kv_find(const gguf_t *g, const char *key)
{
    size_t n = strlen(key);
    for (uint64_t i = 0; i < g->n_kv; i++) {
        if (g->kv[i].key_len == n && memcmp(g->kv[i].key, key, n) == 0) {
            return &g->kv[i];
        }
    }
    return NULL;
}

static const gguf_kv_t *kv_arch(const gguf_t *g, const char *arch,
                                const char *suffix)
{
    char key[128];
    snprintf(key, sizeof(key), "%s.%s", arch, suffix);
    return kv_find(g, key);
}

static bool kv_is_num(const gguf_kv_t *kv)
{
    return kv != NULL && kv->type != GT_STRING && kv->type != GT_ARRAY;
}

static int64_t kv_int(const gguf_kv_t *kv, int64_t def)
{
    return kv_is_num(kv) ? kv->i : def;
}

static double kv_float(const gguf_kv_t *kv, double def)
{
    return kv_is_num(kv) ? kv->f : def;
}

static bool kv_streq(const gguf_kv_t *kv, const char *s)
{
    return kv != NULL && kv->type == GT_STRING && kv->str_len == strlen(s) &&
           memcmp(kv->str, s, kv->str_len) == 0;
}

static const gguf_tensor_t *tensor_find(const gguf_t *g, const char *name)
{
    size_t n = strlen(name);
    for (uint64_t i = 0; i < g->n_ti; i++) {
        if (g->ti[i].name_len == n && memcmp(g->ti[i].name, name, n) == 0) {
            return &g->ti[i];
        }
    }
    return NULL;
}

/* locate tensor data and check it lies inside the file */
static lkv_status_t place_tensors(gguf_t *g, uint64_t alignment)
{
    uint64_t start = (g->pos + alignment - 1) / alignment * alignment;
    for (uint64_t t = 0; t < g->n_ti; t++) {
        gguf_tensor_t *ti = &g->ti[t];
        size_t         es;
        switch (ti->type) {
        case GGML_F32: es = 4; break;
        case GGML_F16: case GGML_BF16: es = 2; break;
        default: es = 0; break; /* checked when used */
        }
        uint64_t n = 1;
        for (uint32_t d = 0; d < ti->n_dims; d++) {
            if (ti->dims[d] == 0 || n > UINT64_MAX / ti->dims[d]) {
                LKV_LOG_ERROR("%s: tensor %.*s has an invalid shape", g->path,
                              (int)ti->name_len, ti->name);
                return LKV_ERR_FORMAT;
            }
            n *= ti->dims[d];
        }
        if (es == 0) {
            continue;
        }
        if (n > (UINT64_MAX / es) || ti->offset > UINT64_MAX - start ||
            start + ti->offset > g->len || n * es > g->len - start - ti->offset) {
            LKV_LOG_ERROR("%s: tensor %.*s (offset %" PRIu64 ", %" PRIu64
                          " bytes) extends past the end of the file (%zu "
                          "bytes): the file is truncated or corrupt",
                          g->path, (int)ti->name_len, ti->name, ti->offset,
                          n * es, g->len);
            return LKV_ERR_FORMAT;
        }
        if (ti->offset % alignment != 0) {
            LKV_LOG_ERROR("%s: tensor %.*s offset %" PRIu64 " is not aligned "
                          "to %" PRIu64,
                          g->path, (int)ti->name_len, ti->name, ti->offset,
                          alignment);
            return LKV_ERR_FORMAT;
        }
        ti->data = g->data + start + ti->offset;
    }
    return LKV_OK;
}

static lkv_status_t view(gguf_t *g, const char *name, bool optional,
                         lkv_tensor_t *out)
{
    const gguf_tensor_t *ti = tensor_find(g, name);
    if (ti == NULL) {
        if (optional) {
            return LKV_OK;
        }
        LKV_LOG_ERROR("%s: tensor %s is missing", g->path, name);
        return LKV_ERR_FORMAT;
    }
    switch (ti->type) {
    case GGML_F32: out->dtype = LKV_DTYPE_F32; break;
    case GGML_F16: out->dtype = LKV_DTYPE_F16; break;
    case GGML_BF16: out->dtype = LKV_DTYPE_BF16; break;
    default:
        LKV_LOG_ERROR("%s: tensor %s has ggml type %u; only F32 (0), F16 (1) "
                      "and BF16 (30) are supported (quantized types are not)",
                      g->path, name, ti->type);
        return LKV_ERR_UNSUPPORTED;
    }
    for (uint32_t d = 2; d < ti->n_dims; d++) {
        if (ti->dims[d] != 1) {
            LKV_LOG_ERROR("%s: tensor %s has %u dims; expected a matrix",
                          g->path, name, ti->n_dims);
            return LKV_ERR_FORMAT;
        }
    }
    if (ti->dims[0] > INT32_MAX || (ti->n_dims > 1 && ti->dims[1] > INT32_MAX)) {
        LKV_LOG_ERROR("%s: tensor %s is too large", g->path, name);
        return LKV_ERR_FORMAT;
    }
    out->data = ti->data;
    out->cols = (int64_t)ti->dims[0];
    out->rows = ti->n_dims > 1 ? (int64_t)ti->dims[1] : 1;
    return LKV_OK;
}

/* ---- tokenizer ---- */

static lkv_status_t load_tokenizer(gguf_t *g, lkv_model_file_t *mf)
{
    const gguf_kv_t *model  = kv_find(g, "tokenizer.ggml.model");
    const gguf_kv_t *tokens = kv_find(g, "tokenizer.ggml.tokens");
    if (model == NULL || tokens == NULL) {
        LKV_LOG_WARN("%s: no tokenizer.ggml vocabulary; text input needs a "
                     "separate tokenizer",
                     g->path);
        return LKV_OK;
    }
    bool spm = kv_streq(model, "llama");
    bool bpe = kv_streq(model, "gpt2");
    if (!spm && !bpe) {
        LKV_LOG_ERROR("%s: tokenizer.ggml.model \"%.*s\" is not supported "
                      "(llama or gpt2)",
                      g->path, model->type == GT_STRING ? (int)model->str_len : 0,
                      model->type == GT_STRING ? model->str : "");
        return LKV_ERR_UNSUPPORTED;
    }
    if (tokens->type != GT_ARRAY || tokens->arr_type != GT_STRING ||
        tokens->arr_n == 0 || tokens->arr_n > (1 << 24)) {
        LKV_LOG_ERROR("%s: tokenizer.ggml.tokens must be a non-empty string "
                      "array",
                      g->path);
        return LKV_ERR_FORMAT;
    }
    int              n      = (int)tokens->arr_n;
    const gguf_kv_t *scores = kv_find(g, "tokenizer.ggml.scores");
    const gguf_kv_t *types  = kv_find(g, "tokenizer.ggml.token_type");
    if (scores != NULL && (scores->type != GT_ARRAY ||
                           scores->arr_type != GT_F32 || scores->arr_n != tokens->arr_n)) {
        LKV_LOG_ERROR("%s: tokenizer.ggml.scores must be %d f32 values",
                      g->path, n);
        return LKV_ERR_FORMAT;
    }
    if (types != NULL &&
        (types->type != GT_ARRAY || types->arr_n != tokens->arr_n ||
         (types->arr_type != GT_I32 && types->arr_type != GT_U32))) {
        LKV_LOG_ERROR("%s: tokenizer.ggml.token_type must be %d int32 values",
                      g->path, n);
        return LKV_ERR_FORMAT;
    }
    lkv_tokenizer_t *tok = NULL;
    LKV_CHECK(tok_new(spm ? LKV_TOK_SPM : LKV_TOK_BPE, n, &tok));
    lkv_status_t   st = LKV_OK;
    const uint8_t *p  = tokens->arr_data;
    for (int id = 0; id < n; id++) {
        uint64_t len;
        memcpy(&len, p, 8); /* bounds were checked by parse() */
        const char *s     = (const char *)p + 8;
        p                += 8 + len;
        float       score = 0.0f;
        int32_t     type  = TOKT_NORMAL;
        if (scores != NULL) {
            memcpy(&score, scores->arr_data + (size_t)id * 4, 4);
        }
        if (types != NULL) {
            memcpy(&type, types->arr_data + (size_t)id * 4, 4);
            if (type < TOKT_NORMAL || type > TOKT_BYTE) {
                type = TOKT_NORMAL;
            }
        }
        st = tok_set_piece(tok, id, s, (size_t)len, score, type);
        if (st != LKV_OK) {
            goto fail;
        }
    }
    int64_t bos = kv_int(kv_find(g, "tokenizer.ggml.bos_token_id"), -1);
    int64_t eos = kv_int(kv_find(g, "tokenizer.ggml.eos_token_id"), -1);
    int64_t unk = kv_int(kv_find(g, "tokenizer.ggml.unknown_token_id"), -1);
    tok->bos = bos >= 0 && bos < n ? (int32_t)bos : -1;
    tok->eos = eos >= 0 && eos < n ? (int32_t)eos : -1;
    tok->unk = unk >= 0 && unk < n ? (int32_t)unk : -1;
    const gguf_kv_t *add_bos = kv_find(g, "tokenizer.ggml.add_bos_token");
    tok->add_bos             = add_bos ? add_bos->u != 0 : spm;
    if (spm) {
        const gguf_kv_t *asp = kv_find(g, "tokenizer.ggml.add_space_prefix");
        tok->meta_space      = true;
        tok->prefix = (asp == NULL || asp->u != 0) ? TOK_PREFIX_ALWAYS
                                                   : TOK_PREFIX_NEVER;
        tok->byte_fallback = true;
    } else {
        const gguf_kv_t *pre = kv_find(g, "tokenizer.ggml.pre");
        if (kv_streq(pre, "llama-bpe") || kv_streq(pre, "llama3") ||
            kv_streq(pre, "smaug-bpe")) {
            tok->pre = TOK_PRE_LLAMA3;
        } else if (kv_streq(pre, "qwen2")) {
            tok->pre = TOK_PRE_QWEN2;
            tok->nfc = true; /* Qwen2's tokenizer.json normalizer is NFC */
        } else {
            if (pre != NULL && !kv_streq(pre, "gpt-2") &&
                !kv_streq(pre, "default")) {
                LKV_LOG_WARN("%s: tokenizer.ggml.pre \"%.*s\" is not known; "
                             "using the GPT-2 pre-tokenizer",
                             g->path,
                             pre->type == GT_STRING ? (int)pre->str_len : 0,
                             pre->type == GT_STRING ? pre->str : "");
            }
            tok->pre = TOK_PRE_GPT2;
        }
        st = tok_build_index(tok);
        if (st != LKV_OK) {
            goto fail;
        }
        const gguf_kv_t *merges = kv_find(g, "tokenizer.ggml.merges");
        if (merges == NULL || merges->type != GT_ARRAY ||
            merges->arr_type != GT_STRING) {
            LKV_LOG_ERROR("%s: gpt2 tokenizer without tokenizer.ggml.merges",
                          g->path);
            st = LKV_ERR_FORMAT;
            goto fail;
        }
        p = merges->arr_data;
        for (uint64_t r = 0; r < merges->arr_n; r++) {
            uint64_t len;
            memcpy(&len, p, 8);
            const char *s  = (const char *)p + 8;
            p             += 8 + len;
            const char *sp = memchr(s + (len > 0 ? 1 : 0), ' ',
                                    len > 1 ? (size_t)len - 1 : 0);
            if (sp == NULL) {
                continue;
            }
            st = tok_add_merge(tok, s, (size_t)(sp - s), sp + 1,
                               (size_t)(s + len - sp - 1), (int32_t)r);
            if (st != LKV_OK) {
                goto fail;
            }
        }
    }
    st = tok_finish(tok);
    if (st != LKV_OK) {
        goto fail;
    }
    mf->tok = tok;
    return LKV_OK;
fail:
    lkv_tok_destroy(&tok);
    return st;
}

/* ---- model ---- */

lkv_status_t fmt_open_gguf(lkv_model_file_t *mf, const char *path,
                           const char *tok_path)
{
    gguf_t g = {.path = path};
    LKV_CHECK(fmt_mf_map(mf, path, &g.data, &g.len));
    lkv_status_t st = parse(&g);
    if (st != LKV_OK) {
        goto out;
    }
    const gguf_kv_t *al        = kv_find(&g, "general.alignment");
    uint64_t         alignment = 32;
    if (al != NULL) {
        if (!kv_is_num(al) || al->u == 0 || (al->u & (al->u - 1)) != 0 ||
            al->u > 65536) {
            LKV_LOG_ERROR("%s: general.alignment must be a power of two",
                          path);
            st = LKV_ERR_FORMAT;
            goto out;
        }
        alignment = al->u;
    }
    st = place_tensors(&g, alignment);
    if (st != LKV_OK) {
        goto out;
    }
    const gguf_kv_t *arch_kv = kv_find(&g, "general.architecture");
    char             arch[32];
    if (arch_kv == NULL || arch_kv->type != GT_STRING ||
        arch_kv->str_len >= sizeof(arch)) {
        LKV_LOG_ERROR("%s: general.architecture is missing", path);
        st = LKV_ERR_FORMAT;
        goto out;
    }
    memcpy(arch, arch_kv->str, arch_kv->str_len);
    arch[arch_kv->str_len] = '\0';
    if (strcmp(arch, "llama") != 0 && strcmp(arch, "mistral") != 0 &&
        strcmp(arch, "qwen2") != 0) {
        LKV_LOG_ERROR("%s: architecture \"%s\" is not supported (llama, "
                      "mistral, qwen2)",
                      path, arch);
        st = LKV_ERR_UNSUPPORTED;
        goto out;
    }
    lkv_model_config_t *c = &mf->cfg;
    snprintf(c->arch, sizeof(c->arch), "%s", arch);
    c->dim        = (int)kv_int(kv_arch(&g, arch, "embedding_length"), 0);
    c->hidden_dim = (int)kv_int(kv_arch(&g, arch, "feed_forward_length"), 0);
    c->n_layers   = (int)kv_int(kv_arch(&g, arch, "block_count"), 0);
    c->n_heads    = (int)kv_int(kv_arch(&g, arch, "attention.head_count"), 0);
    c->n_kv_heads =
        (int)kv_int(kv_arch(&g, arch, "attention.head_count_kv"), c->n_heads);
    c->head_dim   = (int)kv_int(kv_arch(&g, arch, "attention.key_length"), 0);
    c->rope_dim   = (int)kv_int(kv_arch(&g, arch, "rope.dimension_count"), 0);
    c->max_seq_len = (int)kv_int(kv_arch(&g, arch, "context_length"), 2048);
    c->norm_eps = fmt_to_float(kv_float(
        kv_arch(&g, arch, "attention.layer_norm_rms_epsilon"), 1e-5));
    c->rope_theta =
        fmt_to_float(kv_float(kv_arch(&g, arch, "rope.freq_base"), 10000.0));
    /* llama.cpp rotates qwen2 q/k in NeoX (halves) style, llama in pairs */
    c->rope_style =
        strcmp(arch, "qwen2") == 0 ? LKV_ROPE_HALVES : LKV_ROPE_ADJACENT;
    const gguf_kv_t *rs_type = kv_arch(&g, arch, "rope.scaling.type");
    if (rs_type != NULL && !kv_streq(rs_type, "none")) {
        /* linear / yarn would change every position's angle: refuse rather
         * than run with silently wrong RoPE (llama3 scaling comes as the
         * rope_freqs tensor instead) */
        LKV_LOG_ERROR("%s: rope scaling type %.*s is not supported (only "
                      "none, or llama3 via rope_freqs.weight)",
                      path,
                      rs_type->type == GT_STRING ? (int)rs_type->str_len : 0,
                      rs_type->type == GT_STRING ? rs_type->str : "");
        st = LKV_ERR_UNSUPPORTED;
        goto out;
    }
    if (c->n_layers > 0 && c->n_layers <= 4096) {
        mf->tensors.layers = calloc((size_t)c->n_layers,
                                    sizeof(*mf->tensors.layers));
        if (mf->tensors.layers == NULL) {
            st = LKV_ERR_NOMEM;
            goto out;
        }
    } else {
        LKV_LOG_ERROR("%s: %s.block_count %d is invalid", path, arch,
                      c->n_layers);
        st = LKV_ERR_FORMAT;
        goto out;
    }
    lkv_model_tensors_t *t = &mf->tensors;
    LKV_CHECK_GOTO(view(&g, "token_embd.weight", false, &t->tok_embd), st, out);
    LKV_CHECK_GOTO(view(&g, "output_norm.weight", false, &t->out_norm), st, out);
    LKV_CHECK_GOTO(view(&g, "output.weight", true, &t->output), st, out);
    LKV_CHECK_GOTO(view(&g, "rope_freqs.weight", true, &t->rope_freqs), st, out);
    c->tied_output = t->output.data == NULL;
    for (int l = 0; l < c->n_layers; l++) {
        lkv_layer_tensors_t *L = &t->layers[l];
        struct {
            const char   *name;
            lkv_tensor_t *dst;
            bool          optional;
        } m[] = {
            {"attn_norm.weight", &L->attn_norm, false},
            {"attn_q.weight", &L->wq, false},
            {"attn_k.weight", &L->wk, false},
            {"attn_v.weight", &L->wv, false},
            {"attn_q.bias", &L->bq, true},
            {"attn_k.bias", &L->bk, true},
            {"attn_v.bias", &L->bv, true},
            {"attn_output.weight", &L->wo, false},
            {"ffn_norm.weight", &L->ffn_norm, false},
            {"ffn_gate.weight", &L->w_gate, false},
            {"ffn_up.weight", &L->w_up, false},
            {"ffn_down.weight", &L->w_down, false},
        };
        for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++) {
            char name[96];
            snprintf(name, sizeof(name), "blk.%d.%s", l, m[i].name);
            LKV_CHECK_GOTO(view(&g, name, m[i].optional, m[i].dst), st, out);
        }
        LKV_CHECK_GOTO(fmt_mf_to_f32(mf, &L->bq), st, out);
        LKV_CHECK_GOTO(fmt_mf_to_f32(mf, &L->bk), st, out);
        LKV_CHECK_GOTO(fmt_mf_to_f32(mf, &L->bv), st, out);
        if (L->bq.data != NULL) {
            c->qkv_bias = true;
        }
    }
    c->vocab_size = (int)kv_int(kv_arch(&g, arch, "vocab_size"),
                                t->tok_embd.rows);
    if (tok_path != NULL) {
        st = lkv_tok_load_hf(tok_path, &mf->tok);
    } else {
        st = load_tokenizer(&g, mf);
    }
    if (st != LKV_OK) {
        goto out;
    }
    if (mf->tok != NULL) {
        c->bos_id = lkv_tok_bos(mf->tok);
        c->eos_id = lkv_tok_eos(mf->tok);
        fmt_cfg_add_stop(c, c->eos_id);
        fmt_cfg_add_stop(c, (int32_t)kv_int(kv_find(&g, "tokenizer.ggml.eot_token_id"), -1));
        fmt_cfg_add_stop(c, (int32_t)kv_int(kv_find(&g, "tokenizer.ggml.eom_token_id"), -1));
        if (tok_path == NULL &&
            kv_streq(kv_find(&g, "tokenizer.ggml.model"), "llama") &&
            kv_find(&g, "tokenizer.chat_template") == NULL) {
            /* base SPM model (e.g. from llama2.c): stories end with BOS */
            fmt_cfg_add_stop(c, c->bos_id);
        }
        int nv = lkv_tok_vocab_size(mf->tok);
        for (int i = 0; i < c->n_stop_ids; i++) {
            if (c->stop_ids[i] >= nv) { /* ids past the vocab: drop */
                c->stop_ids[i--] = c->stop_ids[--c->n_stop_ids];
            }
        }
    }
out:
    free(g.kv);
    free(g.ti);
    return st;
}
