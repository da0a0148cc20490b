/* cub.cuh - emulation shim (see emu.h): the CUB pieces cuda_sample.cu uses
 * (BlockScan, BlockReduce, stable segmented sort). */
#pragma once
#include "../emu.h"
namespace cub {
template <class T, int N> struct BlockScan {
    struct TempStorage { T buf[N]; };
    TempStorage &s;
    BlockScan(TempStorage &t) : s(t) {}
    void ExclusiveSum(T in, T &out, T &agg) {
        s.buf[threadIdx.x] = in;
        __syncthreads();
        T acc = 0, tot = 0;
        for (int i = 0; i < N; i++) { if (i < (int)threadIdx.x) acc += s.buf[i]; tot += s.buf[i]; }
        out = acc; agg = tot;
        __syncthreads();
    }
};
template <class T, int N> struct BlockReduce {
    struct TempStorage { T buf[N]; };
    TempStorage &s;
    BlockReduce(TempStorage &t) : s(t) {}
    template <class Op> T Reduce(T v, Op op) {
        s.buf[threadIdx.x] = v;
        __syncthreads();
        T r = s.buf[0];
        if (threadIdx.x == 0) for (int i = 1; i < N; i++) r = op(r, s.buf[i]);
        __syncthreads();
        return r;
    }
};
struct DeviceSegmentedRadixSort {
    template <class K, class V, class B, class E>
    static cudaError_t SortPairsDescending(void *temp, size_t &bytes, const K *ki, K *ko, const V *vi, V *vo,
                                           long n, long nseg, B beg, E end, int = 0, int = 32, cudaStream_t = 0) {
        if (temp == nullptr) { bytes = 16; return 0; }
        for (long sgi = 0; sgi < nseg; sgi++) {
            std::vector<std::pair<K, V>> v;
            for (long i = beg[sgi]; i < end[sgi]; i++) v.push_back({ki[i], vi[i]});
            std::stable_sort(v.begin(), v.end(), [](auto &a, auto &b) { return a.first > b.first; });
            for (size_t i = 0; i < v.size(); i++) { ko[beg[sgi] + i] = v[i].first; vo[beg[sgi] + i] = v[i].second; }
        }
        (void)n;
        return 0;
    }
};
}
