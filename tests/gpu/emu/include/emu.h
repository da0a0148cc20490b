/* emu.h - host emulation of the CUDA subset kernels/cuda/ uses, so the
 * kernels' logic (indexing, masking, online softmax, tickets, sampling) can
 * be checked against the CPU backend on a machine without a GPU.
 *
 * Model: "device" memory is host memory, streams and events are no-ops (all
 * work is synchronous), a launch runs its blocks one after another and each
 * block's threads as real threads with barriers for __syncthreads/__syncwarp
 * and warp shuffles. It proves nothing about performance, the memory model
 * or warp divergence; tests/gpu/run.sh on a real GPU is the real check.
 * Used only by tests/gpu/emu/run.sh (g++ -std=c++20). */
#pragma once
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>
#include <algorithm>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(x)
#define __restrict__
#define __shared__ static

struct dim3 { unsigned x, y, z; dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {} };
struct uint3e { unsigned x, y, z; };
extern thread_local uint3e threadIdx, blockIdx;
extern dim3 blockDim, gridDim;

typedef int cudaError_t;
enum { cudaSuccess = 0, cudaErrorNotReady = 600, cudaErrorInvalidValue = 1, cudaErrorMemoryAllocation = 2 };
typedef void *cudaStream_t;
typedef void *cudaEvent_t;
enum cudaMemcpyKind { cudaMemcpyHostToHost, cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice, cudaMemcpyDefault };
enum { cudaStreamNonBlocking = 1, cudaEventDisableTiming = 2, cudaHostAllocDefault = 0, cudaHostAllocPortable = 1, cudaHostAllocMapped = 2 };
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount, cudaDevAttrMaxSharedMemoryPerBlockOptin };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize };
enum cudaMemoryType { cudaMemoryTypeUnregistered, cudaMemoryTypeHost, cudaMemoryTypeDevice };
struct cudaPointerAttributes { cudaMemoryType type; void *devicePointer; };
struct cudaDeviceProp { char name[256]; size_t totalGlobalMem; };
struct uint4 { unsigned x, y, z, w; };
struct float4 { float x, y, z, w; };
struct float2 { float x, y; };

inline const char *cudaGetErrorString(cudaError_t) { return "emu error"; }
inline const char *cudaGetErrorName(cudaError_t) { return "emuError"; }
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline cudaError_t cudaGetDeviceCount(int *n) { *n = 1; return 0; }
inline cudaError_t cudaSetDevice(int) { return 0; }
inline cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr a, int) { *v = a == cudaDevAttrMultiProcessorCount ? 4 : 227 * 1024; return 0; }
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int) { strcpy(p->name, "emu"); p->totalGlobalMem = 1ull << 34; return 0; }
inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, int) { *s = malloc(1); return 0; }
inline cudaError_t cudaStreamDestroy(cudaStream_t s) { free(s); return 0; }
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return 0; }
inline cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t, int) { return 0; }
inline cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, int) { *e = malloc(1); return 0; }
inline cudaError_t cudaEventDestroy(cudaEvent_t e) { free(e); return 0; }
inline cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t) { return 0; }
inline cudaError_t cudaEventSynchronize(cudaEvent_t) { return 0; }
inline cudaError_t cudaEventQuery(cudaEvent_t) { return 0; }
inline cudaError_t cudaMalloc(void **p, size_t n) { *p = aligned_alloc(256, (n + 255) / 256 * 256); memset(*p, 0xA5, n); return 0; }
inline cudaError_t cudaMallocAsync(void **p, size_t n, cudaStream_t) { return cudaMalloc(p, n); }
inline cudaError_t cudaFree(void *p) { free(p); return 0; }
inline cudaError_t cudaFreeAsync(void *p, cudaStream_t) { free(p); return 0; }
inline cudaError_t cudaHostAlloc(void **p, size_t n, int) { return cudaMalloc(p, n); }
inline cudaError_t cudaFreeHost(void *p) { free(p); return 0; }
inline cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, cudaMemcpyKind, cudaStream_t) { memmove(d, s, n); return 0; }
inline cudaError_t cudaMemsetAsync(void *d, int v, size_t n, cudaStream_t) { memset(d, v, n); return 0; }
inline cudaError_t cudaPointerGetAttributes(cudaPointerAttributes *, const void *) { return cudaErrorInvalidValue; }
template <class F> cudaError_t cudaFuncSetAttribute(F, cudaFuncAttribute, int) { return 0; }

// ---- half types (bit-exact RNE) ----
struct __nv_bfloat16 { uint16_t x; };
struct __half { uint16_t x; };
struct __nv_bfloat162 { __nv_bfloat16 a, b; };
struct __half2 { __half a, b; };
extern "C" float lkv_f16_to_f32(uint16_t h);
extern "C" uint16_t lkv_f32_to_f16(float f);
extern "C" float lkv_bf16_to_f32(uint16_t h);
extern "C" uint16_t lkv_f32_to_bf16(float f);
inline float __bfloat162float(__nv_bfloat16 h) { return lkv_bf16_to_f32(h.x); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return {lkv_f32_to_bf16(f)}; }
inline float __half2float(__half h) { return lkv_f16_to_f32(h.x); }
inline __half __float2half_rn(float f) { return {lkv_f32_to_f16(f)}; }
inline float2 __bfloat1622float2(__nv_bfloat162 v) { return {__bfloat162float(v.a), __bfloat162float(v.b)}; }
inline float2 __half22float2(__half2 v) { return {__half2float(v.a), __half2float(v.b)}; }
typedef uint16_t CUDA_R_16BF_t;

// ---- device intrinsics ----
template <class T> inline T __ldg(const T *p) { return *p; }
template <class T> inline T __ldcg(const T *p) { return *(const volatile T *)p; }
using std::min; using std::max;
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline unsigned atomicAdd(unsigned *p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
void __syncthreads();
void __syncwarp();
float __shfl_xor_sync(unsigned, float v, int o);
int __shfl_xor_sync(unsigned, int v, int o);
float *emu_dyn_smem();

// ---- launching ----
void emu_run(dim3 grid, dim3 block, size_t smem, const std::function<void()> &body);
struct emu_launch {
    dim3 g, b; size_t smem;
    emu_launch(dim3 g_, dim3 b_, size_t s = 0, cudaStream_t = nullptr) : g(g_), b(b_), smem(s) {}
    template <class F, class... A> void operator()(F f, A... a) { emu_run(g, b, smem, [&]() { f(a...); }); }
};
