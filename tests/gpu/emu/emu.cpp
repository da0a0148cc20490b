/* emu.cpp - runs CUDA-style kernels on host threads, one block at a time;
 * see include/emu.h. */
#include "emu.h"
#include <array>
#include <memory>
#include <mutex>

thread_local uint3e threadIdx, blockIdx;
dim3 blockDim, gridDim;

namespace {
struct Block {
    std::unique_ptr<std::barrier<>> bar;
    std::vector<std::unique_ptr<std::barrier<>>> wbar;
    std::vector<std::array<uint32_t, 32>> xbuf;
    std::vector<float> dyn;
};
Block *g_blk;
}

float *emu_dyn_smem() { return g_blk->dyn.data(); }
void __syncthreads() { g_blk->bar->arrive_and_wait(); }
void __syncwarp() { g_blk->wbar[threadIdx.x / 32]->arrive_and_wait(); }

static uint32_t xchg(uint32_t v, int o)
{
    int w = threadIdx.x / 32, l = threadIdx.x % 32;
    g_blk->xbuf[w][l] = v;
    g_blk->wbar[w]->arrive_and_wait();
    uint32_t r = g_blk->xbuf[w][l ^ o];
    g_blk->wbar[w]->arrive_and_wait();
    return r;
}
float __shfl_xor_sync(unsigned, float v, int o) { uint32_t b; memcpy(&b, &v, 4); b = xchg(b, o); float r; memcpy(&r, &b, 4); return r; }
int __shfl_xor_sync(unsigned, int v, int o) { return (int)xchg((uint32_t)v, o); }

void emu_run(dim3 grid, dim3 block, size_t smem, const std::function<void()> &body)
{
    unsigned nt = block.x * block.y * block.z;
    if (nt % 32 != 0 && nt > 32) { fprintf(stderr, "emu: block of %u threads\n", nt); abort(); }
    blockDim = block;
    gridDim  = grid;
    for (unsigned bz = 0; bz < grid.z; bz++)
    for (unsigned by = 0; by < grid.y; by++)
    for (unsigned bx = 0; bx < grid.x; bx++) {
        Block b;
        b.bar = std::make_unique<std::barrier<>>(nt);
        unsigned nw = (nt + 31) / 32;
        for (unsigned w = 0; w < nw; w++) b.wbar.push_back(std::make_unique<std::barrier<>>(std::min(32u, nt - 32 * w)));
        b.xbuf.resize(nw);
        b.dyn.assign(smem / 4 + 1, NAN);
        g_blk = &b;
        std::vector<std::thread> ts;
        for (unsigned t = 0; t < nt; t++) {
            ts.emplace_back([&, t]() {
                threadIdx = {t, 0, 0};
                blockIdx  = {bx, by, bz};
                body();
                b.wbar[t / 32]->arrive_and_drop();
                b.bar->arrive_and_drop();
            });
        }
        for (auto &th : ts) th.join();
        g_blk = nullptr;
    }
}
