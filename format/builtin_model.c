/* builtin_model.c - the bundled stories260K GGUF, built into the binary so
 * that `layerkv serve` / `run` work with no --model on any machine (the
 * embedded default of DESIGN.md §2), and remote workers of such a server
 * load the same bytes without a shared file system.
 *
 * The bytes come from models/stories260K/stories260K.gguf at build time
 * (CMake passes the path as LKV_BUILTIN_GGUF and rebuilds this file when
 * the model changes); page-aligned like an mmap, so the GGUF loader sees
 * the same tensor alignment as from the file. Built with
 * -DLKV_EMBED_MODEL=OFF there is no built-in model and lookups fail.
 * Threading: read-only data; safe from any thread.
 */
#include <string.h>

#define LKV_LOG_MODULE "format"
#include "common/log.h"
#include "format/fmt_impl.h"

#ifdef LKV_BUILTIN_GGUF
__asm__(".pushsection .rodata\n"
        ".balign 4096\n"
        "lkv_builtin_stories260k:\n"
        ".incbin \"" LKV_BUILTIN_GGUF "\"\n"
        "lkv_builtin_stories260k_end:\n"
        ".popsection\n");
extern const uint8_t lkv_builtin_stories260k[];
extern const uint8_t lkv_builtin_stories260k_end[];
#endif

lkv_status_t fmt_builtin_model(const char *path, const uint8_t **data_p,
                               size_t *len_p)
{
#ifdef LKV_BUILTIN_GGUF
    if (strcmp(path, LKV_DEFAULT_MODEL) == 0) {
        *data_p = lkv_builtin_stories260k;
        *len_p  = (size_t)(lkv_builtin_stories260k_end -
                          lkv_builtin_stories260k);
        return LKV_OK;
    }
    LKV_LOG_ERROR("%s: no such built-in model (this build has only "
                  LKV_DEFAULT_MODEL ")", path);
#else
    (void)data_p;
    (void)len_p;
    LKV_LOG_ERROR("%s: no built-in model in this build (configured with "
                  "-DLKV_EMBED_MODEL=OFF); give --model PATH", path);
#endif
    return LKV_ERR_NOTFOUND;
}
