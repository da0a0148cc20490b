/* cpu_elementwise.c - CPU backend row-wise ops: embedding, rmsnorm, add,
 * rope, kv_write, swiglu, gather_rows, and dtype conversion helpers.
 *
 * These are memory-light next to matmul and attention and run on the
 * caller's thread. Threading: one caller at a time (kernels.h).
 */
#define LKV_LOG_MODULE "kern.cpu"

#include <math.h>
#include <string.h>

#include "common/log.h"
#include "kernels/cpu/cpu_impl.h"

void lkv_cpu_convert_row(int simd, float *dst, const void *src, lkv_dtype_t dt,
                         size_t n)
{
    if (simd && dt != LKV_DTYPE_F32) {
        lkv_cpu_convert_row_avx512(dst, src, dt, n);
        return;
    }
    switch (dt) {
    case LKV_DTYPE_F32:
        memcpy(dst, src, n * sizeof(float));
        break;
    case LKV_DTYPE_F16: {
        const uint16_t *s = src;
        for (size_t i = 0; i < n; i++) {
            dst[i] = lkv_f16_to_f32(s[i]);
        }
        break;
    }
    case LKV_DTYPE_BF16: {
        const uint16_t *s = src;
        for (size_t i = 0; i < n; i++) {
            uint32_t bits = (uint32_t)s[i] << 16;
            memcpy(&dst[i], &bits, sizeof(float));
        }
        break;
    }
    }
}

static void store_row(void *dst, lkv_dtype_t dt, const float *src, size_t n)
{
    switch (dt) {
    case LKV_DTYPE_F32:
        memcpy(dst, src, n * sizeof(float));
        break;
    case LKV_DTYPE_F16: {
        uint16_t *d = dst;
        for (size_t i = 0; i < n; i++) {
            d[i] = lkv_f32_to_f16(src[i]);
        }
        break;
    }
    case LKV_DTYPE_BF16: {
        uint16_t *d = dst;
        for (size_t i = 0; i < n; i++) {
            d[i] = lkv_f32_to_bf16(src[i]);
        }
        break;
    }
    }
}

lkv_status_t lkv_cpu_embedding(lkv_kern_backend_t *be, float *out,
                               const void *table, lkv_dtype_t dtype,
                               const int32_t *ids, int n, int dim)
{
    size_t esz;
    int    simd;

    if (n == 0) {
        return LKV_OK;
    }
    if (out == NULL || table == NULL || ids == NULL || n < 0 || dim <= 0 ||
        !lkv_cpu_dtype_ok(dtype)) {
        return LKV_ERR_INVALID;
    }
    esz  = lkv_dtype_size(dtype);
    simd = lkv_cpu_impl(be) != NULL && lkv_cpu_impl(be)->have_avx512;
    for (int i = 0; i < n; i++) {
        if (ids[i] < 0) {
            LKV_LOG_ERROR("embedding: token id %d at row %d is negative",
                          ids[i], i);
            return LKV_ERR_INVALID;
        }
    }
    for (int i = 0; i < n; i++) {
        const char *row = (const char *)table + (size_t)ids[i] * dim * esz;
        lkv_cpu_convert_row(simd, out + (size_t)i * dim, row, dtype,
                            (size_t)dim);
    }
    return LKV_OK;
}

lkv_status_t lkv_cpu_rmsnorm(lkv_kern_backend_t *be, float *y, const float *x,
                             const void *w, lkv_dtype_t dtype, int n, int dim,
                             float eps)
{
    if (n == 0) {
        return LKV_OK;
    }
    if (y == NULL || x == NULL || w == NULL || n < 0 || dim <= 0 ||
        !lkv_cpu_dtype_ok(dtype) || !(eps >= 0.0f)) {
        return LKV_ERR_INVALID;
    }
    for (int t = 0; t < n; t++) {
        const float *xr    = x + (size_t)t * dim;
        float       *yr    = y + (size_t)t * dim;
        float        ss[8] = {0};
        float        sum, scale;
        int          i = 0;

        for (; i + 8 <= dim; i += 8) {
            for (int j = 0; j < 8; j++) {
                ss[j] += xr[i + j] * xr[i + j];
            }
        }
        sum = 0.0f;
        for (; i < dim; i++) {
            sum += xr[i] * xr[i];
        }
        for (int j = 0; j < 8; j++) {
            sum += ss[j];
        }
        scale = 1.0f / sqrtf(sum / (float)dim + eps);
        if (dtype == LKV_DTYPE_F32) {
            const float *wf = w;
            for (i = 0; i < dim; i++) {
                yr[i] = xr[i] * scale * wf[i];
            }
        } else {
            for (i = 0; i < dim; i++) {
                yr[i] = xr[i] * scale * lkv_cpu_load(w, dtype, (size_t)i);
            }
        }
    }
    return LKV_OK;
}

lkv_status_t lkv_cpu_add(lkv_kern_backend_t *be, float *y, const float *a,
                         const float *b, size_t n_elems)
{
    if (n_elems == 0) {
        return LKV_OK;
    }
    if (y == NULL || a == NULL || b == NULL) {
        return LKV_ERR_INVALID;
    }
    for (size_t i = 0; i < n_elems; i++) {
        y[i] = a[i] + b[i];
    }
    return LKV_OK;
}

lkv_status_t lkv_cpu_rope(lkv_kern_backend_t *be, float *x, const int32_t *pos,
                          int n, int n_heads, int head_dim, int rot_dim,
                          lkv_rope_style_t style, const float *inv_freq)
{
    int half;

    if (n == 0) {
        return LKV_OK;
    }
    if (x == NULL || pos == NULL || inv_freq == NULL || n < 0 || n_heads <= 0 ||
        head_dim <= 0 || rot_dim < 0 || rot_dim > head_dim ||
        (rot_dim & 1) != 0 ||
        (style != LKV_ROPE_ADJACENT && style != LKV_ROPE_HALVES)) {
        return LKV_ERR_INVALID;
    }
    half = rot_dim / 2;
    for (int t = 0; t < n; t++) {
        float *xt = x + (size_t)t * n_heads * head_dim;
        float  p  = (float)pos[t];

        for (int i = 0; i < half; i++) {
            float theta = p * inv_freq[i];
            float c     = cosf(theta);
            float s     = sinf(theta);
            int   i0    = style == LKV_ROPE_ADJACENT ? 2 * i : i;
            int   i1    = style == LKV_ROPE_ADJACENT ? 2 * i + 1 : i + half;

            for (int h = 0; h < n_heads; h++) {
                float *xh = xt + (size_t)h * head_dim;
                float  a  = xh[i0];
                float  b  = xh[i1];

                xh[i0] = a * c - b * s;
                xh[i1] = a * s + b * c;
            }
        }
    }
    return LKV_OK;
}

lkv_status_t lkv_cpu_kv_write(lkv_kern_backend_t *be, void *kv_pool,
                              lkv_dtype_t kv_dtype, const int32_t *slots,
                              const float *k, const float *v, int n,
                              int n_kv_heads, int head_dim, int block_size)
{
    size_t row, block_elems, esz;

    if (n == 0) {
        return LKV_OK;
    }
    if (kv_pool == NULL || slots == NULL || k == NULL || v == NULL || n < 0 ||
        n_kv_heads <= 0 || head_dim <= 0 || block_size <= 0 ||
        !lkv_cpu_dtype_ok(kv_dtype)) {
        return LKV_ERR_INVALID;
    }
    row         = (size_t)n_kv_heads * head_dim;
    block_elems = 2 * (size_t)block_size * row;
    esz         = lkv_dtype_size(kv_dtype);
    for (int i = 0; i < n; i++) {
        size_t blk, off, base;

        if (slots[i] < 0) {
            continue;
        }
        blk  = (size_t)slots[i] / (size_t)block_size;
        off  = (size_t)slots[i] % (size_t)block_size;
        base = blk * block_elems + off * row;
        store_row((char *)kv_pool + base * esz, kv_dtype, k + (size_t)i * row,
                  row);
        store_row((char *)kv_pool + (base + (size_t)block_size * row) * esz,
                  kv_dtype, v + (size_t)i * row, row);
    }
    return LKV_OK;
}

lkv_status_t lkv_cpu_swiglu(lkv_kern_backend_t *be, float *out,
                            const float *gate, const float *up, size_t n_elems)
{
    if (n_elems == 0) {
        return LKV_OK;
    }
    if (out == NULL || gate == NULL || up == NULL) {
        return LKV_ERR_INVALID;
    }
    for (size_t i = 0; i < n_elems; i++) {
        float g = gate[i];
        out[i]  = g / (1.0f + expf(-g)) * up[i];
    }
    return LKV_OK;
}

lkv_status_t lkv_cpu_gather_rows(lkv_kern_backend_t *be, float *dst,
                                 const float *src, const int32_t *idx, int n,
                                 int width)
{
    if (n == 0) {
        return LKV_OK;
    }
    if (dst == NULL || src == NULL || idx == NULL || n < 0 || width <= 0) {
        return LKV_ERR_INVALID;
    }
    for (int i = 0; i < n; i++) {
        if (idx[i] < 0) {
            LKV_LOG_ERROR("gather_rows: index %d at row %d is negative", idx[i],
                          i);
            return LKV_ERR_INVALID;
        }
    }
    for (int i = 0; i < n; i++) {
        memmove(dst + (size_t)i * width, src + (size_t)idx[i] * width,
                (size_t)width * sizeof(float));
    }
    return LKV_OK;
}
