/* kern_backend.c - backend registry, dtype helpers; see kernels.h. */
#define LKV_LOG_MODULE "kern"

#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "kernels/kernels.h"

size_t lkv_dtype_size(lkv_dtype_t dtype)
{
    return dtype == LKV_DTYPE_F32 ? 4 : 2;
}

const char *lkv_dtype_name(lkv_dtype_t dtype)
{
    switch (dtype) {
    case LKV_DTYPE_F32:
        return "f32";
    case LKV_DTYPE_F16:
        return "f16";
    case LKV_DTYPE_BF16:
        return "bf16";
    }
    return "?";
}

float lkv_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp  = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    uint32_t bits;
    float    f;

    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else { /* subnormal: renormalise */
            exp = 127 - 15 + 1;
            while ((mant & 0x400) == 0) {
                mant <<= 1;
                exp--;
            }
            mant &= 0x3ff;
            bits = sign | (exp << 23) | (mant << 13);
        }
    } else if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    memcpy(&f, &bits, sizeof(f));
    return f;
}

uint16_t lkv_f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof(x));
    uint32_t sign = (x >> 16) & 0x8000;
    int32_t  exp  = (int32_t)((x >> 23) & 0xff) - 127 + 15;
    uint32_t mant = x & 0x7fffff;

    if (((x >> 23) & 0xff) == 0xff) { /* inf / nan */
        return (uint16_t)(sign | 0x7c00 | (mant ? 0x200 : 0));
    }
    if (exp >= 0x1f) {
        return (uint16_t)(sign | 0x7c00);
    }
    if (exp <= 0) {
        if (exp < -10) {
            return (uint16_t)sign;
        }
        mant |= 0x800000;
        uint32_t shift = (uint32_t)(14 - exp);
        uint32_t half  = 1u << (shift - 1);
        uint32_t rest  = mant & ((1u << shift) - 1);
        uint32_t r     = mant >> shift;
        if (rest > half || (rest == half && (r & 1))) {
            r++;
        }
        return (uint16_t)(sign | r);
    }
    uint32_t r    = (uint32_t)(exp << 10) | (mant >> 13);
    uint32_t rest = mant & 0x1fff;
    if (rest > 0x1000 || (rest == 0x1000 && (r & 1))) {
        r++; /* may carry into the exponent, which is correct */
    }
    return (uint16_t)(sign | r);
}

float lkv_bf16_to_f32(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float    f;

    memcpy(&f, &bits, sizeof(f));
    return f;
}

uint16_t lkv_f32_to_bf16(float f)
{
    uint32_t x;

    memcpy(&x, &f, sizeof(x));
    if ((x & 0x7fffffff) > 0x7f800000) { /* nan: keep it quiet */
        return (uint16_t)((x >> 16) | 0x40);
    }
    x += 0x7fff + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

lkv_kern_config_t lkv_kern_config_default(void)
{
    lkv_kern_config_t cfg;

    memset(&cfg, 0, sizeof(cfg));
    return cfg;
}

const char *lkv_kern_backend_list(void)
{
#ifdef LKV_HAVE_CUDA
    return "cpu, cuda";
#else
    return "cpu";
#endif
}

lkv_status_t lkv_kern_backend_open(const char *name,
                                   const lkv_kern_config_t *cfg,
                                   lkv_kern_backend_t **be_p)
{
    const lkv_kern_ops_t *ops = NULL;
    lkv_kern_backend_t   *be;
    lkv_status_t          st;

    if (name == NULL || strcmp(name, "cpu") == 0) {
        ops = &lkv_kern_cpu_ops;
    }
#ifdef LKV_HAVE_CUDA
    else if (strcmp(name, "cuda") == 0) {
        ops = &lkv_kern_cuda_ops;
    }
#endif
    if (ops == NULL) {
        LKV_LOG_ERROR("backend '%s' is not compiled into this binary "
                      "(available: %s)",
                      name, lkv_kern_backend_list());
        return LKV_ERR_NOTFOUND;
    }
    be = calloc(1, sizeof(*be));
    if (be == NULL) {
        return LKV_ERR_NOMEM;
    }
    be->ops = ops;
    be->cfg = cfg != NULL ? *cfg : lkv_kern_config_default();
    st      = ops->open(be, &be->cfg);
    if (st != LKV_OK) {
        free(be);
        return st;
    }
    *be_p = be;
    return LKV_OK;
}

void lkv_kern_backend_close(lkv_kern_backend_t **be_p)
{
    if (be_p == NULL || *be_p == NULL) {
        return;
    }
    (*be_p)->ops->close(*be_p);
    free(*be_p);
    *be_p = NULL;
}
