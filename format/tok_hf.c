/* tok_hf.c - Hugging Face tokenizer.json loader (BPE models).
 *
 * Two flavours, told apart by the pre-tokenizer:
 *   byte-level (Llama-3, Qwen2, GPT-2): a ByteLevel pre-tokenizer, usually
 *     after a Split with the model's regex (matched against the known
 *     GPT-2 / Llama-3 / Qwen2 patterns, implemented in tok_bpe.c);
 *   sentencepiece-compatible (Llama-2, Mistral): Prepend("▁") +
 *     Replace(" ", "▁") normalizers or a Metaspace pre-tokenizer
 *     (prepend_scheme always/first/never, split), byte_fallback, fuse_unk.
 * Merges are read in both formats ("a b" strings and ["a", "b"] pairs).
 * added_tokens are matched in the text as whole strings (special ones only
 * when parse_special). BOS is added by default when the post_processor
 * template starts with it or tokenizer_config.json (same directory) says
 * add_bos_token; bos/eos come from tokenizer_config.json.
 *
 * Not supported (LKV_ERR_UNSUPPORTED with a message): Unigram/WordPiece
 * models, other split regexes, normalizers other than Prepend/Replace/NFC.
 *
 * Threading: loading is single-threaded; the result is immutable.
 */
#define LKV_LOG_MODULE "tokenizer"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "format/fmt_impl.h"
#include "format/tok_impl.h"

static const char PAT_GPT2[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|"
    "\\s+(?!\\S)|\\s+";
static const char PAT_LLAMA3[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
    "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char PAT_QWEN2[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
    "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char META[] = "\xE2\x96\x81"; /* U+2581 */

typedef struct {
    const char *path;
    bool        byte_level;
    bool        gpt2_regex; /* ByteLevel use_regex */
    tok_pre_t   split;
    bool        have_split;
    bool        meta_replace; /* spaces become U+2581 */
    tok_prefix_t prefix;
    bool        prefix_unless_space;
    bool        split_words;
    bool        nfc;
} hf_opts_t;

static const char *str_of(const cJSON *o, const char *key)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(it) ? it->valuestring : NULL;
}

static bool bool_of(const cJSON *o, const char *key, bool def)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsBool(it) ? cJSON_IsTrue(it) : def;
}

static lkv_status_t parse_normalizer(const cJSON *n, hf_opts_t *o)
{
    if (n == NULL || cJSON_IsNull(n)) {
        return LKV_OK;
    }
    const char *type = str_of(n, "type");
    if (type == NULL) {
        LKV_LOG_ERROR("%s: normalizer without a type", o->path);
        return LKV_ERR_FORMAT;
    }
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(n, "normalizers"))
        {
            LKV_CHECK(parse_normalizer(it, o));
        }
        return LKV_OK;
    }
    if (strcmp(type, "Prepend") == 0) {
        const char *p = str_of(n, "prepend");
        if (p == NULL || strcmp(p, META) != 0) {
            LKV_LOG_ERROR("%s: Prepend normalizer with \"%s\" is not supported "
                          "(only U+2581)",
                          o->path, p ? p : "");
            return LKV_ERR_UNSUPPORTED;
        }
        o->prefix              = TOK_PREFIX_ALWAYS;
        o->prefix_unless_space = false;
        return LKV_OK;
    }
    if (strcmp(type, "Replace") == 0) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(n, "pattern");
        const char  *from = str_of(pat, "String");
        const char  *to   = str_of(n, "content");
        if (from != NULL && to != NULL && strcmp(from, " ") == 0 &&
            strcmp(to, META) == 0) {
            o->meta_replace = true;
            return LKV_OK;
        }
        LKV_LOG_ERROR("%s: Replace normalizer other than \" \" -> U+2581 is "
                      "not supported",
                      o->path);
        return LKV_ERR_UNSUPPORTED;
    }
    if (strcmp(type, "NFC") == 0) {
        o->nfc = true;
        return LKV_OK;
    }
    LKV_LOG_ERROR("%s: normalizer %s is not supported", o->path, type);
    return LKV_ERR_UNSUPPORTED;
}

static lkv_status_t parse_pre(const cJSON *p, hf_opts_t *o)
{
    if (p == NULL || cJSON_IsNull(p)) {
        return LKV_OK;
    }
    const char *type = str_of(p, "type");
    if (type == NULL) {
        LKV_LOG_ERROR("%s: pre_tokenizer without a type", o->path);
        return LKV_ERR_FORMAT;
    }
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(p, "pretokenizers"))
        {
            LKV_CHECK(parse_pre(it, o));
        }
        return LKV_OK;
    }
    if (strcmp(type, "ByteLevel") == 0) {
        o->byte_level = true;
        o->gpt2_regex = bool_of(p, "use_regex", true);
        if (bool_of(p, "add_prefix_space", false)) {
            LKV_LOG_ERROR("%s: ByteLevel add_prefix_space is not supported",
                          o->path);
            return LKV_ERR_UNSUPPORTED;
        }
        return LKV_OK;
    }
    if (strcmp(type, "Split") == 0) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(p, "pattern");
        const char  *re  = str_of(pat, "Regex");
        const char  *beh = str_of(p, "behavior");
        if (re == NULL || beh == NULL || strcmp(beh, "Isolated") != 0 ||
            bool_of(p, "invert", false)) {
            LKV_LOG_ERROR("%s: only Split(Regex, Isolated) pre-tokenizers are "
                          "supported",
                          o->path);
            return LKV_ERR_UNSUPPORTED;
        }
        if (strcmp(re, PAT_LLAMA3) == 0) {
            o->split = TOK_PRE_LLAMA3;
        } else if (strcmp(re, PAT_QWEN2) == 0) {
            o->split = TOK_PRE_QWEN2;
        } else if (strcmp(re, PAT_GPT2) == 0) {
            o->split = TOK_PRE_GPT2;
        } else {
            LKV_LOG_ERROR("%s: split regex %.60s... is not one of the known "
                          "GPT-2 / Llama-3 / Qwen2 patterns",
                          o->path, re);
            return LKV_ERR_UNSUPPORTED;
        }
        o->have_split = true;
        return LKV_OK;
    }
    if (strcmp(type, "Metaspace") == 0) {
        const char *rep = str_of(p, "replacement");
        if (rep != NULL && strcmp(rep, META) != 0) {
            LKV_LOG_ERROR("%s: Metaspace replacement must be U+2581", o->path);
            return LKV_ERR_UNSUPPORTED;
        }
        o->meta_replace        = true;
        o->prefix_unless_space = true;
        o->split_words         = bool_of(p, "split", true);
        const char *scheme     = str_of(p, "prepend_scheme");
        if (scheme == NULL) {
            o->prefix = bool_of(p, "add_prefix_space", true) ? TOK_PREFIX_ALWAYS
                                                             : TOK_PREFIX_NEVER;
        } else if (strcmp(scheme, "always") == 0) {
            o->prefix = TOK_PREFIX_ALWAYS;
        } else if (strcmp(scheme, "first") == 0) {
            o->prefix = TOK_PREFIX_FIRST;
        } else {
            o->prefix = TOK_PREFIX_NEVER;
        }
        return LKV_OK;
    }
    LKV_LOG_ERROR("%s: pre_tokenizer %s is not supported", o->path, type);
    return LKV_ERR_UNSUPPORTED;
}

/* "content" of a tokenizer_config.json token entry: a string or an object */
static const char *token_text(const cJSON *v)
{
    if (cJSON_IsString(v)) {
        return v->valuestring;
    }
    if (cJSON_IsObject(v)) {
        return str_of(v, "content");
    }
    return NULL;
}

static cJSON *read_sibling_config(const char *json_path)
{
    const char *slash = strrchr(json_path, '/');
    size_t      dlen  = slash ? (size_t)(slash - json_path + 1) : 0;
    char       *p     = malloc(dlen + sizeof("tokenizer_config.json"));
    char       *text  = NULL;
    cJSON      *root  = NULL;
    if (p == NULL) {
        return NULL;
    }
    memcpy(p, json_path, dlen);
    strcpy(p + dlen, "tokenizer_config.json");
    if (access(p, R_OK) == 0 && fmt_read_file(p, &text, NULL) == LKV_OK) {
        root = cJSON_Parse(text);
        if (root == NULL) {
            LKV_LOG_WARN("%s: invalid JSON; ignored", p);
        }
    }
    free(text);
    free(p);
    return root;
}

lkv_status_t lkv_tok_load_hf(const char *path, lkv_tokenizer_t **tok_p)
{
    if (path == NULL || tok_p == NULL) {
        return LKV_ERR_INVALID;
    }
    char        *text = NULL;
    cJSON       *root = NULL, *tcfg = NULL;
    lkv_tokenizer_t *tok = NULL;
    lkv_status_t st = fmt_read_file(path, &text, NULL);
    if (st != LKV_OK) {
        return st;
    }
    root = cJSON_Parse(text);
    free(text);
    if (root == NULL || !cJSON_IsObject(root)) {
        LKV_LOG_ERROR("%s: not valid JSON", path);
        st = LKV_ERR_FORMAT;
        goto out;
    }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const char  *mtype = str_of(model, "type");
    if (!cJSON_IsObject(model)) {
        LKV_LOG_ERROR("%s: no \"model\" object", path);
        st = LKV_ERR_FORMAT;
        goto out;
    }
    if (mtype != NULL && strcmp(mtype, "BPE") != 0) {
        LKV_LOG_ERROR("%s: tokenizer model %s is not supported (BPE only)",
                      path, mtype);
        st = LKV_ERR_UNSUPPORTED;
        goto out;
    }
    if (str_of(model, "continuing_subword_prefix") != NULL ||
        str_of(model, "end_of_word_suffix") != NULL) {
        LKV_LOG_ERROR("%s: BPE continuing_subword_prefix / end_of_word_suffix "
                      "are not supported",
                      path);
        st = LKV_ERR_UNSUPPORTED;
        goto out;
    }
    hf_opts_t o = {.path = path};
    LKV_CHECK_GOTO(parse_normalizer(
                       cJSON_GetObjectItemCaseSensitive(root, "normalizer"), &o),
                   st, out);
    LKV_CHECK_GOTO(
        parse_pre(cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), &o),
        st, out);

    const cJSON *vocab  = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *added  = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (!cJSON_IsObject(vocab) || cJSON_GetArraySize(vocab) == 0) {
        LKV_LOG_ERROR("%s: model.vocab must be a non-empty object", path);
        st = LKV_ERR_FORMAT;
        goto out;
    }
    int          n_vocab = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, vocab)
    {
        if (!cJSON_IsNumber(it) || it->valuedouble < 0 ||
            it->valuedouble >= (1 << 24)) {
            LKV_LOG_ERROR("%s: vocab entry %s has an invalid id", path,
                          it->string);
            st = LKV_ERR_FORMAT;
            goto out;
        }
        if ((int)it->valuedouble + 1 > n_vocab) {
            n_vocab = (int)it->valuedouble + 1;
        }
    }
    cJSON_ArrayForEach(it, added)
    {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "id");
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 ||
            id->valuedouble >= (1 << 24) || str_of(it, "content") == NULL) {
            LKV_LOG_ERROR("%s: malformed added_tokens entry", path);
            st = LKV_ERR_FORMAT;
            goto out;
        }
        if ((int)id->valuedouble + 1 > n_vocab) {
            n_vocab = (int)id->valuedouble + 1;
        }
    }
    int n_entries = cJSON_GetArraySize(vocab) + cJSON_GetArraySize(added);
    if (n_vocab > 2 * n_entries + 1024) {
        LKV_LOG_ERROR("%s: token ids go up to %d for %d tokens; ids must be "
                      "(nearly) dense",
                      path, n_vocab - 1, n_entries);
        st = LKV_ERR_FORMAT;
        goto out;
    }
    LKV_CHECK_GOTO(tok_new(o.byte_level ? LKV_TOK_BPE : LKV_TOK_SPM, n_vocab,
                           &tok), st, out);
    cJSON_ArrayForEach(it, vocab)
    {
        LKV_CHECK_GOTO(tok_set_piece(tok, fmt_to_id(it->valuedouble), it->string,
                                     strlen(it->string), 0.0f, TOKT_NORMAL),
                       st, out);
    }
    cJSON_ArrayForEach(it, added)
    {
        const char *content = str_of(it, "content");
        int32_t     id = (int32_t)cJSON_GetObjectItemCaseSensitive(it, "id")->valuedouble;
        LKV_CHECK_GOTO(tok_set_piece(tok, id, content, strlen(content), 0.0f,
                                     bool_of(it, "special", false) ? TOKT_CONTROL
                                                                   : TOKT_USER),
                       st, out);
    }
    LKV_CHECK_GOTO(tok_build_index(tok), st, out);
    int32_t rank = 0;
    cJSON_ArrayForEach(it, merges)
    {
        const char *a = NULL, *b = NULL;
        size_t      al = 0, bl = 0;
        if (cJSON_IsString(it)) {
            const char *s  = it->valuestring;
            const char *sp = s[0] ? strchr(s + 1, ' ') : NULL;
            if (sp == NULL) {
                LKV_LOG_ERROR("%s: merge \"%s\" is not \"a b\"", path, s);
                st = LKV_ERR_FORMAT;
                goto out;
            }
            a  = s;
            al = (size_t)(sp - s);
            b  = sp + 1;
            bl = strlen(b);
        } else if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2 &&
                   cJSON_IsString(cJSON_GetArrayItem(it, 0)) &&
                   cJSON_IsString(cJSON_GetArrayItem(it, 1))) {
            a  = cJSON_GetArrayItem(it, 0)->valuestring;
            b  = cJSON_GetArrayItem(it, 1)->valuestring;
            al = strlen(a);
            bl = strlen(b);
        } else {
            LKV_LOG_ERROR("%s: merge %d is neither \"a b\" nor [a, b]", path,
                          rank);
            st = LKV_ERR_FORMAT;
            goto out;
        }
        LKV_CHECK_GOTO(tok_add_merge(tok, a, al, b, bl, rank), st, out);
        rank++;
    }
    tok->use_merges    = true;
    tok->nfc           = o.nfc;
    tok->byte_fallback = bool_of(model, "byte_fallback", false);
    tok->fuse_unk      = bool_of(model, "fuse_unk", false);
    tok->ignore_merges = bool_of(model, "ignore_merges", false);
    const char *unk    = str_of(model, "unk_token");
    tok->unk           = unk ? tok_lookup(tok, unk, strlen(unk)) : -1;
    if (o.byte_level) {
        tok->pre = o.have_split ? o.split
                                : (o.gpt2_regex ? TOK_PRE_GPT2 : TOK_PRE_NONE);
    } else {
        tok->meta_space          = o.meta_replace;
        tok->prefix              = o.prefix;
        tok->prefix_unless_space = o.prefix_unless_space;
        tok->split_words         = o.split_words;
    }

    /* bos / eos / add_bos: tokenizer_config.json, then the post-processor */
    tcfg                 = read_sibling_config(path);
    const char *bos_text = token_text(cJSON_GetObjectItemCaseSensitive(tcfg, "bos_token"));
    const char *eos_text = token_text(cJSON_GetObjectItemCaseSensitive(tcfg, "eos_token"));
    const cJSON *post    = cJSON_GetObjectItemCaseSensitive(root, "post_processor");
    const char  *first_special = NULL;
    if (cJSON_IsObject(post) && str_of(post, "type") != NULL &&
        strcmp(str_of(post, "type"), "Sequence") == 0) {
        /* e.g. Llama-3: Sequence[ByteLevel, TemplateProcessing] */
        const cJSON *p;
        cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(post, "processors"))
        {
            if (str_of(p, "type") != NULL &&
                strcmp(str_of(p, "type"), "TemplateProcessing") == 0) {
                post = p;
            }
        }
    }
    if (cJSON_IsObject(post) && str_of(post, "type") != NULL &&
        strcmp(str_of(post, "type"), "TemplateProcessing") == 0) {
        const cJSON *single = cJSON_GetObjectItemCaseSensitive(post, "single");
        const cJSON *first  = cJSON_GetArrayItem(single, 0);
        const cJSON *sp     = cJSON_GetObjectItemCaseSensitive(first, "SpecialToken");
        first_special       = str_of(sp, "id");
    }
    if (bos_text == NULL) {
        bos_text = first_special;
    }
    tok->bos     = bos_text ? tok_lookup(tok, bos_text, strlen(bos_text)) : -1;
    tok->eos     = eos_text ? tok_lookup(tok, eos_text, strlen(eos_text)) : -1;
    tok->add_bos = first_special != NULL && bos_text != NULL &&
                   strcmp(first_special, bos_text) == 0;
    const cJSON *ab = cJSON_GetObjectItemCaseSensitive(tcfg, "add_bos_token");
    if (cJSON_IsBool(ab)) {
        tok->add_bos = cJSON_IsTrue(ab);
    }
    st = tok_finish(tok);
out:
    cJSON_Delete(root);
    cJSON_Delete(tcfg);
    if (st != LKV_OK) {
        lkv_tok_destroy(&tok);
        return st;
    }
    *tok_p = tok;
    return LKV_OK;
}
