// Device helpers shared by the CUDA kernel files (kernels.cu, attention.cu):
// the precision-overloaded math, the warp reductions and the grid sizes.
#ifndef TENSOR_GPU_CUDA_DEVICE_UTIL_CUH
#define TENSOR_GPU_CUDA_DEVICE_UTIL_CUH

#include <cuda_runtime.h>

#include <cmath>
#include <cstddef>
#include <string>

#include "tensor_gpu/cuda/cuda_check.cuh"

namespace mgpt {

#define FULL_MASK 0xffffffffu
constexpr int WARP = 32;
constexpr int ROW_THREADS = 128;   // warp-per-row kernels: 4 rows per block
constexpr int EW_THREADS = 256;    // elementwise kernels

__device__ __forceinline__ double r_exp(double x) { return exp(x); }
__device__ __forceinline__ float r_exp(float x) { return expf(x); }
__device__ __forceinline__ double r_log(double x) { return log(x); }
__device__ __forceinline__ float r_log(float x) { return logf(x); }
__device__ __forceinline__ double r_sqrt(double x) { return sqrt(x); }
__device__ __forceinline__ float r_sqrt(float x) { return sqrtf(x); }

// Four values of T as one aligned access (16 bytes for float, 8 for bf16/fp16)
constexpr int QUAD = 4;
template <typename T> struct alignas(QUAD * sizeof(T)) Quad { T v[QUAD]; };

template <typename real> __device__ __forceinline__ real neg_inf() { return -(real)INFINITY; }

// Butterfly reductions: every lane ends with the same bits (each level adds
// the same two values in either order, and IEEE addition commutes).
template <typename real> __device__ __forceinline__ real warp_sum(real x) {
    for (int o = WARP / 2; o > 0; o >>= 1) x += __shfl_xor_sync(FULL_MASK, x, o);
    return x;
}
template <typename real> __device__ __forceinline__ real warp_max(real x) {
    for (int o = WARP / 2; o > 0; o >>= 1) {
        real y = __shfl_xor_sync(FULL_MASK, x, o);
        x = y > x ? y : x;
    }
    return x;
}

static inline unsigned blocks_for(size_t threads, int per_block) {
    size_t b = (threads + (size_t)per_block - 1) / (size_t)per_block;
    if (b == 0) b = 1;
    if (b > 0x7fffffffu)
        throw CudaError("a launch of " + std::to_string(threads) + " threads is too large for one grid");
    return (unsigned)b;
}
static inline unsigned row_blocks(size_t rows) { return blocks_for(rows * WARP, ROW_THREADS); }
static inline unsigned ew_blocks(size_t count) {
    size_t b = (count + EW_THREADS - 1) / EW_THREADS;
    if (b > 65536) b = 65536;   // grid-stride loops cover the rest
    return b ? (unsigned)b : 1u;
}

}  // namespace mgpt

#endif
