/* kern_cpu.c - the CPU backend's ops table (reference backend). Placeholder
 * until the kernels land; see kernels.h. */
#include <stdlib.h>

#include "kernels/kernels.h"

static lkv_status_t cpu_open(lkv_kern_backend_t *be,
                             const lkv_kern_config_t *cfg)
{
    return LKV_OK;
}

static void cpu_close(lkv_kern_backend_t *be)
{
}

const lkv_kern_ops_t lkv_kern_cpu_ops = {
    .name  = "cpu",
    .open  = cpu_open,
    .close = cpu_close,
};
