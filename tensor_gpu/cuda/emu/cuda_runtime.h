// A CPU stand-in for the few CUDA features that the tiled attention kernels
// (attention_tiled.cuh), the fused step (fused.cu) and the device helpers
// use, so that test_attn_emu.cc and tests/test_fused_emu.cc can run the
// kernels' own code without a GPU. Included instead of the real
// <cuda_runtime.h> (-Itensor_gpu/cuda/emu first); C++20, threads. The host
// API is what fused.cu's planning calls, answering as an H100 does (shared
// memory, cooperative launch); kernels run through the two launchers below.
//
// emu_launch(grid, threads, body) runs body once per CUDA thread of each
// block: one std::thread per CUDA thread, blocks one after another, with
// threadIdx and blockIdx set; emu_launch_cooperative runs the blocks side by
// side, each with its own shared memory, grid.sync() a barrier of all.
// __syncthreads is a barrier of the block's threads; __shfl_xor_sync a
// barrier of the warp's 32 threads around an exchange through memory (so
// every lane of a warp must call it, as on the GPU). Shared memory (emu_launch:
// one static buffer of 1 MiB; emu_launch_cooperative: each block's own) is
// filled with NaN (all bits set) before each block, so that reading an
// element no thread wrote shows up.
#ifndef TENSOR_GPU_CUDA_EMU_CUDA_RUNTIME_H
#define TENSOR_GPU_CUDA_EMU_CUDA_RUNTIME_H

#include <barrier>
#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__
#define __align__(n) __attribute__((aligned(n)))

typedef int cudaError_t;
typedef struct CUstream_st *cudaStream_t;
constexpr cudaError_t cudaSuccess = 0;

struct alignas(16) float4 { float x, y, z, w; };
struct alignas(16) double2 { double x, y; };
struct emu_dim3 { unsigned x, y, z; };

// the fused multiply-adds of device code (one rounding, as on the GPU)
inline float __fmaf_rn(float x, float y, float z) { return std::fma(x, y, z); }
inline double __fma_rn(double x, double y, double z) { return std::fma(x, y, z); }

namespace mgpt {
// the kernels' extern __shared__ array (block-scope extern declarations in
// namespace mgpt name this one)
constexpr size_t EMU_SMEM_BYTES = (size_t)1 << 20;
alignas(16) inline unsigned char smem_bytes[EMU_SMEM_BYTES];
}  // namespace mgpt

inline thread_local emu_dim3 threadIdx, blockIdx;
inline emu_dim3 blockDim, gridDim;

// the host API fused.cu's planning calls, with an H100's answers
struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
enum cudaDeviceAttr {
    cudaDevAttrMaxSharedMemoryPerBlockOptin,
    cudaDevAttrCooperativeLaunch,
    cudaDevAttrMaxSharedMemoryPerMultiprocessor,
    cudaDevAttrMultiProcessorCount
};
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize };
constexpr cudaError_t cudaErrorNotSupported = 801;
inline cudaError_t cudaGetDevice(int *dev) { return *dev = 0, cudaSuccess; }
inline cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr a, int) {
    switch (a) {
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *v = 232448; break;
    case cudaDevAttrCooperativeLaunch: *v = 1; break;
    case cudaDevAttrMaxSharedMemoryPerMultiprocessor: *v = 233472; break;
    case cudaDevAttrMultiProcessorCount: *v = 132; break;
    }
    return cudaSuccess;
}
inline cudaError_t cudaFuncSetAttribute(const void *, cudaFuncAttribute, int) { return cudaSuccess; }
inline cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int *n, const void *, int, size_t) {
    return *n = 1, cudaSuccess;
}
// the emulator runs a kernel through emu_launch, not through the runtime
inline cudaError_t cudaLaunchCooperativeKernel(const void *, dim3, dim3, void **, size_t, cudaStream_t) {
    return cudaErrorNotSupported;
}
inline cudaError_t cudaGetLastError() { return cudaSuccess; }

struct EmuBlock {
    std::barrier<> block;
    std::vector<std::unique_ptr<std::barrier<>>> warps;
    std::vector<double> lanes;   // the shuffles' exchange, one slot per thread
    explicit EmuBlock(int threads) : block(threads), lanes((size_t)threads) {
        for (int w = 0; w < threads / 32; w++) warps.push_back(std::make_unique<std::barrier<>>(32));
    }
};
inline thread_local EmuBlock *emu_block;   // the calling thread's block
// the calling thread's block's shared memory: emu_launch's one buffer
// (mgpt::smem_bytes), or a cooperative launch's block's own; a test that
// runs blocks side by side reaches it through mgpt::emu_block_smem()
inline thread_local unsigned char *emu_smem;
namespace mgpt {
inline unsigned char (*emu_block_smem())[] { return reinterpret_cast<unsigned char (*)[]>(emu_smem); }
}  // namespace mgpt
inline std::barrier<> *emu_grid_barrier;   // a cooperative launch's grid.sync()

inline void __syncthreads() { emu_block->block.arrive_and_wait(); }
inline void __syncwarp() { emu_block->warps[threadIdx.x / 32]->arrive_and_wait(); }

// float and double both travel through a double exactly
template <typename T> T __shfl_xor_sync(unsigned, T x, int o) {
    const unsigned tid = threadIdx.x, w = tid / 32, lane = tid % 32;
    emu_block->lanes[tid] = (double)x;
    emu_block->warps[w]->arrive_and_wait();
    const T y = (T)emu_block->lanes[w * 32 + (lane ^ (unsigned)o)];
    emu_block->warps[w]->arrive_and_wait();   // nobody overwrites a slot before it is read
    return y;
}

// Runs `body` as the kernel of a grid of `grid` blocks of `threads` threads
// (a multiple of 32): the threads are made once and take the blocks in
// order, a barrier between blocks.
inline void emu_launch(int grid, int threads, const std::function<void()> &body) {
    blockDim = {(unsigned)threads, 1, 1};
    gridDim = {(unsigned)grid, 1, 1};
    EmuBlock blk(threads);
    std::vector<std::thread> th;
    th.reserve((size_t)threads);
    for (int t = 0; t < threads; t++)
        th.emplace_back([t, grid, &blk, &body] {
            threadIdx = {(unsigned)t, 0, 0};
            emu_block = &blk;
            emu_smem = mgpt::smem_bytes;
            for (int b = 0; b < grid; b++) {
                if (t == 0) std::memset(mgpt::smem_bytes, 0xff, sizeof mgpt::smem_bytes);
                blockIdx = {(unsigned)b, 0, 0};
                blk.block.arrive_and_wait();   // shared memory poisoned before anyone starts
                body();
                blk.block.arrive_and_wait();   // the block done before the next one's poison
            }
        });
    for (auto &x : th) x.join();
}

// A cooperative launch: every block at once (grid x threads threads), each
// block with its own barriers and its own `smem` bytes of shared memory
// (poisoned with NaN), and a barrier of the whole grid for grid.sync().
inline void emu_launch_cooperative(int grid, int threads, size_t smem, const std::function<void()> &body) {
    blockDim = {(unsigned)threads, 1, 1};
    gridDim = {(unsigned)grid, 1, 1};
    std::vector<std::unique_ptr<EmuBlock>> blocks;
    std::vector<std::unique_ptr<unsigned char[]>> mem;
    for (int b = 0; b < grid; b++) {
        blocks.push_back(std::make_unique<EmuBlock>(threads));
        mem.emplace_back(new unsigned char[smem ? smem : 1]);   // 16-byte aligned (new's default)
        std::memset(mem.back().get(), 0xff, smem);
    }
    std::barrier<> whole(grid * threads);
    emu_grid_barrier = &whole;
    std::vector<std::thread> th;
    th.reserve((size_t)grid * threads);
    for (int b = 0; b < grid; b++)
        for (int t = 0; t < threads; t++)
            th.emplace_back([b, t, &blocks, &mem, &body] {
                threadIdx = {(unsigned)t, 0, 0};
                blockIdx = {(unsigned)b, 0, 0};
                emu_block = blocks[b].get();
                emu_smem = mem[b].get();
                body();
            });
    for (auto &x : th) x.join();
    emu_grid_barrier = nullptr;
}

#endif
