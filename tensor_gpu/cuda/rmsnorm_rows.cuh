// rmsnorm of one row by one warp, forward and backward, as the reference
// writes them: the arithmetic shared by kernels.cu (any precision) and
// mixed.cu (the recipe's kernels, which fuse a rounding into the row's
// input or output). Each lane touches only its own channels (c = lane + 32k
// streamed, 128k + 4 lane + e held in registers), so a lane may read what it
// has just written.
#ifndef TENSOR_GPU_CUDA_RMSNORM_ROWS_CUH
#define TENSOR_GPU_CUDA_RMSNORM_ROWS_CUH

#include <cstdint>
#include <type_traits>

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

// Rows held in registers: when C = 128 K (K = 1, 2 or 4), lane's channels
// are c = 128k + 4 lane + e (k < K, e < 4), all read at once with 16-byte
// loads where the row is aligned (element loads otherwise: the same values),
// so that a warp waits on global memory once per row, not once per group;
// the lane's sums run k, then e, ascending. Every kernel of a C takes the same
// path (the fused and the unfused rows agree bit for bit); other C stream.
__host__ __device__ constexpr int row_regs(int C) {
    return C == QUAD * WARP ? 1 : C == 2 * QUAD * WARP ? 2 : C == 4 * QUAD * WARP ? 4 : 0;
}
template <int K> using RowK = std::integral_constant<int, K>;
// fn(RowK<row_regs(C)>{}): the launch of a row kernel templated on K
template <class Fn> void with_row_regs(int C, Fn &&fn) {
    switch (row_regs(C)) {
    case 1: fn(RowK<1>{}); break;
    case 2: fn(RowK<2>{}); break;
    case 4: fn(RowK<4>{}); break;
    default: fn(RowK<0>{});
    }
}

// v[k][e] = row[128k + 4 lane + e]
template <int K, typename T> __device__ __forceinline__ void load_row(T (&v)[K][QUAD], const T *row, int lane) {
    const T *p = row + QUAD * lane;
    const bool vec = reinterpret_cast<uintptr_t>(row) % sizeof(Quad<T>) == 0;
#pragma unroll
    for (int k = 0; k < K; k++) {
        const T *q = p + k * QUAD * WARP;
        if (vec) {
            const Quad<T> w = *reinterpret_cast<const Quad<T> *>(q);
#pragma unroll
            for (int e = 0; e < QUAD; e++) v[k][e] = w.v[e];
        } else {
#pragma unroll
            for (int e = 0; e < QUAD; e++) v[k][e] = q[e];
        }
    }
}

// row[128k + 4 lane + e] = f(v[k][e])
template <int K, typename T, typename S, class F>
__device__ __forceinline__ void store_row(T *row, const S (&v)[K][QUAD], int lane, F f) {
    T *p = row + QUAD * lane;
    const bool vec = reinterpret_cast<uintptr_t>(row) % sizeof(Quad<T>) == 0;
#pragma unroll
    for (int k = 0; k < K; k++) {
        T *q = p + k * QUAD * WARP;
        Quad<T> w;
#pragma unroll
        for (int e = 0; e < QUAD; e++) w.v[e] = f(v[k][e]);
        if (vec) {
            *reinterpret_cast<Quad<T> *>(q) = w;
        } else {
#pragma unroll
            for (int e = 0; e < QUAD; e++) q[e] = w.v[e];
        }
    }
}
template <int K, typename T> __device__ __forceinline__ void store_row(T *row, const T (&v)[K][QUAD], int lane) {
    store_row(row, v, lane, [](T x) { return x; });
}

// fn(k, e) over the lane's channels in their order
template <int K, class Fn> __device__ __forceinline__ void each_quad(Fn fn) {
#pragma unroll
    for (int k = 0; k < K; k++)
#pragma unroll
        for (int e = 0; e < QUAD; e++) fn(k, e);
}

// 1/sqrt(mean(x^2) + eps) of a row in registers (warp_rmsnorm's arithmetic)
template <int K, typename real> __device__ __forceinline__ real row_rstd(const real (&x)[K][QUAD], int C) {
    real ss = 0;
    each_quad<K>([&](int k, int e) { ss += x[k][e] * x[k][e]; });
    ss = warp_sum(ss);
    const real ms = ss * ((real)1 / (real)C);
    return (real)1 / r_sqrt(ms + (real)RMSNORM_EPS);
}

// g = s*dy - (s^3/C) (dy.x) x in place of dy (warp_rmsnorm_backward's arithmetic)
template <int K, typename real>
__device__ __forceinline__ void row_rmsnorm_backward(real (&g)[K][QUAD], const real (&x)[K][QUAD], real s, int C) {
    real dot = 0;
    each_quad<K>([&](int k, int e) { dot += g[k][e] * x[k][e]; });
    dot = warp_sum(dot);
    const real kk = s * s * s * dot / (real)C;
    each_quad<K>([&](int k, int e) { g[k][e] = s * g[k][e] - kk * x[k][e]; });
}

}  // namespace mgpt

#endif
