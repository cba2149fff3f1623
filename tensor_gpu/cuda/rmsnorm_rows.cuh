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

// For each of the lane's channels c = lane + 32k in ascending order,
// store(c, load(c)), in groups of NORM_UNROLL: a group's loads are all
// issued before its stores (the stores may alias the loads' buffers, so the
// compiler would otherwise wait on each load in turn).
constexpr int NORM_UNROLL = 8;
template <typename V, class Load, class Store>
__device__ __forceinline__ void lane_channels(int C, int lane, Load load, Store store) {
    int c = lane;
    for (; c + (NORM_UNROLL - 1) * WARP < C; c += NORM_UNROLL * WARP) {
        V v[NORM_UNROLL];
#pragma unroll
        for (int u = 0; u < NORM_UNROLL; u++) v[u] = load(c + u * WARP);
#pragma unroll
        for (int u = 0; u < NORM_UNROLL; u++) store(c + u * WARP, v[u]);
    }
    for (; c < C; c += WARP) store(c, load(c));
}

// put(c, x[c] * s) for each channel, s = 1/sqrt(mean(x^2) + eps); *rstd = s
// (rstd may be NULL). The lane's squares are summed in channel order.
template <typename real, class Put>
__device__ __forceinline__ void warp_rmsnorm(const real *x, Put put, real *rstd, int C, int lane) {
    real ss = 0;
    lane_channels<real>(C, lane, [=](int c) { return x[c] * x[c]; }, [&](int, real p) { ss += p; });
    ss = warp_sum(ss);
    const real ms = ss * ((real)1 / (real)C);
    const real s = (real)1 / r_sqrt(ms + (real)RMSNORM_EPS);
    lane_channels<real>(C, lane, [=](int c) { return x[c] * s; }, put);
    if (rstd && lane == 0) *rstd = s;
}

// rmsnorm's backward of one row: g(c) = s*dy(c) - (s^3/C) (dy.x) x[c], dy(c)
// the output gradient of channel c (read twice), s the row's rstd; then
// put(c, fin(c, g(c))), fin's loads issued with the group's (fin: how g
// lands, e.g. added to the input gradient so far).
template <typename real, class Dy, class Fin, class Put>
__device__ __forceinline__ void warp_rmsnorm_backward(Dy dy, const real *x, real s, Fin fin, Put put, int C,
                                                      int lane) {
    real dot = 0;
    lane_channels<real>(C, lane, [=](int c) { return dy(c) * x[c]; }, [&](int, real p) { dot += p; });
    dot = warp_sum(dot);
    const real k = s * s * s * dot / (real)C;
    lane_channels<real>(C, lane, [=](int c) { return fin(c, s * dy(c) - k * x[c]); }, put);
}

}  // namespace mgpt

#endif
