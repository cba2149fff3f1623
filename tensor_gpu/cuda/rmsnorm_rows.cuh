// rmsnorm of one row by one warp, forward and backward, as the reference
// writes them: the arithmetic shared by kernels.cu (any precision) and
// mixed.cu (the recipe's kernels, which fuse a rounding into the row's
// input or output). Each lane touches only its own channels c = lane + 32k,
// so a lane may read what it has just written.
#ifndef TENSOR_GPU_CUDA_RMSNORM_ROWS_CUH
#define TENSOR_GPU_CUDA_RMSNORM_ROWS_CUH

#include "tensor_gpu/cuda/device_util.cuh"

extern "C" {
#include "tensor_gpu/layers.h"   // RMSNORM_EPS
}

namespace mgpt {

// put(c, x[c] * s) for each channel, s = 1/sqrt(mean(x^2) + eps); *rstd = s
// (rstd may be NULL).
template <typename real, class Put>
__device__ __forceinline__ void warp_rmsnorm(const real *x, Put put, real *rstd, int C, int lane) {
    real ss = 0;
    for (int c = lane; c < C; c += WARP) ss += x[c] * x[c];
    ss = warp_sum(ss);
    const real ms = ss * ((real)1 / (real)C);
    const real s = (real)1 / r_sqrt(ms + (real)RMSNORM_EPS);
    for (int c = lane; c < C; c += WARP) put(c, x[c] * s);
    if (rstd && lane == 0) *rstd = s;
}

// put(c, g) with g = s*dy[c] - (s^3/C) (dy.x) x[c] for each channel; dy(c)
// the output gradient of channel c (read twice), s the row's rstd.
template <typename real, class Dy, class Put>
__device__ __forceinline__ void warp_rmsnorm_backward(Dy dy, const real *x, real s, Put put, int C, int lane) {
    real dot = 0;
    for (int c = lane; c < C; c += WARP) dot += dy(c) * x[c];
    dot = warp_sum(dot);
    const real k = s * s * s * dot / (real)C;
    for (int c = lane; c < C; c += WARP) put(c, s * dy(c) - k * x[c]);
}

}  // namespace mgpt

#endif
