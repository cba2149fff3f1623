// The tiled attention kernels (attention.cu has the design and which shapes
// take them): device code only, so that test_attn_emu.cc can also run it on
// the CPU under tensor_gpu/cuda/emu/ (no GPU needed).
#ifndef TENSOR_GPU_CUDA_ATTENTION_TILED_CUH
#define TENSOR_GPU_CUDA_ATTENTION_TILED_CUH

#include <cstddef>
#include <type_traits>

#include "tensor_gpu/cuda/device_util.cuh"

namespace mgpt {

// tiled: one block per (document, head), the head in shared memory

// How a kernel's outputs (out; dq, dk, dv) are stored: as they are (Same),
// or converted by the recipe's functor for L (lowp_out.cuh), which saves the
// mixed path a conversion pass. Accumulating (acc) needs Same.
template <typename real> struct Same {
    using T = real;
    __device__ real operator()(real x) const { return x; }
};
template <typename real, class Out> constexpr bool same_out = std::is_same<typename Out::T, real>::value;

constexpr int TILE = 4;              // each thread's register tile: TILE x TILE outputs
constexpr int TILED_THREADS = 256;   // the most threads per block

__host__ __device__ __forceinline__ int pad4(int x) { return (x + TILE - 1) / TILE * TILE; }

// The shared-memory geometry of a head: P rows (T padded to TILE); L the
// row stride of a (P, HS) matrix, S of a (P, P) matrix: odd strides, so that
// a warp reading one column of different rows spreads over the banks.
struct TileDims {
    int P, L, S;
    __host__ __device__ TileDims(int T, int HS) : P(pad4(T)), L(pad4(HS) + 1), S(pad4(T) + 1) {}
};

// The document's length, clamped to [0, T] (a longer n would index past the block).
__device__ __forceinline__ int doc_len(const int *n, int b, int T) {
    const int nb = n[b];
    return nb < 0 ? 0 : (nb > T ? T : nb);
}

// put(r, c, get(r, c)) for r < rows, c < cols, the block's threads over the
// elements in order (neighbouring threads, neighbouring columns), each with
// LOAD_UNROLL loads in flight before it stores them (the copies are bound by
// the latency of global memory). (r, c) are stepped, not divided. X: a real
// or a 16-byte vector of them.
constexpr int LOAD_UNROLL = 4;
template <typename X, typename Get, typename Put>
__device__ __forceinline__ void load_matrix(int rows, int cols, Get get, Put put) {
    const int count = rows * cols, st = blockDim.x;
    if (count == 0) return;
    const int dr = st / cols, dc = st % cols;
    int r = threadIdx.x / cols, c = threadIdx.x % cols;
    for (int i0 = threadIdx.x; i0 < count; i0 += LOAD_UNROLL * st) {
        X x[LOAD_UNROLL];
        int rr[LOAD_UNROLL], cc[LOAD_UNROLL];
#pragma unroll
        for (int u = 0; u < LOAD_UNROLL; u++) {
            rr[u] = r;
            cc[u] = c;
            x[u] = r < rows ? get(r, c) : X{};
            r += dr;
            c += dc;
            if (c >= cols) {
                c -= cols;
                r++;
            }
        }
#pragma unroll
        for (int u = 0; u < LOAD_UNROLL; u++)
            if (i0 + u * st < count) put(rr[u], cc[u], x[u]);
    }
}

// 16-byte loads: N reals at a time, where the rows allow it.
template <typename real> struct Vec16;
template <> struct Vec16<float> {
    using V = float4;
    static constexpr int N = 4;
    __device__ static float at(const V &v, int e) { return e == 0 ? v.x : e == 1 ? v.y : e == 2 ? v.z : v.w; }
};
template <> struct Vec16<double> {
    using V = double2;
    static constexpr int N = 2;
    __device__ static double at(const V &v, int e) { return e == 0 ? v.x : v.y; }
};
// rows starting at src with a stride of ld reals are all 16-byte aligned
template <typename real> __device__ __forceinline__ bool aligned16(const real *src, size_t ld) {
    return (reinterpret_cast<size_t>(src) % 16 == 0) && ld % Vec16<real>::N == 0;
}

// dst (P, L) = rows [0, nb) of the head slice src (row stride ld, HS
// columns); 0 in rows nb..pad4(nb)-1 and columns HS..pad4(HS)-1, which
// whole tiles read. Rows from pad4(nb) on are never read. 16-byte loads when
// HS is a multiple of 4 (no padding columns) and the rows are aligned.
template <typename real>
__device__ void load_head(real *dst, const real *src, int ld, int nb, int HS, const TileDims &d) {
    using W = Vec16<real>;
    if (HS % TILE == 0 && aligned16(src, ld)) {
        load_matrix<typename W::V>(
            pad4(nb), HS / W::N,
            [=](int r, int c) {
                return r < nb ? *reinterpret_cast<const typename W::V *>(src + (size_t)r * ld + c * W::N)
                              : typename W::V{};
            },
            [=](int r, int c, const typename W::V &x) {
#pragma unroll
                for (int e = 0; e < W::N; e++) dst[r * d.L + c * W::N + e] = W::at(x, e);
            });
        return;
    }
    load_matrix<real>(
        pad4(nb), pad4(HS), [=](int r, int c) { return r < nb && c < HS ? src[(size_t)r * ld + c] : (real)0; },
        [=](int r, int c, real x) { dst[r * d.L + c] = x; });
}

// dst (P, S) = the causal part (s <= t < nb) of the (T, T) matrix src; 0
// elsewhere up to pad4(nb) (above the diagonal, padded rows), so that
// products over s or t may run over whole tiles. 16-byte loads when T is a
// multiple of 4 and src aligned: they read the whole of rows t < nb up to
// pad4(nb) <= T, so those must have been written (att is whole; the dpre
// scratch's rows t < n[b] are written whole by the dq kernel).
template <typename real>
__device__ void load_causal(real *dst, const real *src, int T, int nb, const TileDims &d) {
    using W = Vec16<real>;
    if (T % TILE == 0 && aligned16(src, (size_t)T)) {
        load_matrix<typename W::V>(
            pad4(nb), pad4(nb) / W::N,
            [=](int t, int c) {
                return t < nb ? *reinterpret_cast<const typename W::V *>(src + (size_t)t * T + c * W::N)
                              : typename W::V{};
            },
            [=](int t, int c, const typename W::V &x) {
#pragma unroll
                for (int e = 0; e < W::N; e++) {
                    const int s = c * W::N + e;
                    dst[t * d.S + s] = t < nb && s <= t ? W::at(x, e) : (real)0;
                }
            });
        return;
    }
    load_matrix<real>(
        pad4(nb), pad4(nb), [=](int t, int s) { return t < nb && s <= t ? src[(size_t)t * T + s] : (real)0; },
        [=](int t, int s, real x) { dst[t * d.S + s] = x; });
}

// Tile row k of NT in the order 0, NT-1, 1, NT-2, ...: neighbouring threads
// (one warp) pair a row with few causal keys and one with many.
__device__ __forceinline__ int balanced_row(int k, int NT) { return k % 2 == 0 ? k / 2 : NT - 1 - k / 2; }

// The tile (ti, si) of number idx on or below the diagonal: idx = ti(ti+1)/2 + si, si <= ti.
__device__ __forceinline__ void lower_tile(int idx, int &ti, int &si) {
    int r = (int)((sqrtf(8.0f * (float)idx + 1.0f) - 1.0f) * 0.5f);
    while (r * (r + 1) / 2 > idx) r--;
    while ((r + 1) * (r + 2) / 2 <= idx) r++;
    ti = r;
    si = idx - r * (r + 1) / 2;
}

// The lower tiles of a product of NT tile rows (the tiles on or below the diagonal).
__host__ __device__ __forceinline__ int lower_tiles(int NT) { return NT * (NT + 1) / 2; }

// The compact layouts: when every thread of the block holds at most one tile
// of a product (decided by T and the block's size, never by n[b], so that
// the host sizes the shared memory the same way: attention.cu), a product
// may overwrite one of its own inputs (tiles_abt_in_place), and dkv keeps
// its accumulators in registers. Fewer bytes per block, more blocks per SM.
__host__ __device__ __forceinline__ bool scores_compact(int T, int threads) {
    return lower_tiles(pad4(T) / TILE) <= threads;
}
__host__ __device__ __forceinline__ bool dkv_compact(int T, int HS, int threads) {
    return (pad4(T) / TILE) * (pad4(HS) / TILE) <= threads;
}

// acc = the tile (ti, si) of a b^T: acc[r][c] = sum_j a[4ti+r][j] b[4si+c][j],
// j ascending from 0 (as the reference's dot products)
template <typename real>
__device__ __forceinline__ void tile_abt(real (&acc)[TILE][TILE], const real *a, const real *b, int ti, int si, int HS,
                                         const TileDims &d) {
    const real *ar = a + ti * TILE * d.L, *br = b + si * TILE * d.L;
    for (int r = 0; r < TILE; r++)
        for (int c = 0; c < TILE; c++) acc[r][c] = 0;
    for (int j = 0; j < HS; j++) {
        real x[TILE], y[TILE];
        for (int r = 0; r < TILE; r++) x[r] = ar[r * d.L + j];
        for (int c = 0; c < TILE; c++) y[c] = br[c * d.L + j];
        for (int r = 0; r < TILE; r++)
            for (int c = 0; c < TILE; c++) acc[r][c] += x[r] * y[c];
    }
}

template <typename real>
__device__ __forceinline__ void store_tile(real *out, const real (&acc)[TILE][TILE], int ti, int si, real mul,
                                           const TileDims &d) {
    real *o = out + ti * TILE * d.S + si * TILE;
    for (int r = 0; r < TILE; r++)
        for (int c = 0; c < TILE; c++) o[r * d.S + c] = acc[r][c] * mul;
}

// out (P, S): out[t][s] = (sum_j a[t][j] b[s][j]) * mul for the tiles on or
// below the diagonal of rows < nb (a, b (P, L)). Entries above the diagonal
// inside a diagonal tile are computed too; the row pass overwrites them.
template <typename real>
__device__ void tiles_abt(real *out, const real *a, const real *b, int nb, int HS, real mul, const TileDims &d) {
    const int NT = (nb + TILE - 1) / TILE;
    for (int idx = threadIdx.x; idx < lower_tiles(NT); idx += blockDim.x) {
        int ti, si;
        lower_tile(idx, ti, si);
        real acc[TILE][TILE];
        tile_abt(acc, a, b, ti, si, HS, d);
        store_tile(out, acc, ti, si, mul, d);
    }
}

// tiles_abt where out may overlap a or b (scores_compact: at most one tile
// per thread): every tile is computed, then, after a barrier (every thread
// of the block must call this), stored.
template <typename real>
__device__ void tiles_abt_in_place(real *out, const real *a, const real *b, int nb, int HS, real mul,
                                   const TileDims &d) {
    const int NT = (nb + TILE - 1) / TILE, idx = threadIdx.x;
    const bool mine = idx < lower_tiles(NT);
    int ti = 0, si = 0;
    real acc[TILE][TILE];
    if (mine) {
        lower_tile(idx, ti, si);
        tile_abt(acc, a, b, ti, si, HS, d);
    }
    __syncthreads();
    if (mine) store_tile(out, acc, ti, si, mul, d);
}

// dst[t][j] (+)= sum_{s <= t} p[t][s] x[s][j] for t < nb, j < HS (dst in
// global memory, row stride ldd; acc: starting from dst, as the reference
// adds into it; else from 0). p (P, S) is 0 above the diagonal and on rows
// >= nb, x (P, L). A thread's tile is 4 consecutive rows (in the order of
// balanced_row) by the columns jc + c*JW (c < 4): neighbouring threads read
// neighbouring columns of x and write neighbouring outputs. s ascends from
// 0, as in the reference.
template <typename real, class Out>
__device__ void tiles_pv(typename Out::T *dst, int ldd, bool acc, const real *p, const real *x, int nb, int HS,
                         const TileDims &d, Out cv) {
    const int NT = (nb + TILE - 1) / TILE, JW = (HS + TILE - 1) / TILE;
    for (int idx = threadIdx.x; idx < NT * JW; idx += blockDim.x) {
        const int t0 = balanced_row(idx / JW, NT) * TILE, jc = idx % JW;
        const int send = nb < t0 + TILE ? nb : t0 + TILE;   // keys up to the tile's last row
        real o[TILE][TILE];
        for (int r = 0; r < TILE; r++)
            for (int c = 0; c < TILE; c++) {
                const int t = t0 + r, j = jc + c * JW;
                if constexpr (same_out<real, Out>) o[r][c] = acc && t < nb && j < HS ? dst[(size_t)t * ldd + j] : (real)0;
                else o[r][c] = 0;
            }
        for (int s = 0; s < send; s++) {
            real w[TILE], y[TILE];
            for (int r = 0; r < TILE; r++) w[r] = p[(t0 + r) * d.S + s];
            for (int c = 0; c < TILE; c++) y[c] = x[s * d.L + jc + c * JW];
            for (int r = 0; r < TILE; r++)
                for (int c = 0; c < TILE; c++) o[r][c] += w[r] * y[c];
        }
        for (int r = 0; r < TILE; r++)
            for (int c = 0; c < TILE; c++) {
                const int t = t0 + r, j = jc + c * JW;
                if (t < nb && j < HS) dst[(size_t)t * ldd + j] = cv(o[r][c]);
            }
    }
}

// Rows [r0, r1) of a head slice (HS columns, row stride ld) set to zero.
template <typename T> __device__ void zero_rows(T *dst, int ld, int r0, int r1, int HS, T zero) {
    for (int i = threadIdx.x; i < (r1 - r0) * HS; i += blockDim.x) dst[(size_t)(r0 + i / HS) * ld + i % HS] = zero;
}

// Forward, one block per (b, h): S = q k^T * scale (lower tiles), then per
// row (one warp) the causal softmax into S and att, then out = S v.
template <typename real, class Out = Same<real>>
__global__ void __launch_bounds__(TILED_THREADS, sizeof(real) == 4 ? 4 : 1)
attention_forward_tiled_kernel(typename Out::T *out, real *att, const real *q, int ldq, const real *k, const real *v,
                               int ldkv, const int *n, int T, int NH, int NKV, int HS, real scale) {
    extern __shared__ __align__(16) unsigned char smem_bytes[];
    const TileDims d(T, HS);
    const int b = blockIdx.x / NH, h = blockIdx.x % NH, nb = doc_len(n, b, T);
    const int C = NH * HS, kvo = (h / (NH / NKV)) * HS;
    // compact: S over Q (Q's slot as large as either); else Q, K, V, S
    const bool compact = scores_compact(T, blockDim.x);
    const int hl = d.P * d.L, slot = compact && d.P * d.S > hl ? d.P * d.S : hl;
    real *Q = reinterpret_cast<real *>(smem_bytes), *K = Q + slot, *V = K + hl, *S = compact ? Q : V + hl;
    load_head(Q, q + (size_t)b * T * ldq + h * HS, ldq, nb, HS, d);
    load_head(K, k + (size_t)b * T * ldkv + kvo, ldkv, nb, HS, d);
    load_head(V, v + (size_t)b * T * ldkv + kvo, ldkv, nb, HS, d);
    __syncthreads();
    if (compact) tiles_abt_in_place(S, Q, K, nb, HS, scale, d);
    else tiles_abt(S, Q, K, nb, HS, scale, d);
    __syncthreads();
    const int lane = threadIdx.x % WARP;
    real *ab = att + (size_t)blockIdx.x * T * T;   // (T,T) of (b,h)
    for (int t = threadIdx.x / WARP; t < d.P; t += blockDim.x / WARP) {   // whole warps per row
        real *sr = S + t * d.S;
        real *ar = t < T ? ab + (size_t)t * T : nullptr;
        if (t >= nb) {   // padding (and the pad rows of S)
            for (int s = lane; s < d.P; s += WARP) {
                sr[s] = 0;
                if (ar && s < T) ar[s] = 0;
            }
            continue;
        }
        real mx = neg_inf<real>();
        for (int s = lane; s <= t; s += WARP) mx = sr[s] > mx ? sr[s] : mx;
        mx = warp_max(mx);   // finite: key 0 is always there
        real sum = 0;
        for (int s = lane; s <= t; s += WARP) {
            const real e = r_exp(sr[s] - mx);
            sr[s] = e;
            sum += e;
        }
        const real inv = (real)1 / warp_sum(sum);
        for (int s = lane; s < d.P; s += WARP) {
            const real a = s <= t ? sr[s] * inv : (real)0;
            sr[s] = a;
            if (s < T) ar[s] = a;
        }
    }
    __syncthreads();
    const Out cv;
    typename Out::T *ob = out + (size_t)b * T * C + h * HS;   // (T,HS) of row stride C
    tiles_pv(ob, C, false, S, V, nb, HS, d, cv);
    zero_rows(ob, C, nb, T, HS, cv((real)0));
}

// Backward 1, one block per (b, h): D = dout v^T (lower tiles); per row (one
// warp) wsum = sum_s att[s] D[s] and dpre[s] = att[s] (D[s] - wsum) scale,
// into D and the dpre scratch (rows < nb, 0 above the diagonal); then dq
// (+)= D k.
template <typename real, class Out = Same<real>>
__global__ void __launch_bounds__(TILED_THREADS, sizeof(real) == 4 ? 4 : 1)
attention_backward_dq_tiled_kernel(typename Out::T *dq, int lddq, real *dpre, const real *dout, const real *att,
                                   const real *k, const real *v, int ldkv, const int *n, int T, int NH, int NKV,
                                   int HS, real scale, bool acc) {
    extern __shared__ __align__(16) unsigned char smem_bytes[];
    const TileDims d(T, HS);
    const int b = blockIdx.x / NH, h = blockIdx.x % NH, nb = doc_len(n, b, T);
    const int C = NH * HS, kvo = (h / (NH / NKV)) * HS;
    // compact: K, V, and D over dO; the row pass reads att from global
    // memory. Else K, V, dO, A (att's causal part), D.
    const bool compact = scores_compact(T, blockDim.x);
    const int hl = d.P * d.L;
    real *K = reinterpret_cast<real *>(smem_bytes), *V = K + hl, *dO = V + hl;
    real *A = compact ? nullptr : dO + hl, *D = compact ? dO : A + d.P * d.S;
    const size_t ao = (size_t)blockIdx.x * T * T;   // (T,T) of (b,h) in att and dpre
    load_head(K, k + (size_t)b * T * ldkv + kvo, ldkv, nb, HS, d);
    load_head(V, v + (size_t)b * T * ldkv + kvo, ldkv, nb, HS, d);
    load_head(dO, dout + (size_t)b * T * C + h * HS, C, nb, HS, d);
    if (!compact) load_causal(A, att + ao, T, nb, d);
    __syncthreads();
    if (compact) tiles_abt_in_place(D, dO, V, nb, HS, (real)1, d);
    else tiles_abt(D, dO, V, nb, HS, (real)1, d);
    __syncthreads();
    const int lane = threadIdx.x % WARP;
    for (int t = threadIdx.x / WARP; t < d.P; t += blockDim.x / WARP) {   // whole warps per row
        real *dr = D + t * d.S;
        const real *ar = compact ? att + ao + (size_t)(t < T ? t : 0) * T : A + t * d.S;   // read at s <= t < nb only
        if (t >= nb) {   // padded rows add nothing
            for (int s = lane; s < d.P; s += WARP) dr[s] = 0;
            continue;
        }
        real w = 0;
        for (int s = lane; s <= t; s += WARP) w += ar[s] * dr[s];
        const real wsum = warp_sum(w);
        real *pr = dpre + ao + (size_t)t * T;
        for (int s = lane; s < d.P; s += WARP) {
            const real g = s <= t ? ar[s] * (dr[s] - wsum) * scale : (real)0;
            dr[s] = g;
            if (s < T) pr[s] = g;   // whole rows: the dkv kernel's 16-byte loads read them
        }
    }
    __syncthreads();
    const Out cv;
    if constexpr (!same_out<real, Out>) acc = false;   // converted outputs are written, not added to
    typename Out::T *dqb = dq + (size_t)b * T * lddq + h * HS;
    tiles_pv(dqb, lddq, acc, D, K, nb, HS, d, cv);
    if (!acc) zero_rows(dqb, lddq, nb, T, HS, cv((real)0));
}

// One dkv tile, key rows s0..s0+3 by columns jc + c*JW, accumulating one
// query head: gk[r][c] += sum_{s0 <= t < nb} Pd[t][s0+r] Q[t][jc+c*JW], gv
// likewise from A and dO, t ascending (att and dpre are 0 for t < s, so the
// queries below the tile's first row add nothing and are skipped).
template <typename real>
__device__ __forceinline__ void dkv_tile(real (&gk)[TILE][TILE], real (&gv)[TILE][TILE], const real *Q,
                                         const real *dO, const real *A, const real *Pd, int s0, int jc, int JW,
                                         int nb, const TileDims &d) {
    for (int t = s0; t < nb; t++) {
        real pa[TILE], pp[TILE], xq[TILE], xd[TILE];
        for (int r = 0; r < TILE; r++) {
            pa[r] = A[t * d.S + s0 + r];
            pp[r] = Pd[t * d.S + s0 + r];
        }
        for (int c = 0; c < TILE; c++) {
            xq[c] = Q[t * d.L + jc + c * JW];
            xd[c] = dO[t * d.L + jc + c * JW];
        }
        for (int r = 0; r < TILE; r++)
            for (int c = 0; c < TILE; c++) {
                gk[r][c] += pp[r] * xq[c];
                gv[r][c] += pa[r] * xd[c];
            }
    }
}

// Backward 2, one block per (b, kv head g): for each of its query heads in
// order, dk[s] += sum_{s <= t < nb} dpre[t][s] q[t] and dv[s] += sum_t
// att[t][s] dout[t], each 4 x 4 tile of the accumulators owned by one
// thread: in its registers when every thread has at most one (dkv_compact:
// Q, dO, A, Pd in shared memory), else in (P, L) shared-memory accumulators
// dK, dV; then written out (rows >= nb: 0, or kept with acc).
template <typename real, class Out = Same<real>>
__global__ void __launch_bounds__(TILED_THREADS, sizeof(real) == 4 ? 3 : 1)
attention_backward_dkv_tiled_kernel(typename Out::T *dk, typename Out::T *dv, int lddkv, const real *dpre, const real *att,
                                    const real *dout, const real *q, int ldq, const int *n, int T, int NH, int NKV,
                                    int HS, bool acc) {
    extern __shared__ __align__(16) unsigned char smem_bytes[];
    const TileDims d(T, HS);
    const int b = blockIdx.x / NKV, g = blockIdx.x % NKV, nb = doc_len(n, b, T);
    const int C = NH * HS, group = NH / NKV, W = pad4(HS);
    const bool compact = dkv_compact(T, HS, blockDim.x);
    real *Q = reinterpret_cast<real *>(smem_bytes), *dO = Q + d.P * d.L, *A = dO + d.P * d.L;
    real *Pd = A + d.P * d.S, *dK = compact ? nullptr : Pd + d.P * d.S, *dV = compact ? nullptr : dK + d.P * d.L;
    const Out cv;
    if constexpr (!same_out<real, Out>) acc = false;   // converted outputs are written, not added to
    typename Out::T *dkb = dk + (size_t)b * T * lddkv + g * HS, *dvb = dv + (size_t)b * T * lddkv + g * HS;
    const int NT = (nb + TILE - 1) / TILE, JW = W / TILE;
    // compact: this thread's tile and its accumulators (the gradients so far with acc, else 0)
    const bool mine = compact && (int)threadIdx.x < NT * JW;
    const int s0m = mine ? balanced_row(threadIdx.x / JW, NT) * TILE : 0, jcm = threadIdx.x % JW;
    real gk[TILE][TILE], gv[TILE][TILE];
    for (int r = 0; r < TILE; r++)
        for (int c = 0; c < TILE; c++) {
            const int s = s0m + r, j = jcm + c * JW;
            const bool in = mine && acc && s < nb && j < HS;
            gk[r][c] = gv[r][c] = 0;
            if constexpr (same_out<real, Out>) {
                if (in) {
                    gk[r][c] = dkb[(size_t)s * lddkv + j];
                    gv[r][c] = dvb[(size_t)s * lddkv + j];
                }
            }
        }
    if (!compact) {
        if constexpr (same_out<real, Out>) {
            if (acc) {
                load_head(dK, dkb, lddkv, nb, HS, d);
                load_head(dV, dvb, lddkv, nb, HS, d);
            }
        }
        if (!acc) {
            load_matrix<real>(pad4(nb), W, [](int, int) { return (real)0; },
                              [=](int r, int c, real x) { dK[r * d.L + c] = dV[r * d.L + c] = x; });
        }
    }
    for (int h = g * group; h < (g + 1) * group; h++) {
        __syncthreads();   // the previous head's products are done with Q, dO, A, Pd
        const size_t ao = ((size_t)b * NH + h) * T * T;
        load_head(Q, q + (size_t)b * T * ldq + h * HS, ldq, nb, HS, d);
        load_head(dO, dout + (size_t)b * T * C + h * HS, C, nb, HS, d);
        load_causal(A, att + ao, T, nb, d);
        load_causal(Pd, dpre + ao, T, nb, d);
        __syncthreads();
        if (compact) {
            if (mine) dkv_tile(gk, gv, Q, dO, A, Pd, s0m, jcm, JW, nb, d);
            continue;
        }
        for (int idx = threadIdx.x; idx < NT * JW; idx += blockDim.x) {   // gk, gv: the tile's, in turn
            const int s0 = balanced_row(idx / JW, NT) * TILE, jc = idx % JW;
            for (int r = 0; r < TILE; r++)
                for (int c = 0; c < TILE; c++) {
                    gk[r][c] = dK[(s0 + r) * d.L + jc + c * JW];
                    gv[r][c] = dV[(s0 + r) * d.L + jc + c * JW];
                }
            dkv_tile(gk, gv, Q, dO, A, Pd, s0, jc, JW, nb, d);
            for (int r = 0; r < TILE; r++)
                for (int c = 0; c < TILE; c++) {
                    dK[(s0 + r) * d.L + jc + c * JW] = gk[r][c];
                    dV[(s0 + r) * d.L + jc + c * JW] = gv[r][c];
                }
        }
    }
    if (compact) {
        if (mine)
            for (int r = 0; r < TILE; r++)
                for (int c = 0; c < TILE; c++) {
                    const int s = s0m + r, j = jcm + c * JW;
                    if (s < nb && j < HS) {
                        dkb[(size_t)s * lddkv + j] = cv(gk[r][c]);
                        dvb[(size_t)s * lddkv + j] = cv(gv[r][c]);
                    }
                }
        if (!acc) {
            zero_rows(dkb, lddkv, nb, T, HS, cv((real)0));
            zero_rows(dvb, lddkv, nb, T, HS, cv((real)0));
        }
        return;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < T * HS; i += blockDim.x) {
        const int r = i / HS, c = i % HS;
        if (r < nb) {
            dkb[(size_t)r * lddkv + c] = cv(dK[r * d.L + c]);
            dvb[(size_t)r * lddkv + c] = cv(dV[r * d.L + c]);
        } else if (!acc) {
            dkb[(size_t)r * lddkv + c] = cv((real)0);
            dvb[(size_t)r * lddkv + c] = cv((real)0);
        }
    }
}

}  // namespace mgpt

#endif
