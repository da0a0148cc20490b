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

bool fmt_builtin_model(const char *name, const uint8_t **data_p,
                       size_t *len_p)
{
#ifdef LKV_BUILTIN_GGUF
    if (strcmp(name, "stories260K") == 0) {
        *data_p = lkv_builtin_stories260k;
        *len_p  = (size_t)(lkv_builtin_stories260k_end -
                          lkv_builtin_stories260k);
        return true;
    }
#else
    (void)name;
    (void)data_p;
    (void)len_p;
#endif
    return false;
}
