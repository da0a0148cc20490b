/* fmt_pending.c - TEMPORARY: loaders not written yet (removed when
 * safetensors.c, hf_config.c, tok_hf.c and dummy.c land). */
#define LKV_LOG_MODULE "format"
#include "common/log.h"
#include "format/fmt_impl.h"

lkv_status_t fmt_open_hf(lkv_model_file_t *mf, const char *dir,
                         const char *tok_path)
{
    LKV_LOG_ERROR("%s: Hugging Face directories are not supported yet", dir);
    return LKV_ERR_UNSUPPORTED;
}
lkv_status_t lkv_tok_load_hf(const char *tokenizer_json_path,
                             lkv_tokenizer_t **tok_p)
{
    LKV_LOG_ERROR("%s: tokenizer.json is not supported yet", tokenizer_json_path);
    return LKV_ERR_UNSUPPORTED;
}
