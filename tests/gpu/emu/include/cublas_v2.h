/* cublas_v2.h - emulation shim (see emu.h): naive column-major GEMMs with
 * double accumulation implementing the documented cuBLAS semantics. */
#pragma once
#include "emu.h"
typedef int cublasStatus_t;
typedef void *cublasHandle_t;
enum { CUBLAS_STATUS_SUCCESS = 0, CUBLAS_STATUS_NOT_INITIALIZED, CUBLAS_STATUS_ALLOC_FAILED, CUBLAS_STATUS_INVALID_VALUE, CUBLAS_STATUS_ARCH_MISMATCH, CUBLAS_STATUS_EXECUTION_FAILED, CUBLAS_STATUS_NOT_SUPPORTED };
typedef enum { CUBLAS_OP_N, CUBLAS_OP_T } cublasOperation_t;
typedef enum { CUDA_R_32F, CUDA_R_16F, CUDA_R_16BF } cudaDataType;
typedef enum { CUBLAS_COMPUTE_32F } cublasComputeType_t;
enum { CUBLAS_GEMM_DEFAULT = -1 };
inline cublasStatus_t cublasCreate(cublasHandle_t *h) { *h = malloc(1); return 0; }
inline cublasStatus_t cublasDestroy(cublasHandle_t h) { free(h); return 0; }
inline cublasStatus_t cublasSetStream(cublasHandle_t, cudaStream_t) { return 0; }
inline float emu_ld(const void *p, cudaDataType t, size_t i) {
    if (t == CUDA_R_32F) return ((const float *)p)[i];
    if (t == CUDA_R_16F) return lkv_f16_to_f32(((const uint16_t *)p)[i]);
    return lkv_bf16_to_f32(((const uint16_t *)p)[i]);
}
// column-major C(m,n) = alpha op(A) op(B) + beta C
inline cublasStatus_t cublasGemmEx(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
    const void *alpha, const void *A, cudaDataType at, int lda, const void *B, cudaDataType bt, int ldb,
    const void *beta, void *C, cudaDataType, int ldc, cublasComputeType_t, int) {
    float al = *(const float *)alpha, be = *(const float *)beta;
    for (int j = 0; j < n; j++) for (int i = 0; i < m; i++) {
        double s = 0;
        for (int l = 0; l < k; l++) {
            float a = ta == CUBLAS_OP_N ? emu_ld(A, at, (size_t)l * lda + i) : emu_ld(A, at, (size_t)i * lda + l);
            float b = tb == CUBLAS_OP_N ? emu_ld(B, bt, (size_t)j * ldb + l) : emu_ld(B, bt, (size_t)l * ldb + j);
            s += (double)a * b;
        }
        float *c = (float *)C + (size_t)j * ldc + i;
        *c = al * (float)s + (be != 0 ? be * *c : 0.0f);
    }
    return 0;
}
inline cublasStatus_t cublasSgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
    const float *alpha, const float *A, int lda, const float *B, int ldb, const float *beta, float *C, int ldc) {
    return cublasGemmEx(h, ta, tb, m, n, k, alpha, A, CUDA_R_32F, lda, B, CUDA_R_32F, ldb, beta, C, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F, 0);
}
